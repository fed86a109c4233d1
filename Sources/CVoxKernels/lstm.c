/*
 * Fixed-point LSTM inference (docs/format.md, "Predictor arithmetic").
 *
 * Number formats: inputs x and hidden state h are int16 Q12; weights int16 Q12; gate
 * pre-activations accumulate in 32-bit two's complement, modulo 2^32 (Q24), then are
 * rounded to Q12; sigmoid/tanh come from the shipped tables (Q14 out, linear
 * interpolation in integers); the cell state is int32 Q14.
 *
 * The scalar kernel (mv_scalar + act_scalar_range, one sequence and one step at a time) is the
 * definition. The other kernels reorganise the same sums: the gate pre-activation
 *   A_t = b + W_x x_t + W_h h_{t-1}            (mod 2^32)
 * is split into an input projection (b + W_x x_t, for every step of many sequences at once,
 * a matrix-matrix product) and the recurrent term (W_h h_{t-1}, many sequences per weight
 * load), optionally with a precomputed partial sum; integer addition is associative modulo
 * 2^32, so every split and every order of summation gives bit-identical results. The
 * activation tables are also kept packed as (T[i], T[i+1] - T[i]) pairs, one gather per
 * lookup instead of two; the interpolation is the same integer formula.
 */
#include "voxkernels.h"
#include "act_tables.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

struct vox_model {
    int H, I, T, Kp, G;   /* Kp = I + H rounded up to even; G = 4H */
    int16_t *W;           /* [G][Kp], zero padded */
    int32_t *b;           /* [G] */
    int16_t *Wo;          /* [H] */
    int32_t bo;
    int Px, Ph;           /* column pairs of the input part ((I + 1) / 2) and the recurrent part (H / 2) */
    int32_t *Wxp;         /* [Px][G]: (W[j][2p], W[j][2p+1]) as an int16 pair (a zero column pads odd I) */
    int32_t *Whp;         /* [Ph][G]: (W[j][I+2q], W[j][I+2q+1]) */
    int pq;               /* 1: quadratic activations (VOX_ACT_QUADRATIC), 0: the tables */
};

static inline int32_t pack2(int16_t lo, int16_t hi) { return (int32_t)((uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16)); }

static int32_t sig_packed[1024], tanh_packed[1024];
static pthread_once_t packed_once = PTHREAD_ONCE_INIT;
static void pack_tables(void) {
    for (int i = 0; i < 1024; i++) {
        sig_packed[i] = pack2((int16_t)vox_sigmoid_q14[i], (int16_t)(vox_sigmoid_q14[i + 1] - vox_sigmoid_q14[i]));
        tanh_packed[i] = pack2((int16_t)vox_tanh_q14[i], (int16_t)(vox_tanh_q14[i + 1] - vox_tanh_q14[i]));
    }
}

vox_model *vox_model_new(int H, int I, int T, const int16_t *W, const int32_t *b,
                         const int16_t *Wo, int32_t bo) {
    return vox_model_new_act(H, I, T, W, b, Wo, bo, VOX_ACT_TABLES);
}

vox_model *vox_model_new_act(int H, int I, int T, const int16_t *W, const int32_t *b,
                             const int16_t *Wo, int32_t bo, int act) {
    if (H < 4 || H > 512 || (H % 4) != 0 || I < 1 || I > 256 || T < 1 || T > 1024) return NULL;
    if (act != VOX_ACT_TABLES && act != VOX_ACT_QUADRATIC) return NULL;
    vox_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->pq = act == VOX_ACT_QUADRATIC;
    pthread_once(&packed_once, pack_tables);
    m->H = H; m->I = I; m->T = T; m->G = 4 * H;
    m->Kp = (I + H + 1) & ~1;
    int K = I + H;
    m->W = calloc((size_t)m->G * m->Kp, sizeof(int16_t));
    m->b = malloc(sizeof(int32_t) * m->G);
    m->Wo = malloc(sizeof(int16_t) * H);
    m->Px = (I + 1) / 2; m->Ph = H / 2;
    m->Wxp = malloc(sizeof(int32_t) * (size_t)m->Px * m->G);
    m->Whp = malloc(sizeof(int32_t) * (size_t)m->Ph * m->G);
    if (!m->W || !m->b || !m->Wo || !m->Wxp || !m->Whp) { vox_model_free(m); return NULL; }
    for (int j = 0; j < m->G; j++) memcpy(m->W + (size_t)j * m->Kp, W + (size_t)j * K, sizeof(int16_t) * K);
    memcpy(m->b, b, sizeof(int32_t) * m->G);
    memcpy(m->Wo, Wo, sizeof(int16_t) * H);
    m->bo = bo;
    for (int j = 0; j < m->G; j++) {
        const int16_t *w = m->W + (size_t)j * m->Kp;
        for (int p = 0; p < m->Px; p++)
            m->Wxp[(size_t)p * m->G + j] = pack2(w[2 * p], 2 * p + 1 < I ? w[2 * p + 1] : 0);
        for (int q = 0; q < m->Ph; q++)
            m->Whp[(size_t)q * m->G + j] = pack2(w[I + 2 * q], w[I + 2 * q + 1]);
    }
    return m;
}

void vox_model_free(vox_model *m) {
    if (!m) return;
    free(m->W); free(m->b); free(m->Wo); free(m->Wxp); free(m->Whp); free(m);
}

void vox_model_shape(const vox_model *m, int *H, int *I, int *T) { *H = m->H; *I = m->I; *T = m->T; }

/* acc[s][j] = b[j] + sum_k W[j][k] * xh[s][k]   (mod 2^32) */
static void mv_scalar(const vox_model *m, int n, const int16_t *xh, int32_t *acc) {
    const int G = m->G, Kp = m->Kp;
    for (int s = 0; s < n; s++) {
        const int16_t *v = xh + (size_t)s * Kp;
        int32_t *a = acc + (size_t)s * G;
        for (int j = 0; j < G; j++) {
            const int16_t *w = m->W + (size_t)j * Kp;
            uint32_t sum = (uint32_t)m->b[j];
            for (int k = 0; k < Kp; k++) sum += (uint32_t)((int32_t)w[k] * (int32_t)v[k]);
            a[j] = (int32_t)sum;
        }
    }
}

static int kernels_cached = -1;

int vox_kernels_available(void) {
    int cached = __atomic_load_n(&kernels_cached, __ATOMIC_RELAXED);
    if (cached >= 0) return cached;
    int k = 1 << VOX_KERNEL_SCALAR;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) k |= 1 << VOX_KERNEL_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni"))
        k |= 1 << VOX_KERNEL_AVX512VNNI;
#endif
    __atomic_store_n(&kernels_cached, k, __ATOMIC_RELAXED);
    return k;
}

int vox_kernel_best(void) {
    int k = vox_kernels_available();
    if (k & (1 << VOX_KERNEL_AVX512VNNI)) return VOX_KERNEL_AVX512VNNI;
    if (k & (1 << VOX_KERNEL_AVX2)) return VOX_KERNEL_AVX2;
    return VOX_KERNEL_SCALAR;
}

static inline int32_t act_lut(const int32_t *t, int32_t z) {
    if (z < -32768) z = -32768;
    if (z > 32767) z = 32767;
    int32_t u = z + 32768;
    int32_t i = u >> 6, f = u & 63;
    return t[i] + (((t[i + 1] - t[i]) * f + 32) >> 6);
}

/*
 * Activation 1, "quadratic" (model format 2): piecewise quadratic sigmoid and tanh, exact in
 * integers and cheap in SIMD (no table lookups). z in Q12, result Q14:
 *   tanh:    X = clamp(z, +-2.0);  4X - ((X * |X|) >> 12)          (x - x|x|/4, |x| <= 2)
 *   sigmoid: X = clamp(z, +-4.0);  8192 + X - ((X * |X|) >> 15)    (1/2 + x/4 - x|x|/32, |x| <= 4)
 * Both are C1 with derivatives 1 and 1/4 at 0, and equal +-1 (0, 1) from |x| = 2 (4) on.
 */
static inline int32_t sig_quad(int32_t z) {
    int32_t X = z < -16384 ? -16384 : (z > 16384 ? 16384 : z);
    return 8192 + X - ((X * (X < 0 ? -X : X)) >> 15);
}
static inline int32_t tanh_quad(int32_t z) {
    int32_t X = z < -8192 ? -8192 : (z > 8192 ? 8192 : z);
    return 4 * X - ((X * (X < 0 ? -X : X)) >> 12);
}
static inline int32_t act_sig(int pq, int32_t z) { return pq ? sig_quad(z) : act_lut(vox_sigmoid_q14, z); }
static inline int32_t act_tanh(int pq, int32_t z) { return pq ? tanh_quad(z) : act_lut(vox_tanh_q14, z); }

int32_t vox_activation(int act, int which, int32_t z) { return which == 0 ? act_sig(act == VOX_ACT_QUADRATIC, z) : act_tanh(act == VOX_ACT_QUADRATIC, z); }

/* floor((a + 2^11) / 2^12) without overflow: Q24 accumulator to Q12 */
static inline int32_t q24_to_q12(int32_t a) { return ((a >> 11) + 1) >> 1; }

#define CELL_MAX 65536 /* |c| <= 4.0 in Q14: keeps every product below 2^31 */

/*
 * One LSTM cell update for H units from the gate accumulators a[4H] (Q24):
 *   i, f, o = sigmoid(.), g = tanh(.)       (Q14, from the tables or the quadratic curves)
 *   c = clamp((f*c + i*g + 2^13) >> 14, +-CELL_MAX)                     (Q14)
 *   h = (o * tanh((c + 2) >> 2) + 2^15) >> 16                           (Q12)
 * All intermediate values fit in int32 (|f*c| <= 2^30, |i*g| <= 2^28).
 */
/* Units [j0, j1) (i at a[u], f at a[H+u], ...); pq: the quadratic activations of model format 2. */
static inline void act_scalar_range(const int32_t *a, int H, int32_t *c, int16_t *h, int j0, int j1, int pq) {
    for (int j = j0; j < j1; j++) {
        int32_t gi = act_sig(pq, q24_to_q12(a[j]));
        int32_t gf = act_sig(pq, q24_to_q12(a[H + j]));
        int32_t gg = act_tanh(pq, q24_to_q12(a[2 * H + j]));
        int32_t go = act_sig(pq, q24_to_q12(a[3 * H + j]));
        int32_t cc = (gf * c[j] + gi * gg + 8192) >> 14;
        if (cc > CELL_MAX) cc = CELL_MAX;
        if (cc < -CELL_MAX) cc = -CELL_MAX;
        c[j] = cc;
        int32_t tc = act_tanh(pq, (cc + 2) >> 2);
        h[j] = (int16_t)((go * tc + 32768) >> 16);
    }
}


/* The reference run (docs/format.md "Run"): one step of n <= 64 sequences at a time. */
static int lstm_run_scalar(const vox_model *m, int n, const int16_t *x, int32_t *y) {
    const int H = m->H, I = m->I, T = m->T, Kp = m->Kp, G = m->G;
    enum { CHUNK = 64 };
    int chunk = n < CHUNK ? n : CHUNK;
    if (chunk <= 0) return 0;
    int16_t *xh = calloc((size_t)chunk * Kp, sizeof(int16_t));
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)chunk * G);
    int32_t *c = malloc(sizeof(int32_t) * (size_t)chunk * H);
    if (!xh || !acc || !c) { free(xh); free(acc); free(c); return -1; }
    for (int s0 = 0; s0 < n; s0 += chunk) {
        int cn = n - s0 < chunk ? n - s0 : chunk;
        memset(xh, 0, sizeof(int16_t) * (size_t)cn * Kp);
        memset(c, 0, sizeof(int32_t) * (size_t)cn * H);
        for (int t = 0; t < T; t++) {
            for (int s = 0; s < cn; s++)
                memcpy(xh + (size_t)s * Kp, x + ((size_t)(s0 + s) * T + t) * I, sizeof(int16_t) * I);
            mv_scalar(m, cn, xh, acc);
            for (int s = 0; s < cn; s++)
                act_scalar_range(acc + (size_t)s * G, H, c + (size_t)s * H, xh + (size_t)s * Kp + I, 0, H, m->pq);
        }
        for (int s = 0; s < cn; s++) {
            const int16_t *h = xh + (size_t)s * Kp + I;
            uint32_t sum = (uint32_t)m->bo;
            for (int j = 0; j < H; j++) sum += (uint32_t)((int32_t)m->Wo[j] * (int32_t)h[j]);
            y[s0 + s] = (int32_t)sum;
        }
    }
    free(xh); free(acc); free(c);
    return 0;
}

/* ---- packed tables: P[i] = T[i] (low 16 bits) | (T[i+1] - T[i]) << 16, i < 1024 ----------
 * LUT(T, z) = T[i] + ((D[i] * f + 32) >> 6) = (64 * T[i] + D[i] * f + 32) >> 6, and
 * 64 * T[i] + D[i] * f is one pmaddwd of P[i] with the pair (64, f): one gather per lookup. */
#if defined(__x86_64__)
__attribute__((target("avx2")))
static inline __m256i lutp8(const int32_t *tp, __m256i z) {
    z = _mm256_min_epi32(_mm256_max_epi32(z, _mm256_set1_epi32(-32768)), _mm256_set1_epi32(32767));
    __m256i u = _mm256_add_epi32(z, _mm256_set1_epi32(32768));
    __m256i i = _mm256_srai_epi32(u, 6);
    __m256i f64 = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(u, _mm256_set1_epi32(63)), 16), _mm256_set1_epi32(64));
    __m256i p = _mm256_i32gather_epi32((const int *)tp, i, 4);
    return _mm256_srai_epi32(_mm256_add_epi32(_mm256_madd_epi16(p, f64), _mm256_set1_epi32(32)), 6);
}
__attribute__((target("avx2")))
static inline __m256i sig8(int pq, __m256i z) {
    if (!pq) return lutp8(sig_packed, z);
    __m256i X = _mm256_min_epi32(_mm256_max_epi32(z, _mm256_set1_epi32(-16384)), _mm256_set1_epi32(16384));
    return _mm256_sub_epi32(_mm256_add_epi32(X, _mm256_set1_epi32(8192)), _mm256_srai_epi32(_mm256_mullo_epi32(X, _mm256_abs_epi32(X)), 15));
}
__attribute__((target("avx2")))
static inline __m256i tanh8(int pq, __m256i z) {
    if (!pq) return lutp8(tanh_packed, z);
    __m256i X = _mm256_min_epi32(_mm256_max_epi32(z, _mm256_set1_epi32(-8192)), _mm256_set1_epi32(8192));
    return _mm256_sub_epi32(_mm256_slli_epi32(X, 2), _mm256_srai_epi32(_mm256_mullo_epi32(X, _mm256_abs_epi32(X)), 12));
}
__attribute__((target("avx2")))
static inline __m256i q12_8(const int32_t *a) {
    __m256i v = _mm256_loadu_si256((const __m256i *)a);
    return _mm256_srai_epi32(_mm256_add_epi32(_mm256_srai_epi32(v, 11), _mm256_set1_epi32(1)), 1);
}
/* units [j, j+8): gi*gg and go*tc are products of values in [-2^14, 2^14] with a non-negative
 * one, so pmaddwd (high halves: 0 * x) gives them exactly; gf*c needs the 32-bit multiply. */
__attribute__((target("avx2")))
static inline void act8(const int32_t *a, int H, int32_t *c, int16_t *h, int j, int pq) {
    __m256i gi = sig8(pq, q12_8(a + j));
    __m256i gf = sig8(pq, q12_8(a + H + j));
    __m256i gg = tanh8(pq, q12_8(a + 2 * H + j));
    __m256i go = sig8(pq, q12_8(a + 3 * H + j));
    __m256i cv = _mm256_loadu_si256((const __m256i *)(c + j));
    __m256i cn = _mm256_add_epi32(_mm256_add_epi32(_mm256_mullo_epi32(gf, cv), _mm256_madd_epi16(gi, gg)), _mm256_set1_epi32(8192));
    cn = _mm256_srai_epi32(cn, 14);
    cn = _mm256_min_epi32(_mm256_max_epi32(cn, _mm256_set1_epi32(-CELL_MAX)), _mm256_set1_epi32(CELL_MAX));
    _mm256_storeu_si256((__m256i *)(c + j), cn);
    __m256i tc = tanh8(pq, _mm256_srai_epi32(_mm256_add_epi32(cn, _mm256_set1_epi32(2)), 2));
    __m256i hh = _mm256_srai_epi32(_mm256_add_epi32(_mm256_madd_epi16(go, tc), _mm256_set1_epi32(32768)), 16);
    __m128i h16 = _mm_packs_epi32(_mm256_castsi256_si128(hh), _mm256_extracti128_si256(hh, 1)); /* |h| < 2^14: no saturation */
    _mm_storeu_si128((__m128i *)(h + j), h16);
}
__attribute__((target("avx2")))
static void act_avx2(const int32_t *a, int H, int32_t *c, int16_t *h, int pq) {
    int j = 0;
    for (; j + 8 <= H; j += 8) act8(a, H, c, h, j, pq);
    act_scalar_range(a, H, c, h, j, H, pq);
}

__attribute__((target("avx512f,avx512bw,avx2")))
static inline __m512i lutp16(const int32_t *tp, __m512i z) {
    z = _mm512_min_epi32(_mm512_max_epi32(z, _mm512_set1_epi32(-32768)), _mm512_set1_epi32(32767));
    __m512i u = _mm512_add_epi32(z, _mm512_set1_epi32(32768));
    __m512i i = _mm512_srai_epi32(u, 6);
    __m512i f64 = _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(u, _mm512_set1_epi32(63)), 16), _mm512_set1_epi32(64));
    __m512i p = _mm512_i32gather_epi32(i, (const int *)tp, 4);
    return _mm512_srai_epi32(_mm512_add_epi32(_mm512_madd_epi16(p, f64), _mm512_set1_epi32(32)), 6);
}
__attribute__((target("avx512f,avx512bw,avx2")))
static inline __m512i sig16(int pq, __m512i z) {
    if (!pq) return lutp16(sig_packed, z);
    __m512i X = _mm512_min_epi32(_mm512_max_epi32(z, _mm512_set1_epi32(-16384)), _mm512_set1_epi32(16384));
    return _mm512_sub_epi32(_mm512_add_epi32(X, _mm512_set1_epi32(8192)), _mm512_srai_epi32(_mm512_mullo_epi32(X, _mm512_abs_epi32(X)), 15));
}
__attribute__((target("avx512f,avx512bw,avx2")))
static inline __m512i tanh16(int pq, __m512i z) {
    if (!pq) return lutp16(tanh_packed, z);
    __m512i X = _mm512_min_epi32(_mm512_max_epi32(z, _mm512_set1_epi32(-8192)), _mm512_set1_epi32(8192));
    return _mm512_sub_epi32(_mm512_slli_epi32(X, 2), _mm512_srai_epi32(_mm512_mullo_epi32(X, _mm512_abs_epi32(X)), 12));
}
#define Q12V(v) _mm512_srai_epi32(_mm512_add_epi32(_mm512_srai_epi32(v, 11), _mm512_set1_epi32(1)), 1)
__attribute__((target("avx512f,avx512bw,avx2")))
static inline __m512i q12_16(const int32_t *a) {
    __m512i v = _mm512_loadu_si512(a);
    return _mm512_srai_epi32(_mm512_add_epi32(_mm512_srai_epi32(v, 11), _mm512_set1_epi32(1)), 1);
}
__attribute__((target("avx512f,avx512bw,avx2")))
static void act_avx512(const int32_t *a, int H, int32_t *c, int16_t *h, int pq) {
    int j = 0;
    for (; j + 16 <= H; j += 16) {
        __m512i gi = sig16(pq, q12_16(a + j));
        __m512i gf = sig16(pq, q12_16(a + H + j));
        __m512i gg = tanh16(pq, q12_16(a + 2 * H + j));
        __m512i go = sig16(pq, q12_16(a + 3 * H + j));
        __m512i cv = _mm512_loadu_si512(c + j);
        __m512i cn = _mm512_add_epi32(_mm512_add_epi32(_mm512_mullo_epi32(gf, cv), _mm512_madd_epi16(gi, gg)), _mm512_set1_epi32(8192));
        cn = _mm512_srai_epi32(cn, 14);
        cn = _mm512_min_epi32(_mm512_max_epi32(cn, _mm512_set1_epi32(-CELL_MAX)), _mm512_set1_epi32(CELL_MAX));
        _mm512_storeu_si512(c + j, cn);
        __m512i tc = tanh16(pq, _mm512_srai_epi32(_mm512_add_epi32(cn, _mm512_set1_epi32(2)), 2));
        __m512i hh = _mm512_srai_epi32(_mm512_add_epi32(_mm512_madd_epi16(go, tc), _mm512_set1_epi32(32768)), 16);
        _mm256_storeu_si256((__m256i *)(h + j), _mm512_cvtepi32_epi16(hh));
    }
    for (; j + 8 <= H; j += 8) act8(a, H, c, h, j, pq);
    act_scalar_range(a, H, c, h, j, H, pq);
}
/* H = 8: two sequences per register (their c and h are adjacent; their gates are not) */
__attribute__((target("avx512f,avx512bw,avx2")))
static void act_avx512_h8x2(const int32_t *a0, const int32_t *a1, int32_t *c, int16_t *h, int pq) {
#define G2(off) _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)(a0 + off))), \
                                   _mm256_loadu_si256((const __m256i *)(const void *)(a1 + off)), 1)
    __m512i gi = sig16(pq, Q12V(G2(0)));
    __m512i gf = sig16(pq, Q12V(G2(8)));
    __m512i gg = tanh16(pq, Q12V(G2(16)));
    __m512i go = sig16(pq, Q12V(G2(24)));
#undef G2
    __m512i cv = _mm512_loadu_si512(c);
    __m512i cn = _mm512_add_epi32(_mm512_add_epi32(_mm512_mullo_epi32(gf, cv), _mm512_madd_epi16(gi, gg)), _mm512_set1_epi32(8192));
    cn = _mm512_srai_epi32(cn, 14);
    cn = _mm512_min_epi32(_mm512_max_epi32(cn, _mm512_set1_epi32(-CELL_MAX)), _mm512_set1_epi32(CELL_MAX));
    _mm512_storeu_si512(c, cn);
    __m512i tc = tanh16(pq, _mm512_srai_epi32(_mm512_add_epi32(cn, _mm512_set1_epi32(2)), 2));
    __m512i hh = _mm512_srai_epi32(_mm512_add_epi32(_mm512_madd_epi16(go, tc), _mm512_set1_epi32(32768)), 16);
    _mm256_storeu_si256((__m256i *)(void *)h, _mm512_cvtepi32_epi16(hh));
}
#endif

static inline void act_any(int kernel, const int32_t *a, int H, int32_t *c, int16_t *h, int pq) {
#if defined(__x86_64__)
    if (kernel == VOX_KERNEL_AVX512VNNI) { act_avx512(a, H, c, h, pq); return; }
    if (kernel == VOX_KERNEL_AVX2) { act_avx2(a, H, c, h, pq); return; }
#endif
    act_scalar_range(a, H, c, h, 0, H, pq);
}

/* ---- many sequences per weight load ------------------------------------------------------
 * out[s][j] = in[s][j] + sum_{p<P} (Wp[p][j] . pair_p(x_s))        s < n, j < G   (mod 2^32)
 * pair_p(v) = (v[2p], v[2p+1]); with `odd`, the last pair is (v[2P-2], 0) (never reads past
 * the vector). `in` may be shared by all sequences (ins = 0: the bias). */
typedef struct {
    const int32_t *Wp; int P, G, odd;
    const int16_t *x; size_t xs;
    const int32_t *in; size_t ins;
    int32_t *out; size_t outs;
} mm_args;

static inline int32_t pair_of(const int16_t *v, int p, int P, int odd) {
    if (odd && p == P - 1) return (int32_t)(uint16_t)v[2 * p];
    int32_t r; memcpy(&r, v + 2 * p, 4); return r;
}

static void mm_scalar(const mm_args *A, int n) {
    for (int s = 0; s < n; s++) {
        const int16_t *v = A->x + (size_t)s * A->xs;
        const int32_t *in = A->in + (size_t)s * A->ins;
        int32_t *o = A->out + (size_t)s * A->outs;
        for (int j = 0; j < A->G; j++) {
            uint32_t sum = (uint32_t)in[j];
            for (int p = 0; p < A->P; p++) {
                int32_t w = A->Wp[(size_t)p * A->G + j], xv = pair_of(v, p, A->P, A->odd);
                sum += (uint32_t)((int32_t)(int16_t)w * (int32_t)(int16_t)xv) + (uint32_t)((int32_t)(int16_t)(w >> 16) * (int32_t)(int16_t)(xv >> 16));
            }
            o[j] = (int32_t)sum;
        }
    }
}

#if defined(__x86_64__)
/* NS sequences x RB registers of rows per block; n is a multiple of NS */
#define MM_BODY(VEC, LOAD, STORE, ADDMUL, SET1, WIDTH)                                              \
    for (int s0 = 0; s0 < n; s0 += NS) {                                                            \
        const int16_t *v[NS]; const int32_t *in[NS]; int32_t *o[NS];                                \
        for (int k = 0; k < NS; k++) {                                                              \
            v[k] = A->x + (size_t)(s0 + k) * A->xs; in[k] = A->in + (size_t)(s0 + k) * A->ins;      \
            o[k] = A->out + (size_t)(s0 + k) * A->outs;                                             \
        }                                                                                           \
        for (int j = 0; j < A->G; j += RB * WIDTH) {                                               \
            VEC acc[NS][RB];                                                                        \
            for (int k = 0; k < NS; k++)                                                            \
                for (int r = 0; r < RB; r++) acc[k][r] = LOAD(in[k] + j + r * WIDTH);               \
            for (int p = 0; p < A->P; p++) {                                                        \
                VEC w[RB];                                                                          \
                for (int r = 0; r < RB; r++) w[r] = LOAD(A->Wp + (size_t)p * A->G + j + r * WIDTH); \
                for (int k = 0; k < NS; k++) {                                                      \
                    VEC bx = SET1(pair_of(v[k], p, A->P, A->odd));                                  \
                    for (int r = 0; r < RB; r++) acc[k][r] = ADDMUL(acc[k][r], bx, w[r]);           \
                }                                                                                   \
            }                                                                                       \
            for (int k = 0; k < NS; k++)                                                            \
                for (int r = 0; r < RB; r++) STORE(o[k] + j + r * WIDTH, acc[k][r]);                \
        }                                                                                           \
    }

/* the first n & ~3 sequences 4 at a time, the rest one at a time */
static inline mm_args mm_tail(const mm_args *A, int n4) {
    mm_args B = *A;
    B.x += (size_t)n4 * A->xs; B.in += (size_t)n4 * A->ins; B.out += (size_t)n4 * A->outs;
    return B;
}

#define LD256(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define ST256(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define MADD256(a, b, w) _mm256_add_epi32(a, _mm256_madd_epi16(b, w))
#define MM_AVX2(NAME, NS_, RB_) __attribute__((target("avx2"))) \
    static void NAME(const mm_args *A, int n) { enum { NS = NS_, RB = RB_ }; MM_BODY(__m256i, LD256, ST256, MADD256, _mm256_set1_epi32, 8) }
MM_AVX2(mm_avx2_rb2, 4, 2)
MM_AVX2(mm_avx2_rb1, 4, 1)
MM_AVX2(mm_avx2_rb4_s1, 1, 4)
MM_AVX2(mm_avx2_rb2_s1, 1, 2)
static void mm_avx2(const mm_args *A, int n) {
    /* G = 4H is a multiple of 16: blocks of 16 rows (2 registers) x 4 sequences */
    int n4 = n & ~3;
    mm_args B = mm_tail(A, n4);
    if (A->G % 32 == 0) { mm_avx2_rb2(A, n4); mm_avx2_rb4_s1(&B, n - n4); }
    else if (A->G % 16 == 0) { mm_avx2_rb2(A, n4); mm_avx2_rb2_s1(&B, n - n4); }
    else { mm_avx2_rb1(A, n4); mm_avx2_rb2_s1(&B, n - n4); }
}

#define LD512(p) _mm512_loadu_si512((const void *)(p))
#define ST512(p, v) _mm512_storeu_si512((void *)(p), v)
#define DP512(a, b, w) _mm512_dpwssd_epi32(a, b, w)
#define MM_VNNI(NAME, NS_, RB_) __attribute__((target("avx512f,avx512bw,avx512vnni"))) \
    static void NAME(const mm_args *A, int n) { enum { NS = NS_, RB = RB_ }; MM_BODY(__m512i, LD512, ST512, DP512, _mm512_set1_epi32, 16) }
MM_VNNI(mm_vnni_rb4, 4, 4)
MM_VNNI(mm_vnni_rb2, 4, 2)
MM_VNNI(mm_vnni_rb1, 4, 1)
MM_VNNI(mm_vnni_rb4_s1, 1, 4)
MM_VNNI(mm_vnni_rb2_s1, 1, 2)
MM_VNNI(mm_vnni_rb1_s1, 1, 1)
static void mm_vnni(const mm_args *A, int n) {
    int n4 = n & ~3;
    mm_args B = mm_tail(A, n4);
    if (A->G % 64 == 0) { mm_vnni_rb4(A, n4); mm_vnni_rb4_s1(&B, n - n4); }
    else if (A->G % 32 == 0) { mm_vnni_rb2(A, n4); mm_vnni_rb2_s1(&B, n - n4); }
    else { mm_vnni_rb1(A, n4); mm_vnni_rb1_s1(&B, n - n4); }
}
#endif

static void mm_any(int kernel, const mm_args *A, int n) {
    if (n <= 0) return;
#if defined(__x86_64__)
    if (kernel == VOX_KERNEL_AVX512VNNI) { mm_vnni(A, n); return; }
    if (kernel == VOX_KERNEL_AVX2) { mm_avx2(A, n); return; }
#endif
    mm_scalar(A, n);
}

static int resolve_kernel(int kernel) {
    int avail = vox_kernels_available();
    if (kernel < 0 || kernel > 2 || !(avail & (1 << kernel))) return VOX_KERNEL_SCALAR;
    return kernel;
}

/* ---- the split API ------------------------------------------------------------------------ */

void vox_lstm_input_proj(const vox_model *m, int n, const int16_t *x, size_t xstride, int32_t *pre, int kernel) {
    mm_args A = { m->Wxp, m->Px, m->G, m->I & 1, x, xstride, m->b, 0, pre, (size_t)m->G };
    mm_any(resolve_kernel(kernel), &A, n);
}

void vox_lstm_steps(const vox_model *m, int n, int t0, int t1, const int32_t *pre, size_t pre_stride,
                    int16_t *h, int32_t *c, int zero_state, int32_t *acc, int kernel) {
    kernel = resolve_kernel(kernel);
    const int H = m->H, G = m->G;
    for (int t = t0; t < t1; t++) {
        const int32_t *pt = pre + (size_t)(t - t0) * G;
        const int32_t *a = acc;
        size_t as = (size_t)G;
        if (zero_state && t == t0) {
            /* h = 0: the recurrent term is zero, the accumulators are the partial sums */
            memset(c, 0, sizeof(int32_t) * (size_t)n * H);
            a = pt; as = pre_stride;
        } else {
            mm_args A = { m->Whp, m->Ph, G, 0, h, (size_t)H, pt, pre_stride, acc, (size_t)G };
            mm_any(kernel, &A, n);
        }
        int s = 0;
#if defined(__x86_64__)
        if (kernel == VOX_KERNEL_AVX512VNNI && H == 8)
            for (; s + 2 <= n; s += 2) act_avx512_h8x2(a + (size_t)s * as, a + (size_t)(s + 1) * as, c + (size_t)s * H, h + (size_t)s * H, m->pq);
#endif
        for (; s < n; s++) act_any(kernel, a + (size_t)s * as, H, c + (size_t)s * H, h + (size_t)s * H, m->pq);
    }
}

void vox_lstm_output(const vox_model *m, int n, const int16_t *h, int32_t *y) {
    const int H = m->H;
    for (int s = 0; s < n; s++) {
        uint32_t sum = (uint32_t)m->bo;
        for (int j = 0; j < H; j++) sum += (uint32_t)((int32_t)m->Wo[j] * (int32_t)h[(size_t)s * H + j]);
        y[s] = (int32_t)sum;
    }
}

#define RUN_CHUNK 32

size_t vox_lstm_workspace_size(const vox_model *m, int n) {
    size_t cn = (size_t)(n < RUN_CHUNK ? (n < 1 ? 1 : n) : RUN_CHUNK);
    return cn * ((size_t)m->T * m->G + m->G + m->H) * sizeof(int32_t) + cn * m->H * sizeof(int16_t) + 64;
}

int vox_lstm_run_ws(const vox_model *m, int n, const int16_t *x, int32_t *y, int kernel, void *ws) {
    kernel = resolve_kernel(kernel);
    if (kernel == VOX_KERNEL_SCALAR) return lstm_run_scalar(m, n, x, y);
    const int H = m->H, I = m->I, T = m->T, G = m->G;
    int chunk = n < RUN_CHUNK ? n : RUN_CHUNK;
    if (chunk <= 0) return 0;
    int32_t *pre = ws, *acc = pre + (size_t)chunk * T * G, *c = acc + (size_t)chunk * G;
    int16_t *h = (int16_t *)(c + (size_t)chunk * H);
    for (int s0 = 0; s0 < n; s0 += chunk) {
        int cn = n - s0 < chunk ? n - s0 : chunk;
        /* every step of every sequence: cn * T input projections in one product */
        vox_lstm_input_proj(m, cn * T, x + (size_t)s0 * T * I, (size_t)I, pre, kernel);
        vox_lstm_steps(m, cn, 0, T, pre, (size_t)T * G, h, c, 1, acc, kernel);
        vox_lstm_output(m, cn, h, y + s0);
    }
    return 0;
}

const int32_t *vox_activation_table(int which) { return which == 0 ? vox_sigmoid_q14 : vox_tanh_q14; }

int vox_lstm_run(const vox_model *m, int n, const int16_t *x, int32_t *y, int kernel) {
    kernel = resolve_kernel(kernel);
    if (kernel == VOX_KERNEL_SCALAR) return lstm_run_scalar(m, n, x, y);
    void *ws = malloc(vox_lstm_workspace_size(m, n));
    if (!ws) return -1;
    int rc = vox_lstm_run_ws(m, n, x, y, kernel, ws);
    free(ws);
    return rc;
}

/* ---- one voxel, its input projections done in advance ------------------------------------- */

struct vox_lstm_split {
    const vox_model *m;
    int nl;               /* left columns in all, in the order the caller supplies their inputs */
    int nlt[1024], lo[1024]; /* per step: how many, and where its inputs start in xl */
    int32_t *S;           /* [T][G]: sum of the W columns of the projected (non-left) neighbours */
    int32_t *Wl;          /* per step t: [ceil(nlt/2)][G] packed pairs of its left columns, at Wl + lwo[t] */
    size_t *lwo;
    int16_t *h0;          /* [T+1][H]: state after t zero-input steps from the zero state */
    int32_t *c0;
};

vox_lstm_split *vox_split_new(const vox_model *m, int n_cols, const int32_t *slot, const uint8_t *is_left) {
    const int H = m->H, I = m->I, T = m->T, G = m->G, Kp = m->Kp;
    vox_lstm_split *sp = calloc(1, sizeof *sp);
    if (!sp) return NULL;
    sp->m = m;
    sp->S = calloc((size_t)T * G, sizeof(int32_t));
    sp->lwo = calloc((size_t)T + 1, sizeof(size_t));
    sp->h0 = calloc((size_t)(T + 1) * H, sizeof(int16_t));
    sp->c0 = calloc((size_t)(T + 1) * H, sizeof(int32_t));
    int32_t *acc = malloc(sizeof(int32_t) * G);
    if (!sp->S || !sp->lwo || !sp->h0 || !sp->c0 || !acc) { free(acc); vox_split_free(sp); return NULL; }
    for (int k = 0; k < n_cols; k++) {
        int t = slot[k] / I, i = slot[k] % I;
        if (is_left[k]) { sp->nlt[t]++; continue; }
        for (int j = 0; j < G; j++) sp->S[(size_t)t * G + j] = (int32_t)((uint32_t)sp->S[(size_t)t * G + j] + (uint32_t)(int32_t)m->W[(size_t)j * Kp + i]);
    }
    size_t tot = 0;
    for (int t = 0; t < T; t++) { sp->lo[t] = sp->nl; sp->nl += sp->nlt[t]; sp->lwo[t] = tot; tot += (size_t)((sp->nlt[t] + 1) / 2) * G; }
    sp->lwo[T] = tot;
    sp->Wl = calloc(tot + 1, sizeof(int32_t));
    if (!sp->Wl) { free(acc); vox_split_free(sp); return NULL; }
    int fill[1024] = {0};
    for (int k = 0; k < n_cols; k++) {
        if (!is_left[k]) continue;
        int t = slot[k] / I, i = slot[k] % I, q = fill[t]++;
        int32_t *w = sp->Wl + sp->lwo[t] + (size_t)(q / 2) * G;
        for (int j = 0; j < G; j++) {
            uint32_t old = (uint32_t)w[j], v = (uint16_t)m->W[(size_t)j * Kp + i];
            w[j] = (int32_t)((q & 1) ? ((old & 0xFFFFu) | (v << 16)) : ((old & 0xFFFF0000u) | v));
        }
    }
    /* zero-input steps from the zero state (the first slices of a slab): constant states */
    for (int t = 0; t < T; t++) {
        const int16_t *h = sp->h0 + (size_t)t * H;
        for (int j = 0; j < G; j++) {
            uint32_t sum = (uint32_t)m->b[j];
            for (int k = 0; k < H; k++) sum += (uint32_t)((int32_t)m->W[(size_t)j * Kp + I + k] * (int32_t)h[k]);
            acc[j] = (int32_t)sum;
        }
        memcpy(sp->h0 + (size_t)(t + 1) * H, h, sizeof(int16_t) * H);
        memcpy(sp->c0 + (size_t)(t + 1) * H, sp->c0 + (size_t)t * H, sizeof(int32_t) * H);
        act_scalar_range(acc, H, sp->c0 + (size_t)(t + 1) * H, sp->h0 + (size_t)(t + 1) * H, 0, H, m->pq);
    }
    free(acc);
    return sp;
}

void vox_split_free(vox_lstm_split *sp) {
    if (!sp) return;
    free(sp->S); free(sp->Wl); free(sp->lwo); free(sp->h0); free(sp->c0); free(sp);
}

static int32_t voxel_scalar(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl) {
    const vox_model *m = sp->m;
    const int H = m->H, T = m->T, G = m->G;
    int16_t h[512]; int32_t c[512], acc[2048];
    memcpy(h, sp->h0 + (size_t)tv * H, sizeof(int16_t) * H);
    memcpy(c, sp->c0 + (size_t)tv * H, sizeof(int32_t) * H);
    for (int t = tv; t < T; t++) {
        const int np = (sp->nlt[t] + 1) / 2, odd = sp->nlt[t] & 1;
        const int16_t *xt = xl + sp->lo[t];
        for (int j = 0; j < G; j++) {
            uint32_t sum = (uint32_t)pre[(size_t)t * G + j] - (uint32_t)dA * (uint32_t)sp->S[(size_t)t * G + j];
            for (int p = 0; p < np; p++) {
                int32_t w = sp->Wl[sp->lwo[t] + (size_t)p * G + j], xv = pair_of(xt, p, np, odd);
                sum += (uint32_t)((int32_t)(int16_t)w * (int32_t)(int16_t)xv) + (uint32_t)((int32_t)(int16_t)(w >> 16) * (int32_t)(int16_t)(xv >> 16));
            }
            if (t > 0)
                for (int k = 0; k < H; k++) sum += (uint32_t)((int32_t)m->W[(size_t)j * m->Kp + m->I + k] * (int32_t)h[k]);
            acc[j] = (int32_t)sum;
        }
        act_scalar_range(acc, H, c, h, 0, H, m->pq);
    }
    int32_t y; vox_lstm_output(m, 1, h, &y);
    return y;
}

#if defined(__x86_64__)
#define VOXEL_BODY(VEC, W, LOAD, STORE, SET1, SUB, MUL, ADD, DP, ZERO, ACT)                         \
    const vox_model *m = sp->m;                                                                     \
    const int H = m->H, T = m->T, G = m->G;                                                         \
    int16_t h[512] __attribute__((aligned(64))); int32_t c[512], acc[2048] __attribute__((aligned(64))); \
    memcpy(h, sp->h0 + (size_t)tv * H, sizeof(int16_t) * H);                                        \
    memcpy(c, sp->c0 + (size_t)tv * H, sizeof(int32_t) * H);                                        \
    const VEC dv = SET1(dA);                                                                        \
    for (int t = tv; t < T; t++) {                                                                  \
        const int np = (sp->nlt[t] + 1) / 2, odd = sp->nlt[t] & 1;                                  \
        const int16_t *xt = xl + sp->lo[t];                                                         \
        const int32_t *wl = sp->Wl + sp->lwo[t];                                                    \
        for (int j = 0; j < G; j += W) {                                                            \
            VEC a0 = SUB(LOAD(pre + (size_t)t * G + j), MUL(dv, LOAD(sp->S + (size_t)t * G + j)));  \
            VEC a1 = ZERO;                                                                          \
            for (int p = 0; p < np; p++) a0 = DP(a0, SET1(pair_of(xt, p, np, odd)), LOAD(wl + (size_t)p * G + j)); \
            if (t > 0) {                                                                            \
                const int32_t *hp = (const int32_t *)(const void *)h;                               \
                int q = 0;                                                                          \
                for (; q + 2 <= m->Ph; q += 2) {                                                    \
                    a0 = DP(a0, SET1(hp[q]), LOAD(m->Whp + (size_t)q * G + j));                     \
                    a1 = DP(a1, SET1(hp[q + 1]), LOAD(m->Whp + (size_t)(q + 1) * G + j));           \
                }                                                                                   \
                if (q < m->Ph) a0 = DP(a0, SET1(hp[q]), LOAD(m->Whp + (size_t)q * G + j));          \
            }                                                                                       \
            STORE(acc + j, ADD(a0, a1));                                                            \
        }                                                                                           \
        ACT(acc, H, c, h, m->pq);                                                                  \
    }                                                                                               \
    int32_t y; vox_lstm_output(m, 1, h, &y);                                                        \
    return y;

#define DPA256(a, b, w) _mm256_add_epi32(a, _mm256_madd_epi16(b, w))
__attribute__((target("avx2")))
static int32_t voxel_avx2(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl) {
    VOXEL_BODY(__m256i, 8, LD256, ST256, _mm256_set1_epi32, _mm256_sub_epi32, _mm256_mullo_epi32, _mm256_add_epi32,
               DPA256, _mm256_setzero_si256(), act_avx2)
}
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2")))
static int32_t voxel_vnni(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl) {
    VOXEL_BODY(__m512i, 16, LD512, ST512, _mm512_set1_epi32, _mm512_sub_epi32, _mm512_mullo_epi32, _mm512_add_epi32,
               DP512, _mm512_setzero_si512(), act_avx512)
}
#endif

#if defined(__x86_64__)
/*
 * Fused variants for the shipped sizes (AVX-512: H = 16 or 32, AVX2: H = 8 or 16): the gate
 * accumulators, h and c stay in registers for all steps (one register per gate per 16 or 8
 * units), and the pairs (h[2q], h[2q+1]) are broadcast with a permute instead of being
 * reloaded from memory right after they were stored (a store-forwarding stall on the
 * voxel-serial critical path). The same sums and the same activation arithmetic.
 */
#define Q12R512(v) _mm512_srai_epi32(_mm512_add_epi32(_mm512_srai_epi32(v, 11), _mm512_set1_epi32(1)), 1)
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) __attribute__((always_inline))
static inline int32_t voxel_vnni_fused(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl, const int NH, const int PQ) {
    const vox_model *m = sp->m;
    const int H = 16 * NH, G = 64 * NH, T = m->T, Ph = 8 * NH;
    __m512i h[2], c[2];
    for (int k = 0; k < NH; k++) {
        h[k] = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(sp->h0 + (size_t)tv * H + 16 * k)));
        c[k] = _mm512_loadu_si512(sp->c0 + (size_t)tv * H + 16 * k);
    }
#define PACKH() (NH == 1 ? _mm512_zextsi256_si512(_mm512_cvtepi32_epi16(h[0])) \
                         : _mm512_inserti64x4(_mm512_zextsi256_si512(_mm512_cvtepi32_epi16(h[0])), _mm512_cvtepi32_epi16(h[1]), 1))
    __m512i hp = PACKH();
    const __m512i dv = _mm512_set1_epi32(dA);
    for (int t = tv; t < T; t++) {
        __m512i a[8], b[8];
        const int32_t *pt = pre + (size_t)t * G, *St = sp->S + (size_t)t * G, *wl = sp->Wl + sp->lwo[t];
        for (int r = 0; r < 4 * NH; r++) {
            a[r] = _mm512_sub_epi32(_mm512_loadu_si512(pt + 16 * r), _mm512_mullo_epi32(dv, _mm512_loadu_si512(St + 16 * r)));
            b[r] = _mm512_setzero_si512();
        }
        const int np = (sp->nlt[t] + 1) / 2, odd = sp->nlt[t] & 1;
        const int16_t *xt = xl + sp->lo[t];
        for (int p = 0; p < np; p++) {
            __m512i bx = _mm512_set1_epi32(pair_of(xt, p, np, odd));
            for (int r = 0; r < 4 * NH; r++) b[r] = _mm512_dpwssd_epi32(b[r], bx, _mm512_loadu_si512(wl + (size_t)p * G + 16 * r));
        }
        if (t > 0) { /* t == 0 only from the zero state: h = 0 */
            for (int q = 0; q < Ph; q++) {
                __m512i bh = _mm512_permutexvar_epi32(_mm512_set1_epi32(q), hp);
                const int32_t *w = m->Whp + (size_t)q * G;
                if (q & 1) for (int r = 0; r < 4 * NH; r++) b[r] = _mm512_dpwssd_epi32(b[r], bh, _mm512_loadu_si512(w + 16 * r));
                else for (int r = 0; r < 4 * NH; r++) a[r] = _mm512_dpwssd_epi32(a[r], bh, _mm512_loadu_si512(w + 16 * r));
            }
        }
        for (int k = 0; k < NH; k++) {
            __m512i gi = sig16(PQ, Q12R512(_mm512_add_epi32(a[k], b[k])));
            __m512i gf = sig16(PQ, Q12R512(_mm512_add_epi32(a[NH + k], b[NH + k])));
            __m512i gg = tanh16(PQ, Q12R512(_mm512_add_epi32(a[2 * NH + k], b[2 * NH + k])));
            __m512i go = sig16(PQ, Q12R512(_mm512_add_epi32(a[3 * NH + k], b[3 * NH + k])));
            __m512i cn = _mm512_add_epi32(_mm512_add_epi32(_mm512_mullo_epi32(gf, c[k]), _mm512_madd_epi16(gi, gg)), _mm512_set1_epi32(8192));
            cn = _mm512_srai_epi32(cn, 14);
            c[k] = _mm512_min_epi32(_mm512_max_epi32(cn, _mm512_set1_epi32(-CELL_MAX)), _mm512_set1_epi32(CELL_MAX));
            __m512i tc = tanh16(PQ, _mm512_srai_epi32(_mm512_add_epi32(c[k], _mm512_set1_epi32(2)), 2));
            h[k] = _mm512_srai_epi32(_mm512_add_epi32(_mm512_madd_epi16(go, tc), _mm512_set1_epi32(32768)), 16);
        }
        hp = PACKH();
    }
#undef PACKH
    __m512i wo = NH == 1 ? _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)m->Wo)) : _mm512_loadu_si512(m->Wo);
    return (int32_t)((uint32_t)m->bo + (uint32_t)_mm512_reduce_add_epi32(_mm512_madd_epi16(hp, wo)));
}
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2")))
static int32_t voxel_vnni_h16(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl) { return voxel_vnni_fused(sp, pre, dA, tv, xl, 1, 0); }
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2")))
static int32_t voxel_vnni_h16q(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl) { return voxel_vnni_fused(sp, pre, dA, tv, xl, 1, 1); }
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2")))
static int32_t voxel_vnni_h32(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl) { return voxel_vnni_fused(sp, pre, dA, tv, xl, 2, 0); }
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2")))
static int32_t voxel_vnni_h32q(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl) { return voxel_vnni_fused(sp, pre, dA, tv, xl, 2, 1); }

#define Q12R256(v) _mm256_srai_epi32(_mm256_add_epi32(_mm256_srai_epi32(v, 11), _mm256_set1_epi32(1)), 1)
__attribute__((target("avx2"))) __attribute__((always_inline))
static inline int32_t voxel_avx2_fused(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl, const int NH, const int PQ) {
    const vox_model *m = sp->m;
    const int H = 8 * NH, G = 32 * NH, T = m->T, Ph = 4 * NH;
    __m256i h[2], c[2];
    for (int k = 0; k < NH; k++) {
        h[k] = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(sp->h0 + (size_t)tv * H + 8 * k)));
        c[k] = _mm256_loadu_si256((const __m256i *)(const void *)(sp->c0 + (size_t)tv * H + 8 * k));
    }
    /* the H int16 of h as pairs in one register ((h[2q], h[2q+1]) in lane q) */
#define PACKH() (NH == 1 ? _mm256_zextsi128_si256(_mm_packs_epi32(_mm256_castsi256_si128(h[0]), _mm256_extracti128_si256(h[0], 1))) \
                         : _mm256_permute4x64_epi64(_mm256_packs_epi32(h[0], h[1]), 0xD8))
    __m256i hp = PACKH();
    const __m256i dv = _mm256_set1_epi32(dA);
    for (int t = tv; t < T; t++) {
        __m256i a[8];
        const int32_t *pt = pre + (size_t)t * G, *St = sp->S + (size_t)t * G, *wl = sp->Wl + sp->lwo[t];
        for (int r = 0; r < 4 * NH; r++)
            a[r] = _mm256_sub_epi32(LD256(pt + 8 * r), _mm256_mullo_epi32(dv, LD256(St + 8 * r)));
        const int np = (sp->nlt[t] + 1) / 2, odd = sp->nlt[t] & 1;
        const int16_t *xt = xl + sp->lo[t];
        for (int p = 0; p < np; p++) {
            __m256i bx = _mm256_set1_epi32(pair_of(xt, p, np, odd));
            for (int r = 0; r < 4 * NH; r++) a[r] = _mm256_add_epi32(a[r], _mm256_madd_epi16(bx, LD256(wl + (size_t)p * G + 8 * r)));
        }
        if (t > 0) {
            for (int q = 0; q < Ph; q++) {
                __m256i bh = _mm256_permutevar8x32_epi32(hp, _mm256_set1_epi32(q));
                const int32_t *w = m->Whp + (size_t)q * G;
                for (int r = 0; r < 4 * NH; r++) a[r] = _mm256_add_epi32(a[r], _mm256_madd_epi16(bh, LD256(w + 8 * r)));
            }
        }
        for (int k = 0; k < NH; k++) {
            __m256i gi = sig8(PQ, Q12R256(a[k]));
            __m256i gf = sig8(PQ, Q12R256(a[NH + k]));
            __m256i gg = tanh8(PQ, Q12R256(a[2 * NH + k]));
            __m256i go = sig8(PQ, Q12R256(a[3 * NH + k]));
            __m256i cn = _mm256_add_epi32(_mm256_add_epi32(_mm256_mullo_epi32(gf, c[k]), _mm256_madd_epi16(gi, gg)), _mm256_set1_epi32(8192));
            cn = _mm256_srai_epi32(cn, 14);
            c[k] = _mm256_min_epi32(_mm256_max_epi32(cn, _mm256_set1_epi32(-CELL_MAX)), _mm256_set1_epi32(CELL_MAX));
            __m256i tc = tanh8(PQ, _mm256_srai_epi32(_mm256_add_epi32(c[k], _mm256_set1_epi32(2)), 2));
            h[k] = _mm256_srai_epi32(_mm256_add_epi32(_mm256_madd_epi16(go, tc), _mm256_set1_epi32(32768)), 16);
        }
        hp = PACKH();
    }
#undef PACKH
    __m256i wo = NH == 1 ? _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)m->Wo)) : LD256(m->Wo);
    __m256i prod = _mm256_madd_epi16(hp, wo);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(prod), _mm256_extracti128_si256(prod, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    return (int32_t)((uint32_t)m->bo + (uint32_t)_mm_cvtsi128_si32(s4));
}
__attribute__((target("avx2")))
static int32_t voxel_avx2_h8(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl) { return voxel_avx2_fused(sp, pre, dA, tv, xl, 1, 0); }
__attribute__((target("avx2")))
static int32_t voxel_avx2_h8q(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl) { return voxel_avx2_fused(sp, pre, dA, tv, xl, 1, 1); }
__attribute__((target("avx2")))
static int32_t voxel_avx2_h16(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl) { return voxel_avx2_fused(sp, pre, dA, tv, xl, 2, 0); }
__attribute__((target("avx2")))
static int32_t voxel_avx2_h16q(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl) { return voxel_avx2_fused(sp, pre, dA, tv, xl, 2, 1); }
#endif

int32_t vox_lstm_voxel(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl, int kernel) {
    kernel = resolve_kernel(kernel);
#if defined(__x86_64__)
    const int H = sp->m->H, pq = sp->m->pq;
    if (kernel == VOX_KERNEL_AVX512VNNI) {
        if (H == 16) return pq ? voxel_vnni_h16q(sp, pre, dA, tv, xl) : voxel_vnni_h16(sp, pre, dA, tv, xl);
        if (H == 32) return pq ? voxel_vnni_h32q(sp, pre, dA, tv, xl) : voxel_vnni_h32(sp, pre, dA, tv, xl);
        return voxel_vnni(sp, pre, dA, tv, xl);
    }
    if (kernel == VOX_KERNEL_AVX2) {
        if (H == 8) return pq ? voxel_avx2_h8q(sp, pre, dA, tv, xl) : voxel_avx2_h8(sp, pre, dA, tv, xl);
        if (H == 16) return pq ? voxel_avx2_h16q(sp, pre, dA, tv, xl) : voxel_avx2_h16(sp, pre, dA, tv, xl);
        return voxel_avx2(sp, pre, dA, tv, xl);
    }
#endif
    return voxel_scalar(sp, pre, dA, tv, xl);
}
