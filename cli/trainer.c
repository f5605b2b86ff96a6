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
#include "runtime/augment.h"
#include "runtime/checkpoint.h"
#include "runtime/nnrt.h"
#include "runtime/rng.h"
#include "support/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct Loop {
    Module *m;
    const TrainConfig *c;
    Task task;
    Data data;
    Session *s;
    int64_t batch, eval_batch;
    float *x, *scratch;
    void *y;
    /* the eval program's arguments: x, y, then its outputs and metrics */
    const KProgram *eval;
    void **eval_args;
    int first_output, nmetrics;
    const char **metric_names;
    double *metrics; /* of the last evaluate() */
} Loop;

typedef struct Scores {
    double loss, accuracy; /* accuracy < 0: none */
} Scores;

/* ---- evaluation ------------------------------------------------------------------------ */

static int64_t count_correct(const Loop *L, const float *out, const RtDataset *part) {
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

/* Loss, accuracy and the metrics (into L->metrics) over a data set. */
static Scores evaluate(Loop *L, const RtDataset *ds) {
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

static void print_scores(const Loop *L, const char *set, Scores s) {
    printf("  %s loss %.4f", set, s.loss);
    if (s.accuracy >= 0) printf("  %s acc %.4f", set, s.accuracy);
    for (int k = 0; k < L->nmetrics; k++) printf("  %s %s %.4f", set, L->metric_names[k], L->metrics[k]);
}

/* ---- setting up ------------------------------------------------------------------------ */

static bool alloc_buffers(Loop *L) {
    const Task *t = &L->task;
    int64_t b = L->eval_batch;
    L->x = xmalloc(sizeof(float) * (size_t)(b * t->features));
    L->y = xmalloc(sizeof(float) * (size_t)(b * (t->kind == TASK_ONEHOT ? t->classes : t->tvalues)));
    L->scratch = xmalloc(sizeof(float) * (size_t)(L->data.image_h * L->data.image_w + 1));
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

static void free_buffers(Loop *L) {
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

/* The parameters a pretrained statement names, loaded from its file. */
static bool load_pretrained(Loop *L, const Pretrained *p, Diag *d) {
    const Module *m = L->m;
    char path[4096];
    if (p->path[0] == '/' || !m->src) snprintf(path, sizeof path, "%s", p->path);
    else {
        const char *slash = strrchr(m->src->path, '/');
        snprintf(path, sizeof path, "%.*s%s", slash ? (int)(slash - m->src->path + 1) : 0, m->src->path, p->path);
    }
    NnrtTensor *all = module_tensor_table(m), *some = ARENA_ARRAY(m->arena, NnrtTensor, m->nslots + 1);
    int n = 0;
    for (int i = 0; i < m->nslots; i++) {
        if (all[i].kind != NNRT_PARAM) continue;
        bool wanted = p->nnames == 0;
        for (int k = 0; k < p->nnames && !wanted; k++) {
            size_t len = strlen(p->names[k]);
            wanted = strcmp(all[i].name, p->names[k]) == 0 ||
                     (strncmp(all[i].name, p->names[k], len) == 0 && all[i].name[len] == '.');
        }
        if (wanted) some[n++] = all[i];
    }
    char err[1024];
    /* Named parameters must all be there; "every param the file has" takes what it finds. */
    if (nnrt_checkpoint_load(L->s->state, some, n, p->nnames ? NNRT_PARAM : 0, path, err, sizeof err) != 0) {
        diag_error(d, p->span, "%s", err);
        return false;
    }
    if (!L->c->quiet) printf("loaded %d pretrained parameter tensor%s from %s\n", n, n == 1 ? "" : "s", path);
    return true;
}

static bool set_hypers(Loop *L, Diag *d) {
    for (int k = 0; k < L->c->nhypers; k++) {
        float *v = session_slot(L->s, L->c->hyper_names[k]);
        if (!v) {
            diag_error(d, SPAN_NONE, "this model has no hyper-parameter '%s'", L->c->hyper_names[k]);
            return false;
        }
        *v = (float)L->c->hyper_values[k];
    }
    return true;
}

/* ---- the loop --------------------------------------------------------------------------- */

static void train_epoch(Loop *L, const int64_t *perm, int64_t epoch, double *loss) {
    const RtDataset *ds = &L->data.train;
    const DataSpec *spec = &L->m->data;
    bool augment = spec->augment && L->data.image_h > 0;
    int64_t plane = L->data.image_h * L->data.image_w;
    double total = 0;
    for (int64_t first = 0; first < ds->n; first += L->batch) {
        int64_t count = ds->n - first < L->batch ? ds->n - first : L->batch;
        data_batch(&L->task, ds, perm + first, count, L->x, L->y);
        if (augment)
            rt_augment(L->x, count, L->task.features / plane, L->data.image_h, L->data.image_w,
                       (spec->augment & AUG_FLIP ? RT_AUG_FLIP : 0) | (spec->augment & AUG_SHIFT ? RT_AUG_SHIFT : 0),
                       spec->shift, nnrt_mix64(L->c->seed ^ 0xA06u) + (uint64_t)epoch * 1000003u + (uint64_t)first,
                       L->scratch);
        void *args[] = {L->x, L->y};
        total += session_run(L->s, FN_TRAIN, args, count) * (double)count;
    }
    *loss = ds->n ? total / (double)ds->n : 0;
}

static int run(Loop *L, TrainResult *r) {
    Module *m = L->m;
    const TrainConfig *c = L->c;
    const TrainSpec *ts = &m->train_spec;
    Diag d;
    diag_init(&d, m->src, stderr);
    if (!m->train) {
        diag_error(&d, SPAN_NONE, "the model has no loss statement, so it cannot be trained");
        return 1;
    }
    if (!data_load(m, c->data, c->limit, c->val, &L->data, &L->task, &d)) return 1;
    if (m->data.augment && (!L->data.image_h || L->task.features % (L->data.image_h * L->data.image_w) != 0)) {
        diag_error(&d, m->data.span, "augmentation works on images; this data has none");
        return 1;
    }
    L->batch = ts->batch;
    L->eval_batch = L->batch > 256 ? L->batch : 256;
    nnrt_set_threads(c->threads);
    L->s = session_create(m, FN_BIT(FN_TRAIN) | FN_BIT(FN_EVAL) | FN_BIT(FN_INIT), false, &d);
    if (!L->s) return 1;
    if (!session_reserve(L->s, L->eval_batch) || !alloc_buffers(L)) {
        diag_error(&d, SPAN_NONE, "out of memory for the workspace");
        return 1;
    }
    session_init(L->s, c->seed);
    for (int i = 0; i < m->npretrained; i++)
        if (!load_pretrained(L, &m->pretrained[i], &d)) return 1;
    if (c->load && !session_load(L->s, c->load, NNRT_PARAM | NNRT_OPT_STATE | NNRT_HYPER, &d)) return 1;
    if (!set_hypers(L, &d)) return 1;

    const RtDataset *train = &L->data.train, *val = &L->data.val;
    int64_t steps_per_epoch = (train->n + L->batch - 1) / L->batch;
    float *spe = session_slot(L->s, "opt.steps_per_epoch");
    if (spe) *spe = (float)steps_per_epoch;
    session_to_device(L->s); /* the pretrained weights, hyper-parameters and step count */
    /* A resumed run goes on with the epoch (and so the shuffling) where the
     * checkpoint's step count left off. */
    const float *step = session_slot(L->s, "opt.step");
    int64_t first_epoch = step && steps_per_epoch ? (int64_t)*step / steps_per_epoch : 0;
    int64_t last_epoch = first_epoch + ts->epochs;

    if (!c->quiet) {
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
        printf("compiled in %.0f ms\n", L->s->compile_seconds * 1e3);
        fflush(stdout);
    }

    size_t state_bytes = sizeof(float) * (size_t)m->state_size;
    float *best = val->n ? xmalloc(state_bytes) : NULL;
    int64_t *perm = xmalloc(sizeof(int64_t) * (size_t)(train->n + 1));
    double best_score = -INFINITY, t_start = now_seconds();
    r->best_epoch = -1;
    int64_t epoch;
    for (epoch = first_epoch; epoch < last_epoch; epoch++) {
        double t0 = now_seconds(), loss;
        nnrt_permutation(perm, train->n, nnrt_mix64(c->seed) + (uint64_t)epoch);
        train_epoch(L, perm, epoch, &loss);
        double seconds = now_seconds() - t0;
        Scores v = {0, -1};
        if (val->n) v = evaluate(L, val);
        double score = v.accuracy >= 0 ? v.accuracy : -v.loss;
        r->has_accuracy = v.accuracy >= 0;
        bool better = val->n && score > best_score;
        if (better) {
            best_score = score;
            r->best_epoch = epoch + 1;
            r->val_loss = v.loss;
            r->val_score = score;
            session_from_device(L->s);
            memcpy(best, L->s->state, state_bytes);
        }
        if (!c->quiet) {
            printf("epoch %lld/%lld  loss %.4f", (long long)epoch + 1, (long long)last_epoch, loss);
            if (val->n) print_scores(L, "val", v);
            printf("  %.1f s  %.0f samples/s\n", seconds, (double)train->n / (seconds > 0 ? seconds : 1e-9));
            fflush(stdout);
        }
        if (c->patience > 0 && val->n && epoch + 1 - r->best_epoch >= c->patience) {
            epoch++;
            if (!c->quiet) printf("stopping: no better validation score in %lld epochs\n", (long long)c->patience);
            break;
        }
    }
    r->epochs = epoch - first_epoch;
    if (best && r->best_epoch > 0 && r->best_epoch != epoch) {
        memcpy(L->s->state, best, state_bytes);
        session_to_device(L->s);
        if (!c->quiet) printf("kept the state of epoch %lld, the best on validation\n", (long long)r->best_epoch);
    }
    free(best);
    free(perm);

    const RtDataset *test = L->data.test.n ? &L->data.test : train;
    Scores t = evaluate(L, test);
    r->test_loss = t.loss;
    r->test_accuracy = t.accuracy;
    r->seconds = now_seconds() - t_start;
    if (!c->quiet) {
        printf("%s", test == train ? "(no test set: scores on the training set)\n" : "");
        printf("test loss %.4f", t.loss);
        if (t.accuracy >= 0) printf("  test acc %.4f", t.accuracy);
        for (int k = 0; k < L->nmetrics; k++) printf("  test %s %.4f", L->metric_names[k], L->metrics[k]);
        printf("  (%lld examples; trained in %.1f s)\n", (long long)test->n, r->seconds);
    }
    if (c->save) {
        if (!session_save(L->s, c->save, &d)) return 1;
        if (!c->quiet) printf("saved %s\n", c->save);
    }
    return 0;
}

int trainer_run(Module *m, const TrainConfig *c, TrainResult *r) {
    Loop L = {.m = m, .c = c};
    TrainResult ignored;
    if (!r) r = &ignored;
    memset(r, 0, sizeof *r);
    int status = run(&L, r);
    free_buffers(&L);
    session_destroy(L.s);
    data_free(&L.data);
    return status;
}

/* ---- evaluating a checkpoint -------------------------------------------------------------- */

int trainer_evaluate(Module *m, const TrainConfig *c, const char *split) {
    Loop L = {.m = m, .c = c};
    Diag d;
    diag_init(&d, m->src, stderr);
    int status = 1;
    if (!data_load(m, c->data, c->limit, c->val, &L.data, &L.task, &d)) goto done;
    const RtDataset *ds = strcmp(split, "train") == 0 ? &L.data.train
                        : strcmp(split, "val") == 0   ? &L.data.val
                                                      : &L.data.test;
    if (ds->n == 0) {
        diag_error(&d, SPAN_NONE, "the %s set of this data is empty", split);
        goto done;
    }
    L.batch = L.eval_batch = 1000;
    nnrt_set_threads(c->threads);
    L.s = session_create(m, FN_BIT(FN_EVAL) | FN_BIT(FN_INIT), false, &d);
    if (!L.s || !session_reserve(L.s, L.eval_batch) || !alloc_buffers(&L)) goto done;
    session_init(L.s, 0);
    if (!session_load(L.s, c->load, NNRT_PARAM, &d)) goto done;
    Scores s = evaluate(&L, ds);
    printf("%s:", c->load);
    print_scores(&L, split, s);
    if (s.accuracy >= 0) printf("  accuracy %.4f", s.accuracy);
    printf("  (%lld examples)\n", (long long)ds->n);
    status = 0;
done:
    free_buffers(&L);
    session_destroy(L.s);
    data_free(&L.data);
    return status;
}
