/* Fault-guarded LMDB reads: see include/voxlmdb.h. */
#include "voxlmdb.h"
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdint.h>

/* set while this thread is inside a guard; volatile, and fenced below, so that the compiler
 * neither drops the store (it is overwritten with NULL right after the guarded read) nor moves
 * the guarded read outside the window */
static __thread sigjmp_buf *volatile guard_jmp;
static struct sigaction previous_segv, previous_bus;
static pthread_once_t installed = PTHREAD_ONCE_INIT;

static void on_fault(int sig, siginfo_t *info, void *ctx) {
    sigjmp_buf *jb = guard_jmp;
    if (jb) { guard_jmp = NULL; siglongjmp(*jb, 1); }
    /* not a guarded read: hand the fault to whoever handled it before (the Swift runtime's
     * backtracer, or the default action); returning re-runs the faulting instruction */
    const struct sigaction *prev = sig == SIGBUS ? &previous_bus : &previous_segv;
    if ((prev->sa_flags & SA_SIGINFO) && prev->sa_sigaction) { prev->sa_sigaction(sig, info, ctx); return; }
    if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN && prev->sa_handler) { prev->sa_handler(sig); return; }
    signal(sig, SIG_DFL);
}

static void install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
    sigaction(SIGBUS, &sa, &previous_bus);
}

/* GUARD_BEGIN ... GUARD_END: a fault in between jumps to the function's `faulted:` label,
 * which frees what the body left half done (such locals are volatile). */
#define GUARD_BEGIN                                   \
    pthread_once(&installed, install);                \
    sigjmp_buf jb;                                    \
    if (sigsetjmp(jb, 1) != 0) { guard_jmp = NULL; goto faulted; } \
    guard_jmp = &jb;                                  \
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
#define GUARD_END __atomic_signal_fence(__ATOMIC_SEQ_CST); guard_jmp = NULL;

/* The whole pages of a value, released from this process's page tables (the file's pages stay
 * in the page cache; a later read faults them back in). Only for read-only transactions, whose
 * values all lie in the file's read-only shared map. */
static void drop_pages(const void *p, size_t n) {
    if (n < VOXLMDB_ONCE_MIN) return;
    const long pgs = sysconf(_SC_PAGESIZE);
    const uintptr_t pg = pgs > 0 ? (uintptr_t)pgs : 0;
    if (pg == 0 || (pg & (pg - 1)) != 0) return;
    const uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1), b = ((uintptr_t)p + n) & ~(pg - 1);
    if (b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

/* mdb_get and the copy out of the map under the guard; `once`: then release the value's pages */
static int get_copy(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, void **val, size_t *len, int once) {
    void *volatile out = NULL;
    *val = NULL; *len = 0;
    MDB_val k = { klen, (void *)key }, v = { 0, NULL };
    int rc;
    GUARD_BEGIN
    rc = mdb_get(txn, dbi, &k, &v);
    if (rc == 0) {
        if (v.mv_size > ((size_t)1 << 40)) { GUARD_END return VOXLMDB_FAULT; }
        out = malloc(v.mv_size ? v.mv_size : 1);
        if (!out) { GUARD_END return ENOMEM; }
        memcpy(out, v.mv_data, v.mv_size);
    }
    GUARD_END
    if (rc == 0) {
        if (once) drop_pages(v.mv_data, v.mv_size);
        *val = out; *len = v.mv_size;
    }
    return rc;
faulted:
    free(out);
    return VOXLMDB_FAULT;
}

int voxlmdb_get(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, void **val, size_t *len) {
    return get_copy(txn, dbi, key, klen, val, len, 0);
}

int voxlmdb_get_once(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, void **val, size_t *len) {
    return get_copy(txn, dbi, key, klen, val, len, 1);
}

int voxlmdb_size(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, size_t *len) {
    MDB_val k = { klen, (void *)key }, v = { 0, NULL };
    int rc;
    *len = 0;
    GUARD_BEGIN
    rc = mdb_get(txn, dbi, &k, &v);
    GUARD_END
    if (rc == 0) *len = v.mv_size;
    return rc;
faulted:
    return VOXLMDB_FAULT;
}

int voxlmdb_cursor_get(MDB_cursor *c, MDB_cursor_op op, const void *key, size_t klen,
                       void **kout, size_t *koutlen, void **vout, size_t *voutlen) {
    void *volatile ko = NULL, *volatile vo = NULL;
    *kout = *vout = NULL; *koutlen = *voutlen = 0;
    MDB_val k = { klen, (void *)key }, v = { 0, NULL };
    int rc;
    GUARD_BEGIN
    rc = mdb_cursor_get(c, &k, &v, op);
    if (rc == 0) {
        if (k.mv_size > 4096 || v.mv_size > ((size_t)1 << 40)) { GUARD_END return VOXLMDB_FAULT; }
        ko = malloc(k.mv_size ? k.mv_size : 1);
        vo = malloc(v.mv_size ? v.mv_size : 1);
        if (!ko || !vo) { GUARD_END free(ko); free(vo); return ENOMEM; }
        memcpy(ko, k.mv_data, k.mv_size);
        memcpy(vo, v.mv_data, v.mv_size);
    }
    GUARD_END
    if (rc == 0) { *kout = ko; *koutlen = k.mv_size; *vout = vo; *voutlen = v.mv_size; }
    return rc;
faulted:
    free(ko); free(vo);
    return VOXLMDB_FAULT;
}

int voxlmdb_dbi_open(MDB_txn *txn, const char *name, unsigned int flags, MDB_dbi *dbi) {
    int rc;
    GUARD_BEGIN
    rc = mdb_dbi_open(txn, name, flags, dbi);
    GUARD_END
    return rc;
faulted:
    return VOXLMDB_FAULT;
}

int voxlmdb_stat(MDB_txn *txn, MDB_dbi dbi, MDB_stat *st) {
    int rc;
    GUARD_BEGIN
    rc = mdb_stat(txn, dbi, st);
    GUARD_END
    return rc;
faulted:
    return VOXLMDB_FAULT;
}

int voxlmdb_probe(const volatile unsigned char *addr) {
    volatile unsigned char sink = 0;
    GUARD_BEGIN
    sink = *addr;
    GUARD_END
    (void)sink;
    return 0;
faulted:
    return 1;
}
