/* cmd_train.c - `nnc train FILE.nn`: JIT-compile the model and train it on
 * MNIST-format data (Fashion-MNIST by default), reporting the loss and the
 * validation accuracy after every epoch and the test accuracy at the end. */
#include "cli/commands.h"
#include "cli/driver.h"
#include "runtime/checkpoint.h"
#include "runtime/data.h"
#include "runtime/nnrt.h"
#include "runtime/rng.h"
#include "support/util.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

void usage_train(FILE *out) {
    fputs("usage: nnc train FILE.nn [options]\n"
          "\n"
          "JIT-compiles FILE.nn and trains it; the options override the model's train statement.\n"
          "\n"
          "  --epochs N       passes over the training data\n"
          "  --batch N        examples per step\n"
          "  --lr X           learning rate\n"
          "  --seed N         seed of initialisation and shuffling (default 1)\n"
          "  --threads N      threads for matrix products (default: all cores)\n"
          "  --data DIR       folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]\n"
          "                   (default " NNC_DEFAULT_DATA_DIR ")\n"
          "  --limit N        train on the first N training examples only\n"
          "  --val N          hold out the last N training examples for validation\n"
          "                   (default: one in twelve, 5000 of Fashion-MNIST's 60000)\n"
          "  --save FILE      write a checkpoint (safetensors) at the end\n"
          "  --load FILE      start from a checkpoint written by --save and go on training\n"
          "                   where it stopped (epochs count on from there)\n"
          "  -h, --help       show this help\n",
          out);
}

typedef struct TrainOptions {
    uint64_t seed;
    int threads;
    const char *data_dir;
    int64_t limit, val;
    const char *save, *load;
} TrainOptions;

static int train(Module *m, const TrainOptions *o) {
    Diag d;
    diag_init(&d, m->src, stderr);
    ClassifierShape cs;
    if (!classifier_shape(m, &cs, &d)) return 1;
    if (!m->train) {
        diag_error(&d, SPAN_NONE, "the model has no loss statement, so it cannot be trained");
        return 1;
    }
    char err[512];
    RtDataset full, test;
    if (rt_mnist_load(&full, o->data_dir, "train", err, sizeof err) != 0 ||
        rt_mnist_load(&test, o->data_dir, "t10k", err, sizeof err) != 0) {
        fprintf(stderr, "nnc: error: %s\n", err);
        return 1;
    }
    int status = 1;
    Session *s = NULL;
    float *xb = NULL, *probs = NULL;
    int32_t *yb = NULL;
    int64_t *perm = NULL;
    if (!classify_check_features(&full, &cs, &d)) goto done;
    if (!classify_check_labels(&full, cs.classes, "training") || !classify_check_labels(&test, cs.classes, "test"))
        goto done;

    int64_t n = o->limit > 0 && o->limit < full.n ? o->limit : full.n;
    int64_t nval = o->val >= 0 ? o->val : n / 12;
    if (nval >= n) {
        fprintf(stderr, "nnc: error: --val %lld leaves no training examples out of %lld\n", (long long)nval,
                (long long)n);
        goto done;
    }
    RtDataset train_set = rt_dataset_slice(&full, 0, n - nval);
    RtDataset val_set = rt_dataset_slice(&full, n - nval, nval);

    const TrainSpec *ts = &m->train_spec;
    int64_t batch = ts->batch, eval_batch = batch > 256 ? batch : 256;
    nnrt_set_threads(o->threads);
    s = session_create(m, FN_BIT(FN_TRAIN) | FN_BIT(FN_EVAL) | FN_BIT(FN_INIT), false, &d);
    if (!s) goto done;
    if (!session_reserve(s, eval_batch)) {
        fprintf(stderr, "nnc: error: out of memory for the workspace\n");
        goto done;
    }
    session_init(s, o->seed);
    if (o->load && !session_load(s, o->load, NNRT_PARAM | NNRT_OPT_STATE | NNRT_HYPER, &d)) goto done;
    /* Schedules count in epochs; the step function counts steps. */
    int64_t steps_per_epoch = (train_set.n + batch - 1) / batch;
    float *spe = session_slot(s, "opt.steps_per_epoch");
    if (spe) *spe = (float)steps_per_epoch;
    /* A resumed run goes on with the epoch (and so the shuffling) where the
     * checkpoint's step count left off. */
    const float *step = session_slot(s, "opt.step");
    int64_t first_epoch = step && steps_per_epoch ? (int64_t)*step / steps_per_epoch : 0;
    int64_t last_epoch = first_epoch + ts->epochs;
    xb = xmalloc(sizeof(float) * (size_t)(eval_batch * cs.features));
    yb = xmalloc(sizeof(int32_t) * (size_t)eval_batch);
    probs = xmalloc(sizeof(float) * (size_t)(eval_batch * cs.classes));
    perm = xmalloc(sizeof(int64_t) * (size_t)(train_set.n ? train_set.n : 1));

    int64_t nparams = 0;
    for (int i = 0; i < m->nslots; i++)
        if (!(m->slots[i].flags & (NF_OPT_STATE | NF_HYPER))) nparams += m->slots[i].size;
    printf("%s: %lld parameters, %s(lr=%g)%s%s, batch %lld, %lld epoch%s; %lld training, %lld validation examples\n",
           m->name, (long long)nparams, optimizer_names[ts->optimizer], ts->lr,
           ts->schedule == SCHED_CONSTANT ? "" : " with a ", ts->schedule == SCHED_CONSTANT ? "" :
           arena_printf(m->arena, "%s schedule", schedule_names[ts->schedule]), (long long)batch,
           (long long)ts->epochs, ts->epochs == 1 ? "" : "s", (long long)train_set.n, (long long)val_set.n);
    printf("compiled in %.0f ms\n", s->compile_seconds * 1e3);
    fflush(stdout);

    double t_start = now_seconds();
    for (int64_t epoch = first_epoch; epoch < last_epoch; epoch++) {
        double t0 = now_seconds(), total = 0;
        nnrt_permutation(perm, train_set.n, nnrt_mix64(o->seed) + (uint64_t)epoch);
        for (int64_t first = 0; first < train_set.n; first += batch) {
            int64_t count = train_set.n - first < batch ? train_set.n - first : batch;
            rt_gather(&train_set, perm + first, count, xb, yb);
            void *args[] = {xb, yb};
            total += session_run(s, FN_TRAIN, args, count) * (double)count;
        }
        double seconds = now_seconds() - t0;
        double vloss = 0, vacc = 0;
        if (val_set.n) classify_evaluate(s, &val_set, eval_batch, cs.classes, xb, yb, probs, &vloss, &vacc);
        printf("epoch %lld/%lld  loss %.4f", (long long)epoch + 1, (long long)last_epoch,
               train_set.n ? total / (double)train_set.n : 0.0);
        if (val_set.n) printf("  val loss %.4f  val acc %.4f", vloss, vacc);
        printf("  %.1f s  %.0f samples/s\n", seconds, (double)train_set.n / (seconds > 0 ? seconds : 1e-9));
        fflush(stdout);
    }
    double tloss, tacc;
    classify_evaluate(s, &test, eval_batch, cs.classes, xb, yb, probs, &tloss, &tacc);
    printf("test loss %.4f  test acc %.4f  (%lld examples; trained in %.1f s)\n", tloss, tacc, (long long)test.n,
           now_seconds() - t_start);
    if (o->save) {
        if (!session_save(s, o->save, &d)) goto done;
        printf("saved %s\n", o->save);
    }
    status = 0;
done:
    free(perm);
    free(probs);
    free(yb);
    free(xb);
    session_destroy(s);
    rt_dataset_free(&full);
    rt_dataset_free(&test);
    return status;
}

int cmd_train(int argc, char **argv) {
    static const struct option longopts[] = {
        {"epochs", required_argument, NULL, 'e'}, {"batch", required_argument, NULL, 'b'},
        {"lr", required_argument, NULL, 'l'},     {"seed", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'}, {"data", required_argument, NULL, 'd'},
        {"limit", required_argument, NULL, 'n'},  {"val", required_argument, NULL, 'v'},
        {"save", required_argument, NULL, 'S'},   {"load", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    TrainOptions o = {.seed = 1, .data_dir = NNC_DEFAULT_DATA_DIR, .val = -1};
    LoadOptions lo = {0};
    long long v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'e': if (!parse_int_option("--epochs", optarg, 1, &v)) return 2; lo.overrides.epochs = v; break;
        case 'b': if (!parse_int_option("--batch", optarg, 1, &v)) return 2; lo.overrides.batch = v; break;
        case 'l': if (!parse_real_option("--lr", optarg, &lo.overrides.lr)) return 2; break;
        case 's': if (!parse_int_option("--seed", optarg, 0, &v)) return 2; o.seed = (uint64_t)v; break;
        case 't': if (!parse_int_option("--threads", optarg, 1, &v)) return 2; o.threads = (int)v; break;
        case 'd': o.data_dir = optarg; break;
        case 'n': if (!parse_int_option("--limit", optarg, 1, &v)) return 2; o.limit = v; break;
        case 'v': if (!parse_int_option("--val", optarg, 0, &v)) return 2; o.val = v; break;
        case 'S': o.save = optarg; break;
        case 'L': o.load = optarg; break;
        case 'h': usage_train(stdout); return 0;
        default: usage_train(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "nnc: error: %s\n", optind >= argc ? "no model file" : "one model file at a time");
        usage_train(stderr);
        return 2;
    }
    Arena arena = {0};
    Diag d;
    diag_init(&d, NULL, stderr);
    Module *m = nnc_load_model(&arena, argv[optind], &d, &lo);
    int status = m ? train(m, &o) : 1;
    arena_free_all(&arena);
    return status;
}
