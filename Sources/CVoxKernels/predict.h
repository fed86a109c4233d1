/*
 * Prediction in the slab coder (coder.c): the classical predictor (an error-weighted blend of
 * an intra-slice and an inter-slice median predictor, the LSTM's anchor), its row pre-pass, the
 * residual filter's taps, the left-residual correction, and the LSTM's input gathering.
 * Private to CVoxKernels; included once, by coder.c.
 */
#ifndef VOX_PREDICT_H
#define VOX_PREDICT_H
#include "voxkernels.h"
#include <stdlib.h>
#include <string.h>

/* ---- prediction ---- */

#define NALPHA 4

static const int32_t ALPHA[NALPHA] = {0, 2, 4, 6}; /* left-residual correction, in eighths */

/* The candidate with the smallest cost, the first of equal ones: a tournament over values in
 * registers (the same choice as a scan, without a chain of loads through the index). */
_Static_assert(NALPHA == 4, "alpha_best() is written for four candidates");
static inline __attribute__((always_inline)) int alpha_best(const uint32_t *cost) {
    const uint32_t c0 = cost[0], c1 = cost[1], c2 = cost[2], c3 = cost[3];
    const int b01 = c1 < c0 ? 1 : 0, b23 = c3 < c2 ? 3 : 2;
    const uint32_t m01 = c1 < c0 ? c1 : c0, m23 = c3 < c2 ? c3 : c2;
    return m23 < m01 ? b23 : b01;
}

/* Each candidate's cost after a voxel whose residual before the correction was e, the left
 * one's rl: cost += min(|e - corr_k|, 65535) - cost / 32. |e| <= 131071 and |corr_k| < 2^17,
 * so int32 holds every term (four independent lanes the compiler may put in one vector). */
static inline __attribute__((always_inline)) void alpha_update(uint32_t *cost, int32_t e, int32_t rl) {
    for (int k = 0; k < NALPHA; k++) {
        int32_t ek = e - ((rl * ALPHA[k] + 4) >> 3);
        uint32_t a = (uint32_t)(ek < 0 ? -ek : ek);
        cost[k] += (a > 65535 ? 65535 : a) - (cost[k] >> 5);
    }
}

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
    int left;            /* this slice's predictor sees the left voxel */
    size_t ci, pi;       /* offsets of the current / previous slice's plane in eI, eX, res */
    /* the row's terms that do not depend on the row itself (row_prep): */
    int32_t *e1b, *e2b;  /* 1 + the previous slice's and the upper row's errors of each predictor */
    uint32_t *a0, *x0;   /* the activity's upper-row and previous-slice terms; v3's extra ones */
} walk_t;

/* Fills the walk's row terms for row y of slice z: what the classical blend's error sums and the
 * entropy context take from rows above and from the previous slice, for every x at once (loops
 * the compiler vectorises), so the voxel-serial loop adds only the left neighbour's terms. */
static inline __attribute__((always_inline)) void row_prep(walk_t *w, int y, int z, int stage) {
    const int nx = w->p->nx;
    const size_t o = (size_t)y * nx;
    uint32_t *A0 = w->a0, *X0 = w->x0;
    if (y > 0) {
        const int32_t *u = w->res + w->ci + o - nx;
        A0[0] = (uint32_t)iabs(u[0]) + (((uint32_t)iabs(u[0]) + (uint32_t)iabs(u[nx > 1 ? 1 : 0])) >> 1);
        for (int x = 1; x < nx - 1; x++)
            A0[x] = (uint32_t)iabs(u[x]) + (((uint32_t)iabs(u[x - 1]) + (uint32_t)iabs(u[x + 1])) >> 1);
        if (nx > 1) A0[nx - 1] = (uint32_t)iabs(u[nx - 1]) + (((uint32_t)iabs(u[nx - 2]) + (uint32_t)iabs(u[nx - 1])) >> 1);
    } else for (int x = 0; x < nx; x++) A0[x] = 0;
    if (z > 0) {
        const int32_t *pr = w->res + w->pi + o;
        for (int x = 0; x < nx; x++) A0[x] += (uint32_t)iabs(pr[x]);
    }
    if (stage) {
        if (y > 1) { const int32_t *uu = w->res + w->ci + o - 2 * (size_t)nx; for (int x = 0; x < nx; x++) X0[x] = (uint32_t)iabs(uu[x]); }
        else for (int x = 0; x < nx; x++) X0[x] = 0;
        if (z > 0) {
            const int32_t *pr = w->res + w->pi + o;
            for (int x = 1; x < nx; x++) X0[x] += (uint32_t)iabs(pr[x - 1]);
            if (y > 0) { const int32_t *pu = pr - nx; for (int x = 0; x < nx; x++) X0[x] += (uint32_t)iabs(pu[x]); }
        }
    }
    if (z > 0) {
        const int32_t *pI = w->eI + w->pi + o, *pX = w->eX + w->pi + o;
        int32_t *E1 = w->e1b, *E2 = w->e2b;
        for (int x = 0; x < nx; x++) { E1[x] = 1 + pI[x]; E2[x] = 1 + pX[x]; }
        if (y > 0) {
            const int32_t *uI = w->eI + w->ci + o - nx, *uX = w->eX + w->ci + o - nx;
            const int xr0 = nx > 1 ? 1 : 0;
            E1[0] += uI[0] + uI[0] + uI[xr0]; E2[0] += uX[0] + uX[0] + uX[xr0];
            for (int x = 1; x < nx - 1; x++) { E1[x] += uI[x] + uI[x - 1] + uI[x + 1]; E2[x] += uX[x] + uX[x - 1] + uX[x + 1]; }
            if (nx > 1) { E1[nx - 1] += uI[nx - 1] + uI[nx - 2] + uI[nx - 1]; E2[nx - 1] += uX[nx - 1] + uX[nx - 2] + uX[nx - 1]; }
        }
    }
}

/* Classical prediction of (x, y, z); uses only causal voxels. Sets w->p1, w->p2. */
static inline __attribute__((always_inline)) int32_t classical(walk_t *w, int x, int y, int z) {
    const vox_slab_params *p = w->p;
    const int nx = p->nx, ny = p->ny;
    const size_t plane = (size_t)nx * ny;
    const int32_t *cur = w->vox + (size_t)z * plane;
    const int32_t *row = cur + (size_t)y * nx, *up = row - nx;
    const int hasN = y > 0, hasW = w->left && x > 0;
    const int xl = x > 0 ? x - 1 : 0, xr = x < nx - 1 ? x + 1 : nx - 1;
    int32_t p1;
    if (w->left) {
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
    if (w->left) {
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
    const size_t ci = w->ci;
    const size_t o = (size_t)y * nx;
    int64_t E1 = w->e1b[x], E2 = w->e2b[x]; /* row_prep's sums over the previous slice and the upper row */
    if (hasW) { E1 += 2 * w->eI[ci + o + x - 1]; E2 += 2 * w->eX[ci + o + x - 1]; }
    int64_t w1 = E2 * E2, w2 = E1 * E1; /* weight of p1 is 1/E1^2, i.e. E2^2 after scaling */
    int64_t den = w1 + w2;
    int64_t num = (int64_t)p1 * w1 + (int64_t)p2 * w2;
    return clampv(floordiv(2 * num + den, 2 * den), p->vmin, p->vmax);
}

/* Format v3: the residual filter's inputs, the final residuals R around (x, y, z) in tap order
 * W, N, NW, NE, P, WW, PW, PE, PN, NN (0 where the neighbour is outside the slab or slice). */
static inline void lms_taps(const walk_t *w, int32_t *r, int x, int y, int z) {
    const int nx = w->p->nx;
    const int32_t *cur = w->res + w->ci + (size_t)y * nx, *prv = w->res + w->pi + (size_t)y * nx;
    if (x > 1 && x < nx - 1 && y > 1 && z > 0) { /* every tap exists: no tests */
        r[0] = cur[x - 1]; r[1] = cur[x - nx]; r[2] = cur[x - 1 - nx]; r[3] = cur[x + 1 - nx]; r[4] = prv[x];
        r[5] = cur[x - 2]; r[6] = prv[x - 1]; r[7] = prv[x + 1]; r[8] = prv[x - nx]; r[9] = cur[x - 2 * nx];
        return;
    }
    const int xr = x < nx - 1 ? x + 1 : nx - 1;
    r[0] = x > 0 ? cur[x - 1] : 0;
    r[1] = y > 0 ? cur[x - nx] : 0;
    r[2] = y > 0 && x > 0 ? cur[x - 1 - nx] : 0;
    r[3] = y > 0 ? cur[xr - nx] : 0;
    r[4] = z > 0 ? prv[x] : 0;
    r[5] = x > 1 ? cur[x - 2] : 0;
    r[6] = z > 0 && x > 0 ? prv[x - 1] : 0;
    r[7] = z > 0 && x < nx - 1 ? prv[x + 1] : 0;
    r[8] = z > 0 && y > 0 ? prv[x - nx] : 0;
    r[9] = y > 1 ? cur[x - 2 * nx] : 0;
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

#endif
