/* main.c - the `nnc` command: dispatch to a subcommand. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "passes/passes.h"

static void usage(FILE *out) {
    fputs("usage: nnc FILE.nn -o MODEL.so | MODEL.o | MODEL.c [--weights CKPT] [--cpu CPU]\n"
          "       nnc FILE.nn [--emit-ir | --emit-kir | --emit-llvm] [--print-after=PASS]\n"
          "       nnc train FILE.nn [--epochs N] [--batch N] [--lr X] [--save CKPT] [--load CKPT] ...\n"
          "       nnc eval FILE.nn --load CKPT [--split t10k|train]\n"
          "       nnc predict FILE.nn --load CKPT [--first I] [--count N]\n"
          "       nnc tune FILE.nn --param lr=1e-4..1e-1:log --param batch=32,64 [--trials N]\n"
          "       nnc check FILE.nn [--batch N] [--samples N] [--tolerance X]\n"
          "       nnc bench FILE.nn [--batch N] [--threads N] [--json]\n"
          "       nnc help [COMMAND]\n"
          "       nnc --version\n"
          "\n"
          "nnc compiles a neural network written in the .nn language into native code\n"
          "that trains and runs it.\n"
          "\n"
          "commands:\n"
          "  (none)   compile FILE.nn: a shared library, object or C file with its header,\n"
          "           or its IR, kernels or LLVM module\n"
          "  train    JIT-compile and train on Fashion-MNIST (or MNIST-format data)\n"
          "  eval     loss and accuracy of a checkpoint on a data set\n"
          "  predict  class probabilities of a checkpoint for examples of a data set\n"
          "  tune     random search over hyper-parameters, scored on validation data\n"
          "  bench    compile time, training and inference speed, memory\n"
          "  check    compare every parameter's derived gradient with finite differences\n"
          "  help     show the options of a command\n"
          "\n"
          "Run 'nnc help COMMAND' for a command's options.\n",
          out);
}

static int help(const char *topic) {
    if (!topic) usage(stdout);
    else if (strcmp(topic, "train") == 0) usage_train(stdout);
    else if (strcmp(topic, "check") == 0) usage_check(stdout);
    else if (strcmp(topic, "eval") == 0) usage_eval(stdout);
    else if (strcmp(topic, "predict") == 0) usage_predict(stdout);
    else if (strcmp(topic, "tune") == 0) usage_tune(stdout);
    else if (strcmp(topic, "bench") == 0) usage_bench(stdout);
    else if (strcmp(topic, "compile") == 0 || strcmp(topic, "emit") == 0) usage_emit(stdout);
    else {
        fprintf(stderr, "nnc: no help for '%s'; commands are: compile, train, eval, predict, tune, check, bench\n", topic);
        return 2;
    }
    return 0;
}

bool is_compile_option(int code) {
    return code == 'O' || code == OPTION_DISABLE_PASS || code == OPTION_DEVICE || code == OPTION_TF32;
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
            fprintf(stderr, "nnc: error: --disable-pass: unknown transformation '%.*s' (simplify, fuse, memplan, all)\n",
                    (int)n, p);
            return false;
        }
        p += n;
        if (*p == ',') p++;
    }
    return true;
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
    if (strcmp(cmd, "--version") == 0) {
        printf("nnc %s\n", NNC_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0) return help(argc > 2 ? argv[2] : NULL);
    if (strcmp(cmd, "train") == 0) return cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0) return cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "predict") == 0) return cmd_predict(argc - 1, argv + 1);
    if (strcmp(cmd, "tune") == 0) return cmd_tune(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    return cmd_emit(argc, argv);
}
