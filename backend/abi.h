/* abi.h - the C interface of a compiled model: the generated header, and the
 * "glue" that implements it on top of the compiled programs.
 *
 * The same generator serves both ways of shipping a model, so they cannot
 * drift apart:
 *
 *   shared library / object   glue calls the LLVM-compiled programs and the
 *                             runtime's checkpoint code (libnnrt)
 *   standalone C (--emit-c)   glue calls the C-emitted programs and the
 *                             checkpoint code emitted into the same file
 *
 * Every exported symbol starts with the model's name, nothing is global and
 * mutable, and all memory is the caller's: see the header's own comments
 * (abi_write_header) and docs/abi.md. */
#ifndef NNC_ABI_H
#define NNC_ABI_H

#include "ir/kir.h"

#include <stdbool.h>
#include <stdio.h>

typedef enum {
    ABI_LIBRARY, /* glue for a shared library or object (programs are external, hidden) */
    ABI_C,       /* glue appended to a standalone C file (programs are static, defined before it) */
} AbiTarget;

/* The model and its programs; forward, eval and init are always there,
 * train only for a model with a loss. */
typedef struct AbiModel {
    const Module *m;
    const KProgram *forward, *eval, *train, *init;
    const char *source;    /* the .nn file it came from, for comments */
    const float *weights;  /* trained parameters to embed (ABI_C only), or NULL */
    bool threads;          /* products run on the runtime's threads (library, object): MODEL_set_threads */
} AbiModel;

/* The name of program `p`'s internal function, e.g. "mnist_mlp__train_step". */
const char *abi_program_symbol(Arena *a, const Module *m, const KProgram *p);

/* The header (model.h): types, sizes and documented functions. */
void abi_write_header(FILE *out, const AbiModel *a);

/* The definitions of the header's functions. `header_name` is how the glue
 * includes the header (e.g. "mnist_mlp.h"). */
void abi_write_glue(FILE *out, const AbiModel *a, AbiTarget target, const char *header_name);

#endif
