/* compkit_utils native kernel primitives, shared by the packages' C kernels.
 *
 * Not compiled on its own: compkit_utils.native.common_source() returns this text and a
 * package prepends it to its kernel source before load_library(). Plain C11 with GNU
 * vector extensions; no Python or torch headers. Row-major float32 throughout.
 *
 *   FTZ_BEGIN / FTZ_END   flush subnormals to zero inside a pass (x86), restoring the
 *                         caller's setting.
 *   gemm                  C = Cin + A B, small register-blocked kernel for the per-step
 *                         products of recurrent cells (where a BLAS call costs more in
 *                         dispatch than in work).
 *   exp_f, sigmoid_f      vectorisable float exp and logistic sigmoid (about 2 ulp).
 *   sigmoid_n             y = sigmoid(scale x) over an array (AVX-512 when available).
 *   run_jobs              run n independent jobs on the OpenMP threads (torch's pool when
 *                         the library is built with openmp=True).
 *   FMA, FMAF             a + s b for vectors a, b and a scalar s, and a b + c for floats,
 *                         fused where the CPU has fused multiply-adds.
 *   leaky_relu_n, leaky_relu_grad_n, add_bias_rows, row_sums, dot_rows, transpose
 *                         dense-layer helpers for small feature-major networks (ilpo).
 *
 * Conventions shared by every kernel built on this file (docs/conventions.md, "Native
 * kernels"):
 *   Gate order     LSTM gate blocks are (i, f, g, o), as torch.nn.LSTM / nn.LSTMCell store
 *                  them: G = 4H columns, block b at columns [b H, (b + 1) H). A package whose
 *                  weights use another order permutes them before the call.
 *   Float rule     IEEE float32, no -ffast-math, no implicit contraction
 *                  (-ffp-contract=off, compkit_utils.native.DEFAULT_FLAGS): a * b + c is
 *                  rounded twice unless the source writes a fused multiply-add (FMA and
 *                  FMAF below, the AVX-512 sigmoid_n). Results therefore depend only on the
 *                  source and the CPU's instruction set, not on the compiler's contraction
 *                  choices.
 *   Arguments      each entry point takes a pointer to a struct of named fields, mirrored
 *                  by a ctypes.Structure in the package; a <name>_layout(i) function
 *                  reports sizeof/offsetof (LAYOUT_SIZE, LAYOUT_AT) so the Python side
 *                  checks that both agree when it loads the library.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE__)
#include <xmmintrin.h>
/* Subnormal floats take a slow microcode path on x86; a pass flushes them to zero (FTZ
 * and DAZ) on its threads and restores the caller's setting. */
#define FTZ_BEGIN const unsigned int saved_csr = _mm_getcsr(); _mm_setcsr(saved_csr | 0x8040u);
#define FTZ_END _mm_setcsr(saved_csr);
#else
#define FTZ_BEGIN
#define FTZ_END
#endif

#if defined(__AVX512F__)
#define VL 16 /* floats per vector */
#define MR 8  /* rows per micro-kernel block: 2 MR accumulators + 2 operands in 32 registers */
#else
#define VL 8
#define MR 6 /* 16 vector registers: 2 MR accumulators + 2 operands + 1 broadcast; 12
                * independent accumulators also cover the FMA latency (8 did not: 4 rows ran
                * the LPN's batch-32 products at 44 GFLOP/s on an AVX2 AMD EPYC, 6 at 71) */
#endif
typedef float vf __attribute__((vector_size(VL * 4), aligned(4)));
#define NB (2 * VL) /* columns per micro-kernel block */

#define LD(p) (*(const vf *)(p))
#define ST(p, v) (*(vf *)(p) = (v))

/* a + s b (vector a, b; scalar s), fused where the CPU has fused multiply-adds. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define FMA(a, s, b) ((vf)_mm512_fmadd_ps(_mm512_set1_ps(s), (__m512)(b), (__m512)(a)))
#elif defined(__FMA__) && defined(__AVX__)
#include <immintrin.h>
#define FMA(a, s, b) ((vf)_mm256_fmadd_ps(_mm256_set1_ps(s), (__m256)(b), (__m256)(a)))
#else
#define FMA(a, s, b) ((a) + (s) * (b))
#endif

/* a b + c for floats, fused where the CPU has fused multiply-adds (the compiler turns fmaf
 * into the vector instruction in vectorised loops; without FMA hardware it would be a slow
 * library call, so the plain expression is used there). */
#if defined(__FMA__) || defined(__AVX512F__) || defined(__aarch64__)
#include <math.h>
#define FMAF(a, b, c) fmaf((a), (b), (c))
#else
#define FMAF(a, b, c) ((a) * (b) + (c))
#endif

/* Layout reports for the argument structs: a kernel's <name>_layout(i) returns entry i of
 * {LAYOUT_SIZE(S), LAYOUT_AT(S, field), ...} (every struct, in the Python glue's order). */
#define LAYOUT_SIZE(S) ((int64_t)sizeof(S))
#define LAYOUT_AT(S, f) ((int64_t)offsetof(S, f))

/* C[M, N] = Cin[M, N] + A B with A's element (m, k) at A[m * a_row + k * a_col] (so either
 * A or its transpose is stored row-major), B (K, N) and C row-major with leading dimensions
 * ldb and ldc. Cin may equal C (accumulate in place) or be NULL (start from zero). Columns are done NB at a time, then
 * VL at a time, then one by one; a row block past the last row repeats the last row (its
 * results are dropped). */
static void gemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t a_row,
                 int64_t a_col, const float *B, int64_t ldb, const float *Cin, float *C,
                 int64_t ldc) {
    int64_t n = 0;
    for (; n + NB <= N; n += NB) {
        for (int64_t m = 0; m < M; m += MR) {
            const int64_t rows = M - m < MR ? M - m : MR;
            vf c[MR][2];
            int64_t a_off[MR];
            for (int r = 0; r < MR; ++r) {
                const int64_t row = m + (r < rows ? r : rows - 1);
                c[r][0] = Cin ? LD(Cin + row * ldc + n) : (vf){0};
                c[r][1] = Cin ? LD(Cin + row * ldc + n + VL) : (vf){0};
                a_off[r] = row * a_row;
            }
            for (int64_t k = 0; k < K; ++k) {
                const vf b0 = LD(B + k * ldb + n), b1 = LD(B + k * ldb + n + VL);
                for (int r = 0; r < MR; ++r) {
                    const float ar = A[a_off[r] + k * a_col];
                    c[r][0] = FMA(c[r][0], ar, b0);
                    c[r][1] = FMA(c[r][1], ar, b1);
                }
            }
            for (int r = 0; r < rows; ++r) {
                ST(C + (m + r) * ldc + n, c[r][0]);
                ST(C + (m + r) * ldc + n + VL, c[r][1]);
            }
        }
    }
    for (; n + VL <= N; n += VL) {
        for (int64_t m = 0; m < M; m += MR) {
            const int64_t rows = M - m < MR ? M - m : MR;
            vf c[MR];
            int64_t a_off[MR];
            for (int r = 0; r < MR; ++r) {
                const int64_t row = m + (r < rows ? r : rows - 1);
                c[r] = Cin ? LD(Cin + row * ldc + n) : (vf){0};
                a_off[r] = row * a_row;
            }
            for (int64_t k = 0; k < K; ++k) {
                const vf b0 = LD(B + k * ldb + n);
                for (int r = 0; r < MR; ++r) c[r] = FMA(c[r], A[a_off[r] + k * a_col], b0);
            }
            for (int r = 0; r < rows; ++r) ST(C + (m + r) * ldc + n, c[r]);
        }
    }
    for (; n < N; ++n) {
        for (int64_t m = 0; m < M; ++m) {
            float acc = Cin ? Cin[m * ldc + n] : 0.0f;
            for (int64_t k = 0; k < K; ++k) acc += A[m * a_row + k * a_col] * B[k * ldb + n];
            C[m * ldc + n] = acc;
        }
    }
}

/* exp(x) for float: Cephes-style range reduction x = n ln2 + r and a degree-6 polynomial,
 * relative error about 2 ulp; written with selects and bit operations only so the
 * compiler vectorises it. Inputs are clamped to [-87, 88]. */
static inline float exp_f(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float fx = x * 1.44269504088896341f;
    /* round to nearest by the 1.5 * 2^23 trick (|fx| < 2^22) */
    float n = (fx + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = FMAF(p, r, 1.3981999507e-3f);
    p = FMAF(p, r, 8.3334519073e-3f);
    p = FMAF(p, r, 4.1665795894e-2f);
    p = FMAF(p, r, 1.6666665459e-1f);
    p = FMAF(p, r, 5.0000001201e-1f);
    p = FMAF(p * r, r, r) + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

/* y[j] = sigmoid(scale * x[j]) for j < n (x and y may be the same array). */
#if defined(__AVX512F__)
#include <immintrin.h>
/* 16 lanes at a time: the same range reduction and polynomial as exp_f, with the
 * hardware's 2^n scaling (vscalefps) and a reciprocal estimate refined by one Newton step
 * (relative error below 1e-7) instead of a division, the slowest instruction in the loop. */
static void sigmoid_n(const float *x, float *y, int64_t n, float scale) {
    const __m512 lo = _mm512_set1_ps(-87.0f), hi = _mm512_set1_ps(88.0f);
    const __m512 neg_scale = _mm512_set1_ps(-scale), log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + j), neg_scale);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        const __m512 m = _mm512_roundscale_ps(_mm512_mul_ps(v, log2e),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 r = _mm512_fnmadd_ps(m, ln2_hi, v);
        r = _mm512_fnmadd_ps(m, ln2_lo, r);
        __m512 p = _mm512_set1_ps(1.9875691500e-4f);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
        p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, one));
        const __m512 d = _mm512_add_ps(one, _mm512_scalef_ps(p, m));
        __m512 q = _mm512_rcp14_ps(d);
        q = _mm512_mul_ps(q, _mm512_fnmadd_ps(d, q, two));
        _mm512_storeu_ps(y + j, q);
    }
    for (; j < n; ++j) y[j] = sigmoid_f(scale * x[j]);
}
#else
static void sigmoid_n(const float *x, float *y, int64_t n, float scale) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = sigmoid_f(scale * x[j]);
}
#endif

/* Run n jobs (an array of structs of the given size) with fn, one per OpenMP thread. A
 * library built with openmp=True binds to the OpenMP runtime the process already has
 * (torch's), so these are torch's own intra-op threads: no second pool competes for the
 * cores. */
static void run_jobs(void *jobs, size_t size, int64_t n, void *(*fn)(void *)) {
#pragma omp parallel for num_threads(n) schedule(static, 1)
    for (int64_t i = 0; i < n; ++i) fn((char *)jobs + i * size);
}

/* ---- dense-layer helpers for small feature-major networks ([features, batch] row-major
 * activations; ilpo's LPN and baseline classifiers) ---- */

/* Lane-wise select on the sign of x (GNU vector extensions; a comparison gives an all-ones
 * lane mask): if_pos where x > 0, else if_not. */
typedef int32_t vi __attribute__((vector_size(VL * 4), aligned(4)));
static inline vf select_pos(vf x, vf if_pos, vf if_not) {
    const vi m = x > (vf){0};
    return (vf)(((vi)if_pos & m) | ((vi)if_not & ~m));
}

/* y[k] = x[k] > 0 ? x[k] : slope x[k] for k < n (y may equal x); branch-free. */
static void leaky_relu_n(const float *x, float *y, int64_t n, float slope) {
    const int64_t nv = n - n % VL;
    int64_t k = 0;
    for (; k < nv; k += VL) {
        const vf v = LD(x + k);
        ST(y + k, select_pos(v, v, slope * v));
    }
    for (; k < n; ++k) y[k] = x[k] > 0.0f ? x[k] : slope * x[k];
}

/* g[k] = (pre[k] > 0 ? 1 : slope) g[k] for k < n: the leaky ReLU's backward pass. */
static void leaky_relu_grad_n(float *g, const float *pre, int64_t n, float slope) {
    const int64_t nv = n - n % VL;
    int64_t k = 0;
    for (; k < nv; k += VL) {
        const vf v = LD(g + k);
        ST(g + k, select_pos(LD(pre + k), v, slope * v));
    }
    for (; k < n; ++k) g[k] = pre[k] > 0.0f ? g[k] : slope * g[k];
}

/* y[r, :] += bias[r] for a [rows, cols] row-major block. */
static void add_bias_rows(float *y, const float *bias, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) y[r * cols + c] += bias[r];
}

/* out[r] = Σ_c x[r, c] (row sums of a [rows, cols] block; VL partial sums, then added). */
static void row_sums(const float *x, int64_t rows, int64_t cols, float *out) {
    for (int64_t r = 0; r < rows; ++r) {
        const float *row = x + r * cols;
        vf acc = {0};
        int64_t c = 0;
        for (; c + VL <= cols; c += VL) acc += LD(row + c);
        float sum = 0.0f;
        for (int i = 0; i < VL; ++i) sum += acc[i];
        for (; c < cols; ++c) sum += row[c];
        out[r] = sum;
    }
}

/* C[m, n] = Σ_k A[m, k] Bm[n, k] (both operands contiguous along k): a product whose
 * output has too few columns for gemm's vector blocks, as vector dot products. */
static void dot_rows(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                     const float *Bm, int64_t ldb, float *C, int64_t ldc) {
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            const float *x = A + m * lda, *y = Bm + n * ldb;
            vf acc = {0};
            int64_t k = 0;
            for (; k + VL <= K; k += VL) {
                const vf xv = LD(x + k), yv = LD(y + k);
                acc += xv * yv;
            }
            float sum = 0.0f;
            for (int i = 0; i < VL; ++i) sum += acc[i];
            for (; k < K; ++k) sum += x[k] * y[k];
            C[m * ldc + n] = sum;
        }
}

/* dst[c, r] = src[r, c] for a [rows, cols] row-major src. */
static void transpose(const float *src, int64_t rows, int64_t cols, float *dst) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}
