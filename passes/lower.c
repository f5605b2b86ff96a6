/* lower.c - Graph IR -> Kernel IR.
 *
 * This is where the meaning of every op is written, once, as loops and
 * scalar expressions (see ir/kir.h); backends only translate them.
 * Convolution, pooling and dropout are in lower_nn.c.
 *
 * Buffers: inputs, targets and outputs are arguments; params live in the
 * model state at their slot's offset; reshapes are views of their input;
 * constants and sizes are folded into the expressions that read them, and
 * so are the values fuse.c inlines; every other value gets a region of the
 * workspace (memplan.c decides where). */
#include "passes/lower_internal.h"
#include "support/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef void (*LowerFn)(LowerCtx *c, int id);
typedef Kx *(*ScalarFn)(Arena *a, const Node *n, Kx **x);

Kx *lw_dims_product(Arena *a, const IrType *t, int from, int to) {
    Kx *e = kx_int(a, 1);
    for (int i = from; i < to; i++) e = kx_bin(a, KX_MUL, e, lw_dim(a, t->dim[i]));
    return e;
}

Kx *lw_numel(Arena *a, const IrType *t) { return lw_dims_product(a, t, 0, t->rank); }

static NPoly numel_poly(const IrType *t) {
    NPoly p;
    type_numel(t, &p.c0, &p.c1);
    return p;
}

const char *lw_name(LowerCtx *c, int id) {
    const Node *n = lw_node(c, id);
    if (n->name) return arena_printf(c->a, "%s.%s", n->name, op_info(n->op)->name);
    return arena_printf(c->a, "%s%d", op_info(n->op)->name, id);
}

Kx *lw_index(Arena *a, const IrType *t, Kx **vars) {
    Kx *index = kx_int(a, 0), *stride = kx_int(a, 1);
    for (int i = t->rank - 1; i >= 0; i--) {
        if (t->dim[i] != 1) index = kx_bin(a, KX_ADD, index, kx_bin(a, KX_MUL, vars[i], stride));
        stride = kx_bin(a, KX_MUL, stride, lw_dim(a, t->dim[i]));
    }
    return index;
}

KsBlock *lw_loops(LowerCtx *c, KsBlock *blk, Kx *const *extents, int n, Kx **vars, bool parallel) {
    for (int i = 0; i < n; i++) {
        int v = kprog_new_var(c->p);
        blk = &ks_for(c->a, blk, v, extents[i], parallel)->body;
        vars[i] = kx_var(c->a, v);
    }
    return blk;
}

KsBlock *lw_loop_nest(LowerCtx *c, KsBlock *blk, const IrType *t, int naxes, Kx **vars, bool parallel) {
    Kx *ext[IR_MAX_RANK];
    for (int i = 0; i < naxes; i++) ext[i] = lw_dim(c->a, t->dim[i]);
    return lw_loops(c, blk, ext, naxes, vars, parallel);
}

KsBlock *lw_kernel(LowerCtx *c, int id) {
    c->top = &kprog_add_kernel(c->p, KK_LOOP, lw_name(c, id), id)->body;
    c->prologue = 0;
    c->kernels++;
    c->flat = false;
    return c->top;
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

/* ---- reading values ---------------------------------------------------------------- */

static bool is_inline(LowerCtx *c, int id) {
    Op op = lw_node(c, id)->op;
    if (op == OP_CONST || op == OP_SIZE) return true;
    return op == OP_RESHAPE && is_inline(c, lw_node(c, id)->in[0]);
}

/* The value of a constant or size node (scalars, never stored). */
static Kx *inline_value(LowerCtx *c, int id) {
    const Node *n = lw_node(c, id);
    switch (n->op) {
    case OP_CONST: return kx_real(c->a, n->attr[0]);
    case OP_RESHAPE: return inline_value(c, n->in[0]);
    case OP_SIZE: {
        const IrType *t = &lw_node(c, n->in[0])->type;
        unsigned axes = (unsigned)n->attr[0];
        Kx *e = kx_int(c->a, 1);
        for (int i = 0; i < t->rank; i++)
            if (axes & (1u << i)) e = kx_bin(c->a, KX_MUL, e, lw_dim(c->a, t->dim[i]));
        return kx_toreal(c->a, e);
    }
    default: NNC_BUG("%s is not an inline value", op_info(n->op)->name);
    }
}

/* An inlined value at coordinates idx. */
static Kx *inlined_value(LowerCtx *c, int id, Kx **idx) {
    const Node *n = lw_node(c, id);
    if (n->op == OP_ONEHOT) {
        Kx *label = lw_load_at(c, n->in[0], idx);
        return kx_select(c->a, kx_cmp(c->a, KX_EQ, label, idx[1]), kx_real(c->a, 1), kx_real(c->a, 0));
    }
    Kx *args[IR_MAX_INPUTS];
    for (int k = 0; k < n->nin; k++) args[k] = lw_load_broadcast(c, n->in[k], idx, n->type.rank);
    return scalar_rules[n->op](c->a, n, args);
}

Kx *lw_load_at(LowerCtx *c, int id, Kx **idx) {
    const Node *n = lw_node(c, id);
    if (is_inline(c, id)) return inline_value(c, id);
    int64_t c0, c1;
    type_numel(&n->type, &c0, &c1);
    bool scalar = c0 == 1 && c1 == 0;
    if (c->flat && !scalar) { /* idx[0] is the element index of every value read */
        if (!c->fp.virt[id]) return kx_load(c->p, c->buf[id], idx[0]);
        Kx *args[IR_MAX_INPUTS];
        for (int k = 0; k < n->nin; k++) args[k] = lw_load_at(c, n->in[k], idx);
        return scalar_rules[n->op](c->a, n, args);
    }
    if (!c->fp.virt[id]) return kx_load(c->p, c->buf[id], lw_index(c->a, &n->type, idx));
    if (!scalar) return inlined_value(c, id, idx);
    /* A scalar: computed once, before the kernel's loops (fuse.c counts it
     * as read once per kernel). */
    if (c->scalar_kernel[id] != c->kernels) {
        Kx *zeros[IR_MAX_RANK];
        for (int i = 0; i < n->type.rank; i++) zeros[i] = kx_int(c->a, 0);
        Kx *value = inlined_value(c, id, zeros);
        c->scalar_local[id] = kprog_new_local(c->p);
        c->scalar_kernel[id] = c->kernels;
        ks_decl_at(c->a, c->top, c->prologue++, c->scalar_local[id], value);
    }
    return kx_local(c->a, c->scalar_local[id]);
}

Kx *lw_load_broadcast(LowerCtx *c, int id, Kx **vars, int rank) {
    if (c->flat) return lw_load_at(c, id, vars);
    const IrType *t = &lw_node(c, id)->type;
    Kx *aligned[IR_MAX_RANK];
    for (int i = 0; i < t->rank; i++) aligned[i] = t->dim[i] == 1 ? kx_int(c->a, 0) : vars[i + rank - t->rank];
    return lw_load_at(c, id, aligned);
}

Kx *lw_load_scalar(LowerCtx *c, int id) { return lw_load_at(c, id, NULL); }

/* Whether value id, and every value it inlines, can be read at the element
 * index of a result with `numel` elements: it has as many (so it does not
 * broadcast), or is one scalar. */
static bool reads_flat(LowerCtx *c, int id, NPoly numel) {
    const Node *n = lw_node(c, id);
    if (is_inline(c, id)) return true;
    NPoly own = numel_poly(&n->type);
    if (own.c0 == 1 && own.c1 == 0) return true;
    if (own.c0 != numel.c0 || own.c1 != numel.c1) return false;
    if (!c->fp.virt[id]) return true;
    if (n->op == OP_ONEHOT) return false; /* reads its labels by row */
    for (int k = 0; k < n->nin; k++)
        if (!reads_flat(c, n->in[k], numel)) return false;
    return true;
}

KsBlock *lw_elementwise_loops(LowerCtx *c, KsBlock *blk, const IrType *t, const int *reads, int nreads, Kx **vars,
                              Kx **index) {
    bool flat = true;
    for (int k = 0; k < nreads && flat; k++) flat = reads_flat(c, reads[k], numel_poly(t));
    if (!flat || t->rank <= 1) {
        KsBlock *body = lw_loop_nest(c, blk, t, t->rank, vars, true);
        *index = lw_index(c->a, t, vars);
        return body;
    }
    c->flat = true;
    KsBlock *body = lw_loops(c, blk, (Kx *[]){lw_numel(c->a, t)}, 1, vars, true);
    *index = vars[0];
    return body;
}

/* dst[...] = src, element by element, for a value of src's shape. */
static void copy_kernel(LowerCtx *c, int id, int dst_buf, int src) {
    const IrType *t = &lw_node(c, src)->type;
    Kx *vars[IR_MAX_RANK], *index;
    KsBlock *body = lw_elementwise_loops(c, lw_kernel(c, id), t, &src, 1, vars, &index);
    ks_store(c->a, body, dst_buf, index, lw_load_at(c, src, vars), false);
}

/* An elementwise op: one loop (nest) over the result, the scalar rule inside. */
static void lower_ew(LowerCtx *c, int id) {
    const Node *n = lw_node(c, id);
    Kx *vars[IR_MAX_RANK], *index;
    KsBlock *body = lw_elementwise_loops(c, lw_kernel(c, id), &n->type, n->in, n->nin, vars, &index);
    Kx *args[IR_MAX_INPUTS];
    for (int k = 0; k < n->nin; k++) args[k] = lw_load_broadcast(c, n->in[k], vars, n->type.rank);
    Kx *value = scalar_rules[n->op](c->a, n, args);
    ks_store(c->a, body, c->buf[id], index, value, false);
}

/* ---- workspace regions -------------------------------------------------------------------- */

/* A region of the workspace arena holding a tensor of type t, after the
 * others: the layout memplan.c replaces with one that shares memory. */
static int workspace_buffer(LowerCtx *c, const char *name, IrType t) {
    KBuf b = {.name = name, .kind = KB_WORK, .dtype = t.dtype, .size = numel_poly(&t),
              .offset = c->workspace_end, .type = t};
    c->workspace_end = npoly_add(c->workspace_end, kbuf_footprint(&b));
    return kprog_add_buf(c->p, b);
}

int lw_scratch(LowerCtx *c, int id, const char *what, IrType t) {
    return workspace_buffer(c, arena_printf(c->a, "%s.%s", lw_name(c, id), what), t);
}

/* ---- the other ops ---------------------------------------------------------------------- */

static void lower_leaf(LowerCtx *c, int id) {
    (void)c;
    (void)id; /* leaves and views have storage (or none) but no code */
}

static void lower_reshape(LowerCtx *c, int id) { lower_leaf(c, id); }

static void lower_matmul(LowerCtx *c, int id) {
    const Node *n = lw_node(c, id);
    const IrType *ta = &lw_node(c, n->in[0])->type, *tb = &lw_node(c, n->in[1])->type;
    Kernel *k = kprog_add_kernel(c->p, KK_GEMM, lw_name(c, id), id);
    KGemm *g = &k->gemm;
    g->ta = n->attr[0] != 0;
    g->tb = n->attr[1] != 0;
    g->m = lw_dim(c->a, ta->dim[g->ta ? 1 : 0]);
    g->k = lw_dim(c->a, ta->dim[g->ta ? 0 : 1]);
    g->n = lw_dim(c->a, tb->dim[g->tb ? 0 : 1]);
    g->lda = lw_dim(c->a, ta->dim[1]);
    g->ldb = lw_dim(c->a, tb->dim[1]);
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
 *  - the kept axes outside, one accumulator per result element, the
 *    reduced axes inside: where those are the innermost ones (row sums,
 *    softmax-like) a contiguous run of x, and always on the GPU, where
 *    each result element gets its own thread;
 *  - otherwise on a processor core (e.g. a bias gradient, summed over the
 *    batch): zero the result, then walk x in memory order adding into it,
 *    so the inner loop stays contiguous. */
static void reduce_kernel(LowerCtx *c, int id, int x, const bool *reduced, const int *out_axis, Kx *scale) {
    Arena *a = c->a;
    const IrType *tx = &lw_node(c, x)->type, *to = &lw_node(c, id)->type;
    int r = tx->rank, first_reduced = r;
    bool suffix = true;
    for (int i = 0; i < r; i++) {
        if (reduced[i] && first_reduced == r) first_reduced = i;
        if (!reduced[i] && first_reduced < r) suffix = false;
    }
    Kx *vars[IR_MAX_RANK], *ovars[IR_MAX_RANK] = {0};
    KsBlock *blk = lw_kernel(c, id);
    int out = c->buf[id];
    if (suffix || c->m->opt.cuda) {
        /* the kept axes outside (in parallel), the reduced ones inside */
        KsBlock *body = blk;
        for (int i = 0; i < r; i++)
            if (!reduced[i]) body = lw_loops(c, body, (Kx *[]){lw_dim(a, tx->dim[i])}, 1, &vars[i], true);
        int s = kprog_new_local(c->p);
        ks_decl(a, body, s, kx_real(a, 0));
        KsBlock *inner = body;
        for (int i = 0; i < r; i++)
            if (reduced[i]) inner = lw_loops(c, inner, (Kx *[]){lw_dim(a, tx->dim[i])}, 1, &vars[i], false);
        ks_update(a, inner, s, KX_ADD, lw_load_at(c, x, vars));
        for (int i = 0; i < r; i++)
            if (!reduced[i] && out_axis[i] >= 0) ovars[out_axis[i]] = vars[i];
        Kx *value = kx_local(a, s);
        if (scale) value = kx_bin(a, KX_MUL, value, scale);
        ks_store(a, body, out, lw_index(a, to, ovars), value, false);
        return;
    }
    /* zero, then accumulate in x's memory order */
    int zv = kprog_new_var(c->p);
    Ks *zf = ks_for(a, blk, zv, lw_numel(a, to), true);
    ks_store(a, &zf->body, out, kx_var(a, zv), kx_real(a, 0), false);
    KsBlock *body = lw_loop_nest(c, blk, tx, r, vars, false);
    for (int i = 0; i < r; i++)
        if (!reduced[i] && out_axis[i] >= 0) ovars[out_axis[i]] = vars[i];
    Kx *value = lw_load_at(c, x, vars);
    if (scale) value = kx_bin(a, KX_MUL, value, scale);
    ks_store(a, body, out, lw_index(a, to, ovars), value, true);
}

static void lower_reduce(LowerCtx *c, int id) {
    const Node *n = lw_node(c, id);
    const IrType *tx = &lw_node(c, n->in[0])->type;
    unsigned axes = (unsigned)n->attr[0];
    bool keep = n->attr[1] != 0;
    bool reduced[IR_MAX_RANK];
    int out_axis[IR_MAX_RANK], k = 0;
    Kx *count = kx_int(c->a, 1);
    for (int i = 0; i < tx->rank; i++) {
        reduced[i] = axes & (1u << i);
        if (reduced[i]) count = kx_bin(c->a, KX_MUL, count, lw_dim(c->a, tx->dim[i]));
        out_axis[i] = reduced[i] && !keep ? -1 : k++;
    }
    Kx *scale = n->op == OP_MEAN ? kx_bin(c->a, KX_DIV, kx_real(c->a, 1), kx_toreal(c->a, count)) : NULL;
    reduce_kernel(c, id, n->in[0], reduced, out_axis, scale);
}

static void lower_sum_to(LowerCtx *c, int id) {
    const Node *n = lw_node(c, id);
    const IrType *tx = &lw_node(c, n->in[0])->type, *tl = &n->type;
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

/* For ops over the last axis: rows = product of the other axes, cols = the
 * last. An input of rank 2 is read by its coordinates (row, col), so it may
 * be inlined (fuse.c only inlines those); others are read by flat index. */
typedef struct Rows {
    KsBlock *body; /* inside `for row < rows` */
    Kx *row;
    Kx *cols;
} Rows;

static Rows row_loop(LowerCtx *c, KsBlock *blk, const IrType *t, bool parallel) {
    int v = kprog_new_var(c->p);
    Ks *f = ks_for(c->a, blk, v, lw_dims_product(c->a, t, 0, t->rank - 1), parallel);
    return (Rows){.body = &f->body, .row = kx_var(c->a, v), .cols = lw_dim(c->a, t->dim[t->rank - 1])};
}

/* for col < cols: body; returns col */
static Kx *col_loop(LowerCtx *c, Rows *rw, KsBlock **body) {
    int v = kprog_new_var(c->p);
    *body = &ks_for(c->a, rw->body, v, rw->cols, false)->body;
    return kx_var(c->a, v);
}

/* Element (row, col) of value id. */
static Kx *row_value(LowerCtx *c, const Rows *rw, int id, Kx *col) {
    const Node *n = lw_node(c, id);
    if (n->type.rank == 2) return lw_load_at(c, id, (Kx *[]){rw->row, col});
    Arena *a = c->a;
    return kx_load(c->p, c->buf[id], kx_bin(a, KX_ADD, kx_bin(a, KX_MUL, rw->row, rw->cols), col));
}

static Kx *row_index(LowerCtx *c, const Rows *rw, Kx *col) {
    return kx_bin(c->a, KX_ADD, kx_bin(c->a, KX_MUL, rw->row, rw->cols), col);
}

/* Declares locals m = max_j x[j] and s = sum_j exp(x[j] - m) of a row. */
static void row_logsumexp_parts(LowerCtx *c, Rows *rw, int x, int *m, int *s) {
    Arena *a = c->a;
    KsBlock *body;
    *m = kprog_new_local(c->p);
    ks_decl(a, rw->body, *m, kx_real(a, -INFINITY));
    Kx *j = col_loop(c, rw, &body);
    ks_update(a, body, *m, KX_MAX, row_value(c, rw, x, j));
    *s = kprog_new_local(c->p);
    ks_decl(a, rw->body, *s, kx_real(a, 0));
    j = col_loop(c, rw, &body);
    ks_update(a, body, *s, KX_ADD, kx_un(a, KX_EXP, kx_bin(a, KX_SUB, row_value(c, rw, x, j), kx_local(a, *m))));
}

static void lower_softmax_common(LowerCtx *c, int id, bool log) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id);
    Rows rw = row_loop(c, lw_kernel(c, id), &n->type, true);
    int m, s;
    row_logsumexp_parts(c, &rw, n->in[0], &m, &s);
    KsBlock *body;
    Kx *j = col_loop(c, &rw, &body);
    Kx *shifted = kx_bin(a, KX_SUB, row_value(c, &rw, n->in[0], j), kx_local(a, m));
    Kx *value = log ? kx_bin(a, KX_SUB, shifted, kx_un(a, KX_LOG, kx_local(a, s)))
                    : kx_bin(a, KX_DIV, kx_un(a, KX_EXP, shifted), kx_local(a, s));
    ks_store(a, body, c->buf[id], row_index(c, &rw, j), value, false);
}

static void lower_softmax(LowerCtx *c, int id) { lower_softmax_common(c, id, false); }
static void lower_log_softmax(LowerCtx *c, int id) { lower_softmax_common(c, id, true); }

/* softmax:     dx = y * (dy - sum(dy * y))
 * log_softmax: dx = dy - exp(y) * sum(dy) */
static void lower_softmax_grad_common(LowerCtx *c, int id, bool log) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id);
    int y = n->in[0], dy = n->in[1];
    Rows rw = row_loop(c, lw_kernel(c, id), &n->type, true);
    int s = kprog_new_local(c->p);
    ks_decl(a, rw.body, s, kx_real(a, 0));
    KsBlock *body;
    Kx *j = col_loop(c, &rw, &body);
    Kx *term = log ? row_value(c, &rw, dy, j) : kx_bin(a, KX_MUL, row_value(c, &rw, dy, j), row_value(c, &rw, y, j));
    ks_update(a, body, s, KX_ADD, term);
    j = col_loop(c, &rw, &body);
    Kx *yv = row_value(c, &rw, y, j), *dyv = row_value(c, &rw, dy, j);
    Kx *value = log ? kx_bin(a, KX_SUB, dyv, kx_bin(a, KX_MUL, kx_un(a, KX_EXP, yv), kx_local(a, s)))
                    : kx_bin(a, KX_MUL, yv, kx_bin(a, KX_SUB, dyv, kx_local(a, s)));
    ks_store(a, body, c->buf[id], row_index(c, &rw, j), value, false);
}

static void lower_softmax_grad(LowerCtx *c, int id) { lower_softmax_grad_common(c, id, false); }
static void lower_log_softmax_grad(LowerCtx *c, int id) { lower_softmax_grad_common(c, id, true); }

/* A kernel summing `per_row` over the rows of x [N, C] (see accumulate_rows). */
static Rows rows_with_total(LowerCtx *c, int id, int x, KsBlock **blk, int *total) {
    *blk = lw_kernel(c, id);
    *total = kprog_new_local(c->p);
    ks_decl(c->a, *blk, *total, kx_real(c->a, 0));
    return row_loop(c, *blk, &lw_node(c, x)->type, false);
}

/* out[0] = total / rows */
static void store_mean(LowerCtx *c, int id, KsBlock *blk, int total, const IrType *t) {
    Arena *a = c->a;
    Kx *rows = kx_toreal(a, lw_dim(a, t->dim[0]));
    ks_store(a, blk, c->buf[id], kx_int(a, 0), kx_bin(a, KX_DIV, kx_local(a, total), rows), false);
}

/* loss = (1/rows) * sum_r (m_r + log s_r - x[r, label_r]), the log-sum-exp
 * form, stable for any logits. Labels must be in [0, classes): the runtime
 * checks data before it reaches a compiled step. */
static void lower_cross_entropy(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id);
    int x = n->in[0];
    KsBlock *blk;
    int total;
    Rows rw = rows_with_total(c, id, x, &blk, &total);
    int m, s;
    row_logsumexp_parts(c, &rw, x, &m, &s);
    Kx *label = kx_load(c->p, c->buf[n->in[1]], rw.row);
    Kx *picked = row_value(c, &rw, x, label);
    Kx *nll = kx_bin(a, KX_SUB, kx_bin(a, KX_ADD, kx_local(a, m), kx_un(a, KX_LOG, kx_local(a, s))), picked);
    ks_update(a, rw.body, total, KX_ADD, nll);
    store_mean(c, id, blk, total, &lw_node(c, x)->type);
}

static void lower_onehot(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id);
    Kx *vars[2];
    KsBlock *body = lw_loop_nest(c, lw_kernel(c, id), &n->type, 2, vars, true);
    Kx *label = kx_load(c->p, c->buf[n->in[0]], vars[0]);
    Kx *value = kx_select(a, kx_cmp(a, KX_EQ, label, vars[1]), kx_real(a, 1), kx_real(a, 0));
    ks_store(a, body, c->buf[id], lw_index(a, &n->type, vars), value, false);
}

/* Per row: m = the largest value, first = the smallest column holding it;
 * the row counts when first is the label. NaN rows never count. */
static void lower_accuracy(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id);
    int p = n->in[0];
    KsBlock *blk, *body;
    int total;
    Rows rw = rows_with_total(c, id, p, &blk, &total);
    int m = kprog_new_local(c->p), first = kprog_new_local(c->p);
    ks_decl(a, rw.body, m, kx_real(a, -INFINITY));
    Kx *j = col_loop(c, &rw, &body);
    ks_update(a, body, m, KX_MAX, row_value(c, &rw, p, j));
    Kx *none = kx_toreal(a, rw.cols);
    ks_decl(a, rw.body, first, none);
    j = col_loop(c, &rw, &body);
    Kx *at_max = kx_cmp(a, KX_EQ, row_value(c, &rw, p, j), kx_local(a, m));
    ks_update(a, body, first, KX_MIN, kx_select(a, at_max, kx_toreal(a, j), none));
    Kx *label = kx_toreal(a, kx_load(c->p, c->buf[n->in[1]], rw.row));
    ks_update(a, rw.body, total, KX_ADD,
              kx_select(a, kx_cmp(a, KX_EQ, kx_local(a, first), label), kx_real(a, 1), kx_real(a, 0)));
    store_mean(c, id, blk, total, &lw_node(c, p)->type);
}

static void lower_binary_accuracy(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id);
    const IrType *t = &lw_node(c, n->in[0])->type;
    KsBlock *blk = lw_kernel(c, id);
    int total = kprog_new_local(c->p);
    ks_decl(a, blk, total, kx_real(a, 0));
    Kx *vars[IR_MAX_RANK];
    KsBlock *body = lw_loop_nest(c, blk, t, t->rank, vars, false);
    Kx *said = kx_cmp(a, KX_GE, lw_load_at(c, n->in[0], vars), kx_real(a, n->attr[0]));
    Kx *truth = kx_cmp(a, KX_GE, lw_load_at(c, n->in[1], vars), kx_real(a, 0.5));
    ks_update(a, body, total, KX_ADD, kx_select(a, kx_cmp(a, KX_EQ, said, truth), kx_real(a, 1), kx_real(a, 0)));
    Kx *count = kx_toreal(a, lw_numel(a, t));
    ks_store(a, blk, c->buf[id], kx_int(a, 0), kx_bin(a, KX_DIV, kx_local(a, total), count), false);
}

/* Column k of a row is 1 when its label is one of the classes of set k:
 * a chain of selects, one comparison per class of the set. */
static void lower_multi_hot(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id);
    KsBlock *blk = lw_kernel(c, id);
    int v = kprog_new_var(c->p);
    Ks *f = ks_for(a, blk, v, lw_dim(a, n->type.dim[0]), true);
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

/* The assignments of a group (fuse.c) in one loop: every new value into a
 * local first, then every store, so each reads the old state. The group's
 * last member emits it; the others emit nothing. */
static void lower_assign(LowerCtx *c, int id) {
    if (!c->fp.last[id]) return;
    Arena *a = c->a;
    int group = c->fp.group[id];
    const IrType *t = &lw_node(c, id)->type;
    int *values = xmalloc(sizeof(int) * (size_t)(id - group + 1)), nvalues = 0;
    for (int i = group; i <= id; i++)
        if (c->fp.group[i] == group) values[nvalues++] = lw_node(c, i)->in[1];
    Kx *vars[IR_MAX_RANK], *index;
    KsBlock *body = lw_elementwise_loops(c, lw_kernel(c, group), t, values, nvalues, vars, &index);
    free(values);
    c->p->kernels[c->p->nkernels - 1].name = arena_printf(a, "%s.update", lw_node(c, lw_node(c, id)->in[0])->name);
    int *locals = xmalloc(sizeof(int) * (size_t)(id - group + 1)), count = 0;
    for (int i = group; i <= id; i++)
        if (c->fp.group[i] == group) {
            Kx *value = lw_load_at(c, lw_node(c, i)->in[1], vars);
            locals[count] = kprog_new_local(c->p);
            ks_decl(a, body, locals[count++], value);
        }
    count = 0;
    for (int i = group; i <= id; i++)
        if (c->fp.group[i] == group)
            ks_store(a, body, c->buf[lw_node(c, i)->in[0]], index, kx_local(a, locals[count++]), false);
    free(locals);
}

static const LowerFn lower_rules[OP_COUNT] = {
#define EW(e, name, arity, flags, attrs, grad, scalar) [OP_##e] = lower_ew,
#define OP(e, name, arity, flags, attrs, shape, grad, lower) [OP_##e] = lower,
#include "ir/ops.def"
};

/* ---- buffers ---------------------------------------------------------------------------- */

static int work_buffer(LowerCtx *c, int id) {
    return workspace_buffer(c, lw_name(c, id), lw_node(c, id)->type);
}

static int arg_buffer(LowerCtx *c, int id, const char *name, ArgRole role) {
    const Node *n = lw_node(c, id);
    int arg = kprog_add_arg(c->p, (KArg){.name = name, .role = role, .type = n->type,
                                         .metric = role == ARG_OUTPUT && (n->flags & NF_METRIC)});
    KBuf b = {.name = name, .kind = KB_ARG, .dtype = n->type.dtype, .size = numel_poly(&n->type),
              .arg = arg, .type = n->type};
    return kprog_add_buf(c->p, b);
}

static int state_buffer(LowerCtx *c, int id) {
    const Node *n = lw_node(c, id);
    const StateSlot *s = module_find_slot(c->m, n->name);
    if (!s) NNC_BUG("param %s has no state slot", n->name);
    KBuf b = {.name = n->name, .kind = KB_STATE, .dtype = n->type.dtype, .size = {s->size, 0},
              .offset = {s->offset, 0}, .type = n->type};
    return kprog_add_buf(c->p, b);
}

static bool computes_into_own_buffer(LowerCtx *c, int id) {
    Op op = lw_node(c, id)->op;
    return !(op_info(op)->flags & OPF_LEAF) && op != OP_RESHAPE && op != OP_ASSIGN && !is_inline(c, id) &&
           !c->fp.virt[id];
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
    static const char *const names[] = {"forward", "eval", "grad", "train_step", "init", "apply"};
    KProgram *p = kprog_new(m->arena, names[kind], kind);
    p->real_f64 = real_f64;
    p->profile = m->opt.profile;
    p->state_size = m->state_size;
    LowerCtx c = {.m = m, .g = g, .p = p, .a = m->arena, .fp = fuse_plan(g, kind, opt_enabled(&m->opt, XF_FUSE))};
    c.buf = xmalloc(sizeof(int) * (size_t)(g->n + 1));
    c.scalar_local = xcalloc((size_t)g->n + 1, sizeof(int));
    c.scalar_kernel = xcalloc((size_t)g->n + 1, sizeof(int));
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
        int b = arg_buffer(&c, id, name ? name : lw_name(&c, id), ARG_OUTPUT);
        /* A computed value is written straight into the caller's array;
         * anything else (a leaf, a view) is copied there at the end. */
        copy_to[k] = -1;
        if (computes_into_own_buffer(&c, id) && c.buf[id] < 0) c.buf[id] = b;
        else copy_to[k] = b;
    }

    /* Storage for everything else, in order. */
    for (int i = 0; i < g->n; i++) {
        const Node *n = &g->nodes[i];
        if (c.buf[i] >= 0 || is_inline(&c, i) || c.fp.virt[i] || n->op == OP_ASSIGN) continue;
        if (n->op == OP_PARAM) c.buf[i] = state_buffer(&c, i);
        else if (n->op == OP_INPUT) NNC_BUG("input %s without an argument", n->name);
        else if (n->op == OP_RESHAPE) {
            KBuf b = {.name = lw_name(&c, i), .kind = KB_VIEW, .dtype = n->type.dtype,
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
        if (is_inline(&c, i) || c.fp.virt[i]) continue;
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
    kprog_set_workspace(p, &c.workspace_end, 1);
    if (opt_enabled(&m->opt, XF_COALESCE)) pass_coalesce(p);
    if (opt_enabled(&m->opt, XF_MEMPLAN)) pass_memplan(p, m->train_spec.batch);
    else memplan_liveness(p);
    free(c.buf);
    free(c.scalar_local);
    free(c.scalar_kernel);
    fuse_plan_free(&c.fp);
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
    kprog_set_workspace(p, NULL, 0);
    memplan_liveness(p);
    return p;
}
