/* cmd_train.c - `nnc train FILE.nn`: JIT-compile the model and train it on
 * its data (see trainer.c), reporting every epoch (progress.c) and the test
 * set at the end. */
#include "cli/commands.h"
#include "cli/driver.h"
#include "support/util.h"

#include <getopt.h>

void usage_train(FILE *out) {
    fputs("usage: nnc train FILE.nn [options]\n"
          "\n"
          "JIT-compiles FILE.nn and trains it on the data its data statement names\n"
          "(Fashion-MNIST by default); the options override its train statement.\n"
          "\n"
          "  --epochs N       passes over the training data\n"
          "  --batch N        examples per step\n"
          "  --lr X           learning rate\n"
          "  --seed N         seed of initialisation, shuffling and dropout (default 1)\n"
          "  --threads N      threads for matrix products (default: the fastest count for\n"
          "                   each program and batch size, found by timing a few calls)\n"
          "  --data PATH      the data's folder (IDX) or file (CSV) instead of the data statement's\n"
          "                   (Fashion-MNIST's default is " NNC_DEFAULT_DATA_DIR ")\n"
          "  --limit N        train on the first N training examples only\n"
          "  --val N          hold out the last N training examples for validation\n"
          "                   (default: one in twelve, 5000 of Fashion-MNIST's 60000)\n"
          "  --patience N     stop when N epochs in a row bring no better validation score\n"
          "  --save FILE      write a checkpoint (safetensors) at the end: the state of the\n"
          "                   epoch with the best validation score\n"
          "  --load FILE      start from a checkpoint written by --save and go on training\n"
          "                   where it stopped (epochs count on from there)\n"
          "  --plot FILE.svg  write the loss and accuracy curves (train and validation) as SVG\n"
          "  -q, --quiet      print only the final scores\n"
          "  --json           one JSON object per epoch, and one with the final scores, on\n"
          "                   standard output (for tools)\n"

          COMPILE_HELP
          "  -h, --help       show this help\n"
          "\n"
          "On a terminal a progress bar shows each epoch's samples/s, loss and time left;\n"
          "otherwise (a log, a pipe) each epoch is one line.\n",
          out);
}

int cmd_train(int argc, char **argv) {
    static const struct option longopts[] = {
        {"epochs", required_argument, NULL, 'e'},  {"batch", required_argument, NULL, 'b'},
        {"lr", required_argument, NULL, 'l'},      {"seed", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'}, {"data", required_argument, NULL, 'd'},
        {"limit", required_argument, NULL, 'n'},   {"val", required_argument, NULL, 'v'},
        {"save", required_argument, NULL, 'S'},    {"load", required_argument, NULL, 'L'},
        {"patience", required_argument, NULL, 'p'}, {"help", no_argument, NULL, 'h'},
        {"plot", required_argument, NULL, 'P'},    {"quiet", no_argument, NULL, 'q'},
        {"json", no_argument, NULL, 'J'},          COMPILE_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    TrainConfig c = {.seed = 1, .val = -1};
    LoadOptions lo = {0};
    long long v;
    int opt;
    optind = 1;
    OptSettings optset = OPT_DEFAULTS;
    lo.passes.opt = &optset;
    while ((opt = nnc_getopt(argc, argv, "hq" COMPILE_SHORTOPTS, longopts, "train")) != -1) {
        switch (opt) {
        case 'e': if (!parse_int_option("--epochs", optarg, 1, &v)) return 2; lo.overrides.epochs = v; break;
        case 'b': if (!parse_int_option("--batch", optarg, 1, &v)) return 2; lo.overrides.batch = v; break;
        case 'l': if (!parse_real_option("--lr", optarg, &lo.overrides.lr)) return 2; break;
        case 's': if (!parse_int_option("--seed", optarg, 0, &v)) return 2; c.seed = (uint64_t)v; break;
        case 't': if (!parse_int_option("--threads", optarg, 1, &v)) return 2; c.threads = (int)v; break;
        case 'd': c.data = optarg; break;
        case 'n': if (!parse_int_option("--limit", optarg, 1, &v)) return 2; c.limit = v; break;
        case 'v': if (!parse_int_option("--val", optarg, 0, &v)) return 2; c.val = v; break;
        case 'p': if (!parse_int_option("--patience", optarg, 1, &v)) return 2; c.patience = v; break;
        case 'S': c.save = optarg; break;
        case 'L': c.load = optarg; break;
        case 'P': c.plot = optarg; break;
        case 'q': c.report = REPORT_FINAL; break;
        case 'J': c.report = REPORT_JSON; break;
        case 'h': usage_train(stdout); return 0;
        default:
            if (!is_compile_option(opt) || !parse_compile_option(opt, optarg, &optset)) return 2;
            break;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "nnc: error: %s\n", optind >= argc ? "no model file" : "one model file at a time");
        usage_train(stderr);
        return 2;
    }
    Arena arena = {0};
    Diag d;
    diag_init(&d, NULL, stderr);
    Module *m = nnc_load_model(&arena, argv[optind], &d, &lo);
    int status = m ? trainer_run(m, &c, NULL) : 1;
    arena_free_all(&arena);
    return status;
}
