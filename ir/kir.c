/* kir.c - building Kernel IR programs, with light constant folding so that
 * index arithmetic stays readable (i*1+0 prints as i). */
#include "ir/kir.h"
#include "support/util.h"
#include <stdlib.h>
#include <string.h>

const char *const kx_names[KX_COUNT] = {
    [KX_INT] = "int",   [KX_REAL] = "real",   [KX_BATCH] = "N",     [KX_VAR] = "var",
    [KX_LOCAL] = "local", [KX_LOAD] = "load", [KX_SEED] = "seed",   [KX_ADD] = "+",
    [KX_SUB] = "-",     [KX_MUL] = "*",       [KX_DIV] = "/",       [KX_MOD] = "%",
    [KX_MIN] = "min",   [KX_MAX] = "max",     [KX_POW] = "pow",     [KX_NEG] = "neg",
    [KX_EXP] = "exp",   [KX_LOG] = "log",     [KX_SQRT] = "sqrt",   [KX_ABS] = "abs",     [KX_COS] = "cos",     [KX_SIN] = "sin",     [KX_FLOOR] = "floor",
    [KX_LOG1P] = "log1p",
    [KX_LT] = "<",      [KX_LE] = "<=",       [KX_GT] = ">",        [KX_GE] = ">=",
    [KX_EQ] = "==",     [KX_NE] = "!=",       [KX_SELECT] = "select", [KX_TOREAL] = "real", [KX_TOINT] = "toint",
    [KX_RAND] = "rand",
};

KProgram *kprog_new(Arena *a, const char *name, ProgKind kind) {
    KProgram *p = ARENA_NEW(a, KProgram);
    p->arena = a;
    p->name = name;
    p->kind = kind;
    p->result_buf = -1;
    return p;
}

int kprog_add_buf(KProgram *p, KBuf buf) {
    VEC_PUSH(p->arena, p->bufs, p->nbufs, p->bufs_cap, buf);
    return p->nbufs - 1;
}

int kprog_add_arg(KProgram *p, KArg arg) {
    VEC_PUSH(p->arena, p->args, p->nargs, p->args_cap, arg);
    return p->nargs - 1;
}

Kernel *kprog_add_kernel(KProgram *p, KernelKind kind, const char *name, int node) {
    Kernel k = {.kind = kind, .name = name, .node = node};
    VEC_PUSH(p->arena, p->kernels, p->nkernels, p->kernels_cap, k);
    return &p->kernels[p->nkernels - 1];
}

int kprog_new_var(KProgram *p) { return p->nvars++; }
int kprog_new_local(KProgram *p) { return p->nlocals++; }

int kprog_root_buf(const KProgram *p, int buf) {
    while (p->bufs[buf].kind == KB_VIEW) buf = p->bufs[buf].view_of;
    return buf;
}

bool kx_eval_int(const Kx *x, int64_t batch, int64_t *value) {
    int64_t a = 0, b = 0;
    switch (x->op) {
    case KX_INT: *value = x->i; return true;
    case KX_BATCH: *value = batch; return true;
    case KX_ADD: case KX_SUB: case KX_MUL: case KX_DIV: case KX_MOD: case KX_MIN: case KX_MAX:
        if (x->type != KT_INT || !kx_eval_int(x->a, batch, &a) || !kx_eval_int(x->b, batch, &b)) return false;
        if ((x->op == KX_DIV || x->op == KX_MOD) && b == 0) return false;
        switch (x->op) {
        case KX_ADD: *value = a + b; break;
        case KX_SUB: *value = a - b; break;
        case KX_MUL: *value = a * b; break;
        case KX_DIV: *value = a / b; break;
        case KX_MOD: *value = a % b; break;
        case KX_MIN: *value = a < b ? a : b; break;
        default: *value = a > b ? a : b; break;
        }
        return true;
    default: return false;
    }
}

double kprog_gemm_flops(const KProgram *p, int64_t batch) {
    double flops = 0;
    if (p->sliced) { /* the slices hold floor(batch (t + 1) / slices) - floor(batch t / slices) examples */
        const KSlices *ks = p->sliced;
        for (int t = 0; t < ks->slices; t++) {
            double f = kprog_gemm_flops(ks->grad, batch * (t + 1) / ks->slices - batch * t / ks->slices);
            if (f < 0) return -1;
            flops += f;
        }
        double f = kprog_gemm_flops(ks->apply, batch);
        return f < 0 ? -1 : flops + f;
    }
    for (int i = 0; i < p->nkernels; i++) {
        const KGemm *g = &p->kernels[i].gemm;
        if (p->kernels[i].kind != KK_GEMM) continue;
        int64_t m, n, k, count = 1;
        if (!kx_eval_int(g->m, batch, &m) || !kx_eval_int(g->n, batch, &n) || !kx_eval_int(g->k, batch, &k) ||
            (g->count && !kx_eval_int(g->count, batch, &count)))
            return -1;
        flops += 2.0 * (double)m * (double)n * (double)k * (double)count;
    }
    return flops;
}

bool kx_has(const Kx *x, KxOp op, int64_t i) {
    if (!x) return false;
    if (x->op == op && (i < 0 || x->i == i)) return true;
    return kx_has(x->a, op, i) || kx_has(x->b, op, i) || kx_has(x->c, op, i);
}

bool kx_var_coeff(const Kx *x, int var, int64_t *c) {
    if (!kx_has(x, KX_VAR, var)) {
        *c = 0;
        return true;
    }
    int64_t ca, cb;
    switch (x->op) {
    case KX_VAR: *c = 1; return true;
    case KX_ADD: case KX_SUB:
        if (!kx_var_coeff(x->a, var, &ca) || !kx_var_coeff(x->b, var, &cb)) return false;
        *c = x->op == KX_ADD ? ca + cb : ca - cb;
        return true;
    case KX_MUL:
        if (x->a->op == KX_INT && kx_var_coeff(x->b, var, &cb)) return *c = x->a->i * cb, true;
        if (x->b->op == KX_INT && kx_var_coeff(x->a, var, &ca)) return *c = x->b->i * ca, true;
        return false;
    default: return false;
    }
}

static Kx *kx_new(Arena *a, KxOp op, KType type) {
    Kx *x = ARENA_NEW(a, Kx);
    x->op = op;
    x->type = type;
    return x;
}

Kx *kx_int(Arena *a, int64_t v) {
    Kx *x = kx_new(a, KX_INT, KT_INT);
    x->i = v;
    return x;
}

Kx *kx_real(Arena *a, double v) {
    Kx *x = kx_new(a, KX_REAL, KT_REAL);
    x->r = v;
    return x;
}

Kx *kx_batch(Arena *a) { return kx_new(a, KX_BATCH, KT_INT); }
Kx *kx_seed(Arena *a) { return kx_new(a, KX_SEED, KT_INT); }

Kx *kx_var(Arena *a, int var) {
    Kx *x = kx_new(a, KX_VAR, KT_INT);
    x->i = var;
    return x;
}

Kx *kx_local(Arena *a, int local) {
    Kx *x = kx_new(a, KX_LOCAL, KT_REAL);
    x->i = local;
    return x;
}

Kx *kx_load(const KProgram *p, int buf, Kx *index) {
    NNC_ASSERT(index->type == KT_INT);
    Kx *x = kx_new(p->arena, KX_LOAD, p->bufs[buf].dtype == DT_I32 ? KT_INT : KT_REAL);
    x->i = buf;
    x->a = index;
    return x;
}

static bool is_int_const(const Kx *x, int64_t v) { return x->op == KX_INT && x->i == v; }

Kx *kx_bin(Arena *a, KxOp op, Kx *x, Kx *y) {
    NNC_ASSERT(x->type == y->type && x->type != KT_BOOL);
    if (x->op == KX_INT && y->op == KX_INT) {
        int64_t u = x->i, v = y->i;
        switch (op) {
        case KX_ADD: return kx_int(a, u + v);
        case KX_SUB: return kx_int(a, u - v);
        case KX_MUL: return kx_int(a, u * v);
        case KX_DIV: if (v) return kx_int(a, u / v); break;
        case KX_MOD: if (v) return kx_int(a, u % v); break;
        case KX_MIN: return kx_int(a, u < v ? u : v);
        case KX_MAX: return kx_int(a, u > v ? u : v);
        default: break;
        }
    }
    if (x->type == KT_INT) {
        if (op == KX_ADD && is_int_const(x, 0)) return y;
        if ((op == KX_ADD || op == KX_SUB) && is_int_const(y, 0)) return x;
        if (op == KX_MUL && (is_int_const(x, 0) || is_int_const(y, 1))) return x;
        if (op == KX_MUL && (is_int_const(y, 0) || is_int_const(x, 1))) return y;
        if (op == KX_DIV && is_int_const(y, 1)) return x;
        if (op == KX_MOD && is_int_const(y, 1)) return kx_int(a, 0);
    }
    if (x->type == KT_REAL) {
        if (op == KX_MUL && x->op == KX_REAL && x->r == 1.0) return y;
        if ((op == KX_MUL || op == KX_DIV) && y->op == KX_REAL && y->r == 1.0) return x;
    }
    Kx *r = kx_new(a, op, x->type);
    r->a = x;
    r->b = y;
    return r;
}

Kx *kx_substitute_var(Arena *a, const Kx *x, int var, Kx *with) {
    if (!x) return NULL;
    if (!kx_has(x, KX_VAR, var)) return (Kx *)x;
    if (x->op == KX_VAR) return with;
    Kx *l = kx_substitute_var(a, x->a, var, with), *r = kx_substitute_var(a, x->b, var, with);
    if (x->type == KT_INT && x->op >= KX_ADD && x->op <= KX_MAX) return kx_bin(a, x->op, l, r);
    Kx *copy = kx_new(a, x->op, x->type);
    *copy = *x;
    copy->a = l;
    copy->b = r;
    copy->c = kx_substitute_var(a, x->c, var, with);
    return copy;
}

Kx *kx_un(Arena *a, KxOp op, Kx *x) {
    NNC_ASSERT(x->type == KT_REAL);
    if (op == KX_NEG && x->op == KX_REAL) return kx_real(a, -x->r);
    Kx *r = kx_new(a, op, KT_REAL);
    r->a = x;
    return r;
}

Kx *kx_cmp(Arena *a, KxOp op, Kx *x, Kx *y) {
    NNC_ASSERT(x->type == y->type);
    Kx *r = kx_new(a, op, KT_BOOL);
    r->a = x;
    r->b = y;
    return r;
}

Kx *kx_select(Arena *a, Kx *cond, Kx *then, Kx *otherwise) {
    NNC_ASSERT(cond->type == KT_BOOL && then->type == otherwise->type);
    Kx *r = kx_new(a, KX_SELECT, then->type);
    r->a = cond;
    r->b = then;
    r->c = otherwise;
    return r;
}

Kx *kx_toreal(Arena *a, Kx *x) {
    if (x->type == KT_REAL) return x;
    if (x->op == KX_INT) return kx_real(a, (double)x->i);
    Kx *r = kx_new(a, KX_TOREAL, KT_REAL);
    r->a = x;
    return r;
}

Kx *kx_toint(Arena *a, Kx *x) {
    if (x->type == KT_INT) return x;
    NNC_ASSERT(x->type == KT_REAL);
    Kx *r = kx_new(a, KX_TOINT, KT_INT);
    r->a = x;
    return r;
}

Kx *kx_rand(Arena *a, Kx *key, Kx *counter) {
    NNC_ASSERT(key->type == KT_INT && counter->type == KT_INT);
    Kx *r = kx_new(a, KX_RAND, KT_REAL);
    r->a = key;
    r->b = counter;
    return r;
}

Kx *kx_npoly(Arena *a, NPoly p) {
    return kx_bin(a, KX_ADD, kx_bin(a, KX_MUL, kx_int(a, p.c1), kx_batch(a)), kx_int(a, p.c0));
}

static Ks *ks_new(Arena *a, KsBlock *parent, KsKind kind) {
    Ks *s = ARENA_NEW(a, Ks);
    s->kind = kind;
    VEC_PUSH(a, parent->items, parent->n, parent->cap, s);
    return s;
}

Ks *ks_for(Arena *a, KsBlock *parent, int var, Kx *extent, bool parallel) {
    NNC_ASSERT(extent->type == KT_INT);
    Ks *s = ks_new(a, parent, KS_FOR);
    s->var = var;
    s->extent = extent;
    s->parallel = parallel;
    return s;
}

void ks_decl(Arena *a, KsBlock *b, int local, Kx *value) {
    NNC_ASSERT(value->type == KT_REAL);
    Ks *s = ks_new(a, b, KS_DECL);
    s->var = local;
    s->value = value;
}

void ks_decl_at(Arena *a, KsBlock *b, int pos, int local, Kx *value) {
    NNC_ASSERT(pos >= 0 && pos < b->n + 1);
    ks_decl(a, b, local, value);
    Ks *s = b->items[b->n - 1];
    memmove(&b->items[pos + 1], &b->items[pos], sizeof(Ks *) * (size_t)(b->n - 1 - pos));
    b->items[pos] = s;
}

void ks_update(Arena *a, KsBlock *b, int local, KxOp op, Kx *value) {
    NNC_ASSERT(value->type == KT_REAL);
    Ks *s = ks_new(a, b, KS_UPDATE);
    s->var = local;
    s->update_op = op;
    s->value = value;
}

void ks_store(Arena *a, KsBlock *b, int buf, Kx *index, Kx *value, bool accumulate) {
    NNC_ASSERT(index->type == KT_INT && value->type != KT_BOOL);
    Ks *s = ks_new(a, b, KS_STORE);
    s->buf = buf;
    s->index = index;
    s->value = value;
    s->accumulate = accumulate;
}

void kx_visit_accesses(const Kx *x, KAccessFn fn, void *ctx) {
    if (!x) return;
    if (x->op == KX_LOAD) fn(ctx, (int)x->i, x->a, false);
    kx_visit_accesses(x->a, fn, ctx);
    kx_visit_accesses(x->b, fn, ctx);
    kx_visit_accesses(x->c, fn, ctx);
}

void ks_visit_accesses(const KsBlock *blk, KAccessFn fn, void *ctx) {
    for (int i = 0; i < blk->n; i++) {
        const Ks *s = blk->items[i];
        kx_visit_accesses(s->extent, fn, ctx);
        kx_visit_accesses(s->value, fn, ctx);
        kx_visit_accesses(s->index, fn, ctx);
        if (s->kind == KS_STORE) fn(ctx, s->buf, s->index, true);
        if (s->kind == KS_FOR) ks_visit_accesses(&s->body, fn, ctx);
    }
}

int64_t kprog_workspace_lower_bound(const KProgram *p, int64_t batch) {
    /* live[t]: the footprint of the regions in use at step t, the steps
     * being the kernels and the return after them */
    int64_t *live = xcalloc((size_t)p->nkernels + 1, sizeof(int64_t)), peak = 0;
    for (int b = 0; b < p->nbufs; b++) {
        const KBuf *bf = &p->bufs[b];
        if (bf->kind != KB_WORK || bf->live_first < 0) continue;
        int64_t size = npoly_eval(kbuf_footprint(bf), batch);
        for (int t = bf->live_first; t <= bf->live_last; t++) live[t] += size;
    }
    for (int t = 0; t <= p->nkernels; t++)
        if (live[t] > peak) peak = live[t];
    free(live);
    return peak;
}

/* a >= b for every N >= 1 (both are lines in N) */
static bool npoly_covers(NPoly a, NPoly b) { return a.c1 >= b.c1 && a.c0 + a.c1 >= b.c0 + b.c1; }

static int by_slope(const void *pa, const void *pb) {
    const NPoly *a = pa, *b = pb;
    if (a->c1 != b->c1) return a->c1 < b->c1 ? -1 : 1;
    return a->c0 < b->c0 ? -1 : a->c0 > b->c0;
}

int npoly_envelope(NPoly *terms, int n) {
    int kept = 0;
    for (int i = 0; i < n; i++) {
        bool covered = false;
        for (int j = 0; j < n && !covered; j++)
            /* of two equal terms, the first is kept */
            covered = j != i && npoly_covers(terms[j], terms[i]) &&
                      (!npoly_covers(terms[i], terms[j]) || j < i);
        if (!covered) terms[kept++] = terms[i];
    }
    /* qsort's array must not be NULL, even empty: no terms may come as NULL */
    if (kept > 1) qsort(terms, (size_t)kept, sizeof *terms, by_slope);
    return kept;
}

void kprog_set_workspace(KProgram *p, NPoly *terms, int n) {
    n = npoly_envelope(terms, n);
    p->workspace = ARENA_ARRAY(p->arena, NPoly, n + 1);
    if (n) memcpy(p->workspace, terms, sizeof(NPoly) * (size_t)n);
    p->nworkspace = n;
}

int64_t kprog_workspace_size(const KProgram *p, int64_t batch) {
    int64_t size = 0;
    for (int i = 0; i < p->nworkspace; i++)
        if (npoly_eval(p->workspace[i], batch) > size) size = npoly_eval(p->workspace[i], batch);
    return size;
}

typedef struct RootMarks {
    const KProgram *p;
    bool *used;
} RootMarks;

static void mark_root(void *ctx, int buf, const Kx *index, bool store) {
    RootMarks *r = ctx;
    (void)index;
    (void)store;
    r->used[kprog_root_buf(r->p, buf)] = true;
}

void kblock_mark_roots(const KProgram *p, const KsBlock *b, bool *used) {
    ks_visit_accesses(b, mark_root, &(RootMarks){p, used});
}
