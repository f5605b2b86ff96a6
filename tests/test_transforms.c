/* test_transforms.c - the optional transformations and the thread count
 * change how fast a model trains, never what it computes.
 *
 * Every example in examples/ is compiled with all transformations on, then
 * with each of them off (--disable-pass), and trained 20 steps from the same
 * initial state on the same synthetic batches: the losses must agree to a
 * relative 1e-5 at every step. Simplification is also checked on small
 * models with an obvious duplicate or constant expression: the simplified
 * graph has fewer nodes, and computes the same loss and update.
 *
 * Every example is also trained 20 steps at its own batch size on one
 * thread, on two, and on the count a session chooses by timing (cli/
 * threads.c), in f32 (nnc's own products, split over the thread pool) and
 * in f64 (OpenBLAS's): the losses and the final state must be the same bit
 * for bit, which is what lets nnc pick the count for speed alone. */
#include "check_main.h"
#include "cli/driver.h"
#include "runtime/nnrt.h"
#include "runtime/rng.h"
#include "support/util.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { BATCH = 8, STEPS = 20 };

typedef struct Compiled {
    Arena arena;
    Module *m;
    Session *s;
    Task task;
    int64_t batch; /* of the training steps: BATCH unless changed */
} Compiled;

/* Compiles `path` (or `text`, named `path`, when not NULL) with the
 * transformations in `disabled` off, ready to train from seed 1 in f32 or
 * f64. */
static void compile_real(Compiled *c, const char *path, const char *text, unsigned disabled, bool f64) {
    memset(c, 0, sizeof *c);
    OptSettings opt = OPT_DEFAULTS;
    opt.disabled = disabled;
    LoadOptions lo = {.passes = {.opt = &opt}};
    Diag d;
    diag_init(&d, NULL, stderr);
    c->m = text ? nnc_compile_source(&c->arena, path, text, strlen(text), &d, &lo)
                : nnc_load_model(&c->arena, path, &d, &lo);
    ck_assert_msg(c->m != NULL, "%s does not compile", path);
    ck_assert_msg(task_of(c->m, &c->task, &d), "%s: no task", path);
    c->s = session_create(c->m, FN_BIT(FN_TRAIN) | FN_BIT(FN_INIT), f64, &d);
    ck_assert_ptr_nonnull(c->s);
    c->batch = BATCH;
    ck_assert(session_reserve(c->s, BATCH));
    session_init(c->s, 1);
}

static void compile(Compiled *c, const char *path, const char *text, unsigned disabled) {
    compile_real(c, path, text, disabled, false);
}

static void release(Compiled *c) {
    session_destroy(c->s);
    arena_free_all(&c->arena);
}

/* Step `step`'s batch of `batch` examples: inputs uniform in [0, 1); class
 * labels uniform, or real-valued targets 0 or 1 (valid for every loss of
 * the examples), as the session's precision wants them. */
static void fill_batch(const Compiled *c, int step, void *x, void *y) {
    const Task *t = &c->task;
    bool f64 = c->s->f64;
    for (int64_t i = 0; i < c->batch * t->features; i++) {
        double u = nnrt_rand_uniform(100 + (uint64_t)step, (uint64_t)i);
        if (f64) ((double *)x)[i] = u;
        else ((float *)x)[i] = (float)u;
    }
    for (int64_t i = 0; i < c->batch * t->tvalues; i++) {
        double u = nnrt_rand_uniform(200 + (uint64_t)step, (uint64_t)i);
        if (t->target->type.dtype == DT_I32) ((int32_t *)y)[i] = (int32_t)(u * (double)t->classes);
        else if (f64) ((double *)y)[i] = u < 0.5 ? 0.0 : 1.0;
        else ((float *)y)[i] = u < 0.5 ? 0.0f : 1.0f;
    }
}

/* The loss of each of STEPS training steps. */
static void train(Compiled *c, double *losses) {
    void *x = xmalloc(sizeof(double) * (size_t)(c->batch * c->task.features));
    void *y = xmalloc(sizeof(double) * (size_t)(c->batch * c->task.tvalues));
    for (int step = 0; step < STEPS; step++) {
        fill_batch(c, step, x, y);
        void *args[] = {x, y};
        losses[step] = session_run(c->s, FN_TRAIN, args, c->batch);
        ck_assert_msg(isfinite(losses[step]), "loss %g at step %d", losses[step], step);
    }
    free(x);
    free(y);
}

static int nodes(const Module *m) { return m->forward->n + m->eval->n + m->grad->n + m->train->n; }

/* ---- every example, with each transformation off ---------------------------------------- */

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The .nn files of examples/, sorted; NULL-terminated. */
static char **examples(int *count) {
    DIR *dir = opendir(NNC_SOURCE_DIR "/examples");
    NNC_ASSERT(dir != NULL);
    char **paths = NULL;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(dir));) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 3, ".nn") != 0) continue;
        if (n + 1 >= cap) paths = xrealloc(paths, sizeof(char *) * (size_t)(cap = 2 * cap + 8));
        paths[n] = xmalloc(strlen(NNC_SOURCE_DIR) + len + 16);
        sprintf(paths[n++], "%s/examples/%s", NNC_SOURCE_DIR, e->d_name);
    }
    closedir(dir);
    qsort(paths, (size_t)n, sizeof *paths, by_name);
    paths[n] = NULL;
    *count = n;
    return paths;
}

START_TEST(test_each_transformation_keeps_the_losses) {
    int count;
    char **paths = examples(&count);
    ck_assert_int_ge(count, 8);
    const char *path = paths[_i % count];
    Compiled all;
    compile(&all, path, NULL, 0);
    double want[STEPS], got[STEPS];
    train(&all, want);
    ck_assert_msg(want[STEPS - 1] != want[0], "%s: the loss does not move", path);
    for (int xf = 0; xf < XF_COUNT; xf++) {
        Compiled off;
        compile(&off, path, NULL, 1u << xf);
        if (xf == XF_SIMPLIFY) ck_assert_int_gt(nodes(off.m), nodes(all.m));
        train(&off, got);
        for (int step = 0; step < STEPS; step++)
            ck_assert_msg(fabs(got[step] - want[step]) <= 1e-5 * fabs(want[step]),
                          "%s without %s: loss %.9g at step %d, %.9g with every transformation", path,
                          transform_names[xf], got[step], step, want[step]);
        release(&off);
    }
    release(&all);
    for (int i = 0; i < count; i++) free(paths[i]);
    free(paths);
}
END_TEST

/* ---- every example, on one thread, on two, and on the count chosen ------------------------ */

/* Trains c from seed 1 on the thread count `threads` (0: the session
 * chooses, timing the first step first); returns the final state, and adds
 * the parallel regions run to *regions. */
static void *train_on(Compiled *c, int threads, double *losses, uint64_t *regions) {
    size_t bytes = (size_t)c->m->state_size * (c->s->f64 ? sizeof(double) : sizeof(float));
    nnrt_set_threads(threads);
    session_init(c->s, 1);
    uint64_t before = nnrt_parallel_regions();
    if (threads == 0) {
        /* choosing times steps on a copy: the state stays as it was */
        void *initial = xmalloc(bytes + 1), *x = xmalloc(sizeof(double) * (size_t)(c->batch * c->task.features));
        void *y = xmalloc(sizeof(double) * (size_t)(c->batch * c->task.tvalues));
        memcpy(initial, c->s->state, bytes);
        fill_batch(c, 0, x, y);
        const ThreadChoice *choice = session_choose_threads(c->s, FN_TRAIN, (void *[]){x, y}, c->batch);
        ck_assert_ptr_nonnull(choice);
        ck_assert_int_ge(choice->threads, 1);
        ck_assert_int_le(choice->threads, nnrt_cores());
        ck_assert_msg(memcmp(initial, c->s->state, bytes) == 0, "choosing the thread count changed the state");
        free(initial), free(x), free(y);
    }
    train(c, losses);
    *regions += nnrt_parallel_regions() - before;
    void *state = xmalloc(bytes + 1);
    memcpy(state, c->s->state, bytes);
    return state;
}

START_TEST(test_thread_count_keeps_the_losses) {
    int count;
    char **paths = examples(&count);
    uint64_t regions[2] = {0, 0}; /* at 1 thread, at 2 (f32) */
    for (int e = 0; e < count; e++)
        for (int f64 = 0; f64 <= 1; f64++) {
            Compiled c;
            compile_real(&c, paths[e], NULL, 0, f64);
            c.batch = c.m->train_spec.batch;
            ck_assert(session_reserve(c.s, c.batch));
            size_t bytes = (size_t)c.m->state_size * (f64 ? sizeof(double) : sizeof(float));
            double want[STEPS], got[STEPS];
            uint64_t ignored = 0;
            void *one = train_on(&c, 1, want, f64 ? &ignored : &regions[0]);
            const int counts[] = {2, 0};
            for (int t = 0; t < 2; t++) {
                void *state = train_on(&c, counts[t], got, f64 || t ? &ignored : &regions[1]);
                for (int step = 0; step < STEPS; step++)
                    ck_assert_msg(got[step] == want[step],
                                  "%s (%s, batch %lld) on %s: loss %.17g at step %d, %.17g on one thread", paths[e],
                                  f64 ? "f64" : "f32", (long long)c.batch, t ? "the chosen count" : "2 threads",
                                  got[step], step, want[step]);
                ck_assert_msg(memcmp(state, one, bytes) == 0, "%s (%s): the state after %d steps differs", paths[e],
                              f64 ? "f64" : "f32", STEPS);
                free(state);
            }
            free(one);
            release(&c);
        }
    /* one thread runs no region; two ran some (the test compared something) */
    ck_assert_int_eq(regions[0], 0);
    ck_assert_msg(regions[1] > 0, "no example's training step ran in parallel on two threads");
    nnrt_set_threads(1);
    for (int i = 0; i < count; i++) free(paths[i]);
    free(paths);
}
END_TEST

/* ---- simplification on small models ------------------------------------------------------ */

/* Compiles `text` with and without simplify, trains both, and checks that
 * every simplified function has fewer nodes, and that the losses and the
 * trained values of `param` are the same. */
static void check_simplified(const char *text, const char *param) {
    Compiled on, off;
    compile(&on, "small.nn", text, 0);
    compile(&off, "small.nn", text, 1u << XF_SIMPLIFY);
    const Graph *a[] = {on.m->forward, on.m->eval, on.m->grad, on.m->train};
    const Graph *b[] = {off.m->forward, off.m->eval, off.m->grad, off.m->train};
    for (int k = 0; k < 4; k++)
        ck_assert_msg(a[k]->n < b[k]->n, "%s: %d nodes simplified, %d not", a[k]->name, a[k]->n, b[k]->n);
    double lon[STEPS], loff[STEPS];
    train(&on, lon);
    train(&off, loff);
    for (int step = 0; step < STEPS; step++)
        ck_assert_msg(fabs(lon[step] - loff[step]) <= 1e-6 * fabs(loff[step]), "step %d: loss %.9g, %.9g unsimplified",
                      step, lon[step], loff[step]);
    const StateSlot *slot = module_find_slot(on.m, param);
    ck_assert_ptr_nonnull(slot);
    const float *pon = session_slot(on.s, param), *poff = session_slot(off.s, param);
    ck_assert_float_ne(pon[0], 0);
    for (int64_t i = 0; i < slot->size; i++) ck_assert_float_eq_tol(pon[i], poff[i], 1e-6f * fabsf(poff[i]) + 1e-7f);
    release(&on);
    release(&off);
}

/* x @ W twice: one matmul forward, and one per gradient. */
START_TEST(test_duplicate_expression_merges) {
    check_simplified("model dup\n"
                     "input x : f32[N, 3]\n"
                     "target t : f32[N, 2]\n"
                     "param W : f32[3, 2]\n"
                     "a = x @ W\n"
                     "b = x @ W\n"
                     "output y = tanh(a) + tanh(b)\n"
                     "loss mse(y, t)\n"
                     "train sgd(lr=0.1)\n",
                     "W");
}
END_TEST

/* (2 * 3 - 5) folds to 1, and multiplying by it disappears; so does + 0. */
START_TEST(test_constant_expression_folds) {
    check_simplified("model fold\n"
                     "input x : f32[N, 3]\n"
                     "target t : f32[N, 2]\n"
                     "param W : f32[3, 2]\n"
                     "output y = (2 * 3 - 5) * (x @ W) + (4 - 2 * 2)\n"
                     "loss mse(y, t)\n"
                     "train sgd(lr=0.1)\n",
                     "W");
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("transforms");
    TCase *tc = tcase_create("examples");
    tcase_set_timeout(tc, 240);
    int count;
    char **paths = examples(&count);
    tcase_add_loop_test(tc, test_each_transformation_keeps_the_losses, 0, count);
    for (int i = 0; i < count; i++) free(paths[i]);
    free(paths);
    suite_add_tcase(s, tc);
    TCase *threads = tcase_create("threads");
    tcase_set_timeout(threads, 240);
    tcase_add_test(threads, test_thread_count_keeps_the_losses);
    suite_add_tcase(s, threads);
    TCase *small = tcase_create("simplify");
    tcase_add_test(small, test_duplicate_expression_merges);
    tcase_add_test(small, test_constant_expression_folds);
    suite_add_tcase(s, small);
    return s;
}

int main(void) {
    nnrt_set_threads(1);
    return run_suite(suite());
}
