/* graph.c - Graph IR construction: the op table, nodes, types, modules. */
#include "ir/ir.h"
#include "support/util.h"

#include <stdlib.h>
#include <string.h>

/* ---- the op table ------------------------------------------------------------- */

typedef struct OpRow {
    const char *name;
    int arity;
    unsigned flags;
    const char *attrs;
} OpRow;

static const OpRow op_rows[OP_COUNT] = {
#define EW(e, name, arity, flags, attrs, grad, scalar) [OP_##e] = {name, arity, (flags) | OPF_EW, attrs},
#define OP(e, name, arity, flags, attrs, shape, grad, lower) [OP_##e] = {name, arity, flags, attrs},
#include "ir/ops.def"
};

static OpInfo op_infos[OP_COUNT];
static bool op_infos_ready;

/* Parses an attribute spec such as "axes keepdims=0" into `info`. */
static void parse_attr_spec(OpInfo *info, const char *spec) {
    const char *p = spec;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        const char *start = p;
        while (*p && *p != ' ' && *p != '=') p++;
        NNC_ASSERT(info->nattrs < IR_MAX_ATTRS);
        int k = info->nattrs++;
        size_t len = (size_t)(p - start);
        char *name = xmalloc(len + 1);
        memcpy(name, start, len);
        name[len] = 0;
        info->attr_names[k] = name;
        if (*p == '=') {
            char *end;
            info->attr_defaults[k] = strtod(p + 1, &end);
            p = end;
        } else {
            info->attr_required[k] = true;
        }
    }
}

static void init_op_infos(void) {
    for (int i = 0; i < OP_COUNT; i++) {
        OpInfo *info = &op_infos[i];
        info->name = op_rows[i].name;
        info->arity = op_rows[i].arity;
        info->flags = op_rows[i].flags;
        parse_attr_spec(info, op_rows[i].attrs);
    }
    op_infos_ready = true;
}

const OpInfo *op_info(Op op) {
    if (!op_infos_ready) init_op_infos();
    NNC_ASSERT(op >= 0 && op < OP_COUNT);
    return &op_infos[op];
}

Op op_lookup(const char *name) {
    for (int i = 0; i < OP_COUNT; i++)
        if (strcmp(op_rows[i].name, name) == 0) return (Op)i;
    return OP_COUNT;
}

const char *const init_names[INIT_COUNT] = {
    [INIT_ZEROS] = "zeros",
    [INIT_ONES] = "ones",
    [INIT_CONST] = "constant",
    [INIT_UNIFORM] = "uniform",
    [INIT_NORMAL] = "normal",
    [INIT_XAVIER_UNIFORM] = "xavier_uniform",
    [INIT_XAVIER_NORMAL] = "xavier_normal",
    [INIT_HE_UNIFORM] = "he_uniform",
    [INIT_HE_NORMAL] = "he_normal",
    [INIT_SEED] = "seed",
};

const char *const schedule_names[SCHED_COUNT] = {
    [SCHED_CONSTANT] = "constant",
    [SCHED_STEP] = "step",
    [SCHED_EXPONENTIAL] = "exponential",
    [SCHED_COSINE] = "cosine",
};

const char *const optimizer_names[OPT_COUNT] = {
    [OPT_SGD] = "sgd",
    [OPT_MOMENTUM] = "momentum",
    [OPT_ADAGRAD] = "adagrad",
    [OPT_RMSPROP] = "rmsprop",
    [OPT_ADAM] = "adam",
    [OPT_ADAMW] = "adamw",
};

/* ---- graphs ---------------------------------------------------------------------- */

Graph *graph_new(Arena *a, const char *name) {
    Graph *g = ARENA_NEW(a, Graph);
    g->arena = a;
    g->name = name;
    return g;
}

Graph *graph_clone(Arena *a, const Graph *g, const char *name) {
    Graph *c = graph_new(a, name);
    c->nodes = ARENA_ARRAY(a, Node, g->n ? g->n : 1);
    memcpy(c->nodes, g->nodes, sizeof(Node) * (size_t)g->n);
    c->n = c->cap = g->n;
    return c;
}

int graph_add(Graph *g, Op op, int nin, const int32_t *in, const double *attr, Span span) {
    const OpInfo *info = op_info(op);
    NNC_ASSERT(nin == info->arity);
    Node n = {.op = op, .nin = nin, .span = span};
    for (int i = 0; i < nin; i++) {
        NNC_ASSERT(in[i] >= 0 && in[i] < g->n);
        n.in[i] = in[i];
    }
    for (int i = 0; i < info->nattrs; i++) n.attr[i] = attr ? attr[i] : info->attr_defaults[i];
    VEC_PUSH(g->arena, g->nodes, g->n, g->cap, n);
    return g->n - 1;
}

int graph_find_leaf(const Graph *g, Op op, const char *name) {
    for (int i = 0; i < g->n; i++)
        if (g->nodes[i].op == op && g->nodes[i].name && strcmp(g->nodes[i].name, name) == 0)
            return i;
    return -1;
}

void graph_compact(Graph *g, int *live) {
    int k = 0;
    for (int i = 0; i < g->n; i++) {
        if (!live[i]) {
            live[i] = -1;
            continue;
        }
        Node n = g->nodes[i];
        for (int j = 0; j < n.nin; j++) {
            NNC_ASSERT(live[n.in[j]] >= 0);
            n.in[j] = live[n.in[j]];
        }
        g->nodes[k] = n;
        live[i] = k++;
    }
    g->n = k;
}

/* ---- types --------------------------------------------------------------------------- */

IrType type_tensor(DType dt, int rank, const int64_t *dims) {
    NNC_ASSERT(rank >= 0 && rank <= IR_MAX_RANK);
    IrType t = {.dtype = dt, .rank = rank};
    for (int i = 0; i < rank; i++) t.dim[i] = dims[i];
    return t;
}

IrType type_scalar(DType dt) { return (IrType){.dtype = dt}; }

bool type_equal(const IrType *a, const IrType *b) {
    if (a->dtype != b->dtype || a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dim[i] != b->dim[i]) return false;
    return true;
}

void type_numel(const IrType *t, int64_t *c0, int64_t *c1) {
    int64_t prod = 1;
    bool batch = false;
    for (int i = 0; i < t->rank; i++) {
        if (t->dim[i] == IR_BATCH) {
            NNC_ASSERT(!batch);
            batch = true;
        } else {
            prod *= t->dim[i];
        }
    }
    *c0 = batch ? 0 : prod;
    *c1 = batch ? prod : 0;
}

const char *type_str(const IrType *t, char *buf, size_t size) {
    int n = snprintf(buf, size, "%s", t->dtype == DT_F32 ? "f32" : "i32");
    if (t->rank > 0) {
        n += snprintf(buf + n, size - (size_t)n, "[");
        for (int i = 0; i < t->rank; i++) {
            if (i) n += snprintf(buf + n, size - (size_t)n, ",");
            if (t->dim[i] == IR_BATCH)
                n += snprintf(buf + n, size - (size_t)n, "N");
            else
                n += snprintf(buf + n, size - (size_t)n, "%lld", (long long)t->dim[i]);
        }
        snprintf(buf + n, size - (size_t)n, "]");
    }
    return buf;
}

/* ---- modules --------------------------------------------------------------------------- */

Module *module_new(Arena *a, const Source *src) {
    Module *m = ARENA_NEW(a, Module);
    m->arena = a;
    m->src = src;
    m->name = "model";
    m->model = graph_new(a, "model");
    m->opt = OPT_DEFAULTS;
    m->train_spec = (TrainSpec){
        .optimizer = OPT_SGD, .lr = 0.01, .momentum = 0.9, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
        .rho = 0.99, .schedule = SCHED_CONSTANT, .every = 1, .gamma = 0.1, .batch = 32, .epochs = 1,
        .span = SPAN_NONE,
    };
    m->data = (DataSpec){.kind = DATA_FASHION_MNIST, .header = true, .test_fraction = 0.2, .span = SPAN_NONE};
    return m;
}

static int slot_class(uint32_t flags) {
    if (flags & NF_HYPER) return 2;
    if (flags & NF_OPT_STATE) return 1;
    return 0;
}

/* Every param of the model graph (declared, whatever reads it), then those
 * the passes added to the train graph (the optimizer's state). */
static const Node *state_param_at(const Module *m, int k) {
    if (k < m->model->n) return &m->model->nodes[k];
    const Node *n = &m->train->nodes[k - m->model->n];
    return n->op == OP_PARAM && graph_find_leaf(m->model, OP_PARAM, n->name) < 0 ? n : NULL;
}

void module_layout_state(Module *m) {
    int total = m->model->n + (m->train ? m->train->n : 0);
    m->nslots = 0;
    int64_t offset = 0;
    /* Parameters first (a deployed model needs only this prefix), then the
     * optimizer's moments, then hyper-parameters. The parameters are those
     * of the model graph: one that only an output depends on is not in the
     * training step, but the forward function reads it all the same. */
    for (int cls = 0; cls < 3; cls++) {
        for (int k = 0; k < total; k++) {
            const Node *n = state_param_at(m, k);
            if (!n || n->op != OP_PARAM || slot_class(n->flags) != cls) continue;
            int64_t c0, c1;
            type_numel(&n->type, &c0, &c1);
            NNC_ASSERT(c1 == 0);
            StateSlot s = {
                .name = n->name, .type = n->type, .offset = offset, .size = c0,
                .flags = n->flags & (NF_FROZEN | NF_OPT_STATE | NF_HYPER),
                .init = (InitKind)n->attr[0], .init_arg = n->attr[1],
                .fan_in = n->attr[2], .fan_out = n->attr[3],
            };
            VEC_PUSH(m->arena, m->slots, m->nslots, m->slots_cap, s);
            /* 16 floats = 64 bytes: every tensor starts on a cache line. */
            offset += (c0 + 15) & ~(int64_t)15;
        }
    }
    m->state_size = offset;
}

const StateSlot *module_find_slot(const Module *m, const char *name) {
    for (int i = 0; i < m->nslots; i++)
        if (strcmp(m->slots[i].name, name) == 0) return &m->slots[i];
    return NULL;
}
