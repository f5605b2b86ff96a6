/* cmd_eval.c - `nnc eval` (loss and accuracy of a checkpoint on a data
 * set) and `nnc predict` (class probabilities for chosen examples). Both
 * load a checkpoint's parameters into the JIT-compiled model. */
#include "cli/commands.h"
#include "cli/driver.h"
#include "runtime/checkpoint.h"
#include "runtime/data.h"
#include "support/util.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

void usage_eval(FILE *out) {
    fputs("usage: nnc eval FILE.nn --load CKPT [options]\n"
          "\n"
          "Loss, accuracy and metrics of the parameters in checkpoint CKPT on the model's data.\n"
          "\n"
          "  --load CKPT      the checkpoint (written by 'nnc train --save')\n"
          "  --data PATH      the data's folder (IDX) or file (CSV) instead of the data statement's\n"
          "  --split NAME     test (default), train or val\n"
          COMPILE_HELP
          "  -h, --help       show this help\n",
          out);
}

void usage_predict(FILE *out) {
    fputs("usage: nnc predict FILE.nn --load CKPT [options]\n"
          "\n"
          "The model's outputs (for classifiers, the most likely classes) with checkpoint CKPT,\n"
          "for examples of its data.\n"
          "\n"
          "  --load CKPT      the checkpoint (written by 'nnc train --save')\n"
          "  --data PATH      the data's folder (IDX) or file (CSV) instead of the data statement's\n"
          "  --split NAME     test (default) or train\n"
          "  --first I        the first example to predict (default 0)\n"
          "  --count N        how many examples (default 10)\n"
          "  --top K          classes shown per example (default 3)\n"
          "  -h, --help       show this help\n",
          out);
}

typedef struct EvalOptions {
    TrainConfig c;
    const char *split;
    int64_t first, count, top;
} EvalOptions;

/* The `top` largest of p[0..n) into order[], largest first. */
static int top_classes(const float *p, int64_t n, int64_t top, int64_t *order) {
    int shown = 0;
    for (int64_t k = 0; k < top && k < n; k++) {
        int64_t best = -1;
        for (int64_t j = 0; j < n; j++) {
            bool taken = false;
            for (int q = 0; q < shown; q++) taken |= order[q] == j;
            if (!taken && (best < 0 || p[j] > p[best])) best = j;
        }
        order[shown++] = best;
    }
    return shown;
}

void print_predictions(const Task *task, const RtDataset *part, int64_t first, const float *out, int64_t width,
                       int64_t top, const char *name) {
    bool classes = task->kind != TASK_REGRESSION && width == task->classes && width > 1;
    printf("%-8s %-10s %s\n", "example", "target", classes ? "predicted  (top classes)" : name);
    for (int64_t i = 0; i < part->n; i++) {
        const float *p = out + i * width;
        printf("%-8lld ", (long long)(first + i));
        if (task->kind == TASK_REGRESSION) printf("%-10.4g", (double)part->t[i * part->tcols]);
        else printf("%-10d", part->y[i]);
        if (classes) {
            int64_t order[256] = {0};
            int shown = top_classes(p, width, top < 256 ? top : 256, order);
            printf(" %-10lld", (long long)order[0]);
            for (int k = 0; k < shown; k++) printf(" %lld:%.3f", (long long)order[k], (double)p[order[k]]);
            if (order[0] != part->y[i]) printf("   (wrong)");
        } else {
            for (int64_t j = 0; j < width && j < 8; j++) printf(" %.4f", (double)p[j]);
        }
        printf("\n");
    }
}

static int predict(Module *m, const EvalOptions *o) {
    Diag d;
    diag_init(&d, m->src, stderr);
    Data data;
    Task task;
    if (!data_load(m, o->c.data, 0, 0, &data, &task, &d)) return 1;
    const RtDataset *ds = strcmp(o->split, "train") == 0 ? &data.train : &data.test;
    int status = 1;
    Session *s = NULL;
    float *x = NULL, *y = NULL, *out = NULL;
    if (o->first >= ds->n) {
        fprintf(stderr, "nnc: error: --first %lld, but the %s set has %lld examples\n", (long long)o->first, o->split,
                (long long)ds->n);
        goto done;
    }
    RtDataset part = rt_dataset_slice(ds, o->first, o->count);
    s = session_create(m, FN_BIT(FN_FORWARD) | FN_BIT(FN_INIT), false, &d);
    if (!s || !session_reserve(s, part.n)) goto done;
    session_init(s, 0);
    if (!session_load(s, o->c.load, NNRT_PARAM, &d)) goto done;
    const KArg *oarg = &s->prog[FN_FORWARD]->args[1];
    int64_t c0, c1;
    type_numel(&oarg->type, &c0, &c1);
    int64_t width = c0 + c1; /* values per example (N counts once) */
    x = xmalloc(sizeof(float) * (size_t)(part.n * task.features));
    y = xmalloc(sizeof(float) * (size_t)(part.n * (task.kind == TASK_ONEHOT ? task.classes : task.tvalues) + 1));
    out = xmalloc(sizeof(float) * (size_t)(part.n * width + 1));
    data_batch(&task, &part, NULL, part.n, x, y);
    session_run(s, FN_FORWARD, (void *[]){x, out}, part.n);
    print_predictions(&task, &part, o->first, out, width, o->top, oarg->name);
    status = 0;
done:
    free(x);
    free(y);
    free(out);
    session_destroy(s);
    data_free(&data);
    return status;
}

static int command(int argc, char **argv, bool is_predict) {
    static const struct option longopts[] = {
        {"load", required_argument, NULL, 'L'},  {"data", required_argument, NULL, 'd'},
        {"split", required_argument, NULL, 's'}, {"first", required_argument, NULL, 'f'},
        {"count", required_argument, NULL, 'c'}, {"top", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'}, COMPILE_LONGOPTS,        {NULL, 0, NULL, 0},
    };
    void (*usage)(FILE *) = is_predict ? usage_predict : usage_eval;
    EvalOptions o = {.c = {.val = -1}, .split = "test", .count = 10, .top = 3};
    long long v;
    int c;
    optind = 1;
    OptSettings optset = OPT_DEFAULTS;
    while ((c = nnc_getopt(argc, argv, "h" COMPILE_SHORTOPTS, longopts, is_predict ? "predict" : "eval")) != -1) {
        switch (c) {
        case 'L': o.c.load = optarg; break;
        case 'd': o.c.data = optarg; break;
        case 's':
            if (strcmp(optarg, "test") != 0 && strcmp(optarg, "train") != 0 && strcmp(optarg, "val") != 0) {
                fprintf(stderr, "nnc: error: --split is test, train or val, not '%s'\n", optarg);
                return 2;
            }
            if (is_predict && strcmp(optarg, "val") == 0) {
                fprintf(stderr, "nnc: error: predict takes --split test or train\n");
                return 2;
            }
            o.split = optarg;
            break;
        case 'f': if (!parse_int_option("--first", optarg, 0, &v)) return 2; o.first = v; break;
        case 'c': if (!parse_int_option("--count", optarg, 1, &v)) return 2; o.count = v; break;
        case 't': if (!parse_int_option("--top", optarg, 1, &v)) return 2; o.top = v; break;
        case 'h': usage(stdout); return 0;
        default:
            if (!is_compile_option(c) || !parse_compile_option(c, optarg, &optset)) return 2;
            break;
        }
    }
    if (optind != argc - 1 || !o.c.load) {
        fprintf(stderr, "nnc: error: %s\n", optind >= argc ? "no model file" : !o.c.load ? "--load CKPT is required"
                                                                                       : "one model file at a time");
        usage(stderr);
        return 2;
    }
    Arena arena = {0};
    Diag d;
    diag_init(&d, NULL, stderr);
    Module *m = nnc_load_model(&arena, argv[optind], &d, &(LoadOptions){.passes.opt = &optset});
    int status = !m ? 1 : is_predict ? predict(m, &o) : trainer_evaluate(m, &o.c, o.split);
    arena_free_all(&arena);
    return status;
}

int cmd_eval(int argc, char **argv) { return command(argc, argv, false); }
int cmd_predict(int argc, char **argv) { return command(argc, argv, true); }
