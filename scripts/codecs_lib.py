"""Codec adapters, the offset transform and the lossless checker for compare_codecs.py.

Every codec is an object with the same life cycle, driven by run_codec():

    encode(vol)            -> state       (timed; state.size = compressed bytes)
    decode(vol, state)     -> handle      (timed)
    materialize(vol, h)    -> ndarray     (untimed: read the decoded file / undo the offset)
    check_lossless(vol.arr, ndarray)      (every run, exact equality of dtype, shape, voxels)

Volumes are numpy arrays of shape (z, y, x) (x fastest on disk, little-endian).

Transforms (recorded per codec in `transform`):
  raw      the volume's own bytes (VoxFS, xz, zstd)
  offset   v - min(volume), stored as an unsigned array of the same width (uint16 for
           16-bit volumes): the 2D image codecs and ffmpeg need unsigned samples. The
           offset is one integer of metadata per volume (counted as 0 bytes).
"""

import os
import resource
import shutil
import statistics
import subprocess
import time

import numpy as np

DTYPES = {"uint8": "<u1", "int8": "<i1", "int16": "<i2", "uint16": "<u2"}
# A codec whose first encode (or decode) takes longer than this is timed once (marked †).
SLOW_SECONDS = 10.0


class CodecError(Exception):
    """The codec failed (exit status, exception)."""


# ------------------------------------------------------------------ lossless check

def check_lossless(orig, decoded):
    """(True, "") only when `decoded` is an ndarray with orig's dtype and shape and the very
    same voxels; otherwise (False, why). This is the only test of losslessness in the harness.
    """
    if decoded is None:
        return False, "no decoded output"
    if not isinstance(decoded, np.ndarray):
        return False, f"decoded output is a {type(decoded).__name__}, not an array"
    if decoded.dtype != orig.dtype:
        return False, f"decoded dtype {decoded.dtype} != original {orig.dtype}"
    if decoded.shape != orig.shape:
        return False, f"decoded shape {decoded.shape} != original {orig.shape}"
    if np.array_equal(decoded, orig):
        return True, ""
    diff = np.abs(decoded.astype(np.int64) - orig.astype(np.int64))
    n = int(np.count_nonzero(diff))
    where = ""
    if diff.ndim == 3:
        z, y, x = (int(v) for v in np.argwhere(diff)[0])
        where = f", first at x={x} y={y} z={z}"
    return False, (f"{n:,} of {orig.size:,} voxels differ "
                   f"(max |error| {int(diff.max())}{where})")


# ------------------------------------------------------------------------ volumes

class Volume:
    """One volume (possibly a centred crop) and its scratch directory."""

    def __init__(self, name, arr, dtype, tmp, raw_path=None, source=""):
        self.name = name
        self.arr = arr                      # (z, y, x), dtype DTYPES[dtype]
        self.dtype = dtype
        self.shape = [arr.shape[2], arr.shape[1], arr.shape[0]]   # x, y, z
        self.voxels = int(arr.size)
        self.bytes = int(arr.nbytes)
        self.source = source
        self.tmp = os.path.join(tmp, name)
        os.makedirs(self.tmp, exist_ok=True)
        if raw_path is None:
            # A crop: write it with a sidecar so that `voxfs compress` finds its shape.
            raw_path = os.path.join(self.tmp, name + ".raw")
            arr.tofile(raw_path)
            import json
            with open(raw_path[:-4] + ".json", "w") as f:
                json.dump({"shape": self.shape, "dtype": dtype}, f)
        self.raw_path = raw_path
        self.offset = int(arr.min()) if arr.size else 0
        span = (int(arr.max()) - self.offset) if arr.size else 0
        self.bits = max(1, span.bit_length())        # bit depth after the offset
        self.udtype = np.uint8 if arr.dtype.itemsize == 1 else np.uint16
        self._unsigned = None
        self._unsigned_file = None

    @property
    def shape_str(self):
        return "x".join(str(s) for s in self.shape)

    def unsigned(self):
        """v - min as uint8/uint16 (cached; computed outside the timed region)."""
        if self._unsigned is None:
            self._unsigned = np.ascontiguousarray(
                (self.arr.astype(np.int32) - self.offset).astype(self.udtype))
        return self._unsigned

    def unsigned_file(self):
        """The offset volume as a little-endian file (ffmpeg's rawvideo input)."""
        if self._unsigned_file is None:
            path = os.path.join(self.tmp, "offset.u16")
            self.unsigned().astype("<u2" if self.udtype == np.uint16 else "<u1").tofile(path)
            self._unsigned_file = path
        return self._unsigned_file

    def restore(self, u):
        """Undoes the offset. Returns the original dtype only when that is exact; anything
        else (a float array, values out of range) comes back in a form the checker flags."""
        if not isinstance(u, np.ndarray) or u.dtype.kind not in "ui":
            return u
        v = u.astype(np.int64) + self.offset
        info = np.iinfo(self.arr.dtype)
        if v.size and (v.min() < info.min or v.max() > info.max):
            return v
        return v.astype(self.arr.dtype)

    def read_decoded(self, path, unsigned):
        """A decoded file as an array: (z, y, x) of the original dtype when its size is
        right; otherwise the raw bytes as a flat uint8 array, which the checker flags."""
        with open(path, "rb") as f:
            data = f.read()
        if unsigned:
            dt = np.dtype("<u2" if self.udtype == np.uint16 else "<u1")
        else:
            dt = np.dtype(DTYPES[self.dtype])
        if len(data) != self.voxels * dt.itemsize:
            return np.frombuffer(data, dtype=np.uint8)
        a = np.frombuffer(data, dtype=dt).reshape(self.arr.shape)
        return self.restore(a) if unsigned else a.astype(self.arr.dtype)

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------------- codecs

class Codec:
    key = ""            # command-line name
    label = ""          # table name
    family = "standard"  # "voxfs" or "standard"
    lossless = True     # claims to be lossless (a deliberately lossy test codec says False)
    transform = "raw"
    threads = "1"
    call = ""           # the exact call, for the report
    hint = ""           # known cause, shown in the report when the codec fails

    def unavailable(self):
        """None when the codec can run here, else why not (not installed...)."""
        return None

    def not_applicable(self, vol):
        """None when the codec can code this volume, else why not (n/a)."""
        return None

    def encode(self, vol):
        raise NotImplementedError

    def decode(self, vol, state):
        raise NotImplementedError

    def materialize(self, vol, handle):
        return handle

    def release(self, vol, state, handle):
        pass


class EncState:
    def __init__(self, size, data=None, path=None):
        self.size = size
        self.data = data
        self.path = path


def _run(cmd, stdout_path=None):
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    try:
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    except OSError as e:
        raise CodecError(f"`{cmd[0]}`: {e}")
    finally:
        if stdout_path:
            out.close()
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip().splitlines()
        raise CodecError(f"`{' '.join(cmd)}` exited {r.returncode}: {' / '.join(err[-3:])}")


class CliCodec(Codec):
    """A codec run as external programs on a file. `input` is "raw" (the volume's bytes) or
    "offset" (the offset uint16 volume); enc/dec build the argument lists."""

    ext = "bin"
    enc_stdout = False
    dec_stdout = False
    input = "raw"
    tools = ()

    def unavailable(self):
        for t in self.tools:
            if shutil.which(t) is None:
                return f"`{t}` not found on PATH (scripts/compare_setup.sh installs it)"
        return None

    def src(self, vol):
        return vol.raw_path if self.input == "raw" else vol.unsigned_file()

    def encode(self, vol):
        comp = os.path.join(vol.tmp, f"{self.key}.{self.ext}")
        if os.path.exists(comp):
            os.remove(comp)
        _run(self.enc_cmd(vol, self.src(vol), comp), comp if self.enc_stdout else None)
        return EncState(os.path.getsize(comp), path=comp)

    def decode(self, vol, state):
        out = os.path.join(vol.tmp, f"{self.key}.dec")
        if os.path.exists(out):
            os.remove(out)
        _run(self.dec_cmd(vol, state.path, out), out if self.dec_stdout else None)
        return out

    def materialize(self, vol, handle):
        return vol.read_decoded(handle, unsigned=(self.input == "offset"))

    def release(self, vol, state, handle):
        for p in (state.path if state else None, handle):
            if p and os.path.exists(p):
                os.remove(p)


class VoxfsCodec(CliCodec):
    family = "voxfs"
    ext = "vxz"

    def __init__(self, binary, preset, ncores, model_dir=None):
        self.binary = binary
        self.preset = preset
        # model_dir: held-out models, DIR/<volume>.vxm trained without that volume
        # (scripts/train_fold_models.sh), so the comparison is not flattered by a model
        # that has seen the scan it codes
        self.model_dir = model_dir
        self.key = f"voxfs-{preset}" + ("-heldout" if model_dir else "")
        self.label = f"VoxFS {preset}" + (" (held-out model)" if model_dir else "")
        self.threads = f"{ncores} (voxfs default: all cores)"
        extra = " --model DIR/VOLUME.vxm" if model_dir else ""
        self.call = (f"`voxfs compress IN OUT.vxz --preset {preset}{extra} -q`; "
                     f"`voxfs decompress OUT.vxz OUT.raw{extra} -q` (shape/dtype from the sidecar)"
                     + ("; volumes outside the training set (no DIR/VOLUME.vxm): the shipped model, which never saw them"
                        if model_dir else ""))

    def model_args(self, vol):
        if not self.model_dir:
            return []
        base = vol.name.split("-crop")[0]
        path = os.path.join(self.model_dir, base + ".vxm")
        # a volume outside the training set has no fold model: the shipped model never saw
        # it, so the plain preset is already the held-out comparison there
        return ["--model", path] if os.path.isfile(path) else []

    def unavailable(self):
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            return f"voxfs binary not found at {self.binary} (make build, or --voxfs PATH)"
        if self.model_dir and not os.path.isdir(self.model_dir):
            return f"no held-out models in {self.model_dir} (scripts/train_fold_models.sh)"
        return None

    def enc_cmd(self, vol, src, comp):
        return [self.binary, "compress", src, comp, "--preset", self.preset, "-q"] + self.model_args(vol)

    def dec_cmd(self, vol, comp, out):
        return [self.binary, "decompress", comp, out, "-q"] + self.model_args(vol)


class XzCodec(CliCodec):
    key, label, ext, tools = "xz", "xz -9e", "xz", ("xz",)
    enc_stdout = dec_stdout = True
    call = "`xz -9e -T1 -c IN > OUT.xz`; `xz -d -T1 -c OUT.xz`"

    def enc_cmd(self, vol, src, comp):
        return ["xz", "-9e", "-T1", "-c", src]

    def dec_cmd(self, vol, comp, out):
        return ["xz", "-d", "-T1", "-c", comp]


class ZstdCodec(CliCodec):
    key, label, ext, tools = "zstd", "zstd -19", "zst", ("zstd",)
    enc_stdout = dec_stdout = True
    call = "`zstd -19 --single-thread -q -c IN > OUT.zst`; `zstd -d -q -c OUT.zst`"

    def enc_cmd(self, vol, src, comp):
        return ["zstd", "-19", "--single-thread", "-q", "-c", src]

    def dec_cmd(self, vol, comp, out):
        return ["zstd", "-d", "-q", "-c", comp]


FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


class FfmpegCodec(CliCodec):
    tools = ("ffmpeg",)
    input = "offset"
    transform = "offset"
    pix_fmt = "gray16le"

    def unavailable(self):
        why = super().unavailable()
        if why:
            return why
        if not ffmpeg_has_encoder(self.encoder):
            return f"ffmpeg has no {self.encoder} encoder"
        return None

    def not_applicable(self, vol):
        if vol.udtype != np.uint16:
            return "8-bit volume (the harness feeds ffmpeg 16-bit grey)"
        return None

    def enc_cmd(self, vol, src, comp):
        x, y, _ = vol.shape
        return FFMPEG + ["-threads", "1", "-f", "rawvideo", "-pix_fmt", self.pix_fmt,
                         "-s", f"{x}x{y}", "-framerate", "25", "-i", src] + self.enc_args() + [comp]

    def dec_cmd(self, vol, comp, out):
        return FFMPEG + ["-threads", "1", "-i", comp, "-f", "rawvideo", "-pix_fmt", self.pix_fmt, out]


class HevcCodec(FfmpegCodec):
    """x265 lossless through ffmpeg, the slices as the frames of a video (inter-slice
    prediction). chroma="gray": 4:0:0 gray12le frames. chroma="420": the same data as the
    luma of yuv420p12le frames whose two chroma planes are flat (2048): a workaround for
    4:0:0 round trips that are not exact with x265 3.5 + FFmpeg 5.1 (see the report)."""

    ext, encoder, preset = "hevc", "libx265", "slower"
    threads = "1 (x265 pools=none, frame-threads=1; decoder -threads 1)"

    def __init__(self, chroma="gray"):
        self.chroma = chroma
        if chroma == "gray":
            self.key, self.label, self.pix_fmt = "hevc", "HEVC lossless 4:0:0 (x265)", "gray12le"
            what = "gray12le frames: 4:0:0 12-bit"
            self.hint = ("with x265 3.5 + FFmpeg 5.1 (Debian 12) the decoded 4:0:0 frames "
                         "sometimes differ from the input by 1 in a few voxels of inter-"
                         "predicted frames (in the cases examined, never the first, intra "
                         "frame; on a synthetic volume also with sao=0:deblock=0 and with "
                         "8-bit gray, but not with bframes=0:ref=1:subme=0, nor with 4:2:0 "
                         "input); HEVC lossless 4:2:0 codes the same samples as luma with flat "
                         "chroma and is exact")
        else:
            self.key, self.label, self.pix_fmt = ("hevc-420", "HEVC lossless 4:2:0 (x265)",
                                                  "yuv420p12le")
            what = ("yuv420p12le frames: luma = the offset slice, both chroma planes flat "
                    "(2048, a few bytes per frame), 12-bit; only the luma is compared")
        self.call = (f"`ffmpeg -f rawvideo -pix_fmt {self.pix_fmt} -s XxY -i OFFSET -c:v libx265 "
                     f"-preset {self.preset} -x265-params lossless=1:pools=none:frame-threads=1 "
                     f"-f hevc OUT.hevc`; `ffmpeg -threads 1 -i OUT.hevc -f rawvideo -pix_fmt "
                     f"{self.pix_fmt} OUT.raw` (slices are frames: inter-slice prediction; {what}; "
                     "size = the raw Annex-B bitstream)")

    def not_applicable(self, vol):
        why = super().not_applicable(vol)
        if why:
            return why
        if vol.bits > 12:
            return f"data need {vol.bits} bits after subtracting the minimum (x265 codes 12 at most)"
        x, y, _ = vol.shape
        if x % 2 or y % 2:
            return f"odd slice size {x}x{y}"
        return None

    def src(self, vol):
        if self.chroma == "gray":
            return vol.unsigned_file()
        path = os.path.join(vol.tmp, "offset420.yuv")
        if not os.path.exists(path):
            u = vol.unsigned()
            z, y, x = u.shape
            frames = np.full((z, x * y + 2 * (x // 2) * (y // 2)), 2048, dtype="<u2")
            frames[:, :x * y] = u.reshape(z, x * y)
            frames.tofile(path)
        return path

    def materialize(self, vol, handle):
        if self.chroma == "gray":
            return super().materialize(vol, handle)
        z, y, x = vol.arr.shape
        per = x * y + 2 * (x // 2) * (y // 2)
        with open(handle, "rb") as f:
            data = f.read()
        if len(data) != z * per * 2:
            return np.frombuffer(data, dtype=np.uint8)
        frames = np.frombuffer(data, dtype="<u2").reshape(z, per)
        return vol.restore(frames[:, :x * y].reshape(z, y, x))

    def enc_args(self):
        return ["-c:v", "libx265", "-preset", self.preset, "-x265-params",
                "lossless=1:pools=none:frame-threads=1:log-level=error", "-f", "hevc"]


class Ffv1Codec(FfmpegCodec):
    key, label, ext, encoder = "ffv1", "FFV1 level 3", "mkv", "ffv1"
    threads = "1 (-threads 1, encoder and decoder)"
    call = ("`ffmpeg -f rawvideo -pix_fmt gray16le -s XxY -i OFFSET.u16 -c:v ffv1 -level 3 -g 1 "
            "-threads 1 OUT.mkv` (range coder, forced for >8-bit; context model 0; default 2x2 "
            "slices; intra only); `ffmpeg -threads 1 -i OUT.mkv -f rawvideo -pix_fmt gray16le "
            "OUT.raw` (size includes the Matroska container)")

    def enc_args(self):
        return ["-c:v", "ffv1", "-level", "3", "-g", "1", "-threads", "1"]


_FF_ENCODERS = None


def ffmpeg_has_encoder(name):
    global _FF_ENCODERS
    if _FF_ENCODERS is None:
        try:
            r = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True,
                               text=True, timeout=60)
            _FF_ENCODERS = {ln.split()[1] for ln in r.stdout.splitlines()
                            if len(ln.split()) > 1 and len(ln.split()[0]) == 6}
        except (OSError, subprocess.TimeoutExpired):
            _FF_ENCODERS = set()
    return name in _FF_ENCODERS


class SliceCodec(Codec):
    """A 2D image codec run in this process, slice by slice (z slices of x by y); the
    compressed size is the sum of the slice codestreams (no container)."""

    transform = "offset"
    module = "imagecodecs"

    def unavailable(self):
        try:
            self.load()
        except ImportError as e:
            return f"Python module {self.module} missing ({e}; scripts/compare_setup.sh installs it)"
        except CodecError as e:
            return str(e)
        return None

    def load(self):
        import imagecodecs
        return imagecodecs

    def encode(self, vol):
        u = vol.unsigned()
        blobs = [self.enc(vol, u[z]) for z in range(u.shape[0])]
        return EncState(sum(len(b) for b in blobs), data=blobs)

    def decode(self, vol, state):
        out = None
        for z, b in enumerate(state.data):
            s = self.dec(vol, b)
            if out is None:
                out = np.empty((len(state.data),) + s.shape, dtype=s.dtype)
            out[z] = s
        return out

    def materialize(self, vol, handle):
        return vol.restore(handle)


def _ic_codec_available(ic, cls_name, *funcs):
    c = getattr(ic, cls_name, None)
    if c is None or not getattr(c, "available", False):
        raise CodecError(f"imagecodecs {ic.__version__} has no {cls_name} codec")
    for f in funcs:
        if not hasattr(ic, f):
            raise CodecError(f"imagecodecs {ic.__version__} has no {f}")


class JpeglsCodec(SliceCodec):
    key, label = "jpegls", "JPEG-LS (CharLS, P=16)"
    threads = "1 (CharLS is single-threaded)"
    call = ("`imagecodecs.jpegls_encode(slice)` / `jpegls_decode` (CharLS; imagecodecs "
            "always writes sample precision P=16 for uint16, so MAXVAL=65535)")

    def load(self):
        ic = super().load()
        _ic_codec_available(ic, "JPEGLS", "jpegls_encode", "jpegls_decode")
        self.ic = ic
        return ic

    def enc(self, vol, s):
        return self.ic.jpegls_encode(s)

    def dec(self, vol, b):
        return self.ic.jpegls_decode(b)


class JpeglsBitsCodec(SliceCodec):
    key, label = "jpegls-b", "JPEG-LS (CharLS, P=bits)"
    module = "jpeg_ls (pyjpegls)"
    threads = "1 (CharLS is single-threaded)"
    call = ("`jpeg_ls.encode_buffer(slice, rows, cols, 1, bits_stored=B)` (pyjpegls' CharLS; "
            "P = B = bit depth of the offset volume, as DICOM's BitsStored); decoded with "
            "`imagecodecs.jpegls_decode`")

    def load(self):
        import jpeg_ls
        import imagecodecs as ic
        _ic_codec_available(ic, "JPEGLS", "jpegls_decode")
        self.jls, self.ic = jpeg_ls, ic
        return jpeg_ls

    def enc(self, vol, s):
        return bytes(self.jls.encode_buffer(s.tobytes(), s.shape[0], s.shape[1], 1,
                                            max(2, vol.bits)))

    def dec(self, vol, b):
        return self.ic.jpegls_decode(b)


class Jpeg2kCodec(SliceCodec):
    key, label = "jpeg2k", "JPEG 2000 (OpenJPEG, 5/3)"
    threads = "1 (numthreads=1)"
    call = ("`imagecodecs.jpeg2k_encode(slice, reversible=True, codecformat='J2K', "
            "bitspersample=B, numthreads=1)` (reversible 5/3 wavelet, lossless, one tile, "
            "one quality layer, raw codestream); `jpeg2k_decode(numthreads=1)`")

    def load(self):
        ic = super().load()
        _ic_codec_available(ic, "JPEG2K", "jpeg2k_encode", "jpeg2k_decode")
        self.ic = ic
        return ic

    def enc(self, vol, s):
        return self.ic.jpeg2k_encode(s, reversible=True, codecformat="J2K",
                                     bitspersample=vol.bits, numthreads=1)

    def dec(self, vol, b):
        return self.ic.jpeg2k_decode(b, numthreads=1)


class Htj2kCodec(SliceCodec):
    key, label = "htj2k", "HTJ2K (OpenJPH, 5/3)"
    threads = "1 (OpenJPH is single-threaded)"
    call = ("`imagecodecs.htj2k_encode(slice, reversible=True)` / `htj2k_decode` (OpenJPH, "
            "reversible 5/3, lossless; precision from the dtype: 16 bits)")

    def load(self):
        ic = super().load()
        _ic_codec_available(ic, "HTJ2K", "htj2k_encode", "htj2k_decode")
        self.ic = ic
        return ic

    def enc(self, vol, s):
        return self.ic.htj2k_encode(s, reversible=True)

    def dec(self, vol, b):
        return self.ic.htj2k_decode(b)


class JpegxlCodec(SliceCodec):
    threads = "1 (numthreads=1)"

    def __init__(self, effort, lossless=True, distance=0.0):
        self.effort = effort
        self.lossless = lossless
        self.distance = distance
        if lossless:
            self.key = f"jpegxl-e{effort}"
            self.label = f"JPEG XL e{effort}"
            self.call = (f"`imagecodecs.jpegxl_encode(slice, lossless=True, distance=0, "
                         f"effort={effort}, bitspersample=B, numthreads=1)` (libjxl modular "
                         f"mode; uint8 samples when B <= 8); `jpegxl_decode(numthreads=1)`")
        else:
            self.key = f"jpegxl-lossy-d{distance:g}"
            self.label = f"JPEG XL lossy d={distance:g} (checker test)"
            self.call = (f"`imagecodecs.jpegxl_encode(slice, distance={distance:g}, "
                         f"effort={effort})` (deliberately lossy)")

    def load(self):
        ic = super().load()
        _ic_codec_available(ic, "JPEGXL", "jpegxl_encode", "jpegxl_decode")
        self.ic = ic
        return ic

    def enc(self, vol, s):
        if self.lossless:
            if vol.bits <= 8:
                # libjxl refuses uint16 samples with a bit depth <= 8: give it uint8
                s = s.astype(np.uint8)
            return self.ic.jpegxl_encode(s, lossless=True, distance=0.0, effort=self.effort,
                                         bitspersample=vol.bits, numthreads=1)
        return self.ic.jpegxl_encode(s, distance=self.distance, effort=self.effort,
                                     numthreads=1)

    def dec(self, vol, b):
        return self.ic.jpegxl_decode(b, numthreads=1)


class RawCopyCodec(Codec):
    """Stores the voxels as they are (pure numpy). With corrupt=True its decoder changes
    one voxel: the checker's own test (it must be flagged)."""

    transform = "raw"
    threads = "1"

    def __init__(self, corrupt=False):
        self.corrupt = corrupt
        self.lossless = not corrupt
        self.key = "corrupt-copy" if corrupt else "raw-copy"
        self.label = ("raw copy, decoder flips 1 voxel (checker test)" if corrupt
                      else "raw copy (checker test)")
        self.call = "`arr.tobytes()` / `np.frombuffer`" + (" with one voxel +1" if corrupt else "")

    def encode(self, vol):
        b = vol.arr.tobytes()
        return EncState(len(b), data=b)

    def decode(self, vol, state):
        a = np.frombuffer(state.data, dtype=vol.arr.dtype).reshape(vol.arr.shape).copy()
        if self.corrupt:
            i = a.size // 2
            flat = a.reshape(-1)
            flat[i] = flat[i] + 1 if flat[i] < np.iinfo(a.dtype).max else flat[i] - 1
        return a


# --------------------------------------------------------------------- the runner

def _cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(fn, *args):
    """Runs fn(*args); returns (result, wall seconds, CPU seconds of this process and its
    children)."""
    c0, p0 = _cpu_children(), time.process_time()
    t0 = time.perf_counter()
    res = fn(*args)
    wall = time.perf_counter() - t0
    cpu = (time.process_time() - p0) + (_cpu_children() - c0)
    return res, wall, cpu


def run_codec(codec, vol, runs, log=None, slow_seconds=SLOW_SECONDS):
    """Encodes and decodes `vol` with `codec` up to `runs` times, checking every decode.
    Returns a result dict; status is one of ok, NOT LOSSLESS, error, n/a, unavailable."""
    res = {"codec": codec.key, "label": codec.label, "family": codec.family,
           "claims_lossless": codec.lossless, "transform": codec.transform,
           "threads": codec.threads, "volume": vol.name, "voxels": vol.voxels}
    why = codec.unavailable()
    if why:
        res.update(status="unavailable", why=why)
        return res
    why = codec.not_applicable(vol)
    if why:
        res.update(status="n/a", why=why)
        return res
    enc_t, dec_t, enc_cpu, dec_cpu, sizes = [], [], [], [], []
    enc_runs, dec_runs = runs, runs
    state = handle = None
    try:
        for i in range(runs):
            if i < enc_runs:
                if state is not None:
                    codec.release(vol, state, None)
                state, w, c = _timed(codec.encode, vol)
                enc_t.append(w)
                enc_cpu.append(c)
                sizes.append(state.size)
                if i == 0 and w > slow_seconds:
                    enc_runs = 1
            if i < dec_runs:
                handle, w, c = _timed(codec.decode, vol, state)
                dec_t.append(w)
                dec_cpu.append(c)
                if i == 0 and w > slow_seconds:
                    dec_runs = 1
                ok, detail = check_lossless(vol.arr, codec.materialize(vol, handle))
                if not ok:
                    res.update(status="NOT LOSSLESS", why=detail, size=state.size,
                               bpp=8.0 * state.size / vol.voxels)
                    return res
                if isinstance(handle, str) and os.path.exists(handle):
                    os.remove(handle)
                handle = None
    except CodecError as e:
        res.update(status="error", why=str(e))
        return res
    except Exception as e:     # a library raising is a codec failure, not a harness crash
        res.update(status="error", why=f"{type(e).__name__}: {e}")
        return res
    finally:
        codec.release(vol, state, handle)
    size = sizes[0]
    res.update(status="ok", why="", size=size, bpp=8.0 * size / vol.voxels,
               ratio=vol.bytes / size if size else float("inf"),
               enc_mvox=vol.voxels / statistics.median(enc_t) / 1e6,
               dec_mvox=vol.voxels / statistics.median(dec_t) / 1e6,
               enc_runs=len(enc_t), dec_runs=len(dec_t),
               enc_cpu_per_wall=statistics.median(c / w for c, w in zip(enc_cpu, enc_t) if w > 0),
               dec_cpu_per_wall=statistics.median(c / w for c, w in zip(dec_cpu, dec_t) if w > 0),
               enc_seconds=enc_t, dec_seconds=dec_t)
    if len(set(sizes)) != 1:
        res["why"] = f"compressed size varied between runs: {sorted(set(sizes))}"
    return res
