/* checkpoint.c - model state to and from safetensors files (see checkpoint.h).
 *
 * The header is JSON built and parsed with cJSON. Saving writes the tensors
 * in the table's order, back to back, after a header padded with spaces to
 * a multiple of 8 bytes so that the data section starts 8-byte aligned.
 * Loading checks the entry (dtype, shape, offsets) of every tensor of the
 * table that the file holds, and reads them all into a scratch buffer
 * before copying any into the state, so a bad or truncated file leaves the
 * state as it was. */
#include "runtime/checkpoint.h"
#include "runtime/error.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* safetensors stores the header length and the floats little-endian; the
 * host's own bytes are written and read as they are. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint.c writes the host's bytes as little-endian data: a big-endian host needs byte swapping"
#endif
_Static_assert(sizeof(float) == 4, "F32 tensors are 4-byte floats");

enum {
    MAX_RANK = 4,     /* NnrtTensor.dims */
    SHAPE_SHOWN = 8,  /* dims of a file's shape kept for messages */
    SHAPE_TEXT = 256, /* room for SHAPE_SHOWN dims as text */
};

/* The reference implementation's limit: a longer header is not a checkpoint. */
#define MAX_HEADER ((uint64_t)100000000)
/* cJSON keeps numbers as doubles, exact for integers up to 2^53. */
#define MAX_JSON_INT 9007199254740992.0

/* "[784, 10]"; rank 0 is "[]", and shapes beyond SHAPE_SHOWN dims end in ", ...". */
static void format_dims(char *buf, const int64_t *dims, int rank) {
    int shown = rank < SHAPE_SHOWN ? rank : SHAPE_SHOWN;
    int at = snprintf(buf, SHAPE_TEXT, "[");
    for (int i = 0; i < shown; i++)
        at += snprintf(buf + at, (size_t)(SHAPE_TEXT - at), "%s%lld", i ? ", " : "", (long long)dims[i]);
    snprintf(buf + at, (size_t)(SHAPE_TEXT - at), "%s]", rank > shown ? ", ..." : "");
}

/* The table's own shapes are written to files and compared with theirs, so
 * they must describe exactly the floats each tensor has. */
static int check_table_entry(const NnrtTensor *t, const char *path, char *err, size_t errlen) {
    if (t->rank < 0 || t->rank > MAX_RANK)
        return nnrt_fail(err, errlen, "%s: tensor '%s' has rank %d (at most %d)", path, t->name, t->rank,
                    MAX_RANK);
    int64_t count = 1;
    bool fits = t->offset >= 0;
    for (int i = 0; i < t->rank; i++) {
        int64_t d = t->dims[i];
        fits = fits && d >= 0 && (d == 0 || count <= INT64_MAX / 4 / d);
        if (fits) count *= d;
    }
    if (!fits || count != t->size) {
        char shape[SHAPE_TEXT];
        format_dims(shape, t->dims, t->rank);
        return nnrt_fail(err, errlen, "%s: tensor '%s' of shape %s cannot hold %lld floats at offset %lld", path,
                    t->name, shape, (long long)t->size, (long long)t->offset);
    }
    return 0;
}

static int check_table(const NnrtTensor *t, int n, const char *path, char *err, size_t errlen) {
    for (int i = 0; i < n; i++)
        if (check_table_entry(&t[i], path, err, errlen) != 0) return -1;
    return 0;
}

/* ---- saving ------------------------------------------------------------------------------------- */

/* {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, or NULL when out of memory.
 * Dims and offsets count floats of a state held in memory, far below 2^53. */
static cJSON *tensor_entry(const NnrtTensor *t, int64_t begin) {
    cJSON *e = cJSON_CreateObject();
    bool ok = e && cJSON_AddStringToObject(e, "dtype", "F32");
    cJSON *shape = ok ? cJSON_AddArrayToObject(e, "shape") : NULL;
    ok = shape != NULL;
    for (int i = 0; ok && i < t->rank; i++)
        ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->dims[i]));
    cJSON *offsets = ok ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
    ok = offsets && cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)begin)) &&
         cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)(begin + 4 * t->size)));
    if (!ok) {
        cJSON_Delete(e);
        return NULL;
    }
    return e;
}

/* Adds one entry per tensor to the header `root`, data offsets following the table's order. */
static int add_tensors(cJSON *root, const NnrtTensor *t, int n, const char *path, char *err, size_t errlen) {
    int64_t begin = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(t[i].name, "__metadata__") == 0)
            return nnrt_fail(err, errlen, "%s: '__metadata__' is reserved and cannot name a tensor", path);
        if (cJSON_GetObjectItemCaseSensitive(root, t[i].name))
            return nnrt_fail(err, errlen, "%s: tensor '%s' appears twice", path, t[i].name);
        cJSON *e = tensor_entry(&t[i], begin);
        if (!e) return nnrt_fail(err, errlen, "%s: out of memory", path);
        if (!cJSON_AddItemToObject(root, t[i].name, e)) {
            cJSON_Delete(e);
            return nnrt_fail(err, errlen, "%s: out of memory", path);
        }
        begin += 4 * t[i].size;
    }
    return 0;
}

/* The header's JSON text (to be freed with cJSON_free), or NULL with a message. */
static char *header_text(const NnrtTensor *t, int n, const char *model, const char *path, char *err,
                         size_t errlen) {
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = root ? cJSON_AddObjectToObject(root, "__metadata__") : NULL;
    /* safetensors metadata maps strings to strings */
    bool ok = meta && cJSON_AddStringToObject(meta, "format", "nnc") &&
              cJSON_AddStringToObject(meta, "model", model ? model : "");
    char *text = NULL;
    if (!ok)
        nnrt_fail(err, errlen, "%s: out of memory", path);
    else if (add_tensors(root, t, n, path, err, errlen) == 0 && !(text = cJSON_PrintUnformatted(root)))
        nnrt_fail(err, errlen, "%s: out of memory", path);
    cJSON_Delete(root);
    return text;
}

/* Writes the whole file to `f` and flushes it to the disk; errno says why when it returns -1. */
static int write_contents(FILE *f, const char *json, const float *state, const NnrtTensor *t, int n) {
    static const char spaces[8] = "        ";
    size_t json_len = strlen(json);
    /* the data section starts after 8 + header bytes: a multiple of 8 keeps it aligned */
    uint64_t header_len = (json_len + 7) / 8 * 8;
    size_t pad = (size_t)header_len - json_len;
    bool ok = fwrite(&header_len, sizeof header_len, 1, f) == 1 && fwrite(json, 1, json_len, f) == json_len &&
              fwrite(spaces, 1, pad, f) == pad;
    for (int i = 0; ok && i < n; i++)
        ok = fwrite(state + t[i].offset, sizeof(float), (size_t)t[i].size, f) == (size_t)t[i].size;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    return ok ? 0 : -1;
}

/* Writes PATH.tmp.PID beside `path` and renames it over `path`: readers see the old
 * file or the complete new one, never a part. The temporary file goes on failure. */
static int write_atomically(const char *path, const char *json, const float *state, const NnrtTensor *t,
                            int n, char *err, size_t errlen) {
    size_t tmp_len = strlen(path) + 32;
    char *tmp = malloc(tmp_len);
    if (!tmp) return nnrt_fail(err, errlen, "%s: out of memory", path);
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        nnrt_fail(err, errlen, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    errno = 0;
    int rc = write_contents(f, json, state, t, n);
    int e = errno;
    if (fclose(f) != 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    if (rc != 0)
        nnrt_fail(err, errlen, "%s: writing %s failed: %s", path, tmp, strerror(e ? e : EIO));
    else if (rename(tmp, path) != 0)
        rc = nnrt_fail(err, errlen, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
    if (rc != 0) remove(tmp);
    free(tmp);
    return rc;
}

int nnrt_checkpoint_save(const float *state, const NnrtTensor *t, int n, const char *model_name,
                         const char *path, char *err, size_t errlen) {
    if (check_table(t, n, path, err, errlen) != 0) return -1;
    char *json = header_text(t, n, model_name, path, err, errlen);
    if (!json) return -1;
    int rc = write_atomically(path, json, state, t, n, err, errlen);
    cJSON_free(json);
    return rc;
}

/* ---- loading ------------------------------------------------------------------------------------ */

typedef struct Header {
    cJSON *json;
    int64_t data_start; /* file offset of the data section */
    int64_t data_len;   /* its length in bytes */
} Header;

static bool only_whitespace(const char *p, const char *end) {
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return false;
    return true;
}

/* Parses the header's n bytes of JSON text; the writer may pad it with spaces. */
static int parse_header(Header *h, const char *text, uint64_t n, const char *path, char *err, size_t errlen) {
    const char *end = NULL;
    h->json = cJSON_ParseWithLengthOpts(text, (size_t)n, &end, 0);
    if (h->json && !only_whitespace(end, text + n)) {
        cJSON_Delete(h->json);
        h->json = NULL;
        while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r') end++;
    }
    if (!h->json)
        return nnrt_fail(err, errlen, "%s: the header is not valid JSON (near byte %lld of the header)", path,
                    (long long)(end ? end - text : 0));
    if (!cJSON_IsObject(h->json)) return nnrt_fail(err, errlen, "%s: the header is not a JSON object", path);
    return 0;
}

static int read_header(FILE *f, Header *h, const char *path, char *err, size_t errlen) {
    struct stat st;
    if (fstat(fileno(f), &st) != 0) return nnrt_fail(err, errlen, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return nnrt_fail(err, errlen, "%s: not a regular file", path);
    int64_t size = st.st_size;
    uint64_t n;
    if (size < 8)
        return nnrt_fail(err, errlen, "%s: not a safetensors file (%lld bytes, too short for the header length)",
                    path, (long long)size);
    if (fread(&n, sizeof n, 1, f) != 1)
        return nnrt_fail(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    if (n > MAX_HEADER)
        return nnrt_fail(err, errlen, "%s: header length %llu is over the limit of %llu bytes", path,
                    (unsigned long long)n, (unsigned long long)MAX_HEADER);
    if (n > (uint64_t)(size - 8))
        return nnrt_fail(err, errlen,
                    "%s: header length %llu is more than the %lld bytes that follow it (truncated file?)",
                    path, (unsigned long long)n, (long long)(size - 8));
    char *text = malloc(n ? (size_t)n : 1);
    if (!text) return nnrt_fail(err, errlen, "%s: out of memory", path);
    int rc = fread(text, 1, (size_t)n, f) == n
                 ? parse_header(h, text, n, path, err, errlen)
                 : nnrt_fail(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    free(text);
    h->data_start = 8 + (int64_t)n;
    h->data_len = size - h->data_start;
    return rc;
}

/* An integer-valued JSON number, within the range where cJSON's doubles are exact. */
static bool json_int(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= -MAX_JSON_INT && d <= MAX_JSON_INT) || (double)(int64_t)d != d) return false;
    *out = (int64_t)d;
    return true;
}

/* Member `key` of tensor entry `e`, or NULL with a message. */
static const cJSON *member(const cJSON *e, const char *key, const NnrtTensor *t, const char *path, char *err,
                           size_t errlen) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, key);
    if (!m) nnrt_fail(err, errlen, "%s: tensor '%s' has no \"%s\"", path, t->name, key);
    return m;
}

static int check_dtype(const cJSON *e, const NnrtTensor *t, const char *path, char *err, size_t errlen) {
    const cJSON *d = member(e, "dtype", t, path, err, errlen);
    if (!d) return -1;
    if (!cJSON_IsString(d))
        return nnrt_fail(err, errlen, "%s: tensor '%s' has a \"dtype\" that is not a string", path, t->name);
    if (strcmp(d->valuestring, "F32") != 0)
        return nnrt_fail(err, errlen, "%s: tensor '%s' has dtype %s, but nnc reads only F32", path, t->name,
                    d->valuestring);
    return 0;
}

static int check_shape(const cJSON *e, const NnrtTensor *t, const char *path, char *err, size_t errlen) {
    const cJSON *s = member(e, "shape", t, path, err, errlen);
    if (!s) return -1;
    int64_t dims[SHAPE_SHOWN];
    int rank = 0;
    const cJSON *v;
    bool ok = cJSON_IsArray(s);
    for (v = ok ? s->child : NULL; ok && v; v = v->next, rank++) {
        int64_t d = 0;
        ok = json_int(v, &d) && d >= 0;
        if (rank < SHAPE_SHOWN) dims[rank] = d;
    }
    if (!ok)
        return nnrt_fail(err, errlen,
                    "%s: tensor '%s' has a \"shape\" that is not an array of non-negative integers", path,
                    t->name);
    bool same = rank == t->rank;
    for (int i = 0; same && i < rank; i++) same = dims[i] == t->dims[i];
    if (same) return 0;
    char want[SHAPE_TEXT], got[SHAPE_TEXT];
    format_dims(want, t->dims, t->rank);
    format_dims(got, dims, rank);
    return nnrt_fail(err, errlen, "%s: tensor '%s' has shape %s in the model but %s in the file", path, t->name,
                want, got);
}

/* Checks the entry's data_offsets against the file and the tensor's size; *begin is the first byte. */
static int check_offsets(const cJSON *e, const Header *h, const NnrtTensor *t, int64_t *begin,
                         const char *path, char *err, size_t errlen) {
    const cJSON *o = member(e, "data_offsets", t, path, err, errlen);
    if (!o) return -1;
    int64_t b, end;
    if (!cJSON_IsArray(o) || cJSON_GetArraySize(o) != 2 || !json_int(o->child, &b) ||
        !json_int(o->child->next, &end))
        return nnrt_fail(err, errlen, "%s: tensor '%s' has \"data_offsets\" that are not a pair of integers", path,
                    t->name);
    const char *name = t->name;
    long long lb = b, le = end;
    if (b < 0)
        return nnrt_fail(err, errlen,
                    "%s: tensor '%s' has data_offsets [%lld, %lld], which reach back into the header", path,
                    name, lb, le);
    if (end < b)
        return nnrt_fail(err, errlen, "%s: tensor '%s' has data_offsets [%lld, %lld], which end before they begin",
                    path, name, lb, le);
    if (end > h->data_len)
        return nnrt_fail(err, errlen,
                    "%s: tensor '%s' has data_offsets [%lld, %lld] but the data section has only %lld bytes "
                    "(truncated file?)",
                    path, name, lb, le, (long long)h->data_len);
    if (end - b != 4 * t->size)
        return nnrt_fail(
            err, errlen,
            "%s: tensor '%s' has data_offsets [%lld, %lld] (%lld bytes) but its %lld floats need %lld", path,
            name, lb, le, le - lb, (long long)t->size, (long long)(4 * t->size));
    *begin = b;
    return 0;
}

/* Finds tensor `t` in the header and checks its entry: *begin is where its bytes start in
 * the data section, or -1 when the file lacks it and its kind is not required. */
static int locate(const Header *h, const NnrtTensor *t, int required, int64_t *begin, const char *path,
                  char *err, size_t errlen) {
    *begin = -1;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(h->json, t->name);
    if (!e) {
        if (!(t->kind & required)) return 0;
        return nnrt_fail(err, errlen, "%s has no tensor '%s'%s", path, t->name,
                    t->kind == NNRT_PARAM ? "" : " (needed to resume training)");
    }
    if (!cJSON_IsObject(e))
        return nnrt_fail(err, errlen, "%s: the entry of tensor '%s' is not a JSON object", path, t->name);
    if (check_dtype(e, t, path, err, errlen) != 0 || check_shape(e, t, path, err, errlen) != 0) return -1;
    return check_offsets(e, h, t, begin, path, err, errlen);
}

/* Reads the located tensors, in table order, into buf. */
static int read_tensors(FILE *f, const Header *h, const NnrtTensor *t, int n, const int64_t *begin,
                        float *buf, const char *path, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        if (begin[i] < 0) continue;
        size_t count = (size_t)t[i].size;
        if (fseeko(f, (off_t)(h->data_start + begin[i]), SEEK_SET) != 0 ||
            fread(buf, sizeof(float), count, f) != count)
            return nnrt_fail(err, errlen, "%s: cannot read tensor '%s': %s", path, t[i].name,
                        ferror(f) ? strerror(errno) : "unexpected end of file");
        buf += count;
    }
    return 0;
}

static void copy_tensors(float *state, const NnrtTensor *t, int n, const int64_t *begin, const float *buf) {
    for (int i = 0; i < n; i++) {
        if (begin[i] < 0) continue;
        memcpy(state + t[i].offset, buf, sizeof(float) * (size_t)t[i].size);
        buf += t[i].size;
    }
}

int nnrt_checkpoint_load(float *state, const NnrtTensor *t, int n, int required, const char *path, char *err,
                         size_t errlen) {
    if (check_table(t, n, path, err, errlen) != 0) return -1;
    FILE *f = fopen(path, "rb");
    if (!f) return nnrt_fail(err, errlen, "%s: %s", path, strerror(errno));
    Header h = {0};
    float *buf = NULL;
    int64_t *begin = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    int rc = begin ? read_header(f, &h, path, err, errlen) : nnrt_fail(err, errlen, "%s: out of memory", path);
    int64_t floats = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        rc = locate(&h, &t[i], required, &begin[i], path, err, errlen);
        if (rc == 0 && begin[i] >= 0) floats += t[i].size;
    }
    if (rc == 0 && !(buf = malloc(sizeof(float) * (size_t)floats + 1)))
        rc = nnrt_fail(err, errlen, "%s: out of memory", path);
    if (rc == 0) rc = read_tensors(f, &h, t, n, begin, buf, path, err, errlen);
    if (rc == 0) copy_tensors(state, t, n, begin, buf);
    free(buf);
    free(begin);
    cJSON_Delete(h.json);
    fclose(f);
    return rc;
}
