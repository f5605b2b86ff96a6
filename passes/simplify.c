/* simplify.c - the same values from fewer and cheaper nodes.
 *
 * Runs after the optimizer on every function of the module (forward, eval,
 * grad, train_step), unless --disable-pass=simplify turns it off. A graph is
 * rebuilt node by node, in order, each node from the already simplified
 * versions of its inputs, so one sweep sees the effect of every rewrite on
 * what reads it; sweeps repeat until one changes nothing. A node is
 *
 *   folded     an op of constants becomes a constant, and so does the size
 *              of axes that do not include the batch;
 *   rewritten  by an algebraic identity (below);
 *   merged     into an earlier node that computes the same op of the same
 *              inputs with the same attributes and type: the optimizer
 *              writes 1 - beta1 once per parameter, the frontend and
 *              autodiff a constant 1 for every use;
 *
 * and a node nothing reads is removed, except the roots: outputs, the loss,
 * metrics, gradients, assignments, and the leaves (the inputs are the
 * function's arguments, the params its view of the state).
 *
 * Nothing here may change what a function computes beyond the sign of a
 * zero, so every identity holds in IEEE arithmetic for every value,
 * infinities and NaN included:
 *
 *   x * 1, 1 * x, x / 1     -> x
 *   x * -1, -1 * x, x / -1  -> -x
 *   x + 0, 0 + x, x - 0     -> x     (only -0 + 0 = +0 differs, in sign)
 *   x * 0, 0 * x            -> 0     only for x finite and >= 0 (a mask, a
 *                                    one-hot, a size): 0 * inf is NaN
 *   x / 2^k                 -> x * 2^-k (both round x 2^-k once)
 *   -(-x)                   -> x
 *   reshape(reshape(x)), expand(expand(x))   -> one reshape, one expand
 *   reshape, expand, sum_to to x's own type, sum or mean over no axes -> x
 *   op(expand(a, like), b)  -> op(a, b), or expand(op(a, b), like): an
 *                              elementwise op reads a broadcast value as it
 *                              is, and on a smaller shape where it can. The
 *                              gradient of a mean, expand(1, x) / size * dy,
 *                              becomes (1 / size) * dy.
 *
 * Constants fold only through ops that IEEE rounds correctly (+ - * /,
 * sqrt, min, max, ...) and only where the double result rounded to f32 is
 * the f32 result: then a program in f32 (what nnc compiles) and one in f64
 * (gradient checking) each see the value they would have computed.
 *
 * Flagged nodes (outputs, the loss, metrics, gradients) keep their node:
 * their inputs are simplified, later equal nodes merge into them, but they
 * are never replaced. Assignments and dropout masks are never merged. A
 * node only ever becomes an earlier node or a new one in its own place, so
 * no read of a param moves past that param's assignment. */
#include "passes/passes.h"
#include "support/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_SWEEPS = 8 };

/* Values that must keep a node of their own: merging one into another, or
 * replacing it, would lose its flags (and a gradient's name). */
static bool pinned(const Node *n) { return (n->flags & (NF_OUTPUT | NF_LOSS | NF_METRIC | NF_GRAD)) != 0; }

static bool is_root(const Node *n) {
    return pinned(n) || (op_info(n->op)->flags & OPF_SIDE_EFFECT) || n->op == OP_INPUT || n->op == OP_PARAM;
}

/* Nodes that may be merged with an equal one (and simplified at all): not
 * the leaves that name an argument or a state tensor, not the assignments,
 * and not dropout, whose node is its mask's stream. */
static bool mergeable(const Node *n) {
    if (n->op == OP_INPUT || n->op == OP_PARAM || n->op == OP_DROPOUT || n->op == OP_DROPOUT_GRAD) return false;
    return !(op_info(n->op)->flags & OPF_SIDE_EFFECT);
}

/* size(x, axes) is the product of x's dimensions on those axes: `fixed`
 * times N when `batch`. Sizes of different values with the same product
 * are the same value. */
static void size_value(const Graph *g, const Node *n, int64_t *fixed, bool *batch) {
    const IrType *t = &g->nodes[n->in[0]].type;
    unsigned axes = (unsigned)n->attr[0];
    *fixed = 1;
    *batch = false;
    for (int i = 0; i < t->rank; i++) {
        if (!(axes & (1u << i))) continue;
        if (t->dim[i] == IR_BATCH) *batch = true;
        else *fixed *= t->dim[i];
    }
}

/* ---- finding equal nodes ------------------------------------------------------------------ */

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdull;
}

static uint64_t double_bits(double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits;
}

/* a + b is b + a exactly in IEEE arithmetic, and a * b is b * a (min and
 * max are not, where a NaN meets the backend's choice of instruction). */
static bool commutative(Op op) { return op == OP_ADD || op == OP_MUL; }

static uint64_t node_hash(const Graph *g, const Node *n) {
    uint64_t h = mix(0, (uint64_t)n->op);
    if (n->op == OP_SIZE) {
        int64_t fixed;
        bool batch;
        size_value(g, n, &fixed, &batch);
        return mix(mix(h, (uint64_t)fixed), batch);
    }
    if (commutative(n->op)) {
        int lo = n->in[0] < n->in[1] ? n->in[0] : n->in[1], hi = n->in[0] ^ n->in[1] ^ lo;
        h = mix(mix(h, (uint64_t)lo), (uint64_t)hi);
    } else {
        for (int k = 0; k < n->nin; k++) h = mix(h, (uint64_t)n->in[k]);
    }
    for (int k = 0; k < op_info(n->op)->nattrs; k++) h = mix(h, double_bits(n->attr[k]));
    h = mix(mix(h, n->type.dtype), (uint64_t)n->type.rank);
    for (int i = 0; i < n->type.rank; i++) h = mix(h, (uint64_t)n->type.dim[i]);
    return h;
}

/* Attributes compare bit for bit: a constant -0 is not a constant +0. */
static bool same_value(const Graph *g, const Node *a, const Node *b) {
    if (a->op != b->op || !type_equal(&a->type, &b->type)) return false;
    if (a->op == OP_SIZE) {
        int64_t fa, fb;
        bool ba, bb;
        size_value(g, a, &fa, &ba);
        size_value(g, b, &fb, &bb);
        return fa == fb && ba == bb;
    }
    bool same_inputs = true, swapped = commutative(a->op) && a->in[0] == b->in[1] && a->in[1] == b->in[0];
    for (int k = 0; k < a->nin; k++) same_inputs &= a->in[k] == b->in[k];
    if (!same_inputs && !swapped) return false;
    for (int k = 0; k < op_info(a->op)->nattrs; k++)
        if (double_bits(a->attr[k]) != double_bits(b->attr[k])) return false;
    return true;
}

/* ---- building the simplified graph ------------------------------------------------------- */

typedef struct Rebuild {
    Graph *g;       /* the graph being built */
    int32_t *table; /* open addressing: ids of g's mergeable nodes by node_hash, -1 empty */
    size_t cap, used;
    Span span;        /* of the node being rebuilt: the nodes made in its place keep */
    const char *name; /* its location and variable, so kernels are named after it */
    SimplifyStats *stats;
} Rebuild;

static const Node *at(const Rebuild *r, int id) { return &r->g->nodes[id]; }
static bool has_type(const Rebuild *r, int id, const IrType *t) { return type_equal(&at(r, id)->type, t); }

static int table_find(const Rebuild *r, const Node *n) {
    for (size_t i = node_hash(r->g, n) & (r->cap - 1); r->table[i] >= 0; i = (i + 1) & (r->cap - 1))
        if (same_value(r->g, at(r, r->table[i]), n)) return r->table[i];
    return -1;
}

static void table_put(int32_t *table, size_t cap, uint64_t hash, int id) {
    size_t i = hash & (cap - 1);
    while (table[i] >= 0) i = (i + 1) & (cap - 1);
    table[i] = id;
}

static void table_insert(Rebuild *r, int id) {
    if (2 * (r->used + 1) > r->cap) {
        size_t cap = 2 * r->cap;
        int32_t *table = xmalloc(sizeof(int32_t) * cap);
        for (size_t i = 0; i < cap; i++) table[i] = -1;
        for (size_t i = 0; i < r->cap; i++)
            if (r->table[i] >= 0) table_put(table, cap, node_hash(r->g, at(r, r->table[i])), r->table[i]);
        free(r->table);
        r->table = table;
        r->cap = cap;
    }
    table_put(r->table, r->cap, node_hash(r->g, at(r, id)), id);
    r->used++;
}

/* Types node n by its shape rule (a reshape keeps the type it was given). */
static void infer_type(Rebuild *r, Node *n) {
    Graph *g = r->g;
    VEC_PUSH(g->arena, g->nodes, g->n, g->cap, *n);
    Diag d;
    diag_init(&d, NULL, stderr);
    if (!shape_infer(g, g->n - 1, &d)) NNC_BUG("simplify built an ill-typed %s", op_info(n->op)->name);
    n->type = g->nodes[--g->n].type;
}

/* Appends n, typed, to the graph, or returns the earlier node equal to it. */
static int emit(Rebuild *r, Node n) {
    infer_type(r, &n);
    if (mergeable(&n) && !pinned(&n)) {
        int same = table_find(r, &n);
        if (same >= 0) {
            r->stats->merged++;
            return same;
        }
    }
    Graph *g = r->g;
    VEC_PUSH(g->arena, g->nodes, g->n, g->cap, n);
    if (mergeable(&n)) table_insert(r, g->n - 1);
    return g->n - 1;
}

static int simplify(Rebuild *r, const Node *n);

/* A new node computing op of the given inputs, in place of the node being
 * rebuilt; simplified in turn. */
static int make(Rebuild *r, Node n) {
    n.flags = 0;
    n.span = r->span;
    n.name = r->name;
    infer_type(r, &n);
    int v = simplify(r, &n);
    return v >= 0 ? v : emit(r, n);
}

static Node op_node(Op op, int a, int b) {
    const OpInfo *info = op_info(op);
    Node n = {.op = op, .nin = info->arity, .in = {a, b}};
    for (int k = 0; k < info->nattrs; k++) n.attr[k] = info->attr_defaults[k];
    return n;
}

static int make1(Rebuild *r, Op op, int a) { return make(r, op_node(op, a, 0)); }
static int make2(Rebuild *r, Op op, int a, int b) { return make(r, op_node(op, a, b)); }

static int make_reshape(Rebuild *r, int x, IrType type) {
    Node n = op_node(OP_RESHAPE, x, 0);
    n.type = type;
    return make(r, n);
}

static int constant(Rebuild *r, double v) {
    Node n = op_node(OP_CONST, 0, 0);
    n.attr[0] = v;
    return make(r, n);
}

/* ---- folding constants ------------------------------------------------------------------- */

/* op of constants x: false unless IEEE rounds op correctly and the f32 and
 * double results agree (see the top of the file). */
static bool fold_scalar(const Node *n, const double *x, double *out) {
    for (int k = 0; k < n->nin; k++)
        if (!isfinite(x[k])) return false;
    float f0 = (float)x[0], f1 = n->nin > 1 ? (float)x[1] : 0;
    double d;
    float s;
    switch (n->op) {
    case OP_ADD: d = x[0] + x[1], s = f0 + f1; break;
    case OP_SUB: d = x[0] - x[1], s = f0 - f1; break;
    case OP_MUL: d = x[0] * x[1], s = f0 * f1; break;
    case OP_DIV:
        if (x[1] == 0) return false;
        d = x[0] / x[1], s = f0 / f1;
        break;
    case OP_NEG: d = -x[0], s = -f0; break;
    case OP_SQUARE: d = x[0] * x[0], s = f0 * f0; break;
    case OP_SQRT:
        if (x[0] < 0) return false;
        d = sqrt(x[0]), s = sqrtf(f0);
        break;
    case OP_MIN: d = fmin(x[0], x[1]), s = fminf(f0, f1); break;
    case OP_MAX: d = fmax(x[0], x[1]), s = fmaxf(f0, f1); break;
    case OP_FLOOR: d = floor(x[0]), s = floorf(f0); break;
    case OP_ABS: d = fabs(x[0]), s = fabsf(f0); break;
    case OP_GE: d = x[0] >= x[1], s = f0 >= f1; break;
    case OP_RELU: d = x[0] > 0 ? x[0] : 0, s = f0 > 0 ? f0 : 0; break;
    case OP_STEP: d = x[0] > 0, s = f0 > 0; break;
    case OP_EXPAND: d = x[0], s = f0; break;
    default: return false; /* exp, log, pow, ...: the backend's rounding is its own */
    }
    float rounded = (float)d;
    if (!isfinite(d) || !isfinite(s) || rounded != s || signbit(rounded) != signbit(s)) return false;
    *out = d;
    return true;
}

static int fold(Rebuild *r, const Node *n) {
    if (n->op == OP_SIZE) {
        int64_t fixed;
        bool batch;
        size_value(r->g, n, &fixed, &batch);
        return batch ? -1 : constant(r, (double)fixed);
    }
    if (!(op_info(n->op)->flags & OPF_EW)) return -1;
    double x[IR_MAX_INPUTS] = {0}, v;
    for (int k = 0; k < n->nin; k++) {
        if (at(r, n->in[k])->op != OP_CONST) return -1;
        x[k] = at(r, n->in[k])->attr[0];
    }
    return fold_scalar(n, x, &v) ? constant(r, v) : -1;
}

/* ---- algebra ------------------------------------------------------------------------------ */

/* The value of a constant seen through the reshapes and expands that copy it. */
static bool uniform_value(const Rebuild *r, int id, double *v) {
    const Node *n = at(r, id);
    while (n->op == OP_RESHAPE || n->op == OP_EXPAND) n = at(r, n->in[0]);
    if (n->op != OP_CONST) return false;
    *v = n->attr[0];
    return true;
}

/* Values that are finite and never negative whatever the inputs: 0 * x is
 * then +0 exactly. */
static bool finite_nonnegative(const Rebuild *r, int id) {
    const Node *n = at(r, id);
    while (n->op == OP_RESHAPE || n->op == OP_EXPAND) n = at(r, n->in[0]);
    switch (n->op) {
    case OP_ONEHOT: case OP_MULTI_HOT: case OP_GE: case OP_STEP: case OP_SIZE: return true;
    case OP_CONST: return isfinite(n->attr[0]) && n->attr[0] >= 0;
    default: return false;
    }
}

/* 1 / v, when v is a power of two whose reciprocal is a normal f32 too. */
static bool exact_reciprocal(double v, double *inv) {
    int e;
    double m = frexp(v, &e);
    if (fabs(m) != 0.5 || e < -120 || e > 120) return false;
    *inv = 1 / v;
    return true;
}

/* The zero of type t, for x * 0 with x of type t. */
static int zero_like(Rebuild *r, int x, const IrType *t) {
    int zero = constant(r, 0);
    return t->rank == 0 ? zero : make2(r, OP_EXPAND, zero, x);
}

static int algebra(Rebuild *r, const Node *n) {
    const IrType *t = &n->type;
    int a = n->in[0], b = n->nin > 1 ? n->in[1] : -1;
    double v, inv;
    switch (n->op) {
    case OP_MUL:
        for (int k = 0; k < 2; k++) {
            int c = n->in[k], x = n->in[1 - k];
            if (!uniform_value(r, c, &v) || !has_type(r, x, t)) continue;
            if (v == 1) return x;
            if (v == -1) return make1(r, OP_NEG, x);
            if (v == 0 && !signbit(v) && finite_nonnegative(r, x)) return zero_like(r, x, t);
        }
        return -1;
    case OP_DIV:
        if (!uniform_value(r, b, &v) || !has_type(r, a, t)) return -1;
        if (v == 1) return a;
        if (v == -1) return make1(r, OP_NEG, a);
        if (at(r, b)->op == OP_CONST && exact_reciprocal(v, &inv)) return make2(r, OP_MUL, a, constant(r, inv));
        return -1;
    case OP_ADD:
        for (int k = 0; k < 2; k++)
            if (uniform_value(r, n->in[k], &v) && v == 0 && has_type(r, n->in[1 - k], t)) return n->in[1 - k];
        return -1;
    case OP_SUB: return uniform_value(r, b, &v) && v == 0 && has_type(r, a, t) ? a : -1;
    case OP_NEG: return at(r, a)->op == OP_NEG && has_type(r, at(r, a)->in[0], t) ? at(r, a)->in[0] : -1;
    case OP_EXPAND:
        if (has_type(r, a, t)) return a;
        return at(r, a)->op == OP_EXPAND ? make2(r, OP_EXPAND, at(r, a)->in[0], b) : -1;
    case OP_RESHAPE:
        if (has_type(r, a, t)) return a;
        return at(r, a)->op == OP_RESHAPE ? make_reshape(r, at(r, a)->in[0], *t) : -1;
    case OP_SUM_TO: return has_type(r, a, t) ? a : -1;
    case OP_SUM:
    case OP_MEAN: return (unsigned)n->attr[0] == 0 && has_type(r, a, t) ? a : -1;
    default: return -1;
    }
}

/* ---- broadcasting ------------------------------------------------------------------------ */

/* `to` is `from` with 1s put in front: the same value under broadcasting. */
static bool prepends_ones(const IrType *from, const IrType *to) {
    if (from->dtype != to->dtype || to->rank < from->rank) return false;
    int lead = to->rank - from->rank;
    for (int i = 0; i < lead; i++)
        if (to->dim[i] != 1) return false;
    for (int i = 0; i < from->rank; i++)
        if (from->dim[i] != to->dim[lead + i]) return false;
    return true;
}

/* What a broadcast view shows, or -1: expand(x, like), and a reshape that
 * only puts 1s in front of x's dimensions, both read as x where an
 * elementwise op broadcasts its inputs. */
static int broadcast_source(const Rebuild *r, int id) {
    const Node *n = at(r, id);
    if (n->op == OP_EXPAND) return n->in[0];
    if (n->op == OP_RESHAPE && prepends_ones(&at(r, n->in[0])->type, &n->type)) return n->in[0];
    return -1;
}

/* An elementwise op that reads broadcast views computes on what they show:
 * on the same shape when the other inputs give it, else on the smaller
 * shape, broadcast afterwards (as an expand to the shape of the like of one
 * of its expands, or a reshape putting back leading 1s). */
static int read_through_broadcasts(Rebuild *r, const Node *n) {
    const IrType *t = &n->type;
    Node m = *n;
    bool any = false;
    int wide = -1; /* an input expanded to the result's shape */
    for (int k = 0; k < n->nin; k++) {
        int id = n->in[k], source;
        if (at(r, id)->op == OP_EXPAND && has_type(r, id, t) && wide < 0) wide = id;
        while ((source = broadcast_source(r, id)) >= 0) id = source, any = true;
        m.in[k] = id;
    }
    if (!any) return -1;
    IrType small = at(r, m.in[0])->type;
    for (int k = 1; k < m.nin; k++)
        if (!shape_broadcast(&small, &at(r, m.in[k])->type, &small)) return -1;
    small.dtype = DT_F32;
    if (type_equal(&small, t)) return make(r, m);
    if (wide >= 0) return make2(r, OP_EXPAND, make(r, m), at(r, wide)->in[1]);
    if (prepends_ones(&small, t)) return make_reshape(r, make(r, m), *t);
    return -1;
}

/* The simplified value of n (inputs already in the new graph), or -1 to
 * keep n as it is. */
static int simplify(Rebuild *r, const Node *n) {
    if (pinned(n) || !mergeable(n)) return -1;
    int v = fold(r, n);
    if (v >= 0) {
        r->stats->folded++;
        return v;
    }
    v = algebra(r, n);
    if (v < 0 && (op_info(n->op)->flags & OPF_EW) && n->op != OP_EXPAND) v = read_through_broadcasts(r, n);
    if (v >= 0) r->stats->rewritten++;
    return v;
}

/* ---- dead code ----------------------------------------------------------------------------- */

static void remove_dead(Graph *g, SimplifyStats *stats) {
    int *live = xcalloc((size_t)g->n + 1, sizeof(int));
    for (int i = g->n - 1; i >= 0; i--) {
        const Node *n = &g->nodes[i];
        if (is_root(n)) live[i] = 1;
        if (!live[i]) {
            stats->removed++;
            continue;
        }
        for (int k = 0; k < n->nin; k++) live[n->in[k]] = 1;
    }
    graph_compact(g, live);
    free(live);
}

/* ---- the pass ------------------------------------------------------------------------------ */

/* One sweep; whether it changed anything. */
static bool sweep(Graph *g, SimplifyStats *stats) {
    SimplifyStats before = *stats;
    Rebuild r = {.g = graph_new(g->arena, g->name), .stats = stats, .cap = 64};
    while (r.cap < 4 * (size_t)g->n) r.cap *= 2;
    r.table = xmalloc(sizeof(int32_t) * r.cap);
    for (size_t i = 0; i < r.cap; i++) r.table[i] = -1;
    int32_t *remap = xmalloc(sizeof(int32_t) * ((size_t)g->n + 1));
    for (int i = 0; i < g->n; i++) {
        Node n = g->nodes[i];
        for (int k = 0; k < n.nin; k++) n.in[k] = remap[n.in[k]];
        r.span = n.span;
        r.name = n.flags & NF_GRAD ? NULL : n.name; /* a gradient's name is its param's */
        int v = simplify(&r, &n);
        if (v >= 0 && !has_type(&r, v, &n.type)) NNC_BUG("simplify changed the type of %%%d", i);
        remap[i] = v >= 0 ? v : emit(&r, n);
    }
    remove_dead(r.g, stats);
    g->nodes = r.g->nodes;
    g->n = r.g->n;
    g->cap = r.g->cap;
    free(remap);
    free(r.table);
    return memcmp(&before, stats, sizeof before) != 0;
}

void graph_simplify(Graph *g, SimplifyStats *stats) {
    SimplifyStats ignored = {0};
    if (!stats) stats = &ignored;
    for (int i = 0; i < MAX_SWEEPS && sweep(g, stats); i++) continue;
}

bool pass_simplify(Module *m, Diag *d) {
    (void)d;
    if (!opt_enabled(&m->opt, XF_SIMPLIFY)) return true;
    Graph *graphs[] = {m->forward, m->eval, m->grad, m->train, m->apply};
    for (size_t i = 0; i < sizeof graphs / sizeof graphs[0]; i++)
        if (graphs[i]) graph_simplify(graphs[i], NULL);
    return true;
}
