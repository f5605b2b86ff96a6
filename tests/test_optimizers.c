/* test_optimizers.c - every optimizer and training option against a hand
 * computation in double precision.
 *
 * The model is linear, y = x W + b with loss mean((y - t)^2). Each test runs
 * three compiled steps, each on a batch of its own, and after every step
 * compares the parameters (and the optimizer's moments) with the update
 * written out below from the formulas of docs/language.md, applied to the
 * gradient of the weights the compiled step started from. */
#include "cli/driver.h"
#include "frontend/frontend.h"
#include "runtime/rng.h"
#include "support/util.h"

#include "check_main.h"
#include "compiled.h"
#include <math.h>
#include <string.h>

enum {
    N_EX = 5,  /* examples per batch */
    NP = 8,    /* the parameter values: W's 6, then b's 2 */
    STEPS = 3,
};

static const char *linear_model = "model lin\n"
                                  "input x : f32[N, 3]\n"
                                  "target t : f32[N, 2]\n"
                                  "param W : f32[3, 2]\n"
                                  "param b : f32[2]\n"
                                  "output y = x @ W + b\n"
                                  "loss mse(y, t)\n";

/* The linear model trained by `train` (a train statement), built step by
 * step so that the param named `frozen` (or none, if NULL) can be marked
 * frozen before the passes run. */
static void compile(Compiled *c, const char *train, const char *frozen) {
    memset(c, 0, sizeof *c);
    Source *src = ARENA_NEW(&c->arena, Source);
    src->path = "test.nn";
    src->text = arena_printf(&c->arena, "%s%s\n", linear_model, train);
    src->len = (int32_t)strlen(src->text);
    Diag d;
    diag_init(&d, src, stderr);
    Program *prog = parse_program(&c->arena, src, &d);
    ck_assert_msg(prog && d.nerrors == 0, "'%s' does not parse", train);
    c->m = module_new(&c->arena, src);
    ck_assert_msg(lower_program(c->m, prog, &d), "'%s' is rejected", train);
    if (frozen) {
        int p = graph_find_leaf(c->m->model, OP_PARAM, frozen);
        ck_assert_int_ge(p, 0);
        c->m->model->nodes[p].flags |= NF_FROZEN;
    }
    ck_assert(run_pipeline(c->m, &d, NULL));
    compiled_start(c, FN_BIT(FN_TRAIN), false, N_EX);
}

static float *slot(Compiled *c, const char *name) {
    float *p = session_slot(c->s, name);
    ck_assert_msg(p != NULL, "no state slot %s", name);
    return p;
}

/* The batch of step `step`: values in [-1, 1). */
static void fill_batch(int step, float *x, float *t) {
    for (int i = 0; i < N_EX * 3; i++) x[i] = (float)(2 * nnrt_rand_uniform(20 + (uint64_t)step, (uint64_t)i) - 1);
    for (int i = 0; i < N_EX * 2; i++) t[i] = (float)(2 * nnrt_rand_uniform(40 + (uint64_t)step, (uint64_t)i) - 1);
}

/* g[0..6) = dW = 2/(2N) x^T (xW + b - t), g[6..8) = db = 2/(2N) sum_i (xW + b - t)_i. */
static void linear_gradient(const float *x, const float *t, const float *W, const float *b, double *g) {
    memset(g, 0, NP * sizeof(double));
    for (int i = 0; i < N_EX; i++)
        for (int j = 0; j < 2; j++) {
            double y = b[j];
            for (int k = 0; k < 3; k++) y += (double)x[i * 3 + k] * W[k * 2 + j];
            double r = 2 * (y - t[i * 2 + j]) / (2.0 * N_EX);
            for (int k = 0; k < 3; k++) g[k * 2 + j] += x[i * 3 + k] * r;
            g[6 + j] += r;
        }
}

/* ---- the hand computation ------------------------------------------------------------------ */

typedef struct Hand {
    OptimizerKind kind;
    bool nesterov;
    double lr, mu, b1, b2, eps, rho, wd, clip; /* wd, clip: 0 for none */
    bool frozen[NP];                           /* values of a frozen parameter */
    double m1[NP], m2[NP];                     /* velocity or Adam's m; sum of squares, rms or Adam's v */
    int t;                                     /* steps taken */
    double scale;                              /* the clipping factor of the last step */
} Hand;

/* One step on parameters p (in place) with gradient g. */
static void hand_step(Hand *h, double *p, const double *g) {
    double sq = 0;
    for (int i = 0; i < NP; i++)
        if (!h->frozen[i]) sq += g[i] * g[i];
    h->scale = h->clip > 0 ? fmin(1, h->clip / (sqrt(sq) + 1e-6)) : 1;
    h->t++;
    for (int i = 0; i < NP; i++) {
        if (h->frozen[i]) continue;
        double gi = g[i] * h->scale;
        if (h->kind != OPT_ADAMW) gi += h->wd * p[i];
        switch (h->kind) {
        case OPT_SGD: p[i] -= h->lr * gi; break;
        case OPT_MOMENTUM:
            h->m1[i] = h->mu * h->m1[i] + gi;
            p[i] -= h->lr * (h->nesterov ? gi + h->mu * h->m1[i] : h->m1[i]);
            break;
        case OPT_ADAGRAD:
            h->m2[i] += gi * gi;
            p[i] -= h->lr * gi / (sqrt(h->m2[i]) + h->eps);
            break;
        case OPT_RMSPROP:
            h->m2[i] = h->rho * h->m2[i] + (1 - h->rho) * gi * gi;
            p[i] -= h->lr * gi / (sqrt(h->m2[i]) + h->eps);
            break;
        case OPT_ADAM:
        case OPT_ADAMW:
            if (h->kind == OPT_ADAMW) p[i] -= h->lr * h->wd * p[i];
            h->m1[i] = h->b1 * h->m1[i] + (1 - h->b1) * gi;
            h->m2[i] = h->b2 * h->m2[i] + (1 - h->b2) * gi * gi;
            p[i] -= h->lr * sqrt(1 - pow(h->b2, h->t)) / (1 - pow(h->b1, h->t)) * h->m1[i] /
                    (sqrt(h->m2[i]) + h->eps);
            break;
        default: ck_abort_msg("optimizer %d", (int)h->kind);
        }
    }
}

/* Compares W's and b's slots `W.SUFFIX`, `b.SUFFIX` with want[0..8). */
static void check_moment(Compiled *c, const char *suffix, const double *want) {
    const float *mw = slot(c, arena_printf(&c->arena, "W.%s", suffix));
    const float *mb = slot(c, arena_printf(&c->arena, "b.%s", suffix));
    for (int i = 0; i < 6; i++) ck_assert_double_eq_tol(mw[i], want[i], 1e-6);
    for (int i = 0; i < 2; i++) ck_assert_double_eq_tol(mb[i], want[6 + i], 1e-6);
}

/* want[0..8) := W's and b's slots `W.SUFFIX`, `b.SUFFIX`. */
static void load_moment(Compiled *c, const char *suffix, double *want) {
    const float *mw = slot(c, arena_printf(&c->arena, "W.%s", suffix));
    const float *mb = slot(c, arena_printf(&c->arena, "b.%s", suffix));
    for (int i = 0; i < 6; i++) want[i] = mw[i];
    for (int i = 0; i < 2; i++) want[6 + i] = mb[i];
}

/* What run_steps checks besides the parameters. */
typedef struct Expect {
    const char *m1, *m2;        /* slot suffixes holding h->m1, h->m2, or NULL */
    int clipped;                /* 1: every step clips, 0: none does, -1: not checked */
    int change_at;              /* before this step (if > 0), `hyper` := `value` */
    const char *hyper;
    double value;
} Expect;

/* STEPS compiled steps of `train` against `h`. */
static void run_steps(const char *train, const char *frozen, Hand *h, const Expect *e) {
    Compiled c;
    compile(&c, train, frozen);
    float *W = slot(&c, "W"), *b = slot(&c, "b");
    float frozen_W[6];
    memcpy(frozen_W, W, sizeof frozen_W);
    /* The hyper-parameters live in f32 slots, and the hand uses the same
     * values: 1 - b2^t cancels, and b2 = 0.999 is 3e-5 of 1 - b2 away from
     * its f32 rounding. */
    double *hypers[] = {&h->lr, &h->mu, &h->b1, &h->b2, &h->eps, &h->rho, &h->wd, &h->clip};
    for (size_t k = 0; k < sizeof hypers / sizeof *hypers; k++) *hypers[k] = (float)*hypers[k];
    for (int step = 0; step < STEPS; step++) {
        if (e->change_at > 0 && step == e->change_at) {
            *slot(&c, e->hyper) = (float)e->value;
            if (strcmp(e->hyper, "opt.weight_decay") == 0) h->wd = (float)e->value;
            else if (strcmp(e->hyper, "opt.lr") == 0) h->lr = (float)e->value;
            else ck_abort_msg("the hand computation does not follow %s", e->hyper);
        }
        float x[N_EX * 3], t[N_EX * 2];
        fill_batch(step, x, t);
        double p[NP], g[NP];
        for (int i = 0; i < 6; i++) p[i] = W[i];
        for (int i = 0; i < 2; i++) p[6 + i] = b[i];
        double before[NP];
        memcpy(before, p, sizeof before);
        /* each step from nnc's state, so that f32 rounding does not add up */
        if (e->m1) load_moment(&c, e->m1, h->m1);
        if (e->m2) load_moment(&c, e->m2, h->m2);
        linear_gradient(x, t, W, b, g);
        hand_step(h, p, g);
        session_run(c.s, FN_TRAIN, (void *[]){x, t}, N_EX);
        for (int i = 0; i < NP; i++) {
            /* f32 steps: Adam's 1 - b2^t, taken in f32, is off by up to 3e-5 */
            double tol = 1e-6 + 3e-5 * fabs(p[i] - before[i]);
            double got = i < 6 ? W[i] : b[i - 6];
            ck_assert_double_eq_tol(got, p[i], tol);
        }
        if (e->m1) check_moment(&c, e->m1, h->m1);
        if (e->m2) check_moment(&c, e->m2, h->m2);
        if (e->clipped >= 0)
            ck_assert_msg((h->scale < 1) == (e->clipped == 1), "step %d: clipping factor %g", step, h->scale);
    }
    ck_assert_float_eq(*slot(&c, "opt.step"), STEPS);
    if (frozen) ck_assert_mem_eq(W, frozen_W, sizeof frozen_W);
    compiled_release(&c);
}

static const Expect params_only = {.clipped = -1};

/* ---- the tests --------------------------------------------------------------------------------- */

START_TEST(test_sgd_weight_decay) {
    Hand h = {.kind = OPT_SGD, .lr = 0.1, .wd = 0.05};
    run_steps("train sgd(lr=0.1, weight_decay=0.05)", NULL, &h, &params_only);
}
END_TEST

START_TEST(test_momentum_weight_decay) {
    Hand h = {.kind = OPT_MOMENTUM, .lr = 0.1, .mu = 0.9, .wd = 0.01};
    run_steps("train momentum(lr=0.1, weight_decay=0.01)", NULL, &h, &(Expect){.m1 = "velocity", .clipped = -1});
}
END_TEST

START_TEST(test_nesterov_sgd) {
    Hand h = {.kind = OPT_MOMENTUM, .nesterov = true, .lr = 0.1, .mu = 0.9};
    run_steps("train sgd(lr=0.1, momentum=0.9, nesterov=true)", NULL, &h,
              &(Expect){.m1 = "velocity", .clipped = -1});
}
END_TEST

START_TEST(test_nesterov_momentum_weight_decay) {
    Hand h = {.kind = OPT_MOMENTUM, .nesterov = true, .lr = 0.05, .mu = 0.8, .wd = 0.1};
    run_steps("train momentum(lr=0.05, momentum=0.8, nesterov=true, weight_decay=0.1)", NULL, &h,
              &(Expect){.m1 = "velocity", .clipped = -1});
}
END_TEST

START_TEST(test_adagrad_defaults) {
    Hand h = {.kind = OPT_ADAGRAD, .lr = 0.01, .eps = 1e-10};
    run_steps("train adagrad", NULL, &h, &(Expect){.m2 = "adagrad_sum", .clipped = -1});
}
END_TEST

START_TEST(test_adagrad_weight_decay) {
    Hand h = {.kind = OPT_ADAGRAD, .lr = 0.1, .eps = 1e-3, .wd = 0.2};
    run_steps("train adagrad(lr=0.1, eps=1e-3, weight_decay=0.2)", NULL, &h,
              &(Expect){.m2 = "adagrad_sum", .clipped = -1});
}
END_TEST

START_TEST(test_rmsprop_defaults) {
    Hand h = {.kind = OPT_RMSPROP, .lr = 0.01, .rho = 0.99, .eps = 1e-8};
    run_steps("train rmsprop", NULL, &h, &(Expect){.m2 = "rms", .clipped = -1});
}
END_TEST

START_TEST(test_rmsprop_weight_decay) {
    Hand h = {.kind = OPT_RMSPROP, .lr = 0.02, .rho = 0.9, .eps = 1e-6, .wd = 0.1};
    run_steps("train rmsprop(lr=0.02, rho=0.9, eps=1e-6, weight_decay=0.1)", NULL, &h,
              &(Expect){.m2 = "rms", .clipped = -1});
}
END_TEST

START_TEST(test_adam_three_steps) {
    Hand h = {.kind = OPT_ADAM, .lr = 0.01, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8};
    run_steps("train adam(lr=0.01)", NULL, &h, &(Expect){.m1 = "adam_m", .m2 = "adam_v", .clipped = -1});
}
END_TEST

/* Adam's weight decay is L2: it enters the gradient, and so the moments. */
START_TEST(test_adam_coupled_weight_decay) {
    Hand h = {.kind = OPT_ADAM, .lr = 0.01, .b1 = 0.8, .b2 = 0.99, .eps = 1e-8, .wd = 0.5};
    run_steps("train adam(lr=0.01, beta1=0.8, beta2=0.99, weight_decay=0.5)", NULL, &h,
              &(Expect){.m1 = "adam_m", .m2 = "adam_v", .clipped = -1});
}
END_TEST

START_TEST(test_adamw_defaults) {
    Hand h = {.kind = OPT_ADAMW, .lr = 1e-3, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .wd = 0.01};
    run_steps("train adamw", NULL, &h, &(Expect){.m1 = "adam_m", .m2 = "adam_v", .clipped = -1});
}
END_TEST

/* AdamW's decay is decoupled: the moments see the bare gradient. The decay
 * is a state scalar, so changing it between steps takes effect. */
START_TEST(test_adamw_decoupled_decay) {
    Hand h = {.kind = OPT_ADAMW, .lr = 0.05, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .wd = 0.5};
    run_steps("train adamw(lr=0.05, weight_decay=0.5)", NULL, &h,
              &(Expect){.m1 = "adam_m", .m2 = "adam_v", .clipped = -1, .change_at = 2,
                        .hyper = "opt.weight_decay", .value = 2});
}
END_TEST

/* ---- one loop per parameter ---------------------------------------------------------------- */

/* What block_uses looks for, and whether it was found. */
typedef struct StateUse {
    const KProgram *p;
    const char *name;
    bool store, found;
} StateUse;

static void note_state_use(void *ctx, int buf, const Kx *index, bool store) {
    StateUse *u = ctx;
    const KBuf *b = &u->p->bufs[kprog_root_buf(u->p, buf)];
    if (store == u->store && b->kind == KB_STATE && strcmp(b->name, u->name) == 0) u->found = true;
}

/* Whether block `blk` stores into (reads, with `reads`) the state buffer `name`. */
static bool block_uses(const KProgram *p, const KsBlock *blk, const char *name, bool reads) {
    StateUse u = {p, name, !reads, false};
    ks_visit_accesses(blk, note_state_use, &u);
    return u.found;
}

/* An optimizer's update of a parameter, its moments included, is one loop:
 * each new moment is computed where it is stored and where the parameter's
 * update reads it, not by a kernel (and into a buffer) of its own. */
START_TEST(test_update_is_one_kernel) {
    static const struct {
        const char *train, *moments[2];
    } cases[] = {
        {"train momentum(lr=0.1)", {"W.velocity", NULL}},
        {"train sgd(lr=0.1, momentum=0.9, nesterov=true)", {"W.velocity", NULL}},
        {"train adagrad(lr=0.1)", {"W.adagrad_sum", NULL}},
        {"train adam(lr=0.01)", {"W.adam_m", "W.adam_v"}},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        Compiled c;
        compile(&c, cases[t].train, NULL);
        const KProgram *p = c.s->prog[FN_TRAIN];
        int writers = 0, kernel = -1;
        for (int k = 0; k < p->nkernels; k++)
            if (p->kernels[k].kind == KK_LOOP && block_uses(p, &p->kernels[k].body, "W", false)) writers++, kernel = k;
        ck_assert_msg(writers == 1, "%s: W is written by %d kernels", cases[t].train, writers);
        for (int m = 0; m < 2 && cases[t].moments[m]; m++) {
            const char *moment = cases[t].moments[m];
            for (int k = 0; k < p->nkernels; k++) {
                if (p->kernels[k].kind != KK_LOOP) continue;
                bool writes = block_uses(p, &p->kernels[k].body, moment, false);
                bool reads = block_uses(p, &p->kernels[k].body, moment, true);
                ck_assert_msg(k == kernel ? writes && reads : !writes && !reads,
                              "%s: kernel %s uses %s, W's update is kernel %s", cases[t].train, p->kernels[k].name,
                              moment, p->kernels[kernel].name);
            }
        }
        compiled_release(&c);
    }
}
END_TEST

START_TEST(test_clipping_triggers) {
    Hand h = {.kind = OPT_SGD, .lr = 0.1, .clip = 0.05};
    run_steps("train sgd(lr=0.1) clip_norm 0.05", NULL, &h, &(Expect){.clipped = 1});
}
END_TEST

START_TEST(test_clipping_not_triggered) {
    Hand h = {.kind = OPT_SGD, .lr = 0.1, .clip = 100};
    run_steps("train sgd(lr=0.1) clip_norm 100", NULL, &h, &(Expect){.clipped = 0});
}
END_TEST

/* Clipping scales the gradient before the decay is added, and before the
 * moments see it. */
START_TEST(test_clipping_before_decay) {
    Hand h = {.kind = OPT_MOMENTUM, .lr = 0.1, .mu = 0.9, .wd = 0.3, .clip = 0.05};
    run_steps("train momentum(lr=0.1, weight_decay=0.3) clip_norm=0.05", NULL, &h,
              &(Expect){.m1 = "velocity", .clipped = 1});
}
END_TEST

START_TEST(test_clipping_adamw) {
    Hand h = {.kind = OPT_ADAMW, .lr = 0.01, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .wd = 0.1, .clip = 0.1};
    run_steps("train adamw(lr=0.01, weight_decay=0.1) clip_norm 0.1", NULL, &h,
              &(Expect){.m1 = "adam_m", .m2 = "adam_v", .clipped = 1});
}
END_TEST

/* A frozen W keeps every bit under decay and clipping, has no moments, and
 * takes no part in the norm; b trains as if W were a constant. */
START_TEST(test_frozen_parameter_unchanged) {
    Hand h = {.kind = OPT_ADAMW, .lr = 0.05, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .wd = 0.5, .clip = 0.05};
    for (int i = 0; i < 6; i++) h.frozen[i] = true;
    run_steps("train adamw(lr=0.05, weight_decay=0.5) clip_norm 0.05", "W", &h, &(Expect){.clipped = 1});

    Compiled c;
    compile(&c, "train adamw(weight_decay=0.5)", "W");
    ck_assert_ptr_null(session_slot(c.s, "W.adam_m"));
    ck_assert_ptr_null(session_slot(c.s, "W.adam_v"));
    ck_assert_ptr_nonnull(session_slot(c.s, "b.adam_m"));
    compiled_release(&c);
}
END_TEST

START_TEST(test_frozen_parameter_with_sgd_decay) {
    Hand h = {.kind = OPT_SGD, .lr = 0.1, .wd = 0.5};
    for (int i = 0; i < 6; i++) h.frozen[i] = true;
    run_steps("train sgd(lr=0.1, weight_decay=0.5)", "W", &h, &params_only);
}
END_TEST

/* A parameter the loss reads only through floor has no gradient; nnc
 * warns that it will not change, and decay does not change it either. */
START_TEST(test_parameter_without_gradient_is_not_decayed) {
    Compiled c;
    compile(&c, "param u : f32[2] init=ones\nloss mean(floor(u))\ntrain adamw(lr=0.1, weight_decay=0.5)", NULL);
    float x[N_EX * 3], t[N_EX * 2];
    fill_batch(0, x, t);
    session_run(c.s, FN_TRAIN, (void *[]){x, t}, N_EX);
    session_run(c.s, FN_TRAIN, (void *[]){x, t}, N_EX);
    ck_assert_float_eq(slot(&c, "u")[0], 1);
    ck_assert_float_eq(slot(&c, "u")[1], 1);
    compiled_release(&c);
}
END_TEST

/* The hyper-parameters the train statement sets are state scalars with
 * those values; options left out add none. */
START_TEST(test_hyper_parameter_slots) {
    Compiled c;
    compile(&c, "train rmsprop(lr=0.02, rho=0.9, eps=1e-6, weight_decay=0.1) clip_norm 2.5", NULL);
    ck_assert_float_eq(*slot(&c, "opt.lr"), 0.02f);
    ck_assert_float_eq(*slot(&c, "opt.rho"), 0.9f);
    ck_assert_float_eq(*slot(&c, "opt.eps"), 1e-6f);
    ck_assert_float_eq(*slot(&c, "opt.weight_decay"), 0.1f);
    ck_assert_float_eq(*slot(&c, "opt.clip_norm"), 2.5f);
    for (int i = 0; i < c.m->nslots; i++)
        if (strstr(c.m->slots[i].name, ".rms")) ck_assert(c.m->slots[i].flags & NF_OPT_STATE);
    compiled_release(&c);
    compile(&c, "train sgd(lr=0.1)", NULL);
    ck_assert_ptr_null(session_slot(c.s, "opt.weight_decay"));
    ck_assert_ptr_null(session_slot(c.s, "opt.clip_norm"));
    ck_assert_ptr_null(session_slot(c.s, "W.velocity"));
    compiled_release(&c);
}
END_TEST

int main(void) {
    Suite *s = suite_create("optimizers");
    TCase *steps = tcase_create("steps");
    tcase_add_test(steps, test_sgd_weight_decay);
    tcase_add_test(steps, test_momentum_weight_decay);
    tcase_add_test(steps, test_nesterov_sgd);
    tcase_add_test(steps, test_nesterov_momentum_weight_decay);
    tcase_add_test(steps, test_adagrad_defaults);
    tcase_add_test(steps, test_adagrad_weight_decay);
    tcase_add_test(steps, test_rmsprop_defaults);
    tcase_add_test(steps, test_rmsprop_weight_decay);
    tcase_add_test(steps, test_adam_three_steps);
    tcase_add_test(steps, test_adam_coupled_weight_decay);
    tcase_add_test(steps, test_adamw_defaults);
    tcase_add_test(steps, test_adamw_decoupled_decay);
    suite_add_tcase(s, steps);
    TCase *clip = tcase_create("clipping");
    tcase_add_test(clip, test_clipping_triggers);
    tcase_add_test(clip, test_clipping_not_triggered);
    tcase_add_test(clip, test_clipping_before_decay);
    tcase_add_test(clip, test_clipping_adamw);
    suite_add_tcase(s, clip);
    TCase *state = tcase_create("state");
    tcase_add_test(state, test_frozen_parameter_unchanged);
    tcase_add_test(state, test_frozen_parameter_with_sgd_decay);
    tcase_add_test(state, test_parameter_without_gradient_is_not_decayed);
    tcase_add_test(state, test_hyper_parameter_slots);
    tcase_add_test(state, test_update_is_one_kernel);
    suite_add_tcase(s, state);
    return run_suite(s);
}
