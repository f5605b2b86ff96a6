/* data.c - the data a model trains on (its `data` statement), split into
 * training, validation and test sets, and what kind of task it is.
 *
 *   fashion_mnist / idx("DIR")   train-* and t10k-* IDX files; a class subset
 *                                keeps only those classes, relabelled 0, 1, ...
 *   csv("FILE")                  one file; a fixed random `test` fraction of
 *                                its rows is the test set
 * The validation set is the last part of the training set (after --limit). */
#include "cli/driver.h"
#include "runtime/data.h"
#include "runtime/rng.h"
#include "support/util.h"

#include <libgen.h>
#include <stdlib.h>
#include <string.h>

/* A path of the .nn file's own folder, unless absolute. */
static const char *beside_model(const Module *m, const char *path, char *buf, size_t size) {
    if (path[0] == '/' || !m->src) return path;
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", m->src->path);
    snprintf(buf, size, "%s/%s", dirname(copy), path);
    return buf;
}

static bool load_idx(const Module *m, const char *dir, Data *out, Diag *d) {
    const DataSpec *ds = &m->data;
    char err[1024];
    RtDataset train, test;
    if (rt_mnist_load(&train, dir, "train", err, sizeof err) != 0) {
        diag_error(d, ds->span, "%s", err);
        return false;
    }
    if (rt_mnist_load(&test, dir, "t10k", err, sizeof err) != 0) {
        rt_dataset_free(&train);
        diag_error(d, ds->span, "%s", err);
        return false;
    }
    if (ds->nclasses) {
        RtDataset a, b;
        int ok = rt_dataset_select_classes(&a, &train, ds->classes, ds->nclasses, err, sizeof err) == 0 &&
                 rt_dataset_select_classes(&b, &test, ds->classes, ds->nclasses, err, sizeof err) == 0;
        rt_dataset_free(&train);
        rt_dataset_free(&test);
        if (!ok) {
            diag_error(d, ds->span, "%s: %s", dir, err);
            return false;
        }
        train = a;
        test = b;
    }
    out->all = train;
    out->test_storage = test;
    return true;
}

static bool load_csv(const Module *m, const char *path, const Task *task, Data *out, Diag *d) {
    const DataSpec *ds = &m->data;
    char err[1024];
    RtDataset rows;
    if (rt_csv_load(&rows, path, ds->header, task->features, task->target->type.dtype == DT_I32, err, sizeof err) != 0) {
        diag_error(d, ds->span, "%s", err);
        return false;
    }
    /* A fixed shuffle (not the training seed), so the test set is the same in every run. */
    int64_t *perm = xmalloc(sizeof(int64_t) * (size_t)(rows.n + 1));
    nnrt_permutation(perm, rows.n, 0x7e57);
    RtDataset shuffled;
    int ok = rt_dataset_permute(&shuffled, &rows, perm, err, sizeof err) == 0;
    free(perm);
    rt_dataset_free(&rows);
    if (!ok) {
        diag_error(d, ds->span, "%s", err);
        return false;
    }
    int64_t ntest = (int64_t)(ds->test_fraction * (double)shuffled.n);
    out->all = shuffled;
    out->test = rt_dataset_slice(&shuffled, shuffled.n - ntest, ntest);
    out->all.n -= ntest; /* the storage stays owned by `all` */
    out->test_in_all = true;
    return true;
}

bool task_of(const Module *m, Task *t, Diag *d) {
    const Graph *g = m->eval;
    memset(t, 0, sizeof *t);
    int ninputs = 0, ntargets = 0;
    for (int i = 0; i < g->n; i++) {
        const Node *n = &g->nodes[i];
        if (n->op != OP_INPUT) continue;
        if (n->flags & NF_TARGET) ntargets++, t->target = n;
        else ninputs++, t->input = n;
    }
    if (ninputs != 1 || ntargets != 1 || t->input->type.dtype != DT_F32) {
        diag_error(d, SPAN_NONE, "nnc trains models with one f32 input and one target (this one has %d input%s and "
                                 "%d target%s)", ninputs, ninputs == 1 ? "" : "s", ntargets, ntargets == 1 ? "" : "s");
        return false;
    }
    t->features = 1;
    for (int i = 1; i < t->input->type.rank; i++) t->features *= t->input->type.dim[i];
    t->tvalues = 1;
    for (int i = 1; i < t->target->type.rank; i++) t->tvalues *= t->target->type.dim[i];
    t->classes = (int64_t)t->target->attr[0];
    for (int i = 0; i < g->n; i++)
        if (g->nodes[i].flags & NF_OUTPUT) {
            t->output = &g->nodes[i];
            break;
        }
    return true;
}

/* How the targets of `t` come from data with or without class labels. */
static bool fit_task(Task *t, const RtDataset *all, const Module *m, Diag *d) {
    const Node *y = t->target;
    int64_t labels = m->data.nclasses ? m->data.nclasses : all->nclasses;
    if (y->type.dtype == DT_I32) {
        if (!all->y || y->type.rank != 1) {
            diag_error(d, y->span, "target '%s' holds class labels, but the data has %s", y->name,
                       all->y ? "more than one label per example" : "real-valued targets");
            return false;
        }
        t->kind = TASK_CLASSES;
        if (!t->classes) t->classes = labels;
        if (t->classes < labels) {
            diag_error(d, y->span, "target '%s' has %lld classes, but the data's labels go up to %lld", y->name,
                       (long long)t->classes, (long long)labels - 1);
            return false;
        }
        return true;
    }
    if (all->t) {
        if (all->tcols != t->tvalues) {
            diag_error(d, y->span, "target '%s' has %lld values per example, but the data has %lld target column%s",
                       y->name, (long long)t->tvalues, (long long)all->tcols, all->tcols == 1 ? "" : "s");
            return false;
        }
        t->kind = TASK_REGRESSION;
        return true;
    }
    /* real targets from class labels: 0/1 for two classes, one-hot for more */
    if (t->tvalues == 1 && labels == 2) {
        t->kind = TASK_BINARY;
        t->classes = 2;
        return true;
    }
    if (t->tvalues == labels && y->type.rank == 2) {
        t->kind = TASK_ONEHOT;
        t->classes = labels;
        return true;
    }
    diag_error(d, y->span, "target '%s' (%lld values per example) does not fit data with %lld classes: use "
                           "i32[N] labels, f32[N, 1] for two classes, or f32[N, %lld] one-hot", y->name,
               (long long)t->tvalues, (long long)labels, (long long)labels);
    return false;
}

bool task_fit(const Module *m, const Data *data, Task *t, Diag *d) {
    if (!task_of(m, t, d)) return false;
    if (data->all.features != t->features) {
        diag_error(d, t->input->span, "input '%s' has %lld values per example, but the data has %lld",
                   t->input->name, (long long)t->features, (long long)data->all.features);
        return false;
    }
    return fit_task(t, &data->all, m, d);
}

bool data_load(const Module *m, const char *override, int64_t limit, int64_t nval, Data *out, Task *task, Diag *d) {
    memset(out, 0, sizeof *out);
    if (!task_of(m, task, d)) return false;
    const DataSpec *ds = &m->data;
    char buf[4096];
    const char *where = override ? override
                      : ds->kind == DATA_FASHION_MNIST ? NNC_DEFAULT_DATA_DIR
                                                       : beside_model(m, ds->path, buf, sizeof buf);
    bool ok = ds->kind == DATA_CSV ? load_csv(m, where, task, out, d) : load_idx(m, where, out, d);
    if (!ok) return false;
    if (ds->kind != DATA_CSV) out->test = out->test_storage;
    if (!task_fit(m, out, task, d)) {
        data_free(out);
        return false;
    }
    int64_t n = limit > 0 && limit < out->all.n ? limit : out->all.n;
    if (nval < 0) nval = n / 12;
    if (nval >= n) {
        diag_error(d, SPAN_NONE, "a validation set of %lld leaves nothing to train on (%lld examples)",
                   (long long)nval, (long long)n);
        data_free(out);
        return false;
    }
    out->train = rt_dataset_slice(&out->all, 0, n - nval);
    out->val = rt_dataset_slice(&out->all, n - nval, nval);
    out->image_h = out->all.rank == 2 ? out->all.shape[0] : 0;
    out->image_w = out->all.rank == 2 ? out->all.shape[1] : 0;
    return true;
}

void data_free(Data *d) {
    rt_dataset_free(&d->all);
    if (!d->test_in_all) rt_dataset_free(&d->test_storage);
    memset(d, 0, sizeof *d);
}

void data_batch(const Task *t, const RtDataset *ds, const int64_t *idx, int64_t count, float *x, void *y) {
    for (int64_t i = 0; i < count; i++) {
        int64_t j = idx ? idx[i] : i;
        memcpy(x + i * ds->features, ds->x + j * ds->features, sizeof(float) * (size_t)ds->features);
        switch (t->kind) {
        case TASK_CLASSES: ((int32_t *)y)[i] = ds->y[j]; break;
        case TASK_BINARY: ((float *)y)[i] = (float)ds->y[j]; break;
        case TASK_ONEHOT:
            for (int64_t c = 0; c < t->classes; c++) ((float *)y)[i * t->classes + c] = (float)(c == ds->y[j]);
            break;
        case TASK_REGRESSION:
            memcpy((float *)y + i * ds->tcols, ds->t + j * ds->tcols, sizeof(float) * (size_t)ds->tcols);
            break;
        }
    }
}
