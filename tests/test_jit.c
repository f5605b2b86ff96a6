/* test_jit.c - compiled code against numbers computed here by hand (in
 * double precision): forward values, one optimizer step of each kind,
 * initialisation statistics, independence of batch rows, and the promise
 * that a training step allocates nothing. */
#include "cli/driver.h"
#include "runtime/nnrt.h"
#include "runtime/rng.h"
#include "support/util.h"

#include "alloc_count.h"
#include "check_main.h"
#include "compiled.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static void compile(Compiled *c, const char *text, unsigned fns, bool f64) {
    compiled_from_text(c, text, fns, f64, 64);
}

static float *slot(Compiled *c, const char *name) {
    float *p = session_slot(c->s, name);
    ck_assert_msg(p != NULL, "no state slot %s", name);
    return p;
}

static double uniform(uint64_t key, uint64_t i) { return 2 * nnrt_rand_uniform(key, i) - 1; }

/* ---- forward -------------------------------------------------------------------------------- */

static const char *linear_model = "model lin\n"
                                  "input x : f32[N, 3]\n"
                                  "target t : f32[N, 2]\n"
                                  "param W : f32[3, 2]\n"
                                  "param b : f32[2]\n"
                                  "output y = x @ W + b\n"
                                  "loss mse(y, t)\n"
                                  "train sgd(lr=0.1)\n";

START_TEST(test_forward_matches_hand_computation) {
    Compiled c;
    compile(&c, linear_model, FN_BIT(FN_FORWARD), false);
    float *W = slot(&c, "W"), *b = slot(&c, "b");
    float w[6] = {1, 2, 3, 4, 5, 6}, bias[2] = {0.5f, -1};
    memcpy(W, w, sizeof w);
    memcpy(b, bias, sizeof bias);
    float x[2 * 3] = {1, 0, -1, 2, 1, 0.5f}, y[2 * 2];
    void *args[] = {x, y};
    session_run(c.s, FN_FORWARD, args, 2);
    /* y = x W + b */
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            double e = bias[j];
            for (int k = 0; k < 3; k++) e += (double)x[i * 3 + k] * w[k * 2 + j];
            ck_assert_double_eq_tol(y[i * 2 + j], e, 1e-5);
        }
    compiled_release(&c);
}
END_TEST

START_TEST(test_softmax_and_cross_entropy_values) {
    Compiled c;
    compile(&c,
            "input x : f32[N, 4]\ntarget y : i32[N] classes 4\n"
            "output p = softmax(x)\noutput lp = log_softmax(x)\nloss cross_entropy(x, y)\n",
            FN_BIT(FN_EVAL), false);
    /* Large logits: the log-sum-exp form must not overflow. */
    float x[2 * 4] = {1, 2, 3, 4, 1000, 1001, 999, -1000};
    int32_t y[2] = {3, 0};
    float p[8], lp[8];
    void *args[] = {x, y, p, lp};
    double loss = session_run(c.s, FN_EVAL, args, 2);
    double expect_loss = 0;
    for (int i = 0; i < 2; i++) {
        double m = -INFINITY, s = 0;
        for (int j = 0; j < 4; j++) m = fmax(m, x[i * 4 + j]);
        for (int j = 0; j < 4; j++) s += exp(x[i * 4 + j] - m);
        for (int j = 0; j < 4; j++) {
            ck_assert_double_eq_tol(p[i * 4 + j], exp(x[i * 4 + j] - m) / s, 1e-6);
            ck_assert_double_eq_tol(lp[i * 4 + j], x[i * 4 + j] - m - log(s), 1e-4);
        }
        expect_loss += m + log(s) - x[i * 4 + y[i]];
    }
    ck_assert_double_eq_tol(loss, expect_loss / 2, 1e-4);
    ck_assert(isfinite(loss));
    compiled_release(&c);
}
END_TEST

/* Each row of a batch is computed on its own: the same example gives the
 * same output at batch 1 and inside a batch of 7. */
START_TEST(test_rows_are_independent_of_batch) {
    Compiled c;
    compile(&c,
            "input x : f32[N, 5]\nh = dense(x, 8, act=tanh)\noutput p = softmax(dense(h, 3))\n",
            FN_BIT(FN_FORWARD), false);
    session_init(c.s, 3);
    float x[7 * 5], p7[7 * 3], p1[3];
    for (int i = 0; i < 35; i++) x[i] = (float)uniform(5, (uint64_t)i);
    session_run(c.s, FN_FORWARD, (void *[]){x, p7}, 7);
    session_run(c.s, FN_FORWARD, (void *[]){x + 4 * 5, p1}, 1);
    for (int j = 0; j < 3; j++) ck_assert_float_eq_tol(p1[j], p7[4 * 3 + j], 1e-6);
    compiled_release(&c);
}
END_TEST

/* ---- one step of each optimizer ----------------------------------------------------------------
 * For the linear model with loss mean((xW + b - t)^2) over N*2 elements,
 * dW = 2/(2N) x^T (xW + b - t), db = 2/(2N) sum_i (xW + b - t)_i. */
static void linear_gradient(const float *x, const float *t, const float *W, const float *b, int n, double *gW,
                            double *gb) {
    memset(gW, 0, 6 * sizeof(double));
    memset(gb, 0, 2 * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 2; j++) {
            double y = b[j];
            for (int k = 0; k < 3; k++) y += (double)x[i * 3 + k] * W[k * 2 + j];
            double r = 2 * (y - t[i * 2 + j]) / (2.0 * n);
            for (int k = 0; k < 3; k++) gW[k * 2 + j] += x[i * 3 + k] * r;
            gb[j] += r;
        }
}

enum { N_EX = 5 };

static void fill_linear_batch(float *x, float *t) {
    for (int i = 0; i < N_EX * 3; i++) x[i] = (float)uniform(11, (uint64_t)i);
    for (int i = 0; i < N_EX * 2; i++) t[i] = (float)uniform(12, (uint64_t)i);
}

START_TEST(test_sgd_step) {
    Compiled c;
    compile(&c, linear_model, FN_BIT(FN_TRAIN), false);
    session_init(c.s, 1);
    float *W = slot(&c, "W"), *b = slot(&c, "b"), x[N_EX * 3], t[N_EX * 2], W0[6], b0[2];
    fill_linear_batch(x, t);
    memcpy(W0, W, sizeof W0);
    memcpy(b0, b, sizeof b0);
    double gW[6], gb[2];
    linear_gradient(x, t, W0, b0, N_EX, gW, gb);
    session_run(c.s, FN_TRAIN, (void *[]){x, t}, N_EX);
    for (int i = 0; i < 6; i++) ck_assert_double_eq_tol(W[i], W0[i] - 0.1 * gW[i], 1e-6);
    for (int i = 0; i < 2; i++) ck_assert_double_eq_tol(b[i], b0[i] - 0.1 * gb[i], 1e-6);
    ck_assert_float_eq(*slot(&c, "opt.step"), 1);
    compiled_release(&c);
}
END_TEST

START_TEST(test_momentum_two_steps) {
    Compiled c;
    char text[512];
    snprintf(text, sizeof text, "%s", linear_model);
    strcpy(strstr(text, "train"), "train momentum(lr=0.1, momentum=0.9)\n");
    compile(&c, text, FN_BIT(FN_TRAIN), false);
    session_init(c.s, 1);
    float *W = slot(&c, "W"), *b = slot(&c, "b"), x[N_EX * 3], t[N_EX * 2];
    fill_linear_batch(x, t);
    double v[6] = {0}, w[6], gW[6], gb[2];
    for (int i = 0; i < 6; i++) w[i] = W[i];
    for (int step = 0; step < 2; step++) {
        float Wf[6];
        for (int i = 0; i < 6; i++) Wf[i] = (float)w[i];
        linear_gradient(x, t, Wf, b, N_EX, gW, gb);
        for (int i = 0; i < 6; i++) {
            v[i] = 0.9 * v[i] + gW[i];
            w[i] -= 0.1 * v[i];
        }
        session_run(c.s, FN_TRAIN, (void *[]){x, t}, N_EX);
    }
    for (int i = 0; i < 6; i++) ck_assert_double_eq_tol(W[i], w[i], 1e-5);
    for (int i = 0; i < 6; i++) ck_assert_double_eq_tol(slot(&c, "W.velocity")[i], v[i], 1e-5);
    compiled_release(&c);
}
END_TEST

START_TEST(test_adam_first_step) {
    Compiled c;
    char text[512];
    snprintf(text, sizeof text, "%s", linear_model);
    strcpy(strstr(text, "train"), "train adam(lr=0.01)\n");
    compile(&c, text, FN_BIT(FN_TRAIN), false);
    session_init(c.s, 1);
    float *W = slot(&c, "W"), *b = slot(&c, "b"), x[N_EX * 3], t[N_EX * 2], W0[6];
    fill_linear_batch(x, t);
    memcpy(W0, W, sizeof W0);
    double gW[6], gb[2];
    linear_gradient(x, t, W0, b, N_EX, gW, gb);
    session_run(c.s, FN_TRAIN, (void *[]){x, t}, N_EX);
    for (int i = 0; i < 6; i++) {
        double m = 0.1 * gW[i], v = 0.001 * gW[i] * gW[i];
        double lr_t = 0.01 * sqrt(1 - 0.999) / (1 - 0.9);
        ck_assert_double_eq_tol(W[i], W0[i] - lr_t * m / (sqrt(v) + 1e-8), 1e-6);
    }
    compiled_release(&c);
}
END_TEST

START_TEST(test_cosine_schedule) {
    Compiled c;
    char text[512];
    snprintf(text, sizeof text, "%s", linear_model);
    strcpy(strstr(text, "train"), "train sgd(lr=0.1) epochs 2 schedule cosine\n");
    compile(&c, text, FN_BIT(FN_TRAIN), false);
    session_init(c.s, 1);
    *slot(&c, "opt.steps_per_epoch") = 2;
    float *W = slot(&c, "W"), *b = slot(&c, "b"), x[N_EX * 3], t[N_EX * 2];
    fill_linear_batch(x, t);
    /* steps 0..3 of 2 epochs x 2 steps: lr * (1 + cos(pi * step / 4)) / 2 */
    for (int step = 0; step < 4; step++) {
        float W0[6];
        memcpy(W0, W, sizeof W0);
        double gW[6], gb[2];
        linear_gradient(x, t, W0, b, N_EX, gW, gb);
        session_run(c.s, FN_TRAIN, (void *[]){x, t}, N_EX);
        double lr = 0.1 * (1 + cos(M_PI * step / 4.0)) / 2;
        for (int i = 0; i < 6; i++) ck_assert_double_eq_tol(W[i], W0[i] - lr * gW[i], 1e-6);
    }
    compiled_release(&c);
}
END_TEST

/* ---- initialisation ----------------------------------------------------------------------------- */

START_TEST(test_init_is_deterministic_and_scaled) {
    Compiled c;
    compile(&c, "input x : f32[N, 400]\noutput y = dense(x, 300, init=he)\n", 0, false);
    int64_t size = c.m->state_size;
    float *first = xmalloc(sizeof(float) * (size_t)size);
    session_init(c.s, 7);
    memcpy(first, c.s->state, sizeof(float) * (size_t)size);
    session_init(c.s, 7);
    ck_assert_mem_eq(first, c.s->state, sizeof(float) * (size_t)size);
    session_init(c.s, 8);
    ck_assert(memcmp(first, c.s->state, sizeof(float) * (size_t)size) != 0);

    const float *W = slot(&c, "y.W"), *b = slot(&c, "y.b");
    double sum = 0, sq = 0;
    for (int i = 0; i < 400 * 300; i++) {
        sum += W[i];
        sq += (double)W[i] * W[i];
    }
    double mean = sum / (400 * 300), std = sqrt(sq / (400 * 300) - mean * mean);
    ck_assert_double_eq_tol(mean, 0, 0.002);
    ck_assert_double_eq_tol(std, sqrt(2.0 / 400), 0.01 * sqrt(2.0 / 400));
    for (int i = 0; i < 300; i++) ck_assert_float_eq(b[i], 0);
    free(first);
    compiled_release(&c);
}
END_TEST

START_TEST(test_xavier_uniform_bound) {
    Compiled c;
    compile(&c, "input x : f32[N, 50]\noutput y = dense(x, 30)\n", 0, false);
    session_init(c.s, 1);
    const float *W = slot(&c, "y.W");
    double bound = sqrt(6.0 / 80), lo = 0, hi = 0;
    for (int i = 0; i < 50 * 30; i++) {
        ck_assert(fabs(W[i]) <= bound);
        lo = fmin(lo, W[i]);
        hi = fmax(hi, W[i]);
    }
    ck_assert(lo < -0.9 * bound && hi > 0.9 * bound);
    compiled_release(&c);
}
END_TEST

/* ---- no allocation in a step ---------------------------------------------------------------------- */

/* ---- compiling in parts ---------------------------------------------------------------------- */

/* A module cut into parts compiled on several threads (backend/llvm/split.c)
 * computes what the module compiled whole computes, bit for bit: the
 * initial state and the state and losses after a few steps. */
START_TEST(test_parts_compute_what_one_module_does) {
    static const char *model = "input x : f32[N, 1, 12, 12]\ntarget y : i32[N] classes 4\n"
                               "c = conv2d(x, 3, kernel=3, act=relu)\np = maxpool(c, 2)\n"
                               "h = dense(flatten(p), 16, act=tanh)\nlogits = dense(h, 4)\n"
                               "output q = softmax(logits)\nloss cross_entropy(logits, y)\n"
                               "train sgd(lr=0.1, momentum=0.9)\n";
    enum { B = 8, STEPS = 3 };
    float x[B * 144];
    int32_t y[B];
    for (int i = 0; i < B * 144; i++) x[i] = (float)uniform(5, (uint64_t)i);
    for (int i = 0; i < B; i++) y[i] = i % 4;
    void *args[] = {x, y};
    Compiled c[2];
    double loss[2][STEPS];
    for (int k = 0; k < 2; k++) {
        nnrt_set_threads(k ? 6 : 1); /* the compile's threads: 6 asks for 6 parts */
        compile(&c[k], model, FN_BIT(FN_TRAIN), false);
        nnrt_set_threads(1);
        for (int step = 0; step < STEPS; step++) loss[k][step] = session_run(c[k].s, FN_TRAIN, args, B);
    }
    ck_assert_int_eq(c[0].s->compile_parts, 1);
    ck_assert_int_gt(c[1].s->compile_parts, 2);
    for (int step = 0; step < STEPS; step++) ck_assert_msg(loss[0][step] == loss[1][step], "step %d: %.9g vs %.9g (parts %d)", step, loss[0][step], loss[1][step], c[1].s->compile_parts);
    ck_assert(memcmp(c[0].s->state, c[1].s->state, sizeof(float) * (size_t)c[0].m->state_size) == 0);
    ck_assert(loss[0][STEPS - 1] < loss[0][0]);
    for (int k = 0; k < 2; k++) compiled_release(&c[k]);
    nnrt_set_threads(0);
}
END_TEST

/* OpenBLAS's multi-threaded gemm driver mallocs its job list on every call,
 * so the matrix products run on one thread here: what is counted is nnc's
 * own code (the compiled step and the runtime around it). */
START_TEST(test_train_step_allocates_nothing) {
    nnrt_set_threads(1);
    Compiled c;
    compile(&c,
            "input x : f32[N, 784]\ntarget y : i32[N] classes 10\n"
            "h = dense(x, 64, act=relu, init=he)\nlogits = dense(h, 10)\n"
            "output p = softmax(logits)\nloss cross_entropy(logits, y)\ntrain adam(lr=1e-3) schedule cosine\n",
            FN_BIT(FN_TRAIN) | FN_BIT(FN_EVAL), false);
    session_init(c.s, 1);
    enum { B = 64 };
    float *x = xmalloc(sizeof(float) * B * 784), *p = xmalloc(sizeof(float) * B * 10);
    int32_t y[B];
    for (int i = 0; i < B * 784; i++) x[i] = (float)nnrt_rand_uniform(1, (uint64_t)i);
    for (int i = 0; i < B; i++) y[i] = i % 10;
    void *train_args[] = {x, y}, *eval_args[] = {x, y, p};
    double first = session_run(c.s, FN_TRAIN, train_args, B); /* warm up the BLAS */
    alloc_count_start();
    double last = 0;
    for (int step = 0; step < 50; step++) last = session_run(c.s, FN_TRAIN, train_args, step % 2 ? B : B / 2);
    session_run(c.s, FN_EVAL, eval_args, B);
    ck_assert_int_eq(alloc_count_stop(), 0);
    ck_assert_msg(last < first, "training on one batch lowers its loss (%g -> %g)", first, last);
    free(x);
    free(p);
    compiled_release(&c);
}
END_TEST

int main(void) {
    Suite *s = suite_create("jit");
    TCase *fwd = tcase_create("forward");
    tcase_add_test(fwd, test_forward_matches_hand_computation);
    tcase_add_test(fwd, test_softmax_and_cross_entropy_values);
    tcase_add_test(fwd, test_rows_are_independent_of_batch);
    suite_add_tcase(s, fwd);
    TCase *opt = tcase_create("optimizers");
    tcase_add_test(opt, test_sgd_step);
    tcase_add_test(opt, test_momentum_two_steps);
    tcase_add_test(opt, test_adam_first_step);
    tcase_add_test(opt, test_cosine_schedule);
    suite_add_tcase(s, opt);
    TCase *init = tcase_create("init");
    tcase_add_test(init, test_init_is_deterministic_and_scaled);
    tcase_add_test(init, test_xavier_uniform_bound);
    suite_add_tcase(s, init);
    TCase *parts = tcase_create("parts");
    tcase_add_test(parts, test_parts_compute_what_one_module_does);
    tcase_set_timeout(parts, 60);
    suite_add_tcase(s, parts);
    TCase *alloc = tcase_create("allocation");
    tcase_add_test(alloc, test_train_step_allocates_nothing);
    tcase_set_timeout(alloc, 60);
    suite_add_tcase(s, alloc);
    return run_suite(s);
}
