/* cuda_backend.h - Kernel IR -> CUDA C, and the plan of launches that runs it.
 *
 * A program becomes one CUDA C translation unit (compiled by NVRTC, see
 * runtime/cuda/nnrt_cuda.h) and a list of steps run in order on one stream:
 * kernel launches and matrix products (cuBLAS). Every __global__ function
 * of a program takes the same parameters,
 *
 *   (real *state, real *ws, void *a0, ..., void *a{nargs-1}, long long N,
 *    unsigned long long seed)
 *
 * (real = float, or double for f64 programs), and computes its buffers'
 * addresses from them as the CPU backends do, so that one parameter list
 * serves every launch of a run.
 *
 * How a loop kernel maps onto threads:
 *   - the leading loops whose iterations are independent (the lowering's
 *     `parallel`, or a store-only loop whose stores are one to one in its
 *     variable) are collapsed into one range of "rows";
 *   - a row whose remaining body holds a reduction loop (only updates of
 *     scalars) of unknown or large extent runs on one warp: the lanes share
 *     the reduction's iterations and combine their partial values with
 *     __shfl_xor_sync, independent inner loops are shared too, anything
 *     else runs on lane 0;
 *   - every other row runs on one thread, in grid-stride loops.
 * Top-level statements of a kernel that share scalars (a loss: sum, then
 * divide) stay in one launch; the others each get their own. */
#ifndef NNC_CUDA_BACKEND_H
#define NNC_CUDA_BACKEND_H

#include "ir/kir.h"

#include <stdbool.h>
#include <stdio.h>

typedef enum { CS_LAUNCH, CS_GEMM } CudaStepKind;

typedef struct CudaStep {
    CudaStepKind kind;
    int kernel;       /* index in KProgram.kernels */
    char *fn;         /* CS_LAUNCH: the __global__ function's name */
    Kx **extents;     /* CS_LAUNCH: the collapsed loops' extents (ints of N and constants) */
    int nextents;
    bool warp;        /* CS_LAUNCH: one warp per row (else one thread) */
} CudaStep;

typedef struct CudaPlan {
    char *source;     /* the translation unit */
    CudaStep *steps;
    int nsteps;
} CudaPlan;

/* Translates `p`; the functions' names start with `prefix`. */
CudaPlan *cuda_plan_program(const KProgram *p, const char *prefix);
void cuda_plan_free(CudaPlan *plan);

/* The value of an int expression of N and constants (what extents, sizes
 * and strides of matrix products are). */
int64_t cuda_eval_int(const Kx *x, int64_t batch);

/* Threads per block of every launch. */
enum { CUDA_BLOCK = 256 };

#endif
