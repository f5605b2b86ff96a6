/* repl.h - the parts of `nnc repl` (cli/cmd_repl.c): editing the model's
 * source with statements typed at the prompt, and reading lines. */
#ifndef NNC_REPL_H
#define NNC_REPL_H

#include <stdbool.h>
#include <stddef.h>

/* ---- edit.c: statements typed at the prompt -------------------------------------- */

/* What a statement defines, so that a new one can take its place: "model",
 * "train" and "data" for those statements, the name for `NAME = ...`,
 * `output NAME = ...`, `metric NAME = ...`, `input NAME`, `target NAME`,
 * `param NAME` and `def NAME(...)`; an empty key for statements that add
 * to the model (loss, freeze, pretrained, output NAME). */
void statement_key(const char *stmt, size_t len, char *key, size_t size);

/* `text` with the statements of `stmts` (one, or several separated by
 * `;`) applied in order: each replaces the statement with the same key, or
 * goes in after the last statement defining a name it uses (at the end if
 * none). Returns a heap string; *replaced: some statement was replaced. */
char *source_apply(const char *text, const char *stmts, bool *replaced);

/* Whether brackets and braces of `text` are all closed (a statement
 * spanning lines is complete). */
bool statement_complete(const char *text);

/* ---- input.c: lines from a terminal (GNU readline) or from a pipe ------------------ */

/* Names offered by tab completion after the command word, e.g. the
 * model's tensors; returns the i-th, NULL past the last. */
typedef const char *(*CompletionNames)(void *ctx, int i);

void input_open(bool terminal, CompletionNames names, void *ctx);
/* The next line (heap string, no newline), NULL at the end of the input.
 * On a terminal lines go into the history. */
char *input_line(const char *prompt);
/* Trims ~/.nnc_history (each line went in as it was read) and frees the
 * history. */
void input_close(void);
/* The names of the REPL's commands, NULL-terminated (for completion). */
extern const char *const repl_command_names[];

#endif
