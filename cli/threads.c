/* threads.c - how many threads each program of a session runs on.
 *
 * More threads are not always faster. A small model's matrix products
 * take microseconds, and handing parts of them to another core costs about
 * as much as it saves: such models train fastest on one thread, while
 * inference on a large batch splits well over every core. Which side of
 * that line a program falls on depends on the model, the batch size and
 * the machine, so, unless the count is fixed (--threads), the session
 * measures it: for each program and batch size, runs of calls at each
 * candidate count (1, 2, 4, ... and every core), taking turns, and keeps
 * the fastest.
 *
 * Choosing must cost little and change nothing:
 *   - It waits until the calls at that batch size, made on every core
 *     meanwhile, have taken CHOOSE_AFTER times what choosing will take
 *     (estimated from those calls). A program called a few times (nnc
 *     predict, a short evaluation) never pays for it, and one called often
 *     pays a small part of its time.
 *   - The timed calls run on a copy of the state, so a training step's
 *     updates do not reach the model; the outputs they write are written
 *     again by the real call that follows.
 *   - Results do not depend on the count: a product is split over threads
 *     in whole rows or columns, each summed as on one thread
 *     (tests/test_transforms.c checks the losses of every example).
 *
 * The machine may be busy while the count is chosen (another program on
 * the other core makes one thread the fastest for that moment), so a long
 * run chooses again, after the calls at the chosen count have taken
 * RECHOOSE_AFTER times what choosing took, then after twice that, and so
 * on: a choice made in a busy spell does not last, and choosing again
 * costs at most a few percent. A choice asked for (session_choose_threads:
 * nnc bench, before it times a figure) is kept. */
#include "cli/driver.h"
#include "runtime/nnrt.h"
#include "support/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A timed run lasts at least this long (one call if calls are longer), so
 * that the clock's resolution and a late wake-up of a worker are small
 * parts of it. */
#define RUN_SECONDS 0.5e-3
/* Each count gets between MIN_ROUNDS and MAX_ROUNDS timed runs, as many as
 * fit in about CHOOSE_SECONDS; its best run counts (the least disturbed by
 * the rest of the machine). */
#define CHOOSE_SECONDS 0.05
enum { MIN_ROUNDS = 2, MAX_ROUNDS = 5 };
/* Choose once the calls so far have taken this many times the estimate. */
#define CHOOSE_AFTER 4.0
/* Choose again once the calls at the chosen count have taken this many
 * times what choosing took, doubling each time. */
#define RECHOOSE_AFTER 50.0
/* More threads must be this much faster than fewer to be chosen: closer
 * than that is within the measurement's noise, and fewer threads leave
 * cores to the rest of the machine. */
#define MARGIN 0.03

/* 1, 2, 4, ... below the core count, then the core count. */
int threads_for_programs(void) { return nnrt_threads_fixed() ? nnrt_threads() : nnrt_cores(); }

int train_slices(const Module *m) { return m->opt.slices > 0 ? m->opt.slices : threads_for_programs(); }

static int candidates(int *out) {
    int cores = nnrt_cores(), n = 0;
    for (int c = 1; c < cores && n < MAX_THREAD_CANDIDATES - 1; c *= 2) out[n++] = c;
    out[n++] = cores;
    return n;
}

/* Calls per timed run and rounds, for calls of `per_call` seconds at
 * `counts` candidate counts; returns what choosing will take. */
static double plan(double per_call, int counts, int64_t *calls, int *rounds) {
    *calls = per_call > 0 ? (int64_t)ceil(RUN_SECONDS / per_call) : 1;
    if (*calls < 1) *calls = 1;
    double round = (double)counts * (double)*calls * per_call;
    int r = round > 0 ? (int)(CHOOSE_SECONDS / round) : MAX_ROUNDS;
    *rounds = r < MIN_ROUNDS ? MIN_ROUNDS : r > MAX_ROUNDS ? MAX_ROUNDS : r;
    return (double)counts * per_call + *rounds * round;
}

static ThreadChoice *find(Session *s, FnKind k, int64_t batch) {
    for (int i = 0; i < s->nchoices; i++)
        if (s->choices[i].k == k && s->choices[i].batch == batch) return &s->choices[i];
    return NULL;
}

const ThreadChoice *session_thread_choice(const Session *s, FnKind k, int64_t batch) {
    const ThreadChoice *c = find((Session *)s, k, batch);
    return c && c->threads ? c : NULL;
}

static ThreadChoice *find_or_add(Session *s, FnKind k, int64_t batch) {
    ThreadChoice *c = find(s, k, batch);
    if (c || s->nchoices == MAX_THREAD_CHOICES) return c;
    c = &s->choices[s->nchoices++];
    *c = (ThreadChoice){.k = k, .program = s->prog[k]->name, .batch = batch};
    return c;
}

/* The count for a batch size not chosen for: that of the nearest batch
 * size chosen for the same program (the last, smaller batch of an epoch
 * runs as the others), else every core. */
static int fallback(const Session *s, FnKind k, int64_t batch) {
    int threads = 0;
    double nearest = INFINITY;
    for (int i = 0; i < s->nchoices; i++) {
        const ThreadChoice *c = &s->choices[i];
        double apart = fabs(log((double)c->batch / (double)batch));
        if (c->k == k && c->threads && apart < nearest) nearest = apart, threads = c->threads;
    }
    return threads ? threads : nnrt_cores();
}

/* Seconds per call of `calls` calls. */
static double time_calls(Session *s, FnKind k, void *state, void **args, int64_t batch, int64_t calls) {
    double t0 = now_seconds();
    for (int64_t i = 0; i < calls; i++) session_call(s, k, state, args, batch);
    return (now_seconds() - t0) / (double)calls;
}

static void choose(Session *s, ThreadChoice *c, void **args) {
    double t0 = now_seconds();
    int n = c->ncandidates = candidates(c->candidates);
    if (n == 1) {
        c->threads = 1;
        c->kept = true;
        return;
    }
    size_t bytes = (size_t)s->m->state_size * (s->f64 ? sizeof(double) : sizeof(float));
    void *copy = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (!copy) { /* no room for a copy: keep every core, as without a choice */
        c->threads = c->candidates[n - 1];
        return;
    }
    memcpy(copy, s->state, bytes);
    /* one call at each count: a first estimate of a call's time, which
     * also starts the workers and touches the workspace */
    double per_call = INFINITY;
    for (int i = 0; i < n; i++) {
        nnrt_use_threads(c->candidates[i]);
        double t = time_calls(s, c->k, copy, args, c->batch, 1);
        if (t < per_call) per_call = t;
    }
    int64_t calls;
    int rounds;
    plan(per_call, n, &calls, &rounds);
    for (int i = 0; i < n; i++) c->candidate_seconds[i] = INFINITY;
    /* the counts take turns, starting one further each round, so that a
     * change in the machine's load does not fall on one count */
    for (int r = 0; r < rounds; r++)
        for (int j = 0; j < n; j++) {
            int i = (j + r) % n;
            nnrt_use_threads(c->candidates[i]);
            double t = time_calls(s, c->k, copy, args, c->batch, calls);
            if (t < c->candidate_seconds[i]) c->candidate_seconds[i] = t;
        }
    free(copy);
    int best = 0;
    for (int i = 1; i < n; i++)
        if (c->candidate_seconds[i] < c->candidate_seconds[best] * (1 - MARGIN)) best = i;
    c->threads = c->candidates[best];
    double took = now_seconds() - t0;
    c->choose_seconds += took;
    /* the next choice, in calls at this count */
    double wait = RECHOOSE_AFTER * ldexp(took, c->choices++) / c->candidate_seconds[best];
    c->since = 0;
    c->rechoose = wait < 1e15 ? (int64_t)wait + 1 : INT64_MAX;
}

const ThreadChoice *session_choose_threads(Session *s, FnKind k, void **args, int64_t batch) {
    if (s->dev || nnrt_threads_fixed()) return NULL;
    NNC_ASSERT(s->prog[k] && batch <= s->ws_batch);
    ThreadChoice *c = find_or_add(s, k, batch);
    if (c && !c->threads) choose(s, c, args);
    if (c) c->kept = true;
    return c;
}

/* Whether the calls made so far make choosing worth its time. */
static bool time_to_choose(const ThreadChoice *c) {
    if (c->calls < 3) return false; /* the first call (page faults, waking threads) is not timed */
    int counts = candidates((int[MAX_THREAD_CANDIDATES]){0});
    int64_t calls;
    int rounds;
    return c->seconds >= CHOOSE_AFTER * plan(c->seconds / (double)(c->calls - 1), counts, &calls, &rounds);
}

double threads_run(Session *s, FnKind k, void **args, int64_t batch) {
    ThreadChoice *c = find_or_add(s, k, batch);
    if (c && (c->threads ? !c->kept && ++c->since >= c->rechoose : time_to_choose(c))) choose(s, c, args);
    if (c && c->threads) {
        nnrt_use_threads(c->threads);
        return session_call(s, k, s->state, args, batch);
    }
    nnrt_use_threads(fallback(s, k, batch));
    if (!c) return session_call(s, k, s->state, args, batch);
    double t0 = now_seconds();
    double result = session_call(s, k, s->state, args, batch);
    if (c->calls++ > 0) c->seconds += now_seconds() - t0;
    return result;
}

void session_threads_report(const Session *s, ThreadsReport *r) {
    *r = (ThreadsReport){.fixed = nnrt_threads_fixed() ? nnrt_threads() : 0, .cores = nnrt_cores()};
    for (int i = 0; i < s->nchoices && !r->fixed; i++) {
        const ThreadChoice *c = &s->choices[i];
        if (!c->threads || r->n == THREADS_REPORTED) continue;
        r->program[r->n] = c->program;
        r->batch[r->n] = c->batch;
        r->threads[r->n++] = c->threads;
        r->choose_seconds += c->choose_seconds;
    }
}
