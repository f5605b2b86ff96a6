/* kir.h - the Kernel IR: what a backend translates.
 *
 * A KProgram is one compiled function (forward, eval, grad, train_step or
 * init): a list of buffers and a list of kernels run in order. A kernel is
 * either a library call (gemm) or a loop nest whose statements are tiny:
 * declare a scalar local, update it, store to a buffer. Expressions are
 * trees of loads at affine indices, arithmetic, math functions, selects and
 * a counter-based random number.
 *
 * The semantics of every op are written once, in passes/lower.c, in these
 * terms; the LLVM, C and CUDA backends only translate loops and expressions,
 * which is what keeps them small and in agreement.
 *
 * Numbers: "real" is f32, or f64 when a program is built for gradient
 * checking (KProgram.real_f64); "int" is a 64-bit index. */
#ifndef NNC_KIR_H
#define NNC_KIR_H

#include "ir/ir.h"

/* A size or offset c0 + c1 * N, in elements. */
typedef struct NPoly {
    int64_t c0, c1;
} NPoly;

static inline int64_t npoly_eval(NPoly p, int64_t batch) { return p.c0 + p.c1 * batch; }
static inline NPoly npoly_add(NPoly a, NPoly b) { return (NPoly){a.c0 + b.c0, a.c1 + b.c1}; }

typedef enum { KT_INT, KT_REAL, KT_BOOL } KType;

typedef enum {
    KX_INT,    /* i                                       */
    KX_REAL,   /* r                                       */
    KX_BATCH,  /* N, the batch size (int)                 */
    KX_VAR,    /* loop variable i (int)                   */
    KX_LOCAL,  /* scalar local i (real)                   */
    KX_LOAD,   /* buf[a]: real, or int for an i32 buffer  */
    KX_SEED,   /* the program's seed argument (int, init) */
    /* binary, int or real */
    KX_ADD, KX_SUB, KX_MUL, KX_DIV, KX_MOD, KX_MIN, KX_MAX,
    KX_POW, /* real */
    /* unary, real */
    KX_NEG, KX_EXP, KX_LOG, KX_SQRT, KX_ABS, KX_COS, KX_SIN, KX_FLOOR,
    KX_LOG1P, /* log(1 + x), accurate for x near 0 */
    /* comparisons -> bool */
    KX_LT, KX_LE, KX_GT, KX_GE, KX_EQ, KX_NE,
    KX_SELECT, /* a ? b : c                               */
    KX_TOREAL, /* int -> real                             */
    KX_TOINT,  /* real -> int, truncating toward zero     */
    /* uniform in (0, 1) from the counter-based generator: key a, counter b
     * (both int); see runtime/rng.h for the exact function                */
    KX_RAND,
    KX_COUNT
} KxOp;

extern const char *const kx_names[KX_COUNT];

typedef struct Kx Kx;
struct Kx {
    KxOp op;
    KType type;
    Kx *a, *b, *c;
    int64_t i; /* KX_INT, KX_VAR, KX_LOCAL, KX_LOAD (buffer) */
    double r;  /* KX_REAL */
};

typedef enum {
    KS_FOR,    /* for var in [0, extent): body                 */
    KS_DECL,   /* real local := value                          */
    KS_UPDATE, /* local := local <op> value  (op ADD/MAX/MIN) */
    KS_STORE,  /* buf[index] := value (accumulate: +=)         */
} KsKind;

typedef struct Ks Ks;
typedef struct KsBlock {
    Ks **items;
    int n, cap;
} KsBlock;

struct Ks {
    KsKind kind;
    int var;    /* FOR: loop variable; DECL/UPDATE: local */
    Kx *extent; /* FOR */
    bool parallel; /* FOR: iterations are independent */
    KxOp update_op;
    Kx *value;
    int buf;    /* STORE */
    Kx *index;  /* STORE */
    bool accumulate;
    KsBlock body; /* FOR */
};

typedef enum {
    KB_STATE, /* a slot of the model state                */
    KB_ARG,   /* an input, target or output argument       */
    KB_WORK,  /* an intermediate in the workspace arena    */
    KB_VIEW,  /* the storage of another buffer (reshapes,
               * and values computed in place, memplan.c)  */
} KBufKind;

typedef enum { ARG_INPUT, ARG_TARGET, ARG_OUTPUT } ArgRole;

typedef struct KBuf {
    const char *name;
    KBufKind kind;
    DType dtype;    /* DT_F32 means "real" */
    NPoly size;     /* elements */
    NPoly offset;   /* KB_STATE: within the state; KB_WORK: within the workspace */
    int arg;        /* KB_ARG: index into the argument list */
    int view_of;    /* KB_VIEW: the buffer whose storage this is */
    bool in_place;  /* KB_VIEW: a value computed over an input that dies in its kernel */
    IrType type;    /* the tensor it holds */
    /* The first and last kernel that use this storage, through views too
     * (memplan.c; -1 if none); a value read after the last kernel (the
     * result) lives until nkernels. Set on every buffer that is no view;
     * a view computed in place keeps the range of its own uses. */
    int live_first, live_last;
} KBuf;

/* The elements a KB_WORK buffer takes in the workspace: its size with each
 * coefficient rounded up to 16 elements (64 bytes of f32), so that every
 * region starts on a cache line of its own for any N. */
static inline NPoly kbuf_footprint(const KBuf *b) {
    return (NPoly){(b->size.c0 + 15) & ~(int64_t)15, (b->size.c1 + 15) & ~(int64_t)15};
}

typedef struct KArg {
    const char *name;
    ArgRole role;
    IrType type;
    bool metric; /* an output that is a metric statement's value */
} KArg;

typedef enum { KK_LOOP, KK_GEMM } KernelKind;

/* A matrix product, or a batch of them ("batched gemm"): with `count` set,
 * product i reads A + i*stride_a and B + i*stride_b and writes C + i*stride_c
 * (strides in elements; 0 shares one matrix between all products, as the
 * weights of a convolution are shared by the samples of a batch). A C stride
 * of 0 sums the products into the one C:
 *   C := alpha sum_i op(A_i) op(B_i) + beta C
 * (what the weight gradient of a convolution is, summed over the batch). */
typedef struct KGemm {
    bool ta, tb;
    Kx *m, *n, *k;      /* C is m x n; op(A) m x k; op(B) k x n */
    double alpha, beta; /* C := alpha op(A) op(B) + beta C       */
    int a, b, c;        /* buffers, row-major, leading dims from shapes */
    Kx *lda, *ldb, *ldc;
    Kx *count;          /* products in the batch; NULL for a single product */
    Kx *stride_a, *stride_b, *stride_c;
} KGemm;

typedef struct Kernel {
    KernelKind kind;
    const char *name; /* from the graph node it came from */
    int node;         /* that node's index, or -1 */
    KsBlock body;     /* KK_LOOP */
    KGemm gemm;       /* KK_GEMM */
} Kernel;

typedef enum { PROG_FORWARD, PROG_EVAL, PROG_GRAD, PROG_TRAIN, PROG_INIT, PROG_APPLY } ProgKind;

typedef struct KProgram {
    Arena *arena;
    const char *name; /* "forward", "train_step", ... */
    ProgKind kind;
    bool real_f64;
    bool profile;      /* calls nnrt_profile_tick around its kernels */
    KBuf *bufs;
    int nbufs, bufs_cap;
    KArg *args;
    int nargs, args_cap;
    Kernel *kernels;
    int nkernels, kernels_cap;
    int nvars, nlocals;
    int result_buf;    /* scalar returned by the function (the loss), or -1 */
    /* The workspace, in elements of real: the largest of these terms at the
     * call's batch size (kprog_workspace_size). One polynomial is not
     * enough once regions share memory: the constant-size values of the
     * end of a step (weight gradients) and the activations, which grow
     * with N, peak at different times, and the workspace is the larger
     * of the two peaks, not their sum. */
    NPoly *workspace;
    int nworkspace;
    int64_t state_size;
    /* A training step whose batch is cut into slices (passes/slice.c), or
     * NULL: such a program has no kernels of its own. */
    struct KSlices *sliced;
} KProgram;

/* How a step over slices runs (runtime/slices.c, whose NnrtSlicedStep the
 * backend fills from this): `grad` on each slice of the batch, on threads
 * of their own, the slices' gradients added up in proportion to their
 * examples, and `apply` updating the state from the sum. */
typedef struct KSlices {
    int slices;
    KProgram *grad, *apply;
    int ndata;            /* grad's first arguments: the inputs and targets (the step's arguments) */
    int64_t *data_bytes;  /* bytes per example of each (0: not cut, every slice reads it all) */
    int ngrads;           /* grad's outputs after them: the gradients */
    int64_t *grads;       /* offset and size (elements) of each in a gradient buffer, in pairs */
    int64_t *apply_offset; /* where each of apply's arguments (gradients) lies in that buffer */
    int64_t grad_elems;   /* the buffer's size, a multiple of 16 */
} KSlices;

/* ---- building ---------------------------------------------------------------- */
KProgram *kprog_new(Arena *a, const char *name, ProgKind kind);
int kprog_add_buf(KProgram *p, KBuf buf);
int kprog_add_arg(KProgram *p, KArg arg);
Kernel *kprog_add_kernel(KProgram *p, KernelKind kind, const char *name, int node);
int kprog_new_var(KProgram *p);
int kprog_new_local(KProgram *p);

Kx *kx_int(Arena *a, int64_t v);
Kx *kx_real(Arena *a, double v);
Kx *kx_batch(Arena *a);
Kx *kx_seed(Arena *a);
Kx *kx_var(Arena *a, int var);
Kx *kx_local(Arena *a, int local);
Kx *kx_load(const KProgram *p, int buf, Kx *index);
/* Arithmetic with light folding of constants (x*1, x+0, 2*3). */
Kx *kx_bin(Arena *a, KxOp op, Kx *x, Kx *y);
Kx *kx_un(Arena *a, KxOp op, Kx *x);
Kx *kx_cmp(Arena *a, KxOp op, Kx *x, Kx *y);
Kx *kx_select(Arena *a, Kx *cond, Kx *then, Kx *otherwise);
Kx *kx_toreal(Arena *a, Kx *x);
Kx *kx_toint(Arena *a, Kx *x);
Kx *kx_rand(Arena *a, Kx *key, Kx *counter);
Kx *kx_npoly(Arena *a, NPoly p);

Ks *ks_for(Arena *a, KsBlock *parent, int var, Kx *extent, bool parallel);
void ks_decl(Arena *a, KsBlock *b, int local, Kx *value);
/* The same, as statement `pos` of b (before those there). */
void ks_decl_at(Arena *a, KsBlock *b, int pos, int local, Kx *value);
void ks_update(Arena *a, KsBlock *b, int local, KxOp op, Kx *value);
void ks_store(Arena *a, KsBlock *b, int buf, Kx *index, Kx *value, bool accumulate);

/* Sets the workspace to the largest of terms[0..n) (their upper envelope
 * for N >= 1; terms may be rewritten). */
void kprog_set_workspace(KProgram *p, NPoly *terms, int n);
/* Elements of real the workspace needs for a call on `batch` examples. */
int64_t kprog_workspace_size(const KProgram *p, int64_t batch);
/* Drops from terms[0..n) those that another is at least as large as for
 * every N >= 1, and sorts the rest by growing c1; returns how many remain. */
int npoly_envelope(NPoly *terms, int n);

/* Calls fn for every buffer access in x (loads) or blk (loads and stores),
 * with the buffer, its index expression and whether it is a store. */
typedef void (*KAccessFn)(void *ctx, int buf, const Kx *index, bool store);
void kx_visit_accesses(const Kx *x, KAccessFn fn, void *ctx);
void ks_visit_accesses(const KsBlock *blk, KAccessFn fn, void *ctx);

/* Whether x contains a node of kind op (with .i == i, unless i < 0). */
bool kx_has(const Kx *x, KxOp op, int64_t i);
/* The coefficient of loop variable `var` in an int expression that is
 * affine in it (sums, and products with a constant, of terms); false if
 * it is not affine in var. 0 when var does not occur. */
bool kx_var_coeff(const Kx *x, int var, int64_t *c);
/* x with loop variable `var` replaced by `with`, int arithmetic refolded;
 * shares the parts of x that do not contain var. */
Kx *kx_substitute_var(Arena *a, const Kx *x, int var, Kx *with);

/* The storage buffer behind a view chain. */
int kprog_root_buf(const KProgram *p, int buf);
/* Sets used[root] for every root buffer that block b loads or stores. */
void kblock_mark_roots(const KProgram *p, const KsBlock *b, bool *used);

/* The value of an int expression of constants and N at batch `batch`
 * (a gemm's extents, counts and strides); false if it reads anything else. */
bool kx_eval_int(const Kx *x, int64_t batch, int64_t *value);
/* Floating-point operations of the program's matrix products at `batch`:
 * 2*m*n*k for each product (count of them for a batched gemm), the
 * convention of BLAS benchmarks; loop kernels are not counted. -1 if an
 * extent is not a function of the batch alone. */
double kprog_gemm_flops(const KProgram *p, int64_t batch);

void kprog_print(FILE *out, const KProgram *p);

/* The largest sum of the footprints of the workspace regions that one
 * kernel needs at once, at batch size `batch`: no plan can use less
 * workspace (needs the live ranges, memplan.c). */
int64_t kprog_workspace_lower_bound(const KProgram *p, int64_t batch);
/* The workspace regions: offset, size and live range of each, the total and
 * the lower bound at `batch` (--emit-ir). */
void kprog_print_workspace(FILE *out, const KProgram *p, int64_t batch);

#endif
