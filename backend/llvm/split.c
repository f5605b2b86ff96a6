/* split.c - compiling one module on several threads.
 *
 * LLVM spends the whole of a compile on one thread: its optimisation
 * pipeline and its instruction selection each take about as long for a
 * LeNet step, and neither is shared out. A program's kernels, though, are
 * functions that only the program function calls, so the module can be cut
 * into parts that are optimised and compiled at the same time, each in an
 * LLVM context of its own (a context must never be used by two threads),
 * and linked into one image by the JIT afterwards.
 *
 * The unit that is never cut is a kernel with the functions only it
 * reaches (its range and chunk functions, which stay internal and so are
 * still specialised to their one or two callers). Kernels are dealt out to
 * the parts largest first, onto the part with the least work so far; a
 * function called from another part becomes external, and the others keep
 * the linkage the code generator gave them. Each part is read back from
 * bitcode of the whole module into its own context, and every function of
 * another part is dropped from it (a declaration where this part calls it).
 * Cutting changes no code: the code generator never inlines a kernel into
 * its program function, so every kernel compiles to what it does in one
 * module, and the parts compute the same bits as a library (test_jit). */
#include "backend/llvm/llvm_backend.h"
#include "support/util.h"

#include <llvm-c/BitReader.h>
#include <llvm-c/BitWriter.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* One defined function of the whole module, in module order. */
typedef struct {
    LLVMValueRef fn;
    int unit;  /* the function whose kernel (or program) this one belongs to */
    int part;
    int64_t size; /* instructions, the estimate of its compile time */
} SplitFn;

typedef struct {
    SplitFn *fns;
    int n;
} Split;

static int find_fn(const Split *s, LLVMValueRef fn) {
    for (int i = 0; i < s->n; i++)
        if (s->fns[i].fn == fn) return i;
    return -1;
}

static int user_function(const Split *s, LLVMValueRef user) {
    if (!LLVMIsAInstruction(user)) return -1;
    return find_fn(s, LLVMGetBasicBlockParent(LLVMGetInstructionParent(user)));
}

static bool is_exported(LLVMValueRef fn) { return LLVMGetLinkage(fn) != LLVMInternalLinkage; }

/* The unit of function i: itself when exported (a program) or when an
 * exported function calls it (a kernel); else the unit of a caller. A
 * function used other than by instructions of this module's functions is
 * a unit of its own, and made exported. */
static int unit_of(Split *s, int i, int depth) {
    if (s->fns[i].unit >= 0) return s->fns[i].unit;
    LLVMValueRef fn = s->fns[i].fn;
    int unit = -1;
    if (is_exported(fn) || depth > s->n) unit = i;
    for (LLVMUseRef u = LLVMGetFirstUse(fn); unit < 0 && u; u = LLVMGetNextUse(u)) {
        int caller = user_function(s, LLVMGetUser(u));
        if (caller < 0) {
            LLVMSetLinkage(fn, LLVMExternalLinkage);
            unit = i;
        } else if (is_exported(s->fns[caller].fn) && caller != i) {
            unit = i;
        } else if (caller != i) {
            unit = unit_of(s, caller, depth + 1);
        }
    }
    if (unit < 0) unit = i; /* unused, or only calling itself */
    s->fns[i].unit = unit;
    return unit;
}

static int64_t instruction_count(LLVMValueRef fn) {
    int64_t n = 0;
    for (LLVMBasicBlockRef b = LLVMGetFirstBasicBlock(fn); b; b = LLVMGetNextBasicBlock(b))
        for (LLVMValueRef in = LLVMGetFirstInstruction(b); in; in = LLVMGetNextInstruction(in)) n++;
    return n;
}

/* Assigns every defined function of `mod` a part in [0, nparts) and
 * exports those called across parts. Returns the number of parts used. */
static int plan_parts(Split *s, LLVMModuleRef mod, int nparts) {
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
        if (LLVMCountBasicBlocks(f) > 0) s->n++;
    s->fns = xcalloc((size_t)s->n + 1, sizeof *s->fns);
    int n = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
        if (LLVMCountBasicBlocks(f) > 0) s->fns[n++] = (SplitFn){f, -1, 0, instruction_count(f)};
    for (int i = 0; i < s->n; i++) unit_of(s, i, 0);

    int64_t *unit_size = xcalloc((size_t)s->n + 1, sizeof(int64_t));
    int *units = xmalloc(sizeof(int) * ((size_t)s->n + 1)), nunits = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->fns[i].unit == i) units[nunits++] = i;
        unit_size[s->fns[i].unit] += s->fns[i].size;
    }
    if (nparts > nunits) nparts = nunits;
    if (nparts < 1) nparts = 1;
    for (int u = 1; u < nunits; u++) /* largest first; a few dozen units */
        for (int v = u; v > 0 && unit_size[units[v]] > unit_size[units[v - 1]]; v--) {
            int t = units[v];
            units[v] = units[v - 1];
            units[v - 1] = t;
        }
    int64_t *load = xcalloc((size_t)nparts, sizeof(int64_t));
    int *part_of_unit = xcalloc((size_t)s->n + 1, sizeof(int));
    for (int u = 0; u < nunits; u++) {
        int best = 0;
        for (int p = 1; p < nparts; p++)
            if (load[p] < load[best]) best = p;
        part_of_unit[units[u]] = best;
        load[best] += unit_size[units[u]];
    }
    for (int i = 0; i < s->n; i++) s->fns[i].part = part_of_unit[s->fns[i].unit];

    /* A function called from another part must be visible to it. */
    for (int i = 0; i < s->n; i++)
        for (LLVMUseRef u = LLVMGetFirstUse(s->fns[i].fn); u; u = LLVMGetNextUse(u)) {
            int caller = user_function(s, LLVMGetUser(u));
            if (caller >= 0 && s->fns[caller].part != s->fns[i].part) LLVMSetLinkage(s->fns[i].fn, LLVMExternalLinkage);
        }
    free(unit_size);
    free(units);
    free(load);
    free(part_of_unit);
    return nparts;
}

/* Drops from `mod` (a copy of the whole module) every function defined in
 * another part: exported ones become declarations, internal ones (reached
 * only from their own part) go. */
static void keep_part(LLVMModuleRef mod, const Split *s, int part) {
    LLVMValueRef *fns = xmalloc(sizeof(LLVMValueRef) * ((size_t)s->n + 1));
    int n = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
        if (LLVMCountBasicBlocks(f) > 0) fns[n++] = f;
    NNC_ASSERT(n == s->n); /* bitcode keeps the order of functions */
    for (int i = 0; i < n; i++) {
        if (s->fns[i].part == part) continue;
        LLVMValueRef f = fns[i];
        if (LLVMGetLinkage(f) == LLVMInternalLinkage) {
            /* Its users, if any, are functions of its own part, going too. */
            LLVMReplaceAllUsesWith(f, LLVMConstPointerNull(LLVMTypeOf(f)));
            LLVMDeleteFunction(f);
            continue;
        }
        size_t len;
        const char *fname = LLVMGetValueName2(f, &len);
        char *name = xmalloc(len + 1);
        memcpy(name, fname, len);
        LLVMValueRef decl = LLVMAddFunction(mod, "", LLVMGlobalGetValueType(f));
        LLVMReplaceAllUsesWith(f, decl);
        LLVMDeleteFunction(f);
        LLVMSetValueName2(decl, name, len);
        free(name);
    }
    free(fns);
}

/* One part's compile, on whichever thread claims it. */
typedef struct {
    LLVMMemoryBufferRef bitcode; /* the whole module, or NULL: `mod` is this part's */
    LLVMModuleRef mod;
    const Split *split;
    int part, nparts;
    LLVMTargetMachineRef tm;
    int level;
    LLVMMemoryBufferRef object;
    char *err;
} PartJob;

static void *compile_part(void *arg) {
    PartJob *job = arg;
    LLVMContextRef ctx = NULL;
    if (job->bitcode) {
        ctx = LLVMContextCreate();
        if (LLVMParseBitcodeInContext2(ctx, job->bitcode, &job->mod)) {
            job->err = LLVMCreateMessage("cannot read back the module's bitcode");
            LLVMContextDispose(ctx);
            return NULL;
        }
    }
    if (job->nparts > 1) keep_part(job->mod, job->split, job->part);
    if (llvm_optimize(job->mod, job->tm, job->level, &job->err))
        if (LLVMTargetMachineEmitToMemoryBuffer(job->tm, job->mod, LLVMObjectFile, &job->err, &job->object))
            job->object = NULL;
    if (ctx) {
        LLVMDisposeModule(job->mod);
        LLVMContextDispose(ctx);
    }
    return NULL;
}

/* The parts, claimed in turn by the threads compiling them. */
typedef struct {
    PartJob *jobs;
    int n;
    atomic_int next;
} PartQueue;

static void *compile_parts_claimed(void *arg) {
    PartQueue *q = arg;
    for (int p; (p = atomic_fetch_add(&q->next, 1)) < q->n;) compile_part(&q->jobs[p]);
    return NULL;
}

int llvm_compile_parts(LLVMModuleRef mod, const char *cpu, int level, int threads, LLVMMemoryBufferRef *objects,
                       char **err) {
    if (threads < 1) threads = 1;
    /* One part a thread: more, claimed in turn, did not finish sooner when
     * one core was slower than the other (each part reads the bitcode). */
    Split s = {0};
    int nparts = plan_parts(&s, mod, threads > LLVM_MAX_PARTS ? LLVM_MAX_PARTS : threads);
    if (threads > nparts) threads = nparts;
    LLVMMemoryBufferRef bitcode = nparts > 1 ? LLVMWriteBitcodeToMemoryBuffer(mod) : NULL;
    PartJob jobs[LLVM_MAX_PARTS];
    /* Part 0 is compiled in the module as built, the others in copies read
     * back from its bitcode. */
    for (int p = 0; p < nparts; p++)
        jobs[p] = (PartJob){p ? bitcode : NULL, p ? NULL : mod, &s, p, nparts, llvm_target_machine(cpu), level, NULL, NULL};
    PartQueue q = {jobs, nparts, 0};
    pthread_t tids[LLVM_MAX_PARTS];
    int started = 0;
    while (started < threads - 1 && pthread_create(&tids[started], NULL, compile_parts_claimed, &q) == 0) started++;
    compile_parts_claimed(&q);
    for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
    int made = 0;
    for (int p = 0; p < nparts; p++) {
        if (jobs[p].object && made == p) objects[made++] = jobs[p].object;
        else if (jobs[p].object) LLVMDisposeMemoryBuffer(jobs[p].object);
        if (jobs[p].err && !*err) *err = jobs[p].err;
        else if (jobs[p].err) LLVMDisposeMessage(jobs[p].err);
        LLVMDisposeTargetMachine(jobs[p].tm);
    }
    if (bitcode) LLVMDisposeMemoryBuffer(bitcode);
    free(s.fns);
    if (made < nparts) {
        for (int p = 0; p < made; p++) LLVMDisposeMemoryBuffer(objects[p]);
        if (!*err) *err = LLVMCreateMessage("code generation failed");
        return 0;
    }
    return nparts;
}
