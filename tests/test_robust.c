/* test_robust.c - no input crashes the compiler. Thousands of mutations of
 * real programs (characters replaced, inserted, deleted; lines duplicated,
 * swapped and dropped; tokens spliced in from a list of the language's
 * words) go through the whole front of nnc: parsing, lowering, every pass
 * and the lowering to Kernel IR. Each must either compile or report errors;
 * the test runs under the sanitizers in CI, which turns any memory error
 * into a failure. NNC_FUZZ_CASES=N runs N mutations instead of 10000. */
#include "cli/driver.h"
#include "runtime/rng.h"
#include "support/util.h"

#include "check_main.h"
#include <stdlib.h>
#include <string.h>

static const char *const seeds[] = {
    "model m\ninput x : f32[N, 784]\ntarget y : i32[N] classes 10\nh = dense(x, 10, act=sigmoid)\n"
    "logits = dense(h, 10)\noutput probs = softmax(logits)\nloss cross_entropy(logits, y)\n"
    "train sgd(lr=0.5) batch 64 epochs 5\n",
    "input x : f32[N, 6]\ntarget y : i32[N] classes 3\nparam W : f32[6, 4] init=he\nparam b : f32[4]\n"
    "def block(t, width) {\n  u = dense(t, width, act=tanh)\n  return relu(u) - t @ W * 0.1\n}\n"
    "h = relu(x @ W + b)\nz = block(x, 4) + block(x, 4)\nlogits = dense(h + z, 3)\n"
    "output probs = softmax(logits)\nloss cross_entropy(logits, y)\ntrain adam(lr=1e-3) schedule cosine\n",
    "input x : f32[N, 3]\ntarget t : f32[N, 1]\nh = sum(x * x, axis=1, keepdims=true)\n"
    "output y = max(h, 0.5) / mean(x, axis=-1, keepdims=true)\nloss mse(y, t)\n"
    "train momentum(lr=0.1) schedule step(every=2, gamma=0.5)\n",
    "input x : f32[N, 5]\ntarget y : i32[N] classes 10\ntarget t : f32[N, 1]\n"
    "h = dense(x, 8, act=leaky_relu(alpha=0.2))\ns = dense(elu(h) + swish(h), 1)\nz = dense(softplus(h), 2)\n"
    "output p = sigmoid(s)\nloss binary_cross_entropy(s, t) + hinge(s, 2 * step(t - 0.5) - 1, margin=0)\n"
    "loss sigmoid_cross_entropy(z, multi_hot(y, [[5, 7, 9], [0, 2, 4, 6]]))\n"
    "loss hinge(dense(h, 10), y) + squared_error(s, t) + rmse(abs(s), t)\ntrain adam(lr=1e-3)\n",
};

static const char *const words[] = {
    "dense", "relu", "softmax", "(", ")", ",", "=", "@", "+", "-", "*", "/", "N", "x", "y", "h", "[", "]",
    ":", "f32", "i32", "loss", "output", "input", "target", "param", "def", "return", "{", "}", "\n", "0",
    "-1", "1e9", "99999999999", "act=", "init=", "axis=", "sum(", "mean(", "flatten(", "matmul(", "cross_entropy(",
    "mse(", "pow(", "log(", ";", "train", "sgd(", "schedule", "batch", "epochs", "\"s\"", "#", "0.5", "N,",
    "multi_hot(", "[[", "]]", "hinge(", "margin=", "alpha=", "leaky_relu(", "binary_cross_entropy(", "52", "i32[N]",
};

/* A mutation of `text`, deterministic in (seed, k). */
static char *mutate(const char *text, uint64_t k) {
    StrBuf sb = {0};
    sb_puts(&sb, text);
    int edits = 1 + (int)nnrt_rand_below(k, 0, 2);
    for (int e = 0; e < edits; e++) {
        size_t len = sb.len;
        size_t at = len ? (size_t)nnrt_rand_below(k, 10 + (uint64_t)e, len) : 0;
        uint64_t what = nnrt_rand_below(k, 20 + (uint64_t)e, 5);
        char *s = sb.data;
        StrBuf next = {0};
        if (what == 0 && len) { /* delete a run */
            size_t n = 1 + (size_t)nnrt_rand_below(k, 30 + (uint64_t)e, 12);
            if (at + n > len) n = len - at;
            sb_printf(&next, "%.*s%s", (int)at, s, s + at + n);
        } else if (what == 1) { /* insert a word */
            const char *w = words[nnrt_rand_below(k, 40 + (uint64_t)e, sizeof words / sizeof words[0])];
            sb_printf(&next, "%.*s%s%s", (int)at, s, w, s + at);
        } else if (what == 2 && len) { /* replace a byte, any byte */
            sb_puts(&next, s);
            next.data[at] = (char)nnrt_rand_below(k, 50 + (uint64_t)e, 256);
            if (!next.data[at]) next.data[at] = '\n';
        } else if (what == 3) { /* duplicate a line */
            const char *line = s + at;
            while (line > s && line[-1] != '\n') line--;
            const char *end = strchr(line, '\n');
            size_t n = end ? (size_t)(end - line + 1) : strlen(line);
            sb_printf(&next, "%.*s%.*s%s", (int)(line - s), s, (int)n, line, line);
        } else { /* drop a line */
            const char *line = s + at;
            while (line > s && line[-1] != '\n') line--;
            const char *end = strchr(line, '\n');
            sb_printf(&next, "%.*s%s", (int)(line - s), s, end ? end + 1 : "");
        }
        sb_free(&sb);
        sb = next;
        if (!sb.data) sb_puts(&sb, "");
    }
    return sb_take(&sb);
}

START_TEST(test_mutated_programs_never_crash) {
    int compiled = 0, rejected = 0;
    FILE *devnull = fopen("/dev/null", "w");
    const char *cases_env = getenv("NNC_FUZZ_CASES");
    uint64_t cases = cases_env ? strtoull(cases_env, NULL, 10) : 10000;
    for (uint64_t k = 0; k < cases; k++) {
        const char *seed = seeds[k % (sizeof seeds / sizeof seeds[0])];
        char *text = mutate(seed, k * 7919 + 17);
        Arena arena = {0};
        Diag d;
        diag_init(&d, NULL, devnull);
        Module *m = nnc_compile_source(&arena, "fuzz.nn", text, strlen(text), &d, NULL);
        if (m) {
            /* the whole way to Kernel IR */
            const Graph *graphs[] = {m->forward, m->eval, m->grad, m->train};
            for (int g = 0; g < 4; g++)
                if (graphs[g]) lower_graph(m, graphs[g], (ProgKind)g, false);
            lower_init(m, false);
            compiled++;
        } else {
            ck_assert_msg(d.nerrors > 0, "rejected without an error:\n%s", text);
            rejected++;
        }
        arena_free_all(&arena);
        free(text);
    }
    fclose(devnull);
    /* the mutations must exercise both paths */
    ck_assert_int_gt(compiled, (int)(cases / 40));
    ck_assert_int_gt(rejected, (int)(cases / 40));
    printf("%d mutations compiled, %d rejected with errors\n", compiled, rejected);
}
END_TEST

int main(void) {
    Suite *s = suite_create("robust");
    TCase *tc = tcase_create("frontend");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_mutated_programs_never_crash);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
