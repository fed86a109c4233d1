#ifndef VOXBLAS_H
#define VOXBLAS_H
/*
 * OpenBLAS, loaded on first use (training and model adaptation only). The codec, the archive
 * and the mount never use BLAS, and linking it into every process would start its thread pool,
 * which spins on a core for a while after start-up (Debian's pthreads build), in every
 * `voxfs decompress`, `unpack` and mount. Before loading, OPENBLAS_NUM_THREADS is set to 1
 * unless the environment already sets it (training runs BLAS single-threaded anyway).
 */

/** Loads libopenblas.so.0 (or $VOXFS_BLAS_LIBRARY) once, thread-safe. 0 on success; else -1 and *error says why. */
int vox_blas_load(const char **error);

/** C = alpha * op(A) * op(B) + beta * C, row-major (cblas_sgemm); vox_blas_load must have succeeded. */
void vox_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc);

/** openblas_get_corename / openblas_get_config ("" when not loaded), openblas_set_num_threads. */
const char *vox_blas_corename(void);
const char *vox_blas_config(void);
void vox_blas_set_threads(int n);

#endif
