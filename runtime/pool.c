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
 * its caller alone, which is correct, only not parallel. */
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
    int threads; /* wanted, the caller included; 0 until set or first used */
    int started; /* workers running */
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
    pthread_cond_t wake;
} pool = {.busy = ATOMIC_FLAG_INIT, .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

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

static void *worker_main(void *arg) {
    unsigned seen = (unsigned)(uintptr_t)arg;
    inside_region = true; /* a worker's own regions run serially */
    for (;;) {
        unsigned gen = atomic_load_explicit(&pool.generation, memory_order_acquire);
        for (int spin = 0; gen == seen && spin < SPIN_ROUNDS; spin++) {
            CPU_RELAX();
            gen = atomic_load_explicit(&pool.generation, memory_order_acquire);
        }
        if (gen == seen) {
            pthread_mutex_lock(&pool.lock);
            while ((gen = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = gen;
        run_chunks(gen);
    }
    return NULL;
}

static int cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

void nnrt_set_threads(int n) {
    if (n <= 0) return;
    pool.threads = n > MAX_THREADS ? MAX_THREADS : n;
    nnrt_blas_threads(pool.threads);
}

int nnrt_threads(void) {
    if (pool.threads == 0) pool.threads = cores();
    return pool.threads;
}

/* Starts workers up to the wanted count (called with `busy` held). */
static void start_workers(int wanted) {
    while (pool.started < wanted - 1) {
        pthread_t t;
        uintptr_t gen = atomic_load(&pool.generation);
        if (pthread_create(&t, NULL, worker_main, (void *)gen)) break;
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
    int64_t chunks = (int64_t)(pool.started + 1) * CHUNKS_PER_THREAD;
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
