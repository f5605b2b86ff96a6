/* aot_driver.c - a user's program of a compiled model, built by the tests
 * against nothing but the generated header (and the .so, .o or .c):
 *
 *   cc -DMODEL=mnist_mlp -DHEADER='"mnist_mlp.h"' aot_driver.c mnist_mlp.so
 *
 *   driver train IN OUT SEED STEPS THREADS
 *     IN holds STEPS batches (int64 batch, then batch*X_SIZE floats of x and
 *     batch int32 labels). Runs init(SEED) and one train step per batch,
 *     THREADS times at once in threads with states of their own; writes
 *     the losses (float) and then the final state (floats) of each thread
 *     to OUT.
 *   driver forward IN OUT SEED
 *     IN holds one batch; writes the outputs of forward after init(SEED).
 *   driver roundtrip CKPT
 *     init, save to CKPT, change a parameter, load CKPT: the state must
 *     be as saved; and a load of a missing file must fail with a message. */
#include HEADER

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(MODEL, name)

typedef struct Batch {
    int64_t n;
    float *x;
    int32_t *y;
} Batch;

static int64_t x_size, nsteps;
static Batch *batches;

static Batch read_batch(FILE *f) {
    Batch b;
    if (fread(&b.n, sizeof b.n, 1, f) != 1) exit(3);
    b.x = malloc(sizeof(float) * (size_t)(b.n * x_size));
    b.y = malloc(sizeof(int32_t) * (size_t)b.n);
    if (fread(b.x, sizeof(float), (size_t)(b.n * x_size), f) != (size_t)(b.n * x_size)) exit(3);
    if (fread(b.y, sizeof(int32_t), (size_t)b.n, f) != (size_t)b.n) exit(3);
    return b;
}

typedef struct Run {
    uint64_t seed;
    float *state, *losses;
} Run;

static void *train(void *arg) {
    Run *r = arg;
    int64_t max = 1;
    for (int64_t i = 0; i < nsteps; i++)
        if (batches[i].n > max) max = batches[i].n;
    void *ws = malloc(FN(_workspace_size)(max));
    r->state = malloc(sizeof(float) * FN(_state_size)());
    FN(_init)(r->state, r->seed);
    for (int64_t i = 0; i < nsteps; i++)
        r->losses[i] = FN(_train_step)(r->state, batches[i].x, batches[i].y, batches[i].n, ws);
    free(ws);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *mode = argv[1];
    int count;
    const FN(_tensor) *tensors = FN(_tensors)(&count);
    (void)tensors;
    x_size = X_SIZE; /* the input's values per example (a macro of the header, named by the build) */
    if (strcmp(mode, "roundtrip") == 0) {
        size_t n = FN(_state_size)();
        float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
        char err[512];
        FN(_init)(a, 5);
        if (FN(_save)(a, argv[2], err, sizeof err) != 0) {
            fprintf(stderr, "save: %s\n", err);
            return 1;
        }
        memcpy(b, a, sizeof(float) * n);
        b[0] += 1;
        if (FN(_load)(b, argv[2], err, sizeof err) != 0 || memcmp(a, b, sizeof(float) * n) != 0) {
            fprintf(stderr, "load: %s\n", err);
            return 1;
        }
        err[0] = 0;
        if (FN(_load)(b, "/nonexistent/ckpt.safetensors", err, sizeof err) == 0 || !err[0]) return 1;
        printf("roundtrip ok; missing file: %s\n", err);
        return 0;
    }
    if (argc < 5) return 2;
    FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
    if (!in || !out) return 3;
    uint64_t seed = strtoull(argv[4], NULL, 10);
    if (strcmp(mode, "forward") == 0) {
        Batch b = read_batch(in);
        float *state = malloc(sizeof(float) * FN(_state_size)());
        float *outp = malloc(sizeof(float) * (size_t)(b.n * OUT_SIZE));
        void *ws = malloc(FN(_workspace_size)(b.n));
        FN(_init)(state, seed);
        FN(_forward)(state, b.x, outp, b.n, ws);
        fwrite(outp, sizeof(float), (size_t)(b.n * OUT_SIZE), out);
        fclose(out);
        return 0;
    }
    nsteps = atoll(argv[5]);
    int threads = argc > 6 ? atoi(argv[6]) : 1;
    batches = malloc(sizeof(Batch) * (size_t)nsteps);
    for (int64_t i = 0; i < nsteps; i++) batches[i] = read_batch(in);
    Run runs[8];
    pthread_t tid[8];
    for (int t = 0; t < threads && t < 8; t++) {
        runs[t].seed = seed;
        runs[t].losses = malloc(sizeof(float) * (size_t)nsteps);
        pthread_create(&tid[t], NULL, train, &runs[t]);
    }
    for (int t = 0; t < threads && t < 8; t++) {
        pthread_join(tid[t], NULL);
        fwrite(runs[t].losses, sizeof(float), (size_t)nsteps, out);
        fwrite(runs[t].state, sizeof(float), FN(_state_size)(), out);
    }
    fclose(out);
    return 0;
}
