/* nnrt.h - the runtime functions that generated code calls.
 *
 * Compiled models reference these by name (the JIT resolves them in the
 * running process; shared libraries link the runtime). Matrices are
 * row-major; ta / tb select the transpose of a / b:
 *   c := alpha * op(a) * op(b) + beta * c,  op(a) m x k, op(b) k x n. */
#ifndef NNRT_H
#define NNRT_H

#include <stdbool.h>
#include <stdint.h>

void nnrt_sgemm(int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
void nnrt_dgemm(int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
                int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc);

/* A batch of `count` products: product i reads a + i*sa, b + i*sb and writes
 * c + i*sc (strides in elements, 0 to share a matrix). With sc = 0 the
 * products sum into the one c: c := alpha * sum_i op(a_i) op(b_i) + beta * c
 * (with count = 0 that is c := beta * c). */
void nnrt_sgemm_batched(int64_t count, int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, int64_t sa, const float *b, int64_t ldb, int64_t sb,
                        float beta, float *c, int64_t ldc, int64_t sc);
void nnrt_dgemm_batched(int64_t count, int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, double alpha,
                        const double *a, int64_t lda, int64_t sa, const double *b, int64_t ldb, int64_t sb,
                        double beta, double *c, int64_t ldc, int64_t sc);

/* Kernel timing (runtime/profile.c): programs built with profiling call
 * nnrt_profile_tick(k) before kernel k and nnrt_profile_tick(-1) at the
 * end; nnrt_profile_seconds()[k] adds up kernel k's time since
 * nnrt_profile_reset(kernels). */
void nnrt_profile_reset(int64_t kernels);
void nnrt_profile_tick(int64_t kernel);
const double *nnrt_profile_seconds(void);

/* Threads for the runtime's parallel work and for OpenBLAS. n >= 1 fixes
 * the count (--threads N): nnrt_use_threads no longer changes it. n <= 0
 * lifts that: the count is every core until nnrt_use_threads picks one. */
void nnrt_set_threads(int n);
/* A count chosen for the calls to come (cli/thread_choice.c measures which
 * is fastest); ignored while nnrt_set_threads has fixed one. */
void nnrt_use_threads(int n);
bool nnrt_threads_fixed(void);
/* The count in effect, and the cores this process may run on. */
int nnrt_threads(void);
int nnrt_cores(void);
/* How many regions have run on more than one thread (for tests that must
 * know a program really ran in parallel). */
uint64_t nnrt_parallel_regions(void);

/* Runs fn(ctx, lo, hi) over disjoint ranges that cover [0, n), on the
 * runtime's threads (runtime/pool.c), and returns when all are done. */
typedef void (*NnrtRangeFn)(void *ctx, int64_t lo, int64_t hi);
void nnrt_parallel_for(int64_t n, NnrtRangeFn fn, void *ctx);

/* OpenBLAS's own thread count (blas.c). */
void nnrt_blas_threads(int n);
/* Whether f32 products run on the runtime's own kernels, which threads may
 * call at the same time (each product then runs on its caller alone); not
 * so where they go to OpenBLAS. */
bool nnrt_sgemm_reentrant(void);

/* ---- a training step over slices of the batch (slices.c) ----------------------------------
 *
 * A program compiled with slices > 1 (passes/slice.c) calls
 * nnrt_sliced_step: the batch is cut into `slices` contiguous parts of
 * nearly equal size; `grad` computes each part's loss and gradients (as
 * if the part were the whole batch) on a thread of its own; the gradients
 * and losses are combined, weighted by each part's share of the batch, in
 * the order of the parts; `apply` then updates the state from the combined
 * gradients. Every pointer and count below is the compiler's (constants
 * in the generated code). */
typedef float (*NnrtProgram)(float *state, void **args, int64_t batch, void *workspace, uint64_t seed);

enum { NNRT_MAX_SLICES = 64 };

typedef struct NnrtSlicedStep {
    NnrtProgram grad, apply;
    int64_t slices;              /* 2 .. NNRT_MAX_SLICES */
    int64_t ndata;               /* args[0, ndata): the inputs and targets, cut into parts */
    const int64_t *data_bytes;   /* bytes per example of each (0: every part reads all of it) */
    int64_t ngrads;              /* grad's arguments after the data: one gradient a parameter */
    const int64_t *grads;        /* offset and size of each in a gradient buffer (elements), in pairs */
    int64_t napply;              /* apply's arguments: gradients */
    const int64_t *apply_offset; /* where each lies in the combined gradient buffer */
    int64_t grad_elems;          /* a gradient buffer's size, a multiple of 16 */
    int64_t nterms;              /* grad's workspace (elements) at batch n: */
    const int64_t *ws_terms;     /* the largest of c0 + c1 * n, (c0, c1) pairs */
    int64_t apply_ws;            /* apply's workspace (elements) */
} NnrtSlicedStep;

/* Elements of float the step's workspace needs at `batch` (the compiler's
 * workspace terms for the program are at least this large). */
int64_t nnrt_sliced_workspace(const NnrtSlicedStep *d, int64_t batch);
/* One step: args are the data arguments; returns the batch's loss. */
float nnrt_sliced_step(const NnrtSlicedStep *d, float *state, void **args, int64_t batch, float *workspace,
                       uint64_t seed);

#endif
