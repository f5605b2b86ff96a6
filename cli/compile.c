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

bool classifier_shape(const Module *m, ClassifierShape *out, Diag *d) {
    const Graph *g = m->model;
    memset(out, 0, sizeof *out);
    int ninputs = 0, ntargets = 0;
    for (int i = 0; i < g->n; i++) {
        const Node *n = &g->nodes[i];
        if (n->op != OP_INPUT) continue;
        if (n->flags & NF_TARGET) {
            ntargets++;
            out->target = n;
        } else {
            ninputs++;
            out->input = n;
        }
    }
    if (ninputs != 1 || ntargets != 1 || out->target->type.dtype != DT_I32 || out->target->type.rank != 1 ||
        out->input->type.dtype != DT_F32) {
        diag_error(d, SPAN_NONE,
                   "this command trains classifiers: one f32 input and one target of class labels, i32[N]");
        return false;
    }
    out->features = 1;
    for (int i = 1; i < out->input->type.rank; i++) out->features *= out->input->type.dim[i];
    out->classes = (int64_t)out->target->attr[0];
    /* Without `classes`, the number of classes is the width of the first output. */
    for (int i = 0; i < g->n && !out->classes; i++)
        if ((g->nodes[i].flags & NF_OUTPUT) && g->nodes[i].type.rank == 2) out->classes = g->nodes[i].type.dim[1];
    if (out->classes < 2) {
        diag_error(d, out->target->span, "cannot tell how many classes target '%s' has; add 'classes K'",
                   out->target->name);
        return false;
    }
    /* Evaluation reads one output, the class probabilities, per example. */
    const Node *output = NULL;
    int noutputs = 0;
    for (int i = 0; i < g->n; i++)
        if (g->nodes[i].flags & NF_OUTPUT) output = &g->nodes[i], noutputs++;
    IrType want = type_tensor(DT_F32, 2, (int64_t[]){IR_BATCH, out->classes});
    if (noutputs != 1 || !type_equal(&output->type, &want)) {
        char t1[TYPE_STR_MAX], t2[TYPE_STR_MAX];
        type_str(&want, t1, sizeof t1);
        if (noutputs != 1)
            diag_error(d, SPAN_NONE,
                       "this command evaluates classifiers: one output, the class probabilities %s, but the model "
                       "has %d outputs", t1, noutputs);
        else
            diag_error(d, output->span,
                       "this command evaluates classifiers: its output must be the class probabilities %s, but "
                       "'%s' is %s", t1, output->name, type_str(&output->type, t2, sizeof t2));
        return false;
    }
    return true;
}
