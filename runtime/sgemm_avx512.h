/* sgemm_avx512.h - f32 matrix products for small and narrow shapes with
 * AVX-512, chosen by nnrt_sgemm where the processor has it (blas.c).
 * Same arguments and meaning as nnrt_sgemm; k must be at least 1. */
#ifndef NNRT_SGEMM_AVX512_H
#define NNRT_SGEMM_AVX512_H

#include <stdbool.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define NNRT_SGEMM_AVX512 1

/* Work of fewer multiply-adds than this runs on one thread: sharing it
 * out costs more than it saves. */
enum { NNRT_PARALLEL_MACS = 1 << 20 };

/* Whether the processor running now has AVX-512 (F). */
bool nnrt_sgemm_avx512_available(void);

void nnrt_sgemm_avx512(int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                       int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
/* As nnrt_sgemm_batched, where the batch suits the kernel that sums dot
 * products across it (op(B) = B^T, a long k); false, having done nothing,
 * where it doesn't: then each product goes to nnrt_sgemm on its own. */
bool nnrt_sgemm_avx512_batched(int64_t count, int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, float alpha,
                               const float *a, int64_t lda, int64_t sa, const float *b, int64_t ldb, int64_t sb,
                               float beta, float *c, int64_t ldc, int64_t sc);
#endif

#endif
