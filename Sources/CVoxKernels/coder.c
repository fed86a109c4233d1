/*
 * The slab coder (docs/format.md, "Slab coding"), split by role as CharLS splits JPEG-LS:
 *   rangecoder.h       the adaptive binary range coder (bits in, bits out);
 *   residual.h         the residual model: probability sets by context, a residual's binarisation;
 *   predict.h          prediction: the classical predictor, its row pre-pass, the residual
 *                      filter's taps, the left-residual correction, the LSTM's inputs;
 *   code_slice_body.h  the walk that ties them, compiled once per use (encode, decode,
 *                      predict-only) and per build (generic, AVX2): one walk shared by all uses
 *                      is what guarantees the decoder sees exactly the encoder's predictions and
 *                      contexts, and compiling it per use leaves no mode switch in the loops;
 *   this file          the slab and slice drivers (formats v1 and v2-v4), the threads of the
 *                      slice wavefront, and the LSTM split by dependency (split_t).
 * The walk visits the slab in decode order (slice by slice, row by row, x ascending). Per voxel:
 *   1. classical prediction: blend of an intra-slice MED and an inter-slice MED on slice
 *      differences, weighted by their recent errors (the "anchor");
 *   2. optionally the LSTM: inputs are causal neighbours minus the anchor (normalised),
 *      output a correction added to the anchor. Without left voxels a whole row is one
 *      batch, computed before any residual of that row is coded; with them, the inputs'
 *      share that does not depend on the row is projected for the whole row first and
 *      only the rest is computed per voxel (split_t below);
 *   3. format v3 (stage 1), slices with left voxels: a sign-sign LMS filter over ten
 *      neighbouring residuals adds the bias the predictor leaves in the neighbourhood;
 *   4. the residual e = v - pred is binarised (zero flag, sign, Elias-gamma exponent in
 *      unary, mantissa) and coded with an adaptive binary range coder; the context is the
 *      quantised magnitude of neighbouring residuals (including the left one, which the
 *      entropy decoder always has; v3 adds four more), the sign context the signs of the left
 *      (and, in v3, upper) residual; format v4 (stage 2) crosses the context with how far the
 *      prediction lies above the volume's minimum (the header's pad), where a residual's
 *      distribution is cut off below (MR background, zero-filled templates).
 */
#include "voxkernels.h"
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "rangecoder.h"
#include "residual.h"
#include "predict.h"

/* ---- the coder state a slice leaves to the next ---- */


/* What a slice's coding leaves to the next: the adaptive probabilities and the alpha costs
 * (format v1: one state runs through the whole slab; v2: each slice starts from a copy of
 * the previous slice's state after its first state_rows rows). */
#define NLMS 10          /* v3: taps of the residual filter */
#define LMS_Q 20         /* v3: weights are Q20, |w| <= 1 */
#define LMS_MAX (1 << LMS_Q)
#define LMS_MU_LSTM 512  /* v3: weight step on slices the LSTM predicts (1/2048) */
#define LMS_MU_CLASS 8   /* v3: weight step on slices the classical predictor predicts (1/131072) */

typedef struct {
    model_t model;
    uint32_t alpha_cost[NCTX][NALPHA];
    int32_t lms[NLMS];   /* v3: residual filter weights, Q20, |w| <= 1 */
} cstate_t;

static void cstate_init(cstate_t *s, int stage) {
    model_init(&s->model, stage);
    memset(s->alpha_cost, 0, sizeof s->alpha_cost);
    memset(s->lms, 0, sizeof s->lms);
}

typedef struct {
    int mode; /* 0 encode, 1 decode, 2 predict only */
    rc_enc enc;
    rc_dec dec;
    cstate_t st;
} coder_t;


static int check_params(const vox_slab_params *p) {
    if (p->nx < 1 || p->ny < 1 || p->nz < 1 || p->vmin > p->vmax) return 0;
    if ((int64_t)p->vmax - p->vmin > 65535 || p->vmin < -65536 || p->vmax > 65535) return 0;
    if (p->pad < p->vmin || p->pad > p->vmax) return 0;
    if (p->stage < 0 || p->stage > 2) return 0;
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

/* First projected neighbour whose slice exists at slice z (the earlier ones are inputs 0). */
static inline int split_k0(const split_t *S, const vox_slab_params *p, int z) {
    int k0 = 0;
    while (k0 < S->nn && z + p->nb_dz[S->nonleft[k0]] < 0) k0++;
    return k0;
}

/* One split voxel x (at: its place in the slab): its projected inputs into row cnt of D, its R,
 * min and max; idx[x] = cnt when no input saturates. Returns the next free row of D. */
static inline int split_gather(split_t *S, const vox_slab_params *p, const nbgeo_t *g, const int32_t *at, int x, int k0, int cnt) {
    const int TI = S->T * S->I;
    const int32_t R = at[g->off[S->ref]];
    int32_t lo = R, hi = R;
    int16_t *D = S->D + (size_t)cnt * TI;
    memset(D, 0, sizeof(int16_t) * (size_t)TI);
    for (int k = k0; k < S->nn; k++) {
        int i = S->nonleft[k];
        int32_t v = at[g->off[i]];
        lo = v < lo ? v : lo; hi = v > hi ? v : hi;
        D[p->nb_slot[i]] = (int16_t)((v - R) * (1 << S->s));
    }
    if (hi - R > S->L || R - lo > S->L) return cnt; /* (v - R) << s would not fit in int16 */
    S->R[x] = R; S->mn[x] = lo; S->mx[x] = hi; S->idx[x] = cnt;
    return cnt + 1;
}

/* Batch phase of row (y, z): everything that does not depend on the row's own voxels. */
static void split_row(split_t *S, const vox_slab_params *p, const nbgeo_t *g, const int32_t *vox, int y, int z, int kernel) {
    const int nx = p->nx;
    const int32_t *rowp = vox + ((size_t)z * p->ny + y) * nx;
    const int k0 = split_k0(S, p, z);
    int cnt = 0;
    for (int x = 0; x < nx; x++) {
        S->idx[x] = -1;
        if (nbgeo_inside(g, p, x, y)) cnt = split_gather(S, p, g, rowp + x, x, k0, cnt);
    }
    if (cnt > 0) vox_lstm_input_proj(p->model, cnt * S->T, S->D, (size_t)S->I, S->pre, kernel);
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

/* ---- the slab walk, one slice at a time ---- */

#define MAXDEPTH 32

/* What every slice of one slab shares: the voxels, the rings of error and residual planes,
 * the neighbourhood geometry and, when slices run on several threads (format v2's
 * wavefront), the rows each slice has finished. */
typedef struct {
    const vox_slab_params *p;
    int32_t *vox;
    int np;                       /* planes in each ring; slice z uses plane z % np */
    int32_t *eI, *eX, *res;       /* [np][ny][nx] abs errors of the intra / inter predictors, residuals */
    int T, I, H;
    nbgeo_t geo;
    int depth;                    /* slice z reads slices z-1 .. z-depth */
    int reach[MAXDEPTH];          /* row y of slice z reads rows <= y + reach[k-1] of slice z-k */
    int32_t *anchor_out, *pred_out;
    /* wavefront (several threads): rows[z] = rows of slice z finished */
    int threaded;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int *rows;
    /* slices after `stop` are abandoned: `stop` is the earliest slice that failed (nz: none).
     * Slices before it go on, so the failure reported is the earliest one, whatever the
     * thread timing: a slice that reads a damaged earlier slice may trip first, but the
     * earlier slice's own failure (its checksum) is what names the damage. */
    int stop, reported;
} slab_t;

/* The batch gather's neighbours from k0 on, in chunks of up to 8 with consecutive input slots;
 * wide[c]: the slots after a short chunk, up to 8, are none an earlier chunk wrote (zeros may
 * be stored there). Worked out once per k0 (it changes only in a slab's first slices). */
#define BG_MAXNB 256
typedef struct { int k0, nc; int start[BG_MAXNB], len[BG_MAXNB], wide[BG_MAXNB]; } bgchunks_t;

/* Per-thread scratch: the row's anchors and predictions, LSTM inputs and workspace. */
typedef struct {
    int32_t *anch, *p1s, *p2s, *preds, *ys;
    int32_t *e1b, *e2b;  /* row_prep's terms */
    uint32_t *a0, *x0;
    int32_t *lt0, *lt1;  /* the AVX2 filter's taps of a row (lms_row_v): 8 and 2 per voxel */
    int16_t *X;
    void *ws;
    split_t S;
    bgchunks_t chunks;
    int64_t nsplit, nmono;
} scratch_t;

static void scratch_free(scratch_t *s) {
    free(s->anch); free(s->p1s); free(s->p2s); free(s->preds); free(s->ys); free(s->X); free(s->ws);
    free(s->e1b); free(s->e2b); free(s->a0); free(s->x0); free(s->lt0); free(s->lt1);
    split_free(&s->S);
    memset(s, 0, sizeof *s);
}

static int scratch_init(scratch_t *s, const slab_t *B) {
    const vox_slab_params *p = B->p;
    const int nx = p->nx;
    memset(s, 0, sizeof *s);
    s->chunks.k0 = -1;
    s->anch = malloc(sizeof(int32_t) * nx); s->p1s = malloc(sizeof(int32_t) * nx);
    s->p2s = malloc(sizeof(int32_t) * nx); s->preds = malloc(sizeof(int32_t) * nx);
    s->ys = malloc(sizeof(int32_t) * nx);
    s->e1b = malloc(sizeof(int32_t) * nx); s->e2b = malloc(sizeof(int32_t) * nx);
    s->a0 = malloc(sizeof(uint32_t) * nx); s->x0 = malloc(sizeof(uint32_t) * nx);
    s->lt0 = malloc(sizeof(int32_t) * 8 * (size_t)nx); s->lt1 = malloc(sizeof(int32_t) * 2 * (size_t)nx);
    int ok = s->anch && s->p1s && s->p2s && s->preds && s->ys && s->e1b && s->e2b && s->a0 && s->x0 && s->lt0 && s->lt1;
    if (p->model) {
        s->X = malloc(sizeof(int16_t) * (size_t)nx * B->T * B->I);
        s->ws = malloc(vox_lstm_workspace_size(p->model, p->left ? 1 : nx));
        ok = ok && s->X && s->ws && split_init(&s->S, p, B->T, B->I, B->H);
    }
    if (!ok) { scratch_free(s); return 0; }
    return 1;
}

static void slab_free(slab_t *B) {
    free(B->eI); free(B->eX); free(B->res); free(B->geo.off); free(B->rows);
    if (B->threaded) { pthread_mutex_destroy(&B->mu); pthread_cond_destroy(&B->cv); }
}

/* Sets up the shared part of a slab walk with `np` planes per ring (>= 2). */
static int slab_init(slab_t *B, const vox_slab_params *p, int32_t *vox, int np, int threaded) {
    memset(B, 0, sizeof *B);
    if (!check_params(p)) return VOX_ERR_PARAM;
    B->p = p; B->vox = vox;
    B->stop = p->nz;
    if (p->model) {
        vox_model_shape(p->model, &B->H, &B->I, &B->T);
        if (!nb_causal(p, B->T, B->I)) return VOX_ERR_PARAM;
    }
    const size_t plane = (size_t)p->nx * p->ny;
    if (np > p->nz + 1) np = p->nz + 1;
    if (np < 2) np = 2;
    B->np = np;
    B->eI = calloc((size_t)np * plane, sizeof(int32_t));
    B->eX = calloc((size_t)np * plane, sizeof(int32_t));
    B->res = calloc((size_t)np * plane, sizeof(int32_t));
    int geo_ok = nbgeo_init(&B->geo, p);
    B->depth = 1;
    for (int k = 0; k < MAXDEPTH; k++) B->reach[k] = 0;
    if (p->model)
        for (int i = 0; i < p->n_nb; i++) {
            int k = -p->nb_dz[i];
            if (k < 1) continue;
            if (k > MAXDEPTH) { free(B->eI); free(B->eX); free(B->res); free(B->geo.off); return VOX_ERR_PARAM; }
            if (k > B->depth) B->depth = k;
            if (p->nb_dy[i] > B->reach[k - 1]) B->reach[k - 1] = p->nb_dy[i];
        }
    if (threaded) {
        B->rows = calloc((size_t)p->nz, sizeof(int));
        if (!B->rows) { slab_free(B); return VOX_ERR_NOMEM; }
        pthread_mutex_init(&B->mu, NULL);
        pthread_cond_init(&B->cv, NULL);
        B->threaded = 1;
    }
    if (!B->eI || !B->eX || !B->res || !geo_ok) { slab_free(B); return VOX_ERR_NOMEM; }
    return VOX_OK;
}

/* Waits until every row that row y of slice z reads is decoded; 0 if the walk was stopped. */
static int wait_rows(slab_t *B, int z, int y) {
    if (!B->threaded || z == 0) return 1;
    const int ny = B->p->ny;
    pthread_mutex_lock(&B->mu);
    for (;;) {
        if (z > B->stop) break;
        int ready = 1;
        for (int k = 1; k <= B->depth && k <= z && ready; k++) {
            int need = y + B->reach[k - 1] + 1;
            if (need > ny) need = ny;
            if (B->rows[z - k] < need) ready = 0;
        }
        if (ready) break;
        pthread_cond_wait(&B->cv, &B->mu);
    }
    int ok = z <= B->stop;
    pthread_mutex_unlock(&B->mu);
    return ok;
}

static void publish_row(slab_t *B, int z, int rows) {
    if (!B->threaded) return;
    pthread_mutex_lock(&B->mu);
    B->rows[z] = rows;
    pthread_cond_broadcast(&B->cv);
    pthread_mutex_unlock(&B->mu);
}

/* ---- code_slice: the generic build and the AVX2 build of code_slice_body.h ---- */

#define CS_ATTR
#define SPLIT_ROW split_row
#define BATCH_GATHER(xa, xe) do { } while (0)
#define LMS_DECL int32_t lw[NLMS]; memcpy(lw, C->st.lms, sizeof lw)
#define LMS_TAPS_DECL int32_t lr[NLMS]
#define LMS_ROW do { } while (0)
#define LMS_PREDICT(acc) do { lms_taps(&w, lr, x, y, z); acc = 0; \
        for (int j = 0; j < NLMS; j++) acc += (int64_t)lw[j] * lr[j]; } while (0)
#define LMS_UPDATE(step) do { for (int j = 0; j < NLMS; j++) { \
        int32_t nw = lw[j] + ((lr[j] > 0) - (lr[j] < 0)) * (step); \
        lw[j] = nw > LMS_MAX ? LMS_MAX : (nw < -LMS_MAX ? -LMS_MAX : nw); } } while (0)
#define LMS_STORE memcpy(C->st.lms, lw, sizeof lw)
#define CS_NAME code_slice_generic_enc
#define CS_MODE 0
#include "code_slice_body.h"
#define CS_NAME code_slice_generic_dec
#define CS_MODE 1
#include "code_slice_body.h"
#define CS_NAME code_slice_generic_pred
#define CS_MODE 2
#include "code_slice_body.h"
#include "code_slice_build_end.h"

#if defined(__x86_64__)
/* The filter on vectors, lanes in the order W, WW, N, NW, NE, P, PW, PE (taps 0, 5, 1, 2, 3, 4, 6, 7)
 * in one register and PN, NN (8, 9) in the low lanes of another (the other lanes stay 0 in taps
 * and weights, so they add nothing and never move): the two left taps share one 64-bit lane
 * pair, filled per voxel, and the rest of a row's taps are laid out by lms_row_v beforehand. */
__attribute__((target("avx2"))) static inline void lms_taps_edge_v(const walk_t *w, int x, int y, int z, __m256i *t0, __m256i *t1) {
    int32_t r[NLMS];
    lms_taps(w, r, x, y, z);
    *t0 = _mm256_setr_epi32(r[0], r[5], r[1], r[2], r[3], r[4], r[6], r[7]);
    *t1 = _mm256_setr_epi32(r[8], r[9], 0, 0, 0, 0, 0, 0);
}
/* Taps N..PE (lanes 2-7, lanes 0-1 zero) and PN, NN of every voxel x in [2, nx - 1) of row y
 * with y > 1, z > 0 (where every tap exists): 8 voxels at a time, an 8x8 transpose of the
 * taps' rows into the voxels' vectors. */
__attribute__((target("avx2"))) static void lms_row_v(const walk_t *w, int32_t *T0, int32_t *T1, int y) {
    const int nx = w->p->nx;
    const int32_t *cur = w->res + w->ci + (size_t)y * nx, *prv = w->res + w->pi + (size_t)y * nx;
    const int32_t *up = cur - nx, *uu = cur - 2 * nx, *pu = prv - nx;
    int x = 2;
    for (; x + 8 <= nx - 1; x += 8) {
        const __m256i z0 = _mm256_setzero_si256();
#define LD(q) _mm256_loadu_si256((const __m256i *)(const void *)(q))
        const __m256i N = LD(up + x), NW = LD(up + x - 1), NE = LD(up + x + 1), P = LD(prv + x);
        const __m256i PW = LD(prv + x - 1), PE = LD(prv + x + 1), PN = LD(pu + x), NN = LD(uu + x);
#undef LD
        /* rows r0..r7 = (0, 0, N, NW, NE, P, PW, PE); transpose to voxel vectors */
        const __m256i a0 = _mm256_unpacklo_epi32(z0, z0), a1 = _mm256_unpackhi_epi32(z0, z0);
        const __m256i a2 = _mm256_unpacklo_epi32(N, NW), a3 = _mm256_unpackhi_epi32(N, NW);
        const __m256i a4 = _mm256_unpacklo_epi32(NE, P), a5 = _mm256_unpackhi_epi32(NE, P);
        const __m256i a6 = _mm256_unpacklo_epi32(PW, PE), a7 = _mm256_unpackhi_epi32(PW, PE);
        const __m256i b0 = _mm256_unpacklo_epi64(a0, a2), b1 = _mm256_unpackhi_epi64(a0, a2);
        const __m256i b2 = _mm256_unpacklo_epi64(a1, a3), b3 = _mm256_unpackhi_epi64(a1, a3);
        const __m256i b4 = _mm256_unpacklo_epi64(a4, a6), b5 = _mm256_unpackhi_epi64(a4, a6);
        const __m256i b6 = _mm256_unpacklo_epi64(a5, a7), b7 = _mm256_unpackhi_epi64(a5, a7);
        /* b0: voxels 0 and 4 (first and second 128-bit half), b1: 1 and 5, b2: 2 and 6, b3: 3 and 7 */
        __m256i *o = (__m256i *)(void *)(T0 + (size_t)x * 8);
        _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(b0, b4, 0x20));
        _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(b1, b5, 0x20));
        _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(b2, b6, 0x20));
        _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(b3, b7, 0x20));
        _mm256_storeu_si256(o + 4, _mm256_permute2x128_si256(b0, b4, 0x31));
        _mm256_storeu_si256(o + 5, _mm256_permute2x128_si256(b1, b5, 0x31));
        _mm256_storeu_si256(o + 6, _mm256_permute2x128_si256(b2, b6, 0x31));
        _mm256_storeu_si256(o + 7, _mm256_permute2x128_si256(b3, b7, 0x31));
        /* (PN, NN) pairs of the 8 voxels */
        const __m256i l = _mm256_unpacklo_epi32(PN, NN), h = _mm256_unpackhi_epi32(PN, NN);
        __m256i *q = (__m256i *)(void *)(T1 + (size_t)x * 2);
        _mm256_storeu_si256(q, _mm256_permute2x128_si256(l, h, 0x20));
        _mm256_storeu_si256(q + 1, _mm256_permute2x128_si256(l, h, 0x31));
    }
    for (; x < nx - 1; x++) {
        int32_t *o = T0 + (size_t)x * 8;
        o[0] = 0; o[1] = 0; o[2] = up[x]; o[3] = up[x - 1]; o[4] = up[x + 1]; o[5] = prv[x]; o[6] = prv[x - 1]; o[7] = prv[x + 1];
        T1[(size_t)x * 2] = pu[x]; T1[(size_t)x * 2 + 1] = uu[x];
    }
}
__attribute__((target("avx2"))) static inline void lms_taps_v(const walk_t *w, const int32_t *T0, const int32_t *T1, int x, int y, int z,
                                                              __m256i *t0, __m256i *t1) {
    const int nx = w->p->nx;
    if (x > 1 && x < nx - 1 && y > 1 && z > 0) {
        const int32_t *cur = w->res + w->ci + (size_t)y * nx;
        const uint64_t lw = (uint32_t)cur[x - 1] | (uint64_t)(uint32_t)cur[x - 2] << 32;
        *t0 = _mm256_blend_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(T0 + (size_t)x * 8)),
                                 _mm256_castsi128_si256(_mm_cvtsi64_si128((long long)lw)), 0x03);
        *t1 = _mm256_zextsi128_si256(_mm_loadl_epi64((const __m128i *)(const void *)(T1 + (size_t)x * 2)));
        return;
    }
    lms_taps_edge_v(w, x, y, z, t0, t1);
}
/* sum_j w_j t_j in int64: even lanes by vpmuldq, odd lanes shifted down first */
__attribute__((target("avx2"))) static inline int64_t lms_dot_v(__m256i w0, __m256i w1, __m256i t0, __m256i t1) {
    __m256i s = _mm256_add_epi64(_mm256_mul_epi32(w0, t0), _mm256_mul_epi32(_mm256_srli_epi64(w0, 32), _mm256_srli_epi64(t0, 32)));
    s = _mm256_add_epi64(s, _mm256_add_epi64(_mm256_mul_epi32(w1, t1), _mm256_mul_epi32(_mm256_srli_epi64(w1, 32), _mm256_srli_epi64(t1, 32))));
    __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return _mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1);
}
__attribute__((target("avx2"))) static inline __m256i lms_step_v(__m256i w, __m256i t, __m256i step) {
    __m256i n = _mm256_add_epi32(w, _mm256_sign_epi32(step, t)); /* sign(t) * step */
    return _mm256_min_epi32(_mm256_max_epi32(n, _mm256_set1_epi32(-LMS_MAX)), _mm256_set1_epi32(LMS_MAX));
}
/*
 * split_row with 8 voxels at a time: for each projected neighbour, one load of 8 consecutive
 * neighbours, their running min and max and (v - R) << s on the vector; then each voxel's
 * inputs are written to its row of D (the same values, in the same places, as split_row).
 */
__attribute__((target("avx2"))) static void split_row_avx2(split_t *S, const vox_slab_params *p, const nbgeo_t *g, const int32_t *vox,
                                                           int y, int z, int kernel) {
    const int nx = p->nx, TI = S->T * S->I, nn = S->nn;
    const int32_t *rowp = vox + ((size_t)z * p->ny + y) * nx;
    const int k0 = split_k0(S, p, z);
    for (int x = 0; x < nx; x++) S->idx[x] = -1;
    int cnt = 0;
    /* the voxels inside the edges are one interval of x (for rows inside them) */
    int xa = nx, xb = nx;
    if (g->on && y + g->dymin >= 0 && y + g->dymax < p->ny) { xa = -g->dxmin; xb = nx - g->dxmax; if (xa < 0) xa = 0; if (xb < xa) xb = xa; }
    int x = xa;
    if (nn <= 64) {
        int32_t tmp[8 * 64] __attribute__((aligned(32)));
        ptrdiff_t koff[64];
        int kslot[64];
        for (int k = k0; k < nn; k++) { koff[k] = g->off[S->nonleft[k]]; kslot[k] = p->nb_slot[S->nonleft[k]]; }
        const ptrdiff_t roff = g->off[S->ref];
        const __m128i shc = _mm_cvtsi32_si128(S->s);
        const __m256i Lv = _mm256_set1_epi32(S->L);
        for (; x + 8 <= xb; x += 8) {
            const int32_t *at = rowp + x;
            const __m256i R = _mm256_loadu_si256((const __m256i *)(const void *)(at + roff));
            __m256i lo = R, hi = R;
            for (int k = k0; k < nn; k++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(at + koff[k]));
                lo = _mm256_min_epi32(lo, v); hi = _mm256_max_epi32(hi, v);
                _mm256_store_si256((__m256i *)(void *)(tmp + 8 * k), _mm256_sll_epi32(_mm256_sub_epi32(v, R), shc));
            }
            /* saturated lanes: hi - R > L or R - lo > L */
            __m256i bad = _mm256_or_si256(_mm256_cmpgt_epi32(_mm256_sub_epi32(hi, R), Lv), _mm256_cmpgt_epi32(_mm256_sub_epi32(R, lo), Lv));
            int badm = _mm256_movemask_ps(_mm256_castsi256_ps(bad));
            int32_t Rs[8], los[8], his[8];
            _mm256_storeu_si256((__m256i *)(void *)Rs, R); _mm256_storeu_si256((__m256i *)(void *)los, lo); _mm256_storeu_si256((__m256i *)(void *)his, hi);
            for (int i = 0; i < 8; i++) {
                if (badm & (1 << i)) continue;
                int16_t *D = S->D + (size_t)cnt * TI;
                memset(D, 0, sizeof(int16_t) * (size_t)TI);
                for (int k = k0; k < nn; k++) D[kslot[k]] = (int16_t)tmp[8 * k + i];
                S->R[x + i] = Rs[i]; S->mn[x + i] = los[i]; S->mx[x + i] = his[i]; S->idx[x + i] = cnt++;
            }
        }
    }
    for (; x < xb; x++) cnt = split_gather(S, p, g, rowp + x, x, k0, cnt); /* the rest of the interval */
    if (cnt > 0) vox_lstm_input_proj(p->model, cnt * S->T, S->D, (size_t)S->I, S->pre, kernel);
}

/*
 * The batch path's inputs (no left voxels) for the voxels of row y inside the x/y edges, 8
 * voxels at a time: for each neighbour, one load of 8 consecutive values, (v - a) scaled and
 * saturated on the vector as gather_inside does; then 8 neighbours x 8 voxels are transposed
 * (int16) and each voxel's 8 inputs stored at once. Neighbours go in chunks of up to 8 whose
 * slots are consecutive. Returns the first x it did not do (the caller does the rest, and the
 * voxels before xa, one by one).
 */
static void bg_chunks(const vox_slab_params *p, int k0, int TI, bgchunks_t *ch) {
    ch->k0 = k0; ch->nc = 0;
    for (int k = k0; k < p->n_nb;) {
        int len = 1;
        while (len < 8 && k + len < p->n_nb && p->nb_slot[k + len] == p->nb_slot[k] + len) len++;
        const int s0 = p->nb_slot[k];
        int wide = s0 + 8 <= TI;
        for (int j = k0; wide && j < k; j++) if (p->nb_slot[j] >= s0 + len && p->nb_slot[j] < s0 + 8) wide = 0;
        ch->start[ch->nc] = k; ch->len[ch->nc] = len; ch->wide[ch->nc] = wide; ch->nc++;
        k += len;
    }
}

__attribute__((target("avx2"))) static int batch_gather_avx2(const vox_slab_params *p, const nbgeo_t *g, const int32_t *row, int y,
                                                              int k0, int T, int I, const int32_t *anch, int16_t *X,
                                                              bgchunks_t *ch, int *xa_out) {
    const int nx = p->nx, n = p->n_nb, TI = T * I, r = p->norm_shift;
    *xa_out = nx;
    if (!g->on || y + g->dymin < 0 || y + g->dymax >= p->ny || n - k0 > BG_MAXNB) return nx;
    int xa = -g->dxmin, xb = nx - g->dxmax;
    if (xa < 0) xa = 0;
    if (xb <= xa) return nx;
    *xa_out = xa;
    if (ch->k0 != k0) bg_chunks(p, k0, TI, ch);
    const int nc = ch->nc;
    const int *cs = ch->start, *cl = ch->len, *cw = ch->wide;
    const int up = r <= 12;
    const __m128i sh = _mm_cvtsi32_si128(up ? 12 - r : r - 12);
    const __m256i rnd = _mm256_set1_epi32(up ? 0 : 1 << (r - 13));
    const __m128i lo16 = _mm_set1_epi16(-32767);
    int x = xa;
    for (; x + 8 <= xb; x += 8) {
        const int32_t *at = row + x;
        const __m256i A = _mm256_loadu_si256((const __m256i *)(const void *)(anch + x));
        int16_t *X0 = X + (size_t)x * TI;
        memset(X0, 0, sizeof(int16_t) * (size_t)8 * TI);
        for (int c = 0; c < nc; c++) {
            __m128i m[8];
            for (int j = 0; j < 8; j += 2) {
                __m256i d0 = _mm256_setzero_si256(), d1 = _mm256_setzero_si256();
                if (j < cl[c]) {
                    d0 = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(at + g->off[cs[c] + j])), A);
                    d0 = up ? _mm256_sll_epi32(d0, sh) : _mm256_sra_epi32(_mm256_add_epi32(d0, rnd), sh);
                }
                if (j + 1 < cl[c]) {
                    d1 = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(at + g->off[cs[c] + j + 1])), A);
                    d1 = up ? _mm256_sll_epi32(d1, sh) : _mm256_sra_epi32(_mm256_add_epi32(d1, rnd), sh);
                }
                /* int16 with saturation to [-32768, 32767], then -32768 raised to -32767 */
                __m256i pk = _mm256_permute4x64_epi64(_mm256_packs_epi32(d0, d1), 0xD8);
                m[j] = _mm_max_epi16(_mm256_castsi256_si128(pk), lo16);
                m[j + 1] = _mm_max_epi16(_mm256_extracti128_si256(pk, 1), lo16);
            }
            /* 8x8 transpose: m[j] holds neighbour j of the 8 voxels; o[i] voxel i's 8 inputs */
            __m128i t0 = _mm_unpacklo_epi16(m[0], m[1]), t1 = _mm_unpackhi_epi16(m[0], m[1]);
            __m128i t2 = _mm_unpacklo_epi16(m[2], m[3]), t3 = _mm_unpackhi_epi16(m[2], m[3]);
            __m128i t4 = _mm_unpacklo_epi16(m[4], m[5]), t5 = _mm_unpackhi_epi16(m[4], m[5]);
            __m128i t6 = _mm_unpacklo_epi16(m[6], m[7]), t7 = _mm_unpackhi_epi16(m[6], m[7]);
            __m128i u0 = _mm_unpacklo_epi32(t0, t2), u1 = _mm_unpackhi_epi32(t0, t2);
            __m128i u2 = _mm_unpacklo_epi32(t1, t3), u3 = _mm_unpackhi_epi32(t1, t3);
            __m128i u4 = _mm_unpacklo_epi32(t4, t6), u5 = _mm_unpackhi_epi32(t4, t6);
            __m128i u6 = _mm_unpacklo_epi32(t5, t7), u7 = _mm_unpackhi_epi32(t5, t7);
            __m128i o[8] = {_mm_unpacklo_epi64(u0, u4), _mm_unpackhi_epi64(u0, u4), _mm_unpacklo_epi64(u1, u5), _mm_unpackhi_epi64(u1, u5),
                            _mm_unpacklo_epi64(u2, u6), _mm_unpackhi_epi64(u2, u6), _mm_unpacklo_epi64(u3, u7), _mm_unpackhi_epi64(u3, u7)};
            int16_t *dst = X0 + p->nb_slot[cs[c]];
            if (cw[c] || cl[c] == 8) {
                for (int i = 0; i < 8; i++) _mm_storeu_si128((__m128i *)(void *)(dst + (size_t)i * TI), o[i]);
            } else {
                int16_t tmp[8];
                for (int i = 0; i < 8; i++) {
                    _mm_storeu_si128((__m128i *)(void *)tmp, o[i]);
                    memcpy(dst + (size_t)i * TI, tmp, sizeof(int16_t) * (size_t)cl[c]);
                }
            }
        }
    }
    return x;
}

#define CS_ATTR __attribute__((target("avx2")))
#define SPLIT_ROW split_row_avx2
#define BATCH_GATHER(xa, xe) do { xe = batch_gather_avx2(p, geo, row, y, k0, T, I, s->anch, s->X, &s->chunks, &xa); } while (0)
#define LMS_DECL const int32_t *Lw = C->st.lms; \
    __m256i lw0 = _mm256_setr_epi32(Lw[0], Lw[5], Lw[1], Lw[2], Lw[3], Lw[4], Lw[6], Lw[7]), \
            lw1 = _mm256_setr_epi32(Lw[8], Lw[9], 0, 0, 0, 0, 0, 0)
#define LMS_ROW do { if (y > 1 && z > 0) lms_row_v(&w, s->lt0, s->lt1, y); } while (0)
#define LMS_TAPS_DECL __m256i lt0 = _mm256_setzero_si256(), lt1 = _mm256_setzero_si256()
#define LMS_PREDICT(acc) do { lms_taps_v(&w, s->lt0, s->lt1, x, y, z, &lt0, &lt1); acc = lms_dot_v(lw0, lw1, lt0, lt1); } while (0)
#define LMS_UPDATE(step) do { const __m256i sv = _mm256_set1_epi32(step); \
        lw0 = lms_step_v(lw0, lt0, sv); lw1 = lms_step_v(lw1, lt1, sv); } while (0)
#define LMS_STORE do { int32_t lv_[8]; _mm256_storeu_si256((__m256i *)(void *)lv_, lw0); int32_t *Ls = C->st.lms; \
        Ls[0] = lv_[0]; Ls[5] = lv_[1]; Ls[1] = lv_[2]; Ls[2] = lv_[3]; Ls[3] = lv_[4]; Ls[4] = lv_[5]; Ls[6] = lv_[6]; Ls[7] = lv_[7]; \
        Ls[8] = _mm256_extract_epi32(lw1, 0); Ls[9] = _mm256_extract_epi32(lw1, 1); } while (0)
#define CS_NAME code_slice_avx2_enc
#define CS_MODE 0
#include "code_slice_body.h"
#define CS_NAME code_slice_avx2_dec
#define CS_MODE 1
#include "code_slice_body.h"
#include "code_slice_build_end.h"
#endif

/* The AVX2 build of the coder runs where the LSTM kernel chosen is a SIMD one this CPU has
 * (every AVX-512 one has AVX2), so `--kernel scalar` also runs the generic coder: the tests
 * compare both on every golden stream. */
static int coder_avx2(int kernel) {
    return kernel != VOX_KERNEL_SCALAR && (vox_kernels_available() & (1 << kernel)) != 0;
}

static int code_slice(slab_t *B, scratch_t *s, coder_t *C, int z, int use_model, int left, cstate_t *snap, int snap_rows) {
    const int kern = B->p->reference ? VOX_KERNEL_SCALAR : B->p->kernel;
#if defined(__x86_64__)
    if (coder_avx2(kern) && C->mode != 2) {
        return C->mode == 0 ? code_slice_avx2_enc(B, s, C, z, use_model, left, snap, snap_rows)
                            : code_slice_avx2_dec(B, s, C, z, use_model, left, snap, snap_rows);
    }
#endif
    switch (C->mode) {
    case 0: return code_slice_generic_enc(B, s, C, z, use_model, left, snap, snap_rows);
    case 1: return code_slice_generic_dec(B, s, C, z, use_model, left, snap, snap_rows);
    default: return code_slice_generic_pred(B, s, C, z, use_model, left, snap, snap_rows);
    }
}

static void enc_start(coder_t *C) {
    C->mode = 0;
    memset(&C->enc, 0, sizeof C->enc);
    C->enc.range = 0xFFFFFFFFu;
    C->enc.cache_size = 1;
}

static void dec_start(coder_t *C, const uint8_t *in, size_t len) {
    C->mode = 1;
    C->dec.p = in; C->dec.end = in + len;
    C->dec.range = 0xFFFFFFFFu;
    C->dec.code = 0;
    for (int i = 0; i < 5; i++) C->dec.code = (C->dec.code << 8) | dec_byte(&C->dec);
}

/* Format v1: one coder state and one range-coded stream for the whole slab. */
static int code_slab_v1(const vox_slab_params *p, int32_t *vox, coder_t *C, int32_t *anchor_out, int32_t *pred_out) {
    slab_t B;
    int rc = slab_init(&B, p, vox, 2, 0);
    if (rc != VOX_OK) return rc;
    B.anchor_out = anchor_out; B.pred_out = pred_out;
    scratch_t s;
    if (!scratch_init(&s, &B)) { slab_free(&B); return VOX_ERR_NOMEM; }
    for (int z = 0; z < p->nz && rc == VOX_OK; z++) rc = code_slice(&B, &s, C, z, p->model != NULL, p->left, NULL, 0);
    if (p->stats) { p->stats[0] = s.nsplit; p->stats[1] = s.nmono; }
    scratch_free(&s);
    slab_free(&B);
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
    enc_start(C);
    cstate_init(&C->st, p->stage);
    int rc = code_slab_v1(p, (int32_t *)vox, C, NULL, NULL); /* vox is only read in encode mode */
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
    dec_start(C, in, len);
    cstate_init(&C->st, p->stage);
    int rc = code_slab_v1(p, vox, C, NULL, NULL);
    free(C);
    return rc;
}

int vox_predict_slab(const vox_slab_params *p, const int32_t *vox, int32_t *anchor, int32_t *pred) {
    coder_t *C = malloc(sizeof *C);
    if (!C) return VOX_ERR_NOMEM;
    memset(C, 0, sizeof *C);
    C->mode = 2;
    cstate_init(&C->st, p->stage);
    int rc = code_slab_v1(p, (int32_t *)vox, C, anchor, pred);
    free(C);
    return rc;
}

/* ---- format v2: one range-coded stream per slice ---- */

/*
 * Slice z of a v2 slab is its own range-coded stream. Its coder state starts as the state
 * slice z-1 had after its first W = min(state_rows, ny) rows (slice 0: the initial state),
 * and it is predicted either with the stream's predictor (pred 0) or with the classical
 * predictor with left voxels (pred 1). Slice z row y reads only rows <= y + reach of the
 * slices before it, so slice z can run W rows behind slice z-1 on another thread.
 */

/* One encoding pass over a v2/v3 slab: each slice with the stream's predictor (and, with
 * `choose`, also the classical one, keeping the shorter), or, with `forced`, every slice with
 * the classical predictor (predictor 1). */
static int64_t enc_v2_pass(const vox_slab_params *p, int32_t state_rows, int32_t choose, int forced, const int32_t *vox,
                           uint8_t **out, uint32_t *slice_len, uint8_t *slice_pred) {
    *out = NULL;
    const size_t plane = (size_t)p->nx * p->ny;
    const int W = state_rows < p->ny ? state_rows : p->ny;
    slab_t B;
    int rc = slab_init(&B, p, (int32_t *)vox, 2, 0);
    if (rc != VOX_OK) return rc;
    scratch_t s;
    coder_t *C = calloc(2, sizeof(coder_t));
    cstate_t *st = calloc(3, sizeof(cstate_t)); /* [0] slice start, [1] [2] the candidates' snapshots */
    int32_t *keep = choose && p->model ? malloc(sizeof(int32_t) * 3 * plane) : NULL;
    uint8_t *buf = NULL;
    size_t blen = 0, bcap = 0;
    if (!C || !st || (choose && p->model && !keep)) { rc = VOX_ERR_NOMEM; goto out; }
    if (!scratch_init(&s, &B)) { rc = VOX_ERR_NOMEM; goto out0; }
    cstate_init(&st[0], p->stage);
    for (int z = 0; z < p->nz && rc == VOX_OK; z++) {
        const size_t ci = (size_t)(z % B.np) * plane;
        int ncand = keep ? 2 : 1, best = 0;
        /* candidate 1 (classical with left voxels) first, so that its planes can be kept aside */
        for (int k = ncand - 1; k >= 0 && rc == VOX_OK; k--) {
            coder_t *K = &C[k];
            enc_start(K);
            K->st = st[0];
            int use_model = k == 0 && p->model != NULL && !forced, left = k == 0 && !forced ? p->left : 1;
            rc = code_slice(&B, &s, K, z, use_model, left, &st[1 + k], W);
            if (rc == VOX_OK) for (int i = 0; i < 5; i++) enc_shift_low(&K->enc);
            if (rc == VOX_OK && K->enc.oom) rc = VOX_ERR_NOMEM;
            if (rc == VOX_OK && k == 1) {
                memcpy(keep, B.eI + ci, sizeof(int32_t) * plane);
                memcpy(keep + plane, B.eX + ci, sizeof(int32_t) * plane);
                memcpy(keep + 2 * plane, B.res + ci, sizeof(int32_t) * plane);
            }
        }
        if (rc != VOX_OK) break;
        if (ncand == 2 && C[1].enc.len < C[0].enc.len) {
            best = 1;
            memcpy(B.eI + ci, keep, sizeof(int32_t) * plane);
            memcpy(B.eX + ci, keep + plane, sizeof(int32_t) * plane);
            memcpy(B.res + ci, keep + 2 * plane, sizeof(int32_t) * plane);
        }
        rc_enc *E = &C[best].enc;
        if (blen + E->len > bcap) {
            size_t nc = (blen + E->len) * 2;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) { rc = VOX_ERR_NOMEM; break; }
            buf = nb; bcap = nc;
        }
        memcpy(buf + blen, E->buf, E->len);
        blen += E->len;
        slice_len[z] = (uint32_t)E->len;
        slice_pred[z] = (uint8_t)(forced ? 1 : best);
        st[0] = st[1 + best];
        for (int k = 0; k < ncand; k++) { free(C[k].enc.buf); C[k].enc.buf = NULL; }
    }
    if (p->stats) { p->stats[0] = s.nsplit; p->stats[1] = s.nmono; }
    scratch_free(&s);
out0:
    for (int k = 0; k < 2 && C; k++) free(C[k].enc.buf);
out:
    free(C); free(st); free(keep);
    slab_free(&B);
    if (rc != VOX_OK) { free(buf); return rc; }
    if (!buf) buf = malloc(1);
    *out = buf;
    return (int64_t)blen;
}

int64_t vox_encode_slab_v2(const vox_slab_params *p, int32_t state_rows, int32_t choose, const int32_t *vox,
                           uint8_t **out, uint32_t *slice_len, uint8_t *slice_pred) {
    *out = NULL;
    if (!check_params(p) || state_rows < 1) return VOX_ERR_PARAM;
    const size_t n = (size_t)p->nx * p->ny * p->nz;
    for (size_t i = 0; i < n; i++)
        if (vox[i] < p->vmin || vox[i] > p->vmax) return VOX_ERR_RANGE;
    int64_t len = enc_v2_pass(p, state_rows, choose, 0, vox, out, slice_len, slice_pred);
    if (len < 0 || !choose || !p->model) return len;
    /* every slice already classical: the pass below would code exactly the same bytes */
    int all_classical = 1;
    for (int z = 0; z < p->nz; z++) if (slice_pred[z] != 1) { all_classical = 0; break; }
    if (all_classical) return len;
    /* Slice by slice the choice is greedy (each slice's state depends on the choices before
     * it), so the slab coded classically throughout can still be shorter: keep it then, and no
     * slab of an LSTM stream is longer than the classical predictor makes it. */
    uint32_t *clen = malloc(sizeof(uint32_t) * (size_t)p->nz);
    uint8_t *cpred = malloc((size_t)p->nz), *cout = NULL;
    if (!clen || !cpred) { free(clen); free(cpred); free(*out); *out = NULL; return VOX_ERR_NOMEM; }
    int64_t clen_all = enc_v2_pass(p, state_rows, 0, 1, vox, &cout, clen, cpred);
    if (clen_all < 0) { free(clen); free(cpred); free(*out); *out = NULL; return clen_all; }
    if (clen_all < len) {
        free(*out);
        *out = cout; len = clen_all;
        memcpy(slice_len, clen, sizeof(uint32_t) * (size_t)p->nz);
        memcpy(slice_pred, cpred, (size_t)p->nz);
    } else free(cout);
    free(clen); free(cpred);
    return len;
}

typedef struct {
    slab_t *B;
    int nthreads, W;
    const uint8_t *const *data;
    const size_t *len;
    const uint8_t *pred;
    cstate_t *snaps;              /* [np] the snapshot slice z leaves for slice z+1, at z % np */
    vox_slice_cb cb;
    void *ctx;
    int rc, failed;               /* the first failure and its slice (guarded by B->mu) */
    int64_t nsplit, nmono;
} v2job_t;

typedef struct { v2job_t *J; int tid; } v2arg_t;

static void v2_fail(v2job_t *J, int z, int rc) {
    slab_t *B = J->B;
    if (B->threaded) pthread_mutex_lock(&B->mu);
    if (J->failed < 0 || z < J->failed) { J->rc = rc; J->failed = z; }
    if (z < B->stop) B->stop = z;
    if (B->threaded) { pthread_cond_broadcast(&B->cv); pthread_mutex_unlock(&B->mu); }
}

static void *v2_worker(void *arg) {
    v2job_t *J = ((v2arg_t *)arg)->J;
    const int tid = ((v2arg_t *)arg)->tid;
    slab_t *B = J->B;
    const vox_slab_params *p = B->p;
    scratch_t s;
    coder_t *C = malloc(sizeof *C);
    if (!C || !scratch_init(&s, B)) {
        free(C);
        v2_fail(J, tid, VOX_ERR_NOMEM);
        return NULL;
    }
    for (int z = tid; z < p->nz; z += J->nthreads) {
        memset(C, 0, sizeof *C);
        if (z == 0) cstate_init(&C->st, B->p->stage);
        else {
            /* the previous slice's state after its first W rows */
            if (B->threaded) {
                pthread_mutex_lock(&B->mu);
                while (z <= B->stop && B->rows[z - 1] < J->W) pthread_cond_wait(&B->cv, &B->mu);
                int ab = z > B->stop;
                pthread_mutex_unlock(&B->mu);
                if (ab) break;
            } else if (z > B->stop) break;
            C->st = J->snaps[(z - 1) % B->np];
        }
        dec_start(C, J->data[z], J->len[z]);
        int use_model = J->pred[z] == 0 && p->model != NULL, left = J->pred[z] == 0 ? p->left : 1;
        int rc = code_slice(B, &s, C, z, use_model, left, &J->snaps[z % B->np], J->W);
        if (rc != VOX_OK) {
            if (rc != VOX_ERR_ABORT) v2_fail(J, z, rc);
            break;
        }
        /* report slices in order */
        if (B->threaded) {
            pthread_mutex_lock(&B->mu);
            while (z <= B->stop && B->reported != z) pthread_cond_wait(&B->cv, &B->mu);
            int ab = z > B->stop;
            pthread_mutex_unlock(&B->mu);
            if (ab) break;
        }
        int r = J->cb ? J->cb(J->ctx, z) : 0;
        if (r != 0) { v2_fail(J, z, VOX_ERR_ABORT); break; }
        if (B->threaded) {
            pthread_mutex_lock(&B->mu);
            B->reported = z + 1;
            pthread_cond_broadcast(&B->cv);
            pthread_mutex_unlock(&B->mu);
        } else B->reported = z + 1;
    }
    if (B->threaded) pthread_mutex_lock(&B->mu);
    J->nsplit += s.nsplit; J->nmono += s.nmono;
    if (B->threaded) pthread_mutex_unlock(&B->mu);
    scratch_free(&s);
    free(C);
    return NULL;
}

int vox_decode_slab_v2(const vox_slab_params *p, int32_t state_rows, const uint8_t *const *data, const size_t *len,
                       const uint8_t *pred, int32_t *vox, int32_t threads, vox_slice_cb cb, void *ctx,
                       int32_t *failed_slice) {
    if (failed_slice) *failed_slice = -1;
    if (!check_params(p) || state_rows < 1) return VOX_ERR_PARAM;
    for (int z = 0; z < p->nz; z++) if (pred[z] > 1 || (pred[z] == 1 && !p->model)) return VOX_ERR_PARAM;
    int nt = threads < 1 ? 1 : threads;
    if (nt > p->nz) nt = p->nz;
    if (nt > 16) nt = 16;
    slab_t B;
    int rc = slab_init(&B, p, vox, nt + 1, nt > 1);
    if (rc != VOX_OK) return rc;
    v2job_t J;
    memset(&J, 0, sizeof J);
    J.B = &B; J.nthreads = nt; J.W = state_rows < p->ny ? state_rows : p->ny;
    J.data = data; J.len = len; J.pred = pred; J.cb = cb; J.ctx = ctx; J.failed = -1;
    J.snaps = calloc((size_t)B.np, sizeof(cstate_t));
    if (!J.snaps) { slab_free(&B); return VOX_ERR_NOMEM; }
    v2arg_t args[16];
    pthread_t th[16];
    int started = 1;
    for (int t = 0; t < nt; t++) { args[t].J = &J; args[t].tid = t; }
    for (int t = 1; t < nt; t++) {
        if (pthread_create(&th[t], NULL, v2_worker, &args[t]) != 0) {
            v2_fail(&J, t, VOX_ERR_NOMEM);
            break;
        }
        started++;
    }
    /* always: slice 0 is this thread's, and the threads that did start wait for it (a thread
     * that could not be created has set `stop`, so the slices from its first one on are
     * abandoned and the result is its error) */
    v2_worker(&args[0]);
    for (int t = 1; t < started; t++) pthread_join(th[t], NULL);
    rc = J.rc;
    if (rc == VOX_OK && B.reported != p->nz) rc = VOX_ERR_ABORT;
    if (failed_slice) *failed_slice = J.failed;
    if (p->stats) { p->stats[0] = J.nsplit; p->stats[1] = J.nmono; }
    free(J.snaps);
    slab_free(&B);
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
