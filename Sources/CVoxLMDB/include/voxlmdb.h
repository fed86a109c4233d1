/*
 * LMDB reads that survive a damaged archive.
 *
 * LMDB trusts the pages it maps: a damaged node (a key or data size, a page number inside a
 * page) can make it read past the end of the file (SIGBUS) or outside the map (SIGSEGV). An
 * archive is input from elsewhere, so every read VoxFS makes goes through these wrappers: they
 * run the LMDB call and copy what it returns under a fault guard (sigsetjmp, and a SIGSEGV/
 * SIGBUS handler that jumps back only when the faulting thread is inside a guard; any other
 * fault goes on to the handler that was installed before). A fault is reported as
 * VOXLMDB_FAULT, which the caller turns into "the archive is damaged". The copies are
 * malloc'd: free them with free().
 */
#ifndef VOXLMDB_H
#define VOXLMDB_H
#include <lmdb.h>
#include <stddef.h>

/* Returned when LMDB faulted on a damaged page (outside LMDB's own error codes). */
#define VOXLMDB_FAULT (-30700)

/* mdb_get; on success *val is a malloc'd copy of the value (NULL for an empty one), *len its size. */
int voxlmdb_get(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, void **val, size_t *len);
/* voxlmdb_get for a value read once (a slab a decode copies out), in a read-only transaction
 * only: after the copy, the whole
 * pages of a value of VOXLMDB_ONCE_MIN bytes or more are released from this process's map
 * (madvise MADV_DONTNEED on the read-only file mapping), so that a long-running reader's
 * resident memory does not grow with the archive pages it has read. */
#define VOXLMDB_ONCE_MIN 65536
int voxlmdb_get_once(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, void **val, size_t *len);
/* mdb_get without a copy: only the value's size. */
int voxlmdb_size(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, size_t *len);
/* mdb_cursor_get; with MDB_SET_RANGE, (key, klen) is the key to start at. On success *kout and
 * *vout are malloc'd copies of the key and value. */
int voxlmdb_cursor_get(MDB_cursor *c, MDB_cursor_op op, const void *key, size_t klen,
                       void **kout, size_t *koutlen, void **vout, size_t *voutlen);
/* mdb_dbi_open and mdb_stat under the guard. */
int voxlmdb_dbi_open(MDB_txn *txn, const char *name, unsigned int flags, MDB_dbi *dbi);
int voxlmdb_stat(MDB_txn *txn, MDB_dbi dbi, MDB_stat *st);

/* Test hook: runs a read of one byte at `addr` under the guard (1 if it faulted, else 0). */
int voxlmdb_probe(const volatile unsigned char *addr);
#endif
