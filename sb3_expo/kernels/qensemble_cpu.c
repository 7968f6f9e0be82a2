/* The Q ensemble of sb3-expo (RLPD/EXPO critics: Dense -> LayerNorm -> ReLU per hidden layer, Dense(1)), for the CPU
 * (float32): the OTF argmax scoring without autograd, and one critic update's forward + backward.
 *
 * Why: after the native denoiser, the 20 critic updates of an env step were the slowest part per FLOP (~90 GFLOP/s
 * against ~200 for the chain): the OTF argmax scores 4096 candidates per minibatch in eager ops (bias, LayerNorm,
 * affine, ReLU: separate passes over activations larger than L2), and the training forward/backward runs the
 * ensemble as batched GEMMs of 256x256 per member followed by as many elementwise passes again. Here:
 *  - scoring: each (row tile, member) pair is one unit of work; a thread takes the tile through every layer of that
 *    member with the epilogue (bias, LN, affine, ReLU) on data the GEMM has just written, and the 1-wide output layer
 *    as a dot product in the same pass. The hidden weights are MKL-packed once per call (they change every update).
 *  - training: each member is one unit of work (10 members on the threads): its forward, the MSE gradient, and its
 *    backward run on one thread while its activations (~1.5 MB at batch 256) stay in that core's L2.
 * The arithmetic is the module path's (sb3_expo/parts/q_ensemble.py); rounding differs by the order of additions.
 * Results do not depend on the thread count: every unit runs the same code on the same rows.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "row_ops.h"
#include "team.h"

/* MKL entry points (LP64) that torch's x86 CPU build exports from libtorch_cpu; sgemm_ is the Fortran interface
 * (column-major; the C one is not exported). */
enum { kRowMajor = 101, kNoTrans = 111, kBMatrix = 162, kPacked = 151 };
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k);
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha, const float *src,
                      int ld, float *dest);
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);
void sgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k, const float *alpha,
            const float *a, const int *lda, const float *b, const int *ldb, const float *beta, float *c,
            const int *ldc);
int mkl_set_num_threads_local(const int *n_threads);

/* Row-major C (M x N) = op(A) op(B) + beta C through the column-major sgemm_ (C^T = op(B)^T op(A)^T). */
static void gemm(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc) {
    const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    const float one = 1.0f;
    sgemm_(&tb, &ta, &N, &M, &K, &one, B, &ldb, A, &lda, &beta, C, &ldc);
}

/* h = relu(LN(z + b) * g + beta) row by row, or relu(z + b) without LayerNorm. When `xhat` is given, the normalised
 * rows and their 1/std are kept for the backward. */
static void dense_epilogue(float *restrict h, float *restrict xhat, float *restrict rstd_out, const float *restrict z,
                           const float *restrict b, const float *restrict g, const float *restrict beta, int64_t rows,
                           int64_t d, int use_ln, float eps) {
    for (int64_t r = 0; r < rows; ++r) {
        const float *restrict zr = z + r * d;
        float *restrict hr = h + r * d;
        if (!use_ln) {
#pragma omp simd
            for (int64_t k = 0; k < d; ++k) {
                const float v = zr[k] + b[k];
                hr[k] = v > 0.0f ? v : 0.0f;
            }
            continue;
        }
#pragma omp simd
        for (int64_t k = 0; k < d; ++k) hr[k] = zr[k] + b[k];
        const float mean = row_sum(hr, d) / (float)d;                          /* two passes, as PyTorch's LN */
        const float rstd = 1.0f / sqrtf(row_sq_dev(hr, mean, d) / (float)d + eps);
        if (xhat) {
            float *restrict xr = xhat + r * d;
            rstd_out[r] = rstd;
#pragma omp simd
            for (int64_t k = 0; k < d; ++k) {
                const float x = (hr[k] - mean) * rstd;
                const float a = x * g[k] + beta[k];
                xr[k] = x;
                hr[k] = a > 0.0f ? a : 0.0f;
            }
        } else {
#pragma omp simd
            for (int64_t k = 0; k < d; ++k) {
                const float a = (hr[k] - mean) * rstd * g[k] + beta[k];
                hr[k] = a > 0.0f ? a : 0.0f;
            }
        }
    }
}

/* Layout of the ensemble (the stacked parameters of QEnsemble, contiguous): n_layers Dense layers with widths
 * dims[0] -> dims[1] -> ... -> dims[n_layers] = 1; W[i] (E, dims[i], dims[i+1]); b[i] (E, dims[i+1]);
 * lnw[i], lnb[i] (E, dims[i+1]) for the hidden layers i < n_layers - 1 (unused without LayerNorm). */

/* The tile of a scoring call of `rows` rows: few rows (acting) get one small tile, weights packed for it. */
static int64_t score_tile(int64_t rows, int64_t tile) { return rows < tile ? (rows + 15) / 16 * 16 : tile; }

/* Floats of MKL-packed weights of one member's hidden layer i, rounded up to whole 64-byte lines. */
static int64_t packed_floats(const int64_t *dims, int64_t i, int64_t tile) {
    const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, (int)tile, (int)dims[i + 1], (int)dims[i]);
    return (int64_t)((bytes + 63) / 64 * 16);
}

/* The workspace expo_qscore_f32 needs for its packed weights (floats). */
int64_t expo_qscore_workspace_floats(int64_t rows, int64_t n_layers, const int64_t *dims, int64_t n_members,
                                     int64_t tile) {
    tile = score_tile(rows, tile);
    int64_t total = 0;
    for (int64_t i = 0; i < n_layers - 1; ++i) total += n_members * packed_floats(dims, i, tile);
    return total;
}

/* Q values of `n_members` chosen members (indices `members`) for `rows` shared inputs x (rows, dims[0]):
 * out (n_members, rows). `workspace` (64-byte aligned, expo_qscore_workspace_floats() floats) holds the packed
 * weights; the caller keeps it across calls: allocating the ~1.5 MB afresh cost ~270 page faults per call (glibc
 * trims the freed heap top), 0.2-0.5 ms of a 1-2 ms call for the TD value of the chosen actions. Returns 0, or 2
 * when buffers could not be allocated. */
int expo_qscore_f32(int64_t rows, int64_t n_layers, const int64_t *dims, int64_t n_members, const int64_t *members,
                    const float *const *W, const float *const *b, const float *const *lnw, const float *const *lnb,
                    int use_ln, float eps, const float *x, int64_t tile, int n_threads, float *workspace, float *out) {
    const int64_t n_hidden = n_layers - 1, d0 = dims[0];
    int64_t dmax = 1;
    for (int64_t i = 1; i <= n_hidden; ++i) dmax = dims[i] > dmax ? dims[i] : dmax;
    tile = score_tile(rows, tile);
    const int64_t n_tiles = (rows + tile - 1) / tile, n_packed = n_members * n_hidden;
    if (n_threads < 1) n_threads = 1;
    int failed = 0;
    float **packed = calloc((size_t)(n_packed > 0 ? n_packed : 1), sizeof(float *));
    if (!packed) return 2;
    for (int64_t u = 0, offset = 0; u < n_packed; ++u) {
        packed[u] = workspace + offset;
        offset += packed_floats(dims, u % n_hidden, tile);
    }
#pragma omp parallel num_threads(n_threads)
    {
        const int one = 1, zero = 0;
        mkl_set_num_threads_local(&one); /* the team is the parallelism: each GEMM runs on its own thread */
        float *xin = alloc_floats(tile * d0), *za = alloc_floats(tile * dmax), *hb = alloc_floats(tile * dmax);
        if (team_ready(xin && za && hb, &failed)) {
#pragma omp for schedule(static)
            for (int64_t u = 0; u < n_packed; ++u) {
                const int64_t j = u / n_hidden, i = u % n_hidden, m = members[j];
                cblas_sgemm_pack(kRowMajor, kBMatrix, kNoTrans, (int)tile, (int)dims[i + 1], (int)dims[i], 1.0f,
                                 W[i] + m * dims[i] * dims[i + 1], (int)dims[i + 1], packed[u]);
            }
#pragma omp for schedule(dynamic, 1) /* units are independent: dynamic only balances a busy vCPU */
            for (int64_t u = 0; u < n_tiles * n_members; ++u) {
                const int64_t t = u / n_members, j = u % n_members, m = members[j];
                const int64_t r0 = t * tile, n = rows - r0 < tile ? rows - r0 : tile;
                memcpy(xin, x + r0 * d0, sizeof(float) * n * d0);
                memset(xin + n * d0, 0, sizeof(float) * (tile - n) * d0); /* padding rows: zeros, never NaN */
                const float *h = xin;
                for (int64_t i = 0; i < n_hidden; ++i) {
                    const int64_t di = dims[i], dn = dims[i + 1];
                    cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, (int)tile, (int)dn, (int)di, h, (int)di,
                                        packed[j * n_hidden + i], (int)dn, 0.0f, za, (int)dn);
                    dense_epilogue(hb, NULL, NULL, za, b[i] + m * dn, use_ln ? lnw[i] + m * dn : NULL,
                                   use_ln ? lnb[i] + m * dn : NULL, tile, dn, use_ln, eps);
                    h = hb;
                }
                const int64_t d = dims[n_hidden];
                const float *w_out = W[n_hidden] + m * d, b_out = b[n_hidden][m];
                for (int64_t r = 0; r < n; ++r) out[j * rows + r0 + r] = row_dot(h + r * d, w_out, d) + b_out;
            }
        }
        mkl_set_num_threads_local(&zero);
        free(xin);
        free(za);
        free(hb);
    }
    free(packed);
    return failed ? 2 : 0;
}

/* One critic update's forward and backward for the loss  L = grad_scale / 2 * sum_{i, r} (Q_i(x_r) - y_r)^2
 * (grad_scale = 2 / (E * rows): the mean over members and rows). Writes q (E, rows) and the gradients of L with the
 * parameters' layouts (gW[i], gb[i], glnw[i], glnb[i]; overwritten, not accumulated). Returns 0, or 2 when buffers
 * could not be allocated. */
int expo_qtrain_f32(int64_t rows, int64_t n_layers, const int64_t *dims, int64_t n_members, const float *const *W,
                    const float *const *b, const float *const *lnw, const float *const *lnb, int use_ln, float eps,
                    const float *x, const float *y, float grad_scale, int n_threads, float *q, float *const *gW,
                    float *const *gb, float *const *glnw, float *const *glnb) {
    const int64_t n_hidden = n_layers - 1;
    int64_t dmax = dims[0], act = 0;
    for (int64_t i = 1; i <= n_hidden; ++i) {
        dmax = dims[i] > dmax ? dims[i] : dmax;
        act += 2 * rows * dims[i]; /* xhat_i and h_i */
    }
    if (n_threads < 1) n_threads = 1;
    int failed = 0;
#pragma omp parallel num_threads(n_threads)
    {
        const int one = 1, zero = 0;
        mkl_set_num_threads_local(&one);
        float *acts = alloc_floats(act), *rstd = alloc_floats(n_hidden * rows), *dq = alloc_floats(rows);
        float *buf_a = alloc_floats(rows * dmax), *buf_b = alloc_floats(rows * dmax);
        if (team_ready(acts && rstd && dq && buf_a && buf_b, &failed)) {
#pragma omp for schedule(dynamic, 1) /* members are independent: dynamic only balances a busy vCPU */
            for (int64_t m = 0; m < n_members; ++m) {
                /* forward: z_i = h_{i-1} W_i;  h_i = relu(LN(z_i + b_i) g_i + beta_i) */
                float *xhat[n_hidden > 0 ? n_hidden : 1], *hid[n_hidden > 0 ? n_hidden : 1];
                float *cursor = acts;
                const float *h = x;
                for (int64_t i = 0; i < n_hidden; ++i) {
                    const int64_t di = dims[i], dn = dims[i + 1];
                    xhat[i] = cursor;
                    hid[i] = cursor + rows * dn;
                    cursor += 2 * rows * dn;
                    gemm(0, 0, (int)rows, (int)dn, (int)di, h, (int)di, W[i] + m * di * dn, (int)dn, 0.0f, buf_a,
                         (int)dn);
                    dense_epilogue(hid[i], xhat[i], rstd + i * rows, buf_a, b[i] + m * dn,
                                   use_ln ? lnw[i] + m * dn : NULL, use_ln ? lnb[i] + m * dn : NULL, rows, dn, use_ln,
                                   eps);
                    h = hid[i];
                }
                /* output layer, the MSE gradient dL/dq = grad_scale (q - y), and its backward */
                const int64_t d = dims[n_hidden];
                const float *w_out = W[n_hidden] + m * d;
                float *gw_out = gW[n_hidden] + m * d, gb_out = 0.0f;
                memset(gw_out, 0, sizeof(float) * d);
                for (int64_t r = 0; r < rows; ++r) {
                    const float qr = row_dot(h + r * d, w_out, d) + b[n_hidden][m];
                    q[m * rows + r] = qr;
                    dq[r] = grad_scale * (qr - y[r]);
                    gb_out += dq[r];
                    const float *restrict hr = h + r * d;
                    float *restrict dh = buf_b + r * d;
#pragma omp simd
                    for (int64_t k = 0; k < d; ++k) {
                        gw_out[k] += dq[r] * hr[k];
                        dh[k] = dq[r] * w_out[k];
                    }
                }
                gb[n_hidden][m] = gb_out;
                /* hidden layers, last to first: dz from dh (ReLU, LayerNorm), then dW = h_{i-1}^T dz, dh = dz W^T */
                float *dh_buf = buf_b, *spare = buf_a;
                for (int64_t i = n_hidden - 1; i >= 0; --i) {
                    const int64_t di = dims[i], dn = dims[i + 1];
                    const float *g = use_ln ? lnw[i] + m * dn : NULL;
                    float *restrict g_bias = gb[i] + m * dn;
                    float *restrict g_scale = use_ln ? glnw[i] + m * dn : NULL;
                    float *restrict g_shift = use_ln ? glnb[i] + m * dn : NULL;
                    memset(g_bias, 0, sizeof(float) * dn);
                    if (use_ln) {
                        memset(g_scale, 0, sizeof(float) * dn);
                        memset(g_shift, 0, sizeof(float) * dn);
                    }
                    for (int64_t r = 0; r < rows; ++r) {
                        const float *restrict hr = hid[i] + r * dn;
                        float *restrict dz = dh_buf + r * dn; /* dh in, dz out (in place) */
                        if (!use_ln) {
#pragma omp simd
                            for (int64_t k = 0; k < dn; ++k) {
                                dz[k] = hr[k] > 0.0f ? dz[k] : 0.0f;
                                g_bias[k] += dz[k];
                            }
                            continue;
                        }
                        const float *restrict xr = xhat[i] + r * dn;
#pragma omp simd
                        for (int64_t k = 0; k < dn; ++k) {
                            const float da = hr[k] > 0.0f ? dz[k] : 0.0f; /* ReLU' (0 at 0, as torch) */
                            g_shift[k] += da;
                            g_scale[k] += da * xr[k];
                            dz[k] = da * g[k]; /* d xhat */
                        }
                        const float rs = rstd[i * rows + r];
                        const float m1 = row_sum(dz, dn) / (float)dn, m2 = row_dot(dz, xr, dn) / (float)dn;
#pragma omp simd
                        for (int64_t k = 0; k < dn; ++k) {
                            dz[k] = rs * (dz[k] - m1 - xr[k] * m2); /* LayerNorm backward */
                            g_bias[k] += dz[k];
                        }
                    }
                    const float *h_in = i > 0 ? hid[i - 1] : x;
                    gemm(1, 0, (int)di, (int)dn, (int)rows, h_in, (int)di, dh_buf, (int)dn, 0.0f, gW[i] + m * di * dn,
                         (int)dn);
                    if (i > 0) {
                        gemm(0, 1, (int)rows, (int)di, (int)dn, dh_buf, (int)dn, W[i] + m * di * dn, (int)dn, 0.0f,
                             spare, (int)di);
                        float *t = dh_buf;
                        dh_buf = spare;
                        spare = t;
                    }
                }
            }
        }
        mkl_set_num_threads_local(&zero);
        free(acts);
        free(rstd);
        free(dq);
        free(buf_a);
        free(buf_b);
    }
    return failed ? 2 : 0;
}
