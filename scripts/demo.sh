#!/usr/bin/env bash
# `make demo`: compress a real chest CT (pyradiomics lung1, 512x512x48 int16) with the
# default preset, decompress it, check the bytes, and compare with xz -9 and zstd -19.
set -euo pipefail
VOXFS="${1:-.build/release/voxfs}"
CACHE="${2:-${VOXFS_CACHE:-$HOME/.cache/voxfs}}"
SRC="$CACHE/volumes/ct_lung1.raw"
[ -x "$VOXFS" ] || { echo "demo: $VOXFS not built (run make build)" >&2; exit 2; }
[ -f "$SRC" ] || { echo "demo: $SRC missing (run scripts/fetch_data.sh)" >&2; exit 2; }
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
