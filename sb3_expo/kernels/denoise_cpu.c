/* The DDPM denoising chain of sb3-expo's noise-prediction network, fused for the CPU (float32).
 *
 * Why: at the authors' settings ~90% of an EXPO env step is this chain run on the TD target's candidates
 * (40960 rows x T=10 steps x 3 residual blocks). In eager PyTorch every op between the block GEMMs (bias, SiLU,
 * LayerNorm, residual add) is a separate pass over activations larger than L2. Here each thread takes a tile of
 * rows through the WHOLE chain (all T steps, all blocks), so the activations stay in its own L2 cache and every
 * epilogue runs on data the GEMM has just written. The GEMMs are MKL's (cblas_sgemm_compute on weights packed once
 * per parameter update, single-threaded inside the OpenMP team); only the epilogues are written here.
 *
 * The arithmetic is the module path's (sb3_expo/parts/diffusion.py, NoisePredictionNetwork + the ancestral step):
 *   s   = obs_term + time_term_t + a_t Wa                      (first Dense, bias folded into time_term_t)
 *   per block:  s = s + (silu(LN(s) W1 + b1) W2 + b2)         (LN affine folded into W1, b1 by the caller)
 *   a_{t-1} = k_t a_t - k_t c_t (silu(s) Wo) + shift_t        (shift_t = sigma_t z_t - k_t c_t bo)
 *   a_{t-1} = clip(a_{t-1}, -1, 1)
 * Rounding differs from the module path by the order of additions and by SiLU's exp (a polynomial, a few ulp; see
 * bias_silu); tests compare both against a float64 module-path reference.
 *
 * Rows are independent and every tile (the last one padded) runs the same code, so the result of a row does not
 * depend on the thread count or on the other rows.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "row_ops.h"
#include "team.h"
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* MKL entry points (LP64) that torch's x86 CPU build exports from libtorch_cpu. */
enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112, kBMatrix = 162, kPacked = 151 };
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k);
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha, const float *src,
                      int ld, float *dest);
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);
/* Fortran interface (the C one is not exported): MKL threads of the calling thread only. */
int mkl_set_num_threads_local(const int *n_threads);

/* A thread's buffers (free(NULL) is a no-op: also after a failed allocation). */
static void free_buffers(float *stream, float *normed, float *hidden, float *x, float *zeros) {
    free(stream);
    free(normed);
    free(hidden);
    free(x);
    free(zeros);
}

/* exp(x), Cephes expf polynomial; ternaries (not fminf/fmaxf) so that loops vectorise. */
static inline float exp_f(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = fmaf(n, -0.693359375f, x);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r) + 1.0f;
    union { int32_t i; float f; } two_n;
    two_n.i = ((int32_t)n + 127) << 23;
    return p * two_n.f;
}

static inline float silu_f(float v) { return v / (1.0f + exp_f(-v)); }

/* out[i] = silu(in[i] + bias[i]) for i < n (n a multiple of 16 on the AVX-512 path); out may be in (in place).
 *
 * AVX-512: silu(v) = v / (1 + 2^t) with t = -v log2(e), in 19 vector operations per 16 units (the Cephes form with
 * its ln2 range reduction took 24):
 *  - v is clamped to [-86, 88] for the exponent only, so 1 + 2^t stays finite (a saturated negative v gives
 *    v * ~2^-124, never inf * 0 = NaN) and a saturated positive v gives 2^t = ~0;
 *  - `reduce` gives f = t - floor(t) in one instruction, and `scalef(p, t)` multiplies by 2^floor(t) itself;
 *  - the rounding error of t = v * log2(e) (exact by FMA) and log2(e)'s own float rounding are added to f: without
 *    them the relative error grew with |t| (to ~1e-6 at |v| = 20);
 *  - 2^f is a degree-6 minimax polynomial on [0, 1] (relative error 8e-8), the reciprocal rcp14 with one Newton step.
 * Measured against float64: max relative error 2.4e-7 on [-20, 20] (the Cephes form: 2.4e-7), absolute 1.5e-6.
 * TD-target candidates, alternated with the Cephes form in one process: 0.964 of its time (median of 8 pairs).
 * The scalar tail keeps the Cephes exp. */
static inline void bias_silu(float *out, const float *in, const float *restrict bias, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    const __m512 neg_log2e = _mm512_set1_ps(-1.44269504088896341f), neg_log2e_lo = _mm512_set1_ps(-1.925963033e-8f);
    const __m512 v_min = _mm512_set1_ps(-86.0f), v_max = _mm512_set1_ps(88.0f);
    const __m512 c6 = _mm512_set1_ps(2.161380835e-04f), c5 = _mm512_set1_ps(1.246737665e-03f);
    const __m512 c4 = _mm512_set1_ps(9.675532579e-03f), c3 = _mm512_set1_ps(5.548521876e-02f);
    const __m512 c2 = _mm512_set1_ps(2.402293235e-01f), c1 = _mm512_set1_ps(6.931470633e-01f);
    const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_add_ps(_mm512_loadu_ps(in + i), _mm512_loadu_ps(bias + i));
        const __m512 vc = _mm512_min_ps(_mm512_max_ps(v, v_min), v_max);
        const __m512 t = _mm512_mul_ps(vc, neg_log2e);
        const __m512 t_err = _mm512_fmadd_ps(vc, neg_log2e_lo, _mm512_fmsub_ps(vc, neg_log2e, t));
        const __m512 f = _mm512_add_ps(_mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC), t_err);
        __m512 p = _mm512_fmadd_ps(c6, f, c5);
        p = _mm512_fmadd_ps(p, f, c4);
        p = _mm512_fmadd_ps(p, f, c3);
        p = _mm512_fmadd_ps(p, f, c2);
        p = _mm512_fmadd_ps(p, f, c1);
        p = _mm512_fmadd_ps(p, f, one);                              /* 2^f */
        const __m512 d = _mm512_add_ps(one, _mm512_scalef_ps(p, t)); /* 1 + 2^t = 1 + exp(-v) */
        __m512 inv = _mm512_rcp14_ps(d);
        inv = _mm512_mul_ps(inv, _mm512_fnmadd_ps(d, inv, two));    /* one Newton step: ~2^-28 relative */
        _mm512_storeu_ps(out + i, _mm512_mul_ps(v, inv));
    }
#endif
    for (; i < n; ++i) out[i] = silu_f(in[i] + bias[i]);
}

/* First Dense of `rows` rows starting at row r0: s = obs_term + time_term_t + a_t Wa (the bias is in time_term_t).
 * Row r0 + r draws its obs term from state (r0 + r) / repeats (a state's samples are consecutive rows). */
static void first_dense(float *stream, const float *obs_term, int64_t r0, int64_t repeats, const float *tt,
                        const float *x, const float *w_action, int64_t rows, int64_t A, int64_t H) {
    for (int64_t r = 0; r < rows; ++r) {
        float *restrict s = stream + r * H;
        const float *restrict o = obs_term + ((r0 + r) / repeats) * H;
        for (int64_t h = 0; h < H; ++h) s[h] = o[h] + tt[h];
        for (int64_t a = 0; a < A; ++a) {
            const float xa = x[r * A + a];
            const float *restrict wa = w_action + a * H;
            for (int64_t h = 0; h < H; ++h) s[h] = fmaf(xa, wa[h], s[h]);
        }
    }
}

/* 1 / sqrt(var + eps) of one row, and its mean. */
static inline float row_rstd(const float *restrict s, int64_t H, float eps, float *mean_out) {
    const float mean = row_sum(s, H) / (float)H;
    *mean_out = mean;
    return 1.0f / sqrtf(row_sq_dev(s, mean, H) / (float)H + eps);
}

/* normed = (s - mean) / sqrt(var + eps) row by row; the LayerNorm affine is folded into W1, b1 by the caller. */
static void layer_norm(float *normed, const float *stream, int64_t rows, int64_t H, float eps) {
    for (int64_t r = 0; r < rows; ++r) {
        const float *restrict s = stream + r * H;
        float *restrict o = normed + r * H;
        float mean;
        const float rstd = row_rstd(s, H, eps, &mean);
        for (int64_t h = 0; h < H; ++h) o[h] = (s[h] - mean) * rstd;
    }
}

/* The first block's fc1 without its GEMM (see expo_denoise_f32): for each row,
 *   hidden = (fc1_state[state] + fc1_time_t + a_t fc1_action) * rstd      (rstd = 1 without LayerNorm)
 * i.e. LN(s) W1'^T with s = obs_term + time_term_t + a_t Wa expanded by linearity; b1 and the SiLU follow. */
static void first_fc1(float *hidden, const float *stream, const float *fc1_state, int64_t r0, int64_t repeats,
                      const float *fc1_time_t, const float *fc1_action, const float *x, int use_ln, float ln_eps,
                      int64_t rows, int64_t A, int64_t H, int64_t F) {
    for (int64_t r = 0; r < rows; ++r) {
        float *restrict h = hidden + r * F;
        const float *restrict fs = fc1_state + ((r0 + r) / repeats) * F;
        const float *restrict ft = fc1_time_t;
        for (int64_t j = 0; j < F; ++j) h[j] = fs[j] + ft[j];
        for (int64_t a = 0; a < A; ++a) {
            const float xa = x[r * A + a];
            const float *restrict fa = fc1_action + a * F;
            for (int64_t j = 0; j < F; ++j) h[j] = fmaf(xa, fa[j], h[j]);
        }
        if (use_ln) {
            float mean;
            const float rstd = row_rstd(stream + r * H, H, ln_eps, &mean);
            for (int64_t j = 0; j < F; ++j) h[j] *= rstd;
        }
    }
}

/* The output Dense folded into the ancestral step, clipped: a_{t-1} = k_t a_t - k_t c_t (silu(s) Wo) + shift_t.
 * Overwrites the stream with silu(s). */
static void ancestral_step(float *x, float *stream, const float *w_out, const float *shift, const float *zeros,
                           float k, float kc, int clip, int64_t rows, int64_t A, int64_t H) {
    for (int64_t r = 0; r < rows; ++r) {
        float *restrict s = stream + r * H;
        bias_silu(s, s, zeros, H);
        for (int64_t a = 0; a < A; ++a) {
            const float acc = row_dot(s, w_out + a * H, H);
            float v = k * x[r * A + a] - kc * acc + shift[r * A + a];
            if (clip) {
                v = v < -1.0f ? -1.0f : v;
                v = v > 1.0f ? 1.0f : v;
            }
            x[r * A + a] = v;
        }
    }
}

size_t expo_pack_size(int m, int n, int k) { return cblas_sgemm_pack_get_size(kBMatrix, m, n, k); }

/* Pack B = W^T for C (m x n) = A (m x k) B, W (n, k) row-major with row stride ld (an nn.Linear weight or a
 * column slice of one). */
void expo_pack_b(int m, int n, int k, const float *w, int ld, float *dest) {
    cblas_sgemm_pack(kRowMajor, kBMatrix, kTrans, m, n, k, 1.0f, w, ld, dest);
}

/* Returns 0 on success, 2 if a thread's buffers could not be allocated. Shapes: noise (T, M, A) with noise[0] = a_T;
 * obs_term (M / repeats, H): row r belongs to state r / repeats (a state's `repeats` samples are consecutive rows);
 * time_terms (T, H) incl. the first Dense's bias; w_action (A, H) = Wa; w1[b], w2[b] packed for m = tile (W1 with the
 * LN scale folded in); b1 (nb, F) (LN shift folded in); b2 (nb, H); w_out (A, H) = out.weight; step_scale, step_eps
 * (T); shift (T, M, A); x_out (M, A).
 *
 * First block without its fc1 GEMM (fc1_state != NULL). The first block's input is s = o + tt_t + a_t Wa: a row's
 * state term o, the step's time term and a rank-A action term. Centring is linear, so with W1' = g * W1
 *   LN(s) W1'^T = rstd(s) * (o_c W1'^T + tt_c W1'^T + a_t (Wa_c W1'^T))          (v_c: v minus its mean over H)
 * and the caller computes the three products once per state, per step and per call: fc1_state (M / repeats, F),
 * fc1_time (T, F), fc1_action (A, F) (uncentred without LayerNorm, and rstd = 1). Per row the 256 x 1024 GEMM of
 * the first block becomes A + 2 multiply-adds per hidden unit. The same function in exact arithmetic; the rounding
 * differs by the order of additions, like every other fused step here. */
int expo_denoise_f32(int64_t T, int64_t M, int64_t A, int64_t H, int64_t F, int64_t nb, const float *noise,
                     const float *obs_term, const float *time_terms, const float *w_action, int use_ln, float ln_eps,
                     const float *const *w1, const float *b1, const float *const *w2, const float *b2,
                     const float *w_out, const float *step_scale, const float *step_eps, const float *shift, int clip,
                     int64_t tile, int n_threads, float *x_out, int64_t repeats, const float *fc1_state,
                     const float *fc1_time, const float *fc1_action) {
    if (repeats < 1) repeats = 1;
    const int64_t n_tiles = (M + tile - 1) / tile;
    int failed = 0;
    if (n_threads < 1) n_threads = 1;
#pragma omp parallel num_threads(n_threads)
    {
        const int one = 1, zero = 0;
        mkl_set_num_threads_local(&one); /* the team is the parallelism: each GEMM runs on its own thread */
        float *stream = alloc_floats(tile * H); /* residual stream of the tile */
        float *normed = alloc_floats(tile * H); /* LN(stream), the fc1 input */
        float *hidden = alloc_floats(tile * F); /* the 4x-wide layer */
        float *x = alloc_floats(tile * A);      /* a_t */
        float *zeros = calloc((size_t)H, sizeof(float));
        if (team_ready(stream && normed && hidden && x && zeros, &failed)) {
            /* padding rows of the last tile hold zeros, never NaN */
            memset(stream, 0, sizeof(float) * tile * H);
            memset(normed, 0, sizeof(float) * tile * H);
            memset(hidden, 0, sizeof(float) * tile * F); /* first_fc1 writes only the tile's real rows */
            memset(x, 0, sizeof(float) * tile * A);
            /* dynamic: on a shared VM one vCPU can lose time to a neighbour, and the other then takes more tiles
             * instead of waiting at the end (rows are independent: the result does not depend on who takes a tile) */
#pragma omp for schedule(dynamic, 1)
            for (int64_t ti = 0; ti < n_tiles; ++ti) {
                const int64_t r0 = ti * tile, rows = M - r0 < tile ? M - r0 : tile;
                memcpy(x, noise + r0 * A, sizeof(float) * rows * A);
                for (int64_t t = T - 1; t >= 0; --t) {
                    first_dense(stream, obs_term, r0, repeats, time_terms + t * H, x, w_action, rows, A, H);
                    for (int64_t b = 0; b < nb; ++b) {
                        if (b == 0 && fc1_state) {
                            first_fc1(hidden, stream, fc1_state, r0, repeats, fc1_time + t * F, fc1_action, x, use_ln,
                                      ln_eps, rows, A, H, F);
                        } else {
                            const float *gemm_in = stream;
                            if (use_ln) {
                                layer_norm(normed, stream, rows, H, ln_eps);
                                gemm_in = normed;
                            }
                            cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, (int)tile, (int)F, (int)H, gemm_in,
                                                (int)H, w1[b], (int)F, 0.0f, hidden, (int)F);
                        }
                        const float *restrict bb1 = b1 + b * F, *restrict bb2 = b2 + b * H;
                        for (int64_t r = 0; r < rows; ++r) {
                            bias_silu(hidden + r * F, hidden + r * F, bb1, F);
                            float *restrict s = stream + r * H; /* + b2 now; the fc2 GEMM below adds h W2 */
                            for (int64_t h = 0; h < H; ++h) s[h] += bb2[h];
                        }
                        cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, (int)tile, (int)H, (int)F, hidden, (int)F,
                                            w2[b], (int)H, 1.0f, stream, (int)H);
                    }
                    ancestral_step(x, stream, w_out, shift + (t * M + r0) * A, zeros, step_scale[t], step_eps[t], clip,
                                   rows, A, H);
                }
                memcpy(x_out + r0 * A, x, sizeof(float) * rows * A);
            }
        }
        free_buffers(stream, normed, hidden, x, zeros);
        mkl_set_num_threads_local(&zero);
    }
    return failed ? 2 : 0;
}

/* Few rows (acting: N samples of one observation). A row split would leave threads idle and make every thread stream
 * all the weights (~1 MB per GEMM, the bound at 8 rows), so here the 4x-wide layer is split by columns instead:
 * part j holds fc1 rows [c_j, c_j + F_j) and fc2 columns [c_j, c_j + F_j) (w1[j * nb + b], w2[j * nb + b], packed for
 * m = M), and writes its partial fc2 product to partials[j]. Every thread keeps its own copy of the residual stream
 * and of a_t and applies the same arithmetic to them (the partials are summed in part order), so the copies stay
 * bit-identical and the only synchronisation is two barriers per block. Returns 0, or 2 on allocation failure.
 * `repeats`: as in expo_denoise_f32. (The first block is not factored here: at acting's few rows the GEMM it would
 * save is no larger than the per-call cost of the factors.) */
int expo_denoise_cols_f32(int64_t T, int64_t M, int64_t A, int64_t H, int64_t nb, int64_t n_parts,
                          const int64_t *part_cols, const float *noise, const float *obs_term,
                          const float *time_terms, const float *w_action, int use_ln, float ln_eps,
                          const float *const *w1, const float *b1, const float *const *w2, const float *b2,
                          const float *w_out, const float *step_scale, const float *step_eps, const float *shift,
                          int clip, int n_threads, float *x_out, int64_t repeats) {
    int64_t F = 0, max_cols = 0;
    if (repeats < 1) repeats = 1;
    for (int64_t j = 0; j < n_parts; ++j) {
        F += part_cols[j];
        max_cols = part_cols[j] > max_cols ? part_cols[j] : max_cols;
    }
    float *partials = alloc_floats(n_parts * M * H);
    if (!partials) return 2;
    int failed = 0;
    if (n_threads < 1) n_threads = 1;
#pragma omp parallel num_threads(n_threads)
    {
        const int one = 1, zero = 0;
        mkl_set_num_threads_local(&one);
        const int tid = omp_get_thread_num(), team = omp_get_num_threads();
        float *stream = alloc_floats(M * H);
        float *normed = alloc_floats(M * H);
        float *hidden = alloc_floats(M * max_cols);
        float *x = alloc_floats(M * A);
        float *zeros = calloc((size_t)H, sizeof(float));
        if (team_ready(stream && normed && hidden && x && zeros, &failed)) {
            memcpy(x, noise, sizeof(float) * M * A);
            for (int64_t t = T - 1; t >= 0; --t) {
                first_dense(stream, obs_term, 0, repeats, time_terms + t * H, x, w_action, M, A, H);
                for (int64_t b = 0; b < nb; ++b) {
                    const float *gemm_in = stream;
                    if (use_ln) {
                        layer_norm(normed, stream, M, H, ln_eps);
                        gemm_in = normed;
                    }
                    int64_t c0 = 0;
                    for (int64_t j = 0; j < n_parts; ++j) {
                        const int64_t cols = part_cols[j];
                        if (j % team == tid) {
                            cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, (int)M, (int)cols, (int)H, gemm_in,
                                                (int)H, w1[j * nb + b], (int)cols, 0.0f, hidden, (int)cols);
                            for (int64_t r = 0; r < M; ++r)
                                bias_silu(hidden + r * cols, hidden + r * cols, b1 + b * F + c0, cols);
                            cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, (int)M, (int)H, (int)cols, hidden, (int)cols,
                                                w2[j * nb + b], (int)H, 0.0f, partials + j * M * H, (int)H);
                        }
                        c0 += cols;
                    }
#pragma omp barrier
                    const float *restrict bb2 = b2 + b * H;
                    for (int64_t r = 0; r < M; ++r) {
                        float *restrict s = stream + r * H;
                        for (int64_t h = 0; h < H; ++h) {
                            float acc = bb2[h];
                            for (int64_t j = 0; j < n_parts; ++j) acc += partials[(j * M + r) * H + h];
                            s[h] += acc;
                        }
                    }
#pragma omp barrier
                }
                ancestral_step(x, stream, w_out, shift + t * M * A, zeros, step_scale[t], step_eps[t], clip, M, A, H);
            }
            if (tid == 0) memcpy(x_out, x, sizeof(float) * M * A);
        }
        free_buffers(stream, normed, hidden, x, zeros);
        mkl_set_num_threads_local(&zero);
    }
    free(partials);
    return failed ? 2 : 0;
}
