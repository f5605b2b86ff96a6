/* blas.c - matrix products through OpenBLAS. */
#include "runtime/nnrt.h"

#include "runtime/sgemm_avx512.h"

#include <cblas.h>

#ifdef NNRT_SGEMM_AVX512
/* Whether f32 products take the AVX-512 kernels (decided once). */
static bool use_avx512(void) {
    static int known; /* 0 unknown, 1 no, 2 yes */
    if (!known) known = nnrt_sgemm_avx512_available() ? 2 : 1;
    return known == 2;
}
#endif

bool nnrt_sgemm_reentrant(void) {
#ifdef NNRT_SGEMM_AVX512
    return use_avx512();
#else
    return false;
#endif
}

void nnrt_sgemm(int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m == 0 || n == 0) return;
#ifdef NNRT_SGEMM_AVX512
    if (k > 0 && use_avx512()) {
        nnrt_sgemm_avx512(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)m,
                (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

void nnrt_dgemm(int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
                int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)m,
                (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

/* c := beta * c for an m x n matrix: a sum of no products (BLAS is not asked,
 * as it wants k >= 1 for the leading dimensions to make sense). */
static void scale_f32(float *c, int64_t m, int64_t n, int64_t ldc, float beta) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];
}

static void scale_f64(double *c, int64_t m, int64_t n, int64_t ldc, double beta) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];
}

#ifdef NNRT_SGEMM_AVX512
/* The arguments of a batch of products, for sgemm_range. */
typedef struct SgemmBatch {
    int32_t ta, tb;
    int64_t m, n, k;
    float alpha;
    const float *a;
    int64_t lda, sa;
    const float *b;
    int64_t ldb, sb;
    float beta;
    float *c;
    int64_t ldc, sc;
} SgemmBatch;

/* Products lo .. hi of a batch whose products each have a C of their own. */
static void sgemm_range(void *ctx, int64_t lo, int64_t hi) {
    const SgemmBatch *p = ctx;
    for (int64_t i = lo; i < hi; i++)
        nnrt_sgemm(p->ta, p->tb, p->m, p->n, p->k, p->alpha, p->a + i * p->sa, p->lda, p->b + i * p->sb, p->ldb,
                   p->beta, p->c + i * p->sc, p->ldc);
}
#endif

void nnrt_sgemm_batched(int64_t count, int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, int64_t sa, const float *b, int64_t ldb, int64_t sb,
                        float beta, float *c, int64_t ldc, int64_t sc) {
    if (count <= 0 && sc == 0) scale_f32(c, m, n, ldc, beta);
#ifdef NNRT_SGEMM_AVX512
    if (use_avx512() && nnrt_sgemm_avx512_batched(count, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c,
                                                  ldc, sc))
        return;
    /* Products into matrices of their own are independent: with the
     * AVX-512 kernels (OpenBLAS runs threads of its own), a batch of small
     * ones is shared out between the runtime's threads, each product on
     * one thread. */
    if (use_avx512() && sc != 0 && count > 1 && count * m * n * k >= NNRT_PARALLEL_MACS) {
        SgemmBatch batch = {ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc};
        nnrt_parallel_for(count, sgemm_range, &batch);
        return;
    }
#endif
    /* With one shared c, every product after the first adds to it. */
    for (int64_t i = 0; i < count; i++)
        nnrt_sgemm(ta, tb, m, n, k, alpha, a + i * sa, lda, b + i * sb, ldb, i > 0 && sc == 0 ? 1 : beta,
                   c + i * sc, ldc);
}

void nnrt_dgemm_batched(int64_t count, int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, double alpha,
                        const double *a, int64_t lda, int64_t sa, const double *b, int64_t ldb, int64_t sb,
                        double beta, double *c, int64_t ldc, int64_t sc) {
    if (count <= 0 && sc == 0) scale_f64(c, m, n, ldc, beta);
    for (int64_t i = 0; i < count; i++)
        nnrt_dgemm(ta, tb, m, n, k, alpha, a + i * sa, lda, b + i * sb, ldb, i > 0 && sc == 0 ? 1 : beta,
                   c + i * sc, ldc);
}

void nnrt_blas_threads(int n) {
    if (n > 0) openblas_set_num_threads(n);
}
