#!/usr/bin/env python3
"""Seeds for the Swift fuzz targets (Sources/voxfuzz), made from real data, into OUT/<target>/:
small real DICOM files (pydicom's test files from the cache), NIfTI, MetaImage, NRRD and gzip
files wrapped around real CT voxels (ct_lung1 from pyradiomics, cut to 32x32x2), the committed
golden .vxz streams, small streams of every preset and format (`voxfs compress` beside VOXFUZZ)
and model files, and the records of the committed seed archives (through
`voxfuzz --seed-records`). Nothing here is committed; the corpus libFuzzer grows stays in OUT.

usage: scripts/fuzz_seeds.py VOXFUZZ OUT"""
import glob, gzip, os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from volume_files import metaimage, nifti1, nrrd

voxfuzz, out = sys.argv[1], sys.argv[2]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
cache = os.environ.get("VOXFS_CACHE", os.path.expanduser("~/.cache/voxfs"))


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


dicoms = [p for p in sorted(glob.glob(os.path.join(cache, "dicom", "**", "*.dcm"), recursive=True))
          if os.path.getsize(p) <= 40000]
if not dicoms:
    sys.exit("fuzz_seeds: no DICOM files in the cache (run scripts/fetch_data.sh)")
for p in dicoms:
    b = open(p, "rb").read()
    put("dicom", os.path.basename(p), b)
for p in dicoms[:12]:  # series: [files, cut] + two files' bytes (the target cuts them apart)
    b = open(p, "rb").read()
    put("series", os.path.basename(p), bytes([0, 3]) + b + b)

# 32x32x2 int16 voxels of a real CT (x fastest)
vol = open(os.path.join(cache, "volumes", "ct_lung1.raw"), "rb").read()
raw = b"".join(vol[(z * 512 * 512 + (200 + y) * 512 + 200) * 2:(z * 512 * 512 + (200 + y) * 512 + 232) * 2]
               for z in (20, 21) for y in range(32))
nii = nifti1(32, 32, 2, raw)
put("nifti", "ct.nii", nii)
put("gzip", "ct.nii.gz", gzip.compress(nii, compresslevel=6, mtime=0))
put("gzip", "ct9.nii.gz", gzip.compress(nii, compresslevel=9, mtime=0))
put("metaimage", "ct.mha", metaimage(32, 32, 2, raw))
put("metaimage", "ctz.mha", metaimage(32, 32, 2, raw, compressed=True))
put("nrrd", "ct.nrrd", nrrd(32, 32, 2, raw))
put("nrrd", "ctgz.nrrd", nrrd(32, 32, 2, raw, gz=True))

for p in sorted(glob.glob(os.path.join(root, "Tests", "VoxCodecTests", "golden", "*.vxz"))):
    if os.path.getsize(p) <= 65536:
        put("stream", os.path.basename(p), open(p, "rb").read())
# small streams (12x10x4 cut from the golden CT voxels) with every preset and format, two
# slices a slab, so that the stream target's mutations reach the slab decoders quickly
voxfs = os.path.join(os.path.dirname(os.path.abspath(voxfuzz)), "voxfs")
golden = os.path.join(root, "Tests", "VoxCodecTests", "golden")
ct = open(os.path.join(golden, "ct.raw"), "rb").read()
small = b"".join(ct[(z * 40 * 48 + y * 48) * 2:(z * 40 * 48 + y * 48 + 12) * 2] for z in range(4) for y in range(10))
tmp = os.path.join(out, "small.raw")
with open(tmp, "wb") as f:
    f.write(small)
for preset in ["classical", "classical-par", "fast", "parallel", "default", "large"]:
    for fmt, extra in [("1", []), ("2", []), ("3", []), ("3", ["--adapt", "1"])]:
        o = os.path.join(out, "stream", f"small.{preset}.v{fmt}{'-adapted' if extra else ''}.vxz")
        os.makedirs(os.path.dirname(o), exist_ok=True)
        if extra and preset.startswith("classical"):
            continue
        subprocess.run([voxfs, "compress", "--shape", "12x10x4", "--dtype", "int16", "--preset", preset, "--slab", "2",
                        "--format", fmt, *extra, tmp, o], check=True, stdout=subprocess.DEVNULL)
os.remove(tmp)
for p in sorted(glob.glob(os.path.join(root, "models", "**", "*.vxm"), recursive=True)):
    put("model", os.path.basename(p), open(p, "rb").read())
for a in sorted(glob.glob(os.path.join(root, "Tests", "Fixtures", "archives", "*.voxfs"))):
    subprocess.run([voxfuzz, "--seed-records", a, os.path.join(out, "records", os.path.basename(a))], check=True,
                   stdout=subprocess.DEVNULL)
for t in sorted(os.listdir(out)):
    n = sum(len(f) for _, _, f in os.walk(os.path.join(out, t)))
    print(f"fuzz_seeds: {t}: {n} seeds")
