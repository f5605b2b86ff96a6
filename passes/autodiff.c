/* autodiff.c - reverse-mode differentiation as a graph-to-graph pass.
 *
 * Walking the grad graph backwards from the loss, each node's
 * vector-Jacobian rule (the `grad` column of ops.def) turns the gradient of
 * its result into gradients of its inputs, emitted as ordinary graph ops.
 * Gradients of a value used twice are summed. Only values on a path from a
 * trainable param to the loss get gradients, so no work is spent on, say,
 * the gradient of the input images.
 *
 * The backward graph is plain IR: every later pass applies to it. */
#include "passes/passes.h"
#include "support/util.h"

#include <stdlib.h>
#include <string.h>

typedef struct AdCtx {
    Graph *g;
    int32_t *grad; /* per forward node: its accumulated gradient, or -1 */
    bool *needs;   /* per forward node: on a path from a trainable param */
    Span span;     /* location of the node being differentiated */
} AdCtx;

typedef void (*GradFn)(AdCtx *c, int id, int dy);

/* ---- emitting ops ------------------------------------------------------------------ */

static int emit(AdCtx *c, Op op, int nin, const int32_t *in, const double *attr) {
    int id = graph_add(c->g, op, nin, in, attr, c->span);
    Diag d;
    diag_init(&d, NULL, stderr);
    if (!shape_infer(c->g, id, &d)) NNC_BUG("autodiff built an ill-typed %s", op_info(op)->name);
    return id;
}

static int op1(AdCtx *c, Op op, int a) { return emit(c, op, 1, (int32_t[]){a}, NULL); }
static int op2(AdCtx *c, Op op, int a, int b) { return emit(c, op, 2, (int32_t[]){a, b}, NULL); }
static int op1a(AdCtx *c, Op op, int a, const double *attr) { return emit(c, op, 1, (int32_t[]){a}, attr); }
static int op2a(AdCtx *c, Op op, int a, int b, const double *attr) {
    return emit(c, op, 2, (int32_t[]){a, b}, attr);
}

static int constant(AdCtx *c, double v) { return emit(c, OP_CONST, 0, NULL, (double[]){v}); }

static const IrType *type_of(AdCtx *c, int id) { return &c->g->nodes[id].type; }

/* Sums a broadcast gradient back down to the shape of input `like`. */
static int unbroadcast(AdCtx *c, int g, int like) {
    if (type_equal(type_of(c, g), type_of(c, like))) return g;
    IrType t = *type_of(c, like);
    t.dtype = DT_F32;
    if (type_equal(type_of(c, g), &t)) return g;
    return op2(c, OP_SUM_TO, g, like);
}

static bool wants(AdCtx *c, int id, int k) { return c->needs[c->g->nodes[id].in[k]]; }

/* Adds `value` to the gradient of input k of node id (after unbroadcasting). */
static void accumulate(AdCtx *c, int id, int k, int value) {
    int in = c->g->nodes[id].in[k];
    if (!c->needs[in]) return;
    value = unbroadcast(c, value, in);
    c->grad[in] = c->grad[in] < 0 ? value : op2(c, OP_ADD, c->grad[in], value);
}

/* ---- vector-Jacobian rules, one per op ------------------------------------------------ */

static void grad_zero(AdCtx *c, int id, int dy) {
    (void)c;
    (void)id;
    (void)dy;
}

static void grad_add(AdCtx *c, int id, int dy) {
    accumulate(c, id, 0, dy);
    accumulate(c, id, 1, dy);
}

static void grad_sub(AdCtx *c, int id, int dy) {
    accumulate(c, id, 0, dy);
    if (wants(c, id, 1)) accumulate(c, id, 1, op1(c, OP_NEG, dy));
}

static void grad_mul(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    if (wants(c, id, 0)) accumulate(c, id, 0, op2(c, OP_MUL, dy, n.in[1]));
    if (wants(c, id, 1)) accumulate(c, id, 1, op2(c, OP_MUL, dy, n.in[0]));
}

static void grad_div(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    if (wants(c, id, 0)) accumulate(c, id, 0, op2(c, OP_DIV, dy, n.in[1]));
    /* d(a/b)/db = -(a/b)/b */
    if (wants(c, id, 1))
        accumulate(c, id, 1, op1(c, OP_NEG, op2(c, OP_DIV, op2(c, OP_MUL, dy, id), n.in[1])));
}

static void grad_pow(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    if (wants(c, id, 0)) {
        int e1 = op2(c, OP_SUB, n.in[1], constant(c, 1));
        int dpow = op2(c, OP_MUL, n.in[1], op2(c, OP_POW, n.in[0], e1));
        accumulate(c, id, 0, op2(c, OP_MUL, dy, dpow));
    }
    if (wants(c, id, 1))
        accumulate(c, id, 1, op2(c, OP_MUL, dy, op2(c, OP_MUL, id, op1(c, OP_LOG, n.in[0]))));
}

static void grad_neg(AdCtx *c, int id, int dy) { accumulate(c, id, 0, op1(c, OP_NEG, dy)); }
static void grad_exp(AdCtx *c, int id, int dy) { accumulate(c, id, 0, op2(c, OP_MUL, dy, id)); }

static void grad_log(AdCtx *c, int id, int dy) {
    accumulate(c, id, 0, op2(c, OP_DIV, dy, c->g->nodes[id].in[0]));
}

static void grad_sqrt(AdCtx *c, int id, int dy) {
    /* d sqrt(x) = dy / (2 sqrt(x)) */
    accumulate(c, id, 0, op2(c, OP_DIV, dy, op2(c, OP_MUL, id, constant(c, 2))));
}

static void grad_square(AdCtx *c, int id, int dy) {
    int x = c->g->nodes[id].in[0];
    accumulate(c, id, 0, op2(c, OP_MUL, dy, op2(c, OP_MUL, x, constant(c, 2))));
}

static void grad_expand(AdCtx *c, int id, int dy) { accumulate(c, id, 0, dy); }

/* min and max route the gradient to the input that was chosen (ties: the
 * first input for max, the first for min as well). */
static void grad_minmax(AdCtx *c, int id, int dy, bool is_max) {
    Node n = c->g->nodes[id];
    int a = n.in[0], b = n.in[1];
    int first = is_max ? op2(c, OP_GE, a, b) : op2(c, OP_GE, b, a); /* 1 where a is chosen */
    if (wants(c, id, 0)) accumulate(c, id, 0, op2(c, OP_MUL, dy, first));
    if (wants(c, id, 1)) accumulate(c, id, 1, op2(c, OP_MUL, dy, op2(c, OP_SUB, constant(c, 1), first)));
}

static void grad_min(AdCtx *c, int id, int dy) { grad_minmax(c, id, dy, false); }
static void grad_max(AdCtx *c, int id, int dy) { grad_minmax(c, id, dy, true); }

static void grad_cos(AdCtx *c, int id, int dy) {
    int x = c->g->nodes[id].in[0];
    accumulate(c, id, 0, op1(c, OP_NEG, op2(c, OP_MUL, dy, op1(c, OP_SIN, x))));
}

static void grad_sin(AdCtx *c, int id, int dy) {
    accumulate(c, id, 0, op2(c, OP_MUL, dy, op1(c, OP_COS, c->g->nodes[id].in[0])));
}
static void grad_sigmoid(AdCtx *c, int id, int dy) { accumulate(c, id, 0, op2(c, OP_SIGMOID_GRAD, id, dy)); }
static void grad_tanh(AdCtx *c, int id, int dy) { accumulate(c, id, 0, op2(c, OP_TANH_GRAD, id, dy)); }

static void grad_relu(AdCtx *c, int id, int dy) {
    accumulate(c, id, 0, op2(c, OP_RELU_GRAD, c->g->nodes[id].in[0], dy));
}

static void grad_leaky_relu(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    accumulate(c, id, 0, op2a(c, OP_LEAKY_RELU_GRAD, n.in[0], dy, n.attr));
}

static void grad_elu(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    accumulate(c, id, 0, op2a(c, OP_ELU_GRAD, n.in[0], dy, n.attr));
}

static void grad_swish(AdCtx *c, int id, int dy) {
    accumulate(c, id, 0, op2(c, OP_SWISH_GRAD, c->g->nodes[id].in[0], dy));
}

static void grad_softplus(AdCtx *c, int id, int dy) {
    accumulate(c, id, 0, op2(c, OP_MUL, dy, op1(c, OP_SIGMOID, c->g->nodes[id].in[0])));
}

static void grad_abs(AdCtx *c, int id, int dy) {
    accumulate(c, id, 0, op2(c, OP_ABS_GRAD, c->g->nodes[id].in[0], dy));
}

/* C = op(A) op(B). With op(X) = X or X^T, the four cases:
 *   C = A B      dA = dC B^T     dB = A^T dC
 *   C = A B^T    dA = dC B       dB = dC^T A
 *   C = A^T B    dA = B dC^T     dB = A dC
 *   C = A^T B^T  dA = B^T dC^T   dB = dC^T A^T */
static void grad_matmul(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    int a = n.in[0], b = n.in[1];
    bool ta = n.attr[0] != 0, tb = n.attr[1] != 0;
    if (wants(c, id, 0)) {
        int da = !ta ? op2a(c, OP_MATMUL, dy, b, (double[]){0, !tb})
                     : op2a(c, OP_MATMUL, b, dy, (double[]){tb, 1});
        accumulate(c, id, 0, da);
    }
    if (wants(c, id, 1)) {
        int db = !tb ? op2a(c, OP_MATMUL, a, dy, (double[]){!ta, 0})
                     : op2a(c, OP_MATMUL, dy, a, (double[]){1, ta});
        accumulate(c, id, 1, db);
    }
}

/* The reduced gradient, reshaped to keep the reduced axes as 1s, then
 * broadcast back over the input. */
static int expand_reduced(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    int x = n.in[0];
    if (n.attr[1] == 0) { /* !keepdims: put the reduced axes back as 1s */
        IrType t = *type_of(c, x);
        unsigned axes = (unsigned)n.attr[0];
        for (int i = 0; i < t.rank; i++)
            if (axes & (1u << i)) t.dim[i] = 1;
        t.dtype = DT_F32;
        dy = graph_add(c->g, OP_RESHAPE, 1, (int32_t[]){dy}, NULL, c->span);
        c->g->nodes[dy].type = t;
        Diag d;
        diag_init(&d, NULL, stderr);
        if (!shape_infer(c->g, dy, &d)) NNC_BUG("bad reshape in the gradient of a reduction");
    }
    return op2(c, OP_EXPAND, dy, x);
}

static void grad_sum(AdCtx *c, int id, int dy) { accumulate(c, id, 0, expand_reduced(c, id, dy)); }

static void grad_mean(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    int count = op1a(c, OP_SIZE, n.in[0], (double[]){n.attr[0]});
    accumulate(c, id, 0, op2(c, OP_DIV, expand_reduced(c, id, dy), count));
}

static void grad_sum_to(AdCtx *c, int id, int dy) {
    accumulate(c, id, 0, op2(c, OP_EXPAND, dy, c->g->nodes[id].in[0]));
}

static void grad_reshape(AdCtx *c, int id, int dy) {
    int x = c->g->nodes[id].in[0];
    int r = graph_add(c->g, OP_RESHAPE, 1, (int32_t[]){dy}, NULL, c->span);
    c->g->nodes[r].type = *type_of(c, x);
    Diag d;
    diag_init(&d, NULL, stderr);
    if (!shape_infer(c->g, r, &d)) NNC_BUG("bad reshape in the gradient of a reshape");
    accumulate(c, id, 0, r);
}

static void grad_softmax(AdCtx *c, int id, int dy) { accumulate(c, id, 0, op2(c, OP_SOFTMAX_GRAD, id, dy)); }

static void grad_log_softmax(AdCtx *c, int id, int dy) {
    accumulate(c, id, 0, op2(c, OP_LOG_SOFTMAX_GRAD, id, dy));
}

/* loss = mean_i -log softmax(x_i)[y_i]  =>  dx = (softmax(x) - onehot(y)) * dloss / rows */
static void grad_cross_entropy(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    if (!wants(c, id, 0)) return;
    int x = n.in[0], y = n.in[1];
    int p = op1(c, OP_SOFTMAX, x);
    double classes = (double)type_of(c, x)->dim[1];
    int onehot = op1a(c, OP_ONEHOT, y, (double[]){classes});
    int rows = op1a(c, OP_SIZE, x, (double[]){1});
    int scale = op2(c, OP_DIV, dy, rows);
    accumulate(c, id, 0, op2(c, OP_MUL, op2(c, OP_SUB, p, onehot), scale));
}

/* y = conv2d(x, w): dx is the transposed convolution of dy with w (it needs
 * x's size, which the strides do not determine), dw the correlation of x
 * with dy summed over the batch (it needs the kernel's size). */
static void grad_conv2d(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    IrType tx = *type_of(c, n.in[0]), tw = *type_of(c, n.in[1]); /* copies: emitting moves the nodes */
    if (wants(c, id, 0)) {
        double attr[] = {n.attr[0], n.attr[1], n.attr[2], n.attr[3], (double)tx.dim[2], (double)tx.dim[3]};
        accumulate(c, id, 0, op2a(c, OP_CONV2D_GRAD_INPUT, dy, n.in[1], attr));
    }
    if (wants(c, id, 1)) {
        double attr[] = {n.attr[0], n.attr[1], n.attr[2], n.attr[3], (double)tw.dim[2], (double)tw.dim[3]};
        accumulate(c, id, 1, op2a(c, OP_CONV2D_GRAD_WEIGHT, n.in[0], dy, attr));
    }
}

static void grad_maxpool2d(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    accumulate(c, id, 0, op2a(c, OP_MAXPOOL2D_GRAD, n.in[0], dy, n.attr));
}

static void grad_avgpool2d(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    const IrType *tx = type_of(c, n.in[0]);
    double attr[] = {n.attr[0], n.attr[1], n.attr[2], n.attr[3], (double)tx->dim[2], (double)tx->dim[3]};
    accumulate(c, id, 0, op1a(c, OP_AVGPOOL2D_GRAD, dy, attr));
}

/* dx = dy through the forward pass's mask, drawn again from the same key. */
static void grad_dropout(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    accumulate(c, id, 0, emit(c, OP_DROPOUT_GRAD, 3, (int32_t[]){dy, n.in[1], n.in[2]}, n.attr));
}

/* l = max(z, 0) - t z + log1p(e^-|z|)  =>  dl/dz = sigmoid(z) - t, dl/dt = -z */
static void grad_logistic_loss(AdCtx *c, int id, int dy) {
    Node n = c->g->nodes[id];
    int z = n.in[0], t = n.in[1];
    if (wants(c, id, 0)) accumulate(c, id, 0, op2(c, OP_MUL, dy, op2(c, OP_SUB, op1(c, OP_SIGMOID, z), t)));
    if (wants(c, id, 1)) accumulate(c, id, 1, op1(c, OP_NEG, op2(c, OP_MUL, dy, z)));
}

static const GradFn grad_rules[OP_COUNT] = {
#define EW(e, name, arity, flags, attrs, grad, scalar) [OP_##e] = grad,
#define OP(e, name, arity, flags, attrs, shape, grad, lower) [OP_##e] = grad,
#include "ir/ops.def"
};

/* ---- the pass ----------------------------------------------------------------------- */

static bool trainable(const Node *n) {
    return n->op == OP_PARAM && !(n->flags & (NF_FROZEN | NF_OPT_STATE | NF_HYPER));
}

bool pass_autodiff(Module *m, Diag *d) {
    if (!m->grad) return true;
    Graph *g = m->grad;
    int nfwd = g->n;
    int loss = -1;
    for (int i = 0; i < nfwd; i++)
        if (g->nodes[i].flags & NF_LOSS) loss = i;
    NNC_ASSERT(loss >= 0);

    AdCtx c = {.g = g};
    c.grad = xmalloc(sizeof(int32_t) * (size_t)nfwd);
    c.needs = xcalloc((size_t)nfwd, sizeof(bool));
    for (int i = 0; i < nfwd; i++) {
        const Node *n = &g->nodes[i];
        c.grad[i] = -1;
        c.needs[i] = trainable(n);
        for (int k = 0; k < n->nin; k++) c.needs[i] |= c.needs[n->in[k]];
    }

    bool ok = true;
    c.span = g->nodes[loss].span;
    c.grad[loss] = constant(&c, 1.0);
    for (int i = loss; i >= 0; i--) {
        if (c.grad[i] < 0 || !c.needs[i]) continue;
        Node n = g->nodes[i];
        if (n.op == OP_PARAM) continue;
        GradFn rule = grad_rules[n.op];
        if (!rule) NNC_BUG("no gradient rule for %s", op_info(n.op)->name);
        c.span = n.span;
        rule(&c, i, c.grad[i]);
    }

    /* Name each parameter's gradient after it; a trainable parameter the loss
     * does not depend on is reported, and gets a zero gradient. */
    for (int i = 0; i < nfwd; i++) {
        Node n = g->nodes[i];
        if (!trainable(&n)) continue;
        int gi = c.grad[i];
        if (gi < 0) {
            diag_warning(d, n.span, "the loss does not depend on parameter '%s'; it will not change", n.name);
            c.span = n.span;
            gi = op2(&c, OP_EXPAND, constant(&c, 0), i);
        } else if (g->nodes[gi].op == OP_PARAM || g->nodes[gi].op == OP_INPUT ||
                   (g->nodes[gi].flags & NF_GRAD)) {
            /* A gradient must be a value of its own: a leaf, or a node that is
             * already another param's gradient, gets a copy. */
            c.span = n.span;
            gi = op2(&c, OP_EXPAND, gi, i);
        }
        g->nodes[gi].flags |= NF_GRAD;
        g->nodes[gi].name = n.name;
    }
    /* A parameter that only outputs depend on is not in this graph at all. */
    for (int i = 0; i < m->model->n; i++) {
        const Node *n = &m->model->nodes[i];
        if (trainable(n) && graph_find_leaf(g, OP_PARAM, n->name) < 0)
            diag_warning(d, n->span, "the loss does not depend on parameter '%s'; it will not change",
                         n->name);
    }
    free(c.grad);
    free(c.needs);
    return ok;
}
