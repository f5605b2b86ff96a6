/* nnrt_cuda.c - see nnrt_cuda.h. */
#include "runtime/cuda/nnrt_cuda.h"
#include "runtime/error.h"

#include <cuda_runtime.h>
#include <nvrtc.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *nnrt_cuda_cache_dir(void) {
    static char dir[4096];
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/nnc", xdg);
    else if (home && *home) snprintf(dir, sizeof dir, "%s/.cache/nnc", home);
    else snprintf(dir, sizeof dir, "/tmp/nnc-cache-%ld", (long)getuid());
    return dir;
}

/* mkdir -p for the cache: a cache that cannot be made only costs time. */
static void make_dirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    mkdir(buf, 0755);
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
    return h;
}

static bool read_file(const char *path, char **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n > 0 ? malloc((size_t)n + 1) : NULL;
    bool ok = buf && fread(buf, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    if (!ok) {
        free(buf);
        return false;
    }
    buf[n] = 0;
    *data = buf;
    *size = (size_t)n;
    return true;
}

/* Written under a temporary name and renamed, so that two processes never
 * see half a file. */
static void write_cache(const char *path, const char *data, size_t size) {
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return;
    bool ok = fwrite(data, 1, size, f) == size;
    if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) unlink(tmp);
}

#define NVRTC_TRY(call)                                                                              \
    do {                                                                                             \
        nvrtcResult r_ = (call);                                                                     \
        if (r_ != NVRTC_SUCCESS) {                                                                   \
            nnrt_fail(err, errlen, "%s: %s", #call, nvrtcGetErrorString(r_));                        \
            goto fail;                                                                               \
        }                                                                                            \
    } while (0)

int nnrt_cuda_compile(const char *source, int arch, bool cubin, char **image, size_t *size, bool *cached, char *err,
                      size_t errlen) {
    int major = 0, minor = 0;
    nvrtcVersion(&major, &minor);
    uint64_t h = fnv1a(0xCBF29CE484222325ull, source, strlen(source));
    int key[4] = {arch, cubin, major, minor};
    h = fnv1a(h, key, sizeof key);
    const char *dir = nnrt_cuda_cache_dir();
    char path[4200];
    snprintf(path, sizeof path, "%s/%016llx.%s", dir, (unsigned long long)h, cubin ? "cubin" : "ptx");
    *cached = read_file(path, image, size);
    if (*cached) return 0;

    nvrtcProgram prog = NULL;
    char *log = NULL, *out = NULL;
    NVRTC_TRY(nvrtcCreateProgram(&prog, source, "nnc.cu", 0, NULL, NULL));
    char archopt[64];
    snprintf(archopt, sizeof archopt, "--gpu-architecture=%s_%d", cubin ? "sm" : "compute", arch);
    const char *opts[] = {archopt, "--std=c++17", "-default-device"};
    nvrtcResult r = nvrtcCompileProgram(prog, 3, opts);
    if (r != NVRTC_SUCCESS) {
        size_t n = 0;
        nvrtcGetProgramLogSize(prog, &n);
        log = malloc(n + 1);
        if (log && nvrtcGetProgramLog(prog, log) == NVRTC_SUCCESS) log[n] = 0;
        nnrt_fail(err, errlen, "nvrtcCompileProgram (%s): %s\n%s", archopt, nvrtcGetErrorString(r), log ? log : "");
        goto fail;
    }
    size_t n = 0;
    if (cubin) NVRTC_TRY(nvrtcGetCUBINSize(prog, &n));
    else NVRTC_TRY(nvrtcGetPTXSize(prog, &n));
    out = malloc(n + 1);
    if (!out) {
        nnrt_fail(err, errlen, "out of memory for NVRTC's output");
        goto fail;
    }
    if (cubin) NVRTC_TRY(nvrtcGetCUBIN(prog, out));
    else NVRTC_TRY(nvrtcGetPTX(prog, out));
    out[n] = 0;
    nvrtcDestroyProgram(&prog);
    make_dirs(dir);
    write_cache(path, out, n);
    *image = out;
    *size = n;
    return 0;
fail:
    free(log);
    free(out);
    if (prog) nvrtcDestroyProgram(&prog);
    return -1;
}

int nnrt_cuda_device(int *arch, char *name, size_t namelen, char *err, size_t errlen) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        return nnrt_fail(err, errlen, "no CUDA device found (cudaGetDeviceCount: %s)",
                         e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    struct cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess)
        return nnrt_fail(err, errlen, "cudaGetDeviceProperties: %s", cudaGetErrorString(e));
    *arch = prop.major * 10 + prop.minor;
    snprintf(name, namelen, "%s", prop.name);
    return 0;
}
