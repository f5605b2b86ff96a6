/* pipeline.c - the passes, in order, with printing and verification between
 * them. Adding a pass means adding a line to `pipeline`. */
#include "passes/passes.h"

#include <string.h>

typedef struct Pass {
    const char *name;
    bool (*run)(Module *m, Diag *d);
} Pass;

static const Pass pipeline[] = {
    {"shape", pass_shape},
    {"derive", pass_derive},
    {"autodiff", pass_autodiff},
    {"optimizer", pass_optimizer},
    {"simplify", pass_simplify},
};

enum { NPASSES = sizeof pipeline / sizeof pipeline[0] };

const char *const transform_names[XF_COUNT] = {"simplify", "fuse", "memplan", "coalesce"};

const char *const pass_names[] = {"shape", "derive", "autodiff", "optimizer", "simplify", NULL};

static bool verify_module(const Module *m, const char *after) {
    const Graph *graphs[] = {m->model, m->forward, m->eval, m->grad, m->train, m->apply};
    bool ok = true;
    for (size_t i = 0; i < sizeof graphs / sizeof graphs[0]; i++) {
        if (!graphs[i]) continue;
        ok &= graph_verify(graphs[i], stderr);
        ok &= pass_shape_recheck(graphs[i], stderr);
    }
    if (!ok) fprintf(stderr, "nnc: internal error: the IR is malformed after pass '%s'\n", after);
    return ok;
}

bool run_pipeline(Module *m, Diag *d, const PassOptions *opts) {
    PassOptions none = {0};
    if (!opts) opts = &none;
    bool verify = opts->verify_each;
#ifdef NNC_VERIFY_EACH_PASS
    verify = true;
#endif
    FILE *print_to = opts->print_to ? opts->print_to : stdout;
    if (opts->opt) m->opt = *opts->opt;
    if (verify && !verify_module(m, "frontend")) return false;
    for (int i = 0; i < NPASSES; i++) {
        if (!pipeline[i].run(m, d) || d->nerrors) return false;
        if (verify && !verify_module(m, pipeline[i].name)) return false;
        const char *pa = opts->print_after;
        if (pa && (strcmp(pa, "all") == 0 || strcmp(pa, pipeline[i].name) == 0)) {
            fprintf(print_to, "; after %s\n", pipeline[i].name);
            module_print(print_to, m);
        }
    }
    return true;
}
