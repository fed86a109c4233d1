/*
 * libFuzzer target for the slab coder (make fuzz-long; built with clang's
 * -fsanitize=fuzzer,address,undefined). The first 8 bytes choose the slab shape, the voxel range,
 * left voxels or not, whether a small LSTM model predicts (table or quadratic activations), and the residual stage (format v3's
 * filter and contexts, v4's floor contexts too, or neither); then
 *   mode 0: the rest is a coded slab: vox_decode_slab must return, never read outside its input,
 *           and every voxel it accepted lies in range;
 *   mode 1: the rest is voxels: encode, decode, and the result must equal the input (and encoding
 *           twice gives the same bytes).
 */
#include "voxkernels.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static vox_model *model, *model_q; /* table and quadratic activations (model formats 1 and 2) */
static int32_t nb_dx[12], nb_dy[12], nb_dz[12], nb_slot[12];

static void setup(void) {
    /* T = 3 steps of I = 4 inputs, every neighbour in an earlier row or slice (valid with and
     * without left voxels) */
    static const int32_t off[12][3] = {{0,0,-1},{1,0,-1},{0,1,-1},{-1,0,-1},
                                       {-1,-1,0},{0,-1,0},{1,-1,0},{0,-2,0},
                                       {2,-1,0},{-2,-1,0},{1,-2,0},{-1,-2,0}};
    for (int i = 0; i < 12; i++) { nb_dx[i] = off[i][0]; nb_dy[i] = off[i][1]; nb_dz[i] = off[i][2]; nb_slot[i] = i; }
    enum { H = 8, I = 4, T = 3, K = I + H };
    int16_t W[4 * H * K], Wo[H];
    int32_t b[4 * H];
    uint32_t s = 12345;
    for (int i = 0; i < 4 * H * K; i++) { s = s * 1103515245u + 12345u; W[i] = (int16_t)((int32_t)(s >> 16) % 2048 - 1024); }
    for (int i = 0; i < 4 * H; i++) { s = s * 1103515245u + 12345u; b[i] = (int32_t)(s >> 8) % 4096 - 2048; }
    for (int i = 0; i < H; i++) { s = s * 1103515245u + 12345u; Wo[i] = (int16_t)((int32_t)(s >> 16) % 4096 - 2048); }
    model = vox_model_new(H, I, T, W, b, Wo, 0);
    model_q = vox_model_new_act(H, I, T, W, b, Wo, 0, VOX_ACT_QUADRATIC);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (!model) setup();
    if (n < 8) return 0;
    static const int32_t ranges[3][2] = {{0, 255}, {-32768, 32767}, {0, 65535}};
    vox_slab_params p;
    memset(&p, 0, sizeof p);
    p.nx = 1 + d[0] % 24; p.ny = 1 + d[1] % 24; p.nz = 1 + d[2] % 4;
    const int r = d[3] % 3;
    p.vmin = ranges[r][0]; p.vmax = ranges[r][1];
    p.pad = r == 1 ? 0 : p.vmin;
    p.left = d[4] & 1;
    p.model = (d[4] & 2) ? ((d[4] & 8) ? model_q : model) : NULL;
    p.stage = (d[4] >> 2) & 1 ? 1 + ((d[4] >> 4) & 1) : 0;   /* 0: v1/v2, 1: v3, 2: v4 */
    p.norm_shift = 7; p.out_shift = 12 - 7;
    p.kernel = d[5] % 3;                       /* an unavailable kernel falls back to scalar */
    p.n_nb = 12; p.nb_dx = nb_dx; p.nb_dy = nb_dy; p.nb_dz = nb_dz; p.nb_slot = nb_slot;
    const size_t nv = (size_t)p.nx * p.ny * p.nz;
    int32_t *vox = calloc(nv, sizeof *vox);
    if (!vox) return 0;
    const uint8_t *rest = d + 8;
    const size_t len = n - 8;
    if ((d[6] & 1) == 0) {
        /* decode: copy the input so ASan sees any read past its end */
        uint8_t *in = malloc(len ? len : 1);
        memcpy(in, rest, len);
        if (vox_decode_slab(&p, in, len, vox) == VOX_OK)
            for (size_t i = 0; i < nv; i++) if (vox[i] < p.vmin || vox[i] > p.vmax) __builtin_trap();
        free(in);
    } else {
        for (size_t i = 0; i < nv; i++) {
            uint32_t v = i < len ? rest[i] : (uint32_t)(i * 2654435761u >> 24);
            if (r != 0 && 2 * i + 1 < len) v = v | (uint32_t)rest[2 * i + 1] << 8;
            int64_t x = (int64_t)v + p.vmin;
            vox[i] = (int32_t)(x > p.vmax ? p.vmax : x);
        }
        uint8_t *a = NULL, *b = NULL;
        int64_t na = vox_encode_slab(&p, vox, &a), nb = vox_encode_slab(&p, vox, &b);
        if (na < 0 || nb != na || memcmp(a, b, (size_t)na) != 0) __builtin_trap();
        int32_t *back = calloc(nv, sizeof *back);
        if (vox_decode_slab(&p, a, (size_t)na, back) != VOX_OK || memcmp(back, vox, nv * sizeof *vox) != 0) __builtin_trap();
        free(back); vox_free(a); vox_free(b);
    }
    free(vox);
    return 0;
}
