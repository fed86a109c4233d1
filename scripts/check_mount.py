#!/usr/bin/env python3
"""Checks a mounted VoxFS archive against the tree it was packed from, the way users' tools
read it: byte-identical files (SHA-256), `ls -lR` metadata (sizes, modes, mtimes, symlinks),
random-offset reads of many sizes, many concurrent readers, pydicom on every DICOM file
(pixels equal the original's), nibabel on every NIfTI, numpy.memmap on every raw volume.

Usage: check_mount.py SOURCE MOUNTED   (MOUNTED: the folder in the mount that SOURCE became)
Prints one line per failure and "N checks ok, M failed"; exit status 1 on any failure.
"""

import json
import os
import random
import stat
import sys
import threading

from voxdata import sha256_file as sha

ok = 0
failed = 0


def check(cond, what):
    global ok, failed
    if cond:
        ok += 1
    else:
        failed += 1
        print("FAIL", what, flush=True)


def walk(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = os.lstat(p)
    return out


def main():
    src, mnt = sys.argv[1], sys.argv[2]
    a, b = walk(src), walk(mnt)
    check(sorted(a) == sorted(b), f"same entries: only in source {sorted(set(a) - set(b))[:5]}, only in mount {sorted(set(b) - set(a))[:5]}")
    files = []
    for rel, st in sorted(a.items()):
        if rel not in b:
            continue
        mt = b[rel]
        check(stat.S_IFMT(st.st_mode) == stat.S_IFMT(mt.st_mode), f"{rel}: type")
        if stat.S_ISLNK(st.st_mode):
            check(os.readlink(os.path.join(src, rel)) == os.readlink(os.path.join(mnt, rel)), f"{rel}: link target")
            continue
        check(stat.S_IMODE(st.st_mode) == stat.S_IMODE(mt.st_mode), f"{rel}: mode {oct(st.st_mode)} vs {oct(mt.st_mode)}")
        if stat.S_ISREG(st.st_mode):
            check(st.st_size == mt.st_size, f"{rel}: size {st.st_size} vs {mt.st_size}")
            check(st.st_mtime_ns == mt.st_mtime_ns, f"{rel}: mtime")
            check(sha(os.path.join(src, rel)) == sha(os.path.join(mnt, rel)), f"{rel}: SHA-256")
            files.append(rel)

    # random-offset reads of every size, against the original bytes
    rng = random.Random(1)
    for rel in files:
        orig = open(os.path.join(src, rel), "rb").read()
        with open(os.path.join(mnt, rel), "rb") as f:
            for size in [1, 2, 3, 7, 511, 4096, 65537, 1 << 20]:
                off = rng.randrange(0, max(1, len(orig) + 16))
                f.seek(off)
                check(f.read(size) == orig[off:off + size], f"{rel}: read {size} at {off}")

    # many concurrent readers (each file read whole by 16 threads at once, in random order)
    errors = []

    def reader(seed):
        r = random.Random(seed)
        order = files[:]
        r.shuffle(order)
        for rel in order:
            with open(os.path.join(mnt, rel), "rb") as f:
                if f.read() != open(os.path.join(src, rel), "rb").read():
                    errors.append(rel)

    ts = [threading.Thread(target=reader, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errors, f"concurrent readers: {errors[:5]}")

    # the tools users point at the mount
    import numpy as np
    try:
        import pydicom
        for rel in files:
            if not rel.endswith(".dcm"):
                continue
            o = pydicom.dcmread(os.path.join(src, rel))
            m = pydicom.dcmread(os.path.join(mnt, rel))
            check(m == o, f"{rel}: pydicom dataset")
            try:
                op = o.pixel_array
            except Exception:
                continue          # a transfer syntax this pydicom has no decoder for
            check(np.array_equal(op, m.pixel_array), f"{rel}: pydicom pixels")
            h = pydicom.dcmread(os.path.join(mnt, rel), stop_before_pixels=True)
            check(h.SOPInstanceUID == o.SOPInstanceUID if "SOPInstanceUID" in o else True, f"{rel}: header-only read")
    except ImportError:
        check(False, "pydicom is not installed")
    try:
        import nibabel
        for rel in files:
            if rel.endswith((".nii", ".nii.gz")):
                o = nibabel.load(os.path.join(src, rel))
                m = nibabel.load(os.path.join(mnt, rel))
                check(np.array_equal(np.asanyarray(o.dataobj), np.asanyarray(m.dataobj)), f"{rel}: nibabel voxels")
                check(np.allclose(o.affine, m.affine), f"{rel}: nibabel affine")
    except ImportError:
        check(False, "nibabel is not installed")
    for rel in files:
        if rel.endswith(".raw") and os.path.exists(os.path.join(src, rel[:-4] + ".json")):
            meta = json.load(open(os.path.join(src, rel[:-4] + ".json")))
            shape = tuple(reversed(meta["shape"]))
            o = np.memmap(os.path.join(src, rel), dtype=meta["dtype"], mode="r", shape=shape)
            m = np.memmap(os.path.join(mnt, rel), dtype=meta["dtype"], mode="r", shape=shape)
            check(np.array_equal(o, m), f"{rel}: numpy.memmap")
            check(np.array_equal(o[shape[0] // 2], m[shape[0] // 2]), f"{rel}: numpy.memmap middle slice")

    print(f"{ok} checks ok, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
