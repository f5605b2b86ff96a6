/* test_cuda.c - the CUDA backend against the CPU (LLVM) backend.
 *
 *   test_cuda compile FILE.nn...   every program's CUDA C compiles with NVRTC
 *                                  for sm_90 (needs the toolkit, not a GPU)
 *   test_cuda ops FILE.nn...       on the GPU: initial state, forward outputs,
 *                                  losses and gradients of each model agree
 *                                  with the CPU in double precision (relative
 *                                  1e-5) on random inputs of odd batch sizes
 *   test_cuda train FILE.nn...     on the GPU: 20 training steps in single
 *                                  precision agree with the CPU's
 *   test_cuda emulate FILE.nn...   without a GPU: the generated kernels, built
 *                                  by the host's C++ compiler against a small
 *                                  emulation of CUDA's threads, warps and
 *                                  shuffles (tests/cuda_emu.inc), with the
 *                                  CPU's matrix products, agree with the CPU
 *                                  backend in f64 (init, forward, gradient,
 *                                  train step) at batch 1 and 37
 *
 * The GPU modes exit with 77, which ctest reports as skipped, when there is
 * no device. */
#include "backend/cuda/cuda_backend.h"
#include "cli/driver.h"
#include "runtime/cuda/nnrt_cuda.h"
#include "runtime/rng.h"
#include "support/util.h"

#include "runtime/nnrt.h"

#include <dlfcn.h>
#include <math.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static Module *load(Arena *a, const char *path) {
    Diag d;
    diag_init(&d, NULL, stderr);
    static OptSettings opt;
    opt = OPT_DEFAULTS;
    LoadOptions lo = {.passes.opt = &opt};
    Module *m = nnc_load_model(a, path, &d, &lo);
    if (!m) {
        fprintf(stderr, "%s: does not compile\n", path);
        exit(1);
    }
    return m;
}

static int compile_all(int n, char **files) {
    char err[8192];
    for (int f = 0; f < n; f++) {
        Arena arena = {0};
        Module *m = load(&arena, files[f]);
        const Graph *graphs[] = {m->forward, m->eval, m->grad, m->train, NULL};
        int programs = 0;
        for (int k = 0; k < 5; k++)
            for (int f64 = 0; f64 < 2; f64++) {
                /* f64: what `nnc check --device cuda` runs */
                if ((k < 4 && !graphs[k]) || (f64 && k != PROG_GRAD)) continue;
                KProgram *p = k < 4 ? lower_graph(m, graphs[k], (ProgKind)k, f64) : lower_init(m, f64);
                CudaPlan *plan = cuda_plan_program(p, p->name);
                int loops = 0, launches = 0;
                for (int i = 0; i < p->nkernels; i++) loops += p->kernels[i].kind == KK_LOOP;
                for (int i = 0; i < plan->nsteps; i++) launches += plan->steps[i].kind == CS_LAUNCH;
                char *image = NULL;
                size_t size = 0;
                bool cached;
                if (launches < loops) {
                    printf("FAIL %s %s: %d loop kernels, %d launches\n", files[f], p->name, loops, launches);
                    failures++;
                } else if (nnrt_cuda_compile(plan->source, 90, true, &image, &size, &cached, err, sizeof err) != 0) {
                    printf("FAIL %s %s (%s): %s\n", files[f], p->name, f64 ? "f64" : "f32", err);
                    failures++;
                } else if (size < 64) {
                    printf("FAIL %s %s: a %zu-byte cubin\n", files[f], p->name, size);
                    failures++;
                }
                free(image);
                cuda_plan_free(plan);
                programs++;
            }
        printf("%s: %d programs compiled for sm_90\n", files[f], programs);
        arena_free_all(&arena);
    }
    printf("%s\n", failures ? "FAILED" : "all compile");
    return failures ? 1 : 0;
}

/* ---- on the GPU ---------------------------------------------------------------------------------- */

static Session *make(Module *m, bool cuda, unsigned fns, bool f64, int64_t batch, uint64_t seed) {
    Diag d;
    diag_init(&d, m->src, stderr);
    m->opt.cuda = cuda;
    Session *s = session_create(m, fns, f64, &d);
    if (!s || !session_reserve(s, batch)) {
        fprintf(stderr, "cannot make a %s session\n", cuda ? "CUDA" : "CPU");
        exit(1);
    }
    session_init(s, seed);
    return s;
}

static double worst_rel(const void *a, const void *b, int64_t n, bool f64, bool i32) {
    double scale = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = i32 ? ((const int32_t *)a)[i] : f64 ? ((const double *)a)[i] : ((const float *)a)[i];
        scale = fmax(scale, fabs(x));
    }
    for (int64_t i = 0; i < n; i++) {
        double x = i32 ? ((const int32_t *)a)[i] : f64 ? ((const double *)a)[i] : ((const float *)a)[i];
        double y = i32 ? ((const int32_t *)b)[i] : f64 ? ((const double *)b)[i] : ((const float *)b)[i];
        /* relative to the element, with a floor of 1e-3 of the tensor's scale
         * for elements that are nearly zero */
        double e = fabs(x - y) / fmax(fmax(fabs(x), fabs(y)), 1e-3 * scale + 1e-30);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

static void expect(const char *what, const char *file, double err, double tol) {
    bool ok = err <= tol;
    printf("  %-8s %-40s max rel error %.2e %s\n", ok ? "ok" : "FAIL", what, err, ok ? "" : "<- too large");
    if (!ok) failures++;
    (void)file;
}

static void **random_args(const KProgram *p, int64_t batch, uint64_t key, bool f64) {
    void **args = xcalloc((size_t)p->nargs + 1, sizeof(void *));
    for (int a = 0; a < p->nargs; a++) {
        int64_t c0, c1;
        type_numel(&p->args[a].type, &c0, &c1);
        int64_t n = c0 + c1 * batch;
        const IrType *t = &p->args[a].type;
        if (t->dtype == DT_I32) {
            int32_t *y = xcalloc((size_t)n + 1, sizeof(int32_t));
            /* class labels: below the width of the model's output */
            int64_t classes = 2;
            for (int o = 0; o < p->nargs; o++)
                if (p->args[o].role == ARG_OUTPUT && p->args[o].type.rank == 2) classes = p->args[o].type.dim[1];
            for (int64_t i = 0; i < n; i++) y[i] = (int32_t)nnrt_rand_below(key, (uint64_t)i, (uint64_t)classes);
            args[a] = y;
        } else {
            size_t real = f64 ? 8 : 4;
            char *x = xcalloc((size_t)n + 1, real);
            for (int64_t i = 0; i < n; i++) {
                double u = nnrt_rand_uniform(key, (uint64_t)i);
                double v = p->args[a].role == ARG_TARGET ? u : 2 * u - 1;
                if (f64) ((double *)x)[i] = v;
                else ((float *)x)[i] = (float)v;
            }
            args[a] = x;
        }
    }
    return args;
}

static void **clone_args(const KProgram *p, void **args, int64_t batch, bool f64) {
    void **c = xcalloc((size_t)p->nargs + 1, sizeof(void *));
    for (int a = 0; a < p->nargs; a++) {
        int64_t c0, c1;
        type_numel(&p->args[a].type, &c0, &c1);
        size_t bytes = (size_t)(c0 + c1 * batch) * (p->args[a].type.dtype == DT_I32 ? 4 : f64 ? 8 : 4) + 8;
        c[a] = xmalloc(bytes);
        memcpy(c[a], args[a], bytes);
    }
    return c;
}

static void compare_outputs(const char *file, const KProgram *p, void **x, void **y, int64_t batch, bool f64,
                            double tol) {
    for (int a = 0; a < p->nargs; a++) {
        if (p->args[a].role != ARG_OUTPUT) continue;
        int64_t c0, c1;
        type_numel(&p->args[a].type, &c0, &c1);
        char what[128];
        snprintf(what, sizeof what, "%s %s", p->name, p->args[a].name);
        expect(what, file, worst_rel(x[a], y[a], c0 + c1 * batch, f64, false), tol);
    }
}

static void ops(const char *file) {
    static const int64_t batches[] = {1, 7, 67};
    for (int b = 0; b < 3; b++) {
        Arena arena = {0};
        Module *m = load(&arena, file);
        int64_t batch = batches[b];
        unsigned fns = FN_BIT(FN_FORWARD) | FN_BIT(FN_INIT) | (m->grad ? FN_BIT(FN_GRAD) : 0);
        printf("%s, batch %lld:\n", file, (long long)batch);
        Session *cpu = make(m, false, fns, true, batch, 5), *gpu = make(m, true, fns, true, batch, 5);
        expect("initial state", file, worst_rel(cpu->state, gpu->state, m->state_size, true, false), 1e-12);
        for (int k = FN_FORWARD; k <= FN_GRAD; k++) {
            if (!(fns & FN_BIT(k))) continue;
            const KProgram *p = cpu->prog[k];
            void **a1 = random_args(p, batch, 11 + (uint64_t)b, true), **a2 = clone_args(p, a1, batch, true);
            double l1 = session_run(cpu, (FnKind)k, a1, batch), l2 = session_run(gpu, (FnKind)k, a2, batch);
            compare_outputs(file, p, a1, a2, batch, true, 1e-5);
            if (p->result_buf >= 0) expect("loss", file, worst_rel(&l1, &l2, 1, true, false), 1e-5);
            for (int a = 0; a < p->nargs; a++) free(a1[a]), free(a2[a]);
            free(a1);
            free(a2);
        }
        session_destroy(cpu);
        session_destroy(gpu);
        arena_free_all(&arena);
    }
}

/* 20 train steps on the same random batches; the parameters after them. */
static void train(const char *file) {
    Arena arena = {0};
    Module *m = load(&arena, file);
    int64_t batch = m->train_spec.batch > 0 ? m->train_spec.batch : 32;
    unsigned fns = FN_BIT(FN_TRAIN) | FN_BIT(FN_INIT);
    Session *cpu = make(m, false, fns, false, batch, 3), *gpu = make(m, true, fns, false, batch, 3);
    printf("%s, 20 train steps at batch %lld:\n", file, (long long)batch);
    expect("initial state", file, worst_rel(cpu->state, gpu->state, m->state_size, false, false), 1e-6);
    const KProgram *p = cpu->prog[FN_TRAIN];
    double worst_loss = 0;
    for (int step = 0; step < 20; step++) {
        void **a1 = random_args(p, batch, 100 + (uint64_t)step, false), **a2 = clone_args(p, a1, batch, false);
        double l1 = session_run(cpu, FN_TRAIN, a1, batch), l2 = session_run(gpu, FN_TRAIN, a2, batch);
        worst_loss = fmax(worst_loss, worst_rel(&l1, &l2, 1, true, false));
        for (int a = 0; a < p->nargs; a++) free(a1[a]), free(a2[a]);
        free(a1);
        free(a2);
    }
    session_from_device(gpu);
    expect("losses of the 20 steps", file, worst_loss, 1e-4);
    expect("state after 20 steps", file, worst_rel(cpu->state, gpu->state, m->state_size, false, false), 1e-3);
    session_destroy(cpu);
    session_destroy(gpu);
    arena_free_all(&arena);
}

/* ---- emulated on the CPU ------------------------------------------------------------------------ */

typedef struct Emu {
    const KProgram *p;
    CudaPlan *plan;
    void *so;
    void (*run)(void (*)(void **), void **, int);
    void (**fns)(void **);
} Emu;

static bool emu_build(Emu *e, const KProgram *p, const char *dir) {
    e->p = p;
    e->plan = cuda_plan_program(p, p->name);
    char src[512], so[512], cmd[2048];
    snprintf(src, sizeof src, "%s/%s.cpp", dir, p->name);
    snprintf(so, sizeof so, "%s/%s.so", dir, p->name);
    FILE *f = fopen(src, "w");
    if (!f) return false;
    fprintf(f, "#include \"%s\"\n%s\n", NNC_CUDA_EMU, e->plan->source);
    for (int i = 0; i < e->plan->nsteps; i++) {
        const CudaStep *st = &e->plan->steps[i];
        if (st->kind != CS_LAUNCH) continue;
        fprintf(f, "extern \"C\" void run_%s(void **q) { %s(*(real **)q[0], *(real **)q[1]", st->fn, st->fn);
        for (int a = 0; a < p->nargs; a++) fprintf(f, ", *(void **)q[%d]", 2 + a);
        fprintf(f, ", *(long long *)q[%d], *(unsigned long long *)q[%d]); }\n", 2 + p->nargs, 3 + p->nargs);
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -std=c++17 -O0 -w -shared -fPIC -pthread -o %s %s", NNC_CXX, so, src);
    if (system(cmd) != 0) {
        printf("FAIL: %s does not compile as C++\n", src);
        return false;
    }
    e->so = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!e->so) {
        printf("FAIL: dlopen %s: %s\n", so, dlerror());
        return false;
    }
    e->run = (void (*)(void (*)(void **), void **, int))dlsym(e->so, "emu_run");
    e->fns = xcalloc((size_t)e->plan->nsteps + 1, sizeof(*e->fns));
    for (int i = 0; i < e->plan->nsteps; i++) {
        char name[256];
        snprintf(name, sizeof name, "run_%s", e->plan->steps[i].fn ? e->plan->steps[i].fn : "");
        if (e->plan->steps[i].kind == CS_LAUNCH && !(e->fns[i] = (void (*)(void **))dlsym(e->so, name))) return false;
    }
    return e->run != NULL;
}

static void emu_free(Emu *e) {
    if (e->so) dlclose(e->so);
    free(e->fns);
    cuda_plan_free(e->plan);
}

static double *emu_addr(const KProgram *p, double *state, double *ws, void **args, int buf, int64_t batch) {
    const KBuf *b = &p->bufs[kprog_root_buf(p, buf)];
    switch (b->kind) {
    case KB_STATE: return state + b->offset.c0;
    case KB_WORK: return ws + npoly_eval(b->offset, batch);
    default: return args[b->arg];
    }
}

/* One run of an f64 program: launches emulated, products by the CPU runtime. */
static double emu_program(Emu *e, double *state, void **args, int64_t batch, uint64_t seed) {
    const KProgram *p = e->p;
    int64_t words = kprog_workspace_size(p, batch);
    double *ws = xcalloc((size_t)words + 8, sizeof(double));
    long long N = batch;
    unsigned long long sd = seed;
    void **q = xcalloc((size_t)p->nargs + 4, sizeof(void *));
    q[0] = &state;
    q[1] = &ws;
    for (int a = 0; a < p->nargs; a++) q[2 + a] = &args[a];
    q[2 + p->nargs] = &N;
    q[3 + p->nargs] = &sd;
    for (int i = 0; i < e->plan->nsteps; i++) {
        const CudaStep *st = &e->plan->steps[i];
        if (st->kind == CS_LAUNCH) {
            e->run(e->fns[i], q, st->warp);
            continue;
        }
        const KGemm *g = &p->kernels[st->kernel].gemm;
        double *A = emu_addr(p, state, ws, args, g->a, batch), *B = emu_addr(p, state, ws, args, g->b, batch);
        double *C = emu_addr(p, state, ws, args, g->c, batch);
#define EV(x) cuda_eval_int(x, batch)
        if (g->count)
            nnrt_dgemm_batched(EV(g->count), g->ta, g->tb, EV(g->m), EV(g->n), EV(g->k), g->alpha, A, EV(g->lda),
                               EV(g->stride_a), B, EV(g->ldb), EV(g->stride_b), g->beta, C, EV(g->ldc), EV(g->stride_c));
        else
            nnrt_dgemm(g->ta, g->tb, EV(g->m), EV(g->n), EV(g->k), g->alpha, A, EV(g->lda), B, EV(g->ldb), g->beta, C,
                       EV(g->ldc));
#undef EV
    }
    double loss = p->result_buf >= 0 ? *emu_addr(p, state, ws, args, p->result_buf, batch) : 0;
    free(q);
    free(ws);
    return loss;
}

static void emulate(const char *file, const char *dir) {
    static const int64_t batches[] = {1, 37};
    Arena arena = {0};
    Module *m = load(&arena, file);
    unsigned fns = FN_BIT(FN_FORWARD) | FN_BIT(FN_INIT) | (m->grad ? FN_BIT(FN_GRAD) | FN_BIT(FN_TRAIN) : 0);
    Session *cpu = make(m, false, fns, true, 37, 5);
    Emu emu[FN_COUNT] = {{0}};
    for (int k = 0; k < FN_COUNT; k++)
        if ((fns & FN_BIT(k)) && !emu_build(&emu[k], cpu->prog[k], dir)) {
            failures++;
            return;
        }
    size_t bytes = sizeof(double) * ((size_t)m->state_size + 1);
    double *state = xcalloc(1, bytes), *initial = xmalloc(bytes);
    memcpy(initial, cpu->state, bytes - sizeof(double));
    emu_program(&emu[FN_INIT], state, NULL, 0, 5);
    printf("%s (emulated):\n", file);
    expect("initial state", file, worst_rel(cpu->state, state, m->state_size, true, false), 1e-12);
    for (int b = 0; b < 2; b++) {
        int64_t batch = batches[b];
        printf(" batch %lld\n", (long long)batch);
        for (int k = FN_FORWARD; k <= FN_TRAIN; k++) {
            if (!(fns & FN_BIT(k))) continue;
            const KProgram *p = cpu->prog[k];
            memcpy(cpu->state, initial, bytes - sizeof(double));
            memcpy(state, initial, bytes - sizeof(double));
            void **a1 = random_args(p, batch, 11 + (uint64_t)b, true), **a2 = clone_args(p, a1, batch, true);
            double l1 = session_run(cpu, (FnKind)k, a1, batch), l2 = emu_program(&emu[k], state, a2, batch, 0);
            compare_outputs(file, p, a1, a2, batch, true, 1e-9);
            if (p->result_buf >= 0) expect("loss", file, worst_rel(&l1, &l2, 1, true, false), 1e-9);
            if (k == FN_TRAIN)
                expect("state after a step", file, worst_rel(cpu->state, state, m->state_size, true, false), 1e-9);
            for (int a = 0; a < p->nargs; a++) free(a1[a]), free(a2[a]);
            free(a1);
            free(a2);
        }
    }
    for (int k = 0; k < FN_COUNT; k++) emu_free(&emu[k]);
    free(state);
    free(initial);
    session_destroy(cpu);
    arena_free_all(&arena);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_cuda compile|ops|train FILE.nn...\n");
        return 2;
    }
    if (strcmp(argv[1], "compile") == 0) {
        /* an empty cache of its own, so that NVRTC really compiles */
        char dir[] = "/tmp/nnc-cuda-cache-XXXXXX", cmd[256];
        if (!mkdtemp(dir)) return 1;
        setenv("XDG_CACHE_HOME", dir, 1);
        int status = compile_all(argc - 2, argv + 2);
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
        return status;
    }
    if (strcmp(argv[1], "emulate") == 0) {
        char dir[] = "/tmp/nnc-cuda-emu-XXXXXX";
        if (!mkdtemp(dir)) return 1;
        for (int f = 2; f < argc; f++) emulate(argv[f], dir);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
        printf("%s\n", failures ? "FAILED" : "all agree");
        return failures ? 1 : 0;
    }
    int arch;
    char name[256], err[1024];
    if (nnrt_cuda_device(&arch, name, sizeof name, err, sizeof err) != 0) {
        printf("skipped: %s\n", err);
        return 77;
    }
    printf("device: %s (sm_%d)\n", name, arch);
    for (int f = 2; f < argc; f++) {
        if (strcmp(argv[1], "ops") == 0) ops(argv[f]);
        else train(argv[f]);
    }
    printf("%s\n", failures ? "FAILED" : "all agree");
    return failures ? 1 : 0;
}
