/* metrics.c - accuracy. */
#include "runtime/data.h"

int64_t rt_count_correct(const float *probs, const int32_t *labels, int64_t n, int64_t classes) {
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *row = probs + i * classes;
        int64_t best = 0;
        for (int64_t j = 1; j < classes; j++)
            if (row[j] > row[best]) best = j;
        correct += best == labels[i];
    }
    return correct;
}
