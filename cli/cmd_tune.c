/* cmd_tune.c - `nnc tune FILE.nn`: random search over hyper-parameters.
 *
 *   nnc tune model.nn --trials 20 --param lr=1e-4..1e-1:log --param batch=32,64,128 --epochs 2
 *
 * Each trial draws every --param at random (uniformly, log-uniformly, or
 * from a list), trains on the training split and is scored on the
 * validation split (accuracy, or the loss where the task has no accuracy).
 * It narrows nothing by itself: it prints the trials ranked and writes the
 * best setting to a file. */
#include "cli/commands.h"
#include "cli/driver.h"
#include "runtime/rng.h"
#include "support/util.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_PARAMS = 8, MAX_CHOICES = 16, MAX_TRIALS = 1000 };

typedef struct TuneParam {
    const char *name;
    bool log, choices;
    double lo, hi;
    double values[MAX_CHOICES];
    int nvalues;
} TuneParam;

typedef struct Trial {
    double values[MAX_PARAMS];
    TrainResult r;
    bool failed;
} Trial;

void usage_tune(FILE *out) {
    fputs("usage: nnc tune FILE.nn --param SPEC [--param SPEC ...] [options]\n"
          "\n"
          "Random search: each trial draws the parameters, trains on the training split and\n"
          "is scored on the validation split; the trials are printed ranked, and the best\n"
          "setting is written to a file.\n"
          "\n"
          "  --param NAME=LO..HI       uniform in [LO, HI]\n"
          "  --param NAME=LO..HI:log   log-uniform in [LO, HI]\n"
          "  --param NAME=A,B,C        one of the values\n"
          "                            NAME: batch, or a hyper-parameter of the train statement\n"
          "                            (lr, momentum, beta1, beta2, eps, weight_decay, ...)\n"
          "  --trials N                how many settings to try (default 10)\n"
          "  --epochs N                epochs per trial (default: the train statement's)\n"
          "  --seed N                  seed of the draws and of each trial's training (default 1)\n"
          "  --limit N, --val N, --data PATH, --threads N   as for nnc train\n"
          "  --out FILE                where the best setting goes (default: MODEL.tune)\n"
          COMPILE_HELP
          "  -h, --help                show this help\n",
          out);
}

/* NAME=LO..HI[:log] or NAME=A,B,C */
static bool parse_param(const char *spec, TuneParam *p) {
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec) {
        fprintf(stderr, "nnc: error: --param '%s': expected NAME=LO..HI, NAME=LO..HI:log or NAME=A,B,C\n", spec);
        return false;
    }
    memset(p, 0, sizeof *p);
    p->name = xstrdup(spec);
    ((char *)p->name)[eq - spec] = 0;
    const char *v = eq + 1, *dots = strstr(v, "..");
    char *end;
    if (dots) {
        p->lo = strtod(v, &end);
        bool ok = end == dots;
        p->hi = strtod(dots + 2, &end);
        ok &= end != dots + 2;
        if (*end == ':' && strcmp(end, ":log") == 0) p->log = true;
        else ok &= *end == 0;
        if (!ok || !(p->lo < p->hi) || (p->log && p->lo <= 0)) {
            fprintf(stderr, "nnc: error: --param '%s': a range LO..HI with LO < HI (and LO > 0 for :log)\n", spec);
            return false;
        }
        return true;
    }
    p->choices = true;
    for (const char *s = v; *s; s = *end == ',' ? end + 1 : end) {
        if (p->nvalues == MAX_CHOICES) {
            fprintf(stderr, "nnc: error: --param '%s': at most %d values\n", spec, MAX_CHOICES);
            return false;
        }
        p->values[p->nvalues++] = strtod(s, &end);
        if (end == s || (*end != ',' && *end != 0)) {
            fprintf(stderr, "nnc: error: --param '%s': '%s' is not a number\n", spec, s);
            return false;
        }
    }
    return p->nvalues > 0;
}

static double draw(const TuneParam *p, uint64_t key, uint64_t counter) {
    if (p->choices) return p->values[nnrt_rand_below(key, counter, (uint64_t)p->nvalues)];
    double u = nnrt_rand_uniform(key, counter);
    return p->log ? exp(log(p->lo) + u * (log(p->hi) - log(p->lo))) : p->lo + u * (p->hi - p->lo);
}

/* "lr" names the state's "opt.lr"; batch is the train statement's. */
static bool check_name(const Module *m, const char *name) {
    if (strcmp(name, "batch") == 0) return true;
    char slot[256];
    snprintf(slot, sizeof slot, "opt.%s", name);
    if (module_find_slot(m, slot)) return true;
    const char **names = xmalloc(sizeof(char *) * ((size_t)m->nslots + 1));
    int n = 0;
    names[n++] = "batch";
    for (int i = 0; i < m->nslots; i++)
        if ((m->slots[i].flags & NF_HYPER) && strncmp(m->slots[i].name, "opt.", 4) == 0 &&
            strcmp(m->slots[i].name, "opt.step") != 0 && strcmp(m->slots[i].name, "opt.steps_per_epoch") != 0)
            names[n++] = m->slots[i].name + 4;
    char hint[DID_YOU_MEAN_MAX];
    fprintf(stderr, "nnc: error: --param: the model has no hyper-parameter '%s'%s (it has", name,
            did_you_mean(name, names, n, hint, sizeof hint));
    for (int i = 0; i < n; i++) fprintf(stderr, "%s %s", i ? "," : "", names[i]);
    fputs(")\n", stderr);
    free(names);
    return false;
}

static int by_score(const void *a, const void *b) {
    const Trial *x = a, *y = b;
    if (x->failed != y->failed) return x->failed ? 1 : -1;
    return x->r.val_score < y->r.val_score ? 1 : x->r.val_score > y->r.val_score ? -1 : 0;
}

static void print_setting(FILE *out, const TuneParam *ps, int np, const Trial *t) {
    for (int k = 0; k < np; k++) {
        if (strcmp(ps[k].name, "batch") == 0) fprintf(out, "  batch=%-5lld", (long long)t->values[k]);
        else fprintf(out, "  %s=%-10.4g", ps[k].name, t->values[k]);
    }
}

static int tune(Module *m, TuneParam *ps, int np, int64_t trials, TrainConfig *base, const char *out_path) {
    for (int k = 0; k < np; k++)
        if (!check_name(m, ps[k].name)) return 1;
    Trial *all = xcalloc((size_t)trials, sizeof(Trial));
    int64_t default_batch = m->train_spec.batch;
    bool accuracy = false;
    for (int64_t t = 0; t < trials; t++) {
        Trial *tr = &all[t];
        TrainConfig c = *base;
        c.quiet = true;
        m->train_spec.batch = default_batch;
        for (int k = 0; k < np; k++) {
            tr->values[k] = draw(&ps[k], nnrt_mix64(base->seed) + 0x70e, (uint64_t)(t * MAX_PARAMS + k));
            if (strcmp(ps[k].name, "batch") == 0) {
                tr->values[k] = fmax(1, round(tr->values[k]));
                m->train_spec.batch = (int64_t)tr->values[k];
            } else if (c.nhypers < 8) {
                c.hyper_names[c.nhypers] = arena_printf(m->arena, "opt.%s", ps[k].name);
                c.hyper_values[c.nhypers++] = tr->values[k];
            }
        }
        tr->failed = trainer_run(m, &c, &tr->r) != 0 || tr->r.best_epoch < 1;
        accuracy |= !tr->failed && tr->r.has_accuracy;
        printf("trial %lld/%lld", (long long)t + 1, (long long)trials);
        print_setting(stdout, ps, np, tr);
        if (tr->failed) printf("  failed\n");
        else if (tr->r.has_accuracy) printf("  val acc %.4f  (%.1f s)\n", tr->r.val_score, tr->r.seconds);
        else printf("  val loss %.4f  (%.1f s)\n", tr->r.val_loss, tr->r.seconds);
        fflush(stdout);
    }
    m->train_spec.batch = default_batch;
    qsort(all, (size_t)trials, sizeof(Trial), by_score);
    printf("\nranked by validation %s:\n", accuracy ? "accuracy" : "loss");
    for (int64_t t = 0; t < trials; t++) {
        printf("%3lld.", (long long)t + 1);
        print_setting(stdout, ps, np, &all[t]);
        if (all[t].failed) printf("  failed\n");
        else printf("  %s %.4f  (best epoch %lld)\n", accuracy ? "val acc" : "val loss",
                    accuracy ? all[t].r.val_score : all[t].r.val_loss, (long long)all[t].r.best_epoch);
    }
    int status = 1;
    if (!all[0].failed) {
        StrBuf sb = {0};
        sb_printf(&sb, "# nnc tune %s: the best of %lld trials, %s %.4f on validation\n", m->src->path,
                  (long long)trials, accuracy ? "accuracy" : "loss", accuracy ? all[0].r.val_score : all[0].r.val_loss);
        for (int k = 0; k < np; k++) sb_printf(&sb, "%s=%.6g\n", ps[k].name, all[0].values[k]);
        if (write_file_atomic(out_path, sb.data, sb.len) != 0) fprintf(stderr, "nnc: error: cannot write %s\n", out_path);
        else {
            printf("best setting written to %s\n", out_path);
            status = 0;
        }
        sb_free(&sb);
    }
    free(all);
    return status;
}

int cmd_tune(int argc, char **argv) {
    static const struct option longopts[] = {
        {"param", required_argument, NULL, 'P'},  {"trials", required_argument, NULL, 'T'},
        {"epochs", required_argument, NULL, 'e'}, {"seed", required_argument, NULL, 's'},
        {"limit", required_argument, NULL, 'n'},  {"val", required_argument, NULL, 'v'},
        {"data", required_argument, NULL, 'd'},   {"threads", required_argument, NULL, 't'},
        {"out", required_argument, NULL, 'o'},    {"help", no_argument, NULL, 'h'}, COMPILE_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    TuneParam ps[MAX_PARAMS];
    int np = 0;
    int64_t trials = 10;
    TrainConfig c = {.seed = 1, .val = -1};
    LoadOptions lo = {0};
    const char *out = NULL;
    long long v;
    int opt;
    optind = 1;
    OptSettings optset = OPT_DEFAULTS;
    lo.passes.opt = &optset;
    while ((opt = nnc_getopt(argc, argv, "h" COMPILE_SHORTOPTS, longopts, "tune")) != -1) {
        switch (opt) {
        case 'P':
            if (np == MAX_PARAMS) {
                fprintf(stderr, "nnc: error: at most %d --param options\n", MAX_PARAMS);
                return 2;
            }
            if (!parse_param(optarg, &ps[np++])) return 2;
            break;
        case 'T': if (!parse_int_option("--trials", optarg, 1, &v) || v > MAX_TRIALS) return 2; trials = v; break;
        case 'e': if (!parse_int_option("--epochs", optarg, 1, &v)) return 2; lo.overrides.epochs = v; break;
        case 's': if (!parse_int_option("--seed", optarg, 0, &v)) return 2; c.seed = (uint64_t)v; break;
        case 'n': if (!parse_int_option("--limit", optarg, 1, &v)) return 2; c.limit = v; break;
        case 'v': if (!parse_int_option("--val", optarg, 1, &v)) return 2; c.val = v; break;
        case 'd': c.data = optarg; break;
        case 't': if (!parse_int_option("--threads", optarg, 1, &v)) return 2; c.threads = (int)v; break;
        case 'o': out = optarg; break;
        case 'h': usage_tune(stdout); return 0;
        default:
            if (!is_compile_option(opt) || !parse_compile_option(opt, optarg, &optset)) return 2;
            break;
        }
    }
    if (optind != argc - 1 || np == 0) {
        fprintf(stderr, "nnc: error: %s\n", optind >= argc ? "no model file" : np == 0 ? "no --param to tune"
                                                                                   : "one model file at a time");
        usage_tune(stderr);
        return 2;
    }
    Arena arena = {0};
    Diag d;
    diag_init(&d, NULL, stderr);
    Module *m = nnc_load_model(&arena, argv[optind], &d, &lo);
    int status = 1;
    if (m) {
        const char *path = out ? out : arena_printf(&arena, "%s.tune", m->name);
        status = tune(m, ps, np, trials, &c, path);
    }
    for (int k = 0; k < np; k++) free((char *)ps[k].name);
    arena_free_all(&arena);
    return status;
}
