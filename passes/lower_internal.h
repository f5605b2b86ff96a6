/* lower_internal.h - what the files of the lowering share: lower.c (buffers,
 * elementwise ops, reductions, softmax, losses, the optimizer's
 * assignments) and lower_nn.c (convolution, pooling, dropout). */
#ifndef NNC_LOWER_INTERNAL_H
#define NNC_LOWER_INTERNAL_H

#include "passes/passes.h"

typedef struct LowerCtx {
    Module *m;
    const Graph *g;
    KProgram *p;
    Arena *a;
    int *buf;     /* node -> buffer, or -1 (an inlined value, or an assign) */
    FusePlan fp;  /* which values are computed where they are read */
    NPoly workspace_end; /* where the next workspace region goes */
    /* The kernel being built: its top-level block, how many statements
     * at its start compute inlined scalars once, and which local holds
     * each (valid while scalar_kernel[id] == kernels). */
    KsBlock *top;
    int prologue, kernels;
    /* The kernel is one flat loop over elements (lw_elementwise_loops):
     * every value it reads is loaded at the loop's index. */
    bool flat;
    int *scalar_local, *scalar_kernel;
} LowerCtx;

static inline const Node *lw_node(LowerCtx *c, int id) { return &c->g->nodes[id]; }
static inline Kx *lw_dim(Arena *a, int64_t d) { return d == IR_BATCH ? kx_batch(a) : kx_int(a, d); }

Kx *lw_dims_product(Arena *a, const IrType *t, int from, int to);
Kx *lw_numel(Arena *a, const IrType *t);
/* Row-major linear index of `vars` (one per axis of t; an axis of size 1
 * may have NULL). */
Kx *lw_index(Arena *a, const IrType *t, Kx **vars);
/* The element of value `id` at its coordinates idx (one per axis): loaded
 * from its buffer, or computed on the spot for a constant or an inlined
 * value. */
Kx *lw_load_at(LowerCtx *c, int id, Kx **idx);
/* The element of `id` that broadcasts to coordinates `vars` of a result of
 * rank `rank` (NumPy rules). */
Kx *lw_load_broadcast(LowerCtx *c, int id, Kx **vars, int rank);
/* A scalar in a buffer (rank 0). */
Kx *lw_load_scalar(LowerCtx *c, int id);
/* One loop per axis of t inside blk; fills vars; returns the innermost
 * body. `parallel` marks every loop of the nest as one whose iterations
 * write apart (each writes its own elements), so a backend may run them
 * at once: the GPU backend gives each combination its own thread. */
KsBlock *lw_loop_nest(LowerCtx *c, KsBlock *blk, const IrType *t, int naxes, Kx **vars, bool parallel);
/* The same for explicit extents. */
KsBlock *lw_loops(LowerCtx *c, KsBlock *blk, Kx *const *extents, int n, Kx **vars, bool parallel);
/* Loops over the elements of a result of type t, inside blk, for a kernel
 * that reads the values `reads` (and whatever they inline) elementwise or
 * by broadcasting: one flat loop when no read broadcasts, so that it
 * vectorises whatever the shape, else one loop per axis. Fills vars (one
 * per axis; for a flat loop vars[0] is the element index) and *index, the
 * result's element index; returns the innermost body. */
KsBlock *lw_elementwise_loops(LowerCtx *c, KsBlock *blk, const IrType *t, const int *reads, int nreads, Kx **vars,
                              Kx **index);
/* A new loop kernel for node id; its top-level block. */
KsBlock *lw_kernel(LowerCtx *c, int id);
/* A readable name for node id: its .nn variable and op. */
const char *lw_name(LowerCtx *c, int id);
/* Scratch space in the workspace for node id's kernels (im2col...). */
int lw_scratch(LowerCtx *c, int id, const char *what, IrType t);

/* lower_nn.c */
void lower_conv2d(LowerCtx *c, int id);
void lower_conv2d_grad_input(LowerCtx *c, int id);
void lower_conv2d_grad_weight(LowerCtx *c, int id);
void lower_maxpool2d(LowerCtx *c, int id);
void lower_maxpool2d_grad(LowerCtx *c, int id);
void lower_avgpool2d(LowerCtx *c, int id);
void lower_avgpool2d_grad(LowerCtx *c, int id);
void lower_dropout(LowerCtx *c, int id);

#endif
