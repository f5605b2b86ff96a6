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

/* ---- helpers for subcommands --------------------------------------------------------- */

/* The one f32 input and the one class-label target of a classifier; false
 * (with a located error) if the model has another shape. */
typedef struct ClassifierShape {
    const Node *input, *target;
    int64_t features; /* per example */
    int64_t classes;
} ClassifierShape;

bool classifier_shape(const Module *m, ClassifierShape *out, Diag *d);

#endif
