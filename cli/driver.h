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

typedef struct CudaSession CudaSession;

/* The thread count for one program at one batch size (threads.c), chosen
 * by timing it at each candidate count. */
enum { MAX_THREAD_CANDIDATES = 8, MAX_THREAD_CHOICES = 16 };
typedef struct ThreadChoice {
    FnKind k;
    const char *program; /* its name: "train_step", ... */
    int64_t batch;
    int threads;       /* the fastest count; 0 until chosen */
    int64_t calls;     /* calls before the choice, and their time (the first call left out) */
    double seconds;
    double choose_seconds; /* what choosing took, every time */
    int choices;       /* times chosen */
    int64_t since, rechoose; /* calls since the last choice; choose again after this many */
    bool kept;         /* chosen for good (asked for, or a single core) */
    int ncandidates;
    int candidates[MAX_THREAD_CANDIDATES];
    double candidate_seconds[MAX_THREAD_CANDIDATES]; /* per call: the best of the timed runs */
} ThreadChoice;

typedef struct Session {
    Module *m;
    CudaSession *dev;  /* --device cuda: the programs run there (session_cuda.c) */
    bool f64;
    NncJit *jit;
    KProgram *prog[FN_COUNT]; /* NULL for programs not compiled */
    void *fn[FN_COUNT];
    void *state;       /* m->state_size reals, 64-byte aligned */
    void *workspace;   /* large enough for `ws_batch` in every program */
    int64_t ws_batch;
    double compile_seconds;  /* from the IR to native code, all of it */
    double llvm_seconds;     /* of which LLVM's optimisation and instruction selection */
    double link_seconds;     /* and of which linking the objects into the process */
    int compile_parts;       /* the parts LLVM compiled at the same time, one a thread */
    ThreadChoice choices[MAX_THREAD_CHOICES]; /* unless --threads fixed the count */
    int nchoices;
} Session;

/* JIT-compiles the programs in `which` (FN_BIT mask). On failure reports
 * and returns NULL. */
Session *session_create(Module *m, unsigned which, bool f64, Diag *d);
void session_destroy(Session *s);

/* Fills the state with initial values (parameters from the seed's stream,
 * optimizer moments zero, hyper-parameters from the train statement). */
void session_init(Session *s, uint64_t seed);

/* Makes the workspace big enough for batches of up to `batch` examples.
 * This is the only allocation: steps themselves never allocate (but for the
 * copy of the state that choosing a thread count times its calls on, now
 * and then, without --threads; see threads.c). */
bool session_reserve(Session *s, int64_t batch);

/* Runs program `k` on `args` (in KProgram.args order); returns its result
 * (the loss, or 0). The batch must not exceed the reserved size. Unless
 * the thread count is fixed (--threads), it runs on the count threads.c
 * chose for k at this batch size. */
double session_run(Session *s, FnKind k, void **args, int64_t batch);
/* Program k called on `state` (the session's or a copy), on the threads in
 * effect: what session_run does once it has set them. */
double session_call(Session *s, FnKind k, void *state, void **args, int64_t batch);

/* On a device the device's copy of the state is the one the programs use:
 * session_from_device brings s->state up to date before the host reads it,
 * session_to_device sends it back after the host changed it (no-ops on the
 * CPU). session_init, session_load and session_save do so themselves. */
void session_from_device(Session *s);
void session_to_device(Session *s);

/* The state slot called `name` as a pointer into the state, or NULL. */
void *session_slot(Session *s, const char *name);

/* Checkpoints of an f32 session (runtime/checkpoint.h). Loading needs every
 * tensor whose kind is in `required` (NNRT_PARAM, ...); on failure it
 * reports and leaves the state unchanged. */
bool session_save(Session *s, const char *path, Diag *d);
bool session_load(Session *s, const char *path, int required, Diag *d);

/* Loads the parameters the module's pretrained statements name (after
 * session_init); says what it loaded unless quiet. */
bool session_load_pretrained(Session *s, bool quiet, Diag *d);

/* The module's state as a table for the checkpoint code. */
struct NnrtTensor *module_tensor_table(const Module *m);

/* ---- threads.c: the thread count of each program and batch size ----------------------------
 *
 * Without --threads, a session picks the count for each program at each
 * batch size by timing it: the first calls run on every core, as many as
 * make choosing cost a small part of the time spent in them (or at once,
 * session_choose_threads); then a few calls on a copy of the state at 1, 2,
 * 4, ... threads and every core, and the fastest count is kept, to be
 * chosen again later, less and less often (not after session_choose_
 * threads). Results do not depend on the count (the products split into
 * whole rows or columns), so the choice changes only the time. */

/* The threads compiled programs are made for: --threads N, or every core. */
int threads_for_programs(void);
/* The slices a training step of m may cut its batch into (passes/slice.c). */
int train_slices(const Module *m);
/* session_run's work without a fixed count: sets the count for (k, batch),
 * choosing it when its time has come, then calls k. */
double threads_run(Session *s, FnKind k, void **args, int64_t batch);
/* Chooses the count for (k, batch) now, timing calls on `args` (on a copy of
 * the state: the session's state is untouched). Returns the choice, or NULL
 * where the count is fixed, the program runs on a device, or the session
 * already holds MAX_THREAD_CHOICES choices. */
const ThreadChoice *session_choose_threads(Session *s, FnKind k, void **args, int64_t batch);
/* The choice made for (k, batch), or NULL if there is none (yet). */
const ThreadChoice *session_thread_choice(const Session *s, FnKind k, int64_t batch);

/* ---- session_cuda.c (NNC_CUDA builds): the device side of a session ------------------------- */
bool cuda_session_create(Session *s, bool tf32, Diag *d);
void cuda_session_destroy(Session *s);
bool cuda_session_reserve(Session *s, int64_t batch, int64_t words);
double cuda_session_run(Session *s, FnKind k, void **args, int64_t batch, uint64_t seed);
void cuda_session_copy_state(Session *s, bool to_device);

/* ---- data.c: what a model trains on ------------------------------------------------------ */
#include "runtime/data.h"

/* How targets come from the data, and the metric reported by default. */
typedef enum {
    TASK_CLASSES,    /* i32[N] class labels; accuracy                     */
    TASK_BINARY,     /* f32[N, 1] from two classes: 0 or 1; accuracy at 0.5 */
    TASK_ONEHOT,     /* f32[N, C] one-hot from class labels; accuracy     */
    TASK_REGRESSION, /* f32 values from CSV columns; no default metric    */
} TaskKind;

typedef struct Task {
    TaskKind kind;
    const Node *input, *target, *output; /* in the eval graph; output: the first */
    int64_t features; /* input values per example */
    int64_t tvalues;  /* target values per example */
    int64_t classes;  /* of the labels, when there are labels */
} Task;

typedef struct Data {
    RtDataset train, val, test; /* views */
    RtDataset all, test_storage; /* what owns the memory */
    bool test_in_all;
    int64_t image_h, image_w; /* images (IDX): their size, for augmentation */
} Data;

/* The model's one input and one target (false, reported, otherwise). */
bool task_of(const Module *m, Task *t, Diag *d);
/* The task of m on data already loaded (for m or for an earlier version of
 * it): task_of, then checks that the data fits the input and the target. */
bool task_fit(const Module *m, const Data *data, Task *t, Diag *d);
/* Loads the model's data (`override`: --data), the first `limit` training
 * examples (0: all), `nval` of them held out for validation (-1: one in 12). */
bool data_load(const Module *m, const char *override, int64_t limit, int64_t nval, Data *out, Task *task, Diag *d);
void data_free(Data *d);
/* Copies examples idx[0..count) (idx NULL: the first count) into batch
 * buffers: x (features each) and y encoded for the task. */
void data_batch(const Task *t, const RtDataset *ds, const int64_t *idx, int64_t count, float *x, void *y);

/* ---- trainer.c: the training loop ----------------------------------------------------------- */
#include "cli/progress.h"

/* The counts s's programs ran on, for the reports of a run (threads.c). */
void session_threads_report(const Session *s, ThreadsReport *r);

typedef struct TrainConfig {
    uint64_t seed;
    int threads;          /* 0: OpenBLAS's default */
    const char *data;     /* --data, or NULL */
    int64_t limit, val;   /* see data_load */
    int64_t patience;     /* stop after this many epochs without a better validation score (0: never) */
    const char *save, *load;
    bool quiet;           /* no output at all (hyper-parameter search) */
    ReportStyle report;   /* how epochs are reported unless quiet (progress.h) */
    const char *plot;     /* write the loss and accuracy curves to this SVG file, or NULL */
    /* hyper-parameters set in the state after init, e.g. {"opt.lr", 0.01} */
    const char *hyper_names[8];
    double hyper_values[8];
    int nhypers;
} TrainConfig;

typedef struct TrainResult {
    int64_t epochs, best_epoch;
    double val_loss, val_score;   /* of the best epoch; score: accuracy, or -loss */
    bool has_accuracy;            /* the task has an accuracy (else the score is -loss) */
    double test_loss, test_accuracy; /* accuracy < 0: the task has none */
    double seconds;
} TrainResult;

/* A session with its data, ready to train and evaluate batch by batch: the
 * pieces of the training loop that `nnc train` and the REPL share. */
typedef struct Trainer {
    Module *m;
    Session *s;
    const Data *data;
    Task task;
    uint64_t seed;
    int64_t batch, eval_batch;
    float *x, *scratch;
    void *y;
    /* the eval program's arguments: x, y, then its outputs and metrics */
    const KProgram *eval;
    void **eval_args;
    int first_output, nmetrics;
    const char **metric_names;
    double *metrics; /* of the last trainer_score() */
} Trainer;

typedef struct Scores {
    double loss, accuracy; /* accuracy < 0: none */
} Scores;

/* Sets t up for s (which has FN_EVAL, and FN_TRAIN to train) on `data`:
 * fits the task, reserves the workspace and allocates the batch buffers.
 * Sets opt.steps_per_epoch, so it comes after session_init (and after
 * loading a checkpoint). On failure reports; trainer_close still frees. */
bool trainer_open(Trainer *t, Session *s, const Data *data, int64_t batch, uint64_t seed, Diag *d);
void trainer_close(Trainer *t);
/* Called after every batch (so it must be cheap: redraw at most every so
 * often) with the examples done of the total, their mean loss and the last
 * batch's; returns false to stop early (an interrupt). */
typedef bool (*TrainProgress)(void *ctx, int64_t done, int64_t total, double mean_loss, double step_loss);
/* Trains on examples perm[first .. first+count) of the training set, in
 * batches; returns their mean loss and, in *done, how many it trained on
 * (count unless progress stopped it). `epoch` varies the augmentation. */
double trainer_steps(Trainer *t, const int64_t *perm, int64_t epoch, int64_t first, int64_t count,
                     TrainProgress progress, void *ctx, int64_t *done);
/* Loss, accuracy and the metrics (into t->metrics) over a data set. */
Scores trainer_score(Trainer *t, const RtDataset *ds);
/* "  SET loss L  SET acc A  SET METRIC M ..." without a newline. */
void trainer_print_scores(const Trainer *t, const char *set, Scores s);

/* Trains m as its train statement (and c) say, reporting each epoch as
 * c->report asks; keeps the state of the best validation epoch. 0, or 1 after
 * reporting an error. */
int trainer_run(Module *m, const TrainConfig *c, TrainResult *r);

/* Loss, accuracy and metrics of checkpoint c->load's parameters on a split
 * of the model's data ("test", "train" or "val"), printed. 0, or 1 after
 * reporting an error. */
int trainer_evaluate(Module *m, const TrainConfig *c, const char *split);

#endif
