/* emit_cuda.c - Kernel IR -> CUDA C and a plan of launches (see cuda_backend.h).
 *
 * Expressions are written fully parenthesised: the text is read by NVRTC,
 * not by people, and this keeps the translation a one-line case per
 * operation. Ints are long long, loads of i32 buffers are widened, reals
 * follow the program's precision, and the generator is runtime/rng.h's
 * function written out once more, so masks and initial weights match the
 * CPU bit for bit. */
#include "backend/cuda/cuda_backend.h"
#include "backend/c/c_backend.h"
#include "support/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct Ce {
    FILE *out;
    const KProgram *p;
    const Kernel *k;
    int *refs;      /* per local: references (declarations, updates, reads) in the kernel */
    bool *constant; /* per local: the same in every thread (see find_constants) */
    bool *stored;   /* per root buffer: written by the kernel */
} Ce;

/* ---- analysis ----------------------------------------------------------------------------- */

/* Ints of N and constants only: what the host can compute before a launch. */
static bool host_int(const Kx *x) {
    switch (x->op) {
    case KX_INT: case KX_BATCH: return true;
    case KX_ADD: case KX_SUB: case KX_MUL: case KX_DIV: case KX_MOD: case KX_MIN: case KX_MAX:
        return x->type == KT_INT && host_int(x->a) && host_int(x->b);
    default: return false;
    }
}

int64_t cuda_eval_int(const Kx *x, int64_t batch) {
    switch (x->op) {
    case KX_INT: return x->i;
    case KX_BATCH: return batch;
    default: break;
    }
    int64_t a = cuda_eval_int(x->a, batch), b = cuda_eval_int(x->b, batch);
    switch (x->op) {
    case KX_ADD: return a + b;
    case KX_SUB: return a - b;
    case KX_MUL: return a * b;
    case KX_DIV: return b ? a / b : 0;
    case KX_MOD: return b ? a % b : 0;
    case KX_MIN: return a < b ? a : b;
    case KX_MAX: return a > b ? a : b;
    default: NNC_BUG("not a host int expression (%s)", kx_names[x->op]);
    }
}

static bool kx_equal(const Kx *x, const Kx *y) {
    if (!x || !y) return x == y;
    return x->op == y->op && x->type == y->type && x->i == y->i && x->r == y->r && kx_equal(x->a, y->a) &&
           kx_equal(x->b, y->b) && kx_equal(x->c, y->c);
}

static void count_kx(const Kx *x, int *refs) {
    if (!x) return;
    if (x->op == KX_LOCAL) refs[x->i]++;
    count_kx(x->a, refs);
    count_kx(x->b, refs);
    count_kx(x->c, refs);
}

static void count_stmt(const Ks *s, int *refs, int *decls, int *updates) {
    count_kx(s->extent, refs);
    count_kx(s->value, refs);
    count_kx(s->index, refs);
    if (s->kind == KS_DECL || s->kind == KS_UPDATE) refs[s->var]++;
    if (s->kind == KS_DECL && decls) decls[s->var]++;
    if (s->kind == KS_UPDATE && updates) updates[s->var]++;
    if (s->kind == KS_FOR)
        for (int i = 0; i < s->body.n; i++) count_stmt(s->body.items[i], refs, decls, updates);
}

static bool block_stores(const KsBlock *b) {
    for (int i = 0; i < b->n; i++) {
        const Ks *s = b->items[i];
        if (s->kind == KS_STORE || (s->kind == KS_FOR && block_stores(&s->body))) return true;
    }
    return false;
}

/* Per-local counts inside one statement, to compare with the kernel's. */
typedef struct Counts {
    int *refs, *decls, *updates;
} Counts;

static Counts counts_of(const Ce *e, const Ks *s) {
    size_t n = (size_t)e->p->nlocals + 1;
    Counts c = {xcalloc(n, sizeof(int)), xcalloc(n, sizeof(int)), xcalloc(n, sizeof(int))};
    count_stmt(s, c.refs, c.decls, c.updates);
    return c;
}

static void counts_free(Counts *c) {
    free(c->refs);
    free(c->decls);
    free(c->updates);
}

/* Every local declared inside s is used only inside it: its copies may be
 * private to each thread or lane that runs a share of s. */
static bool locals_private(const Ce *e, const Counts *c) {
    for (int l = 0; l < e->p->nlocals; l++)
        if (c->decls[l] && c->refs[l] != e->refs[l]) return false;
    return true;
}

static void collect_stores(const KProgram *p, const Kx *x, const Kx **store_index, bool *ok) {
    if (!x || !*ok) return;
    if (x->op == KX_LOAD) {
        const Kx *si = store_index[kprog_root_buf(p, (int)x->i)];
        if (si && !kx_equal(si, x->a)) *ok = false;
    }
    collect_stores(p, x->a, store_index, ok);
    collect_stores(p, x->b, store_index, ok);
    collect_stores(p, x->c, store_index, ok);
}

static void check_loads(const KProgram *p, const KsBlock *b, const Kx **store_index, bool *ok) {
    for (int i = 0; i < b->n && *ok; i++) {
        const Ks *s = b->items[i];
        collect_stores(p, s->extent, store_index, ok);
        collect_stores(p, s->value, store_index, ok);
        collect_stores(p, s->index, store_index, ok);
        if (s->kind == KS_FOR) check_loads(p, &s->body, store_index, ok);
    }
}

/* Whether the iterations of loop f may run in any order, at once: no scalar
 * carried from one to the next, stores one to one in f's variable (directly
 * in its body), and a stored buffer read only at the element the same
 * iteration writes. The lowering marks most such loops `parallel`; this
 * also finds the inner loops of elementwise kernels. */
static bool independent(const Ce *e, const Ks *f) {
    Counts c = counts_of(e, f);
    bool ok = locals_private(e, &c);
    for (int l = 0; l < e->p->nlocals && ok; l++)
        if (c.updates[l] && !c.decls[l]) ok = false;
    counts_free(&c);
    if (!ok) return false;
    if (f->parallel) return true;
    const Kx **store_index = xcalloc((size_t)e->p->nbufs + 1, sizeof(Kx *));
    for (int i = 0; i < f->body.n && ok; i++) {
        const Ks *s = f->body.items[i];
        if (s->kind == KS_FOR && block_stores(&s->body)) ok = false;
        if (s->kind != KS_STORE) continue;
        int64_t coeff;
        int root = kprog_root_buf(e->p, s->buf);
        if (!kx_var_coeff(s->index, f->var, &coeff) || coeff == 0) ok = false;
        else if (store_index[root] && !kx_equal(store_index[root], s->index)) ok = false;
        else store_index[root] = s->index;
    }
    if (ok) check_loads(e->p, &f->body, store_index, &ok);
    free(store_index);
    return ok;
}

/* A loop that only folds values into scalars declared outside it (one
 * operation each, never read inside it): its iterations can be shared by
 * the lanes of a warp and the partial values combined. Fills ops[local]
 * with the update operation of each such scalar (KX_COUNT for none). */
static bool reduction(const Ce *e, const Ks *f, KxOp *ops) {
    if (block_stores(&f->body)) return false;
    Counts c = counts_of(e, f);
    bool ok = locals_private(e, &c);
    for (int l = 0; l < e->p->nlocals; l++) ops[l] = KX_COUNT;
    for (int l = 0; l < e->p->nlocals && ok; l++) {
        if (!c.updates[l] || c.decls[l]) continue;
        if (c.refs[l] != c.updates[l]) ok = false; /* read inside the loop */
        ops[l] = KX_COUNT + 1; /* found below */
    }
    counts_free(&c);
    return ok;
}

static void find_update_ops(const KsBlock *b, KxOp *ops, bool *ok) {
    for (int i = 0; i < b->n; i++) {
        const Ks *s = b->items[i];
        if (s->kind == KS_FOR) find_update_ops(&s->body, ops, ok);
        if (s->kind != KS_UPDATE || ops[s->var] == KX_COUNT) continue;
        if (ops[s->var] == KX_COUNT + 1) ops[s->var] = s->update_op;
        else if (ops[s->var] != s->update_op) *ok = false;
    }
}

static bool reduction_ops(const Ce *e, const Ks *f, KxOp *ops) {
    if (!reduction(e, f, ops)) return false;
    bool ok = true;
    find_update_ops(&f->body, ops, &ok);
    return ok;
}

/* ---- expressions -------------------------------------------------------------------------- */

static void emit_real(Ce *e, double r) {
    if (!e->p->real_f64 || isnan(r) || isinf(r)) {
        c_emit_float(e->out, r); /* INFINITY and NAN are defined in the prelude */
        return;
    }
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", r);
    fprintf(e->out, "%s%s", buf, strpbrk(buf, ".en") ? "" : ".0");
}

/* The math function `f` (expf's name without the f) at the program's precision. */
static const char *fn(Ce *e, const char *f) {
    static char buf[32];
    snprintf(buf, sizeof buf, "%s%s", f, e->p->real_f64 ? "" : "f");
    return buf;
}

static void emit_x(Ce *e, const Kx *x);

static void emit_call(Ce *e, const char *name, const Kx *a, const Kx *b) {
    fprintf(e->out, "%s(", name);
    emit_x(e, a);
    if (b) {
        fputs(", ", e->out);
        emit_x(e, b);
    }
    fputc(')', e->out);
}

static void emit_access(Ce *e, int buf, const Kx *index) {
    fprintf(e->out, "b%d[", kprog_root_buf(e->p, buf));
    emit_x(e, index);
    fputc(']', e->out);
}

static void emit_x(Ce *e, const Kx *x) {
    static const char *const infix[KX_COUNT] = {
        [KX_ADD] = "+", [KX_SUB] = "-", [KX_MUL] = "*", [KX_DIV] = "/", [KX_MOD] = "%",
        [KX_LT] = "<", [KX_LE] = "<=", [KX_GT] = ">", [KX_GE] = ">=", [KX_EQ] = "==", [KX_NE] = "!=",
    };
    static const char *const unary[KX_COUNT] = {
        [KX_EXP] = "exp", [KX_LOG] = "log", [KX_SQRT] = "sqrt", [KX_ABS] = "fabs", [KX_COS] = "cos",
        [KX_SIN] = "sin", [KX_FLOOR] = "floor", [KX_LOG1P] = "log1p",
    };
    FILE *out = e->out;
    bool real = x->type == KT_REAL;
    switch (x->op) {
    case KX_INT: fprintf(out, "%lldLL", (long long)x->i); return;
    case KX_REAL: emit_real(e, x->r); return;
    case KX_BATCH: fputs("N", out); return;
    case KX_SEED: fputs("((long long)seed)", out); return;
    case KX_VAR: fprintf(out, "i%lld", (long long)x->i); return;
    case KX_LOCAL: fprintf(out, "s%lld", (long long)x->i); return;
    case KX_LOAD:
        if (x->type == KT_INT) fputs("((long long)", out);
        emit_access(e, (int)x->i, x->a);
        if (x->type == KT_INT) fputc(')', out);
        return;
    case KX_MOD:
        if (real) return emit_call(e, fn(e, "fmod"), x->a, x->b);
        /* fall through */
    case KX_ADD: case KX_SUB: case KX_MUL: case KX_DIV:
    case KX_LT: case KX_LE: case KX_GT: case KX_GE: case KX_EQ: case KX_NE:
        fputc('(', out);
        emit_x(e, x->a);
        fprintf(out, " %s ", infix[x->op]);
        emit_x(e, x->b);
        fputc(')', out);
        return;
    case KX_MIN: case KX_MAX:
        if (real) return emit_call(e, fn(e, x->op == KX_MIN ? "fmin" : "fmax"), x->a, x->b);
        fputs("nnc_", out);
        return emit_call(e, x->op == KX_MIN ? "imin" : "imax", x->a, x->b);
    case KX_POW: return emit_call(e, fn(e, "pow"), x->a, x->b);
    case KX_NEG:
        fputs("(-", out);
        emit_x(e, x->a);
        fputc(')', out);
        return;
    case KX_EXP: case KX_LOG: case KX_SQRT: case KX_ABS: case KX_COS: case KX_SIN: case KX_FLOOR: case KX_LOG1P:
        return emit_call(e, fn(e, unary[x->op]), x->a, NULL);
    case KX_SELECT:
        fputc('(', out);
        emit_x(e, x->a);
        fputs(" ? ", out);
        emit_x(e, x->b);
        fputs(" : ", out);
        emit_x(e, x->c);
        fputc(')', out);
        return;
    case KX_TOREAL: fputs("((real)", out); emit_x(e, x->a); fputc(')', out); return;
    case KX_TOINT: fputs("((long long)", out); emit_x(e, x->a); fputc(')', out); return;
    case KX_RAND: return emit_call(e, "nnc_rand", x->a, x->b);
    default: NNC_BUG("kernel expression %d", (int)x->op);
    }
}

/* ---- statements --------------------------------------------------------------------------- */

static void ind(Ce *e, int depth) { fprintf(e->out, "%*s", 4 * depth, ""); }

static void emit_update(Ce *e, int local, KxOp op, const Kx *value) {
    if (op == KX_ADD) fprintf(e->out, "s%d = s%d + ", local, local);
    else fprintf(e->out, "s%d = %s(s%d, ", local, fn(e, op == KX_MAX ? "fmax" : "fmin"), local);
    emit_x(e, value);
    fputs(op == KX_ADD ? ";\n" : ");\n", e->out);
}

/* `for (long long iV = FIRST; iV < EXTENT; iV += STEP) {` */
static void emit_for_head(Ce *e, const Ks *f, const char *first, const char *step) {
    fprintf(e->out, "for (long long i%d = %s; i%d < ", f->var, first, f->var);
    emit_x(e, f->extent);
    fprintf(e->out, "; i%d += %s) {\n", f->var, step);
}

/* Statements run by one thread, in order. */
static void emit_seq(Ce *e, const KsBlock *b, int depth) {
    for (int i = 0; i < b->n; i++) {
        const Ks *s = b->items[i];
        ind(e, depth);
        switch (s->kind) {
        case KS_FOR:
            emit_for_head(e, s, "0", "1");
            emit_seq(e, &s->body, depth + 1);
            ind(e, depth);
            fputs("}\n", e->out);
            break;
        case KS_DECL:
            fprintf(e->out, "s%d = ", s->var);
            emit_x(e, s->value);
            fputs(";\n", e->out);
            break;
        case KS_UPDATE: emit_update(e, s->var, s->update_op, s->value); break;
        case KS_STORE:
            emit_access(e, s->buf, s->index);
            fputs(s->accumulate ? " += " : " = ", e->out);
            emit_x(e, s->value);
            fputs(";\n", e->out);
            break;
        }
    }
}

/* Statement s on lane 0 alone, its stores seen by the other lanes after it. */
static void emit_on_lane0(Ce *e, const Ks *s, int depth) {
    ind(e, depth);
    fputs("if (lane == 0) {\n", e->out);
    emit_seq(e, &(KsBlock){.items = (Ks **)&s, .n = 1}, depth + 1);
    ind(e, depth);
    fputs("}\n", e->out);
    ind(e, depth);
    fputs("__syncwarp();\n", e->out);
}

/* Statements run by the 32 lanes of a warp together: scalars hold the same
 * value in every lane between statements. */
static void emit_warp(Ce *e, const KsBlock *b, int depth) {
    FILE *out = e->out;
    KxOp *ops = xmalloc(sizeof(KxOp) * ((size_t)e->p->nlocals + 1));
    for (int i = 0; i < b->n; i++) {
        const Ks *s = b->items[i];
        if (s->kind == KS_DECL || s->kind == KS_UPDATE) {
            emit_seq(e, &(KsBlock){.items = (Ks **)&b->items[i], .n = 1}, depth);
            continue;
        }
        if (s->kind == KS_STORE) {
            emit_on_lane0(e, s, depth);
            continue;
        }
        if (reduction_ops(e, s, ops)) {
            /* Each lane folds every 32nd value into its own copy (lane 0's
             * starts from the scalar's value, the others' from zero for a
             * sum), then the copies are combined across the warp. */
            for (int l = 0; l < e->p->nlocals; l++)
                if (ops[l] == KX_ADD) ind(e, depth), fprintf(out, "if (lane != 0) s%d = 0;\n", l);
            ind(e, depth);
            emit_for_head(e, s, "lane", "32");
            emit_seq(e, &s->body, depth + 1);
            ind(e, depth);
            fputs("}\n", out);
            for (int l = 0; l < e->p->nlocals; l++) {
                if (ops[l] != KX_ADD && ops[l] != KX_MAX && ops[l] != KX_MIN) continue;
                ind(e, depth);
                fprintf(out, "for (int o = 16; o > 0; o >>= 1) ");
                if (ops[l] == KX_ADD) fprintf(out, "s%d = s%d + __shfl_xor_sync(0xffffffffu, s%d, o);\n", l, l, l);
                else fprintf(out, "s%d = %s(s%d, __shfl_xor_sync(0xffffffffu, s%d, o));\n", l,
                             fn(e, ops[l] == KX_MAX ? "fmax" : "fmin"), l, l);
            }
        } else if (independent(e, s)) {
            ind(e, depth);
            emit_for_head(e, s, "lane", "32");
            emit_seq(e, &s->body, depth + 1);
            ind(e, depth);
            fputs("}\n", out);
            ind(e, depth);
            fputs("__syncwarp();\n", out);
        } else {
            /* In order, on lane 0; then every scalar it set is sent to the others. */
            emit_on_lane0(e, s, depth);
            Counts c = counts_of(e, s);
            for (int l = 0; l < e->p->nlocals; l++)
                if ((c.decls[l] || c.updates[l]) && c.refs[l] != e->refs[l])
                    ind(e, depth), fprintf(out, "s%d = __shfl_sync(0xffffffffu, s%d, 0);\n", l, l);
            counts_free(&c);
        }
    }
    free(ops);
}

/* ---- launches ----------------------------------------------------------------------------- */

static bool uniform_kx(const Ce *e, const Kx *x) {
    if (!x) return true;
    if (x->op == KX_VAR) return false;
    if (x->op == KX_LOCAL && !e->constant[x->i]) return false;
    if (x->op == KX_LOAD && e->stored[kprog_root_buf(e->p, (int)x->i)]) return false;
    return uniform_kx(e, x->a) && uniform_kx(e, x->b) && uniform_kx(e, x->c);
}

static void mark_stored(const KProgram *p, const KsBlock *b, bool *stored) {
    for (int i = 0; i < b->n; i++) {
        const Ks *s = b->items[i];
        if (s->kind == KS_STORE) stored[kprog_root_buf(p, s->buf)] = true;
        if (s->kind == KS_FOR) mark_stored(p, &s->body, stored);
    }
}

/* The constant scalars of a kernel: declared once at its top from
 * constants, N, the seed, other constant scalars and buffers the kernel
 * does not write (an optimizer's step size), never changed. Every launch of
 * the kernel computes them itself, so that they tie no statements together. */
static void find_constants(Ce *e) {
    const KsBlock *b = &e->k->body;
    size_t n = (size_t)e->p->nlocals + 1;
    int *decls = xcalloc(n, sizeof(int)), *updates = xcalloc(n, sizeof(int)), *refs = xcalloc(n, sizeof(int));
    for (int i = 0; i < b->n; i++) count_stmt(b->items[i], refs, decls, updates);
    mark_stored(e->p, b, e->stored);
    for (int i = 0; i < b->n; i++) {
        const Ks *s = b->items[i];
        if (s->kind == KS_DECL && decls[s->var] == 1 && updates[s->var] == 0 && uniform_kx(e, s->value))
            e->constant[s->var] = true;
    }
    free(decls);
    free(updates);
    free(refs);
}

static bool constant_local(const Ce *e, const Ks *s) { return s->kind == KS_DECL && e->constant[s->var]; }

static const char *elem_type(const KBuf *b) { return b->dtype == DT_I32 ? "int" : "real"; }

/* The function's head and the addresses of the buffers the kernel touches
 * (its constant scalars may read some the launch's statements do not). */
static void emit_prologue(Ce *e, const char *name) {
    const KsBlock *body = &e->k->body;
    FILE *out = e->out;
    const KProgram *p = e->p;
    fprintf(out, "extern \"C\" __global__ void __launch_bounds__(%d) %s(real *state, real *ws", CUDA_BLOCK, name);
    for (int a = 0; a < p->nargs; a++) fprintf(out, ", void *a%d", a);
    fputs(", long long N, unsigned long long seed) {\n", out);
    bool *used = xcalloc((size_t)p->nbufs + 1, sizeof(bool));
    kblock_mark_roots(p, body, used);
    for (int b = 0; b < p->nbufs; b++) {
        if (!used[b]) continue;
        const KBuf *bf = &p->bufs[b];
        switch (bf->kind) {
        case KB_STATE: fprintf(out, "    real *b%d = state + %lldLL;\n", b, (long long)bf->offset.c0); break;
        case KB_WORK:
            fprintf(out, "    real *b%d = ws + (%lldLL * N + %lldLL);\n", b, (long long)bf->offset.c1,
                    (long long)bf->offset.c0);
            break;
        case KB_ARG: fprintf(out, "    %s *b%d = (%s *)a%d;\n", elem_type(bf), b, elem_type(bf), bf->arg); break;
        default: NNC_BUG("address of a view");
        }
    }
    free(used);
    fputs("    (void)state; (void)ws; (void)N; (void)seed;\n", out);
    for (int l = 0; l < p->nlocals; l++)
        if (e->refs[l]) fprintf(out, "    real s%d = 0;\n    (void)s%d;\n", l, l);
    /* the kernel's constant scalars */
    for (int i = 0; i < e->k->body.n; i++)
        if (constant_local(e, e->k->body.items[i]))
            emit_seq(e, &(KsBlock){.items = &e->k->body.items[i], .n = 1}, 1);
}

/* Does a row whose body is `b` want a warp: a reduction loop of unknown or
 * large extent? */
static bool wants_warp(Ce *e, const KsBlock *b) {
    KxOp *ops = xmalloc(sizeof(KxOp) * ((size_t)e->p->nlocals + 1));
    bool want = false;
    for (int i = 0; i < b->n && !want; i++) {
        const Ks *s = b->items[i];
        if (s->kind != KS_FOR || !reduction_ops(e, s, ops)) continue;
        want = s->extent->op != KX_INT || s->extent->i >= 32;
    }
    free(ops);
    return want;
}

/* One launch for the top-level statements items[0..n) of kernel k. */
static void plan_group(Ce *e, CudaPlan *plan, Ks **items, int n, const char *name) {
    Arena *a = e->p->arena;
    CudaStep st = {.kind = CS_LAUNCH, .kernel = (int)(e->k - e->p->kernels), .fn = xstrdup(name)};
    st.extents = xcalloc(8, sizeof(Kx *));
    KsBlock body = {.items = items, .n = n};
    int vars[8];
    if (n == 1 && items[0]->kind == KS_FOR) {
        const Ks *f = items[0];
        /* A loop carried from one iteration to the next around one that is
         * not (a sum over the batch into each column): swap them, so that
         * the columns are the rows of the launch. */
        if (!independent(e, f) && f->body.n == 1 && f->body.items[0]->kind == KS_FOR &&
            host_int(f->body.items[0]->extent) && independent(e, f->body.items[0]) &&
            !kx_has(f->body.items[0]->extent, KX_VAR, -1)) {
            const Ks *inner = f->body.items[0];
            Ks *outer = ARENA_NEW(a, Ks);
            *outer = *f;
            outer->body = inner->body;
            Ks *swapped = ARENA_NEW(a, Ks);
            *swapped = *inner;
            swapped->parallel = true; /* checked above, before its body became the loop */
            swapped->body = (KsBlock){.items = ARENA_ARRAY(a, Ks *, 1), .n = 1, .cap = 1};
            swapped->body.items[0] = outer;
            f = swapped;
        }
        while (st.nextents < 8 && f->kind == KS_FOR && host_int(f->extent) && independent(e, f)) {
            vars[st.nextents] = f->var;
            st.extents[st.nextents++] = f->extent;
            body = f->body;
            if (f->body.n != 1 || f->body.items[0]->kind != KS_FOR) break;
            f = f->body.items[0];
        }
        if (st.nextents == 0) body = (KsBlock){.items = items, .n = n};
    }
    st.warp = st.nextents == 0 || wants_warp(e, &body);

    FILE *out = e->out;
    emit_prologue(e, name);
    fputs("    const long long rows = 1LL", out);
    for (int i = 0; i < st.nextents; i++) {
        fputs(" * ", out);
        emit_x(e, st.extents[i]);
    }
    fputs(";\n", out);
    if (st.warp) {
        fputs("    const int lane = threadIdx.x & 31;\n"
              "    for (long long t = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5; t < rows;\n"
              "         t += ((long long)gridDim.x * blockDim.x) >> 5) {\n", out);
    } else {
        fputs("    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < rows;\n"
              "         t += (long long)gridDim.x * blockDim.x) {\n", out);
    }
    if (st.nextents) fputs("        long long r = t;\n", out);
    for (int i = st.nextents - 1; i >= 0; i--) {
        fprintf(out, "        const long long i%d = r %% ", vars[i]);
        emit_x(e, st.extents[i]);
        fputs(";\n        r = r / ", out);
        emit_x(e, st.extents[i]);
        fputs(";\n", out);
    }
    /* The constant scalars were computed in the prologue. */
    KsBlock rest = {.items = xmalloc(sizeof(Ks *) * ((size_t)body.n + 1))};
    for (int i = 0; i < body.n; i++)
        if (st.nextents || !constant_local(e, body.items[i])) rest.items[rest.n++] = body.items[i];
    if (st.warp) emit_warp(e, &rest, 2);
    else emit_seq(e, &rest, 2);
    free(rest.items);
    fputs("    }\n}\n\n", out);
    plan->steps[plan->nsteps++] = st;
}

/* Splits a loop kernel's top-level statements into launches: statements
 * that share a scalar (other than a constant one) stay together. */
static void plan_kernel(Ce *e, CudaPlan *plan, const char *prefix) {
    const KsBlock *b = &e->k->body;
    int nl = e->p->nlocals;
    size_t n = (size_t)nl + 1;
    const bool *constant = e->constant;
    /* last[l]: the last top-level statement that touches local l */
    int *last = xmalloc(sizeof(int) * n);
    for (int l = 0; l < nl; l++) last[l] = -1;
    for (int i = 0; i < b->n; i++) {
        Counts c = counts_of(e, b->items[i]);
        for (int l = 0; l < nl; l++)
            if (c.refs[l]) last[l] = i;
        counts_free(&c);
    }
    int part = 0;
    for (int i = 0; i < b->n;) {
        if (constant_local(e, b->items[i])) {
            i++;
            continue;
        }
        int end = i;
        for (int j = i; j <= end; j++) {
            Counts c = counts_of(e, b->items[j]);
            for (int l = 0; l < nl; l++)
                if (c.refs[l] && !constant[l] && last[l] > end) end = last[l];
            counts_free(&c);
        }
        char *name = xmalloc(strlen(prefix) + 32);
        sprintf(name, "%s_%d", prefix, part++);
        plan_group(e, plan, (Ks **)&b->items[i], end - i + 1, name);
        free(name);
        i = end + 1;
    }
    free(last);
}

static const char prelude[] =
    "/* generated by nnc */\n"
    "#define INFINITY __int_as_float(0x7f800000)\n"
    "#define NAN __int_as_float(0x7fffffff)\n"
    "/* runtime/rng.h */\n"
    "__device__ __forceinline__ unsigned long long nnc_mix64(unsigned long long z) {\n"
    "    z += 0x9E3779B97F4A7C15ull;\n"
    "    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;\n"
    "    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;\n"
    "    return z ^ (z >> 31);\n"
    "}\n"
    "__device__ __forceinline__ real nnc_rand(long long key, long long counter) {\n"
    "    unsigned long long z = nnc_mix64(nnc_mix64((unsigned long long)key) ^ (unsigned long long)counter);\n"
    "    return ((real)(z >> 41) + (real)0.5) * (real)(1.0 / 8388608.0);\n"
    "}\n"
    "__device__ __forceinline__ long long nnc_imin(long long a, long long b) { return a < b ? a : b; }\n"
    "__device__ __forceinline__ long long nnc_imax(long long a, long long b) { return a > b ? a : b; }\n\n";

CudaPlan *cuda_plan_program(const KProgram *p, const char *prefix) {
    CudaPlan *plan = xcalloc(1, sizeof *plan);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    fprintf(out, "typedef %s real;\n%s", p->real_f64 ? "double" : "float", prelude);
    Ce e = {.out = out, .p = p};
    int cap = 0;
    for (int k = 0; k < p->nkernels; k++) cap += p->kernels[k].kind == KK_GEMM ? 1 : p->kernels[k].body.n;
    plan->steps = xcalloc((size_t)cap + 1, sizeof(CudaStep));
    for (int k = 0; k < p->nkernels; k++) {
        const Kernel *kn = &p->kernels[k];
        if (kn->kind == KK_GEMM) {
            plan->steps[plan->nsteps++] = (CudaStep){.kind = CS_GEMM, .kernel = k};
            continue;
        }
        e.k = kn;
        e.refs = xcalloc((size_t)p->nlocals + 1, sizeof(int));
        e.constant = xcalloc((size_t)p->nlocals + 1, sizeof(bool));
        e.stored = xcalloc((size_t)p->nbufs + 1, sizeof(bool));
        find_constants(&e);
        for (int i = 0; i < kn->body.n; i++) count_stmt(kn->body.items[i], e.refs, NULL, NULL);
        fprintf(out, "/* kernel %d: %s */\n", k, kn->name ? kn->name : "");
        char name[64];
        snprintf(name, sizeof name, "%s_k%d", prefix, k);
        plan_kernel(&e, plan, name);
        free(e.refs);
        free(e.constant);
        free(e.stored);
    }
    fclose(out);
    plan->source = text;
    return plan;
}

void cuda_plan_free(CudaPlan *plan) {
    if (!plan) return;
    for (int i = 0; i < plan->nsteps; i++) {
        free(plan->steps[i].fn);
        free(plan->steps[i].extents);
    }
    free(plan->steps);
    free(plan->source);
    free(plan);
}
