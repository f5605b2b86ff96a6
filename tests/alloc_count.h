/* alloc_count.h - counting heap allocations, for the tests that a training
 * step allocates nothing:
 *
 *   alloc_count_start();  ...  long calls = alloc_count_stop();
 *
 * counts every call that allocates or frees memory in between, in any
 * thread. Include it in one file of a test program: it defines malloc and
 * its kin for the whole process, forwarding them to glibc, so every library
 * the program uses (OpenBLAS too) is counted. Under AddressSanitizer, which
 * owns malloc, its allocation hooks count instead. */
#ifndef NNC_ALLOC_COUNT_H
#define NNC_ALLOC_COUNT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

static atomic_bool alloc_counting;
static atomic_long alloc_calls;

static inline void alloc_count(void) {
    if (atomic_load_explicit(&alloc_counting, memory_order_relaxed)) atomic_fetch_add(&alloc_calls, 1);
}

#if defined(__SANITIZE_ADDRESS__)
/* From libasan (GCC ships no header for it). */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
static void on_malloc(const volatile void *p, size_t n) {
    (void)p, (void)n;
    alloc_count();
}
static void on_free(const volatile void *p) {
    if (p) alloc_count();
}
static inline void alloc_hooks(void) {
    static bool installed;
    if (!installed) __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
    installed = true;
}
#else
/* glibc's allocator under its own names */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *p);

void *malloc(size_t size) {
    alloc_count();
    return __libc_malloc(size);
}
void *calloc(size_t n, size_t size) {
    alloc_count();
    return __libc_calloc(n, size);
}
void *realloc(void *p, size_t size) {
    alloc_count();
    return __libc_realloc(p, size);
}
void free(void *p) {
    if (p) alloc_count();
    __libc_free(p);
}
void *aligned_alloc(size_t align, size_t size) {
    alloc_count();
    return __libc_memalign(align, size);
}
void *memalign(size_t align, size_t size) {
    alloc_count();
    return __libc_memalign(align, size);
}
int posix_memalign(void **out, size_t align, size_t size) {
    alloc_count();
    void *p = __libc_memalign(align, size);
    if (!p) return 12; /* ENOMEM */
    *out = p;
    return 0;
}
static inline void alloc_hooks(void) {}
#endif

static inline void alloc_count_start(void) {
    alloc_hooks();
    atomic_store(&alloc_calls, 0);
    atomic_store(&alloc_counting, true);
}

static inline long alloc_count_stop(void) {
    atomic_store(&alloc_counting, false);
    return atomic_load(&alloc_calls);
}

#endif
