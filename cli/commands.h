/* commands.h - the subcommands of `nnc`, one file each. Each returns the
 * process exit status: 0 success, 1 a user error (already reported), 2 bad
 * usage. */
#ifndef NNC_COMMANDS_H
#define NNC_COMMANDS_H

#include "cli/driver.h"

#include <stdbool.h>
#include <stdio.h>

int cmd_emit(int argc, char **argv);  /* nnc FILE.nn [--emit-...]  (cmd_emit.c)  */
int cmd_train(int argc, char **argv); /* nnc train FILE.nn        (cmd_train.c) */
int cmd_check(int argc, char **argv); /* nnc check FILE.nn        (cmd_check.c) */
int cmd_eval(int argc, char **argv);  /* nnc eval FILE.nn         (cmd_eval.c)  */
int cmd_predict(int argc, char **argv); /* nnc predict FILE.nn    (cmd_eval.c)  */
int cmd_tune(int argc, char **argv);  /* nnc tune FILE.nn         (cmd_tune.c)  */
int cmd_bench(int argc, char **argv); /* nnc bench FILE.nn        (cmd_bench.c) */
int cmd_repl(int argc, char **argv);  /* nnc repl [FILE.nn]       (cmd_repl.c)  */

void usage_emit(FILE *out);
void usage_train(FILE *out);
void usage_check(FILE *out);
void usage_eval(FILE *out);
void usage_predict(FILE *out);
void usage_tune(FILE *out);
void usage_bench(FILE *out);
void usage_repl(FILE *out);

/* The LLVM module of m's programs, optimised for `cpu`, printed (cmd_emit.c). */
int emit_llvm(FILE *out, Module *m, bool f64, const char *cpu, Diag *d);
/* A table of the model's outputs `out` (width values per example) for the
 * examples of `part`, numbered from `first`: for classifiers the `top` most
 * likely classes with their probabilities (cmd_eval.c). */
void print_predictions(const Task *task, const RtDataset *part, int64_t first, const float *out, int64_t width,
                       int64_t top, const char *name);

/* getopt_long with nnc's messages: an unknown option gets the nearest
 * known name ("did you mean '--epochs'?"), a missing value is named, and
 * both end with a pointer to `nnc help COMMAND`. Returns '?' after
 * reporting. */
struct option;
int nnc_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts, const char *command);

/* Parses a number option; prints an error naming the option on failure. */
bool parse_int_option(const char *opt, const char *text, long long lo, long long *out);
bool parse_real_option(const char *opt, const char *text, double *out);

/* The options of every command that compiles a model: -O LEVEL,
 * --disable-pass=NAME[,NAME], --slices N, --device cpu|cuda and --tf32. Add COMPILE_SHORTOPTS to getopt's string and
 * COMPILE_LONGOPTS to its table; parse_compile_option takes the option
 * code and returns false after reporting a bad value. */
#define COMPILE_SHORTOPTS "O:"
#define OPTION_DISABLE_PASS 0x100
#define OPTION_DEVICE 0x101
#define OPTION_TF32 0x102
#define OPTION_SLICES 0x103
#define COMPILE_LONGOPTS                                                                                 \
    {"disable-pass", required_argument, NULL, OPTION_DISABLE_PASS},                                      \
        {"slices", required_argument, NULL, OPTION_SLICES}, {"device", required_argument, NULL, OPTION_DEVICE}, \
        {"tf32", no_argument, NULL, OPTION_TF32}
#define COMPILE_HELP                                                                                     \
    "  -O LEVEL             LLVM's optimisation level, 0 to 3 (default 3; -O1 compiles faster)\n"     \
    "  --disable-pass=LIST  turn off optional transformations: simplify, fuse, memplan, coalesce (or all)\n" \
    "  --slices N           a training step may run its batch in N slices, one a thread (default: one\n" \
    "                       a core, or --threads; 1: never); part of the program and its results\n"    \
    "  --device DEV         cpu (default) or cuda: run the programs on an NVIDIA GPU\n"               \
    "  --tf32               with --device cuda: matrix products may use TF32 tensor cores\n"
struct OptSettings;
bool parse_compile_option(int code, const char *arg, struct OptSettings *o);
bool is_compile_option(int code);

/* Whether `pass` names a pass of the pipeline or is "all" (--print-after,
 * the REPL's `show ir PASS`); if not, reports it after `prefix`, with the
 * nearest name and the list. */
bool check_pass_name(const char *pass, const char *prefix);

#endif
