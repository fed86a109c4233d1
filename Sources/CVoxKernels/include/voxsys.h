/* Process settings that Swift cannot reach (glibc macros and malloc.h). */
#ifndef VOXSYS_H
#define VOXSYS_H
/* Tunes glibc's malloc for a long-running daemon that allocates and frees large slab buffers:
 * at most `arenas` arenas (M_ARENA_MAX: otherwise each thread that allocates gets one, and memory
 * freed in it stays there), and a fixed mmap threshold of `mmap_bytes` (M_MMAP_THRESHOLD: glibc
 * otherwise raises it to the size of the last large block freed, after which slab-sized buffers
 * come from the heap, fragment it and are never returned). Returns 1 on success. */
int vox_tune_malloc(int arenas, int mmap_bytes);
/* Lowers the calling thread's scheduling priority by `inc` nice steps (Linux: nice is per
 * thread, and threads it creates inherit it). Background slab prefetch runs at +10, so that
 * the decode a reader waits for gets the cores first. Returns 0 on success. */
int vox_thread_nice(int inc);
#endif
