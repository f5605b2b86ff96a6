/* session.c - a module compiled in memory: its programs JIT-ed into one
 * LLVM module, the model state, and one workspace arena. */
#include "cli/driver.h"
#include "runtime/checkpoint.h"
#include "runtime/nnrt.h"
#include "support/util.h"

#include <stdlib.h>
#include <string.h>

static void *aligned_zeroed(size_t bytes) {
    size_t size = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, size ? size : 64);
    if (!p) return NULL;
    memset(p, 0, size ? size : 64);
    return p;
}

/* The host's copy of the state; destroys the session on failure. The
 * compile time ends before it: zeroing a large model's state is not
 * compiling. */
static bool host_state(Session *s, Diag *d, double t0) {
    s->compile_seconds = now_seconds() - t0;
    size_t real = s->f64 ? sizeof(double) : sizeof(float);
    s->state = aligned_zeroed((size_t)s->m->state_size * real);
    if (!s->state) {
        diag_error(d, SPAN_NONE, "out of memory for the model state (%lld values)", (long long)s->m->state_size);
        session_destroy(s);
        return false;
    }
    return true;
}

Session *session_create(Module *m, unsigned which, bool f64, Diag *d) {
    double t0 = now_seconds();
    const Graph *graphs[FN_COUNT] = {m->forward, m->eval, m->grad, m->train, NULL};
    Session *s = xcalloc(1, sizeof *s);
    s->m = m;
    s->f64 = f64;
    char *err = NULL;
    s->jit = nnc_jit_create(&err);
    if (!s->jit) {
        diag_error(d, SPAN_NONE, "cannot start the JIT: %s", err);
        LLVMDisposeMessage(err);
        free(s);
        return NULL;
    }
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(m->name, nnc_jit_context(s->jit));
    char *names[FN_COUNT] = {0};
    for (int k = 0; k < FN_COUNT; k++) {
        if (!(which & FN_BIT(k))) continue;
        if (k != FN_INIT && !graphs[k]) {
            diag_error(d, SPAN_NONE, "the model has no loss statement, so it cannot be trained or checked");
            LLVMDisposeModule(mod);
            session_destroy(s);
            return NULL;
        }
        s->prog[k] = k == FN_INIT    ? lower_init(m, f64)
                     : k == FN_TRAIN ? lower_train(m, f64, train_slices(m))
                                     : lower_graph(m, graphs[k], (ProgKind)k, f64);
        names[k] = arena_printf(m->arena, "%s_%s", m->name, s->prog[k]->name);
        if (!m->opt.cuda) llvm_emit_program(mod, s->prog[k], names[k]);
    }
#ifdef NNC_HAVE_CUDA
    if (m->opt.cuda) {
        LLVMDisposeModule(mod);
        if (!cuda_session_create(s, m->opt.tf32, d)) {
            session_destroy(s);
            return NULL;
        }
        return host_state(s, d, t0) ? s : NULL;
    }
#endif
    double t_llvm = now_seconds();
    /* LLVM compiles on the cores the programs run on: --threads N limits both. */
    int threads = threads_for_programs();
    if (!(s->compile_parts = nnc_jit_add(s->jit, mod, m->opt.level, threads, &err))) {
        diag_error(d, SPAN_NONE, "code generation failed: %s", err);
        LLVMDisposeMessage(err);
        session_destroy(s);
        return NULL;
    }
    double t_link = now_seconds();
    s->llvm_seconds = t_link - t_llvm;
    for (int k = 0; k < FN_COUNT; k++)
        if (names[k] && !(s->fn[k] = nnc_jit_lookup(s->jit, names[k]))) {
            session_destroy(s);
            return NULL;
        }
    /* LLJIT links the objects at the first lookup. */
    s->link_seconds = now_seconds() - t_link;
    return host_state(s, d, t0) ? s : NULL;
}

void session_destroy(Session *s) {
    if (!s) return;
#ifdef NNC_HAVE_CUDA
    cuda_session_destroy(s);
#endif
    nnc_jit_destroy(s->jit);
    free(s->state);
    free(s->workspace);
    free(s);
}

double session_run(Session *s, FnKind k, void **args, int64_t batch) {
    NNC_ASSERT(s->prog[k] && batch <= s->ws_batch);
#ifdef NNC_HAVE_CUDA
    if (s->dev) return cuda_session_run(s, k, args, batch, 0);
#endif
    if (!nnrt_threads_fixed()) return threads_run(s, k, args, batch);
    return session_call(s, k, s->state, args, batch);
}

double session_call(Session *s, FnKind k, void *state, void **args, int64_t batch) {
    if (s->f64) return ((NncFn64)s->fn[k])(state, args, batch, s->workspace, 0);
    return ((NncFn32)s->fn[k])(state, args, batch, s->workspace, 0);
}

void session_init(Session *s, uint64_t seed) {
    NNC_ASSERT(s->prog[FN_INIT]);
#ifdef NNC_HAVE_CUDA
    if (s->dev) {
        cuda_session_run(s, FN_INIT, NULL, 0, seed);
        session_from_device(s);
        return;
    }
#endif
    if (s->f64) ((NncFn64)s->fn[FN_INIT])(s->state, NULL, 0, NULL, seed);
    else ((NncFn32)s->fn[FN_INIT])(s->state, NULL, 0, NULL, seed);
}

bool session_reserve(Session *s, int64_t batch) {
    if (batch <= s->ws_batch) return true;
    int64_t need = 0;
    for (int k = 0; k < FN_COUNT; k++)
        if (s->prog[k]) {
            int64_t n = kprog_workspace_size(s->prog[k], batch);
            if (n > need) need = n;
        }
#ifdef NNC_HAVE_CUDA
    if (s->dev) {
        if (!cuda_session_reserve(s, batch, need)) return false;
        s->ws_batch = batch;
        return true;
    }
#endif
    void *ws = aligned_zeroed((size_t)need * (s->f64 ? sizeof(double) : sizeof(float)));
    if (!ws) return false;
    free(s->workspace);
    s->workspace = ws;
    s->ws_batch = batch;
    return true;
}

void session_from_device(Session *s) {
#ifdef NNC_HAVE_CUDA
    if (s->dev) cuda_session_copy_state(s, false);
#else
    (void)s;
#endif
}

void session_to_device(Session *s) {
#ifdef NNC_HAVE_CUDA
    if (s->dev) cuda_session_copy_state(s, true);
#else
    (void)s;
#endif
}

void *session_slot(Session *s, const char *name) {
    const StateSlot *slot = module_find_slot(s->m, name);
    if (!slot) return NULL;
    size_t real = s->f64 ? sizeof(double) : sizeof(float);
    return (char *)s->state + (size_t)slot->offset * real;
}

NnrtTensor *module_tensor_table(const Module *m) {
    NnrtTensor *t = ARENA_ARRAY(m->arena, NnrtTensor, m->nslots + 1);
    for (int i = 0; i < m->nslots; i++) {
        const StateSlot *s = &m->slots[i];
        t[i] = (NnrtTensor){
            .name = s->name,
            .kind = s->flags & NF_HYPER ? NNRT_HYPER : s->flags & NF_OPT_STATE ? NNRT_OPT_STATE : NNRT_PARAM,
            .rank = s->type.rank, .offset = s->offset, .size = s->size,
        };
        for (int k = 0; k < s->type.rank; k++) t[i].dims[k] = s->type.dim[k];
    }
    return t;
}

bool session_save(Session *s, const char *path, Diag *d) {
    NNC_ASSERT(!s->f64);
    char err[1024];
    session_from_device(s);
    if (nnrt_checkpoint_save(s->state, module_tensor_table(s->m), s->m->nslots, s->m->name, path, err, sizeof err) == 0)
        return true;
    diag_error(d, SPAN_NONE, "%s", err);
    return false;
}

bool session_load(Session *s, const char *path, int required, Diag *d) {
    NNC_ASSERT(!s->f64);
    char err[1024];
    if (nnrt_checkpoint_load(s->state, module_tensor_table(s->m), s->m->nslots, required, path, err, sizeof err) == 0) {
        session_to_device(s);
        return true;
    }
    diag_error(d, SPAN_NONE, "%s", err);
    return false;
}

/* The parameters one pretrained statement names, loaded from its file
 * (relative to the .nn file). */
static bool load_pretrained(Session *s, const Pretrained *p, bool quiet, Diag *d) {
    const Module *m = s->m;
    char path[4096];
    if (p->path[0] == '/' || !m->src) snprintf(path, sizeof path, "%s", p->path);
    else {
        const char *slash = strrchr(m->src->path, '/');
        snprintf(path, sizeof path, "%.*s%s", slash ? (int)(slash - m->src->path + 1) : 0, m->src->path, p->path);
    }
    NnrtTensor *all = module_tensor_table(m), *some = ARENA_ARRAY(m->arena, NnrtTensor, m->nslots + 1);
    int n = 0;
    for (int i = 0; i < m->nslots; i++) {
        if (all[i].kind != NNRT_PARAM) continue;
        bool wanted = p->nnames == 0;
        for (int k = 0; k < p->nnames && !wanted; k++) {
            size_t len = strlen(p->names[k]);
            wanted = strcmp(all[i].name, p->names[k]) == 0 ||
                     (strncmp(all[i].name, p->names[k], len) == 0 && all[i].name[len] == '.');
        }
        if (wanted) some[n++] = all[i];
    }
    char err[1024];
    /* Named parameters must all be there; "every param the file has" takes what it finds. */
    if (nnrt_checkpoint_load(s->state, some, n, p->nnames ? NNRT_PARAM : 0, path, err, sizeof err) != 0) {
        diag_error(d, p->span, "%s", err);
        return false;
    }
    if (!quiet) printf("loaded %d pretrained parameter tensor%s from %s\n", n, n == 1 ? "" : "s", path);
    return true;
}

bool session_load_pretrained(Session *s, bool quiet, Diag *d) {
    for (int i = 0; i < s->m->npretrained; i++)
        if (!load_pretrained(s, &s->m->pretrained[i], quiet, d)) return false;
    return true;
}
