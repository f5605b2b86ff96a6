/* compiled.h - a model compiled for a test: its arena, its module and a JIT
 * session of it, made and released the same way in every test program. */
#ifndef NNC_TEST_COMPILED_H
#define NNC_TEST_COMPILED_H

#include "cli/driver.h"
#include "support/util.h"

#include <check.h>
#include <string.h>

typedef struct Compiled {
    Arena arena;
    Module *m;
    Session *s;
} Compiled;

/* The session of c->m: programs `fns` and init, a workspace for `batch`
 * examples, the state initialised from seed 1. */
static inline void compiled_start(Compiled *c, unsigned fns, bool f64, int64_t batch) {
    Diag d;
    diag_init(&d, c->m->src, stderr);
    c->s = session_create(c->m, fns | FN_BIT(FN_INIT), f64, &d);
    ck_assert_ptr_nonnull(c->s);
    ck_assert(session_reserve(c->s, batch));
    session_init(c->s, 1);
}

/* .nn text compiled (as "test.nn"), then compiled_start. */
static inline void compiled_from_text(Compiled *c, const char *text, unsigned fns, bool f64, int64_t batch) {
    memset(c, 0, sizeof *c);
    Diag d;
    diag_init(&d, NULL, stderr);
    c->m = nnc_compile_source(&c->arena, "test.nn", text, strlen(text), &d, NULL);
    ck_assert_msg(c->m != NULL, "the test model does not compile:\n%s", text);
    compiled_start(c, fns, f64, batch);
}

static inline void compiled_release(Compiled *c) {
    session_destroy(c->s);
    arena_free_all(&c->arena);
}

#endif
