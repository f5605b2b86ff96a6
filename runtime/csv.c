/* csv.c - numeric CSV files: one example per row, inputs then targets.
 *
 * Fields are separated by commas (spaces around them are ignored), lines by
 * \n or \r\n; blank lines and lines starting with '#' are skipped. Every
 * row has the first row's number of fields. */
#include "runtime/data.h"
#include "runtime/error.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growable array of floats. */
typedef struct Floats {
    float *v;
    size_t n, cap;
} Floats;

static int push(Floats *f, float x) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4096;
        float *v = realloc(f->v, sizeof(float) * cap);
        if (!v) return -1;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = x;
    return 0;
}

static char *read_all(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        nnrt_fail(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, cap * 2 + 1);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf) {
        nnrt_fail(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

int rt_csv_load(RtDataset *out, const char *path, bool header, int64_t inputs, bool labels, char *err,
                size_t errlen) {
    memset(out, 0, sizeof *out);
    size_t len;
    char *text = read_all(path, &len, err, errlen);
    if (!text) return -1;
    Floats cells = {0};
    int64_t cols = -1, rows = 0, line = 0;
    bool skipped_header = !header;
    int status = -1;
    for (char *p = text; *p;) {
        line++;
        char *end = strchr(p, '\n');
        char *next = end ? end + 1 : p + strlen(p);
        if (end) *end = 0;
        if (end && end > p && end[-1] == '\r') end[-1] = 0;
        char *q = p;
        while (*q == ' ' || *q == '\t') q++;
        if (*q == 0 || *q == '#') {
            p = next;
            continue;
        }
        if (!skipped_header) {
            skipped_header = true;
            p = next;
            continue;
        }
        int64_t fields = 0;
        for (char *f = p;;) {
            char *stop;
            errno = 0;
            double v = strtod(f, &stop);
            char *after = stop;
            while (*after == ' ' || *after == '\t') after++;
            if (stop == f || (*after != ',' && *after != 0) || errno == ERANGE || !isfinite(v)) {
                while (*f == ' ' || *f == '\t') f++;
                size_t w = strcspn(f, ",");
                nnrt_fail(err, errlen, "%s:%lld:%lld: not a number: '%.*s'", path, (long long)line,
                     (long long)(f - p + 1), (int)(w > 40 ? 40 : w), f);
                goto done;
            }
            if (push(&cells, (float)v) != 0) {
                nnrt_fail(err, errlen, "%s: out of memory", path);
                goto done;
            }
            fields++;
            if (*after == 0) break;
            f = after + 1;
        }
        if (cols < 0) cols = fields;
        else if (fields != cols) {
            nnrt_fail(err, errlen, "%s:%lld: %lld fields, but the first row has %lld", path, (long long)line,
                 (long long)fields, (long long)cols);
            goto done;
        }
        rows++;
        p = next;
    }
    if (rows == 0) {
        nnrt_fail(err, errlen, "%s: no rows of data", path);
        goto done;
    }
    int64_t targets = cols - inputs;
    if (targets < 1 || (labels && targets != 1)) {
        nnrt_fail(err, errlen, "%s has %lld columns, but the model takes %lld input%s and %s", path, (long long)cols,
             (long long)inputs, inputs == 1 ? "" : "s", labels ? "one column of class labels" : "at least one target");
        goto done;
    }
    out->n = rows;
    out->features = inputs;
    out->rank = 1;
    out->shape[0] = inputs;
    out->owned = true;
    out->x = malloc(sizeof(float) * (size_t)(rows * inputs + 1));
    if (labels) out->y = malloc(sizeof(int32_t) * (size_t)rows);
    else out->t = malloc(sizeof(float) * (size_t)(rows * targets));
    out->tcols = labels ? 0 : targets;
    if (!out->x || (labels ? !out->y : !out->t)) {
        rt_dataset_free(out);
        nnrt_fail(err, errlen, "%s: out of memory", path);
        goto done;
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *row = cells.v + r * cols;
        memcpy(out->x + r * inputs, row, sizeof(float) * (size_t)inputs);
        if (!labels) {
            memcpy(out->t + r * targets, row + inputs, sizeof(float) * (size_t)targets);
            continue;
        }
        float label = row[inputs];
        if (label < 0 || label != floorf(label) || label > 1e6f) {
            rt_dataset_free(out);
            nnrt_fail(err, errlen, "%s: row %lld: the class label %g is not a whole number >= 0", path, (long long)r + 1,
                 (double)label);
            goto done;
        }
        out->y[r] = (int32_t)label;
        if (out->y[r] + 1 > out->nclasses) out->nclasses = out->y[r] + 1;
    }
    status = 0;
done:
    free(cells.v);
    free(text);
    return status;
}
