/* c_backend.h - Kernel IR -> standalone C99.
 *
 * The emitted file needs nothing beyond libc and libm: loops are plain C,
 * matrix products use a small blocked gemm emitted into the file, and the
 * counter-based generator is the one of runtime/rng.h written out in C.
 * It compiles cleanly with `cc -std=c99 -O2 -Wall -Wextra -Werror` (gcc
 * and clang). Everything it defines is `static` except what the ABI glue
 * (backend/abi.h) exports, so several models can share one program.
 *
 * A file is assembled as:
 *   c_emit_support(out)                      once: includes, gemm, RNG, helpers, checkpoint I/O
 *   c_emit_program(out, prog, "m__forward")  once per program
 *   (the ABI glue)                           the exported functions */
#ifndef NNC_C_BACKEND_H
#define NNC_C_BACKEND_H

#include "ir/kir.h"

#include <stdio.h>

/* The code every emitted file starts with (f32 programs):
 *
 *   #include <math.h> <stdint.h> <stdio.h> <stdlib.h> <string.h>
 *   static void nnc_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
 *                         const float *a, int64_t lda, const float *b, int64_t ldb,
 *                         float beta, float *c, int64_t ldc);     row-major, as nnrt_sgemm
 *   static void nnc_sgemm_batched(int64_t count, int ta, int tb, int64_t m, int64_t n, int64_t k,
 *                                 float alpha, const float *a, int64_t lda, int64_t sa, const float *b,
 *                                 int64_t ldb, int64_t sb, float beta, float *c, int64_t ldc,
 *                                 int64_t sc);                  as nnrt_sgemm_batched
 *   static float nnc_rand(uint64_t key, uint64_t counter);      as nnrt_rand_uniform
 *   typedef struct nnc_tensor { const char *name; int kind; int rank; int64_t dims[4];
 *                               int64_t offset, size; } nnc_tensor;     as NnrtTensor
 *   static int nnc_save(const float *state, const nnc_tensor *t, int n, const char *model,
 *                       const char *path, char *err, size_t errlen);  as nnrt_checkpoint_save
 *   static int nnc_load(float *state, const nnc_tensor *t, int n, int required,
 *                       const char *path, char *err, size_t errlen);  as nnrt_checkpoint_load
 *
 * (kinds: 1 param, 2 optimizer state, 4 hyper-parameter.) */
void c_emit_support(FILE *out);

/* One program as
 *   static float NAME(float *state, void **args, int64_t batch, void *workspace, uint64_t seed)
 * with the calling convention of the LLVM backend (backend/llvm/llvm_backend.h).
 * Each kernel becomes a static function named after the graph node it came
 * from, with the shapes of its buffers in a comment. */
void c_emit_program(FILE *out, const KProgram *p, const char *name);

/* A float as a C constant that reads back exactly (1.5f, 2.0f, -INFINITY). */
void c_emit_float(FILE *out, double value);

#endif
