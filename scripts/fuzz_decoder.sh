#!/usr/bin/env bash
# Long decoder fuzz run (the test suite runs a short one): mutates real .vxz streams
# (bit flips, byte overwrites, insertions, deletions, truncations) and decodes each with
# the real binary. Pass: every run exits 0 with the original bytes or exits 1 with a
# one-line "voxfs: ..." message; never a crash (signal), a hang (timeout) or wrong bytes.
set -euo pipefail
VOXFS="${1:-.build/release/voxfs}"
N="${2:-20000}"
CACHE="${VOXFS_CACHE:-$HOME/.cache/voxfs}"
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
python3 - "$VOXFS" "$N" "$CACHE" "$WORK" <<'PY'
import os, random, subprocess, sys
voxfs, n, cache, work = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
src = os.path.join(cache, "volumes", "ct_lung1.raw")
data = open(src, "rb").read()
crop = b"".join(data[((z*512+y)*512+220)*2:((z*512+y)*512+220+32)*2] for z in range(22, 28) for y in range(220, 252))
open(f"{work}/c.raw", "wb").write(crop)
streams = {}
for preset in ("classical", "default"):
    subprocess.run([voxfs, "compress", f"{work}/c.raw", f"{work}/{preset}.vxz", "--shape", "32x32x6", "--dtype", "int16",
                    "--preset", preset, "--slab", "2", "-q"], check=True)
    streams[preset] = open(f"{work}/{preset}.vxz", "rb").read()
rng = random.Random(1)
bad = 0
for i in range(n):
    preset = rng.choice(list(streams))
    s = bytearray(streams[preset])
    op = rng.randrange(5)
    if op == 0: s[rng.randrange(len(s))] ^= 1 << rng.randrange(8)
    elif op == 1:
        for _ in range(rng.randint(1, 16)): s[rng.randrange(len(s))] = rng.randrange(256)
    elif op == 2: s.insert(rng.randrange(len(s)+1), rng.randrange(256))
    elif op == 3: del s[rng.randrange(len(s))]
    else: s = s[:rng.randrange(len(s))]
    open(f"{work}/m.vxz", "wb").write(s)
    try:
        r = subprocess.run([voxfs, "decompress", f"{work}/m.vxz", f"{work}/m.raw", "-q"], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        print(f"HANG on case {i}"); bad += 1; continue
    if r.returncode == 0:
        if open(f"{work}/m.raw", "rb").read() != crop: print(f"WRONG BYTES on case {i}"); bad += 1
    elif r.returncode < 0 or not r.stderr.startswith(b"voxfs: "):
        print(f"CRASH on case {i}: rc={r.returncode} {r.stderr[:200]!r}"); bad += 1
    if (i + 1) % 1000 == 0: print(f"{i+1}/{n} cases, {bad} failures", flush=True)
print(f"fuzz: {n} cases, {bad} failures")
sys.exit(1 if bad else 0)
PY
