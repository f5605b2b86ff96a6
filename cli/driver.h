/* driver.h - what the subcommands share: loading a model through the whole
 * compiler, and a model compiled in memory (a session) ready to train.
 *
 *   compile.c  .nn file -> Module (frontend + passes)
 *   session.c  Module -> JIT-compiled programs + state + workspace
 *   options.c  command-line parsing helpers */
#ifndef NNC_DRIVER_H
#define NNC_DRIVER_H

#include "backend/llvm/llvm_backend.h"
#include "ir/ir.h"
#include "ir/kir.h"
#include "passes/passes.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- compile.c ------------------------------------------------------------------ */

/* Command-line settings that override the model's `train` statement (0 or
 * a negative value keeps the model's). */
typedef struct TrainOverrides {
    double lr;
    int64_t batch, epochs;
} TrainOverrides;

typedef struct LoadOptions {
    PassOptions passes;
    TrainOverrides overrides;
} LoadOptions;

/* Reads, parses and lowers `path` and runs the pass pipeline. Errors are
 * reported to `d`; returns NULL if there were any. The Source and the
 * Module live in `arena`. */
Module *nnc_load_model(Arena *arena, const char *path, Diag *d, const LoadOptions *opts);
/* The same for text in memory; `path` names it in messages. opts may be NULL. */
Module *nnc_compile_source(Arena *arena, const char *path, const char *text, size_t len, Diag *d,
                           const LoadOptions *opts);

/* ---- build.c: ahead-of-time output -------------------------------------------------- */

typedef enum { OUT_SHARED, OUT_OBJECT, OUT_C } OutputKind;

typedef struct BuildOptions {
    const char *output;  /* the .so, .o or .c to write; the header goes beside it */
    OutputKind kind;
    const char *weights; /* OUT_C: a checkpoint whose parameters to embed, or NULL */
    const char *cpu;     /* "native" (default) or an x86-64 level */
} BuildOptions;

/* Writes the model as a library, object or C file, with its header. */
bool nnc_build(Module *m, const BuildOptions *o, Diag *d);

/* ---- session.c --------------------------------------------------------------------- */

/* The compiled programs of a module, with their state and workspace. */
typedef enum { FN_FORWARD, FN_EVAL, FN_GRAD, FN_TRAIN, FN_INIT, FN_COUNT } FnKind;
#define FN_BIT(k) (1u << (k))

typedef float (*NncFn32)(float *state, void **args, int64_t batch, void *ws, uint64_t seed);
typedef double (*NncFn64)(double *state, void **args, int64_t batch, void *ws, uint64_t seed);

typedef struct Session {
    Module *m;
    bool f64;
    NncJit *jit;
    KProgram *prog[FN_COUNT]; /* NULL for programs not compiled */
    void *fn[FN_COUNT];
    void *state;       /* m->state_size reals, 64-byte aligned */
    void *workspace;   /* large enough for `ws_batch` in every program */
    int64_t ws_batch;
    double compile_seconds;
} Session;

/* JIT-compiles the programs in `which` (FN_BIT mask). On failure reports
 * and returns NULL. */
Session *session_create(Module *m, unsigned which, bool f64, Diag *d);
void session_destroy(Session *s);

/* Fills the state with initial values (parameters from the seed's stream,
 * optimizer moments zero, hyper-parameters from the train statement). */
void session_init(Session *s, uint64_t seed);

/* Makes the workspace big enough for batches of up to `batch` examples.
 * This is the only allocation: steps themselves never allocate. */
bool session_reserve(Session *s, int64_t batch);

/* Runs program `k` on `args` (in KProgram.args order); returns its result
 * (the loss, or 0). The batch must not exceed the reserved size. */
double session_run(Session *s, FnKind k, void **args, int64_t batch);

/* The state slot called `name` as a pointer into the state, or NULL. */
void *session_slot(Session *s, const char *name);

/* Checkpoints of an f32 session (runtime/checkpoint.h). Loading needs every
 * tensor whose kind is in `required` (NNRT_PARAM, ...); on failure it
 * reports and leaves the state unchanged. */
bool session_save(Session *s, const char *path, Diag *d);
bool session_load(Session *s, const char *path, int required, Diag *d);

/* The module's state as a table for the checkpoint code. */
struct NnrtTensor *module_tensor_table(const Module *m);

/* ---- helpers for subcommands --------------------------------------------------------- */

/* The one f32 input and the one class-label target of a classifier; false
 * (with a located error) if the model has another shape. */
typedef struct ClassifierShape {
    const Node *input, *target;
    int64_t features; /* per example */
    int64_t classes;
} ClassifierShape;

bool classifier_shape(const Module *m, ClassifierShape *out, Diag *d);

/* ---- classify.c -------------------------------------------------------------------------- */
struct RtDataset;
/* Mean loss and accuracy of the eval program over a data set, in batches
 * of `batch` through the buffers xb, yb, probs (each sized for `batch`). */
void classify_evaluate(Session *s, const struct RtDataset *ds, int64_t batch, int64_t classes, float *xb,
                       int32_t *yb, float *probs, double *loss, double *accuracy);
/* False (with a message) if a label is outside [0, classes). */
bool classify_check_labels(const struct RtDataset *ds, int64_t classes, const char *what);
/* False (with a located error) if the data's examples are not the input's size. */
bool classify_check_features(const struct RtDataset *ds, const ClassifierShape *cs, Diag *d);

#endif
