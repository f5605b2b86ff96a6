/* slices.c - a training step over slices of the batch, each slice on a
 * thread of its own (nnrt.h, "a training step over slices of the batch").
 *
 * Splitting every product of a step over the threads makes each thread
 * read what the others wrote a moment before: an im2col buffer, a
 * pooling gradient, the activations a weight gradient sums over. Where
 * the cores share no cache that is nearly as slow as main memory. A slice
 * keeps its examples on one thread from the first layer to the last
 * gradient; the threads meet only to add up the gradients, which for a
 * network whose weights are reused across an image (convolutions) are
 * small beside the work.
 *
 * The workspace, in floats: the slices' gradient buffers, the argument
 * arrays of the calls, each slice's own workspace (64-byte aligned), and
 * apply's. */
#include "runtime/nnrt.h"

enum {
    ALIGN = 16,                     /* floats: 64 bytes */
    COMBINE_PARALLEL_MIN = 1 << 15, /* gradients fewer than this are added up on one thread */
};

static int64_t round_up(int64_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

/* The size of grad's workspace for `per` examples, rounded up. */
static int64_t slice_workspace(const NnrtSlicedStep *d, int64_t per) {
    int64_t need = 0;
    for (int64_t i = 0; i < d->nterms; i++) {
        int64_t n = d->ws_terms[2 * i] + d->ws_terms[2 * i + 1] * per;
        if (n > need) need = n;
    }
    return round_up(need);
}

/* The argument arrays: one for each slice's grad call and one for apply. */
static int64_t pointer_area(const NnrtSlicedStep *d) {
    int64_t pointers = d->slices * (d->ndata + d->ngrads) + d->napply;
    return round_up(pointers * (int64_t)(sizeof(void *) / sizeof(float)));
}

int64_t nnrt_sliced_workspace(const NnrtSlicedStep *d, int64_t batch) {
    int64_t per = (batch + d->slices - 1) / d->slices;
    return d->slices * d->grad_elems + pointer_area(d) + d->slices * slice_workspace(d, per) + d->apply_ws;
}

typedef struct Step {
    const NnrtSlicedStep *d;
    float *state;
    void **args;
    int64_t batch;
    uint64_t seed;
    float *grads;       /* slice t's gradients at t * grad_elems */
    void **pointers;    /* slice t's arguments at t * (ndata + ngrads), then apply's */
    float *work;        /* slice t's workspace at t * work_elems */
    int64_t work_elems;
    float weight[NNRT_MAX_SLICES]; /* a slice's share of the batch */
    float loss[NNRT_MAX_SLICES];
} Step;

static int64_t slice_first(const Step *s, int64_t t) { return s->batch * t / s->d->slices; }

static void run_slices(void *ctx, int64_t lo, int64_t hi) {
    Step *s = ctx;
    const NnrtSlicedStep *d = s->d;
    for (int64_t t = lo; t < hi; t++) {
        int64_t first = slice_first(s, t), n = slice_first(s, t + 1) - first;
        if (n == 0) continue;
        void **a = s->pointers + t * (d->ndata + d->ngrads);
        for (int64_t i = 0; i < d->ndata; i++) a[i] = (char *)s->args[i] + first * d->data_bytes[i];
        float *g = s->grads + t * d->grad_elems;
        for (int64_t k = 0; k < d->ngrads; k++) a[d->ndata + k] = g + d->grads[2 * k];
        s->loss[t] = d->grad(s->state, a, n, s->work + t * s->work_elems, s->seed);
    }
}

/* grads of slice 0 := the weighted sum of the gradients of the slices
 * with examples, on [lo, hi) of the buffer: each element added up in the
 * order of the slices, so the result does not depend on how the range is
 * split. */
static void combine(void *ctx, int64_t lo, int64_t hi) {
    Step *s = ctx;
    const NnrtSlicedStep *d = s->d;
    for (int64_t k = 0; k < d->ngrads; k++) {
        int64_t from = d->grads[2 * k], to = from + d->grads[2 * k + 1];
        if (from < lo) from = lo;
        if (to > hi) to = hi;
        for (int64_t i = from; i < to; i++) {
            float sum = 0; /* exact for the first slice with examples */
            for (int64_t t = 0; t < d->slices; t++)
                if (s->weight[t] != 0) sum += s->weight[t] * s->grads[t * d->grad_elems + i];
            s->grads[i] = sum;
        }
    }
}

float nnrt_sliced_step(const NnrtSlicedStep *d, float *state, void **args, int64_t batch, float *workspace,
                       uint64_t seed) {
    Step s = {.d = d, .state = state, .args = args, .batch = batch, .seed = seed, .grads = workspace};
    int64_t per = (batch + d->slices - 1) / d->slices;
    s.pointers = (void **)(workspace + d->slices * d->grad_elems);
    s.work = workspace + d->slices * d->grad_elems + pointer_area(d);
    s.work_elems = slice_workspace(d, per);
    for (int64_t t = 0; t < d->slices; t++)
        s.weight[t] = batch ? (float)(slice_first(&s, t + 1) - slice_first(&s, t)) / (float)batch : 0;
    /* With OpenBLAS behind the products the slices take turns: its threads
     * are not for several callers at once. */
    if (nnrt_sgemm_reentrant()) nnrt_parallel_for(d->slices, run_slices, &s);
    else run_slices(&s, 0, d->slices);
    /* (an empty batch: gradients 0) */
    if (d->grad_elems >= COMBINE_PARALLEL_MIN) nnrt_parallel_for(d->grad_elems, combine, &s);
    else combine(&s, 0, d->grad_elems);
    float loss = 0;
    for (int64_t t = 0; t < d->slices; t++)
        if (s.weight[t] != 0) loss += s.weight[t] * s.loss[t];
    void **a = s.pointers + d->slices * (d->ndata + d->ngrads);
    for (int64_t k = 0; k < d->napply; k++) a[k] = s.grads + d->apply_offset[k];
    d->apply(state, a, batch, s.work + d->slices * s.work_elems, seed);
    return loss;
}
