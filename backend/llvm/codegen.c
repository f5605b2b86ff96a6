/* codegen.c - Kernel IR -> LLVM IR through the LLVM C API.
 *
 * Each loop kernel becomes an internal function taking one `noalias`
 * pointer per buffer it touches, so that LLVM knows the arrays are
 * independent and vectorises freely; the program function computes the
 * buffers' addresses, calls the kernels in order (never inlined, so that
 * a kernel's code is the same in every module it is compiled in) and
 * calls the runtime for matrix products. Floating-point operations may be
 * reassociated and contracted (sums vectorise, a*b+c becomes an FMA), but
 * NaNs and infinities keep their meaning: the log-sum-exp code relies on
 * exp(-inf) = 0. */
#include "backend/llvm/llvm_backend.h"
#include "support/util.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/DebugInfo.h> /* LLVMTemporaryMDNode: loop metadata refers to itself */
#include <llvm-c/Support.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

typedef struct Cg {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    const KProgram *p;
    LLVMTypeRef i1, i32, i64, real, ptr, voidt;
    LLVMFastMathFlags fmf;
    /* per kernel function */
    LLVMValueRef fn;
    LLVMValueRef *bufptr; /* root buffer -> pointer value in the current function */
    LLVMValueRef *vars;   /* loop variable -> value */
    LLVMValueRef *locals; /* local -> alloca */
    LLVMValueRef batch, seed;
} Cg;

void llvm_init_native(void) {
    static bool done;
    if (done) return;
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    /* Loops of exp, log, sin, cos and pow vectorise through glibc's vector
     * math library (libmvec: _ZGVdN8v_expf is expf on 8 floats at once, to
     * within 4 ulp); without it each element is a call of its own, and a
     * softmax over 640 floats took 3 us. Loaded here with its symbols
     * global, the JIT finds them like libm's; a library links it through -lm
     * (glibc's libm.so brings libmvec as needed). */
    if (dlopen("libmvec.so.1", RTLD_NOW | RTLD_GLOBAL)) {
        const char *argv[] = {"nnc", "-vector-library=LIBMVEC-X86"};
        LLVMParseCommandLineOptions(2, argv, NULL);
    }
    done = true;
}

LLVMTargetMachineRef llvm_target_machine(const char *cpu_name) {
    llvm_init_native();
    char *triple = LLVMGetDefaultTargetTriple();
    LLVMTargetRef target;
    char *err = NULL;
    if (LLVMGetTargetFromTriple(triple, &target, &err)) NNC_BUG("no LLVM target for %s: %s", triple, err);
    bool native = !cpu_name || strcmp(cpu_name, "native") == 0;
    char *cpu = native ? LLVMGetHostCPUName() : LLVMCreateMessage(cpu_name);
    char *features = native ? LLVMGetHostCPUFeatures() : LLVMCreateMessage("");
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive,
                                                      LLVMRelocPIC, LLVMCodeModelDefault);
    LLVMDisposeMessage(triple);
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(features);
    return tm;
}

LLVMTargetMachineRef llvm_host_target_machine(void) { return llvm_target_machine(NULL); }

bool llvm_emit_object(LLVMModuleRef mod, LLVMTargetMachineRef tm, const char *path, char **err) {
    return !LLVMTargetMachineEmitToFile(tm, mod, (char *)path, LLVMObjectFile, err);
}

/* ---- helpers ------------------------------------------------------------------------ */

static LLVMValueRef call_intrinsic(Cg *c, const char *name, LLVMValueRef *args, unsigned nargs) {
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    NNC_ASSERT(id != 0);
    LLVMTypeRef over = c->real;
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(c->mod, id, &over, 1);
    LLVMTypeRef fty = LLVMIntrinsicGetType(c->ctx, id, &over, 1);
    LLVMValueRef v = LLVMBuildCall2(c->b, fty, fn, args, nargs, "");
    LLVMSetFastMathFlags(v, c->fmf);
    return v;
}

static LLVMValueRef fp(Cg *c, LLVMValueRef v) {
    if (LLVMCanValueUseFastMathFlags(v)) LLVMSetFastMathFlags(v, c->fmf);
    return v;
}

/* A libm function of one real that LLVM has no intrinsic for (log1p), by
 * the program's real type: log1pf or log1p, resolved like the libm calls
 * intrinsics become. Declared as touching no memory, as the intrinsics
 * are (nnc never reads errno), so that calls of it can be moved and
 * combined. */
static LLVMValueRef call_libm(Cg *c, const char *f32_name, const char *f64_name, LLVMValueRef arg) {
    const char *name = c->p->real_f64 ? f64_name : f32_name;
    LLVMTypeRef fty = LLVMFunctionType(c->real, &c->real, 1, false);
    LLVMValueRef fn = LLVMGetNamedFunction(c->mod, name);
    if (!fn) {
        fn = LLVMAddFunction(c->mod, name, fty);
        static const char *const attrs[] = {"nounwind", "willreturn", "memory"}; /* memory(none) */
        for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
            unsigned kind = LLVMGetEnumAttributeKindForName(attrs[i], strlen(attrs[i]));
            NNC_ASSERT(kind != 0);
            LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(c->ctx, kind, 0));
        }
    }
    return fp(c, LLVMBuildCall2(c->b, fty, fn, &arg, 1, ""));
}

static LLVMValueRef const_i64(Cg *c, uint64_t v) { return LLVMConstInt(c->i64, v, false); }

/* SplitMix64's finaliser; see runtime/rng.h. */
static LLVMValueRef mix64(Cg *c, LLVMValueRef z) {
    LLVMBuilderRef b = c->b;
    z = LLVMBuildAdd(b, z, const_i64(c, 0x9E3779B97F4A7C15ull), "");
    z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, const_i64(c, 30), ""), ""),
                     const_i64(c, 0xBF58476D1CE4E5B9ull), "");
    z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, const_i64(c, 27), ""), ""),
                     const_i64(c, 0x94D049BB133111EBull), "");
    return LLVMBuildXor(b, z, LLVMBuildLShr(b, z, const_i64(c, 31), ""), "");
}

static LLVMValueRef emit_rand(Cg *c, LLVMValueRef key, LLVMValueRef counter) {
    LLVMBuilderRef b = c->b;
    LLVMValueRef z = mix64(c, LLVMBuildXor(b, mix64(c, key), counter, ""));
    LLVMValueRef bits23 = LLVMBuildLShr(b, z, const_i64(c, 41), ""); /* top 32 bits, then >> 9 */
    LLVMValueRef u = LLVMBuildUIToFP(b, bits23, c->real, "");
    u = LLVMBuildFAdd(b, u, LLVMConstReal(c->real, 0.5), "");
    return LLVMBuildFMul(b, u, LLVMConstReal(c->real, 1.0 / 8388608.0), "");
}

static LLVMTypeRef elem_type(Cg *c, int buf) {
    return c->p->bufs[buf].dtype == DT_I32 ? c->i32 : c->real;
}

static LLVMValueRef emit_kx(Cg *c, const Kx *x);
static LLVMValueRef local_slot(Cg *c, int i);

static LLVMValueRef element_ptr(Cg *c, int buf, const Kx *index) {
    int root = kprog_root_buf(c->p, buf);
    LLVMValueRef base = c->bufptr[root];
    NNC_ASSERT(base != NULL);
    LLVMValueRef idx = emit_kx(c, index);
    return LLVMBuildInBoundsGEP2(c->b, elem_type(c, buf), base, &idx, 1, "");
}

static LLVMValueRef emit_kx(Cg *c, const Kx *x) {
    LLVMBuilderRef b = c->b;
    bool real = x->type == KT_REAL;
    switch (x->op) {
    case KX_INT: return LLVMConstInt(c->i64, (unsigned long long)x->i, true);
    case KX_REAL: return LLVMConstReal(c->real, x->r);
    case KX_BATCH: return c->batch;
    case KX_SEED: return c->seed;
    case KX_VAR: return c->vars[x->i];
    case KX_LOCAL: return LLVMBuildLoad2(b, c->real, local_slot(c, (int)x->i), "");
    case KX_LOAD: {
        LLVMValueRef v = LLVMBuildLoad2(b, elem_type(c, (int)x->i), element_ptr(c, (int)x->i, x->a), "");
        if (x->type == KT_INT) v = LLVMBuildSExt(b, v, c->i64, "");
        return v;
    }
    case KX_ADD: case KX_SUB: case KX_MUL: case KX_DIV: case KX_MOD: case KX_MIN: case KX_MAX: {
        LLVMValueRef l = emit_kx(c, x->a), r = emit_kx(c, x->b);
        if (real) {
            switch (x->op) {
            case KX_ADD: return fp(c, LLVMBuildFAdd(b, l, r, ""));
            case KX_SUB: return fp(c, LLVMBuildFSub(b, l, r, ""));
            case KX_MUL: return fp(c, LLVMBuildFMul(b, l, r, ""));
            case KX_DIV: return fp(c, LLVMBuildFDiv(b, l, r, ""));
            case KX_MOD: return fp(c, LLVMBuildFRem(b, l, r, ""));
            case KX_MIN: return call_intrinsic(c, "llvm.minnum", (LLVMValueRef[]){l, r}, 2);
            default: return call_intrinsic(c, "llvm.maxnum", (LLVMValueRef[]){l, r}, 2);
            }
        }
        switch (x->op) {
        case KX_ADD: return LLVMBuildNSWAdd(b, l, r, "");
        case KX_SUB: return LLVMBuildNSWSub(b, l, r, "");
        case KX_MUL: return LLVMBuildNSWMul(b, l, r, "");
        case KX_DIV: return LLVMBuildSDiv(b, l, r, "");
        case KX_MOD: return LLVMBuildSRem(b, l, r, "");
        case KX_MIN: return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, l, r, ""), l, r, "");
        default: return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, l, r, ""), l, r, "");
        }
    }
    case KX_POW: return call_intrinsic(c, "llvm.pow", (LLVMValueRef[]){emit_kx(c, x->a), emit_kx(c, x->b)}, 2);
    case KX_NEG: return fp(c, LLVMBuildFNeg(b, emit_kx(c, x->a), ""));
    case KX_EXP: return call_intrinsic(c, "llvm.exp", (LLVMValueRef[]){emit_kx(c, x->a)}, 1);
    case KX_LOG: return call_intrinsic(c, "llvm.log", (LLVMValueRef[]){emit_kx(c, x->a)}, 1);
    case KX_SQRT: return call_intrinsic(c, "llvm.sqrt", (LLVMValueRef[]){emit_kx(c, x->a)}, 1);
    case KX_ABS: return call_intrinsic(c, "llvm.fabs", (LLVMValueRef[]){emit_kx(c, x->a)}, 1);
    case KX_COS: return call_intrinsic(c, "llvm.cos", (LLVMValueRef[]){emit_kx(c, x->a)}, 1);
    case KX_SIN: return call_intrinsic(c, "llvm.sin", (LLVMValueRef[]){emit_kx(c, x->a)}, 1);
    case KX_FLOOR: return call_intrinsic(c, "llvm.floor", (LLVMValueRef[]){emit_kx(c, x->a)}, 1);
    case KX_LOG1P: return call_libm(c, "log1pf", "log1p", emit_kx(c, x->a));
    case KX_LT: case KX_LE: case KX_GT: case KX_GE: case KX_EQ: case KX_NE: {
        LLVMValueRef l = emit_kx(c, x->a), r = emit_kx(c, x->b);
        int k = x->op - KX_LT;
        if (x->a->type == KT_REAL) {
            static const LLVMRealPredicate fpred[] = {LLVMRealOLT, LLVMRealOLE, LLVMRealOGT,
                                                      LLVMRealOGE, LLVMRealOEQ, LLVMRealUNE};
            return LLVMBuildFCmp(b, fpred[k], l, r, "");
        }
        static const LLVMIntPredicate ipred[] = {LLVMIntSLT, LLVMIntSLE, LLVMIntSGT,
                                                 LLVMIntSGE, LLVMIntEQ,  LLVMIntNE};
        return LLVMBuildICmp(b, ipred[k], l, r, "");
    }
    case KX_SELECT:
        return LLVMBuildSelect(b, emit_kx(c, x->a), emit_kx(c, x->b), emit_kx(c, x->c), "");
    case KX_TOREAL: return LLVMBuildSIToFP(b, emit_kx(c, x->a), c->real, "");
    case KX_TOINT: return LLVMBuildFPToSI(b, emit_kx(c, x->a), c->i64, "");
    case KX_RAND: return emit_rand(c, emit_kx(c, x->a), emit_kx(c, x->b));
    default: NNC_BUG("kernel expression %d", (int)x->op);
    }
}

/* ---- statements ----------------------------------------------------------------------- */

static void emit_block(Cg *c, const KsBlock *blk);

static bool block_has_loop(const KsBlock *blk) {
    for (int i = 0; i < blk->n; i++)
        if (blk->items[i]->kind == KS_FOR) return true;
    return false;
}

static int64_t block_work(const KsBlock *blk);

/* A loop whose body is nothing but loops doing more than this much work is
 * never unrolled (see loop_metadata). */
enum { UNROLL_NEST_MAX_WORK = 16 };

static LLVMMetadataRef loop_property(Cg *c, const char *key, bool with_false) {
    LLVMMetadataRef prop[2] = {LLVMMDStringInContext2(c->ctx, key, strlen(key)),
                               LLVMValueAsMetadata(LLVMConstInt(c->i1, 0, false))};
    return LLVMMDNodeInContext2(c->ctx, prop, with_false ? 2 : 1);
}

/* Metadata for a loop around another, whose back edge is `branch`.
 *
 * The loop vectoriser leaves it alone: the innermost loop of a kernel runs
 * along a row of contiguous elements and is the one to vectorise. When
 * LLVM unrolls a short row (14 or 28 elements) completely, the loop around
 * it becomes innermost, and vectorising it would gather and scatter across
 * rows at a cost above the scalar code; left alone, the unrolled row is
 * vectorised by the SLP vectoriser with plain loads, stores and shuffles.
 *
 * A loop whose body is only a nest of loops with more than a few elements
 * of work (the channels around a 784-element row of a bias and ReLU, the
 * rows of an im2col) is not unrolled either: copying a vectorised row six
 * times saves six branches and costs LLVM a third of LeNet's compile time.
 * Loops around a short row, or around a reduction and its store (a small
 * generated matrix product, where unrolling keeps several sums in
 * registers), are left to LLVM. */
static void loop_metadata(Cg *c, LLVMValueRef branch, const KsBlock *body) {
    LLVMMetadataRef ops[3] = {LLVMTemporaryMDNode(c->ctx, NULL, 0)};
    unsigned n = 1;
    ops[n++] = loop_property(c, "llvm.loop.vectorize.enable", true);
    bool only_loops = true;
    for (int i = 0; i < body->n; i++) only_loops &= body->items[i]->kind == KS_FOR;
    if (only_loops && block_work(body) > UNROLL_NEST_MAX_WORK) ops[n++] = loop_property(c, "llvm.loop.unroll.disable", false);
    LLVMMetadataRef loop = LLVMMDNodeInContext2(c->ctx, ops, n);
    LLVMMetadataReplaceAllUsesWith(ops[0], loop);
    LLVMSetMetadata(branch, LLVMGetMDKindIDInContext(c->ctx, "llvm.loop", 9), LLVMMetadataAsValue(c->ctx, loop));
}

/* for var in [lo, hi): body */
static void emit_loop(Cg *c, const Ks *s, LLVMValueRef lo, LLVMValueRef hi) {
    LLVMBuilderRef b = c->b;
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(b);
    char name[32];
    snprintf(name, sizeof name, "i%d", s->var);
    LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(c->ctx, c->fn, name);
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "body");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "done");
    LLVMBuildBr(b, head);
    LLVMPositionBuilderAtEnd(b, head);
    LLVMValueRef iv = LLVMBuildPhi(b, c->i64, name);
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, iv, hi, ""), body, done);
    LLVMPositionBuilderAtEnd(b, body);
    c->vars[s->var] = iv;
    emit_block(c, &s->body);
    LLVMValueRef next = LLVMBuildNSWAdd(b, iv, const_i64(c, 1), "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
    LLVMValueRef back = LLVMBuildBr(b, head);
    if (block_has_loop(&s->body)) loop_metadata(c, back, &s->body);
    LLVMAddIncoming(iv, &lo, &pre, 1);
    LLVMAddIncoming(iv, &next, &latch, 1);
    LLVMPositionBuilderAtEnd(b, done);
}

/* `count` values of `type` on the stack of the function being emitted,
 * allocated at the top of its entry block (where LLVM promotes them to
 * registers); the builder goes back to the end of the block it was in. */
static LLVMValueRef entry_alloca(Cg *c, LLVMTypeRef type, uint64_t count, const char *name) {
    LLVMBasicBlockRef here = LLVMGetInsertBlock(c->b), entry = LLVMGetEntryBasicBlock(c->fn);
    LLVMPositionBuilder(c->b, entry, LLVMGetFirstInstruction(entry)); /* the end if empty */
    LLVMValueRef slot = count == 1 ? LLVMBuildAlloca(c->b, type, name)
                                   : LLVMBuildArrayAlloca(c->b, type, const_i64(c, count), name);
    LLVMPositionBuilderAtEnd(c->b, here);
    return slot;
}

/* The stack slot of scalar local i, made at its first use: a program has
 * dozens of locals, a kernel a few. */
static LLVMValueRef local_slot(Cg *c, int i) {
    if (!c->locals[i]) c->locals[i] = entry_alloca(c, c->real, 1, "s");
    return c->locals[i];
}

static void emit_stmt(Cg *c, const Ks *s) {
    LLVMBuilderRef b = c->b;
    switch (s->kind) {
    case KS_FOR: emit_loop(c, s, const_i64(c, 0), emit_kx(c, s->extent)); break;
    case KS_DECL: LLVMBuildStore(b, emit_kx(c, s->value), local_slot(c, s->var)); break;
    case KS_UPDATE: {
        LLVMValueRef old = LLVMBuildLoad2(b, c->real, local_slot(c, s->var), "");
        LLVMValueRef v = emit_kx(c, s->value), r;
        switch (s->update_op) {
        case KX_ADD: r = fp(c, LLVMBuildFAdd(b, old, v, "")); break;
        case KX_MAX: r = call_intrinsic(c, "llvm.maxnum", (LLVMValueRef[]){old, v}, 2); break;
        case KX_MIN: r = call_intrinsic(c, "llvm.minnum", (LLVMValueRef[]){old, v}, 2); break;
        default: NNC_BUG("update op %d", (int)s->update_op);
        }
        LLVMBuildStore(b, r, local_slot(c, s->var));
        break;
    }
    case KS_STORE: {
        LLVMValueRef ptr = element_ptr(c, s->buf, s->index);
        LLVMValueRef v = emit_kx(c, s->value);
        if (s->accumulate) v = fp(c, LLVMBuildFAdd(b, LLVMBuildLoad2(b, c->real, ptr, ""), v, ""));
        LLVMBuildStore(b, v, ptr);
        break;
    }
    }
}

static void emit_block(Cg *c, const KsBlock *blk) {
    for (int i = 0; i < blk->n; i++) emit_stmt(c, blk->items[i]);
}

static void add_attr(Cg *c, LLVMValueRef fn, unsigned index, const char *name) {
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, index, LLVMCreateEnumAttribute(c->ctx, kind, 0));
}

/* What every function generated for the program has. The initialisation
 * runs once, so it is optimised for size (no unrolling, no interleaved
 * copies of its vector loops): a third less machine code to generate,
 * and no slower (the random normals of a 4096 x 4096 layer take as long).
 * Compiled for the smallest size, its loops stayed scalar and a large
 * model's initialisation took twice as long. */
static void function_attrs(Cg *c, LLVMValueRef fn) {
    add_attr(c, fn, LLVMAttributeFunctionIndex, "nounwind");
    if (c->p->kind == PROG_INIT) add_attr(c, fn, LLVMAttributeFunctionIndex, "optsize");
}

/* The runtime function `fname` of type void(params), declared once per module. */
static LLVMValueRef runtime_fn(Cg *c, const char *fname, LLVMTypeRef *params, unsigned n, LLVMTypeRef *fty) {
    *fty = LLVMFunctionType(c->voidt, params, n, false);
    LLVMValueRef fn = LLVMGetNamedFunction(c->mod, fname);
    return fn ? fn : LLVMAddFunction(c->mod, fname, *fty);
}

static char *symbol_name(const char *prefix, int k, const char *name) {
    StrBuf sb = {0};
    sb_printf(&sb, "%s.k%d.", prefix, k);
    for (const char *s = name ? name : ""; *s; s++)
        sb_putc(&sb, (*s == '.' || *s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9')) ? *s : '_');
    return sb_take(&sb);
}

/* `internal void name(ptr noalias b..., i64 N, i64 seed[, i64 lo, i64 hi])`:
 * a kernel, or with `range` the part of one that runs a range of its loop. */
static LLVMValueRef new_kernel_fn(Cg *c, const char *name, const int *roots, int nroots, bool range) {
    int nparams = nroots + (range ? 4 : 2);
    LLVMTypeRef *ptys = xmalloc(sizeof(LLVMTypeRef) * (size_t)nparams);
    for (int i = 0; i < nparams; i++) ptys[i] = i < nroots ? c->ptr : c->i64;
    LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->voidt, ptys, (unsigned)nparams, false));
    free(ptys);
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    function_attrs(c, fn);
    for (int i = 0; i < nroots; i++) {
        add_attr(c, fn, (unsigned)i + 1, "noalias");
        add_attr(c, fn, (unsigned)i + 1, "nocapture");
        const char *bname = c->p->bufs[roots[i]].name ? c->p->bufs[roots[i]].name : "buf";
        LLVMSetValueName2(LLVMGetParam(fn, (unsigned)i), bname, strlen(bname));
    }
    return fn;
}

/* Starts emitting the body of a function made by new_kernel_fn. */
static void enter_kernel_fn(Cg *c, LLVMValueRef fn, const int *roots, int nroots) {
    const KProgram *p = c->p;
    c->fn = fn;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
    for (int i = 0; i < p->nbufs; i++) c->bufptr[i] = NULL;
    for (int i = 0; i < nroots; i++) c->bufptr[roots[i]] = LLVMGetParam(fn, (unsigned)i);
    c->batch = LLVMGetParam(fn, (unsigned)nroots);
    c->seed = LLVMGetParam(fn, (unsigned)nroots + 1);
    for (int i = 0; i < p->nlocals; i++) c->locals[i] = NULL; /* made at first use (local_slot) */
}

/* ---- loops on the runtime's threads ----------------------------------------------------
 *
 * A loop at the top of a kernel whose iterations are independent (lowering
 * marks them `parallel`) runs on the thread pool, nnrt_parallel_for, when
 * it has enough work to pay for waking the other threads: its iterations
 * become a function of a range [lo, hi) of the loop, reached through a
 * trampoline that takes the kernel's arguments from a small array on the
 * stack. Each iteration writes its own elements and no iteration reads
 * what another writes, so the results are the same for every thread
 * count. Smaller loops, and all loops at thread count 1, call the same
 * range function on the whole range. */

/* Below this many statement executions a loop stays on the calling thread
 * (a bias of a few hundred elements takes less time than a wake-up). */
enum { PARALLEL_MIN_WORK = 1 << 15, UNKNOWN_EXTENT_WORK = 16 };

/* Statement executions per run of a block: an estimate of its work. */
static int64_t block_work(const KsBlock *blk) {
    int64_t w = 0;
    for (int i = 0; i < blk->n; i++) {
        const Ks *s = blk->items[i];
        if (s->kind != KS_FOR) w += 1;
        else w += (s->extent->op == KX_INT ? s->extent->i : UNKNOWN_EXTENT_WORK) * block_work(&s->body);
    }
    return w;
}

static void mark_locals(const Kx *x, bool *read) {
    if (!x) return;
    if (x->op == KX_LOCAL) read[x->i] = true;
    mark_locals(x->a, read);
    mark_locals(x->b, read);
    mark_locals(x->c, read);
}

/* Whether block b reads a local that it does not declare itself (one
 * declared before the loop, which a range function would not see). */
static bool reads_outer_local(const KsBlock *blk, bool *declared, bool *read, int nlocals) {
    for (int i = 0; i < blk->n; i++) {
        const Ks *s = blk->items[i];
        mark_locals(s->value, read);
        mark_locals(s->index, read);
        mark_locals(s->extent, read);
        if (s->kind == KS_DECL) declared[s->var] = true;
        if (s->kind == KS_UPDATE) read[s->var] = true;
        if (s->kind == KS_FOR) reads_outer_local(&s->body, declared, read, nlocals);
    }
    for (int i = 0; i < nlocals; i++)
        if (read[i] && !declared[i]) return true;
    return false;
}

static bool may_run_parallel(Cg *c, const Ks *s) {
    if (s->kind != KS_FOR || !s->parallel) return false;
    int64_t work = block_work(&s->body);
    if (s->extent->op == KX_INT && s->extent->i * work < PARALLEL_MIN_WORK) return false;
    int n = c->p->nlocals + 1;
    bool *declared = xcalloc((size_t)n, sizeof(bool)), *read = xcalloc((size_t)n, sizeof(bool));
    bool outer = reads_outer_local(&s->body, declared, read, c->p->nlocals);
    free(declared);
    free(read);
    return !outer;
}

/* Loop s of a kernel being emitted in c->fn, whose arguments (roots, N,
 * seed) sit in `args`, run as a range function on the thread pool. */
static void emit_parallel_loop(Cg *c, const Ks *s, const char *name, const int *roots, int nroots,
                               LLVMValueRef args) {
    LLVMValueRef kernel_fn = c->fn;
    LLVMBasicBlockRef resume = LLVMGetInsertBlock(c->b);
    size_t nl = (size_t)c->p->nlocals + 1, nb = (size_t)c->p->nbufs + 1;
    LLVMValueRef *locals = xmalloc(sizeof(LLVMValueRef) * nl), *bufptr = xmalloc(sizeof(LLVMValueRef) * nb);
    memcpy(locals, c->locals, sizeof(LLVMValueRef) * nl);
    memcpy(bufptr, c->bufptr, sizeof(LLVMValueRef) * nb);
    LLVMValueRef batch = c->batch, seed = c->seed;

    /* name.range(b..., N, seed, lo, hi): the loop over [lo, hi). Not
     * inlined: it has two callers, and its noalias arguments tell LLVM
     * what it needs to vectorise. */
    StrBuf sb = {0};
    sb_printf(&sb, "%s.range%d", name, s->var);
    char *range_name = sb_take(&sb);
    LLVMValueRef range = new_kernel_fn(c, range_name, roots, nroots, true);
    add_attr(c, range, LLVMAttributeFunctionIndex, "noinline");
    enter_kernel_fn(c, range, roots, nroots);
    emit_loop(c, s, LLVMGetParam(range, (unsigned)nroots + 2), LLVMGetParam(range, (unsigned)nroots + 3));
    LLVMBuildRetVoid(c->b);

    /* name.chunk(ptr args, i64 lo, i64 hi), what nnrt_parallel_for calls. */
    sb_printf(&sb, "%s.chunk%d", name, s->var);
    char *chunk_name = sb_take(&sb);
    LLVMTypeRef chunk_params[] = {c->ptr, c->i64, c->i64};
    LLVMValueRef chunk = LLVMAddFunction(c->mod, chunk_name, LLVMFunctionType(c->voidt, chunk_params, 3, false));
    LLVMSetLinkage(chunk, LLVMInternalLinkage);
    function_attrs(c, chunk);
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, chunk, "entry"));
    int ncall = nroots + 4;
    LLVMValueRef *call = xmalloc(sizeof(LLVMValueRef) * (size_t)ncall);
    for (int i = 0; i < nroots + 2; i++) {
        LLVMValueRef slot = LLVMBuildInBoundsGEP2(c->b, c->i64, LLVMGetParam(chunk, 0), (LLVMValueRef[]){const_i64(c, (uint64_t)i)}, 1, "");
        call[i] = LLVMBuildLoad2(c->b, i < nroots ? c->ptr : c->i64, slot, "");
    }
    call[nroots + 2] = LLVMGetParam(chunk, 1);
    call[nroots + 3] = LLVMGetParam(chunk, 2);
    LLVMBuildCall2(c->b, LLVMGlobalGetValueType(range), range, call, (unsigned)ncall, "");
    LLVMBuildRetVoid(c->b);

    /* Back in the kernel: the pool for large loops, a direct call else. */
    c->fn = kernel_fn;
    memcpy(c->locals, locals, sizeof(LLVMValueRef) * nl);
    memcpy(c->bufptr, bufptr, sizeof(LLVMValueRef) * nb);
    c->batch = batch;
    c->seed = seed;
    LLVMPositionBuilderAtEnd(c->b, resume);
    LLVMValueRef extent = emit_kx(c, s->extent);
    LLVMValueRef work = LLVMBuildNSWMul(c->b, extent, const_i64(c, (uint64_t)block_work(&s->body)), "");
    LLVMBasicBlockRef pooled = LLVMAppendBasicBlockInContext(c->ctx, kernel_fn, "pooled");
    LLVMBasicBlockRef direct = LLVMAppendBasicBlockInContext(c->ctx, kernel_fn, "direct");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, kernel_fn, "done");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSGE, work, const_i64(c, PARALLEL_MIN_WORK), ""), pooled, direct);
    LLVMPositionBuilderAtEnd(c->b, pooled);
    LLVMTypeRef pf_params[] = {c->i64, c->ptr, c->ptr}, pf_type;
    LLVMValueRef pf = runtime_fn(c, "nnrt_parallel_for", pf_params, 3, &pf_type);
    LLVMBuildCall2(c->b, pf_type, pf, (LLVMValueRef[]){extent, chunk, args}, 3, "");
    LLVMBuildBr(c->b, done);
    LLVMPositionBuilderAtEnd(c->b, direct);
    for (int i = 0; i < nroots; i++) call[i] = c->bufptr[roots[i]];
    call[nroots] = c->batch;
    call[nroots + 1] = c->seed;
    call[nroots + 2] = const_i64(c, 0);
    call[nroots + 3] = extent;
    LLVMBuildCall2(c->b, LLVMGlobalGetValueType(range), range, call, (unsigned)ncall, "");
    LLVMBuildBr(c->b, done);
    LLVMPositionBuilderAtEnd(c->b, done);
    free(call);
    free(range_name);
    free(chunk_name);
    free(locals);
    free(bufptr);
}

/* One loop kernel as `internal void f(ptr noalias b..., i64 N, i64 seed)`;
 * returns the function and the list of root buffers it takes. */
static LLVMValueRef emit_kernel_fn(Cg *c, const Kernel *k, int index, const char *prefix, int *roots, int *nroots) {
    const KProgram *p = c->p;
    bool *used = xcalloc((size_t)p->nbufs + 1, sizeof(bool));
    kblock_mark_roots(p, &k->body, used);
    *nroots = 0;
    for (int i = 0; i < p->nbufs; i++)
        if (used[i]) roots[(*nroots)++] = i;
    free(used);

    char *name = symbol_name(prefix, index, k->name);
    LLVMValueRef fn = new_kernel_fn(c, name, roots, *nroots, false);
    /* Never inlined into the program function: inlined, a kernel's last
     * store could be forwarded to the next kernel's first load and the
     * arithmetic around them folded together, so its results would depend
     * on whether the two were compiled in one module or in two parts
     * (split.c). Apart, every kernel computes the same bits wherever it is
     * compiled, and a call per kernel costs a few nanoseconds a step. */
    add_attr(c, fn, LLVMAttributeFunctionIndex, "noinline");
    enter_kernel_fn(c, fn, roots, *nroots);
    LLVMValueRef args = NULL; /* the arguments for range functions, made at the first */
    for (int i = 0; i < k->body.n; i++) {
        const Ks *s = k->body.items[i];
        if (!may_run_parallel(c, s)) {
            emit_stmt(c, s);
            continue;
        }
        if (!args) {
            args = entry_alloca(c, c->i64, (uint64_t)*nroots + 2, "args");
            for (int j = 0; j < *nroots + 2; j++) {
                LLVMValueRef slot = LLVMBuildInBoundsGEP2(c->b, c->i64, args, (LLVMValueRef[]){const_i64(c, (uint64_t)j)}, 1, "");
                LLVMBuildStore(c->b, LLVMGetParam(fn, (unsigned)j), slot);
            }
        }
        emit_parallel_loop(c, s, name, roots, *nroots, args);
    }
    LLVMBuildRetVoid(c->b);
    free(name);
    return fn;
}

/* The address of each root buffer, computed in the program function. */
static LLVMValueRef buffer_address(Cg *c, const KBuf *bf, LLVMValueRef state, LLVMValueRef args,
                                   LLVMValueRef ws, LLVMValueRef batch) {
    LLVMBuilderRef b = c->b;
    switch (bf->kind) {
    case KB_STATE: {
        LLVMValueRef off = const_i64(c, (uint64_t)bf->offset.c0);
        return LLVMBuildInBoundsGEP2(b, c->real, state, &off, 1, bf->name);
    }
    case KB_ARG: {
        LLVMValueRef idx = const_i64(c, (uint64_t)bf->arg);
        LLVMValueRef slot = LLVMBuildInBoundsGEP2(b, c->ptr, args, &idx, 1, "");
        return LLVMBuildLoad2(b, c->ptr, slot, bf->name);
    }
    case KB_WORK: {
        LLVMValueRef off = LLVMBuildNSWAdd(b, LLVMBuildNSWMul(b, const_i64(c, (uint64_t)bf->offset.c1), batch, ""),
                                           const_i64(c, (uint64_t)bf->offset.c0), "");
        return LLVMBuildInBoundsGEP2(b, c->real, ws, &off, 1, bf->name);
    }
    default: NNC_BUG("address of a view");
    }
}

static LLVMValueRef gemm_buf(Cg *c, int buf) { return c->bufptr[kprog_root_buf(c->p, buf)]; }

/* nnrt_[sd]gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), or for
 * a batch nnrt_[sd]gemm_batched(count, ..., a, lda, sa, b, ldb, sb, ..., c, ldc, sc). */
static void emit_gemm(Cg *c, const KGemm *g) {
    bool batched = g->count != NULL;
    const char *fname = c->p->real_f64 ? (batched ? "nnrt_dgemm_batched" : "nnrt_dgemm")
                                       : (batched ? "nnrt_sgemm_batched" : "nnrt_sgemm");
    LLVMTypeRef params[17];
    LLVMValueRef args[17];
    unsigned n = 0;
#define ARG(type, value) (params[n] = (type), args[n++] = (value))
    if (batched) ARG(c->i64, emit_kx(c, g->count));
    ARG(c->i32, LLVMConstInt(c->i32, g->ta, false));
    ARG(c->i32, LLVMConstInt(c->i32, g->tb, false));
    ARG(c->i64, emit_kx(c, g->m));
    ARG(c->i64, emit_kx(c, g->n));
    ARG(c->i64, emit_kx(c, g->k));
    ARG(c->real, LLVMConstReal(c->real, g->alpha));
    ARG(c->ptr, gemm_buf(c, g->a));
    ARG(c->i64, emit_kx(c, g->lda));
    if (batched) ARG(c->i64, emit_kx(c, g->stride_a));
    ARG(c->ptr, gemm_buf(c, g->b));
    ARG(c->i64, emit_kx(c, g->ldb));
    if (batched) ARG(c->i64, emit_kx(c, g->stride_b));
    ARG(c->real, LLVMConstReal(c->real, g->beta));
    ARG(c->ptr, gemm_buf(c, g->c));
    ARG(c->i64, emit_kx(c, g->ldc));
    if (batched) ARG(c->i64, emit_kx(c, g->stride_c));
#undef ARG
    LLVMTypeRef fty;
    LLVMValueRef fn = runtime_fn(c, fname, params, n, &fty);
    LLVMBuildCall2(c->b, fty, fn, args, n, "");
}

static void profile_tick(Cg *c, int kernel) {
    LLVMTypeRef fty;
    LLVMValueRef fn = runtime_fn(c, "nnrt_profile_tick", &c->i64, 1, &fty);
    LLVMValueRef arg = LLVMConstInt(c->i64, (unsigned long long)(long long)kernel, true);
    LLVMBuildCall2(c->b, fty, fn, &arg, 1, "");
}

/* A private constant array of n i64 values. */
static LLVMValueRef const_i64_array(LLVMModuleRef mod, const char *name, const int64_t *values, int n) {
    LLVMContextRef ctx = LLVMGetModuleContext(mod);
    LLVMTypeRef i64 = LLVMInt64TypeInContext(ctx);
    LLVMValueRef *elems = xmalloc(sizeof(LLVMValueRef) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) elems[i] = LLVMConstInt(i64, (unsigned long long)values[i], true);
    LLVMValueRef init = LLVMConstArray2(i64, elems, (uint64_t)n);
    free(elems);
    LLVMValueRef g = LLVMAddGlobal(mod, LLVMTypeOf(init), name);
    LLVMSetInitializer(g, init);
    LLVMSetGlobalConstant(g, true);
    LLVMSetLinkage(g, LLVMPrivateLinkage);
    return g;
}

/* A step over slices of the batch (passes/slice.c): grad and apply are
 * programs of their own, and the step calls nnrt_sliced_step with a
 * constant NnrtSlicedStep (runtime/nnrt.h) that describes them. */
static LLVMValueRef emit_sliced_program(LLVMModuleRef mod, const KProgram *p, const char *name) {
    const KSlices *ks = p->sliced;
    LLVMContextRef ctx = LLVMGetModuleContext(mod);
    LLVMTypeRef i64 = LLVMInt64TypeInContext(ctx), ptr = LLVMPointerTypeInContext(ctx, 0);
    LLVMTypeRef f32 = LLVMFloatTypeInContext(ctx);
    char *gname = arena_printf(p->arena, "%s.grad", name), *aname = arena_printf(p->arena, "%s.apply", name);
    LLVMValueRef grad = llvm_emit_program(mod, ks->grad, gname);
    LLVMValueRef apply = llvm_emit_program(mod, ks->apply, aname);
    const KProgram *g = ks->grad;
    int64_t *terms = xmalloc(sizeof(int64_t) * (size_t)(2 * g->nworkspace + 1));
    for (int i = 0; i < g->nworkspace; i++) {
        terms[2 * i] = g->workspace[i].c0;
        terms[2 * i + 1] = g->workspace[i].c1;
    }
#define I64(v) LLVMConstInt(i64, (unsigned long long)(v), true)
    LLVMValueRef fields[] = {
        grad,
        apply,
        I64(ks->slices),
        I64(ks->ndata),
        const_i64_array(mod, "slices.data_bytes", ks->data_bytes, ks->ndata),
        I64(ks->ngrads),
        const_i64_array(mod, "slices.grads", ks->grads, 2 * ks->ngrads),
        I64(ks->apply->nargs),
        const_i64_array(mod, "slices.apply_offset", ks->apply_offset, ks->apply->nargs),
        I64(ks->grad_elems),
        I64(g->nworkspace),
        const_i64_array(mod, "slices.ws_terms", terms, 2 * g->nworkspace),
        I64(kprog_workspace_size(ks->apply, 1)),
    };
#undef I64
    free(terms);
    LLVMValueRef init = LLVMConstStructInContext(ctx, fields, sizeof fields / sizeof fields[0], false);
    LLVMValueRef desc = LLVMAddGlobal(mod, LLVMTypeOf(init), arena_printf(p->arena, "%s.slices", name));
    LLVMSetInitializer(desc, init);
    LLVMSetGlobalConstant(desc, true);
    LLVMSetLinkage(desc, LLVMPrivateLinkage);

    /* float name(ptr state, ptr args, i64 batch, ptr ws, i64 seed) */
    LLVMTypeRef ptys[] = {ptr, ptr, i64, ptr, i64};
    LLVMValueRef fn = LLVMAddFunction(mod, name, LLVMFunctionType(f32, ptys, 5, false));
    LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
    LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
    LLVMTypeRef stys[] = {ptr, ptr, ptr, i64, ptr, i64};
    LLVMTypeRef sty = LLVMFunctionType(f32, stys, 6, false);
    LLVMValueRef step = LLVMGetNamedFunction(mod, "nnrt_sliced_step");
    if (!step) step = LLVMAddFunction(mod, "nnrt_sliced_step", sty);
    LLVMValueRef args[] = {desc, LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), LLVMGetParam(fn, 3),
                           LLVMGetParam(fn, 4)};
    LLVMBuildRet(b, LLVMBuildCall2(b, sty, step, args, 6, "loss"));
    LLVMDisposeBuilder(b);
    return fn;
}

LLVMValueRef llvm_emit_program(LLVMModuleRef mod, const KProgram *p, const char *name) {
    if (p->sliced) return emit_sliced_program(mod, p, name);
    Cg c = {.ctx = LLVMGetModuleContext(mod), .mod = mod, .p = p};
    c.b = LLVMCreateBuilderInContext(c.ctx);
    c.i1 = LLVMInt1TypeInContext(c.ctx);
    c.i32 = LLVMInt32TypeInContext(c.ctx);
    c.i64 = LLVMInt64TypeInContext(c.ctx);
    c.real = p->real_f64 ? LLVMDoubleTypeInContext(c.ctx) : LLVMFloatTypeInContext(c.ctx);
    c.ptr = LLVMPointerTypeInContext(c.ctx, 0);
    c.voidt = LLVMVoidTypeInContext(c.ctx);
    c.fmf = LLVMFastMathAllowReassoc | LLVMFastMathAllowContract | LLVMFastMathNoSignedZeros;
    c.bufptr = xcalloc((size_t)p->nbufs + 1, sizeof(LLVMValueRef));
    c.vars = xcalloc((size_t)p->nvars + 1, sizeof(LLVMValueRef));
    c.locals = xcalloc((size_t)p->nlocals + 1, sizeof(LLVMValueRef));

    /* The kernels first, each a function of its own. */
    LLVMValueRef *kfns = xcalloc((size_t)p->nkernels + 1, sizeof(LLVMValueRef));
    int **kroots = xcalloc((size_t)p->nkernels + 1, sizeof(int *));
    int *knroots = xcalloc((size_t)p->nkernels + 1, sizeof(int));
    for (int k = 0; k < p->nkernels; k++) {
        if (p->kernels[k].kind != KK_LOOP) continue;
        kroots[k] = xmalloc(sizeof(int) * ((size_t)p->nbufs + 1));
        kfns[k] = emit_kernel_fn(&c, &p->kernels[k], k, name, kroots[k], &knroots[k]);
    }

    /* real name(ptr state, ptr args, i64 batch, ptr ws, i64 seed) */
    LLVMTypeRef ptys[] = {c.ptr, c.ptr, c.i64, c.ptr, c.i64};
    LLVMValueRef fn = LLVMAddFunction(mod, name, LLVMFunctionType(c.real, ptys, 5, false));
    function_attrs(&c, fn);
    static const char *const pnames[] = {"state", "args", "batch", "workspace", "seed"};
    for (unsigned i = 0; i < 5; i++) LLVMSetValueName2(LLVMGetParam(fn, i), pnames[i], strlen(pnames[i]));
    c.fn = fn;
    LLVMPositionBuilderAtEnd(c.b, LLVMAppendBasicBlockInContext(c.ctx, fn, "entry"));
    LLVMValueRef state = LLVMGetParam(fn, 0), args = LLVMGetParam(fn, 1), batch = LLVMGetParam(fn, 2);
    LLVMValueRef ws = LLVMGetParam(fn, 3), seed = LLVMGetParam(fn, 4);
    c.batch = batch;
    c.seed = seed;
    for (int i = 0; i < p->nbufs; i++)
        if (p->bufs[i].kind != KB_VIEW) c.bufptr[i] = buffer_address(&c, &p->bufs[i], state, args, ws, batch);

    for (int k = 0; k < p->nkernels; k++) {
        const Kernel *kn = &p->kernels[k];
        if (p->profile) profile_tick(&c, k);
        if (kn->kind == KK_GEMM) {
            emit_gemm(&c, &kn->gemm);
            continue;
        }
        int n = knroots[k];
        LLVMValueRef *cargs = xmalloc(sizeof(LLVMValueRef) * (size_t)(n + 2));
        for (int i = 0; i < n; i++) cargs[i] = c.bufptr[kroots[k][i]];
        cargs[n] = batch;
        cargs[n + 1] = seed;
        LLVMBuildCall2(c.b, LLVMGlobalGetValueType(kfns[k]), kfns[k], cargs, (unsigned)n + 2, "");
        free(cargs);
    }
    if (p->profile) profile_tick(&c, -1);
    if (p->result_buf >= 0) {
        LLVMValueRef v = LLVMBuildLoad2(c.b, c.real, c.bufptr[kprog_root_buf(p, p->result_buf)], "loss");
        LLVMBuildRet(c.b, v);
    } else {
        LLVMBuildRet(c.b, LLVMConstReal(c.real, 0));
    }

    for (int k = 0; k < p->nkernels; k++) free(kroots[k]);
    free(kroots);
    free(knroots);
    free(kfns);
    free(c.bufptr);
    free(c.vars);
    free(c.locals);
    LLVMDisposeBuilder(c.b);
    return fn;
}

bool llvm_optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, int level, char **err) {
    if (LLVMVerifyModule(mod, LLVMReturnStatusAction, err)) return false;
    LLVMDisposeMessage(*err);
    *err = NULL;
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(mod, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(mod, layout);
    LLVMDisposeTargetData(layout);
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(opts, level >= 2);
    LLVMPassBuilderOptionsSetSLPVectorization(opts, level >= 2);
    LLVMPassBuilderOptionsSetLoopUnrolling(opts, level >= 2);
    char pipeline[32];
    snprintf(pipeline, sizeof pipeline, "default<O%d>", level < 0 ? 0 : level > 3 ? 3 : level);
    LLVMErrorRef e = LLVMRunPasses(mod, pipeline, tm, opts);
    LLVMDisposePassBuilderOptions(opts);
    if (e) {
        char *m = LLVMGetErrorMessage(e);
        *err = LLVMCreateMessage(m);
        LLVMDisposeErrorMessage(m);
        return false;
    }
    return true;
}
