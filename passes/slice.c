/* slice.c - a training step whose batch is cut into slices, one thread
 * each (runtime/slices.c runs it).
 *
 * The step is the grad program run on each slice as if it were the whole
 * batch, then the apply program (the optimizer's update, passes/optimizer.c)
 * on the gradients added up with each slice's share of the batch as its
 * weight. That is the step on the whole batch, up to float rounding, when
 *
 *   - no example's values depend on another example's: every value with
 *     the batch dimension has it first, and is computed from values with
 *     the batch dimension first and from values that do not depend on the
 *     batch at all (weights), never from a sum over the batch; and
 *   - the loss is a mean over the batch (cross-entropy, mean), or a sum
 *     or multiple of such means and of terms without the batch: then the
 *     loss of the batch is the weighted sum of the slices' losses, and so
 *     are its gradients.
 *
 * Dropout's masks are drawn by an element's place in the batch, which a
 * slice does not know: a model with dropout is not cut.
 *
 * It pays where each example does much work per weight (convolutions reuse
 * each weight at every position of an image), so that adding up one
 * gradient per slice costs little beside the step. A multilayer
 * perceptron does three multiply-adds per weight and example; there,
 * splitting each matrix product over the threads is better. */
#include "passes/passes.h"
#include "runtime/nnrt.h"
#include "support/util.h"

#include <stdlib.h>
#include <string.h>

/* Multiply-adds of the matrix products per example and trained weight
 * below which a step is not cut. */
enum { SLICE_MIN_REUSE = 8 };

static bool has_batch(const IrType *t) {
    for (int k = 0; k < t->rank; k++)
        if (t->dim[k] == IR_BATCH) return true;
    return false;
}

static bool batch_first_only(const IrType *t) {
    for (int k = 1; k < t->rank; k++)
        if (t->dim[k] == IR_BATCH) return false;
    return true;
}

/* Whether a value that depends on the examples (`data`) but has no batch
 * dimension is a mean over the batch, or a linear combination of such
 * means and of values independent of the examples. */
static bool mean_over_batch(const Graph *g, const bool *data, int i) {
    const Node *n = &g->nodes[i];
    if (!data[i]) return true;
    if (has_batch(&n->type)) return false;
    const Node *x = n->nin ? &g->nodes[n->in[0]] : NULL;
    switch (n->op) {
    case OP_CROSS_ENTROPY: return true;
    case OP_MEAN: /* over the batch axis of x, or over other axes of a mean */
        return has_batch(&x->type) ? ((int64_t)n->attr[0] & 1) != 0 : mean_over_batch(g, data, n->in[0]);
    case OP_SUM:
    case OP_RESHAPE:
    case OP_NEG: return !has_batch(&x->type) && mean_over_batch(g, data, n->in[0]);
    case OP_EXPAND: return mean_over_batch(g, data, n->in[0]) && !data[n->in[1]];
    case OP_ADD:
    case OP_SUB: return mean_over_batch(g, data, n->in[0]) && mean_over_batch(g, data, n->in[1]);
    case OP_MUL: return (!data[n->in[0]] && mean_over_batch(g, data, n->in[1])) ||
                        (!data[n->in[1]] && mean_over_batch(g, data, n->in[0]));
    case OP_DIV: {
        const Node *y = &g->nodes[n->in[1]];
        /* a sum over the batch axis by a count that includes it */
        if (x->op == OP_SUM && ((int64_t)x->attr[0] & 1) && has_batch(&g->nodes[x->in[0]].type) &&
            y->op == OP_SIZE && ((int64_t)y->attr[0] & 1) && has_batch(&g->nodes[y->in[0]].type))
            return true;
        return mean_over_batch(g, data, n->in[0]) && !data[n->in[1]];
    }
    default: return false;
    }
}

/* Whether grad's step on the whole batch is the weighted sum of its steps
 * on slices (the conditions at the top). */
static bool batch_separable(const Graph *g) {
    bool *data = xcalloc((size_t)g->n + 1, sizeof(bool));
    bool ok = true;
    int loss = -1;
    for (int i = 0; i < g->n && ok; i++) {
        const Node *n = &g->nodes[i];
        bool batched = has_batch(&n->type);
        if (n->flags & NF_LOSS) loss = i;
        if (n->op == OP_DROPOUT || n->op == OP_DROPOUT_GRAD || (op_info(n->op)->flags & OPF_SIDE_EFFECT)) ok = false;
        if (batched && !batch_first_only(&n->type)) ok = false;
        data[i] = n->op == OP_INPUT && batched;
        /* a count of examples: in a slice, the slice's (as the loss is the slice's mean) */
        for (int k = 0; k < n->nin && n->op != OP_SIZE; k++) {
            const Node *in = &g->nodes[n->in[k]];
            data[i] |= data[n->in[k]];
            /* a sum over the batch read by an example's value */
            if (batched && data[n->in[k]] && !has_batch(&in->type)) ok = false;
            /* broadcasting lines up the last axes: the batch must meet the batch */
            if (batched && (op_info(n->op)->flags & OPF_EW) && has_batch(&in->type) && in->type.rank != n->type.rank)
                ok = false;
        }
        /* the softmax family works on the last axis, which must not be the batch */
        if ((n->op == OP_SOFTMAX || n->op == OP_LOG_SOFTMAX || n->op == OP_SOFTMAX_GRAD ||
             n->op == OP_LOG_SOFTMAX_GRAD) && batched && n->type.rank < 2)
            ok = false;
    }
    ok = ok && loss >= 0 && mean_over_batch(g, data, loss);
    free(data);
    return ok;
}

/* A gradient's place in the gradient buffer: its parameter's in the state
 * (whose parameters come first). */
static const StateSlot *param_slot(const Module *m, const char *grad_name) {
    const char *param = strncmp(grad_name, "grad.", 5) == 0 ? grad_name + 5 : grad_name;
    const StateSlot *s = module_find_slot(m, param);
    if (!s) NNC_BUG("gradient %s of no parameter", grad_name);
    return s;
}

static int64_t bytes_per_example(const KArg *a) {
    int64_t n = 4; /* f32 and i32 */
    bool batched = false;
    for (int k = 0; k < a->type.rank; k++) {
        if (a->type.dim[k] == IR_BATCH) batched = true;
        else n *= a->type.dim[k];
    }
    return batched ? n : 0;
}

static int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

KProgram *lower_train(Module *m, bool real_f64, int slices) {
    if (slices > NNRT_MAX_SLICES) slices = NNRT_MAX_SLICES;
    if (slices <= 1 || real_f64 || m->opt.cuda || m->opt.profile || !m->apply || !batch_separable(m->grad))
        return lower_graph(m, m->train, PROG_TRAIN, real_f64);
    Arena *a = m->arena;
    KSlices *ks = ARENA_NEW(a, KSlices);
    ks->slices = slices;
    ks->grad = lower_graph(m, m->grad, PROG_GRAD, false);
    const KProgram *grad = ks->grad;
    ks->data_bytes = ARENA_ARRAY(a, int64_t, grad->nargs + 1);
    ks->grads = ARENA_ARRAY(a, int64_t, 2 * grad->nargs + 1);
    int64_t trained = 0;
    for (int i = 0; i < grad->nargs; i++) {
        const KArg *arg = &grad->args[i];
        if (arg->role != ARG_OUTPUT) {
            ks->data_bytes[ks->ndata++] = bytes_per_example(arg);
            continue;
        }
        const StateSlot *s = param_slot(m, arg->name);
        ks->grads[2 * ks->ngrads] = s->offset;
        ks->grads[2 * ks->ngrads + 1] = s->size;
        ks->ngrads++;
        trained += s->size;
        if (round16(s->offset + s->size) > ks->grad_elems) ks->grad_elems = round16(s->offset + s->size);
    }
    double macs_per_example = kprog_gemm_flops(grad, 1) / 2;
    if (trained == 0 || macs_per_example < (double)SLICE_MIN_REUSE * (double)trained)
        return lower_graph(m, m->train, PROG_TRAIN, false);

    ks->apply = lower_graph(m, m->apply, PROG_APPLY, false);
    ks->apply_offset = ARENA_ARRAY(a, int64_t, ks->apply->nargs + 1);
    for (int i = 0; i < ks->apply->nargs; i++) ks->apply_offset[i] = param_slot(m, ks->apply->args[i].name)->offset;

    KProgram *p = kprog_new(a, "train_step", PROG_TRAIN);
    p->sliced = ks;
    p->state_size = m->state_size;
    for (int i = 0; i < ks->ndata; i++) kprog_add_arg(p, grad->args[i]);
    /* The workspace of runtime/slices.c, bounded for every batch n:
     * slices * (gradients + grad's workspace for ceil(n / slices) examples,
     * rounded up to 16 floats) + the argument arrays (2 floats a pointer)
     * + apply's workspace, where slices * ceil(n / slices) <= n + slices - 1. */
    int64_t pointers = (int64_t)slices * (ks->ndata + ks->ngrads) + ks->apply->nargs;
    int64_t fixed = slices * ks->grad_elems + round16(2 * pointers) + kprog_workspace_size(ks->apply, 1);
    int nterms = grad->nworkspace ? grad->nworkspace : 1;
    NPoly *terms = ARENA_ARRAY(a, NPoly, nterms);
    for (int i = 0; i < nterms; i++) {
        NPoly t = grad->nworkspace ? grad->workspace[i] : (NPoly){0, 0};
        terms[i] = (NPoly){.c0 = fixed + slices * (t.c0 + 15) + t.c1 * (slices - 1), .c1 = t.c1};
    }
    kprog_set_workspace(p, terms, nterms);
    return p;
}
