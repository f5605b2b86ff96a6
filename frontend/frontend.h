/* frontend.h - from .nn source to a Module holding the model graph.
 *
 *   parse_program (parser.y)  text -> AST (ast.h)
 *   lower_program (lower.c)   AST  -> Module: names resolved, layers and
 *                                     defs expanded, every node typed
 *
 * Both report to the same Diag and keep going after an error, so one run
 * shows as many problems as it can. */
#ifndef NNC_FRONTEND_H
#define NNC_FRONTEND_H

#include "frontend/ast.h"
#include "ir/ir.h"

/* Builds m->model (and m->name, m->train_spec) from the program. Returns
 * false if anything was reported as an error. */
bool lower_program(Module *m, const Program *prog, Diag *d);

/* The names callable from the language (layers, functions, ops), for
 * documentation and completion; NULL-terminated. */
const char *const *frontend_builtin_names(void);

#endif
