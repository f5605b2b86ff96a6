/* cmd_bench.c - `nnc bench FILE.nn`: how fast the compiled model is.
 *
 *   compile time      parse to native code, ms (and the part LLVM takes)
 *   train step        samples per second at the train statement's batch
 *   forward           microseconds per call at batch 1, samples/s at a large batch
 *   memory            the state, the workspace, and the process's peak
 *
 * Batches are random and made before timing (the data pipeline is not what
 * is measured): --batches N makes N different ones, which the timed calls
 * take in turn, as training takes a stream of batches. Each figure is the
 * median of --repeat timed runs, after a warm-up, with the floating-point
 * operations of its matrix products (gemm kernels) beside it. --json writes
 * one object for scripts (bench/compare.py); --only measures some figures.
 *
 * Without --threads, each figure runs on the thread count the session
 * chooses for its program and batch (threads.c), chosen before its warm-up,
 * so the timed calls all run on it; the counts and what choosing took are
 * reported. */
#include "cli/commands.h"
#include "cli/driver.h"
#include "runtime/nnrt.h"
#include "runtime/rng.h"
#include "support/util.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* The most input data --batches makes for one figure: 64 MiB. */
#define BENCH_DATA_BYTES (64ll << 20)

void usage_bench(FILE *out) {
    fputs("usage: nnc bench FILE.nn [options]\n"
          "\n"
          "Measures compile time, training and inference throughput, and memory.\n"
          "\n"
          "  --batch N        training batch (default: the train statement's)\n"
          "  --big N          the large inference batch (default 1024)\n"
          "  --threads N      threads (default: the fastest count for each figure, chosen\n"
          "                   by timing a few calls at 1, 2, 4, ... threads and every core)\n"
          "  --repeat N       timed runs per figure; the median is reported (default 5)\n"
          "  --time S         seconds each timed run lasts at least (default 0.2)\n"
          "  --batches N      different random batches the calls take in turn (default 1;\n"
          "                   fewer where N of them would pass 64 MiB of inputs)\n"
          "  --only LIST      measure only these figures: train, forward1, big (comma-separated)\n"
          "  --json           one JSON object instead of text\n"
          "  --profile        where a train step's time goes, kernel by kernel (a build\n"
          "                   of the step that times its kernels; other figures are skipped)\n"
          COMPILE_HELP
          "  -h, --help       show this help\n",
          out);
}

enum { FIG_TRAIN = 1, FIG_FORWARD1 = 2, FIG_BIG = 4, FIG_ALL = 7 };

typedef struct BenchOptions {
    int64_t batch, big, repeat, batches;
    double seconds;
    int threads;
    unsigned figures; /* FIG_ bits */
    bool json, profile;
} BenchOptions;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* `n` argument lists for program k at `batch`: random inputs (uniform in
 * (0, 1)) and labels in range, different in every list; the outputs are
 * shared, as a caller reuses its output buffer. */
typedef struct Batches {
    void ***args;
    int64_t n;
} Batches;

static Batches make_batches(const KProgram *p, int64_t batch, int64_t n, uint64_t key, int64_t classes) {
    Batches b = {xcalloc((size_t)n, sizeof(void **)), n};
    for (int64_t j = 0; j < n; j++) {
        void **args = b.args[j] = xcalloc((size_t)p->nargs + 1, sizeof(void *));
        for (int a = 0; a < p->nargs; a++) {
            int64_t c0, c1;
            type_numel(&p->args[a].type, &c0, &c1);
            int64_t size = c0 + c1 * batch;
            if (j > 0 && p->args[a].role == ARG_OUTPUT) {
                args[a] = b.args[0][a];
                continue;
            }
            uint64_t k = key + 1000 * (uint64_t)j + (uint64_t)a;
            if (p->args[a].type.dtype == DT_I32) {
                int32_t *y = xmalloc(sizeof(int32_t) * (size_t)(size + 1));
                for (int64_t i = 0; i < size; i++) y[i] = (int32_t)nnrt_rand_below(k, (uint64_t)i, (uint64_t)classes);
                args[a] = y;
            } else {
                float *x = xmalloc(sizeof(float) * (size_t)(size + 1));
                for (int64_t i = 0; i < size; i++) x[i] = (float)nnrt_rand_uniform(k, (uint64_t)i);
                args[a] = x;
            }
        }
    }
    return b;
}

static void free_batches(const KProgram *p, Batches b) {
    for (int64_t j = 0; j < b.n; j++) {
        for (int a = 0; a < p->nargs; a++)
            if (j == 0 || p->args[a].role != ARG_OUTPUT) free(b.args[j][a]);
        free(b.args[j]);
    }
    free(b.args);
}

/* How many batches of `batch` --batches asks for, within BENCH_DATA_BYTES
 * of inputs and targets (4 bytes an element, f32 or i32). */
static int64_t batch_count(const KProgram *p, int64_t batch, int64_t asked) {
    int64_t bytes = 0;
    for (int a = 0; a < p->nargs; a++) {
        if (p->args[a].role == ARG_OUTPUT) continue;
        int64_t c0, c1;
        type_numel(&p->args[a].type, &c0, &c1);
        bytes += 4 * (c0 + c1 * batch);
    }
    int64_t fit = bytes > 0 ? BENCH_DATA_BYTES / bytes : asked;
    if (fit < 1) fit = 1;
    return asked < fit ? asked : fit;
}

/* Seconds per call of program k: the median of `repeat` runs, each calling
 * it enough times to last `seconds`, the calls taking the batches in turn. */
static double time_calls(Session *s, FnKind k, Batches b, int64_t batch, const BenchOptions *o) {
    int64_t next = 0;
#define CALL() (session_run(s, k, b.args[next], batch), next = next + 1 == b.n ? 0 : next + 1)
    for (int i = 0; i < 3; i++) CALL(); /* warm up */
    double t0 = now_seconds();
    int64_t calls = 0;
    while (now_seconds() - t0 < o->seconds / 4 || calls < 3) {
        CALL();
        calls++;
    }
    /* the calibration's rate times `seconds`: each timed run lasts about `seconds` */
    int64_t per_run = (int64_t)((double)calls * o->seconds / (now_seconds() - t0 + 1e-9)) + 1;
    double *runs = xmalloc(sizeof(double) * (size_t)o->repeat);
    for (int64_t r = 0; r < o->repeat; r++) {
        double start = now_seconds();
        for (int64_t i = 0; i < per_run; i++) CALL();
        runs[r] = (now_seconds() - start) / (double)per_run;
    }
#undef CALL
    qsort(runs, (size_t)o->repeat, sizeof(double), cmp_double);
    double median = runs[o->repeat / 2];
    free(runs);
    return median;
}

/* One figure: seconds per call, the batches it took, its gemm FLOPs per
 * call, the threads it ran on (0 on a device) and their choice (NULL with
 * --threads or on a device). */
typedef struct Figure {
    bool measured;
    double seconds, flops;
    int64_t batch, batches;
    int threads;
    const ThreadChoice *choice;
} Figure;

static Figure measure(Session *s, FnKind k, int64_t batch, uint64_t key, int64_t classes, const BenchOptions *o) {
    Figure f = {.measured = true, .batch = batch};
    f.batches = batch_count(s->prog[k], batch, o->batches);
    Batches b = make_batches(s->prog[k], batch, f.batches, key, classes);
    f.choice = session_choose_threads(s, k, b.args[0], batch);
    f.threads = f.choice ? f.choice->threads : s->dev ? 0 : nnrt_threads(); /* 0: on a device */
    f.seconds = time_calls(s, k, b, batch, o);
    free_batches(s->prog[k], b);
    f.flops = kprog_gemm_flops(s->prog[k], batch);
    return f;
}

static void json_number(const char *key, bool known, double v, const char *fmt) {
    printf(", \"%s\": ", key);
    if (known) printf(fmt, v);
    else fputs("null", stdout);
}

/* "0.42 GFLOP/s in gemm" beside a figure, when its products are counted. */
static void print_gemm_rate(const Figure *f) {
    if (f->flops > 0) printf("  (%.3g MFLOP of gemm a call, %.1f GFLOP/s)", f->flops / 1e6, f->flops / f->seconds / 1e9);
    printf("\n");
}

/* "train_threads": N and "train_threads_timed_us": {"1": us, ...} (null
 * where the figure was not measured, ran on a device, or --threads fixed
 * the count). */
static void json_threads(const char *figure, const Figure *f) {
    char key[64];
    snprintf(key, sizeof key, "%s_threads", figure);
    json_number(key, f->measured && f->threads, f->threads, "%.0f");
    printf(", \"%s_threads_timed_us\": ", figure);
    if (!f->choice || !f->choice->choose_seconds) {
        fputs("null", stdout);
        return;
    }
    for (int i = 0; i < f->choice->ncandidates; i++)
        printf("%s\"%d\": %.4f", i ? ", " : "{", f->choice->candidates[i], f->choice->candidate_seconds[i] * 1e6);
    putchar('}');
}

/* What choosing the counts of the figures took. */
static double choose_seconds(const Figure *const *figs, int n) {
    double took = 0;
    for (int i = 0; i < n; i++)
        if (figs[i]->choice) took += figs[i]->choice->choose_seconds;
    return took;
}

/* "  threads         train: 1, forward 1: 1, forward 1024: 2  (the fastest of 1 and 2; choosing took 24 ms)"
 * (nothing on a device). */
static void print_threads(const Figure *const *figs, const char *const *names, int n) {
    const Figure *first = NULL;
    for (int i = 0; i < n && !first; i++)
        if (figs[i]->measured && figs[i]->threads) first = figs[i];
    if (!first) return;
    printf("  threads        ");
    for (int i = 0, shown = 0; i < n; i++)
        if (figs[i]->measured) printf("%s %s %d", shown++ ? "," : "", names[i], figs[i]->threads);
    const ThreadChoice *c = first->choice;
    if (!c || c->ncandidates == 1) {
        printf(c ? "  (one core)\n" : "  (--threads)\n");
        return;
    }
    printf("  (the fastest of");
    for (int i = 0; i < c->ncandidates; i++)
        printf("%s %d", i == 0 ? "" : i == c->ncandidates - 1 ? " and" : ",", c->candidates[i]);
    printf("; choosing took %.0f ms)\n", choose_seconds(figs, n) * 1e3);
}

/* The classes of the model's label target, so random labels are in range. */
static int64_t model_classes(const Module *m) {
    int64_t classes = 2;
    for (int i = 0; i < m->eval->n; i++)
        if (m->eval->nodes[i].op == OP_INPUT && m->eval->nodes[i].attr[0] > 0) classes = (int64_t)m->eval->nodes[i].attr[0];
    return classes;
}

static int bench(Module *m, const BenchOptions *o, double parse_seconds) {
    Diag d;
    diag_init(&d, m->src, stderr);
    int64_t batch = o->batch ? o->batch : m->train_spec.batch;
    bool train = m->train && (o->figures & FIG_TRAIN);
    if ((o->figures & FIG_TRAIN) && !m->train && o->figures == FIG_TRAIN) {
        diag_error(&d, SPAN_NONE, "the model has no train statement to measure");
        return 1;
    }
    bool fwd = (o->figures & (FIG_FORWARD1 | FIG_BIG)) != 0;
    unsigned fns = FN_BIT(FN_INIT) | (fwd ? FN_BIT(FN_FORWARD) : 0) | (train ? FN_BIT(FN_TRAIN) : 0);
    nnrt_set_threads(o->threads);
    Session *s = session_create(m, fns, false, &d);
    if (!s) return 1;
    int64_t most = train ? batch : 1;
    if ((o->figures & FIG_BIG) && o->big > most) most = o->big;
    if (!session_reserve(s, most)) {
        diag_error(&d, SPAN_NONE, "out of memory for the workspace");
        session_destroy(s);
        return 1;
    }
    session_init(s, 1);
    int64_t classes = model_classes(m);

    Figure tr = {0}, f1 = {0}, fb = {0};
    if (train) tr = measure(s, FN_TRAIN, batch, 11, classes, o);
    if (o->figures & FIG_FORWARD1) f1 = measure(s, FN_FORWARD, 1, 22, classes, o);
    if (o->figures & FIG_BIG) fb = measure(s, FN_FORWARD, o->big, 33, classes, o);
    const Figure *figs[] = {&tr, &f1, &fb};

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double state_mb = (double)m->state_size * 4 / 1e6;
    int64_t ws = 0;
    for (int k = 0; k < FN_COUNT; k++)
        if (s->prog[k]) {
            int64_t w = kprog_workspace_size(s->prog[k], batch);
            if (w > ws) ws = w;
        }
    double ws_mb = (double)ws * 4 / 1e6, peak_mb = (double)ru.ru_maxrss / 1e3;
    double compile_ms = (parse_seconds + s->compile_seconds) * 1e3;
    if (o->json) {
        printf("{\"model\": \"%s\", \"threads\": ", m->name);
        if (o->threads) printf("%d", o->threads);
        else fputs("null", stdout);
        printf(", \"batch\": %lld, \"big_batch\": %lld, \"compile_ms\": %.1f, \"parse_ms\": %.2f", (long long)batch,
               (long long)o->big, compile_ms, parse_seconds * 1e3);
        printf(", \"llvm_ms\": %.1f, \"link_ms\": %.1f, \"compile_parts\": %d", s->llvm_seconds * 1e3,
               s->link_seconds * 1e3, s->compile_parts);
        json_threads("train", &tr);
        json_threads("forward1", &f1);
        json_threads("forward_big", &fb);
        printf(", \"threads_choose_ms\": %.1f", choose_seconds(figs, 3) * 1e3);
        json_number("train_samples_per_s", tr.measured, (double)batch / tr.seconds, "%.1f");
        json_number("train_step_us", tr.measured, tr.seconds * 1e6, "%.3f");
        json_number("forward1_us", f1.measured, f1.seconds * 1e6, "%.4f");
        json_number("forward_big_samples_per_s", fb.measured, (double)o->big / fb.seconds, "%.1f");
        json_number("gemm_flops", tr.measured && tr.flops >= 0, tr.flops, "%.0f");
        json_number("forward1_gemm_flops", f1.measured && f1.flops >= 0, f1.flops, "%.0f");
        json_number("forward_big_gemm_flops", fb.measured && fb.flops >= 0, fb.flops, "%.0f");
        json_number("train_batches", tr.measured, (double)tr.batches, "%.0f");
        json_number("forward1_batches", f1.measured, (double)f1.batches, "%.0f");
        json_number("forward_big_batches", fb.measured, (double)fb.batches, "%.0f");
        printf(", \"state_mb\": %.3f, \"workspace_mb\": %.3f, \"peak_mb\": %.1f}\n", state_mb, ws_mb, peak_mb);
    } else {
        printf("%s\n", m->name);
        printf("  compile         %.0f ms (parse and passes %.1f ms, LLVM %.0f ms in %d part%s, linking %.1f ms)\n",
               compile_ms, parse_seconds * 1e3, s->llvm_seconds * 1e3, s->compile_parts,
               s->compile_parts == 1 ? "" : "s", s->link_seconds * 1e3);
        char big_name[32];
        snprintf(big_name, sizeof big_name, "forward %lld:", (long long)o->big);
        print_threads(figs, (const char *[]){"train:", "forward 1:", big_name}, 3);
        if (tr.measured) {
            printf("  train step      %.0f samples/s  (%.1f us per step of %lld)", (double)batch / tr.seconds,
                   tr.seconds * 1e6, (long long)batch);
            print_gemm_rate(&tr);
        }
        if (f1.measured) {
            printf("  forward, 1      %.2f us per call", f1.seconds * 1e6);
            print_gemm_rate(&f1);
        }
        if (fb.measured) {
            printf("  forward, %-5lld %.0f samples/s", (long long)o->big, (double)o->big / fb.seconds);
            print_gemm_rate(&fb);
        }
        printf("  memory          state %.3f MB, workspace %.3f MB at batch %lld, process peak %.0f MB\n", state_mb,
               ws_mb, (long long)batch, peak_mb);
    }
    session_destroy(s);
    return 0;
}

/* --only train,forward1,big */
static bool parse_figures(const char *text, unsigned *figures) {
    *figures = 0;
    const char *p = text;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len == 5 && strncmp(p, "train", 5) == 0) *figures |= FIG_TRAIN;
        else if (len == 8 && strncmp(p, "forward1", 8) == 0) *figures |= FIG_FORWARD1;
        else if (len == 3 && strncmp(p, "big", 3) == 0) *figures |= FIG_BIG;
        else {
            fprintf(stderr, "nnc: error: --only: unknown figure '%.*s' (train, forward1, big)\n", (int)len, p);
            return false;
        }
        p += len;
        if (*p == ',') p++;
    }
    if (!*figures) fprintf(stderr, "nnc: error: --only: no figure named (train, forward1, big)\n");
    return *figures != 0;
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
    Batches b = make_batches(p, batch, 1, 11, model_classes(m));
    void **args = b.args[0];
    /* the thread count first: its timed calls must not reach the profile */
    const ThreadChoice *choice = session_choose_threads(s, fn, args, batch);
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
    printf("%s: %s at batch %lld on %d thread%s, %.1f us in %d kernels (timing adds about 0.05 us per kernel)\n",
           m->name, p->name, (long long)batch, choice ? choice->threads : nnrt_threads(),
           (choice ? choice->threads : nnrt_threads()) == 1 ? "" : "s", total * 1e6, p->nkernels);
    printf("  %9s %6s  %-5s %s\n", "us", "share", "kind", "kernel");
    for (int k = 0; k < p->nkernels; k++) {
        const Kernel *kn = kt[k].k;
        printf("  %9.2f %5.1f%%  %-5s %s\n", kt[k].seconds * 1e6, 100 * kt[k].seconds / (total + 1e-30),
               kn->kind == KK_GEMM ? "gemm" : "loop", kn->name);
    }
    free(kt);
    free_batches(p, b);
    session_destroy(s);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    static const struct option longopts[] = {
        {"batch", required_argument, NULL, 'b'},  {"big", required_argument, NULL, 'B'},
        {"threads", required_argument, NULL, 't'}, {"repeat", required_argument, NULL, 'r'},
        {"time", required_argument, NULL, 's'},   {"json", no_argument, NULL, 'j'},
        {"batches", required_argument, NULL, 'n'}, {"only", required_argument, NULL, 'o'},
        {"profile", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'}, COMPILE_LONGOPTS,         {NULL, 0, NULL, 0},
    };
    BenchOptions o = {.big = 1024, .repeat = 5, .batches = 1, .seconds = 0.2, .figures = FIG_ALL};
    long long v;
    int c;
    optind = 1;
    OptSettings optset = OPT_DEFAULTS;
    while ((c = nnc_getopt(argc, argv, "h" COMPILE_SHORTOPTS, longopts, "bench")) != -1) {
        switch (c) {
        case 'b': if (!parse_int_option("--batch", optarg, 1, &v)) return 2; o.batch = v; break;
        case 'B': if (!parse_int_option("--big", optarg, 1, &v)) return 2; o.big = v; break;
        case 't': if (!parse_int_option("--threads", optarg, 1, &v)) return 2; o.threads = (int)v; break;
        case 'r': if (!parse_int_option("--repeat", optarg, 1, &v)) return 2; o.repeat = v; break;
        case 's': if (!parse_real_option("--time", optarg, &o.seconds)) return 2; break;
        case 'n': if (!parse_int_option("--batches", optarg, 1, &v)) return 2; o.batches = v; break;
        case 'o': if (!parse_figures(optarg, &o.figures)) return 2; break;
        case 'j': o.json = true; break;
        case 'p': o.profile = true; break;
        case 'h': usage_bench(stdout); return 0;
        default:
            if (!is_compile_option(c) || !parse_compile_option(c, optarg, &optset)) return 2;
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
