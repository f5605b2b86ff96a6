/* compile.c - a .nn file through the frontend and the pass pipeline. */
#include "cli/driver.h"
#include "frontend/frontend.h"
#include "support/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The default model name: the file's stem, made into an identifier. */
static const char *name_from_path(Arena *a, const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strcspn(base, ".");
    char *name = arena_strndup(a, base, n ? n : strlen(base));
    for (char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) *p = '_';
    if (!*name || (*name >= '0' && *name <= '9')) return arena_printf(a, "m_%s", name);
    return name;
}

Module *nnc_load_model(Arena *arena, const char *path, Diag *d, const LoadOptions *opts) {
    size_t len;
    char *text = read_file(path, &len);
    if (!text) {
        diag_error(d, SPAN_NONE, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    if (len > (1u << 28)) {
        free(text);
        diag_error(d, SPAN_NONE, "%s is too large to be a model", path);
        return NULL;
    }
    Module *m = nnc_compile_source(arena, path, text, len, d, opts);
    free(text);
    return m;
}

Module *nnc_compile_source(Arena *arena, const char *path, const char *text, size_t len, Diag *d,
                           const LoadOptions *opts) {
    static const LoadOptions defaults;
    if (!opts) opts = &defaults;
    Source *src = ARENA_NEW(arena, Source);
    src->path = arena_strdup(arena, path);
    src->text = arena_strndup(arena, text, len);
    src->len = (int32_t)len;
    d->src = src;

    Module *m = module_new(arena, src);
    m->name = name_from_path(arena, path);
    Program *prog = parse_program(arena, src, d);
    if (d->nerrors) return NULL;
    if (!lower_program(m, prog, d)) return NULL;

    const TrainOverrides *o = &opts->overrides;
    if (o->lr > 0) m->train_spec.lr = o->lr;
    if (o->batch > 0) m->train_spec.batch = o->batch;
    if (o->epochs > 0) m->train_spec.epochs = o->epochs;

    if (!run_pipeline(m, d, &opts->passes)) return NULL;
    return m;
}
