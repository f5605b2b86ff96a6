/* classify.c - what train, eval and predict share for classifiers on
 * MNIST-format data: checking labels and evaluating a whole data set. */
#include "cli/driver.h"
#include "runtime/data.h"

void classify_evaluate(Session *s, const RtDataset *ds, int64_t batch, int64_t classes, float *xb, int32_t *yb,
                       float *probs, double *loss, double *accuracy) {
    double total = 0;
    int64_t correct = 0;
    for (int64_t first = 0; first < ds->n; first += batch) {
        int64_t count = ds->n - first < batch ? ds->n - first : batch;
        RtDataset part = rt_dataset_slice(ds, first, count);
        rt_gather(&part, NULL, count, xb, yb);
        void *args[] = {xb, yb, probs};
        total += session_run(s, FN_EVAL, args, count) * (double)count;
        correct += rt_count_correct(probs, yb, count, classes);
    }
    *loss = ds->n ? total / (double)ds->n : 0;
    *accuracy = ds->n ? (double)correct / (double)ds->n : 0;
}

bool classify_check_labels(const RtDataset *ds, int64_t classes, const char *what) {
    for (int64_t i = 0; i < ds->n; i++)
        if (ds->y[i] < 0 || ds->y[i] >= classes) {
            fprintf(stderr, "nnc: error: %s example %lld has label %d, but the model has %lld classes\n", what,
                    (long long)i, ds->y[i], (long long)classes);
            return false;
        }
    return true;
}

bool classify_check_features(const RtDataset *ds, const ClassifierShape *cs, Diag *d) {
    if (ds->features == cs->features) return true;
    diag_error(d, cs->input->span, "input '%s' has %lld values per example, but the data has %lld (%lldx%lld images)",
               cs->input->name, (long long)cs->features, (long long)ds->features, (long long)ds->shape[0],
               (long long)ds->shape[1]);
    return false;
}
