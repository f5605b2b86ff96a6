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
          "Loss and accuracy of the parameters in checkpoint CKPT on a data set.\n"
          "\n"
          "  --load CKPT      the checkpoint (written by 'nnc train --save')\n"
          "  --data DIR       MNIST-format data (default " NNC_DEFAULT_DATA_DIR ")\n"
          "  --split NAME     t10k (the test set, default) or train\n"
          "  --batch N        examples per call (default 1000)\n"
          "  -h, --help       show this help\n",
          out);
}

void usage_predict(FILE *out) {
    fputs("usage: nnc predict FILE.nn --load CKPT [options]\n"
          "\n"
          "Class probabilities of the model with checkpoint CKPT for examples of a data set.\n"
          "\n"
          "  --load CKPT      the checkpoint (written by 'nnc train --save')\n"
          "  --data DIR       MNIST-format data (default " NNC_DEFAULT_DATA_DIR ")\n"
          "  --split NAME     t10k (the test set, default) or train\n"
          "  --first I        the first example to predict (default 0)\n"
          "  --count N        how many examples (default 10)\n"
          "  --top K          classes shown per example (default 3)\n"
          "  -h, --help       show this help\n",
          out);
}

typedef struct EvalOptions {
    const char *load, *data_dir, *split;
    int64_t batch, first, count, top;
} EvalOptions;

static int run(Module *m, const EvalOptions *o, bool predict) {
    Diag d;
    diag_init(&d, m->src, stderr);
    ClassifierShape cs;
    if (!classifier_shape(m, &cs, &d)) return 1;
    char err[512];
    RtDataset ds;
    if (rt_mnist_load(&ds, o->data_dir, o->split, err, sizeof err) != 0) {
        fprintf(stderr, "nnc: error: %s\n", err);
        return 1;
    }
    int status = 1;
    Session *s = NULL;
    float *xb = NULL, *probs = NULL;
    int32_t *yb = NULL;
    if (!classify_check_features(&ds, &cs, &d) || !classify_check_labels(&ds, cs.classes, o->split)) goto done;
    int64_t batch = predict ? o->count : o->batch;
    if (batch < 1) batch = 1;
    s = session_create(m, FN_BIT(FN_EVAL) | FN_BIT(FN_INIT), false, &d);
    if (!s || !session_reserve(s, batch)) goto done;
    session_init(s, 0);
    if (!session_load(s, o->load, NNRT_PARAM, &d)) goto done;
    xb = xmalloc(sizeof(float) * (size_t)(batch * cs.features));
    yb = xmalloc(sizeof(int32_t) * (size_t)batch);
    probs = xmalloc(sizeof(float) * (size_t)(batch * cs.classes));

    if (!predict) {
        double loss, acc;
        classify_evaluate(s, &ds, batch, cs.classes, xb, yb, probs, &loss, &acc);
        printf("%s: %s loss %.4f  accuracy %.4f  (%lld examples)\n", o->load, o->split, loss, acc, (long long)ds.n);
        status = 0;
        goto done;
    }
    if (o->first >= ds.n) {
        fprintf(stderr, "nnc: error: --first %lld, but the %s set has %lld examples\n", (long long)o->first, o->split,
                (long long)ds.n);
        goto done;
    }
    RtDataset part = rt_dataset_slice(&ds, o->first, o->count);
    rt_gather(&part, NULL, part.n, xb, yb);
    void *args[] = {xb, yb, probs};
    session_run(s, FN_EVAL, args, part.n);
    int64_t top = o->top < cs.classes ? o->top : cs.classes;
    printf("%-8s %-6s %-10s %s\n", "example", "label", "predicted", "probabilities (top classes)");
    for (int64_t i = 0; i < part.n; i++) {
        const float *p = probs + i * cs.classes;
        int64_t order[64], shown = 0;
        /* the `top` largest, by selection (classes are few) */
        for (int64_t k = 0; k < top && k < 64; k++) {
            int64_t best = -1;
            for (int64_t j = 0; j < cs.classes; j++) {
                bool taken = false;
                for (int64_t q = 0; q < shown; q++) taken |= order[q] == j;
                if (!taken && (best < 0 || p[j] > p[best])) best = j;
            }
            order[shown++] = best;
        }
        printf("%-8lld %-6d %-10lld", (long long)(o->first + i), yb[i], (long long)order[0]);
        for (int64_t k = 0; k < shown; k++) printf(" %lld:%.3f", (long long)order[k], (double)p[order[k]]);
        printf("%s\n", order[0] == yb[i] ? "" : "   (wrong)");
    }
    status = 0;
done:
    free(xb);
    free(yb);
    free(probs);
    session_destroy(s);
    rt_dataset_free(&ds);
    return status;
}

static int command(int argc, char **argv, bool predict) {
    static const struct option longopts[] = {
        {"load", required_argument, NULL, 'L'},  {"data", required_argument, NULL, 'd'},
        {"split", required_argument, NULL, 's'}, {"batch", required_argument, NULL, 'b'},
        {"first", required_argument, NULL, 'f'}, {"count", required_argument, NULL, 'c'},
        {"top", required_argument, NULL, 't'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    void (*usage)(FILE *) = predict ? usage_predict : usage_eval;
    EvalOptions o = {.data_dir = NNC_DEFAULT_DATA_DIR, .split = "t10k", .batch = 1000, .count = 10, .top = 3};
    long long v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'L': o.load = optarg; break;
        case 'd': o.data_dir = optarg; break;
        case 's':
            if (strcmp(optarg, "t10k") != 0 && strcmp(optarg, "train") != 0) {
                fprintf(stderr, "nnc: error: --split is t10k or train, not '%s'\n", optarg);
                return 2;
            }
            o.split = optarg;
            break;
        case 'b': if (!parse_int_option("--batch", optarg, 1, &v)) return 2; o.batch = v; break;
        case 'f': if (!parse_int_option("--first", optarg, 0, &v)) return 2; o.first = v; break;
        case 'c': if (!parse_int_option("--count", optarg, 1, &v)) return 2; o.count = v; break;
        case 't': if (!parse_int_option("--top", optarg, 1, &v)) return 2; o.top = v; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || !o.load) {
        fprintf(stderr, "nnc: error: %s\n", optind >= argc ? "no model file" : !o.load ? "--load CKPT is required"
                                                                                     : "one model file at a time");
        usage(stderr);
        return 2;
    }
    Arena arena = {0};
    Diag d;
    diag_init(&d, NULL, stderr);
    Module *m = nnc_load_model(&arena, argv[optind], &d, &(LoadOptions){0});
    int status = m ? run(m, &o, predict) : 1;
    arena_free_all(&arena);
    return status;
}

int cmd_eval(int argc, char **argv) { return command(argc, argv, false); }
int cmd_predict(int argc, char **argv) { return command(argc, argv, true); }
