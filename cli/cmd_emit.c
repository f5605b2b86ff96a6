/* cmd_emit.c - `nnc FILE.nn`: compile and show what the compiler made.
 *
 *   --emit-ir       the Graph IR of every function, the state layout and
 *                   each function's workspace plan
 *   --print-after   the Graph IR after one pass (or "all")
 *   --emit-kir      the Kernel IR of every function
 *   --emit-cuda     the CUDA C of every function (what NVRTC compiles for --device cuda)
 *   --emit-llvm     the LLVM module, optimised for this CPU (-O0: as generated)
 *   --emit-dot      the forward and training graphs for Graphviz, fused kernels boxed
 *   -o model.so     a shared library and its header model.h (build.c)
 *   -o model.o      the same as one relocatable object (--emit-obj)
 *   -o model.c      one standalone C99 file and its header (--emit-c)
 *
 * Without an output it checks the model and prints a summary. */
#include "cli/commands.h"
#include "cli/driver.h"
#include "support/util.h"

#include <errno.h>
#include "backend/cuda/cuda_backend.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

void usage_emit(FILE *out) {
    fputs("usage: nnc FILE.nn [options]\n"
          "\n"
          "Compiles FILE.nn. Without an output, checks it and prints a summary.\n"
          "\n"
          "  -o FILE.so           a shared library, and FILE.h declaring its functions\n"
          "  -o FILE.o            the same as one object file (or --emit-obj -o FILE)\n"
          "  -o FILE.c            one standalone C99 file and FILE.h (or --emit-c -o FILE)\n"
          "  --weights CKPT       with C output: embed the parameters of checkpoint CKPT\n"
          "  --cpu CPU            code for CPU: native (default: this machine's), or x86-64,\n"
          "                       x86-64-v2, x86-64-v3, x86-64-v4 for other machines\n"
          "  --emit-ir            print the Graph IR (forward, eval, grad, train_step), the state layout\n"
          "                       and the workspace plan of each function\n"
          "  --print-after=PASS   print the Graph IR after PASS (shape, derive, autodiff, optimizer, or all)\n"
          "  --emit-kir           print the Kernel IR (loops and library calls) of every function\n"
          "  --emit-cuda          print the CUDA C of every function and its launches\n"
          "  --emit-llvm          print the LLVM module, optimised for this CPU\n"
          "  --emit-dot           print the forward and training graphs in Graphviz's DOT language,\n"
          "                       with shapes on the edges and fused kernels as clusters\n"
          "                       (render with: dot -Tsvg FILE.dot -o FILE.svg)\n"
          COMPILE_HELP
          "  --f64                build kernels in double precision (as 'nnc check' does)\n"
          "  -o FILE              with --emit-ir/-kir/-llvm/-dot: write to FILE instead of standard output\n"
          "  --verify             check the IR after every pass\n"
          "  -h, --help           show this help\n",
          out);
}

enum { EMIT_NONE, EMIT_IR, EMIT_KIR, EMIT_CUDA, EMIT_LLVM, EMIT_DOT, EMIT_OBJ, EMIT_C };

/* What -o FILE asks for, from --emit-obj / --emit-c or the file's extension. */
static bool output_kind(int emit, const char *output, OutputKind *kind) {
    if (emit == EMIT_OBJ) *kind = OUT_OBJECT;
    else if (emit == EMIT_C) *kind = OUT_C;
    else {
        const char *dot = strrchr(output, '.');
        if (dot && strcmp(dot, ".so") == 0) *kind = OUT_SHARED;
        else if (dot && strcmp(dot, ".o") == 0) *kind = OUT_OBJECT;
        else if (dot && strcmp(dot, ".c") == 0) *kind = OUT_C;
        else {
            fprintf(stderr, "nnc: error: cannot tell what to build from the name '%s': use .so, .o or .c "
                            "(or --emit-obj / --emit-c)\n", output);
            return false;
        }
    }
    return true;
}

static bool cpu_known(const char *cpu) {
    static const char *const cpus[] = {"native", "x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4"};
    for (size_t i = 0; i < sizeof cpus / sizeof cpus[0]; i++)
        if (strcmp(cpu, cpus[i]) == 0) return true;
    char hint[DID_YOU_MEAN_MAX];
    fprintf(stderr, "nnc: error: unknown --cpu '%s'%s (native, x86-64, x86-64-v2, x86-64-v3 or x86-64-v4)\n", cpu,
            did_you_mean(cpu, cpus, (int)(sizeof cpus / sizeof cpus[0]), hint, sizeof hint));
    return false;
}

static void print_summary(FILE *out, const Module *m) {
    int64_t params = 0;
    int nparams = 0;
    for (int i = 0; i < m->nslots; i++)
        if (!(m->slots[i].flags & (NF_OPT_STATE | NF_HYPER))) {
            params += m->slots[i].size;
            nparams++;
        }
    fprintf(out, "model %s: %d parameter tensors, %lld values\n", m->name, nparams, (long long)params);
    const Graph *g = m->eval;
    for (int i = 0; i < g->n; i++) {
        const Node *n = &g->nodes[i];
        char tb[TYPE_STR_MAX];
        if (n->op == OP_INPUT)
            fprintf(out, "  %-7s %-12s %s\n", n->flags & NF_TARGET ? "target" : "input", n->name,
                    type_str(&n->type, tb, sizeof tb));
    }
    for (int i = 0; i < g->n; i++) {
        const Node *n = &g->nodes[i];
        char tb[TYPE_STR_MAX];
        if (n->flags & NF_OUTPUT) fprintf(out, "  %-7s %-12s %s\n", "output", n->name, type_str(&n->type, tb, sizeof tb));
    }
    if (m->train) {
        const TrainSpec *t = &m->train_spec;
        fprintf(out, "  train   %s(lr=%g) batch %lld, %lld epoch%s\n", optimizer_names[t->optimizer], t->lr,
                (long long)t->batch, (long long)t->epochs, t->epochs == 1 ? "" : "s");
    } else {
        fprintf(out, "  (no loss: inference only)\n");
    }
}

/* After --emit-ir: the size of each function, and whether simplify made it
 * (compare with --disable-pass=simplify). */
static void print_node_counts(FILE *out, const Module *m) {
    const Graph *graphs[] = {m->forward, m->eval, m->grad, m->train};
    fprintf(out, "\n# nodes:");
    const char *sep = "";
    for (int k = 0; k < 4; k++)
        if (graphs[k]) fprintf(out, "%s %s %d", sep, graphs[k]->name, graphs[k]->n), sep = ",";
    fprintf(out, " (%s)\n", opt_enabled(&m->opt, XF_SIMPLIFY) ? "simplified" : "not simplified");
}

/* The inference function and, for a model with a loss, the training step
 * (forward pass, gradients, update), with the kernels fuse.c makes. */
static void emit_dot(FILE *out, const Module *m) {
    const Graph *graphs[2] = {m->forward, m->train};
    const char *titles[2] = {"forward (inference)", "train_step (forward, backward, update)"};
    const ProgKind kinds[2] = {PROG_FORWARD, PROG_TRAIN};
    int *kernel_of[2] = {NULL, NULL};
    int n = m->train ? 2 : 1;
    for (int k = 0; k < n; k++) {
        FusePlan p = fuse_plan(graphs[k], kinds[k], opt_enabled(&m->opt, XF_FUSE));
        kernel_of[k] = xmalloc(sizeof(int) * ((size_t)graphs[k]->n + 1));
        fuse_kernel_of(graphs[k], &p, kernel_of[k]);
        fuse_plan_free(&p);
    }
    module_print_dot(out, m, graphs, titles, (const int *const *)kernel_of, n);
    for (int k = 0; k < n; k++) free(kernel_of[k]);
}

/* Function k (ProgKind order) of m as the JIT compiles it: a training step
 * may run its batch in slices, one a core. */
static KProgram *lower_program(Module *m, int k, bool f64) {
    const Graph *graphs[] = {m->forward, m->eval, m->grad, m->train};
    if (k == PROG_TRAIN) return lower_train(m, f64, train_slices(m));
    return lower_graph(m, graphs[k], (ProgKind)k, f64);
}

/* Each function's workspace plan, with the lower bound at the batch size
 * of the train statement (1 without one). */
static void print_workspaces(FILE *out, Module *m, bool f64) {
    const Graph *graphs[] = {m->forward, m->eval, m->grad, m->train};
    int64_t batch = m->train && m->train_spec.batch > 0 ? m->train_spec.batch : 1;
    for (int k = 0; k < 4; k++)
        if (graphs[k]) {
            fputc('\n', out);
            kprog_print_workspace(out, lower_program(m, k, f64), batch);
        }
}

int emit_llvm(FILE *out, Module *m, bool f64, const char *cpu, Diag *d) {
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(m->name, ctx);
    const Graph *graphs[] = {m->forward, m->eval, m->grad, m->train};
    for (int k = 0; k < 4; k++) {
        if (!graphs[k]) continue;
        KProgram *p = lower_program(m, k, f64);
        llvm_emit_program(mod, p, arena_printf(m->arena, "%s_%s", m->name, p->name));
    }
    KProgram *init = lower_init(m, f64);
    llvm_emit_program(mod, init, arena_printf(m->arena, "%s_init", m->name));
    int status = 0;
    {
        LLVMTargetMachineRef tm = llvm_target_machine(cpu);
        char *err = NULL;
        if (!llvm_optimize(mod, tm, m->opt.level, &err)) {
            diag_error(d, SPAN_NONE, "LLVM rejected the generated module: %s", err);
            LLVMDisposeMessage(err);
            status = 1;
        }
        LLVMDisposeTargetMachine(tm);
    }
    if (status == 0) {
        char *text = LLVMPrintModuleToString(mod);
        fputs(text, out);
        LLVMDisposeMessage(text);
    }
    LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    return status;
}

/* Every program's CUDA C, each after a comment listing its launches in order. */
static void emit_cuda(FILE *out, Module *m, bool f64) {
    const Graph *graphs[] = {m->forward, m->eval, m->grad, m->train, NULL};
    for (int k = 0; k < 5; k++) {
        if (k < 4 && !graphs[k]) continue;
        KProgram *p = k < 4 ? lower_graph(m, graphs[k], (ProgKind)k, f64) : lower_init(m, f64);
        CudaPlan *plan = cuda_plan_program(p, p->name);
        fprintf(out, "/* ==== %s: ", p->name);
        for (int i = 0; i < plan->nsteps; i++) {
            const CudaStep *st = &plan->steps[i];
            if (st->kind == CS_GEMM) fprintf(out, "%scuBLAS(kernel %d)", i ? ", " : "", st->kernel);
            else fprintf(out, "%s%s%s", i ? ", " : "", st->fn, st->warp ? " (warp per row)" : "");
        }
        fprintf(out, " */\n%s\n", plan->source);
        cuda_plan_free(plan);
    }
}

int cmd_emit(int argc, char **argv) {
    static const struct option longopts[] = {
        {"emit-ir", no_argument, NULL, 'I'},   {"emit-kir", no_argument, NULL, 'K'}, {"emit-cuda", no_argument, NULL, 'G'},
        {"emit-llvm", no_argument, NULL, 'L'}, {"emit-dot", no_argument, NULL, 'D'}, {"print-after", required_argument, NULL, 'P'},
        {"f64", no_argument, NULL, 'F'},       {"verify", no_argument, NULL, 'V'},
        {"emit-obj", no_argument, NULL, 'B'},  {"emit-c", no_argument, NULL, 'C'},
        {"weights", required_argument, NULL, 'W'}, {"cpu", required_argument, NULL, 'U'},
        {"help", no_argument, NULL, 'h'},      COMPILE_LONGOPTS, {NULL, 0, NULL, 0},
    };
    int emit = EMIT_NONE;
    bool f64 = false;
    const char *output = NULL, *weights = NULL, *cpu = "native";
    OptSettings opt = OPT_DEFAULTS;
    LoadOptions lo = {.passes.opt = &opt};
    int c;
    optind = 1;
    while ((c = nnc_getopt(argc, argv, "ho:" COMPILE_SHORTOPTS, longopts, "compile")) != -1) {
        switch (c) {
        case 'I': emit = EMIT_IR; break;
        case 'K': emit = EMIT_KIR; break;
        case 'G': emit = EMIT_CUDA; break;
        case 'L': emit = EMIT_LLVM; break;
        case 'D': emit = EMIT_DOT; break;
        case 'P':
            if (!check_pass_name(optarg, "nnc: error: ")) return 2;
            lo.passes.print_after = optarg;
            break;
        case 'F': f64 = true; break;
        case 'B': emit = EMIT_OBJ; break;
        case 'C': emit = EMIT_C; break;
        case 'W': weights = optarg; break;
        case 'U':
            if (!cpu_known(optarg)) return 2;
            cpu = optarg;
            break;
        case 'V': lo.passes.verify_each = true; break;
        case 'o': output = optarg; break;
        case 'h': usage_emit(stdout); return 0;
        default:
            if (is_compile_option(c)) {
                if (!parse_compile_option(c, optarg, &opt)) return 2;
                break;
            }
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, optind >= argc ? "nnc: error: no input file\n" : "nnc: error: one input file at a time\n");
        usage_emit(stderr);
        return 2;
    }
    bool text = emit == EMIT_IR || emit == EMIT_KIR || emit == EMIT_CUDA || emit == EMIT_LLVM || emit == EMIT_DOT;
    if (!text && (output || emit != EMIT_NONE)) {
        BuildOptions bo = {.output = output, .weights = weights, .cpu = cpu};
        if (!output) {
            fprintf(stderr, "nnc: error: %s needs -o FILE\n", emit == EMIT_OBJ ? "--emit-obj" : "--emit-c");
            return 2;
        }
        if (!output_kind(emit, output, &bo.kind)) return 2;
        if (opt.cuda) {
            fprintf(stderr, "nnc: error: --device cuda runs models in nnc (train, eval, predict, tune, bench, check); "
                            "libraries are built for the CPU\n");
            return 2;
        }
        Arena arena = {0};
        Diag d;
        diag_init(&d, NULL, stderr);
        Module *m = nnc_load_model(&arena, argv[optind], &d, &lo);
        int status = m && nnc_build(m, &bo, &d) ? 0 : 1;
        arena_free_all(&arena);
        return status;
    }
    if (weights) {
        fprintf(stderr, "nnc: error: --weights goes with C output (-o FILE.c)\n");
        return 2;
    }
    FILE *out = stdout;
    if (output && !(out = fopen(output, "w"))) {
        fprintf(stderr, "nnc: error: cannot write %s: %s\n", output, strerror(errno));
        return 1;
    }
    lo.passes.print_to = out;
    Arena arena = {0};
    Diag d;
    diag_init(&d, NULL, stderr);
    int status = 0;
    Module *m = nnc_load_model(&arena, argv[optind], &d, &lo);
    if (!m) status = 1;
    else if (emit == EMIT_IR) {
        module_print(out, m);
        print_workspaces(out, m, f64);
        print_node_counts(out, m);
    }
    else if (emit == EMIT_KIR) {
        const Graph *graphs[] = {m->forward, m->eval, m->grad, m->train};
        for (int k = 0; k < 4; k++)
            if (graphs[k]) {
                kprog_print(out, lower_program(m, k, f64));
                fputc('\n', out);
            }
        kprog_print(out, lower_init(m, f64));
    } else if (emit == EMIT_CUDA) {
        m->opt.cuda = true; /* the source as the GPU runs it: lowered for it */
        emit_cuda(out, m, f64);
    } else if (emit == EMIT_LLVM) status = emit_llvm(out, m, f64, cpu, &d);
    else if (emit == EMIT_DOT) emit_dot(out, m);
    else if (!lo.passes.print_after) print_summary(out, m);
    if (out != stdout && fclose(out) != 0) {
        fprintf(stderr, "nnc: error: writing %s failed: %s\n", output, strerror(errno));
        status = 1;
    }
    arena_free_all(&arena);
    return status;
}
