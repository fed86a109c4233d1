#include "voxsys.h"
#include <malloc.h>

int vox_tune_malloc(int arenas, int mmap_bytes) {
    return mallopt(M_ARENA_MAX, arenas) && mallopt(M_MMAP_THRESHOLD, mmap_bytes);
}
