/* build.c - ahead-of-time output: a shared library or object with its
 * header, or one standalone C file.
 *
 * Library and object:
 *   1. the programs, compiled by LLVM into an object (hidden symbols),
 *   2. the glue implementing the header (backend/abi.c), compiled by cc,
 *   3. nnc's runtime (libnnrt_model.a: gemm, checkpoints) linked in with
 *      `ld -r`, then every hidden symbol made local with objcopy, so the
 *      result exports only MODEL_* and two models link into one program;
 *   4. for a shared library, `cc -shared` against OpenBLAS and cJSON.
 * C file: the C backend's programs and support code plus the same glue.
 *
 * Every output is written under a temporary name and renamed into place. */
#include "backend/abi.h"
#include "backend/c/c_backend.h"
#include "cli/driver.h"
#include "runtime/checkpoint.h"
#include "support/util.h"

#include <errno.h>
#include <libgen.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- files and tools ------------------------------------------------------------------ */

/* Runs a tool (no shell); its own messages go to stderr. */
static bool run_tool(const char *const *argv, Diag *d) {
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ);
    if (rc != 0) {
        diag_error(d, SPAN_NONE, "cannot run %s: %s (building libraries needs a C compiler and binutils)",
                   argv[0], strerror(rc));
        return false;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return false;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
    StrBuf cmd = {0};
    for (int i = 0; argv[i]; i++) sb_printf(&cmd, "%s%s", i ? " " : "", argv[i]);
    diag_error(d, SPAN_NONE, "'%s' failed", cmd.data);
    sb_free(&cmd);
    return false;
}

static const char *cc_command(void) {
    const char *cc = getenv("CC");
    return cc && *cc ? cc : "cc";
}

/* libnnrt_model.a: next to the nnc executable (a build tree), or in
 * ../lib/nnc (an installed nnc). */
static const char *runtime_library(Arena *a, Diag *d) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        const char *dir = arena_strdup(a, dirname(exe));
        const char *candidates[] = {
            arena_printf(a, "%s/libnnrt_model.a", dir),
            arena_printf(a, "%s/../lib/nnc/libnnrt_model.a", dir),
        };
        for (size_t i = 0; i < 2; i++)
            if (access(candidates[i], R_OK) == 0) return candidates[i];
        diag_error(d, SPAN_NONE, "cannot find nnc's runtime library (looked for %s and %s)", candidates[0],
                   candidates[1]);
    } else {
        diag_error(d, SPAN_NONE, "cannot locate the nnc executable to find its runtime library");
    }
    return NULL;
}

/* Writes `text` to `path` through a temporary file and a rename. */
static bool write_text(const char *path, const char *text, Diag *d) {
    if (write_file_atomic(path, text, strlen(text)) != 0) {
        diag_error(d, SPAN_NONE, "cannot write %s: %s", path, strerror(errno));
        return false;
    }
    return true;
}

/* Moves a finished file from the scratch folder to `path` (possibly on
 * another file system: copy to path.tmp beside it, then rename). */
static bool install_file(const char *from, const char *path, Diag *d) {
    size_t len;
    char *data = read_file(from, &len);
    if (!data) {
        diag_error(d, SPAN_NONE, "cannot read %s: %s", from, strerror(errno));
        return false;
    }
    bool ok = write_file_atomic(path, data, len) == 0;
    if (!ok) diag_error(d, SPAN_NONE, "cannot write %s: %s", path, strerror(errno));
    free(data);
    if (ok && strstr(path, ".so")) chmod(path, 0755);
    return ok;
}

static char *capture(void (*write)(FILE *, const void *), const void *arg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    write(f, arg);
    fclose(f);
    return buf;
}

static void write_header_cb(FILE *f, const void *a) { abi_write_header(f, a); }

static void remove_tree(const char *dir, const char *const *files) {
    for (int i = 0; files[i]; i++) remove(files[i]);
    rmdir(dir);
}

/* The header's path: the output's, with its extension replaced by .h. */
static const char *header_path(Arena *a, const char *output) {
    const char *slash = strrchr(output, '/');
    const char *dot = strrchr(output, '.');
    size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - output) : strlen(output);
    return arena_printf(a, "%.*s.h", (int)stem, output);
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* train_slices: the slices a training step may cut its batch into (1 for
 * the C file, which runs on its caller's thread). */
static void lower_all(Module *m, AbiModel *am, int train_slices) {
    am->m = m;
    am->forward = lower_graph(m, m->forward, PROG_FORWARD, false);
    am->eval = lower_graph(m, m->eval, PROG_EVAL, false);
    am->train = m->train ? lower_train(m, false, train_slices) : NULL;
    am->init = lower_init(m, false);
    am->source = m->src ? m->src->path : "?";
}

/* ---- library and object ------------------------------------------------------------------- */

static bool build_native(Module *m, const BuildOptions *o, Diag *d) {
    Arena *a = m->arena;
    AbiModel am = {.threads = true};
    lower_all(m, &am, train_slices(m));
    const char *runtime = runtime_library(a, d);
    if (!runtime) return false;

    char tmpl[] = "/tmp/nnc-build-XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir) {
        diag_error(d, SPAN_NONE, "cannot create a scratch folder: %s", strerror(errno));
        return false;
    }
    const char *kernels = arena_printf(a, "%s/kernels.o", dir), *glue_c = arena_printf(a, "%s/glue.c", dir);
    const char *glue_o = arena_printf(a, "%s/glue.o", dir), *combined = arena_printf(a, "%s/model.o", dir);
    const char *shared = arena_printf(a, "%s/model.so", dir);
    const char *hname = base_name(header_path(a, o->output));
    const char *header_tmp = arena_printf(a, "%s/%s", dir, hname);
    const char *scratch[] = {kernels, glue_c, glue_o, combined, shared, header_tmp, NULL};
    bool ok = false;

    /* 1. the programs */
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(m->name, ctx);
    const KProgram *progs[] = {am.forward, am.eval, am.train, am.init};
    for (int i = 0; i < 4; i++)
        if (progs[i]) LLVMSetVisibility(llvm_emit_program(mod, progs[i], abi_program_symbol(a, m, progs[i])),
                                        LLVMHiddenVisibility);
    LLVMTargetMachineRef tm = llvm_target_machine(o->cpu);
    char *err = NULL;
    bool compiled = llvm_optimize(mod, tm, m->opt.level, &err) && llvm_emit_object(mod, tm, kernels, &err);
    if (!compiled) diag_error(d, SPAN_NONE, "LLVM could not compile the model: %s", err ? err : "?");
    LLVMDisposeMessage(err);
    LLVMDisposeTargetMachine(tm);
    LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    if (!compiled) goto done;

    /* 2. the header and the glue */
    char *header = capture(write_header_cb, &am);
    char *glue = NULL;
    size_t glue_len = 0;
    FILE *gf = open_memstream(&glue, &glue_len);
    abi_write_glue(gf, &am, ABI_LIBRARY, hname);
    fclose(gf);
    bool written = write_text(header_tmp, header, d) && write_text(glue_c, glue, d);
    free(glue);
    if (!written) {
        free(header);
        goto done;
    }
    const char *cc = cc_command();
    const char *compile[] = {cc, "-std=c99", "-O2", "-fPIC", "-fvisibility=hidden", "-c", glue_c, "-o", glue_o, NULL};
    if (!run_tool(compile, d)) {
        free(header);
        goto done;
    }

    /* 3. one object, exporting only the model's interface */
    const char *link_r[] = {"ld", "-r", "-o", combined, kernels, glue_o, "--whole-archive", runtime,
                            "--no-whole-archive", NULL};
    const char *localize[] = {"objcopy", "--localize-hidden", combined, NULL};
    if (!run_tool(link_r, d) || !run_tool(localize, d)) {
        free(header);
        goto done;
    }

    /* 4. the output */
    const char *product = combined;
    if (o->kind == OUT_SHARED) {
        const char *link[] = {cc, "-shared", "-o", shared, combined, "-L" NNC_OPENBLAS_LIBDIR, "-lopenblas",
                              "-lcjson", "-lm", "-lpthread", NULL};
        if (!run_tool(link, d)) {
            free(header);
            goto done;
        }
        product = shared;
    }
    ok = install_file(product, o->output, d) && write_text(header_path(a, o->output), header, d);
    free(header);
done:
    remove_tree(dir, scratch);
    return ok;
}

/* ---- standalone C ---------------------------------------------------------------------------- */

static bool build_c(Module *m, const BuildOptions *o, Diag *d) {
    Arena *a = m->arena;
    AbiModel am = {0};
    lower_all(m, &am, 1);
    float *weights = NULL;
    if (o->weights) {
        weights = xcalloc((size_t)m->state_size + 1, sizeof(float));
        NnrtTensor *table = module_tensor_table(m);
        char err[1024];
        if (nnrt_checkpoint_load(weights, table, m->nslots, NNRT_PARAM, o->weights, err, sizeof err) != 0) {
            diag_error(d, SPAN_NONE, "%s", err);
            free(weights);
            return false;
        }
        am.weights = weights;
    }
    const char *hpath = header_path(a, o->output), *hname = base_name(hpath);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fprintf(f, "/* %s - the model '%s', compiled by nnc from %s into standalone C99.\n"
               " * Needs only libc and libm: cc -std=c99 -O2 -c %s. Its interface is %s. */\n"
               "#include \"%s\"\n\n",
            base_name(o->output), m->name, am.source, base_name(o->output), hname, hname);
    c_emit_support(f);
    const KProgram *progs[] = {am.forward, am.eval, am.train, am.init};
    for (int i = 0; i < 4; i++)
        if (progs[i]) c_emit_program(f, progs[i], abi_program_symbol(a, m, progs[i]));
    abi_write_glue(f, &am, ABI_C, hname);
    fclose(f);
    char *header = capture(write_header_cb, &am);
    bool ok = write_text(o->output, text, d) && write_text(hpath, header, d);
    free(text);
    free(header);
    free(weights);
    return ok;
}

bool nnc_build(Module *m, const BuildOptions *o, Diag *d) {
    if (o->weights && o->kind != OUT_C) {
        diag_error(d, SPAN_NONE, "--weights embeds parameters in C output (--emit-c); a library loads them with MODEL_load");
        return false;
    }
    return o->kind == OUT_C ? build_c(m, o, d) : build_native(m, o, d);
}
