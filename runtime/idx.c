/* idx.c - reading MNIST's IDX files through zlib (gzip or plain).
 *
 * An IDX file is a big-endian header (two zero bytes, a type code, the
 * number of dimensions, then each dimension as a 32-bit integer) followed
 * by the data. Images are unsigned bytes, scaled here to [0, 1]. */
#include "runtime/data.h"
#include "runtime/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum { IDX_UBYTE = 0x08, IDX_MAX_DIMS = 4 };

static int read_exact(gzFile f, void *buf, size_t n) {
    unsigned char *p = buf;
    while (n > 0) {
        unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int got = gzread(f, p, chunk);
        if (got <= 0) return -1;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

/* Reads an IDX file of unsigned bytes; *data is malloc'ed. */
static int read_idx(const char *path, int want_dims, int64_t *dims, unsigned char **data, char *err,
                    size_t errlen) {
    gzFile f = gzopen(path, "rb");
    if (!f) return nnrt_fail(err, errlen, "%s: %s", path, strerror(errno ? errno : ENOENT));
    unsigned char head[4];
    if (read_exact(f, head, 4) != 0) {
        gzclose(f);
        return nnrt_fail(err, errlen, "%s: not an IDX file (too short)", path);
    }
    if (head[0] != 0 || head[1] != 0 || head[2] != IDX_UBYTE || head[3] != want_dims) {
        gzclose(f);
        return nnrt_fail(err, errlen, "%s: not an IDX file of %d-dimensional unsigned bytes", path, want_dims);
    }
    int64_t total = 1;
    for (int i = 0; i < want_dims; i++) {
        unsigned char b[4];
        if (read_exact(f, b, 4) != 0) {
            gzclose(f);
            return nnrt_fail(err, errlen, "%s: truncated header", path);
        }
        dims[i] = ((int64_t)b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
        if (dims[i] <= 0 || dims[i] > (1 << 28)) {
            gzclose(f);
            return nnrt_fail(err, errlen, "%s: implausible dimension %lld", path, (long long)dims[i]);
        }
        total *= dims[i];
        if (total > ((int64_t)1 << 34)) {
            gzclose(f);
            return nnrt_fail(err, errlen, "%s: too large", path);
        }
    }
    *data = malloc((size_t)total);
    if (!*data) {
        gzclose(f);
        return nnrt_fail(err, errlen, "%s: out of memory", path);
    }
    if (read_exact(f, *data, (size_t)total) != 0) {
        free(*data);
        *data = NULL;
        gzclose(f);
        return nnrt_fail(err, errlen, "%s: truncated: expected %lld bytes of data", path, (long long)total);
    }
    gzclose(f);
    return 0;
}

int rt_idx_load(RtDataset *out, const char *images_path, const char *labels_path, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    int64_t idims[3], ldims[1];
    unsigned char *pixels = NULL, *labels = NULL;
    if (read_idx(images_path, 3, idims, &pixels, err, errlen) != 0) return -1;
    if (labels_path && read_idx(labels_path, 1, ldims, &labels, err, errlen) != 0) {
        free(pixels);
        return -1;
    }
    if (labels && ldims[0] != idims[0]) {
        free(pixels);
        free(labels);
        return nnrt_fail(err, errlen, "%s has %lld images but %s has %lld labels", images_path,
                    (long long)idims[0], labels_path, (long long)ldims[0]);
    }
    int64_t n = idims[0], features = idims[1] * idims[2];
    out->x = malloc(sizeof(float) * (size_t)(n * features));
    out->y = labels ? malloc(sizeof(int32_t) * (size_t)n) : NULL;
    if (!out->x || (labels && !out->y)) {
        free(out->x);
        free(out->y);
        free(pixels);
        free(labels);
        return nnrt_fail(err, errlen, "out of memory loading %s", images_path);
    }
    for (int64_t i = 0; i < n * features; i++) out->x[i] = (float)pixels[i] * (1.0f / 255.0f);
    int32_t maxlabel = -1;
    for (int64_t i = 0; labels && i < n; i++) {
        out->y[i] = labels[i];
        if (labels[i] > maxlabel) maxlabel = labels[i];
    }
    free(pixels);
    free(labels);
    out->n = n;
    out->features = features;
    out->rank = 2;
    out->shape[0] = idims[1];
    out->shape[1] = idims[2];
    out->nclasses = maxlabel + 1;
    out->owned = true;
    return 0;
}

int rt_mnist_load(RtDataset *out, const char *dir, const char *split, char *err, size_t errlen) {
    static const char *const suffixes[] = {"", ".gz"};
    char images[4096], labels[4096];
    for (int s = 0; s < 2; s++) {
        snprintf(images, sizeof images, "%s/%s-images-idx3-ubyte%s", dir, split, suffixes[s]);
        snprintf(labels, sizeof labels, "%s/%s-labels-idx1-ubyte%s", dir, split, suffixes[s]);
        FILE *f = fopen(images, "rb");
        if (!f) continue;
        fclose(f);
        return rt_idx_load(out, images, labels, err, errlen);
    }
    return nnrt_fail(err, errlen, "no %s-images-idx3-ubyte[.gz] in %s (install Debian's dataset-fashion-mnist, or pass --data DIR)",
                split, dir);
}

RtDataset rt_dataset_slice(const RtDataset *d, int64_t first, int64_t count) {
    RtDataset s = *d;
    if (first < 0) first = 0;
    if (first > d->n) first = d->n;
    if (count < 0 || first + count > d->n) count = d->n - first;
    s.n = count;
    s.x = d->x + first * d->features;
    s.y = d->y ? d->y + first : NULL;
    s.t = d->t ? d->t + first * d->tcols : NULL;
    s.owned = false;
    return s;
}

void rt_dataset_free(RtDataset *d) {
    if (d->owned) {
        free(d->x);
        free(d->y);
        free(d->t);
    }
    memset(d, 0, sizeof *d);
}
