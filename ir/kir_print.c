/* kir_print.c - the Kernel IR as text (--emit-kir), in a C-like notation:
 *
 *   kernel h.act (node %5)
 *     for i0 < N parallel
 *       for i1 < 10
 *         t3[i0*10 + i1] = 1 / (1 + exp(-t2[i0*10 + i1]))
 */
#include "ir/kir.h"

static const char *npoly_str(NPoly p, char *buf, size_t size) {
    if (p.c1 && p.c0) snprintf(buf, size, "%lld*N + %lld", (long long)p.c1, (long long)p.c0);
    else if (p.c1) snprintf(buf, size, "%lld*N", (long long)p.c1);
    else snprintf(buf, size, "%lld", (long long)p.c0);
    return buf;
}

enum { NPOLY_STR_MAX = 48 };

static void print_npoly(FILE *out, NPoly p) {
    char buf[NPOLY_STR_MAX];
    fputs(npoly_str(p, buf, sizeof buf), out);
}

/* "max(2592*N, 1296*N + 802848)", or the one term. */
static void print_workspace_size(FILE *out, const KProgram *p) {
    if (p->nworkspace == 0) fputs("0", out);
    if (p->nworkspace > 1) fputs("max(", out);
    for (int i = 0; i < p->nworkspace; i++) {
        if (i) fputs(", ", out);
        print_npoly(out, p->workspace[i]);
    }
    if (p->nworkspace > 1) fputs(")", out);
}

/* "live 3..7" (kernels), "live 3..end" for a value read after the last. */
static void print_live(FILE *out, const KProgram *p, const KBuf *b) {
    if (b->live_first < 0) {
        fputs("unused", out);
        return;
    }
    fprintf(out, "live %d..", b->live_first);
    if (b->live_last >= p->nkernels) fputs("end", out);
    else fprintf(out, "%d", b->live_last);
}

static int precedence(KxOp op) {
    switch (op) {
    case KX_LT: case KX_LE: case KX_GT: case KX_GE: case KX_EQ: case KX_NE: return 1;
    case KX_ADD: case KX_SUB: return 2;
    case KX_MUL: case KX_DIV: case KX_MOD: return 3;
    default: return 4;
    }
}

static void print_kx(FILE *out, const KProgram *p, const Kx *x, int outer) {
    int prec = precedence(x->op);
    switch (x->op) {
    case KX_INT: fprintf(out, "%lld", (long long)x->i); return;
    case KX_REAL: fprintf(out, "%.9g", x->r); return;
    case KX_BATCH: fputs("N", out); return;
    case KX_SEED: fputs("seed", out); return;
    case KX_VAR: fprintf(out, "i%lld", (long long)x->i); return;
    case KX_LOCAL: fprintf(out, "s%lld", (long long)x->i); return;
    case KX_LOAD:
        fprintf(out, "b%lld[", (long long)x->i);
        print_kx(out, p, x->a, 0);
        fputs("]", out);
        return;
    case KX_ADD: case KX_SUB: case KX_MUL: case KX_DIV: case KX_MOD:
    case KX_LT: case KX_LE: case KX_GT: case KX_GE: case KX_EQ: case KX_NE:
        if (prec < outer) fputc('(', out);
        print_kx(out, p, x->a, prec);
        fprintf(out, " %s ", kx_names[x->op]);
        print_kx(out, p, x->b, prec + 1);
        if (prec < outer) fputc(')', out);
        return;
    case KX_NEG:
        fputc('-', out);
        print_kx(out, p, x->a, 5);
        return;
    case KX_SELECT:
        fputs("select(", out);
        print_kx(out, p, x->a, 0);
        fputs(", ", out);
        print_kx(out, p, x->b, 0);
        fputs(", ", out);
        print_kx(out, p, x->c, 0);
        fputs(")", out);
        return;
    default:
        fprintf(out, "%s(", kx_names[x->op]);
        print_kx(out, p, x->a, 0);
        if (x->b) {
            fputs(", ", out);
            print_kx(out, p, x->b, 0);
        }
        fputs(")", out);
        return;
    }
}

static void print_block(FILE *out, const KProgram *p, const KsBlock *b, int depth) {
    for (int i = 0; i < b->n; i++) {
        const Ks *s = b->items[i];
        fprintf(out, "%*s", 2 * depth, "");
        switch (s->kind) {
        case KS_FOR:
            fprintf(out, "for i%d < ", s->var);
            print_kx(out, p, s->extent, 0);
            fputs(s->parallel ? " parallel\n" : "\n", out);
            print_block(out, p, &s->body, depth + 1);
            break;
        case KS_DECL:
            fprintf(out, "s%d = ", s->var);
            print_kx(out, p, s->value, 0);
            fputc('\n', out);
            break;
        case KS_UPDATE:
            if (s->update_op == KX_ADD) fprintf(out, "s%d += ", s->var);
            else fprintf(out, "s%d = %s(s%d, ", s->var, kx_names[s->update_op], s->var);
            print_kx(out, p, s->value, 0);
            fputs(s->update_op == KX_ADD ? "\n" : ")\n", out);
            break;
        case KS_STORE:
            fprintf(out, "b%d[", s->buf);
            print_kx(out, p, s->index, 0);
            fprintf(out, "] %s ", s->accumulate ? "+=" : "=");
            print_kx(out, p, s->value, 0);
            fputc('\n', out);
            break;
        }
    }
}

/* "  x count (strides sa, sb, sc)" after a batched product. */
static void print_batch(FILE *out, const KProgram *p, const KGemm *g) {
    fputs(" x ", out);
    print_kx(out, p, g->count, 0);
    const Kx *strides[] = {g->stride_a, g->stride_b, g->stride_c};
    for (int i = 0; i < 3; i++) {
        fputs(i ? ", " : " (strides ", out);
        print_kx(out, p, strides[i], 0);
    }
    fputc(')', out);
}

void kprog_print(FILE *out, const KProgram *p) {
    static const char *const kinds[] = {"state", "arg", "work", "view"};
    static const char *const roles[] = {"input", "target", "output"};
    fprintf(out, "program %s (real = %s, workspace ", p->name, p->real_f64 ? "f64" : "f32");
    print_workspace_size(out, p);
    fprintf(out, ")\n");
    for (int i = 0; i < p->nargs; i++) {
        char tb[TYPE_STR_MAX];
        fprintf(out, "  arg %d %s %s %s\n", i, roles[p->args[i].role], p->args[i].name,
                type_str(&p->args[i].type, tb, sizeof tb));
    }
    for (int i = 0; i < p->nbufs; i++) {
        const KBuf *b = &p->bufs[i];
        char tb[TYPE_STR_MAX];
        fprintf(out, "  b%-3d %-5s %-28s %-16s", i, kinds[b->kind], b->name ? b->name : "",
                type_str(&b->type, tb, sizeof tb));
        if (b->kind == KB_STATE) {
            fputs(" @", out);
            print_npoly(out, b->offset);
        } else if (b->kind == KB_WORK) {
            fputs(" @", out);
            print_npoly(out, b->offset);
            fputs(" size ", out);
            print_npoly(out, kbuf_footprint(b));
            fputc(' ', out);
            print_live(out, p, b);
        } else if (b->kind == KB_ARG) {
            fprintf(out, " arg %d", b->arg);
        } else {
            fprintf(out, " of b%d%s", b->view_of, b->in_place ? " (in place)" : "");
        }
        fputc('\n', out);
    }
    if (p->sliced) {
        fprintf(out, "  the batch in %d slices, each through program %s.grad on a thread of its own; the\n"
                     "  gradients added up in proportion to the slices' examples; then program %s.apply\n",
                p->sliced->slices, p->name, p->name);
        kprog_print(out, p->sliced->grad);
        kprog_print(out, p->sliced->apply);
        return;
    }
    if (p->result_buf >= 0) fprintf(out, "  returns b%d[0]\n", p->result_buf);
    for (int k = 0; k < p->nkernels; k++) {
        const Kernel *kn = &p->kernels[k];
        fprintf(out, "kernel %s", kn->name ? kn->name : "");
        if (kn->node >= 0) fprintf(out, " (node %%%d)", kn->node);
        fputc('\n', out);
        if (kn->kind == KK_GEMM) {
            const KGemm *g = &kn->gemm;
            fprintf(out, "  gemm b%d = %.9g * b%d%s @ b%d%s", g->c, g->alpha, g->a, g->ta ? "^T" : "",
                    g->b, g->tb ? "^T" : "");
            if (g->beta != 0) fprintf(out, " + %.9g * b%d", g->beta, g->c);
            fputs("  (m=", out);
            print_kx(out, p, g->m, 0);
            fputs(", n=", out);
            print_kx(out, p, g->n, 0);
            fputs(", k=", out);
            print_kx(out, p, g->k, 0);
            fputs(")", out);
            if (g->count) print_batch(out, p, g);
            fputc('\n', out);
        } else {
            print_block(out, p, &kn->body, 1);
        }
    }
}

void kprog_print_workspace(FILE *out, const KProgram *p, int64_t batch) {
    if (p->sliced) {
        const KSlices *ks = p->sliced;
        int64_t per = (batch + ks->slices - 1) / ks->slices;
        fprintf(out, "workspace %s {  # ", p->name);
        print_workspace_size(out, p);
        fprintf(out, " floats; at N=%lld: %lld: %d slices, each %lld floats of gradients and the workspace of "
                     "%s.grad at N=%lld, then %s.apply's\n}\n",
                (long long)batch, (long long)kprog_workspace_size(p, batch), ks->slices, (long long)ks->grad_elems,
                p->name, (long long)per, p->name);
        kprog_print_workspace(out, ks->grad, per);
        kprog_print_workspace(out, ks->apply, batch);
        return;
    }
    const char *unit = p->real_f64 ? "doubles" : "floats";
    int64_t total = kprog_workspace_size(p, batch), bound = kprog_workspace_lower_bound(p, batch);
    fprintf(out, "workspace %s {  # ", p->name);
    print_workspace_size(out, p);
    fprintf(out, " %s; at N=%lld: %lld, lower bound %lld", unit, (long long)batch, (long long)total,
            (long long)bound);
    if (bound > 0) fprintf(out, " (%.2fx)", (double)total / (double)bound);
    fputc('\n', out);
    for (int i = 0; i < p->nbufs; i++) {
        const KBuf *b = &p->bufs[i];
        if (b->kind != KB_WORK && !b->in_place) continue;
        char tb[TYPE_STR_MAX], where[2 * NPOLY_STR_MAX], sb[NPOLY_STR_MAX];
        if (b->kind == KB_WORK) snprintf(where, sizeof where, "@%s", npoly_str(b->offset, sb, sizeof sb));
        else snprintf(where, sizeof where, "in place of b%d", b->view_of);
        fprintf(out, "  b%-4d %-28s %-16s %-20s size %-14s ", i, b->name ? b->name : "",
                type_str(&b->type, tb, sizeof tb), where, npoly_str(kbuf_footprint(b), sb, sizeof sb));
        print_live(out, p, b);
        fputc('\n', out);
    }
    fputs("}\n", out);
}
