/* Row reductions shared by the native kernels (LayerNorm statistics, the LayerNorm backward).
 *
 * A reduction over one 256-wide row written as one `omp simd` loop keeps a single vector accumulator: 16 dependent
 * adds, so the row is bound by the add latency (~150 cycles per LayerNorm row measured), not by the loads. Here the
 * AVX-512 path keeps four independent accumulators. The order of additions is fixed, so the result of a row does not
 * depend on anything but the row.
 */
#ifndef SB3_EXPO_ROW_OPS_H
#define SB3_EXPO_ROW_OPS_H

#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* sum_k x[k] */
static inline float row_sum(const float *restrict x, int64_t n) {
#if defined(__AVX512F__)
    if (n % 64 == 0) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < n; k += 64) {
            a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + k));
            a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + k + 16));
            a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + k + 32));
            a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + k + 48));
        }
        return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
#endif
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < n; ++k) acc += x[k];
    return acc;
}

/* sum_k (x[k] - mean)^2 */
static inline float row_sq_dev(const float *restrict x, float mean, int64_t n) {
#if defined(__AVX512F__)
    if (n % 64 == 0) {
        const __m512 m = _mm512_set1_ps(mean);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, d;
        for (int64_t k = 0; k < n; k += 64) {
            d = _mm512_sub_ps(_mm512_loadu_ps(x + k), m);
            a0 = _mm512_fmadd_ps(d, d, a0);
            d = _mm512_sub_ps(_mm512_loadu_ps(x + k + 16), m);
            a1 = _mm512_fmadd_ps(d, d, a1);
            d = _mm512_sub_ps(_mm512_loadu_ps(x + k + 32), m);
            a2 = _mm512_fmadd_ps(d, d, a2);
            d = _mm512_sub_ps(_mm512_loadu_ps(x + k + 48), m);
            a3 = _mm512_fmadd_ps(d, d, a3);
        }
        return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
#endif
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < n; ++k) {
        const float d = x[k] - mean;
        acc += d * d;
    }
    return acc;
}

/* sum_k x[k] * y[k] */
static inline float row_dot(const float *restrict x, const float *restrict y, int64_t n) {
#if defined(__AVX512F__)
    if (n % 64 == 0) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < n; k += 64) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(y + k), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(y + k + 16), a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 32), _mm512_loadu_ps(y + k + 32), a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 48), _mm512_loadu_ps(y + k + 48), a3);
        }
        return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
#endif
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < n; ++k) acc += x[k] * y[k];
    return acc;
}

#endif
