/* checkpoint.h - model state to and from safetensors files.
 *
 * A checkpoint holds the tensors of a model's state by name: parameters,
 * optimizer moments and hyper-parameters (so training resumes exactly).
 * The format is safetensors, which PyTorch and others read:
 *
 *   8 bytes   little-endian u64 N, the length of the header
 *   N bytes   JSON: {"__metadata__": {...}, "NAME": {"dtype": "F32",
 *             "shape": [784, 10], "data_offsets": [BEGIN, END]}, ...}
 *   data      the tensors' bytes, little-endian, offsets relative to here
 *
 * Files are written to a temporary name and renamed, so a crash never
 * leaves a half-written checkpoint. Functions return 0, or -1 with a
 * message naming the file (and the tensor, when one is at fault) in err. */
#ifndef NNRT_CHECKPOINT_H
#define NNRT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

enum {
    NNRT_PARAM = 1,     /* a trained parameter                */
    NNRT_OPT_STATE = 2, /* an optimizer moment                */
    NNRT_HYPER = 4,     /* a hyper-parameter (lr, step, ...)  */
};

/* One tensor of a model's state: `size` floats at `offset` floats into the
 * state buffer, with shape dims[0..rank). Scalars have rank 0. */
typedef struct NnrtTensor {
    const char *name;
    int kind; /* NNRT_PARAM, NNRT_OPT_STATE or NNRT_HYPER */
    int rank;
    int64_t dims[4];
    int64_t offset, size;
} NnrtTensor;

/* Writes every tensor of `t` (all F32) from `state` to `path`; the header's
 * __metadata__ records {"format": "nnc", "model": model_name}. */
int nnrt_checkpoint_save(const float *state, const NnrtTensor *t, int n, const char *model_name, const char *path,
                         char *err, size_t errlen);

/* Reads tensors of `t` from `path` into `state`. Every tensor whose kind is
 * in `required` must be in the file; others are read when present. A
 * tensor in the file must have dtype F32 and the tensor's exact shape;
 * tensors of the file that `t` does not name are ignored. On failure the
 * state is left unchanged. */
int nnrt_checkpoint_load(float *state, const NnrtTensor *t, int n, int required, const char *path, char *err,
                         size_t errlen);

#endif
