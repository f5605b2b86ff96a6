/* sgemm_rate.c - the machine's single-precision matrix-product rate: large
 * square C = A B through OpenBLAS (the library nnc's compiled code calls),
 * at each thread count asked for, in GFLOP/s (2 n^3 operations a product).
 * bench/compare.py measures the training and inference workloads against it.
 *
 *   sgemm_rate [--size N] [--threads 1,2] [--time S] [--json]
 *
 * Each thread count gets one untimed product, then products until --time
 * seconds have passed (at least three); the best and the median are
 * reported. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *out) {
    fputs("usage: sgemm_rate [--size N] [--threads LIST] [--time S] [--json]\n"
          "  --size N        n of the n x n matrices (default 1024)\n"
          "  --threads LIST  OpenBLAS thread counts, comma-separated (default 1,2)\n"
          "  --time S        seconds of products per thread count (default 1)\n"
          "  --json          one JSON object instead of text\n",
          out);
}

int main(int argc, char **argv) {
    long n = 1024;
    double seconds = 1;
    const char *threads = "1,2";
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) json = 1;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (i + 1 < argc && strcmp(a, "--size") == 0) n = strtol(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(a, "--time") == 0) seconds = strtod(argv[++i], NULL);
        else if (i + 1 < argc && strcmp(a, "--threads") == 0) threads = argv[++i];
        else {
            fprintf(stderr, "sgemm_rate: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (n < 1 || n > 16384 || !(seconds > 0)) {
        fprintf(stderr, "sgemm_rate: --size must be in [1, 16384] and --time positive\n");
        return 2;
    }
    size_t elems = (size_t)n * (size_t)n;
    float *a = malloc(elems * sizeof(float)), *b = malloc(elems * sizeof(float)), *c = malloc(elems * sizeof(float));
    if (!a || !b || !c) {
        fprintf(stderr, "sgemm_rate: out of memory for %ld x %ld matrices\n", n, n);
        return 1;
    }
    unsigned seed = 1;
    for (size_t i = 0; i < elems; i++) {
        seed = seed * 1664525u + 1013904223u;
        a[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
        seed = seed * 1664525u + 1013904223u;
        b[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
    }
    double flops = 2.0 * (double)n * (double)n * (double)n;
    if (json) printf("{\"size\": %ld, \"seconds\": %g, \"config\": \"%s\", \"rates\": [", n, seconds, openblas_get_config());
    else printf("sgemm %ld x %ld (%s)\n", n, n, openblas_get_config());
    const char *p = threads;
    int first = 1;
    while (*p) {
        char *end;
        long t = strtol(p, &end, 10);
        if (end == p || t < 1 || (*end && *end != ',')) {
            fprintf(stderr, "sgemm_rate: bad --threads list '%s'\n", threads);
            return 2;
        }
        p = *end ? end + 1 : end;
        openblas_set_num_threads((int)t);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1, a, (int)n, b, (int)n, 0, c,
                    (int)n);
        int cap = 64, runs = 0;
        double *rate = malloc(sizeof(double) * (size_t)cap);
        double t0 = now();
        while (runs < 3 || now() - t0 < seconds) {
            double s = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1, a, (int)n, b, (int)n,
                        0, c, (int)n);
            double r = flops / (now() - s) / 1e9;
            if (runs == cap) rate = realloc(rate, sizeof(double) * (size_t)(cap *= 2));
            rate[runs++] = r;
        }
        qsort(rate, (size_t)runs, sizeof(double), cmp_double);
        double best = rate[runs - 1], median = rate[runs / 2];
        if (json)
            printf("%s{\"threads\": %ld, \"gflops_best\": %.2f, \"gflops_median\": %.2f, \"runs\": %d}", first ? "" : ", ",
                   t, best, median, runs);
        else printf("  %2ld threads  %8.1f GFLOP/s best  %8.1f median  (%d products)\n", t, best, median, runs);
        first = 0;
        free(rate);
    }
    if (json) printf("]}\n");
    free(a);
    free(b);
    free(c);
    return 0;
}
