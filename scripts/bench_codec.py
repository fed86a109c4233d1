#!/usr/bin/env python3
"""Codec benchmark: VoxFS presets against xz -9 and zstd -19 on the real volumes.

For every real volume in the data cache (NAME.raw with a NAME.json sidecar,
at least 100,000 voxels) and every VoxFS preset this compresses and
decompresses the volume --runs times, checks the round trip is byte-identical,
and reports bits per voxel, compression ratio and the median encode/decode
speed. xz -9 -T1 and zstd -19 (single-threaded) run side by side on the same
raw bytes, also timed and verified. When numpy and imagecodecs can be imported
(the project venv, scripts/compare_setup.sh), JPEG XL lossless e7 and JPEG-LS
(CharLS) rows are added too: slice by slice in this process, one thread, each
decode verified; the report then gives each VoxFS preset's decode speed as a
multiple of JPEG XL's, measured in the same run.

Usage:
  scripts/bench_codec.py [--voxfs PATH] [--cache DIR] [--runs N] [--threads N]
                         [--presets LIST] [--volumes GLOB] [--out FILE]

A preset may carry flags: PRESET@--flag=value+--flag2=value, e.g. default@--format=1 (compress
flags) or default@--slice-threads=2 (a decompress flag: threads per slab, format v2's wavefront).

Standard library only, except the optional image-codec rows. Progress goes to
stderr; the markdown report goes to stdout (and to --out if given). Exit codes:
0 ok, 1 a round trip failed or was not byte-identical, 2 setup problem (no
voxfs binary, no data cache, no xz/zstd).
"""

import argparse
import datetime
import filecmp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from voxdata import find_volumes as cache_volumes, log

DEFAULT_PRESETS = "classical,classical-par,fast,default@--adapt=0,default,large"
MIN_VOXELS = 100_000
# A reference codec's compression run longer than this (seconds) is timed once.
SLOW_REF_SECONDS = 5.0


class BenchError(Exception):
    """A codec failed or a round trip was not byte-identical."""


def die(msg, code=2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_args():
    cache_default = os.environ.get("VOXFS_CACHE") or os.path.expanduser("~/.cache/voxfs")
    ap = argparse.ArgumentParser(
        description="Benchmark VoxFS presets against xz -9 and zstd -19 on real volumes.")
    ap.add_argument("--voxfs", default=".build/release/voxfs",
                    help="voxfs binary (default: .build/release/voxfs)")
    ap.add_argument("--cache", default=cache_default,
                    help="data cache (default: ${VOXFS_CACHE:-~/.cache/voxfs})")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per codec (default: 3)")
    ap.add_argument("--presets", default=DEFAULT_PRESETS,
                    help=f"comma-separated VoxFS presets, each optionally PRESET@--flag=value+--flag2=value (default: {DEFAULT_PRESETS})")
    ap.add_argument("--volumes", default=None,
                    help="glob of .raw volumes; a bare pattern is taken inside $CACHE/volumes "
                         "(default: all *.raw with a .json sidecar there)")
    ap.add_argument("--out", default=None, help="also write the markdown report here")
    ap.add_argument("--threads", type=int, default=None,
                    help="voxfs --threads for compress and decompress (default: voxfs's own, all cores)")
    ap.add_argument("--no-image-codecs", action="store_true",
                    help="leave out the JPEG XL and JPEG-LS rows even if imagecodecs is importable")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    a.presets = [p.strip() for p in a.presets.split(",") if p.strip()]
    if not a.presets:
        ap.error("--presets is empty")
    return a


# ---------------------------------------------------------------- environment

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def tool_version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    out = (r.stdout or r.stderr).strip().splitlines()
    return out[0].strip(" *") if out else "unknown"


def timed(cmd, stdout_path=None):
    """Runs cmd, returns wall seconds; raises BenchError on a non-zero exit."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
    finally:
        if stdout_path:
            out.close()
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip()
        raise BenchError(f"`{' '.join(cmd)}` exited {r.returncode}: {err}")
    return dt


def first_difference(a, b, chunk=1 << 20):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        off = 0
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                for i in range(min(len(x), len(y))):
                    if x[i] != y[i]:
                        return off + i
                return off + min(len(x), len(y))
            if not x:
                return None
            off += len(x)


def verify(orig, decoded, label):
    if filecmp.cmp(orig, decoded, shallow=False):
        return
    so, sd = os.path.getsize(orig), os.path.getsize(decoded)
    off = first_difference(orig, decoded)
    raise BenchError(f"{label}: round trip NOT byte-identical "
                     f"(original {so} bytes, decoded {sd} bytes, first difference at byte {off})")


def bench_codec(vol, label, enc_cmd, dec_cmd, comp, dec, runs, enc_stdout, dec_stdout,
                slow_enc_once=False):
    """Times runs encodes and decodes; returns a result row."""
    enc_t, dec_t, sizes = [], [], set()
    enc_runs = runs
    for i in range(runs):
        if i < enc_runs:
            enc_t.append(timed(enc_cmd, comp if enc_stdout else None))
            sizes.add(os.path.getsize(comp))
            if i == 0 and slow_enc_once and enc_t[0] > SLOW_REF_SECONDS:
                enc_runs = 1
        if os.path.exists(dec):
            os.remove(dec)
        dec_t.append(timed(dec_cmd, dec if dec_stdout else None))
        verify(vol["raw"], dec, f"{vol['name']} / {label} (run {i + 1})")
    if len(sizes) != 1:
        raise BenchError(f"{vol['name']} / {label}: compressed size differs between runs: "
                         f"{sorted(sizes)}")
    size = sizes.pop()
    vox = vol["voxels"]
    return {"label": label, "size": size, "bpp": 8.0 * size / vox,
            "ratio": vol["bytes"] / size,
            "enc": vox / statistics.median(enc_t) / 1e6,
            "dec": vox / statistics.median(dec_t) / 1e6,
            "enc_runs": len(enc_t), "dec_runs": len(dec_t), "ok": True}


def failed_row(label, why):
    return {"label": label, "ok": False, "why": why}


def image_codecs():
    """(numpy, imagecodecs) or the reason they cannot be used."""
    try:
        import numpy
        import imagecodecs
        for need in ("jpegxl_encode", "jpegxl_decode", "jpegls_encode", "jpegls_decode"):
            if not hasattr(imagecodecs, need):
                return None, f"imagecodecs has no {need}"
        return (numpy, imagecodecs), None
    except ImportError as e:
        return None, f"{e}; run with the venv python of scripts/compare_setup.sh"


def bench_image_codecs(vol, mods, runs):
    """JPEG XL lossless e7 and JPEG-LS, slice by slice, one thread, in this process."""
    np, ic = mods
    nx, ny, nz = vol["shape"]
    dt = {"uint8": "u1", "int16": "<i2", "uint16": "<u2"}[vol["dtype"]]
    a = np.fromfile(vol["raw"], dtype=dt).reshape(nz, ny, nx).astype(np.int32)
    off = int(a.min())
    u = (a - off).astype(np.uint16)  # both codecs code unsigned samples
    bits = max(int(u.max()).bit_length(), 2)
    if bits <= 8:
        u = u.astype(np.uint8)
    codecs = [
        ("JPEG XL e7 (libjxl, 1 thread)",
         lambda s: ic.jpegxl_encode(s, lossless=True, distance=0.0, effort=7, bitspersample=bits, numthreads=1),
         lambda b: ic.jpegxl_decode(b, numthreads=1)),
        ("JPEG-LS (CharLS)", lambda s: ic.jpegls_encode(s), lambda b: ic.jpegls_decode(b)),
    ]
    rows = []
    for label, enc, dec in codecs:
        try:
            enc_t, dec_t = [], []
            for _ in range(runs):
                t0 = time.perf_counter()
                blobs = [enc(u[z]) for z in range(nz)]
                enc_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                out = [dec(b) for b in blobs]
                dec_t.append(time.perf_counter() - t0)
                for z, o in enumerate(out):
                    if not np.array_equal(o.astype(np.int32) + off, a[z]):
                        raise BenchError(f"{vol['name']} / {label}: slice {z} NOT lossless")
            size = sum(len(b) for b in blobs)
            vox = vol["voxels"]
            rows.append({"label": label, "size": size, "bpp": 8.0 * size / vox, "ratio": vol["bytes"] / size,
                         "enc": vox / statistics.median(enc_t) / 1e6, "dec": vox / statistics.median(dec_t) / 1e6,
                         "enc_runs": runs, "dec_runs": runs, "ok": True})
        except Exception as e:  # a codec that fails is reported, the benchmark goes on
            rows.append(failed_row(label, str(e)))
    return rows


# -------------------------------------------------------------------- report

def fmt_row(vol, r, shape_s):
    head = f"| {vol['name']} | {shape_s} | {vol['dtype']} | {r['label']} "
    if not r["ok"]:
        return head + "| **FAILED** | | | |"
    enc = f"{r['enc']:.2f}"
    if r["enc_runs"] == 1 and r["dec_runs"] > 1:
        enc += " †"
    return head + f"| {r['bpp']:.3f} | {r['ratio']:.3f} | {enc} | {r['dec']:.2f} |"


def main():
    a = parse_args()

    voxfs = os.path.abspath(os.path.expanduser(a.voxfs))
    if not (os.path.isfile(voxfs) and os.access(voxfs, os.X_OK)):
        die(f"voxfs binary not found at {voxfs}: run `make build` first (or pass --voxfs PATH)")
    for tool in ("xz", "zstd"):
        if shutil.which(tool) is None:
            die(f"`{tool}` not found on PATH: install it to run the reference codecs")
    cache = os.path.abspath(os.path.expanduser(a.cache))
    vol_dir = os.path.join(cache, "volumes")
    if not os.path.isdir(vol_dir):
        die(f"no data cache at {vol_dir}: run scripts/fetch_data.sh first (or pass --cache DIR)")
    vols = cache_volumes(cache, a.volumes, MIN_VOXELS)
    if not vols:
        if a.volumes:
            die(f"no volume matching {a.volumes} with a .json sidecar and at least "
                f"{MIN_VOXELS:,} voxels in {vol_dir}")
        die(f"no volumes of at least {MIN_VOXELS:,} voxels with a .json sidecar in {vol_dir}: "
            f"run scripts/fetch_data.sh first")

    threads = os.cpu_count() or 1
    vx_threads = ["--threads", str(a.threads)] if a.threads else []
    mods, why_not = (None, "--no-image-codecs") if a.no_image_codecs else image_codecs()
    now = datetime.datetime.now().astimezone()
    voxfs_version = tool_version([voxfs, "--version"])
    header = [
        "# VoxFS codec benchmark",
        "",
        f"- Date: {now.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: {cpu_model()}, {threads} logical cores ({platform.system()} {platform.machine()})",
        f"- voxfs: {voxfs_version} ({voxfs}), " + (f"--threads {a.threads}" if a.threads else f"default threads = all cores = {threads}"),
        f"- xz: {tool_version(['xz', '--version'])} (`xz -9 -T1`, single-threaded)",
        f"- zstd: {tool_version(['zstd', '--version'])} (`zstd -19`, single-threaded)",
        f"- Runs: {a.runs}; speeds are medians over runs, in millions of voxels per second; "
        f"bpp = 8 x compressed bytes / voxels; ratio = raw bytes / compressed bytes",
        f"- † = reference codec encoder timed once (first run took > {SLOW_REF_SECONDS:g} s)",
        ("- JPEG XL / JPEG-LS: imagecodecs " + mods[1].__version__ + ", slice by slice in the benchmark's process, "
         "one thread, samples offset to unsigned; voxfs rows are whole processes (start-up and file I/O included)")
        if mods else f"- JPEG XL / JPEG-LS rows left out ({why_not})",
        "",
    ]

    failures = []
    sections = []
    with tempfile.TemporaryDirectory(prefix="voxfs-bench-") as tmp:
        # Snapshot the binary so a rebuild during the run cannot swap it mid-benchmark.
        vx = os.path.join(tmp, "voxfs")
        shutil.copy2(voxfs, vx)
        for vol in vols:
            shape_s = "x".join(str(s) for s in vol["shape"])
            log(f"== {vol['name']} {shape_s} {vol['dtype']} ({vol['voxels']:,} voxels)")
            rows = []
            comp = os.path.join(tmp, "out.vxz")
            dec = os.path.join(tmp, "out.raw")
            for p in a.presets:
                # PRESET@--flag=value+... adds compress flags (e.g. default@--adapt=0); a
                # --slice-threads=N flag goes to decompress (threads per slab: the v2 wavefront)
                name, _, extra = p.partition("@")
                allflags = [f for f in extra.split("+") if f] if extra else []
                flags = [f for f in allflags if not f.startswith("--slice-threads")]
                dflags = [f for f in allflags if f.startswith("--slice-threads")]
                label = f"voxfs {name}" + (" " + " ".join(allflags) if allflags else "")
                log(f"   {label} ...")
                try:
                    r = bench_codec(vol, label,
                                    [vx, "compress", vol["raw"], comp, "--preset", name, "-q"] + vx_threads + flags,
                                    [vx, "decompress", comp, dec, "-q"] + vx_threads + dflags,
                                    comp, dec, a.runs, enc_stdout=False, dec_stdout=False)
                except BenchError as e:
                    log(f"!! ERROR: {e}")
                    failures.append(str(e))
                    r = failed_row(label, str(e))
                rows.append(r)
                for f in (comp, dec):
                    if os.path.exists(f):
                        os.remove(f)
            refs = [
                ("xz -9 -T1", ["xz", "-9", "-c", "-T1", vol["raw"]], "xz", ["xz", "-d", "-c"]),
                ("zstd -19", ["zstd", "-19", "-T1", "-c", "-q", vol["raw"]], "zst",
                 ["zstd", "-d", "-c", "-q"]),
            ]
            for label, enc_cmd, ext, dec_cmd in refs:
                log(f"   {label} ...")
                rcomp = os.path.join(tmp, "out." + ext)
                try:
                    r = bench_codec(vol, label, enc_cmd, dec_cmd + [rcomp], rcomp, dec, a.runs,
                                    enc_stdout=True, dec_stdout=True, slow_enc_once=True)
                except BenchError as e:
                    log(f"!! ERROR: {e}")
                    failures.append(str(e))
                    r = failed_row(label, str(e))
                rows.append(r)
                for f in (rcomp, dec):
                    if os.path.exists(f):
                        os.remove(f)
            if mods:
                log("   JPEG XL e7, JPEG-LS ...")
                for r in bench_image_codecs(vol, mods, a.runs):
                    if not r["ok"]:
                        log(f"!! ERROR: {r['why']}")
                        failures.append(r["why"])
                    rows.append(r)
            for r in rows:
                if r["ok"]:
                    log(f"   {r['label']:<20} {r['bpp']:7.3f} bpp  enc {r['enc']:7.2f}  "
                        f"dec {r['dec']:7.2f} Mvox/s")
            sections.append((vol, shape_s, rows))

    lines = list(header)
    lines.append("| volume | shape | dtype | codec/preset | bpp | ratio | enc Mvox/s | dec Mvox/s |")
    lines.append("|---|---|---|---|---:|---:|---:|---:|")
    for vol, shape_s, rows in sections:
        for r in rows:
            lines.append(fmt_row(vol, r, shape_s))
    lines.append("")
    for vol, shape_s, rows in sections:
        vx_ok = [r for r in rows if r["ok"] and r["label"].startswith("voxfs ")]
        xz = next((r for r in rows if r["ok"] and r["label"].startswith("xz")), None)
        if not vx_ok or xz is None:
            lines.append(f"- {vol['name']}: best VoxFS preset vs xz -9: n/a (a codec failed)")
            continue
        best = min(vx_ok, key=lambda r: r["bpp"])
        gain = 100.0 * (1.0 - best["bpp"] / xz["bpp"])
        word = "fewer" if gain >= 0 else "more"
        lines.append(f"- {vol['name']}: best VoxFS preset vs xz -9: {abs(gain):.1f}% {word} bits "
                     f"({best['label'][6:]}: {best['bpp']:.3f} bpp vs {xz['bpp']:.3f} bpp)")
    for vol, shape_s, rows in sections:
        jxl = next((r for r in rows if r["ok"] and r["label"].startswith("JPEG XL")), None)
        if jxl is None:
            continue
        parts = [f"{r['label'][6:]} {r['dec'] / jxl['dec']:.2f}x" for r in rows
                 if r["ok"] and r["label"].startswith("voxfs ")]
        lines.append(f"- {vol['name']}: decode speed / JPEG XL e7's ({jxl['dec']:.2f} Mvox/s): " + ", ".join(parts))
    if failures:
        lines.append("")
        lines.append("**FAILURES:**")
        for f in failures:
            lines.append(f"- {f}")
    md = "\n".join(lines) + "\n"

    sys.stdout.write(md)
    sys.stdout.flush()
    if a.out:
        with open(a.out, "w") as f:
            f.write(md)
        log(f"wrote {a.out}")
    if failures:
        log(f"!! {len(failures)} failure(s): see above")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        die("interrupted", 130)
