/* lower.c - Graph IR -> Kernel IR.
 *
 * This is where the meaning of every op is written, once, as loops and
 * scalar expressions (see ir/kir.h); backends only translate them.
 *
 * Buffers: inputs, targets and outputs are arguments; params live in the
 * model state at their slot's offset; every other value gets its own region
 * of the workspace; reshapes are views of their input; constants and sizes
 * are never stored, they are folded into the expressions that read them. */
#include "passes/passes.h"
#include "support/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct LowerCtx {
    Module *m;
    const Graph *g;
    KProgram *p;
    Arena *a;
    int *buf; /* node -> buffer, or -1 (inline value, or assign) */
} LowerCtx;

typedef void (*LowerFn)(LowerCtx *c, int id);
typedef Kx *(*ScalarFn)(Arena *a, const Node *n, Kx **x);

static const Node *node(LowerCtx *c, int id) { return &c->g->nodes[id]; }

static Kx *dim_expr(Arena *a, int64_t d) { return d == IR_BATCH ? kx_batch(a) : kx_int(a, d); }

/* Product of dims [from, to) of a type, as an int expression. */
static Kx *dims_product(Arena *a, const IrType *t, int from, int to) {
    Kx *e = kx_int(a, 1);
    for (int i = from; i < to; i++) e = kx_bin(a, KX_MUL, e, dim_expr(a, t->dim[i]));
    return e;
}

static Kx *numel_expr(Arena *a, const IrType *t) { return dims_product(a, t, 0, t->rank); }

static NPoly numel_poly(const IrType *t) {
    NPoly p;
    type_numel(t, &p.c0, &p.c1);
    return p;
}

/* A readable kernel / buffer name: the .nn variable when there is one. */
static const char *value_name(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    if (n->name) return arena_printf(c->a, "%s.%s", n->name, op_info(n->op)->name);
    return arena_printf(c->a, "%s%d", op_info(n->op)->name, id);
}

/* ---- reading values ---------------------------------------------------------------- */

static bool is_inline(LowerCtx *c, int id) {
    Op op = node(c, id)->op;
    if (op == OP_CONST || op == OP_SIZE) return true;
    return op == OP_RESHAPE && is_inline(c, node(c, id)->in[0]);
}

/* The value of a constant or size node (scalars, never stored). */
static Kx *inline_value(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    switch (n->op) {
    case OP_CONST: return kx_real(c->a, n->attr[0]);
    case OP_RESHAPE: return inline_value(c, n->in[0]);
    case OP_SIZE: {
        const IrType *t = &node(c, n->in[0])->type;
        unsigned axes = (unsigned)n->attr[0];
        Kx *e = kx_int(c->a, 1);
        for (int i = 0; i < t->rank; i++)
            if (axes & (1u << i)) e = kx_bin(c->a, KX_MUL, e, dim_expr(c->a, t->dim[i]));
        return kx_toreal(c->a, e);
    }
    default: NNC_BUG("%s is not an inline value", op_info(n->op)->name);
    }
}

/* Row-major linear index of `vars` (one per axis of t). A var may be NULL
 * for an axis of size 1. */
static Kx *linear_index(Arena *a, const IrType *t, Kx **vars) {
    Kx *index = kx_int(a, 0), *stride = kx_int(a, 1);
    for (int i = t->rank - 1; i >= 0; i--) {
        if (t->dim[i] != 1) index = kx_bin(a, KX_ADD, index, kx_bin(a, KX_MUL, vars[i], stride));
        stride = kx_bin(a, KX_MUL, stride, dim_expr(a, t->dim[i]));
    }
    return index;
}

/* Element of value `id` at the index `vars` of a result of rank `rank`,
 * following NumPy broadcasting (trailing axes aligned, size-1 axes repeat). */
static Kx *load_broadcast(LowerCtx *c, int id, Kx **vars, int rank) {
    if (is_inline(c, id)) return inline_value(c, id);
    const IrType *t = &node(c, id)->type;
    Kx *aligned[IR_MAX_RANK];
    for (int i = 0; i < t->rank; i++) aligned[i] = vars[i + rank - t->rank];
    return kx_load(c->p, c->buf[id], linear_index(c->a, t, aligned));
}

static Kx *load_flat(LowerCtx *c, int id, Kx *index) {
    if (is_inline(c, id)) return inline_value(c, id);
    return kx_load(c->p, c->buf[id], index);
}

/* Opens one loop per axis of t inside `blk`; fills vars; returns the body. */
static KsBlock *loop_nest(LowerCtx *c, KsBlock *blk, const IrType *t, int naxes, Kx **vars, bool parallel) {
    for (int i = 0; i < naxes; i++) {
        int v = kprog_new_var(c->p);
        Ks *f = ks_for(c->a, blk, v, dim_expr(c->a, t->dim[i]), parallel && i == 0);
        vars[i] = kx_var(c->a, v);
        blk = &f->body;
    }
    return blk;
}

static KsBlock *new_loop_kernel(LowerCtx *c, int id) {
    return &kprog_add_kernel(c->p, KK_LOOP, value_name(c, id), id)->body;
}

/* dst[i] = value of `src` for every element (a flat copy loop). */
static void copy_kernel(LowerCtx *c, int id, int dst_buf, int src) {
    KsBlock *blk = new_loop_kernel(c, id);
    int v = kprog_new_var(c->p);
    Ks *f = ks_for(c->a, blk, v, numel_expr(c->a, &node(c, src)->type), true);
    Kx *i = kx_var(c->a, v);
    ks_store(c->a, &f->body, dst_buf, i, load_flat(c, src, i), false);
}

/* ---- scalar rules of the elementwise ops ------------------------------------------------ */

#define BIN(op, x, y) kx_bin(a, KX_##op, x, y)
#define UN(op, x) kx_un(a, KX_##op, x)
#define R(v) kx_real(a, v)

static Kx *scalar_add(Arena *a, const Node *n, Kx **x) { return BIN(ADD, x[0], x[1]); }
static Kx *scalar_sub(Arena *a, const Node *n, Kx **x) { return BIN(SUB, x[0], x[1]); }
static Kx *scalar_mul(Arena *a, const Node *n, Kx **x) { return BIN(MUL, x[0], x[1]); }
static Kx *scalar_div(Arena *a, const Node *n, Kx **x) { return BIN(DIV, x[0], x[1]); }
static Kx *scalar_pow(Arena *a, const Node *n, Kx **x) { return BIN(POW, x[0], x[1]); }
static Kx *scalar_neg(Arena *a, const Node *n, Kx **x) { return UN(NEG, x[0]); }
static Kx *scalar_exp(Arena *a, const Node *n, Kx **x) { return UN(EXP, x[0]); }
static Kx *scalar_log(Arena *a, const Node *n, Kx **x) { return UN(LOG, x[0]); }
static Kx *scalar_sqrt(Arena *a, const Node *n, Kx **x) { return UN(SQRT, x[0]); }
static Kx *scalar_square(Arena *a, const Node *n, Kx **x) { return BIN(MUL, x[0], x[0]); }
static Kx *scalar_expand(Arena *a, const Node *n, Kx **x) { return x[0]; }
static Kx *scalar_min(Arena *a, const Node *n, Kx **x) { return BIN(MIN, x[0], x[1]); }
static Kx *scalar_max(Arena *a, const Node *n, Kx **x) { return BIN(MAX, x[0], x[1]); }
static Kx *scalar_floor(Arena *a, const Node *n, Kx **x) { return UN(FLOOR, x[0]); }
static Kx *scalar_cos(Arena *a, const Node *n, Kx **x) { return UN(COS, x[0]); }
static Kx *scalar_sin(Arena *a, const Node *n, Kx **x) { return UN(SIN, x[0]); }
static Kx *scalar_ge(Arena *a, const Node *n, Kx **x) {
    return kx_select(a, kx_cmp(a, KX_GE, x[0], x[1]), R(1), R(0));
}

/* 1 / (1 + e^-x): e^-x overflows to inf for very negative x, giving 0. */
static Kx *scalar_sigmoid(Arena *a, const Node *n, Kx **x) {
    return BIN(DIV, R(1), BIN(ADD, R(1), UN(EXP, UN(NEG, x[0]))));
}

/* 1 - 2 / (e^2x + 1): saturates cleanly to +-1 at both ends. */
static Kx *scalar_tanh(Arena *a, const Node *n, Kx **x) {
    return BIN(SUB, R(1), BIN(DIV, R(2), BIN(ADD, UN(EXP, BIN(MUL, R(2), x[0])), R(1))));
}

static Kx *scalar_relu(Arena *a, const Node *n, Kx **x) {
    return kx_select(a, kx_cmp(a, KX_GT, x[0], R(0)), x[0], R(0));
}

/* x[0] = y (the activation's output), x[1] = dy */
static Kx *scalar_sigmoid_grad(Arena *a, const Node *n, Kx **x) {
    return BIN(MUL, x[1], BIN(MUL, x[0], BIN(SUB, R(1), x[0])));
}

static Kx *scalar_tanh_grad(Arena *a, const Node *n, Kx **x) {
    return BIN(MUL, x[1], BIN(SUB, R(1), BIN(MUL, x[0], x[0])));
}

/* x[0] = the relu's input, x[1] = dy */
static Kx *scalar_relu_grad(Arena *a, const Node *n, Kx **x) {
    return kx_select(a, kx_cmp(a, KX_GT, x[0], R(0)), x[1], R(0));
}

static Kx *scalar_leaky_relu(Arena *a, const Node *n, Kx **x) {
    return kx_select(a, kx_cmp(a, KX_GT, x[0], R(0)), x[0], BIN(MUL, R(n->attr[0]), x[0]));
}

/* alpha (e^min(x,0) - 1) on the negative side: e^x is never taken of a
 * large x, so no inf is computed even in the branch not chosen. */
static Kx *scalar_elu(Arena *a, const Node *n, Kx **x) {
    Kx *neg = BIN(MUL, R(n->attr[0]), BIN(SUB, UN(EXP, BIN(MIN, x[0], R(0))), R(1)));
    return kx_select(a, kx_cmp(a, KX_GT, x[0], R(0)), x[0], neg);
}

/* x / (1 + e^-x): for very negative x the quotient is x / inf = -0. */
static Kx *scalar_swish(Arena *a, const Node *n, Kx **x) {
    return BIN(DIV, x[0], BIN(ADD, R(1), UN(EXP, UN(NEG, x[0]))));
}

/* max(x, 0) + log1p(e^-|x|): the exponent is never positive, so nothing
 * overflows, and log1p keeps the small tail exact for very negative x. */
static Kx *softplus_of(Arena *a, Kx *x) {
    return BIN(ADD, BIN(MAX, x, R(0)), UN(LOG1P, UN(EXP, UN(NEG, UN(ABS, x)))));
}

static Kx *scalar_softplus(Arena *a, const Node *n, Kx **x) { return softplus_of(a, x[0]); }
static Kx *scalar_abs(Arena *a, const Node *n, Kx **x) { return UN(ABS, x[0]); }

static Kx *scalar_step(Arena *a, const Node *n, Kx **x) {
    return kx_select(a, kx_cmp(a, KX_GT, x[0], R(0)), R(1), R(0));
}

/* The derivatives below take x[0] = the activation's input, x[1] = dy. */
static Kx *scalar_leaky_relu_grad(Arena *a, const Node *n, Kx **x) {
    return kx_select(a, kx_cmp(a, KX_GT, x[0], R(0)), x[1], BIN(MUL, R(n->attr[0]), x[1]));
}

static Kx *scalar_elu_grad(Arena *a, const Node *n, Kx **x) {
    Kx *neg = BIN(MUL, x[1], BIN(MUL, R(n->attr[0]), UN(EXP, BIN(MIN, x[0], R(0)))));
    return kx_select(a, kx_cmp(a, KX_GT, x[0], R(0)), x[1], neg);
}

/* d/dx x s(x) = s + x s (1 - s) = s (1 + x (1 - s)): finite at both ends
 * (s = 0 for very negative x, 1 for very positive x). */
static Kx *scalar_swish_grad(Arena *a, const Node *n, Kx **x) {
    Kx *s = BIN(DIV, R(1), BIN(ADD, R(1), UN(EXP, UN(NEG, x[0]))));
    return BIN(MUL, x[1], BIN(MUL, s, BIN(ADD, R(1), BIN(MUL, x[0], BIN(SUB, R(1), s)))));
}

static Kx *scalar_abs_grad(Arena *a, const Node *n, Kx **x) {
    Kx *neg = kx_select(a, kx_cmp(a, KX_LT, x[0], R(0)), UN(NEG, x[1]), R(0));
    return kx_select(a, kx_cmp(a, KX_GT, x[0], R(0)), x[1], neg);
}

/* x[0] = z, x[1] = t: max(z, 0) - t z + log1p(e^-|z|), with the first two
 * terms taken together as (1 - t) z or -t z, so that a confident correct
 * logit (z = 20, t = 1) keeps its small loss, log1p(e^-20), rather than
 * 20 - 20 + e^-20 in whatever order the backend's reassociation picks. */
static Kx *scalar_logistic_loss(Arena *a, const Node *n, Kx **x) {
    Kx *pos = BIN(MUL, BIN(SUB, R(1), x[1]), x[0]), *neg = UN(NEG, BIN(MUL, x[1], x[0]));
    Kx *linear = kx_select(a, kx_cmp(a, KX_GT, x[0], R(0)), pos, neg);
    return BIN(ADD, linear, UN(LOG1P, UN(EXP, UN(NEG, UN(ABS, x[0])))));
}

static const ScalarFn scalar_rules[OP_COUNT] = {
#define EW(e, name, arity, flags, attrs, grad, scalar) [OP_##e] = scalar,
#include "ir/ops.def"
};

/* An elementwise op: one loop nest over the result, the scalar rule inside. */
static void lower_ew(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    Kx *vars[IR_MAX_RANK];
    KsBlock *body = loop_nest(c, new_loop_kernel(c, id), &n->type, n->type.rank, vars, true);
    Kx *args[IR_MAX_INPUTS];
    for (int k = 0; k < n->nin; k++) args[k] = load_broadcast(c, n->in[k], vars, n->type.rank);
    Kx *value = scalar_rules[n->op](c->a, n, args);
    ks_store(c->a, body, c->buf[id], linear_index(c->a, &n->type, vars), value, false);
}

/* ---- the other ops ---------------------------------------------------------------------- */

static void lower_leaf(LowerCtx *c, int id) {
    (void)c;
    (void)id; /* leaves and views have storage (or none) but no code */
}

static void lower_reshape(LowerCtx *c, int id) { lower_leaf(c, id); }

static void lower_matmul(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    const IrType *ta = &node(c, n->in[0])->type, *tb = &node(c, n->in[1])->type;
    Kernel *k = kprog_add_kernel(c->p, KK_GEMM, value_name(c, id), id);
    KGemm *g = &k->gemm;
    g->ta = n->attr[0] != 0;
    g->tb = n->attr[1] != 0;
    g->m = dim_expr(c->a, ta->dim[g->ta ? 1 : 0]);
    g->k = dim_expr(c->a, ta->dim[g->ta ? 0 : 1]);
    g->n = dim_expr(c->a, tb->dim[g->tb ? 0 : 1]);
    g->lda = dim_expr(c->a, ta->dim[1]);
    g->ldb = dim_expr(c->a, tb->dim[1]);
    g->ldc = g->n;
    g->alpha = 1;
    g->beta = 0;
    g->a = c->buf[n->in[0]];
    g->b = c->buf[n->in[1]];
    g->c = c->buf[id];
}

/* out = reduction of x: x's axis i goes to out's axis out_axis[i], or is
 * summed away when reduced[i]. Each result element is scaled by `scale`
 * (NULL for 1). Two loop orders:
 *  - the reduced axes are the innermost ones: one accumulator per result
 *    element, summed over a contiguous run of x (row sums, softmax-like);
 *  - otherwise (e.g. a bias gradient, summed over the batch): zero the
 *    result, then walk x in memory order adding into it, so the inner
 *    loop stays contiguous. */
static void reduce_kernel(LowerCtx *c, int id, int x, const bool *reduced, const int *out_axis, Kx *scale) {
    Arena *a = c->a;
    const IrType *tx = &node(c, x)->type, *to = &node(c, id)->type;
    int r = tx->rank, first_reduced = r;
    bool suffix = true;
    for (int i = 0; i < r; i++) {
        if (reduced[i] && first_reduced == r) first_reduced = i;
        if (!reduced[i] && first_reduced < r) suffix = false;
    }
    Kx *vars[IR_MAX_RANK], *ovars[IR_MAX_RANK] = {0};
    KsBlock *blk = new_loop_kernel(c, id);
    int out = c->buf[id];
    if (suffix) {
        KsBlock *body = loop_nest(c, blk, tx, first_reduced, vars, true);
        int s = kprog_new_local(c->p);
        ks_decl(a, body, s, kx_real(a, 0));
        KsBlock *inner = body;
        for (int i = first_reduced; i < r; i++) {
            int v = kprog_new_var(c->p);
            Ks *f = ks_for(a, inner, v, dim_expr(a, tx->dim[i]), false);
            vars[i] = kx_var(a, v);
            inner = &f->body;
        }
        ks_update(a, inner, s, KX_ADD, kx_load(c->p, c->buf[x], linear_index(a, tx, vars)));
        for (int i = 0; i < r; i++)
            if (!reduced[i] && out_axis[i] >= 0) ovars[out_axis[i]] = vars[i];
        Kx *value = kx_local(a, s);
        if (scale) value = kx_bin(a, KX_MUL, value, scale);
        ks_store(a, body, out, linear_index(a, to, ovars), value, false);
        return;
    }
    /* zero, then accumulate in x's memory order */
    int zv = kprog_new_var(c->p);
    Ks *zf = ks_for(a, blk, zv, numel_expr(a, to), true);
    ks_store(a, &zf->body, out, kx_var(a, zv), kx_real(a, 0), false);
    KsBlock *body = loop_nest(c, blk, tx, r, vars, false);
    for (int i = 0; i < r; i++)
        if (!reduced[i] && out_axis[i] >= 0) ovars[out_axis[i]] = vars[i];
    Kx *value = kx_load(c->p, c->buf[x], linear_index(a, tx, vars));
    if (scale) value = kx_bin(a, KX_MUL, value, scale);
    ks_store(a, body, out, linear_index(a, to, ovars), value, true);
}

static void lower_reduce(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    const IrType *tx = &node(c, n->in[0])->type;
    unsigned axes = (unsigned)n->attr[0];
    bool keep = n->attr[1] != 0;
    bool reduced[IR_MAX_RANK];
    int out_axis[IR_MAX_RANK], k = 0;
    Kx *count = kx_int(c->a, 1);
    for (int i = 0; i < tx->rank; i++) {
        reduced[i] = axes & (1u << i);
        if (reduced[i]) count = kx_bin(c->a, KX_MUL, count, dim_expr(c->a, tx->dim[i]));
        out_axis[i] = reduced[i] && !keep ? -1 : k++;
    }
    Kx *scale = n->op == OP_MEAN ? kx_bin(c->a, KX_DIV, kx_real(c->a, 1), kx_toreal(c->a, count)) : NULL;
    reduce_kernel(c, id, n->in[0], reduced, out_axis, scale);
}

static void lower_sum_to(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    const IrType *tx = &node(c, n->in[0])->type, *tl = &n->type;
    int lead = tx->rank - tl->rank;
    bool reduced[IR_MAX_RANK];
    int out_axis[IR_MAX_RANK];
    for (int i = 0; i < tx->rank; i++) {
        int j = i - lead;
        reduced[i] = j < 0 || (tl->dim[j] == 1 && tx->dim[i] != 1);
        out_axis[i] = j < 0 ? -1 : j;
    }
    reduce_kernel(c, id, n->in[0], reduced, out_axis, NULL);
}

/* For ops over the last axis: rows = product of the other axes, cols = last. */
typedef struct Rows {
    KsBlock *body; /* inside `for r < rows` */
    Kx *row_base;  /* r * cols */
    Kx *cols;
    int64_t ncols;
} Rows;

static Rows row_loop(LowerCtx *c, int id, const IrType *t, bool parallel) {
    Rows rw;
    KsBlock *blk = new_loop_kernel(c, id);
    int v = kprog_new_var(c->p);
    Ks *f = ks_for(c->a, blk, v, dims_product(c->a, t, 0, t->rank - 1), parallel);
    rw.body = &f->body;
    rw.ncols = t->dim[t->rank - 1];
    rw.cols = dim_expr(c->a, rw.ncols);
    rw.row_base = kx_bin(c->a, KX_MUL, kx_var(c->a, v), rw.cols);
    return rw;
}

/* for j < cols: body; returns the index row_base + j of the new loop */
static Kx *col_loop(LowerCtx *c, Rows *rw, KsBlock **body) {
    int v = kprog_new_var(c->p);
    Ks *f = ks_for(c->a, rw->body, v, rw->cols, false);
    *body = &f->body;
    return kx_bin(c->a, KX_ADD, rw->row_base, kx_var(c->a, v));
}

/* Declares locals m = max_j x[j] and s = sum_j exp(x[j] - m) of a row. */
static void row_logsumexp_parts(LowerCtx *c, Rows *rw, int xbuf, int *m, int *s) {
    Arena *a = c->a;
    KsBlock *body;
    *m = kprog_new_local(c->p);
    ks_decl(a, rw->body, *m, kx_real(a, -INFINITY));
    Kx *i = col_loop(c, rw, &body);
    ks_update(a, body, *m, KX_MAX, kx_load(c->p, xbuf, i));
    *s = kprog_new_local(c->p);
    ks_decl(a, rw->body, *s, kx_real(a, 0));
    i = col_loop(c, rw, &body);
    ks_update(a, body, *s, KX_ADD, kx_un(a, KX_EXP, kx_bin(a, KX_SUB, kx_load(c->p, xbuf, i), kx_local(a, *m))));
}

static void lower_softmax_common(LowerCtx *c, int id, bool log) {
    Arena *a = c->a;
    const Node *n = node(c, id);
    int x = c->buf[n->in[0]], y = c->buf[id];
    Rows rw = row_loop(c, id, &n->type, true);
    int m, s;
    row_logsumexp_parts(c, &rw, x, &m, &s);
    KsBlock *body;
    Kx *i = col_loop(c, &rw, &body);
    Kx *shifted = kx_bin(a, KX_SUB, kx_load(c->p, x, i), kx_local(a, m));
    Kx *value = log ? kx_bin(a, KX_SUB, shifted, kx_un(a, KX_LOG, kx_local(a, s)))
                    : kx_bin(a, KX_DIV, kx_un(a, KX_EXP, shifted), kx_local(a, s));
    ks_store(a, body, y, i, value, false);
}

static void lower_softmax(LowerCtx *c, int id) { lower_softmax_common(c, id, false); }
static void lower_log_softmax(LowerCtx *c, int id) { lower_softmax_common(c, id, true); }

/* softmax:     dx = y * (dy - sum(dy * y))
 * log_softmax: dx = dy - exp(y) * sum(dy) */
static void lower_softmax_grad_common(LowerCtx *c, int id, bool log) {
    Arena *a = c->a;
    const Node *n = node(c, id);
    int y = c->buf[n->in[0]], dy = c->buf[n->in[1]], dx = c->buf[id];
    Rows rw = row_loop(c, id, &n->type, true);
    int s = kprog_new_local(c->p);
    ks_decl(a, rw.body, s, kx_real(a, 0));
    KsBlock *body;
    Kx *i = col_loop(c, &rw, &body);
    Kx *term = log ? kx_load(c->p, dy, i) : kx_bin(a, KX_MUL, kx_load(c->p, dy, i), kx_load(c->p, y, i));
    ks_update(a, body, s, KX_ADD, term);
    i = col_loop(c, &rw, &body);
    Kx *yv = kx_load(c->p, y, i), *dyv = kx_load(c->p, dy, i);
    Kx *value = log ? kx_bin(a, KX_SUB, dyv, kx_bin(a, KX_MUL, kx_un(a, KX_EXP, yv), kx_local(a, s)))
                    : kx_bin(a, KX_MUL, yv, kx_bin(a, KX_SUB, dyv, kx_local(a, s)));
    ks_store(a, body, dx, i, value, false);
}

static void lower_softmax_grad(LowerCtx *c, int id) { lower_softmax_grad_common(c, id, false); }
static void lower_log_softmax_grad(LowerCtx *c, int id) { lower_softmax_grad_common(c, id, true); }

/* loss = (1/rows) * sum_r (m_r + log s_r - x[r, label_r]), the log-sum-exp
 * form, stable for any logits. Labels must be in [0, classes): the runtime
 * checks data before it reaches a compiled step. */
static void lower_cross_entropy(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = node(c, id);
    const IrType *tx = &node(c, n->in[0])->type;
    int x = c->buf[n->in[0]], labels = c->buf[n->in[1]];
    KsBlock *blk = new_loop_kernel(c, id);
    int total = kprog_new_local(c->p);
    ks_decl(a, blk, total, kx_real(a, 0));
    int v = kprog_new_var(c->p);
    Ks *f = ks_for(a, blk, v, dim_expr(a, tx->dim[0]), false);
    Rows rw = {.body = &f->body, .cols = dim_expr(a, tx->dim[1]), .ncols = tx->dim[1]};
    rw.row_base = kx_bin(a, KX_MUL, kx_var(a, v), rw.cols);
    int m, s;
    row_logsumexp_parts(c, &rw, x, &m, &s);
    Kx *label = kx_load(c->p, labels, kx_var(a, v));
    Kx *picked = kx_load(c->p, x, kx_bin(a, KX_ADD, rw.row_base, label));
    Kx *nll = kx_bin(a, KX_SUB, kx_bin(a, KX_ADD, kx_local(a, m), kx_un(a, KX_LOG, kx_local(a, s))), picked);
    ks_update(a, rw.body, total, KX_ADD, nll);
    Kx *rows = kx_toreal(a, dim_expr(a, tx->dim[0]));
    ks_store(a, blk, c->buf[id], kx_int(a, 0), kx_bin(a, KX_DIV, kx_local(a, total), rows), false);
}

static void lower_onehot(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = node(c, id);
    Kx *vars[2];
    KsBlock *body = loop_nest(c, new_loop_kernel(c, id), &n->type, 2, vars, true);
    Kx *label = kx_load(c->p, c->buf[n->in[0]], vars[0]);
    Kx *value = kx_select(a, kx_cmp(a, KX_EQ, label, vars[1]), kx_real(a, 1), kx_real(a, 0));
    ks_store(a, body, c->buf[id], linear_index(a, &n->type, vars), value, false);
}

/* Column k of a row is 1 when its label is one of the classes of set k:
 * a chain of selects, one comparison per class of the set. */
static void lower_multi_hot(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = node(c, id);
    KsBlock *blk = new_loop_kernel(c, id);
    int v = kprog_new_var(c->p);
    Ks *f = ks_for(a, blk, v, dim_expr(a, n->type.dim[0]), true);
    Kx *row = kx_var(a, v), *label = kx_load(c->p, c->buf[n->in[0]], row);
    int64_t sets = n->type.dim[1];
    for (int64_t k = 0; k < sets; k++) {
        uint64_t mask = (uint64_t)n->attr[k];
        Kx *value = kx_real(a, 0);
        for (int cls = 63; cls >= 0; cls--)
            if (mask >> cls & 1)
                value = kx_select(a, kx_cmp(a, KX_EQ, label, kx_int(a, cls)), kx_real(a, 1), value);
        Kx *index = kx_bin(a, KX_ADD, kx_bin(a, KX_MUL, row, kx_int(a, sets)), kx_int(a, k));
        ks_store(a, &f->body, c->buf[id], index, value, false);
    }
}

static void lower_assign(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    copy_kernel(c, id, c->buf[n->in[0]], n->in[1]);
}

static const LowerFn lower_rules[OP_COUNT] = {
#define EW(e, name, arity, flags, attrs, grad, scalar) [OP_##e] = lower_ew,
#define OP(e, name, arity, flags, attrs, shape, grad, lower) [OP_##e] = lower,
#include "ir/ops.def"
};

/* ---- buffers ---------------------------------------------------------------------------- */

static int work_buffer(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    KBuf b = {.name = value_name(c, id), .kind = KB_WORK, .dtype = n->type.dtype,
              .size = numel_poly(&n->type), .offset = c->p->workspace, .type = n->type};
    /* 16 elements: each buffer starts on its own cache line for any N. */
    NPoly sz = {(b.size.c0 + 15) & ~(int64_t)15, (b.size.c1 + 15) & ~(int64_t)15};
    c->p->workspace = npoly_add(c->p->workspace, sz);
    return kprog_add_buf(c->p, b);
}

static int arg_buffer(LowerCtx *c, int id, const char *name, ArgRole role) {
    const Node *n = node(c, id);
    int arg = kprog_add_arg(c->p, (KArg){.name = name, .role = role, .type = n->type});
    KBuf b = {.name = name, .kind = KB_ARG, .dtype = n->type.dtype, .size = numel_poly(&n->type),
              .arg = arg, .type = n->type};
    return kprog_add_buf(c->p, b);
}

static int state_buffer(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    const StateSlot *s = module_find_slot(c->m, n->name);
    if (!s) NNC_BUG("param %s has no state slot", n->name);
    KBuf b = {.name = n->name, .kind = KB_STATE, .dtype = n->type.dtype, .size = {s->size, 0},
              .offset = {s->offset, 0}, .type = n->type};
    return kprog_add_buf(c->p, b);
}

static bool computes_into_own_buffer(LowerCtx *c, int id) {
    Op op = node(c, id)->op;
    return !(op_info(op)->flags & OPF_LEAF) && op != OP_RESHAPE && op != OP_ASSIGN && !is_inline(c, id);
}

/* Outputs of the program, in argument order: the NF_OUTPUT values, or for
 * the grad program each trainable param's gradient in state order. */
static int collect_outputs(LowerCtx *c, int *outs) {
    const Graph *g = c->g;
    int n = 0;
    if (c->p->kind == PROG_GRAD) {
        for (int s = 0; s < c->m->nslots; s++)
            for (int i = 0; i < g->n; i++)
                if ((g->nodes[i].flags & NF_GRAD) && strcmp(g->nodes[i].name, c->m->slots[s].name) == 0)
                    outs[n++] = i;
    } else if (c->p->kind == PROG_FORWARD || c->p->kind == PROG_EVAL) {
        for (int i = 0; i < g->n; i++)
            if (g->nodes[i].flags & NF_OUTPUT) outs[n++] = i;
    }
    return n;
}

KProgram *lower_graph(Module *m, const Graph *g, ProgKind kind, bool real_f64) {
    static const char *const names[] = {"forward", "eval", "grad", "train_step", "init"};
    KProgram *p = kprog_new(m->arena, names[kind], kind);
    p->real_f64 = real_f64;
    p->state_size = m->state_size;
    LowerCtx c = {.m = m, .g = g, .p = p, .a = m->arena};
    c.buf = xmalloc(sizeof(int) * (size_t)(g->n + 1));
    for (int i = 0; i < g->n; i++) c.buf[i] = -1;

    /* Arguments: inputs, then targets, then outputs. */
    for (int role = ARG_INPUT; role <= ARG_TARGET; role++)
        for (int i = 0; i < g->n; i++) {
            const Node *n = &g->nodes[i];
            if (n->op == OP_INPUT && ((n->flags & NF_TARGET) != 0) == (role == ARG_TARGET))
                c.buf[i] = arg_buffer(&c, i, n->name, (ArgRole)role);
        }
    int *outs = xmalloc(sizeof(int) * (size_t)(g->n + 1));
    int nouts = collect_outputs(&c, outs);
    int *copy_to = xmalloc(sizeof(int) * (size_t)(nouts + 1));
    for (int k = 0; k < nouts; k++) {
        int id = outs[k];
        const char *name = kind == PROG_GRAD ? arena_printf(m->arena, "grad.%s", g->nodes[id].name)
                                             : g->nodes[id].name;
        int b = arg_buffer(&c, id, name ? name : value_name(&c, id), ARG_OUTPUT);
        /* A computed value is written straight into the caller's array;
         * anything else (a leaf, a view) is copied there at the end. */
        copy_to[k] = -1;
        if (computes_into_own_buffer(&c, id) && c.buf[id] < 0) c.buf[id] = b;
        else copy_to[k] = b;
    }

    /* Storage for everything else, in order. */
    for (int i = 0; i < g->n; i++) {
        const Node *n = &g->nodes[i];
        if (c.buf[i] >= 0 || is_inline(&c, i) || n->op == OP_ASSIGN) continue;
        if (n->op == OP_PARAM) c.buf[i] = state_buffer(&c, i);
        else if (n->op == OP_INPUT) NNC_BUG("input %s without an argument", n->name);
        else if (n->op == OP_RESHAPE) {
            KBuf b = {.name = value_name(&c, i), .kind = KB_VIEW, .dtype = n->type.dtype,
                      .size = numel_poly(&n->type), .view_of = c.buf[n->in[0]], .type = n->type};
            c.buf[i] = kprog_add_buf(p, b);
        } else c.buf[i] = work_buffer(&c, i);
    }

    /* A loss that is a bare constant still needs a place to be returned from. */
    int loss = -1;
    for (int i = 0; i < g->n; i++)
        if (g->nodes[i].flags & NF_LOSS) loss = i;
    if (loss >= 0 && kind != PROG_FORWARD && c.buf[loss] < 0) c.buf[loss] = work_buffer(&c, loss);

    for (int i = 0; i < g->n; i++) {
        if (is_inline(&c, i)) continue;
        lower_rules[g->nodes[i].op](&c, i);
    }
    if (loss >= 0 && kind != PROG_FORWARD) {
        if (is_inline(&c, loss)) copy_kernel(&c, loss, c.buf[loss], loss);
        p->result_buf = c.buf[loss];
    }
    for (int k = 0; k < nouts; k++)
        if (copy_to[k] >= 0) copy_kernel(&c, outs[k], copy_to[k], outs[k]);
    free(copy_to);
    free(outs);
    free(c.buf);
    return p;
}

/* ---- initialisation ---------------------------------------------------------------------- */

/* The value of element i of a slot: uniforms from counters 2(o+i) and
 * 2(o+i)+1 of the seed's stream (o = the slot's offset), so each element
 * of the state has numbers of its own, on any backend. */
static Kx *init_value(Arena *a, const StateSlot *s, Kx *i) {
    Kx *counter = kx_bin(a, KX_MUL, kx_int(a, 2), kx_bin(a, KX_ADD, kx_int(a, s->offset), i));
    Kx *u = kx_rand(a, kx_seed(a), counter);
    Kx *u2 = kx_rand(a, kx_seed(a), kx_bin(a, KX_ADD, counter, kx_int(a, 1)));
    double fi = s->fan_in, fo = s->fan_out, bound = 0, std = 0;
    switch (s->init) {
    case INIT_ZEROS: return kx_real(a, 0);
    case INIT_ONES: return kx_real(a, 1);
    case INIT_CONST: return kx_real(a, s->init_arg);
    case INIT_UNIFORM: bound = s->init_arg; break;
    case INIT_NORMAL: std = s->init_arg; break;
    case INIT_XAVIER_UNIFORM: bound = sqrt(6.0 / (fi + fo)); break;
    case INIT_XAVIER_NORMAL: std = sqrt(2.0 / (fi + fo)); break;
    case INIT_HE_UNIFORM: bound = sqrt(6.0 / fi); break;
    case INIT_HE_NORMAL: std = sqrt(2.0 / fi); break;
    default: NNC_BUG("init kind %d", (int)s->init);
    }
    if (bound > 0) /* bound * (2u - 1) */
        return kx_bin(a, KX_MUL, kx_real(a, bound), kx_bin(a, KX_SUB, kx_bin(a, KX_MUL, kx_real(a, 2), u), kx_real(a, 1)));
    /* Box-Muller: std * sqrt(-2 ln u) * cos(2 pi u2) */
    Kx *radius = kx_un(a, KX_SQRT, kx_bin(a, KX_MUL, kx_real(a, -2), kx_un(a, KX_LOG, u)));
    Kx *angle = kx_un(a, KX_COS, kx_bin(a, KX_MUL, kx_real(a, 2 * M_PI), u2));
    return kx_bin(a, KX_MUL, kx_real(a, std), kx_bin(a, KX_MUL, radius, angle));
}

KProgram *lower_init(Module *m, bool real_f64) {
    KProgram *p = kprog_new(m->arena, "init", PROG_INIT);
    p->real_f64 = real_f64;
    p->state_size = m->state_size;
    Arena *a = m->arena;
    for (int k = 0; k < m->nslots; k++) {
        const StateSlot *s = &m->slots[k];
        KBuf b = {.name = s->name, .kind = KB_STATE, .dtype = s->type.dtype, .size = {s->size, 0},
                  .offset = {s->offset, 0}, .type = s->type};
        int buf = kprog_add_buf(p, b);
        Kernel *kn = kprog_add_kernel(p, KK_LOOP, arena_printf(a, "init.%s", s->name), -1);
        int v = kprog_new_var(p);
        Ks *f = ks_for(a, &kn->body, v, kx_int(a, s->size), true);
        ks_store(a, &f->body, buf, kx_var(a, v), init_value(a, s, kx_var(a, v)), false);
    }
    return p;
}
