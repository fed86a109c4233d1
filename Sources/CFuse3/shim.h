#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <errno.h>
#include <stdlib.h>

/* FUSE_ARGS_INIT and fuse_session_loop_mt are macros (and the loop's symbol is versioned):
   Swift cannot call them, so these inline wrappers do. */

static inline struct fuse_session *voxfs_fuse_session_new(int argc, char **argv,
        const struct fuse_lowlevel_ops *ops, void *userdata) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_session *se = fuse_session_new(&args, ops, sizeof(*ops), userdata);
    fuse_opt_free_args(&args);
    return se;
}

static inline int voxfs_fuse_loop_mt(struct fuse_session *se, unsigned max_threads) {
    struct fuse_loop_config *c = fuse_loop_cfg_create();
    if (!c) return -ENOMEM;
    fuse_loop_cfg_set_max_threads(c, max_threads);
    fuse_loop_cfg_set_clone_fd(c, 0);
    int rc = fuse_session_loop_mt(se, c);
    fuse_loop_cfg_destroy(c);
    return rc;
}

/* fuse_file_info's flags are bit-fields */
static inline void voxfs_fi_set_keep_cache(struct fuse_file_info *fi) { fi->keep_cache = 1; fi->direct_io = 0; }
