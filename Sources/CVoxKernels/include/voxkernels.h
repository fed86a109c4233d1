/*
 * CVoxKernels: the integer hot paths of the VoxFS codec.
 *
 *  - CRC-32C and SHA-256 (checksums of decoded voxels, model identity)
 *  - fixed-point LSTM inference: one scalar reference kernel and AVX2 / AVX-512 VNNI
 *    kernels that produce identical results (all arithmetic is integer, accumulation is
 *    modulo 2^32, activations come from shipped tables)
 *  - the slab coder: causal prediction (classical MED-3D blend or LSTM on top of it) and
 *    an adaptive binary range coder with context modelling of the residuals.
 *
 * Nothing here calls libm or BLAS. See docs/format.md for the bit-exact definitions.
 */
#ifndef VOXKERNELS_H
#define VOXKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- checksums -------------------------------------------------------------------- */

/** CRC-32C (Castagnoli), initial value `crc` (0 to start), returns the updated CRC. */
uint32_t vox_crc32c(uint32_t crc, const void *data, size_t len);

typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    uint32_t used;
} vox_sha256_ctx;

void vox_sha256_init(vox_sha256_ctx *ctx);
void vox_sha256_update(vox_sha256_ctx *ctx, const void *data, size_t len);
void vox_sha256_final(vox_sha256_ctx *ctx, uint8_t out[32]);

/* ---- fixed-point LSTM --------------------------------------------------------------- */

enum {
    VOX_KERNEL_SCALAR = 0,
    VOX_KERNEL_AVX2 = 1,
    VOX_KERNEL_AVX512VNNI = 2,
};

/** Which kernels this CPU can run: bit k set means kernel k is available. */
int vox_kernels_available(void);
/** The shipped activation tables (normative, docs/format.md): 0 = SIG, 1 = TANH, 1025 entries each. */
const int32_t *vox_activation_table(int which);

/** The fastest available kernel. */
int vox_kernel_best(void);

/**
 * A quantised LSTM predictor. Gates are ordered i, f, g, o (rows 0..H-1, H..2H-1, ...).
 * W holds 4H rows of K = I + H int16 weights (Q12): the first I columns multiply the
 * step input x_t (Q12), the next H the previous hidden state h (Q12). b is Q24.
 * The output is y = bo + sum_j Wo[j] * h_T[j] (fixed point with F fraction bits, F given
 * by the model file; the slab coder shifts it to voxel units).
 * Build with vox_model_new; the packed copy used by the SIMD kernels is made there.
 */
typedef struct vox_model vox_model;

/** H must be a multiple of 4, 1 <= I <= 256, 1 <= T <= 1024, H <= 512. NULL on bad sizes. */
vox_model *vox_model_new(int H, int I, int T, const int16_t *W, const int32_t *b,
                         const int16_t *Wo, int32_t bo);
/** Activation functions of a model (docs/format.md "Predictor arithmetic"). */
enum { VOX_ACT_TABLES = 0, VOX_ACT_QUADRATIC = 1 };
/** vox_model_new with a choice of activations (VOX_ACT_*); NULL on an unknown one. */
vox_model *vox_model_new_act(int H, int I, int T, const int16_t *W, const int32_t *b,
                             const int16_t *Wo, int32_t bo, int act);
/** The activations themselves, for tests: which 0 = sigmoid, 1 = tanh; z in Q12, result Q14. */
int32_t vox_activation(int act, int which, int32_t z);
void vox_model_free(vox_model *m);
/** The model's hidden size H, step input size I and sequence length T. */
void vox_model_shape(const vox_model *m, int *H, int *I, int *T);

/**
 * Runs the LSTM on n sequences. x holds n * T * I int16 inputs (Q12): sequence s, step t,
 * slot i at x[(s * T + t) * I + i]. y receives n outputs (wrapped to int32).
 * kernel: one of VOX_KERNEL_*; an unavailable kernel falls back to the scalar one.
 * Returns 0, or -1 if scratch memory could not be allocated.
 */
int vox_lstm_run(const vox_model *m, int n, const int16_t *x, int32_t *y, int kernel);

/*
 * The same computation, split by what each part depends on (docs/design.md, "LSTM work split
 * by dependency"). The gate pre-activation of step t is
 *     A_t = b + W_x x_t + W_h h_{t-1}        (mod 2^32)
 * and its parts can be computed at different times and in any order: the results are
 * bit-identical to vox_lstm_run with any kernel.
 */

/** Bytes of workspace vox_lstm_run_ws needs for n sequences (allocate once, reuse). */
size_t vox_lstm_workspace_size(const vox_model *m, int n);
/** vox_lstm_run with caller-provided scratch (vox_lstm_workspace_size(m, n) bytes, 4-aligned). */
int vox_lstm_run_ws(const vox_model *m, int n, const int16_t *x, int32_t *y, int kernel, void *ws);

/**
 * Input projection of n step inputs: pre[s][j] = b[j] + sum_{i<I} W[j][i] * x[s * xstride + i]
 * for s < n, j < 4H. Many vectors per weight load (a matrix-matrix product); the vectors may
 * be steps of one sequence or of many. Reads exactly I inputs per vector.
 */
void vox_lstm_input_proj(const vox_model *m, int n, const int16_t *x, size_t xstride, int32_t *pre, int kernel);

/**
 * Runs steps t0..t1-1 of n sequences from the state (h[s][H], c[s][H]) (updated in place):
 * A_t = pre[s * pre_stride + (t - t0) * 4H + j] + W_h h_{t-1}, i.e. pre holds each step's
 * precomputed partial sum (the input projection with the bias, plus anything else).
 * zero_state: start from h = c = 0 (h and c need not be initialised). acc: n * 4H scratch.
 */
void vox_lstm_steps(const vox_model *m, int n, int t0, int t1, const int32_t *pre, size_t pre_stride,
                    int16_t *h, int32_t *c, int zero_state, int32_t *acc, int kernel);

/** y[s] = bo + sum_j Wo[j] * h[s][j] (mod 2^32). */
void vox_lstm_output(const vox_model *m, int n, const int16_t *h, int32_t *y);

/**
 * The per-voxel remainder for predictors with left voxels (the slab coder's split path).
 * Inputs are x_k = (v_k - a) << s with a the anchor, which depends on the left voxel; with
 * a reference value R known in advance and no input saturated,
 *     W_x x = W_x ((v - R) << s) - ((a - R) << s) * sum_k W_x[:, k]        (mod 2^32)
 * so the first term of every step can be projected for a whole row beforehand (pre, with
 * vox_lstm_input_proj; the left-neighbour columns left at zero), and per voxel only
 * dA = (a - R) << s, the left columns, the recurrent term and the activations remain.
 * vox_split_new takes the neighbourhood's input slots (t * I + i) and which are left voxels;
 * those columns are excluded from the sums S_t and supplied per voxel in xl, in neighbour
 * order. Steps t < tv have all-zero inputs (slices before the slab): their state is constant
 * and precomputed, and pre is not read for them.
 */
typedef struct vox_lstm_split vox_lstm_split;
vox_lstm_split *vox_split_new(const vox_model *m, int n_cols, const int32_t *slot, const uint8_t *is_left);
void vox_split_free(vox_lstm_split *sp);
/** y of one voxel: pre[T][4H] as above, dA = (a - R) << s (mod 2^32), xl the left inputs. */
int32_t vox_lstm_voxel(const vox_lstm_split *sp, const int32_t *pre, int32_t dA, int tv, const int16_t *xl, int kernel);

/* ---- slab coder --------------------------------------------------------------------- */

typedef struct {
    int32_t nx, ny, nz;     /* slab dimensions; voxels are [nz][ny][nx], x fastest */
    int32_t vmin, vmax;     /* valid voxel range of the dtype */
    int32_t pad;            /* value used where no causal neighbour exists at all */
    int32_t left;           /* 1: predictions may use voxels left of the target in its row */
    int32_t norm_shift;     /* r: one normalised unit is 2^r voxel units */
    int32_t out_shift;      /* LSTM output y (Q_F) becomes voxels as y >> out_shift, out_shift = F - r */
    int32_t kernel;         /* VOX_KERNEL_* for the LSTM */
    const vox_model *model; /* NULL: classical predictor only */
    /* neighbourhood (LSTM input), in sequence order; dz <= 0 and causal */
    int32_t n_nb;
    const int32_t *nb_dx, *nb_dy, *nb_dz;
    const int32_t *nb_slot; /* position t * I + i of each neighbour in the input sequence */
    int32_t reference;      /* 1: the monolithic path with the scalar kernel (what the split path must equal; tests) */
    int64_t *stats;         /* NULL, or receives [0] voxels predicted by the split path, [1] by the monolithic one */
    int32_t stage;          /* residual stage: 0 = format v1/v2 rules; 1 = format v3 (sign-pattern contexts and,
                               on slices with left voxels, a sign-sign LMS filter over neighbouring residuals);
                               2 = format v4 (v3 and the floor-distance contexts) */
} vox_slab_params;

enum {
    VOX_OK = 0,
    VOX_ERR_PARAM = -1,   /* inconsistent parameters */
    VOX_ERR_NOMEM = -2,
    VOX_ERR_CORRUPT = -3, /* decoded a voxel outside the valid range: the stream is damaged */
    VOX_ERR_RANGE = -4,   /* encoder input outside [vmin, vmax] */
    VOX_ERR_ABORT = -5,   /* stopped: a slice callback asked to stop, or another slice failed first */
};

/**
 * Encodes one slab. On success returns the number of bytes in *out (malloc'ed; free with
 * vox_free). On failure returns a negative VOX_ERR_* code and *out is NULL.
 */
int64_t vox_encode_slab(const vox_slab_params *p, const int32_t *vox, uint8_t **out);

/** Decodes one slab of p->nx * p->ny * p->nz voxels into vox. Returns VOX_OK or VOX_ERR_*.
 *  Never reads outside in[0..len), always terminates. */
int vox_decode_slab(const vox_slab_params *p, const uint8_t *in, size_t len, int32_t *vox);

/**
 * Computes, for every voxel of a slab (all of them already known), the values the coder
 * would use: the classical (anchor) prediction and, if model != NULL, the final prediction.
 * For tests and for training-sample generation. anchor and pred may be NULL.
 */
int vox_predict_slab(const vox_slab_params *p, const int32_t *vox, int32_t *anchor, int32_t *pred);

/**
 * Gathers LSTM inputs for the voxels at the given flat indices of a slab (training samples):
 * x receives count * T * I int16 (as vox_lstm_run expects), anchor count values.
 * Requires p->model (for T and I) or explicit T, I >= 1 given here.
 */
int vox_gather_inputs(const vox_slab_params *p, int T, int I, const int32_t *vox,
                      const int64_t *index, int64_t count, int16_t *x, int32_t *anchor);

/*
 * Format v2 slabs (docs/format.md, "Slab coding, version 2"): one range-coded stream per
 * slice; slice z starts from the coder state slice z-1 had after its first
 * min(state_rows, ny) rows and is predicted with the stream's predictor (pred 0) or the
 * classical predictor with left voxels (pred 1, LSTM streams only).
 */

/**
 * Encodes a slab as v2 slices. With `choose` (and a model), each slice is coded with both
 * predictors and the shorter is kept. *out receives the slices' streams back to back
 * (free with vox_free), slice_len[z] and slice_pred[z] each slice's length and predictor.
 * Returns the total length or a negative VOX_ERR_* code.
 */
int64_t vox_encode_slab_v2(const vox_slab_params *p, int32_t state_rows, int32_t choose, const int32_t *vox,
                           uint8_t **out, uint32_t *slice_len, uint8_t *slice_pred);

/** Called once per decoded slice, in slice order; return nonzero to stop decoding. */
typedef int32_t (*vox_slice_cb)(void *ctx, int32_t z);

/**
 * Decodes a v2 slab: slice z's stream is data[z] (len[z] bytes), its predictor pred[z].
 * With threads > 1 slices run as a wavefront on that many threads (slice z a few rows
 * behind slice z-1); the result is the same for any thread count. cb(ctx, z) runs when
 * slice z is complete (its voxels are final). Returns VOX_OK or VOX_ERR_*; on failure
 * *failed_slice names the slice that failed (-1 if none did).
 */
int vox_decode_slab_v2(const vox_slab_params *p, int32_t state_rows, const uint8_t *const *data, const size_t *len,
                       const uint8_t *pred, int32_t *vox, int32_t threads, vox_slice_cb cb, void *ctx,
                       int32_t *failed_slice);

void vox_free(void *ptr);

#ifdef __cplusplus
}
#endif
#endif
