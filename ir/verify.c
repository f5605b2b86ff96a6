/* verify.c - structural invariants of the Graph IR.
 *
 * Run after every pass in debug builds (NNC_VERIFY_EACH_PASS). A failure is
 * a bug in the pass that ran last, never a user error. Types are checked
 * against the shape rules by pass_shape_recheck (passes/shape.c). */
#include "ir/ir.h"

#include <string.h>

#define FAIL(...)                                                   \
    do {                                                            \
        fprintf(err, "graph %s, node %%%d: ", g->name, id);         \
        fprintf(err, __VA_ARGS__);                                  \
        fputc('\n', err);                                           \
        ok = false;                                                 \
    } while (0)

bool graph_verify(const Graph *g, FILE *err) {
    bool ok = true;
    for (int id = 0; id < g->n; id++) {
        const Node *n = &g->nodes[id];
        if (n->op < 0 || n->op >= OP_COUNT) {
            FAIL("op %d out of range", (int)n->op);
            continue;
        }
        const OpInfo *info = op_info(n->op);
        if (n->nin != info->arity) FAIL("%s takes %d inputs, has %d", info->name, info->arity, n->nin);
        for (int i = 0; i < n->nin && i < IR_MAX_INPUTS; i++)
            if (n->in[i] < 0 || n->in[i] >= id)
                FAIL("input %d is %%%d, not an earlier node", i, n->in[i]);
        if (n->type.rank < 0 || n->type.rank > IR_MAX_RANK) FAIL("rank %d", n->type.rank);
        int batch_dims = 0;
        for (int i = 0; i < n->type.rank; i++) {
            if (n->type.dim[i] == IR_BATCH) batch_dims++;
            else if (n->type.dim[i] <= 0) FAIL("dimension %d is %lld", i, (long long)n->type.dim[i]);
        }
        if (batch_dims > 1) FAIL("N appears %d times in the type", batch_dims);
        if ((n->op == OP_INPUT || n->op == OP_PARAM) && !n->name) FAIL("%s without a name", info->name);
        if (n->op == OP_PARAM && batch_dims) FAIL("param %s depends on the batch", n->name);
        if (n->op == OP_ASSIGN && n->nin == 2 && n->in[0] < id && g->nodes[n->in[0]].op != OP_PARAM)
            FAIL("assign to %%%d, which is not a param", n->in[0]);
    }
    /* Leaf names are the keys of the state and the arguments: unique. */
    for (int a = 0; a < g->n; a++) {
        const Node *na = &g->nodes[a];
        if ((na->op != OP_PARAM && na->op != OP_INPUT) || !na->name) continue;
        for (int b = a + 1; b < g->n; b++) {
            const Node *nb = &g->nodes[b];
            if (nb->op == na->op && nb->name && strcmp(na->name, nb->name) == 0) {
                int id = b;
                FAIL("%s %s is declared twice (also %%%d)", op_info(nb->op)->name, nb->name, a);
            }
        }
    }
    return ok;
}
