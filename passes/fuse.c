/* fuse.c - which values are computed inside the kernels that read them.
 *
 * An elementwise value read by kernels that can compute it on the fly (other
 * elementwise ops, reductions, softmax rows, pooling windows, im2col, the
 * optimizer's assignments) gets no buffer and no kernel of its own: its
 * scalar expression is inlined where it is read. A chain such as
 * matmul -> add bias -> sigmoid -> (next layer) then costs one pass over
 * memory after the product instead of three, and an optimizer's whole
 * update of a parameter is one loop.
 *
 * Inlining recomputes a value once per read, so it is decided by cost: a
 * value read once is always inlined; one read several times (two
 * consumers, a softmax reading each input three times, a scalar broadcast
 * over a matrix) only when it is cheap to recompute.
 *
 * The assignments of one parameter's update (its moments, then the
 * parameter) form a group computed by one loop that evaluates every new
 * value before storing any: an in-place update reads the old values, as
 * the graph says. */
#include "passes/passes.h"
#include "support/util.h"

#include <stdlib.h>
#include <string.h>

/* What recomputing an op costs, in additions. */
static int op_cost(Op op) {
    switch (op) {
    case OP_DIV: case OP_SQRT: return 4;
    case OP_EXP: case OP_LOG: case OP_POW: case OP_COS: case OP_SIN: case OP_SIGMOID: case OP_TANH:
    case OP_ELU: case OP_SWISH: case OP_SOFTPLUS: case OP_LOGISTIC_LOSS: case OP_ELU_GRAD: case OP_SWISH_GRAD:
        return 20;
    default: return 1;
    }
}

enum { RECOMPUTE_BUDGET = 12, MANY = 1 << 20 };

static bool is_root(const Node *n, ProgKind kind) {
    if (n->flags & (NF_OUTPUT | NF_LOSS | NF_METRIC)) return true;
    if ((n->flags & NF_GRAD) && kind == PROG_GRAD) return true;
    return (op_info(n->op)->flags & OPF_SIDE_EFFECT) != 0;
}

/* How many times node n's kernel reads each element of input k when that
 * input is computed inline; 0 if it needs the input in a buffer. */
static int64_t reads_by_op(const Graph *g, const Node *n, int k) {
    const IrType *in = &g->nodes[n->in[k]].type;
    if (op_info(n->op)->flags & OPF_EW) {
        /* a broadcast input is read once per element of the result */
        int64_t a0, a1, b0, b1;
        type_numel(in, &a0, &a1);
        type_numel(&n->type, &b0, &b1);
        if (a1 == b1 && a0 == b0) return 1;
        if (a1 == 0 && b1 > 0) return MANY;
        return a1 ? b1 / a1 : (a0 ? (b0 + b1) / a0 : MANY);
    }
    switch (n->op) {
    case OP_SUM: case OP_MEAN: case OP_SUM_TO: case OP_DROPOUT: return k == 0;
    case OP_BINARY_ACCURACY: return 1;
    case OP_ASSIGN: return k == 1;
    case OP_SOFTMAX: case OP_LOG_SOFTMAX: return in->rank == 2 ? 3 : 0;
    case OP_SOFTMAX_GRAD: case OP_LOG_SOFTMAX_GRAD: case OP_ACCURACY: return in->rank == 2 && k <= 1 ? 2 : 0;
    case OP_CROSS_ENTROPY: return k == 0 && in->rank == 2 ? 3 : 0;
    case OP_MAXPOOL2D: case OP_AVGPOOL2D: {
        int64_t kh = (int64_t)n->attr[0], kw = (int64_t)n->attr[1], sh = (int64_t)n->attr[2], sw = (int64_t)n->attr[3];
        return ((kh + sh - 1) / sh) * ((kw + sw - 1) / sw);
    }
    default: return 0;
    }
}

/* The same, where a scalar is computed once per kernel, before its loops
 * (lower.c). */
static int64_t reads_per_element(const Graph *g, const Node *n, int k) {
    int64_t reads = reads_by_op(g, n, k), c0, c1;
    type_numel(&g->nodes[n->in[k]].type, &c0, &c1);
    return reads > 0 && c0 == 1 && c1 == 0 ? 1 : reads;
}

/* Ops computed where they are read: the elementwise ones, and one-hot rows. */
static bool can_inline(Op op) { return (op_info(op)->flags & OPF_EW) || op == OP_ONEHOT; }

typedef struct Use {
    int node, slot;
} Use;

typedef struct Uses {
    Use *items;
    int n, cap;
} Uses;

/* The param behind a value, through views. */
static int state_of(const Graph *g, int id) {
    while (g->nodes[id].op == OP_RESHAPE) id = g->nodes[id].in[0];
    return g->nodes[id].op == OP_PARAM ? id : -1;
}

/* A node that runs a kernel of its own. */
static bool emits_kernel(const Graph *g, const FusePlan *p, int id) {
    const Node *n = &g->nodes[id];
    if (p->virt[id] || (op_info(n->op)->flags & OPF_LEAF) || n->op == OP_CONST || n->op == OP_SIZE) return false;
    if (n->op == OP_RESHAPE || n->op == OP_ASSIGN) return false;
    return true;
}

/* Runs of assignments of one shape with no kernel between them. */
static void group_assignments(const Graph *g, FusePlan *p) {
    int current = -1, last = -1;
    const IrType *shape = NULL;
    for (int i = 0; i < g->n; i++) {
        const Node *n = &g->nodes[i];
        p->group[i] = -1;
        p->last[i] = false;
        if (n->op == OP_ASSIGN) {
            if (current < 0 || !type_equal(shape, &n->type)) {
                if (last >= 0) p->last[last] = true;
                current = i;
                shape = &n->type;
            }
            p->group[i] = current;
            last = i;
        } else if (emits_kernel(g, p, i) && current >= 0) {
            p->last[last] = true;
            current = last = -1;
        }
    }
    if (last >= 0) p->last[last] = true;
}

FusePlan fuse_plan(const Graph *g, ProgKind kind, bool enabled) {
    FusePlan p = {.n = g->n};
    p.virt = xcalloc((size_t)g->n + 1, sizeof(bool));
    p.group = xcalloc((size_t)g->n + 1, sizeof(int));
    p.last = xcalloc((size_t)g->n + 1, sizeof(bool));
    int *cost = xcalloc((size_t)g->n + 1, sizeof(int));
    Uses *uses = xcalloc((size_t)g->n + 1, sizeof(Uses));
    for (int i = 0; i < g->n; i++)
        for (int k = 0; k < g->nodes[i].nin; k++) {
            Uses *u = &uses[g->nodes[i].in[k]];
            if (u->n == u->cap) {
                u->cap = u->cap ? 2 * u->cap : 4;
                u->items = xrealloc(u->items, sizeof(Use) * (size_t)u->cap);
            }
            u->items[u->n++] = (Use){i, k};
        }

    /* The first assignment of each param, to keep inlined reads of it before. */
    int *assigned_at = xmalloc(sizeof(int) * ((size_t)g->n + 1));
    for (int i = 0; i < g->n; i++) assigned_at[i] = g->n;
    for (int i = g->n - 1; i >= 0; i--)
        if (g->nodes[i].op == OP_ASSIGN) assigned_at[g->nodes[i].in[0]] = i;

    /* Decide in order (inputs first, so their costs are known), then check
     * the inlined reads of assigned params against the groups; repeat while
     * that takes a value back out of inlining. */
    bool changed = true;
    bool *blocked = xcalloc((size_t)g->n + 1, sizeof(bool));
    int *stack = xmalloc(sizeof(int) * ((size_t)g->n + 1)), *seen = xcalloc((size_t)g->n + 1, sizeof(int));
    while (changed) {
        changed = false;
        for (int i = 0; i < g->n; i++) {
            const Node *n = &g->nodes[i];
            p.virt[i] = false;
            cost[i] = op_cost(n->op);
            for (int k = 0; k < n->nin; k++)
                if (p.virt[n->in[k]]) cost[i] += cost[n->in[k]];
            if (!enabled || !can_inline(n->op) || is_root(n, kind) || blocked[i] || uses[i].n == 0) continue;
            int64_t reads = 0;
            bool ok = true;
            for (int u = 0; u < uses[i].n && ok; u++) {
                int64_t r = reads_per_element(g, &g->nodes[uses[i].items[u].node], uses[i].items[u].slot);
                ok = r > 0;
                reads += r;
            }
            p.virt[i] = ok && (reads == 1 || (int64_t)cost[i] * reads <= RECOMPUTE_BUDGET);
        }
        if (enabled) group_assignments(g, &p);
        else
            for (int i = 0; i < g->n; i++) p.group[i] = g->nodes[i].op == OP_ASSIGN ? i : -1, p.last[i] = true;
        /* An inlined value that reads an assigned param must be read before
         * that assignment, or by the assignment's own group. */
        for (int i = 0; i < g->n && !changed; i++) {
            if (!p.virt[i]) continue;
            /* the first assignment of a param this inlined value reads,
             * through its inlined inputs */
            int first = g->n, top = 0;
            bool late = false; /* some node of it reads a param after its assignment */
            stack[top++] = i;
            seen[i] = i + 1;
            while (top > 0) {
                int j = stack[--top];
                const Node *n = &g->nodes[j];
                for (int k = 0; k < n->nin; k++) {
                    int in = n->in[k], s = state_of(g, in);
                    if (s >= 0 && assigned_at[s] < first) first = assigned_at[s];
                    if (s >= 0 && assigned_at[s] < j) late = true;
                    if (p.virt[in] && seen[in] != i + 1) seen[in] = i + 1, stack[top++] = in;
                }
            }
            if (first == g->n) continue; /* it reads no param that is assigned */
            /* Its readers, through the inlined ones to the kernels that
             * compute them: a momentum's new value read by its own
             * assignment and, inlined, by the parameter's, both in the group.
             * (seen marks this walk -(i + 1), the one above i + 1.) */
            int group = p.group[first];
            top = 0;
            stack[top++] = i;
            seen[i] = -(i + 1);
            while (top > 0 && !blocked[i]) {
                int v = stack[--top];
                for (int u = 0; u < uses[v].n; u++) {
                    int c = uses[v].items[u].node;
                    if (p.virt[c]) {
                        if (seen[c] != -(i + 1)) seen[c] = -(i + 1), stack[top++] = c;
                        continue;
                    }
                    bool same_group = g->nodes[c].op == OP_ASSIGN && p.group[c] == group && !late;
                    if (c >= first && !same_group) {
                        blocked[i] = changed = true;
                        break;
                    }
                }
            }
        }
    }
    for (int i = 0; i < g->n; i++) free(uses[i].items);
    free(uses);
    free(cost);
    free(assigned_at);
    free(blocked);
    free(stack);
    free(seen);
    return p;
}

void fuse_plan_free(FusePlan *p) {
    free(p->virt);
    free(p->group);
    free(p->last);
    memset(p, 0, sizeof *p);
}

void fuse_kernel_of(const Graph *g, const FusePlan *p, int *kernel) {
    int *first_reader = xmalloc(sizeof(int) * ((size_t)g->n + 1));
    for (int i = 0; i < g->n; i++) first_reader[i] = -1;
    for (int i = 0; i < g->n; i++)
        for (int k = 0; k < g->nodes[i].nin; k++)
            if (first_reader[g->nodes[i].in[k]] < 0) first_reader[g->nodes[i].in[k]] = i;
    /* readers come after what they read: decide from the end */
    for (int i = g->n - 1; i >= 0; i--) {
        if (p->group[i] >= 0) kernel[i] = p->group[i];
        else if (p->virt[i]) kernel[i] = first_reader[i] >= 0 ? kernel[first_reader[i]] : -1;
        else kernel[i] = emits_kernel(g, p, i) ? i : -1;
    }
    free(first_reader);
}
