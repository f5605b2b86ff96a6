/* cmd_repl.c - `nnc repl [FILE.nn]`: train interactively. A line is a
 * command (load, data, train, eval, set, show, predict, save, plot, ...)
 * or a statement of the language, which edits the model's source (see
 * repl/edit.c); every edit, `reload` and `set optimizer` re-compiles and
 * re-JITs the model and carries over the state tensors whose names and
 * shapes are unchanged. Nothing a line does ends the session: errors are
 * reported and the previous model stays. */
#include "cli/commands.h"
#include "cli/driver.h"
#include "cli/plot_svg.h"
#include "cli/repl/repl.h"
#include "frontend/frontend.h"
#include "runtime/checkpoint.h"
#include "runtime/nnrt.h"
#include "runtime/rng.h"
#include "support/util.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A compiled version of the model: its source, module and JIT session. */
typedef struct Model {
    Arena *arena;
    char *path, *text; /* heap; path NULL for a model typed at the prompt */
    Module *m;
    Session *s;
} Model;

/* One point of the training curves: after a `train` command or an epoch. */
typedef struct Point {
    double epoch, train_loss, val_loss, val_acc;
} Point;

typedef struct Repl {
    Model model;     /* m NULL: none loaded */
    char *pending;   /* statements typed before any model compiled */
    Data data;
    bool have_data;
    char *data_path; /* `data PATH`, or NULL for the data statement's */
    int64_t limit, nval;
    DataSpec data_spec; /* what the data was loaded for */
    Trainer tr;
    bool tr_open;
    int64_t batch; /* 0: the train statement's */
    uint64_t seed;
    int64_t epoch, pos; /* where training is: an epoch and an example of its order */
    int64_t *perm;
    Point *points;
    int npoints, cap_points;
    OptSettings opt;
    bool tty_out;
    double line_drawn; /* when the progress line was last drawn */
} Repl;

const char *const repl_command_names[] = {"load", "reload", "data", "train", "eval", "set", "show", "predict", "save",
                                          "load-checkpoint", "write", "plot", "help", "quit", "exit", NULL};

/* ---- help --------------------------------------------------------------------------------- */

typedef struct Help {
    const char *name, *usage, *text;
} Help;

static const Help helps[] = {
    {"load", "load FILE.nn", "compile and JIT a model file; its parameters start from the seed"},
    {"reload", "reload", "re-read the model file (after editing it) and go on with the parameters that still fit"},
    {"data", "data [PATH|default] [limit N] [val N]",
     "load the model's data (its data statement, or an IDX folder / CSV file), the first N examples, N held out"},
    {"train", "train [N] [epochs|steps]", "train for N epochs (default 1) or N steps (batches)"},
    {"eval", "eval [validation|test|train]", "loss, accuracy and metrics on a split (default validation)"},
    {"set", "set lr|batch|optimizer|momentum|weight_decay|seed VALUE",
     "change a hyper-parameter, keeping the trained weights; 'set' alone shows them"},
    {"show", "show TENSOR | graph | ir [PASS] | kir | llvm | source | params | data",
     "a state tensor (shape, statistics, values), the graph, the IR after a pass, the kernels, LLVM IR"},
    {"predict", "predict INDEX [test|train|validation]", "the class probabilities of one example (default: test)"},
    {"save", "save FILE", "write a checkpoint (safetensors) of the whole state, as 'nnc train --save'"},
    {"load-checkpoint", "load-checkpoint FILE", "load the parameters (and optimizer state, if there) of a checkpoint"},
    {"write", "write [FILE.nn]", "write the edited model source (default: the model's file)"},
    {"plot", "plot FILE.svg", "the loss and accuracy curves so far, as an SVG chart"},
    {"help", "help [COMMAND]", "this list, or one command"},
    {"quit", "quit", "leave (so does end of input)"},
};

/* The commands (or the one called `topic`): usage, then what it does,
 * beside it where the usage is short and below it where it is long. */
static void list_commands(FILE *out, const char *topic) {
    enum { COLUMN = 40 };
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        if (topic && strcmp(topic, helps[i].name) != 0) continue;
        if (strlen(helps[i].usage) < COLUMN) fprintf(out, "  %-*s %s\n", COLUMN, helps[i].usage, helps[i].text);
        else fprintf(out, "  %s\n  %-*s %s\n", helps[i].usage, COLUMN, "", helps[i].text);
    }
}

static void help(const char *topic) {
    list_commands(stdout, topic);
    if (!topic)
        printf("Any other line is a statement of the .nn language: it replaces the statement that\n"
               "defines the same name (or the train / data statement), or is added after what it uses;\n"
               "the model is re-compiled and keeps the parameters whose names and shapes are unchanged.\n");
}

void usage_repl(FILE *out) {
    fputs("usage: nnc repl [FILE.nn] [options]\n"
          "\n"
          "Trains interactively: commands and statements of the language, one a line, from\n"
          "a terminal (with line editing, history in ~/.nnc_history and tab completion) or\n"
          "from standard input ('nnc repl model.nn < session.txt').\n"
          "\n"
          "  --seed N             seed of initialisation, shuffling and dropout (default 1)\n"
          "  --threads N          threads for matrix products (default: the fastest count for\n"
          "                       each program and batch size, found by timing a few calls)\n"
          "  --strict             stop at the first command that fails, with exit status 1\n"
          COMPILE_HELP
          "                       (the REPL edits the state in place, on the CPU: not --device cuda)\n"
          "  -h, --help           show this help and the commands\n"
          "\n"
          "commands:\n",
          out);
    list_commands(out, NULL);
}

/* ---- models ------------------------------------------------------------------------------ */

static void model_free(Model *md) {
    session_destroy(md->s);
    if (md->arena) arena_free_all(md->arena);
    free(md->arena);
    free(md->path);
    free(md->text);
    memset(md, 0, sizeof *md);
}

static const char *model_path(const Repl *r) { return r->model.path ? r->model.path : "<repl>"; }

/* Compiles `text` into *out (path names it in messages); reports and
 * returns false on errors. Takes neither string. */
static bool model_build(Repl *r, const char *path, const char *text, Model *out) {
    memset(out, 0, sizeof *out);
    out->arena = xcalloc(1, sizeof(Arena));
    out->path = path ? xstrdup(path) : NULL;
    out->text = xstrdup(text);
    Diag d;
    diag_init(&d, NULL, stderr);
    LoadOptions lo = {.passes.opt = &r->opt};
    out->m = nnc_compile_source(out->arena, path ? path : "<repl>", text, strlen(text), &d, &lo);
    /* a typed model without a model statement: not the name "<repl>" makes */
    if (out->m && !path && !strcmp(out->m->name, "_repl_")) out->m->name = "repl";
    if (out->m) {
        unsigned which = FN_BIT(FN_FORWARD) | FN_BIT(FN_INIT);
        if (out->m->train) which |= FN_BIT(FN_TRAIN) | FN_BIT(FN_EVAL);
        out->s = session_create(out->m, which, false, &d);
    }
    if (out->s) {
        session_init(out->s, r->seed);
        if (session_load_pretrained(out->s, false, &d)) return true;
    }
    model_free(out);
    return false;
}

static bool is_param(const StateSlot *s) { return !(s->flags & (NF_OPT_STATE | NF_HYPER)); }

/* Whether two train statements differ in what lives in the state. */
static bool same_hypers(const TrainSpec *a, const TrainSpec *b) {
    return a->optimizer == b->optimizer && a->lr == b->lr && a->momentum == b->momentum && a->beta1 == b->beta1 &&
           a->beta2 == b->beta2 && a->eps == b->eps && a->rho == b->rho && a->weight_decay == b->weight_decay &&
           a->clip_norm == b->clip_norm && a->schedule == b->schedule && a->every == b->every &&
           a->gamma == b->gamma && a->min_lr == b->min_lr && a->epochs == b->epochs;
}

/* Copies the state tensors of `old` whose names and shapes `nw` shares and
 * says which parameters were kept and which are new. Hyper-parameters come
 * along unless the train statement changed (then only the step count). */
static void carry_state(const Model *old, Model *nw) {
    const Module *a = old->m, *b = nw->m;
    bool hypers = same_hypers(&a->train_spec, &b->train_spec);
    StrBuf kept = {0}, fresh = {0}, dropped = {0};
    for (int i = 0; i < b->nslots; i++) {
        const StateSlot *t = &b->slots[i], *f = module_find_slot(a, t->name);
        bool copy = f && type_equal(&f->type, &t->type) && (f->flags & (NF_OPT_STATE | NF_HYPER)) == (t->flags & (NF_OPT_STATE | NF_HYPER));
        if (copy && (t->flags & NF_HYPER) && !hypers && strcmp(t->name, "opt.step") != 0) copy = false;
        if (copy)
            memcpy((float *)nw->s->state + t->offset, (float *)old->s->state + f->offset, sizeof(float) * (size_t)t->size);
        if (is_param(t)) sb_printf(copy ? &kept : &fresh, " %s", t->name);
    }
    for (int i = 0; i < a->nslots; i++)
        if (is_param(&a->slots[i]) && !module_find_slot(b, a->slots[i].name)) sb_printf(&dropped, " %s", a->slots[i].name);
    printf("kept:%s\n", kept.len ? kept.data : " (none)");
    printf("new:%s\n", fresh.len ? fresh.data : " (none)");
    if (dropped.len) printf("dropped:%s\n", dropped.data);
    if (!hypers) printf("hyper-parameters from the new train statement\n");
    sb_free(&kept);
    sb_free(&fresh);
    sb_free(&dropped);
}

static int64_t batch_of(const Repl *r) { return r->batch ? r->batch : r->model.m->train_spec.batch; }

static void close_trainer(Repl *r) {
    if (r->tr_open) trainer_close(&r->tr);
    r->tr_open = false;
}

/* The trainer over the current model and data (reported when not possible). */
static bool ensure_trainer(Repl *r, Diag *d);

static bool same_data_spec(const DataSpec *a, const DataSpec *b) {
    if (a->kind != b->kind || a->nclasses != b->nclasses || a->header != b->header ||
        a->test_fraction != b->test_fraction || (a->path == NULL) != (b->path == NULL))
        return false;
    if (a->path && strcmp(a->path, b->path) != 0) return false;
    return memcmp(a->classes, b->classes, sizeof(int64_t) * (size_t)a->nclasses) == 0;
}

/* Makes `nw` the model, carrying the old one's state over (carry) or
 * starting afresh. The data stays if the new model's data statement is the
 * same and the data fits it; otherwise it is dropped (and loaded again on
 * the next command that needs it). */
static void adopt(Repl *r, Model *nw, bool carry) {
    if (carry && r->model.m) carry_state(&r->model, nw);
    close_trainer(r);
    model_free(&r->model);
    r->model = *nw;
    memset(nw, 0, sizeof *nw);
    if (r->have_data && !same_data_spec(&r->data_spec, &r->model.m->data)) {
        data_free(&r->data);
        r->have_data = false;
        printf("the data statement changed: the data is loaded again when needed\n");
    }
}

/* Builds `text` and adopts it; on failure the current model stays. */
static bool rebuild(Repl *r, const char *path, const char *text, bool carry) {
    Model nw;
    double t0 = now_seconds();
    if (!model_build(r, path, text, &nw)) {
        if (r->model.m) printf("the model is unchanged\n");
        return false;
    }
    if (r->have_data && same_data_spec(&r->data_spec, &nw.m->data) && nw.m->train) {
        Task t;
        Diag d;
        diag_init(&d, nw.m->src, stderr);
        if (!task_fit(nw.m, &r->data, &t, &d)) {
            model_free(&nw);
            if (r->model.m) printf("the model is unchanged\n");
            return false;
        }
    }
    adopt(r, &nw, carry);
    printf("compiled %s in %.0f ms\n", r->model.m->name, (now_seconds() - t0) * 1e3);
    return true;
}

static bool load_model(Repl *r, const char *path) {
    size_t len;
    char *text = read_file(path, &len);
    if (!text) {
        fprintf(stderr, "error: cannot read %s: %s\n", path, strerror(errno));
        return false;
    }
    bool ok = rebuild(r, path, text, false);
    free(text);
    if (ok) {
        /* a new model: its training starts over */
        r->epoch = r->pos = 0;
        r->npoints = 0;
        r->batch = 0;
        if (r->have_data) nnrt_permutation(r->perm, r->data.train.n, nnrt_mix64(r->seed));
    }
    return ok;
}

static bool need_model(const Repl *r) {
    if (r->model.m) return true;
    fprintf(stderr, "error: no model: 'load FILE.nn' first\n");
    return false;
}

static bool need_training(const Repl *r) {
    if (!need_model(r)) return false;
    if (r->model.m->train) return true;
    fprintf(stderr, "error: the model has no loss statement, so it cannot be trained or evaluated\n");
    return false;
}

static bool load_data(Repl *r, Diag *d) {
    Data data;
    Task task;
    if (!data_load(r->model.m, r->data_path, r->limit, r->nval, &data, &task, d)) return false;
    close_trainer(r);
    if (r->have_data) data_free(&r->data);
    r->data = data;
    r->have_data = true;
    r->data_spec = r->model.m->data;
    free(r->perm);
    r->perm = xmalloc(sizeof(int64_t) * (size_t)(data.train.n + 1));
    nnrt_permutation(r->perm, data.train.n, nnrt_mix64(r->seed) + (uint64_t)r->epoch);
    r->pos = 0;
    printf("data: %lld training, %lld validation, %lld test examples\n", (long long)data.train.n,
           (long long)data.val.n, (long long)data.test.n);
    return true;
}

static bool ensure_trainer(Repl *r, Diag *d) {
    if (!need_training(r)) return false;
    if (!r->have_data && !load_data(r, d)) return false;
    if (r->tr_open) return true;
    if (!trainer_open(&r->tr, r->model.s, &r->data, batch_of(r), r->seed, d)) {
        trainer_close(&r->tr);
        return false;
    }
    r->tr_open = true;
    return true;
}

/* ---- commands --------------------------------------------------------------------------- */

/* Words of a command line, split at blanks (in place). */
typedef struct Words {
    char *w[8];
    int n;
} Words;

static Words split_words(char *line) {
    Words ws = {0};
    for (char *tok = strtok(line, " \t"); tok && ws.n < 8; tok = strtok(NULL, " \t")) ws.w[ws.n++] = tok;
    return ws;
}

static bool parse_count(const char *text, const char *what, int64_t lo, int64_t *out) {
    long long v;
    char opt[64];
    snprintf(opt, sizeof opt, "%s", what);
    if (!parse_int_option(opt, text, lo, &v)) return false;
    *out = v;
    return true;
}

/* Set by Ctrl-C while training: stop after the current batches. */
static volatile sig_atomic_t interrupted;
static void on_interrupt(int sig) { (void)sig, interrupted = 1; }

static bool progress_line(void *ctx, int64_t done, int64_t total, double loss, double step_loss) {
    Repl *r = ctx;
    double now = now_seconds();
    /* at most ten redraws a second, and the last */
    if (r->tty_out && (done == total || now - r->line_drawn >= 0.1)) {
        r->line_drawn = now;
        printf("\r\033[K  epoch %lld  %lld/%lld  loss %.4f", (long long)r->epoch + 1, (long long)done,
               (long long)total, loss);
        fflush(stdout);
    }
    return !interrupted;
}

static void add_point(Repl *r, double train_loss, Scores v) {
    Point p = {(double)r->epoch + (double)r->pos / (double)(r->data.train.n ? r->data.train.n : 1), train_loss,
               v.loss, v.accuracy};
    if (r->npoints == r->cap_points) {
        r->cap_points = r->cap_points ? 2 * r->cap_points : 16;
        r->points = xrealloc(r->points, sizeof(Point) * (size_t)r->cap_points);
    }
    r->points[r->npoints++] = p;
}

/* Trains `steps` batches from where training stands, across epochs. */
static bool repl_train_steps(Repl *r, int64_t examples_goal, bool whole_epochs, int64_t nepochs) {
    Trainer *t = &r->tr;
    const RtDataset *train = &r->data.train;
    if (train->n == 0) {
        fprintf(stderr, "error: no training examples\n");
        return false;
    }
    int64_t left = whole_epochs ? 0 : examples_goal;
    int64_t epochs_left = whole_epochs ? nepochs : 0;
    /* Ctrl-C stops training, not the session: the state stays as trained so far */
    struct sigaction sa = {.sa_handler = on_interrupt}, old;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    interrupted = 0;
    while ((whole_epochs ? epochs_left > 0 : left > 0) && !interrupted) {
        double t0 = now_seconds();
        int64_t count = train->n - r->pos;
        if (!whole_epochs && count > left) count = left;
        double loss = trainer_steps(t, r->perm, r->epoch, r->pos, count, progress_line, r, &count);
        double seconds = now_seconds() - t0;
        r->pos += count;
        left -= count;
        bool epoch_done = r->pos >= train->n;
        Scores v = {NAN, -1};
        if (r->data.val.n) v = trainer_score(t, &r->data.val);
        if (r->tty_out) printf("\r\033[K");
        printf("epoch %lld%s  loss %.4f", (long long)r->epoch + 1, epoch_done ? "" : " (part)", loss);
        if (r->data.val.n) trainer_print_scores(t, "val", v);
        printf("  %.0f samples/s\n", (double)count / (seconds > 0 ? seconds : 1e-9));
        fflush(stdout);
        if (epoch_done) {
            r->epoch++;
            r->pos = 0;
            nnrt_permutation(r->perm, train->n, nnrt_mix64(r->seed) + (uint64_t)r->epoch);
            epochs_left--;
        }
        add_point(r, loss, v);
    }
    sigaction(SIGINT, &old, NULL);
    if (interrupted) printf("interrupted\n");
    return true;
}

static bool repl_train(Repl *r, Words *ws, Diag *d) {
    int64_t n = 1;
    const char *unit = "epochs";
    if (ws->n > 1 && !parse_count(ws->w[1], "train", 1, &n)) return false;
    if (ws->n > 2) unit = ws->w[2];
    bool epochs = !strcmp(unit, "epochs") || !strcmp(unit, "epoch");
    if (!epochs && strcmp(unit, "steps") != 0 && strcmp(unit, "step") != 0) {
        fprintf(stderr, "error: train N epochs or train N steps, not '%s'\n", unit);
        return false;
    }
    if (ws->n > 3) {
        fprintf(stderr, "error: usage: train [N] [epochs|steps]\n");
        return false;
    }
    if (!ensure_trainer(r, d)) return false;
    return repl_train_steps(r, epochs ? 0 : n * batch_of(r), epochs, n);
}

static const RtDataset *split_named(Repl *r, const char *name, const char *dflt) {
    if (!name) name = dflt;
    if (!strcmp(name, "validation") || !strcmp(name, "val")) return &r->data.val;
    if (!strcmp(name, "test")) return &r->data.test;
    if (!strcmp(name, "train")) return &r->data.train;
    fprintf(stderr, "error: the splits are validation, test and train, not '%s'\n", name);
    return NULL;
}

static bool repl_eval(Repl *r, Words *ws, Diag *d) {
    if (!ensure_trainer(r, d)) return false;
    const RtDataset *ds = split_named(r, ws->n > 1 ? ws->w[1] : NULL, "validation");
    if (!ds) return false;
    if (ds->n == 0) {
        fprintf(stderr, "error: the %s set is empty\n", ws->n > 1 ? ws->w[1] : "validation");
        return false;
    }
    Scores s = trainer_score(&r->tr, ds);
    const char *name = ds == &r->data.val ? "val" : ds == &r->data.test ? "test" : "train";
    printf("%s:", name);
    trainer_print_scores(&r->tr, name, s);
    printf("  (%lld examples)\n", (long long)ds->n);
    return true;
}

static bool repl_predict(Repl *r, Words *ws, Diag *d) {
    int64_t index;
    if (ws->n < 2) {
        fprintf(stderr, "error: usage: predict INDEX [test|train|validation]\n");
        return false;
    }
    if (!parse_count(ws->w[1], "predict", 0, &index) || !ensure_trainer(r, d)) return false;
    const RtDataset *ds = split_named(r, ws->n > 2 ? ws->w[2] : NULL, "test");
    if (!ds) return false;
    if (index >= ds->n) {
        fprintf(stderr, "error: example %lld, but the set has %lld\n", (long long)index, (long long)ds->n);
        return false;
    }
    Session *s = r->model.s;
    const KArg *oarg = &s->prog[FN_FORWARD]->args[1];
    int64_t c0, c1;
    type_numel(&oarg->type, &c0, &c1);
    int64_t width = c0 + c1;
    float *out = xmalloc(sizeof(float) * (size_t)(width + 1));
    RtDataset part = rt_dataset_slice(ds, index, 1);
    data_batch(&r->tr.task, &part, NULL, 1, r->tr.x, r->tr.y);
    session_run(s, FN_FORWARD, (void *[]){r->tr.x, out}, 1);
    print_predictions(&r->tr.task, &part, index, out, width, width, oarg->name);
    free(out);
    return true;
}

static bool repl_data(Repl *r, Words *ws, Diag *d) {
    if (!need_model(r)) return false;
    char *path = NULL;
    int64_t limit = r->limit, nval = r->nval;
    for (int i = 1; i < ws->n; i++) {
        if (!strcmp(ws->w[i], "limit") && i + 1 < ws->n) {
            if (!parse_count(ws->w[++i], "limit", 0, &limit)) return false;
        } else if (!strcmp(ws->w[i], "val") && i + 1 < ws->n) {
            if (!parse_count(ws->w[++i], "val", 0, &nval)) return false;
        } else if (!strcmp(ws->w[i], "default")) {
            free(r->data_path);
            r->data_path = NULL;
        } else if (!path && strcmp(ws->w[i], "limit") && strcmp(ws->w[i], "val")) path = ws->w[i];
        else {
            fprintf(stderr, "error: usage: data [PATH|default] [limit N] [val N]\n");
            return false;
        }
    }
    char *old_path = r->data_path;
    int64_t old_limit = r->limit, old_val = r->nval;
    r->data_path = path ? xstrdup(path) : old_path ? xstrdup(old_path) : NULL;
    r->limit = limit, r->nval = nval;
    if (load_data(r, d)) {
        free(old_path);
        return true;
    }
    free(r->data_path);
    r->data_path = old_path, r->limit = old_limit, r->nval = old_val;
    return false;
}

/* ---- set ---------------------------------------------------------------------------------- */

/* A train statement for the current one with another optimizer, momentum
 * or weight decay: what `set` compiles when the state has no slot for the
 * value (or the optimizer changes). The learning rate is the state's. */
static char *train_statement(const Repl *r, OptimizerKind kind, double momentum, double wd) {
    const TrainSpec *ts = &r->model.m->train_spec;
    const float *lr = session_slot(r->model.s, "opt.lr");
    StrBuf sb = {0};
    sb_printf(&sb, "train %s(lr=%.9g", optimizer_names[kind], lr ? (double)*lr : ts->lr);
    if ((kind == OPT_SGD || kind == OPT_MOMENTUM) && momentum > 0) sb_printf(&sb, ", momentum=%.9g", momentum);
    if ((kind == OPT_SGD || kind == OPT_MOMENTUM) && momentum > 0 && ts->nesterov) sb_puts(&sb, ", nesterov=true");
    if (wd > 0 || kind == OPT_ADAMW) sb_printf(&sb, ", weight_decay=%.9g", wd);
    sb_printf(&sb, ") batch %lld epochs %lld", (long long)ts->batch, (long long)ts->epochs);
    if (ts->schedule == SCHED_STEP) sb_printf(&sb, " schedule step(every=%.9g, gamma=%.9g)", ts->every, ts->gamma);
    if (ts->schedule == SCHED_EXPONENTIAL) sb_printf(&sb, " schedule exponential(gamma=%.9g)", ts->gamma);
    if (ts->schedule == SCHED_COSINE) sb_printf(&sb, " schedule cosine(min_lr=%.9g)", ts->min_lr);
    if (ts->clip_norm > 0) sb_printf(&sb, " clip_norm %.9g", ts->clip_norm);
    return sb_take(&sb);
}

static bool apply_statement(Repl *r, const char *stmt);

static void show_settings(const Repl *r) {
    const TrainSpec *ts = &r->model.m->train_spec;
    printf("optimizer %s  batch %lld  seed %llu", optimizer_names[ts->optimizer], (long long)batch_of(r),
           (unsigned long long)r->seed);
    for (int i = 0; i < r->model.m->nslots; i++) {
        const StateSlot *s = &r->model.m->slots[i];
        if ((s->flags & NF_HYPER) && strcmp(s->name, "opt.step") && strcmp(s->name, "opt.steps_per_epoch"))
            printf("  %s %g", s->name + (strncmp(s->name, "opt.", 4) ? 0 : 4),
                   (double)((float *)r->model.s->state)[s->offset]);
    }
    printf("\n");
}

static bool repl_set(Repl *r, Words *ws) {
    if (!need_model(r)) return false;
    if (ws->n == 1) {
        show_settings(r);
        return true;
    }
    if (ws->n != 3) {
        fprintf(stderr, "error: usage: set lr|batch|optimizer|momentum|weight_decay|seed VALUE\n");
        return false;
    }
    const char *what = ws->w[1], *value = ws->w[2];
    const TrainSpec *ts = &r->model.m->train_spec;
    if (!strcmp(what, "optimizer")) {
        for (int k = 0; k < OPT_COUNT; k++)
            if (!strcmp(value, optimizer_names[k])) {
                const float *mu = session_slot(r->model.s, "opt.momentum"), *wd = session_slot(r->model.s, "opt.weight_decay");
                char *stmt = train_statement(r, (OptimizerKind)k, k == OPT_MOMENTUM ? (mu ? *mu : 0.9) : mu ? *mu : 0,
                                             wd ? *wd : 0);
                bool ok = apply_statement(r, stmt);
                free(stmt);
                return ok;
            }
        fprintf(stderr, "error: unknown optimizer '%s' (sgd, momentum, adagrad, rmsprop, adam, adamw)\n", value);
        return false;
    }
    if (!strcmp(what, "batch") || !strcmp(what, "seed")) {
        int64_t v;
        if (!parse_count(value, what, what[0] == 'b' ? 1 : 0, &v)) return false;
        if (what[0] == 'b') {
            r->batch = v;
            close_trainer(r); /* the buffers and steps per epoch follow the batch */
        } else {
            r->seed = (uint64_t)v; /* shuffling from the next epoch, augmentation, initialisation of new parameters */
            close_trainer(r);
        }
        printf("%s %lld\n", what, (long long)v);
        return true;
    }
    const char *slot = !strcmp(what, "lr") ? "opt.lr" : !strcmp(what, "momentum") ? "opt.momentum"
                     : !strcmp(what, "weight_decay") ? "opt.weight_decay" : NULL;
    if (!slot) {
        fprintf(stderr, "error: 'set' changes lr, batch, optimizer, momentum, weight_decay or seed, not '%s'\n", what);
        return false;
    }
    char *end;
    double v = strtod(value, &end);
    bool lr = slot[4] == 'l';
    if (!*value || *end || !isfinite(v) || v < 0 || (lr && v <= 0) || (!strcmp(what, "momentum") && v >= 1)) {
        fprintf(stderr, "error: %s: not a valid value '%s'\n", what, value);
        return false;
    }
    float *p = session_slot(r->model.s, slot);
    if (p) {
        *p = (float)v;
        printf("%s %g\n", what, v);
        return true;
    }
    /* no slot yet: the optimizer takes the value in its train statement */
    OptimizerKind kind = ts->optimizer;
    if (!strcmp(what, "momentum") && kind == OPT_SGD) kind = OPT_MOMENTUM;
    if (!strcmp(what, "momentum") && kind != OPT_MOMENTUM) {
        fprintf(stderr, "error: %s has no momentum (sgd and momentum have)\n", optimizer_names[kind]);
        return false;
    }
    if (v == 0) {
        printf("%s %g\n", what, v);
        return true;
    }
    const float *mu = session_slot(r->model.s, "opt.momentum");
    char *stmt = train_statement(r, kind, !strcmp(what, "momentum") ? v : mu ? *mu : 0,
                                 !strcmp(what, "weight_decay") ? v : 0);
    bool ok = apply_statement(r, stmt);
    free(stmt);
    return ok;
}

/* ---- show ------------------------------------------------------------------------------- */

static void show_tensor(const Repl *r, const StateSlot *s) {
    const float *v = (const float *)r->model.s->state + s->offset;
    double mn = INFINITY, mx = -INFINITY, sum = 0, sq = 0;
    for (int64_t i = 0; i < s->size; i++) {
        double x = v[i];
        mn = x < mn ? x : mn, mx = x > mx ? x : mx, sum += x;
    }
    double mean = s->size ? sum / (double)s->size : 0;
    for (int64_t i = 0; i < s->size; i++) sq += ((double)v[i] - mean) * ((double)v[i] - mean);
    printf("%s : f32[", s->name);
    for (int k = 0; k < s->type.rank; k++) printf("%s%lld", k ? ", " : "", (long long)s->type.dim[k]);
    printf("]  min %.6g  max %.6g  mean %.6g  std %.6g\n", mn, mx, mean, s->size ? sqrt(sq / (double)s->size) : 0);
    /* a slice: the first rows (of the last axis), 8 values each */
    int64_t cols = s->type.rank ? s->type.dim[s->type.rank - 1] : 1, rows = cols ? s->size / cols : 0;
    for (int64_t i = 0; i < rows && i < 3; i++) {
        printf("  [%lld]", (long long)i);
        for (int64_t j = 0; j < cols && j < 8; j++) printf(" %9.5f", (double)v[i * cols + j]);
        printf("%s\n", cols > 8 ? " ..." : "");
    }
    if (rows > 3) printf("  ... (%lld rows)\n", (long long)rows);
}

static bool repl_show(Repl *r, Words *ws) {
    if (!need_model(r)) return false;
    Module *m = r->model.m;
    const char *what = ws->n > 1 ? ws->w[1] : "params";
    Diag d;
    diag_init(&d, m->src, stderr);
    if (!strcmp(what, "source")) fputs(r->model.text, stdout);
    else if (!strcmp(what, "graph")) graph_print(stdout, m->model);
    else if (!strcmp(what, "ir") && ws->n <= 2) module_print(stdout, m);
    else if (!strcmp(what, "ir")) {
        if (!check_pass_name(ws->w[2], "error: ")) return false;
        /* the pipeline prints as it goes: run it again on the source */
        Arena a = {0};
        LoadOptions lo = {.passes = {.print_after = ws->w[2], .print_to = stdout, .opt = &r->opt}};
        Module *again = nnc_compile_source(&a, model_path(r), r->model.text, strlen(r->model.text), &d, &lo);
        arena_free_all(&a);
        return again != NULL;
    } else if (!strcmp(what, "kir")) {
        for (int k = 0; k < FN_COUNT; k++)
            if (r->model.s->prog[k]) kprog_print(stdout, r->model.s->prog[k]);
    } else if (!strcmp(what, "llvm")) return emit_llvm(stdout, m, false, "native", &d) == 0;
    else if (!strcmp(what, "data")) {
        if (!r->have_data) printf("no data loaded ('data' loads it)\n");
        else
            printf("%s: %lld training, %lld validation, %lld test examples; at epoch %lld, example %lld\n",
                   r->data_path ? r->data_path : "the data statement's", (long long)r->data.train.n,
                   (long long)r->data.val.n, (long long)r->data.test.n, (long long)r->epoch + 1, (long long)r->pos);
    } else if (!strcmp(what, "params")) {
        for (int i = 0; i < m->nslots; i++) {
            const StateSlot *s = &m->slots[i];
            printf("  %-24s %-10s [", s->name, s->flags & NF_HYPER ? "hyper" : s->flags & NF_OPT_STATE ? "optimizer" : "param");
            for (int k = 0; k < s->type.rank; k++) printf("%s%lld", k ? ", " : "", (long long)s->type.dim[k]);
            printf("]\n");
        }
    } else {
        const StateSlot *s = module_find_slot(m, what);
        if (!s) {
            const char **names = xmalloc(sizeof(char *) * (size_t)(m->nslots + 1));
            for (int i = 0; i < m->nslots; i++) names[i] = m->slots[i].name;
            char hint[DID_YOU_MEAN_MAX];
            fprintf(stderr, "error: no tensor '%s' in the state%s ('show params' lists them)\n", what,
                    did_you_mean(what, names, m->nslots, hint, sizeof hint));
            free(names);
            return false;
        }
        show_tensor(r, s);
    }
    return true;
}

/* ---- checkpoints, plots, the source ------------------------------------------------------------ */

static bool repl_file(Repl *r, Words *ws, Diag *d) {
    const char *cmd = ws->w[0];
    bool write_source = !strcmp(cmd, "write");
    if (ws->n != 2 && !(write_source && ws->n == 1)) {
        fprintf(stderr, "error: usage: %s FILE\n", cmd);
        return false;
    }
    if (!need_model(r)) return false;
    if (write_source) {
        const char *path = ws->n == 2 ? ws->w[1] : r->model.path;
        if (!path) {
            fprintf(stderr, "error: the model has no file yet: write FILE.nn\n");
            return false;
        }
        if (write_file_atomic(path, r->model.text, strlen(r->model.text)) != 0) {
            fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
            return false;
        }
        printf("wrote %s\n", path);
        if (!r->model.path) r->model.path = xstrdup(path); /* a typed model now has a file to reload */
        return true;
    }
    if (!strcmp(cmd, "save")) {
        if (!session_save(r->model.s, ws->w[1], d)) return false;
        printf("saved %s\n", ws->w[1]);
        return true;
    }
    /* parameters required; optimizer state and hyper-parameters if the file has them */
    if (!session_load(r->model.s, ws->w[1], NNRT_PARAM, d)) return false;
    close_trainer(r); /* opened again, it sets this run's steps per epoch over the checkpoint's */
    printf("loaded %s\n", ws->w[1]);
    return true;
}

static bool repl_plot(Repl *r, Words *ws) {
    if (ws->n != 2) {
        fprintf(stderr, "error: usage: plot FILE.svg\n");
        return false;
    }
    if (r->npoints == 0) {
        fprintf(stderr, "error: nothing to plot yet: train first\n");
        return false;
    }
    int n = r->npoints;
    double *v = xmalloc(sizeof(double) * (size_t)n * 4);
    double *x = v, *tl = v + n, *vl = v + 2 * n, *va = v + 3 * n;
    bool acc = false;
    for (int i = 0; i < n; i++) {
        x[i] = r->points[i].epoch, tl[i] = r->points[i].train_loss, vl[i] = r->points[i].val_loss;
        va[i] = r->points[i].val_acc >= 0 ? r->points[i].val_acc : NAN;
        acc |= r->points[i].val_acc >= 0;
    }
    /* the charts of `nnc train --plot`, with the points the REPL has: one
     * after each `train` command or epoch, no per-step losses */
    const SvgSeries loss[] = {
        {"train", x, tl, n, "#1f77b4", .markers = true},
        {"validation", x, vl, n, "#ff7f0e", .markers = true},
    };
    const SvgSeries accuracy[] = {{"validation", x, va, n, "#ff7f0e", .markers = true}};
    const SvgChart charts[] = {
        {"Loss", "epoch", "loss", loss, 2, false},
        {"Accuracy", "epoch", "accuracy", accuracy, 1, true},
    };
    char title[256], err[1024];
    snprintf(title, sizeof title, "%s: training curves", r->model.m ? r->model.m->name : "repl");
    bool ok = svg_write_charts(ws->w[1], title, charts, acc ? 2 : 1, err, sizeof err);
    free(v);
    if (!ok) fprintf(stderr, "error: %s\n", err);
    else printf("wrote %s (%d point%s)\n", ws->w[1], n, n == 1 ? "" : "s");
    return ok;
}

/* ---- statements and dispatch ------------------------------------------------------------------ */

static bool apply_statement(Repl *r, const char *stmt) {
    const char *base = r->model.m ? r->model.text : r->pending ? r->pending : "";
    bool replaced;
    char *text = source_apply(base, stmt, &replaced);
    if (!r->model.m) {
        /* no model yet: statements gather until they make one */
        Model nw;
        free(r->pending);
        r->pending = text;
        if (!model_build(r, NULL, text, &nw)) return false;
        adopt(r, &nw, false);
        free(r->pending);
        r->pending = NULL;
        printf("compiled %s\n", r->model.m->name);
        return true;
    }
    char *path = r->model.path ? xstrdup(r->model.path) : NULL;
    bool ok = rebuild(r, path, text, true);
    free(path);
    free(text);
    return ok;
}

static bool ident_continues(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.'; }

/* Whether a line is a statement of the language rather than a command:
 * it starts with a keyword or assigns a name. */
static bool is_statement(const Words *ws) {
    const char *w1 = ws->w[0], *w2 = ws->n > 1 ? ws->w[1] : "";
    if (w2[0] == '=' || strchr(w1, '=')) return true;
    if (!strcmp(w1, "train")) return ws->n > 1 && !(w2[0] >= '0' && w2[0] <= '9') && strcmp(w2, "epochs") &&
                                     strcmp(w2, "steps") && strcmp(w2, "epoch") && strcmp(w2, "step");
    if (!strcmp(w1, "data"))
        return !strncmp(w2, "fashion_mnist", 13) || !strncmp(w2, "idx(", 4) || !strncmp(w2, "csv(", 4) ||
               !strcmp(w2, "idx") || !strcmp(w2, "csv");
    static const char *const keywords[] = {"model", "input", "target", "param", "output", "loss", "def",
                                           "metric", "freeze", "pretrained", NULL};
    for (int i = 0; keywords[i]; i++)
        if (!strncmp(w1, keywords[i], strlen(keywords[i])) && !ident_continues(w1[strlen(keywords[i])])) return true;
    return false;
}

/* Whether text (a line so far) is a statement: one with open brackets
 * goes on on the next line, until they close or a blank line. */
static bool starts_statement(const char *text) {
    char *copy = xstrdup(text);
    Words ws = split_words(copy);
    bool yes = ws.n > 0 && is_statement(&ws);
    free(copy);
    return yes;
}

/* Runs one line; false if it failed (reported). *quit on quit. */
static bool run_line(Repl *r, const char *line, bool *quit) {
    size_t skip = strspn(line, " \t");
    if (!line[skip] || line[skip] == '#') return true;
    char *copy = xstrdup(line + skip);
    Words ws = split_words(copy);
    bool ok = true;
    Diag d;
    diag_init(&d, r->model.m ? r->model.m->src : NULL, stderr);
    const char *c = ws.w[0];
    if (is_statement(&ws)) ok = apply_statement(r, line + skip);
    else if (!strcmp(c, "quit") || !strcmp(c, "exit")) *quit = true;
    else if (!strcmp(c, "help")) {
        bool known = ws.n == 1;
        for (size_t i = 0; i < sizeof helps / sizeof helps[0] && !known; i++) known = !strcmp(ws.w[1], helps[i].name);
        if (known) help(ws.n > 1 ? ws.w[1] : NULL);
        else fprintf(stderr, "error: no command '%s'\n", ws.w[1]);
        ok = known;
    } else if (!strcmp(c, "load")) {
        ok = ws.n == 2;
        if (!ok) fprintf(stderr, "error: usage: load FILE.nn\n");
        else ok = load_model(r, ws.w[1]);
    } else if (!strcmp(c, "reload")) {
        ok = need_model(r) && r->model.path;
        if (r->model.m && !r->model.path) fprintf(stderr, "error: the model was typed at the prompt: nothing to re-read\n");
        if (ok) {
            size_t len;
            char *text = read_file(r->model.path, &len);
            if (!text) fprintf(stderr, "error: cannot read %s: %s\n", r->model.path, strerror(errno));
            char *path = xstrdup(r->model.path);
            ok = text && rebuild(r, path, text, true);
            free(path);
            free(text);
        }
    } else if (!strcmp(c, "data")) ok = repl_data(r, &ws, &d);
    else if (!strcmp(c, "train")) ok = repl_train(r, &ws, &d);
    else if (!strcmp(c, "eval")) ok = repl_eval(r, &ws, &d);
    else if (!strcmp(c, "predict")) ok = repl_predict(r, &ws, &d);
    else if (!strcmp(c, "set")) ok = repl_set(r, &ws);
    else if (!strcmp(c, "show")) ok = repl_show(r, &ws);
    else if (!strcmp(c, "save") || !strcmp(c, "load-checkpoint") || !strcmp(c, "write")) ok = repl_file(r, &ws, &d);
    else if (!strcmp(c, "plot")) ok = repl_plot(r, &ws);
    else {
        int n = 0;
        while (repl_command_names[n]) n++;
        char hint[DID_YOU_MEAN_MAX];
        fprintf(stderr, "error: unknown command '%s'%s ('help' lists the commands)\n", c,
                did_you_mean(c, repl_command_names, n, hint, sizeof hint));
        ok = false;
    }
    fflush(stdout);
    free(copy);
    return ok;
}

/* Completion of the model's names: its state tensors and graph values. */
static const char *model_name(void *ctx, int i) {
    const Repl *r = ctx;
    if (!r->model.m) return NULL;
    if (i < r->model.m->nslots) return r->model.m->slots[i].name;
    const Graph *g = r->model.m->model;
    for (int k = 0, seen = r->model.m->nslots; k < g->n; k++)
        if (g->nodes[k].name && g->nodes[k].op != OP_PARAM && seen++ == i) return g->nodes[k].name;
    return NULL;
}

int cmd_repl(int argc, char **argv) {
    static const struct option longopts[] = {
        {"seed", required_argument, NULL, 's'}, {"threads", required_argument, NULL, 't'},
        {"strict", no_argument, NULL, 'S'},     {"help", no_argument, NULL, 'h'},
        COMPILE_LONGOPTS,                       {NULL, 0, NULL, 0},
    };
    Repl r = {.seed = 1, .nval = -1, .opt = OPT_DEFAULTS};
    bool strict = false;
    long long v;
    int opt;
    optind = 1;
    while ((opt = nnc_getopt(argc, argv, "h" COMPILE_SHORTOPTS, longopts, "repl")) != -1) {
        switch (opt) {
        case 's': if (!parse_int_option("--seed", optarg, 0, &v)) return 2; r.seed = (uint64_t)v; break;
        case 't': if (!parse_int_option("--threads", optarg, 1, &v)) return 2; nnrt_set_threads((int)v); break;
        case 'S': strict = true; break;
        case 'h': usage_repl(stdout); return 0;
        default:
            if (!is_compile_option(opt) || !parse_compile_option(opt, optarg, &r.opt)) return 2;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "nnc: error: one model file at a time\n");
        return 2;
    }
    if (r.opt.cuda) { /* the REPL reads and edits the state in place, on the host */
        fprintf(stderr, "nnc: error: nnc repl runs on the CPU; --device cuda goes with train, eval, predict, tune, "
                        "bench and check\n");
        return 2;
    }
    bool terminal = isatty(STDIN_FILENO);
    r.tty_out = isatty(STDOUT_FILENO);
    int status = 0;
    if (optind < argc && !load_model(&r, argv[optind]) && strict) status = 1;
    input_open(terminal, model_name, &r);
    if (terminal && status == 0) printf("nnc %s REPL: 'help' lists the commands, Tab completes, Ctrl-D leaves\n", NNC_VERSION);
    bool quit = false;
    StrBuf stmt = {0};
    while (!quit && status == 0) {
        char *line = input_line(stmt.len ? "...> " : "nnc> ");
        if (!line) break;
        bool blank = !line[strspn(line, " \t")];
        if (stmt.len) sb_putc(&stmt, '\n');
        sb_puts(&stmt, line);
        free(line);
        if (!blank && !statement_complete(stmt.data) && starts_statement(stmt.data)) continue;
        if (!run_line(&r, stmt.data, &quit) && strict) status = 1;
        stmt.len = 0;
        stmt.data[0] = 0;
    }
    if (stmt.len && status == 0) {
        fprintf(stderr, "error: the input ended inside a statement: %s\n", stmt.data);
        if (strict) status = 1;
    }
    sb_free(&stmt);
    input_close();
    close_trainer(&r);
    model_free(&r.model);
    if (r.have_data) data_free(&r.data);
    free(r.data_path);
    free(r.pending);
    free(r.perm);
    free(r.points);
    return status;
}
