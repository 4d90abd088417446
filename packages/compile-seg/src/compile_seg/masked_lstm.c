/* Fused masked LSTM passes of compile_seg (see lstm.py for the maths).
 *
 * Plain C11 (GNU vector extensions), no Python or torch headers: compiled on first use by
 * compkit_utils.native and called through ctypes once per pass. Row-major float32 buffers;
 * B rows, H hidden units (H % 32 == 0), G = 4H gates in the kernels' common order (i, f, g', o),
 * torch.nn.LSTM's, where the g' pre-activation is doubled so that tanh(z_g) = 2 sigmoid(2 z_g) - 1.
 * Float rule and argument passing as in native_common.h: the entry points take a pointer to
 * lstm_fwd_args / lstm_bwd_args, mirrored by ctypes structures in lstm.py and checked
 * against masked_lstm_layout() when the library is loaded.
 *
 * Batch rows are independent in the recurrence, so a pass splits the rows into blocks and
 * each thread runs every time step of its blocks with no synchronisation; the matrix
 * products are small register-blocked kernels (the recurrent product is (rows, H) x (H, G)
 * per step, where a BLAS call costs more in dispatch than in work).
 * Results are bit-identical for any number of threads: every row's values are computed the
 * same way whichever block holds it, and the sums over rows of the backward pass (the
 * recurrent weight's gradient and, for a shared table, the table's) are accumulated per
 * chunk of BWD_CHUNK rows, a split fixed by B alone, then added in chunk order.
 *
 * The shared primitives (gemm, sigmoid_n, FTZ_BEGIN/FTZ_END, run_jobs, MR) come from
 * compkit_utils' native_common.h, which lstm.py prepends to this file.
 */
/* The elementwise part of one forward step for B rows.
 *   pre   (B, 4H) gate pre-activations x_t W_ih^T + b + h_{t-1} W_hh^T (g' rows doubled)
 *   cprev (B, H)  masked cell state c_{t-1}, or NULL at t = 0
 *   w     (B,)    mask w_t, or NULL for no mask
 * Outputs: s (B, 4H) gate sigmoids; c (B, H) unmasked cell c~; k = tanh(c~);
 *   ht = o * k (only written with a mask); h = w * ht; cm = w * c~ (only with a mask). */
static void fwd_rows(int64_t B, int64_t H, const float *restrict pre,
                   const float *restrict cprev, const float *restrict w,
                   float *restrict s, float *restrict c, float *restrict k,
                   float *restrict ht, float *restrict h, float *restrict cm) {
    const int64_t G = 4 * H;
    for (int64_t b = 0; b < B; ++b) {
        const float *z = pre + b * G;
        float *sb = s + b * G;
        sigmoid_n(z, sb, G, 1.0f);
        const float *si = sb, *sf = sb + H, *sg = sb + 2 * H, *so = sb + 3 * H;
        float *cb = c + b * H, *kb = k + b * H, *hb = h + b * H;
        if (cprev) {
            const float *cp = cprev + b * H;
#pragma omp simd
            for (int64_t j = 0; j < H; ++j)
                cb[j] = 2.0f * si[j] * sg[j] - si[j] + sf[j] * cp[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < H; ++j) cb[j] = 2.0f * si[j] * sg[j] - si[j];
        }
        sigmoid_n(cb, kb, H, 2.0f);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) kb[j] = 2.0f * kb[j] - 1.0f;
        if (w) {
            const float wb = w[b];
            float *htb = ht + b * H, *cmb = cm + b * H;
#pragma omp simd
            for (int64_t j = 0; j < H; ++j) {
                htb[j] = so[j] * kb[j];
                hb[j] = htb[j] * wb;
                cmb[j] = cb[j] * wb;
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < H; ++j) hb[j] = so[j] * kb[j];
        }
    }
}

/* The elementwise part of one backward step for B rows (the chain rule of fwd_rows).
 *   s, k, c, ht   saved forward values at step t (ht only read with a mask)
 *   cmprev (B, H) masked cell state c_{t-1}, or NULL at t = 0
 *   w      (B,)   mask w_t or NULL
 *   dh     (B, H) total gradient of the masked hidden state h_t
 *   dc     (B, H) gradient of the masked cell state c_t from step t + 1, or NULL (last step)
 * Outputs: dz (B, 4H) gradient of the pre-activations; dcprev (B, H) gradient of c_{t-1}
 *   (not written when cmprev is NULL); gw (B,) gradient of w_t (only with a mask). */
static void bwd_rows(int64_t B, int64_t H, const float *restrict s,
                   const float *restrict k, const float *restrict c,
                   const float *restrict ht, const float *restrict cmprev,
                   const float *restrict w, const float *restrict dh,
                   const float *restrict dc, float *restrict dz,
                   float *restrict dcprev, float *restrict gw) {
    const int64_t G = 4 * H;
    for (int64_t b = 0; b < B; ++b) {
        const float *si = s + b * G, *sf = si + H, *sg = si + 2 * H, *so = si + 3 * H;
        const float *kb = k + b * H, *dhb = dh + b * H;
        const float *dcb = dc ? dc + b * H : NULL;
        float *dzi = dz + b * G, *dzf = dzi + H, *dzg = dzi + 2 * H, *dzo = dzi + 3 * H;
        const float wb = w ? w[b] : 1.0f;
        if (w) {
            const float *cb = c + b * H, *htb = ht + b * H;
            float acc = 0.0f;
            if (dcb) {
#pragma omp simd reduction(+ : acc)
                for (int64_t j = 0; j < H; ++j) acc += dhb[j] * htb[j] + dcb[j] * cb[j];
            } else {
#pragma omp simd reduction(+ : acc)
                for (int64_t j = 0; j < H; ++j) acc += dhb[j] * htb[j];
            }
            gw[b] = acc;
        }
        const float *cp = cmprev ? cmprev + b * H : NULL;
        float *dcp = cmprev ? dcprev + b * H : NULL;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
            const float i = si[j], f = sf[j], g = sg[j], o = so[j], kk = kb[j];
            const float dht = dhb[j] * wb;
            float dct = dcb ? dcb[j] * wb : 0.0f;
            dct += dht * o * (1.0f - kk * kk);
            dzi[j] = dct * (2.0f * g - 1.0f) * (i - i * i);
            dzg[j] = 2.0f * dct * i * (g - g * g);
            dzo[j] = dht * kk * (o - o * o);
            if (cp) {
                dzf[j] = dct * cp[j] * (f - f * f);
                dcp[j] = dct * f;
            } else {
                dzf[j] = 0.0f;
            }
        }
    }
}

/* ---- whole passes, blocks of batch rows -------------------------------------------------- *
 * The input projections are rows of a table: x[t, b] = table[index[b, t]] (index (B, T)).
 * For a plain (T, B, G) tensor of projections the table is that tensor and
 * index[b, t] = t * B + b; for CompILE's embedding the table is the (V, G) product of the
 * embedding and the input weights and the index is the token, so the (T, B, G) tensor of
 * projections is never written out. */

typedef struct {
    int64_t steps, B, T, H, keep, r0, r1;
    const float *table;
    const int64_t *index;
    const float *w, *whh_t;
    float *out, *s, *c, *k, *ht, *cm;
    int failed;
} fwd_job;

static void *fwd_run(void *arg) {
    fwd_job *j = arg;
    const int64_t B = j->B, T = j->T, H = j->H, G = 4 * H, r0 = j->r0, rows = j->r1 - j->r0;
    float *pre = malloc((size_t)(rows * G) * sizeof(float));
    if (!pre) {
        j->failed = 1;
        return NULL;
    }
    FTZ_BEGIN
    for (int64_t t = 0; t < j->steps; ++t) {
        const int64_t slot = j->keep == 2 ? t % 2 : t;
        const int64_t prev = j->keep == 2 ? 1 - slot : t - 1;
        for (int64_t r = 0; r < rows; ++r)
            memcpy(pre + r * G, j->table + j->index[(r0 + r) * T + t] * G, (size_t)G * sizeof(float));
        if (t > 0)
            gemm(rows, G, H, j->out + ((t - 1) * B + r0) * H, H, 1, j->whh_t, G, pre, pre, G);
        const int64_t at = (slot * B + r0) * H;
        fwd_rows(rows, H, pre, t > 0 ? j->cm + (prev * B + r0) * H : NULL,
                 j->w ? j->w + t * B + r0 : NULL, j->s + (slot * B + r0) * G, j->c + at,
                 j->k + at, j->ht + at, j->out + (t * B + r0) * H, j->cm + at);
    }
    FTZ_END
    free(pre);
    return NULL;
}

/* Batch rows per backward chunk. The chunks, not the threads, own the partial sums over
 * rows, so the split (and with it every rounding) depends on B only; a thread runs a
 * contiguous range of whole chunks (so at most ceil(B / BWD_CHUNK) threads work). Smaller
 * chunks cost more: each step's weight-gradient product reads and writes the chunk's
 * (H, G) partial sum (64 rows: about 5% slower backward at B = 512, 128 rows: 1-3%). */
#define BWD_CHUNK 128

typedef struct {
    int64_t steps, B, T, H, r0, r1, unique;
    const int64_t *index;
    const float *s, *c, *k, *ht, *cm, *w, *whh, *out, *gout;
    float *gtable, *gw, *gwhh_t;
} bwd_job;

/* The backward pass of rows r0..r1-1 (at most BWD_CHUNK), with scratch buf of
 * BWD_CHUNK (3H + G) floats; gwhh_t (and gtable when not unique) are this chunk's own
 * zeroed partial sums. */
static void bwd_chunk(const bwd_job *j, float *buf) {
    const int64_t B = j->B, T = j->T, H = j->H, G = 4 * H, r0 = j->r0, rows = j->r1 - j->r0;
    float *dh = buf, *dc_in = buf + rows * H, *dc_out = buf + 2 * rows * H;
    float *dz = buf + 3 * rows * H;
    if (j->unique) /* rows of steps that do not run get a zero gradient */
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t t = j->steps; t < T; ++t)
                memset(j->gtable + j->index[(r0 + r) * T + t] * G, 0, (size_t)G * sizeof(float));
    const float *dh_t = j->gout + ((j->steps - 1) * B + r0) * H;
    for (int64_t t = j->steps - 1; t >= 0; --t) {
        const int64_t at = (t * B + r0) * H;
        bwd_rows(rows, H, j->s + (t * B + r0) * G, j->k + at, j->c + at, j->ht + at,
                 t > 0 ? j->cm + at - B * H : NULL, j->w ? j->w + t * B + r0 : NULL, dh_t,
                 t < j->steps - 1 ? dc_in : NULL, dz, t > 0 ? dc_out : NULL,
                 j->w ? j->gw + t * B + r0 : NULL);
        for (int64_t r = 0; r < rows; ++r) {
            float *dst = j->gtable + j->index[(r0 + r) * T + t] * G;
            const float *src = dz + r * G;
            if (j->unique) {
                memcpy(dst, src, (size_t)G * sizeof(float));
            } else {
#pragma omp simd
                for (int64_t e = 0; e < G; ++e) dst[e] += src[e];
            }
        }
        if (t > 0) {
            gemm(H, G, rows, j->out + at - B * H, 1, H, dz, G, j->gwhh_t, j->gwhh_t, G);
            gemm(rows, H, G, dz, G, 1, j->whh, H, j->gout + at - B * H, dh, H);
            dh_t = dh;
            float *swap = dc_in;
            dc_in = dc_out;
            dc_out = swap;
        }
    }
}

/* One thread's share of the backward pass: chunks c0..c1-1 in turn. */
typedef struct {
    const bwd_job *chunks;
    int64_t c0, c1, H;
    int failed;
} bwd_range;

static void *bwd_run(void *arg) {
    bwd_range *j = arg;
    const int64_t H = j->H, G = 4 * H;
    float *buf = malloc((size_t)(BWD_CHUNK * (3 * H + G)) * sizeof(float));
    if (!buf) {
        j->failed = 1;
        return NULL;
    }
    FTZ_BEGIN
    for (int64_t c = j->c0; c < j->c1; ++c) bwd_chunk(j->chunks + c, buf);
    FTZ_END
    free(buf);
    return NULL;
}

static int64_t clamp_threads(int64_t nthreads, int64_t B) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 64) nthreads = 64;
    if (nthreads > B / MR) nthreads = B / MR > 0 ? B / MR : 1;
    return nthreads;
}

/* Arguments of lstm_forward (see lstm.py's _FwdArgs, same fields in the same order).
 *   table (rows, G) and index (B, T): the input projections (see above);
 *   w (T, B) or NULL; whh_t (H, G);
 *   out (T, B, H); s (keep, B, G); c, k, ht, cm (keep, B, H) with keep = T when the
 *   intermediates are saved for the backward pass, else 2 (alternating slots); cm may be
 *   the same buffer as c when there is no mask. */
typedef struct {
    int64_t steps, B, T, H, keep, nthreads;
    const float *table;
    const int64_t *index;
    const float *w, *whh_t;
    float *out, *s, *c, *k, *ht, *cm;
} lstm_fwd_args;

/* Arguments of lstm_backward (see lstm.py's _BwdArgs).
 *   gout (T, B, H) gradient of the output; whh (G, H); table_rows rows in the table;
 *   unique: whether every (b, t) has its own table row (then each is written once).
 * Outputs (all fully written): gtable (table_rows, G) gradient of the table; gw (T, B)
 *   gradient of w (only with a mask; rows from steps on untouched); gwhh_t (H, G) the
 *   transposed gradient of the recurrent weight. */
typedef struct {
    int64_t steps, B, T, H, table_rows, unique, nthreads;
    const int64_t *index;
    const float *s, *c, *k, *ht, *cm, *w, *whh, *out, *gout;
    float *gtable, *gw, *gwhh_t;
} lstm_bwd_args;

/* The forward pass over steps 0..steps-1 (see lstm.py): returns 0, or 1 when out of memory. */
int lstm_forward(const lstm_fwd_args *a) {
    const int64_t nthreads = clamp_threads(a->nthreads, a->B);
    const int64_t B = a->B;
    fwd_job jobs[64];
    for (int64_t i = 0; i < nthreads; ++i) {
        jobs[i] = (fwd_job){a->steps, B, a->T, a->H, a->keep, B * i / nthreads,
                            B * (i + 1) / nthreads, a->table, a->index, a->w, a->whh_t,
                            a->out, a->s, a->c, a->k, a->ht, a->cm, 0};
    }
    run_jobs(jobs, sizeof(fwd_job), nthreads, fwd_run);
    for (int64_t i = 0; i < nthreads; ++i)
        if (jobs[i].failed) return 1;
    return 0;
}

/* The backward pass of lstm_forward (saved with keep = T): returns 0, or 1 when out of
 * memory. Partial sums over batch rows are kept per chunk of BWD_CHUNK rows and added in
 * chunk order, so the result does not depend on the number of threads. */
int lstm_backward(const lstm_bwd_args *a) {
    const int64_t B = a->B, H = a->H, G = 4 * H, unique = a->unique;
    const int64_t nchunks = (B + BWD_CHUNK - 1) / BWD_CHUNK;
    int64_t nthreads = clamp_threads(a->nthreads, B);
    if (nthreads > nchunks) nthreads = nchunks;
    const int64_t tsize = unique ? 0 : a->table_rows * G; /* per-chunk table partials */
    const int64_t psize = H * G + tsize;
    float *gtable = a->gtable, *gwhh_t = a->gwhh_t;
    float *partial = calloc((size_t)(nchunks * psize), sizeof(float));
    bwd_job *chunks = malloc((size_t)nchunks * sizeof(bwd_job));
    if (!partial || !chunks) {
        free(partial);
        free(chunks);
        return 1;
    }
    for (int64_t i = 0; i < nchunks; ++i) {
        float *mine = partial + i * psize;
        const int64_t r0 = i * BWD_CHUNK, r1 = r0 + BWD_CHUNK < B ? r0 + BWD_CHUNK : B;
        chunks[i] = (bwd_job){a->steps, B, a->T, H, r0, r1, unique, a->index, a->s, a->c,
                              a->k, a->ht, a->cm, a->w, a->whh, a->out, a->gout,
                              unique ? gtable : mine + H * G, a->gw, mine};
    }
    bwd_range ranges[64];
    for (int64_t i = 0; i < nthreads; ++i)
        ranges[i] = (bwd_range){chunks, nchunks * i / nthreads, nchunks * (i + 1) / nthreads, H, 0};
    run_jobs(ranges, sizeof(bwd_range), nthreads, bwd_run);
    int failed = 0;
    for (int64_t i = 0; i < nthreads; ++i) failed |= ranges[i].failed;
    memcpy(gwhh_t, partial, (size_t)(H * G) * sizeof(float));
    if (!unique) memcpy(gtable, partial + H * G, (size_t)tsize * sizeof(float));
    for (int64_t i = 1; i < nchunks; ++i) {
        const float *p = partial + i * psize;
#pragma omp simd
        for (int64_t e = 0; e < H * G; ++e) gwhh_t[e] += p[e];
#pragma omp simd
        for (int64_t e = 0; e < tsize; ++e) gtable[e] += p[H * G + e];
    }
    free(chunks);
    free(partial);
    return failed;
}

/* sizeof and field offsets of lstm_fwd_args then lstm_bwd_args (entry i; -1 past the end). */
int64_t masked_lstm_layout(int64_t i) {
    const int64_t table[] = {
        LAYOUT_SIZE(lstm_fwd_args), LAYOUT_AT(lstm_fwd_args, steps), LAYOUT_AT(lstm_fwd_args, B),
        LAYOUT_AT(lstm_fwd_args, T), LAYOUT_AT(lstm_fwd_args, H), LAYOUT_AT(lstm_fwd_args, keep),
        LAYOUT_AT(lstm_fwd_args, nthreads), LAYOUT_AT(lstm_fwd_args, table),
        LAYOUT_AT(lstm_fwd_args, index), LAYOUT_AT(lstm_fwd_args, w),
        LAYOUT_AT(lstm_fwd_args, whh_t), LAYOUT_AT(lstm_fwd_args, out),
        LAYOUT_AT(lstm_fwd_args, s), LAYOUT_AT(lstm_fwd_args, c), LAYOUT_AT(lstm_fwd_args, k),
        LAYOUT_AT(lstm_fwd_args, ht), LAYOUT_AT(lstm_fwd_args, cm),
        LAYOUT_SIZE(lstm_bwd_args), LAYOUT_AT(lstm_bwd_args, steps), LAYOUT_AT(lstm_bwd_args, B),
        LAYOUT_AT(lstm_bwd_args, T), LAYOUT_AT(lstm_bwd_args, H),
        LAYOUT_AT(lstm_bwd_args, table_rows), LAYOUT_AT(lstm_bwd_args, unique),
        LAYOUT_AT(lstm_bwd_args, nthreads), LAYOUT_AT(lstm_bwd_args, index),
        LAYOUT_AT(lstm_bwd_args, s), LAYOUT_AT(lstm_bwd_args, c), LAYOUT_AT(lstm_bwd_args, k),
        LAYOUT_AT(lstm_bwd_args, ht), LAYOUT_AT(lstm_bwd_args, cm), LAYOUT_AT(lstm_bwd_args, w),
        LAYOUT_AT(lstm_bwd_args, whh), LAYOUT_AT(lstm_bwd_args, out),
        LAYOUT_AT(lstm_bwd_args, gout), LAYOUT_AT(lstm_bwd_args, gtable),
        LAYOUT_AT(lstm_bwd_args, gw), LAYOUT_AT(lstm_bwd_args, gwhh_t),
    };
    return i >= 0 && i < (int64_t)(sizeof table / sizeof table[0]) ? table[i] : -1;
}
