/* emit_c.c - Kernel IR -> standalone C99 (see c_backend.h).
 *
 * The translation is one to one, like the LLVM backend's: each loop kernel
 * becomes a static function taking one pointer per buffer it touches (const
 * when it only reads it, restrict always: distinct buffers never overlap),
 * each statement a C statement, each expression tree a C expression with
 * the parentheses its shape needs. The program function computes the
 * buffers' addresses as codegen.c does and calls the kernels in order.
 *
 * Numbers follow the LLVM backend: reals are float (every constant is
 * rounded to float and written with enough digits to read back exactly),
 * ints are int64_t, loads of i32 buffers are integers, min / max of reals
 * are fminf / fmaxf, and comparisons are ordered except !=. */
#include "backend/c/c_backend.h"
#include "backend/c/support_text.h"
#include "support/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* C's precedence levels, lowest first, for the parentheses of expressions. */
enum { P_ANY, P_COND, P_EQ, P_REL, P_ADD, P_MUL, P_UNARY, P_POSTFIX };

enum { COMMENT_WIDTH = 100 };

/* A buffer's use in a kernel or a program. */
enum { USE_READ = 1, USE_WRITE = 2 };

typedef struct Em {
    FILE *out;
    const KProgram *p;
    const char *batch; /* how N is spelled: "N" in kernels, "batch" in the program function */
} Em;

/* ---- expressions ------------------------------------------------------------------------- */

static bool is_cmp(KxOp op) { return op >= KX_LT && op <= KX_NE; }

static bool negative_real(double r) {
    float f = (float)r;
    return !isnan(f) && signbit(f);
}

static int precedence(const Kx *x) {
    bool real = x->type == KT_REAL;
    switch (x->op) {
    case KX_INT: return x->i < 0 ? P_UNARY : P_POSTFIX;
    case KX_REAL: return negative_real(x->r) ? P_UNARY : P_POSTFIX;
    case KX_SEED: return P_UNARY; /* (int64_t)seed */
    case KX_ADD: case KX_SUB: return P_ADD;
    case KX_MUL: case KX_DIV: return P_MUL;
    case KX_MOD: return real ? P_POSTFIX : P_MUL;
    case KX_MIN: case KX_MAX: return real ? P_POSTFIX : P_COND;
    case KX_LT: case KX_LE: case KX_GT: case KX_GE: return P_REL;
    case KX_EQ: case KX_NE: return P_EQ;
    case KX_SELECT: return P_COND;
    case KX_NEG: case KX_TOREAL: case KX_TOINT: return P_UNARY;
    default: return P_POSTFIX;
    }
}

/* An int expression whose C type is narrower than int64_t (a literal that
 * fits in int, a load of an i32 buffer): arithmetic between two of them is
 * done in int64_t, as the Kernel IR says, by a cast. */
static bool narrow_int(const Kx *x) {
    switch (x->op) {
    case KX_INT: return x->i >= INT32_MIN && x->i <= INT32_MAX;
    case KX_LOAD: return x->type == KT_INT;
    case KX_MIN: case KX_MAX: return x->type == KT_INT && narrow_int(x->a) && narrow_int(x->b);
    case KX_SELECT: return x->type == KT_INT && narrow_int(x->b) && narrow_int(x->c);
    default: return false;
    }
}

/* A float constant that reads back exactly: the shortest of 6..9 digits. */
void c_emit_float(FILE *out, double r) {
    float f = (float)r;
    if (isnan(f)) {
        fputs("NAN", out);
        return;
    }
    if (isinf(f)) {
        fputs(f < 0 ? "-INFINITY" : "INFINITY", out);
        return;
    }
    char buf[64];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    fputs(buf, out);
    if (!strpbrk(buf, ".e")) fputs(".0", out);
    fputc('f', out);
}

static void emit_kx(Em *e, const Kx *x, int need);

static void emit_call(Em *e, const char *fn, const Kx *a, const Kx *b) {
    fprintf(e->out, "%s(", fn);
    emit_kx(e, a, P_COND);
    if (b) {
        fputs(", ", e->out);
        emit_kx(e, b, P_COND);
    }
    fputc(')', e->out);
}

static void emit_load(Em *e, int buf, const Kx *index) {
    fprintf(e->out, "b%d[", kprog_root_buf(e->p, buf));
    emit_kx(e, index, P_ANY);
    fputc(']', e->out);
}

static void emit_binary(Em *e, const Kx *x, int prec) {
    static const char *const ops[KX_COUNT] = {
        [KX_ADD] = "+", [KX_SUB] = "-", [KX_MUL] = "*", [KX_DIV] = "/", [KX_MOD] = "%",
        [KX_LT] = "<", [KX_LE] = "<=", [KX_GT] = ">", [KX_GE] = ">=", [KX_EQ] = "==", [KX_NE] = "!=",
    };
    if (!is_cmp(x->op) && x->type == KT_INT && narrow_int(x->a) && narrow_int(x->b)) {
        fputs("(int64_t)", e->out);
        emit_kx(e, x->a, P_UNARY);
    } else {
        emit_kx(e, x->a, prec);
    }
    fprintf(e->out, " %s ", ops[x->op]);
    emit_kx(e, x->b, prec + 1);
}

static void emit_kx(Em *e, const Kx *x, int need) {
    FILE *out = e->out;
    int prec = precedence(x);
    bool paren = prec < need, real = x->type == KT_REAL;
    if (paren) fputc('(', out);
    switch (x->op) {
    case KX_INT:
        if (x->i == INT64_MIN) fputs("INT64_MIN", out);
        else fprintf(out, "%lld", (long long)x->i);
        break;
    case KX_REAL: c_emit_float(out, x->r); break;
    case KX_BATCH: fputs(e->batch, out); break;
    case KX_SEED: fputs("(int64_t)seed", out); break;
    case KX_VAR: fprintf(out, "i%lld", (long long)x->i); break;
    case KX_LOCAL: fprintf(out, "s%lld", (long long)x->i); break;
    case KX_LOAD: emit_load(e, (int)x->i, x->a); break;
    case KX_ADD: case KX_SUB: case KX_MUL: case KX_DIV: emit_binary(e, x, prec); break;
    case KX_MOD:
        if (real) emit_call(e, "fmodf", x->a, x->b);
        else emit_binary(e, x, prec);
        break;
    case KX_MIN: case KX_MAX:
        if (real) {
            emit_call(e, x->op == KX_MIN ? "fminf" : "fmaxf", x->a, x->b);
        } else { /* a < b ? a : b */
            emit_kx(e, x->a, P_REL);
            fputs(x->op == KX_MIN ? " < " : " > ", out);
            emit_kx(e, x->b, P_REL + 1);
            fputs(" ? ", out);
            emit_kx(e, x->a, P_COND + 1);
            fputs(" : ", out);
            emit_kx(e, x->b, P_COND);
        }
        break;
    case KX_POW: emit_call(e, "powf", x->a, x->b); break;
    case KX_NEG:
        fputc('-', out);
        emit_kx(e, x->a, P_POSTFIX); /* never "--x" */
        break;
    case KX_EXP: emit_call(e, "expf", x->a, NULL); break;
    case KX_LOG: emit_call(e, "logf", x->a, NULL); break;
    case KX_SQRT: emit_call(e, "sqrtf", x->a, NULL); break;
    case KX_ABS: emit_call(e, "fabsf", x->a, NULL); break;
    case KX_COS: emit_call(e, "cosf", x->a, NULL); break;
    case KX_SIN: emit_call(e, "sinf", x->a, NULL); break;
    case KX_FLOOR: emit_call(e, "floorf", x->a, NULL); break;
    case KX_LOG1P: emit_call(e, "log1pf", x->a, NULL); break;
    case KX_LT: case KX_LE: case KX_GT: case KX_GE: case KX_EQ: case KX_NE: emit_binary(e, x, prec); break;
    case KX_SELECT:
        emit_kx(e, x->a, P_EQ);
        fputs(" ? ", out);
        emit_kx(e, x->b, P_COND + 1);
        fputs(" : ", out);
        emit_kx(e, x->c, P_COND);
        break;
    case KX_TOREAL:
        fputs("(float)", out);
        emit_kx(e, x->a, P_UNARY);
        break;
    case KX_TOINT:
        fputs("(int64_t)", out);
        emit_kx(e, x->a, P_UNARY);
        break;
    case KX_RAND:
        /* The key is most often the seed itself, already unsigned. */
        fputs("nnc_rand(", out);
        if (x->a->op == KX_SEED) fputs("seed", out);
        else emit_kx(e, x->a, P_COND);
        fputs(", ", out);
        emit_kx(e, x->b, P_COND);
        fputc(')', out);
        break;
    default: NNC_BUG("kernel expression %d", (int)x->op);
    }
    if (paren) fputc(')', out);
}

/* ---- what a kernel touches --------------------------------------------------------------- */

typedef struct Usage {
    unsigned char *buf;  /* per buffer (views included): USE_READ | USE_WRITE */
    unsigned char *root; /* per root buffer */
    bool batch, seed;
} Usage;

static void usage_init(Usage *u, const KProgram *p) {
    u->buf = xcalloc((size_t)p->nbufs + 1, 1);
    u->root = xcalloc((size_t)p->nbufs + 1, 1);
    u->batch = u->seed = false;
}

static void usage_free(Usage *u) {
    free(u->buf);
    free(u->root);
}

static void use_buf(Usage *u, const KProgram *p, int buf, int how) {
    u->buf[buf] |= (unsigned char)how;
    u->root[kprog_root_buf(p, buf)] |= (unsigned char)how;
}

static void usage_kx(Usage *u, const KProgram *p, const Kx *x) {
    if (!x) return;
    if (x->op == KX_LOAD) use_buf(u, p, (int)x->i, USE_READ);
    if (x->op == KX_BATCH) u->batch = true;
    if (x->op == KX_SEED) u->seed = true;
    usage_kx(u, p, x->a);
    usage_kx(u, p, x->b);
    usage_kx(u, p, x->c);
}

static void usage_block(Usage *u, const KProgram *p, const KsBlock *blk) {
    for (int i = 0; i < blk->n; i++) {
        const Ks *s = blk->items[i];
        usage_kx(u, p, s->extent);
        usage_kx(u, p, s->value);
        usage_kx(u, p, s->index);
        if (s->kind == KS_STORE) use_buf(u, p, s->buf, USE_WRITE | (s->accumulate ? USE_READ : 0));
        if (s->kind == KS_FOR) usage_block(u, p, &s->body);
    }
}

static void usage_kernel(Usage *u, const KProgram *p, const Kernel *k) {
    if (k->kind == KK_LOOP) {
        usage_block(u, p, &k->body);
        return;
    }
    const KGemm *g = &k->gemm;
    use_buf(u, p, g->a, USE_READ);
    use_buf(u, p, g->b, USE_READ);
    use_buf(u, p, g->c, g->beta != 0 ? USE_READ | USE_WRITE : USE_WRITE);
    const Kx *sizes[] = {g->m,   g->n,     g->k,        g->lda,      g->ldb,
                         g->ldc, g->count, g->stride_a, g->stride_b, g->stride_c};
    for (int i = 0; i < 10; i++) usage_kx(u, p, sizes[i]);
}

/* ---- locals ---------------------------------------------------------------------------------
 * A local is declared where the Kernel IR declares it when that is its only
 * declaration and every use lies in its C scope (the rest of the block, as
 * the lowering writes them); any other local is declared at the top of the
 * kernel function. */

typedef struct Locals {
    int *decls;    /* declarations per local */
    bool *hoisted; /* declared at the top of the function */
    bool *used;    /* appears in the kernel */
} Locals;

static void locals_kx(Locals *l, const Kx *x, const bool *visible) {
    if (!x) return;
    if (x->op == KX_LOCAL && !visible[x->i]) l->hoisted[x->i] = true;
    locals_kx(l, x->a, visible);
    locals_kx(l, x->b, visible);
    locals_kx(l, x->c, visible);
}

static void count_decls(Locals *l, const KsBlock *blk) {
    for (int i = 0; i < blk->n; i++) {
        const Ks *s = blk->items[i];
        if (s->kind == KS_DECL) l->decls[s->var]++;
        if (s->kind == KS_DECL || s->kind == KS_UPDATE) l->used[s->var] = true;
        if (s->kind == KS_FOR) count_decls(l, &s->body);
    }
}

static void check_scopes(Locals *l, const KsBlock *blk, const bool *outer, int nlocals) {
    bool *visible = xmalloc((size_t)nlocals + 1);
    memcpy(visible, outer, (size_t)nlocals + 1);
    for (int i = 0; i < blk->n; i++) {
        const Ks *s = blk->items[i];
        locals_kx(l, s->extent, visible);
        locals_kx(l, s->value, visible);
        locals_kx(l, s->index, visible);
        if (s->kind == KS_UPDATE && !visible[s->var]) l->hoisted[s->var] = true;
        if (s->kind == KS_DECL && l->decls[s->var] == 1) visible[s->var] = true;
        if (s->kind == KS_FOR) check_scopes(l, &s->body, visible, nlocals);
    }
    free(visible);
}

static void locals_analyse(Locals *l, const KProgram *p, const Kernel *k) {
    size_t n = (size_t)p->nlocals + 1;
    l->decls = xcalloc(n, sizeof(int));
    l->hoisted = xcalloc(n, sizeof(bool));
    l->used = xcalloc(n, sizeof(bool));
    count_decls(l, &k->body);
    for (int i = 0; i < p->nlocals; i++)
        if (l->decls[i] != 1) l->hoisted[i] = l->used[i];
    bool *none = xcalloc(n, sizeof(bool));
    check_scopes(l, &k->body, none, p->nlocals);
    free(none);
}

static void locals_free(Locals *l) {
    free(l->decls);
    free(l->hoisted);
    free(l->used);
}

/* ---- comments and names ------------------------------------------------------------------- */

/* Writes `text` as a block comment indented by `indent`, wrapped at spaces
 * near COMMENT_WIDTH columns; NBSP marks a space that does not break, and
 * stray comment delimiters are broken up. */
#define NBSP '\1'

static void emit_comment(FILE *out, int indent, const char *text) {
    int col = fprintf(out, "%*s/* ", indent, "");
    for (const char *s = text; *s;) {
        size_t word = strcspn(s, " ");
        if (s != text) {
            if (col + 1 + (int)word > COMMENT_WIDTH) {
                fprintf(out, "\n%*s *", indent, "");
                col = indent + 2;
            }
            fputc(' ', out);
            col++;
        }
        for (size_t i = 0; i < word; i++) {
            fputc(s[i] == NBSP ? ' ' : s[i], out);
            if ((s[i] == '*' && s[i + 1] == '/') || (s[i] == '/' && s[i + 1] == '*')) fputc(' ', out);
        }
        col += (int)word;
        s += word;
        while (*s == ' ') s++;
    }
    fputs(" */\n", out);
}

/* "b5 h.add f32[N,10]", and for a view the buffer it reads through. */
static void describe_buf(StrBuf *sb, const KProgram *p, int buf) {
    char tb[TYPE_STR_MAX];
    int root = kprog_root_buf(p, buf);
    const KBuf *r = &p->bufs[root];
    sb_printf(sb, "b%d%c%s%c%s", root, NBSP, r->name ? r->name : "", NBSP, type_str(&r->type, tb, sizeof tb));
    if (root != buf) {
        const KBuf *v = &p->bufs[buf];
        sb_printf(sb, "%c(as%c%s%c%s)", NBSP, NBSP, v->name ? v->name : "", NBSP,
                  type_str(&v->type, tb, sizeof tb));
    }
}

/* "h.add (node %4): b5 h.add f32[N,10] from b3 h.matmul f32[N,10], b4 h.b f32[10]" */
static char *kernel_comment(const KProgram *p, const Kernel *k, const Usage *u) {
    StrBuf sb = {0};
    sb_puts(&sb, k->name ? k->name : "kernel");
    if (k->node >= 0) sb_printf(&sb, " (node %%%d)", k->node);
    sb_puts(&sb, ":");
    int n = 0;
    for (int b = 0; b < p->nbufs; b++)
        if (u->buf[b] & USE_WRITE) {
            sb_puts(&sb, n++ ? ", " : " ");
            describe_buf(&sb, p, b);
        }
    int m = 0;
    for (int b = 0; b < p->nbufs; b++)
        if (u->buf[b] == USE_READ) {
            sb_puts(&sb, m++ ? ", " : n ? " from " : " reads ");
            describe_buf(&sb, p, b);
        }
    return sb_take(&sb);
}

/* "PREFIX__kK_NAME", the kernel's name with anything but letters and digits as '_'. */
static char *kernel_fn_name(const char *prefix, int index, const char *name) {
    StrBuf sb = {0};
    sb_printf(&sb, "%s__k%d_", prefix, index);
    for (const char *s = name ? name : "kernel"; *s; s++) {
        bool keep = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9');
        sb_putc(&sb, keep ? *s : '_');
    }
    return sb_take(&sb);
}

static const char *elem_ctype(const KBuf *b) { return b->dtype == DT_I32 ? "int32_t" : "float"; }

/* Writes "HEAD(a, b, c)TAIL" with the items wrapped under the parenthesis
 * when the line would grow past COMMENT_WIDTH + 10 columns; `none` stands
 * for an empty list ("void" in a declaration). */
static void emit_list(FILE *out, const char *head, char **items, int n, const char *none, const char *tail) {
    int col = fprintf(out, "%s(", head), start = col;
    if (n == 0) fputs(none, out);
    for (int i = 0; i < n; i++) {
        /* the item, then its comma or the closing parenthesis and the tail */
        int len = (int)strlen(items[i]) + (i + 1 < n ? 1 : 1 + (int)strlen(tail));
        if (i > 0) {
            if (col + 1 + len > COMMENT_WIDTH + 10) {
                fprintf(out, "\n%*s", start, "");
                col = start;
            } else {
                col += fprintf(out, " ");
            }
        }
        col += fprintf(out, "%s%s", items[i], i + 1 < n ? "," : "");
    }
    fprintf(out, ")%s\n", tail);
}

/* The kernel's parameters (or, with `call`, the program function's
 * arguments): written root buffers, then read ones, then N and the seed if
 * the kernel needs them. */
static int kernel_params(const KProgram *p, const Usage *u, bool call, char ***items) {
    int n = 0;
    *items = xmalloc(sizeof(char *) * ((size_t)p->nbufs + 3));
    for (int pass = 0; pass < 2; pass++)
        for (int b = 0; b < p->nbufs; b++) {
            unsigned use = u->root[b];
            if (!use || (pass == 0) != ((use & USE_WRITE) != 0)) continue;
            StrBuf sb = {0};
            const char *cnst = use & USE_WRITE ? "" : "const ";
            if (call) sb_printf(&sb, "b%d", b);
            else sb_printf(&sb, "%s%s *restrict b%d", cnst, elem_ctype(&p->bufs[b]), b);
            (*items)[n++] = sb_take(&sb);
        }
    if (u->batch) (*items)[n++] = xstrdup(call ? "batch" : "int64_t N");
    if (u->seed) (*items)[n++] = xstrdup(call ? "seed" : "uint64_t seed");
    return n;
}

static void free_items(char **items, int n) {
    for (int i = 0; i < n; i++) free(items[i]);
    free(items);
}

/* ---- statements -------------------------------------------------------------------------- */

static void indent(FILE *out, int depth) { fprintf(out, "%*s", 4 * depth, ""); }

static void emit_block(Em *e, const KsBlock *blk, int depth, const Locals *l) {
    FILE *out = e->out;
    for (int i = 0; i < blk->n; i++) {
        const Ks *s = blk->items[i];
        indent(out, depth);
        switch (s->kind) {
        case KS_FOR:
            fprintf(out, "for (int64_t i%d = 0; i%d < ", s->var, s->var);
            emit_kx(e, s->extent, P_REL + 1);
            fprintf(out, "; i%d++) {\n", s->var);
            emit_block(e, &s->body, depth + 1, l);
            indent(out, depth);
            fputs("}\n", out);
            break;
        case KS_DECL:
            fprintf(out, "%ss%d = ", l->hoisted[s->var] ? "" : "float ", s->var);
            emit_kx(e, s->value, P_ANY);
            fputs(";\n", out);
            break;
        case KS_UPDATE:
            switch (s->update_op) {
            case KX_ADD: fprintf(out, "s%d += ", s->var); break;
            case KX_MAX: fprintf(out, "s%d = fmaxf(s%d, ", s->var, s->var); break;
            case KX_MIN: fprintf(out, "s%d = fminf(s%d, ", s->var, s->var); break;
            default: NNC_BUG("update op %d", (int)s->update_op);
            }
            emit_kx(e, s->value, s->update_op == KX_ADD ? P_ANY : P_COND);
            fputs(s->update_op == KX_ADD ? ";\n" : ");\n", out);
            break;
        case KS_STORE:
            emit_load(e, s->buf, s->index);
            fputs(s->accumulate ? " += " : " = ", out);
            emit_kx(e, s->value, P_ANY);
            fputs(";\n", out);
            break;
        }
    }
}

static void emit_kernel_fn(Em *e, const Kernel *k, const char *fn_name, const Usage *u) {
    FILE *out = e->out;
    char *comment = kernel_comment(e->p, k, u);
    emit_comment(out, 0, comment);
    free(comment);
    char **params;
    int n = kernel_params(e->p, u, false, &params);
    StrBuf head = {0};
    sb_printf(&head, "static void %s", fn_name);
    emit_list(out, head.data, params, n, "void", " {");
    sb_free(&head);
    free_items(params, n);

    Locals l;
    locals_analyse(&l, e->p, k);
    for (int i = 0; i < e->p->nlocals; i++)
        if (l.hoisted[i]) fprintf(out, "    float s%d;\n", i);
    e->batch = "N";
    emit_block(e, &k->body, 1, &l);
    locals_free(&l);
    fputs("}\n\n", out);
}

/* ---- the program function ------------------------------------------------------------------- */

/* "BASE", "BASE + 16", "BASE + 16 * batch + 32": the address of a buffer. */
static void offset_str(StrBuf *sb, const char *base, NPoly p) {
    sb_puts(sb, base);
    if (p.c1 == 1) sb_puts(sb, " + batch");
    else if (p.c1) sb_printf(sb, " + %lld * batch", (long long)p.c1);
    if (p.c0) sb_printf(sb, " + %lld", (long long)p.c0);
}

/* "X, " or, with a stride, "X, S, " in a call to nnc_sgemm[_batched]. */
static void emit_gemm_arg(Em *e, const Kx *x, const Kx *stride) {
    emit_kx(e, x, P_COND);
    fputs(", ", e->out);
    if (!stride) return;
    emit_kx(e, stride, P_COND);
    fputs(", ", e->out);
}

static void emit_gemm(Em *e, const Kernel *k) {
    FILE *out = e->out;
    const KGemm *g = &k->gemm;
    const KProgram *p = e->p;
    StrBuf sb = {0};
    sb_printf(&sb, "%s", k->name ? k->name : "gemm");
    if (k->node >= 0) sb_printf(&sb, " (node %%%d)", k->node);
    sb_puts(&sb, ": ");
    describe_buf(&sb, p, g->c);
    sb_puts(&sb, " =");
    if (g->alpha != 1) sb_printf(&sb, " %.9g *", g->alpha);
    sb_puts(&sb, " ");
    describe_buf(&sb, p, g->a);
    sb_puts(&sb, g->ta ? "^T @ " : " @ ");
    describe_buf(&sb, p, g->b);
    if (g->tb) sb_puts(&sb, "^T");
    if (g->beta != 0) {
        sb_puts(&sb, " + ");
        if (g->beta != 1) sb_printf(&sb, "%.9g * ", g->beta);
        describe_buf(&sb, p, g->c);
    }
    if (g->count) sb_puts(&sb, g->stride_c->op == KX_INT && g->stride_c->i == 0
                                   ? ", a batch of products summed into one" : ", a batch of products");
    emit_comment(out, 4, sb.data);
    sb_free(&sb);
    e->batch = "batch";
    fputs(g->count ? "    nnc_sgemm_batched(" : "    nnc_sgemm(", out);
    if (g->count) emit_gemm_arg(e, g->count, NULL);
    fprintf(out, "%d, %d, ", g->ta, g->tb);
    const Kx *mnk[] = {g->m, g->n, g->k};
    for (int i = 0; i < 3; i++) emit_gemm_arg(e, mnk[i], NULL);
    c_emit_float(out, g->alpha);
    fprintf(out, ", b%d, ", kprog_root_buf(p, g->a));
    emit_gemm_arg(e, g->lda, g->count ? g->stride_a : NULL);
    fprintf(out, "b%d, ", kprog_root_buf(p, g->b));
    emit_gemm_arg(e, g->ldb, g->count ? g->stride_b : NULL);
    c_emit_float(out, g->beta);
    fprintf(out, ", b%d, ", kprog_root_buf(p, g->c));
    emit_kx(e, g->ldc, P_COND);
    if (g->count) {
        fputs(", ", out);
        emit_kx(e, g->stride_c, P_COND);
    }
    fputs(");\n", out);
}

static const char *const prog_kinds[] = {"forward", "eval", "grad", "train_step", "init"};

/* The comment above the program function: what it computes, its arguments,
 * its workspace and its result. */
static char *program_comment(const KProgram *p, const char *name) {
    static const char *const roles[] = {"input", "target", "output"};
    StrBuf sb = {0};
    sb_printf(&sb, "%s: the %s program.", name, prog_kinds[p->kind]);
    for (int i = 0; i < p->nargs; i++) {
        char tb[TYPE_STR_MAX];
        sb_printf(&sb, "%s args[%d] = %s %s %s", i ? "," : " Arguments:", i, roles[p->args[i].role],
                  p->args[i].name, type_str(&p->args[i].type, tb, sizeof tb));
    }
    if (p->nargs) sb_puts(&sb, ".");
    /* the largest of its terms, which one depending on N */
    int terms = 0;
    for (int i = 0; i < p->nworkspace; i++) {
        NPoly w = p->workspace[i];
        if (!w.c0 && !w.c1) continue;
        sb_puts(&sb, terms++ ? ", " : p->nworkspace > 1 ? " Workspace: the largest of " : " Workspace: ");
        if (w.c1) sb_printf(&sb, "%lld * N%s", (long long)w.c1, w.c0 ? " + " : "");
        if (w.c0) sb_printf(&sb, "%lld", (long long)w.c0);
    }
    if (terms) sb_puts(&sb, " floats.");
    if (p->result_buf >= 0) {
        const KBuf *r = &p->bufs[p->result_buf];
        sb_printf(&sb, " Returns %s (b%d).", r->name ? r->name : "the loss",
                  kprog_root_buf(p, p->result_buf));
    }
    return sb_take(&sb);
}

void c_emit_program(FILE *out, const KProgram *p, const char *name) {
    if (p->real_f64) NNC_BUG("the C backend emits f32 programs only (%s is f64)", p->name);
    Em e = {.out = out, .p = p, .batch = "N"};
    fprintf(out, "/* ---- %s ", name);
    for (int i = (int)strlen(name) + 9; i < COMMENT_WIDTH; i++) fputc('-', out);
    fputs(" */\n\n", out);

    /* The kernels, each a function of its own. */
    Usage all;
    usage_init(&all, p);
    char **fn_names = xcalloc((size_t)p->nkernels + 1, sizeof(char *));
    for (int k = 0; k < p->nkernels; k++) {
        const Kernel *kn = &p->kernels[k];
        Usage u;
        usage_init(&u, p);
        usage_kernel(&u, p, kn);
        for (int b = 0; b < p->nbufs; b++) all.root[b] |= u.root[b];
        all.batch |= u.batch;
        all.seed |= u.seed;
        if (kn->kind == KK_LOOP) {
            fn_names[k] = kernel_fn_name(name, k, kn->name);
            emit_kernel_fn(&e, kn, fn_names[k], &u);
        }
        usage_free(&u);
    }
    int result = p->result_buf >= 0 ? kprog_root_buf(p, p->result_buf) : -1;
    if (result >= 0) all.root[result] |= USE_READ;

    char *comment = program_comment(p, name);
    emit_comment(out, 0, comment);
    free(comment);
    fprintf(out, "static float %s(float *state, void **args, int64_t batch, void *workspace, "
                 "uint64_t seed) {\n", name);

    /* Each buffer's address, as codegen.c computes it; a comment names it. */
    bool uses[5] = {false}; /* state, args, batch, workspace, seed */
    char **decls = xcalloc((size_t)p->nbufs + 1, sizeof(char *));
    int width = 0;
    for (int b = 0; b < p->nbufs; b++) {
        const KBuf *bf = &p->bufs[b];
        if (!all.root[b] || bf->kind == KB_VIEW) continue;
        const char *cnst = all.root[b] & USE_WRITE ? "" : "const ";
        StrBuf sb = {0};
        switch (bf->kind) {
        case KB_STATE:
            sb_printf(&sb, "%sfloat *b%d = ", cnst, b);
            offset_str(&sb, "state", bf->offset);
            uses[0] = true;
            break;
        case KB_ARG:
            sb_printf(&sb, "%s%s *b%d = args[%d]", cnst, elem_ctype(bf), b, bf->arg);
            uses[1] = true;
            break;
        case KB_WORK:
            sb_printf(&sb, "%sfloat *b%d = ", cnst, b);
            offset_str(&sb, "ws", bf->offset);
            uses[3] = true;
            uses[2] |= bf->offset.c1 != 0;
            break;
        default: NNC_BUG("buffer kind %d", (int)bf->kind);
        }
        sb_putc(&sb, ';');
        if ((int)sb.len > width) width = (int)sb.len;
        decls[b] = sb_take(&sb);
    }
    if (uses[3]) fputs("    float *ws = workspace;\n", out);
    for (int b = 0; b < p->nbufs; b++) {
        if (!decls[b]) continue;
        char tb[TYPE_STR_MAX];
        const KBuf *bf = &p->bufs[b];
        fprintf(out, "    %-*s /* %s %s */\n", width, decls[b], bf->name ? bf->name : "",
                type_str(&bf->type, tb, sizeof tb));
        free(decls[b]);
    }
    free(decls);
    uses[2] |= all.batch;
    uses[4] = all.seed;
    static const char *const params[] = {"state", "args", "batch", "workspace", "seed"};
    for (int i = 0; i < 5; i++)
        if (!uses[i]) fprintf(out, "    (void)%s;\n", params[i]);
    fputc('\n', out);

    /* The kernels in order. */
    for (int k = 0; k < p->nkernels; k++) {
        const Kernel *kn = &p->kernels[k];
        if (kn->kind == KK_GEMM) {
            emit_gemm(&e, kn);
            continue;
        }
        Usage u;
        usage_init(&u, p);
        usage_kernel(&u, p, kn);
        char **args;
        int n = kernel_params(p, &u, true, &args);
        StrBuf head = {0};
        sb_printf(&head, "    %s", fn_names[k]);
        emit_list(out, head.data, args, n, "", ";");
        sb_free(&head);
        free_items(args, n);
        usage_free(&u);
    }
    if (result >= 0) fprintf(out, "    return b%d[0];\n", result);
    else fputs("    return 0.0f;\n", out);
    fputs("}\n\n", out);

    for (int k = 0; k < p->nkernels; k++) free(fn_names[k]);
    free(fn_names);
    usage_free(&all);
}

void c_emit_support(FILE *out) { fputs(support_text, out); }
