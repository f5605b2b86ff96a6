/* test_checkpoint.c - checkpoints as safetensors files: round trips, the
 * exact bytes of a small file, partial loads, every error message of a bad
 * file (with the state left as it was), files laid out as other tools write
 * them, and the temporary file behind an atomic save. */
#include "runtime/checkpoint.h"

#include "check_main.h"
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

enum { ALL = NNRT_PARAM | NNRT_OPT_STATE | NNRT_HYPER };

/* A small model's state: a dense layer, a 4-D convolution kernel, one Adam
 * moment and the step counter, 23 floats in all. */
enum { NT = 5, STATE = 23 };
static const NnrtTensor model[NT] = {
    {"h.W", NNRT_PARAM, 2, {3, 2}, 0, 6},       {"h.b", NNRT_PARAM, 1, {2}, 6, 2},
    {"c.K", NNRT_PARAM, 4, {2, 1, 2, 2}, 8, 8}, {"h.W.adam_m", NNRT_OPT_STATE, 2, {3, 2}, 16, 6},
    {"step", NNRT_HYPER, 0, {0}, 22, 1},
};

static char tmpdir[64];

static void make_tmpdir(void) {
    strcpy(tmpdir, "/tmp/nnc-ckpt-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static const char *tmp(const char *name) {
    static char buf[4][sizeof tmpdir + 1 + 256]; /* a dirent name has at most 255 bytes */
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

/* Removes tmpdir and what the tests left in it (files and empty directories). */
static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 && unlink(tmp(e->d_name)) != 0)
            rmdir(tmp(e->d_name));
    closedir(d);
    rmdir(tmpdir);
}

/* Entries of tmpdir whose names contain ".tmp.": temporary files left behind. */
static int leftover_temps(void) {
    DIR *d = opendir(tmpdir);
    ck_assert_ptr_nonnull(d);
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) count += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return count;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* The length prefix of a safetensors file, read byte by byte as little-endian. */
static uint64_t header_len(const char *path) {
    unsigned char b[8];
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(b, 1, 8, f), 8);
    fclose(f);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    return n;
}

static void write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

/* A safetensors file by hand: the length prefix `header_len` (little-endian,
 * whatever the host), `header` as given, then `ndata` bytes of data. */
static void write_raw(const char *path, uint64_t header_len, const char *header, const void *data,
                      size_t ndata) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 8; i++) fputc((int)(header_len >> (8 * i)) & 0xff, f);
    fputs(header, f);
    if (ndata) fwrite(data, 1, ndata, f);
    fclose(f);
}

/* A file whose header is exactly `header`, with 24 bytes of data: room for h.W. */
static const char *bad_file(const char *header) {
    static const float zeros[6];
    const char *path = tmp("bad.safetensors");
    write_raw(path, strlen(header), header, zeros, sizeof zeros);
    return path;
}

/* Distinct values, with bit patterns that arithmetic would not keep: -0,
 * a NaN with a payload, a denormal, infinity. */
static void fill(float *s, int n, float base) {
    static const uint32_t special[] = {0x80000000u, 0x7fc12345u, 0x00000001u, 0x7f800000u};
    for (int i = 0; i < n; i++) s[i] = base + 0.37f * (float)i;
    for (int i = 0; i < 4 && 3 * i + 1 < n; i++) memcpy(&s[3 * i + 1], &special[i], sizeof(float));
}

/* Loading `path` into a state of known values fails with exactly the
 * message fmt (its %s the arguments), and leaves the state as it was. */
static void expect_load_error(const char *path, int required, const char *fmt, ...) {
    char want[512], err[512] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    float s[STATE], before[STATE];
    fill(s, STATE, 5.0f);
    memcpy(before, s, sizeof s);
    ck_assert_int_eq(nnrt_checkpoint_load(s, model, NT, required, path, err, sizeof err), -1);
    ck_assert_str_eq(err, want);
    ck_assert_mem_eq(s, before, sizeof s);
}

/* ---- saving and loading ------------------------------------------------------------------------- */

START_TEST(test_round_trip) {
    make_tmpdir();
    float s[STATE], back[STATE];
    fill(s, STATE, -3.0f);
    memset(back, 0, sizeof back);
    char err[512];
    const char *path = tmp("m.safetensors");
    ck_assert_int_eq(nnrt_checkpoint_save(s, model, NT, "m", path, err, sizeof err), 0);
    ck_assert_int_eq(nnrt_checkpoint_load(back, model, NT, ALL, path, err, sizeof err), 0);
    ck_assert_mem_eq(back, s, sizeof s); /* bitwise, the NaN's payload included */
    /* the data section starts 8-byte aligned and holds exactly the floats */
    uint64_t n = header_len(path);
    ck_assert_uint_eq(n % 8, 0);
    ck_assert_int_eq(file_size(path), (long)(8 + n + STATE * 4));
    ck_assert_int_eq(leftover_temps(), 0);
    remove_tmpdir();
}
END_TEST

/* Every byte of a small file: the length prefix, the JSON with its keys in
 * order and the spaces that align the data, then the floats little-endian. */
START_TEST(test_exact_layout) {
    make_tmpdir();
    static const NnrtTensor tiny[2] = {
        {"b", NNRT_PARAM, 1, {2}, 0, 2},
        {"step", NNRT_HYPER, 0, {0}, 2, 1},
    };
    float s[3] = {1.0f, -2.0f, 3.0f};
    char err[512];
    const char *path = tmp("tiny.safetensors");
    ck_assert_int_eq(nnrt_checkpoint_save(s, tiny, 2, "tiny", path, err, sizeof err), 0);

    static const char json[] = "{\"__metadata__\":{\"format\":\"nnc\",\"model\":\"tiny\"},"
                               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                               "\"step\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]}}";
    enum { JSON_LEN = sizeof json - 1, HEADER_LEN = 160 };
    ck_assert_int_eq(JSON_LEN, 157);
    static const unsigned char data[12] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00,
                                           0x00, 0xc0, 0x00, 0x00, 0x40, 0x40};
    unsigned char want[8 + HEADER_LEN + 12];
    memset(want, ' ', sizeof want);
    memcpy(want, (unsigned char[8]){HEADER_LEN, 0, 0, 0, 0, 0, 0, 0}, 8);
    memcpy(want + 8, json, JSON_LEN);
    memcpy(want + 8 + HEADER_LEN, data, sizeof data);

    unsigned char got[sizeof want + 1];
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(got, 1, sizeof got, f);
    fclose(f);
    ck_assert_uint_eq(n, sizeof want);
    ck_assert_mem_eq(got, want, sizeof want);
    remove_tmpdir();
}
END_TEST

/* A model without tensors still makes a valid file: the metadata alone. */
START_TEST(test_no_tensors) {
    make_tmpdir();
    char err[512];
    const char *path = tmp("empty.safetensors");
    ck_assert_int_eq(nnrt_checkpoint_save(NULL, NULL, 0, "empty", path, err, sizeof err), 0);
    ck_assert_int_eq(nnrt_checkpoint_load(NULL, NULL, 0, ALL, path, err, sizeof err), 0);
    ck_assert_int_eq(file_size(path) % 8, 0);
    remove_tmpdir();
}
END_TEST

/* With only parameters required, a file without optimizer state loads its
 * parameters and leaves the rest; tensors present are read whatever their kind. */
START_TEST(test_params_only) {
    make_tmpdir();
    float saved[STATE], s[STATE], before[STATE];
    fill(saved, STATE, 1.0f);
    fill(s, STATE, 100.0f);
    memcpy(before, s, sizeof s);
    char err[512];
    const char *path = tmp("p.safetensors");
    ck_assert_int_eq(nnrt_checkpoint_save(saved, model, 3, "m", path, err, sizeof err), 0); /* params only */
    ck_assert_int_eq(nnrt_checkpoint_load(s, model, NT, NNRT_PARAM, path, err, sizeof err), 0);
    ck_assert_mem_eq(s, saved, sizeof(float) * 16);
    ck_assert_mem_eq(s + 16, before + 16, sizeof(float) * 7);

    /* the Adam moment present, the step absent */
    fill(s, STATE, 100.0f);
    ck_assert_int_eq(nnrt_checkpoint_save(saved, model, 4, "m", path, err, sizeof err), 0);
    ck_assert_int_eq(nnrt_checkpoint_load(s, model, NT, NNRT_PARAM, path, err, sizeof err), 0);
    ck_assert_mem_eq(s, saved, sizeof(float) * 22);
    ck_assert_mem_eq(&s[22], &before[22], sizeof(float));

    /* nothing required: still everything present */
    memset(s, 0, sizeof s);
    ck_assert_int_eq(nnrt_checkpoint_save(saved, model, NT, "m", path, err, sizeof err), 0);
    ck_assert_int_eq(nnrt_checkpoint_load(s, model, NT, 0, path, err, sizeof err), 0);
    ck_assert_mem_eq(s, saved, sizeof s);
    remove_tmpdir();
}
END_TEST

START_TEST(test_missing_tensors) {
    make_tmpdir();
    float saved[STATE];
    fill(saved, STATE, 1.0f);
    char err[512];
    const char *path = tmp("p.safetensors");
    ck_assert_int_eq(nnrt_checkpoint_save(saved, model, 3, "m", path, err, sizeof err), 0);
    expect_load_error(path, ALL, "%s has no tensor 'h.W.adam_m' (needed to resume training)", path);
    ck_assert_int_eq(nnrt_checkpoint_save(saved, model, 4, "m", path, err, sizeof err), 0);
    expect_load_error(path, ALL, "%s has no tensor 'step' (needed to resume training)", path);
    ck_assert_int_eq(nnrt_checkpoint_save(saved + 6, model + 1, 2, "m", path, err, sizeof err), 0);
    expect_load_error(path, NNRT_PARAM, "%s has no tensor 'h.W'", path);
    remove_tmpdir();
}
END_TEST

/* A header as PyTorch's safetensors writer and others may lay it out:
 * tensors in another order (here the reverse of the model's, data too),
 * tensors nnc does not know (of other dtypes), JSON whitespace and padding,
 * other metadata or none at all. */
static void write_foreign(const char *path, const float *s, bool metadata) {
    char header[4096];
    int at = snprintf(header, sizeof header, "{\n");
    if (metadata)
        at +=
            snprintf(header + at, sizeof header - (size_t)at, "  \"__metadata__\": {\"format\": \"pt\"},\n");
    at += snprintf(header + at, sizeof header - (size_t)at,
                   "  \"other.F16\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [0, 4]},\n");
    float data[STATE + 1];
    int64_t begin = 4, used = 1; /* the F16 tensor's 4 bytes come first */
    for (int i = NT - 1; i >= 0; i--) {
        const NnrtTensor *t = &model[i];
        char shape[64] = "";
        for (int d = 0, n = 0; d < t->rank; d++)
            n +=
                snprintf(shape + n, sizeof shape - (size_t)n, "%s%lld", d ? ", " : "", (long long)t->dims[d]);
        at += snprintf(header + at, sizeof header - (size_t)at,
                       "  \"%s\": {\"data_offsets\": [%lld, %lld], \"shape\": [%s], \"dtype\": \"F32\"}%s\n",
                       t->name, (long long)begin, (long long)(begin + 4 * t->size), shape, i ? "," : "");
        memcpy(data + used, s + t->offset, sizeof(float) * (size_t)t->size);
        begin += 4 * t->size;
        used += t->size;
    }
    at += snprintf(header + at, sizeof header - (size_t)at, "}");
    while (at % 8 != 0) header[at++] = ' ';
    header[at] = '\0';
    data[0] = 0; /* the F16 tensor's bytes */
    write_raw(path, (uint64_t)at, header, data, sizeof data);
}

START_TEST(test_foreign_layout) {
    make_tmpdir();
    float saved[STATE], s[STATE];
    fill(saved, STATE, 2.0f);
    char err[512];
    for (int metadata = 0; metadata < 2; metadata++) {
        const char *path = tmp("pt.safetensors");
        write_foreign(path, saved, metadata);
        memset(s, 0, sizeof s);
        ck_assert_msg(nnrt_checkpoint_load(s, model, NT, ALL, path, err, sizeof err) == 0, "%s", err);
        ck_assert_mem_eq(s, saved, sizeof s);
    }
    remove_tmpdir();
}
END_TEST

/* ---- bad files ------------------------------------------------------------------------------------ */

START_TEST(test_bad_file_level) {
    make_tmpdir();
    const char *path = tmp("bad.safetensors");
    expect_load_error(path, ALL, "%s: No such file or directory", path);
    ck_assert_int_eq(mkdir(tmp("dir"), 0700), 0);
    expect_load_error(tmp("dir"), ALL, "%s: not a regular file", tmp("dir"));

    write_bytes(path, "", 0);
    expect_load_error(path, ALL, "%s: not a safetensors file (0 bytes, too short for the header length)",
                      path);
    write_bytes(path, "\x10\0\0\0\0", 5);
    expect_load_error(path, ALL, "%s: not a safetensors file (5 bytes, too short for the header length)",
                      path);

    write_raw(path, 200, "{\"h.W\": {}}", NULL, 0);
    expect_load_error(
        path, ALL, "%s: header length 200 is more than the 11 bytes that follow it (truncated file?)", path);
    write_raw(path, (uint64_t)1 << 40, "{}", NULL, 0);
    expect_load_error(path, ALL, "%s: header length 1099511627776 is over the limit of 100000000 bytes",
                      path);
    write_raw(path, 0, "", NULL, 0);
    expect_load_error(path, ALL, "%s: the header is not valid JSON (near byte 0 of the header)", path);

    path = bad_file("{\"h.W\": {\"dtype\": \"F32\",");
    expect_load_error(path, ALL, "%s: the header is not valid JSON (near byte 23 of the header)", path);
    path = bad_file("{\"h.W\": tru}");
    expect_load_error(path, ALL, "%s: the header is not valid JSON (near byte 8 of the header)", path);
    path = bad_file("{}  x");
    expect_load_error(path, ALL, "%s: the header is not valid JSON (near byte 4 of the header)", path);
    path = bad_file("[1, 2]");
    expect_load_error(path, ALL, "%s: the header is not a JSON object", path);
    remove_tmpdir();
}
END_TEST

/* Errors in the entry of h.W: only h.W is looked for (nothing is required). */
START_TEST(test_bad_entries) {
    make_tmpdir();
    const char *p;
#define ENTRY(...) bad_file("{\"h.W\": " __VA_ARGS__ "}")
    p = ENTRY("[0, 24]");
    expect_load_error(p, 0, "%s: the entry of tensor 'h.W' is not a JSON object", p);
    p = ENTRY("{\"shape\": [3, 2], \"data_offsets\": [0, 24]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has no \"dtype\"", p);
    p = ENTRY("{\"dtype\": \"F32\", \"data_offsets\": [0, 24]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has no \"shape\"", p);
    p = ENTRY("{\"dtype\": \"F32\", \"shape\": [3, 2]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has no \"data_offsets\"", p);

    p = ENTRY("{\"dtype\": 32, \"shape\": [3, 2], \"data_offsets\": [0, 24]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has a \"dtype\" that is not a string", p);
    p = ENTRY("{\"dtype\": \"F16\", \"shape\": [3, 2], \"data_offsets\": [0, 12]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has dtype F16, but nnc reads only F32", p);
    p = ENTRY("{\"dtype\": \"f32\", \"shape\": [3, 2], \"data_offsets\": [0, 24]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has dtype f32, but nnc reads only F32", p);

    static const char *const bad_shapes[] = {"\"3x2\"",    "[3, -2]", "[3, 2.5]",
                                             "[3, \"2\"]", "{}",      "[3, 1e300]"};
    for (size_t i = 0; i < sizeof bad_shapes / sizeof *bad_shapes; i++) {
        char header[256];
        snprintf(header, sizeof header,
                 "{\"h.W\": {\"dtype\": \"F32\", \"shape\": %s, \"data_offsets\": [0, 24]}}", bad_shapes[i]);
        p = bad_file(header);
        expect_load_error(
            p, 0, "%s: tensor 'h.W' has a \"shape\" that is not an array of non-negative integers", p);
    }
    p = ENTRY("{\"dtype\": \"F32\", \"shape\": [3, 4], \"data_offsets\": [0, 48]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has shape [3, 2] in the model but [3, 4] in the file", p);
    p = ENTRY("{\"dtype\": \"F32\", \"shape\": [6], \"data_offsets\": [0, 24]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has shape [3, 2] in the model but [6] in the file", p);
    p = ENTRY("{\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has shape [3, 2] in the model but [] in the file", p);
    p = ENTRY("{\"dtype\": \"F32\", \"shape\": [3, 2, 1, 1, 1, 1, 1, 1, 1, 1], \"data_offsets\": [0, 24]}");
    expect_load_error(
        p, 0, "%s: tensor 'h.W' has shape [3, 2] in the model but [3, 2, 1, 1, 1, 1, 1, 1, ...] in the file",
        p);

    static const char *const bad_offsets[] = {"[0]",         "[0, 24, 48]", "\"0-24\"",
                                              "[0, \"24\"]", "[0.5, 24]",   "null"};
    for (size_t i = 0; i < sizeof bad_offsets / sizeof *bad_offsets; i++) {
        char header[256];
        snprintf(header, sizeof header,
                 "{\"h.W\": {\"dtype\": \"F32\", \"shape\": [3, 2], \"data_offsets\": %s}}", bad_offsets[i]);
        p = bad_file(header);
        expect_load_error(p, 0, "%s: tensor 'h.W' has \"data_offsets\" that are not a pair of integers", p);
    }
    p = ENTRY("{\"dtype\": \"F32\", \"shape\": [3, 2], \"data_offsets\": [-8, 16]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has data_offsets [-8, 16], which reach back into the header",
                      p);
    p = ENTRY("{\"dtype\": \"F32\", \"shape\": [3, 2], \"data_offsets\": [24, 0]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has data_offsets [24, 0], which end before they begin", p);
    p = ENTRY("{\"dtype\": \"F32\", \"shape\": [3, 2], \"data_offsets\": [8, 32]}");
    expect_load_error(p, 0,
                      "%s: tensor 'h.W' has data_offsets [8, 32] but the data section has only 24 bytes "
                      "(truncated file?)",
                      p);
    p = ENTRY("{\"dtype\": \"F32\", \"shape\": [3, 2], \"data_offsets\": [0, 20]}");
    expect_load_error(p, 0, "%s: tensor 'h.W' has data_offsets [0, 20] (20 bytes) but its 6 floats need 24",
                      p);
#undef ENTRY
    remove_tmpdir();
}
END_TEST

/* The last tensor is the bad one, so all before it were read and checked:
 * none of them may reach the state. */
START_TEST(test_state_unchanged) {
    make_tmpdir();
    float saved[STATE];
    fill(saved, STATE, 9.0f);
    char err[512];
    const char *path = tmp("m.safetensors");
    ck_assert_int_eq(nnrt_checkpoint_save(saved, model, NT, "m", path, err, sizeof err), 0);
    /* the file cut short by one byte: step's data runs past the end */
    ck_assert_int_eq(truncate(path, file_size(path) - 1), 0);
    long data_len = STATE * 4 - 1;
    expect_load_error(path, ALL,
                      "%s: tensor 'step' has data_offsets [88, 92] but the data section has only %ld bytes "
                      "(truncated file?)",
                      path, data_len);

    /* the step saved as a vector */
    NnrtTensor other[NT];
    memcpy(other, model, sizeof other);
    other[4].rank = 1;
    other[4].dims[0] = 1;
    ck_assert_int_eq(nnrt_checkpoint_save(saved, other, NT, "m", path, err, sizeof err), 0);
    expect_load_error(path, ALL, "%s: tensor 'step' has shape [] in the model but [1] in the file", path);
    remove_tmpdir();
}
END_TEST

/* ---- saving: the table, and the temporary file ------------------------------------------------------ */

START_TEST(test_save_bad_table) {
    make_tmpdir();
    float s[STATE] = {0};
    char err[512], want[512];
    const char *path = tmp("t.safetensors");
    NnrtTensor t[2] = {{"x", NNRT_PARAM, 2, {2, 3}, 0, 5}, {"y", NNRT_PARAM, 1, {2}, 6, 2}};
    ck_assert_int_eq(nnrt_checkpoint_save(s, t, 2, "m", path, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: tensor 'x' of shape [2, 3] cannot hold 5 floats at offset 0", path);
    ck_assert_str_eq(err, want);
    ck_assert_int_eq(nnrt_checkpoint_load(s, t, 2, ALL, path, err, sizeof err), -1);
    ck_assert_str_eq(err, want);

    t[0].size = 6;
    t[1].rank = 5;
    ck_assert_int_eq(nnrt_checkpoint_save(s, t, 2, "m", path, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: tensor 'y' has rank 5 (at most 4)", path);
    ck_assert_str_eq(err, want);

    t[1] = (NnrtTensor){"x", NNRT_PARAM, 1, {2}, 6, 2};
    ck_assert_int_eq(nnrt_checkpoint_save(s, t, 2, "m", path, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: tensor 'x' appears twice", path);
    ck_assert_str_eq(err, want);

    t[1].name = "__metadata__";
    ck_assert_int_eq(nnrt_checkpoint_save(s, t, 2, "m", path, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: '__metadata__' is reserved and cannot name a tensor", path);
    ck_assert_str_eq(err, want);
    ck_assert_int_eq(file_size(path), -1);
    ck_assert_int_eq(leftover_temps(), 0);
    remove_tmpdir();
}
END_TEST

START_TEST(test_save_replaces) {
    make_tmpdir();
    float s[STATE], back[STATE];
    fill(s, STATE, 4.0f);
    char err[512];
    const char *path = tmp("m.safetensors");
    static const char older[] = "an older file, longer than the checkpoint that replaces it: "
                                "................................................................"
                                "................................................................"
                                "................................................................"
                                "................................................................"
                                "................................................................";
    write_bytes(path, older, sizeof older - 1);
    ck_assert_int_eq(nnrt_checkpoint_save(s, model, NT, "m", path, err, sizeof err), 0);
    ck_assert_int_eq(nnrt_checkpoint_load(back, model, NT, ALL, path, err, sizeof err), 0);
    ck_assert_mem_eq(back, s, sizeof s);
    /* saved again over itself: the same bytes */
    long size = file_size(path);
    ck_assert_int_eq(nnrt_checkpoint_save(s, model, NT, "m", path, err, sizeof err), 0);
    ck_assert_int_eq(file_size(path), size);
    ck_assert_int_eq(leftover_temps(), 0);
    remove_tmpdir();
}
END_TEST

START_TEST(test_save_failures_leave_no_temp) {
    make_tmpdir();
    float s[STATE] = {0};
    char err[512], want[1024];
    long pid = (long)getpid();

    const char *path = tmp("no/such/dir/m.safetensors");
    ck_assert_int_eq(nnrt_checkpoint_save(s, model, NT, "m", path, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: cannot create %s.tmp.%ld: No such file or directory", path, path, pid);
    ck_assert_str_eq(err, want);

    /* the rename fails when a directory has the name */
    path = tmp("adir");
    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_int_eq(nnrt_checkpoint_save(s, model, NT, "m", path, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: cannot rename %s.tmp.%ld to it: Is a directory", path, path, pid);
    ck_assert_str_eq(err, want);
    ck_assert_int_eq(leftover_temps(), 0);
    remove_tmpdir();
}
END_TEST

/* A write that fails half-way (here at a file-size limit) keeps the old file. */
START_TEST(test_save_write_error) {
    make_tmpdir();
    float s[STATE] = {0};
    char err[512], want[1024];
    const char *path = tmp("m.safetensors");
    write_bytes(path, "old", 3);
    struct rlimit old, small = {100, 0};
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    small.rlim_max = old.rlim_max;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN); /* fail with EFBIG rather than die */
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    int rc = nnrt_checkpoint_save(s, model, NT, "m", path, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    ck_assert_int_eq(rc, -1);
    snprintf(want, sizeof want, "%s: writing %s.tmp.%ld failed: File too large", path, path, (long)getpid());
    ck_assert_str_eq(err, want);
    ck_assert_int_eq(file_size(path), 3);
    ck_assert_int_eq(leftover_temps(), 0);
    remove_tmpdir();
}
END_TEST

int main(void) {
    Suite *s = suite_create("checkpoint");
    TCase *io = tcase_create("io");
    tcase_add_test(io, test_round_trip);
    tcase_add_test(io, test_exact_layout);
    tcase_add_test(io, test_no_tensors);
    tcase_add_test(io, test_params_only);
    tcase_add_test(io, test_missing_tensors);
    tcase_add_test(io, test_foreign_layout);
    suite_add_tcase(s, io);
    TCase *bad = tcase_create("bad_files");
    tcase_add_test(bad, test_bad_file_level);
    tcase_add_test(bad, test_bad_entries);
    tcase_add_test(bad, test_state_unchanged);
    suite_add_tcase(s, bad);
    TCase *save = tcase_create("save");
    tcase_add_test(save, test_save_bad_table);
    tcase_add_test(save, test_save_replaces);
    tcase_add_test(save, test_save_failures_leave_no_temp);
    tcase_add_test(save, test_save_write_error);
    suite_add_tcase(s, save);
    return run_suite(s);
}
