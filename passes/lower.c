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

/* ---- workspace regions -------------------------------------------------------------------- */

/* A region of the workspace arena holding a tensor of type t. */
static int workspace_buffer(LowerCtx *c, const char *name, IrType t) {
    KBuf b = {.name = name, .kind = KB_WORK, .dtype = t.dtype, .size = numel_poly(&t),
              .offset = c->p->workspace, .type = t};
    /* 16 elements: each buffer starts on its own cache line for any N. */
    NPoly sz = {(b.size.c0 + 15) & ~(int64_t)15, (b.size.c1 + 15) & ~(int64_t)15};
    c->p->workspace = npoly_add(c->p->workspace, sz);
    return kprog_add_buf(c->p, b);
}

/* Scratch space for the kernels of node id (the im2col matrix of a
 * convolution...), named after the node and `what`. */
static int scratch_buffer(LowerCtx *c, int id, const char *what, IrType t) {
    return workspace_buffer(c, arena_printf(c->a, "%s.%s", value_name(c, id), what), t);
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

/* Per row: m = the largest value, first = the smallest column holding it;
 * the row counts when first is the label. NaN rows never count. */
static void lower_accuracy(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = node(c, id);
    const IrType *tp = &node(c, n->in[0])->type;
    int p = c->buf[n->in[0]], labels = c->buf[n->in[1]];
    KsBlock *blk = new_loop_kernel(c, id);
    int total = kprog_new_local(c->p);
    ks_decl(a, blk, total, kx_real(a, 0));
    int v = kprog_new_var(c->p);
    Ks *f = ks_for(a, blk, v, dim_expr(a, tp->dim[0]), false);
    Rows rw = {.body = &f->body, .cols = dim_expr(a, tp->dim[1]), .ncols = tp->dim[1]};
    rw.row_base = kx_bin(a, KX_MUL, kx_var(a, v), rw.cols);
    KsBlock *body;
    int m = kprog_new_local(c->p), first = kprog_new_local(c->p);
    ks_decl(a, rw.body, m, kx_real(a, -INFINITY));
    Kx *i = col_loop(c, &rw, &body);
    ks_update(a, body, m, KX_MAX, kx_load(c->p, p, i));
    Kx *none = kx_toreal(a, rw.cols);
    ks_decl(a, rw.body, first, none);
    int jv = kprog_new_var(c->p);
    Ks *g = ks_for(a, rw.body, jv, rw.cols, false);
    Kx *j = kx_var(a, jv);
    Kx *at_max = kx_cmp(a, KX_EQ, kx_load(c->p, p, kx_bin(a, KX_ADD, rw.row_base, j)), kx_local(a, m));
    ks_update(a, &g->body, first, KX_MIN, kx_select(a, at_max, kx_toreal(a, j), none));
    Kx *label = kx_toreal(a, kx_load(c->p, labels, kx_var(a, v)));
    ks_update(a, rw.body, total, KX_ADD,
              kx_select(a, kx_cmp(a, KX_EQ, kx_local(a, first), label), kx_real(a, 1), kx_real(a, 0)));
    Kx *rows = kx_toreal(a, dim_expr(a, tp->dim[0]));
    ks_store(a, blk, c->buf[id], kx_int(a, 0), kx_bin(a, KX_DIV, kx_local(a, total), rows), false);
}

static void lower_binary_accuracy(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = node(c, id);
    const IrType *t = &node(c, n->in[0])->type;
    KsBlock *blk = new_loop_kernel(c, id);
    int total = kprog_new_local(c->p);
    ks_decl(a, blk, total, kx_real(a, 0));
    int v = kprog_new_var(c->p);
    Ks *f = ks_for(a, blk, v, numel_expr(a, t), false);
    Kx *i = kx_var(a, v);
    Kx *said = kx_cmp(a, KX_GE, load_flat(c, n->in[0], i), kx_real(a, n->attr[0]));
    Kx *truth = kx_cmp(a, KX_GE, load_flat(c, n->in[1], i), kx_real(a, 0.5));
    ks_update(a, &f->body, total, KX_ADD, kx_select(a, kx_cmp(a, KX_EQ, said, truth), kx_real(a, 1), kx_real(a, 0)));
    Kx *count = kx_toreal(a, numel_expr(a, t));
    ks_store(a, blk, c->buf[id], kx_int(a, 0), kx_bin(a, KX_DIV, kx_local(a, total), count), false);
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

/* ---- convolution --------------------------------------------------------------------------
 * im2col and matrix products. The windows of image n are the columns of a
 * [C*kh*kw, Ho*Wo] matrix col[n] (a scratch buffer holds the batch's), and
 * each of these is a batched gemm over the images:
 *   y[n]    [F, Ho*Wo]       = w [F, C*kh*kw] @ col[n]
 *   dw      [F, C*kh*kw]     = sum_n dy[n] @ col[n]^T
 *   dcol[n] [C*kh*kw, Ho*Wo] = w^T @ dy[n]
 * after which each element of dx gathers the entries of dcol of the windows
 * that cover it (col2im). */

#define I(v) kx_int(a, v)

typedef struct ConvGeom {
    Kx *batch;              /* N, the number of images */
    int64_t c, h, w;        /* input channels and size */
    int64_t f, kh, kw;      /* filters and kernel size */
    int64_t sh, sw, ph, pw; /* strides and zero padding (attrs 0..3) */
    int64_t ho, wo;         /* output size */
} ConvGeom;

/* x: the input's type, y: the output's, attrs from n. */
static ConvGeom conv_geom(LowerCtx *c, const Node *n, const IrType *x, const IrType *y, int64_t kh, int64_t kw) {
    return (ConvGeom){.batch = dim_expr(c->a, x->dim[0]), .c = x->dim[1], .h = x->dim[2], .w = x->dim[3],
                      .f = y->dim[1], .kh = kh, .kw = kw, .sh = (int64_t)n->attr[0], .sw = (int64_t)n->attr[1],
                      .ph = (int64_t)n->attr[2], .pw = (int64_t)n->attr[3], .ho = y->dim[2], .wo = y->dim[3]};
}

/* A 1x1 kernel without stride or padding: the columns are x itself. */
static bool conv_is_pointwise(const ConvGeom *g) {
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* The type of the columns of the batch: [N, C*kh*kw, Ho*Wo]. */
static IrType columns_type(const Node *x, const ConvGeom *g) {
    return type_tensor(DT_F32, 3, (int64_t[]){x->type.dim[0], g->c * g->kh * g->kw, g->ho * g->wo});
}

/* Opens one loop per extent inside `blk` (the outermost one parallel if
 * asked); fills vars; returns the body. */
static KsBlock *loops(LowerCtx *c, KsBlock *blk, Kx *const *extents, int n, Kx **vars, bool parallel) {
    for (int i = 0; i < n; i++) {
        int v = kprog_new_var(c->p);
        blk = &ks_for(c->a, blk, v, extents[i], parallel && i == 0)->body;
        vars[i] = kx_var(c->a, v);
    }
    return blk;
}

/* buf[index] where every condition holds, else 0. Outside, the index is 0
 * as well: a backend may evaluate both sides of a select, and must not read
 * out of bounds. */
static Kx *guarded_load(LowerCtx *c, int buf, Kx *index, Kx *const *conds, int n) {
    Arena *a = c->a;
    for (int k = n - 1; k >= 0; k--) index = kx_select(a, conds[k], index, I(0));
    Kx *v = kx_load(c->p, buf, index);
    for (int k = n - 1; k >= 0; k--) v = kx_select(a, conds[k], v, kx_real(a, 0));
    return v;
}

/* Conditions for the padded coordinate `pos` (window start o*s - p plus an
 * offset) to lie inside [0, size): only those the geometry can violate. */
static int inside_conds(Arena *a, Kx *pos, int64_t p, int64_t k, int64_t s, int64_t out, int64_t size,
                        Kx **conds) {
    int n = 0;
    if (p > 0) conds[n++] = kx_cmp(a, KX_GE, pos, I(0));
    if ((out - 1) * s - p + k - 1 >= size) conds[n++] = kx_cmp(a, KX_LT, pos, I(size));
    return n;
}

/* col[n, (c*kh + i)*kw + j, oh*Wo + ow] = x[n, c, oh*sh - ph + i, ow*sw - pw + j], 0 in the padding. */
static void im2col_kernel(LowerCtx *c, int id, const ConvGeom *g, int x, int col) {
    Arena *a = c->a;
    const IrType *tx = &node(c, x)->type;
    Kx *v[6]; /* n, c, i, j, oh, ow */
    Kx *ext[6] = {g->batch, I(g->c), I(g->kh), I(g->kw), I(g->ho), I(g->wo)};
    KsBlock *body = loops(c, new_loop_kernel(c, id), ext, 6, v, true);
    Kx *hh = BIN(ADD, BIN(SUB, BIN(MUL, v[4], I(g->sh)), I(g->ph)), v[2]);
    Kx *ww = BIN(ADD, BIN(SUB, BIN(MUL, v[5], I(g->sw)), I(g->pw)), v[3]);
    Kx *conds[4];
    int nc = inside_conds(a, hh, g->ph, g->kh, g->sh, g->ho, g->h, conds);
    nc += inside_conds(a, ww, g->pw, g->kw, g->sw, g->wo, g->w, conds + nc);
    Kx *value = guarded_load(c, c->buf[x], linear_index(a, tx, (Kx *[]){v[0], v[1], hh, ww}), conds, nc);
    IrType tc = columns_type(node(c, x), g);
    Kx *row = BIN(ADD, BIN(MUL, BIN(ADD, BIN(MUL, v[1], I(g->kh)), v[2]), I(g->kw)), v[3]);
    Kx *pixel = BIN(ADD, BIN(MUL, v[4], I(g->wo)), v[5]);
    ks_store(a, body, col, linear_index(a, &tc, (Kx *[]){v[0], row, pixel}), value, false);
}

/* The columns of input x for node id: im2col into a scratch buffer, or x
 * itself for a pointwise kernel. */
static int conv_columns(LowerCtx *c, int id, const ConvGeom *g, int x) {
    if (conv_is_pointwise(g)) return c->buf[x];
    int col = scratch_buffer(c, id, "col", columns_type(node(c, x), g));
    im2col_kernel(c, id, g, x, col);
    return col;
}

/* One operand of a batched product: its buffer, leading dimension, and the
 * distance between the matrices of consecutive samples (0: shared). */
typedef struct Operand {
    int buf;
    int64_t ld, stride;
} Operand;

/* C_n = op(A_n) op(B_n) for each sample n (or, with C's stride 0, their sum). */
static void gemm_batch(LowerCtx *c, int id, Kx *count, bool ta, bool tb, const int64_t mnk[3], Operand A,
                       Operand B, Operand C) {
    Arena *a = c->a;
    KGemm *g = &kprog_add_kernel(c->p, KK_GEMM, value_name(c, id), id)->gemm;
    *g = (KGemm){.ta = ta, .tb = tb, .m = I(mnk[0]), .n = I(mnk[1]), .k = I(mnk[2]), .alpha = 1, .beta = 0,
                 .a = A.buf, .b = B.buf, .c = C.buf, .lda = I(A.ld), .ldb = I(B.ld), .ldc = I(C.ld),
                 .count = count, .stride_a = I(A.stride), .stride_b = I(B.stride), .stride_c = I(C.stride)};
}

/* y[n] [F, Ho*Wo] = w [F, C*kh*kw] @ col[n] */
static void lower_conv2d(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    const IrType *tw = &node(c, n->in[1])->type;
    ConvGeom g = conv_geom(c, n, &node(c, n->in[0])->type, &n->type, tw->dim[2], tw->dim[3]);
    int64_t ckk = g.c * g.kh * g.kw, hw = g.ho * g.wo;
    int col = conv_columns(c, id, &g, n->in[0]);
    gemm_batch(c, id, g.batch, false, false, (int64_t[]){g.f, hw, ckk}, (Operand){c->buf[n->in[1]], ckk, 0},
               (Operand){col, hw, ckk * hw}, (Operand){c->buf[id], hw, g.f * hw});
}

/* dw [F, C*kh*kw] = sum_n dy[n] [F, Ho*Wo] @ col[n]^T */
static void lower_conv2d_grad_weight(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    ConvGeom g = conv_geom(c, n, &node(c, n->in[0])->type, &node(c, n->in[1])->type, (int64_t)n->attr[4],
                           (int64_t)n->attr[5]);
    int64_t ckk = g.c * g.kh * g.kw, hw = g.ho * g.wo;
    int col = conv_columns(c, id, &g, n->in[0]);
    gemm_batch(c, id, g.batch, false, true, (int64_t[]){g.f, ckk, hw}, (Operand){c->buf[n->in[1]], hw, g.f * hw},
               (Operand){col, hw, ckk * hw}, (Operand){c->buf[id], ckk, 0});
}

/* The windows (of size k, stride s, over padding p, `out` of them) that
 * cover position `pos`: o in [lo, lo + count) where o*s - p <= pos <
 * o*s - p + k. lo = ceil((pos + p - k + 1) / s) with a truncating division,
 * which errs only where the result is clamped to 0 anyway. */
static void covering_windows(Arena *a, Kx *pos, int64_t p, int64_t k, int64_t s, int64_t out, Kx **lo,
                             Kx **count) {
    *lo = BIN(MAX, I(0), BIN(DIV, BIN(ADD, pos, I(p - k + s)), I(s)));
    Kx *hi = BIN(MIN, I(out - 1), BIN(DIV, BIN(ADD, pos, I(p)), I(s)));
    *count = BIN(MAX, I(0), BIN(ADD, BIN(SUB, hi, *lo), I(1)));
}

/* dx[n, c, h, w] = sum of dcol[n, (c*kh + i)*kw + j, oh*Wo + ow] over the
 * windows (oh, ow) that cover (h, w), i = h + ph - oh*sh, j = w + pw - ow*sw:
 * a gather, each element of dx written by its own iteration. */
static void col2im_kernel(LowerCtx *c, int id, const ConvGeom *g, int dcol, const IrType *tcol) {
    Arena *a = c->a;
    const IrType *tx = &node(c, id)->type;
    Kx *v[4], *o[2]; /* n, c, h, w; oh, ow */
    Kx *ext[4] = {g->batch, I(g->c), I(g->h), I(g->w)};
    KsBlock *body = loops(c, new_loop_kernel(c, id), ext, 4, v, true);
    int s = kprog_new_local(c->p);
    ks_decl(a, body, s, kx_real(a, 0));
    Kx *lo[2], *count[2];
    covering_windows(a, v[2], g->ph, g->kh, g->sh, g->ho, &lo[0], &count[0]);
    covering_windows(a, v[3], g->pw, g->kw, g->sw, g->wo, &lo[1], &count[1]);
    KsBlock *inner = loops(c, body, count, 2, o, false);
    Kx *oh = BIN(ADD, lo[0], o[0]), *ow = BIN(ADD, lo[1], o[1]);
    Kx *i = BIN(SUB, BIN(ADD, v[2], I(g->ph)), BIN(MUL, oh, I(g->sh)));
    Kx *j = BIN(SUB, BIN(ADD, v[3], I(g->pw)), BIN(MUL, ow, I(g->sw)));
    Kx *row = BIN(ADD, BIN(MUL, BIN(ADD, BIN(MUL, v[1], I(g->kh)), i), I(g->kw)), j);
    Kx *pixel = BIN(ADD, BIN(MUL, oh, I(g->wo)), ow);
    ks_update(a, inner, s, KX_ADD, kx_load(c->p, dcol, linear_index(a, tcol, (Kx *[]){v[0], row, pixel})));
    ks_store(a, body, c->buf[id], linear_index(a, tx, v), kx_local(a, s), false);
}

/* dcol[n] [C*kh*kw, Ho*Wo] = w^T @ dy[n], then col2im into dx (for a
 * pointwise kernel, dx[n] = w^T @ dy[n] directly). */
static void lower_conv2d_grad_input(LowerCtx *c, int id) {
    const Node *n = node(c, id);
    const Node *dy = node(c, n->in[0]);
    const IrType *tw = &node(c, n->in[1])->type;
    ConvGeom g = conv_geom(c, n, &n->type, &dy->type, tw->dim[2], tw->dim[3]);
    int64_t ckk = g.c * g.kh * g.kw, hw = g.ho * g.wo;
    IrType tcol = columns_type(n, &g);
    int dcol = conv_is_pointwise(&g) ? c->buf[id] : scratch_buffer(c, id, "dcol", tcol);
    gemm_batch(c, id, g.batch, true, false, (int64_t[]){ckk, hw, g.f}, (Operand){c->buf[n->in[1]], ckk, 0},
               (Operand){c->buf[n->in[0]], hw, g.f * hw}, (Operand){dcol, hw, ckk * hw});
    if (!conv_is_pointwise(&g)) col2im_kernel(c, id, &g, dcol, &tcol);
}

/* ---- pooling ------------------------------------------------------------------------------
 * Windows of (kh, kw) moving by (sh, sw), without padding, on each channel:
 * the geometry of a convolution with as many filters as channels. */

/* x: the input's type, y: the output's; attrs kh kw sh sw from n. */
static ConvGeom pool_geom(LowerCtx *c, const Node *n, const IrType *x, const IrType *y) {
    return (ConvGeom){.batch = dim_expr(c->a, x->dim[0]), .c = x->dim[1], .h = x->dim[2], .w = x->dim[3],
                      .f = x->dim[1], .kh = (int64_t)n->attr[0], .kw = (int64_t)n->attr[1],
                      .sh = (int64_t)n->attr[2], .sw = (int64_t)n->attr[3], .ho = y->dim[2], .wo = y->dim[3]};
}

/* x[n, c, oh*sh + i, ow*sw + j]: element (i, j) of window (oh, ow). */
static Kx *window_load(LowerCtx *c, int x, const ConvGeom *g, Kx *n, Kx *ch, Kx *oh, Kx *ow, Kx *i, Kx *j) {
    Arena *a = c->a;
    Kx *h = BIN(ADD, BIN(MUL, oh, I(g->sh)), i), *w = BIN(ADD, BIN(MUL, ow, I(g->sw)), j);
    return kx_load(c->p, c->buf[x], linear_index(a, &node(c, x)->type, (Kx *[]){n, ch, h, w}));
}

/* y[n, c, oh, ow] = the max / the mean of window (oh, ow) of channel c */
static void lower_pool(LowerCtx *c, int id, bool max) {
    Arena *a = c->a;
    const Node *n = node(c, id);
    ConvGeom g = pool_geom(c, n, &node(c, n->in[0])->type, &n->type);
    Kx *v[4], *k[2]; /* n, c, oh, ow; i, j */
    Kx *ext[4] = {g.batch, I(g.c), I(g.ho), I(g.wo)}, *kext[2] = {I(g.kh), I(g.kw)};
    KsBlock *body = loops(c, new_loop_kernel(c, id), ext, 4, v, true);
    int s = kprog_new_local(c->p);
    ks_decl(a, body, s, kx_real(a, max ? -INFINITY : 0));
    KsBlock *inner = loops(c, body, kext, 2, k, false);
    Kx *x = window_load(c, n->in[0], &g, v[0], v[1], v[2], v[3], k[0], k[1]);
    ks_update(a, inner, s, max ? KX_MAX : KX_ADD, x);
    Kx *value = max ? kx_local(a, s) : BIN(MUL, kx_local(a, s), kx_real(a, 1.0 / (double)(g.kh * g.kw)));
    ks_store(a, body, c->buf[id], linear_index(a, &n->type, v), value, false);
}

static void lower_maxpool2d(LowerCtx *c, int id) { lower_pool(c, id, true); }
static void lower_avgpool2d(LowerCtx *c, int id) { lower_pool(c, id, false); }

/* Opens, inside the loops over dx's elements v (n, c, h, w), the loops over
 * the windows that cover (h, w); sets oh, ow; returns their body. */
static KsBlock *covering_loops(LowerCtx *c, KsBlock *body, const ConvGeom *g, Kx *const *v, Kx **oh, Kx **ow) {
    Arena *a = c->a;
    Kx *lo[2], *count[2], *o[2];
    covering_windows(a, v[2], 0, g->kh, g->sh, g->ho, &lo[0], &count[0]);
    covering_windows(a, v[3], 0, g->kw, g->sw, g->wo, &lo[1], &count[1]);
    KsBlock *inner = loops(c, body, count, 2, o, false);
    *oh = BIN(ADD, lo[0], o[0]);
    *ow = BIN(ADD, lo[1], o[1]);
    return inner;
}

/* dx[n, c, h, w] = sum of dy[n, c, oh, ow] / (kh kw) over the windows that cover (h, w) */
static void lower_avgpool2d_grad(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = node(c, id), *dy = node(c, n->in[0]);
    ConvGeom g = pool_geom(c, n, &n->type, &dy->type);
    Kx *v[4], *oh, *ow;
    Kx *ext[4] = {g.batch, I(g.c), I(g.h), I(g.w)};
    KsBlock *body = loops(c, new_loop_kernel(c, id), ext, 4, v, true);
    int s = kprog_new_local(c->p);
    ks_decl(a, body, s, kx_real(a, 0));
    KsBlock *inner = covering_loops(c, body, &g, v, &oh, &ow);
    Kx *grad = kx_load(c->p, c->buf[n->in[0]], linear_index(a, &dy->type, (Kx *[]){v[0], v[1], oh, ow}));
    ks_update(a, inner, s, KX_ADD, grad);
    Kx *value = BIN(MUL, kx_local(a, s), kx_real(a, 1.0 / (double)(g.kh * g.kw)));
    ks_store(a, body, c->buf[id], linear_index(a, &n->type, v), value, false);
}

/* dx[n, c, h, w] = sum of dy[n, c, oh, ow] over the windows (oh, ow) whose
 * first maximum (row by row) is at (h, w). That is the case when every
 * element of the window is <= x[n, c, h, w], and those before it are <.
 * A gather: each element of dx is written by its own iteration. */
static void lower_maxpool2d_grad(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = node(c, id), *dy = node(c, n->in[1]);
    ConvGeom g = pool_geom(c, n, &n->type, &dy->type);
    Kx *v[4], *k[2], *oh, *ow; /* n, c, h, w; i, j */
    Kx *ext[4] = {g.batch, I(g.c), I(g.h), I(g.w)}, *kext[2] = {I(g.kh), I(g.kw)};
    KsBlock *body = loops(c, new_loop_kernel(c, id), ext, 4, v, true);
    int xv = kprog_new_local(c->p), s = kprog_new_local(c->p), beaten = kprog_new_local(c->p);
    ks_decl(a, body, xv, kx_load(c->p, c->buf[n->in[0]], linear_index(a, &n->type, v)));
    ks_decl(a, body, s, kx_real(a, 0));
    KsBlock *win = covering_loops(c, body, &g, v, &oh, &ow);
    /* (h, w) is element q of the window; `beaten` becomes 1 if another one wins */
    Kx *qi = BIN(SUB, v[2], BIN(MUL, oh, I(g.sh))), *qj = BIN(SUB, v[3], BIN(MUL, ow, I(g.sw)));
    Kx *q = BIN(ADD, BIN(MUL, qi, I(g.kw)), qj);
    ks_decl(a, win, beaten, kx_real(a, 0));
    KsBlock *inner = loops(c, win, kext, 2, k, false);
    Kx *other = window_load(c, n->in[0], &g, v[0], v[1], oh, ow, k[0], k[1]), *mine = kx_local(a, xv);
    Kx *before = kx_cmp(a, KX_LT, BIN(ADD, BIN(MUL, k[0], I(g.kw)), k[1]), q);
    Kx *wins = kx_select(a, before, kx_cmp(a, KX_GE, other, mine), kx_cmp(a, KX_GT, other, mine));
    ks_update(a, inner, beaten, KX_MAX, kx_select(a, wins, kx_real(a, 1), kx_real(a, 0)));
    Kx *grad = kx_load(c->p, c->buf[n->in[1]], linear_index(a, &dy->type, (Kx *[]){v[0], v[1], oh, ow}));
    Kx *first = kx_cmp(a, KX_EQ, kx_local(a, beaten), kx_real(a, 0));
    ks_update(a, win, s, KX_ADD, kx_select(a, first, grad, kx_real(a, 0)));
    ks_store(a, body, c->buf[id], linear_index(a, &n->type, v), kx_local(a, s), false);
}

/* ---- dropout --------------------------------------------------------------------------------- */

/* The key of a dropout mask: rng.seed (24 bits), opt.step mod 2^24 and the
 * node's stream number (12 bits) packed into 60 bits, so that every (seed,
 * step, stream) has masks of its own and the key stays inside int64. */
static Kx *dropout_key(LowerCtx *c, const Node *n) {
    Arena *a = c->a;
    Kx *seed = kx_toint(a, BIN(MOD, load_flat(c, n->in[1], I(0)), R(1 << 24)));
    Kx *step = kx_toint(a, BIN(MOD, load_flat(c, n->in[2], I(0)), R(1 << 24)));
    Kx *key = BIN(ADD, BIN(MUL, seed, I((int64_t)1 << 24)), step);
    NNC_ASSERT(n->attr[1] >= 0 && n->attr[1] < IR_DROPOUT_STREAMS);
    return BIN(ADD, BIN(MUL, key, I(IR_DROPOUT_STREAMS)), I((int64_t)n->attr[1]));
}

/* y[i] = x[i] / (1 - rate) where rand(key, i) >= rate, else 0 (dropout, and
 * its gradient with dy for x). A uniform number and the rate compare alike
 * in f32 and f64: the numbers have 24 bits, and rounding the rate to f32
 * never moves it past one of them. */
static void lower_dropout(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = node(c, id);
    double rate = n->attr[0];
    KsBlock *blk = new_loop_kernel(c, id);
    int v = kprog_new_var(c->p);
    Ks *f = ks_for(a, blk, v, numel_expr(a, &n->type), true);
    Kx *i = kx_var(a, v);
    Kx *keep = kx_cmp(a, KX_GE, kx_rand(a, dropout_key(c, n), i), R(rate));
    Kx *scaled = BIN(MUL, load_flat(c, n->in[0], i), R(1 / (1 - rate)));
    ks_store(a, &f->body, c->buf[id], i, kx_select(a, keep, scaled, R(0)), false);
}

#undef I

static const LowerFn lower_rules[OP_COUNT] = {
#define EW(e, name, arity, flags, attrs, grad, scalar) [OP_##e] = lower_ew,
#define OP(e, name, arity, flags, attrs, shape, grad, lower) [OP_##e] = lower,
#include "ir/ops.def"
};

/* ---- buffers ---------------------------------------------------------------------------- */

static int work_buffer(LowerCtx *c, int id) {
    return workspace_buffer(c, value_name(c, id), node(c, id)->type);
}

static int arg_buffer(LowerCtx *c, int id, const char *name, ArgRole role) {
    const Node *n = node(c, id);
    int arg = kprog_add_arg(c->p, (KArg){.name = name, .role = role, .type = n->type,
                                         .metric = role == ARG_OUTPUT && (n->flags & NF_METRIC)});
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
        /* eval reports the metrics too, after the outputs */
        for (int i = 0; i < g->n && c->p->kind == PROG_EVAL; i++)
            if ((g->nodes[i].flags & NF_METRIC) && !(g->nodes[i].flags & NF_OUTPUT)) outs[n++] = i;
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
    case INIT_SEED: { /* seed mod 2^24, in [0, 2^24) also for seeds past INT64_MAX (negative as int) */
        Kx *m = kx_int(a, 1 << 24);
        return kx_toreal(a, kx_bin(a, KX_MOD, kx_bin(a, KX_ADD, kx_bin(a, KX_MOD, kx_seed(a), m), m), m));
    }
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
