/*
 * The adaptive binary range coder of the slab coder (coder.c): LZMA-style carry handling,
 * two-rate probability estimates with counted adaptation (format v4). Private to CVoxKernels;
 * included once, by coder.c.
 */
#ifndef VOX_RANGECODER_H
#define VOX_RANGECODER_H
#include <stdint.h>
#include <stdlib.h>

/* ---- adaptive binary range coder (LZMA-style carry handling) ---- */

/* Two estimates of P(bit = 1), rates 1/16 and 1/128, and n, the number of updates so far
 * (saturating at 255). Format v4 starts n at 0: the k-th update (n = k - 1) uses rate
 * 2^-min(l, 4) and 2^-min(l, 7), l = 1 + floor(log2(n + 1)), so a fresh estimate moves fast
 * (1/2, 1/4, 1/4, 1/8, ...) and slows to the fixed rates once it has seen 64 bits. Formats
 * v1-v3 start n at 255, where l = 9 gives the fixed rates from the first bit: one update rule
 * for every version. */
typedef struct { uint16_t a, b, n; } prob_t;

#define PROB_INIT_FIXED {32768, 32768, 255}
#define PROB_INIT_COUNTED {32768, 32768, 0}

static inline uint32_t prob_get(const prob_t *p) {
    uint32_t v = ((uint32_t)p->a + p->b + 1) >> 1;
    if (v < 64) v = 64;
    if (v > 65472) v = 65472;
    return v;
}
static inline void prob_update(prob_t *p, int bit) {
    int32_t target = bit ? 65535 : 0;
    if (__builtin_expect(p->n >= 63, 1)) {   /* l >= 7: the fixed rates (v1-v3 always) */
        p->a = (uint16_t)((int32_t)p->a + ((target - (int32_t)p->a) >> 4));
        p->b = (uint16_t)((int32_t)p->b + ((target - (int32_t)p->b) >> 7));
        return;
    }
    const int l = 32 - __builtin_clz((uint32_t)p->n + 1); /* 1 + floor(log2(n + 1)) */
    const int sa = l < 4 ? l : 4;
    p->a = (uint16_t)((int32_t)p->a + ((target - (int32_t)p->a) >> sa));
    p->b = (uint16_t)((int32_t)p->b + ((target - (int32_t)p->b) >> l));
    p->n++;
}

typedef struct {
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    uint64_t cache_size;
    uint8_t *buf;
    size_t len, cap;
    int oom;
} rc_enc;

typedef struct {
    uint32_t range, code;
    const uint8_t *p, *end;
} rc_dec;

static void enc_put(rc_enc *e, uint8_t b) {
    if (e->len == e->cap) {
        size_t nc = e->cap ? e->cap * 2 : 65536;
        uint8_t *nb = realloc(e->buf, nc);
        if (!nb) { e->oom = 1; return; }
        e->buf = nb; e->cap = nc;
    }
    e->buf[e->len++] = b;
}

static void enc_shift_low(rc_enc *e) {
    if ((uint32_t)e->low < 0xFF000000u || (e->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(e->low >> 32);
        uint8_t temp = e->cache;
        do { enc_put(e, (uint8_t)(temp + carry)); temp = 0xFF; } while (--e->cache_size != 0);
        e->cache = (uint8_t)(e->low >> 24);
    }
    e->cache_size++;
    e->low = (e->low & 0x00FFFFFFu) << 8;
}

static inline void enc_bit_p(rc_enc *e, uint32_t p1, int bit) {
    uint32_t bound = (e->range >> 16) * p1;
    if (bit) e->range = bound;
    else { e->low += bound; e->range -= bound; }
    while (e->range < (1u << 24)) { e->range <<= 8; enc_shift_low(e); }
}
static inline void enc_bit(rc_enc *e, prob_t *p, int bit) { enc_bit_p(e, prob_get(p), bit); prob_update(p, bit); }

static inline uint8_t dec_byte(rc_dec *d) { return d->p < d->end ? *d->p++ : 0; }

static inline int dec_bit_p(rc_dec *d, uint32_t p1) {
    uint32_t bound = (d->range >> 16) * p1;
    int bit;
    if (d->code < bound) { d->range = bound; bit = 1; }
    else { d->code -= bound; d->range -= bound; bit = 0; }
    while (d->range < (1u << 24)) { d->range <<= 8; d->code = (d->code << 8) | dec_byte(d); }
    return bit;
}
static inline int dec_bit(rc_dec *d, prob_t *p) { int b = dec_bit_p(d, prob_get(p)); prob_update(p, b); return b; }
/* The same decisions without a data-dependent branch (selects instead), for bits the caller
 * does not branch on (mantissa bits): a mispredicted branch per bit costs more than the selects. */
static inline int dec_bit_p_sel(rc_dec *d, uint32_t p1) {
    uint32_t bound = (d->range >> 16) * p1;
    uint32_t bit = d->code < bound;
    uint32_t keep = 0u - bit; /* all ones when bit = 1 */
    d->code -= bound & ~keep;
    d->range = (bound & keep) | ((d->range - bound) & ~keep);
    while (d->range < (1u << 24)) { d->range <<= 8; d->code = (d->code << 8) | dec_byte(d); }
    return (int)bit;
}
static inline int dec_bit_sel(rc_dec *d, prob_t *p) {
    int b = dec_bit_p_sel(d, prob_get(p));
    prob_update(p, b);
    return b;
}

#endif
