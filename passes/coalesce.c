/* coalesce.c - loops that walk memory as one loop become one loop.
 *
 * The lowering writes one loop per axis of a tensor: a bias-and-ReLU over
 * [N, 6, 28, 28] is four nested loops, the innermost 28 long. LLVM unrolls
 * such a short loop completely and then vectorises the loop around it,
 * across rows, with gathers and scatters that cost more than the scalar
 * code. Two perfectly nested loops
 *
 *     for i < Ei { for j < Ej { body } }
 *
 * are the single loop `for v < Ei*Ej { body }` when every index in the body
 * is affine in i and j with i's coefficient Ej times j's: then
 * ci*i + cj*j = cj*(Ej*i + j) = cj*v, so the body is rewritten with j := v
 * and i := 0. The bias-and-ReLU becomes [N, 6] loops around one loop of
 * 784 contiguous elements, which vectorises with plain loads and stores.
 *
 * Anything else that mentions i or j (a comparison of one of them alone,
 * an index with other coefficients, a division) keeps the nest as it is. */
#include "passes/passes.h"

/* Whether every occurrence of loop variables i and j in x is inside an int
 * expression affine in both with coefficient(i) = ej * coefficient(j). */
static bool merges_in_expr(const Kx *x, int i, int j, int64_t ej) {
    if (!x || (!kx_has(x, KX_VAR, i) && !kx_has(x, KX_VAR, j))) return true;
    int64_t ci, cj;
    if (x->type == KT_INT && kx_var_coeff(x, i, &ci) && kx_var_coeff(x, j, &cj)) return ci == ej * cj;
    if (x->op == KX_VAR) return false;
    return merges_in_expr(x->a, i, j, ej) && merges_in_expr(x->b, i, j, ej) && merges_in_expr(x->c, i, j, ej);
}

static bool merges_in_block(const KsBlock *blk, int i, int j, int64_t ej) {
    for (int k = 0; k < blk->n; k++) {
        const Ks *s = blk->items[k];
        if (!merges_in_expr(s->extent, i, j, ej) || !merges_in_expr(s->value, i, j, ej) ||
            !merges_in_expr(s->index, i, j, ej))
            return false;
        if (s->kind == KS_FOR && !merges_in_block(&s->body, i, j, ej)) return false;
    }
    return true;
}

static void substitute_in_block(Arena *a, KsBlock *blk, int var, Kx *with) {
    for (int k = 0; k < blk->n; k++) {
        Ks *s = blk->items[k];
        s->extent = kx_substitute_var(a, s->extent, var, with);
        s->value = kx_substitute_var(a, s->value, var, with);
        s->index = kx_substitute_var(a, s->index, var, with);
        if (s->kind == KS_FOR) substitute_in_block(a, &s->body, var, with);
    }
}

/* Merges loop `outer` with the loop that is its whole body, if legal. A
 * parallel loop stays parallel only if both were: an outer parallel loop
 * around a sequential one is left alone, since merging would lose what
 * the outer loop offers the backends. */
static bool merge_with_inner(Arena *a, Ks *outer) {
    if (outer->body.n != 1 || outer->body.items[0]->kind != KS_FOR) return false;
    Ks *inner = outer->body.items[0];
    if (inner->extent->op != KX_INT || (outer->parallel && !inner->parallel)) return false;
    if (!merges_in_block(&inner->body, outer->var, inner->var, inner->extent->i)) return false;
    substitute_in_block(a, &inner->body, outer->var, kx_int(a, 0));
    outer->extent = kx_bin(a, KX_MUL, outer->extent, inner->extent);
    outer->var = inner->var;
    outer->parallel = outer->parallel && inner->parallel;
    outer->body = inner->body;
    return true;
}

static void coalesce_block(Arena *a, KsBlock *blk) {
    for (int k = 0; k < blk->n; k++) {
        Ks *s = blk->items[k];
        if (s->kind != KS_FOR) continue;
        coalesce_block(a, &s->body);
        while (merge_with_inner(a, s)) {}
    }
}

void pass_coalesce(KProgram *p) {
    for (int k = 0; k < p->nkernels; k++)
        if (p->kernels[k].kind == KK_LOOP) coalesce_block(p->arena, &p->kernels[k].body);
}
