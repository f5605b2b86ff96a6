/* optimizer.c - the parameter update, appended to the grad graph as ops.
 *
 * Hyper-parameters (learning rate, momentum, betas, weight decay, the
 * clipping norm, the step count) are scalars of the model state, not
 * constants in the code, so a driver or a user of the compiled library can
 * change them between steps without recompiling, and a checkpoint resumes
 * exactly.
 *
 * Each trainable parameter p with gradient g is updated in three stages:
 *
 *   1. clip_norm c (if given): every g *= min(1, c / (|G| + 1e-6)), where |G|
 *      is the 2-norm of all the gradients together, taken before any update
 *   2. weight_decay wd (if not 0; every optimizer but adamw): g += wd * p
 *   3. the step of the optimizer:
 *
 *   sgd       p -= lr * g
 *   momentum  v = mu * v + g;  p -= lr * v            nesterov: p -= lr * (g + mu * v)
 *   adagrad   s = s + g^2;  p -= lr * g / (sqrt(s) + eps)
 *   rmsprop   r = rho * r + (1 - rho) * g^2;  p -= lr * g / (sqrt(r) + eps)
 *   adam      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  t = step + 1
 *             p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
 *   adamw     p -= lr * wd * p (decoupled decay), then adam's step
 *
 * These are torch.optim's updates (SGD with dampening 0, Adagrad without
 * lr_decay, RMSprop neither centered nor with momentum, PyTorch's alpha
 * being rho), except that adam folds both bias corrections into the step
 * size: its eps is added to sqrt(v), where PyTorch adds it to
 * sqrt(v / (1 - b2^t)).
 *
 * The step size is lr, or lr under a schedule (ir.h: ScheduleKind) driven
 * by the step counter opt.step and opt.steps_per_epoch, which whoever runs
 * the steps sets from the size of the data (nnc train does).
 *
 * Frozen parameters have no gradient (autodiff skips them), so they get no
 * update at all, decay included. A parameter the loss does not depend on
 * has a zero gradient and is not decayed either: it keeps its value.
 *
 * Every assign comes after all the reads of the state in the step (the
 * forward and backward nodes precede the update in the list), so the step
 * sees one consistent set of weights. */
#include "passes/passes.h"
#include "support/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct OptCtx {
    Module *m;
    Graph *g;
    Diag *d;
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
    /* The names are the optimizer's; a parameter of the model may not take one. */
    int taken = graph_find_leaf(c->g, OP_PARAM, name);
    if (taken >= 0)
        diag_error(c->d, c->g->nodes[taken].span, "'%s' is the name of the %s optimizer's state; rename this parameter",
                   name, optimizer_names[c->m->train_spec.optimizer]);
    InitKind kind = init_value == 0 ? INIT_ZEROS : INIT_CONST;
    int id = graph_add(c->g, OP_PARAM, 0, NULL, (double[]){kind, init_value, 0, 0}, c->span);
    Node *n = &c->g->nodes[id];
    n->name = name;
    n->type = type;
    n->flags = flags;
    return id;
}

/* A hyper-parameter scalar. One the grad graph already reads (a layer
 * whose training behaviour follows the step count) is shared, not made twice. */
static int hyper(OptCtx *c, const char *name, double value) {
    int id = graph_find_leaf(c->g, OP_PARAM, name);
    if (id >= 0 && (c->g->nodes[id].flags & NF_HYPER)) return id;
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

/* The optimizer's scalars for this step: state hyper-parameters, -1 where
 * the optimizer has none, and what is computed from them once per step. */
typedef struct Hypers {
    int lr, mu, b1, b2, eps, rho, wd;
    int lr_t; /* adam, adamw: lr with both bias corrections folded in */
    int keep; /* adamw: 1 - lr * wd, what the decoupled decay leaves of p */
} Hypers;

static Hypers make_hypers(OptCtx *c, int lr, int step_next) {
    const TrainSpec *ts = &c->m->train_spec;
    OptimizerKind k = ts->optimizer;
    Hypers h = {.lr = lr, .mu = -1, .b1 = -1, .b2 = -1, .eps = -1, .rho = -1, .wd = -1, .lr_t = -1, .keep = -1};
    if (k == OPT_MOMENTUM) h.mu = hyper(c, "opt.momentum", ts->momentum);
    if (k == OPT_ADAM || k == OPT_ADAMW) {
        h.b1 = hyper(c, "opt.beta1", ts->beta1);
        h.b2 = hyper(c, "opt.beta2", ts->beta2);
        h.eps = hyper(c, "opt.eps", ts->eps);
        /* The bias corrections fold into one step size. */
        int one = constant(c, 1);
        int c2 = op1(c, OP_SQRT, op2(c, OP_SUB, one, op2(c, OP_POW, h.b2, step_next)));
        int c1 = op2(c, OP_SUB, one, op2(c, OP_POW, h.b1, step_next));
        h.lr_t = op2(c, OP_DIV, op2(c, OP_MUL, lr, c2), c1);
    }
    if (k == OPT_RMSPROP) h.rho = hyper(c, "opt.rho", ts->rho);
    if (k == OPT_ADAGRAD || k == OPT_RMSPROP) h.eps = hyper(c, "opt.eps", ts->eps);
    /* Decay is part of adamw; the others get its slot only when asked for
     * it, so a model without decay computes nothing for it. */
    if (k == OPT_ADAMW || ts->weight_decay != 0) h.wd = hyper(c, "opt.weight_decay", ts->weight_decay);
    if (k == OPT_ADAMW) h.keep = op2(c, OP_SUB, constant(c, 1), op2(c, OP_MUL, lr, h.wd));
    return h;
}

/* One trainable parameter and its gradient. */
typedef struct Trained {
    int param, grad;
    bool zero; /* the loss does not depend on it: autodiff made its gradient expand(0) */
} Trained;

static bool is_zero_gradient(const Graph *g, int grad) {
    const Node *n = &g->nodes[grad];
    if (n->op != OP_EXPAND) return false;
    const Node *v = &g->nodes[n->in[0]];
    return v->op == OP_CONST && v->attr[0] == 0;
}

/* Scales every gradient by min(1, clip / (|G| + 1e-6)), |G| the 2-norm of
 * all of them together (torch.nn.utils.clip_grad_norm_). */
static void clip_gradients(OptCtx *c, Trained *ps, int n) {
    const TrainSpec *ts = &c->m->train_spec;
    int clip = hyper(c, "opt.clip_norm", ts->clip_norm);
    int total = -1;
    for (int i = 0; i < n; i++) {
        int sq = op1(c, OP_SQUARE, ps[i].grad);
        int rank = c->g->nodes[sq].type.rank;
        if (rank > 0) sq = emit(c, OP_SUM, 1, (int32_t[]){sq}, (double[]){(double)((1u << rank) - 1), 0});
        total = total < 0 ? sq : op2(c, OP_ADD, total, sq);
    }
    int norm = op1(c, OP_SQRT, total);
    int ratio = op2(c, OP_DIV, clip, op2(c, OP_ADD, norm, constant(c, 1e-6)));
    int scale = op2(c, OP_MIN, constant(c, 1), ratio);
    for (int i = 0; i < n; i++) ps[i].grad = op2(c, OP_MUL, ps[i].grad, scale);
}

static int moment(OptCtx *c, const char *pname, const char *suffix, IrType type) {
    return state_param(c, arena_printf(c->m->arena, "%s.%s", pname, suffix), type, NF_OPT_STATE, 0);
}

/* Emits the update of one parameter. */
static void update(OptCtx *c, const Hypers *h, const Trained *t) {
    const TrainSpec *ts = &c->m->train_spec;
    const Node *pn = &c->g->nodes[t->param];
    const char *pname = pn->name;
    IrType pt = pn->type;
    int p = t->param, grad = t->grad, delta;
    bool decay = h->wd >= 0 && !t->zero;
    /* Coupled (L2) decay enters the gradient; adamw's is applied to p below. */
    if (decay && ts->optimizer != OPT_ADAMW) grad = op2(c, OP_ADD, grad, op2(c, OP_MUL, h->wd, p));
    switch (ts->optimizer) {
    case OPT_SGD:
        delta = op2(c, OP_MUL, h->lr, grad);
        break;
    case OPT_MOMENTUM: {
        int v = moment(c, pname, "velocity", pt);
        int v_new = op2(c, OP_ADD, op2(c, OP_MUL, h->mu, v), grad);
        assign(c, v, v_new);
        int dir = ts->nesterov ? op2(c, OP_ADD, grad, op2(c, OP_MUL, h->mu, v_new)) : v_new;
        delta = op2(c, OP_MUL, h->lr, dir);
        break;
    }
    case OPT_ADAGRAD: {
        int s = moment(c, pname, "adagrad_sum", pt);
        int s_new = op2(c, OP_ADD, s, op1(c, OP_SQUARE, grad));
        assign(c, s, s_new);
        int denom = op2(c, OP_ADD, op1(c, OP_SQRT, s_new), h->eps);
        delta = op2(c, OP_MUL, h->lr, op2(c, OP_DIV, grad, denom));
        break;
    }
    case OPT_RMSPROP: {
        int r = moment(c, pname, "rms", pt);
        int one = constant(c, 1);
        int g2 = op1(c, OP_SQUARE, grad);
        int r_new = op2(c, OP_ADD, op2(c, OP_MUL, h->rho, r), op2(c, OP_MUL, op2(c, OP_SUB, one, h->rho), g2));
        assign(c, r, r_new);
        int denom = op2(c, OP_ADD, op1(c, OP_SQRT, r_new), h->eps);
        delta = op2(c, OP_MUL, h->lr, op2(c, OP_DIV, grad, denom));
        break;
    }
    case OPT_ADAM:
    case OPT_ADAMW: {
        int one = constant(c, 1);
        int mo = moment(c, pname, "adam_m", pt);
        int ve = moment(c, pname, "adam_v", pt);
        int m_new = op2(c, OP_ADD, op2(c, OP_MUL, h->b1, mo), op2(c, OP_MUL, op2(c, OP_SUB, one, h->b1), grad));
        int g2 = op1(c, OP_SQUARE, grad);
        int v_new = op2(c, OP_ADD, op2(c, OP_MUL, h->b2, ve), op2(c, OP_MUL, op2(c, OP_SUB, one, h->b2), g2));
        assign(c, mo, m_new);
        assign(c, ve, v_new);
        int denom = op2(c, OP_ADD, op1(c, OP_SQRT, v_new), h->eps);
        delta = op2(c, OP_MUL, h->lr_t, op2(c, OP_DIV, m_new, denom));
        break;
    }
    default: NNC_BUG("optimizer %d", (int)ts->optimizer);
    }
    /* torch.optim.AdamW decays p before the Adam step; the step does not read p. */
    int base = decay && ts->optimizer == OPT_ADAMW ? op2(c, OP_MUL, p, h->keep) : p;
    assign(c, p, op2(c, OP_SUB, base, delta));
}

/* Appends the update of every trained parameter to g, whose NF_GRAD nodes
 * are the gradients. With `gradients_in`, each gradient that is not a
 * constant zero becomes an input named grad.PARAM instead: the update
 * alone, reading gradients computed elsewhere. */
static void append_update(Module *m, Graph *g, Diag *d, bool gradients_in) {
    const TrainSpec *ts = &m->train_spec;
    OptCtx c = {.m = m, .g = g, .d = d, .span = ts->span};

    /* opt.step counts the steps taken; the schedule reads it as it was
     * before this step, Adam's bias correction as t = step + 1. Dropout
     * reads it too (its masks change every step): the frontend may have
     * made it already. */
    int step = graph_find_leaf(g, OP_PARAM, "opt.step");
    if (step < 0) step = hyper(&c, "opt.step", 0);
    int step_next = op2(&c, OP_ADD, step, constant(&c, 1));
    int lr = scheduled_lr(&c, hyper(&c, "opt.lr", ts->lr), step);
    Hypers h = make_hypers(&c, lr, step_next);

    int ngrad = g->n, n = 0;
    Trained *ps = ARENA_ARRAY(m->arena, Trained, ngrad);
    for (int i = 0; i < ngrad; i++) {
        if (!(g->nodes[i].flags & NF_GRAD)) continue;
        int p = graph_find_leaf(g, OP_PARAM, g->nodes[i].name);
        NNC_ASSERT(p >= 0);
        ps[n++] = (Trained){.param = p, .grad = i, .zero = is_zero_gradient(g, i)};
    }
    for (int i = 0; i < n && gradients_in; i++) {
        if (ps[i].zero) continue;
        Node *gn = &g->nodes[ps[i].grad];
        gn->op = OP_INPUT;
        gn->nin = 0;
        gn->attr[0] = 0; /* classes */
        gn->name = arena_printf(m->arena, "grad.%s", gn->name);
        gn->flags = 0;
    }
    /* The norm is over every gradient, so clipping precedes every update. */
    if (ts->clip_norm > 0 && n > 0) clip_gradients(&c, ps, n);
    for (int i = 0; i < n; i++) {
        c.span = g->nodes[ps[i].param].span;
        update(&c, &h, &ps[i]);
    }
    c.span = ts->span;
    assign(&c, step, step_next);
}

/* Drops the nodes that no assignment of the state needs. */
static void keep_only_updates(Graph *g) {
    int *live = xcalloc((size_t)g->n + 1, sizeof(int));
    for (int i = g->n - 1; i >= 0; i--) {
        if (op_info(g->nodes[i].op)->flags & OPF_SIDE_EFFECT) live[i] = 1;
        if (!live[i]) continue;
        for (int k = 0; k < g->nodes[i].nin; k++) live[g->nodes[i].in[k]] = 1;
    }
    graph_compact(g, live);
    free(live);
}

bool pass_optimizer(Module *m, Diag *d) {
    if (!m->grad) {
        module_layout_state(m);
        return true;
    }
    m->train = graph_clone(m->arena, m->grad, "train_step");
    append_update(m, m->train, d, false);
    if (d->nerrors) return false;
    m->apply = graph_clone(m->arena, m->grad, "apply");
    append_update(m, m->apply, d, true);
    keep_only_updates(m->apply);
    module_layout_state(m);
    return true;
}
