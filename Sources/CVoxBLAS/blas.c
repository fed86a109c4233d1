#include "voxblas.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* cblas.h's enum values (CBLAS_ORDER, CBLAS_TRANSPOSE); Debian's OpenBLAS uses 32-bit blasint */
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
static sgemm_fn p_sgemm;
static char *(*p_corename)(void);
static char *(*p_config)(void);
static void (*p_set_threads)(int);
static const char *load_error;
static char load_error_buf[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void) {
    setenv("OPENBLAS_NUM_THREADS", "1", 0); /* 0: an explicit setting of the user's wins */
    const char *name = getenv("VOXFS_BLAS_LIBRARY"); /* another OpenBLAS build; tests name a missing one */
    if (!name || !*name) name = "libopenblas.so.0";
    void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(load_error_buf, sizeof load_error_buf, "%s", dlerror());
        load_error = load_error_buf;
        return;
    }
    p_sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
    p_corename = (char *(*)(void))dlsym(h, "openblas_get_corename");
    p_config = (char *(*)(void))dlsym(h, "openblas_get_config");
    p_set_threads = (void (*)(int))dlsym(h, "openblas_set_num_threads");
    if (!p_sgemm || !p_corename || !p_config || !p_set_threads) {
        p_sgemm = NULL;
        snprintf(load_error_buf, sizeof load_error_buf, "%s lacks cblas_sgemm or the openblas_* functions", name);
        load_error = load_error_buf;
        dlclose(h);
    }
}

int vox_blas_load(const char **error) {
    pthread_once(&once, load);
    if (load_error) {
        if (error) *error = load_error;
        return -1;
    }
    return 0;
}

void vox_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc) {
    if (!p_sgemm) { fputs("voxfs: internal error: BLAS used before vox_blas_load succeeded\n", stderr); abort(); }
    p_sgemm(ROW_MAJOR, trans_a ? TRANS : NO_TRANS, trans_b ? TRANS : NO_TRANS, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

const char *vox_blas_corename(void) { return vox_blas_load(NULL) == 0 ? p_corename() : ""; }
const char *vox_blas_config(void) { return vox_blas_load(NULL) == 0 ? p_config() : ""; }
void vox_blas_set_threads(int n) { if (vox_blas_load(NULL) == 0) p_set_threads(n); }
