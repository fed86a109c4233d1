#!/usr/bin/env python3
"""Reference .vxz decoder (formats v1 to v4), written from docs/format.md alone.

An independent implementation in the spirit of zstd's educational decoder: it was written by a
session that read only docs/format.md (plus the normative activation tables in act_tables.h and
the model files in models/), never the Swift or C sources, to prove that the document is
complete. Slow (pure Python, standard library only) but exact. `make test` runs it on golden
streams (`--golden`); places where the document needed clarifying were fixed there.

usage: reference_decoder.py STREAM.vxz [--raw CROP.raw] [--models DIR] [--tables act_tables.h] [--out OUT]
       reference_decoder.py --golden DIR NAME...   (each DIR/NAME.vxz against DIR/CROP.raw, CROP = NAME up to the first dot)
"""
import sys, struct, hashlib, os, re, glob, time
from operator import mul

# ---------------------------------------------------------------- CRC-32C
_CRC_TAB = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TAB.append(_c)

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    tab = _CRC_TAB
    for b in data:
        crc = tab[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF

assert crc32c(b"123456789") == 0xE3069283

class Corrupt(Exception):
    pass

def wrap32(v):
    v &= 0xFFFFFFFF
    return v - 0x100000000 if v & 0x80000000 else v

# ---------------------------------------------------------------- tables
def load_tables(path):
    txt = open(path).read()
    def arr(name):
        m = re.search(name + r"\s*\[\s*1025\s*\]\s*=\s*\{([^}]*)\}", txt)
        vals = [int(v) for v in m.group(1).replace("\n", " ").split(",") if v.strip()]
        assert len(vals) == 1025
        return vals
    sig = arr("vox_sigmoid_q14")
    tanh = arr("vox_tanh_q14")
    def h(t):
        return hashlib.sha256(b"".join(struct.pack("<i", v) for v in t)).hexdigest()
    assert h(sig) == "0e1d3fbdefa67a9f4a8ffaa2abf5d82115c9fe46d1b2f69c972515e531d9c828", "SIG hash"
    assert h(tanh) == "51081aaf26643d0f21719aa86a08d790b95cfe81546881ba1bcdb5f48502d453", "TANH hash"
    assert (sig[0], sig[512], sig[1024]) == (5, 8192, 16379)
    assert (tanh[0], tanh[512], tanh[1024]) == (-16384, 0, 16384)
    return sig, tanh

# ---------------------------------------------------------------- neighbourhoods
def parse_spec(spec):
    """Returns (canonical, offsets list of (dx,dy,dz), slots list, T, I, left)."""
    parts = spec.split("/")
    head = parts[0]
    grouping, left = "slice", False
    for o in parts[1:]:
        if o in ("voxel", "row", "slice"):
            grouping = o
        elif o == "left":
            left = True
        elif o == "noleft":
            left = False
        else:
            raise Corrupt("bad option " + o)
    def num(s):
        if not re.fullmatch(r"0|[1-9][0-9]*", s):
            raise Corrupt("bad number " + s)
        return int(s)
    windows = []  # (dz, radius, shape)
    if head.startswith("pyramid:"):
        ks = [num(s) for s in head[8:].split(",")]
        if not 1 <= len(ks) <= 16:
            raise Corrupt("pyramid count")
        for i, k in enumerate(ks):
            if k % 2 == 0 or not 1 <= k <= 31:
                raise Corrupt("pyramid K")
            windows.append((-i, (k - 1) // 2, "diamond"))
        canon_head = "pyramid:" + ",".join(str(k) for k in ks)
    elif head.startswith("cube:"):
        f = head[5:].split(":")
        if len(f) not in (1, 2):
            raise Corrupt("cube")
        k = num(f[0])
        if k % 2 == 0 or not 3 <= k <= 31:
            raise Corrupt("cube K")
        d = num(f[1]) if len(f) == 2 else (k - 1) // 2
        if not 0 <= d <= 15:
            raise Corrupt("cube D")
        for i in range(d + 1):
            windows.append((-i, (k - 1) // 2, "square"))
        canon_head = "cube:%d:%d" % (k, d)
    else:
        raise Corrupt("bad head")
    canonical = canon_head + "/" + grouping + "/" + ("left" if left else "noleft")
    windows.sort(key=lambda w: w[0])  # oldest slice first (increasing dz)
    steps = []
    offsets_all = []
    for dz, rad, shape in windows:
        win_rows = []
        for dy in range(-rad, rad + 1):
            row = []
            for dx in range(-rad, rad + 1):
                if shape == "diamond" and abs(dx) + abs(dy) > rad:
                    continue
                if dz == 0 and not (dy < 0 or (left and dy == 0 and dx < 0)):
                    continue
                row.append((dx, dy, dz))
            if row:
                win_rows.append(row)
        if not win_rows:
            continue
        if grouping == "voxel":
            for row in win_rows:
                for o in row:
                    steps.append([o])
        elif grouping == "row":
            steps.extend(win_rows)
        else:
            steps.append([o for row in win_rows for o in row])
    if not steps:
        raise Corrupt("empty neighbourhood")
    T = len(steps)
    I = max(len(s) for s in steps)
    offs, slots = [], []
    for t, s in enumerate(steps):
        for i, o in enumerate(s):
            offs.append(o)
            slots.append(t * I + i)
    return canonical, offs, slots, T, I, left

# ---------------------------------------------------------------- models
class Model:
    pass

def parse_model(data, check_canonical=True):
    if len(data) < 4 + 20:
        raise Corrupt("model truncated")
    if crc32c(data[:-4]) != struct.unpack_from("<I", data, len(data) - 4)[0]:
        raise Corrupt("model crc")
    if data[:8] != b"\x89VXM\r\n\x1a\n":
        raise Corrupt("model magic")
    ver, H, I, T, r, F = struct.unpack_from("<HHHHBB", data, 8)
    if ver not in (1, 2):
        raise Corrupt("model version")
    q = 18
    act = 0
    if ver == 2:  # format 2: one activation byte after F; 1 = quadratic (0 is written as format 1)
        act = data[18]
        if act != 1:
            raise Corrupt("model activation")
        q = 19
    L = struct.unpack_from("<H", data, q)[0]
    spec = data[q + 2:q + 2 + L].decode("utf-8")
    canonical, offs, slots, sT, sI, left = parse_spec(spec)
    if check_canonical and canonical != spec:
        raise Corrupt("model spec not canonical")
    if I != sI or T != sT:
        raise Corrupt("model I/T mismatch")
    if not 4 <= H <= 512:
        raise Corrupt("H")
    p = q + 2 + L
    K = I + H
    nW = 4 * H * K
    W = list(struct.unpack_from("<%dh" % nW, data, p)); p += 2 * nW
    b = list(struct.unpack_from("<%di" % (4 * H), data, p)); p += 16 * H
    Wo = list(struct.unpack_from("<%dh" % H, data, p)); p += 2 * H
    bo = struct.unpack_from("<i", data, p)[0]; p += 4
    payload_end = p
    M = struct.unpack_from("<I", data, p)[0]; p += 4
    meta = data[p:p + M]; p += M
    if p + 4 != len(data):
        raise Corrupt("model trailing bytes / truncated")
    if H % 4 or I > 256 or T > 1024 or r > 20 or F - r < 1 or F > 40:
        raise Corrupt("model validation")
    m = Model()
    m.H, m.I, m.T, m.r, m.F, m.spec = H, I, T, r, F, spec
    m.act = act
    m.offs, m.slots, m.left = offs, slots, left
    m.W = [W[j * K:(j + 1) * K] for j in range(4 * H)]
    m.b, m.Wo, m.bo = b, Wo, bo
    m.hash = hashlib.sha256(data[:payload_end]).digest()
    m.meta = meta
    return m

def seeded_model_bytes(H, spec, seed, name):
    state = [seed & 0xFFFFFFFFFFFFFFFF]
    MASK = 0xFFFFFFFFFFFFFFFF
    def nxt():
        state[0] = (state[0] + 0x9E3779B97F4A7C15) & MASK
        z = state[0]
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)
    def uniform(lo, hi):
        return lo + nxt() % (hi - lo + 1)
    canonical, offs, slots, T, I, left = parse_spec(spec)
    K = I + H
    W = []
    for j in range(4 * H):
        for k in range(K):
            W.append(uniform(-2048, 2048) if k < I else uniform(-1024, 1024))
    b = [(1 << 24) if H <= j < 2 * H else 0 for j in range(4 * H)]
    Wo = [uniform(-16, 16) for _ in range(H)]
    bo = 0
    r, F = 12, 28
    sb = canonical.encode()
    out = b"\x89VXM\r\n\x1a\n" + struct.pack("<HHHHBB", 1, H, I, T, r, F)
    out += struct.pack("<H", len(sb)) + sb
    out += struct.pack("<%dh" % len(W), *W) + struct.pack("<%di" % len(b), *b)
    out += struct.pack("<%dh" % H, *Wo) + struct.pack("<i", bo)
    meta = ('{"name":"%s","kind":"seeded-untrained","seed":%d}' % (name, seed)).encode()
    out += struct.pack("<I", len(meta)) + meta
    out += struct.pack("<I", crc32c(out))
    return out

SEEDED = [
    ("fast", 8, "pyramid:7,5,3/slice/noleft", 0x766F78667301),
    ("parallel", 16, "pyramid:7,5,3/slice/noleft", 0x766F78667305),
    ("default", 16, "pyramid:7,5,3/slice/left", 0x766F78667302),
    ("large", 32, "pyramid:7,5,3/slice/left", 0x766F78667304),
    ("paper", 128, "pyramid:13,9,5,1/voxel/left", 0x766F78667303),
]

def find_model(hash_bytes, models_dir, preset):
    # models/ holds the shipped models, models/retired/ the ones they replaced (still named by streams)
    for f in sorted(glob.glob(os.path.join(models_dir, "*.vxm")) + glob.glob(os.path.join(models_dir, "retired", "*.vxm"))):
        m = parse_model(open(f, "rb").read())
        if m.hash == hash_bytes:
            m.source = f
            return m
    # seeded models: try the preset's first, then all
    order = sorted(SEEDED, key=lambda s: s[0] != preset)
    for name, H, spec, seed in order:
        m = parse_model(seeded_model_bytes(H, spec, seed, name))
        if m.hash == hash_bytes:
            m.source = "seeded:" + name
            return m
    raise Corrupt("missing model %s (preset %s)" % (hash_bytes.hex(), preset))

# ---------------------------------------------------------------- LSTM
def q12(a):
    a &= 0xFFFFFFFF
    if a & 0x80000000:
        a -= 0x100000000
    return ((a >> 11) + 1) >> 1


def qsig_z(z):  # quadratic sigmoid, z in Q12, result Q14
    X = max(-16384, min(16384, z))
    return 8192 + X - ((X * abs(X)) >> 15)


def qtanh_z(z):  # quadratic tanh, z in Q12, result Q14
    X = max(-8192, min(8192, z))
    return 4 * X - ((X * abs(X)) >> 12)


def lut_z(tab, z):  # "Lookup" of a Q12 argument (docs/format.md, Predictor arithmetic)
    if z < -32768: z = -32768
    elif z > 32767: z = 32767
    u = z + 32768
    i = u >> 6
    f = u & 63
    ti = tab[i]
    return ti + (((tab[i + 1] - ti) * f + 32) >> 6) if f else ti


class LSTM:
    def __init__(self, m, sig, tanh):
        self.m = m
        H, I = m.H, m.I
        self.Wx = [row[:I] for row in m.W]
        self.Wh = [row[I:] for row in m.W]
        # the activations of Q12 arguments: model format 2's quadratic curves or the tables
        if m.act == 1:
            self.sig_z, self.tanh_z = qsig_z, qtanh_z
        else:
            self.sig_z = lambda z: lut_z(sig, z)
            self.tanh_z = lambda z: lut_z(tanh, z)

    def run(self, X):
        m = self.m
        H, I, T = m.H, m.I, m.T
        S, TH = self.sig_z, self.tanh_z
        W = m.W
        b = m.b
        h = [0] * H
        c = [0] * H
        H2, H3 = 2 * H, 3 * H
        for t in range(T):
            xh = X[t * I:(t + 1) * I] + h
            A = [q12(bj + sum(map(mul, Wj, xh))) for bj, Wj in zip(b, W)]
            nh = [0] * H
            for u in range(H):
                gi = S(A[u]); gf = S(A[H + u]); gg = TH(A[H2 + u]); go = S(A[H3 + u])
                cu = (gf * c[u] + gi * gg + 8192) >> 14
                if cu < -65536: cu = -65536
                elif cu > 65536: cu = 65536
                c[u] = cu
                nh[u] = (go * TH((cu + 2) >> 2) + 32768) >> 16
            h = nh
        y = m.bo + sum(map(mul, m.Wo, h))
        return wrap32(y)

# ---------------------------------------------------------------- range decoder
class RangeDecoder:
    __slots__ = ("data", "pos", "end", "range", "code")
    def __init__(self, data, start, length):
        self.data = data
        self.pos = start
        self.end = start + length
        self.range = 0xFFFFFFFF
        self.code = 0
        for _ in range(5):
            self.code = ((self.code << 8) | self.next_byte()) & 0xFFFFFFFF

    def next_byte(self):
        if self.pos < self.end:
            v = self.data[self.pos]
            self.pos += 1
            return v
        return 0

    def bit(self, p):
        bound = (self.range >> 16) * p
        if self.code < bound:
            self.range = bound
            bit = 1
        else:
            self.code -= bound
            self.range -= bound
            bit = 0
        while self.range < (1 << 24):
            self.range = (self.range << 8) & 0xFFFFFFFF
            self.code = ((self.code << 8) | self.next_byte()) & 0xFFFFFFFF
        return bit

# ---------------------------------------------------------------- coder state
NCTX = 24
NFLOOR = 12                             # v4: floor contexts f (v1-v3: f = 0 always)
NSET = NCTX * NFLOOR                    # probability sets, one per (c, f), numbered c * NFLOOR + f
KMAX = 17
OFF_ZERO = 0
OFF_SIGN = OFF_ZERO + NSET
OFF_EXPO = OFF_SIGN + NSET * 9          # v3: 9 sign contexts (v1/v2 use 3 of them)
OFF_MANT = OFF_EXPO + NSET * 18
NPROB = OFF_MANT + NSET * 18 * 3
ALPHA = (0, 2, 4, 6)

def new_state(version):
    # probabilities (A, B, n: v4 counts updates from 0; v1-v3 start n at 255, the fixed rates),
    # alpha costs, v3 residual-filter weights
    return [32768, 32768, 0 if version >= 4 else 255] * NPROB, [0] * (NCTX * 4), [0] * 10

def mbit(rd, P, idx):
    A = P[3 * idx]; B = P[3 * idx + 1]; n = P[3 * idx + 2]
    p = (A + B + 1) >> 1
    if p < 64: p = 64
    elif p > 65472: p = 65472
    bit = rd.bit(p)
    t = 65535 if bit else 0
    l = (n + 1).bit_length()            # 1 + floor(log2(n + 1))
    P[3 * idx] = A + ((t - A) >> min(l, 4))
    P[3 * idx + 1] = B + ((t - B) >> min(l, 7))
    if n < 255:
        P[3 * idx + 2] = n + 1
    return bit

def decode_residual(rd, P, c, sc):
    # c: the probability set (v1-v3: the activity context; v4: activity * NFLOOR + floor)
    if mbit(rd, P, OFF_ZERO + c):
        return 0
    neg = mbit(rd, P, OFF_SIGN + c * 9 + sc)
    k = 0
    while k < KMAX and mbit(rd, P, OFF_EXPO + c * 18 + k):
        k += 1
    m = 1
    node = 0
    for j in range(k - 1, -1, -1):
        if j >= k - 2:
            b = mbit(rd, P, OFF_MANT + (c * 18 + k) * 3 + node)
            node = 1 + b
        else:
            b = rd.bit(32768)
        m = 2 * m + b
    return -m if neg else m

def Q(act):
    if act == 0:
        return 0
    b = act.bit_length() - 1
    if b == 0:
        return 1
    return min(23, 2 * b + ((act >> (b - 1)) & 1))

def med(a, b, c):
    if c >= max(a, b):
        return min(a, b)
    if c <= min(a, b):
        return max(a, b)
    return a + b - c

# ---------------------------------------------------------------- slab decode
def decode_slab(hd, data, entry, lstm, sig_tanh):
    X, Y = hd["X"], hd["Y"]
    vmin, vmax = hd["vmin"], hd["vmax"]
    pad = hd["pad"]
    nz = entry["nz"]
    version = hd["version"]
    uses_lstm = hd["uses_lstm"]
    model = lstm.m if lstm else None
    stream_left = model.left if model else hd["left"]
    XY = X * Y
    N = nz * XY
    V = [0] * N
    EI = [0] * N
    EX = [0] * N
    R = [0] * N
    RB = [0] * N
    P, cost, lw = new_state(version)
    stage = version >= 3
    if version == 1:
        slices = [(entry["offset"], entry["length"], 0, None)]
    else:
        pos = entry["offset"]
        slices = []
        for se in entry["slices"]:
            slices.append((pos, se["length"], se["predictor"], se["crc"]))
            pos += se["length"]
    if model:
        offs = model.offs; slots = model.slots
        TI = model.T * model.I
        r = model.r
        s_out = hd["out_shift"]
        half = 1 << (s_out - 1)
    rd = None
    if version == 1:
        rd = RangeDecoder(data, slices[0][0], slices[0][1])
    snapshot = None
    Wz = min(hd.get("state_rows", 0), Y)
    for z in range(nz):
        if version >= 2:
            start, length, predictor, scrc = slices[z]
            rd = RangeDecoder(data, start, length)
            if z == 0:
                P, cost, lw = new_state(version)
            else:
                P, cost, lw = snapshot
                P, cost, lw = P[:], cost[:], lw[:]
            use_model = bool(model) and predictor == 0
            left = stream_left if predictor == 0 else True
        else:
            use_model = bool(model)
            left = stream_left
        zb = z * XY
        zp = (z - 1) * XY
        for y in range(Y):
            rb = zb + y * X
            rn = rb - X
            for x in range(X):
                idx = rb + x
                xl = x - 1 if x > 0 else 0
                xr = x + 1 if x + 1 < X else X - 1
                hasN = y > 0
                hasW = left and x > 0
                # classical
                if left:
                    if hasN and hasW:
                        p1 = med(V[idx - 1], V[rn + x], V[rn + xl])
                    elif hasW:
                        p1 = V[idx - 1]
                    elif hasN:
                        p1 = V[rn + x]
                    else:
                        p1 = pad
                else:
                    p1 = V[rn + x] if hasN else pad
                if z == 0:
                    p2 = p1
                    a = min(max(p1, vmin), vmax)
                else:
                    pidx = idx - XY
                    Pv = V[pidx]
                    if left:
                        if hasN and hasW:
                            p2 = Pv + med(V[idx - 1] - V[pidx - 1], V[rn + x] - V[rn + x - XY],
                                          V[rn + xl] - V[rn + xl - XY])
                        elif hasW:
                            p2 = Pv + V[idx - 1] - V[pidx - 1]
                        elif hasN:
                            p2 = Pv + V[rn + x] - V[rn + x - XY]
                        else:
                            p2 = Pv
                    else:
                        if hasN:
                            t3 = sorted((V[rn + x] - V[rn + x - XY], V[rn + xl] - V[rn + xl - XY],
                                         V[rn + xr] - V[rn + xr - XY]))
                            p2 = Pv + t3[1]
                        else:
                            p2 = Pv
                    E1 = 1 + EI[pidx]
                    E2 = 1 + EX[pidx]
                    if hasN:
                        E1 += EI[rn + x] + EI[rn + xl] + EI[rn + xr]
                        E2 += EX[rn + x] + EX[rn + xl] + EX[rn + xr]
                    if hasW:
                        E1 += 2 * EI[idx - 1]
                        E2 += 2 * EX[idx - 1]
                    w1 = E2 * E2
                    w2 = E1 * E1
                    a = (2 * (p1 * w1 + p2 * w2) + (w1 + w2)) // (2 * (w1 + w2))
                    a = min(max(a, vmin), vmax)
                q1, q2 = p1, p2
                pr = a
                if use_model:
                    inp = [0] * TI
                    for (dx, dy, dz), sl in zip(offs, slots):
                        xx = x + dx; yy = y + dy; zz = z + dz
                        if 0 <= xx < X and 0 <= yy < Y and zz >= 0:
                            u = V[zz * XY + yy * X + xx]
                        else:
                            u = a
                        d = u - a
                        if r <= 12:
                            s = d << (12 - r)
                        else:
                            s = (d + (1 << (r - 13))) >> (r - 12)
                        if s < -32767: s = -32767
                        elif s > 32767: s = 32767
                        inp[sl] = s
                    yl = lstm.run(inp)
                    pr = min(max(a + ((yl + half) >> s_out), vmin), vmax)
                # context
                act = 0; sc = 0
                if x > 0:
                    rl = R[idx - 1]
                    act += 2 * abs(rl)
                    sc = 1 if rl > 0 else (2 if rl < 0 else 0)
                if y > 0:
                    act += abs(R[rn + x]) + ((abs(R[rn + xl]) + abs(R[rn + xr])) >> 1)
                if z > 0:
                    act += abs(R[idx - XY]) + (abs(q1 - q2) >> 1)
                if stage:
                    ex = 0
                    if x > 1: ex += abs(R[idx - 2])
                    if y > 1: ex += abs(R[rn - X + x])
                    if z > 0 and x > 0: ex += abs(R[idx - XY - 1])
                    if z > 0 and y > 0: ex += abs(R[rn + x - XY])
                    act += ex >> 1
                c = Q(act)
                lms = stage and left
                if stage:
                    sc = 3 * sc + ((1 if R[rn + x] > 0 else (2 if R[rn + x] < 0 else 0)) if y > 0 else 0)
                if lms:
                    # W, N, NW, NE, P, WW, PW, PE, PN, NN
                    taps = [R[idx - 1] if x > 0 else 0,
                            R[rn + x] if y > 0 else 0,
                            R[rn + x - 1] if y > 0 and x > 0 else 0,
                            R[rn + xr] if y > 0 else 0,
                            R[idx - XY] if z > 0 else 0,
                            R[idx - 2] if x > 1 else 0,
                            R[idx - XY - 1] if z > 0 and x > 0 else 0,
                            R[idx - XY + 1] if z > 0 and x + 1 < X else 0,
                            R[rn + x - XY] if z > 0 and y > 0 else 0,
                            R[rn - X + x] if y > 1 else 0]
                    acc = sum(wj * tj for wj, tj in zip(lw, taps))
                    pr = min(max(pr + ((acc + (1 << 19)) >> 20), vmin), vmax)
                base = pr
                corr = (not left) and x > 0 and not (version >= 2 and predictor == 1)
                if corr:
                    cb = c * 4
                    best = 0
                    for k in (1, 2, 3):
                        if cost[cb + k] < cost[cb + best]:
                            best = k
                    rbl = RB[idx - 1]
                    pr = min(max(pr + ((rbl * ALPHA[best] + 4) >> 3), vmin), vmax)
                cs = c * NFLOOR
                if version >= 4:
                    d = pr - pad
                    cs += 0 if d < 0 else min(Q(d + 1), NFLOOR - 1)
                e = decode_residual(rd, P, cs, sc)
                v = pr + e
                if v < vmin or v > vmax:
                    raise Corrupt("slab %d damaged: decoded values out of range (z=%d y=%d x=%d v=%d)"
                                  % (entry["index"], z, y, x, v))
                V[idx] = v
                if corr:
                    for k in range(4):
                        ek = v - base - ((rbl * ALPHA[k] + 4) >> 3)
                        cost[cb + k] = cost[cb + k] - (cost[cb + k] >> 5) + min(abs(ek), 65535)
                if lms and v != pr:
                    mu = 512 if use_model else 8
                    step = mu if v > pr else -mu
                    for j in range(10):
                        if taps[j]:
                            lw[j] = min(max(lw[j] + (step if taps[j] > 0 else -step), -(1 << 20)), 1 << 20)
                EI[idx] = abs(v - q1)
                EX[idx] = abs(v - q2)
                R[idx] = v - pr
                RB[idx] = v - base
            if version >= 2 and y == Wz - 1 and z + 1 < nz:
                snapshot = (P[:], cost[:], lw[:])
        if version >= 2:
            sb = voxels_bytes(V[zb:zb + XY], hd["dtype"])
            got = crc32c(sb)
            if got != scrc:
                raise Corrupt("slice %d of slab %d is damaged: checksum mismatch" % (z, entry["index"]))
    return V

def voxels_bytes(vals, dtype):
    if dtype == 1:
        return bytes(vals)
    fmt = "<%dh" if dtype == 2 else "<%dH"
    return struct.pack(fmt % len(vals), *vals)

def bytes_voxels(b, dtype):
    if dtype == 1:
        return list(b)
    fmt = "<%dh" if dtype == 2 else "<%dH"
    return list(struct.unpack(fmt % (len(b) // 2), b))

# ---------------------------------------------------------------- header
def parse_header(data):
    fs = len(data)
    if fs < 8 or data[:8] != b"\x89VXZ\r\n\x1a\n":
        raise Corrupt("magic")
    if fs < 16:
        raise Corrupt("truncated")
    version, flags, hl = struct.unpack_from("<HHI", data, 8)
    if version not in (1, 2, 3, 4):
        raise Corrupt("version")
    if flags & ~1:
        raise Corrupt("uses stream features this voxfs does not know")
    if not 108 <= hl <= fs:
        raise Corrupt("header_length")
    if crc32c(data[:hl - 4]) != struct.unpack_from("<I", data, hl - 4)[0]:
        raise Corrupt("header crc")
    hd = {"version": version, "flags": flags, "header_length": hl}
    X, Y, Z, dtype, uses_lstm, left, ns, os_ = struct.unpack_from("<IIIBBBBB", data, 16)
    if not (1 <= X <= 1 << 20 and 1 <= Y <= 1 << 20 and 1 <= Z <= 1 << 20 and X * Y * Z <= 1 << 36):
        raise Corrupt("shape")
    if dtype not in (1, 2, 3):
        raise Corrupt("dtype")
    hd.update(X=X, Y=Y, Z=Z, dtype=dtype, uses_lstm=uses_lstm, left=1 if left else 0,
              norm_shift=ns, out_shift=os_)
    if version >= 2:
        hd["state_rows"] = struct.unpack_from("<H", data, 33)[0]
    pad, t = struct.unpack_from("<iI", data, 36)
    hd["model_hash"] = data[44:76]
    p = 76
    def string16(p):
        if p + 2 > hl - 4:
            raise Corrupt("truncated")
        L = struct.unpack_from("<H", data, p)[0]
        if p + 2 + L > hl - 4:
            raise Corrupt("truncated")
        return data[p + 2:p + 2 + L].decode("utf-8"), p + 2 + L
    preset, p = string16(p)
    neigh, p = string16(p)
    hd["preset"], hd["neighbourhood"] = preset, neigh
    if not 1 <= t <= 65536:
        raise Corrupt("slab_thickness")
    n = (Z + t - 1) // t
    slab_count = struct.unpack_from("<I", data, p)[0]; p += 4
    if slab_count != n:
        raise Corrupt("slab_count")
    if X * Y * min(t, Z) > 1 << 26:
        raise Corrupt("slab too large")
    bpv = 1 if dtype == 1 else 2
    vmin, vmax = {1: (0, 255), 2: (-32768, 32767), 3: (0, 65535)}[dtype]
    if not vmin <= pad <= vmax:
        raise Corrupt("pad")
    hd.update(pad=pad, slab_thickness=t, vmin=vmin, vmax=vmax, bpv=bpv)
    entries = []
    for i in range(n):
        off, length, crc, method = struct.unpack_from("<QIIB", data, p); p += 20
        nz = min(Z, (i + 1) * t) - i * t
        if method not in (0, 1):
            raise Corrupt("method")
        if method == 0 and length < 5:
            raise Corrupt("coded slab too short")
        if off < hl or off + length > fs:
            raise Corrupt("slab outside file")
        e = dict(index=i, offset=off, length=length, crc=crc, method=method, nz=nz)
        if version >= 2:
            sl = []
            for k in range(nz):
                slen, scrc, pred = struct.unpack_from("<IIB", data, p); p += 12
                sl.append(dict(length=slen, crc=scrc, predictor=pred))
            e["slices"] = sl
        entries.append(e)
    hd["entries"] = entries
    if flags & 1:
        if not uses_lstm:
            raise Corrupt("embedded model without lstm")
        M = struct.unpack_from("<I", data, p)[0]; p += 4
        if M > hl:
            raise Corrupt("embedded model length")
        hd["embedded"] = data[p:p + M]; p += M
    if p != hl - 4:
        raise Corrupt("parsed fields do not end 4 bytes before header_length (p=%d hl=%d)" % (p, hl))
    if version >= 2:
        if hd["state_rows"] < 1:
            raise Corrupt("state_rows")
        for e in entries:
            tot = 0
            for s in e["slices"]:
                if s["predictor"] not in (0, 1) or (s["predictor"] == 1 and not uses_lstm):
                    raise Corrupt("slice predictor")
                if e["method"] == 0 and s["length"] < 5:
                    raise Corrupt("slice too short")
                if e["method"] == 1 and (s["length"] != X * Y * bpv or s["predictor"] != 0):
                    raise Corrupt("stored slice")
                tot += s["length"]
            if tot != e["length"]:
                raise Corrupt("slice lengths do not add up")
    return hd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def golden(args):
    """Decodes each golden stream and compares it with its crop; prints a summary line."""
    d, names = args[0], args[1:]
    ok = failed = 0
    for n in names:
        crop = n.split(".")[0]
        argv = [os.path.join(d, n + ".vxz"), "--raw", os.path.join(d, crop + ".raw")]
        try:
            good = main(argv)
        except Corrupt as ex:
            print("  ERROR:", ex)
            good = False
        print("%s: %s" % (n, "ok" if good else "FAILED"), flush=True)
        ok, failed = ok + bool(good), failed + (not good)
    print("reference decoder: %d checks ok, %d failed" % (ok, failed))
    return failed == 0


def main(args=None):
    args = sys.argv[1:] if args is None else args
    stream = args[0]
    opts = {"--raw": None, "--models": os.path.join(REPO, "models"),
            "--tables": os.path.join(REPO, "Sources/CVoxKernels/act_tables.h"), "--out": None,
            "--slabs": None}
    i = 1
    while i < len(args):
        opts[args[i]] = args[i + 1]; i += 2
    data = open(stream, "rb").read()
    hd = parse_header(data)
    print("%s: v%d %dx%dx%d dtype %d lstm %d left %d rs %d/%d pad %d t %d preset %r neigh %r%s" % (
        os.path.basename(stream), hd["version"], hd["X"], hd["Y"], hd["Z"], hd["dtype"],
        hd["uses_lstm"], hd["left"], hd["norm_shift"], hd["out_shift"], hd["pad"],
        hd["slab_thickness"], hd["preset"], hd["neighbourhood"],
        (" state_rows %d" % hd["state_rows"]) if hd["version"] >= 2 else ""))
    if hd["version"] >= 2:
        for e in hd["entries"]:
            print("  slab %d %s len %d preds %s" % (e["index"], "coded" if e["method"] == 0 else "stored",
                  e["length"], [s["predictor"] for s in e["slices"]]))
    lstm = None
    if hd["uses_lstm"]:
        sig, tanh = load_tables(opts["--tables"])
        if "embedded" in hd:
            m = parse_model(hd["embedded"])
            if m.hash != hd["model_hash"]:
                raise Corrupt("embedded model hash")
            m.source = "embedded"
        else:
            m = find_model(hd["model_hash"], opts["--models"], hd["preset"])
        if m.spec != hd["neighbourhood"] or m.r != hd["norm_shift"] or m.F - m.r != hd["out_shift"] \
                or int(m.left) != hd["left"]:
            raise Corrupt("model/header mismatch")
        print("  model %s H %d I %d T %d r %d F %d spec %s" % (m.source, m.H, m.I, m.T, m.r, m.F, m.spec))
        lstm = LSTM(m, sig, tanh)
    else:
        want = "classical/left" if hd["left"] == 1 else "classical/noleft"
        if hd["neighbourhood"] != want:
            raise Corrupt("classical neighbourhood string")
    out = []
    ok = True
    sel = None
    if opts["--slabs"]:
        sel = set(int(v) for v in opts["--slabs"].split(","))
    raw = open(opts["--raw"], "rb").read() if opts["--raw"] else None
    XYb = hd["X"] * hd["Y"] * hd["bpv"]
    for e in hd["entries"]:
        if sel is not None and e["index"] not in sel:
            continue
        t0 = time.time()
        if e["method"] == 1:
            if e["length"] != e["nz"] * XYb:
                raise Corrupt("stored slab length")
            b = data[e["offset"]:e["offset"] + e["length"]]
            if hd["version"] >= 2:
                for k in range(e["nz"]):
                    if crc32c(b[k * XYb:(k + 1) * XYb]) != e["slices"][k]["crc"]:
                        raise Corrupt("stored slice crc")
        else:
            V = decode_slab(hd, data, e, lstm, None)
            b = voxels_bytes(V, hd["dtype"])
        crc_ok = crc32c(b) == e["crc"]
        st = hd["slab_thickness"]
        raw_ok = None
        if raw is not None:
            a0 = e["index"] * st * XYb
            raw_ok = raw[a0:a0 + len(b)] == b
        print("  slab %d (%s): slab crc %s, raw %s, %.1fs" % (e["index"], "coded" if e["method"] == 0 else "stored",
              "ok" if crc_ok else "MISMATCH", {None: "-", True: "match", False: "MISMATCH"}[raw_ok],
              time.time() - t0), flush=True)
        ok = ok and crc_ok and raw_ok is not False
        out.append(b)
    allb = b"".join(out)
    result = ok
    if raw is not None and sel is None:
        full = allb == raw
        result = full and ok
        print("  RESULT: %s" % ("MATCH" if result else "MISMATCH"))
    if opts["--out"]:
        open(opts["--out"], "wb").write(allb)
    return result


if __name__ == "__main__":
    try:
        if sys.argv[1:2] == ["--golden"]:
            sys.exit(0 if golden(sys.argv[2:]) else 1)
        sys.exit(0 if main() else 1)
    except Corrupt as ex:
        print("  ERROR:", ex)
        sys.exit(1)
