/* classify.c - classifies the Fashion-MNIST test set with a model that nnc
 * compiled to standalone C, trained parameters included:
 *
 *   nnc train ../mnist_mlp.nn --save mnist_mlp.safetensors
 *   nnc ../mnist_mlp.nn --emit-c --weights mnist_mlp.safetensors -o mnist_mlp.c
 *   cc -std=c99 -O2 -Wall -Wextra -Werror classify.c mnist_mlp.c -lm -o classify
 *   ./classify t10k-images-idx3-ubyte t10k-labels-idx1-ubyte
 *
 * (the data files gunzipped from /usr/share/datasets/fashion-mnist). Nothing
 * but libc and libm: no nnc, no LLVM, no BLAS. */
#include "mnist_mlp.h"

#include <stdio.h>
#include <stdlib.h>

/* An IDX file of unsigned bytes (MNIST's format): a big-endian header of
 * two zero bytes, the type 0x08, the number of dimensions and each
 * dimension, then the data. Returns the data and its number of items. */
static unsigned char *read_idx(const char *path, int dims, long *items, long *item_size) {
    FILE *f = fopen(path, "rb");
    unsigned char head[4], b[4];
    if (!f || fread(head, 1, 4, f) != 4 || head[2] != 0x08 || head[3] != dims) {
        fprintf(stderr, "classify: %s is not an IDX file of %d-dimensional bytes\n", path, dims);
        exit(1);
    }
    long size = 1;
    for (int i = 0; i < dims; i++) {
        if (fread(b, 1, 4, f) != 4) exit(1);
        long d = ((long)b[0] << 24) | ((long)b[1] << 16) | ((long)b[2] << 8) | b[3];
        if (i == 0) *items = d;
        else size *= d;
    }
    *item_size = size;
    unsigned char *data = malloc((size_t)(*items * size));
    if (!data || fread(data, 1, (size_t)(*items * size), f) != (size_t)(*items * size)) {
        fprintf(stderr, "classify: %s is truncated\n", path);
        exit(1);
    }
    fclose(f);
    return data;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: classify IMAGES-IDX LABELS-IDX\n");
        return 2;
    }
    long n, pixels, nlabels, one;
    unsigned char *images = read_idx(argv[1], 3, &n, &pixels);
    unsigned char *labels = read_idx(argv[2], 1, &nlabels, &one);
    if (pixels != MNIST_MLP_X_SIZE || nlabels != n) {
        fprintf(stderr, "classify: expected %d-pixel images with one label each\n", MNIST_MLP_X_SIZE);
        return 1;
    }

    enum { BATCH = 1000 };
    float *state = malloc(sizeof(float) * mnist_mlp_state_size());
    void *workspace = malloc(mnist_mlp_workspace_size(BATCH));
    float *x = malloc(sizeof(float) * BATCH * MNIST_MLP_X_SIZE);
    float *probs = malloc(sizeof(float) * BATCH * MNIST_MLP_PROBS_SIZE);
    if (!state || !workspace || !x || !probs) return 1;
    mnist_mlp_init_trained(state);

    long correct = 0;
    for (long first = 0; first < n; first += BATCH) {
        long count = n - first < BATCH ? n - first : BATCH;
        for (long i = 0; i < count * MNIST_MLP_X_SIZE; i++) x[i] = images[first * MNIST_MLP_X_SIZE + i] / 255.0f;
        mnist_mlp_forward(state, x, probs, count, workspace);
        for (long i = 0; i < count; i++) {
            const float *p = probs + i * MNIST_MLP_PROBS_SIZE;
            int best = 0;
            for (int c = 1; c < MNIST_MLP_PROBS_SIZE; c++)
                if (p[c] > p[best]) best = c;
            correct += best == labels[first + i];
        }
    }
    printf("test accuracy %.4f (%ld of %ld)\n", (double)correct / (double)n, correct, n);
    free(state);
    free(workspace);
    free(x);
    free(probs);
    free(images);
    free(labels);
    return 0;
}
