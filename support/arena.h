/* arena.h - bump allocation for everything a compilation builds.
 *
 * The compiler is short-lived and its data structures (AST, graphs, kernel
 * programs) all die together, so they come from one arena that is freed at
 * once. Only JIT code and runtime buffers have lifetimes of their own. */
#ifndef NNC_ARENA_H
#define NNC_ARENA_H

#include <stddef.h>
#include <string.h>

typedef struct ArenaChunk ArenaChunk;

typedef struct Arena {
    ArenaChunk *head;
    size_t bytes_used; /* total handed out, for statistics */
} Arena;

void  *arena_alloc(Arena *a, size_t size);   /* zeroed, 16-byte aligned */
void  *arena_realloc(Arena *a, void *old, size_t old_size, size_t new_size);
char  *arena_strdup(Arena *a, const char *s);
char  *arena_strndup(Arena *a, const char *s, size_t n);
char  *arena_printf(Arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void   arena_free_all(Arena *a);

#define ARENA_NEW(a, T) ((T *)arena_alloc((a), sizeof(T)))
#define ARENA_ARRAY(a, T, n) ((T *)arena_alloc((a), sizeof(T) * (size_t)(n)))

/* Growable arrays backed by an arena: `T *items; int n, cap;` fields. */
#define VEC_PUSH(arena, items, n, cap, value)                                         \
    do {                                                                              \
        if ((n) == (cap)) {                                                           \
            int new_cap_ = (cap) ? (cap) * 2 : 8;                                     \
            (items) = arena_realloc((arena), (items), sizeof(*(items)) * (size_t)(cap), \
                                    sizeof(*(items)) * (size_t)new_cap_);             \
            (cap) = new_cap_;                                                         \
        }                                                                             \
        (items)[(n)++] = (value);                                                     \
    } while (0)

#endif
