/* shape.c - shape rules: the type of every op's result, and the errors when
 * its inputs do not fit.
 *
 * A rule reads its inputs' types and the node's attributes and sets
 * n->type, or reports at the node's source location and returns false.
 * Leaves and reshapes arrive with their type already set by whoever built
 * them; their rules check it. */
#include "passes/passes.h"
#include "support/util.h"

#include <string.h>

typedef bool (*ShapeFn)(Graph *g, Node *n, Diag *d);

/* "'logits' (f32[N,10])" when the value has a name, else "f32[N,10]". */
static const char *describe(const Graph *g, int id, char *buf, size_t size) {
    const Node *n = &g->nodes[id];
    char tb[TYPE_STR_MAX];
    type_str(&n->type, tb, sizeof tb);
    if (n->name) snprintf(buf, size, "'%s' (%s)", n->name, tb);
    else snprintf(buf, size, "%s", tb);
    return buf;
}

static const IrType *in_type(const Graph *g, const Node *n, int k) { return &g->nodes[n->in[k]].type; }

static bool require_f32(const Graph *g, Node *n, int k, Diag *d) {
    if (in_type(g, n, k)->dtype == DT_F32) return true;
    char b[160];
    diag_error(d, n->span, "%s expects real (f32) values, but %s holds integers", op_info(n->op)->name,
               describe(g, n->in[k], b, sizeof b));
    return false;
}

bool shape_broadcast(const IrType *a, const IrType *b, IrType *out) {
    int rank = a->rank > b->rank ? a->rank : b->rank;
    IrType t = {.dtype = DT_F32, .rank = rank};
    for (int i = 0; i < rank; i++) {
        int ia = i - (rank - a->rank), ib = i - (rank - b->rank);
        int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
        if (da == db || db == 1) t.dim[i] = da;
        else if (da == 1) t.dim[i] = db;
        else return false;
    }
    *out = t;
    return true;
}

/* ---- rules ------------------------------------------------------------------------- */

static bool shape_elementwise(Graph *g, Node *n, Diag *d) {
    IrType t = *in_type(g, n, 0);
    if (!require_f32(g, n, 0, d)) return false;
    for (int k = 1; k < n->nin; k++) {
        if (!require_f32(g, n, k, d)) return false;
        IrType u;
        if (!shape_broadcast(&t, in_type(g, n, k), &u)) {
            char b1[160], b2[160];
            diag_error(d, n->span, "%s of %s and %s: the shapes do not broadcast", op_info(n->op)->name,
                       describe(g, n->in[0], b1, sizeof b1), describe(g, n->in[k], b2, sizeof b2));
            return false;
        }
        t = u;
    }
    t.dtype = DT_F32;
    /* `expand` takes the shape of its second input, which must contain the first. */
    if (n->op == OP_EXPAND && !type_equal(&t, in_type(g, n, 1))) {
        char b1[160], b2[160];
        diag_error(d, n->span, "cannot expand %s to %s", describe(g, n->in[0], b1, sizeof b1),
                   describe(g, n->in[1], b2, sizeof b2));
        return false;
    }
    int batch_dims = 0;
    for (int i = 0; i < t.rank; i++) batch_dims += t.dim[i] == IR_BATCH;
    if (batch_dims > 1) {
        diag_error(d, n->span, "%s would give a result with two batch dimensions", op_info(n->op)->name);
        return false;
    }
    n->type = t;
    return true;
}

static bool shape_leaf(Graph *g, Node *n, Diag *d) {
    (void)g;
    (void)d;
    return true; /* set by the builder, checked by graph_verify */
}

static bool shape_scalar(Graph *g, Node *n, Diag *d) {
    (void)g;
    (void)d;
    n->type = type_scalar(DT_F32);
    return true;
}

static bool shape_same(Graph *g, Node *n, Diag *d) {
    for (int k = 0; k < n->nin; k++)
        if (!require_f32(g, n, k, d)) return false;
    const IrType *t = in_type(g, n, 0);
    if (t->rank < 1) {
        diag_error(d, n->span, "%s needs at least one axis, got a scalar", op_info(n->op)->name);
        return false;
    }
    for (int k = 1; k < n->nin; k++)
        if (!type_equal(t, in_type(g, n, k))) NNC_BUG("%s with inputs of different shapes", op_info(n->op)->name);
    n->type = *t;
    return true;
}

static bool shape_matmul(Graph *g, Node *n, Diag *d) {
    const IrType *a = in_type(g, n, 0), *b = in_type(g, n, 1);
    char b1[160], b2[160];
    if (!require_f32(g, n, 0, d) || !require_f32(g, n, 1, d)) return false;
    if (a->rank != 2 || b->rank != 2) {
        diag_error(d, n->span, "matrix product of %s and %s: both must be 2-D", describe(g, n->in[0], b1, sizeof b1),
                   describe(g, n->in[1], b2, sizeof b2));
        return false;
    }
    bool ta = n->attr[0] != 0, tb = n->attr[1] != 0;
    int64_t m = a->dim[ta ? 1 : 0], ka = a->dim[ta ? 0 : 1];
    int64_t kb = b->dim[tb ? 1 : 0], p = b->dim[tb ? 0 : 1];
    if (ka != kb) {
        diag_error(d, n->span, "matrix product of %s and %s: inner dimensions differ", describe(g, n->in[0], b1, sizeof b1),
                   describe(g, n->in[1], b2, sizeof b2));
        return false;
    }
    if (m == IR_BATCH && p == IR_BATCH) {
        diag_error(d, n->span, "matrix product of %s and %s has two batch dimensions",
                   describe(g, n->in[0], b1, sizeof b1), describe(g, n->in[1], b2, sizeof b2));
        return false;
    }
    int64_t dims[2] = {m, p};
    n->type = type_tensor(DT_F32, 2, dims);
    return true;
}

static bool shape_reduce(Graph *g, Node *n, Diag *d) {
    if (!require_f32(g, n, 0, d)) return false;
    const IrType *x = in_type(g, n, 0);
    unsigned axes = (unsigned)n->attr[0];
    bool keep = n->attr[1] != 0;
    if (axes >> x->rank) {
        diag_error(d, n->span, "%s over an axis that %s does not have", op_info(n->op)->name,
                   x->rank ? "the tensor" : "a scalar");
        return false;
    }
    IrType t = {.dtype = DT_F32};
    for (int i = 0; i < x->rank; i++) {
        if (!(axes & (1u << i))) t.dim[t.rank++] = x->dim[i];
        else if (keep) t.dim[t.rank++] = 1;
    }
    n->type = t;
    return true;
}

static bool shape_sum_to(Graph *g, Node *n, Diag *d) {
    const IrType *x = in_type(g, n, 0), *like = in_type(g, n, 1);
    IrType u;
    if (!shape_broadcast(like, x, &u) || !type_equal(&u, x) || like->rank > x->rank)
        NNC_BUG("sum_to: %d-D value cannot be reduced to the requested shape", x->rank);
    (void)d;
    n->type = *like;
    n->type.dtype = DT_F32;
    return true;
}

static bool shape_reshape(Graph *g, Node *n, Diag *d) {
    const IrType *x = in_type(g, n, 0);
    int64_t a0, a1, b0, b1;
    type_numel(x, &a0, &a1);
    type_numel(&n->type, &b0, &b1);
    if (a0 != b0 || a1 != b1) {
        char b1s[160], tb[TYPE_STR_MAX];
        diag_error(d, n->span, "cannot reshape %s to %s: the number of elements differs",
                   describe(g, n->in[0], b1s, sizeof b1s), type_str(&n->type, tb, sizeof tb));
        return false;
    }
    n->type.dtype = x->dtype;
    return true;
}

static bool shape_cross_entropy(Graph *g, Node *n, Diag *d) {
    const IrType *x = in_type(g, n, 0), *y = in_type(g, n, 1);
    char b1[160], b2[160];
    if (!require_f32(g, n, 0, d)) return false;
    if (x->rank != 2) {
        diag_error(d, n->span, "cross_entropy expects logits of shape [N, classes], got %s",
                   describe(g, n->in[0], b1, sizeof b1));
        return false;
    }
    if (y->dtype != DT_I32 || y->rank != 1 || y->dim[0] != x->dim[0]) {
        diag_error(d, n->span, "cross_entropy expects class labels i32[%s] for logits %s, got %s",
                   x->dim[0] == IR_BATCH ? "N" : "?", describe(g, n->in[0], b1, sizeof b1),
                   describe(g, n->in[1], b2, sizeof b2));
        return false;
    }
    n->type = type_scalar(DT_F32);
    return true;
}

static bool shape_onehot(Graph *g, Node *n, Diag *d) {
    const IrType *y = in_type(g, n, 0);
    if (y->dtype != DT_I32 || y->rank != 1 || n->attr[0] < 1) {
        char b[160];
        diag_error(d, n->span, "onehot expects class labels i32[N] and classes >= 1, got %s",
                   describe(g, n->in[0], b, sizeof b));
        return false;
    }
    int64_t dims[2] = {y->dim[0], (int64_t)n->attr[0]};
    n->type = type_tensor(DT_F32, 2, dims);
    return true;
}

static bool shape_accuracy(Graph *g, Node *n, Diag *d) {
    const IrType *p = in_type(g, n, 0), *y = in_type(g, n, 1);
    char b1[160], b2[160];
    if (p->dtype != DT_F32 || p->rank != 2 || y->dtype != DT_I32 || y->rank != 1 || y->dim[0] != p->dim[0]) {
        diag_error(d, n->span, "accuracy expects scores [N, classes] and class labels i32[N], got %s and %s",
                   describe(g, n->in[0], b1, sizeof b1), describe(g, n->in[1], b2, sizeof b2));
        return false;
    }
    n->type = type_scalar(DT_F32);
    return true;
}

static bool shape_binary_accuracy(Graph *g, Node *n, Diag *d) {
    const IrType *p = in_type(g, n, 0), *t = in_type(g, n, 1);
    if (p->dtype != DT_F32 || !type_equal(p, t)) {
        char b1[160], b2[160];
        diag_error(d, n->span, "binary_accuracy expects predictions and targets of one shape (f32), got %s and %s",
                   describe(g, n->in[0], b1, sizeof b1), describe(g, n->in[1], b2, sizeof b2));
        return false;
    }
    n->type = type_scalar(DT_F32);
    return true;
}

/* ---- convolution and pooling ------------------------------------------------------ */

/* The output size of a window of `k` moving by `s` over `in` padded by `p`
 * on both sides; false if the window does not fit. */
static bool window_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t *out) {
    if (k < 1 || s < 1 || p < 0 || in + 2 * p < k) return false;
    *out = (in + 2 * p - k) / s + 1;
    return true;
}

/* x must be [N, C, H, W]: four axes, the batch (if any) first. */
static bool require_nchw(const Graph *g, Node *n, int k, Diag *d) {
    const IrType *t = in_type(g, n, k);
    bool ok = t->rank == 4;
    for (int i = 1; ok && i < 4; i++) ok = t->dim[i] != IR_BATCH;
    if (ok) return require_f32(g, n, k, d);
    char b[160];
    diag_error(d, n->span, "%s expects a [N, C, H, W] tensor, got %s", op_info(n->op)->name,
               describe(g, n->in[k], b, sizeof b));
    return false;
}

/* Checks that a kernel of (kh, kw) with the node's strides and padding (attrs
 * 0..3) fits an (h, w) input, and gives the output size. */
static bool conv_out(Node *n, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t *ho,
                     int64_t *wo, Diag *d) {
    int64_t sh = (int64_t)n->attr[0], sw = (int64_t)n->attr[1];
    int64_t ph = (int64_t)n->attr[2], pw = (int64_t)n->attr[3];
    if (window_out(h, kh, sh, ph, ho) && window_out(w, kw, sw, pw, wo)) return true;
    diag_error(d, n->span,
               "%s: a %lldx%lld kernel with stride (%lld, %lld) and padding (%lld, %lld) does not fit a %lldx%lld "
               "input", op_info(n->op)->name, (long long)kh, (long long)kw, (long long)sh,
               (long long)sw, (long long)ph, (long long)pw, (long long)h, (long long)w);
    return false;
}

/* x [N,C,H,W], w [F,C,kh,kw] -> [N,F,Ho,Wo] */
static bool shape_conv2d(Graph *g, Node *n, Diag *d) {
    if (!require_nchw(g, n, 0, d) || !require_nchw(g, n, 1, d)) return false;
    const IrType *x = in_type(g, n, 0), *w = in_type(g, n, 1);
    if (w->dim[0] == IR_BATCH || w->dim[1] != x->dim[1]) {
        char b1[160], b2[160];
        diag_error(d, n->span, "conv2d of %s with kernels %s: the channels differ",
                   describe(g, n->in[0], b1, sizeof b1), describe(g, n->in[1], b2, sizeof b2));
        return false;
    }
    int64_t ho, wo;
    if (!conv_out(n, x->dim[2], x->dim[3], w->dim[2], w->dim[3], &ho, &wo, d)) return false;
    n->type = type_tensor(DT_F32, 4, (int64_t[]){x->dim[0], w->dim[0], ho, wo});
    return true;
}

/* dy [N,F,Ho,Wo], w [F,C,kh,kw] -> dx [N,C,h,w] (h, w: attrs 4, 5) */
static bool shape_conv2d_grad_input(Graph *g, Node *n, Diag *d) {
    if (!require_nchw(g, n, 0, d) || !require_nchw(g, n, 1, d)) return false;
    const IrType *dy = in_type(g, n, 0), *w = in_type(g, n, 1);
    int64_t h = (int64_t)n->attr[4], wd = (int64_t)n->attr[5], ho, wo;
    if (!conv_out(n, h, wd, w->dim[2], w->dim[3], &ho, &wo, d)) return false;
    if (dy->dim[1] != w->dim[0] || dy->dim[2] != ho || dy->dim[3] != wo)
        NNC_BUG("conv2d_grad_input: the gradient does not match the kernels");
    n->type = type_tensor(DT_F32, 4, (int64_t[]){dy->dim[0], w->dim[1], h, wd});
    return true;
}

/* x [N,C,H,W], dy [N,F,Ho,Wo] -> dw [F,C,kh,kw] (kh, kw: attrs 4, 5) */
static bool shape_conv2d_grad_weight(Graph *g, Node *n, Diag *d) {
    if (!require_nchw(g, n, 0, d) || !require_nchw(g, n, 1, d)) return false;
    const IrType *x = in_type(g, n, 0), *dy = in_type(g, n, 1);
    int64_t kh = (int64_t)n->attr[4], kw = (int64_t)n->attr[5], ho, wo;
    if (!conv_out(n, x->dim[2], x->dim[3], kh, kw, &ho, &wo, d)) return false;
    if (dy->dim[0] != x->dim[0] || dy->dim[2] != ho || dy->dim[3] != wo)
        NNC_BUG("conv2d_grad_weight: the gradient does not match the input");
    n->type = type_tensor(DT_F32, 4, (int64_t[]){dy->dim[1], x->dim[1], kh, kw});
    return true;
}

/* The output size of a pooling window (attrs kh kw sh sw) over an (h, w) input. */
static bool pool_out(Node *n, int64_t h, int64_t w, int64_t *ho, int64_t *wo, Diag *d) {
    int64_t kh = (int64_t)n->attr[0], kw = (int64_t)n->attr[1];
    int64_t sh = (int64_t)n->attr[2], sw = (int64_t)n->attr[3];
    if (window_out(h, kh, sh, 0, ho) && window_out(w, kw, sw, 0, wo)) return true;
    diag_error(d, n->span, "%s: a %lldx%lld window with stride (%lld, %lld) does not fit a %lldx%lld input",
               op_info(n->op)->name, (long long)kh, (long long)kw, (long long)sh, (long long)sw, (long long)h,
               (long long)w);
    return false;
}

/* x [N,C,H,W] -> [N,C,Ho,Wo] */
static bool shape_pool2d(Graph *g, Node *n, Diag *d) {
    if (!require_nchw(g, n, 0, d)) return false;
    const IrType *x = in_type(g, n, 0);
    int64_t ho, wo;
    if (!pool_out(n, x->dim[2], x->dim[3], &ho, &wo, d)) return false;
    n->type = type_tensor(DT_F32, 4, (int64_t[]){x->dim[0], x->dim[1], ho, wo});
    return true;
}

/* x [N,C,H,W], dy [N,C,Ho,Wo] -> dx [N,C,H,W] */
static bool shape_maxpool2d_grad(Graph *g, Node *n, Diag *d) {
    if (!require_nchw(g, n, 0, d) || !require_nchw(g, n, 1, d)) return false;
    const IrType *x = in_type(g, n, 0), *dy = in_type(g, n, 1);
    int64_t ho, wo;
    if (!pool_out(n, x->dim[2], x->dim[3], &ho, &wo, d)) return false;
    if (dy->dim[0] != x->dim[0] || dy->dim[1] != x->dim[1] || dy->dim[2] != ho || dy->dim[3] != wo)
        NNC_BUG("maxpool2d_grad: the gradient does not match the input");
    n->type = *x;
    return true;
}

/* dy [N,C,Ho,Wo] -> dx [N,C,h,w] (h, w: attrs 4, 5) */
static bool shape_avgpool2d_grad(Graph *g, Node *n, Diag *d) {
    if (!require_nchw(g, n, 0, d)) return false;
    const IrType *dy = in_type(g, n, 0);
    int64_t h = (int64_t)n->attr[4], w = (int64_t)n->attr[5], ho, wo;
    if (!pool_out(n, h, w, &ho, &wo, d)) return false;
    if (dy->dim[2] != ho || dy->dim[3] != wo) NNC_BUG("avgpool2d_grad: the gradient does not match the input");
    n->type = type_tensor(DT_F32, 4, (int64_t[]){dy->dim[0], dy->dim[1], h, w});
    return true;
}

/* x, seed, step -> x's type */
static bool shape_dropout(Graph *g, Node *n, Diag *d) {
    if (!require_f32(g, n, 0, d)) return false;
    for (int k = 1; k < 3; k++)
        if (in_type(g, n, k)->rank != 0 || in_type(g, n, k)->dtype != DT_F32)
            NNC_BUG("%s: the seed and the step are scalars", op_info(n->op)->name);
    n->type = *in_type(g, n, 0);
    return true;
}

/* One column per set; the sets are the leading non-zero attributes. */
static bool shape_multi_hot(Graph *g, Node *n, Diag *d) {
    const IrType *y = in_type(g, n, 0);
    int sets = 0;
    while (sets < IR_MAX_ATTRS && n->attr[sets] != 0) sets++;
    if (y->dtype != DT_I32 || y->rank != 1 || sets == 0) {
        char b[160];
        diag_error(d, n->span, "multi_hot expects class labels i32[N] and at least one set, got %s",
                   describe(g, n->in[0], b, sizeof b));
        return false;
    }
    int64_t dims[2] = {y->dim[0], sets};
    n->type = type_tensor(DT_F32, 2, dims);
    return true;
}

static bool shape_assign(Graph *g, Node *n, Diag *d) {
    (void)d;
    if (!type_equal(in_type(g, n, 0), in_type(g, n, 1))) NNC_BUG("assign of a value of another shape");
    n->type = *in_type(g, n, 0);
    return true;
}

static const ShapeFn shape_rules[OP_COUNT] = {
#define EW(e, name, arity, flags, attrs, grad, scalar) [OP_##e] = shape_elementwise,
#define OP(e, name, arity, flags, attrs, shape, grad, lower) [OP_##e] = shape,
#include "ir/ops.def"
};

bool shape_infer(Graph *g, int id, Diag *d) { return shape_rules[g->nodes[id].op](g, &g->nodes[id], d); }

bool pass_shape_recheck(const Graph *g, FILE *err) {
    /* Work on a copy so the rules may write types freely. */
    Arena a = {0};
    Graph *c = graph_clone(&a, g, g->name);
    Diag d;
    diag_init(&d, NULL, err);
    bool ok = true;
    for (int i = 0; i < c->n; i++) {
        if (!shape_infer(c, i, &d)) {
            ok = false;
            continue;
        }
        if (!type_equal(&c->nodes[i].type, &g->nodes[i].type)) {
            char t1[TYPE_STR_MAX], t2[TYPE_STR_MAX];
            fprintf(err, "graph %s, node %%%d (%s): type %s, but its shape rule gives %s\n", g->name, i,
                    op_info(g->nodes[i].op)->name, type_str(&g->nodes[i].type, t1, sizeof t1),
                    type_str(&c->nodes[i].type, t2, sizeof t2));
            ok = false;
        }
    }
    arena_free_all(&a);
    return ok;
}

bool pass_shape(Module *m, Diag *d) {
    (void)d;
    /* The frontend typed every node as it built it (layers need shapes to
     * create their parameters); this pass re-derives them all from scratch,
     * so a graph that reaches the other passes is known to be well typed. */
    if (!pass_shape_recheck(m->model, stderr)) NNC_BUG("the frontend built an ill-typed graph");
    return true;
}
