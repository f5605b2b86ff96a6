/* data.c - batching. */
#include "runtime/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rt_gather(const RtDataset *d, const int64_t *idx, int64_t count, float *x, int32_t *y) {
    size_t row = sizeof(float) * (size_t)d->features;
    for (int64_t i = 0; i < count; i++) {
        int64_t j = idx ? idx[i] : i;
        memcpy(x + i * d->features, d->x + j * d->features, row);
        if (y && d->y) y[i] = d->y[j];
    }
}

/* A dataset with room for n examples shaped like d. */
static int alloc_like(RtDataset *out, const RtDataset *d, int64_t n, char *err, size_t errlen) {
    *out = *d;
    out->n = n;
    out->owned = true;
    out->x = malloc(sizeof(float) * (size_t)(n * d->features + 1));
    out->y = d->y ? malloc(sizeof(int32_t) * (size_t)(n + 1)) : NULL;
    out->t = d->t ? malloc(sizeof(float) * (size_t)(n * d->tcols + 1)) : NULL;
    if (!out->x || (d->y && !out->y) || (d->t && !out->t)) {
        free(out->x);
        free(out->y);
        free(out->t);
        memset(out, 0, sizeof *out);
        snprintf(err, errlen, "out of memory for %lld examples", (long long)n);
        return -1;
    }
    return 0;
}

static void copy_example(RtDataset *out, int64_t to, const RtDataset *d, int64_t from) {
    memcpy(out->x + to * d->features, d->x + from * d->features, sizeof(float) * (size_t)d->features);
    if (d->y) out->y[to] = d->y[from];
    if (d->t) memcpy(out->t + to * d->tcols, d->t + from * d->tcols, sizeof(float) * (size_t)d->tcols);
}

int rt_dataset_select_classes(RtDataset *out, const RtDataset *d, const int64_t *classes, int n, char *err,
                              size_t errlen) {
    if (!d->y) {
        snprintf(err, errlen, "the data has no class labels to select from");
        return -1;
    }
    int32_t relabel[256];
    for (int c = 0; c < 256; c++) relabel[c] = -1;
    for (int i = 0; i < n; i++) {
        if (classes[i] < 0 || classes[i] >= 256 || classes[i] >= d->nclasses) {
            snprintf(err, errlen, "class %lld is not in the data (its labels are 0 to %d)", (long long)classes[i],
                     d->nclasses - 1);
            return -1;
        }
        relabel[classes[i]] = i;
    }
    int64_t kept = 0;
    for (int64_t i = 0; i < d->n; i++) kept += d->y[i] >= 0 && d->y[i] < 256 && relabel[d->y[i]] >= 0;
    if (alloc_like(out, d, kept, err, errlen) != 0) return -1;
    int64_t k = 0;
    for (int64_t i = 0; i < d->n; i++) {
        if (d->y[i] < 0 || d->y[i] >= 256 || relabel[d->y[i]] < 0) continue;
        copy_example(out, k, d, i);
        out->y[k++] = relabel[d->y[i]];
    }
    out->nclasses = n;
    return 0;
}

int rt_dataset_permute(RtDataset *out, const RtDataset *d, const int64_t *perm, char *err, size_t errlen) {
    if (alloc_like(out, d, d->n, err, errlen) != 0) return -1;
    for (int64_t i = 0; i < d->n; i++) copy_example(out, i, d, perm[i]);
    return 0;
}
