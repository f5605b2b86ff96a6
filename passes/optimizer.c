/* optimizer.c - the parameter update, appended to the grad graph as ops.
 *
 * Hyper-parameters (learning rate, momentum, betas, Adam's step count) are
 * scalars of the model state, not constants in the code, so a driver or a
 * user of the compiled library can change them between steps without
 * recompiling, and a checkpoint resumes exactly.
 *
 *   sgd       p -= lr * g
 *   momentum  v = mu * v + g;  p -= lr * v
 *   adam      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  t = step + 1
 *             p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
 *
 * The step size is lr, or lr under a schedule (ir.h: ScheduleKind) driven
 * by the step counter opt.step and opt.steps_per_epoch, which whoever runs
 * the steps sets from the size of the data (nnc train does).
 *
 * Every assign comes after all the reads of the state in the step (the
 * forward and backward nodes precede the update in the list), so the step
 * sees one consistent set of weights. */
#include "passes/passes.h"
#include "support/util.h"

#include <math.h>
#include <string.h>

typedef struct OptCtx {
    Module *m;
    Graph *g;
    Span span;
} OptCtx;

static int emit(OptCtx *c, Op op, int nin, const int32_t *in, const double *attr) {
    int id = graph_add(c->g, op, nin, in, attr, c->span);
    Diag d;
    diag_init(&d, NULL, stderr);
    if (!shape_infer(c->g, id, &d)) NNC_BUG("optimizer built an ill-typed %s", op_info(op)->name);
    return id;
}

static int op2(OptCtx *c, Op op, int a, int b) { return emit(c, op, 2, (int32_t[]){a, b}, NULL); }
static int constant(OptCtx *c, double v) { return emit(c, OP_CONST, 0, NULL, (double[]){v}); }

/* A state tensor of the optimizer, initialised to `init_value`. */
static int state_param(OptCtx *c, const char *name, IrType type, uint32_t flags, double init_value) {
    InitKind kind = init_value == 0 ? INIT_ZEROS : INIT_CONST;
    int id = graph_add(c->g, OP_PARAM, 0, NULL, (double[]){kind, init_value, 0, 0}, c->span);
    Node *n = &c->g->nodes[id];
    n->name = name;
    n->type = type;
    n->flags = flags;
    return id;
}

static int hyper(OptCtx *c, const char *name, double value) {
    return state_param(c, name, type_scalar(DT_F32), NF_HYPER, value);
}

static void assign(OptCtx *c, int target, int value) { op2(c, OP_ASSIGN, target, value); }

static int op1(OptCtx *c, Op op, int a) { return emit(c, op, 1, (int32_t[]){a}, NULL); }

/* The learning rate of this step under the schedule. */
static int scheduled_lr(OptCtx *c, int lr, int step) {
    const TrainSpec *ts = &c->m->train_spec;
    if (ts->schedule == SCHED_CONSTANT) return lr;
    int spe = hyper(c, "opt.steps_per_epoch", 1);
    int epoch = op2(c, OP_DIV, step, spe);
    switch (ts->schedule) {
    case SCHED_STEP: {
        int every = hyper(c, "opt.decay_every", ts->every);
        int gamma = hyper(c, "opt.decay_gamma", ts->gamma);
        return op2(c, OP_MUL, lr, op2(c, OP_POW, gamma, op1(c, OP_FLOOR, op2(c, OP_DIV, epoch, every))));
    }
    case SCHED_EXPONENTIAL: {
        int gamma = hyper(c, "opt.decay_gamma", ts->gamma);
        return op2(c, OP_MUL, lr, op2(c, OP_POW, gamma, epoch));
    }
    case SCHED_COSINE: {
        int epochs = hyper(c, "opt.epochs", (double)ts->epochs);
        int min_lr = hyper(c, "opt.min_lr", ts->min_lr);
        int progress = op2(c, OP_MIN, op2(c, OP_DIV, epoch, epochs), constant(c, 1));
        int wave = op2(c, OP_MUL, op2(c, OP_ADD, constant(c, 1), op1(c, OP_COS, op2(c, OP_MUL, constant(c, M_PI), progress))),
                       constant(c, 0.5));
        return op2(c, OP_ADD, min_lr, op2(c, OP_MUL, op2(c, OP_SUB, lr, min_lr), wave));
    }
    default: NNC_BUG("schedule %d", (int)ts->schedule);
    }
}

bool pass_optimizer(Module *m, Diag *d) {
    (void)d;
    if (!m->grad) {
        module_layout_state(m);
        return true;
    }
    Graph *g = graph_clone(m->arena, m->grad, "train_step");
    m->train = g;
    const TrainSpec *ts = &m->train_spec;
    OptCtx c = {.m = m, .g = g, .span = ts->span};

    /* opt.step counts the steps taken; the schedule reads it as it was
     * before this step, Adam's bias correction as t = step + 1. Dropout
     * reads it too (its masks change every step): the frontend may have
     * made it already. */
    int step = graph_find_leaf(g, OP_PARAM, "opt.step");
    if (step < 0) step = hyper(&c, "opt.step", 0);
    int step_next = op2(&c, OP_ADD, step, constant(&c, 1));
    int lr = scheduled_lr(&c, hyper(&c, "opt.lr", ts->lr), step);
    int mu = -1, b1 = -1, b2 = -1, eps = -1, lr_t = -1;
    if (ts->optimizer == OPT_MOMENTUM) mu = hyper(&c, "opt.momentum", ts->momentum);
    if (ts->optimizer == OPT_ADAM) {
        b1 = hyper(&c, "opt.beta1", ts->beta1);
        b2 = hyper(&c, "opt.beta2", ts->beta2);
        eps = hyper(&c, "opt.eps", ts->eps);
        /* The bias corrections fold into one step size. */
        int one = constant(&c, 1);
        int c2 = emit(&c, OP_SQRT, 1, (int32_t[]){op2(&c, OP_SUB, one, op2(&c, OP_POW, b2, step_next))}, NULL);
        int c1 = op2(&c, OP_SUB, one, op2(&c, OP_POW, b1, step_next));
        lr_t = op2(&c, OP_DIV, op2(&c, OP_MUL, lr, c2), c1);
    }

    int ngrad = g->n;
    for (int i = 0; i < ngrad; i++) {
        if (!(g->nodes[i].flags & NF_GRAD)) continue;
        const char *pname = g->nodes[i].name;
        int p = graph_find_leaf(g, OP_PARAM, pname);
        NNC_ASSERT(p >= 0);
        IrType pt = g->nodes[p].type;
        c.span = g->nodes[p].span;
        int grad = i, delta;
        switch (ts->optimizer) {
        case OPT_SGD:
            delta = op2(&c, OP_MUL, lr, grad);
            break;
        case OPT_MOMENTUM: {
            int v = state_param(&c, arena_printf(m->arena, "%s.velocity", pname), pt, NF_OPT_STATE, 0);
            int v_new = op2(&c, OP_ADD, op2(&c, OP_MUL, mu, v), grad);
            assign(&c, v, v_new);
            delta = op2(&c, OP_MUL, lr, v_new);
            break;
        }
        case OPT_ADAM: {
            int one = constant(&c, 1);
            int mo = state_param(&c, arena_printf(m->arena, "%s.adam_m", pname), pt, NF_OPT_STATE, 0);
            int ve = state_param(&c, arena_printf(m->arena, "%s.adam_v", pname), pt, NF_OPT_STATE, 0);
            int m_new = op2(&c, OP_ADD, op2(&c, OP_MUL, b1, mo), op2(&c, OP_MUL, op2(&c, OP_SUB, one, b1), grad));
            int g2 = emit(&c, OP_SQUARE, 1, (int32_t[]){grad}, NULL);
            int v_new = op2(&c, OP_ADD, op2(&c, OP_MUL, b2, ve), op2(&c, OP_MUL, op2(&c, OP_SUB, one, b2), g2));
            assign(&c, mo, m_new);
            assign(&c, ve, v_new);
            int denom = op2(&c, OP_ADD, emit(&c, OP_SQRT, 1, (int32_t[]){v_new}, NULL), eps);
            delta = op2(&c, OP_MUL, lr_t, op2(&c, OP_DIV, m_new, denom));
            break;
        }
        default: NNC_BUG("optimizer %d", (int)ts->optimizer);
        }
        assign(&c, p, op2(&c, OP_SUB, p, delta));
    }
    c.span = ts->span;
    assign(&c, step, step_next);
    module_layout_state(m);
    return true;
}
