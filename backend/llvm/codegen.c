/* codegen.c - Kernel IR -> LLVM IR through the LLVM C API.
 *
 * Each loop kernel becomes an internal function taking one `noalias`
 * pointer per buffer it touches, so that LLVM knows the arrays are
 * independent and vectorises freely; the program function computes the
 * buffers' addresses, calls the kernels in order (O3 inlines them) and
 * calls the runtime for matrix products. Floating-point operations may be
 * reassociated and contracted (sums vectorise, a*b+c becomes an FMA), but
 * NaNs and infinities keep their meaning: the log-sum-exp code relies on
 * exp(-inf) = 0. */
#include "backend/llvm/llvm_backend.h"
#include "support/util.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

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
    case KX_LOCAL: return LLVMBuildLoad2(b, c->real, c->locals[x->i], "");
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

static void emit_for(Cg *c, const Ks *s) {
    LLVMBuilderRef b = c->b;
    LLVMValueRef extent = emit_kx(c, s->extent);
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(b);
    char name[32];
    snprintf(name, sizeof name, "i%d", s->var);
    LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(c->ctx, c->fn, name);
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "body");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "done");
    LLVMBuildBr(b, head);
    LLVMPositionBuilderAtEnd(b, head);
    LLVMValueRef iv = LLVMBuildPhi(b, c->i64, name);
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, iv, extent, ""), body, done);
    LLVMPositionBuilderAtEnd(b, body);
    c->vars[s->var] = iv;
    emit_block(c, &s->body);
    LLVMValueRef next = LLVMBuildNSWAdd(b, iv, const_i64(c, 1), "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
    LLVMBuildBr(b, head);
    LLVMValueRef zero = const_i64(c, 0);
    LLVMAddIncoming(iv, &zero, &pre, 1);
    LLVMAddIncoming(iv, &next, &latch, 1);
    LLVMPositionBuilderAtEnd(b, done);
}

static void emit_block(Cg *c, const KsBlock *blk) {
    LLVMBuilderRef b = c->b;
    for (int i = 0; i < blk->n; i++) {
        const Ks *s = blk->items[i];
        switch (s->kind) {
        case KS_FOR: emit_for(c, s); break;
        case KS_DECL: LLVMBuildStore(b, emit_kx(c, s->value), c->locals[s->var]); break;
        case KS_UPDATE: {
            LLVMValueRef old = LLVMBuildLoad2(b, c->real, c->locals[s->var], "");
            LLVMValueRef v = emit_kx(c, s->value), r;
            switch (s->update_op) {
            case KX_ADD: r = fp(c, LLVMBuildFAdd(b, old, v, "")); break;
            case KX_MAX: r = call_intrinsic(c, "llvm.maxnum", (LLVMValueRef[]){old, v}, 2); break;
            case KX_MIN: r = call_intrinsic(c, "llvm.minnum", (LLVMValueRef[]){old, v}, 2); break;
            default: NNC_BUG("update op %d", (int)s->update_op);
            }
            LLVMBuildStore(b, r, c->locals[s->var]);
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
}

static void add_attr(Cg *c, LLVMValueRef fn, unsigned index, const char *name) {
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, index, LLVMCreateEnumAttribute(c->ctx, kind, 0));
}

static char *symbol_name(const char *prefix, int k, const char *name) {
    StrBuf sb = {0};
    sb_printf(&sb, "%s.k%d.", prefix, k);
    for (const char *s = name ? name : ""; *s; s++)
        sb_putc(&sb, (*s == '.' || *s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9')) ? *s : '_');
    return sb_take(&sb);
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

    int nparams = *nroots + 2;
    LLVMTypeRef *ptys = xmalloc(sizeof(LLVMTypeRef) * (size_t)nparams);
    for (int i = 0; i < *nroots; i++) ptys[i] = c->ptr;
    ptys[*nroots] = c->i64;
    ptys[*nroots + 1] = c->i64;
    char *name = symbol_name(prefix, index, k->name);
    LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->voidt, ptys, (unsigned)nparams, false));
    free(name);
    free(ptys);
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    add_attr(c, fn, LLVMAttributeFunctionIndex, "nounwind");
    for (int i = 0; i < *nroots; i++) {
        add_attr(c, fn, (unsigned)i + 1, "noalias");
        add_attr(c, fn, (unsigned)i + 1, "nocapture");
        const KBuf *bf = &p->bufs[roots[i]];
        LLVMSetValueName2(LLVMGetParam(fn, (unsigned)i), bf->name ? bf->name : "buf",
                          strlen(bf->name ? bf->name : "buf"));
    }

    c->fn = fn;
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(c->ctx, fn, "entry");
    LLVMPositionBuilderAtEnd(c->b, entry);
    for (int i = 0; i < p->nbufs; i++) c->bufptr[i] = NULL;
    for (int i = 0; i < *nroots; i++) c->bufptr[roots[i]] = LLVMGetParam(fn, (unsigned)i);
    c->batch = LLVMGetParam(fn, (unsigned)*nroots);
    c->seed = LLVMGetParam(fn, (unsigned)*nroots + 1);
    for (int i = 0; i < p->nlocals; i++) c->locals[i] = LLVMBuildAlloca(c->b, c->real, "s");
    emit_block(c, &k->body);
    LLVMBuildRetVoid(c->b);
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

/* The runtime function `fname` of type void(params), declared once per module. */
static LLVMValueRef runtime_fn(Cg *c, const char *fname, LLVMTypeRef *params, unsigned n, LLVMTypeRef *fty) {
    *fty = LLVMFunctionType(c->voidt, params, n, false);
    LLVMValueRef fn = LLVMGetNamedFunction(c->mod, fname);
    return fn ? fn : LLVMAddFunction(c->mod, fname, *fty);
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

LLVMValueRef llvm_emit_program(LLVMModuleRef mod, const KProgram *p, const char *name) {
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
    add_attr(&c, fn, LLVMAttributeFunctionIndex, "nounwind");
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
