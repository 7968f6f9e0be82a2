/* Buffer allocation and the start of an OpenMP team, shared by the native kernels. */
#ifndef SB3_EXPO_TEAM_H
#define SB3_EXPO_TEAM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* n floats, 64-byte aligned (NULL on failure; free() releases it, free(NULL) is a no-op). */
static inline float *alloc_floats(int64_t n) {
    const size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

/* Called by every thread of a team once its buffers are allocated (`ok`: all of them were). Every thread gets the
 * same answer, 1 when no thread failed (nor the caller before the team, through `*failed`): so all threads enter
 * the worksharing loops that follow, or none does. A thread that skipped one would leave the others waiting at its
 * implicit barrier. */
static inline int team_ready(int ok, int *failed) {
    if (!ok) {
#pragma omp atomic write
        *failed = 1;
    }
#pragma omp barrier
    int any_failed;
#pragma omp atomic read
    any_failed = *failed;
    return !any_failed;
}

#endif
