/*
 * The residual model of the slab coder (coder.c): probability sets chosen by activity (the
 * quantised magnitude of neighbouring residuals) and, from format v4, by the prediction's
 * distance to the volume's floor; the binarisation of a residual into the range coder's bits.
 * Private to CVoxKernels; included once, by coder.c, after rangecoder.h.
 */
#ifndef VOX_RESIDUAL_H
#define VOX_RESIDUAL_H
#include "rangecoder.h"

/* ---- residual model ---- */

#define NCTX 24   /* activity contexts */
#define NFLOOR 12 /* v4: distance-to-floor contexts (v1-v3 use the first, 0) */
#define NMCTX (NCTX * NFLOOR) /* probability sets: activity + NCTX * floor distance */
#define KMAX 17   /* largest exponent: |e| < 2^18 covers every 16-bit residual */

typedef struct {
    prob_t zero[NMCTX];
    prob_t sign[NMCTX][9];  /* v1/v2 use sign contexts 0..2, v3 and v4 0..8 */
    prob_t expo[NMCTX][KMAX + 1];
    prob_t mant[NMCTX][KMAX + 1][3];
} model_t;

static void model_init(model_t *m, int stage) {
    const prob_t init = stage >= 2 ? (prob_t)PROB_INIT_COUNTED : (prob_t)PROB_INIT_FIXED;
    prob_t *p = (prob_t *)m;
    for (size_t i = 0; i < sizeof(model_t) / sizeof(prob_t); i++) p[i] = init;
}

static inline int sgn3(int32_t v) { return v > 0 ? 1 : (v < 0 ? 2 : 0); }

/* Binarisation of a residual e (docs/format.md): a zero flag, the sign (in sign context sc),
 * the exponent k = floor(log2 |e|) in unary, the two mantissa bits below the leading one in
 * context, the rest at probability 1/2. The encoder and the decoder of one residual, in
 * probability set c of M. */
static inline void enc_residual(rc_enc *E, model_t *M, int c, int sc, int32_t e) {
    enc_bit(E, &M->zero[c], e == 0);
    if (e == 0) return;
    enc_bit(E, &M->sign[c][sc], e < 0);
    uint32_t m = (uint32_t)(e < 0 ? -e : e);
    int k = 31 - __builtin_clz(m);
    for (int j = 0; j < k; j++) enc_bit(E, &M->expo[c][j], 1);
    if (k < KMAX) enc_bit(E, &M->expo[c][k], 0);
    int node = 0;
    for (int j = k - 1; j >= 0; j--) {
        int bit = (m >> j) & 1;
        if (j >= k - 2) {
            enc_bit(E, &M->mant[c][k][node], bit);
            node = 1 + bit;
        } else enc_bit_p(E, 32768, bit);
    }
    return;
}

static inline int32_t dec_residual(rc_dec *D, model_t *M, int c, int sc) {
    if (dec_bit(D, &M->zero[c])) return 0;
    int neg = dec_bit(D, &M->sign[c][sc]);
    int k = 0;
    while (k < KMAX && dec_bit(D, &M->expo[c][k])) k++;
    uint32_t m = 1;
    int node = 0;
    for (int j = k - 1; j >= 0; j--) {
        int bit;
        if (j >= k - 2) {
            bit = dec_bit_sel(D, &M->mant[c][k][node]);
            node = 1 + bit;
        } else bit = dec_bit_p_sel(D, 32768);
        m = (m << 1) | (uint32_t)bit;
    }
    return neg ? -(int32_t)m : (int32_t)m;
}

static inline int activity_ctx(uint32_t act) {
    if (act == 0) return 0;
    int b = 31 - __builtin_clz(act);
    int q = b == 0 ? 1 : 2 * b + (int)((act >> (b - 1)) & 1); /* 1, 2, 3, 4-5, 6-7, 8-11, ... */
    return q < NCTX ? q : NCTX - 1;
}

/* Format v4: the floor context of a prediction pr, from d = pr - pad (pad = the volume's
 * minimum): 0 for d < 0, else the activity quantiser of d + 1 capped at NFLOOR - 1
 * (d = 0, 1, 2, 3-4, 5-6, 7-10, ..., >= 47). A residual below -d is impossible when pad is
 * the minimum, so near the floor the distribution is one-sided. */
#define FLOOR_FAR 47 /* d >= FLOOR_FAR: the last floor context (activity_ctx(48) = 11 = NFLOOR - 1) */
static inline int floor_ctx(int32_t pr, int32_t pad) {
    const int64_t d = (int64_t)pr - pad;
    if (d < 0) return 0;
    if (d >= FLOOR_FAR) return NFLOOR - 1;
    return activity_ctx((uint32_t)(d + 1));
}

#endif
