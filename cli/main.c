/* main.c - the `nnc` command: dispatch to a subcommand. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "passes/passes.h"
#include "support/util.h"

#include <getopt.h>
#include <llvm-c/Core.h>
#include <unistd.h>

static void usage(FILE *out) {
    fputs("usage: nnc FILE.nn -o MODEL.so | MODEL.o | MODEL.c [--weights CKPT] [--cpu CPU]\n"
          "       nnc FILE.nn [--emit-ir | --emit-kir | --emit-llvm | --emit-dot] [--print-after=PASS]\n"
          "       nnc train FILE.nn [--epochs N] [--batch N] [--lr X] [--save CKPT] [--load CKPT] ...\n"
          "       nnc eval FILE.nn --load CKPT [--split test|train|val]\n"
          "       nnc predict FILE.nn --load CKPT [--first I] [--count N]\n"
          "       nnc tune FILE.nn --param lr=1e-4..1e-1:log --param batch=32,64 [--trials N]\n"
          "       nnc check FILE.nn [--batch N] [--samples N] [--tolerance X]\n"
          "       nnc bench FILE.nn [--batch N] [--threads N] [--json]\n"
          "       nnc repl [FILE.nn] [--seed N] [--strict]\n"
          "       nnc help [COMMAND]\n"
          "       nnc --version\n"
          "\n"
          "nnc compiles a neural network written in the .nn language into native code\n"
          "that trains and runs it.\n"
          "\n"
          "commands:\n"
          "  compile  (or FILE.nn alone) a shared library, object or C file with its header,\n"
          "           or its IR, kernels, LLVM module or a picture of its graphs\n"
          "  train    JIT-compile and train on Fashion-MNIST (or MNIST-format data), with\n"
          "           a progress bar, --plot curves.svg, --json for tools\n"
          "  eval     loss and accuracy of a checkpoint on a data set\n"
          "  predict  class probabilities of a checkpoint for examples of a data set\n"
          "  tune     random search over hyper-parameters, scored on validation data\n"
          "  bench    compile time, training and inference speed, memory\n"
          "  check    compare every parameter's derived gradient with finite differences\n"
          "  repl     load, train, inspect and edit a model interactively\n"
          "  help     show the options of a command\n"
          "\n"
          "Run 'nnc help COMMAND' for a command's options, 'man nnc' for all of them.\n",
          out);
}

/* The subcommands: what runs them and what `nnc help NAME` shows. */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    void (*usage)(FILE *out);
} commands[] = {
    {"train", cmd_train, usage_train}, {"eval", cmd_eval, usage_eval},    {"predict", cmd_predict, usage_predict},
    {"tune", cmd_tune, usage_tune},    {"check", cmd_check, usage_check}, {"bench", cmd_bench, usage_bench},
    {"repl", cmd_repl, usage_repl},    {"compile", cmd_emit, usage_emit}, /* also what a file name as the first argument does */
};
enum { NCOMMANDS = sizeof commands / sizeof commands[0] };

/* The end of a message about a misspelt command: the nearest, or the list. */
static const char *command_hint(const char *name, char *buf, size_t size) {
    const char *names[NCOMMANDS + 1];
    for (int i = 0; i < NCOMMANDS; i++) names[i] = commands[i].name;
    names[NCOMMANDS] = "help";
    if (!*did_you_mean(name, names, NCOMMANDS + 1, buf, size))
        snprintf(buf, size, "; the commands are compile, train, eval, predict, tune, check, bench, repl and help");
    return buf;
}

static int help(const char *topic) {
    if (!topic) {
        usage(stdout);
        return 0;
    }
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(topic, commands[i].name) == 0 || (commands[i].usage == usage_emit && strcmp(topic, "emit") == 0)) {
            commands[i].usage(stdout);
            return 0;
        }
    char hint[DID_YOU_MEAN_MAX];
    fprintf(stderr, "nnc: error: no help for '%s'%s\n", topic, command_hint(topic, hint, sizeof hint));
    return 2;
}

int nnc_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts, const char *command) {
    opterr = 0; /* the messages are ours, with a suggestion */
    int c = getopt_long(argc, argv, shortopts, longopts, NULL);
    if (c != '?') return c;
    /* The element at fault: the one just passed, or for a letter inside a
     * cluster ("-epochs" read as -e -p ...), the one getopt is still in. */
    const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
    if (optopt && optind < argc && argv[optind][0] == '-' && argv[optind][1] == optopt) arg = argv[optind];
    char name[64];
    snprintf(name, sizeof name, "%s", arg + strspn(arg, "-"));
    name[strcspn(name, "=")] = '\0';
    bool is_long = arg[0] == '-' && arg[1] == '-';
    /* a known option without its value, or with one it does not take */
    for (int i = 0; longopts[i].name; i++)
        if (is_long && strcmp(longopts[i].name, name) == 0) {
            fprintf(stderr, "nnc: error: option '--%s' %s\n", name,
                    longopts[i].has_arg == no_argument ? "takes no value" : "needs a value");
            goto hint;
        }
    if (optopt && strchr(shortopts, optopt) && optopt != ':') {
        fprintf(stderr, "nnc: error: option '-%c' needs a value\n", optopt);
        goto hint;
    }
    const char *names[64];
    int n = 0;
    for (int i = 0; longopts[i].name && n < 64; i++) names[n++] = longopts[i].name;
    const char *near = closest_name(name, names, n);
    /* a single dash before a long name ("-epochs") is a likely slip too */
    if (near && (is_long || strlen(name) > 1)) fprintf(stderr, "nnc: error: unknown option '%s'; did you mean '--%s'?\n", arg, near);
    else if (is_long || !optopt) fprintf(stderr, "nnc: error: unknown option '%s'\n", arg);
    else fprintf(stderr, "nnc: error: unknown option '-%c'\n", optopt);
hint:
    fprintf(stderr, "Run 'nnc help %s' for the options.\n", command);
    return '?';
}

bool is_compile_option(int code) {
    return code == 'O' || code == OPTION_DISABLE_PASS || code == OPTION_DEVICE || code == OPTION_TF32 ||
           code == OPTION_SLICES;
}

bool parse_compile_option(int code, const char *arg, OptSettings *o) {
    if (code == OPTION_TF32) {
        o->tf32 = true;
        return true;
    }
    if (code == OPTION_DEVICE) {
        if (strcmp(arg, "cpu") == 0) {
            o->cuda = false;
            return true;
        }
        if (strcmp(arg, "cuda") != 0) {
            fprintf(stderr, "nnc: error: --device takes cpu or cuda, not '%s'\n", arg);
            return false;
        }
#ifdef NNC_HAVE_CUDA
        o->cuda = true;
        return true;
#else
        fprintf(stderr, "nnc: error: nnc was built without CUDA (configure with -DNNC_CUDA=ON)\n");
        return false;
#endif
    }
    if (code == OPTION_SLICES) {
        long long n;
        if (!parse_int_option("--slices", arg, 1, &n)) return false;
        o->slices = n > 64 ? 64 : (int)n;
        return true;
    }
    if (code == 'O') {
        if (strlen(arg) != 1 || arg[0] < '0' || arg[0] > '3') {
            fprintf(stderr, "nnc: error: -O takes a level from 0 to 3, not '%s'\n", arg);
            return false;
        }
        o->level = arg[0] - '0';
        return true;
    }
    /* a comma-separated list of transformation names */
    for (const char *p = arg; *p;) {
        size_t n = strcspn(p, ",");
        bool known = false;
        if (n == 3 && strncmp(p, "all", 3) == 0) o->disabled = (1u << XF_COUNT) - 1, known = true;
        for (int t = 0; t < XF_COUNT && !known; t++)
            if (strlen(transform_names[t]) == n && strncmp(p, transform_names[t], n) == 0)
                o->disabled |= 1u << t, known = true;
        if (!known) {
            char name[64], hint[DID_YOU_MEAN_MAX];
            snprintf(name, sizeof name, "%.*s", (int)n, p);
            fprintf(stderr, "nnc: error: --disable-pass: unknown transformation '%s'%s (simplify, fuse, memplan, coalesce, all)\n",
                    name, did_you_mean(name, transform_names, XF_COUNT, hint, sizeof hint));
            return false;
        }
        p += n;
        if (*p == ',') p++;
    }
    return true;
}

bool check_pass_name(const char *pass, const char *prefix) {
    int n = 0;
    bool known = strcmp(pass, "all") == 0;
    for (; pass_names[n]; n++) known |= strcmp(pass_names[n], pass) == 0;
    if (known) return true;
    char hint[DID_YOU_MEAN_MAX];
    fprintf(stderr, "%sunknown pass '%s'%s (passes:", prefix, pass, did_you_mean(pass, pass_names, n, hint, sizeof hint));
    for (int i = 0; i < n; i++) fprintf(stderr, " %s", pass_names[i]);
    fprintf(stderr, ", or all)\n");
    return false;
}

bool parse_int_option(const char *opt, const char *text, long long lo, long long *out) {
    char *end;
    long long v = strtoll(text, &end, 10);
    if (*text == 0 || *end != 0 || v < lo) {
        fprintf(stderr, "nnc: error: %s expects an integer of at least %lld, got '%s'\n", opt, lo, text);
        return false;
    }
    *out = v;
    return true;
}

bool parse_real_option(const char *opt, const char *text, double *out) {
    char *end;
    double v = strtod(text, &end);
    if (*text == 0 || *end != 0 || !(v > 0) || v > 1e30) {
        fprintf(stderr, "nnc: error: %s expects a positive number, got '%s'\n", opt, text);
        return false;
    }
    *out = v;
    return true;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) return help(NULL);
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        unsigned major, minor, patch;
        LLVMGetVersion(&major, &minor, &patch);
        printf("nnc %s (LLVM %u.%u.%u)\n", NNC_VERSION, major, minor, patch);
        return 0;
    }
    if (strcmp(cmd, "help") == 0) {
        if (argc > 3) {
            fprintf(stderr, "nnc: error: help takes one command name\n");
            return 2;
        }
        return help(argc > 2 ? argv[2] : NULL);
    }
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(cmd, commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    /* Anything else is a file to compile, unless it looks like a misspelt
     * command: a bare word that names no file. */
    if (cmd[0] != '-' && !strpbrk(cmd, "./") && access(cmd, F_OK) != 0) {
        char hint[DID_YOU_MEAN_MAX];
        fprintf(stderr, "nnc: error: unknown command '%s', and no file of that name%s\n", cmd,
                command_hint(cmd, hint, sizeof hint));
        return 2;
    }
    return cmd_emit(argc, argv);
}
