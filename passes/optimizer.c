/* optimizer.c - the parameter update, appended to the grad graph as ops.
 *
 * Hyper-parameters (learning rate, momentum, betas, Adam's step count) are
 * scalars of the model state, not constants in the code, so a driver or a
 * user of the compiled library can change them between steps without
 * recompiling, and a checkpoint resumes exactly.
 *
 *   sgd       p -= lr * g
 *   momentum  v = mu * v + g;  p -= lr * v
 *   adam      t += 1;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *             p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
 *
 * Every assign comes after all the reads of the state in the step (the
 * forward and backward nodes precede the update in the list), so the step
 * sees one consistent set of weights. */
#include "passes/passes.h"
#include "support/util.h"

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

    int lr = hyper(&c, "opt.lr", ts->lr);
    int mu = -1, b1 = -1, b2 = -1, eps = -1, lr_t = -1, t_next = -1, t = -1;
    if (ts->optimizer == OPT_MOMENTUM) mu = hyper(&c, "opt.momentum", ts->momentum);
    if (ts->optimizer == OPT_ADAM) {
        b1 = hyper(&c, "opt.beta1", ts->beta1);
        b2 = hyper(&c, "opt.beta2", ts->beta2);
        eps = hyper(&c, "opt.eps", ts->eps);
        t = hyper(&c, "opt.t", 0);
        t_next = op2(&c, OP_ADD, t, constant(&c, 1));
        /* The bias corrections fold into one step size. */
        int one = constant(&c, 1);
        int c2 = emit(&c, OP_SQRT, 1, (int32_t[]){op2(&c, OP_SUB, one, op2(&c, OP_POW, b2, t_next))}, NULL);
        int c1 = op2(&c, OP_SUB, one, op2(&c, OP_POW, b1, t_next));
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
        int grad = i, step;
        switch (ts->optimizer) {
        case OPT_SGD:
            step = op2(&c, OP_MUL, lr, grad);
            break;
        case OPT_MOMENTUM: {
            int v = state_param(&c, arena_printf(m->arena, "%s.velocity", pname), pt, NF_OPT_STATE, 0);
            int v_new = op2(&c, OP_ADD, op2(&c, OP_MUL, mu, v), grad);
            assign(&c, v, v_new);
            step = op2(&c, OP_MUL, lr, v_new);
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
            step = op2(&c, OP_MUL, lr_t, op2(&c, OP_DIV, m_new, denom));
            break;
        }
        default: NNC_BUG("optimizer %d", (int)ts->optimizer);
        }
        assign(&c, p, op2(&c, OP_SUB, p, step));
    }
    if (t >= 0) {
        c.span = ts->span;
        assign(&c, t, t_next);
    }
    module_layout_state(m);
    return true;
}
