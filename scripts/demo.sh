#!/usr/bin/env bash
# `make demo`: compress a real chest CT (pyradiomics lung1, 512x512x48 int16) with the
# default preset, decompress it, check the bytes, and compare with xz -9 and zstd -19; then
# pack the same CT as a 48-file DICOM series into an archive, mount it, and check a file read
# through the mount against the original. The mount stays up at the end.
set -euo pipefail
VOXFS="${1:-.build/release/voxfs}"
CACHE="${2:-${VOXFS_CACHE:-$HOME/.cache/voxfs}}"
SRC="$CACHE/volumes/ct_lung1.raw"
[ -x "$VOXFS" ] || { echo "demo: $VOXFS not built (run make build)" >&2; exit 2; }
[ -f "$SRC" ] || { echo "demo: $SRC missing (run scripts/fetch_data.sh)" >&2; exit 2; }
SERIES="$CACHE/series-full/lung1"
[ -d "$SERIES" ] || { echo "demo: $SERIES missing (run scripts/fetch_data.sh)" >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "== real scan: $SRC ($(python3 -c "import json;d=json.load(open('${SRC%.raw}.json'));print('x'.join(map(str,d['shape'])),d['dtype'],'-',d['source'])"))"
echo "== voxfs compress (preset default)"
"$VOXFS" compress "$SRC" "$WORK/lung1.vxz"
echo "== voxfs info"
"$VOXFS" info "$WORK/lung1.vxz"
echo "== voxfs decompress"
"$VOXFS" decompress "$WORK/lung1.vxz" "$WORK/lung1.raw"
if cmp -s "$SRC" "$WORK/lung1.raw"; then echo "== byte-identical: yes ($(sha256sum < "$SRC" | cut -c1-16)...)"; else echo "== MISMATCH" >&2; exit 1; fi
RAW=$(stat -c %s "$SRC"); V=$(stat -c %s "$WORK/lung1.vxz")
XZ=$(xz -9 -T1 -c "$SRC" | wc -c); ZS=$(zstd -19 -q -c "$SRC" | wc -c)
python3 - "$RAW" "$V" "$XZ" "$ZS" <<'PY'
import sys
raw, v, xz, zs = map(int, sys.argv[1:])
vox = raw // 2
print("== size on disk")
for name, n in (("raw", raw), ("voxfs default", v), ("xz -9", xz), ("zstd -19", zs)):
    print(f"   {name:14s} {n:>10d} bytes  {8*n/vox:6.3f} bpp  ratio {raw/n:5.2f}")
print(f"== voxfs is {100*(1-v/xz):.1f}% smaller than xz -9 and {100*(1-v/zs):.1f}% smaller than zstd -19")
PY

# --- the filesystem: a DICOM series packed into an archive and mounted -----------------------
DEMO="$CACHE/demo"
MNT="$DEMO/mnt"
mkdir -p "$MNT"
if mountpoint -q "$MNT" 2>/dev/null || grep -q " $MNT fuse" /proc/self/mounts; then fusermount3 -u -z "$MNT"; sleep 0.5; fi
rm -rf "$DEMO/lung1" "$DEMO/ct.voxfs" "$DEMO/ct.voxfs-lock"
cp -r "$SERIES" "$DEMO/lung1"
echo "== voxfs pack: the same CT as a 48-file DICOM series (real pixels; headers written by scripts/make_test_series.py)"
"$VOXFS" pack "$DEMO/lung1" "$DEMO/ct.voxfs"
echo "== voxfs mount $DEMO/ct.voxfs $MNT"
"$VOXFS" mount "$DEMO/ct.voxfs" "$MNT"
ls -l "$MNT/lung1" | head -4
echo "   ..."
F=$(ls "$DEMO/lung1" | sort | sed -n 20p)
A=$(sha256sum < "$DEMO/lung1/$F" | cut -c1-64); B=$(sha256sum < "$MNT/lung1/$F" | cut -c1-64)
if [ "$A" = "$B" ]; then echo "== $MNT/lung1/$F read through the mount equals the original: yes (sha256 ${A:0:16}...)"; else echo "== MISMATCH through the mount" >&2; exit 1; fi
if diff -rq "$DEMO/lung1" "$MNT/lung1" >/dev/null; then echo "== all 48 files through the mount equal the originals: yes"; else echo "== MISMATCH through the mount" >&2; exit 1; fi
python3 - "$MNT" "$DEMO/lung1" <<'PY'
import os, sys
mnt, src = sys.argv[1], sys.argv[2]
orig = int(os.getxattr(mnt, "user.voxfs.original_bytes")); stored = int(os.getxattr(mnt, "user.voxfs.stored_bytes"))
print(f"== mounted: {orig:,} bytes of DICOM stored in {stored:,} bytes (ratio {orig / stored:.2f}; per file: getfattr -d {mnt}/lung1/FILE, from Debian's attr)")
PY
echo "== the archive stays mounted at $MNT; unmount with: fusermount3 -u $MNT"
