/* test_slices.c - a training step that cuts its batch into slices
 * (passes/slice.c, runtime/slices.c): the same losses and weights as the
 * step on the whole batch, up to float rounding; the same bits on any
 * number of threads; a workspace its size promises (every float of it
 * written before it is read); no allocation; and models that must not be
 * cut are not. */
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

/* A convolution reuses each weight at 100 positions: a model worth cutting. */
static const char *conv_model = "input x : f32[N, 2, 10, 10]\ntarget y : i32[N] classes 5\n"
                                "c = conv2d(x, 6, kernel=3, pad=1, act=relu)\np = maxpool(c, 2)\n"
                                "logits = dense(flatten(p), 5)\noutput q = softmax(logits)\n"
                                "loss cross_entropy(logits, y)\ntrain adam(lr=0.01, weight_decay=0.001) clip_norm 5\n";

enum { MAX_BATCH = 70, FEATURES = 200 };

static float x[MAX_BATCH * FEATURES];
static int32_t y[MAX_BATCH];

static void make_data(void) {
    for (int i = 0; i < MAX_BATCH * FEATURES; i++) x[i] = (float)(2 * nnrt_rand_uniform(3, (uint64_t)i) - 1);
    for (int i = 0; i < MAX_BATCH; i++) y[i] = (int32_t)(nnrt_rand_uniform(4, (uint64_t)i) * 5);
}

/* text compiled with at most `slices` slices a step (1: none). */
static void compile_sliced(Compiled *c, const char *text, int slices) {
    memset(c, 0, sizeof *c);
    OptSettings o = OPT_DEFAULTS;
    o.slices = slices;
    LoadOptions lo = {.passes = {.opt = &o}};
    Diag d;
    diag_init(&d, NULL, stderr);
    c->m = nnc_compile_source(&c->arena, "test.nn", text, strlen(text), &d, &lo);
    ck_assert_msg(c->m != NULL, "the test model does not compile:\n%s", text);
    compiled_start(c, FN_BIT(FN_TRAIN), false, MAX_BATCH);
}

static const KSlices *sliced(const Compiled *c) { return c->s->prog[FN_TRAIN]->sliced; }

/* Batches of several sizes, fewer examples than slices among them. */
static const int64_t batches[] = {10, 7, 1, 2, 64, 3};
enum { NBATCHES = sizeof batches / sizeof batches[0], STEPS = 20 };

static double step(Compiled *c, int i) {
    void *args[] = {x, y};
    return session_run(c->s, FN_TRAIN, args, batches[i % NBATCHES]);
}

START_TEST(test_slices_train_as_the_whole_batch_does) {
    nnrt_set_threads(2);
    make_data();
    Compiled c[2];
    compile_sliced(&c[0], conv_model, 1);
    compile_sliced(&c[1], conv_model, 3);
    ck_assert_ptr_null(sliced(&c[0]));
    ck_assert_ptr_nonnull(sliced(&c[1]));
    ck_assert_int_eq(sliced(&c[1])->slices, 3);
    double first = 0, last = 0;
    for (int i = 0; i < STEPS; i++) {
        double whole = step(&c[0], i), in_slices = step(&c[1], i);
        ck_assert_msg(fabs(whole - in_slices) <= 1e-5 * fabs(whole), "step %d (batch %lld): loss %.9g whole, %.9g in slices",
                      i, (long long)batches[i % NBATCHES], whole, in_slices);
        if (batches[i % NBATCHES] == 64) last = whole, first = first ? first : whole;
    }
    ck_assert_msg(last < first, "the loss on the batch of 64 falls (%g -> %g)", first, last);
    const float *a = c[0].s->state, *b = c[1].s->state;
    for (int64_t i = 0; i < c[0].m->state_size; i++)
        ck_assert_msg(fabsf(a[i] - b[i]) <= 1e-4f * (1 + fabsf(a[i])), "state[%lld]: %.9g whole, %.9g in slices",
                      (long long)i, a[i], b[i]);
    for (int k = 0; k < 2; k++) compiled_release(&c[k]);
    nnrt_set_threads(0);
}
END_TEST

/* Each slice's sums run on one thread and the slices are added in order:
 * the thread count changes nothing. */
START_TEST(test_slices_give_the_same_bits_on_any_thread_count) {
    make_data();
    Compiled c;
    nnrt_set_threads(1);
    compile_sliced(&c, conv_model, 3);
    ck_assert_ptr_nonnull(sliced(&c));
    size_t bytes = sizeof(float) * (size_t)c.m->state_size;
    float *state[3];
    double loss[3][STEPS];
    for (int threads = 1; threads <= 3; threads++) {
        nnrt_set_threads(threads);
        session_init(c.s, 1);
        uint64_t regions = nnrt_parallel_regions();
        for (int i = 0; i < STEPS; i++) loss[threads - 1][i] = step(&c, i);
        if (threads > 1 && nnrt_sgemm_reentrant())
            ck_assert_msg(nnrt_parallel_regions() > regions, "the slices ran on one thread");
        state[threads - 1] = xmalloc(bytes);
        memcpy(state[threads - 1], c.s->state, bytes);
    }
    for (int t = 1; t < 3; t++) {
        for (int i = 0; i < STEPS; i++)
            ck_assert_msg(loss[t][i] == loss[0][i], "step %d: %.9g on 1 thread, %.9g on %d", i, loss[0][i], loss[t][i],
                          t + 1);
        ck_assert(memcmp(state[t], state[0], bytes) == 0);
    }
    for (int t = 0; t < 3; t++) free(state[t]);
    compiled_release(&c);
    nnrt_set_threads(0);
}
END_TEST

/* The program's workspace size holds the step at every batch size: a
 * workspace of exactly that many floats, every one of them NaN, gives a
 * finite loss and state, and the floats after it stay as they were. */
START_TEST(test_slices_fit_the_workspace_they_ask_for) {
    make_data();
    nnrt_set_threads(2);
    Compiled c;
    compile_sliced(&c, conv_model, 4);
    ck_assert_ptr_nonnull(sliced(&c));
    enum { GUARD = 4096 };
    int64_t most = kprog_workspace_size(c.s->prog[FN_TRAIN], MAX_BATCH);
    float *ws = aligned_alloc(64, (sizeof(float) * (size_t)(most + GUARD) + 63) / 64 * 64);
    void *args[] = {x, y};
    for (int64_t batch = 1; batch <= MAX_BATCH; batch++) {
        int64_t need = kprog_workspace_size(c.s->prog[FN_TRAIN], batch);
        for (int64_t i = 0; i < need; i++) ws[i] = NAN;
        for (int64_t i = need; i < need + GUARD; i++) ws[i] = (float)i;
        float loss = ((NncFn32)c.s->fn[FN_TRAIN])(c.s->state, args, batch, ws, 0);
        ck_assert_msg(isfinite(loss), "batch %lld: loss %g", (long long)batch, loss);
        for (int64_t i = need; i < need + GUARD; i++)
            ck_assert_msg(ws[i] == (float)i, "batch %lld: the step wrote past its %lld floats of workspace, at %lld",
                          (long long)batch, (long long)need, (long long)i);
    }
    const float *s = c.s->state;
    for (int64_t i = 0; i < c.m->state_size; i++) ck_assert_msg(isfinite(s[i]), "state[%lld] = %g", (long long)i, s[i]);
    free(ws);
    compiled_release(&c);
    nnrt_set_threads(0);
}
END_TEST

START_TEST(test_sliced_step_allocates_nothing) {
    make_data();
    /* OpenBLAS's threaded driver allocates; the runtime's own kernels do
     * not. Under AddressSanitizer two threads show a few allocations now
     * and then, varying with timing, that a release build (whose counter
     * sees every malloc in the process) never shows: there the count is
     * taken on one thread. */
#if defined(__SANITIZE_ADDRESS__)
    nnrt_set_threads(1);
#else
    nnrt_set_threads(nnrt_sgemm_reentrant() ? 2 : 1);
#endif
    Compiled c;
    compile_sliced(&c, conv_model, 2);
    ck_assert_ptr_nonnull(sliced(&c));
    /* every batch size once first: a worker's first region may allocate
     * (its thread's own first-use state, under the sanitizers) */
    for (int i = 0; i < NBATCHES; i++) step(&c, i);
    alloc_count_start();
    for (int i = 0; i < STEPS; i++) step(&c, i);
    ck_assert_int_eq(alloc_count_stop(), 0);
    compiled_release(&c);
    nnrt_set_threads(0);
}
END_TEST

/* What must not be cut: dropout (its masks follow an example's place in
 * the batch), a loss summed rather than averaged over the batch, a
 * statistic over the batch that each example then reads; and what need
 * not be: a perceptron, three multiply-adds per weight and example. */
START_TEST(test_models_that_are_not_cut) {
    static const char *const models[] = {
        "input x : f32[N, 2, 10, 10]\ntarget y : i32[N] classes 5\n"
        "c = conv2d(x, 6, kernel=3, pad=1, act=relu)\nd = dropout(c, 0.5)\n"
        "logits = dense(flatten(d), 5)\noutput q = softmax(logits)\nloss cross_entropy(logits, y)\ntrain sgd(lr=0.1)\n",
        "input x : f32[N, 2, 10, 10]\ntarget t : f32[N, 5]\n"
        "c = conv2d(x, 6, kernel=3, pad=1, act=relu)\nz = dense(flatten(c), 5)\n"
        "output q = z\nloss sum(square(z - t))\ntrain sgd(lr=0.1)\n",
        "input x : f32[N, 2, 10, 10]\ntarget t : f32[N, 5]\n"
        "c = conv2d(x, 6, kernel=3, pad=1, act=relu)\nm = mean(c, axis=0)\n"
        "z = dense(flatten(c - m), 5)\noutput q = z\nloss mse(z, t)\ntrain sgd(lr=0.1)\n",
        "input x : f32[N, 200]\ntarget y : i32[N] classes 5\n"
        "h = dense(x, 64, act=relu)\nlogits = dense(h, 5)\noutput q = softmax(logits)\nloss cross_entropy(logits, y)\ntrain sgd(lr=0.1)\n",
    };
    for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
        Compiled c;
        compile_sliced(&c, models[k], 4);
        ck_assert_msg(sliced(&c) == NULL, "model %zu was cut into slices", k);
        compiled_release(&c);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("slices");
    TCase *tc = tcase_create("slices");
    tcase_add_test(tc, test_slices_train_as_the_whole_batch_does);
    tcase_add_test(tc, test_slices_give_the_same_bits_on_any_thread_count);
    tcase_add_test(tc, test_slices_fit_the_workspace_they_ask_for);
    tcase_add_test(tc, test_sliced_step_allocates_nothing);
    tcase_add_test(tc, test_models_that_are_not_cut);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
