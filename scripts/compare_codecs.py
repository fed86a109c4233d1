#!/usr/bin/env python3
"""VoxFS side by side with the lossless codecs users would pick instead (issue 7).

For every real volume in the data cache (NAME.raw + NAME.json sidecar, at least 100,000
voxels) this runs the VoxFS presets and the standard lossless codecs -- JPEG-LS (CharLS),
JPEG 2000 (OpenJPEG), HTJ2K (OpenJPH), JPEG XL (libjxl, effort 7 and 9) slice by slice;
HEVC lossless (x265, slices as frames) and FFV1 through ffmpeg; xz -9e and zstd -19 on the
raw bytes -- decodes every output and compares it voxel for voxel with the input, and
reports bits per voxel, encode/decode speed and the threads used, VoxFS's gain over the best
standard codec, and two plots.

Usage (inside the project venv, ${VOXFS_CACHE:-~/.cache/voxfs}/venv; the script re-runs
itself there when started by another Python):
  scripts/compare_setup.sh                       # installs ffmpeg, imagecodecs, ...
  scripts/compare_codecs.py [--voxfs PATH] [--cache DIR] [--runs N] [--volumes GLOB]
                            [--codecs LIST] [--crop XxYxZ] [--out FILE] [--json FILE]
  scripts/compare_codecs.py --selftest           # < 60 s correctness check
  scripts/compare_codecs.py --from-json F --out FILE   # re-render report/plots, no codec run

HEVC runs twice: as 4:0:0 gray12le frames (`hevc`, as asked) and as the luma of 4:2:0
frames with flat chroma (`hevc-420`), because x265 3.5 + FFmpeg 5.1 4:0:0 round trips are
not always exact (the checker finds it on the MR volumes).

Exit status: 0 done; 1 a VoxFS preset failed or was not lossless (or, with --selftest, any
check failed); 2 setup problem (no data, bad arguments). Standard codecs that fail or are
not lossless are reported, not fatal. Progress goes to stderr.
"""

import os
import sys


def _reexec_in_venv():
    """Re-runs this script with the project venv's Python when numpy or imagecodecs is
    missing here (the system python3 may have numpy but not the codecs)."""
    try:
        import numpy  # noqa: F401
        import imagecodecs  # noqa: F401
        return
    except ImportError:
        pass
    cache = os.environ.get("VOXFS_CACHE") or os.path.expanduser("~/.cache/voxfs")
    for i, a in enumerate(sys.argv):
        if a == "--cache" and i + 1 < len(sys.argv):
            cache = sys.argv[i + 1]
        elif a.startswith("--cache="):
            cache = a.split("=", 1)[1]
    venv = os.path.join(os.path.expanduser(cache), "venv")
    py = os.path.join(venv, "bin", "python")
    if (os.path.isfile(py) and os.path.realpath(sys.prefix) != os.path.realpath(venv)
            and not os.environ.get("VOXFS_COMPARE_REEXEC")):
        os.environ["VOXFS_COMPARE_REEXEC"] = "1"
        os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])
    try:
        import numpy  # noqa: F401,F811
    except ImportError:
        print("error: numpy is not installed for this Python and no venv at "
              f"{venv}: run scripts/compare_setup.sh", file=sys.stderr)
        sys.exit(2)
    # numpy but no imagecodecs, and no venv to go to: run; those codecs are reported missing.


_reexec_in_venv()

import argparse        # noqa: E402
import datetime        # noqa: E402
import json            # noqa: E402
import platform        # noqa: E402
import shlex           # noqa: E402
import shutil          # noqa: E402
import subprocess      # noqa: E402
import tempfile        # noqa: E402
import time            # noqa: E402

import numpy as np     # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import codecs_lib as cl  # noqa: E402
from voxdata import find_volumes as cache_volumes, log  # noqa: E402

MIN_VOXELS = 100_000
PRESETS = ["classical", "parallel", "default", "large"]
STANDARD_KEYS = ["jpegls", "jpegls-b", "jpeg2k", "htj2k", "jpegxl-e7", "jpegxl-e9",
                 "hevc", "hevc-420", "ffv1", "xz", "zstd"]
# voxfs-default-heldout: the default preset with, for each volume, a model trained on the
# other volumes only (scripts/train_fold_models.sh): the shipped models were trained on these
# very volumes, so their rows are in-sample; the held-out row is the honest comparison.
ALL_KEYS = [f"voxfs-{p}" for p in PRESETS] + ["voxfs-default-heldout"] + STANDARD_KEYS
ALIASES = {"voxfs": [f"voxfs-{p}" for p in PRESETS] + ["voxfs-default-heldout"], "jpegxl": ["jpegxl-e7", "jpegxl-e9"],
           "hevc-all": ["hevc", "hevc-420"],
           "standard": STANDARD_KEYS, "all": ALL_KEYS}
SELFTEST_VOLUME = "ct_lung1"
SELFTEST_CROP = (64, 64, 8)


def die(msg, code=2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_args(argv=None):
    cache_default = os.environ.get("VOXFS_CACHE") or os.path.expanduser("~/.cache/voxfs")
    ap = argparse.ArgumentParser(
        description="Compare VoxFS presets with standard lossless codecs on the real volumes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="codecs: " + ", ".join(ALL_KEYS) + "; groups: " + ", ".join(ALIASES))
    ap.add_argument("--voxfs", default=".build/release/voxfs",
                    help="voxfs binary (default: .build/release/voxfs)")
    ap.add_argument("--cache", default=cache_default,
                    help="data cache (default: ${VOXFS_CACHE:-~/.cache/voxfs})")
    ap.add_argument("--runs", type=int, default=3,
                    help="timed runs per codec; speeds are medians (default: 3)")
    ap.add_argument("--volumes", default=None,
                    help="glob of .raw volumes; a bare pattern is taken inside $CACHE/volumes "
                         "(default: every *.raw with a .json sidecar there)")
    ap.add_argument("--codecs", default="all",
                    help="comma-separated codecs or groups (default: all)")
    ap.add_argument("--crop", default=None, metavar="XxYxZ",
                    help="use only a centred crop of each volume (quick checks)")
    ap.add_argument("--out", default=None,
                    help="write the markdown report here; plots go to img/ beside it")
    ap.add_argument("--json", default=None, help="write machine-readable results here")
    ap.add_argument("--heldout-models", default=None, metavar="DIR",
                    help="held-out models DIR/VOLUME.vxm for voxfs-default-heldout "
                         "(default: CACHE/models/heldout, made by scripts/train_fold_models.sh)")
    ap.add_argument("--from-json", default=None, metavar="FILE",
                    help="run no codec: re-render the report (--out) and plots from the "
                         "--json output of an earlier run")
    ap.add_argument("--selftest", action="store_true",
                    help=f"correctness self-test on a {'x'.join(map(str, SELFTEST_CROP))} "
                         f"crop of {SELFTEST_VOLUME}; exit 1 on any failure")
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    keys = []
    for k in (s.strip() for s in a.codecs.split(",")):
        if not k:
            continue
        for kk in ALIASES.get(k, [k]):
            if kk not in ALL_KEYS:
                ap.error(f"unknown codec {kk!r} (known: {', '.join(ALL_KEYS)})")
            if kk not in keys:
                keys.append(kk)
    if not keys:
        ap.error("--codecs is empty")
    a.codec_keys = [k for k in ALL_KEYS if k in keys]
    if a.crop:
        try:
            a.crop = tuple(int(v) for v in a.crop.lower().split("x"))
            assert len(a.crop) == 3 and min(a.crop) > 0
        except (ValueError, AssertionError):
            ap.error("--crop wants XxYxZ, e.g. 128x128x8")
    a.voxfs = os.path.abspath(os.path.expanduser(a.voxfs))
    a.cache = os.path.abspath(os.path.expanduser(a.cache))
    global HELDOUT_DIR
    HELDOUT_DIR = os.path.abspath(os.path.expanduser(a.heldout_models or os.path.join(a.cache, "models", "heldout")))
    return a


HELDOUT_DIR = None  # set from --heldout-models


def make_codecs(keys, voxfs_binary, ncores):
    table = {}
    for p in PRESETS:
        table[f"voxfs-{p}"] = lambda p=p: cl.VoxfsCodec(voxfs_binary, p, ncores)
    table["voxfs-default-heldout"] = lambda: cl.VoxfsCodec(voxfs_binary, "default", ncores, model_dir=HELDOUT_DIR)
    table.update({
        "jpegls": cl.JpeglsCodec, "jpegls-b": cl.JpeglsBitsCodec, "jpeg2k": cl.Jpeg2kCodec,
        "htj2k": cl.Htj2kCodec, "jpegxl-e7": lambda: cl.JpegxlCodec(7),
        "jpegxl-e9": lambda: cl.JpegxlCodec(9), "hevc": lambda: cl.HevcCodec("gray"),
        "hevc-420": lambda: cl.HevcCodec("420"), "ffv1": cl.Ffv1Codec,
        "xz": cl.XzCodec, "zstd": cl.ZstdCodec,
    })
    return [table[k]() for k in keys]


# -------------------------------------------------------------------- environment

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def mem_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError):
        pass
    return None


def first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = (r.stdout or r.stderr).strip().splitlines()
    return out[0].strip(" *") if out else None


def x265_version():
    """libx265's version and build (bit depths) as ffmpeg loads it: one tiny encode."""
    if shutil.which("ffmpeg") is None or not cl.ffmpeg_has_encoder("libx265"):
        return None
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "info", "-f", "lavfi", "-i",
           "color=black:s=64x64:d=0.04", "-pix_fmt", "gray12le", "-c:v", "libx265",
           "-x265-params", "log-level=info:pools=none", "-f", "null", "-"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    ver = build = None
    for ln in r.stderr.splitlines():
        if "HEVC encoder version" in ln:
            ver = ln.split("HEVC encoder version", 1)[1].strip()
        elif "build info" in ln:
            build = ln.split("build info", 1)[1].strip()
    if ver is None:
        return None
    return ver + (f" (build {build})" if build else "")


def versions(voxfs_binary):
    v = {"python": platform.python_version(), "numpy": np.__version__}
    v["voxfs"] = first_line([voxfs_binary, "--version"]) if os.path.isfile(voxfs_binary) else None
    try:
        import imagecodecs
        v["imagecodecs"] = imagecodecs.__version__
        v["imagecodecs_full"] = imagecodecs.version()
        libs = {}
        for item in imagecodecs.version().split(","):
            name, _, ver = item.strip().rpartition("-")
            if name:
                libs[name] = ver
        for lib in ("charls", "openjpeg", "openjph", "libjxl"):
            v[lib] = libs.get(lib)
    except ImportError:
        v["imagecodecs"] = None
    try:
        from importlib.metadata import version as pkg_version
        v["pyjpegls"] = pkg_version("pyjpegls")
    except Exception:
        v["pyjpegls"] = None
    try:
        import matplotlib
        v["matplotlib"] = matplotlib.__version__
    except ImportError:
        v["matplotlib"] = None
    ff = first_line(["ffmpeg", "-version"]) if shutil.which("ffmpeg") else None
    v["ffmpeg"] = ff.replace("ffmpeg version ", "").split(" Copyright")[0] if ff else None
    v["x265"] = x265_version()
    v["xz"] = first_line(["xz", "--version"]) if shutil.which("xz") else None
    v["zstd"] = first_line(["zstd", "--version"]) if shutil.which("zstd") else None
    return v


# ------------------------------------------------------------------------ volumes

def load_volume(v, crop, tmp):
    x, y, z = v["shape"]
    arr = np.fromfile(v["raw"], dtype=cl.DTYPES[v["dtype"]]).reshape(z, y, x)
    arr = arr.astype(arr.dtype.newbyteorder("="))
    raw_path = v["raw"]
    if crop:
        cx, cy, cz = (min(c, s) for c, s in zip(crop, (x, y, z)))
        x0, y0, z0 = (x - cx) // 2, (y - cy) // 2, (z - cz) // 2
        arr = np.ascontiguousarray(arr[z0:z0 + cz, y0:y0 + cy, x0:x0 + cx])
        raw_path = None
    return cl.Volume(v["name"], arr, v["dtype"], tmp, raw_path=raw_path, source=v["source"])


# ------------------------------------------------------------------------- report

def fmt_speed(r, which):
    s = f"{r[which + '_mvox']:.2f}"
    if r[which + "_runs"] == 1 and r.get("runs", 1) > 1:
        s += " †"
    return s


def ranking(rows):
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["bpp"])
    return {r["codec"]: i + 1 for i, r in enumerate(ok)}


def gains(rows):
    """VoxFS default and best preset against the best lossless standard codec."""
    std = [r for r in rows if r["status"] == "ok" and r["family"] == "standard"]
    vx = [r for r in rows if r["status"] == "ok" and r["family"] == "voxfs"]
    if not std or not vx:
        return None
    best_std = min(std, key=lambda r: r["bpp"])
    best_vx = min(vx, key=lambda r: r["bpp"])
    dflt = next((r for r in vx if r["codec"] == "voxfs-default-heldout"), None) or \
        next((r for r in vx if r["codec"] == "voxfs-default"), None)
    g = {"best_standard": best_std["label"], "best_standard_bpp": best_std["bpp"],
         "best_voxfs": best_vx["label"], "best_voxfs_bpp": best_vx["bpp"],
         "best_voxfs_gain_pct": 100.0 * (1.0 - best_vx["bpp"] / best_std["bpp"])}
    if dflt:
        g["voxfs_default_bpp"] = dflt["bpp"]
        g["voxfs_default_gain_pct"] = 100.0 * (1.0 - dflt["bpp"] / best_std["bpp"])
    return g


def status_cell(r):
    st = r["status"]
    if st == "ok":
        return "lossless" + (f" ({r['why']})" if r.get("why") else "")
    if st == "NOT LOSSLESS":
        return f"**NOT LOSSLESS**: {r['why']}"
    if st == "error":
        return f"**ERROR**: {r['why']}"
    return f"{st}: {r['why']}"


def md_escape(s):
    return str(s).replace("|", "\\|")


def report(a, meta, codecs, volumes, results, plots):
    v = meta["versions"]
    lines = ["# VoxFS against standard lossless codecs", "",
             f"Generated by `{meta['command']}` on {meta['date']} "
             f"(took {meta['elapsed_min']:.1f} min)."
             + (f" Report re-rendered from its JSON on {meta['rendered']}."
                if meta.get("rendered") else ""), "",
             "## Setup", "",
             f"- Machine: {meta['cpu']}, {meta['cores']} logical cores"
             + (f", {meta['mem_gib']:.0f} GiB RAM" if meta.get("mem_gib") else "")
             + f" ({meta['os']})",
             f"- Load average (1 min) at start / end: {meta['load_start']:.2f} / "
             f"{meta['load_end']:.2f}. Speeds are wall-clock and other work on the machine "
             "slows them; bpp does not depend on it.",
             f"- voxfs {v.get('voxfs') or '?'} (`{meta['voxfs']}`"
             + (f", binary sha256 {meta['voxfs_binary']['sha256'][:16]}, built "
                f"{meta['voxfs_binary']['mtime']}" if meta.get("voxfs_binary") else "")
             + f"; run with its default threads = all cores = {meta['cores']})",
             f"- imagecodecs {v.get('imagecodecs') or 'not installed'}"
             + (f" (CharLS {v.get('charls')}, OpenJPEG {v.get('openjpeg')}, OpenJPH "
                f"{v.get('openjph')}, libjxl {v.get('libjxl')})" if v.get("imagecodecs") else "")
             + f"; pyjpegls {v.get('pyjpegls') or 'not installed'} (its own CharLS build)",
             f"- ffmpeg {v.get('ffmpeg') or 'not installed'}; libx265 {v.get('x265') or '?'}",
             f"- {v.get('xz') or 'xz: not installed'}; {v.get('zstd') or 'zstd: not installed'}",
             f"- Python {v['python']}, numpy {v['numpy']}, matplotlib {v.get('matplotlib')}",
             f"- Runs: {a.runs} per codec and volume"
             + (f"; **crop**: centred {'x'.join(map(str, a.crop))} of each volume" if a.crop else "")
             + f". Speed = voxels / median wall time, in Mvox/s (millions of voxels per "
             f"second), encode and decode separately. † = timed once (its first run took "
             f"> {cl.SLOW_SECONDS:g} s). CPU/wall = measured CPU time over wall time "
             "(about the number of busy threads).",
             "- bpp = 8 x compressed bytes / voxels. Per-slice codecs: the sum of the slice "
             "codestreams, no container. HEVC: the raw Annex-B bitstream. FFV1: the Matroska "
             "file. VoxFS: the whole .vxz file. xz/zstd: the whole file.",
             "- **Every** decode of every run is compared with the input voxels (dtype, shape, "
             "every voxel). A codec that is not exactly lossless on a volume is marked "
             "NOT LOSSLESS and left out of the ranking and the gains.",
             "- Signed data: the 2D image codecs, HEVC and FFV1 need unsigned samples, so they "
             "get `v - min(volume)` as uint16 (the \"offset\" input below); the minimum is one "
             "integer of metadata per volume, counted as 0 bytes. B = bits needed after the "
             "offset; the codecs that can signal a bit depth get B. VoxFS, xz and zstd get "
             "the volume's own little-endian bytes.",
             "- \"Standard codecs\" = every codec here that is not VoxFS. (Not to be confused "
             "with VoxFS's own `classical` preset, which is VoxFS without the LSTM.)",
             "", "## Codecs", "",
             "| codec | input given to it | threads | exact call |", "|---|---|---|---|"]
    for c in codecs:
        inp = ("volume bytes as they are" if c.transform == "raw"
               else "offset: v - min as uint16 (min stored as metadata)")
        lines.append(f"| {c.label} | {inp} | {md_escape(c.threads)} | {md_escape(c.call)} |")
    lines += ["", "## Results", ""]
    by_vol = {}
    for r in results:
        by_vol.setdefault(r["volume"], []).append(r)
    for vol in volumes:
        rows = by_vol.get(vol["name"], [])
        rank = ranking(rows)
        lines += [f"### {vol['name']}", "",
                  f"{vol['shape_str']} {vol['dtype']}, {vol['voxels']:,} voxels, values "
                  f"{vol['min']}..{vol['max']} (offset {vol['min']}, B = {vol['bits']} bits)"
                  + (f"; source: {vol['source']}" if vol.get("source") else ""), "",
                  "| rank | codec | bpp | ratio | enc Mvox/s | dec Mvox/s | CPU/wall enc, dec "
                  "| status |", "|---:|---|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            if r["status"] == "ok":
                lines.append(
                    f"| {rank[r['codec']]} | {r['label']} | {r['bpp']:.3f} | {r['ratio']:.2f} "
                    f"| {fmt_speed(r, 'enc')} | {fmt_speed(r, 'dec')} "
                    f"| {r['enc_cpu_per_wall']:.1f}, {r['dec_cpu_per_wall']:.1f} "
                    f"| {md_escape(status_cell(r))} |")
            else:
                bpp = f"({r['bpp']:.3f})" if "bpp" in r else ""
                lines.append(f"| | {r['label']} | {bpp} | | | | | {md_escape(status_cell(r))} |")
        lines.append("")
    lines += ["## VoxFS gain over the best standard codec", "",
              "gain = 100 x (1 - VoxFS bpp / best lossless standard codec's bpp): the share of "
              "bits VoxFS saves (negative: VoxFS is larger).", "",
              "The shipped VoxFS models were trained on these same volumes, so the plain VoxFS rows "
              "are in-sample. \"VoxFS default bpp\" is therefore the held-out row when it was run: the "
              "default preset with, for each volume, a model trained on the other volumes only "
              "(`scripts/train_fold_models.sh`), then adapted to the volume at encode time as "
              "`voxfs compress` always does. The best-preset columns include in-sample rows.", "",
              "| volume | best standard codec | its bpp | VoxFS default bpp | gain (default) "
              "| best VoxFS preset | its bpp | gain (best preset) |",
              "|---|---|---:|---:|---:|---|---:|---:|"]
    for vol in volumes:
        g = gains(by_vol.get(vol["name"], []))
        if g is None:
            lines.append(f"| {vol['name']} | n/a | | | | | | |")
            continue
        dflt_bpp = f"{g['voxfs_default_bpp']:.3f}" if "voxfs_default_bpp" in g else "n/a"
        dflt_gain = (f"{g['voxfs_default_gain_pct']:+.1f}%" if "voxfs_default_gain_pct" in g
                     else "n/a")
        lines.append(f"| {vol['name']} | {g['best_standard']} | {g['best_standard_bpp']:.3f} "
                     f"| {dflt_bpp} | {dflt_gain} | {g['best_voxfs']} | "
                     f"{g['best_voxfs_bpp']:.3f} | {g['best_voxfs_gain_pct']:+.1f}% |")
    # Mean over the volumes where a codec was lossless on all of them.
    lines += ["", "## Mean over the volumes", "",
              "Plain means over the volumes above (each volume counts once); a codec that was "
              "not lossless (or n/a) on some volume has no mean.", "",
              "| codec | mean bpp | mean enc Mvox/s | mean dec Mvox/s |", "|---|---:|---:|---:|"]
    for c in codecs:
        rs = [r for r in results if r["codec"] == c.key]
        if rs and all(r["status"] == "ok" for r in rs) and len(rs) == len(volumes):
            n = len(rs)
            lines.append(f"| {c.label} | {sum(r['bpp'] for r in rs) / n:.3f} "
                         f"| {sum(r['enc_mvox'] for r in rs) / n:.2f} "
                         f"| {sum(r['dec_mvox'] for r in rs) / n:.2f} |")
        else:
            lines.append(f"| {c.label} | n/a | | |")
    if plots:
        lines += ["", "## Plots", ""]
        for title, rel in plots:
            lines += [f"![{title}]({rel})", ""]
    bad = [r for r in results if r["status"] in ("NOT LOSSLESS", "error")]
    missing = {r["codec"]: r["why"] for r in results if r["status"] == "unavailable"}
    hints = {c.key: c.hint for c in codecs if c.hint}
    if bad or missing:
        lines += ["", "## Problems", ""]
        for r in bad:
            lines.append(f"- {r['volume']} / {r['label']}: {md_escape(status_cell(r))}")
        for k in dict.fromkeys(r["codec"] for r in bad):
            if k in hints:
                lines.append(f"- {k}: {md_escape(hints[k])}")
        for k, why in missing.items():
            lines.append(f"- {k}: not run: {why}")
    return "\n".join(lines).rstrip() + "\n"


# -------------------------------------------------------------------------- plots

def codec_colors(codecs):
    """VoxFS presets in reds (light to dark); the standard codecs in colours without red."""
    reds = ["#fcae91", "#fb6a4a", "#de2d26", "#a50f15"]
    others = ["#1f77b4", "#ff7f0e", "#2ca02c", "#17becf", "#9467bd", "#8c564b", "#7f7f7f",
              "#bcbd22", "#e377c2", "#aec7e8", "#98df8a", "#c5b0d5", "#ffbb78", "#c49c94"]
    colors, nv, ns = {}, 0, 0
    for c in codecs:
        if c.family == "voxfs":
            colors[c.key] = reds[min(nv, len(reds) - 1)]
            nv += 1
        else:
            colors[c.key] = others[ns % len(others)]
            ns += 1
    return colors


def make_plots(codecs, volumes, results, img_dir, crop):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    os.makedirs(img_dir, exist_ok=True)
    colors = codec_colors(codecs)
    res = {(r["volume"], r["codec"]): r for r in results}
    suffix = f" (centred {'x'.join(map(str, crop))} crops)" if crop else ""
    shown = [c for c in codecs
             if any(res.get((v["name"], c.key), {}).get("status") == "ok" for v in volumes)]

    # 1. grouped bars: bpp per volume per codec
    n = max(1, len(shown))
    width = 0.85 / n
    fig, ax = plt.subplots(figsize=(max(10, 1.1 + len(volumes) * (0.26 * n + 0.6)), 6.2))
    for j, c in enumerate(shown):
        xs, ys = [], []
        for i, v in enumerate(volumes):
            r = res.get((v["name"], c.key))
            if r and r["status"] == "ok":
                xs.append(i - 0.425 + (j + 0.5) * width)
                ys.append(r["bpp"])
        ax.bar(xs, ys, width=width * 0.92, color=colors[c.key], label=c.label,
               edgecolor="black" if c.family == "voxfs" else "none", linewidth=0.6)
    for i, v in enumerate(volumes):
        ok = [res[(v["name"], c.key)] for c in shown
              if res.get((v["name"], c.key), {}).get("status") == "ok"]
        if ok:
            best = min(ok, key=lambda r: r["bpp"])
            ax.annotate(f"best: {best['label']}\n{best['bpp']:.2f} bpp", (i, best["bpp"]),
                        xytext=(i, max(r["bpp"] for r in ok) * 1.04), ha="center", fontsize=8)
    ax.set_xticks(range(len(volumes)))
    ax.set_xticklabels([f"{v['name']}\n{v['shape_str']} {v['dtype']}" for v in volumes])
    ax.set_ylabel("bits per voxel (lower is better)")
    ymax = max([r["bpp"] for r in results if r["status"] == "ok"] or [1])
    ax.set_ylim(0, ymax * 1.18)
    ax.set_title("Lossless compression: VoxFS presets (red, outlined) vs standard codecs"
                 + suffix)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    fig.tight_layout()
    bpp_png = os.path.join(img_dir, "compare_bpp.png")
    fig.savefig(bpp_png, dpi=110, bbox_inches="tight")
    plt.close(fig)

    # 2. bpp against decode speed
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    fig, ax = plt.subplots(figsize=(11, 6.5))
    for c in shown:
        for i, v in enumerate(volumes):
            r = res.get((v["name"], c.key))
            if r and r["status"] == "ok":
                ax.scatter(r["dec_mvox"], r["bpp"], color=colors[c.key],
                           marker=markers[i % len(markers)], s=60,
                           edgecolors="black" if c.family == "voxfs" else "none",
                           linewidths=0.7, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("decode speed, Mvox/s (log scale; right is faster)")
    ax.set_ylabel("bits per voxel (lower is better)")
    ax.set_title("Size against decode speed" + suffix)
    ax.grid(True, which="both", alpha=0.3)
    h1 = [Line2D([], [], linestyle="", marker="o", color=colors[c.key], markersize=8,
                 markeredgecolor="black" if c.family == "voxfs" else colors[c.key],
                 label=c.label) for c in shown]
    h2 = [Line2D([], [], linestyle="", marker=markers[i % len(markers)], color="grey",
                 markersize=8, label=v["name"]) for i, v in enumerate(volumes)]
    leg1 = ax.legend(handles=h1, title="codec (colour)", loc="upper left",
                     bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    ax.add_artist(leg1)
    leg2 = ax.legend(handles=h2, title="volume (marker)", loc="lower left",
                     bbox_to_anchor=(1.01, 0.0), fontsize=9, frameon=False)
    fig.tight_layout()
    trade_png = os.path.join(img_dir, "compare_tradeoff.png")
    fig.savefig(trade_png, dpi=110, bbox_inches="tight", bbox_extra_artists=[leg1, leg2])
    plt.close(fig)
    return bpp_png, trade_png


# ----------------------------------------------------------------------- the run

def run_all(a):
    t_start = time.time()
    load_start = os.getloadavg()[0]
    ncores = os.cpu_count() or 1
    codecs = make_codecs(a.codec_keys, a.voxfs, ncores)
    vol_dir = os.path.join(a.cache, "volumes")
    if not os.path.isdir(vol_dir):
        die(f"no data cache at {vol_dir}: run scripts/fetch_data.sh (or pass --cache DIR)")
    vols = cache_volumes(a.cache, a.volumes, MIN_VOXELS)
    if not vols:
        die(f"no volume of at least {MIN_VOXELS:,} voxels with a .json sidecar matching "
            f"{a.volumes or '*.raw'} in {vol_dir}")
    for c in codecs:
        why = c.unavailable()
        if why:
            log(f"note: {c.key} will not run: {why}")

    results, volumes = [], []
    with tempfile.TemporaryDirectory(prefix="voxfs-compare-") as tmp:
        # Snapshot the binary: a rebuild during the run must not swap it mid-benchmark.
        binary_id = None
        if os.path.isfile(a.voxfs):
            snap = os.path.join(tmp, "voxfs")
            shutil.copy2(a.voxfs, snap)
            binary_id = file_identity(snap)
            for c in codecs:
                if isinstance(c, cl.VoxfsCodec):
                    c.binary = snap
        for v in vols:
            vol = load_volume(v, a.crop, tmp)
            info = {"name": vol.name, "shape": vol.shape, "shape_str": vol.shape_str,
                    "dtype": vol.dtype, "voxels": vol.voxels, "min": vol.offset,
                    "max": int(vol.arr.max()), "bits": vol.bits, "source": vol.source,
                    "cropped_from": v["shape"] if a.crop else None}
            volumes.append(info)
            log(f"== {vol.name} {vol.shape_str} {vol.dtype} ({vol.voxels:,} voxels, "
                f"values {info['min']}..{info['max']}, B={vol.bits})")
            for c in codecs:
                t0 = time.time()
                r = cl.run_codec(c, vol, a.runs)
                r["runs"] = a.runs
                results.append(r)
                if r["status"] == "ok":
                    log(f"   {c.label:<28} {r['bpp']:7.3f} bpp  enc {r['enc_mvox']:8.2f}  dec "
                        f"{r['dec_mvox']:8.2f} Mvox/s  ({time.time() - t0:.1f} s)")
                else:
                    log(f"   {c.label:<28} {r['status']}: {r['why']}")
            vol.cleanup()

    meta = {"date": now_str(),
            "command": "scripts/compare_codecs.py " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
            "cpu": cpu_model(), "cores": ncores, "mem_gib": mem_gib(),
            "os": f"{platform.system()} {platform.release()} {platform.machine()}",
            "voxfs": a.voxfs, "voxfs_binary": binary_id, "runs": a.runs, "crop": a.crop,
            "slow_seconds": cl.SLOW_SECONDS, "versions": versions(a.voxfs),
            "load_start": load_start, "load_end": os.getloadavg()[0],
            "elapsed_min": (time.time() - t_start) / 60}
    write_outputs(a, meta, codecs, volumes, results)
    bad_vx = [r for r in results if r["family"] == "voxfs"
              and r["status"] in ("NOT LOSSLESS", "error")]
    for r in results:
        if r["status"] in ("NOT LOSSLESS", "error"):
            log(f"!! {r['volume']} / {r['label']}: {r['status']}: {r['why']}")
    return 1 if bad_vx else 0


def file_identity(path):
    """sha256 prefix, size and mtime of the binary the run used (it may be rebuilt later)."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    st = os.stat(path)
    mtime = datetime.datetime.fromtimestamp(st.st_mtime).astimezone()
    return {"sha256": h.hexdigest(), "bytes": st.st_size,
            "mtime": mtime.strftime("%Y-%m-%d %H:%M:%S %Z")}


def now_str():
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def write_outputs(a, meta, codecs, volumes, results):
    plots = []
    if a.out:
        img_dir = os.path.join(os.path.dirname(os.path.abspath(a.out)), "img")
        try:
            bpp_png, trade_png = make_plots(codecs, volumes, results, img_dir, a.crop)
            plots = [("bits per voxel per volume and codec", "img/" + os.path.basename(bpp_png)),
                     ("bits per voxel against decode speed", "img/" + os.path.basename(trade_png))]
            log(f"wrote {bpp_png} and {trade_png}")
        except ImportError as e:
            log(f"warning: no plots ({e}); run scripts/compare_setup.sh")
    md = report(a, meta, codecs, volumes, results, plots)
    sys.stdout.write(md)
    sys.stdout.flush()
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(md)
        log(f"wrote {a.out}")
    if a.json:
        doc = {"meta": meta,
               "codecs": [{"key": c.key, "label": c.label, "family": c.family,
                           "transform": c.transform, "threads": c.threads, "call": c.call}
                          for c in codecs],
               "volumes": volumes, "results": results,
               "gains": {v["name"]: gains([r for r in results if r["volume"] == v["name"]])
                         for v in volumes}}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        log(f"wrote {a.json}")


def rerender(a):
    """--from-json: the report and plots of an earlier run, without running any codec."""
    try:
        with open(a.from_json) as f:
            doc = json.load(f)
        meta, volumes, results = doc["meta"], doc["volumes"], doc["results"]
        keys = [c["key"] for c in doc["codecs"]]
    except (OSError, ValueError, KeyError) as e:
        die(f"cannot read {a.from_json}: {e}")
    a.runs, a.crop = meta["runs"], meta.get("crop")
    meta["rendered"] = now_str()
    codecs = make_codecs(keys, meta["voxfs"], meta["cores"])
    a.json = None
    write_outputs(a, meta, codecs, volumes, results)
    return 0


# ---------------------------------------------------------------------- self-test

def selftest(a):
    t0 = time.time()
    passed, failed, skipped = [], [], []

    def expect(name, cond, detail=""):
        (passed if cond else failed).append(name)
        log(f"  {'ok  ' if cond else 'FAIL'} {name}" + (f": {detail}" if detail else ""))

    vols = cache_volumes(a.cache, SELFTEST_VOLUME + ".raw", MIN_VOXELS) if os.path.isdir(
        os.path.join(a.cache, "volumes")) else []
    with tempfile.TemporaryDirectory(prefix="voxfs-compare-selftest-") as tmp:
        if vols:
            vol = load_volume(vols[0], SELFTEST_CROP, tmp)
            log(f"selftest: centred {'x'.join(map(str, SELFTEST_CROP))} crop of "
                f"{SELFTEST_VOLUME} ({vol.dtype}, values {vol.offset}..{int(vol.arr.max())})")
        else:
            msg = f"{SELFTEST_VOLUME} not in {a.cache}/volumes (scripts/fetch_data.sh fetches it)"
            if os.environ.get("VOXFS_REQUIRE_DATA"):
                expect("real data present", False, msg)
                return 1
            log(f"selftest: {msg}; checking the checker on a synthetic int16 volume, "
                "skipping the codec round trips (they need the real crop)")
            rng = np.random.default_rng(7)
            zz, yy, xx = np.mgrid[0:8, 0:64, 0:64]
            arr = (40 * np.sin(xx / 7.0) * np.cos(yy / 9.0) + 3 * zz - 1000
                   + rng.integers(-20, 20, xx.shape)).astype(np.int16)
            vol = cl.Volume("synthetic", np.ascontiguousarray(arr), "int16", tmp)

        # 1. The checker itself, directly.
        log("checker:")
        orig = vol.arr
        flipped = orig.copy()
        flipped.reshape(-1)[orig.size // 3] ^= 1
        expect("identical copy passes", cl.check_lossless(orig, orig.copy())[0])
        for name, dec in [("one voxel changed", flipped),
                          ("same values, wrong dtype (int32)", orig.astype(np.int32)),
                          ("same values, float64", orig.astype(np.float64)),
                          ("one voxel missing", orig.reshape(-1)[:-1]),
                          ("slices in reverse order", np.ascontiguousarray(orig[::-1])),
                          ("raw bytes instead of an array", orig.tobytes()),
                          ("no output", None)]:
            ok, why = cl.check_lossless(orig, dec)
            expect(f"flags: {name}", not ok, why)
        # offset transform round trip and its guards
        expect("offset transform round-trips", cl.check_lossless(
            orig, vol.restore(vol.unsigned()))[0])
        expect("flags: offset decode off by one", not cl.check_lossless(
            orig, vol.restore(vol.unsigned() + 1))[0])
        # a decoded file of the wrong length (the CLI codecs' path)
        bad = os.path.join(vol.tmp, "short.raw")
        orig.reshape(-1)[:-1].tofile(bad)
        expect("flags: decoded file one voxel short", not cl.check_lossless(
            orig, vol.read_decoded(bad, unsigned=False))[0])
        orig.tofile(bad)
        expect("decoded file identical passes", cl.check_lossless(
            orig, vol.read_decoded(bad, unsigned=False))[0])

        # 2. The same checks through the harness pipeline (run_codec).
        log("pipeline:")
        r = cl.run_codec(cl.RawCopyCodec(), vol, 1)
        expect("raw copy codec reported lossless", r["status"] == "ok", r.get("why"))
        r = cl.run_codec(cl.RawCopyCodec(corrupt=True), vol, 1)
        expect("corrupting decoder reported NOT LOSSLESS", r["status"] == "NOT LOSSLESS",
               r.get("why"))
        lossy = cl.JpegxlCodec(3, lossless=False, distance=1.0)
        why = lossy.unavailable()
        if why:
            skipped.append(lossy.key)
            log(f"  skip lossy JPEG XL check: {why}")
        else:
            r = cl.run_codec(lossy, vol, 1)
            expect("lossy JPEG XL (distance 1) reported NOT LOSSLESS",
                   r["status"] == "NOT LOSSLESS", r.get("why"))

        # 3. Every codec of the comparison on the crop.
        log("codecs:")
        ncores = os.cpu_count() or 1
        for c in make_codecs(a.codec_keys, a.voxfs, ncores) if vols else []:
            r = cl.run_codec(c, vol, 1)
            if r["status"] == "unavailable":
                skipped.append(c.key)
                log(f"  skip {c.key}: {r['why']}")
            elif r["status"] == "n/a":
                skipped.append(c.key)
                log(f"  n/a  {c.key}: {r['why']}")
            else:
                expect(f"{c.key} lossless", r["status"] == "ok",
                       f"{r['status']}: {r['why']}" if r["status"] != "ok"
                       else f"{r['bpp']:.3f} bpp")
        vol.cleanup()
    if not vols:
        skipped.extend(a.codec_keys)
        log(f"  skip all {len(a.codec_keys)} codecs: no real data")
    dt = time.time() - t0
    log(f"compare_codecs selftest: {len(passed)} checks ok, {len(failed)} failed, "
        f"{len(skipped)} skipped ({dt:.1f} s)")
    if failed:
        log("FAILED: " + ", ".join(failed))
        return 1
    return 0


def main():
    a = parse_args()
    if a.selftest:
        return selftest(a)
    if a.from_json:
        return rerender(a)
    return run_all(a)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        die("interrupted", 130)
