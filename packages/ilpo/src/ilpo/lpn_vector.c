/* One training step of the vector LPN (ilpo.lpn.VectorLPN): forward pass of every latent
 * branch, L_min + L_exp, and the exact gradient of both written into the flat gradient buffer
 * (the Adam update stays in torch). Same function as VectorLPN.loss_and_grads, which is the
 * reference; the package tests compare the two.
 *
 * Prepended at load time: compkit_utils' native_common.h (gemm, FMA, LAYOUT_*, the
 * dense-layer helpers).
 *
 * Layout. Parameters and gradients are the FlatAdam buffers: the 14 tensors of
 * VectorLPN.parameters() back to back, in torch's Linear layout (weight [out, in], bias [out]):
 * enc1 (G, d), enc2 (W, G), policy (Z, W), embed (W, Z), joint (W, 2W), dec1 (G, W),
 * dec2 (d, G), W = 2G. Activations are kept feature-major ([features, batch] row-major), so
 * every forward product W·X and every input gradient Wᵀ·dY is one call of the shared gemm
 * with a row-major right operand; the decoder's columns are (latent z, sample b) at z·B + b.
 * Weight gradients dY·Xᵀ take the selected activations transposed back to [batch, features].
 *
 * Single-threaded: the products are batch-32 sized, where threads cost more than they save.
 */

typedef struct {
    int64_t B, Z, d, G;
    const float *s, *s_next; /* [B, d] */
    const float *params;     /* flat, VectorLPN.parameters() order */
    float *grads;            /* flat, same layout; overwritten */
    float *losses;           /* [3]: L_min + L_exp, L_min, L_exp */
    int64_t *best;           /* [B] */
    float *probs;            /* [B, Z] */
    float *scratch;          /* lpn_scratch_floats(args) floats */
} lpn_args;

int64_t lpn_layout(int64_t i) {
    const int64_t v[] = {
        LAYOUT_SIZE(lpn_args),      LAYOUT_AT(lpn_args, B),      LAYOUT_AT(lpn_args, Z),
        LAYOUT_AT(lpn_args, d),     LAYOUT_AT(lpn_args, G),      LAYOUT_AT(lpn_args, s),
        LAYOUT_AT(lpn_args, s_next), LAYOUT_AT(lpn_args, params), LAYOUT_AT(lpn_args, grads),
        LAYOUT_AT(lpn_args, losses), LAYOUT_AT(lpn_args, best),  LAYOUT_AT(lpn_args, probs),
        LAYOUT_AT(lpn_args, scratch),
    };
    return (i >= 0 && i < (int64_t)(sizeof v / sizeof v[0])) ? v[i] : -1;
}

#define SLOPE 0.2f
static inline float lrelu_f(float x) { return x > 0.0f ? x : SLOPE * x; }

/* Offsets of the 14 parameter tensors in the flat buffers. */
typedef struct {
    int64_t w1, b1, w2, b2, wp, bp, we, be, wj, bj, wd1, bd1, wd2, bd2, total;
} offsets;

static offsets param_offsets(int64_t Z, int64_t d, int64_t G) {
    const int64_t W = 2 * G;
    offsets o;
    int64_t at = 0;
    o.w1 = at; at += G * d;
    o.b1 = at; at += G;
    o.w2 = at; at += W * G;
    o.b2 = at; at += W;
    o.wp = at; at += Z * W;
    o.bp = at; at += Z;
    o.we = at; at += W * Z;
    o.be = at; at += W;
    o.wj = at; at += W * 2 * W;
    o.bj = at; at += W;
    o.wd1 = at; at += G * W;
    o.bd1 = at; at += G;
    o.wd2 = at; at += d * G;
    o.bd2 = at; at += d;
    o.total = at;
    return o;
}

int64_t lpn_param_count(int64_t Z, int64_t d, int64_t G) { return param_offsets(Z, d, G).total; }

/* Scratch buffers (floats), carved in this order. */
typedef struct {
    float *sT, *tgt, *a1, *x1, *e, *h, *hb, *x1b, *logit, *upre, *u, *cu, *j, *x3, *a4, *x4,
        *del, *resid, *mix, *dd, *sel, *da4, *x4s, *x3s, *dj, *djz, *du, *dlog, *dh, *de, *dx1;
} bufs;

static int64_t carve(bufs *b, float *base, int64_t B, int64_t Z, int64_t d, int64_t G) {
    const int64_t W = 2 * G, ZB = Z * B;
    float *p = base;
#define TAKE(name, n) do { if (b) b->name = p; p += (n); } while (0)
    TAKE(sT, d * B);
    TAKE(tgt, B * d);
    TAKE(a1, G * B);
    TAKE(x1, G * B);
    TAKE(e, W * B);
    TAKE(h, W * B);
    TAKE(hb, B * W);
    TAKE(x1b, B * G);
    TAKE(logit, Z * B);
    TAKE(upre, Z * W);
    TAKE(u, Z * W);
    TAKE(cu, W * Z);
    TAKE(j, W * ZB);
    TAKE(x3, W * ZB);
    TAKE(a4, G * ZB);
    TAKE(x4, G * ZB);
    TAKE(del, d * ZB);
    TAKE(resid, B * d);
    TAKE(mix, d);
    TAKE(dd, d * B);
    TAKE(sel, W * B);
    TAKE(da4, G * B);
    TAKE(x4s, B * G);
    TAKE(x3s, B * W);
    TAKE(dj, W * B);
    TAKE(djz, Z * W);
    TAKE(du, Z * W);
    TAKE(dlog, Z * B);
    TAKE(dh, W * B);
    TAKE(de, W * B);
    TAKE(dx1, G * B);
#undef TAKE
    return (int64_t)(p - base);
}

int64_t lpn_scratch_floats(int64_t B, int64_t Z, int64_t d, int64_t G) {
    return carve(NULL, NULL, B, Z, d, G);
}

/* One feature-major affine layer: pre[M, N] = w[M, K] x[K, N] + bias (w's rows lda apart),
 * and act = lrelu(pre) when act is given. */
static void dense(int64_t M, int64_t N, int64_t K, const float *w, int64_t lda, const float *x,
                  const float *bias, float *pre, float *act) {
    gemm(M, N, K, w, lda, 1, x, N, NULL, pre, N);
    add_bias_rows(pre, bias, M, N);
    if (act) leaky_relu_n(pre, act, M * N, SLOPE);
}

/* sel[r, b] = x[r, best[b]·B + b]: each sample's column of its best latent, for a
 * [rows, Z·B] block (one pass per latent, contiguous). */
static void select_best(const float *x, const int64_t *best, int64_t rows, int64_t B,
                        int64_t Z, float *sel) {
    for (int64_t r = 0; r < rows; ++r) {
        const float *row = x + r * Z * B;
        float *out = sel + r * B;
        for (int64_t b = 0; b < B; ++b) out[b] = row[b];
        for (int64_t z = 1; z < Z; ++z)
            for (int64_t b = 0; b < B; ++b) out[b] = best[b] == z ? row[z * B + b] : out[b];
    }
}

int lpn_step(const lpn_args *a) {
    const int64_t B = a->B, Z = a->Z, d = a->d, G = a->G, W = 2 * G, ZB = Z * B;
    if (B < 1 || Z < 1 || d < 1 || G < 1) return 1;
    const offsets o = param_offsets(Z, d, G);
    const float *P = a->params;
    float *Gr = a->grads;
    bufs t;
    carve(&t, a->scratch, B, Z, d, G);

    /* ---- forward ---- */
    transpose(a->s, B, d, t.sT);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < d; ++i) t.tgt[b * d + i] = a->s_next[b * d + i] - a->s[b * d + i];
    dense(G, B, d, P + o.w1, d, t.sT, P + o.b1, t.a1, t.x1);
    dense(W, B, G, P + o.w2, G, t.x1, P + o.b2, t.e, t.h);
    dense(Z, B, W, P + o.wp, W, t.h, P + o.bp, t.logit, NULL);
    /* latent embedding of every one-hot code: u_pre[z, w] = we[w, z] + be[w] */
    for (int64_t z = 0; z < Z; ++z)
        for (int64_t w = 0; w < W; ++w) {
            const float v = P[o.we + w * Z + z] + P[o.be + w];
            t.upre[z * W + w] = v;
            t.u[z * W + w] = lrelu_f(v);
        }
    /* cu[w, z] = bj[w] + Σ_k wj[w, W + k] u[z, k]  (the latent half of the joint layer) */
    dot_rows(W, Z, W, P + o.wj + W, 2 * W, t.u, W, t.cu, Z);
    add_bias_rows(t.cu, P + o.bj, W, Z);
    /* j[w, z·B + b] = (wj_h h)[w, b] + cu[w, z] */
    gemm(W, B, W, P + o.wj, 2 * W, 1, t.h, B, NULL, t.j, ZB);
    for (int64_t w = 0; w < W; ++w) {
        float *row = t.j + w * ZB;
        for (int64_t z = Z - 1; z >= 0; --z)
            for (int64_t b = 0; b < B; ++b) row[z * B + b] = row[b] + t.cu[w * Z + z];
    }
    leaky_relu_n(t.j, t.x3, W * ZB, SLOPE);
    dense(G, ZB, W, P + o.wd1, W, t.x3, P + o.bd1, t.a4, t.x4);
    dense(d, ZB, G, P + o.wd2, G, t.x4, P + o.bd2, t.del, NULL);

    /* ---- losses ---- */
    const float inv_b = 1.0f / (float)B, m2b = -2.0f / (float)B;
    float min_sum = 0.0f, exp_sum = 0.0f;
    for (int64_t b = 0; b < B; ++b) {
        /* best latent: the first minimum of err_z = Σ_i (Δ_i − Δ̂_z,i)² */
        float best_err = 0.0f;
        int64_t best = 0;
        for (int64_t z = 0; z < Z; ++z) {
            float err = 0.0f;
            for (int64_t i = 0; i < d; ++i) {
                const float r = t.tgt[b * d + i] - t.del[i * ZB + z * B + b];
                err += r * r;
            }
            if (z == 0 || err < best_err) best_err = err, best = z;
        }
        a->best[b] = best;
        min_sum += best_err;
        for (int64_t i = 0; i < d; ++i) {
            t.resid[b * d + i] = t.tgt[b * d + i] - t.del[i * ZB + best * B + b];
            t.dd[i * B + b] = m2b * t.resid[b * d + i];
        }
        /* latent policy and the expected next-state error */
        float mx = t.logit[b];
        for (int64_t z = 1; z < Z; ++z) mx = t.logit[z * B + b] > mx ? t.logit[z * B + b] : mx;
        float denom = 0.0f;
        for (int64_t z = 0; z < Z; ++z) {
            const float ez = expf(t.logit[z * B + b] - mx);
            a->probs[b * Z + z] = ez;
            denom += ez;
        }
        for (int64_t z = 0; z < Z; ++z) a->probs[b * Z + z] /= denom;
        float sq = 0.0f, pdp = 0.0f;
        float *mix = t.mix; /* [d]: this sample's Δ − Σ_z π_z Δ̂_z */
        for (int64_t i = 0; i < d; ++i) {
            float m = 0.0f;
            for (int64_t z = 0; z < Z; ++z) m += a->probs[b * Z + z] * t.del[i * ZB + z * B + b];
            mix[i] = t.tgt[b * d + i] - m;
            sq += mix[i] * mix[i];
        }
        exp_sum += sq;
        /* dL_exp/dπ_z = −(2/B) Σ_i Δ̂_z,i · mix_i (Δ̂ held constant), then the softmax backward */
        for (int64_t z = 0; z < Z; ++z) {
            float dp = 0.0f;
            for (int64_t i = 0; i < d; ++i) dp += t.del[i * ZB + z * B + b] * mix[i];
            t.dlog[z * B + b] = m2b * dp;
            pdp += a->probs[b * Z + z] * t.dlog[z * B + b];
        }
        for (int64_t z = 0; z < Z; ++z)
            t.dlog[z * B + b] = a->probs[b * Z + z] * (t.dlog[z * B + b] - pdp);
    }
    a->losses[1] = min_sum * inv_b;
    a->losses[2] = exp_sum * inv_b;
    a->losses[0] = a->losses[1] + a->losses[2];

    /* ---- backward of L_min through each sample's best latent ---- */
    /* selected activations, [B, features] */
    select_best(t.x4, a->best, G, B, Z, t.sel);
    transpose(t.sel, G, B, t.x4s);
    select_best(t.x3, a->best, W, B, Z, t.sel);
    transpose(t.sel, W, B, t.x3s);
    gemm(d, G, B, t.dd, B, 1, t.x4s, G, NULL, Gr + o.wd2, G);
    row_sums(t.dd, d, B, Gr + o.bd2);
    gemm(G, B, d, P + o.wd2, 1, G, t.dd, B, NULL, t.da4, B);
    select_best(t.a4, a->best, G, B, Z, t.sel);
    leaky_relu_grad_n(t.da4, t.sel, G * B, SLOPE);
    gemm(G, W, B, t.da4, B, 1, t.x3s, W, NULL, Gr + o.wd1, W);
    row_sums(t.da4, G, B, Gr + o.bd1);
    gemm(W, B, G, P + o.wd1, 1, W, t.da4, B, NULL, t.dj, B);
    select_best(t.j, a->best, W, B, Z, t.sel);
    leaky_relu_grad_n(t.dj, t.sel, W * B, SLOPE);
    /* per-latent sums of dj over the samples that chose each latent: djz [Z, W] */
    memset(t.djz, 0, (size_t)(Z * W) * sizeof(float));
    for (int64_t w = 0; w < W; ++w)
        for (int64_t b = 0; b < B; ++b) t.djz[a->best[b] * W + w] += t.dj[w * B + b];
    transpose(t.h, W, B, t.hb);
    /* joint layer: h half, latent half (from the per-latent sums), bias */
    gemm(W, W, B, t.dj, B, 1, t.hb, W, NULL, Gr + o.wj, 2 * W);
    gemm(W, W, Z, t.djz, 1, W, t.u, W, NULL, Gr + o.wj + W, 2 * W);
    row_sums(t.dj, W, B, Gr + o.bj);
    /* latent embedding: du[z, k] = Σ_w djz[z, w] wj[w, W + k], through the leaky ReLU */
    gemm(Z, W, W, t.djz, W, 1, P + o.wj + W, 2 * W, NULL, t.du, W);
    leaky_relu_grad_n(t.du, t.upre, Z * W, SLOPE);
    for (int64_t w = 0; w < W; ++w) {
        float acc = 0.0f;
        for (int64_t z = 0; z < Z; ++z) {
            Gr[o.we + w * Z + z] = t.du[z * W + w];
            acc += t.du[z * W + w];
        }
        Gr[o.be + w] = acc;
    }
    /* ---- backward of L_exp: policy head ---- */
    gemm(Z, W, B, t.dlog, B, 1, t.hb, W, NULL, Gr + o.wp, W);
    row_sums(t.dlog, Z, B, Gr + o.bp);
    /* ---- encoder, both losses ---- */
    gemm(W, B, W, P + o.wj, 1, 2 * W, t.dj, B, NULL, t.dh, B);
    gemm(W, B, Z, P + o.wp, 1, W, t.dlog, B, t.dh, t.dh, B);
    memcpy(t.de, t.dh, (size_t)(W * B) * sizeof(float));
    leaky_relu_grad_n(t.de, t.e, W * B, SLOPE);
    transpose(t.x1, G, B, t.x1b);
    gemm(W, G, B, t.de, B, 1, t.x1b, G, NULL, Gr + o.w2, G);
    row_sums(t.de, W, B, Gr + o.b2);
    gemm(G, B, W, P + o.w2, 1, G, t.de, B, NULL, t.dx1, B);
    leaky_relu_grad_n(t.dx1, t.a1, G * B, SLOPE);
    dot_rows(G, d, B, t.dx1, B, t.sT, B, Gr + o.w1, d); /* d columns: too few for gemm */
    row_sums(t.dx1, G, B, Gr + o.b1);
    return 0;
}
