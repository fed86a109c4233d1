/*
 * Fixed-point LSTM inference (docs/format.md, "Predictor arithmetic").
 *
 * Number formats: inputs x and hidden state h are int16 Q12; weights int16 Q12; gate
 * pre-activations accumulate in 32-bit two's complement, modulo 2^32 (Q24), then are
 * rounded to Q12; sigmoid/tanh come from the shipped tables (Q14 out, linear
 * interpolation in integers); the cell state is int32 Q14.
 *
 * The matrix-vector products are the only part with SIMD variants; they compute exactly
 * the same modulo-2^32 sums as the scalar reference (integer addition is associative
 * modulo 2^32), so every kernel gives bit-identical predictions.
 */
#include "voxkernels.h"
#include "act_tables.h"
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
    int32_t *Wp;          /* [Kp/2][G]: (W[j][2p], W[j][2p+1]) packed as int16 pairs */
};

vox_model *vox_model_new(int H, int I, int T, const int16_t *W, const int32_t *b,
                         const int16_t *Wo, int32_t bo) {
    if (H < 4 || H > 512 || (H % 4) != 0 || I < 1 || I > 256 || T < 1 || T > 1024) return NULL;
    vox_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->H = H; m->I = I; m->T = T; m->G = 4 * H;
    m->Kp = (I + H + 1) & ~1;
    int K = I + H;
    m->W = calloc((size_t)m->G * m->Kp, sizeof(int16_t));
    m->b = malloc(sizeof(int32_t) * m->G);
    m->Wo = malloc(sizeof(int16_t) * H);
    m->Wp = malloc(sizeof(int32_t) * (size_t)(m->Kp / 2) * m->G);
    if (!m->W || !m->b || !m->Wo || !m->Wp) { vox_model_free(m); return NULL; }
    for (int j = 0; j < m->G; j++) memcpy(m->W + (size_t)j * m->Kp, W + (size_t)j * K, sizeof(int16_t) * K);
    memcpy(m->b, b, sizeof(int32_t) * m->G);
    memcpy(m->Wo, Wo, sizeof(int16_t) * H);
    m->bo = bo;
    for (int p = 0; p < m->Kp / 2; p++)
        for (int j = 0; j < m->G; j++) {
            uint32_t lo = (uint16_t)m->W[(size_t)j * m->Kp + 2 * p];
            uint32_t hi = (uint16_t)m->W[(size_t)j * m->Kp + 2 * p + 1];
            m->Wp[(size_t)p * m->G + j] = (int32_t)(lo | (hi << 16));
        }
    return m;
}

void vox_model_free(vox_model *m) {
    if (!m) return;
    free(m->W); free(m->b); free(m->Wo); free(m->Wp); free(m);
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

#if defined(__x86_64__)
__attribute__((target("avx2")))
static void mv_avx2(const vox_model *m, int n, const int16_t *xh, int32_t *acc) {
    const int G = m->G, P = m->Kp / 2;
    for (int s = 0; s < n; s++) {
        const int32_t *v = (const int32_t *)(const void *)(xh + (size_t)s * m->Kp);
        int32_t *a = acc + (size_t)s * G;
        int j = 0;
        for (; j + 32 <= G; j += 32) {
            __m256i a0 = _mm256_loadu_si256((const __m256i *)(m->b + j));
            __m256i a1 = _mm256_loadu_si256((const __m256i *)(m->b + j + 8));
            __m256i a2 = _mm256_loadu_si256((const __m256i *)(m->b + j + 16));
            __m256i a3 = _mm256_loadu_si256((const __m256i *)(m->b + j + 24));
            for (int p = 0; p < P; p++) {
                int32_t pair; memcpy(&pair, v + p, 4);
                __m256i bx = _mm256_set1_epi32(pair);
                const int32_t *w = m->Wp + (size_t)p * G + j;
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(bx, _mm256_loadu_si256((const __m256i *)w)));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(bx, _mm256_loadu_si256((const __m256i *)(w + 8))));
                a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(bx, _mm256_loadu_si256((const __m256i *)(w + 16))));
                a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(bx, _mm256_loadu_si256((const __m256i *)(w + 24))));
            }
            _mm256_storeu_si256((__m256i *)(a + j), a0);
            _mm256_storeu_si256((__m256i *)(a + j + 8), a1);
            _mm256_storeu_si256((__m256i *)(a + j + 16), a2);
            _mm256_storeu_si256((__m256i *)(a + j + 24), a3);
        }
        for (; j < G; j += 8) { /* G is a multiple of 16 */
            __m256i a0 = _mm256_loadu_si256((const __m256i *)(m->b + j));
            for (int p = 0; p < P; p++) {
                int32_t pair; memcpy(&pair, v + p, 4);
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_set1_epi32(pair),
                                      _mm256_loadu_si256((const __m256i *)(m->Wp + (size_t)p * G + j))));
            }
            _mm256_storeu_si256((__m256i *)(a + j), a0);
        }
    }
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void mv_vnni(const vox_model *m, int n, const int16_t *xh, int32_t *acc) {
    const int G = m->G, P = m->Kp / 2;
    for (int s = 0; s < n; s++) {
        const int32_t *v = (const int32_t *)(const void *)(xh + (size_t)s * m->Kp);
        int32_t *a = acc + (size_t)s * G;
        int j = 0;
        for (; j + 64 <= G; j += 64) {
            __m512i a0 = _mm512_loadu_si512(m->b + j);
            __m512i a1 = _mm512_loadu_si512(m->b + j + 16);
            __m512i a2 = _mm512_loadu_si512(m->b + j + 32);
            __m512i a3 = _mm512_loadu_si512(m->b + j + 48);
            for (int p = 0; p < P; p++) {
                int32_t pair; memcpy(&pair, v + p, 4);
                __m512i bx = _mm512_set1_epi32(pair);
                const int32_t *w = m->Wp + (size_t)p * G + j;
                a0 = _mm512_dpwssd_epi32(a0, bx, _mm512_loadu_si512(w));
                a1 = _mm512_dpwssd_epi32(a1, bx, _mm512_loadu_si512(w + 16));
                a2 = _mm512_dpwssd_epi32(a2, bx, _mm512_loadu_si512(w + 32));
                a3 = _mm512_dpwssd_epi32(a3, bx, _mm512_loadu_si512(w + 48));
            }
            _mm512_storeu_si512(a + j, a0);
            _mm512_storeu_si512(a + j + 16, a1);
            _mm512_storeu_si512(a + j + 32, a2);
            _mm512_storeu_si512(a + j + 48, a3);
        }
        for (; j < G; j += 16) {
            __m512i a0 = _mm512_loadu_si512(m->b + j);
            for (int p = 0; p < P; p++) {
                int32_t pair; memcpy(&pair, v + p, 4);
                a0 = _mm512_dpwssd_epi32(a0, _mm512_set1_epi32(pair), _mm512_loadu_si512(m->Wp + (size_t)p * G + j));
            }
            _mm512_storeu_si512(a + j, a0);
        }
    }
}
#endif

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

/* floor((a + 2^11) / 2^12) without overflow: Q24 accumulator to Q12 */
static inline int32_t q24_to_q12(int32_t a) { return ((a >> 11) + 1) >> 1; }

#define CELL_MAX 65536 /* |c| <= 4.0 in Q14: keeps every product below 2^31 */

/*
 * One LSTM cell update for H units from the gate accumulators a[4H] (Q24):
 *   i, f, o = sigmoid(.), g = tanh(.)       (Q14, from the tables)
 *   c = clamp((f*c + i*g + 2^13) >> 14, +-CELL_MAX)                     (Q14)
 *   h = (o * tanh((c + 2) >> 2) + 2^15) >> 16                           (Q12)
 * All intermediate values fit in int32 (|f*c| <= 2^30, |i*g| <= 2^28).
 */
static void act_scalar(const int32_t *a, int32_t *c, int16_t *h, int H, int j0) {
    for (int j = j0; j < H; j++) {
        int32_t gi = act_lut(vox_sigmoid_q14, q24_to_q12(a[j]));
        int32_t gf = act_lut(vox_sigmoid_q14, q24_to_q12(a[H + j]));
        int32_t gg = act_lut(vox_tanh_q14, q24_to_q12(a[2 * H + j]));
        int32_t go = act_lut(vox_sigmoid_q14, q24_to_q12(a[3 * H + j]));
        int32_t cc = (gf * c[j] + gi * gg + 8192) >> 14;
        if (cc > CELL_MAX) cc = CELL_MAX;
        if (cc < -CELL_MAX) cc = -CELL_MAX;
        c[j] = cc;
        int32_t tc = act_lut(vox_tanh_q14, (cc + 2) >> 2);
        h[j] = (int16_t)((go * tc + 32768) >> 16);
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static inline __m256i lut8(const int32_t *t, __m256i z) {
    z = _mm256_min_epi32(_mm256_max_epi32(z, _mm256_set1_epi32(-32768)), _mm256_set1_epi32(32767));
    __m256i u = _mm256_add_epi32(z, _mm256_set1_epi32(32768));
    __m256i i = _mm256_srai_epi32(u, 6), f = _mm256_and_si256(u, _mm256_set1_epi32(63));
    __m256i t0 = _mm256_i32gather_epi32((const int *)t, i, 4);
    __m256i t1 = _mm256_i32gather_epi32((const int *)t + 1, i, 4);
    __m256i d = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_sub_epi32(t1, t0), f), _mm256_set1_epi32(32));
    return _mm256_add_epi32(t0, _mm256_srai_epi32(d, 6));
}
__attribute__((target("avx2")))
static inline __m256i q12_8(const int32_t *a) {
    __m256i v = _mm256_loadu_si256((const __m256i *)a);
    return _mm256_srai_epi32(_mm256_add_epi32(_mm256_srai_epi32(v, 11), _mm256_set1_epi32(1)), 1);
}
__attribute__((target("avx2")))
static void act_avx2(const int32_t *a, int32_t *c, int16_t *h, int H) {
    int j = 0;
    int32_t hv[8];
    for (; j + 8 <= H; j += 8) {
        __m256i gi = lut8(vox_sigmoid_q14, q12_8(a + j));
        __m256i gf = lut8(vox_sigmoid_q14, q12_8(a + H + j));
        __m256i gg = lut8(vox_tanh_q14, q12_8(a + 2 * H + j));
        __m256i go = lut8(vox_sigmoid_q14, q12_8(a + 3 * H + j));
        __m256i cv = _mm256_loadu_si256((const __m256i *)(c + j));
        __m256i cn = _mm256_add_epi32(_mm256_add_epi32(_mm256_mullo_epi32(gf, cv), _mm256_mullo_epi32(gi, gg)), _mm256_set1_epi32(8192));
        cn = _mm256_srai_epi32(cn, 14);
        cn = _mm256_min_epi32(_mm256_max_epi32(cn, _mm256_set1_epi32(-CELL_MAX)), _mm256_set1_epi32(CELL_MAX));
        _mm256_storeu_si256((__m256i *)(c + j), cn);
        __m256i tc = lut8(vox_tanh_q14, _mm256_srai_epi32(_mm256_add_epi32(cn, _mm256_set1_epi32(2)), 2));
        __m256i hh = _mm256_srai_epi32(_mm256_add_epi32(_mm256_mullo_epi32(go, tc), _mm256_set1_epi32(32768)), 16);
        _mm256_storeu_si256((__m256i *)hv, hh);
        for (int k = 0; k < 8; k++) h[j + k] = (int16_t)hv[k];
    }
    act_scalar(a, c, h, H, j);
}

__attribute__((target("avx512f,avx512bw")))
static inline __m512i lut16(const int32_t *t, __m512i z) {
    z = _mm512_min_epi32(_mm512_max_epi32(z, _mm512_set1_epi32(-32768)), _mm512_set1_epi32(32767));
    __m512i u = _mm512_add_epi32(z, _mm512_set1_epi32(32768));
    __m512i i = _mm512_srai_epi32(u, 6), f = _mm512_and_si512(u, _mm512_set1_epi32(63));
    __m512i t0 = _mm512_i32gather_epi32(i, (const int *)t, 4);
    __m512i t1 = _mm512_i32gather_epi32(i, (const int *)t + 1, 4);
    __m512i d = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_sub_epi32(t1, t0), f), _mm512_set1_epi32(32));
    return _mm512_add_epi32(t0, _mm512_srai_epi32(d, 6));
}
__attribute__((target("avx512f,avx512bw")))
static inline __m512i q12_16(const int32_t *a) {
    __m512i v = _mm512_loadu_si512(a);
    return _mm512_srai_epi32(_mm512_add_epi32(_mm512_srai_epi32(v, 11), _mm512_set1_epi32(1)), 1);
}
__attribute__((target("avx512f,avx512bw")))
static void act_avx512(const int32_t *a, int32_t *c, int16_t *h, int H) {
    int j = 0;
    for (; j + 16 <= H; j += 16) {
        __m512i gi = lut16(vox_sigmoid_q14, q12_16(a + j));
        __m512i gf = lut16(vox_sigmoid_q14, q12_16(a + H + j));
        __m512i gg = lut16(vox_tanh_q14, q12_16(a + 2 * H + j));
        __m512i go = lut16(vox_sigmoid_q14, q12_16(a + 3 * H + j));
        __m512i cv = _mm512_loadu_si512(c + j);
        __m512i cn = _mm512_add_epi32(_mm512_add_epi32(_mm512_mullo_epi32(gf, cv), _mm512_mullo_epi32(gi, gg)), _mm512_set1_epi32(8192));
        cn = _mm512_srai_epi32(cn, 14);
        cn = _mm512_min_epi32(_mm512_max_epi32(cn, _mm512_set1_epi32(-CELL_MAX)), _mm512_set1_epi32(CELL_MAX));
        _mm512_storeu_si512(c + j, cn);
        __m512i tc = lut16(vox_tanh_q14, _mm512_srai_epi32(_mm512_add_epi32(cn, _mm512_set1_epi32(2)), 2));
        __m512i hh = _mm512_srai_epi32(_mm512_add_epi32(_mm512_mullo_epi32(go, tc), _mm512_set1_epi32(32768)), 16);
        _mm256_storeu_si256((__m256i *)(h + j), _mm512_cvtepi32_epi16(hh));
    }
    act_scalar(a, c, h, H, j);
}
#endif

#define CHUNK 64

int vox_lstm_run(const vox_model *m, int n, const int16_t *x, int32_t *y, int kernel) {
    const int H = m->H, I = m->I, T = m->T, Kp = m->Kp, G = m->G;
    int avail = vox_kernels_available();
    if (kernel < 0 || kernel > 2 || !(avail & (1 << kernel))) kernel = VOX_KERNEL_SCALAR;
    int chunk = n < CHUNK ? n : CHUNK;
    if (chunk <= 0) return 0;
    /* one sequence at a time (voxel-serial decoding): scratch on the stack, no allocation */
    int16_t xh1[(256 + 512 + 1) & ~1];
    int32_t acc1[4 * 512], c1[512];
    const int small = chunk == 1;
    int16_t *xh = small ? xh1 : calloc((size_t)chunk * Kp, sizeof(int16_t));
    int32_t *acc = small ? acc1 : malloc(sizeof(int32_t) * (size_t)chunk * G);
    int32_t *c = small ? c1 : malloc(sizeof(int32_t) * (size_t)chunk * H);
    if (!xh || !acc || !c) { if (!small) { free(xh); free(acc); free(c); } return -1; }
    for (int s0 = 0; s0 < n; s0 += chunk) {
        int cn = n - s0 < chunk ? n - s0 : chunk;
        memset(xh, 0, sizeof(int16_t) * (size_t)cn * Kp);
        memset(c, 0, sizeof(int32_t) * (size_t)cn * H);
        for (int t = 0; t < T; t++) {
            for (int s = 0; s < cn; s++)
                memcpy(xh + (size_t)s * Kp, x + ((size_t)(s0 + s) * T + t) * I, sizeof(int16_t) * I);
#if defined(__x86_64__)
            if (kernel == VOX_KERNEL_AVX512VNNI) mv_vnni(m, cn, xh, acc);
            else if (kernel == VOX_KERNEL_AVX2) mv_avx2(m, cn, xh, acc);
            else
#endif
                mv_scalar(m, cn, xh, acc);
            for (int s = 0; s < cn; s++) {
                const int32_t *a = acc + (size_t)s * G;
                int32_t *cs = c + (size_t)s * H;
                int16_t *h = xh + (size_t)s * Kp + I;
#if defined(__x86_64__)
                if (kernel == VOX_KERNEL_AVX512VNNI) act_avx512(a, cs, h, H);
                else if (kernel == VOX_KERNEL_AVX2) act_avx2(a, cs, h, H);
                else
#endif
                    act_scalar(a, cs, h, H, 0);
            }
        }
        for (int s = 0; s < cn; s++) {
            const int16_t *h = xh + (size_t)s * Kp + I;
            uint32_t sum = (uint32_t)m->bo;
            for (int j = 0; j < H; j++) sum += (uint32_t)((int32_t)m->Wo[j] * (int32_t)h[j]);
            y[s0 + s] = (int32_t)sum;
        }
    }
    if (!small) { free(xh); free(acc); free(c); }
    return 0;
}
