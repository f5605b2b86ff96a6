/* trainer.c - the training loop behind `nnc train` and `nnc tune`.
 *
 * Per epoch: shuffle (by seed and epoch), one compiled step per batch
 * (augmenting images first, if the data statement asks), then the eval
 * program over the validation set: loss, accuracy where the task has one,
 * and the model's metric statements. The state of the best validation epoch
 * (highest accuracy, else lowest loss) is kept and restored at the end;
 * with a patience, training stops when that many epochs bring nothing
 * better. Nothing here allocates inside the epoch loop. */
#include "cli/driver.h"
#include "cli/plot_svg.h"
#include "runtime/augment.h"
#include "runtime/checkpoint.h"
#include "runtime/nnrt.h"
#include "runtime/rng.h"
#include "support/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- evaluation ------------------------------------------------------------------------ */

static int64_t count_correct(const Trainer *L, const float *out, const RtDataset *part) {
    const Task *t = &L->task;
    if (t->kind == TASK_BINARY) {
        int64_t correct = 0;
        for (int64_t i = 0; i < part->n; i++) correct += (out[i] >= 0.5f) == (part->y[i] == 1);
        return correct;
    }
    return rt_count_correct(out, part->y, part->n, t->classes);
}

static bool has_accuracy(const Task *t) {
    const Node *o = t->output;
    if (!o || o->type.rank != 2) return false;
    if (t->kind == TASK_BINARY) return o->type.dim[1] == 1;
    return (t->kind == TASK_CLASSES || t->kind == TASK_ONEHOT) && o->type.dim[1] == t->classes;
}

Scores trainer_score(Trainer *L, const RtDataset *ds) {
    double loss = 0;
    int64_t correct = 0;
    for (int k = 0; k < L->nmetrics; k++) L->metrics[k] = 0;
    for (int64_t first = 0; first < ds->n; first += L->eval_batch) {
        int64_t count = ds->n - first < L->eval_batch ? ds->n - first : L->eval_batch;
        RtDataset part = rt_dataset_slice(ds, first, count);
        data_batch(&L->task, &part, NULL, count, L->x, L->y);
        loss += session_run(L->s, FN_EVAL, L->eval_args, count) * (double)count;
        if (has_accuracy(&L->task)) correct += count_correct(L, L->eval_args[L->first_output], &part);
        for (int k = 0; k < L->nmetrics; k++)
            L->metrics[k] += *(float *)L->eval_args[L->eval->nargs - L->nmetrics + k] * (double)count;
    }
    double n = ds->n ? (double)ds->n : 1;
    for (int k = 0; k < L->nmetrics; k++) L->metrics[k] /= n;
    return (Scores){loss / n, has_accuracy(&L->task) ? (double)correct / n : -1};
}

void trainer_print_scores(const Trainer *L, const char *set, Scores s) {
    progress_print_scores(set, s.loss, s.accuracy, L->nmetrics, (const char *const *)L->metric_names, L->metrics);
}

/* ---- setting up ------------------------------------------------------------------------ */

static bool alloc_buffers(Trainer *L) {
    const Task *t = &L->task;
    int64_t b = L->eval_batch;
    L->x = xmalloc(sizeof(float) * (size_t)(b * t->features));
    L->y = xmalloc(sizeof(float) * (size_t)(b * (t->kind == TASK_ONEHOT ? t->classes : t->tvalues)));
    L->scratch = xmalloc(sizeof(float) * (size_t)(L->data->image_h * L->data->image_w + 1));
    L->eval = L->s->prog[FN_EVAL];
    L->eval_args = xcalloc((size_t)L->eval->nargs + 1, sizeof(void *));
    L->metric_names = xcalloc((size_t)L->eval->nargs + 1, sizeof(char *));
    L->metrics = xcalloc((size_t)L->eval->nargs + 1, sizeof(double));
    L->first_output = -1;
    for (int a = 0; a < L->eval->nargs; a++) {
        const KArg *g = &L->eval->args[a];
        if (g->role == ARG_INPUT) L->eval_args[a] = L->x;
        else if (g->role == ARG_TARGET) L->eval_args[a] = L->y;
        else {
            int64_t c0, c1;
            type_numel(&g->type, &c0, &c1);
            L->eval_args[a] = xmalloc(sizeof(float) * (size_t)(c0 + c1 * b + 1));
            if (L->first_output < 0) L->first_output = a;
            if (g->metric) L->metric_names[L->nmetrics++] = g->name;
        }
    }
    return true;
}

static void free_buffers(Trainer *L) {
    if (L->eval_args)
        for (int a = 0; a < L->eval->nargs; a++)
            if (L->eval->args[a].role == ARG_OUTPUT) free(L->eval_args[a]);
    free(L->eval_args);
    free(L->metric_names);
    free(L->metrics);
    free(L->x);
    free(L->y);
    free(L->scratch);
}

static bool set_hypers(Session *s, const TrainConfig *c, Diag *d) {
    for (int k = 0; k < c->nhypers; k++) {
        float *v = session_slot(s, c->hyper_names[k]);
        if (!v) {
            diag_error(d, SPAN_NONE, "this model has no hyper-parameter '%s'", c->hyper_names[k]);
            return false;
        }
        *v = (float)c->hyper_values[k];
    }
    return true;
}

bool trainer_open(Trainer *L, Session *s, const Data *data, int64_t batch, uint64_t seed, Diag *d) {
    memset(L, 0, sizeof *L);
    L->m = s->m;
    L->s = s;
    L->data = data;
    L->seed = seed;
    if (!task_fit(L->m, data, &L->task, d)) return false;
    if (L->m->data.augment && (!data->image_h || L->task.features % (data->image_h * data->image_w) != 0)) {
        diag_error(d, L->m->data.span, "augmentation works on images; this data has none");
        return false;
    }
    L->batch = batch;
    L->eval_batch = batch > 256 ? batch : 256;
    if (!session_reserve(s, L->eval_batch) || !alloc_buffers(L)) {
        diag_error(d, SPAN_NONE, "out of memory for the workspace");
        return false;
    }
    float *spe = session_slot(s, "opt.steps_per_epoch");
    if (spe) *spe = (float)((data->train.n + batch - 1) / batch);
    session_to_device(s); /* the pretrained weights, hyper-parameters and step count */
    return true;
}

void trainer_close(Trainer *L) {
    free_buffers(L);
    memset(L, 0, sizeof *L);
}

/* ---- the loop --------------------------------------------------------------------------- */

double trainer_steps(Trainer *L, const int64_t *perm, int64_t epoch, int64_t first, int64_t count,
                     TrainProgress progress, void *ctx, int64_t *done) {
    const RtDataset *ds = &L->data->train;
    const DataSpec *spec = &L->m->data;
    bool augment = spec->augment && L->data->image_h > 0;
    int64_t plane = L->data->image_h * L->data->image_w, end = first + count;
    double total = 0;
    int64_t at;
    for (at = first; at < end; at += L->batch) {
        int64_t n = end - at < L->batch ? end - at : L->batch;
        data_batch(&L->task, ds, perm + at, n, L->x, L->y);
        if (augment)
            rt_augment(L->x, n, L->task.features / plane, L->data->image_h, L->data->image_w,
                       (spec->augment & AUG_FLIP ? RT_AUG_FLIP : 0) | (spec->augment & AUG_SHIFT ? RT_AUG_SHIFT : 0),
                       spec->shift, nnrt_mix64(L->seed ^ 0xA06u) + (uint64_t)epoch * 1000003u + (uint64_t)at,
                       L->scratch);
        void *args[] = {L->x, L->y};
        double loss = session_run(L->s, FN_TRAIN, args, n);
        total += loss * (double)n;
        if (progress && !progress(ctx, at + n - first, count, total / (double)(at + n - first), loss)) {
            at += n;
            break;
        }
    }
    if (at > end) at = end;
    if (done) *done = at - first;
    return at > first ? total / (double)(at - first) : 0;
}

/* ---- how `nnc train` reports: progress and the curves of --plot ------------------------- */

/* Training accuracy is measured in inference mode on at most this many
 * training examples after each epoch: enough for a curve, a small part of
 * an epoch's time. */
enum { TRAIN_ACC_EXAMPLES = 5000 };
/* Per-step losses beyond this many are averaged in runs of consecutive
 * steps, so a long run still makes a small file. */
enum { MAX_STEP_POINTS = 1000 };

typedef struct Report {
    Trainer *t;
    Progress progress;
    bool lines; /* human-readable notes and epoch lines */
    /* the curves for --plot (NULL without): per step, and per epoch (NAN where unknown) */
    double *step_x, *step_loss;
    int64_t nsteps, epoch, epoch_examples;
    double *epoch_x, *epoch_loss, *epoch_train_acc, *epoch_val_loss, *epoch_val_acc;
    int64_t nepochs;
} Report;

static void alloc_curves(Report *R, int64_t steps, int64_t epochs) {
    R->step_x = xmalloc(sizeof(double) * (size_t)(steps + 1));
    R->step_loss = xmalloc(sizeof(double) * (size_t)(steps + 1));
    double **per_epoch[] = {&R->epoch_x, &R->epoch_loss, &R->epoch_train_acc, &R->epoch_val_loss, &R->epoch_val_acc};
    for (size_t k = 0; k < sizeof per_epoch / sizeof per_epoch[0]; k++)
        *per_epoch[k] = xmalloc(sizeof(double) * (size_t)(epochs + 1));
}

static void free_curves(Report *R) {
    double *all[] = {R->step_x, R->step_loss, R->epoch_x, R->epoch_loss, R->epoch_train_acc, R->epoch_val_loss,
                     R->epoch_val_acc};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) free(all[k]);
}

/* After each batch: the bar, and the step's loss for the curves. */
static bool report_step(void *ctx, int64_t done, int64_t total, double mean_loss, double step_loss) {
    Report *R = ctx;
    if (R->step_loss) {
        R->step_x[R->nsteps] = (double)R->epoch + (double)done / (double)total;
        R->step_loss[R->nsteps++] = step_loss;
    }
    progress_step(&R->progress, done, mean_loss);
    return true;
}

/* The epoch's training loss and, where the task has one, its accuracy on
 * the first training examples. */
static void record_epoch(Report *R, int64_t epoch, double loss) {
    int64_t k = R->nepochs++;
    R->epoch_x[k] = (double)epoch + 1;
    R->epoch_loss[k] = loss;
    R->epoch_train_acc[k] = NAN;
    if (has_accuracy(&R->t->task)) {
        const RtDataset *train = &R->t->data->train;
        RtDataset some = rt_dataset_slice(train, 0, train->n < TRAIN_ACC_EXAMPLES ? train->n : TRAIN_ACC_EXAMPLES);
        R->epoch_train_acc[k] = trainer_score(R->t, &some).accuracy;
    }
}

static bool write_curves(Report *R, const char *path, Diag *d) {
    /* average runs of steps down to at most MAX_STEP_POINTS points */
    int64_t run = (R->nsteps + MAX_STEP_POINTS - 1) / MAX_STEP_POINTS, n = 0;
    if (run < 1) run = 1;
    for (int64_t i = 0; i < R->nsteps; i += run) {
        int64_t end = i + run < R->nsteps ? i + run : R->nsteps;
        double sum = 0;
        for (int64_t j = i; j < end; j++) sum += R->step_loss[j];
        R->step_x[n] = R->step_x[end - 1];
        R->step_loss[n++] = sum / (double)(end - i);
    }
    bool subset = R->t->data->train.n > TRAIN_ACC_EXAMPLES;
    const SvgSeries loss[] = {
        {run > 1 ? "train (per step, averaged)" : "train (per step)", R->step_x, R->step_loss, (int)n, "#6baed6",
         .thin = true},
        {"train (epoch mean)", R->epoch_x, R->epoch_loss, (int)R->nepochs, "#1f77b4", .markers = true},
        {"validation", R->epoch_x, R->epoch_val_loss, (int)R->nepochs, "#ff7f0e", .markers = true},
    };
    const SvgSeries acc[] = {
        {subset ? "train (first 5000)" : "train", R->epoch_x, R->epoch_train_acc, (int)R->nepochs, "#1f77b4",
         .markers = true},
        {"validation", R->epoch_x, R->epoch_val_acc, (int)R->nepochs, "#ff7f0e", .markers = true},
    };
    SvgChart charts[] = {
        {"Loss", "epoch", "loss", loss, 3, false},
        {"Accuracy", "epoch", "accuracy", acc, 2, true},
    };
    char title[256], err[1024];
    snprintf(title, sizeof title, "%s: training curves", R->t->m->name);
    if (!svg_write_charts(path, title, charts, has_accuracy(&R->t->task) ? 2 : 1, err, sizeof err)) {
        diag_error(d, SPAN_NONE, "%s", err);
        return false;
    }
    if (R->lines) printf("wrote %s\n", path);
    return true;
}

static int run(Trainer *L, Report *R, const TrainConfig *c, Data *data, TrainResult *r) {
    Module *m = L->m;
    const TrainSpec *ts = &m->train_spec;
    Diag d;
    diag_init(&d, m->src, stderr);
    if (!m->train) {
        diag_error(&d, SPAN_NONE, "the model has no loss statement, so it cannot be trained");
        return 1;
    }
    progress_init(&R->progress, c->quiet ? REPORT_FINAL : c->report);
    R->lines = !c->quiet && progress_lines(&R->progress);
    if (!data_load(m, c->data, c->limit, c->val, data, &L->task, &d)) return 1;
    nnrt_set_threads(c->threads);
    Session *s = session_create(m, FN_BIT(FN_TRAIN) | FN_BIT(FN_EVAL) | FN_BIT(FN_INIT), false, &d);
    if (!s) return 1;
    L->s = s; /* trainer_run destroys it, whatever fails below */
    session_init(s, c->seed);
    if (!session_load_pretrained(s, !R->lines, &d)) return 1;
    if (c->load && !session_load(s, c->load, NNRT_PARAM | NNRT_OPT_STATE | NNRT_HYPER, &d)) return 1;
    if (!set_hypers(s, c, &d)) return 1;
    /* last: it sets opt.steps_per_epoch over the initial or loaded value */
    bool ok = trainer_open(L, s, data, ts->batch, c->seed, &d);
    L->s = s;
    if (!ok) return 1;

    const RtDataset *train = &data->train, *val = &data->val;
    int64_t steps_per_epoch = (train->n + L->batch - 1) / L->batch;
    /* A resumed run goes on with the epoch (and so the shuffling) where the
     * checkpoint's step count left off. */
    const float *step = session_slot(s, "opt.step");
    int64_t first_epoch = step && steps_per_epoch ? (int64_t)*step / steps_per_epoch : 0;
    int64_t last_epoch = first_epoch + ts->epochs;

    if (R->lines) {
        int64_t nparams = 0, frozen = 0;
        for (int i = 0; i < m->nslots; i++) {
            if (m->slots[i].flags & (NF_OPT_STATE | NF_HYPER)) continue;
            nparams += m->slots[i].size;
            if (m->slots[i].flags & NF_FROZEN) frozen += m->slots[i].size;
        }
        printf("%s: %lld parameters", m->name, (long long)nparams);
        if (frozen) printf(" (%lld frozen)", (long long)frozen);
        printf(", %s(lr=%g)", optimizer_names[ts->optimizer], ts->lr);
        if (ts->schedule != SCHED_CONSTANT) printf(" with a %s schedule", schedule_names[ts->schedule]);
        printf(", batch %lld, %lld epoch%s; %lld training, %lld validation examples\n", (long long)L->batch,
               (long long)ts->epochs, ts->epochs == 1 ? "" : "s", (long long)train->n, (long long)val->n);
        printf("compiled in %.0f ms\n", s->compile_seconds * 1e3);
        fflush(stdout);
    }

    size_t state_bytes = sizeof(float) * (size_t)m->state_size;
    float *best = val->n ? xmalloc(state_bytes) : NULL;
    int64_t *perm = xmalloc(sizeof(int64_t) * (size_t)(train->n + 1));
    double best_score = -INFINITY, t_start = now_seconds();
    r->best_epoch = -1;
    if (c->plot) alloc_curves(R, steps_per_epoch * ts->epochs, ts->epochs);
    int64_t epoch;
    for (epoch = first_epoch; epoch < last_epoch; epoch++) {
        double t0 = now_seconds();
        nnrt_permutation(perm, train->n, nnrt_mix64(c->seed) + (uint64_t)epoch);
        progress_begin_epoch(&R->progress, epoch + 1, last_epoch, train->n);
        R->epoch = epoch;
        double loss = trainer_steps(L, perm, epoch, 0, train->n, report_step, R, NULL);
        double seconds = now_seconds() - t0;
        if (c->plot) record_epoch(R, epoch, loss);
        Scores v = {0, -1};
        if (val->n) v = trainer_score(L, val);
        double score = v.accuracy >= 0 ? v.accuracy : -v.loss;
        r->has_accuracy = v.accuracy >= 0;
        bool better = val->n && score > best_score;
        if (better) {
            best_score = score;
            r->best_epoch = epoch + 1;
            r->val_loss = v.loss;
            r->val_score = score;
            session_from_device(s);
            memcpy(best, s->state, state_bytes);
        }
        if (c->plot) R->epoch_val_loss[R->nepochs - 1] = val->n ? v.loss : NAN;
        if (c->plot) R->epoch_val_acc[R->nepochs - 1] = v.accuracy >= 0 ? v.accuracy : NAN;
        if (!c->quiet)
            progress_epoch(&R->progress, &(EpochStats){
                .epoch = epoch + 1, .last_epoch = last_epoch, .loss = loss, .has_val = val->n > 0,
                .val_loss = v.loss, .val_accuracy = v.accuracy, .nmetrics = L->nmetrics,
                .metric_names = L->metric_names, .metrics = L->metrics, .seconds = seconds,
                .samples_per_second = (double)train->n / (seconds > 0 ? seconds : 1e-9)});
        if (c->patience > 0 && val->n && epoch + 1 - r->best_epoch >= c->patience) {
            epoch++;
            if (R->lines) printf("stopping: no better validation score in %lld epochs\n", (long long)c->patience);
            break;
        }
    }
    r->epochs = epoch - first_epoch;
    if (best && r->best_epoch > 0 && r->best_epoch != epoch) {
        memcpy(s->state, best, state_bytes);
        session_to_device(s);
        if (R->lines) printf("kept the state of epoch %lld, the best on validation\n", (long long)r->best_epoch);
    }
    free(best);
    free(perm);

    const RtDataset *test = data->test.n ? &data->test : train;
    Scores t = trainer_score(L, test);
    r->test_loss = t.loss;
    r->test_accuracy = t.accuracy;
    r->seconds = now_seconds() - t_start;
    ThreadsReport threads;
    session_threads_report(s, &threads);
    if (!c->quiet && R->progress.style == REPORT_JSON)
        progress_result_json(test == train ? "train" : "test", t.loss, t.accuracy, L->nmetrics, L->metric_names,
                             L->metrics, test->n, r->epochs, r->best_epoch, r->seconds, &threads);
    else if (!c->quiet) {
        printf("%s", test == train ? "(no test set: scores on the training set)\n" : "");
        printf("test loss %.4f", t.loss);
        if (t.accuracy >= 0) printf("  test acc %.4f", t.accuracy);
        for (int k = 0; k < L->nmetrics; k++) printf("  test %s %.4f", L->metric_names[k], L->metrics[k]);
        printf("  (%lld examples; trained in %.1f s)\n", (long long)test->n, r->seconds);
        if (R->lines && !threads.fixed) progress_print_threads(&threads);
    }
    /* the checkpoint first: a bad --plot path must not cost the trained state */
    if (c->save) {
        if (!session_save(s, c->save, &d)) return 1;
        if (R->lines) printf("saved %s\n", c->save);
    }
    if (c->plot && !write_curves(R, c->plot, &d)) return 1;
    return 0;
}

int trainer_run(Module *m, const TrainConfig *c, TrainResult *r) {
    Trainer L = {.m = m};
    Report R = {.t = &L};
    Data data = {0};
    TrainResult ignored;
    if (!r) r = &ignored;
    memset(r, 0, sizeof *r);
    int status = run(&L, &R, c, &data, r);
    Session *s = L.s;
    free_curves(&R);
    trainer_close(&L);
    session_destroy(s);
    data_free(&data);
    return status;
}

/* ---- evaluating a checkpoint -------------------------------------------------------------- */

int trainer_evaluate(Module *m, const TrainConfig *c, const char *split) {
    Trainer L = {0};
    Data data = {0};
    Task task;
    Session *s = NULL;
    Diag d;
    diag_init(&d, m->src, stderr);
    int status = 1;
    if (!data_load(m, c->data, c->limit, c->val, &data, &task, &d)) goto done;
    const RtDataset *ds = strcmp(split, "train") == 0 ? &data.train
                        : strcmp(split, "val") == 0   ? &data.val
                                                      : &data.test;
    if (ds->n == 0) {
        diag_error(&d, SPAN_NONE, "the %s set of this data is empty", split);
        goto done;
    }
    nnrt_set_threads(c->threads);
    s = session_create(m, FN_BIT(FN_EVAL) | FN_BIT(FN_INIT), false, &d);
    if (!s) goto done;
    session_init(s, 0);
    if (!trainer_open(&L, s, &data, 1000, 0, &d)) goto done;
    if (!session_load(s, c->load, NNRT_PARAM, &d)) goto done;
    Scores sc = trainer_score(&L, ds);
    printf("%s:", c->load);
    trainer_print_scores(&L, split, sc);
    if (sc.accuracy >= 0) printf("  accuracy %.4f", sc.accuracy);
    printf("  (%lld examples)\n", (long long)ds->n);
    status = 0;
done:
    trainer_close(&L);
    session_destroy(s);
    data_free(&data);
    return status;
}
