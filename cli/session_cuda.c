/* session_cuda.c - a session whose programs run on an NVIDIA GPU
 * (`--device cuda`; built with -DNNC_CUDA=ON).
 *
 * Each program is translated to CUDA C (backend/cuda), compiled by NVRTC
 * for the device's architecture (cached on disk) and loaded as a library.
 * The state and one workspace arena (sized by the programs' memory plans,
 * exactly as on the CPU) live on the device, and the device copy of the
 * state is the one that counts: the host copy in Session.state is brought
 * up to date by session_from_device and sent back by session_to_device.
 *
 * A run of a program at a batch size is recorded once as a CUDA graph (the
 * second run: see launch): the copies of the inputs from pinned host
 * buffers, every launch and cuBLAS call, and the copies of the outputs and
 * the loss back; later runs at that size replay it (NNC_CUDA_GRAPHS=0
 * launches each step instead).
 * Every CUDA and cuBLAS call is checked; a failure while a program runs is
 * reported with the call and the message, and ends the process (the
 * programs' callers have no error path, and the device state is then
 * unknown). */
#include "backend/cuda/cuda_backend.h"
#include "cli/driver.h"
#include "runtime/cuda/nnrt_cuda.h"
#include "support/util.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_GRAPHS = 4, BLAS_WORKSPACE = 32 << 20 };

typedef struct DevProg {
    CudaPlan *plan;
    cudaLibrary_t lib;
    cudaKernel_t *kernels; /* per step (launches) */
    void **dev, **pinned;  /* per argument, for the reserved batch */
    struct {
        int64_t batch;
        cudaGraphExec_t exec;
    } graphs[MAX_GRAPHS];
    int ngraphs;
    int64_t seen[MAX_GRAPHS]; /* batch sizes run once (see launch) */
    int nseen;
} DevProg;

struct CudaSession {
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws, *state, *ws, *loss; /* loss: pinned, one real */
    size_t real;
    bool graphs;
    DevProg prog[FN_COUNT];
};

static char cuda_err[1024];

#define CK(fn, args)                                                                                  \
    do {                                                                                              \
        cudaError_t e_ = fn args;                                                                     \
        if (e_ != cudaSuccess) {                                                                      \
            snprintf(cuda_err, sizeof cuda_err, "%s: %s", #fn, cudaGetErrorString(e_));               \
            return false;                                                                             \
        }                                                                                             \
    } while (0)

#define BLAS(fn, args)                                                                                \
    do {                                                                                              \
        cublasStatus_t e_ = fn args;                                                                  \
        if (e_ != CUBLAS_STATUS_SUCCESS) {                                                            \
            snprintf(cuda_err, sizeof cuda_err, "%s: %s", #fn, cublasGetStatusString(e_));            \
            return false;                                                                             \
        }                                                                                             \
    } while (0)

/* For the paths with no way to return an error. */
static void fatal(void) {
    fprintf(stderr, "nnc: error: %s\n", cuda_err);
    exit(1);
}

/* ---- addresses ------------------------------------------------------------------------------ */

static int64_t arg_elems(const KArg *a, int64_t batch) {
    int64_t c0, c1;
    type_numel(&a->type, &c0, &c1);
    return c0 + c1 * batch;
}

static size_t arg_bytes(const KProgram *p, int a, int64_t batch, size_t real) {
    return (size_t)arg_elems(&p->args[a], batch) * (p->args[a].type.dtype == DT_I32 ? 4 : real);
}

static void *buf_addr(CudaSession *c, const KProgram *p, const DevProg *dp, int buf, int64_t batch) {
    const KBuf *b = &p->bufs[kprog_root_buf(p, buf)];
    switch (b->kind) {
    case KB_STATE: return (char *)c->state + (size_t)b->offset.c0 * c->real;
    case KB_WORK: return (char *)c->ws + (size_t)npoly_eval(b->offset, batch) * c->real;
    case KB_ARG: return dp->dev[b->arg];
    default: NNC_BUG("address of a view");
    }
}

/* ---- the steps of a program ------------------------------------------------------------------- */

static cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

/* A row-major product C = op(A) op(B) is, read column-major, C^T = op(B)^T op(A)^T. */
static bool gemm(CudaSession *c, const KProgram *p, const DevProg *dp, const KGemm *g, int64_t batch) {
    int m = (int)cuda_eval_int(g->m, batch), n = (int)cuda_eval_int(g->n, batch), k = (int)cuda_eval_int(g->k, batch);
    int lda = (int)cuda_eval_int(g->lda, batch), ldb = (int)cuda_eval_int(g->ldb, batch);
    int ldc = (int)cuda_eval_int(g->ldc, batch);
    if (m <= 0 || n <= 0) return true;
    char *A = buf_addr(c, p, dp, g->a, batch), *B = buf_addr(c, p, dp, g->b, batch), *C = buf_addr(c, p, dp, g->c, batch);
    int64_t count = g->count ? cuda_eval_int(g->count, batch) : 1;
    int64_t sa = g->count ? cuda_eval_int(g->stride_a, batch) : 0, sb = g->count ? cuda_eval_int(g->stride_b, batch) : 0;
    int64_t sc = g->count ? cuda_eval_int(g->stride_c, batch) : 0;
    bool f64 = p->real_f64;
    double alpha = g->alpha, beta = g->beta;
    float alphaf = (float)alpha, betaf = (float)beta, onef = 1;
    double one = 1;
    if (count > 1 && sc != 0) {
        if (f64)
            BLAS(cublasDgemmStridedBatched, (c->blas, op(g->tb), op(g->ta), n, m, k, &alpha, (double *)B, ldb, sb,
                                             (double *)A, lda, sa, &beta, (double *)C, ldc, sc, (int)count));
        else
            BLAS(cublasSgemmStridedBatched, (c->blas, op(g->tb), op(g->ta), n, m, k, &alphaf, (float *)B, ldb, sb,
                                             (float *)A, lda, sa, &betaf, (float *)C, ldc, sc, (int)count));
        return true;
    }
    /* One product, or products summed into one C: beta applies to the first only. */
    for (int64_t i = 0; i < count; i++) {
        char *a = A + (size_t)(i * sa) * c->real, *b = B + (size_t)(i * sb) * c->real;
        if (f64)
            BLAS(cublasDgemm, (c->blas, op(g->tb), op(g->ta), n, m, k, &alpha, (double *)b, ldb, (double *)a, lda,
                               i ? &one : &beta, (double *)C, ldc));
        else
            BLAS(cublasSgemm, (c->blas, op(g->tb), op(g->ta), n, m, k, &alphaf, (float *)b, ldb, (float *)a, lda,
                               i ? &onef : &betaf, (float *)C, ldc));
    }
    return true;
}

static bool enqueue_steps(CudaSession *c, const KProgram *p, const DevProg *dp, int64_t batch, uint64_t seed) {
    long long N = batch;
    unsigned long long sd = seed;
    void **params = xcalloc((size_t)p->nargs + 4, sizeof(void *));
    params[0] = &c->state;
    params[1] = &c->ws;
    for (int a = 0; a < p->nargs; a++) params[2 + a] = &dp->dev[a];
    params[2 + p->nargs] = &N;
    params[3 + p->nargs] = &sd;
    bool ok = true;
    for (int i = 0; i < dp->plan->nsteps && ok; i++) {
        const CudaStep *st = &dp->plan->steps[i];
        if (st->kind == CS_GEMM) {
            ok = gemm(c, p, dp, &p->kernels[st->kernel].gemm, batch);
            continue;
        }
        int64_t rows = 1;
        for (int e = 0; e < st->nextents; e++) rows *= cuda_eval_int(st->extents[e], batch);
        if (rows <= 0) continue;
        int64_t threads = st->warp ? rows * 32 : rows, blocks = (threads + CUDA_BLOCK - 1) / CUDA_BLOCK;
        if (blocks > 65535 * 16) blocks = 65535 * 16; /* the rest by grid-stride loops */
        cudaError_t e = cudaLaunchKernel((const void *)dp->kernels[i], (dim3){(unsigned)blocks, 1, 1}, (dim3){CUDA_BLOCK, 1, 1}, params,
                                         0, c->stream);
        if (e != cudaSuccess) {
            snprintf(cuda_err, sizeof cuda_err, "cudaLaunchKernel (%s): %s", st->fn, cudaGetErrorString(e));
            ok = false;
        }
    }
    free(params);
    return ok;
}

/* Inputs in, the steps, outputs and the loss out: what a graph records. */
static bool enqueue_run(CudaSession *c, const KProgram *p, const DevProg *dp, int64_t batch, uint64_t seed) {
    for (int a = 0; a < p->nargs; a++)
        if (p->args[a].role != ARG_OUTPUT)
            CK(cudaMemcpyAsync, (dp->dev[a], dp->pinned[a], arg_bytes(p, a, batch, c->real), cudaMemcpyHostToDevice,
                                 c->stream));
    if (!enqueue_steps(c, p, dp, batch, seed)) return false;
    for (int a = 0; a < p->nargs; a++)
        if (p->args[a].role == ARG_OUTPUT)
            CK(cudaMemcpyAsync, (dp->pinned[a], dp->dev[a], arg_bytes(p, a, batch, c->real), cudaMemcpyDeviceToHost,
                                 c->stream));
    if (p->result_buf >= 0)
        CK(cudaMemcpyAsync, (c->loss, buf_addr(c, p, dp, p->result_buf, batch), c->real, cudaMemcpyDeviceToHost,
                             c->stream));
    return true;
}

static bool graph_for(CudaSession *c, const KProgram *p, DevProg *dp, int64_t batch, cudaGraphExec_t *exec) {
    for (int i = 0; i < dp->ngraphs; i++)
        if (dp->graphs[i].batch == batch) return *exec = dp->graphs[i].exec, true;
    cudaGraph_t graph;
    CK(cudaStreamBeginCapture, (c->stream, cudaStreamCaptureModeThreadLocal));
    bool ok = enqueue_run(c, p, dp, batch, 0);
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    if (!ok) return false;
    if (e != cudaSuccess) {
        snprintf(cuda_err, sizeof cuda_err, "cudaStreamEndCapture: %s", cudaGetErrorString(e));
        return false;
    }
    e = cudaGraphInstantiate(exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        snprintf(cuda_err, sizeof cuda_err, "cudaGraphInstantiate: %s", cudaGetErrorString(e));
        return false;
    }
    /* A few sizes are kept (the training batch, the last partial one, evaluation's). */
    if (dp->ngraphs == MAX_GRAPHS) {
        cudaGraphExecDestroy(dp->graphs[0].exec);
        memmove(&dp->graphs[0], &dp->graphs[1], sizeof dp->graphs[0] * (MAX_GRAPHS - 1));
        dp->ngraphs--;
    }
    dp->graphs[dp->ngraphs].batch = batch;
    dp->graphs[dp->ngraphs++].exec = *exec;
    return true;
}

static void drop_graphs(DevProg *dp) {
    for (int i = 0; i < dp->ngraphs; i++) cudaGraphExecDestroy(dp->graphs[i].exec);
    dp->ngraphs = 0;
    dp->nseen = 0;
}

/* ---- the session ---------------------------------------------------------------------------- */

static bool create(Session *s, CudaSession *c, int arch, bool tf32) {
    c->real = s->f64 ? sizeof(double) : sizeof(float);
    const char *g = getenv("NNC_CUDA_GRAPHS");
    c->graphs = !g || strcmp(g, "0") != 0;
    CK(cudaSetDevice, (0));
    CK(cudaStreamCreateWithFlags, (&c->stream, cudaStreamNonBlocking));
    BLAS(cublasCreate, (&c->blas));
    BLAS(cublasSetStream, (c->blas, c->stream));
    /* cuBLAS must not allocate while a graph is being recorded. */
    CK(cudaMalloc, (&c->blas_ws, BLAS_WORKSPACE));
    BLAS(cublasSetWorkspace, (c->blas, c->blas_ws, BLAS_WORKSPACE));
    BLAS(cublasSetMathMode, (c->blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    CK(cudaMallocHost, (&c->loss, sizeof(double)));
    CK(cudaMalloc, (&c->state, (size_t)s->m->state_size * c->real + 64));
    CK(cudaMemset, (c->state, 0, (size_t)s->m->state_size * c->real + 64));
    for (int k = 0; k < FN_COUNT; k++) {
        const KProgram *p = s->prog[k];
        if (!p) continue;
        DevProg *dp = &c->prog[k];
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s_%s", p->real_f64 ? "d" : "f", p->name);
        dp->plan = cuda_plan_program(p, prefix);
        char *image;
        size_t size;
        bool cached;
        if (nnrt_cuda_compile(dp->plan->source, arch, true, &image, &size, &cached, cuda_err, sizeof cuda_err) != 0)
            return false;
        cudaError_t e = cudaLibraryLoadData(&dp->lib, image, NULL, NULL, 0, NULL, NULL, 0);
        free(image);
        if (e != cudaSuccess) {
            snprintf(cuda_err, sizeof cuda_err, "cudaLibraryLoadData: %s", cudaGetErrorString(e));
            return false;
        }
        dp->kernels = xcalloc((size_t)dp->plan->nsteps + 1, sizeof(cudaKernel_t));
        for (int i = 0; i < dp->plan->nsteps; i++)
            if (dp->plan->steps[i].kind == CS_LAUNCH)
                CK(cudaLibraryGetKernel, (&dp->kernels[i], dp->lib, dp->plan->steps[i].fn));
        dp->dev = xcalloc((size_t)p->nargs + 1, sizeof(void *));
        dp->pinned = xcalloc((size_t)p->nargs + 1, sizeof(void *));
    }
    return true;
}

bool cuda_session_create(Session *s, bool tf32, Diag *d) {
    int arch;
    char name[256];
    if (nnrt_cuda_device(&arch, name, sizeof name, cuda_err, sizeof cuda_err) != 0) {
        diag_error(d, SPAN_NONE, "%s", cuda_err);
        return false;
    }
    s->dev = xcalloc(1, sizeof *s->dev);
    if (!create(s, s->dev, arch, tf32)) {
        diag_error(d, SPAN_NONE, "%s", cuda_err);
        return false;
    }
    return true;
}

void cuda_session_destroy(Session *s) {
    CudaSession *c = s->dev;
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream);
    for (int k = 0; k < FN_COUNT; k++) {
        DevProg *dp = &c->prog[k];
        drop_graphs(dp);
        for (int a = 0; s->prog[k] && a < s->prog[k]->nargs; a++) {
            cudaFree(dp->dev[a]);
            cudaFreeHost(dp->pinned[a]);
        }
        free(dp->dev);
        free(dp->pinned);
        free(dp->kernels);
        if (dp->lib) cudaLibraryUnload(dp->lib);
        cuda_plan_free(dp->plan);
    }
    if (c->blas) cublasDestroy(c->blas);
    cudaFree(c->blas_ws);
    cudaFree(c->state);
    cudaFree(c->ws);
    cudaFreeHost(c->loss);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
    s->dev = NULL;
}

static bool reserve(Session *s, CudaSession *c, int64_t batch, int64_t words) {
    CK(cudaStreamSynchronize, (c->stream));
    cudaFree(c->ws);
    c->ws = NULL;
    CK(cudaMalloc, (&c->ws, (size_t)words * c->real + 64));
    CK(cudaMemset, (c->ws, 0, (size_t)words * c->real + 64));
    for (int k = 0; k < FN_COUNT; k++) {
        const KProgram *p = s->prog[k];
        if (!p) continue;
        DevProg *dp = &c->prog[k];
        drop_graphs(dp);
        for (int a = 0; a < p->nargs; a++) {
            cudaFree(dp->dev[a]);
            cudaFreeHost(dp->pinned[a]);
            dp->dev[a] = dp->pinned[a] = NULL;
            size_t bytes = arg_bytes(p, a, batch, c->real) + 64;
            CK(cudaMalloc, (&dp->dev[a], bytes));
            CK(cudaMallocHost, (&dp->pinned[a], bytes));
        }
    }
    return true;
}

bool cuda_session_reserve(Session *s, int64_t batch, int64_t words) {
    if (reserve(s, s->dev, batch, words)) return true;
    fprintf(stderr, "nnc: error: %s\n", cuda_err);
    return false;
}

/* The first run at a batch size goes step by step (cuBLAS and the driver
 * load what they need then, outside any recording); the second records the
 * graph that later runs replay. */
static bool launch(CudaSession *c, const KProgram *p, DevProg *dp, int64_t batch, uint64_t seed, bool graph) {
    bool seen = false;
    for (int i = 0; i < dp->nseen && !seen; i++) seen = dp->seen[i] == batch;
    if (graph && !seen && dp->nseen < MAX_GRAPHS) dp->seen[dp->nseen++] = batch;
    if (!graph || !seen) return enqueue_run(c, p, dp, batch, seed);
    cudaGraphExec_t exec;
    if (!graph_for(c, p, dp, batch, &exec)) return false;
    CK(cudaGraphLaunch, (exec, c->stream));
    return true;
}

double cuda_session_run(Session *s, FnKind k, void **args, int64_t batch, uint64_t seed) {
    CudaSession *c = s->dev;
    const KProgram *p = s->prog[k];
    DevProg *dp = &c->prog[k];
    for (int a = 0; a < p->nargs; a++)
        if (p->args[a].role != ARG_OUTPUT) memcpy(dp->pinned[a], args[a], arg_bytes(p, a, batch, c->real));
    if (!launch(c, p, dp, batch, seed, c->graphs && k != FN_INIT)) fatal();
    cudaError_t e = cudaStreamSynchronize(c->stream);
    bool ok = true;
    if (ok && e != cudaSuccess) {
        snprintf(cuda_err, sizeof cuda_err, "cudaStreamSynchronize (after %s): %s", p->name, cudaGetErrorString(e));
        ok = false;
    }
    if (!ok) fatal();
    for (int a = 0; a < p->nargs; a++)
        if (p->args[a].role == ARG_OUTPUT) memcpy(args[a], dp->pinned[a], arg_bytes(p, a, batch, c->real));
    if (p->result_buf < 0) return 0;
    return s->f64 ? *(double *)c->loss : *(float *)c->loss;
}

static bool copy_state(Session *s, bool to_device) {
    CudaSession *c = s->dev;
    size_t bytes = (size_t)s->m->state_size * c->real;
    CK(cudaStreamSynchronize, (c->stream));
    if (to_device) CK(cudaMemcpy, (c->state, s->state, bytes, cudaMemcpyHostToDevice));
    else CK(cudaMemcpy, (s->state, c->state, bytes, cudaMemcpyDeviceToHost));
    return true;
}

void cuda_session_copy_state(Session *s, bool to_device) {
    if (!copy_state(s, to_device)) fatal();
}
