#!/usr/bin/env python3
"""Regenerates the golden streams of Tests/VoxCodecTests/golden (see README.md there).

Run ONLY when a new format version is introduced, and then only to ADD files: the committed
v1 streams were written by the encoder of commit 5715dbb and must keep decoding forever.

  python3 make_golden.py --voxfs .build/release/voxfs [--cache ~/.cache/voxfs] [--out DIR]   # v1 (done)
  python3 make_golden.py --voxfs .build/release/voxfs --v2 [--out DIR]   # adds CROP.TAG.v2.vxz only
  python3 make_golden.py --voxfs .build/release/voxfs --v3 [--out DIR]   # adds CROP.TAG.v3.vxz only
  python3 make_golden.py --voxfs .build/release/voxfs --m2 [--out DIR]   # adds CROP.PRESET-m2.v3.vxz only
  python3 make_golden.py --voxfs .build/release/voxfs --v4 [--out DIR]   # adds CROP.TAG.v4.vxz only

Standard library only: crops are cut from the raw volumes of the data cache (x fastest,
little-endian), written as CROP.raw with a CROP.json sidecar, then coded with
`voxfs compress` for every preset.
"""
import argparse, json, os, subprocess, sys

# name, source volume, x0, y0, z0, nx, ny, nz
CROPS = [
    ("ct", "ct_lung1", 200, 180, 20, 48, 40, 10),
    ("mr", "mr_brain1", 90, 90, 8, 40, 36, 9),
    ("emri", "dcm_emri_small", 12, 12, 2, 40, 40, 6),
    ("tiny", "ct_lung1", 250, 250, 22, 12, 10, 4),
]
PRESETS = ["classical", "classical-par", "fast", "parallel", "default", "large"]
# (crop, preset, extra flags, file tag)
EXTRA = [("ct", "default", ["--adapt", "1"], "default-adapted"), ("tiny", "paper", [], "paper")]
SLAB = 4
SLAB_OF = {"tiny": 2, "ct24": 3, "icbm8": 3}  # the tiny crop has 4 slices: two slabs
# format v2 (issue 11): the crops above, not cut again; (crop, preset, extra flags, tag)
V2 = [("ct", p, [], p) for p in PRESETS] + [
    ("ct", "default", ["--adapt", "1"], "default-adapted"),
    ("mr", "fast", [], "fast"), ("mr", "default", [], "default"),
    ("emri", "default", [], "default"),
    # 5 state rows: the next slice starts before this one is half done
    ("ct", "fast", ["--state-rows", "5"], "fast-rows5"),
    ("tiny", "paper", [], "paper"),
]

# format v3 (issue 12): v2 plus the residual filter and sign-pattern contexts; fewer files, to
# keep the committed fixtures under 1 MB
V3 = [("ct", "classical", [], "classical"), ("ct", "default", [], "default"), ("ct", "fast", [], "fast"),
      ("mr", "default", [], "default"), ("mr", "fast", [], "fast"), ("emri", "default", [], "default"),
      ("tiny", "paper", [], "paper")]

# model format 2 (issue 11): the shipped models with quadratic activations, stream format v3; on
# a small crop of its own (the fixtures' 1 MB budget), one stream per LSTM preset
M2_CROP = ("ct24", "ct_lung1", 220, 200, 20, 24, 24, 6)
M2 = [("ct24", p, [], p + "-m2") for p in ["fast", "parallel", "default", "large"]]

# format v4 (issue 12): v3 plus the floor contexts; small crops (the fixtures' 1 MB budget): ct24
# and an 8-bit crop at the edge of the ICBM template's head (69% zero background), where the floor
# contexts matter most
V4_CROP = ("icbm8", "mr_icbm152_t1", 12, 100, 90, 24, 24, 6)
V4 = [("ct24", p, [], p) for p in ["classical", "fast", "default"]] + \
     [("icbm8", "classical", [], "classical"),
      # on a crop this small the LSTM loses every slice to the classical fallback: forced here, so
      # that a v4 LSTM stream over a zero background is among the golden files
      ("icbm8", "default", ["--no-fallback"], "default-nofb")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxfs", required=True)
    ap.add_argument("--cache", default=os.environ.get("VOXFS_CACHE") or os.path.expanduser("~/.cache/voxfs"))
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--v2", action="store_true", help="add the format v2 streams (the crops must exist)")
    ap.add_argument("--v3", action="store_true", help="add the format v3 streams (the crops must exist)")
    ap.add_argument("--m2", action="store_true", help="add the model format 2 streams (the crops must exist)")
    ap.add_argument("--v4", action="store_true", help="add the format v4 streams (cuts the icbm8 crop if missing)")
    a = ap.parse_args()
    if a.m2 and not os.path.exists(os.path.join(a.out, M2_CROP[0] + ".raw")):
        cut(a, *M2_CROP)
    if a.v4 and not os.path.exists(os.path.join(a.out, V4_CROP[0] + ".raw")):
        cut(a, *V4_CROP)
    for version, wanted, todo in ((2, a.v2, V2), (3, a.v3, V3), (3, a.m2, M2), (4, a.v4, V4)):
        if not wanted:
            continue
        for name, preset, flags, tag in todo:
            rp = os.path.join(a.out, name + ".raw")
            vp = os.path.join(a.out, f"{name}.{tag}.v{version}.vxz")
            if os.path.exists(vp):
                sys.exit(f"{vp} exists: golden files are never regenerated")
            subprocess.run([a.voxfs, "compress", rp, vp, "--preset", preset, "--slab", str(SLAB_OF.get(name, SLAB)),
                            "--format", str(version), "-q"] + flags, check=True)
            print(f"{name}.{tag}.v{version}.vxz {os.path.getsize(vp)} bytes", file=sys.stderr)
    if a.v2 or a.v3 or a.m2 or a.v4:
        return
    for name, vol, x0, y0, z0, nx, ny, nz in CROPS:
        rp = cut(a, name, vol, x0, y0, z0, nx, ny, nz)
        jobs = [(p, [], p) for p in PRESETS] if name != "tiny" else []
        jobs += [(p, f, tag) for c, p, f, tag in EXTRA if c == name]
        for preset, flags, tag in jobs:
            vp = os.path.join(a.out, f"{name}.{tag}.vxz")
            subprocess.run([a.voxfs, "compress", rp, vp, "--preset", preset, "--slab", str(SLAB_OF.get(name, SLAB)), "-q"] + flags, check=True)
            print(f"{name}.{tag}.vxz {os.path.getsize(vp)} bytes", file=sys.stderr)


def cut(a, name, vol, x0, y0, z0, nx, ny, nz):
    """Cuts a crop from the data cache's raw volume: NAME.raw and its NAME.json sidecar."""
    meta = json.load(open(os.path.join(a.cache, "volumes", vol + ".json")))
    sx, sy, sz = meta["shape"]
    bpv = {"uint8": 1, "int16": 2, "uint16": 2}[meta["dtype"]]
    raw = open(os.path.join(a.cache, "volumes", vol + ".raw"), "rb").read()
    out = bytearray()
    for z in range(z0, z0 + nz):
        for y in range(y0, y0 + ny):
            o = ((z * sy + y) * sx + x0) * bpv
            out += raw[o:o + nx * bpv]
    rp = os.path.join(a.out, name + ".raw")
    open(rp, "wb").write(out)
    json.dump({"shape": [nx, ny, nz], "dtype": meta["dtype"],
               "source": f"{vol} (sha256 {meta['sha256'][:16]}...), crop x {x0}+{nx}, y {y0}+{ny}, z {z0}+{nz}"},
              open(os.path.join(a.out, name + ".json"), "w"), indent=1)
    return rp


if __name__ == "__main__":
    main()
