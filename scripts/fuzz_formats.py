#!/usr/bin/env python3
"""Long fuzz run of the format parsers (the test suite runs a short one): mutates real DICOM
test files, hand-made NIfTI/NRRD/MetaImage files around real voxels, and compressed volumes (a
.nii.gz from CPython's gzip, pyradiomics' real gzip NRRD written by ITK, a zlib MetaImage), runs
`voxfs probe --verify` on each batch. Pass: no crash (signal), no hang, and every file that is
recognised as a volume rebuilds to exactly its (mutated) bytes.

usage: scripts/fuzz_formats.py [VOXFS] [ITERATIONS]"""
import glob, os, random, subprocess, sys, tempfile

voxfs = sys.argv[1] if len(sys.argv) > 1 else ".build/release/voxfs"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
cache = os.environ.get("VOXFS_CACHE", os.path.expanduser("~/.cache/voxfs"))
seeds = sorted(glob.glob(os.path.join(cache, "dicom", "**", "*.dcm"), recursive=True))[:80]
seeds += sorted(glob.glob(os.path.join(cache, "series", "signed", "*.dcm")))[:2]
raw = open(os.path.join(cache, "volumes", "ct_lung1.raw"), "rb").read()[: 64 * 64 * 2 * 2]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gzip
from volume_files import metaimage, nifti1, nrrd
made = {
    "a.nrrd": nrrd(64, 64, 2, raw),
    "b.mha": metaimage(64, 64, 2, raw),
    "c.nii.gz": gzip.compress(nifti1(64, 64, 2, raw), compresslevel=6, mtime=0),
    "d.mha": metaimage(64, 64, 2, raw, compressed=True),
}
breast = os.path.join(cache, "src", "pyradiomics-3.0.1", "data", "breast1_image.nrrd")
if os.path.exists(breast):
    made["e.nrrd"] = open(breast, "rb").read()
if not seeds:
    sys.exit("fuzz_formats: no DICOM files in the cache (run scripts/fetch_data.sh)")
rng = random.Random(1)
bad = 0
with tempfile.TemporaryDirectory() as tmp:
    done = 0
    while done < n:
        paths = []
        for k in range(50):
            if rng.random() < 0.35:
                name = rng.choice(list(made)); data = bytearray(made[name])
            else:
                src = rng.choice(seeds); name = os.path.basename(src); data = bytearray(open(src, "rb").read())
            for _ in range(rng.randint(1, 8)):
                op = rng.randrange(4)
                if not data: break
                i = rng.randrange(len(data))
                if op == 0: data[i] ^= 1 << rng.randrange(8)
                elif op == 1: data[i:i + 4] = bytes([0xFF] * 4)
                elif op == 2: data = data[:i]
                else: data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            p = os.path.join(tmp, f"{k}-{name}")
            open(p, "wb").write(data)
            paths.append(p)
        try:
            r = subprocess.run([voxfs, "probe", "--verify"] + paths, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            print("HANG in a batch"); bad += 1; continue
        if r.returncode < 0 or "REBUILD MISMATCH" in r.stdout or (r.returncode != 0 and "MISMATCH" not in r.stdout):
            print(f"FAILURE rc={r.returncode}: {r.stdout[-300:]} {r.stderr[-300:]}"); bad += 1
        done += len(paths)
        if done % 1000 == 0: print(f"{done}/{n} files, {bad} failures", flush=True)
print(f"fuzz_formats: {done} files, {bad} failures")
sys.exit(1 if bad else 0)
