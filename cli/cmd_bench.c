/* cmd_bench.c - `nnc bench FILE.nn`: how fast the compiled model is.
 *
 *   compile time      parse to native code, ms (and the part LLVM takes)
 *   train step        samples per second at the train statement's batch
 *   forward           microseconds per call at batch 1, samples/s at a large batch
 *   memory            the state, the workspace, and the process's peak
 *
 * Batches are random and made before timing (the data pipeline is not what
 * is measured); each figure is the median of --repeat timed runs, after a
 * warm-up. --json writes one object for scripts (bench/). */
#include "cli/commands.h"
#include "cli/driver.h"
#include "runtime/nnrt.h"
#include "runtime/rng.h"
#include "support/util.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

void usage_bench(FILE *out) {
    fputs("usage: nnc bench FILE.nn [options]\n"
          "\n"
          "Measures compile time, training and inference throughput, and memory.\n"
          "\n"
          "  --batch N        training batch (default: the train statement's)\n"
          "  --big N          the large inference batch (default 1024)\n"
          "  --threads N      threads (default: OpenBLAS's default)\n"
          "  --repeat N       timed runs per figure; the median is reported (default 5)\n"
          "  --time S         seconds each timed run lasts at least (default 0.2)\n"
          "  --json           one JSON object instead of text\n"
          "  --profile        where a train step's time goes, kernel by kernel (a build\n"
          "                   of the step that times its kernels; other figures are skipped)\n"
          COMPILE_HELP
          "  -h, --help       show this help\n",
          out);
}

typedef struct BenchOptions {
    int64_t batch, big, repeat;
    double seconds;
    int threads;
    bool json, profile;
} BenchOptions;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Arguments of program k: random inputs, labels in range, output buffers. */
static void **make_args(const KProgram *p, int64_t batch, uint64_t key, int64_t classes) {
    void **args = xcalloc((size_t)p->nargs + 1, sizeof(void *));
    for (int a = 0; a < p->nargs; a++) {
        int64_t c0, c1;
        type_numel(&p->args[a].type, &c0, &c1);
        int64_t n = c0 + c1 * batch;
        if (p->args[a].type.dtype == DT_I32) {
            int32_t *y = xmalloc(sizeof(int32_t) * (size_t)(n + 1));
            for (int64_t i = 0; i < n; i++) y[i] = (int32_t)nnrt_rand_below(key + (uint64_t)a, (uint64_t)i, (uint64_t)classes);
            args[a] = y;
        } else {
            float *x = xmalloc(sizeof(float) * (size_t)(n + 1));
            for (int64_t i = 0; i < n; i++) x[i] = (float)nnrt_rand_uniform(key + (uint64_t)a, (uint64_t)i);
            args[a] = x;
        }
    }
    return args;
}

static void free_args(const KProgram *p, void **args) {
    for (int a = 0; a < p->nargs; a++) free(args[a]);
    free(args);
}

/* Seconds per call of program k on `args`: the median of `repeat` runs, each
 * calling it enough times to last `seconds`. */
static double time_calls(Session *s, FnKind k, void **args, int64_t batch, const BenchOptions *o) {
    for (int i = 0; i < 3; i++) session_run(s, k, args, batch); /* warm up */
    double t0 = now_seconds();
    int64_t calls = 0;
    while (now_seconds() - t0 < o->seconds / 4 || calls < 3) {
        session_run(s, k, args, batch);
        calls++;
    }
    int64_t per_run = (int64_t)((double)calls * o->seconds / (now_seconds() - t0 + 1e-9)) * 4 + 1;
    double *runs = xmalloc(sizeof(double) * (size_t)o->repeat);
    for (int64_t r = 0; r < o->repeat; r++) {
        double start = now_seconds();
        for (int64_t i = 0; i < per_run; i++) session_run(s, k, args, batch);
        runs[r] = (now_seconds() - start) / (double)per_run;
    }
    qsort(runs, (size_t)o->repeat, sizeof(double), cmp_double);
    double median = runs[o->repeat / 2];
    free(runs);
    return median;
}

static int bench(Module *m, const BenchOptions *o, double parse_seconds) {
    Diag d;
    diag_init(&d, m->src, stderr);
    int64_t batch = o->batch ? o->batch : m->train_spec.batch;
    unsigned fns = FN_BIT(FN_FORWARD) | FN_BIT(FN_INIT) | (m->train ? FN_BIT(FN_TRAIN) : 0);
    nnrt_set_threads(o->threads);
    Session *s = session_create(m, fns, false, &d);
    if (!s) return 1;
    int64_t most = batch > o->big ? batch : o->big;
    if (!session_reserve(s, most)) {
        diag_error(&d, SPAN_NONE, "out of memory for the workspace");
        session_destroy(s);
        return 1;
    }
    session_init(s, 1);
    int64_t classes = 2;
    for (int i = 0; i < m->eval->n; i++)
        if (m->eval->nodes[i].op == OP_INPUT && m->eval->nodes[i].attr[0] > 0) classes = (int64_t)m->eval->nodes[i].attr[0];

    double train = 0;
    if (m->train) {
        void **args = make_args(s->prog[FN_TRAIN], batch, 11, classes);
        train = time_calls(s, FN_TRAIN, args, batch, o);
        free_args(s->prog[FN_TRAIN], args);
    }
    void **one = make_args(s->prog[FN_FORWARD], 1, 22, classes);
    double fwd1 = time_calls(s, FN_FORWARD, one, 1, o);
    free_args(s->prog[FN_FORWARD], one);
    void **big = make_args(s->prog[FN_FORWARD], o->big, 33, classes);
    double fwd_big = time_calls(s, FN_FORWARD, big, o->big, o);
    free_args(s->prog[FN_FORWARD], big);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double state_mb = (double)m->state_size * 4 / 1e6;
    int64_t ws = 0;
    for (int k = 0; k < FN_COUNT; k++)
        if (s->prog[k]) {
            int64_t w = npoly_eval(s->prog[k]->workspace, batch);
            if (w > ws) ws = w;
        }
    double ws_mb = (double)ws * 4 / 1e6, peak_mb = (double)ru.ru_maxrss / 1e3;
    double compile_ms = (parse_seconds + s->compile_seconds) * 1e3;
    if (o->json) {
        printf("{\"model\": \"%s\", \"threads\": %d, \"batch\": %lld, \"compile_ms\": %.1f, \"parse_ms\": %.2f, "
               "\"train_samples_per_s\": %.1f, \"train_step_us\": %.3f, \"forward1_us\": %.4f, \"big_batch\": %lld, "
               "\"forward_big_samples_per_s\": %.1f, \"state_mb\": %.3f, \"workspace_mb\": %.3f, \"peak_mb\": %.1f}\n",
               m->name, o->threads, (long long)batch, compile_ms, parse_seconds * 1e3,
               train > 0 ? (double)batch / train : 0, train * 1e6, fwd1 * 1e6, (long long)o->big,
               (double)o->big / fwd_big, state_mb, ws_mb, peak_mb);
    } else {
        printf("%s\n", m->name);
        printf("  compile         %.0f ms (parse and passes %.1f ms)\n", compile_ms, parse_seconds * 1e3);
        if (train > 0)
            printf("  train step      %.0f samples/s  (%.1f us per step of %lld)\n", (double)batch / train, train * 1e6,
                   (long long)batch);
        printf("  forward, 1      %.2f us per call\n", fwd1 * 1e6);
        printf("  forward, %-5lld %.0f samples/s\n", (long long)o->big, (double)o->big / fwd_big);
        printf("  memory          state %.3f MB, workspace %.3f MB at batch %lld, process peak %.0f MB\n", state_mb,
               ws_mb, (long long)batch, peak_mb);
    }
    session_destroy(s);
    return 0;
}

typedef struct KernelTime {
    const Kernel *k;
    double seconds;
} KernelTime;

static int slower_first(const void *a, const void *b) {
    double x = ((const KernelTime *)a)->seconds, y = ((const KernelTime *)b)->seconds;
    return x > y ? -1 : x < y;
}

/* The train step (or, for a model without one, the forward pass at batch
 * 1) built to time its kernels: each kernel's share, the slowest first. */
static int profile(Module *m, const BenchOptions *o) {
    Diag d;
    diag_init(&d, m->src, stderr);
    FnKind fn = m->train ? FN_TRAIN : FN_FORWARD;
    int64_t batch = fn == FN_FORWARD ? 1 : o->batch ? o->batch : m->train_spec.batch;
    m->opt.profile = true;
    nnrt_set_threads(o->threads);
    Session *s = session_create(m, FN_BIT(fn) | FN_BIT(FN_INIT), false, &d);
    if (!s) return 1;
    if (!session_reserve(s, batch)) {
        diag_error(&d, SPAN_NONE, "out of memory for the workspace");
        session_destroy(s);
        return 1;
    }
    session_init(s, 1);
    const KProgram *p = s->prog[fn];
    void **args = make_args(p, batch, 11, 2);
    for (int i = 0; i < 3; i++) session_run(s, fn, args, batch);
    nnrt_profile_reset(p->nkernels);
    int64_t steps = 0;
    double t0 = now_seconds();
    while (now_seconds() - t0 < o->seconds * (double)o->repeat) {
        session_run(s, fn, args, batch);
        steps++;
    }
    double total = 0;
    KernelTime *kt = xmalloc(sizeof(KernelTime) * ((size_t)p->nkernels + 1));
    for (int k = 0; k < p->nkernels; k++) {
        kt[k] = (KernelTime){&p->kernels[k], nnrt_profile_seconds()[k] / (double)steps};
        total += kt[k].seconds;
    }
    qsort(kt, (size_t)p->nkernels, sizeof *kt, slower_first);
    printf("%s: %s at batch %lld, %.1f us in %d kernels (timing adds about 0.05 us per kernel)\n", m->name,
           p->name, (long long)batch, total * 1e6, p->nkernels);
    printf("  %9s %6s  %-5s %s\n", "us", "share", "kind", "kernel");
    for (int k = 0; k < p->nkernels; k++) {
        const Kernel *kn = kt[k].k;
        printf("  %9.2f %5.1f%%  %-5s %s\n", kt[k].seconds * 1e6, 100 * kt[k].seconds / (total + 1e-30),
               kn->kind == KK_GEMM ? "gemm" : "loop", kn->name);
    }
    free(kt);
    free_args(p, args);
    session_destroy(s);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    static const struct option longopts[] = {
        {"batch", required_argument, NULL, 'b'},  {"big", required_argument, NULL, 'B'},
        {"threads", required_argument, NULL, 't'}, {"repeat", required_argument, NULL, 'r'},
        {"time", required_argument, NULL, 's'},   {"json", no_argument, NULL, 'j'},
        {"profile", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'}, COMPILE_LONGOPTS,         {NULL, 0, NULL, 0},
    };
    BenchOptions o = {.big = 1024, .repeat = 5, .seconds = 0.2};
    long long v;
    int c;
    optind = 1;
    OptSettings optset = OPT_DEFAULTS;
    while ((c = getopt_long(argc, argv, "h" COMPILE_SHORTOPTS, longopts, NULL)) != -1) {
        switch (c) {
        case 'b': if (!parse_int_option("--batch", optarg, 1, &v)) return 2; o.batch = v; break;
        case 'B': if (!parse_int_option("--big", optarg, 1, &v)) return 2; o.big = v; break;
        case 't': if (!parse_int_option("--threads", optarg, 1, &v)) return 2; o.threads = (int)v; break;
        case 'r': if (!parse_int_option("--repeat", optarg, 1, &v)) return 2; o.repeat = v; break;
        case 's': if (!parse_real_option("--time", optarg, &o.seconds)) return 2; break;
        case 'j': o.json = true; break;
        case 'p': o.profile = true; break;
        case 'h': usage_bench(stdout); return 0;
        default:
            if (!is_compile_option(c)) {
                usage_bench(stderr);
                return 2;
            }
            if (!parse_compile_option(c, optarg, &optset)) return 2;
            break;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "nnc: error: %s\n", optind >= argc ? "no model file" : "one model file at a time");
        usage_bench(stderr);
        return 2;
    }
    if (o.profile && optset.cuda) {
        fprintf(stderr, "nnc: error: --profile times the CPU's kernels; it does not go with --device cuda\n");
        return 2;
    }
    Arena arena = {0};
    Diag d;
    diag_init(&d, NULL, stderr);
    double t0 = now_seconds();
    Module *m = nnc_load_model(&arena, argv[optind], &d, &(LoadOptions){.passes.opt = &optset});
    double parse = now_seconds() - t0;
    int status = !m ? 1 : o.profile ? profile(m, &o) : bench(m, &o, parse);
    arena_free_all(&arena);
    return status;
}
