/* Fused RIM layer (LSTM units) over a whole sequence: forward and backward passes.
 *
 * The maths is RIMCell._step in cell.py (the PyTorch path), for every time step of a
 * sequence in one call; _native.py wraps the two passes as one autograd node. The input
 * side (input-attention score vectors, cell-input rows) is computed by PyTorch before the
 * call and its gradient is returned to PyTorch; weight gradients are returned as per-step
 * "tapes" that _native.py turns into three batched products after the call.
 *
 * Prepended at load time: compkit_utils' native_common.h (gemm, sigmoid_f, sigmoid_n,
 * FTZ_BEGIN/FTZ_END, run_jobs, MR), whose header states the float rule and the argument
 * convention: rim_forward and rim_backward take a pointer to rim_fwd_args / rim_bwd_args,
 * mirrored by ctypes structures in _native.py and checked against rim_lstm_layout() when
 * the library is loaded. Row-major float32 buffers. Sizes:
 *   N units, B batch rows, T steps, H hidden, R cell-input row width, Kp >= H + R + 1 the
 *   padded cell-input width, G = 4H gates in the kernels' common order [i | f | g | o]
 *   (torch.nn.LSTM's; _native.py permutes the cell weights, stored [i | f | o | g]),
 *   QKV = heads (2 dk + dv) and
 *   C = heads dv the communication widths.
 * Everything a RIM step computes for one batch row depends only on that row, so a pass
 * gives each thread a block of batch rows and runs every step on it without
 * synchronisation; results do not depend on the number of threads.
 *
 * Layouts: per-step saved tensors are unit-major (N, Ts, B, .) with Ts = T (saved for the
 * backward pass) or 1 (inference: one slot, overwritten); per-step outputs are (T, N, B, .).
 * The cell-input row of unit n is u = [h_prev (H) | w_real x_t (R) | w_bias | zeros].
 */

#include <math.h>

/* Sizes and flags of a pass (see _native.py's _Dims). */
typedef struct {
    int64_t N, B, T, H, R, Kp, heads, dk, dv, k, save, reverse, nthreads;
} rim_dims;

/* rim_forward's arguments (_native.py's _FwdArgs); in_keep, comm_keep may be NULL, and
 * null_score is NULL except for the raw-score activation rule. */
typedef struct {
    rim_dims d;
    const float *score, *null_score, *rows, *wcell, *wqkv, *wout, *h0, *c0, *in_keep, *comm_keep;
    float *out, *h_last, *c_last, *act, *p, *att, *u, *gact, *cprev, *tc, *hcell, *qkv, *ctx;
} rim_fwd_args;

/* rim_backward's arguments (_native.py's _BwdArgs); in_keep, comm_keep, gc_last and drows
 * may be NULL, and drows must be zero-filled. With acc_wcell non-NULL (a stepped loop) the
 * pass also adds its weight gradients to acc_wcell (N, Kp, G), acc_wqkv (N, H, QKV) and
 * acc_wout (N, C, H), from u, hcell (N, T, B, H) and ctx (N, T, B, C) of the forward pass;
 * otherwise hcell, ctx and the acc_* may be NULL. */
typedef struct {
    rim_dims d;
    const float *score, *rows, *wcell_t, *wqkv_t, *wout_t, *in_keep, *comm_keep, *act, *p, *att;
    const float *u, *gact, *cprev, *tc, *qkv, *gout, *gc_last;
    float *dscore, *drows, *dh0, *dc0, *dgates, *dqkv, *dhnew;
    const float *hcell, *ctx;
    float *acc_wcell, *acc_wqkv, *acc_wout;
} rim_bwd_args;

typedef struct {
    const void *args;
    int64_t r0, r1;
    int failed;
} job;

static float dot_f(const float *a, const float *b, int64_t n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < n; ++j) acc = FMAF(a[j], b[j], acc);
    return acc;
}

/* active[n * stride] = 1 for the k largest rank[n] (ties to the lower index), else 0. */
static void top_k(const float *rank, int64_t N, int64_t k, float *active, int64_t stride) {
    for (int64_t n = 0; n < N; ++n) {
        const float v = rank[n];
        int64_t above = 0;
        for (int64_t m = 0; m < N; ++m) {
            const float w = rank[m];
            above += (w > v) || (w == v && m < n);
        }
        active[n * stride] = above < k ? 1.0f : 0.0f;
    }
}

/* A thread's state block (N, rows, H) to rows [r0, r0 + rows) of an (N, B, H) tensor. */
static void rows_out(const float *src, int64_t N, int64_t rows, int64_t H, int64_t B,
                     int64_t r0, float *dst) {
    for (int64_t n = 0; n < N; ++n)
        memcpy(dst + (n * B + r0) * H, src + n * rows * H, (size_t)(rows * H) * sizeof(float));
}

static void *forward_run(void *arg) {
    job *j = arg;
    const rim_fwd_args *args = j->args;
    const rim_dims *d = &args->d;
    const int64_t N = d->N, B = d->B, T = d->T, H = d->H, R = d->R, Kp = d->Kp;
    const int64_t heads = d->heads, dk = d->dk, dv = d->dv, K = d->k;
    const int64_t G = 4 * H, QKV = heads * (2 * dk + dv), C = heads * dv, NN = N * N;
    const int64_t Ts = d->save ? T : 1, r0 = j->r0, rows = j->r1 - j->r0;
    const float scale = 1.0f / sqrtf((float)dk);
    const float *score = args->score, *null_score = args->null_score, *xs = args->rows;
    const float *wcell = args->wcell, *wqkv = args->wqkv, *wout = args->wout;
    const float *in_keep = args->in_keep, *comm_keep = args->comm_keep;
    float *out = args->out, *act = args->act, *pr = args->p, *att = args->att;
    float *u = args->u, *gact = args->gact, *cprev = args->cprev, *tc = args->tc;
    float *hcell = args->hcell, *qkv = args->qkv, *ctx = args->ctx;

    const int64_t state = N * rows * H;
    float *buf = malloc((size_t)(2 * state + rows * G + rows * H + 2 * N * N) * sizeof(float));
    if (!buf) {
        j->failed = 1;
        return NULL;
    }
    FTZ_BEGIN
    float *hcur = buf, *ccur = buf + state, *gates = buf + 2 * state;
    float *hnew = gates + rows * G, *s = hnew + rows * H;
    const float *h0 = args->h0, *c0 = args->c0;
    for (int64_t n = 0; n < N; ++n) {
        memcpy(hcur + n * rows * H, h0 + (n * B + r0) * H, (size_t)(rows * H) * sizeof(float));
        memcpy(ccur + n * rows * H, c0 + (n * B + r0) * H, (size_t)(rows * H) * sizeof(float));
    }
    for (int64_t step = 0; step < T; ++step) {
        const int64_t t = d->reverse ? T - 1 - step : step, slot = d->save ? t : 0;
        float *act_t = act + t * N * B, *p_t = pr + t * N * B;
        /* 1-3. input-attention score difference s_real - s_null, and the active set */
        for (int64_t n = 0; n < N; ++n)
            for (int64_t r = 0; r < rows; ++r) {
                const float *h = hcur + (n * rows + r) * H;
                const float diff = dot_f(h, score + ((n * T + t) * B + r0 + r) * H, H);
                p_t[n * B + r0 + r] = diff;
                act_t[n * B + r0 + r] =
                    null_score ? diff + dot_f(h, null_score + n * H, H) : diff; /* rank */
            }
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t n = 0; n < N; ++n) s[n] = act_t[n * B + r0 + r];
            top_k(s, N, K, act_t + r0 + r, B);
        }
        /* 4. the read input w_real x + w_bias b (both weights zero for inactive units) */
        for (int64_t n = 0; n < N; ++n)
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t at = n * B + r0 + r;
                const float a = act_t[at], p = sigmoid_f(p_t[at]);
                p_t[at] = p;
                float w_real = p * a, w_bias = a;
                if (in_keep) {
                    const float kr = in_keep[(t * 2 + 0) * N * B + at];
                    const float kn = in_keep[(t * 2 + 1) * N * B + at];
                    w_real = p * kr * a;
                    w_bias = (p * kr + (1.0f - p) * kn) * a;
                }
                float *row = u + ((n * Ts + slot) * B + r0 + r) * Kp;
                memcpy(row, hcur + (n * rows + r) * H, (size_t)H * sizeof(float));
                const float *x = xs + (t * B + r0 + r) * R;
#pragma omp simd
                for (int64_t e = 0; e < R; ++e) row[H + e] = w_real * x[e];
                row[H + R] = w_bias;
                for (int64_t e = H + R + 1; e < Kp; ++e) row[e] = 0.0f;
            }
        /* 5-6. every unit's LSTM cell; 7. communication query/key/value */
        for (int64_t n = 0; n < N; ++n) {
            const int64_t blk = (n * Ts + slot) * B + r0;
            gemm(rows, G, H + R + 1, u + blk * Kp, Kp, 1, wcell + n * Kp * G, G, NULL, gates, G);
            for (int64_t r = 0; r < rows; ++r) {
                float *g = gates + r * G, *ga = gact + (blk + r) * G;
                sigmoid_n(g, ga, 2 * H, 1.0f);
                sigmoid_n(g + 2 * H, ga + 2 * H, H, 2.0f);
                sigmoid_n(g + 3 * H, ga + 3 * H, H, 1.0f);
                const float *gi = ga, *gf = ga + H, *go = ga + 3 * H;
                float *gg = ga + 2 * H, *cp = cprev + (blk + r) * H, *th = tc + (blk + r) * H;
                float *hc = hcell + (blk + r) * H, *cc = ccur + (n * rows + r) * H;
                const float a = act_t[n * B + r0 + r];
                memcpy(cp, cc, (size_t)H * sizeof(float));
#pragma omp simd
                for (int64_t e = 0; e < H; ++e) {
                    gg[e] = 2.0f * gg[e] - 1.0f; /* tanh(z) = 2 sigmoid(2z) - 1 */
                    th[e] = gf[e] * cp[e] + gi[e] * gg[e]; /* c_new, tanh below */
                }
                sigmoid_n(th, hc, H, 2.0f);
#pragma omp simd
                for (int64_t e = 0; e < H; ++e) {
                    const float c_new = th[e];
                    th[e] = 2.0f * hc[e] - 1.0f;
                    hc[e] = go[e] * th[e];
                    cc[e] = a != 0.0f ? c_new : cp[e];
                }
            }
            gemm(rows, QKV, H, hcell + blk * H, H, 1, wqkv + n * H * QKV, QKV, NULL,
                 qkv + blk * QKV, QKV);
        }
        /* 7. attention among units, per batch row and head (units of a row are Ts B rows
         * apart); the weighted sum of values is a small product (N, N) x (N, dv) */
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t b = r0 + r, ld_qkv = Ts * B * QKV;
            const float *row = qkv + (slot * B + b) * QKV;
            for (int64_t hd = 0; hd < heads; ++hd) {
                float *a = att + ((t * B + b) * heads + hd) * NN;
                const float *keep = comm_keep ? comm_keep + ((t * B + b) * heads + hd) * NN : NULL;
                for (int64_t n = 0; n < N; ++n) {
                    float *sn = s + n * N, mx = -INFINITY;
                    for (int64_t m = 0; m < N; ++m) {
                        sn[m] = scale * dot_f(row + n * ld_qkv + hd * dk,
                                              row + m * ld_qkv + (heads + hd) * dk, dk);
                        mx = sn[m] > mx ? sn[m] : mx;
                    }
                    for (int64_t m = 0; m < N; ++m) sn[m] -= mx;
                }
#pragma omp simd
                for (int64_t i = 0; i < NN; ++i) s[i] = exp_f(s[i]);
                for (int64_t n = 0; n < N; ++n) {
                    float sum = 0.0f;
                    for (int64_t m = 0; m < N; ++m) sum += s[n * N + m];
                    for (int64_t m = 0; m < N; ++m) {
                        const int64_t i = n * N + m;
                        a[i] = s[i] / sum;
                        s[i] = keep ? a[i] * keep[i] : a[i];
                    }
                }
                gemm(N, dv, N, s, N, 1, row + 2 * heads * dk + hd * dv, ld_qkv, NULL,
                     ctx + (slot * B + b) * C + hd * dv, Ts * B * C);
            }
        }
        /* 7. residual output; 8. only active units keep the update */
        for (int64_t n = 0; n < N; ++n) {
            const int64_t blk = (n * Ts + slot) * B + r0;
            gemm(rows, H, C, ctx + blk * C, C, 1, wout + n * C * H, H, hcell + blk * H, hnew, H);
            for (int64_t r = 0; r < rows; ++r) {
                float *h = hcur + (n * rows + r) * H;
                if (act_t[n * B + r0 + r] != 0.0f)
                    memcpy(h, hnew + r * H, (size_t)H * sizeof(float));
                memcpy(out + ((t * N + n) * B + r0 + r) * H, h, (size_t)H * sizeof(float));
            }
        }
    }
    rows_out(hcur, N, rows, H, B, r0, args->h_last);
    rows_out(ccur, N, rows, H, B, r0, args->c_last);
    FTZ_END
    free(buf);
    return NULL;
}

static void *backward_run(void *arg) {
    job *j = arg;
    const rim_bwd_args *args = j->args;
    const rim_dims *d = &args->d;
    const int64_t N = d->N, B = d->B, T = d->T, H = d->H, R = d->R, Kp = d->Kp;
    const int64_t heads = d->heads, dk = d->dk, dv = d->dv;
    const int64_t G = 4 * H, QKV = heads * (2 * dk + dv), C = heads * dv, NN = N * N;
    const int64_t r0 = j->r0, rows = j->r1 - j->r0;
    const float scale = 1.0f / sqrtf((float)dk);
    const float *score = args->score, *xs = args->rows;
    const float *wcell_t = args->wcell_t, *wqkv_t = args->wqkv_t, *wout_t = args->wout_t;
    const float *in_keep = args->in_keep, *comm_keep = args->comm_keep;
    const float *act = args->act, *pr = args->p, *att = args->att, *u = args->u;
    const float *gact = args->gact, *cprev = args->cprev, *tc = args->tc;
    const float *qkv = args->qkv, *gout = args->gout, *gc_last = args->gc_last;
    float *dscore = args->dscore, *drows = args->drows;
    float *dgates = args->dgates, *dqkv = args->dqkv, *dhnew = args->dhnew;

    const int64_t state = N * rows * H;
    float *buf = malloc((size_t)(4 * state + N * rows * C + rows * H + rows * Kp + 2 * N * N) *
                        sizeof(float));
    if (!buf) {
        j->failed = 1;
        return NULL;
    }
    FTZ_BEGIN
    float *dh = buf, *dc = buf + state, *dh2 = buf + 2 * state, *dc2 = buf + 3 * state;
    float *dctx = buf + 4 * state, *dhc = dctx + N * rows * C, *du = dhc + rows * H;
    float *da = du + rows * Kp, *w = da + NN;
    memset(dh, 0, (size_t)state * sizeof(float));
    for (int64_t n = 0; n < N; ++n)
        if (gc_last)
            memcpy(dc + n * rows * H, gc_last + (n * B + r0) * H, (size_t)(rows * H) * sizeof(float));
        else
            memset(dc + n * rows * H, 0, (size_t)(rows * H) * sizeof(float));
    for (int64_t step = T - 1; step >= 0; --step) {
        const int64_t t = d->reverse ? T - 1 - step : step;
        const float *act_t = act + t * N * B;
        /* 8. split the state gradients: inactive units pass them straight to step t - 1 */
        for (int64_t n = 0; n < N; ++n)
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t i = (n * rows + r) * H, b = r0 + r;
                const float *g = gout + ((t * N + n) * B + b) * H;
                float *hn = dhnew + ((n * T + t) * B + b) * H;
                if (act_t[n * B + b] != 0.0f) {
#pragma omp simd
                    for (int64_t e = 0; e < H; ++e) {
                        hn[e] = g[e] + dh[i + e];
                        dh2[i + e] = 0.0f;
                        dc2[i + e] = 0.0f;
                    }
                } else {
#pragma omp simd
                    for (int64_t e = 0; e < H; ++e) {
                        hn[e] = 0.0f;
                        dh2[i + e] = g[e] + dh[i + e];
                        dc2[i + e] = dc[i + e];
                    }
                }
            }
        /* 7. residual output: context gradient */
        for (int64_t n = 0; n < N; ++n)
            gemm(rows, C, H, dhnew + ((n * T + t) * B + r0) * H, H, 1, wout_t + n * H * C, C,
                 NULL, dctx + n * rows * C, C);
        /* 7. attention among units, per batch row and head: the gradients of the values,
         * queries and keys are small products with the (N, N) weight gradients */
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t b = r0 + r, ld_qkv = T * B * QKV;
            const float *row = qkv + (t * B + b) * QKV;
            float *grow = dqkv + (t * B + b) * QKV;
            for (int64_t hd = 0; hd < heads; ++hd) {
                const float *a = att + ((t * B + b) * heads + hd) * NN;
                const float *keep = comm_keep ? comm_keep + ((t * B + b) * heads + hd) * NN : NULL;
                const float *dc_hd = dctx + r * C + hd * dv; /* unit n at + n rows C */
                for (int64_t n = 0; n < N; ++n) {
                    float rowsum = 0.0f;
                    for (int64_t m = 0; m < N; ++m) {
                        const int64_t i = n * N + m;
                        float g = dot_f(dc_hd + n * rows * C, row + m * ld_qkv + 2 * heads * dk + hd * dv, dv);
                        w[i] = keep ? a[i] * keep[i] : a[i];
                        if (keep) g *= keep[i];
                        da[i] = g;
                        rowsum += g * a[i];
                    }
                    for (int64_t m = 0; m < N; ++m)
                        da[n * N + m] = a[n * N + m] * (da[n * N + m] - rowsum) * scale;
                }
                /* values: w^T dctx; queries: ds k; keys: ds^T q */
                gemm(N, dv, N, w, 1, N, dc_hd, rows * C, NULL, grow + 2 * heads * dk + hd * dv, ld_qkv);
                gemm(N, dk, N, da, N, 1, row + (heads + hd) * dk, ld_qkv, NULL, grow + hd * dk, ld_qkv);
                gemm(N, dk, N, da, 1, N, row + hd * dk, ld_qkv, NULL, grow + (heads + hd) * dk, ld_qkv);
            }
        }
        for (int64_t n = 0; n < N; ++n) {
            const int64_t blk = (n * T + t) * B + r0;
            /* 7. hidden-state gradient of the cell output: residual + query/key/value */
            gemm(rows, H, QKV, dqkv + blk * QKV, QKV, 1, wqkv_t + n * QKV * H, H,
                 dhnew + blk * H, dhc, H);
            /* 6. gradient block for inactive units; 5. the LSTM cell */
            for (int64_t r = 0; r < rows; ++r) {
                float *dg = dgates + (blk + r) * G;
                const int64_t i = (n * rows + r) * H;
                if (act_t[n * B + r0 + r] == 0.0f) {
                    memset(dg, 0, (size_t)G * sizeof(float));
                    continue;
                }
                const float *ga = gact + (blk + r) * G, *cp = cprev + (blk + r) * H;
                const float *th = tc + (blk + r) * H, *dhr = dhc + r * H;
#pragma omp simd
                for (int64_t e = 0; e < H; ++e) {
                    const float gi = ga[e], gf = ga[H + e], gg = ga[2 * H + e], go = ga[3 * H + e];
                    const float dct = dc[i + e] + dhr[e] * go * (1.0f - th[e] * th[e]);
                    dg[e] = dct * gg * gi * (1.0f - gi);
                    dg[H + e] = dct * cp[e] * gf * (1.0f - gf);
                    dg[2 * H + e] = dct * gi * (1.0f - gg * gg);
                    dg[3 * H + e] = dhr[e] * th[e] * go * (1.0f - go);
                    dc2[i + e] = dct * gf;
                }
            }
            gemm(rows, Kp, G, dgates + blk * G, G, 1, wcell_t + n * G * Kp, Kp, NULL, du, Kp);
            /* 4. the read input; 1. the attention score */
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t b = r0 + r, at = n * B + b, i = (n * rows + r) * H;
                float *dsc = dscore + ((n * T + t) * B + b) * H;
                const float a = act_t[at];
                if (a == 0.0f) {
                    memset(dsc, 0, (size_t)H * sizeof(float));
                    continue;
                }
                const float *dur = du + r * Kp, *x = xs + (t * B + b) * R;
                const float p = pr[t * N * B + at];
#pragma omp simd
                for (int64_t e = 0; e < H; ++e) dh2[i + e] += dur[e];
                const float d_real = dot_f(dur + H, x, R), d_bias = dur[H + R];
                float w_real = p * a, dp = d_real * a;
                if (in_keep) {
                    const float kr = in_keep[(t * 2 + 0) * N * B + at];
                    const float kn = in_keep[(t * 2 + 1) * N * B + at];
                    w_real = p * kr * a;
                    dp = (d_real + d_bias) * a * kr - d_bias * a * kn;
                }
                const float ddiff = dp * p * (1.0f - p);
                const float *h = u + ((n * T + t) * B + b) * Kp, *sc = score + ((n * T + t) * B + b) * H;
#pragma omp simd
                for (int64_t e = 0; e < H; ++e) {
                    dh2[i + e] += ddiff * sc[e];
                    dsc[e] = ddiff * h[e];
                }
                if (drows) {
                    float *dx = drows + (t * B + b) * R;
#pragma omp simd
                    for (int64_t e = 0; e < R; ++e) dx[e] += w_real * dur[H + e];
                }
            }
        }
        float *swap = dh;
        dh = dh2;
        dh2 = swap;
        swap = dc;
        dc = dc2;
        dc2 = swap;
    }
    rows_out(dh, N, rows, H, B, r0, args->dh0);
    rows_out(dc, N, rows, H, B, r0, args->dc0);
    FTZ_END
    free(buf);
    return NULL;
}

static int run(const void *args, const rim_dims *d, void *(*fn)(void *)) {
    const int64_t B = d->B;
    int64_t nthreads = d->nthreads;
    if (nthreads > B / MR) nthreads = B / MR;
    if (nthreads > 64) nthreads = 64;
    if (nthreads < 1) nthreads = 1;
    job jobs[64];
    for (int64_t i = 0; i < nthreads; ++i)
        jobs[i] = (job){args, B * i / nthreads, B * (i + 1) / nthreads, 0};
    run_jobs(jobs, sizeof(job), nthreads, fn);
    int failed = 0;
    for (int64_t i = 0; i < nthreads; ++i) failed |= jobs[i].failed;
    return failed;
}

/* The forward pass. Returns 0, or 1 when out of memory. */
int rim_forward(const rim_fwd_args *a) { return run(a, &a->d, forward_run); }

/* acc_w += inputs^T outputs for one unit n, summed over all T B rows (the weight gradients
 * of rim_backward with accumulators); each unit's sums belong to one thread. */
static void accumulate_unit(const rim_bwd_args *a, int64_t n) {
    const rim_dims *d = &a->d;
    const int64_t TB = d->T * d->B, H = d->H, G = 4 * H, Kp = d->Kp;
    const int64_t QKV = d->heads * (2 * d->dk + d->dv), C = d->heads * d->dv;
    FTZ_BEGIN
    float *wc = a->acc_wcell + n * Kp * G, *wq = a->acc_wqkv + n * H * QKV;
    float *wo = a->acc_wout + n * C * H;
    gemm(Kp, G, TB, a->u + n * TB * Kp, 1, Kp, a->dgates + n * TB * G, G, wc, wc, G);
    gemm(H, QKV, TB, a->hcell + n * TB * H, 1, H, a->dqkv + n * TB * QKV, QKV, wq, wq, QKV);
    gemm(C, H, TB, a->ctx + n * TB * C, 1, C, a->dhnew + n * TB * H, H, wo, wo, H);
    FTZ_END
}

/* The backward pass of rim_forward (run with save = 1). Returns 0, or 1 when out of
 * memory. */
int rim_backward(const rim_bwd_args *a) {
    const int failed = run(a, &a->d, backward_run);
    if (failed || !a->acc_wcell) return failed;
    const int64_t N = a->d.N;
    int64_t nthreads = a->d.nthreads < N ? a->d.nthreads : N;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t n = 0; n < N; ++n) accumulate_unit(a, n);
    return 0;
}

#define DIMS_LAYOUT(S)                                                                     \
    LAYOUT_AT(S, d.N), LAYOUT_AT(S, d.B), LAYOUT_AT(S, d.T), LAYOUT_AT(S, d.H),             \
        LAYOUT_AT(S, d.R), LAYOUT_AT(S, d.Kp), LAYOUT_AT(S, d.heads), LAYOUT_AT(S, d.dk),   \
        LAYOUT_AT(S, d.dv), LAYOUT_AT(S, d.k), LAYOUT_AT(S, d.save), LAYOUT_AT(S, d.reverse), \
        LAYOUT_AT(S, d.nthreads)

/* sizeof and field offsets (the dims fields flattened) of rim_fwd_args then rim_bwd_args:
 * entry i, or -1 past the end. */
int64_t rim_lstm_layout(int64_t i) {
#define F(f) LAYOUT_AT(rim_fwd_args, f)
#define G(f) LAYOUT_AT(rim_bwd_args, f)
    const int64_t table[] = {
        LAYOUT_SIZE(rim_fwd_args), DIMS_LAYOUT(rim_fwd_args), F(score), F(null_score), F(rows),
        F(wcell), F(wqkv), F(wout), F(h0), F(c0), F(in_keep), F(comm_keep), F(out), F(h_last),
        F(c_last), F(act), F(p), F(att), F(u), F(gact), F(cprev), F(tc), F(hcell), F(qkv),
        F(ctx),
        LAYOUT_SIZE(rim_bwd_args), DIMS_LAYOUT(rim_bwd_args), G(score), G(rows), G(wcell_t),
        G(wqkv_t), G(wout_t), G(in_keep), G(comm_keep), G(act), G(p), G(att), G(u), G(gact),
        G(cprev), G(tc), G(qkv), G(gout), G(gc_last), G(dscore), G(drows), G(dh0), G(dc0),
        G(dgates), G(dqkv), G(dhnew), G(hcell), G(ctx), G(acc_wcell), G(acc_wqkv), G(acc_wout),
    };
#undef F
#undef G
    return i >= 0 && i < (int64_t)(sizeof table / sizeof table[0]) ? table[i] : -1;
}
