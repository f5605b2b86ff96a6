/* nnrt.h - the runtime functions that generated code calls.
 *
 * Compiled models reference these by name (the JIT resolves them in the
 * running process; shared libraries link the runtime). Matrices are
 * row-major; ta / tb select the transpose of a / b:
 *   c := alpha * op(a) * op(b) + beta * c,  op(a) m x k, op(b) k x n. */
#ifndef NNRT_H
#define NNRT_H

#include <stdint.h>

void nnrt_sgemm(int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
void nnrt_dgemm(int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
                int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc);

/* A batch of `count` products: product i reads a + i*sa, b + i*sb and writes
 * c + i*sc (strides in elements, 0 to share a matrix). With sc = 0 the
 * products sum into the one c: c := alpha * sum_i op(a_i) op(b_i) + beta * c
 * (with count = 0 that is c := beta * c). */
void nnrt_sgemm_batched(int64_t count, int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, int64_t sa, const float *b, int64_t ldb, int64_t sb,
                        float beta, float *c, int64_t ldc, int64_t sc);
void nnrt_dgemm_batched(int64_t count, int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, double alpha,
                        const double *a, int64_t lda, int64_t sa, const double *b, int64_t ldb, int64_t sb,
                        double beta, double *c, int64_t ldc, int64_t sc);

/* Kernel timing (runtime/profile.c): programs built with profiling call
 * nnrt_profile_tick(k) before kernel k and nnrt_profile_tick(-1) at the
 * end; nnrt_profile_seconds()[k] adds up kernel k's time since
 * nnrt_profile_reset(kernels). */
void nnrt_profile_reset(int64_t kernels);
void nnrt_profile_tick(int64_t kernel);
const double *nnrt_profile_seconds(void);

/* Threads OpenBLAS may use (0: its default). */
void nnrt_set_threads(int n);

#endif
