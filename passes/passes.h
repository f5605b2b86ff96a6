/* passes.h - every pass over the Graph IR, and the lowering to Kernel IR.
 *
 * The pipeline (pipeline.c) runs, in order:
 *
 *   shape       every type of the model graph re-derived and checked
 *   derive      model graph -> forward, eval and grad graphs (dead nodes gone)
 *   autodiff    grad graph += the gradient of the loss for every trainable param
 *   optimizer   train graph = grad graph + the parameter update; state layout
 *   simplify    forward, eval, grad and train: constants folded, algebraic
 *               identities, common subexpressions merged, dead code removed
 *               (unless --disable-pass=simplify)
 *
 * and lower.c turns any of the resulting graphs into a KProgram (fusing
 * elementwise chains into the kernels that read them, fuse.c). Shape
 * inference is not a separate step: every node gets its type from its shape
 * rule the moment it is built (the frontend needs shapes to build layers);
 * pass_shape re-derives all of them before the other passes run. */
#ifndef NNC_PASSES_H
#define NNC_PASSES_H

#include "ir/ir.h"
#include "ir/kir.h"

/* ---- shape.c ------------------------------------------------------------------ */
/* Runs node `id`'s shape rule: sets its type, or reports at its span and
 * returns false. */
bool shape_infer(Graph *g, int id, Diag *d);
/* Re-derives every type and reports a node whose type disagrees. */
bool pass_shape_recheck(const Graph *g, FILE *err);
/* The pass: pass_shape_recheck over the model graph. */
bool pass_shape(Module *m, Diag *d);
/* The shape of broadcasting a and b (NumPy rules); false if incompatible. */
bool shape_broadcast(const IrType *a, const IrType *b, IrType *out);

/* ---- derive.c ------------------------------------------------------------------ */
/* Builds m->forward, m->eval and m->grad (before autodiff) from m->model. */
bool pass_derive(Module *m, Diag *d);
/* Removes nodes that no root (output, loss, gradient, side effect) needs. */
void graph_remove_dead(Graph *g);

/* ---- autodiff.c ------------------------------------------------------------------ */
/* Appends to m->grad the gradient of its loss with respect to every
 * trainable param, each flagged NF_GRAD and named after its param. */
bool pass_autodiff(Module *m, Diag *d);

/* ---- optimizer.c ------------------------------------------------------------------ */
/* m->train = m->grad plus the update of m->train_spec's optimizer, then
 * lays out the model state (module_layout_state). */
bool pass_optimizer(Module *m, Diag *d);

/* ---- simplify.c ---------------------------------------------------------------------- */
/* What simplifying did, summed over the sweeps of the graphs it was given. */
typedef struct SimplifyStats {
    int folded;    /* nodes that became constants                     */
    int rewritten; /* nodes replaced by an algebraic identity         */
    int merged;    /* nodes merged into an equal earlier node         */
    int removed;   /* nodes nothing read, removed                     */
} SimplifyStats;

/* Simplifies one function in place; adds to *stats what it did (stats may
 * be NULL). */
void graph_simplify(Graph *g, SimplifyStats *stats);
/* The pass: graph_simplify on forward, eval, grad and train_step, when
 * XF_SIMPLIFY is enabled in m->opt. */
bool pass_simplify(Module *m, Diag *d);

/* ---- fuse.c --------------------------------------------------------------------------- */
/* Which values of a function are computed inside the kernels that read
 * them, and which assignments share one loop. */
typedef struct FusePlan {
    bool *virt;  /* per node: inlined where read (no buffer, no kernel of its own) */
    int *group;  /* per assign: the first member of its group, else -1 */
    bool *last;  /* per assign: the member whose place the group's kernel takes */
    int n;
} FusePlan;

/* With `enabled` false, nothing is inlined and no assignments share a loop. */
FusePlan fuse_plan(const Graph *g, ProgKind kind, bool enabled);
void fuse_plan_free(FusePlan *p);
/* The node whose kernel computes each node (for pictures of the plan): the
 * node itself when it has a kernel of its own, the first reader's kernel
 * for an inlined value, the first member's for a grouped assignment, -1
 * for what needs no code (inputs, params, constants, views). */
void fuse_kernel_of(const Graph *g, const FusePlan *p, int *kernel);

/* ---- lower.c ----------------------------------------------------------------------- */
/* The Kernel IR of one function of the module; `g` is one of m->forward,
 * m->eval, m->grad, m->train. */
KProgram *lower_graph(Module *m, const Graph *g, ProgKind kind, bool real_f64);
/* The program that fills the state with initial values from a seed. */
KProgram *lower_init(Module *m, bool real_f64);

/* ---- slice.c ----------------------------------------------------------------------- */
/* The train_step program: with slices > 1, where the model allows it and
 * it pays (see slice.c), one that runs the batch in that many slices on
 * threads of their own (KProgram.slices); otherwise lower_graph's. */
KProgram *lower_train(Module *m, bool real_f64, int slices);

/* ---- coalesce.c -------------------------------------------------------------------- */
/* Merges perfectly nested loops whose every index walks them as one
 * contiguous range into a single loop (lower_graph runs it unless
 * XF_COALESCE is disabled). */
void pass_coalesce(KProgram *p);
/* ---- memplan.c --------------------------------------------------------------------- */
/* Sets every buffer's live range (KBuf.live_first, live_last): the kernels
 * that use its storage. */
void memplan_liveness(KProgram *p);
/* Lets workspace values that are never live at the same time share memory:
 * computes liveness, computes elementwise results in place of inputs that
 * die in their kernel, and packs the regions (offsets, p->workspace) for
 * every batch size, judged most closely at `train_batch`. lower_graph runs
 * it unless XF_MEMPLAN is disabled. */
void pass_memplan(KProgram *p, int64_t train_batch);

/* ---- pipeline.c -------------------------------------------------------------------- */
/* The names of the optional transformations (Transform order), for
 * --disable-pass. */
extern const char *const transform_names[XF_COUNT];

typedef struct PassOptions {
    const char *print_after; /* pass name, or "all"; NULL for none */
    FILE *print_to;          /* where --print-after writes (stdout by default) */
    bool verify_each;        /* verifier after every pass (always on in debug builds) */
    const OptSettings *opt;  /* copied into the module; NULL for the defaults (O3, all on) */
} PassOptions;

/* Runs every pass on a module that the frontend built. */
bool run_pipeline(Module *m, Diag *d, const PassOptions *opts);
/* The names of the passes, in order, NULL-terminated (for --help and checks). */
extern const char *const pass_names[];

#endif
