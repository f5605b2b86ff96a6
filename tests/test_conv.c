/* test_conv.c - convolution, pooling and dropout as compiled by the JIT,
 * against direct loops written here in double precision: forward values of
 * conv2d (strides, padding, non-square kernels, pointwise), maxpool and
 * avgpool on random inputs; the maxpool gradient's rule for ties; and the
 * masks of dropout (the kept fraction, the scale, a new mask every step, the
 * same one in the backward pass, none at inference). */
#include "cli/driver.h"
#include "runtime/rng.h"
#include "support/util.h"

#include "check_main.h"
#include "compiled.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static void compile(Compiled *c, const char *text, unsigned fns, bool f64) {
    compiled_from_text(c, text, fns, f64, 8);
}

static void *slot(Compiled *c, const char *name) {
    void *p = session_slot(c->s, name);
    ck_assert_msg(p != NULL, "no state slot %s", name);
    return p;
}

/* n uniform numbers in [-1, 1) from stream `key`. */
static float *random_floats(int64_t n, uint64_t key) {
    float *x = xmalloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(2 * nnrt_rand_uniform(key, (uint64_t)i) - 1);
    return x;
}

/* ---- conv2d ------------------------------------------------------------------------------------ */

typedef struct ConvCase {
    int c, h, w, f, kh, kw, sh, sw, ph, pw;
} ConvCase;

static const ConvCase conv_cases[] = {
    {2, 6, 6, 3, 3, 3, 1, 1, 0, 0},  /* plain 3x3                                    */
    {3, 7, 9, 4, 3, 2, 2, 2, 1, 1},  /* odd sizes, stride 2 with padding, 3x2 kernel  */
    {2, 5, 8, 2, 2, 3, 1, 2, 0, 1},  /* different strides and padding per axis       */
    {4, 5, 5, 3, 1, 1, 1, 1, 0, 0},  /* pointwise: the columns are the input itself  */
    {1, 9, 7, 2, 2, 2, 3, 3, 0, 0},  /* stride wider than the kernel                 */
    {2, 4, 4, 5, 5, 5, 1, 1, 2, 2},  /* kernel larger than the input, padded         */
};

/* y[n, f, oh, ow] = b[f] + sum over c, i, j of w[f, c, i, j] x[n, c, oh*sh - ph + i, ow*sw - pw + j] */
static double conv_reference(const ConvCase *k, const float *x, const float *w, const float *b, int n, int f,
                             int oh, int ow) {
    double sum = b[f];
    for (int c = 0; c < k->c; c++)
        for (int i = 0; i < k->kh; i++)
            for (int j = 0; j < k->kw; j++) {
                int h = oh * k->sh - k->ph + i, v = ow * k->sw - k->pw + j;
                if (h < 0 || h >= k->h || v < 0 || v >= k->w) continue;
                double wv = w[((f * k->c + c) * k->kh + i) * k->kw + j];
                sum += wv * x[((n * k->c + c) * k->h + h) * k->w + v];
            }
    return sum;
}

START_TEST(test_conv2d_forward) {
    const ConvCase *k = &conv_cases[_i];
    char text[512];
    snprintf(text, sizeof text,
             "input x : f32[N, %d, %d, %d]\n"
             "output y = conv2d(x, %d, kernel=[%d, %d], stride=[%d, %d], pad=[%d, %d])\n",
             k->c, k->h, k->w, k->f, k->kh, k->kw, k->sh, k->sw, k->ph, k->pw);
    Compiled c;
    compile(&c, text, FN_BIT(FN_FORWARD), false);
    enum { B = 3 };
    int ho = (k->h + 2 * k->ph - k->kh) / k->sh + 1, wo = (k->w + 2 * k->pw - k->kw) / k->sw + 1;
    int64_t nw = (int64_t)k->f * k->c * k->kh * k->kw, nx = (int64_t)B * k->c * k->h * k->w;
    float *w = slot(&c, "y.W"), *b = slot(&c, "y.b");
    float *wr = random_floats(nw, 21), *br = random_floats(k->f, 22), *x = random_floats(nx, 23);
    memcpy(w, wr, sizeof(float) * (size_t)nw);
    memcpy(b, br, sizeof(float) * (size_t)k->f);
    float *y = xcalloc((size_t)(B * k->f * ho * wo), sizeof(float));
    session_run(c.s, FN_FORWARD, (void *[]){x, y}, B);
    for (int n = 0; n < B; n++)
        for (int f = 0; f < k->f; f++)
            for (int oh = 0; oh < ho; oh++)
                for (int ow = 0; ow < wo; ow++) {
                    double e = conv_reference(k, x, wr, br, n, f, oh, ow);
                    float got = y[((n * k->f + f) * ho + oh) * wo + ow];
                    ck_assert_msg(fabs(got - e) <= 1e-5 * (1 + fabs(e)),
                                  "case %d, y[%d,%d,%d,%d] = %.9g, expected %.9g", _i, n, f, oh, ow, got, e);
                }
    free(wr);
    free(br);
    free(x);
    free(y);
    compiled_release(&c);
}
END_TEST

/* ---- pooling ------------------------------------------------------------------------------------ */

typedef struct PoolCase {
    int c, h, w, kh, kw, sh, sw;
} PoolCase;

static const PoolCase pool_cases[] = {
    {2, 6, 6, 2, 2, 2, 2}, /* the usual 2x2                     */
    {3, 7, 9, 3, 2, 2, 3}, /* odd sizes, non-square, uncovered pixels */
    {1, 5, 5, 2, 3, 1, 1}, /* overlapping windows                */
    {2, 4, 3, 4, 3, 1, 1}, /* one window over everything        */
};

/* The max or the mean of window (oh, ow) of channel (n, c). */
static double pool_reference(const PoolCase *k, const float *x, int nc, int oh, int ow, bool max) {
    double m = -INFINITY, sum = 0;
    for (int i = 0; i < k->kh; i++)
        for (int j = 0; j < k->kw; j++) {
            double v = x[(nc * k->h + oh * k->sh + i) * k->w + ow * k->sw + j];
            m = fmax(m, v);
            sum += v;
        }
    return max ? m : sum / (k->kh * k->kw);
}

START_TEST(test_pool_forward) {
    const PoolCase *k = &pool_cases[_i];
    char text[512];
    snprintf(text, sizeof text,
             "input x : f32[N, %d, %d, %d]\n"
             "output m = maxpool(x, [%d, %d], stride=[%d, %d])\n"
             "output a = avgpool(x, [%d, %d], stride=[%d, %d])\n",
             k->c, k->h, k->w, k->kh, k->kw, k->sh, k->sw, k->kh, k->kw, k->sh, k->sw);
    Compiled c;
    compile(&c, text, FN_BIT(FN_FORWARD), false);
    enum { B = 2 };
    int ho = (k->h - k->kh) / k->sh + 1, wo = (k->w - k->kw) / k->sw + 1, ny = B * k->c * ho * wo;
    float *x = random_floats((int64_t)B * k->c * k->h * k->w, 31);
    float *m = xcalloc((size_t)ny, sizeof(float)), *a = xcalloc((size_t)ny, sizeof(float));
    session_run(c.s, FN_FORWARD, (void *[]){x, m, a}, B);
    for (int nc = 0; nc < B * k->c; nc++)
        for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++) {
                int at = (nc * ho + oh) * wo + ow;
                ck_assert_float_eq(m[at], (float)pool_reference(k, x, nc, oh, ow, true));
                ck_assert_double_eq_tol(a[at], pool_reference(k, x, nc, oh, ow, false), 1e-6);
            }
    free(x);
    free(m);
    free(a);
    compiled_release(&c);
}
END_TEST

/* The gradient of a window goes to its first maximum, row by row, when
 * several elements tie. P holds the pooled values (ties on purpose), x the
 * gradient of each window's result: grad.P shows where each went. */
START_TEST(test_maxpool_gradient_ties) {
    Compiled c;
    compile(&c,
            "input x : f32[N, 1, 3, 3]\n"
            "param P : f32[1, 1, 4, 4] init=zeros\n"
            "y = maxpool(P, 2, stride=1) * x\n"
            "output out = y\n"
            "loss sum(y)\n",
            FN_BIT(FN_GRAD), true);
    double *P = slot(&c, "P");
    /* windows (stride 1) over
     *   1 1 0 2
     *   0 1 2 2
     *   3 3 0 0
     *   3 1 0 5   */
    const double p[16] = {1, 1, 0, 2, 0, 1, 2, 2, 3, 3, 0, 0, 3, 1, 0, 5};
    memcpy(P, p, sizeof p);
    double x[9], grad[16];
    for (int i = 0; i < 9; i++) x[i] = 1 << i; /* each window's gradient a bit of its own */
    session_run(c.s, FN_GRAD, (void *[]){x, grad}, 1);
    /* window (oh, ow) -> the first maximum among P[oh..oh+1][ow..ow+1]:
     * (0,0)->(0,0)  (0,1)->(1,2)  (0,2)->(0,3)
     * (1,0)->(2,0)  (1,1)->(2,1)  (1,2)->(1,2)
     * (2,0)->(2,0)  (2,1)->(2,1)  (2,2)->(3,3) */
    double expect[16] = {0};
    const int to[9] = {0, 6, 3, 8, 9, 6, 8, 9, 15};
    for (int i = 0; i < 9; i++) expect[to[i]] += x[i];
    for (int i = 0; i < 16; i++)
        ck_assert_msg(grad[i] == expect[i], "grad.P[%d] = %g, expected %g", i, grad[i], expect[i]);
    compiled_release(&c);
}
END_TEST

/* ---- dropout ------------------------------------------------------------------------------------- */

enum { DROP_N = 4000 };

/* loss = sum(dropout(x * s, 0.3)) with x = 1: grad.s[j] is the mask of
 * element j times the scale, 1 / 0.7 or 0. */
static const char *const dropout_model = "input x : f32[N, 4000]\n"
                                         "param s : f32[4000] init=uniform(1)\n"
                                         "d = dropout(x * s, 0.3)\n"
                                         "output y = d\n"
                                         "loss sum(d)\n"
                                         "train sgd(lr=0.001)\n";

/* The mask of the current step, from the gradient (f64 session); returns the loss. */
static double dropout_mask(Compiled *c, double *mask) {
    double x[DROP_N];
    for (int i = 0; i < DROP_N; i++) x[i] = 1;
    return session_run(c->s, FN_GRAD, (void *[]){x, mask}, 1);
}

START_TEST(test_dropout_keeps_and_scales) {
    Compiled c;
    compile(&c, dropout_model, FN_BIT(FN_GRAD), true);
    double *s = slot(&c, "s"), mask[DROP_N];
    double loss = dropout_mask(&c, mask), forward = 0;
    int kept = 0;
    for (int j = 0; j < DROP_N; j++) {
        ck_assert_msg(mask[j] == 0 || fabs(mask[j] - 1 / 0.7) < 1e-12, "grad.s[%d] = %.17g", j, mask[j]);
        kept += mask[j] != 0;
        forward += mask[j] * s[j];
    }
    double fraction = (double)kept / DROP_N; /* 1 - rate, within 4 standard deviations */
    ck_assert_msg(fabs(fraction - 0.7) < 4 * sqrt(0.21 / DROP_N), "kept %g of the elements", fraction);
    /* The loss the forward pass computed is what the backward pass's mask
     * gives: the same elements were kept (s differs from element to element). */
    ck_assert_double_eq_tol(loss, forward, 1e-9);
    compiled_release(&c);
}
END_TEST

START_TEST(test_dropout_new_mask_every_step) {
    Compiled c;
    compile(&c, dropout_model, FN_BIT(FN_GRAD) | FN_BIT(FN_TRAIN), true);
    double first[DROP_N], again[DROP_N], next[DROP_N];
    dropout_mask(&c, first);
    dropout_mask(&c, again);
    ck_assert_mem_eq(first, again, sizeof first); /* same state, same step: the same mask */
    double x[DROP_N];
    for (int i = 0; i < DROP_N; i++) x[i] = 1;
    session_run(c.s, FN_TRAIN, (void *[]){x}, 1);
    ck_assert_double_eq(*(double *)slot(&c, "opt.step"), 1);
    dropout_mask(&c, next);
    int differ = 0, both = 0;
    for (int j = 0; j < DROP_N; j++) {
        differ += (first[j] != 0) != (next[j] != 0);
        both += first[j] != 0 && next[j] != 0;
    }
    /* independent masks agree on about 0.7^2 + 0.3^2 of the elements */
    ck_assert_msg(differ > DROP_N / 3, "only %d of %d elements changed", differ, DROP_N);
    ck_assert_msg(abs(both - (int)(0.49 * DROP_N)) < 200, "%d elements kept twice", both);
    compiled_release(&c);
}
END_TEST

/* Two dropout layers draw masks of their own; another seed gives others,
 * and rng.seed holds the init seed mod 2^24. */
START_TEST(test_dropout_streams_and_seeds) {
    Compiled c;
    compile(&c,
            "input x : f32[N, 4000]\n"
            "param s : f32[4000] init=ones\n"
            "param r : f32[4000] init=ones\n"
            "output y = dropout(x * s, 0.5) + dropout(x * r, 0.5)\n"
            "loss sum(y)\n",
            FN_BIT(FN_GRAD), true);
    double x[DROP_N], gs[DROP_N], gr[DROP_N], gs2[DROP_N], gr2[DROP_N];
    for (int i = 0; i < DROP_N; i++) x[i] = 1;
    session_run(c.s, FN_GRAD, (void *[]){x, gs, gr}, 1);
    ck_assert(memcmp(gs, gr, sizeof gs) != 0);
    ck_assert_double_eq(*(double *)slot(&c, "rng.seed"), 1);
    session_init(c.s, ((uint64_t)5 << 24) + 9);
    ck_assert_double_eq(*(double *)slot(&c, "rng.seed"), 9);
    session_run(c.s, FN_GRAD, (void *[]){x, gs2, gr2}, 1);
    ck_assert(memcmp(gs, gs2, sizeof gs) != 0 && memcmp(gr, gr2, sizeof gr) != 0);
    compiled_release(&c);
}
END_TEST

/* forward and eval compute x itself, and the step counter does not matter. */
START_TEST(test_dropout_is_identity_at_inference) {
    Compiled c;
    compile(&c, dropout_model, FN_BIT(FN_FORWARD) | FN_BIT(FN_EVAL), false);
    const float *s = slot(&c, "s");
    float *x = random_floats(2 * DROP_N, 41), *y = xcalloc(2 * DROP_N, sizeof(float));
    float *y2 = xcalloc(2 * DROP_N, sizeof(float));
    session_run(c.s, FN_FORWARD, (void *[]){x, y}, 2);
    for (int i = 0; i < 2 * DROP_N; i++) ck_assert_float_eq(y[i], x[i] * s[i % DROP_N]);
    *(float *)slot(&c, "opt.step") = 17;
    double loss = session_run(c.s, FN_EVAL, (void *[]){x, y2}, 2), sum = 0, size = 0;
    ck_assert_mem_eq(y, y2, sizeof(float) * 2 * DROP_N);
    for (int i = 0; i < 2 * DROP_N; i++) {
        sum += y[i];
        size += fabs(y[i]);
    }
    ck_assert_double_eq_tol(loss, sum, 1e-6 * size);
    free(x);
    free(y);
    free(y2);
    compiled_release(&c);
}
END_TEST

int main(void) {
    Suite *s = suite_create("conv");
    TCase *conv = tcase_create("conv2d");
    tcase_add_loop_test(conv, test_conv2d_forward, 0, (int)(sizeof conv_cases / sizeof conv_cases[0]));
    suite_add_tcase(s, conv);
    TCase *pool = tcase_create("pooling");
    tcase_add_loop_test(pool, test_pool_forward, 0, (int)(sizeof pool_cases / sizeof pool_cases[0]));
    tcase_add_test(pool, test_maxpool_gradient_ties);
    suite_add_tcase(s, pool);
    TCase *drop = tcase_create("dropout");
    tcase_add_test(drop, test_dropout_keeps_and_scales);
    tcase_add_test(drop, test_dropout_new_mask_every_step);
    tcase_add_test(drop, test_dropout_streams_and_seeds);
    tcase_add_test(drop, test_dropout_is_identity_at_inference);
    suite_add_tcase(s, drop);
    return run_suite(s);
}
