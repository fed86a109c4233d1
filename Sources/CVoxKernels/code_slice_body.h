/*
 * The body of code_slice (coder.c), compiled twice: once for any x86-64 (and other) CPU, once
 * for AVX2 CPUs, where the format v3 residual filter runs on vectors (8 taps per register) and
 * the compiler may use AVX2 elsewhere. Both compute exactly the same integers
 * (the filter's products are summed in int64, whose addition is associative). Included by
 * coder.c with CS_NAME, CS_ATTR, SPLIT_ROW, BATCH_GATHER and the LMS_* macros defined, which it undefines at
 * the end; not a header of its own.
 */
/*
 * Codes slice z with the coder C (CS_MODE: 0 encodes, 1 decodes, 2 only predicts; one walk,
 * compiled once per use, so that encoder and decoder cannot see different predictions): with the slab's model when use_model (else the classical
 * predictor alone), seeing left voxels when `left`. When snap is set, the coder state after
 * the first snap_rows rows is copied there (before those rows are published).
 */
CS_ATTR static int CS_NAME(slab_t *B, scratch_t *s, coder_t *C, int z, int use_model, int left, cstate_t *snap, int snap_rows) {
    const vox_slab_params *p = B->p;
    const int nx = p->nx, ny = p->ny;
    const size_t plane = (size_t)nx * ny;
    int32_t *vox = B->vox;
    const vox_model *model = use_model ? p->model : NULL;
    const int T = B->T, I = B->I;
    const nbgeo_t *geo = &B->geo;
    walk_t w;
    memset(&w, 0, sizeof w);
    w.p = p; w.vox = vox; w.eI = B->eI; w.eX = B->eX; w.res = B->res; w.left = left;
    w.e1b = s->e1b; w.e2b = s->e2b; w.a0 = s->a0; w.x0 = s->x0;
    w.ci = (size_t)(z % B->np) * plane;
    w.pi = z > 0 ? (size_t)((z - 1) % B->np) * plane : 0;
    const size_t ci = w.ci, pi = w.pi;
    split_t *S = &s->S;
    const int split_on = model && left && S->on;
    const int batch = model && !left;
    const int kern = p->reference ? VOX_KERNEL_SCALAR : p->kernel;
    const int stage = p->stage, lms_on = stage && left;
    /* the filter's weights live in a local copy (kept in registers, not reloaded after every
     * store to the planes) and go back into the coder state before it is copied or returned */
    LMS_DECL;
    const int32_t lmu = model ? LMS_MU_LSTM : LMS_MU_CLASS;
    uint32_t (*alpha_cost)[NALPHA] = C->st.alpha_cost;
    int32_t lastbase_res = 0;
    int rc = VOX_OK;
    for (int y = 0; y < ny && rc == VOX_OK; y++) {
        if (!wait_rows(B, z, y)) return VOX_ERR_ABORT;
        int32_t *row = vox + (size_t)z * plane + (size_t)y * nx;
        const size_t o = (size_t)y * nx;
        const int tv = split_on ? split_tv(S, z) : 0;
        if (split_on) SPLIT_ROW(S, p, geo, vox, y, z, p->kernel);
        row_prep(&w, y, z, stage);
        if (lms_on) LMS_ROW;
        const int k0 = model && geo->on ? nbgeo_first(p, z) : 0;
        if (batch) {
            for (int x = 0; x < nx; x++) {
                s->anch[x] = classical(&w, x, y, z);
                s->p1s[x] = w.p1; s->p2s[x] = w.p2;
            }
            /* [xa, xe): the inputs BATCH_GATHER made (none in the generic build) */
            int xa = nx, xe = nx;
            BATCH_GATHER(xa, xe);
            for (int x = 0; x < nx; x++) {
                if (x >= xa && x < xe) continue;
                if (nbgeo_inside(geo, p, x, y)) gather_inside(p, geo, row + x, k0, T, I, s->anch[x], s->X + (size_t)x * T * I);
                else gather(p, vox, T, I, x, y, z, s->anch[x], s->X + (size_t)x * T * I);
            }
            if (vox_lstm_run_ws(model, nx, s->X, s->ys, kern, s->ws) != 0) { rc = VOX_ERR_NOMEM; break; }
            for (int x = 0; x < nx; x++) s->preds[x] = lstm_pred(p, s->anch[x], s->ys[x]);
        }
        for (int x = 0; x < nx; x++) {
            int32_t a, pr, q1, q2;
            if (batch) { a = s->anch[x]; q1 = s->p1s[x]; q2 = s->p2s[x]; pr = s->preds[x]; }
            else {
                a = classical(&w, x, y, z); q1 = w.p1; q2 = w.p2;
                pr = a;
                if (model) {
                    int32_t yv;
                    if (split_on && split_voxel(S, p, row, x, a, tv, p->kernel, &yv)) s->nsplit++;
                    else {
                        s->nmono++;
                        if (nbgeo_inside(geo, p, x, y)) gather_inside(p, geo, row + x, k0, T, I, a, s->X);
                        else gather(p, vox, T, I, x, y, z, a, s->X);
                        if (vox_lstm_run_ws(model, 1, s->X, &yv, kern, s->ws) != 0) { rc = VOX_ERR_NOMEM; break; }
                    }
                    pr = lstm_pred(p, a, yv);
                }
            }
            /* entropy context from neighbouring residuals (left one included) */
            uint32_t act = w.a0[x]; /* the upper row's and previous slice's terms (row_prep) */
            int sc = 0;
            if (x > 0) {
                int32_t rw = w.res[ci + o + x - 1];
                act += 2 * (uint32_t)iabs(rw);
                sc = rw > 0 ? 1 : (rw < 0 ? 2 : 0);
            }
            if (z > 0) act += (uint32_t)iabs(q1 - q2) >> 1;
            if (stage) /* format v3: four more residuals, at half weight, steady the estimate */
                act += (w.x0[x] + (x > 1 ? (uint32_t)iabs(w.res[ci + o + x - 2]) : 0)) >> 1;
            int c = activity_ctx(act);
            /* format v3: the sign context is the sign pattern of the left and upper residuals,
             * and with left voxels the residual filter corrects the prediction */
            LMS_TAPS_DECL;
            if (stage) sc = 3 * sc + (y > 0 ? sgn3(w.res[ci + o - nx + x]) : 0);
            if (lms_on) {
                int64_t acc;
                LMS_PREDICT(acc);
                pr = clampv((int64_t)pr + ((acc + (1 << (LMS_Q - 1))) >> LMS_Q), p->vmin, p->vmax);
            }
            /* left-residual correction: without left voxels the predictor never saw the
             * voxel to its left, but the coder has it; add alpha * (its residual), alpha
             * the candidate with the smallest recent error (identical in the decoder). */
            int32_t rl = 0, base = pr;
            if (!left && x > 0) {
                rl = lastbase_res;
                const int best = alpha_best(alpha_cost[c]);
                pr = clampv((int64_t)pr + (((int64_t)rl * ALPHA[best] + 4) >> 3), p->vmin, p->vmax);
            }
            /* format v4: the probabilities also depend on the prediction's distance to the floor;
             * the common far case on a predicted branch (the CPU can speculate past pr), the
             * empty asm keeps the compiler from turning it into a select */
            int cm = c;
            if (stage >= 2) {
                if (__builtin_expect((int64_t)pr - p->pad >= FLOOR_FAR, 1)) { cm = c + NCTX * (NFLOOR - 1); __asm__("" : "+r"(cm)); }
                else cm = c + NCTX * floor_ctx(pr, p->pad);
            }
            int32_t v;
#if CS_MODE == 0 /* encode */
            v = row[x];
            enc_residual(&C->enc, &C->st.model, cm, sc, v - pr);
            if (C->enc.oom) { rc = VOX_ERR_NOMEM; break; }
#elif CS_MODE == 1 /* decode */
            const int64_t vv = (int64_t)pr + dec_residual(&C->dec, &C->st.model, cm, sc);
            if (vv < p->vmin || vv > p->vmax) { rc = VOX_ERR_CORRUPT; break; }
            v = (int32_t)vv;
            row[x] = v;
#else /* predict only */
            v = row[x];
            if (B->anchor_out) B->anchor_out[(size_t)z * plane + o + x] = a;
            if (B->pred_out) B->pred_out[(size_t)z * plane + o + x] = pr;
#endif
            if (!left && x > 0) alpha_update(alpha_cost[c], v - base, rl);
            if (lms_on && v != pr) {
                const int32_t step = v > pr ? lmu : -lmu;
                LMS_UPDATE(step);
            }
            w.eI[ci + o + x] = iabs(v - q1);
            w.eX[ci + o + x] = iabs(v - q2);
            w.res[ci + o + x] = v - pr;
            lastbase_res = v - base;
        }
        if (rc != VOX_OK) break;
        if (snap && y + 1 == snap_rows) { LMS_STORE; *snap = C->st; }
        publish_row(B, z, y + 1);
    }
    LMS_STORE;
    return rc;
}

#undef CS_NAME
#undef CS_MODE
