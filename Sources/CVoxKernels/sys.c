#include "voxsys.h"
#include <malloc.h>
#include <errno.h>

int vox_tune_malloc(int arenas, int mmap_bytes) {
    return mallopt(M_ARENA_MAX, arenas) && mallopt(M_MMAP_THRESHOLD, mmap_bytes);
}

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

int vox_thread_nice(int inc) {
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, (id_t)tid);
    if (cur == -1 && errno != 0) return -1;
    return setpriority(PRIO_PROCESS, (id_t)tid, cur + inc);
}
