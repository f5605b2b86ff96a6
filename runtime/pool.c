/* pool.c - the runtime's threads: nnrt_parallel_for splits a range of work
 * over the calling thread and a set of persistent workers.
 *
 * A training step runs many short parallel regions (a few microseconds
 * each), so waking a thread through the kernel each time would cost more
 * than the work. Workers therefore spin on a generation counter for a while
 * after each region and only then sleep on a condition variable. The range
 * is cut into a few chunks per thread that any thread, the caller
 * included, claims in turn, so a worker the system is slow to schedule
 * never holds the others up. Nothing is allocated per region: the workers are
 * created on the first parallel call and live until the process ends.
 *
 * A region started while another is running (from a worker, or from a
 * second thread of the program calling a model at the same time) runs on
 * its caller alone, which is correct, only not parallel.
 *
 * The thread count can change between regions: the caller fixes it
 * (nnrt_set_threads, the --threads option) or lets the driver pick one per
 * program and batch size (nnrt_use_threads, cli/thread_choice.c). Workers
 * beyond the count sleep until it grows again, so a lowered count leaves
 * their cores free rather than spinning on them. */
#define _GNU_SOURCE /* sched_getaffinity */
#include "runtime/nnrt.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

enum { MAX_THREADS = 64, SPIN_ROUNDS = 1 << 16, CHUNKS_PER_THREAD = 4 };

/* The region running: fn over [0, n) in `chunks` contiguous chunks. */
typedef struct Region {
    NnrtRangeFn fn;
    void *ctx;
    int64_t n;
    int64_t chunks;
} Region;

static struct {
    atomic_int threads; /* wanted, the caller included; 0 until set or first used */
    bool fixed;  /* set by nnrt_set_threads: nnrt_use_threads leaves it */
    int blas;    /* the count OpenBLAS was last given (0: never, its own default) */
    int started; /* workers running */
    atomic_int helpers;  /* workers that take part in regions: threads - 1 */
    uint64_t regions;    /* regions run on more than one thread */
    Region region;
    /* Chunks are claimed from `claim`: the region's generation in the high
     * half, the next chunk in the low half. A thread holding a claimed chunk
     * keeps its region alive (the caller waits for every chunk to be done),
     * so the region read after a successful claim is the right one. */
    _Atomic uint64_t claim;
    atomic_int done;        /* chunks finished in the current region */
    atomic_uint generation; /* bumped when a region starts */
    atomic_flag busy;       /* a region is running */
    pthread_mutex_t lock;
    pthread_cond_t wake; /* a region started */
    pthread_cond_t more; /* the count grew: idle workers may be needed */
} pool = {.busy = ATOMIC_FLAG_INIT, .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
          .more = PTHREAD_COND_INITIALIZER};

static _Thread_local bool inside_region;

/* Runs chunks of region `gen` until none is left unclaimed. Any thread
 * may do any chunk, so a worker the system has not scheduled yet delays
 * nothing: the others take its share. */
static void run_chunks(unsigned gen) {
    for (;;) {
        uint64_t c = atomic_load_explicit(&pool.claim, memory_order_acquire);
        if ((unsigned)(c >> 32) != gen || (int64_t)(c & 0xFFFFFFFFu) >= pool.region.chunks) return;
        if (!atomic_compare_exchange_weak_explicit(&pool.claim, &c, c + 1, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue;
        const Region *r = &pool.region;
        int64_t chunk = (int64_t)(c & 0xFFFFFFFFu);
        int64_t lo = r->n * chunk / r->chunks, hi = r->n * (chunk + 1) / r->chunks;
        if (lo < hi) r->fn(r->ctx, lo, hi);
        atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
    }
}

/* Worker `index` (0 for the first) takes part while index < helpers. */
static bool needed(int index) { return index < atomic_load_explicit(&pool.helpers, memory_order_relaxed); }

/* arg: the worker's index in the high half, the generation when it was
 * created in the low half (so it joins the region about to start). */
static void *worker_main(void *arg) {
    int index = (int)((uintptr_t)arg >> 32);
    unsigned seen = (unsigned)((uintptr_t)arg & 0xFFFFFFFFu);
    inside_region = true; /* a worker's own regions run serially */
    for (;;) {
        if (!needed(index)) {
            pthread_mutex_lock(&pool.lock);
            while (!needed(index)) pthread_cond_wait(&pool.more, &pool.lock);
            seen = atomic_load_explicit(&pool.generation, memory_order_acquire);
            pthread_mutex_unlock(&pool.lock);
        }
        /* a worker the count no longer needs spins out its time too, so
         * that a count lowered and raised again soon (as while choosing
         * one) finds it awake */
        unsigned gen = atomic_load_explicit(&pool.generation, memory_order_acquire);
        for (int spin = 0; gen == seen && spin < SPIN_ROUNDS; spin++) {
            CPU_RELAX();
            gen = atomic_load_explicit(&pool.generation, memory_order_acquire);
        }
        if (gen == seen) {
            pthread_mutex_lock(&pool.lock);
            while ((gen = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen && needed(index))
                pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = gen;
        if (needed(index)) run_chunks(gen);
    }
    return NULL;
}

/* The cores this process may run on (taskset, a container's CPU set), or
 * the machine's; counted once. */
int nnrt_cores(void) {
    static atomic_int known;
    int cores = atomic_load_explicit(&known, memory_order_relaxed);
    if (cores) return cores;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) n = CPU_COUNT(&set);
    cores = n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
    atomic_store_explicit(&known, cores, memory_order_relaxed);
    return cores;
}

/* Makes n (clamped) the count of the regions to come, OpenBLAS's too. */
static void change_threads(int n) {
    n = n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n;
    if (pool.blas != n) {
        nnrt_blas_threads(n);
        pool.blas = n;
    }
    if (atomic_load_explicit(&pool.threads, memory_order_relaxed) == n) return;
    pthread_mutex_lock(&pool.lock);
    atomic_store_explicit(&pool.threads, n, memory_order_relaxed);
    atomic_store_explicit(&pool.helpers, n - 1, memory_order_relaxed);
    /* workers asleep for a lower count, and those waiting for a region
     * (which go to sleep until the count needs them), look at it again */
    pthread_cond_broadcast(&pool.more);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
}

void nnrt_set_threads(int n) {
    pool.fixed = n > 0;
    change_threads(n > 0 ? n : nnrt_cores());
}

void nnrt_use_threads(int n) {
    if (!pool.fixed && n > 0) change_threads(n);
}

bool nnrt_threads_fixed(void) { return pool.fixed; }

int nnrt_threads(void) {
    int n = atomic_load_explicit(&pool.threads, memory_order_relaxed);
    if (n) return n;
    /* first use: every core (a lost race stores the same) */
    n = nnrt_cores();
    atomic_store_explicit(&pool.helpers, n - 1, memory_order_relaxed);
    atomic_store_explicit(&pool.threads, n, memory_order_relaxed);
    return n;
}

uint64_t nnrt_parallel_regions(void) { return pool.regions; }

/* Starts workers up to the wanted count (called with `busy` held). */
static void start_workers(int wanted) {
    while (pool.started < wanted - 1) {
        pthread_t t;
        uintptr_t arg = (uintptr_t)pool.started << 32 | atomic_load(&pool.generation);
        if (pthread_create(&t, NULL, worker_main, (void *)arg)) break;
        pthread_detach(t);
        pool.started++;
    }
}

void nnrt_parallel_for(int64_t n, NnrtRangeFn fn, void *ctx) {
    int threads = nnrt_threads();
    if (n <= 0) return;
    if (threads <= 1 || n == 1 || inside_region ||
        atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire)) {
        fn(ctx, 0, n);
        return;
    }
    start_workers(threads);
    int helpers = pool.started < threads - 1 ? pool.started : threads - 1;
    int64_t chunks = (int64_t)(helpers + 1) * CHUNKS_PER_THREAD;
    pool.regions++;
    pool.region = (Region){fn, ctx, n, chunks < n ? chunks : n};
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    pthread_mutex_lock(&pool.lock);
    unsigned gen = atomic_load_explicit(&pool.generation, memory_order_relaxed) + 1;
    atomic_store_explicit(&pool.claim, (uint64_t)gen << 32, memory_order_release);
    atomic_store_explicit(&pool.generation, gen, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);

    inside_region = true;
    run_chunks(gen);
    inside_region = false;
    /* Every chunk is claimed; wait for those still running elsewhere,
     * letting their threads have this core if the system is busy. */
    for (int spin = 0; atomic_load_explicit(&pool.done, memory_order_acquire) < pool.region.chunks; spin++)
        if (spin < SPIN_ROUNDS)
            CPU_RELAX();
        else
            sched_yield();
    atomic_flag_clear_explicit(&pool.busy, memory_order_release);
}
