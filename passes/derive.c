/* derive.c - the functions of a module, cut from the model graph.
 *
 *   forward  what the outputs need            (inference mode)
 *   eval     what the outputs, loss and metrics need (inference mode)
 *   grad     what the loss needs              (training mode; autodiff extends it)
 *
 * In inference mode, ops that only act in training become what they
 * compute at inference: dropout is the identity.
 *
 * A model without a loss statement gets only forward and eval. */
#include "passes/passes.h"
#include "support/util.h"

#include <stdlib.h>
#include <string.h>

static bool is_root(const Node *n) {
    return (n->flags & (NF_OUTPUT | NF_LOSS | NF_GRAD | NF_METRIC)) || (op_info(n->op)->flags & OPF_SIDE_EFFECT);
}

void graph_remove_dead(Graph *g) {
    int *live = xcalloc((size_t)g->n + 1, sizeof(int));
    for (int i = g->n - 1; i >= 0; i--) {
        const Node *n = &g->nodes[i];
        if (is_root(n)) live[i] = 1;
        if (!live[i]) continue;
        for (int k = 0; k < n->nin; k++) live[n->in[k]] = 1;
    }
    graph_compact(g, live);
    free(live);
}

/* Dropout becomes a view of its input (a reshape to the same type): no
 * copy, and the state it read (seed, step) dies with it. */
static void inference_mode(Graph *g) {
    for (int i = 0; i < g->n; i++) {
        Node *n = &g->nodes[i];
        if (n->op != OP_DROPOUT) continue;
        n->op = OP_RESHAPE;
        n->nin = 1;
        memset(n->in + 1, 0, sizeof n->in - sizeof n->in[0]);
        memset(n->attr, 0, sizeof n->attr);
    }
}

static Graph *derive(Module *m, const char *name, uint32_t drop_flags, bool inference) {
    Graph *g = graph_clone(m->arena, m->model, name);
    for (int i = 0; i < g->n; i++) g->nodes[i].flags &= ~drop_flags;
    if (inference) inference_mode(g);
    graph_remove_dead(g);
    return g;
}

static bool has_flag(const Graph *g, uint32_t flag) {
    for (int i = 0; i < g->n; i++)
        if (g->nodes[i].flags & flag) return true;
    return false;
}

bool pass_derive(Module *m, Diag *d) {
    (void)d;
    m->forward = derive(m, "forward", NF_LOSS | NF_METRIC, true);
    m->eval = derive(m, "eval", 0, true);
    m->grad = has_flag(m->model, NF_LOSS) ? derive(m, "grad", NF_OUTPUT | NF_METRIC, false) : NULL;
    return true;
}
