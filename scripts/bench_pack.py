#!/usr/bin/env python3
"""Archive benchmark: `voxfs pack` / `unpack` against `tar | zstd -19` and `tar | xz -9`.

Builds one tree from the real data in the cache (by hard links, nothing is copied):
  series/   four DICOM series (real CT pixels from pyradiomics lung1; headers written by
            scripts/make_test_series.py)
  dicom/    the pydicom and pydicom-data test files (real DICOM in many transfer syntaxes,
            many already compressed: these are stored as opaque blobs)
  volumes/  the real CT and MRI volumes as raw + JSON sidecar
then times pack with 1 and with 2 jobs, unpack, and checks the unpacked tree is
byte-identical; tar | zstd -19 -T1 and tar | xz -9 -T1 of the same tree are timed beside it.

Usage: scripts/bench_pack.py [--voxfs PATH] [--cache DIR] [--preset NAME] [--out FILE]
Markdown goes to stdout (and --out). Exit 1 when a round trip is not byte-identical.
"""

import argparse
import datetime
import filecmp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from voxdata import link_tree


def tree_stats(root):
    files = size = 0
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                files += 1
                size += os.path.getsize(p)
    return files, size


def same_tree(a, b):
    for d, _, fs in os.walk(a):
        rel = os.path.relpath(d, a)
        for f in fs:
            if not filecmp.cmp(os.path.join(d, f), os.path.join(b, rel, f), shallow=False):
                return False, os.path.join(rel, f)
    return True, ""


def timed(cmd, **kw):
    t = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxfs", default=".build/release/voxfs")
    ap.add_argument("--cache", default=os.environ.get("VOXFS_CACHE", os.path.expanduser("~/.cache/voxfs")))
    ap.add_argument("--preset", default="default")
    ap.add_argument("--out")
    a = ap.parse_args()
    voxfs = os.path.abspath(a.voxfs)
    work = tempfile.mkdtemp(prefix="voxfs-bench-pack-", dir=os.environ.get("TMPDIR", "/tmp"))
    try:
        tree = os.path.join(work, "data")
        for sub in ["series", "dicom", "volumes"]:
            if not os.path.isdir(os.path.join(a.cache, sub)):
                print(f"bench-pack: {a.cache}/{sub} missing (run make data)", file=sys.stderr)
                return 2
            link_tree(os.path.join(a.cache, sub), os.path.join(tree, sub))
        nfiles, nbytes = tree_stats(tree)
        mb = nbytes / 1e6
        rows = []
        voxels = None
        for jobs in [1, 2]:
            arc = os.path.join(work, f"j{jobs}.voxfs")
            print(f"bench-pack: voxfs pack --jobs {jobs} ...", file=sys.stderr)
            t = timed([voxfs, "pack", tree, arc, "--preset", a.preset, "--jobs", str(jobs), "-q"])
            size = os.path.getsize(arc)
            if voxels is None:
                st = subprocess.run([voxfs, "stats", arc, "--json"], check=True, capture_output=True, text=True).stdout
                import json
                voxels = sum(eval_shape(v["shape"]) for v in json.loads(st)["volume_details"])
            rows.append((f"voxfs pack --jobs {jobs} (preset {a.preset})", size, t, None, arc))
        arc = rows[0][4]
        out = os.path.join(work, "out")
        print("bench-pack: voxfs unpack ...", file=sys.stderr)
        tu = timed([voxfs, "unpack", arc, out])
        ok, bad = same_tree(tree, os.path.join(out, "data"))
        if not ok:
            print(f"bench-pack: {bad} differs after unpack", file=sys.stderr)
            return 1
        tv = timed([voxfs, "verify", arc])
        rows = [(n, s, t, tu, None) for (n, s, t, _, _) in rows]
        for name, comp, ext in [("tar \\| zstd -19 -T1", ["zstd", "-19", "-T1", "-q", "-c"], "zst"), ("tar \\| xz -9 -T1", ["xz", "-9", "-T1", "-c"], "xz")]:
            print(f"bench-pack: {name} ...", file=sys.stderr)
            f = os.path.join(work, "data.tar." + ext)
            t0 = time.monotonic()
            with open(f, "wb") as o:
                tar = subprocess.Popen(["tar", "-C", work, "-cf", "-", "data"], stdout=subprocess.PIPE)
                subprocess.run(comp, stdin=tar.stdout, stdout=o, check=True)
                tar.wait()
            t = time.monotonic() - t0
            d = os.path.join(work, "x-" + ext)
            os.makedirs(d)
            t0 = time.monotonic()
            dec = subprocess.Popen([comp[0], "-d", "-c", f], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-C", d, "-xf", "-"], stdin=dec.stdout, check=True)
            dec.wait()
            td = time.monotonic() - t0
            ok, bad = same_tree(tree, os.path.join(d, "data"))
            if not ok:
                print(f"bench-pack: {name}: {bad} differs", file=sys.stderr)
                return 1
            rows.append((name, os.path.getsize(f), t, td, None))
        lines = [
            f"Tree: {nfiles} files, {nbytes:,} bytes ({voxels:,} voxels in volumes): the real DICOM series, "
            "the pydicom/pydicom-data test files and the real CT/MRI raw volumes from the data cache.",
            f"Machine: {os.cpu_count()} cores, {platform.machine()}, {datetime.date.today()}. "
            f"`voxfs verify` of the archive: {tv:.1f} s. Every round trip checked byte-identical.",
            "",
            "| tool | archive bytes | ratio | pack s | pack MB/s | pack Mvox/s | unpack s | unpack MB/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, size, t, tu, _ in rows:
            mvox = f"{voxels / t / 1e6:.2f}" if name.startswith("voxfs") else ""
            lines.append(f"| {name} | {size:,} | {nbytes / size:.2f} | {t:.1f} | {mb / t:.1f} | {mvox} | {tu:.1f} | {mb / tu:.1f} |")
        md = "\n".join(lines) + "\n"
        print(md)
        if a.out:
            with open(a.out, "w") as f:
                f.write(md)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def eval_shape(s):
    n = 1
    for p in s.replace("x", " ").split():
        n *= int(p)
    return n


if __name__ == "__main__":
    sys.exit(main())
