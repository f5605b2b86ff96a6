/* test_aot.c - the shipped forms of a model against the JIT:
 *   - a shared library, used by a C program through its header alone, gives
 *     bit for bit the losses and parameters of the JIT, also with two
 *     instances training at once in two threads;
 *   - two models built as objects link into one program;
 *   - the standalone C file computes the same within float rounding;
 *   - checkpoints round-trip through the library's save and load.
 * The programs are built with the `nnc` command and the system's cc. */
#include "cli/driver.h"
#include "runtime/nnrt.h"
#include "runtime/rng.h"
#include "support/util.h"

#include "check_main.h"
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static char dir[64];

static void setup(void) {
    strcpy(dir, "/tmp/nnc-aot-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    nnrt_set_threads(1);
}

/* Runs a shell command built like printf; fails the test if it fails. */
static void sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "command failed (%d): %s", rc, cmd);
}

/* The batches a run trains on: sizes vary, the last is a single example. */
static const int64_t batch_sizes[] = {64, 64, 17, 64, 1, 33};
enum { STEPS = 6, X = 784 };

static float *xs[STEPS];
static int32_t *ys[STEPS];

static void make_batches(const char *path) {
    FILE *f = fopen(path, "wb");
    for (int s = 0; s < STEPS; s++) {
        int64_t n = batch_sizes[s];
        xs[s] = xmalloc(sizeof(float) * (size_t)(n * X));
        ys[s] = xmalloc(sizeof(int32_t) * (size_t)n);
        for (int64_t i = 0; i < n * X; i++) xs[s][i] = (float)nnrt_rand_uniform(100 + (uint64_t)s, (uint64_t)i);
        for (int64_t i = 0; i < n; i++) ys[s][i] = (int32_t)nnrt_rand_below(200 + (uint64_t)s, (uint64_t)i, 10);
        fwrite(&n, sizeof n, 1, f);
        fwrite(xs[s], sizeof(float), (size_t)(n * X), f);
        fwrite(ys[s], sizeof(int32_t), (size_t)n, f);
    }
    fclose(f);
}

typedef struct Jit {
    Arena arena;
    Module *m;
    Session *s;
    float losses[STEPS];
} Jit;

/* The JIT's run of the same steps from init(seed). */
static void jit_train(Jit *j, const char *model, uint64_t seed) {
    memset(j, 0, sizeof *j);
    Diag d;
    diag_init(&d, NULL, stderr);
    j->m = nnc_load_model(&j->arena, model, &d, NULL);
    ck_assert_ptr_nonnull(j->m);
    j->s = session_create(j->m, FN_BIT(FN_TRAIN) | FN_BIT(FN_FORWARD) | FN_BIT(FN_INIT), false, &d);
    ck_assert_ptr_nonnull(j->s);
    ck_assert(session_reserve(j->s, 64));
    session_init(j->s, seed);
    for (int s = 0; s < STEPS; s++)
        j->losses[s] = (float)session_run(j->s, FN_TRAIN, (void *[]){xs[s], ys[s]}, batch_sizes[s]);
}

static void jit_free(Jit *j) {
    session_destroy(j->s);
    arena_free_all(&j->arena);
}

static float *read_all(const char *path, size_t *n) {
    size_t bytes;
    char *data = read_file(path, &bytes);
    ck_assert_ptr_nonnull(data);
    *n = bytes / sizeof(float);
    return (float *)data;
}

/* Builds the driver against MODEL's header and `objects`. */
static void build_driver(const char *model, const char *upper, const char *out_name, const char *objects) {
    sh("cc -std=c99 -O2 -Wall -Wextra -Werror -DMODEL=%s -DHEADER='\"%s.h\"' -DX_SIZE=%s_X_SIZE "
       "-DOUT_SIZE=%s_PROBS_SIZE -I%s %s/tests/aot_driver.c %s -o %s/%s -Wl,-rpath,%s -lpthread -lm",
       model, model, upper, upper, dir, NNC_SOURCE_DIR, objects, dir, out_name, dir);
}

/* Builds mnist_mlp as `kind` (so, c) with the nnc command, builds the
 * driver against it, trains STEPS batches from init(7) in `threads` threads
 * and the same in the JIT (into *j); returns the driver's output. */
static float *train_shipped(const char *kind, int threads, Jit *j, size_t *n) {
    sh("%s %s/examples/mnist_mlp.nn -o %s/mnist_mlp.%s", NNC_BINARY, NNC_SOURCE_DIR, dir, kind);
    sh("test -f %s/mnist_mlp.h", dir);
    char objects[256], driver[64], in[256], out[256];
    snprintf(objects, sizeof objects, "%s/mnist_mlp.%s", dir, kind);
    snprintf(driver, sizeof driver, "driver_%s", kind);
    build_driver("mnist_mlp", "MNIST_MLP", driver, objects);
    snprintf(in, sizeof in, "%s/batches.bin", dir);
    snprintf(out, sizeof out, "%s/out.bin", dir);
    make_batches(in);
    sh("OPENBLAS_NUM_THREADS=1 %s/%s train %s %s 7 %d %d", dir, driver, in, out, STEPS, threads);
    char model[512];
    snprintf(model, sizeof model, "%s/examples/mnist_mlp.nn", NNC_SOURCE_DIR);
    jit_train(j, model, 7);
    return read_all(out, n);
}

START_TEST(test_shared_library_matches_jit_bitwise) {
    setup();
    Jit j;
    size_t n;
    /* two instances at once, in two threads */
    float *got = train_shipped("so", 2, &j, &n);
    size_t state = (size_t)j.m->state_size, per_run = STEPS + state;
    ck_assert_uint_eq(n, 2 * per_run);
    for (int t = 0; t < 2; t++) {
        const float *run = got + (size_t)t * per_run;
        ck_assert_mem_eq(run, j.losses, sizeof(float) * STEPS);
        ck_assert_mem_eq(run + STEPS, j.s->state, sizeof(float) * state);
    }
    free(got);
    jit_free(&j);

    /* checkpoints round-trip through the library */
    sh("%s/driver_so roundtrip %s/ckpt.safetensors", dir, dir);
}
END_TEST

/* The library's thread count: set_threads returns what it set (every core
 * for 0), and a model whose products split (deep_mlp at batch 128) or
 * whose step runs its batch in slices, one a core (lenet at batch 64),
 * trains to the same losses and state bit for bit on one thread and on two. */
static void same_on_one_thread_and_two(const char *model, const char *upper, int batch) {
    sh("%s %s/examples/%s.nn -o %s/%s.so", NNC_BINARY, NNC_SOURCE_DIR, model, dir, model);
    char path[512];
    snprintf(path, sizeof path, "%s/threads_%s.c", dir, model);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "#include \"%s.h\"\n#define M(name) %s_##name\n#define X_SIZE %s_X_SIZE\nenum { B = %d };\n", model,
            model, upper, batch);
    fputs("#include <stdbool.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
          "#include <string.h>\nenum { STEPS = 4 };\n"
          "static void run(int threads, float *state, float *losses, const float *x, const int32_t *y, void *ws) {\n"
          "    if (M(set_threads)(threads) != threads) exit(3);\n"
          "    M(init)(state, 1);\n"
          "    for (int s = 0; s < STEPS; s++) losses[s] = M(train_step)(state, x, y, B, ws);\n}\n"
          "int main(void) {\n"
          "    size_t n = M(state_size)();\n"
          "    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n), la[STEPS], lb[STEPS];\n"
          "    float *x = malloc(sizeof(float) * B * X_SIZE);\n    int32_t y[B];\n"
          "    void *ws = malloc(M(workspace_size)(B));\n"
          "    for (int i = 0; i < B * X_SIZE; i++) x[i] = (float)((i * 7919) % 256) / 255.0f;\n"
          "    for (int i = 0; i < B; i++) y[i] = i % 10;\n"
          "    run(1, a, la, x, y, ws);\n    run(2, b, lb, x, y, ws);\n"
          "    if (M(set_threads)(0) < 1) return 4;\n"
          "    printf(\"%.9g %.9g\\n\", la[STEPS - 1], lb[STEPS - 1]);\n"
          "    bool same = !memcmp(la, lb, sizeof la) && !memcmp(a, b, sizeof(float) * n);\n"
          "    return la[STEPS - 1] < la[0] && same ? 0 : 1;\n}\n",
          f);
    fclose(f);
    sh("cc -std=c99 -Wall -Werror -I%s %s -x none %s/%s.so -o %s/threads_%s -Wl,-rpath,%s && %s/threads_%s", dir, path,
       dir, model, dir, model, dir, dir, model);
}

START_TEST(test_library_thread_count) {
    setup();
    same_on_one_thread_and_two("deep_mlp", "DEEP_MLP", 128);
    same_on_one_thread_and_two("lenet", "LENET", 64);
}
END_TEST

START_TEST(test_two_models_link_into_one_program) {
    setup();
    sh("%s %s/examples/mnist_mlp.nn -o %s/mnist_mlp.o", NNC_BINARY, NNC_SOURCE_DIR, dir);
    sh("%s %s/tests/golden/blocks.nn --emit-obj -o %s/blocks.o", NNC_BINARY, NNC_SOURCE_DIR, dir);
    /* only the models' own symbols are global */
    sh("nm -g --defined-only %s/mnist_mlp.o | grep -v ' mnist_mlp_' | (! grep .)", dir);
    FILE *f = fopen(strcat(strcpy((char[256]){0}, dir), "/two.c"), "w");
    fputs("#include \"mnist_mlp.h\"\n#include \"blocks.h\"\n#include <stdio.h>\n#include <stdlib.h>\n"
          "int main(void) {\n"
          "    float *a = malloc(sizeof(float) * mnist_mlp_state_size());\n"
          "    float *b = malloc(sizeof(float) * blocks_state_size());\n"
          "    float xa[784] = {0}, xb[6] = {1, 2, 3, 4, 5, 6}, pa[10], pb[3];\n"
          "    void *wa = malloc(mnist_mlp_workspace_size(1)), *wb = malloc(blocks_workspace_size(1));\n"
          "    mnist_mlp_init(a, 1);\n    blocks_init(b, 1);\n"
          "    mnist_mlp_forward(a, xa, pa, 1, wa);\n    blocks_forward(b, xb, pb, 1, wb);\n"
          "    float sa = 0, sb = 0;\n"
          "    for (int i = 0; i < 10; i++) sa += pa[i];\n    for (int i = 0; i < 3; i++) sb += pb[i];\n"
          "    printf(\"%.6f %.6f\\n\", sa, sb);\n"
          "    return sa > 0.999f && sa < 1.001f && sb > 0.999f && sb < 1.001f ? 0 : 1;\n}\n",
          f);
    fclose(f);
    sh("cc -std=c99 -Wall -Werror -I%s %s/two.c %s/mnist_mlp.o %s/blocks.o -o %s/two -L%s -lopenblas -lcjson -lm "
       "-lpthread && %s/two",
       dir, dir, dir, dir, dir, NNC_OPENBLAS_LIBDIR, dir);
}
END_TEST

START_TEST(test_standalone_c_matches_jit) {
    setup();
    Jit j;
    size_t n;
    float *got = train_shipped("c", 1, &j, &n);
    ck_assert_uint_eq(n, STEPS + (size_t)j.m->state_size);
    for (int s = 0; s < STEPS; s++)
        ck_assert_msg(fabsf(got[s] - j.losses[s]) <= 1e-4f * fmaxf(fabsf(got[s]), fabsf(j.losses[s])),
                      "step %d: C loss %.9g, JIT %.9g", s, got[s], j.losses[s]);
    const float *st = got + STEPS, *js = j.s->state;
    for (int64_t i = 0; i < j.m->state_size; i++)
        ck_assert_msg(fabsf(st[i] - js[i]) <= 1e-4f * fmaxf(fabsf(st[i]), fabsf(js[i])) + 1e-6f,
                      "state[%lld]: C %.9g, JIT %.9g", (long long)i, st[i], js[i]);
    free(got);

    /* forward: 1e-5 relative, from a fresh init */
    char in[256], out[256];
    snprintf(in, sizeof in, "%s/batch.bin", dir);
    snprintf(out, sizeof out, "%s/forward.bin", dir);
    FILE *f = fopen(in, "wb");
    int64_t nb = 64;
    fwrite(&nb, sizeof nb, 1, f);
    fwrite(xs[0], sizeof(float), 64 * X, f);
    fwrite(ys[0], sizeof(int32_t), 64, f);
    fclose(f);
    sh("%s/driver_c forward %s %s 9", dir, in, out);
    session_init(j.s, 9);
    float probs[64 * 10];
    session_run(j.s, FN_FORWARD, (void *[]){xs[0], probs}, 64);
    got = read_all(out, &n);
    ck_assert_uint_eq(n, 640);
    for (int i = 0; i < 640; i++)
        ck_assert_msg(fabsf(got[i] - probs[i]) <= 1e-5f * fmaxf(fabsf(got[i]), fabsf(probs[i])) + 1e-7f,
                      "output %d: C %.9g, JIT %.9g", i, got[i], probs[i]);
    free(got);
    jit_free(&j);
    sh("%s/driver_c roundtrip %s/c.safetensors", dir, dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("aot");
    TCase *tc = tcase_create("aot");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_shared_library_matches_jit_bitwise);
    tcase_add_test(tc, test_library_thread_count);
    tcase_add_test(tc, test_two_models_link_into_one_program);
    tcase_add_test(tc, test_standalone_c_matches_jit);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
