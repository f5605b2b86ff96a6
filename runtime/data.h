/* data.h - datasets in memory: loading, splitting, shuffling, batching.
 *
 * A dataset is n examples of `features` floats each (images scaled to
 * [0, 1]) and, for classification, n integer labels. Functions that can
 * fail return 0 on success and -1 with a message in `err`. */
#ifndef NNRT_DATA_H
#define NNRT_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct RtDataset {
    int64_t n;        /* examples */
    int64_t features; /* floats per example */
    int rank;         /* shape of one example as stored, e.g. 28 x 28 */
    int64_t shape[3];
    float *x;         /* n * features */
    int32_t *y;       /* n labels, or NULL */
    int32_t nclasses; /* 1 + the largest label (0 without labels) */
    float *t;         /* n * tcols real targets (CSV), or NULL */
    int64_t tcols;
    bool owned;       /* x and y belong to this dataset (not a slice) */
} RtDataset;

/* MNIST's IDX format: an images file (ubyte, 3 dims) and a labels file
 * (ubyte, 1 dim), each optionally gzip-compressed. */
int rt_idx_load(RtDataset *out, const char *images_path, const char *labels_path, char *err, size_t errlen);

/* The four files of MNIST / Fashion-MNIST in `dir`: split "train" or "t10k". */
int rt_mnist_load(RtDataset *out, const char *dir, const char *split, char *err, size_t errlen);

/* A CSV file of numbers: the first `inputs` columns of each row are the
 * example, the rest its target: real values (t, tcols), or with `labels`
 * one column of class labels (y, integers >= 0). With `header`, the first
 * line names the columns and is skipped. Errors give the line and column. */
int rt_csv_load(RtDataset *out, const char *path, bool header, int64_t inputs, bool labels, char *err,
                size_t errlen);

/* The examples whose label is one of classes[0..n), relabelled 0..n-1 in
 * that order (a copy). */
int rt_dataset_select_classes(RtDataset *out, const RtDataset *d, const int64_t *classes, int n, char *err,
                              size_t errlen);

/* Rows in the order perm[0..n) (a copy). */
int rt_dataset_permute(RtDataset *out, const RtDataset *d, const int64_t *perm, char *err, size_t errlen);

/* Examples [first, first + count) without copying. */
RtDataset rt_dataset_slice(const RtDataset *d, int64_t first, int64_t count);
void rt_dataset_free(RtDataset *d);

/* Copies the examples idx[0..count) into contiguous batch buffers. */
void rt_gather(const RtDataset *d, const int64_t *idx, int64_t count, float *x, int32_t *y);

/* Rows whose largest value is at the label (ties: the first wins). */
int64_t rt_count_correct(const float *probs, const int32_t *labels, int64_t n, int64_t classes);

#endif
