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

/* Threads OpenBLAS may use (0: its default). */
void nnrt_set_threads(int n);

#endif
