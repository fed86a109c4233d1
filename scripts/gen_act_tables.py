#!/usr/bin/env python3
"""Regenerates Sources/CVoxKernels/act_tables.h (run from the repository root).

The tables are committed constants: the codec never evaluates exp/tanh at run time, so
encoder and decoder agree on every machine. Changing them changes every LSTM prediction
and therefore requires a new stream format version (docs/format.md)."""
import math
N = 1024
def q(v): return int(math.floor(v + 0.5))
sig = [q(16384 / (1 + math.exp(-((i * 64 - 32768) / 4096.0)))) for i in range(N + 1)]
tnh = [q(16384 * math.tanh((i * 64 - 32768) / 4096.0)) for i in range(N + 1)]
with open("Sources/CVoxKernels/act_tables.h", "w") as f:
    f.write("/* Generated once by scripts/gen_act_tables.py; shipped as constants so that every\n * machine uses the same activation values (no libm in the coding path).\n * Entry i is f(z) for z = (i*64 - 32768) / 4096 (Q12 input grid, 1/64 steps over [-8, 8]),\n * output in Q14 rounded to nearest. 1025 entries: the last is the endpoint z = 8. */\n")
    for name, t in (("vox_sigmoid_q14", sig), ("vox_tanh_q14", tnh)):
        f.write("static const int32_t %s[1025] = {\n" % name)
        for i in range(0, len(t), 16):
            f.write("  " + ", ".join(str(v) for v in t[i:i + 16]) + ",\n")
        f.write("};\n")
