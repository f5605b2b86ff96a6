/* llvm_backend.h - Kernel IR -> LLVM IR, optimisation for the host CPU, and
 * the ORC JIT.
 *
 * Every program becomes one function with the internal calling convention
 *
 *   real NAME(real *state, void **args, int64_t batch, real *workspace, uint64_t seed)
 *
 * (real = float, or double for f64 programs); args holds the program's
 * arguments in order (KProgram.args) and the result is the loss, or 0. */
#ifndef NNC_LLVM_BACKEND_H
#define NNC_LLVM_BACKEND_H

#include "ir/kir.h"

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include <stdbool.h>

/* The native target, initialised once. */
void llvm_init_native(void);

/* A target machine for this host's CPU and its features (AVX2, AVX-512...),
 * so the vectorizer uses every unit there is. The caller disposes it. */
LLVMTargetMachineRef llvm_host_target_machine(void);
/* The same for a named CPU: "native" (the host), or an x86-64 level such as
 * "x86-64", "x86-64-v3" for code that runs on other machines. */
LLVMTargetMachineRef llvm_target_machine(const char *cpu);

/* Writes `mod` (already optimised) as an object file. */
bool llvm_emit_object(LLVMModuleRef mod, LLVMTargetMachineRef tm, const char *path, char **err);

/* Emits `prog` into `mod` as a function called `name`. */
LLVMValueRef llvm_emit_program(LLVMModuleRef mod, const KProgram *prog, const char *name);

/* Verifies `mod` and runs LLVM's default pipeline at `level` (0..3) for
 * `tm`. On failure returns false with a message in *err (free with
 * LLVMDisposeMessage). */
bool llvm_optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, int level, char **err);

/* ---- compiling on several threads (split.c) ---------------------------------------- */
enum { LLVM_MAX_PARTS = 16 };

/* Optimises `mod` at `level` and compiles it for `cpu` (NULL: the host)
 * into object files, cut into as many as `threads` parts compiled at the
 * same time (at most LLVM_MAX_PARTS). The parts define each function once
 * and call each other by name; `mod` is left changed and must be disposed.
 * Returns the number of objects stored in objects[], or 0 with a message in
 * *err (free with LLVMDisposeMessage). */
int llvm_compile_parts(LLVMModuleRef mod, const char *cpu, int level, int threads, LLVMMemoryBufferRef *objects,
                       char **err);

/* ---- the JIT (jit.c) --------------------------------------------------------------- */
typedef struct NncJit NncJit;

NncJit *nnc_jit_create(char **err);
/* A fresh context to build a module in; the JIT takes both on nnc_jit_add. */
LLVMContextRef nnc_jit_context(NncJit *jit);
/* Optimises (at `level`) and compiles `mod` (built in nnc_jit_context, and
 * disposed) into the JIT, in up to `threads` parts compiled at the same
 * time. Returns the number of parts, or 0 with a message in *err. */
int nnc_jit_add(NncJit *jit, LLVMModuleRef mod, int level, int threads, char **err);
void *nnc_jit_lookup(NncJit *jit, const char *name);
void nnc_jit_destroy(NncJit *jit);

#endif
