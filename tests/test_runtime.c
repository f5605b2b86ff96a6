/* test_runtime.c - the runtime library: the random number generator (its
 * exact values are part of the contract with generated code), IDX loading
 * with its error paths, batching and accuracy, the matrix kernels against a
 * double-precision reference, and the thread pool. */
#include "runtime/augment.h"
#include "runtime/data.h"
#include "runtime/nnrt.h"
#include "runtime/rng.h"
#include "runtime/sgemm_avx512.h"

#include "check_main.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* SplitMix64 of 0 is a published reference value. */
START_TEST(test_mix64_reference) {
    ck_assert_uint_eq(nnrt_mix64(0), 0xE220A8397B1DCDAFull);
    ck_assert_uint_eq(nnrt_mix64(1), 0x910A2DEC89025CC1ull);
}
END_TEST

START_TEST(test_uniform_range_and_mean) {
    double sum = 0, lo = 1, hi = 0;
    for (uint64_t i = 0; i < 100000; i++) {
        double u = nnrt_rand_uniform(42, i);
        ck_assert(u > 0 && u < 1);
        /* 23 bits plus a half: exactly representable as a float */
        ck_assert((double)(float)u == u);
        sum += u;
        lo = fmin(lo, u);
        hi = fmax(hi, u);
    }
    ck_assert_double_eq_tol(sum / 100000, 0.5, 0.005);
    ck_assert(lo < 0.001 && hi > 0.999);
    /* different keys give different streams */
    ck_assert(nnrt_rand_bits(1, 0) != nnrt_rand_bits(2, 0));
}
END_TEST

START_TEST(test_permutation) {
    enum { N = 1000 };
    int64_t perm[N];
    int seen[N] = {0};
    nnrt_permutation(perm, N, 7);
    int fixed = 0;
    for (int i = 0; i < N; i++) {
        ck_assert(perm[i] >= 0 && perm[i] < N);
        seen[perm[i]]++;
        fixed += perm[i] == i;
    }
    for (int i = 0; i < N; i++) ck_assert_int_eq(seen[i], 1);
    ck_assert_int_lt(fixed, 10); /* a shuffle, not the identity */
    int64_t again[N];
    nnrt_permutation(again, N, 7);
    ck_assert_mem_eq(perm, again, sizeof perm);
}
END_TEST

/* Writes an IDX file (gzip-compressed when gz) with a header of `ndims`
 * dimensions and `nbytes` of data. */
static void write_idx(const char *path, bool gz, int ndims, const uint32_t *dims, const unsigned char *data,
                      size_t nbytes) {
    unsigned char head[4 + 16] = {0, 0, 8, (unsigned char)ndims};
    for (int i = 0; i < ndims; i++) {
        head[4 + 4 * i] = (unsigned char)(dims[i] >> 24);
        head[5 + 4 * i] = (unsigned char)(dims[i] >> 16);
        head[6 + 4 * i] = (unsigned char)(dims[i] >> 8);
        head[7 + 4 * i] = (unsigned char)dims[i];
    }
    if (gz) {
        gzFile f = gzopen(path, "wb");
        gzwrite(f, head, (unsigned)(4 + 4 * ndims));
        if (nbytes) gzwrite(f, data, (unsigned)nbytes);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(head, 1, (size_t)(4 + 4 * ndims), f);
        fwrite(data, 1, nbytes, f);
        fclose(f);
    }
}

static char tmpdir[64];

static void make_tmpdir(void) {
    strcpy(tmpdir, "/tmp/nnc-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static const char *tmp(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

START_TEST(test_idx_roundtrip) {
    make_tmpdir();
    unsigned char pixels[3 * 2 * 2] = {0, 255, 51, 102, 1, 2, 3, 4, 5, 6, 7, 8};
    unsigned char labels[3] = {2, 0, 1};
    write_idx(tmp("train-images-idx3-ubyte.gz"), true, 3, (uint32_t[]){3, 2, 2}, pixels, sizeof pixels);
    write_idx(tmp("train-labels-idx1-ubyte.gz"), true, 1, (uint32_t[]){3}, labels, sizeof labels);
    RtDataset d;
    char err[256];
    ck_assert_int_eq(rt_mnist_load(&d, tmpdir, "train", err, sizeof err), 0);
    ck_assert_int_eq(d.n, 3);
    ck_assert_int_eq(d.features, 4);
    ck_assert_int_eq(d.nclasses, 3);
    ck_assert_float_eq(d.x[1], 1.0f);
    ck_assert_float_eq_tol(d.x[2], 0.2f, 1e-7);
    ck_assert_int_eq(d.y[0], 2);

    int64_t idx[2] = {2, 0};
    float xb[8];
    int32_t yb[2];
    rt_gather(&d, idx, 2, xb, yb);
    ck_assert_float_eq(xb[0], d.x[8]);
    ck_assert_int_eq(yb[0], 1);
    ck_assert_int_eq(yb[1], 2);

    RtDataset s = rt_dataset_slice(&d, 1, 5);
    ck_assert_int_eq(s.n, 2);
    ck_assert_int_eq(s.y[0], 0);
    rt_dataset_free(&s); /* a slice does not own its data */
    rt_dataset_free(&d);
}
END_TEST

START_TEST(test_idx_plain_files) {
    make_tmpdir();
    unsigned char pixels[4] = {0, 0, 0, 255};
    unsigned char labels[1] = {7};
    write_idx(tmp("t10k-images-idx3-ubyte"), false, 3, (uint32_t[]){1, 2, 2}, pixels, sizeof pixels);
    write_idx(tmp("t10k-labels-idx1-ubyte"), false, 1, (uint32_t[]){1}, labels, sizeof labels);
    RtDataset d;
    char err[256];
    ck_assert_int_eq(rt_mnist_load(&d, tmpdir, "t10k", err, sizeof err), 0);
    ck_assert_int_eq(d.y[0], 7);
    ck_assert_float_eq(d.x[3], 1.0f);
    rt_dataset_free(&d);
}
END_TEST

START_TEST(test_idx_errors) {
    make_tmpdir();
    RtDataset d;
    char err[256];
    unsigned char pixels[8] = {0};
    unsigned char labels[3] = {0};

    ck_assert_int_eq(rt_mnist_load(&d, tmpdir, "train", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "no train-images-idx3-ubyte"));

    /* truncated data */
    write_idx(tmp("a-images-idx3-ubyte"), true, 3, (uint32_t[]){3, 2, 2}, pixels, 5);
    write_idx(tmp("a-labels-idx1-ubyte"), true, 1, (uint32_t[]){3}, labels, 3);
    ck_assert_int_eq(rt_mnist_load(&d, tmpdir, "a", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "truncated"));

    /* images and labels disagree */
    write_idx(tmp("b-images-idx3-ubyte"), true, 3, (uint32_t[]){2, 2, 2}, pixels, 8);
    write_idx(tmp("b-labels-idx1-ubyte"), true, 1, (uint32_t[]){3}, labels, 3);
    ck_assert_int_eq(rt_mnist_load(&d, tmpdir, "b", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "has 2 images but"));

    /* not IDX at all */
    FILE *f = fopen(tmp("c-images-idx3-ubyte"), "wb");
    fputs("hello, world", f);
    fclose(f);
    ck_assert_int_eq(rt_idx_load(&d, tmp("c-images-idx3-ubyte"), NULL, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "not an IDX file"));
}
END_TEST

START_TEST(test_count_correct) {
    float probs[3 * 3] = {0.1f, 0.8f, 0.1f, 0.5f, 0.2f, 0.3f, 0.3f, 0.3f, 0.4f};
    int32_t labels[3] = {1, 1, 2};
    ck_assert_int_eq(rt_count_correct(probs, labels, 3, 3), 2);
}
END_TEST

START_TEST(test_sgemm_transposes) {
    /* A = [[1,2],[3,4]], B = [[5,6],[7,8]] */
    float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, c[4];
    nnrt_sgemm(0, 0, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2);
    ck_assert_float_eq(c[0], 19);
    ck_assert_float_eq(c[3], 50);
    nnrt_sgemm(1, 0, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2); /* A^T B */
    ck_assert_float_eq(c[0], 26);
    ck_assert_float_eq(c[1], 30);
    nnrt_sgemm(0, 1, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2); /* A B^T */
    ck_assert_float_eq(c[0], 17);
    ck_assert_float_eq(c[1], 23);
}
END_TEST

/* c := alpha op(a) op(b) + beta c in double precision, the reference. */
static void reference_gemm(int ta, int tb, int m, int n, int k, double alpha, const float *a, int lda,
                           const float *b, int ldb, double beta, const float *c0, double *c, int ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double sum = 0;
            for (int q = 0; q < k; q++)
                sum += (double)(ta ? a[q * lda + i] : a[i * lda + q]) * (tb ? b[j * ldb + q] : b[q * ldb + j]);
            c[i * ldc + j] = alpha * sum + (beta == 0 ? 0 : beta * c0[i * ldc + j]);
        }
}

/* nnrt_sgemm on shapes that cross every edge of its kernels (row blocks,
 * 16-lane vectors, 64-column panels, 256-product blocks, the split over
 * threads), both transposes, padded leading dimensions, alpha and beta,
 * with one thread and with two. A C holding NaN must not leak through
 * beta = 0; nothing outside C may be written. */
START_TEST(test_sgemm_shapes) {
    static const int sizes[][3] = {{1, 1, 1},   {1, 10, 784},  {64, 10, 784}, {784, 10, 64}, {13, 17, 5},
                                   {7, 65, 300}, {100, 129, 9}, {3, 200, 513}, {25, 48, 33}, {128, 256, 100},
                                   {2000, 10, 64}, {33, 7, 1500}, {200, 9, 100}};
    for (int threads = 1; threads <= 2; threads++) {
        nnrt_set_threads(threads);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            for (int t = 0; t < 8; t++) {
                int m = sizes[s][0], n = sizes[s][1], k = sizes[s][2], ta = t & 1, tb = (t >> 1) & 1;
                float beta = (t & 4) ? 0.5f : 0.0f, alpha = (t & 4) ? 1.0f : -0.75f;
                int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
                float *a = malloc(sizeof(float) * (size_t)(ta ? k : m) * lda);
                float *b = malloc(sizeof(float) * (size_t)(tb ? n : k) * ldb);
                float *c = malloc(sizeof(float) * (size_t)m * ldc);
                float *c0 = malloc(sizeof(float) * (size_t)m * ldc);
                double *want = malloc(sizeof(double) * (size_t)m * ldc);
                for (int i = 0; i < (ta ? k : m) * lda; i++) a[i] = (float)nnrt_rand_uniform(1, (uint64_t)i) - 0.5f;
                for (int i = 0; i < (tb ? n : k) * ldb; i++) b[i] = (float)nnrt_rand_uniform(2, (uint64_t)i) - 0.5f;
                for (int i = 0; i < m * ldc; i++)
                    c0[i] = c[i] = beta == 0 && i % ldc < n ? NAN : (float)nnrt_rand_uniform(3, (uint64_t)i);
                nnrt_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
                reference_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c0, want, ldc);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < ldc; j++) {
                        double got = c[i * ldc + j];
                        if (j >= n) { /* padding between rows: untouched */
                            ck_assert_msg(got == c0[i * ldc + j], "wrote outside C at %d,%d", i, j);
                            continue;
                        }
                        double w = want[i * ldc + j];
                        ck_assert_msg(fabs(got - w) <= 1e-5 * (1 + sqrt((double)k)),
                                      "%dx%dx%d ta=%d tb=%d threads=%d: c[%d][%d] = %g, want %g", m, n, k, ta, tb,
                                      threads, i, j, got, w);
                    }
                free(a), free(b), free(c), free(c0), free(want);
            }
    }
    nnrt_set_threads(2);
}
END_TEST

/* Batches of products, each alone and summed into one C (a convolution's
 * weight gradient), for the shapes the kernels treat differently. */
START_TEST(test_sgemm_batched_shapes) {
    static const int sizes[][3] = {{6, 25, 576}, {16, 150, 64}, {5, 7, 70}, {9, 33, 20}};
    enum { COUNT = 3 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int t = 0; t < 8; t++) {
            int m = sizes[s][0], n = sizes[s][1], k = sizes[s][2], ta = t & 1, tb = (t >> 1) & 1, summed = t >> 2;
            int lda = ta ? m : k, ldb = tb ? k : n, sa = m * k + 5, sb = k * n + 3, sc = summed ? 0 : m * n;
            float *a = malloc(sizeof(float) * (size_t)sa * COUNT), *b = malloc(sizeof(float) * (size_t)sb * COUNT);
            float *c = malloc(sizeof(float) * (size_t)m * n * COUNT), *c0 = malloc(sizeof(float) * (size_t)m * n * COUNT);
            double *want = calloc((size_t)m * n * COUNT, sizeof(double)), *part = malloc(sizeof(double) * (size_t)m * n);
            for (int i = 0; i < sa * COUNT; i++) a[i] = (float)nnrt_rand_uniform(4, (uint64_t)i) - 0.5f;
            for (int i = 0; i < sb * COUNT; i++) b[i] = (float)nnrt_rand_uniform(5, (uint64_t)i) - 0.5f;
            for (int i = 0; i < m * n * COUNT; i++) c0[i] = c[i] = (float)nnrt_rand_uniform(6, (uint64_t)i);
            nnrt_sgemm_batched(COUNT, ta, tb, m, n, k, 0.5f, a, lda, sa, b, ldb, sb, 0.25f, c, n, sc);
            for (int q = 0; q < COUNT; q++) {
                /* summed: c = 0.5 sum_q A_q B_q + 0.25 c0; else each c_q on its own */
                reference_gemm(ta, tb, m, n, k, 0.5, a + q * sa, lda, b + q * sb, ldb, 0, NULL, part, n);
                for (int i = 0; i < m * n; i++) want[(summed ? 0 : q * m * n) + i] += part[i];
            }
            for (int i = 0; i < (summed ? 1 : COUNT) * m * n; i++) {
                double w = want[i] + 0.25 * c0[i];
                ck_assert_msg(fabs(c[i] - w) <= 1e-5 * (1 + sqrt((double)k * COUNT)),
                              "%dx%dx%d ta=%d tb=%d summed=%d: c[%d] = %g, want %g", m, n, k, ta, tb, summed, i,
                              (double)c[i], w);
            }
            free(a), free(b), free(c), free(c0), free(want), free(part);
        }
}
END_TEST

/* Adds every index of its range, once. */
static void add_indices(void *ctx, int64_t lo, int64_t hi) {
    _Atomic int64_t *sum = ctx;
    for (int64_t i = lo; i < hi; i++) *sum += i + 1;
}

/* A region inside a region runs on its caller; both cover their range once. */
static void nested_region(void *ctx, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) nnrt_parallel_for(100, add_indices, ctx);
}

START_TEST(test_parallel_for_covers_once) {
    nnrt_set_threads(2);
    for (int64_t n = 0; n < 50; n++)
        for (int round = 0; round < 20; round++) {
            _Atomic int64_t sum = 0;
            nnrt_parallel_for(n, add_indices, &sum);
            ck_assert_int_eq(sum, n * (n + 1) / 2);
        }
    _Atomic int64_t sum = 0;
    nnrt_parallel_for(7, nested_region, &sum);
    ck_assert_int_eq(sum, 7 * 5050);
    ck_assert_int_eq(nnrt_threads(), 2);
}
END_TEST

/* The count changes between regions, up and down (workers a lower count
 * does not need sleep, and wake when it grows): every region still covers
 * its range once, and runs in parallel exactly when the count is above 1. */
START_TEST(test_parallel_for_at_changing_counts) {
    static const int counts[] = {4, 1, 3, 2, 1, 4, 2, 3, 1, 2};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        nnrt_set_threads(counts[i]);
        ck_assert_int_eq(nnrt_threads(), counts[i]);
        for (int round = 0; round < 50; round++) {
            _Atomic int64_t sum = 0;
            uint64_t before = nnrt_parallel_regions();
            nnrt_parallel_for(1000, add_indices, &sum);
            ck_assert_int_eq(sum, 1000 * 1001 / 2);
            ck_assert_int_eq(nnrt_parallel_regions() - before, counts[i] > 1);
        }
    }
    /* a fixed count holds against the automatic choice; 0 lifts it */
    nnrt_set_threads(2);
    nnrt_use_threads(1);
    ck_assert_int_eq(nnrt_threads(), 2);
    ck_assert(nnrt_threads_fixed());
    nnrt_set_threads(0);
    ck_assert(!nnrt_threads_fixed());
    ck_assert_int_eq(nnrt_threads(), nnrt_cores());
    nnrt_use_threads(3);
    ck_assert_int_eq(nnrt_threads(), 3);
    nnrt_set_threads(2);
}
END_TEST

/* A 3x4 image with distinct values, flipped and shifted by hand. */
START_TEST(test_augment_geometry) {
    float img[12], scratch[12];
    for (int i = 0; i < 12; i++) img[i] = (float)(i + 1);
    /* find a key whose first image is flipped but not shifted, by the generator's own rule */
    uint64_t key = 0;
    while (!nnrt_rand_below(key, 0, 2)) key++;
    rt_augment(img, 1, 1, 3, 4, RT_AUG_FLIP, 0, key, scratch);
    const float flipped[12] = {4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9};
    ck_assert_mem_eq(img, flipped, sizeof img);

    /* a shift moves the picture and fills with zeros; the same key does the same */
    float a[12], b[12];
    for (int i = 0; i < 12; i++) a[i] = b[i] = (float)(i + 1);
    rt_augment(a, 1, 1, 3, 4, RT_AUG_SHIFT, 1, 77, scratch);
    rt_augment(b, 1, 1, 3, 4, RT_AUG_SHIFT, 1, 77, scratch);
    ck_assert_mem_eq(a, b, sizeof a);
    int64_t dx = (int64_t)nnrt_rand_below(77, 1, 3) - 1, dy = (int64_t)nnrt_rand_below(77, 2, 3) - 1;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) {
            int si = i - (int)dy, sj = j - (int)dx;
            float want = si >= 0 && si < 3 && sj >= 0 && sj < 4 ? (float)(si * 4 + sj + 1) : 0.0f;
            ck_assert_float_eq(a[i * 4 + j], want);
        }
}
END_TEST

START_TEST(test_select_classes) {
    float x[5] = {0, 1, 2, 3, 4};
    int32_t y[5] = {7, 1, 9, 7, 0};
    RtDataset d = {.n = 5, .features = 1, .x = x, .y = y, .nclasses = 10}, s;
    char err[256];
    ck_assert_int_eq(rt_dataset_select_classes(&s, &d, (int64_t[]){9, 7}, 2, err, sizeof err), 0);
    ck_assert_int_eq(s.n, 3);
    ck_assert_int_eq(s.nclasses, 2);
    /* in order, relabelled by position in the list: 7 -> 1, 9 -> 0 */
    ck_assert_float_eq(s.x[0], 0);
    ck_assert_int_eq(s.y[0], 1);
    ck_assert_int_eq(s.y[1], 0);
    ck_assert_float_eq(s.x[2], 3);
    rt_dataset_free(&s);
    ck_assert_int_eq(rt_dataset_select_classes(&s, &d, (int64_t[]){3, 12}, 2, err, sizeof err), -1);
    ck_assert_str_eq(err, "class 12 is not in the data (its labels are 0 to 9)");
}
END_TEST

/* Two products with a shared A; then the same two summed into one C (on top
 * of beta = 0.5 times what it held); then a sum of none. */
START_TEST(test_sgemm_batched) {
    float a[4] = {1, 2, 3, 4}, b[8] = {5, 6, 7, 8, 1, 0, 0, 1}, c[8];
    nnrt_sgemm_batched(2, 0, 0, 2, 2, 2, 1, a, 2, 0, b, 2, 4, 0, c, 2, 4);
    float separate[8] = {19, 22, 43, 50, 1, 2, 3, 4};
    for (int i = 0; i < 8; i++) ck_assert_float_eq(c[i], separate[i]);
    float sum[4] = {2, 2, 2, 2};
    nnrt_sgemm_batched(2, 0, 0, 2, 2, 2, 1, a, 2, 0, b, 2, 4, 0.5f, sum, 2, 0);
    for (int i = 0; i < 4; i++) ck_assert_float_eq(sum[i], 1 + separate[i] + separate[4 + i]);
    double none[4] = {2, 4, 6, 8}, ad[4] = {0}, bd[4] = {0};
    nnrt_dgemm_batched(0, 0, 0, 2, 2, 2, 1, ad, 2, 0, bd, 2, 4, 0.5, none, 2, 0);
    for (int i = 0; i < 4; i++) ck_assert_double_eq(none[i], i + 1);
}
END_TEST

int main(void) {
    Suite *s = suite_create("runtime");
    TCase *rng = tcase_create("rng");
    tcase_add_test(rng, test_mix64_reference);
    tcase_add_test(rng, test_uniform_range_and_mean);
    tcase_add_test(rng, test_permutation);
    suite_add_tcase(s, rng);
    TCase *data = tcase_create("data");
    tcase_add_test(data, test_idx_roundtrip);
    tcase_add_test(data, test_idx_plain_files);
    tcase_add_test(data, test_idx_errors);
    tcase_add_test(data, test_count_correct);
    tcase_add_test(data, test_sgemm_transposes);
    tcase_add_test(data, test_augment_geometry);
    tcase_add_test(data, test_select_classes);
    tcase_add_test(data, test_sgemm_batched);
    suite_add_tcase(s, data);
    TCase *kernels = tcase_create("kernels");
    tcase_add_test(kernels, test_sgemm_shapes);
    tcase_add_test(kernels, test_sgemm_batched_shapes);
    tcase_add_test(kernels, test_parallel_for_covers_once);
    tcase_add_test(kernels, test_parallel_for_at_changing_counts);
    tcase_set_timeout(kernels, 60);
    suite_add_tcase(s, kernels);
    return run_suite(s);
}
