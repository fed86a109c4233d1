#!/usr/bin/env python3
"""Mount benchmark: reading through `voxfs mount` against the original files on local disk
and the same tree in a squashfs image (zstd) mounted with squashfuse.

Tree (hard links into the data cache): the whole lung1 CT as a 48-file DICOM series (real
pixels, headers written by scripts/make_test_series.py), the four small test series, and the
pydicom / pydicom-data test files. Measured, for each of original / squashfuse / voxfs:
  - cold sequential read of the whole CT series (page cache dropped; voxfs and squashfuse
    freshly mounted), in slice order and in file-name order (names are shuffled);
  - warm sequential read (the same again, everything cached);
  - time to first byte of a random slice's pixels on a cold mount (median of 5);
  - random 4 KiB reads of the series files on a cold mount (median and p99 latency);
  - a header-only scan of every DICOM file (pydicom, stop_before_pixels), cold.
Every file read through a mount is checked against the original (SHA-256) once.

Usage: bench_mount.py --voxfs PATH --cache DIR [--preset NAME] [--out FILE]
Needs root (mounts, drop_caches), squashfs-tools and squashfuse. Run with the cache's venv
python (pydicom).
"""

import argparse
import datetime
import hashlib
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pydicom

from voxdata import link_tree


def drop_caches():
    subprocess.run(["sync"], check=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def read_files(paths, bs=1 << 20):
    n = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                b = f.read(bs)
                if not b:
                    break
                n += len(b)
    return n


def sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


class Target:
    def __init__(self, name, root, mount=None, unmount=None):
        self.name, self.root, self.mount, self.unmount = name, root, mount, unmount

    def cold(self):
        if self.unmount:
            self.unmount()
        drop_caches()
        if self.mount:
            self.mount()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxfs", default=".build/release/voxfs")
    ap.add_argument("--cache", default=os.environ.get("VOXFS_CACHE", os.path.expanduser("~/.cache/voxfs")))
    ap.add_argument("--preset", default="default")
    ap.add_argument("--out")
    a = ap.parse_args()
    voxfs = os.path.abspath(a.voxfs)
    for tool in ["mksquashfs", "squashfuse", "fusermount3"]:
        if not shutil.which(tool):
            print(f"bench-mount: {tool} missing (make bench-mount installs squashfs-tools and squashfuse)", file=sys.stderr)
            return 2
    work = tempfile.mkdtemp(prefix="voxfs-bench-mount-")
    mounts = []
    try:
        tree = os.path.join(work, "data")
        link_tree(os.path.join(a.cache, "series-full"), os.path.join(tree, "ct"), skip_hidden=True)
        link_tree(os.path.join(a.cache, "series"), os.path.join(tree, "series"), skip_hidden=True)
        link_tree(os.path.join(a.cache, "dicom"), os.path.join(tree, "dicom"), skip_hidden=True)
        series = sorted(os.listdir(os.path.join(tree, "ct", "lung1")))
        by_slice = sorted(series, key=lambda n: float(pydicom.dcmread(os.path.join(tree, "ct", "lung1", n), stop_before_pixels=True).ImagePositionPatient[2]))
        dicoms = []
        for d, _, fs in os.walk(tree):
            for f in fs:
                if f.endswith(".dcm") or "dicom" in d:
                    dicoms.append(os.path.relpath(os.path.join(d, f), tree))
        series_bytes = sum(os.path.getsize(os.path.join(tree, "ct", "lung1", n)) for n in series)

        print("bench-mount: packing ...", file=sys.stderr)
        arc = os.path.join(work, "data.voxfs")
        t = time.monotonic()
        subprocess.run([voxfs, "pack", tree, arc, "--preset", a.preset, "-q"], check=True)
        pack_s = time.monotonic() - t
        sq = os.path.join(work, "data.sqfs")
        t = time.monotonic()
        subprocess.run(["mksquashfs", tree, sq, "-comp", "zstd", "-Xcompression-level", "19", "-noappend", "-quiet", "-no-progress"], check=True, stdout=subprocess.DEVNULL)
        sq_s = time.monotonic() - t

        vmnt, smnt = os.path.join(work, "vmnt"), os.path.join(work, "smnt")
        os.makedirs(vmnt)
        os.makedirs(smnt)

        def vmount():
            subprocess.run([voxfs, "mount", arc, vmnt], check=True)
            mounts.append(vmnt)

        def smount():
            subprocess.run(["squashfuse", sq, smnt], check=True)
            mounts.append(smnt)

        def umount(m):
            def f():
                if m in mounts:
                    subprocess.run(["fusermount3", "-u", m], check=True)
                    mounts.remove(m)
                    time.sleep(0.2)
            return f

        targets = [Target("original files (local disk)", tree),
                   Target("squashfuse (squashfs, zstd -19)", os.path.join(smnt, "data") if False else smnt, smount, umount(smnt)),
                   Target(f"voxfs mount (preset {a.preset})", os.path.join(vmnt, "data"), vmount, umount(vmnt))]
        # squashfs holds the tree's contents at its root
        dropped = drop_caches()
        results = {}
        for tg in targets:
            print(f"bench-mount: {tg.name} ...", file=sys.stderr)
            r = {}
            tg.cold()
            # correctness once
            for rel in [os.path.join("ct", "lung1", n) for n in series] + dicoms[:50]:
                if sha(os.path.join(tg.root, rel)) != sha(os.path.join(tree, rel)):
                    print(f"bench-mount: {tg.name}: {rel} differs", file=sys.stderr)
                    return 1
            for order_name, order in [("slice order", by_slice), ("name order", series)]:
                tg.cold()
                paths = [os.path.join(tg.root, "ct", "lung1", n) for n in order]
                t = time.monotonic()
                read_files(paths)
                r["cold " + order_name] = series_bytes / (time.monotonic() - t) / 1e6
            paths = [os.path.join(tg.root, "ct", "lung1", n) for n in by_slice]
            read_files(paths)
            t = time.monotonic()
            for _ in range(3):
                read_files(paths)
            r["warm"] = 3 * series_bytes / (time.monotonic() - t) / 1e6
            # time to first byte of a random slice's pixels, cold
            ttfb = []
            rng = random.Random(5)
            for _ in range(5):
                tg.cold()
                n = rng.choice(series)
                p = os.path.join(tg.root, "ct", "lung1", n)
                size = os.path.getsize(p)
                t = time.monotonic()
                with open(p, "rb", buffering=0) as f:
                    f.seek(size - 512 * 512 * 2 + 1000)
                    f.read(4096)
                ttfb.append(time.monotonic() - t)
            r["ttfb ms"] = statistics.median(ttfb) * 1e3
            # random 4 KiB reads across the series, cold
            tg.cold()
            lat = []
            fds = [os.open(os.path.join(tg.root, "ct", "lung1", n), os.O_RDONLY) for n in series]
            sizes = [os.fstat(fd).st_size for fd in fds]
            for _ in range(400):
                k = rng.randrange(len(fds))
                off = rng.randrange(0, sizes[k] - 4096)
                t = time.monotonic()
                os.pread(fds[k], 4096, off)
                lat.append(time.monotonic() - t)
            for fd in fds:
                os.close(fd)
            lat.sort()
            r["rand4k p50 ms"] = lat[len(lat) // 2] * 1e3
            r["rand4k p99 ms"] = lat[int(len(lat) * 0.99)] * 1e3
            # header-only scan of every DICOM file
            tg.cold()
            t = time.monotonic()
            for rel in dicoms:
                try:
                    pydicom.dcmread(os.path.join(tg.root, rel), stop_before_pixels=True, force=True)
                except Exception:
                    pass
            r["header scan s"] = time.monotonic() - t
            results[tg.name] = r
            if tg.unmount:
                tg.unmount()
        sizes = {"original files (local disk)": sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tree) for f in fs),
                 "squashfuse (squashfs, zstd -19)": os.path.getsize(sq), f"voxfs mount (preset {a.preset})": os.path.getsize(arc)}
        lines = [
            f"Tree: {len(dicoms)} DICOM files and the whole lung1 CT as a 48-file series ({series_bytes:,} bytes; real pixels, "
            "written headers). Machine: "
            f"{os.cpu_count()} cores, {platform.machine()}, {datetime.date.today()}. Cold = page cache dropped"
            f"{'' if dropped else ' (NOT possible here: cold numbers are page-cache warm for the originals)'}"
            f" and the FUSE filesystem freshly mounted. Pack {pack_s:.1f} s, mksquashfs {sq_s:.1f} s.",
            "",
            "| | bytes on disk | cold seq MB/s (slice order) | cold seq MB/s (name order) | warm seq MB/s | first byte of a random slice, ms | random 4 KiB p50 / p99 ms | header-only scan of all DICOM, s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in results.items():
            lines.append(f"| {name} | {sizes[name]:,} | {r['cold slice order']:.1f} | {r['cold name order']:.1f} | {r['warm']:.0f} | "
                         f"{r['ttfb ms']:.1f} | {r['rand4k p50 ms']:.2f} / {r['rand4k p99 ms']:.1f} | {r['header scan s']:.2f} |")
        md = "\n".join(lines) + "\n"
        print(md)
        if a.out:
            open(a.out, "w").write(md)
        return 0
    finally:
        for m in list(mounts):
            subprocess.run(["fusermount3", "-u", "-z", m])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
