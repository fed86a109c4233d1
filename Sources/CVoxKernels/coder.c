/*
 * The slab coder (docs/format.md, "Slab coding").
 *
 * One function, code_slab, walks the slab in decode order (slice by slice, row by row,
 * x ascending) for all three uses: encode, decode and predict-only. Sharing the walk is
 * what guarantees that the decoder sees exactly the predictions and contexts the encoder
 * used. Per voxel:
 *   1. classical prediction: blend of an intra-slice MED and an inter-slice MED on slice
 *      differences, weighted by their recent errors (the "anchor");
 *   2. optionally the LSTM: inputs are causal neighbours minus the anchor (normalised),
 *      output a correction added to the anchor. Without left voxels a whole row is one
 *      batch, computed before any residual of that row is coded; with them, the inputs'
 *      share that does not depend on the row is projected for the whole row first and
 *      only the rest is computed per voxel (split_t below);
 *   3. the residual e = v - pred is binarised (zero flag, sign, Elias-gamma exponent in
 *      unary, mantissa) and coded with an adaptive binary range coder; the context is the
 *      quantised magnitude of neighbouring residuals (including the left one, which the
 *      entropy decoder always has).
 */
#include "voxkernels.h"
#include <stdlib.h>
#include <string.h>

/* ---- adaptive binary range coder (LZMA-style carry handling) ---- */

typedef struct { uint16_t a, b; } prob_t; /* two estimates of P(bit = 1), rates 1/16 and 1/128 */

#define PROB_INIT {32768, 32768}

static inline uint32_t prob_get(const prob_t *p) {
    uint32_t v = ((uint32_t)p->a + p->b + 1) >> 1;
    if (v < 64) v = 64;
    if (v > 65472) v = 65472;
    return v;
}
static inline void prob_update(prob_t *p, int bit) {
    int32_t target = bit ? 65535 : 0;
    p->a = (uint16_t)((int32_t)p->a + ((target - (int32_t)p->a) >> 4));
    p->b = (uint16_t)((int32_t)p->b + ((target - (int32_t)p->b) >> 7));
}

typedef struct {
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    uint64_t cache_size;
    uint8_t *buf;
    size_t len, cap;
    int oom;
} rc_enc;

typedef struct {
    uint32_t range, code;
    const uint8_t *p, *end;
} rc_dec;

static void enc_put(rc_enc *e, uint8_t b) {
    if (e->len == e->cap) {
        size_t nc = e->cap ? e->cap * 2 : 65536;
        uint8_t *nb = realloc(e->buf, nc);
        if (!nb) { e->oom = 1; return; }
        e->buf = nb; e->cap = nc;
    }
    e->buf[e->len++] = b;
}

static void enc_shift_low(rc_enc *e) {
    if ((uint32_t)e->low < 0xFF000000u || (e->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(e->low >> 32);
        uint8_t temp = e->cache;
        do { enc_put(e, (uint8_t)(temp + carry)); temp = 0xFF; } while (--e->cache_size != 0);
        e->cache = (uint8_t)(e->low >> 24);
    }
    e->cache_size++;
    e->low = (e->low & 0x00FFFFFFu) << 8;
}

static inline void enc_bit_p(rc_enc *e, uint32_t p1, int bit) {
    uint32_t bound = (e->range >> 16) * p1;
    if (bit) e->range = bound;
    else { e->low += bound; e->range -= bound; }
    while (e->range < (1u << 24)) { e->range <<= 8; enc_shift_low(e); }
}
static inline void enc_bit(rc_enc *e, prob_t *p, int bit) { enc_bit_p(e, prob_get(p), bit); prob_update(p, bit); }

static inline uint8_t dec_byte(rc_dec *d) { return d->p < d->end ? *d->p++ : 0; }

static inline int dec_bit_p(rc_dec *d, uint32_t p1) {
    uint32_t bound = (d->range >> 16) * p1;
    int bit;
    if (d->code < bound) { d->range = bound; bit = 1; }
    else { d->code -= bound; d->range -= bound; bit = 0; }
    while (d->range < (1u << 24)) { d->range <<= 8; d->code = (d->code << 8) | dec_byte(d); }
    return bit;
}
static inline int dec_bit(rc_dec *d, prob_t *p) { int b = dec_bit_p(d, prob_get(p)); prob_update(p, b); return b; }

/* ---- residual model ---- */

#define NCTX 24   /* activity contexts */
#define KMAX 17   /* largest exponent: |e| < 2^18 covers every 16-bit residual */

typedef struct {
    prob_t zero[NCTX];
    prob_t sign[NCTX][3];
    prob_t expo[NCTX][KMAX + 1];
    prob_t mant[NCTX][KMAX + 1][3];
} model_t;

static void model_init(model_t *m) {
    prob_t init = PROB_INIT;
    prob_t *p = (prob_t *)m;
    for (size_t i = 0; i < sizeof(model_t) / sizeof(prob_t); i++) p[i] = init;
}

typedef struct {
    int mode; /* 0 encode, 1 decode, 2 predict only */
    rc_enc enc;
    rc_dec dec;
    model_t model;
} coder_t;

/* Codes (or decodes) residual e in context c, sign context sc. Returns e. */
static inline int32_t code_residual(coder_t *C, int c, int sc, int32_t e) {
    model_t *M = &C->model;
    if (C->mode == 0) {
        rc_enc *E = &C->enc;
        enc_bit(E, &M->zero[c], e == 0);
        if (e == 0) return 0;
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
        return e;
    } else {
        rc_dec *D = &C->dec;
        if (dec_bit(D, &M->zero[c])) return 0;
        int neg = dec_bit(D, &M->sign[c][sc]);
        int k = 0;
        while (k < KMAX && dec_bit(D, &M->expo[c][k])) k++;
        uint32_t m = 1;
        int node = 0;
        for (int j = k - 1; j >= 0; j--) {
            int bit;
            if (j >= k - 2) {
                bit = dec_bit(D, &M->mant[c][k][node]);
                node = 1 + bit;
            } else bit = dec_bit_p(D, 32768);
            m = (m << 1) | (uint32_t)bit;
        }
        return neg ? -(int32_t)m : (int32_t)m;
    }
}

static inline int activity_ctx(uint32_t act) {
    if (act == 0) return 0;
    int b = 31 - __builtin_clz(act);
    int q = b == 0 ? 1 : 2 * b + (int)((act >> (b - 1)) & 1); /* 1, 2, 3, 4-5, 6-7, 8-11, ... */
    return q < NCTX ? q : NCTX - 1;
}

/* ---- prediction ---- */

#define NALPHA 4
static const int32_t ALPHA[NALPHA] = {0, 2, 4, 6}; /* left-residual correction, in eighths */

static inline int32_t med(int32_t a, int32_t b, int32_t c) {
    int32_t mx = a > b ? a : b, mn = a < b ? a : b;
    if (c >= mx) return mn;
    if (c <= mn) return mx;
    return a + b - c;
}
static inline int32_t median3(int32_t a, int32_t b, int32_t c) {
    int32_t mx = a > b ? a : b, mn = a < b ? a : b;
    return c > mx ? mx : (c < mn ? mn : c);
}
static inline int32_t iabs(int32_t v) { return v < 0 ? -v : v; }
static inline int32_t clampv(int64_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : (int32_t)v); }
static inline int64_t floordiv(int64_t a, int64_t b) { int64_t q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q; }

typedef struct {
    const vox_slab_params *p;
    int32_t *vox;        /* slab voxels (filled progressively when decoding) */
    int32_t *eI, *eX;    /* [2][ny][nx] abs errors of the intra / inter predictors */
    int32_t *res;        /* [2][ny][nx] residuals of the final prediction */
    int32_t p1, p2;      /* last intra / inter predictions */
    int has_inter;
} walk_t;

/* Classical prediction of (x, y, z); uses only causal voxels. Sets w->p1, w->p2. */
static inline int32_t classical(walk_t *w, int x, int y, int z) {
    const vox_slab_params *p = w->p;
    const int nx = p->nx, ny = p->ny;
    const size_t plane = (size_t)nx * ny;
    const int32_t *cur = w->vox + (size_t)z * plane;
    const int32_t *row = cur + (size_t)y * nx, *up = row - nx;
    const int hasN = y > 0, hasW = p->left && x > 0;
    const int xl = x > 0 ? x - 1 : 0, xr = x < nx - 1 ? x + 1 : nx - 1;
    int32_t p1;
    if (p->left) {
        if (hasN && hasW) p1 = med(row[x - 1], up[x], up[xl]);
        else if (hasW) p1 = row[x - 1];
        else if (hasN) p1 = up[x];
        else p1 = p->pad;
    } else p1 = hasN ? up[x] : p->pad;
    w->p1 = p1;
    w->has_inter = z > 0;
    if (z == 0) { w->p2 = p1; return clampv(p1, p->vmin, p->vmax); }
    const int32_t *prev = cur - plane;
    const int32_t *prow = prev + (size_t)y * nx, *pup = prow - nx;
    int32_t P = prow[x], p2;
    if (p->left) {
        if (hasN && hasW) p2 = P + med(row[x - 1] - prow[x - 1], up[x] - pup[x], up[xl] - pup[xl]);
        else if (hasW) p2 = P + row[x - 1] - prow[x - 1];
        else if (hasN) p2 = P + up[x] - pup[x];
        else p2 = P;
    } else {
        if (hasN) p2 = P + median3(up[x] - pup[x], up[xl] - pup[xl], up[xr] - pup[xr]);
        else p2 = P;
    }
    w->p2 = p2;
    /* error-weighted blend: weights 1/E^2 with E the summed recent errors */
    const size_t ci = (size_t)(z & 1) * plane, pi = (size_t)((z - 1) & 1) * plane;
    const size_t o = (size_t)y * nx;
    int64_t E1 = 1 + w->eI[pi + o + x], E2 = 1 + w->eX[pi + o + x];
    if (hasN) {
        const size_t u = o - nx;
        E1 += w->eI[ci + u + x] + w->eI[ci + u + xl] + w->eI[ci + u + xr];
        E2 += w->eX[ci + u + x] + w->eX[ci + u + xl] + w->eX[ci + u + xr];
    }
    if (hasW) { E1 += 2 * w->eI[ci + o + x - 1]; E2 += 2 * w->eX[ci + o + x - 1]; }
    int64_t w1 = E2 * E2, w2 = E1 * E1; /* weight of p1 is 1/E1^2, i.e. E2^2 after scaling */
    int64_t den = w1 + w2;
    int64_t num = (int64_t)p1 * w1 + (int64_t)p2 * w2;
    return clampv(floordiv(2 * num + den, 2 * den), p->vmin, p->vmax);
}

static inline void gather(const vox_slab_params *p, const int32_t *vox, int T, int I, int x, int y, int z,
                          int32_t anchor, int16_t *X) {
    const int nx = p->nx, ny = p->ny, r = p->norm_shift;
    memset(X, 0, sizeof(int16_t) * (size_t)T * I);
    for (int i = 0; i < p->n_nb; i++) {
        int xx = x + p->nb_dx[i], yy = y + p->nb_dy[i], zz = z + p->nb_dz[i];
        int32_t v = (xx >= 0 && xx < nx && yy >= 0 && yy < ny && zz >= 0)
                        ? vox[((size_t)zz * ny + yy) * nx + xx] : anchor;
        int64_t d = (int64_t)v - anchor;
        int64_t s = r <= 12 ? d * ((int64_t)1 << (12 - r)) : ((d + ((int64_t)1 << (r - 13))) >> (r - 12));
        X[p->nb_slot[i]] = (int16_t)(s > 32767 ? 32767 : (s < -32767 ? -32767 : s));
    }
}

/* Where a slab's neighbours are, for voxels away from its x/y edges (no bounds checks). */
typedef struct {
    int on;                   /* neighbours in slice order (dz ascending): the fast gathers apply */
    int dxmin, dxmax, dymin, dymax;
    ptrdiff_t *off;           /* [n_nb] dz * plane + dy * nx + dx */
} nbgeo_t;

static int nbgeo_init(nbgeo_t *g, const vox_slab_params *p) {
    memset(g, 0, sizeof *g);
    if (!p->model) return 1;
    g->off = malloc(sizeof(ptrdiff_t) * (size_t)p->n_nb);
    if (!g->off) return 0;
    g->on = 1;
    for (int i = 0; i < p->n_nb; i++) {
        int dx = p->nb_dx[i], dy = p->nb_dy[i], dz = p->nb_dz[i];
        g->off[i] = ((ptrdiff_t)dz * p->ny + dy) * p->nx + dx;
        if (i == 0 || dx < g->dxmin) g->dxmin = dx;
        if (i == 0 || dx > g->dxmax) g->dxmax = dx;
        if (i == 0 || dy < g->dymin) g->dymin = dy;
        if (i == 0 || dy > g->dymax) g->dymax = dy;
        if (i > 0 && dz < p->nb_dz[i - 1]) g->on = 0;
    }
    return 1;
}

/* First neighbour whose slice exists at slice z (the earlier ones are missing: input 0). */
static inline int nbgeo_first(const vox_slab_params *p, int z) {
    int k = 0;
    while (k < p->n_nb && z + p->nb_dz[k] < 0) k++;
    return k;
}

static inline int nbgeo_inside(const nbgeo_t *g, const vox_slab_params *p, int x, int y) {
    return g->on && x + g->dxmin >= 0 && x + g->dxmax < p->nx && y + g->dymin >= 0 && y + g->dymax < p->ny;
}

/* gather() for a voxel inside the x/y edges: the same inputs (in-bounds neighbours from k0 on). */
static inline void gather_inside(const vox_slab_params *p, const nbgeo_t *g, const int32_t *at, int k0, int T, int I,
                                 int32_t anchor, int16_t *X) {
    const int r = p->norm_shift;
    memset(X, 0, sizeof(int16_t) * (size_t)T * I);
    if (r > 12) {
        for (int i = k0; i < p->n_nb; i++) {
            int64_t d = (int64_t)at[g->off[i]] - anchor;
            int64_t s = (d + ((int64_t)1 << (r - 13))) >> (r - 12);
            X[p->nb_slot[i]] = (int16_t)(s > 32767 ? 32767 : (s < -32767 ? -32767 : s));
        }
        return;
    }
    const int sh = 12 - r; /* |d| < 2^17, so d << sh fits in int32 */
    for (int i = k0; i < p->n_nb; i++) {
        int32_t s = (at[g->off[i]] - anchor) * (1 << sh);
        X[p->nb_slot[i]] = (int16_t)(s > 32767 ? 32767 : (s < -32767 ? -32767 : s));
    }
}

static inline int32_t lstm_pred(const vox_slab_params *p, int32_t anchor, int32_t y) {
    int s = p->out_shift;
    int64_t delta = ((int64_t)y + ((int64_t)1 << (s - 1))) >> s;
    return clampv((int64_t)anchor + delta, p->vmin, p->vmax);
}

static int check_params(const vox_slab_params *p) {
    if (p->nx < 1 || p->ny < 1 || p->nz < 1 || p->vmin > p->vmax) return 0;
    if ((int64_t)p->vmax - p->vmin > 65535 || p->vmin < -65536 || p->vmax > 65535) return 0;
    if (p->pad < p->vmin || p->pad > p->vmax) return 0;
    if (p->model) {
        if (p->norm_shift < 0 || p->norm_shift > 20 || p->out_shift < 1 || p->out_shift > 40) return 0;
        if (p->n_nb < 1 || !p->nb_dx || !p->nb_dy || !p->nb_dz || !p->nb_slot) return 0;
    }
    return 1;
}


static int nb_causal(const vox_slab_params *p, int T, int I) {
    for (int i = 0; i < p->n_nb; i++) {
        int dx = p->nb_dx[i], dy = p->nb_dy[i], dz = p->nb_dz[i];
        int ok = dz < 0 || (dz == 0 && (dy < 0 || (dy == 0 && dx < 0 && p->left)));
        if (!ok || p->nb_slot[i] < 0 || p->nb_slot[i] >= T * I) return 0;
    }
    return 1;
}

/*
 * The split path for predictors with left voxels (docs/design.md, "LSTM work split by
 * dependency"). Every LSTM input is x_k = sat((v_k - a) << s), s = 12 - r, with a the anchor,
 * which depends on the left voxel. For a voxel whose neighbours are all inside the slab (in x
 * and y) and within L = 32767 >> s of the anchor (no saturation), x_k = ((v_k - R) << s) -
 * ((a - R) << s) exactly, for any R; with R a neighbour known before the row (the voxel
 * above), the first term of every non-left input, and so its share of every step's
 * pre-activation, is projected for the whole row in one batch before the row is coded.
 * Per voxel remain dA = (a - R) << s, the left columns, W_h h, the activations and the output
 * (vox_lstm_voxel). Any other voxel (edges, saturated inputs, r > 12) takes the monolithic
 * path, which defines the result; both give identical predictions.
 */
typedef struct {
    int on;
    int s, L;                 /* input shift and the largest |v - a| that does not saturate */
    int T, I, G;
    int ref;                  /* neighbour used as R (on the current slice) */
    int *stepdz;              /* [T] the slice offset of each step (one per step) */
    int nl, *left;            /* left neighbours, in neighbour order */
    int nn, *nonleft;         /* the others */
    vox_lstm_split *sp;
    int16_t *D;               /* [nx][T][I] (v - R) << s of the row's split voxels */
    int32_t *pre;             /* [nx][T][G] their projections */
    int32_t *R, *mn, *mx, *idx; /* per x: R, min and max projected neighbour, index into D (-1: monolithic) */
} split_t;

static void split_free(split_t *S) {
    free(S->stepdz); free(S->left); free(S->nonleft); vox_split_free(S->sp);
    free(S->D); free(S->pre); free(S->R); free(S->mn); free(S->mx); free(S->idx);
}

/* Sets up the split path when it applies; returns 0 on allocation failure. */
static int split_init(split_t *S, const vox_slab_params *p, int T, int I, int H) {
    memset(S, 0, sizeof *S);
    if (!p->model || !p->left || p->reference || p->norm_shift > 12) return 1;
    const int n = p->n_nb, nx = p->nx;
    /* a row's projections must stay small (a wide slab with a large model, e.g. from an
     * untrusted stream's embedded model): beyond 32 MiB the monolithic path does it all */
    if ((uint64_t)nx * T * 4 * H * sizeof(int32_t) > ((uint64_t)32 << 20)) return 1;
    S->T = T; S->I = I; S->G = 4 * H;
    S->s = 12 - p->norm_shift; S->L = 32767 >> S->s;
    S->stepdz = malloc(sizeof(int) * T);
    S->left = malloc(sizeof(int) * n); S->nonleft = malloc(sizeof(int) * n);
    uint8_t *isl = malloc((size_t)n);
    if (!S->stepdz || !S->left || !S->nonleft || !isl) { free(isl); return 0; }
    for (int t = 0; t < T; t++) S->stepdz[t] = 1;
    S->ref = -1;
    int refd = 1 << 30;
    for (int i = 0; i < n; i++) {
        int dx = p->nb_dx[i], dy = p->nb_dy[i], dz = p->nb_dz[i], t = p->nb_slot[i] / I;
        if (S->stepdz[t] == 1) S->stepdz[t] = dz;
        else if (S->stepdz[t] != dz) { free(isl); return 1; } /* a step mixing slices: monolithic */
        isl[i] = dz == 0 && dy == 0;
        if (isl[i]) S->left[S->nl++] = i; else S->nonleft[S->nn++] = i;
        int d = (dx < 0 ? -dx : dx) + (dy < 0 ? -dy : dy);
        if (dz == 0 && !isl[i] && d < refd) { refd = d; S->ref = i; }
    }
    for (int t = 1; t < T; t++)
        if (S->stepdz[t] == 1 || S->stepdz[t] < S->stepdz[t - 1]) { free(isl); return 1; }
    if (S->ref < 0 || S->stepdz[T - 1] != 0) { free(isl); return 1; }
    S->sp = vox_split_new(p->model, n, p->nb_slot, isl);
    free(isl);
    S->D = malloc(sizeof(int16_t) * (size_t)nx * T * I);
    S->pre = malloc(sizeof(int32_t) * (size_t)nx * T * S->G);
    S->R = malloc(sizeof(int32_t) * nx); S->mn = malloc(sizeof(int32_t) * nx);
    S->mx = malloc(sizeof(int32_t) * nx); S->idx = malloc(sizeof(int32_t) * nx);
    if (!S->sp || !S->D || !S->pre || !S->R || !S->mn || !S->mx || !S->idx) return 0;
    S->on = 1;
    return 1;
}

/* First step whose slice exists (z + dz >= 0); earlier steps have all-zero inputs. */
static inline int split_tv(const split_t *S, int z) {
    int t = 0;
    while (t < S->T && z + S->stepdz[t] < 0) t++;
    return t;
}

/* Batch phase of row (y, z): everything that does not depend on the row's own voxels. */
static void split_row(split_t *S, const vox_slab_params *p, const nbgeo_t *g, const int32_t *vox, int y, int z, int kernel) {
    const int nx = p->nx, T = S->T, I = S->I, sh = S->s;
    const int32_t *rowp = vox + ((size_t)z * p->ny + y) * nx;
    const ptrdiff_t roff = g->off[S->ref];
    int k0 = 0; /* first projected neighbour whose slice exists */
    while (k0 < S->nn && z + p->nb_dz[S->nonleft[k0]] < 0) k0++;
    int cnt = 0;
    for (int x = 0; x < nx; x++) {
        S->idx[x] = -1;
        if (!nbgeo_inside(g, p, x, y)) continue;
        const int32_t *at = rowp + x;
        const int32_t R = at[roff];
        int32_t lo = R, hi = R;
        int16_t *D = S->D + (size_t)cnt * T * I;
        memset(D, 0, sizeof(int16_t) * (size_t)T * I);
        for (int k = k0; k < S->nn; k++) {
            int i = S->nonleft[k];
            int32_t v = at[g->off[i]];
            lo = v < lo ? v : lo; hi = v > hi ? v : hi;
            D[p->nb_slot[i]] = (int16_t)((v - R) * (1 << sh));
        }
        if (hi - R > S->L || R - lo > S->L) continue; /* (v - R) << s would not fit in int16 */
        S->R[x] = R; S->mn[x] = lo; S->mx[x] = hi; S->idx[x] = cnt++;
    }
    if (cnt > 0) vox_lstm_input_proj(p->model, cnt * T, S->D, (size_t)I, S->pre, kernel);
}

/* The split prediction of voxel x with anchor a; 0 if it does not apply (monolithic then). */
static inline int split_voxel(const split_t *S, const vox_slab_params *p, const int32_t *row, int x, int32_t a, int tv,
                              int kernel, int32_t *yv) {
    int k = S->idx[x];
    if (k < 0 || a - S->mn[x] > S->L || S->mx[x] - a > S->L) return 0;
    int16_t xl[64];
    for (int l = 0; l < S->nl && l < 64; l++) {
        int32_t d = row[x + p->nb_dx[S->left[l]]] - a;
        if (d > S->L || d < -S->L) return 0;
        xl[l] = (int16_t)(d * (1 << S->s));
    }
    if (S->nl > 64) return 0;
    int32_t dA = (int32_t)((uint32_t)(a - S->R[x]) << S->s);
    *yv = vox_lstm_voxel(S->sp, S->pre + (size_t)k * S->T * S->G, dA, tv, xl, kernel);
    return 1;
}

static int code_slab(const vox_slab_params *p, int32_t *vox, coder_t *C, int32_t *anchor_out, int32_t *pred_out) {
    if (!check_params(p)) return VOX_ERR_PARAM;
    const int nx = p->nx, ny = p->ny, nz = p->nz;
    const size_t plane = (size_t)nx * ny;
    int I = 0, T = 0, H = 0;
    if (p->model) {
        vox_model_shape(p->model, &H, &I, &T);
        if (!nb_causal(p, T, I)) return VOX_ERR_PARAM;
    }
    walk_t w = {0};
    w.p = p; w.vox = vox;
    w.eI = calloc(2 * plane, sizeof(int32_t));
    w.eX = calloc(2 * plane, sizeof(int32_t));
    w.res = calloc(2 * plane, sizeof(int32_t));
    int32_t *anch = malloc(sizeof(int32_t) * nx), *p1s = malloc(sizeof(int32_t) * nx),
            *p2s = malloc(sizeof(int32_t) * nx), *preds = malloc(sizeof(int32_t) * nx);
    int32_t *ys = malloc(sizeof(int32_t) * nx);
    int16_t *X = p->model ? malloc(sizeof(int16_t) * (size_t)nx * T * I) : NULL;
    /* LSTM scratch, once per slab: the row batch (no left voxels) or one voxel */
    void *ws = p->model ? malloc(vox_lstm_workspace_size(p->model, p->left ? 1 : nx)) : NULL;
    split_t S;
    nbgeo_t geo;
    int geo_ok = nbgeo_init(&geo, p);
    int split_ok = split_init(&S, p, T, I, H) && geo_ok;
    int rc = VOX_OK;
    if (!w.eI || !w.eX || !w.res || !anch || !p1s || !p2s || !preds || !ys || (p->model && (!X || !ws)) || !split_ok) { rc = VOX_ERR_NOMEM; goto done; }
    const int batch = p->model && !p->left;
    int32_t lastbase_res = 0;
    int64_t nsplit = 0, nmono = 0;
    uint32_t alpha_cost[NCTX][NALPHA];
    memset(alpha_cost, 0, sizeof alpha_cost);

    for (int z = 0; z < nz && rc == VOX_OK; z++) {
        const size_t ci = (size_t)(z & 1) * plane, pi = (size_t)((z - 1) & 1) * plane;
        for (int y = 0; y < ny && rc == VOX_OK; y++) {
            int32_t *row = vox + (size_t)z * plane + (size_t)y * nx;
            const size_t o = (size_t)y * nx;
            const int tv = S.on ? split_tv(&S, z) : 0;
            if (S.on) split_row(&S, p, &geo, vox, y, z, p->kernel);
            const int k0 = geo.on ? nbgeo_first(p, z) : 0;
            if (batch) {
                for (int x = 0; x < nx; x++) {
                    anch[x] = classical(&w, x, y, z);
                    p1s[x] = w.p1; p2s[x] = w.p2;
                    if (nbgeo_inside(&geo, p, x, y)) gather_inside(p, &geo, row + x, k0, T, I, anch[x], X + (size_t)x * T * I);
                    else gather(p, vox, T, I, x, y, z, anch[x], X + (size_t)x * T * I);
                }
                if (vox_lstm_run_ws(p->model, nx, X, ys, p->reference ? VOX_KERNEL_SCALAR : p->kernel, ws) != 0) { rc = VOX_ERR_NOMEM; break; }
                for (int x = 0; x < nx; x++) preds[x] = lstm_pred(p, anch[x], ys[x]);
            }
            for (int x = 0; x < nx; x++) {
                int32_t a, pr, q1, q2;
                if (batch) { a = anch[x]; q1 = p1s[x]; q2 = p2s[x]; pr = preds[x]; }
                else {
                    a = classical(&w, x, y, z); q1 = w.p1; q2 = w.p2;
                    pr = a;
                    if (p->model) {
                        int32_t yv;
                        if (S.on && split_voxel(&S, p, row, x, a, tv, p->kernel, &yv)) nsplit++;
                        else {
                            nmono++;
                            if (nbgeo_inside(&geo, p, x, y)) gather_inside(p, &geo, row + x, k0, T, I, a, X);
                            else gather(p, vox, T, I, x, y, z, a, X);
                            if (vox_lstm_run_ws(p->model, 1, X, &yv, p->reference ? VOX_KERNEL_SCALAR : p->kernel, ws) != 0) { rc = VOX_ERR_NOMEM; break; }
                        }
                        pr = lstm_pred(p, a, yv);
                    }
                }
                /* entropy context from neighbouring residuals (left one included) */
                uint32_t act = 0;
                int sc = 0;
                if (x > 0) {
                    int32_t rw = w.res[ci + o + x - 1];
                    act += 2 * (uint32_t)iabs(rw);
                    sc = rw > 0 ? 1 : (rw < 0 ? 2 : 0);
                }
                if (y > 0) {
                    const size_t u = o - nx;
                    act += (uint32_t)iabs(w.res[ci + u + x]);
                    act += ((uint32_t)iabs(w.res[ci + u + (x > 0 ? x - 1 : x)]) + (uint32_t)iabs(w.res[ci + u + (x < nx - 1 ? x + 1 : x)])) >> 1;
                }
                if (z > 0) act += (uint32_t)iabs(w.res[pi + o + x]);
                if (z > 0) act += (uint32_t)iabs(q1 - q2) >> 1;
                int c = activity_ctx(act);
                /* left-residual correction: without left voxels the predictor never saw the
                 * voxel to its left, but the coder has it; add alpha * (its residual), alpha
                 * the candidate with the smallest recent error (identical in the decoder). */
                int32_t rl = 0, base = pr;
                if (!p->left && x > 0) {
                    rl = lastbase_res;
                    int best = 0;
                    for (int k = 1; k < NALPHA; k++) if (alpha_cost[c][k] < alpha_cost[c][best]) best = k;
                    pr = clampv((int64_t)pr + (((int64_t)rl * ALPHA[best] + 4) >> 3), p->vmin, p->vmax);
                }
                int32_t v;
                if (C->mode == 0) {
                    v = row[x];
                    code_residual(C, c, sc, v - pr);
                    if (C->enc.oom) { rc = VOX_ERR_NOMEM; break; }
                } else if (C->mode == 1) {
                    int64_t vv = (int64_t)pr + code_residual(C, c, sc, 0);
                    if (vv < p->vmin || vv > p->vmax) { rc = VOX_ERR_CORRUPT; break; }
                    v = (int32_t)vv;
                    row[x] = v;
                } else {
                    v = row[x];
                    if (anchor_out) anchor_out[(size_t)z * plane + o + x] = a;
                    if (pred_out) pred_out[(size_t)z * plane + o + x] = pr;
                }
                if (!p->left && x > 0)
                    for (int k = 0; k < NALPHA; k++) {
                        int64_t ek = (int64_t)v - base - (((int64_t)rl * ALPHA[k] + 4) >> 3);
                        alpha_cost[c][k] += (uint32_t)(ek < 0 ? (-ek > 65535 ? 65535 : -ek) : ek > 65535 ? 65535 : ek) - (alpha_cost[c][k] >> 5);
                    }
                w.eI[ci + o + x] = iabs(v - q1);
                w.eX[ci + o + x] = iabs(v - q2);
                w.res[ci + o + x] = v - pr;
                lastbase_res = v - base;
            }
        }
    }
done:
    if (p->stats) { p->stats[0] = nsplit; p->stats[1] = nmono; }
    free(w.eI); free(w.eX); free(w.res); free(anch); free(p1s); free(p2s); free(preds); free(ys); free(X); free(ws);
    split_free(&S);
    free(geo.off);
    return rc;
}

int64_t vox_encode_slab(const vox_slab_params *p, const int32_t *vox, uint8_t **out) {
    *out = NULL;
    if (!check_params(p)) return VOX_ERR_PARAM;
    size_t n = (size_t)p->nx * p->ny * p->nz;
    for (size_t i = 0; i < n; i++)
        if (vox[i] < p->vmin || vox[i] > p->vmax) return VOX_ERR_RANGE;
    coder_t *C = malloc(sizeof *C);
    if (!C) return VOX_ERR_NOMEM;
    memset(C, 0, sizeof *C);
    C->mode = 0;
    C->enc.range = 0xFFFFFFFFu;
    C->enc.cache_size = 1;
    model_init(&C->model);
    int rc = code_slab(p, (int32_t *)vox, C, NULL, NULL); /* vox is only read in encode mode */
    if (rc == VOX_OK) for (int i = 0; i < 5; i++) enc_shift_low(&C->enc);
    if (rc == VOX_OK && C->enc.oom) rc = VOX_ERR_NOMEM;
    if (rc != VOX_OK) { free(C->enc.buf); free(C); return rc; }
    *out = C->enc.buf;
    int64_t len = (int64_t)C->enc.len;
    free(C);
    return len;
}

int vox_decode_slab(const vox_slab_params *p, const uint8_t *in, size_t len, int32_t *vox) {
    if (!check_params(p)) return VOX_ERR_PARAM;
    coder_t *C = malloc(sizeof *C);
    if (!C) return VOX_ERR_NOMEM;
    memset(C, 0, sizeof *C);
    C->mode = 1;
    C->dec.p = in; C->dec.end = in + len;
    C->dec.range = 0xFFFFFFFFu;
    for (int i = 0; i < 5; i++) C->dec.code = (C->dec.code << 8) | dec_byte(&C->dec);
    model_init(&C->model);
    int rc = code_slab(p, vox, C, NULL, NULL);
    free(C);
    return rc;
}

int vox_predict_slab(const vox_slab_params *p, const int32_t *vox, int32_t *anchor, int32_t *pred) {
    coder_t *C = malloc(sizeof *C);
    if (!C) return VOX_ERR_NOMEM;
    memset(C, 0, sizeof *C);
    C->mode = 2;
    int rc = code_slab(p, (int32_t *)vox, C, anchor, pred);
    free(C);
    return rc;
}

int vox_gather_inputs(const vox_slab_params *p, int T, int I, const int32_t *vox,
                      const int64_t *index, int64_t count, int16_t *x, int32_t *anchor) {
    if (T < 1 || I < 1) return VOX_ERR_PARAM;
    vox_slab_params q = *p;
    q.model = NULL;
    if (!check_params(&q) || p->n_nb < 1 || !nb_causal(p, T, I)) return VOX_ERR_PARAM;
    const size_t n = (size_t)p->nx * p->ny * p->nz, plane = (size_t)p->nx * p->ny;
    int32_t *anch = malloc(sizeof(int32_t) * n);
    if (!anch) return VOX_ERR_NOMEM;
    int rc = vox_predict_slab(&q, vox, anch, NULL);
    if (rc == VOX_OK) {
        for (int64_t k = 0; k < count; k++) {
            int64_t idx = index[k];
            if (idx < 0 || (size_t)idx >= n) { rc = VOX_ERR_PARAM; break; }
            int z = (int)(idx / plane), y = (int)((idx % plane) / p->nx), xx = (int)(idx % p->nx);
            gather(p, vox, T, I, xx, y, z, anch[idx], x + (size_t)k * T * I);
            if (anchor) anchor[k] = anch[idx];
        }
    }
    free(anch);
    return rc;
}
