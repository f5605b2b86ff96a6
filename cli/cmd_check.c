/* cmd_check.c - `nnc check FILE.nn`: the gradient check.
 *
 * The grad program (forward, loss and the backward graph that autodiff
 * derived) is compiled in double precision and run on a random batch; each
 * parameter's gradient is compared with central finite differences of the
 * loss, (L(w + h) - L(w - h)) / 2h with h = 1e-5 max(1, |w|), computed by the
 * same program. In double precision that quotient is accurate to about
 * 1e-10 max(1, |loss|), so an error above the tolerance (1e-4 relative, with
 * gradients below 1e-6 max(1, |loss|) compared absolutely) is a wrong
 * gradient rule, not rounding. */
#include "cli/commands.h"
#include "cli/driver.h"
#include "runtime/rng.h"
#include "support/util.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void usage_check(FILE *out) {
    fputs("usage: nnc check FILE.nn [options]\n"
          "\n"
          "Compares every trainable parameter's gradient, as derived by nnc, with central\n"
          "finite differences of the loss, in double precision, on a random batch.\n"
          "\n"
          "  --batch N        examples in the random batch (default 4)\n"
          "  --samples N      elements checked per parameter, at random (default 32)\n"
          "  --all            check every element of every parameter\n"
          "  --tolerance X    largest relative error accepted (default 1e-4)\n"
          "  --seed N         seed of the parameters and the batch (default 1)\n"
          COMPILE_HELP
          "  -h, --help       show this help\n"
          "\n"
          "The relative error of an element is |analytic - numeric| / max(|analytic|, |numeric|, f),\n"
          "f = 1e-6 max(1, |loss|) (the quotient's rounding grows with the loss);\n"
          "elements where the loss has a kink (relu at 0) within the step are skipped.\n"
          "Exit status 0 if every element is within the tolerance, 1 otherwise.\n",
          out);
}

typedef struct CheckOptions {
    int64_t batch, samples;
    bool all;
    double tolerance;
    uint64_t seed;
} CheckOptions;

/* The number of classes a label target takes: its `classes`, or the width
 * of the logits a cross-entropy compares it with, or what multi_hot reads. */
static int64_t target_classes(const Graph *g, int target) {
    if (g->nodes[target].attr[0] > 0) return (int64_t)g->nodes[target].attr[0];
    for (int i = 0; i < g->n; i++) {
        const Node *n = &g->nodes[i];
        if (n->op == OP_CROSS_ENTROPY && n->in[1] == target) return g->nodes[n->in[0]].type.dim[1];
        if (n->op == OP_ONEHOT && n->in[0] == target) return (int64_t)n->attr[0];
        if (n->op == OP_MULTI_HOT && n->in[0] == target) { /* up to the highest class a set names */
            int64_t top = 0;
            for (int k = 0; k < IR_MAX_ATTRS; k++)
                for (int b = 0; b < 64; b++)
                    if ((uint64_t)n->attr[k] >> b & 1 && b + 1 > top) top = b + 1;
            return top > 1 ? top : 2;
        }
    }
    return 2;
}

/* Random data for every argument of the grad program: inputs uniform in
 * [-1, 1], real targets in [0, 1], label targets in [0, classes). */
static void **random_args(const Module *m, const KProgram *p, int64_t batch, uint64_t seed) {
    void **args = xcalloc((size_t)p->nargs + 1, sizeof(void *));
    for (int a = 0; a < p->nargs; a++) {
        const KArg *arg = &p->args[a];
        int64_t c0, c1;
        type_numel(&arg->type, &c0, &c1);
        int64_t n = c0 + c1 * batch;
        uint64_t key = nnrt_mix64(seed) + 1000 + (uint64_t)a;
        if (arg->type.dtype == DT_I32) {
            int target = graph_find_leaf(m->grad, OP_INPUT, arg->name);
            int64_t classes = target_classes(m->grad, target);
            int32_t *y = xmalloc(sizeof(int32_t) * (size_t)(n ? n : 1));
            for (int64_t i = 0; i < n; i++) y[i] = (int32_t)nnrt_rand_below(key, (uint64_t)i, (uint64_t)classes);
            args[a] = y;
        } else {
            double *x = xmalloc(sizeof(double) * (size_t)(n ? n : 1));
            for (int64_t i = 0; i < n; i++) {
                double u = nnrt_rand_uniform(key, (uint64_t)i);
                x[i] = arg->role == ARG_TARGET ? u : 2 * u - 1;
            }
            args[a] = x;
        }
    }
    return args;
}

/* (L(w + h) - L(w - h)) / 2h, leaving w as it was. */
static double central_difference(Session *s, void **args, int64_t batch, double *w, double h) {
    double saved = *w;
    *w = saved + h;
    session_to_device(s);
    double up = session_run(s, FN_GRAD, args, batch);
    *w = saved - h;
    session_to_device(s);
    double down = session_run(s, FN_GRAD, args, batch);
    *w = saved;
    session_to_device(s);
    return (up - down) / (2 * h);
}

/* |a - b| relative to the larger of the two, or to `floor` for gradients
 * smaller than what a difference quotient of this loss resolves. */
static double relative_error(double a, double b, double floor) {
    return fabs(a - b) / fmax(fmax(fabs(a), fabs(b)), floor);
}

static int check(Module *m, const CheckOptions *o) {
    Diag d;
    diag_init(&d, m->src, stderr);
    if (!m->grad) {
        diag_error(&d, SPAN_NONE, "the model has no loss statement, so there is no gradient to check");
        return 1;
    }
    Session *s = session_create(m, FN_BIT(FN_GRAD) | FN_BIT(FN_INIT), true, &d);
    if (!s) return 1;
    int status = 1;
    void **args = NULL;
    if (!session_reserve(s, o->batch)) {
        fprintf(stderr, "nnc: error: out of memory for the workspace\n");
        goto done;
    }
    session_init(s, o->seed);
    const KProgram *p = s->prog[FN_GRAD];
    args = random_args(m, p, o->batch, o->seed);
    double loss = session_run(s, FN_GRAD, args, o->batch);
    printf("%s: gradient check on a random batch of %lld, loss %.6g, in double precision\n", m->name,
           (long long)o->batch, loss);
    /* The difference quotient's rounding error grows with the loss (about
     * 1e-16 |L| / h): gradients below 1e-6 max(1, |L|) are compared absolutely. */
    double floor = 1e-6 * fmax(1.0, fabs(loss));

    /* Keep the analytic gradients: the runs below overwrite the outputs. */
    int ngrads = 0;
    for (int a = 0; a < p->nargs; a++) ngrads += p->args[a].role == ARG_OUTPUT;
    int first_grad = p->nargs - ngrads;
    double **analytic = xcalloc((size_t)ngrads + 1, sizeof(double *));
    for (int k = 0; k < ngrads; k++) {
        int64_t c0, c1;
        type_numel(&p->args[first_grad + k].type, &c0, &c1);
        analytic[k] = xmalloc(sizeof(double) * (size_t)(c0 ? c0 : 1));
        memcpy(analytic[k], args[first_grad + k], sizeof(double) * (size_t)c0);
    }

    int failures = 0;
    int64_t kinks = 0;
    double worst_all = 0;
    for (int k = 0; k < ngrads; k++) {
        const char *pname = p->args[first_grad + k].name + strlen("grad.");
        const StateSlot *slot = module_find_slot(m, pname);
        double *w = (double *)session_slot(s, pname);
        int64_t n = slot->size, count = o->all || n <= o->samples ? n : o->samples;
        double worst = 0;
        int64_t worst_i = 0;
        for (int64_t j = 0; j < count; j++) {
            int64_t i = count == n ? j : (int64_t)nnrt_rand_below(nnrt_mix64(o->seed) + 7 + (uint64_t)k, (uint64_t)j,
                                                                  (uint64_t)n);
            double h = 1e-5 * fmax(1.0, fabs(w[i])), exact = analytic[k][i];
            double numeric = central_difference(s, args, o->batch, w + i, h);
            double err = relative_error(exact, numeric, floor);
            if (err > o->tolerance) {
                /* A kink (relu at 0) between w - h and w + h breaks the
                 * difference quotient, not the gradient: a smaller step
                 * then gives another quotient. Such elements are skipped. */
                double finer = central_difference(s, args, o->batch, w + i, h / 16);
                if (relative_error(numeric, finer, floor) > 1e-3) {
                    kinks++;
                    continue;
                }
                err = fmin(err, relative_error(exact, finer, floor));
            }
            if (!(err <= worst)) { /* NaN counts as the worst */
                worst = isnan(err) ? INFINITY : err;
                worst_i = i;
            }
        }
        bool ok = worst <= o->tolerance;
        failures += !ok;
        if (worst > worst_all) worst_all = worst;
        printf("  %-28s %8lld of %-8lld max rel error %.2e  %s\n", pname, (long long)count, (long long)n, worst,
               ok ? "ok" : "FAIL");
        if (!ok) printf("      worst at element %lld: analytic %.10g\n", (long long)worst_i, analytic[k][worst_i]);
    }
    for (int k = 0; k < ngrads; k++) free(analytic[k]);
    free(analytic);
    if (ngrads == 0) printf("  (no trainable parameters)\n");
    if (kinks) printf("  (%lld elements skipped: a kink of the loss, e.g. relu at 0, lies within the step)\n", (long long)kinks);
    printf("%s: %s (max relative error %.2e, tolerance %.0e)\n", m->name,
           failures ? "gradient check FAILED" : "gradients match finite differences", worst_all, o->tolerance);
    status = failures ? 1 : 0;
done:
    if (args) {
        for (int a = 0; a < p->nargs; a++) free(args[a]);
        free(args);
    }
    session_destroy(s);
    return status;
}

int cmd_check(int argc, char **argv) {
    static const struct option longopts[] = {
        {"batch", required_argument, NULL, 'b'},     {"samples", required_argument, NULL, 'n'},
        {"all", no_argument, NULL, 'a'},             {"tolerance", required_argument, NULL, 't'},
        {"seed", required_argument, NULL, 's'},      {"help", no_argument, NULL, 'h'}, COMPILE_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    CheckOptions o = {.batch = 4, .samples = 32, .tolerance = 1e-4, .seed = 1};
    long long v;
    int c;
    optind = 1;
    OptSettings optset = OPT_DEFAULTS;
    while ((c = nnc_getopt(argc, argv, "h" COMPILE_SHORTOPTS, longopts, "check")) != -1) {
        switch (c) {
        case 'b': if (!parse_int_option("--batch", optarg, 1, &v)) return 2; o.batch = v; break;
        case 'n': if (!parse_int_option("--samples", optarg, 1, &v)) return 2; o.samples = v; break;
        case 'a': o.all = true; break;
        case 't': if (!parse_real_option("--tolerance", optarg, &o.tolerance)) return 2; break;
        case 's': if (!parse_int_option("--seed", optarg, 0, &v)) return 2; o.seed = (uint64_t)v; break;
        case 'h': usage_check(stdout); return 0;
        default:
            if (!is_compile_option(c) || !parse_compile_option(c, optarg, &optset)) return 2;
            break;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "nnc: error: %s\n", optind >= argc ? "no model file" : "one model file at a time");
        usage_check(stderr);
        return 2;
    }
    Arena arena = {0};
    Diag d;
    diag_init(&d, NULL, stderr);
    Module *m = nnc_load_model(&arena, argv[optind], &d, &(LoadOptions){.passes.opt = &optset});
    int status = m ? check(m, &o) : 1;
    arena_free_all(&arena);
    return status;
}
