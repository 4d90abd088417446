/* Adam training steps of the baselines' classifiers (ilpo.baselines.MLP: Linear layers with
 * LReLU(0.2) between them, softmax cross-entropy on the logits) in one call: for every
 * minibatch of an index list, the forward pass, the mean cross-entropy, the hand-written
 * backward pass into the flat gradient buffer and the Adam update of the flat parameter
 * buffer. Same function as the PyTorch path (baselines._ce_step with ilpo.lpn.FlatAdam),
 * which is the reference; the package tests compare the two.
 *
 * Prepended at load time: compkit_utils' native_common.h (gemm, the dense-layer helpers,
 * FTZ, LAYOUT_*).
 *
 * Layout. Parameters, gradients and the two Adam moments are FlatAdam's four flat buffers:
 * the layers' (weight [out, in], bias [out]) back to back in MLP.parameters() order.
 * Activations are feature-major ([features, batch] row-major) so every forward product
 * W·X and every input gradient Wᵀ·dY is one gemm call with a row-major right operand.
 *
 * Minibatches: step s uses rows idx[s·batch .. min((s + 1)·batch, n_idx)) of x and y (the
 * last one may be shorter: an epoch of ceil(N / batch) steps over a permutation).
 *
 * Single-threaded: batch-32 products, where threads cost more than they save; a sweep runs
 * one seed per core instead.
 */

#include <math.h>

#define MLP_MAX_LAYERS 8

typedef struct {
    int64_t L;             /* number of Linear layers, 1..MLP_MAX_LAYERS */
    int64_t batch;         /* minibatch size */
    int64_t n_idx;         /* length of idx; steps = ceil(n_idx / batch) */
    int64_t n_rows;        /* rows of x and y (every idx entry must be below it) */
    int64_t t0;            /* Adam steps taken before this call */
    const int64_t *sizes;  /* [L + 1]: sizes[0] inputs, sizes[L] classes */
    const float *x;        /* [n_rows, sizes[0]] */
    const int64_t *y;      /* [n_rows], class ids in [0, sizes[L]) */
    const int64_t *idx;    /* [n_idx] */
    float *params, *grads, *exp_avg, *exp_avg_sq; /* flat, mlp_param_count(sizes) */
    double lr, beta1, beta2, eps;
    float *losses;         /* [steps]: each step's mean cross-entropy */
    float *scratch;        /* mlp_scratch_floats(L, sizes, batch) floats */
} mlp_args;

int64_t mlp_layout(int64_t i) {
    const int64_t v[] = {
        LAYOUT_SIZE(mlp_args),         LAYOUT_AT(mlp_args, L),
        LAYOUT_AT(mlp_args, batch),    LAYOUT_AT(mlp_args, n_idx),
        LAYOUT_AT(mlp_args, n_rows),   LAYOUT_AT(mlp_args, t0),
        LAYOUT_AT(mlp_args, sizes),    LAYOUT_AT(mlp_args, x),
        LAYOUT_AT(mlp_args, y),        LAYOUT_AT(mlp_args, idx),
        LAYOUT_AT(mlp_args, params),   LAYOUT_AT(mlp_args, grads),
        LAYOUT_AT(mlp_args, exp_avg),  LAYOUT_AT(mlp_args, exp_avg_sq),
        LAYOUT_AT(mlp_args, lr),       LAYOUT_AT(mlp_args, beta1),
        LAYOUT_AT(mlp_args, beta2),    LAYOUT_AT(mlp_args, eps),
        LAYOUT_AT(mlp_args, losses),   LAYOUT_AT(mlp_args, scratch),
    };
    return (i >= 0 && i < (int64_t)(sizeof v / sizeof v[0])) ? v[i] : -1;
}

#define SLOPE 0.2f

int64_t mlp_param_count(int64_t L, const int64_t *sizes) {
    int64_t n = 0;
    for (int64_t l = 0; l < L; ++l) n += sizes[l + 1] * sizes[l] + sizes[l + 1];
    return n;
}

static int64_t widest(int64_t L, const int64_t *sizes) {
    int64_t w = 0;
    for (int64_t l = 0; l <= L; ++l) w = sizes[l] > w ? sizes[l] : w;
    return w;
}

/* Scratch: the gathered rows [B, n0], then per layer l its pre-activation [n_{l+1}, B],
 * its output [n_{l+1}, B] (the next layer's input) and that input transposed [B, n_{l+1}],
 * then two gradient buffers [widest, B]. */
int64_t mlp_scratch_floats(int64_t L, const int64_t *sizes, int64_t B) {
    int64_t n = 2 * B * sizes[0]; /* rows and their transpose */
    for (int64_t l = 0; l < L; ++l) n += 3 * sizes[l + 1] * B;
    return n + 2 * widest(L, sizes) * B;
}

/* One Adam update of n parameters (torch.optim.Adam's formula, as FlatAdam: m ← lerp(m, g,
 * 1 − β1), v ← β2 v + (1 − β2) g², p ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)). */
static void adam(float *p, const float *g, float *m, float *v, int64_t n, int64_t t,
                 double lr, double beta1, double beta2, double eps) {
    const float w1 = (float)(1.0 - beta1), b2 = (float)beta2, w2 = (float)(1.0 - beta2);
    const float step = (float)(lr / (1.0 - pow(beta1, (double)t)));
    const float root = (float)sqrt(1.0 - pow(beta2, (double)t)), e = (float)eps;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const float gi = g[i];
        const float mi = m[i] + w1 * (gi - m[i]);
        const float vi = b2 * v[i] + w2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step * (mi / (sqrtf(vi) / root + e));
    }
}

/* One minibatch: loss, gradients into grads (overwritten). Returns the mean cross-entropy. */
static float step_grads(const mlp_args *a, const int64_t *rows, int64_t B, float *scratch) {
    const int64_t L = a->L, *n = a->sizes;
    const float *P = a->params;
    float *Gr = a->grads;
    float *xb = scratch, *h0 = xb + B * n[0];
    float *pre[MLP_MAX_LAYERS], *out[MLP_MAX_LAYERS], *outT[MLP_MAX_LAYERS];
    float *s = h0 + n[0] * B;
    for (int64_t l = 0; l < L; ++l) {
        pre[l] = s, s += n[l + 1] * B;
        out[l] = s, s += n[l + 1] * B;
        outT[l] = s, s += n[l + 1] * B;
    }
    float *dy = s, *dx = s + widest(L, n) * B;
    int64_t woff[MLP_MAX_LAYERS], boff[MLP_MAX_LAYERS], at = 0;
    for (int64_t l = 0; l < L; ++l) {
        woff[l] = at, at += n[l + 1] * n[l];
        boff[l] = at, at += n[l + 1];
    }

    /* ---- forward ---- */
    for (int64_t b = 0; b < B; ++b)
        memcpy(xb + b * n[0], a->x + rows[b] * n[0], (size_t)n[0] * sizeof(float));
    transpose(xb, B, n[0], h0);
    const float *in = h0;
    for (int64_t l = 0; l < L; ++l) {
        const int64_t M = n[l + 1], K = n[l];
        gemm(M, B, K, P + woff[l], K, 1, in, B, NULL, pre[l], B);
        add_bias_rows(pre[l], P + boff[l], M, B);
        if (l + 1 < L) {
            leaky_relu_n(pre[l], out[l], M * B, SLOPE);
            transpose(out[l], M, B, outT[l]);
            in = out[l];
        }
    }

    /* ---- softmax cross-entropy; dy = (softmax − onehot) / B, [A, B] ---- */
    const int64_t A = n[L];
    const float *logit = pre[L - 1];
    const float inv_b = 1.0f / (float)B;
    double total = 0.0;
    for (int64_t b = 0; b < B; ++b) {
        float mx = logit[b];
        for (int64_t k = 1; k < A; ++k) mx = logit[k * B + b] > mx ? logit[k * B + b] : mx;
        float den = 0.0f;
        for (int64_t k = 0; k < A; ++k) {
            const float e = expf(logit[k * B + b] - mx);
            dy[k * B + b] = e;
            den += e;
        }
        const int64_t target = a->y[rows[b]];
        total += (double)(logf(den) + mx - logit[target * B + b]);
        const float scale = inv_b / den;
        for (int64_t k = 0; k < A; ++k) dy[k * B + b] *= scale;
        dy[target * B + b] -= inv_b;
    }

    /* ---- backward ---- */
    for (int64_t l = L - 1; l >= 0; --l) {
        const int64_t M = n[l + 1], K = n[l];
        /* weight gradient dW[M, K] = dy[M, B] · inputᵀ, bias gradient = row sums of dy */
        if (l == 0) {
            if (K >= VL)
                gemm(M, K, B, dy, B, 1, xb, K, NULL, Gr + woff[0], K);
            else
                dot_rows(M, K, B, dy, B, h0, B, Gr + woff[0], K);
        } else {
            gemm(M, K, B, dy, B, 1, outT[l - 1], K, NULL, Gr + woff[l], K);
        }
        row_sums(dy, M, B, Gr + boff[l]);
        if (l == 0) break;
        /* input gradient dx[K, B] = Wᵀ dy, through the previous layer's leaky ReLU */
        gemm(K, B, M, P + woff[l], 1, K, dy, B, NULL, dx, B);
        leaky_relu_grad_n(dx, pre[l - 1], K * B, SLOPE);
        float *t = dy;
        dy = dx;
        dx = t;
    }
    return (float)(total / (double)B);
}

/* 0: done; 1: bad sizes; 2: an index or a label out of range. */
int mlp_train(const mlp_args *a) {
    if (a->L < 1 || a->L > MLP_MAX_LAYERS || a->batch < 1 || a->n_idx < 0 || a->t0 < 0)
        return 1;
    for (int64_t l = 0; l <= a->L; ++l)
        if (a->sizes[l] < 1) return 1;
    for (int64_t i = 0; i < a->n_idx; ++i)
        if (a->idx[i] < 0 || a->idx[i] >= a->n_rows) return 2;
    for (int64_t i = 0; i < a->n_idx; ++i) {
        const int64_t label = a->y[a->idx[i]];
        if (label < 0 || label >= a->sizes[a->L]) return 2;
    }
    const int64_t count = mlp_param_count(a->L, a->sizes);
    FTZ_BEGIN
    int64_t t = a->t0;
    for (int64_t s = 0, first = 0; first < a->n_idx; ++s, first += a->batch) {
        const int64_t B = a->n_idx - first < a->batch ? a->n_idx - first : a->batch;
        a->losses[s] = step_grads(a, a->idx + first, B, a->scratch);
        ++t;
        adam(a->params, a->grads, a->exp_avg, a->exp_avg_sq, count, t, a->lr, a->beta1,
             a->beta2, a->eps);
    }
    FTZ_END
    return 0;
}
