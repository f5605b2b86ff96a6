/* ir.h - the Graph IR: tensors and the ops between them.
 *
 * A Graph is a list of nodes in SSA order: a node's inputs always come
 * before it, so the list is a valid schedule and a node is named by its
 * index. A node is an op (ops.def), up to IR_MAX_INPUTS inputs, numeric
 * attributes, a result type and the source location it came from.
 *
 * A Module holds the functions nnc compiles from one model:
 *   forward     inputs -> outputs, in inference mode
 *   eval        inputs, targets -> outputs and the loss, in inference mode
 *   grad        inputs, targets -> the loss and every parameter's gradient
 *   train_step  grad plus the optimizer's update of the state
 *   apply       the update alone, from gradients given as inputs (a step
 *               whose batch is cut into slices: passes/slice.c)
 * and the layout of the model state they share (parameters, optimizer
 * moments and hyper-parameters in one float buffer). */
#ifndef NNC_IR_H
#define NNC_IR_H

#include "support/arena.h"
#include "support/diag.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum {
    IR_MAX_RANK = 4,
    IR_MAX_INPUTS = 4,
    IR_MAX_ATTRS = 8,
    IR_DROPOUT_STREAMS = 1 << 12, /* dropout nodes in a model: the keys of their masks hold 12 bits */
};

/* The symbolic batch dimension N: compiled code takes its value at run time. */
#define IR_BATCH ((int64_t)-1)

typedef enum {
#define EW(e, ...) OP_##e,
#define OP(e, ...) OP_##e,
#include "ops.def"
    OP_COUNT
} Op;

enum OpFlags {
    OPF_LEAF = 1 << 0,        /* no inputs: input, param, const          */
    OPF_EW = 1 << 1,          /* elementwise with broadcasting (EW rows) */
    OPF_PUBLIC = 1 << 2,      /* callable by name from the language      */
    OPF_ACT = 1 << 3,         /* usable as a layer's act=                */
    OPF_SIDE_EFFECT = 1 << 4, /* writes the state; never removed         */
};

typedef struct OpInfo {
    const char *name;
    int arity;
    unsigned flags;
    int nattrs;
    const char *attr_names[IR_MAX_ATTRS];
    double attr_defaults[IR_MAX_ATTRS];
    bool attr_required[IR_MAX_ATTRS];
} OpInfo;

const OpInfo *op_info(Op op);
/* The op called `name`, or OP_COUNT. */
Op op_lookup(const char *name);

typedef enum { DT_F32, DT_I32 } DType;

typedef struct IrType {
    DType dtype;
    int rank;
    int64_t dim[IR_MAX_RANK]; /* IR_BATCH for N */
} IrType;

/* How a parameter's initial values are drawn (PARAM attr "init"). */
typedef enum {
    INIT_ZEROS,
    INIT_ONES,
    INIT_CONST,          /* arg                               */
    INIT_UNIFORM,        /* U(-arg, arg)                      */
    INIT_NORMAL,         /* N(0, arg^2)                       */
    INIT_XAVIER_UNIFORM, /* U(-a, a), a = sqrt(6/(in+out))    */
    INIT_XAVIER_NORMAL,  /* N(0, 2/(in+out))                  */
    INIT_HE_UNIFORM,     /* U(-a, a), a = sqrt(6/in)          */
    INIT_HE_NORMAL,      /* N(0, 2/in)                        */
    INIT_SEED,           /* the init program's seed mod 2^24, exact in f32 (the key of dropout masks) */
    INIT_COUNT
} InitKind;

extern const char *const init_names[INIT_COUNT];

enum NodeFlags {
    NF_TARGET = 1 << 0,    /* input: the training target             */
    NF_OUTPUT = 1 << 1,    /* a result of forward / eval             */
    NF_LOSS = 1 << 2,      /* the scalar the step minimises          */
    NF_FROZEN = 1 << 3,    /* param: not trained                     */
    NF_OPT_STATE = 1 << 4, /* param: optimizer moment                */
    NF_HYPER = 1 << 5,     /* param: hyper-parameter scalar (lr, ...) */
    NF_GRAD = 1 << 6,      /* the gradient of the param named `name` */
    NF_METRIC = 1 << 7,    /* a scalar eval reports (metric statement) */
};

typedef struct Node {
    Op op;
    int nin;
    int32_t in[IR_MAX_INPUTS];
    double attr[IR_MAX_ATTRS];
    IrType type;
    const char *name; /* inputs, params: their name; others: the .nn variable, or NULL */
    Span span;        /* where in the source it came from */
    uint32_t flags;
} Node;

typedef struct Graph {
    Arena *arena;
    const char *name;
    Node *nodes;
    int n, cap;
} Graph;

Graph *graph_new(Arena *a, const char *name);
Graph *graph_clone(Arena *a, const Graph *g, const char *name);

/* Appends a node (type unset: the caller runs the shape rule). Attributes
 * not given (attr == NULL) take their defaults. Returns its index. */
int graph_add(Graph *g, Op op, int nin, const int32_t *in, const double *attr, Span span);

/* The param / input named `name`, or -1. */
int graph_find_leaf(const Graph *g, Op op, const char *name);

/* Keeps only the nodes that `live[i]` marks, renumbering inputs; live[] is
 * overwritten with the old->new index map (-1 for dropped nodes). */
void graph_compact(Graph *g, int *live);

/* ---- types ------------------------------------------------------------------ */
IrType type_tensor(DType dt, int rank, const int64_t *dims);
IrType type_scalar(DType dt);
bool type_equal(const IrType *a, const IrType *b);
/* Number of elements as c1 * N + c0 (a shape holds N at most once). */
void type_numel(const IrType *t, int64_t *c0, int64_t *c1);
/* "f32[N,784]" into buf; returns buf. */
const char *type_str(const IrType *t, char *buf, size_t size);
enum { TYPE_STR_MAX = 96 };

/* ---- the module --------------------------------------------------------------- */

/* The optional transformations: they change how fast the code runs, never
 * what it computes (beyond float rounding). */
typedef enum {
    XF_SIMPLIFY, /* common subexpressions, dead code, constants, algebra (simplify.c) */
    XF_FUSE,     /* elementwise chains inlined where they are read (fuse.c)          */
    XF_MEMPLAN,  /* workspace regions shared by values not live at once (memplan.c)  */
    XF_COALESCE, /* nested loops over contiguous memory merged into one (coalesce.c)  */
    XF_COUNT
} Transform;

/* How hard the compiler works on a module; set by the driver (-O,
 * --disable-pass), read by the passes, the lowering and the backends. */
typedef struct OptSettings {
    int level;         /* LLVM's optimisation pipeline, 0..3 */
    unsigned disabled; /* (1u << Transform) bits of transformations turned off */
    bool profile;      /* kernels report their time (nnc bench --profile) */
    bool cuda;         /* --device cuda: programs run on the GPU */
    bool tf32;         /* --tf32: matrix products on the GPU may round inputs to TF32 */
    int slices;        /* a training step's batch in at most this many slices (passes/slice.c);
                          0: one a thread the programs run on */
} OptSettings;

#define OPT_DEFAULTS ((OptSettings){.level = 3})

static inline bool opt_enabled(const OptSettings *o, Transform t) { return !(o->disabled & (1u << t)); }

/* One tensor of the model state. */
typedef struct StateSlot {
    const char *name;
    IrType type;
    int64_t offset, size; /* in elements of the state buffer */
    uint32_t flags;       /* NF_FROZEN / NF_OPT_STATE / NF_HYPER */
    InitKind init;
    double init_arg, fan_in, fan_out;
} StateSlot;

/* The update of each is written out in passes/optimizer.c. */
typedef enum { OPT_SGD, OPT_MOMENTUM, OPT_ADAGRAD, OPT_RMSPROP, OPT_ADAM, OPT_ADAMW, OPT_COUNT } OptimizerKind;
extern const char *const optimizer_names[OPT_COUNT];

/* Learning-rate schedules, as functions of the epoch e = step / steps_per_epoch:
 *   constant     lr
 *   step         lr * gamma ^ floor(e / every)
 *   exponential  lr * gamma ^ e
 *   cosine       min_lr + (lr - min_lr) * (1 + cos(pi * min(e / epochs, 1))) / 2 */
typedef enum { SCHED_CONSTANT, SCHED_STEP, SCHED_EXPONENTIAL, SCHED_COSINE, SCHED_COUNT } ScheduleKind;
extern const char *const schedule_names[SCHED_COUNT];

/* The `train` statement, after command-line overrides. */
typedef struct TrainSpec {
    OptimizerKind optimizer;
    double lr, momentum, beta1, beta2, eps, rho;
    bool nesterov;       /* momentum: Nesterov's form of the step */
    double weight_decay; /* adamw: decoupled; the others: L2, added to the gradient; 0 for none */
    double clip_norm;    /* the largest global 2-norm of the gradients; 0 for no clipping */
    ScheduleKind schedule;
    double every, gamma, min_lr; /* the schedule's parameters */
    int64_t batch, epochs;
    Span span;
} TrainSpec;

/* The `data` statement: what `nnc train` trains on. */
typedef enum { DATA_FASHION_MNIST, DATA_IDX, DATA_CSV } DataKind;

enum { AUG_FLIP = 1 << 0, AUG_SHIFT = 1 << 1 };

typedef struct DataSpec {
    DataKind kind;
    const char *path;     /* IDX folder or CSV file as written (NULL: the default) */
    int64_t classes[64];  /* IDX: only these classes, relabelled 0, 1, ... in this order */
    int nclasses;
    bool header;          /* CSV: the first line names the columns */
    double test_fraction; /* CSV: rows held out as the test set */
    unsigned augment;     /* AUG_* for training batches of images */
    int shift;            /* AUG_SHIFT: up to this many pixels each way */
    Span span;
} DataSpec;

/* A `pretrained` statement: parameters to load from another checkpoint. */
typedef struct Pretrained {
    const char *path; /* as written, relative to the .nn file */
    const char **names; /* params or layer prefixes; none = every param the file has */
    int nnames;
    Span span;
} Pretrained;

typedef struct Module {
    Arena *arena;
    const Source *src;
    const char *name;
    Graph *model;      /* as written, before any pass */
    Graph *forward;    /* inference                   */
    Graph *eval;       /* inference plus the loss     */
    Graph *grad;       /* loss and gradients          */
    Graph *train;      /* grad plus the update        */
    Graph *apply;      /* the update, gradients in    */
    TrainSpec train_spec;
    DataSpec data;
    Pretrained *pretrained;
    int npretrained, pretrained_cap;
    StateSlot *slots;
    int nslots, slots_cap;
    int64_t state_size; /* elements */
    OptSettings opt;
} Module;

Module *module_new(Arena *a, const Source *src);
/* Lays out the state from the params of the train graph (params first, then
 * optimizer state, then hyper-parameters); fills m->slots. */
void module_layout_state(Module *m);
const StateSlot *module_find_slot(const Module *m, const char *name);

/* ---- printing and checking ------------------------------------------------------- */
void graph_print(FILE *out, const Graph *g);
void module_print(FILE *out, const Module *m);
/* Graphviz DOT of n functions of m, each a cluster titled titles[k];
 * kernel_of[k] (or NULL) gives the node whose kernel computes each node,
 * and nodes sharing a kernel are drawn as a cluster (ir_dot.c). */
void module_print_dot(FILE *out, const Module *m, const Graph *const *graphs, const char *const *titles,
                      const int *const *kernel_of, int n);
/* Structural checks (SSA order, arity, types re-derived by the shape rules).
 * Returns false and prints what is wrong; only bugs in nnc make it fail. */
bool graph_verify(const Graph *g, FILE *err);

#endif
