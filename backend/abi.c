/* abi.c - writes a model's header and the glue that implements it (see
 * abi.h). The header is meant to be read by people: every function says
 * what its pointers hold, how big they are and who owns them. */
#include "backend/abi.h"
#include "backend/c/c_backend.h"
#include "support/util.h"

#include <ctype.h>
#include <string.h>

/* ---- names ------------------------------------------------------------------------------ */

const char *abi_program_symbol(Arena *a, const Module *m, const KProgram *p) {
    return arena_printf(a, "%s__%s", m->name, p->name);
}

/* An argument name usable as a C parameter: the .nn name, with a trailing
 * underscore when it would clash with C or with the other parameters. */
static const char *c_name(Arena *a, const char *name) {
    static const char *const reserved[] = {
        "state", "batch", "workspace", "auto", "break", "case", "char", "const", "continue", "default",
        "do", "double", "else", "enum", "extern", "float", "for", "goto", "if", "inline", "int",
        "long", "register", "restrict", "return", "short", "signed", "sizeof", "static", "struct",
        "switch", "typedef", "union", "unsigned", "void", "volatile", "while", "args", "seed", "err",
        "errlen", "path", "count",
    };
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcmp(name, reserved[i]) == 0) return arena_printf(a, "%s_", name);
    return name;
}

/* "MNIST_MLP" from "mnist_mlp". */
static const char *upper(Arena *a, const char *s) {
    char *u = arena_strdup(a, s);
    for (char *p = u; *p; p++) *p = (char)toupper((unsigned char)*p);
    return u;
}

/* Elements of one example of an argument (its type without N). */
static int64_t per_example(const IrType *t) {
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        if (t->dim[i] != IR_BATCH) n *= t->dim[i];
    return n;
}

static const char *example_shape(Arena *a, const IrType *t) {
    StrBuf sb = {0};
    sb_printf(&sb, "%s", t->dtype == DT_F32 ? "f32" : "i32");
    int shown = 0;
    for (int i = 0; i < t->rank; i++) {
        if (t->dim[i] == IR_BATCH) continue;
        sb_printf(&sb, "%s%lld", shown++ ? "," : "[", (long long)t->dim[i]);
    }
    if (shown) sb_putc(&sb, ']');
    const char *r = arena_strdup(a, sb.data ? sb.data : "");
    sb_free(&sb);
    return r;
}

/* The C parameter list of a program's arguments: "const float *x, float *probs". */
static const char *c_params(Arena *a, const KProgram *p) {
    StrBuf sb = {0};
    for (int i = 0; i < p->nargs; i++) {
        const KArg *g = &p->args[i];
        const char *type = g->role == ARG_OUTPUT ? "float *" : g->type.dtype == DT_I32 ? "const int32_t *" : "const float *";
        sb_printf(&sb, "%s%s%s", i ? ", " : "", type, c_name(a, g->name));
    }
    const char *r = arena_strdup(a, sb.data ? sb.data : "");
    sb_free(&sb);
    return r;
}

static int kind_of(uint32_t flags) {
    if (flags & NF_HYPER) return 4;
    if (flags & NF_OPT_STATE) return 2;
    return 1;
}

static int64_t param_prefix(const Module *m) {
    int64_t end = 0;
    for (int i = 0; i < m->nslots; i++)
        if (kind_of(m->slots[i].flags) == 1) end = m->slots[i].offset + m->slots[i].size;
    return end;
}

/* The workspace that every program fits, in floats: the largest of these
 * terms c0 + c1*N (*n of them, in the arena). */
static NPoly *max_workspace(const AbiModel *a, Arena *ar, int *n) {
    const KProgram *progs[] = {a->forward, a->eval, a->train};
    int total = 0;
    for (int i = 0; i < 3; i++)
        if (progs[i]) total += progs[i]->nworkspace;
    NPoly *terms = ARENA_ARRAY(ar, NPoly, total + 1);
    total = 0;
    for (int i = 0; i < 3; i++)
        for (int k = 0; progs[i] && k < progs[i]->nworkspace; k++) terms[total++] = progs[i]->workspace[k];
    *n = npoly_envelope(terms, total);
    return terms;
}

/* ---- the header ---------------------------------------------------------------------------- */

static void describe_args(FILE *out, Arena *ar, const AbiModel *a) {
    const KProgram *p = a->eval;
    fprintf(out, " * Per example, the arrays hold:\n");
    for (int i = 0; i < p->nargs; i++) {
        const KArg *g = &p->args[i];
        static const char *const roles[] = {"input", "target", "output"};
        const char *note = "";
        if (g->type.dtype == DT_I32) {
            int id = graph_find_leaf(a->m->eval, OP_INPUT, g->name);
            int64_t classes = id >= 0 ? (int64_t)a->m->eval->nodes[id].attr[0] : 0;
            note = classes ? arena_printf(ar, " (a class label in [0, %lld))", (long long)classes) : " (integers)";
        }
        fprintf(out, " *   %-10s %-7s %-14s %lld value%s%s\n", c_name(ar, g->name), roles[g->role],
                example_shape(ar, &g->type), (long long)per_example(&g->type),
                per_example(&g->type) == 1 ? "" : "s", note);
    }
}

void abi_write_header(FILE *out, const AbiModel *a) {
    const Module *m = a->m;
    Arena ar = {0};
    const char *M = upper(&ar, m->name), *n = m->name;
    fprintf(out, "/* %s.h - the C interface of the model '%s', compiled by nnc from %s.\n", n, n, a->source);
    fprintf(out, " *\n"
                 " * Every function works on memory the caller owns:\n"
                 " *   state      %s_state_size() floats: the parameters, then the optimizer's\n"
                 " *              moments and hyper-parameters. One per model instance;\n"
                 " *              %s_init (or %s_load) fills it.\n"
                 " *   workspace  %s_workspace_size(batch) bytes: scratch memory for one call on\n"
                 " *              at most `batch` examples, not kept between calls. One per\n"
                 " *              thread calling at the same time.\n"
                 " * No function allocates memory or keeps global state, so instances (states)\n"
                 " * and threads (workspaces) never interfere. Arrays are row-major; an input or\n"
                 " * output array holds `batch` examples one after the other. Arrays passed to\n"
                 " * one call must not overlap.%s\n"
                 " *\n",
            n, n, n, n,
            a->threads ? arena_printf(&ar, "\n * The one exception: the count of threads the products run on\n"
                                           " * (%s_set_threads), kept for the whole library.", n)
                       : "");
    describe_args(out, &ar, a);
    fprintf(out, " */\n#ifndef %s_H\n#define %s_H\n\n#include <stddef.h>\n#include <stdint.h>\n\n", M, M);
    fprintf(out, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");

    int64_t params = param_prefix(m);
    fprintf(out, "#define %s_STATE_SIZE %lld /* floats in the state */\n", M, (long long)m->state_size);
    fprintf(out, "#define %s_PARAM_SIZE %lld /* floats at its start that hold the parameters */\n", M,
            (long long)params);
    for (int i = 0; i < a->eval->nargs; i++) {
        const KArg *g = &a->eval->args[i];
        fprintf(out, "#define %s_%s_SIZE %lld /* values per example of %s */\n", M, upper(&ar, g->name),
                (long long)per_example(&g->type), g->name);
    }

    fprintf(out, "\n/* A tensor of the state. */\n"
                 "typedef struct %s_tensor {\n"
                 "    const char *name; /* e.g. \"h.W\", \"opt.lr\" */\n"
                 "    int kind;         /* 1 parameter, 2 optimizer moment, 4 hyper-parameter */\n"
                 "    int rank;\n"
                 "    int64_t dims[4];\n"
                 "    int64_t offset;   /* floats from the start of the state */\n"
                 "    int64_t size;     /* floats */\n"
                 "} %s_tensor;\n\n",
            n, n);

    fprintf(out, "/* Floats in the state (%s_STATE_SIZE). */\nsize_t %s_state_size(void);\n\n", M, n);
    fprintf(out, "/* Bytes of workspace for calls on up to `batch` examples. */\n"
                 "size_t %s_workspace_size(int64_t batch);\n\n", n);
    fprintf(out, "/* The tensors of the state, in order; *count receives how many there are. */\n"
                 "const %s_tensor *%s_tensors(int *count);\n\n", n, n);
    fprintf(out, "/* The tensor of the state called `name` (e.g. \"opt.lr\" to change the learning\n"
                 " * rate between steps), or NULL. */\n"
                 "float *%s_tensor_data(float *state, const char *name);\n\n", n);
    fprintf(out, "/* Fills the state: parameters drawn from nnc's counter-based generator with\n"
                 " * `seed` (the same values as `nnc train --seed`), optimizer moments zero,\n"
                 " * hyper-parameters from the model's train statement. */\n"
                 "void %s_init(float *state, uint64_t seed);\n\n", n);
    if (a->weights)
        fprintf(out, "/* %s_init, then the trained parameters embedded in this build. */\n"
                     "void %s_init_trained(float *state);\n\n", n, n);
    fprintf(out, "/* Inference on `batch` examples. */\nvoid %s_forward(const float *state, %s, int64_t batch, void *workspace);\n\n",
            n, c_params(&ar, a->forward));
    fprintf(out, "/* Inference plus the loss: fills the outputs and returns the mean loss of the\n"
                 " * batch (in inference mode, e.g. without dropout). */\n"
                 "float %s_eval(const float *state, %s, int64_t batch, void *workspace);\n\n",
            n, c_params(&ar, a->eval));
    if (a->train) {
        const TrainSpec *ts = &m->train_spec;
        fprintf(out, "/* One training step (%s) on `batch` examples: updates the state in place and\n"
                     " * returns the batch's mean loss before the update.%s */\n"
                     "float %s_train_step(float *state, %s, int64_t batch, void *workspace);\n\n",
                optimizer_names[ts->optimizer],
                ts->schedule != SCHED_CONSTANT
                    ? "\n * The learning-rate schedule counts epochs as opt.step / opt.steps_per_epoch:\n"
                      " * set \"opt.steps_per_epoch\" (see _tensor_data) to the steps in one epoch."
                    : "",
                n, c_params(&ar, a->train));
    }
    if (a->threads)
        fprintf(out, "/* The threads this library's matrix products run on, for every instance and\n"
                     " * every calling thread: n >= 1 sets the count, 0 goes back to the default,\n"
                     " * every core the process may use. Returns the count in effect. Results do not\n"
                     " * depend on it, only the time: a small model often runs fastest on one\n"
                     " * thread, a large batch on every core; `nnc bench MODEL.nn --batch N` times\n"
                     " * the model on this machine and reports the fastest count. Call it between\n"
                     " * calls of the model, not from two threads at once. */\n"
                     "int %s_set_threads(int n);\n\n", n);
    fprintf(out, "/* Checkpoints (safetensors, readable by PyTorch): 0 on success, -1 with a\n"
                 " * message in err (err may be NULL if errlen is 0). Saving writes a temporary\n"
                 " * file and renames\n"
                 " * it, so a crash never leaves a half-written checkpoint. %s_load needs every\n"
                 " * tensor of the state (to resume training exactly); %s_load_params only the\n"
                 " * parameters. A failed load leaves the state unchanged. */\n"
                 "int %s_save(const float *state, const char *path, char *err, size_t errlen);\n"
                 "int %s_load(float *state, const char *path, char *err, size_t errlen);\n"
                 "int %s_load_params(float *state, const char *path, char *err, size_t errlen);\n\n",
            n, n, n, n, n);
    fprintf(out, "#ifdef __cplusplus\n}\n#endif\n\n#endif\n");
    arena_free_all(&ar);
}

/* ---- the glue ------------------------------------------------------------------------------ */

static void write_dims(FILE *out, const IrType *t) {
    fputc('{', out);
    for (int i = 0; i < 4; i++) fprintf(out, "%s%lld", i ? ", " : "", i < t->rank ? (long long)t->dim[i] : 0LL);
    fputc('}', out);
}

static void write_tensor_table(FILE *out, const Module *m, const char *type, const char *name) {
    fprintf(out, "static const %s %s[%d] = {\n", type, name, m->nslots ? m->nslots : 1);
    for (int i = 0; i < m->nslots; i++) {
        const StateSlot *s = &m->slots[i];
        fprintf(out, "    {\"%s\", %d, %d, ", s->name, kind_of(s->flags), s->type.rank);
        write_dims(out, &s->type);
        fprintf(out, ", %lld, %lld},\n", (long long)s->offset, (long long)s->size);
    }
    if (!m->nslots) fprintf(out, "    {\"\", 0, 0, {0, 0, 0, 0}, 0, 0},\n");
    fprintf(out, "};\n\n");
}

static void write_program_call(FILE *out, Arena *ar, const Module *m, const KProgram *p, const char *ret,
                               const char *state_cast) {
    fprintf(out, "    void *args[%d] = {", p->nargs ? p->nargs : 1);
    for (int i = 0; i < p->nargs; i++) fprintf(out, "%s(void *)%s", i ? ", " : "", c_name(ar, p->args[i].name));
    if (!p->nargs) fputs("0", out);
    fprintf(out, "};\n    %s%s(%sstate, args, batch, workspace, 0);\n", ret, abi_program_symbol(ar, m, p), state_cast);
}

/* The embedded parameters: the state's parameter prefix, exactly. */
static void write_weights(FILE *out, const Module *m, const float *w) {
    int64_t n = param_prefix(m);
    fprintf(out, "/* The trained parameters: the first %lld floats of the state. */\n", (long long)n);
    fprintf(out, "static const float %s__weights[%lld] = {\n", m->name, (long long)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        if (i % 8 == 0) fputs("   ", out);
        fputc(' ', out);
        c_emit_float(out, w[i]);
        fputc(',', out);
        if (i % 8 == 7 || i == n - 1) fputc('\n', out);
    }
    if (!n) fputs("    0\n", out);
    fprintf(out, "};\n\n");
}

void abi_write_glue(FILE *out, const AbiModel *a, AbiTarget target, const char *header_name) {
    const Module *m = a->m;
    Arena ar = {0};
    const char *n = m->name, *M = upper(&ar, n);
    const char *export = target == ABI_LIBRARY ? "NNC_EXPORT " : "";
    const char *tensor_type = target == ABI_LIBRARY ? "NnrtTensor" : "nnc_tensor";
    const char *save_fn = target == ABI_LIBRARY ? "nnrt_checkpoint_save" : "nnc_save";
    const char *load_fn = target == ABI_LIBRARY ? "nnrt_checkpoint_load" : "nnc_load";

    fprintf(out, "/* ---- the interface of %s (see %s) ---- */\n\n", n, header_name);
    if (target == ABI_LIBRARY) {
        fprintf(out, "#include \"%s\"\n\n#include <string.h>\n\n", header_name);
        fprintf(out, "#if defined(__GNUC__)\n#define NNC_EXPORT __attribute__((visibility(\"default\")))\n"
                     "#else\n#define NNC_EXPORT\n#endif\n\n");
        fprintf(out, "/* From nnc's runtime (runtime/checkpoint.h), linked into this library. */\n"
                     "typedef struct NnrtTensor {\n    const char *name;\n    int kind;\n    int rank;\n"
                     "    int64_t dims[4];\n    int64_t offset, size;\n} NnrtTensor;\n"
                     "int nnrt_checkpoint_save(const float *state, const NnrtTensor *t, int n, const char *model_name,\n"
                     "                         const char *path, char *err, size_t errlen);\n"
                     "int nnrt_checkpoint_load(float *state, const NnrtTensor *t, int n, int required, const char *path,\n"
                     "                         char *err, size_t errlen);\n\n");
        if (a->threads)
            fprintf(out, "/* The runtime's thread count (runtime/nnrt.h). */\n"
                         "void nnrt_set_threads(int n);\nint nnrt_threads(void);\n\n");
        fprintf(out, "/* The compiled programs (LLVM object, hidden). */\n");
        const KProgram *progs[] = {a->forward, a->eval, a->train, a->init};
        for (int i = 0; i < 4; i++)
            if (progs[i])
                fprintf(out, "float %s(float *state, void **args, int64_t batch, void *workspace, uint64_t seed);\n",
                        abi_program_symbol(&ar, m, progs[i]));
        fputc('\n', out);
    }
    write_tensor_table(out, m, arena_printf(&ar, "%s_tensor", n), arena_printf(&ar, "%s__tensors", n));
    write_tensor_table(out, m, tensor_type, arena_printf(&ar, "%s__io_tensors", n));
    if (a->weights) write_weights(out, m, a->weights);

    int nterms;
    const NPoly *ws = max_workspace(a, &ar, &nterms);
    fprintf(out, "%ssize_t %s_state_size(void) { return %s_STATE_SIZE; }\n\n", export, n, M);
    /* the largest of the terms: regions of the workspace are shared, and
     * which term is largest depends on the batch size */
    fprintf(out, "%ssize_t %s_workspace_size(int64_t batch) {\n"
                 "    if (batch < 1) batch = 1;\n"
                 "    int64_t floats = 0;\n",
            export, n);
    for (int i = 0; i < nterms; i++) {
        const char *term = ws[i].c1 ? arena_printf(&ar, "%lld * batch + %lld", (long long)ws[i].c1, (long long)ws[i].c0)
                                    : arena_printf(&ar, "%lld", (long long)ws[i].c0);
        fprintf(out, "    if (%s > floats) floats = %s;\n", term, term);
    }
    fprintf(out, "    return (size_t)floats * sizeof(float);\n}\n\n");
    fprintf(out, "%sconst %s_tensor *%s_tensors(int *count) {\n"
                 "    if (count) *count = %d;\n    return %s__tensors;\n}\n\n",
            export, n, n, m->nslots, n);
    fprintf(out, "%sfloat *%s_tensor_data(float *state, const char *name) {\n"
                 "    for (int i = 0; i < %d; i++)\n"
                 "        if (strcmp(%s__tensors[i].name, name) == 0) return state + %s__tensors[i].offset;\n"
                 "    return 0;\n}\n\n",
            export, n, m->nslots, n, n);
    fprintf(out, "%svoid %s_init(float *state, uint64_t seed) { %s(state, 0, 0, 0, seed); }\n\n", export, n,
            abi_program_symbol(&ar, m, a->init));
    if (a->weights)
        fprintf(out, "%svoid %s_init_trained(float *state) {\n    %s_init(state, 0);\n"
                     "    memcpy(state, %s__weights, sizeof %s__weights);\n}\n\n",
                export, n, n, n, n);

    fprintf(out, "%svoid %s_forward(const float *state, %s, int64_t batch, void *workspace) {\n", export, n,
            c_params(&ar, a->forward));
    write_program_call(out, &ar, m, a->forward, "", "(float *)");
    fprintf(out, "}\n\n");
    fprintf(out, "%sfloat %s_eval(const float *state, %s, int64_t batch, void *workspace) {\n", export, n,
            c_params(&ar, a->eval));
    write_program_call(out, &ar, m, a->eval, "return ", "(float *)");
    fprintf(out, "}\n\n");
    if (a->train) {
        fprintf(out, "%sfloat %s_train_step(float *state, %s, int64_t batch, void *workspace) {\n", export, n,
                c_params(&ar, a->train));
        write_program_call(out, &ar, m, a->train, "return ", "");
        fprintf(out, "}\n\n");
    }
    if (a->threads && target == ABI_LIBRARY)
        fprintf(out, "%sint %s_set_threads(int n) {\n    nnrt_set_threads(n > 0 ? n : 0);\n"
                     "    return nnrt_threads();\n}\n\n", export, n);
    fprintf(out, "%sint %s_save(const float *state, const char *path, char *err, size_t errlen) {\n"
                 "    return %s(state, %s__io_tensors, %d, \"%s\", path, err, errlen);\n}\n\n",
            export, n, save_fn, n, m->nslots, n);
    fprintf(out, "%sint %s_load(float *state, const char *path, char *err, size_t errlen) {\n"
                 "    return %s(state, %s__io_tensors, %d, 7, path, err, errlen);\n}\n\n",
            export, n, load_fn, n, m->nslots);
    fprintf(out, "%sint %s_load_params(float *state, const char *path, char *err, size_t errlen) {\n"
                 "    return %s(state, %s__io_tensors, %d, 1, path, err, errlen);\n}\n",
            export, n, load_fn, n, m->nslots);
    arena_free_all(&ar);
}
