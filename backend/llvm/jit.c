/* jit.c - compiling modules in memory with ORC's LLJIT.
 *
 * Modules are optimised for the host CPU (the same pipeline as ahead-of-
 * time output, so a JIT-ed step computes bit for bit what a compiled
 * library computes), compiled to objects on several threads (split.c) and
 * then handed to LLJIT, which links them. The runtime's entry points
 * are defined in the JIT by address, so they resolve whatever the linker
 * kept of the runtime library; libm resolves against the process. */
#include "backend/llvm/llvm_backend.h"
#include "support/util.h"

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include "runtime/nnrt.h"

#include <stdlib.h>

struct NncJit {
    LLVMOrcLLJITRef lljit;
    LLVMOrcThreadSafeContextRef tsctx;
};

static char *take_error(LLVMErrorRef e) {
    char *m = LLVMGetErrorMessage(e);
    char *copy = LLVMCreateMessage(m);
    LLVMDisposeErrorMessage(m);
    return copy;
}

/* Every runtime function generated code may call. */
static const struct {
    const char *name;
    void (*addr)(void);
} runtime_symbols[] = {
    {"nnrt_sgemm", (void (*)(void))nnrt_sgemm},
    {"nnrt_dgemm", (void (*)(void))nnrt_dgemm},
    {"nnrt_sgemm_batched", (void (*)(void))nnrt_sgemm_batched},
    {"nnrt_dgemm_batched", (void (*)(void))nnrt_dgemm_batched},
    {"nnrt_profile_tick", (void (*)(void))nnrt_profile_tick},
    {"nnrt_parallel_for", (void (*)(void))nnrt_parallel_for},
    {"nnrt_sliced_step", (void (*)(void))nnrt_sliced_step},
};

static LLVMErrorRef define_runtime(LLVMOrcLLJITRef jit) {
    enum { N = sizeof runtime_symbols / sizeof runtime_symbols[0] };
    LLVMOrcCSymbolMapPair pairs[N];
    for (int i = 0; i < N; i++) {
        pairs[i].Name = LLVMOrcLLJITMangleAndIntern(jit, runtime_symbols[i].name);
        pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)runtime_symbols[i].addr;
        pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[i].Sym.Flags.TargetFlags = 0;
    }
    return LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(jit), LLVMOrcAbsoluteSymbols(pairs, N));
}

NncJit *nnc_jit_create(char **err) {
    llvm_init_native();
    NncJit *j = xcalloc(1, sizeof *j);
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    /* The builder takes ownership of the target machine it is given. */
    LLVMOrcJITTargetMachineBuilderRef jtmb =
        LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(llvm_host_target_machine());
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb);
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&j->lljit, builder);
    if (e) {
        *err = take_error(e);
        free(j);
        return NULL;
    }
    LLVMOrcDefinitionGeneratorRef gen;
    e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j->lljit), NULL, NULL);
    if (e) {
        *err = take_error(e);
        LLVMOrcDisposeLLJIT(j->lljit);
        free(j);
        return NULL;
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->lljit), gen);
    if ((e = define_runtime(j->lljit))) {
        *err = take_error(e);
        LLVMOrcDisposeLLJIT(j->lljit);
        free(j);
        return NULL;
    }
    j->tsctx = LLVMOrcCreateNewThreadSafeContext();
    return j;
}

LLVMContextRef nnc_jit_context(NncJit *j) { return LLVMOrcThreadSafeContextGetContext(j->tsctx); }

int nnc_jit_add(NncJit *j, LLVMModuleRef mod, int level, int threads, char **err) {
    LLVMMemoryBufferRef objects[LLVM_MAX_PARTS];
    int n = llvm_compile_parts(mod, NULL, level, threads, objects, err);
    LLVMDisposeModule(mod);
    for (int i = 0; i < n; i++) {
        /* The JIT owns the object from here, whether it takes it or not. */
        LLVMErrorRef e = LLVMOrcLLJITAddObjectFile(j->lljit, LLVMOrcLLJITGetMainJITDylib(j->lljit), objects[i]);
        if (e) {
            for (int k = i + 1; k < n; k++) LLVMDisposeMemoryBuffer(objects[k]);
            *err = take_error(e);
            return 0;
        }
    }
    return n;
}

void *nnc_jit_lookup(NncJit *j, const char *name) {
    LLVMOrcExecutorAddress addr = 0;
    LLVMErrorRef e = LLVMOrcLLJITLookup(j->lljit, &addr, name);
    if (e) {
        char *m = take_error(e);
        fprintf(stderr, "nnc: internal error: JIT lookup of %s failed: %s\n", name, m);
        LLVMDisposeMessage(m);
        return NULL;
    }
    return (void *)(uintptr_t)addr;
}

void nnc_jit_destroy(NncJit *j) {
    if (!j) return;
    LLVMOrcDisposeLLJIT(j->lljit);
    LLVMOrcDisposeThreadSafeContext(j->tsctx);
    free(j);
}
