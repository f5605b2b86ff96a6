/* nnrt_cuda.h - what the CUDA backend needs of the toolkit at run time:
 * NVRTC with an on-disk cache of what it compiles, and the device.
 *
 * Failures are reported the runtime's way (runtime/error.h): a message
 * naming the CUDA, cuBLAS or NVRTC call and the library's own words, and
 * -1. Nothing here needs a GPU except nnrt_cuda_device. */
#ifndef NNRT_CUDA_H
#define NNRT_CUDA_H

#include <stdbool.h>
#include <stddef.h>

/* Compiles CUDA C `source` with NVRTC for compute capability `arch` (90 for
 * sm_90): a cubin when `cubin` is set, else PTX for compute_ARCH. The
 * result (malloc'ed) is read from, or written to, the cache directory
 * ($XDG_CACHE_HOME/nnc, else ~/.cache/nnc) under a hash of the source, the
 * architecture and NVRTC's version; `cached` says which. */
int nnrt_cuda_compile(const char *source, int arch, bool cubin, char **image, size_t *size, bool *cached, char *err,
                      size_t errlen);

/* The first device: its compute capability (major * 10 + minor) and name.
 * "no CUDA device found" when there is none or no driver. */
int nnrt_cuda_device(int *arch, char *name, size_t namelen, char *err, size_t errlen);

/* The cache directory in use (for messages). */
const char *nnrt_cuda_cache_dir(void);

#endif
