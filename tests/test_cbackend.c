/* test_cbackend.c - the C backend against the JIT.
 *
 * Several models (the two examples and small ones that between them use
 * every kind of kernel) are emitted into one C file with a small driver,
 * compiled by cc and by clang with -std=c99 -O2 -Wall -Wextra -Werror and
 * -lm alone, and run on the inputs and seed the JIT gets: the initial
 * state, the forward outputs, the losses of 10 training steps and the final
 * state must agree. The driver also checks the emitted nnc_sgemm against a
 * plain triple loop and exercises the emitted checkpoint code: a save / load
 * round trip, a truncated file, a shape mismatch, a missing tensor, a header
 * written by hand in another style, and malformed headers.
 *
 * The expensive part (JIT, emission, compilation, runs) happens once, in an
 * unchecked fixture; the tests then inspect what it recorded. */
#include "backend/c/c_backend.h"
#include "cli/driver.h"
#include "runtime/rng.h"
#include "support/util.h"

#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { STEPS = 10, SEED = 7, STEPS_PER_EPOCH = 4, NBAD = 11 };

/* ---- the models ------------------------------------------------------------------------------- */

/* Every elementwise op, broadcasting against params and scalars, a reshape,
 * mse, momentum, normal / uniform / constant inits. floor is applied to the
 * input, which both sides hold exactly: on a computed value, a rounding
 * difference next to a step would change the result by a whole step. */
static const char *const ewise_model =
    "model ewise\n"
    "input  x : f32[N, 2, 3]\n"
    "target t : f32[N, 4]\n"
    "param  W : f32[6, 4] init=normal(0.5)\n"
    "param  s : f32[4] init=uniform(0.3)\n"
    "param  p : f32 init=1.5\n"
    "f = flatten(x)\n"
    "h = f @ W + s\n"
    "a = exp(h * 0.5) + log(square(h) + 1) + sqrt(square(h) + 0.25)\n"
    "b = pow(square(h) + 1, p) + cos(h) * sin(2 * h) - neg(h) / (h * h + 1.5)\n"
    "c = max(h, s) + min(h, 0.1) - max(0.2, h) + sum(floor(f * 3), axis=1, keepdims=true) / 9\n"
    "d = sigmoid(h) * tanh(h) + relu(h - 0.2)\n"
    "output y = a - b + c * d\n"
    "loss mse(y, t)\n"
    "train momentum(lr=0.01, momentum=0.9)\n";

/* Reductions over trailing, middle, leading and all axes, keepdims,
 * softmax, log_softmax, cross-entropy plus a second loss, Adam with a
 * cosine schedule, he_uniform and xavier_normal inits. */
static const char *const reduce_model =
    "model reduce\n"
    "input  x : f32[N, 3, 4]\n"
    "target y : i32[N] classes 5\n"
    "param  W : f32[4, 5] init=he_uniform\n"
    "param  V : f32[3, 5] init=xavier_normal\n"
    "param  c : f32[3, 4] init=uniform(0.1)\n"
    "u = x * c\n"
    "r = sum(u, axis=2)\n"
    "m = mean(u, axis=1)\n"
    "g = mean(sum(u, axis=0))\n"
    "h = m @ W + r @ V + g\n"
    "k = sum(h, axis=1, keepdims=true)\n"
    "z = h - k * 0.2\n"
    "output probs = softmax(z)\n"
    "output lq = log_softmax(z)\n"
    "loss cross_entropy(z, y)\n"
    "loss mean(sum(square(log_softmax(z)), axis=1)) * 0.01\n"
    "train adam(lr=0.01) epochs 3 schedule cosine\n";

/* The four transpose cases of the matrix product, a deeper tanh network,
 * and plain SGD with a step schedule. */
static const char *const matmul_model =
    "model mats\n"
    "input  x : f32[N, 3]\n"
    "target t : f32[N, 3]\n"
    "param  A : f32[3, 3] init=xavier_uniform\n"
    "param  B : f32[3, 3] init=he\n"
    "param  C : f32[3, 3] init=uniform(0.5)\n"
    "h1 = matmul(x, A)\n"
    "h2 = matmul(h1, B, transpose_b=true)\n"
    "g  = matmul(A, B, transpose_a=true)\n"
    "k  = matmul(C, g, transpose_a=true, transpose_b=true)\n"
    "h3 = dense(tanh(h2 @ k), 7, act=tanh)\n"
    "output y = dense(h3, 3)\n"
    "loss mse(y, t)\n"
    "train sgd(lr=0.05) epochs 2 schedule step(every=1, gamma=0.5)\n";

/* Convolutions (strided and padded, non-square, pointwise), max and average
 * pooling, dropout (rng.seed, opt.step and the generator), and the batched
 * products of their gradients, one summing over the batch. */
static const char *const conv_model =
    "model convs\n"
    "input  x : f32[N, 2, 7, 7]\n"
    "target y : i32[N] classes 4\n"
    "c1 = conv2d(x, 3, kernel=3, stride=2, pad=1, act=tanh)\n"
    "c2 = conv2d(c1, 4, kernel=[2, 1], act=tanh)\n"
    "m  = maxpool(c2, 2, stride=1)\n"
    "a  = avgpool(c1, [2, 3], stride=[2, 1])\n"
    "p  = conv2d(m, 2, kernel=1, bias=false)\n"
    "h  = dropout(dense(flatten(p), 8, act=tanh), 0.25)\n"
    "logits = dense(h, 4) + dense(flatten(a), 4)\n"
    "output probs = softmax(logits)\n"
    "loss cross_entropy(logits, y)\n"
    "train adam(lr=0.01)\n";

/* The activations and losses beyond the basic ones: leaky_relu, elu, swish,
 * softplus, abs and step (on the input, as floor above), log1p in the
 * Kernel IR, multi_hot's chains of selects, both hinges, binary and soft
 * cross-entropy, squared_error and rmse. */
static const char *const acts_model =
    "model acts\n"
    "input  x : f32[N, 6]\n"
    "target t : f32[N, 3]\n"
    "target y : i32[N] classes 4\n"
    "param  W : f32[6, 5] init=normal(0.5)\n"
    "h = x @ W\n"
    "a = leaky_relu(h) + elu(h, alpha=0.5) + swish(h) + softplus(h * 4) + abs(h)\n"
    "g = dense(a, 5, act=leaky_relu(alpha=0.2)) + dense(step(x), 5)\n"
    "s = dense(g, 3)\n"
    "z = dense(g, 4)\n"
    "output p = sigmoid(s)\n"
    "loss binary_cross_entropy(s, t)\n"
    "loss sigmoid_cross_entropy(z, multi_hot(y, [[0, 2], [1], [3, 0], [2]]))\n"
    "loss hinge(z, y, margin=0.5) + hinge(s, 2 * t - 1) * 0.5\n"
    "loss cross_entropy(z, softmax(dense(g, 4))) + squared_error(s, t) + rmse(s, t)\n"
    "train sgd(lr=0.01)\n";

typedef struct Model {
    const char *label;
    const char *text; /* NULL: read from examples/<label>.nn */
    int64_t batch;
    double lr; /* a learning rate set in the state after init, or 0 */
    Module *m;
    KProgram *init, *fwd, *train;
    /* inputs (by program argument) and JIT results */
    void **fdata, **tdata;
    int64_t *fcount, *tcount;
    int64_t nout; /* floats of all forward outputs together */
    int64_t spe;  /* offset of opt.steps_per_epoch, or -1 */
    int64_t workspace;
    float *jit_init, *jit_out, *jit_final;
    float jit_loss[STEPS];
} Model;

/* deep_mlp trains at a tenth of its learning rate here: at 1e-3 Adam fits
 * a batch of 16 in three steps, after which the loss and the gradients are
 * differences of nearly equal numbers, known to f32's precision relative to
 * the logits rather than to themselves, and Adam (which divides a gradient
 * by its own size) passes that on to the weights: the JIT then differs from
 * the same step in f64 as much as the C code differs from the JIT. */
static Model models[] = {
    {.label = "mnist_mlp", .batch = 5},
    {.label = "deep_mlp", .batch = 16, .lr = 1e-4},
    {.label = "ewise", .text = ewise_model, .batch = 5},
    {.label = "reduce", .text = reduce_model, .batch = 6},
    {.label = "mats", .text = matmul_model, .batch = 5},
    {.label = "convs", .text = conv_model, .batch = 3},
    {.label = "acts", .text = acts_model, .batch = 7},
};
enum { NMODELS = sizeof models / sizeof models[0], EWISE = 2 };

/* What one compiled driver produced. */
typedef struct Run {
    const char *compiler;
    bool available; /* the compiler is installed */
    int compiled;   /* exit status of the compiler */
    int ran;        /* exit status of the driver */
    char *log;      /* compiler and driver output */
    char *report;   /* the driver's checkpoint report */
    float *out;     /* its binary output */
    size_t nout;
} Run;

static Arena arena;
static char dir[256];
static Run runs[2] = {{.compiler = "cc"}, {.compiler = "clang"}};

/* ---- helpers --------------------------------------------------------------------------------------- */

static char *path_in(const char *name) { return arena_printf(&arena, "%s/%s", dir, name); }

static int64_t numel(const IrType *t, int64_t batch) {
    int64_t c0, c1;
    type_numel(t, &c0, &c1);
    return c0 + c1 * batch;
}

static int64_t classes_of(const Module *m, const char *target) {
    int id = graph_find_leaf(m->model, OP_INPUT, target);
    return id >= 0 && m->model->nodes[id].attr[0] > 0 ? (int64_t)m->model->nodes[id].attr[0] : 2;
}

/* Random data for an argument: inputs in [-1, 1], real targets in [0, 1],
 * labels in [0, classes). */
static void *arg_data(const Module *m, const KArg *arg, int64_t n, uint64_t key) {
    if (arg->type.dtype == DT_I32) {
        int32_t *y = xmalloc(sizeof(int32_t) * (size_t)(n + 1));
        int64_t classes = classes_of(m, arg->name);
        for (int64_t i = 0; i < n; i++) y[i] = (int32_t)nnrt_rand_below(key, (uint64_t)i, (uint64_t)classes);
        return y;
    }
    float *x = xcalloc((size_t)n + 1, sizeof(float));
    if (arg->role == ARG_OUTPUT) return x;
    for (int64_t i = 0; i < n; i++) {
        double u = nnrt_rand_uniform(key, (uint64_t)i);
        x[i] = (float)(arg->role == ARG_TARGET ? u : 2 * u - 1);
    }
    return x;
}

static void fill_args(Model *md, const KProgram *p, void ***data, int64_t **count, uint64_t key) {
    *data = xcalloc((size_t)p->nargs + 1, sizeof(void *));
    *count = xcalloc((size_t)p->nargs + 1, sizeof(int64_t));
    for (int a = 0; a < p->nargs; a++) {
        (*count)[a] = numel(&p->args[a].type, md->batch);
        (*data)[a] = arg_data(md->m, &p->args[a], (*count)[a], key + (uint64_t)a);
    }
}

static int tensor_kind(const StateSlot *s) {
    if (s->flags & NF_OPT_STATE) return 2;
    if (s->flags & NF_HYPER) return 4;
    return 1;
}

static bool uniform_init(InitKind k) {
    return k != INIT_NORMAL && k != INIT_XAVIER_NORMAL && k != INIT_HE_NORMAL;
}

static char *slurp(const char *path, size_t *len) {
    size_t n = 0;
    char *text = read_file(path, &n);
    if (len) *len = n;
    return text ? text : xstrdup("");
}

/* ---- the JIT's results ---------------------------------------------------------------------------- */

static void run_jit(Model *md) {
    Diag d;
    diag_init(&d, NULL, stderr);
    Session *s = session_create(md->m, FN_BIT(FN_INIT) | FN_BIT(FN_FORWARD) | FN_BIT(FN_TRAIN), false, &d);
    if (!s || !session_reserve(s, md->batch)) {
        fprintf(stderr, "%s: the JIT session failed\n", md->label);
        exit(1);
    }
    size_t state_bytes = sizeof(float) * (size_t)md->m->state_size;
    session_init(s, SEED);
    md->jit_init = xmalloc(state_bytes + 1);
    memcpy(md->jit_init, s->state, state_bytes);
    if (md->spe >= 0) ((float *)s->state)[md->spe] = STEPS_PER_EPOCH;
    if (md->lr > 0) ((float *)s->state)[module_find_slot(md->m, "opt.lr")->offset] = (float)md->lr;
    session_run(s, FN_FORWARD, md->fdata, md->batch);
    md->jit_out = xmalloc(sizeof(float) * (size_t)(md->nout + 1));
    int64_t at = 0;
    for (int a = 0; a < md->fwd->nargs; a++)
        if (md->fwd->args[a].role == ARG_OUTPUT) {
            memcpy(md->jit_out + at, md->fdata[a], sizeof(float) * (size_t)md->fcount[a]);
            at += md->fcount[a];
        }
    for (int step = 0; step < STEPS; step++)
        md->jit_loss[step] = (float)session_run(s, FN_TRAIN, md->tdata, md->batch);
    md->jit_final = xmalloc(state_bytes + 1);
    memcpy(md->jit_final, s->state, state_bytes);
    session_destroy(s);
}

/* ---- the driver program ---------------------------------------------------------------------------- */

/* The driver's part for one model: read its inputs, init, forward, train,
 * write what came out, then the checkpoint checks. */
static void emit_model_driver(FILE *f, const Model *md) {
    const Module *m = md->m;
    const char *name = m->name;
    fprintf(f, "static const nnc_tensor %s_tensors[] = {\n", name);
    for (int i = 0; i < m->nslots; i++) {
        const StateSlot *s = &m->slots[i];
        int64_t dims[4] = {0, 0, 0, 0};
        for (int d = 0; d < s->type.rank; d++) dims[d] = s->type.dim[d];
        fprintf(f, "    {\"%s\", %d, %d, {%lld, %lld, %lld, %lld}, %lld, %lld},\n", s->name, tensor_kind(s),
                s->type.rank, (long long)dims[0], (long long)dims[1], (long long)dims[2], (long long)dims[3],
                (long long)s->offset, (long long)s->size);
    }
    fprintf(f, "};\n\n");
    fprintf(f, "static void run_%s(const char *prefix) {\n", name);
    fprintf(f, "    enum { STATE = %lld, WORKSPACE = %lld, BATCH = %lld, NT = %d };\n",
            (long long)m->state_size, (long long)md->workspace, (long long)md->batch, m->nslots);
    fprintf(f,
            "    float *state = xcalloc(STATE, sizeof(float)), *ws = xcalloc(WORKSPACE, sizeof(float));\n");
    const KProgram *ps[2] = {md->fwd, md->train};
    const char *pfx[2] = {"f", "t"};
    for (int k = 0; k < 2; k++) {
        const KProgram *p = ps[k];
        for (int a = 0; a < p->nargs; a++) {
            int64_t n = numel(&p->args[a].type, md->batch);
            const char *ty = p->args[a].type.dtype == DT_I32 ? "int32_t" : "float";
            if (p->args[a].role == ARG_OUTPUT)
                fprintf(f, "    %s *%s%d = xcalloc(%lld, sizeof(%s));\n", ty, pfx[k], a, (long long)n, ty);
            else
                fprintf(f, "    %s *%s%d = read_array(%lld, sizeof(%s));\n", ty, pfx[k], a, (long long)n, ty);
        }
        fprintf(f, "    void *%sargs[] = {", pfx[k]);
        for (int a = 0; a < p->nargs; a++) fprintf(f, "%s%s%d", a ? ", " : "", pfx[k], a);
        fprintf(f, "%s};\n", p->nargs ? "" : "0");
    }
    fprintf(f, "    %s_init(state, NULL, 0, NULL, %d);\n", name, SEED);
    fprintf(f, "    put(state, STATE);\n");
    if (md->spe >= 0) fprintf(f, "    state[%lld] = %d;\n", (long long)md->spe, STEPS_PER_EPOCH);
    if (md->lr > 0)
        fprintf(f, "    state[%lld] = %.9gf;\n", (long long)module_find_slot(m, "opt.lr")->offset,
                (float)md->lr);
    fprintf(f, "    %s_forward(state, fargs, BATCH, ws, 0);\n", name);
    for (int a = 0; a < md->fwd->nargs; a++)
        if (md->fwd->args[a].role == ARG_OUTPUT)
            fprintf(f, "    put(f%d, %lld);\n", a, (long long)md->fcount[a]);
    fprintf(f, "    for (int step = 0; step < %d; step++) {\n", STEPS);
    fprintf(f, "        float loss = %s_train_step(state, targs, BATCH, ws, 0);\n", name);
    fprintf(f, "        put(&loss, 1);\n    }\n");
    fprintf(f, "    put(state, STATE);\n");
    fprintf(f, "    checkpoint_checks(\"%s\", %s_tensors, NT, state, STATE, prefix);\n", name, name);
    for (int k = 0; k < 2; k++)
        for (int a = 0; a < ps[k]->nargs; a++) fprintf(f, "    free(%s%d);\n", pfx[k], a);
    fprintf(f, "    free(state);\n    free(ws);\n}\n\n");
}

/* The functions every model's part uses. */
static const char *const driver_helpers =
    "/* ---- the test driver ---- */\n"
    "static FILE *in, *out;\n"
    "\n"
    "static void *xcalloc(size_t n, size_t size) {\n"
    "    void *p = calloc(n + 1, size);\n"
    "    if (!p) {\n"
    "        fprintf(stderr, \"out of memory\\n\");\n"
    "        exit(2);\n"
    "    }\n"
    "    return p;\n"
    "}\n"
    "\n"
    "static void *read_array(size_t n, size_t size) {\n"
    "    void *p = xcalloc(n, size);\n"
    "    if (fread(p, size, n, in) != n) {\n"
    "        fprintf(stderr, \"short input\\n\");\n"
    "        exit(2);\n"
    "    }\n"
    "    return p;\n"
    "}\n"
    "\n"
    "static void put(const float *p, size_t n) { fwrite(p, sizeof(float), n, out); }\n"
    "\n"
    "/* Copies `from` without its last `drop` bytes. */\n"
    "static void truncated_copy(const char *from, const char *to, long drop) {\n"
    "    FILE *f = fopen(from, \"rb\"), *g = fopen(to, \"wb\");\n"
    "    long size;\n"
    "    if (!f || !g) exit(3);\n"
    "    fseek(f, 0, SEEK_END);\n"
    "    size = ftell(f) - drop;\n"
    "    fseek(f, 0, SEEK_SET);\n"
    "    for (long i = 0; i < size; i++) fputc(fgetc(f), g);\n"
    "    fclose(f);\n"
    "    fclose(g);\n"
    "}\n"
    "\n"
    "/* Loads `path` into a state filled with 42 and reports the result and\n"
    " * whether the state was left alone. */\n"
    "static void try_load(const char *what, const nnc_tensor *t, int n, int required, int64_t size,\n"
    "                     const char *path) {\n"
    "    char err[512] = \"\";\n"
    "    float *state = xcalloc((size_t)size, sizeof(float));\n"
    "    int unchanged = 1;\n"
    "    for (int64_t i = 0; i < size; i++) state[i] = 42;\n"
    "    int rc = nnc_load(state, t, n, required, path, err, sizeof err);\n"
    "    for (int64_t i = 0; i < size; i++) unchanged &= (state[i] == 42);\n"
    "    printf(\"%s rc=%d unchanged=%d msg=%s\\n\", what, rc, unchanged, err);\n"
    "    free(state);\n"
    "}\n"
    "\n"
    "static void checkpoint_checks(const char *model, const nnc_tensor *t, int n, const float *state,\n"
    "                              int64_t size, const char *prefix) {\n"
    "    char path[1024], other[1100], what[256], err[512] = \"\";\n"
    "    nnc_tensor *wrong = xcalloc((size_t)n, sizeof(nnc_tensor));\n"
    "    float *back = xcalloc((size_t)size, sizeof(float));\n"
    "    snprintf(path, sizeof path, \"%s%s.safetensors\", prefix, model);\n"
    "    int rc = nnc_save(state, t, n, model, path, err, sizeof err);\n"
    "    printf(\"%s.save rc=%d msg=%s\\n\", model, rc, err);\n"
    "    snprintf(other, sizeof other, \"%s.tmp\", path);\n"
    "    FILE *tmp = fopen(other, \"rb\");\n"
    "    printf(\"%s.tmp-left %d\\n\", model, tmp != NULL);\n"
    "    if (tmp) fclose(tmp);\n"
    "    rc = nnc_load(back, t, n, 7, path, err, sizeof err);\n"
    "    printf(\"%s.load rc=%d equal=%d msg=%s\\n\", model, rc,\n"
    "           memcmp(back, state, sizeof(float) * (size_t)size) == 0, rc ? err : \"\");\n"
    "    snprintf(other, sizeof other, \"%s%s.trunc.safetensors\", prefix, model);\n"
    "    truncated_copy(path, other, 2);\n"
    "    snprintf(what, sizeof what, \"%s.truncated\", model);\n"
    "    try_load(what, t, n, 7, size, other);\n"
    "    memcpy(wrong, t, sizeof(nnc_tensor) * (size_t)n);\n"
    "    wrong[0].rank = t[0].rank + 1 > 4 ? 4 : t[0].rank + 1;\n"
    "    wrong[0].dims[wrong[0].rank - 1] = 1;\n"
    "    if (wrong[0].rank == t[0].rank) wrong[0].dims[0] += 1;\n"
    "    snprintf(what, sizeof what, \"%s.shape\", model);\n"
    "    try_load(what, wrong, n, 7, size, path);\n"
    "    free(wrong);\n"
    "    free(back);\n"
    "}\n"
    "\n"
    "/* nnc_sgemm against the plain triple loop in double, for every transpose\n"
    " * case, blocked and unblocked sizes, padded leading dimensions and several\n"
    " * alpha / beta: the largest error relative to sum |alpha a b| + |beta c|.\n"
    " * c starts as NaN where beta = 0, which must not leak into the result. */\n"
    "static void gemm_checks(void) {\n"
    "    static const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 300, 70}, {64, 257, 130}, {5, 513, 3},\n"
    "                                    {4, 6, 0}, {0, 3, 2}};\n"
    "    static const float ab[][2] = {{1, 0}, {0.5f, 1}, {2, -1.5f}};\n"
    "    double worst = 0;\n"
    "    uint64_t counter = 0;\n"
    "    for (int s = 0; s < 7; s++)\n"
    "        for (int t = 0; t < 4; t++)\n"
    "            for (int v = 0; v < 3; v++) {\n"
    "                int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ta = t & 1, tb = t >> 1;\n"
    "                int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;\n"
    "                int lda = ac + 3, ldb = bc + 1, ldc = n + 2;\n"
    "                float alpha = ab[v][0], beta = ab[v][1];\n"
    "                float *a = xcalloc((size_t)(ar * lda), sizeof(float));\n"
    "                float *b = xcalloc((size_t)(br * ldb), sizeof(float));\n"
    "                float *c = xcalloc((size_t)(m * ldc), sizeof(float));\n"
    "                double *ref = (double *)xcalloc((size_t)(m * ldc), sizeof(double));\n"
    "                double *bound = (double *)xcalloc((size_t)(m * ldc), sizeof(double));\n"
    "                for (int i = 0; i < ar * lda; i++) a[i] = 2 * nnc_rand(1, counter++) - 1;\n"
    "                for (int i = 0; i < br * ldb; i++) b[i] = 2 * nnc_rand(2, counter++) - 1;\n"
    "                for (int i = 0; i < m * ldc; i++) c[i] = beta == 0 ? NAN : nnc_rand(3, counter++);\n"
    "                for (int i = 0; i < m; i++)\n"
    "                    for (int j = 0; j < n; j++) {\n"
    "                        double sum = 0, size = 0;\n"
    "                        for (int p = 0; p < k; p++) {\n"
    "                            double x = ta ? a[p * lda + i] : a[i * lda + p];\n"
    "                            double y = tb ? b[j * ldb + p] : b[p * ldb + j];\n"
    "                            sum += x * y;\n"
    "                            size += fabs(x * y);\n"
    "                        }\n"
    "                        double old = beta == 0 ? 0 : c[i * ldc + j];\n"
    "                        ref[i * ldc + j] = alpha * sum + beta * old;\n"
    "                        bound[i * ldc + j] = fabs(alpha) * size + fabs(beta * old) + 1e-30;\n"
    "                    }\n"
    "                nnc_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);\n"
    "                for (int i = 0; i < m; i++)\n"
    "                    for (int j = 0; j < n; j++) {\n"
    "                        double e = fabs(c[i * ldc + j] - ref[i * ldc + j]) / bound[i * ldc + j];\n"
    "                        if (!(e <= worst)) worst = e;\n"
    "                    }\n"
    "                free(a);\n"
    "                free(b);\n"
    "                free(c);\n"
    "                free(ref);\n"
    "                free(bound);\n"
    "            }\n"
    "    printf(\"gemm worst=%.3g\\n\", worst);\n"
    "}\n"
    "\n";

/* The driver's main: every model in turn, then the hand-written and
 * malformed files the test prepared (for the ewise model). */
static void emit_main(FILE *f) {
    const char *ew = models[EWISE].m->name;
    fprintf(f, "int main(int argc, char **argv) {\n");
    fprintf(f, "    char path[1024];\n");
    fprintf(f, "    if (argc != 5) return 2;\n");
    fprintf(f, "    in = fopen(argv[1], \"rb\");\n");
    fprintf(f, "    out = fopen(argv[2], \"wb\");\n");
    fprintf(f, "    if (!in || !out) return 2;\n");
    for (int k = 0; k < NMODELS; k++) fprintf(f, "    run_%s(argv[3]);\n", models[k].m->name);
    fprintf(f, "    gemm_checks();\n");
    /* a checkpoint in another style, into a zero state */
    fprintf(f, "    {\n");
    fprintf(f, "        char err[512] = \"\";\n");
    fprintf(f, "        float *state = xcalloc(%lld, sizeof(float));\n",
            (long long)models[EWISE].m->state_size);
    fprintf(f, "        snprintf(path, sizeof path, \"%%s/hand.safetensors\", argv[4]);\n");
    fprintf(f, "        int rc = nnc_load(state, %s_tensors, %d, 1, path, err, sizeof err);\n", ew,
            models[EWISE].m->nslots);
    fprintf(f, "        printf(\"hand rc=%%d msg=%%s\\n\", rc, err);\n");
    fprintf(f, "        put(state, %lld);\n", (long long)models[EWISE].m->state_size);
    fprintf(f, "        free(state);\n");
    fprintf(f, "        try_load(\"hand.required\", %s_tensors, %d, 7, %lld, path);\n", ew,
            models[EWISE].m->nslots, (long long)models[EWISE].m->state_size);
    fprintf(f, "    }\n");
    fprintf(f, "    for (int i = 0; i < %d; i++) {\n", NBAD);
    fprintf(f, "        char what[32];\n");
    fprintf(f, "        snprintf(path, sizeof path, \"%%s/bad%%d.safetensors\", argv[4], i);\n");
    fprintf(f, "        snprintf(what, sizeof what, \"bad%%d\", i);\n");
    fprintf(f, "        try_load(what, %s_tensors, %d, 0, %lld, path);\n", ew, models[EWISE].m->nslots,
            (long long)models[EWISE].m->state_size);
    fprintf(f, "    }\n");
    fprintf(f, "    {\n");
    fprintf(f, "        char err[512] = \"\";\n");
    fprintf(f, "        const nnc_tensor one = {\"x\", 1, 0, {0, 0, 0, 0}, 0, 1};\n");
    fprintf(f, "        float x = 1;\n");
    fprintf(f, "        snprintf(path, sizeof path, \"%%s/no/such/dir/x.safetensors\", argv[4]);\n");
    fprintf(f, "        int rc = nnc_save(&x, &one, 1, \"x\", path, err, sizeof err);\n");
    fprintf(f, "        printf(\"unwritable rc=%%d msg=%%s\\n\", rc, err);\n");
    fprintf(f, "    }\n");
    fprintf(f, "    fclose(in);\n");
    fprintf(f, "    return fclose(out) != 0;\n");
    fprintf(f, "}\n");
}

/* ---- checkpoint files written here ------------------------------------------------------------------- */

static void write_safetensors(const char *name, const char *header, uint64_t hlen, const void *data,
                              size_t len) {
    FILE *f = fopen(path_in(name), "wb");
    if (!f) exit(1);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    fwrite(data, 1, len, f);
    fclose(f);
}

/* The values the hand-written file gives p, W and s of the ewise model. */
static float hand_value(const char *slot, int64_t i) {
    if (strcmp(slot, "p") == 0) return 2.25f;
    if (strcmp(slot, "W") == 0) return 0.5f + (float)i;
    if (strcmp(slot, "s") == 0) return -1.0f - (float)i;
    return 0;
}

/* A header as another writer may lay it out: white space, keys in another
 * order, escapes, nested metadata, a tensor of another dtype. */
static void write_hand_file(void) {
    const char *header =
        "{\n"
        "  \"__metadata__\" : {\"format\": \"nnc\",\n"
        "                    \"model\": \"hand \\u0077ritten \\\"quoted\\\" \\\\ \\/\",\n"
        "                    \"nested\": [1, 2.5e3, -0.5E-2, true, false, null, {\"a\": [[]], \"b\": {}}]},\n"
        "  \"extra\\ud83d\\ude00\\t\" : {\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [0, 16]},\n"
        "  \"p\" : {\"shape\": [], \"dtype\": \"F32\", \"data_offsets\": [16, 20]},\r\n"
        "  \"\\u0057\" : { \"data_offsets\" : [ 20 , 116 ] ,\n"
        "             \"dtype\" : \"F\\u0033\\u0032\", \"shape\" : [6, 4] },\n"
        "\t\"s\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[116,132]}\n"
        "}      ";
    unsigned char data[132];
    memset(data, 0x5a, 16);
    float p = hand_value("p", 0), W[24], s[4];
    for (int i = 0; i < 24; i++) W[i] = hand_value("W", i);
    for (int i = 0; i < 4; i++) s[i] = hand_value("s", i);
    memcpy(data + 16, &p, 4);
    memcpy(data + 20, W, sizeof W);
    memcpy(data + 116, s, sizeof s);
    write_safetensors("hand.safetensors", header, strlen(header), data, sizeof data);
}

/* Files nnc_load must refuse, each for its own reason (see bad_expect). */
static const char *const bad_headers[NBAD] = {
    "{\"p\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}",      /* unterminated */
    "{\"q\": tru}",                                                               /* bad literal */
    "{\"p\": {\"dtype\": \"F3\x01\", \"shape\": [], \"data_offsets\": [0, 4]}}",  /* control character */
    "{\"p\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}",  /* fractional size */
    "{\"p\": {\"dtype\": \"F16\", \"shape\": [], \"data_offsets\": [0, 2]}}",     /* dtype */
    "[1, 2]",                                                                     /* not an object */
    "{\"q\": \"\\uZZZZ\"}",                                                       /* bad escape */
    "{\"p\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}} x",   /* trailing text */
    "{\"a\": 01}",                                                                /* leading zero */
    "{\"p\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [400, 404]}}", /* data past the end */
    "{\"p\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}}", /* header length past the end */
};

/* A piece of the message each bad file must produce. */
static const char *const bad_expect[NBAD] = {
    "expected ',' or '}'", "unexpected character", "control character", "non-negative integer", "dtype F16",
    "not a JSON object",   "hex digits",           "text after",        "leading zero",         "truncated",
    "truncated",
};

static void write_bad_files(void) {
    for (int i = 0; i < NBAD; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%d.safetensors", i);
        const char *h = bad_headers[i];
        uint64_t hlen = i == NBAD - 1 ? 4096 : strlen(h);
        write_safetensors(name, h, hlen, "\0\0\0\0", 4);
    }
}

/* ---- the fixture: everything computed once ---------------------------------------------------------- */

static void prepare_model(Model *md, int index) {
    Diag d;
    diag_init(&d, NULL, stderr);
    if (md->text) {
        md->m = nnc_compile_source(&arena, arena_printf(&arena, "%s.nn", md->label), md->text,
                                   strlen(md->text), &d, NULL);
    } else {
        md->m = nnc_load_model(&arena, arena_printf(&arena, "%s/examples/%s.nn", NNC_SOURCE_DIR, md->label),
                               &d, NULL);
    }
    if (!md->m) {
        fprintf(stderr, "%s does not compile\n", md->label);
        exit(1);
    }
    md->init = lower_init(md->m, false);
    md->fwd = lower_graph(md->m, md->m->forward, PROG_FORWARD, false);
    md->train = lower_graph(md->m, md->m->train, PROG_TRAIN, false);
    md->workspace = 1;
    const KProgram *ps[] = {md->init, md->fwd, md->train};
    for (int k = 0; k < 3; k++)
        if (kprog_workspace_size(ps[k], md->batch) > md->workspace)
            md->workspace = kprog_workspace_size(ps[k], md->batch);
    const StateSlot *spe = module_find_slot(md->m, "opt.steps_per_epoch");
    md->spe = spe ? spe->offset : -1;
    uint64_t key = 1000 * (uint64_t)(index + 1);
    fill_args(md, md->fwd, &md->fdata, &md->fcount, key);
    fill_args(md, md->train, &md->tdata, &md->tcount, key + 100);
    md->nout = 0;
    for (int a = 0; a < md->fwd->nargs; a++)
        if (md->fwd->args[a].role == ARG_OUTPUT) md->nout += md->fcount[a];
    /* The forward inputs are the train step's, where the names agree. */
    for (int a = 0; a < md->fwd->nargs; a++)
        for (int b = 0; b < md->train->nargs; b++)
            if (md->fwd->args[a].role == ARG_INPUT &&
                strcmp(md->fwd->args[a].name, md->train->args[b].name) == 0)
                memcpy(md->fdata[a], md->tdata[b], sizeof(float) * (size_t)md->fcount[a]);
    run_jit(md);
}

static bool have_clang(void) { return system("command -v clang > /dev/null 2>&1") == 0; }

/* Compiles `source` with every available compiler at once (the machine may
 * have a core for each), then runs each driver. */
static void compile_and_run(const char *source) {
    StrBuf cmd = {0};
    for (int i = 0; i < 2; i++) {
        Run *r = &runs[i];
        r->available = strcmp(r->compiler, "cc") == 0 || have_clang();
        if (!r->available) continue;
        const char *extra = "";
#if defined(__SANITIZE_ADDRESS__)
        /* A sanitised test checks the emitted code for the same errors. */
        if (strcmp(r->compiler, "cc") == 0)
            extra = " -fsanitize=address,undefined -fno-sanitize-recover=undefined";
#endif
        sb_printf(&cmd,
                  "(%s -std=c99 -O2 -Wall -Wextra -Werror%s -o %s/driver_%s %s -lm > %s/%s.log 2>&1; "
                  "echo $? > %s/%s.status) & ",
                  r->compiler, extra, dir, r->compiler, source, dir, r->compiler, dir, r->compiler);
    }
    sb_puts(&cmd, "wait");
    if (system(cmd.data) != 0) fprintf(stderr, "test_cbackend: %s failed\n", cmd.data);
    sb_free(&cmd);
    for (int i = 0; i < 2; i++) {
        Run *r = &runs[i];
        if (!r->available) continue;
        char *status = slurp(path_in(arena_printf(&arena, "%s.status", r->compiler)), NULL);
        r->compiled = *status ? atoi(status) : -1;
        free(status);
        char *log = path_in(arena_printf(&arena, "%s.log", r->compiler));
        if (r->compiled != 0) {
            r->log = slurp(log, NULL);
            continue;
        }
        char *outp = path_in(arena_printf(&arena, "%s.out", r->compiler));
        char *report = path_in(arena_printf(&arena, "%s.report", r->compiler));
        char *prefix = path_in(arena_printf(&arena, "%s_", r->compiler));
        char *run = arena_printf(&arena, "%s/driver_%s %s %s %s %s > %s 2> %s", dir, r->compiler,
                                 path_in("in.bin"), outp, prefix, dir, report, log);
        r->ran = system(run);
        r->log = slurp(log, NULL);
        r->report = slurp(report, NULL);
        size_t len;
        r->out = (float *)slurp(outp, &len);
        r->nout = len / sizeof(float);
    }
}

static void setup(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/nnc_cbackend_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    for (int k = 0; k < NMODELS; k++) prepare_model(&models[k], k);

    /* The inputs, in the order the driver reads them. */
    FILE *in = fopen(path_in("in.bin"), "wb");
    for (int k = 0; k < NMODELS; k++) {
        const Model *md = &models[k];
        for (int a = 0; a < md->fwd->nargs; a++)
            if (md->fwd->args[a].role != ARG_OUTPUT) fwrite(md->fdata[a], 4, (size_t)md->fcount[a], in);
        for (int a = 0; a < md->train->nargs; a++)
            if (md->train->args[a].role != ARG_OUTPUT) fwrite(md->tdata[a], 4, (size_t)md->tcount[a], in);
    }
    fclose(in);
    write_hand_file();
    write_bad_files();

    char *source = path_in("models.c");
    FILE *f = fopen(source, "w");
    c_emit_support(f);
    for (int k = 0; k < NMODELS; k++) {
        const Model *md = &models[k];
        const KProgram *ps[] = {md->init, md->fwd, md->train};
        for (int p = 0; p < 3; p++)
            c_emit_program(f, ps[p], arena_printf(&arena, "%s_%s", md->m->name, ps[p]->name));
    }
    fputs(driver_helpers, f);
    for (int k = 0; k < NMODELS; k++) emit_model_driver(f, &models[k]);
    emit_main(f);
    fclose(f);
    compile_and_run(source);
}

static void teardown(void) {
    if (getenv("NNC_KEEP_TEST_FILES")) {
        printf("test_cbackend: files kept in %s\n", dir);
        return;
    }
    char *cmd = arena_printf(&arena, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

/* ---- checks ----------------------------------------------------------------------------------------- */

static void require_run(const Run *r) {
    ck_assert_msg(r->compiled == 0, "%s rejects the emitted C:\n%s", r->compiler, r->log);
    ck_assert_msg(r->ran == 0, "the driver built by %s failed:\n%s", r->compiler, r->log);
}

/* The line of the report that starts with `key` (followed by a space). */
static const char *report_line(const Run *r, const char *key) {
    size_t n = strlen(key);
    for (const char *s = r->report; s && *s;) {
        if (strncmp(s, key, n) == 0 && s[n] == ' ') return s + n + 1;
        const char *nl = strchr(s, '\n');
        s = nl ? nl + 1 : NULL;
    }
    ck_abort_msg("no '%s' in the report of %s:\n%s", key, r->compiler, r->report);
    return NULL;
}

static bool line_has(const char *line, const char *what) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    size_t n = strlen(what);
    for (size_t i = 0; i + n <= len; i++)
        if (strncmp(line + i, what, n) == 0) return true;
    return false;
}

/* How far a run's numbers are from the JIT's. An element passes when
 * |a - b| <= tol * max(|a|, |b|, scale) + floor; `worst` keeps the first
 * failure. (ck_assert in these loops would cost a system call per element.) */
typedef struct Diff {
    double max_rel; /* largest |a - b| / max(|a|, |b|, scale) */
    bool failed;
    char worst[256];
} Diff;

static void diff_values(Diff *d, const float *c, const float *jit, int64_t n, double tol, double scale,
                        double floor, bool bitwise, const char *what) {
    for (int64_t i = 0; i < n; i++) {
        double a = c[i], b = jit[i], m = fmax(fmax(fabs(a), fabs(b)), scale);
        d->max_rel = fmax(d->max_rel, m > 0 ? fabs(a - b) / m : 0);
        bool ok = bitwise ? memcmp(&c[i], &jit[i], sizeof(float)) == 0 : fabs(a - b) <= tol * m + floor;
        if (!ok && !d->failed) {
            d->failed = true;
            snprintf(d->worst, sizeof d->worst, "%s[%lld]: %.9g, the JIT's %.9g", what, (long long)i, a, b);
        }
    }
}

static double max_abs(const float *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

/* Compares the outputs of run r with the JIT's, model by model:
 *   init     bitwise for uniform draws and constants; normal draws go
 *            through logf and cosf, and may differ in the last bit
 *   forward  1e-5 relative (the products sum in another order)
 *   training 1e-4 relative for the losses; for the state 1e-4 relative to
 *            the element or to the largest element of its tensor: a weight
 *            whose gradient nearly cancels out over the batch, under Adam,
 *            moves by an amount that is only accurate relative to lr. */
static void compare_run(const Run *r) {
    require_run(r);
    size_t at = 0;
    for (int k = 0; k < NMODELS; k++) {
        const Model *md = &models[k];
        const Module *m = md->m;
        int64_t need = 2 * m->state_size + md->nout + STEPS;
        ck_assert_msg(at + (size_t)need <= r->nout, "the driver's output is short");
        const float *init = r->out + at, *fwd = init + m->state_size, *loss = fwd + md->nout;
        const float *state = loss + STEPS;
        at += (size_t)need;
        Diff di = {0}, df = {0}, dl = {0}, ds = {0};
        for (int s = 0; s < m->nslots; s++) {
            const StateSlot *sl = &m->slots[s];
            const char *what = arena_printf(&arena, "init of %s", sl->name);
            diff_values(&di, init + sl->offset, md->jit_init + sl->offset, sl->size, 1e-6, 0, 0,
                        uniform_init(sl->init), what);
        }
        diff_values(&df, fwd, md->jit_out, md->nout, 1e-5, 0, 1e-6, false, "output");
        diff_values(&dl, loss, md->jit_loss, STEPS, 1e-4, 0, 1e-6, false, "loss of step");
        for (int s = 0; s < m->nslots; s++) {
            const StateSlot *sl = &m->slots[s];
            const char *what = arena_printf(&arena, "%s after %d steps", sl->name, STEPS);
            double scale = max_abs(md->jit_final + sl->offset, sl->size);
            diff_values(&ds, state + sl->offset, md->jit_final + sl->offset, sl->size, 1e-4, scale, 0, false,
                        what);
        }
        printf("test_cbackend: %-9s %-5s max relative difference: init %.2g, forward %.2g, losses %.2g, "
               "state after %d steps %.2g (of the tensor's largest value)\n",
               md->label, r->compiler, di.max_rel, df.max_rel, dl.max_rel, STEPS, ds.max_rel);
        fflush(stdout);
        const Diff *all[] = {&di, &df, &dl, &ds};
        for (int i = 0; i < 4; i++)
            ck_assert_msg(!all[i]->failed, "%s, built by %s: %s", md->label, r->compiler, all[i]->worst);
    }
}

START_TEST(test_cc_matches_jit) { compare_run(&runs[0]); }
END_TEST

START_TEST(test_clang_matches_jit) {
    if (!runs[1].available) {
        printf("test_cbackend: clang is not installed; the clang build is skipped\n");
        return;
    }
    compare_run(&runs[1]);
}
END_TEST

static void for_each_run(void (*check)(const Run *)) {
    for (int r = 0; r < 2; r++)
        if (runs[r].available) {
            require_run(&runs[r]);
            check(&runs[r]);
        }
}

static void check_round_trip(const Run *r) {
    for (int k = 0; k < NMODELS; k++) {
        const char *name = models[k].m->name;
        const char *save = report_line(r, arena_printf(&arena, "%s.save", name));
        ck_assert_msg(strncmp(save, "rc=0 ", 5) == 0, "%s: nnc_save: %s", name, save);
        ck_assert_msg(strncmp(report_line(r, arena_printf(&arena, "%s.tmp-left", name)), "0", 1) == 0,
                      "%s: the temporary file is left behind", name);
        const char *load = report_line(r, arena_printf(&arena, "%s.load", name));
        ck_assert_msg(strncmp(load, "rc=0 equal=1", 12) == 0, "%s: nnc_load after nnc_save: %s", name, load);
    }
}

START_TEST(test_checkpoint_round_trip) { for_each_run(check_round_trip); }
END_TEST

/* The safetensors file of `model` from run r, read here: its header is the
 * JSON the format describes, with the model's tensors in state order. */
static void check_file_layout(const Run *r) {
    const Model *md = &models[0];
    size_t len;
    char *bytes = slurp(path_in(arena_printf(&arena, "%s_%s.safetensors", r->compiler, md->m->name)), &len);
    ck_assert(len > 8);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)(unsigned char)bytes[i] << (8 * i);
    ck_assert_uint_eq((8 + hlen) % 8, 0);
    size_t data = 0;
    for (int s = 0; s < md->m->nslots; s++) data += sizeof(float) * (size_t)md->m->slots[s].size;
    ck_assert_uint_eq(len, 8 + hlen + data);
    char *header = arena_strndup(&arena, bytes + 8, (size_t)hlen);
    ck_assert_msg(strstr(header, "\"__metadata__\":{\"format\":\"nnc\",\"model\":\"mnist_mlp\"}"), "%s",
                  header);
    ck_assert_msg(strstr(header, "\"h.W\":{\"dtype\":\"F32\",\"shape\":[784,10],\"data_offsets\":[0,31360]}"),
                  "%s", header);
    ck_assert_msg(strstr(header, "\"opt.lr\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":["), "%s",
                  header);
    /* the data of h.W is the state's first 7840 floats */
    const float *final = r->out + md->m->state_size + md->nout + STEPS;
    ck_assert(memcmp(bytes + 8 + hlen, final, sizeof(float) * 7840) == 0);
    free(bytes);
}

START_TEST(test_checkpoint_file_layout) { for_each_run(check_file_layout); }
END_TEST

static void check_rejections(const Run *r) {
    for (int k = 0; k < NMODELS; k++) {
        const Module *m = models[k].m;
        const char *name = m->name;
        const char *t = report_line(r, arena_printf(&arena, "%s.truncated", name));
        ck_assert_msg(strncmp(t, "rc=-1 unchanged=1 ", 18) == 0, "%s: truncated file: %s", name, t);
        /* the file ends inside the last tensor's data */
        ck_assert_msg(line_has(t, arena_printf(&arena, "'%s'", m->slots[m->nslots - 1].name)) &&
                          line_has(t, arena_printf(&arena, "%s.trunc.safetensors", name)) &&
                          line_has(t, "truncated"),
                      "%s: the message names neither the file nor the tensor: %s", name, t);
        const char *s = report_line(r, arena_printf(&arena, "%s.shape", name));
        ck_assert_msg(strncmp(s, "rc=-1 unchanged=1 ", 18) == 0, "%s: shape mismatch: %s", name, s);
        ck_assert_msg(line_has(s, arena_printf(&arena, "'%s'", m->slots[0].name)) && line_has(s, "shape") &&
                          line_has(s, arena_printf(&arena, "%s.safetensors", name)),
                      "%s: the message names neither the file nor the tensor: %s", name, s);
    }
    const char *u = report_line(r, "unwritable");
    ck_assert_msg(strncmp(u, "rc=-1 ", 6) == 0 && line_has(u, "no/such/dir/x.safetensors"), "%s", u);
}

START_TEST(test_checkpoint_rejects_bad_state) { for_each_run(check_rejections); }
END_TEST

static void check_hand_file(const Run *r) {
    const Model *md = &models[EWISE];
    const Module *m = md->m;
    const char *h = report_line(r, "hand");
    ck_assert_msg(strncmp(h, "rc=0 ", 5) == 0, "the hand-written checkpoint: %s", h);
    size_t at = 0;
    for (int k = 0; k < NMODELS; k++) at += (size_t)(2 * models[k].m->state_size + models[k].nout + STEPS);
    ck_assert(at + (size_t)m->state_size <= r->nout);
    const float *state = r->out + at;
    for (int s = 0; s < m->nslots; s++) {
        const StateSlot *sl = &m->slots[s];
        for (int64_t i = 0; i < sl->size; i++)
            ck_assert_msg(state[sl->offset + i] == hand_value(sl->name, i), "%s[%lld] = %g", sl->name,
                          (long long)i, state[sl->offset + i]);
    }
    /* with optimizer state and hyper-parameters required, the first of them is missing */
    const char *first = NULL;
    for (int s = 0; s < m->nslots && !first; s++)
        if (tensor_kind(&m->slots[s]) != 1) first = m->slots[s].name;
    const char *q = report_line(r, "hand.required");
    ck_assert_msg(strncmp(q, "rc=-1 unchanged=1 ", 18) == 0 &&
                      line_has(q, arena_printf(&arena, "'%s'", first)) && line_has(q, "missing"),
                  "a required tensor missing: %s", q);
}

START_TEST(test_checkpoint_reads_other_layouts) { for_each_run(check_hand_file); }
END_TEST

static void check_bad_files(const Run *r) {
    for (int i = 0; i < NBAD; i++) {
        const char *b = report_line(r, arena_printf(&arena, "bad%d", i));
        ck_assert_msg(strncmp(b, "rc=-1 unchanged=1 ", 18) == 0, "bad%d (%s) is accepted: %s", i,
                      bad_headers[i], b);
        ck_assert_msg(line_has(b, arena_printf(&arena, "bad%d.safetensors", i)) && line_has(b, bad_expect[i]),
                      "bad%d (%s): expected a message with '%s': %s", i, bad_headers[i], bad_expect[i], b);
    }
}

START_TEST(test_checkpoint_rejects_malformed_headers) { for_each_run(check_bad_files); }
END_TEST

static void check_gemm(const Run *r) {
    const char *g = report_line(r, "gemm");
    double worst = strtod(strchr(g, '=') + 1, NULL);
    printf("test_cbackend: nnc_sgemm (%s) against the triple loop: worst relative error %.2g\n", r->compiler, worst);
    fflush(stdout);
    ck_assert_msg(worst <= 1e-6, "nnc_sgemm (%s): %s", r->compiler, g);
}

START_TEST(test_sgemm_matches_triple_loop) { for_each_run(check_gemm); }
END_TEST

int main(void) {
    Suite *s = suite_create("cbackend");
    TCase *tc = tcase_create("c");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cc_matches_jit);
    tcase_add_test(tc, test_clang_matches_jit);
    tcase_add_test(tc, test_sgemm_matches_triple_loop);
    tcase_add_test(tc, test_checkpoint_round_trip);
    tcase_add_test(tc, test_checkpoint_file_layout);
    tcase_add_test(tc, test_checkpoint_rejects_bad_state);
    tcase_add_test(tc, test_checkpoint_reads_other_layouts);
    tcase_add_test(tc, test_checkpoint_rejects_malformed_headers);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
