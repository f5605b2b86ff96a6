/* test_losses.c - the activations and losses of the language, compiled by
 * the JIT in single precision, against the formulas of docs/language.md
 * computed here in double precision: values on fixed inputs that include
 * logits of +-1000 (where a naive formula overflows) and gradients there,
 * which must come out finite and right. */
#include "cli/driver.h"
#include "support/util.h"

#include "check_main.h"
#include "compiled.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------- */

static void compile(Compiled *c, const char *text, unsigned fns) { compiled_from_text(c, text, fns, false, 64); }

/* The loss of a model's eval function on `args` (inputs, targets, outputs). */
static double eval_loss(const char *text, void **args, int64_t batch) {
    Compiled c;
    compile(&c, text, FN_BIT(FN_EVAL));
    double loss = session_run(c.s, FN_EVAL, args, batch);
    compiled_release(&c);
    return loss;
}

/* |got - want| within rel * |want| + abs, and got finite. */
static void expect_close(double got, double want, double rel, double abs, const char *what, int i) {
    ck_assert_msg(isfinite(got), "%s[%d]: %g is not finite", what, i, got);
    ck_assert_msg(fabs(got - want) <= rel * fabs(want) + abs, "%s[%d]: got %.9g, expected %.9g", what, i, got, want);
}

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double softplus(double x) { return fmax(x, 0) + log1p(exp(-fabs(x))); }

/* Inputs from the far negative tail to the far positive one, 0 included. */
enum { NX = 16 };
static const float extremes[NX] = {-1000, -100, -88, -20, -5, -1, -0.5f, -1e-3f,
                                   0,     1e-3f, 0.5f, 1, 5, 20, 88, 1000};

/* ---- activations ----------------------------------------------------------------------------- */

enum { NACT = 10 };

/* Activation k of docs/language.md at x, in double precision. */
static double activation(int k, double x) {
    switch (k) {
    case 0: return x > 0 ? x : 0.01 * x;       /* leaky_relu(x)            */
    case 1: return x > 0 ? x : 0.2 * x;        /* leaky_relu(x, alpha=0.2) */
    case 2: return x > 0 ? x : expm1(x);       /* elu(x)                   */
    case 3: return x > 0 ? x : 0.5 * expm1(x); /* elu(x, alpha=0.5)        */
    case 4: return x * sigmoid(x);             /* swish                    */
    case 5: return softplus(x);
    case 6: return fabs(x);
    case 7: return x > 0 ? 1 : 0;              /* step                     */
    case 8: return x;                          /* identity                 */
    default: return x > 0 ? x : 0.1 * x;       /* act=leaky_relu(alpha=0.1) */
    }
}

START_TEST(test_activation_values) {
    Compiled c;
    compile(&c,
            "input x : f32[N, 16]\n"
            "output a0 = leaky_relu(x)\noutput a1 = leaky_relu(x, alpha=0.2)\n"
            "output a2 = elu(x)\noutput a3 = elu(x, 0.5)\noutput a4 = swish(x)\noutput a5 = softplus(x)\n"
            "output a6 = abs(x)\noutput a7 = step(x)\noutput a8 = identity(x)\n"
            "output a9 = dense(x, 16, act=leaky_relu(alpha=0.1), bias=false)\n",
            FN_BIT(FN_FORWARD));
    /* a9's weights: the identity matrix, so it is the activation of x itself */
    float *W = session_slot(c.s, "a9.W");
    ck_assert_ptr_nonnull(W);
    for (int i = 0; i < NX * NX; i++) W[i] = i % (NX + 1) == 0;
    enum { B = 2 };
    float x[B * NX], out[NACT][B * NX];
    for (int i = 0; i < NX; i++) {
        x[i] = extremes[i];
        x[NX + i] = (float)(0.37 * (i - 7.5)); /* a second row of ordinary values */
    }
    void *args[1 + NACT] = {x};
    for (int k = 0; k < NACT; k++) args[1 + k] = out[k];
    session_run(c.s, FN_FORWARD, args, B);
    for (int k = 0; k < NACT; k++)
        for (int i = 0; i < B * NX; i++) {
            char what[16];
            snprintf(what, sizeof what, "a%d", k);
            /* softplus to float rounding even in its tails (log1p), down to
             * subnormal values; the others to float rounding near 1 */
            expect_close(out[k][i], activation(k, x[i]), 2e-6, k == 5 ? 1e-30 : 1e-6, what, i);
        }
    compiled_release(&c);
}
END_TEST

/* The slope of each activation; at the kink x = 0 nnc takes the slope of
 * the left side (x > 0 decides), except abs, whose slope there is 0. */
static double activation_slope(int k, double x) {
    double s = sigmoid(x);
    switch (k) {
    case 0: return x > 0 ? 1 : 0.01;
    case 2: return x > 0 ? 1 : exp(x);
    case 4: return s * (1 + x * (1 - s));
    case 5: return s;
    case 6: return x > 0 ? 1 : x < 0 ? -1 : 0;
    default: return 0; /* step */
    }
}

/* loss = mean(sum of the activations of x + b) with b = 0: the gradient of
 * b_j is the mean over the batch of the slopes at x_ij, divided by 16. */
START_TEST(test_activation_gradients_at_extremes) {
    Compiled c;
    compile(&c,
            "input x : f32[N, 16]\nparam b : f32[16]\nh = x + b\noutput y = h\n"
            "loss mean(leaky_relu(h) + elu(h) + swish(h) + softplus(h) + abs(h) + step(h))\n",
            FN_BIT(FN_GRAD));
    enum { B = 2 };
    float x[B * NX], gb[NX];
    for (int i = 0; i < NX; i++) x[i] = extremes[i], x[NX + i] = extremes[NX - 1 - i] * 0.01f;
    double loss = session_run(c.s, FN_GRAD, (void *[]){x, gb}, B);
    double want_loss = 0;
    for (int i = 0; i < B * NX; i++)
        for (int k = 0; k < 8; k++)
            if (k != 1 && k != 3) want_loss += activation(k, x[i]);
    expect_close(loss, want_loss / (B * NX), 1e-6, 1e-6, "loss", 0);
    for (int j = 0; j < NX; j++) {
        double want = 0;
        for (int i = 0; i < B; i++)
            for (int k = 0; k < 8; k++)
                if (k != 1 && k != 3) want += activation_slope(k, x[i * NX + j]);
        expect_close(gb[j], want / (B * NX), 1e-5, 1e-8, "grad b", j);
    }
    compiled_release(&c);
}
END_TEST

/* ---- regression losses ------------------------------------------------------------------------- */

START_TEST(test_squared_error_mse_rmse) {
    enum { B = 3, K = 5 };
    float p[B * K], t[B * K], out[B * K];
    double sq = 0;
    for (int i = 0; i < B * K; i++) {
        p[i] = (float)(0.3 * i - 2.1);
        t[i] = (float)(1.7 - 0.45 * (i % 4));
        sq += ((double)p[i] - t[i]) * ((double)p[i] - t[i]);
    }
    void *args[] = {p, t, out};
    const char *head = "input p : f32[N, 5]\ntarget t : f32[N, 5]\noutput o = p\n";
    char text[256];
    snprintf(text, sizeof text, "%sloss mse(p, t)\n", head);
    expect_close(eval_loss(text, args, B), sq / (B * K), 1e-6, 0, "mse", 0);
    snprintf(text, sizeof text, "%sloss squared_error(p, t)\n", head);
    expect_close(eval_loss(text, args, B), 0.5 * sq / B, 1e-6, 0, "squared_error", 0);
    snprintf(text, sizeof text, "%sloss rmse(p, t)\n", head);
    expect_close(eval_loss(text, args, B), sqrt(sq / (B * K)), 1e-6, 0, "rmse", 0);
}
END_TEST

/* ---- binary cross-entropy -------------------------------------------------------------------- */

/* Mean over the elements of -t ln sigmoid(z) - (1 - t) ln(1 - sigmoid(z)),
 * in the form that is exact in double for any z. */
static double bce(const float *z, const float *t, int n) {
    double total = 0;
    for (int i = 0; i < n; i++) total += fmax(z[i], 0) - (double)t[i] * z[i] + log1p(exp(-fabs(z[i])));
    return total / n;
}

START_TEST(test_binary_cross_entropy_extreme_logits) {
    const char *binary = "input z : f32[N, 1]\ntarget t : f32[N, 1]\noutput p = sigmoid(z)\n"
                         "loss binary_cross_entropy(z, t)\n";
    enum { B = 8 };
    float p[B];
    /* confidently right: each loss is tiny (e^-20, e^-1000 = 0) and must not
     * be lost to cancellation, nor be inf - inf */
    float z1[B] = {20, -20, 1000, -1000, 88, -88, 30, -30}, t1[B] = {1, 0, 1, 0, 1, 0, 1, 0};
    double got = eval_loss(binary, (void *[]){z1, t1, p}, B);
    expect_close(got, bce(z1, t1, B), 1e-5, 0, "bce right", 0);
    ck_assert(got > 0);
    /* confidently wrong: a loss of |z|, not inf */
    float z2[B] = {1000, -1000, 20, -20, 0, 0.5f, -3, 7}, t2[B] = {0, 1, 0, 1, 0.5f, 0.25f, 1, 0.9f};
    expect_close(eval_loss(binary, (void *[]){z2, t2, p}, B), bce(z2, t2, B), 1e-6, 0, "bce wrong", 0);
    /* batch 1 */
    expect_close(eval_loss(binary, (void *[]){z2 + 6, t2 + 6, p}, 1), bce(z2 + 6, t2 + 6, 1), 1e-6, 0, "bce 1", 0);

    /* multi-label [N, 3], under both names */
    float z3[4 * 3] = {1000, -1000, 0, -5, 5, 20, 2, -2, 0.1f, -20, 30, -1}, t3[4 * 3], p3[4 * 3];
    for (int i = 0; i < 12; i++) t3[i] = (float)((i * 7 % 5) / 4.0);
    const char *fmt = "input z : f32[N, 3]\ntarget t : f32[N, 3]\noutput p = sigmoid(z)\nloss %s(z, t)\n";
    const char *names[] = {"binary_cross_entropy", "sigmoid_cross_entropy"};
    for (int k = 0; k < 2; k++) {
        char text[256];
        snprintf(text, sizeof text, fmt, names[k]);
        expect_close(eval_loss(text, (void *[]){z3, t3, p3}, 4), bce(z3, t3, 12), 1e-6, 0, names[k], 0);
    }
}
END_TEST

/* d loss / d z = (sigmoid(z) - t) / count, finite at +-1000 */
START_TEST(test_binary_cross_entropy_gradient_at_extremes) {
    Compiled c;
    compile(&c,
            "input x : f32[N, 4]\ntarget t : f32[N, 4]\nparam b : f32[4]\nz = x + b\noutput p = sigmoid(z)\n"
            "loss binary_cross_entropy(z, t)\n",
            FN_BIT(FN_GRAD));
    enum { B = 3 };
    float x[B * 4] = {1000, -1000, 20, -20, -1000, 1000, 0, 3, 88, -88, -0.5f, 0.5f};
    float t[B * 4] = {1, 0, 0, 1, 1, 0, 0.5f, 0.2f, 0, 1, 1, 0};
    float gb[4];
    double loss = session_run(c.s, FN_GRAD, (void *[]){x, t, gb}, B);
    expect_close(loss, bce(x, t, B * 4), 1e-6, 0, "loss", 0);
    for (int j = 0; j < 4; j++) {
        double want = 0;
        for (int i = 0; i < B; i++) want += sigmoid(x[i * 4 + j]) - t[i * 4 + j];
        expect_close(gb[j], want / (B * 4), 1e-5, 1e-9, "grad b", j);
    }
    compiled_release(&c);
}
END_TEST

/* ---- cross-entropy with f32 targets ------------------------------------------------------------ */

/* mean over rows of -sum_c t_c log_softmax(z)_c */
static double soft_cross_entropy(const float *z, const float *t, int rows, int cols) {
    double total = 0;
    for (int r = 0; r < rows; r++) {
        double m = -INFINITY, s = 0;
        for (int j = 0; j < cols; j++) m = fmax(m, z[r * cols + j]);
        for (int j = 0; j < cols; j++) s += exp(z[r * cols + j] - m);
        for (int j = 0; j < cols; j++) total -= t[r * cols + j] * (z[r * cols + j] - m - log(s));
    }
    return total / rows;
}

START_TEST(test_cross_entropy_targets_extreme_logits) {
    enum { B = 3, C = 4 };
    float z[B * C] = {1000, 1001, 999, -1000, 1, 2, 3, 4, -1000, 0, 1000, 0.5f};
    float onehot[B * C] = {0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0};
    float soft[B * C] = {0.1f, 0.6f, 0.3f, 0, 0.25f, 0.25f, 0.25f, 0.25f, 0.5f, 0, 0.5f, 0};
    int32_t labels[B] = {3, 0, 2};
    float p[B * C];
    const char *f32 = "input z : f32[N, 4]\ntarget t : f32[N, 4]\noutput p = softmax(z)\nloss cross_entropy(z, t)\n";
    const char *i32 = "input z : f32[N, 4]\ntarget y : i32[N] classes 4\noutput p = softmax(z)\n"
                      "loss cross_entropy(z, y)\n";
    double with_onehot = eval_loss(f32, (void *[]){z, onehot, p}, B);
    expect_close(with_onehot, soft_cross_entropy(z, onehot, B, C), 1e-6, 0, "one-hot", 0);
    /* one-hot targets and class labels are the same loss */
    expect_close(with_onehot, eval_loss(i32, (void *[]){z, labels, p}, B), 1e-6, 0, "labels", 0);
    expect_close(eval_loss(f32, (void *[]){z, soft, p}, B), soft_cross_entropy(z, soft, B, C), 1e-6, 0, "soft", 0);
    /* multi_hot of one class per set is one-hot */
    expect_close(eval_loss("input z : f32[N, 4]\ntarget y : i32[N]\noutput p = softmax(z)\n"
                           "loss cross_entropy(z, multi_hot(y, [[0], [1], [2], [3]]))\n",
                           (void *[]){z, labels, p}, B),
                 with_onehot, 1e-6, 0, "multi_hot", 0);
}
END_TEST

/* d loss / d z_r = (softmax(z_r) sum_c t_rc - t_r) / rows. Next to logits
 * of 1000, log_softmax is known to float precision relative to the logits
 * (6e-5), and so is this gradient. */
START_TEST(test_cross_entropy_targets_gradient) {
    Compiled c;
    compile(&c,
            "input x : f32[N, 3]\ntarget t : f32[N, 3]\nparam b : f32[3]\nz = x + b\noutput p = softmax(z)\n"
            "loss cross_entropy(z, t)\n",
            FN_BIT(FN_GRAD));
    enum { B = 2 };
    float x[B * 3] = {1000, -1000, 999, 0.5f, -0.25f, 2}, t[B * 3] = {0.2f, 0.5f, 0.3f, 0, 0, 1}, gb[3];
    session_run(c.s, FN_GRAD, (void *[]){x, t, gb}, B);
    for (int j = 0; j < 3; j++) {
        double want = 0;
        for (int r = 0; r < B; r++) {
            double m = -INFINITY, s = 0, tsum = 0;
            for (int k = 0; k < 3; k++) m = fmax(m, x[r * 3 + k]), tsum += t[r * 3 + k];
            for (int k = 0; k < 3; k++) s += exp(x[r * 3 + k] - m);
            want += exp(x[r * 3 + j] - m) / s * tsum - t[r * 3 + j];
        }
        expect_close(gb[j], want / B, 0, 1e-4, "grad b", j);
    }
    compiled_release(&c);
}
END_TEST

/* ---- hinge -------------------------------------------------------------------------------------- */

START_TEST(test_binary_hinge) {
    enum { B = 6 };
    float s[B] = {2, 0.5f, -0.3f, -4, 0, 1000}, t[B] = {1, 1, 1, -1, -1, -1}, p[B];
    const double margins[] = {1, 0, 0.5};
    for (int k = 0; k < 3; k++) {
        char text[256];
        snprintf(text, sizeof text,
                 "input s : f32[N, 1]\ntarget t : f32[N, 1]\noutput o = step(s)\nloss hinge(s, t, margin=%g)\n",
                 margins[k]);
        double want = 0;
        for (int i = 0; i < B; i++) want += fmax(0, margins[k] - (double)t[i] * s[i]);
        expect_close(eval_loss(text, (void *[]){s, t, p}, B), want / B, 1e-6, 0, "hinge", k);
    }
    /* the default margin is 1 */
    expect_close(eval_loss("input s : f32[N, 1]\ntarget t : f32[N, 1]\noutput o = s\nloss hinge(s, t)\n",
                           (void *[]){s, t, p}, B),
                 (0 + 0.5 + 1.3 + 0 + 1 + 1001) / B, 1e-6, 0, "hinge default", 0);
}
END_TEST

/* Weston-Watkins: mean over rows of sum_{j != y} max(0, margin + s_j - s_y) */
START_TEST(test_multiclass_hinge) {
    enum { B = 3, C = 4 };
    float s[B * C] = {3, 1, 2.5f, -1, 0, 0, 0, 0, -1000, 1000, 0.2f, 0.9f}, p[B * C];
    int32_t y[B] = {0, 2, 3};
    for (int k = 0; k < 2; k++) {
        double margin = k ? 0.5 : 1, want = 0;
        for (int r = 0; r < B; r++)
            for (int j = 0; j < C; j++)
                if (j != y[r]) want += fmax(0, margin + s[r * C + j] - s[r * C + y[r]]);
        char text[256];
        snprintf(text, sizeof text,
                 "input s : f32[N, 4]\ntarget y : i32[N] classes 4\noutput p = softmax(s)\n"
                 "loss hinge(s, y, margin=%g)\n",
                 margin);
        expect_close(eval_loss(text, (void *[]){s, y, p}, B), want / B, 1e-6, 0, "multi-class hinge", k);
    }
}
END_TEST

/* ---- multi_hot ---------------------------------------------------------------------------------- */

START_TEST(test_multi_hot_values) {
    Compiled c;
    compile(&c, "input y : i32[N]\noutput m = multi_hot(y, [[5, 7, 9], [0, 2, 4, 6], [1], [51, 0]])\n",
            FN_BIT(FN_FORWARD));
    static const int sets[4][4] = {{5, 7, 9, -1}, {0, 2, 4, 6}, {1, -1, -1, -1}, {51, 0, -1, -1}};
    enum { B = 12 };
    int32_t y[B] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 51, 50};
    float m[B * 4];
    session_run(c.s, FN_FORWARD, (void *[]){y, m}, B);
    for (int i = 0; i < B; i++)
        for (int k = 0; k < 4; k++) {
            int in = 0;
            for (int j = 0; j < 4; j++) in |= sets[k][j] == y[i];
            ck_assert_msg(m[i * 4 + k] == (float)in, "label %d, set %d: %g", y[i], k, m[i * 4 + k]);
        }
    compiled_release(&c);
}
END_TEST

int main(void) {
    Suite *s = suite_create("losses");
    /* Each test JIT-compiles a model: seconds, not milliseconds, in
     * sanitizer builds running beside other tests. */
    TCase *act = tcase_create("activations");
    tcase_set_timeout(act, 60);
    tcase_add_test(act, test_activation_values);
    tcase_add_test(act, test_activation_gradients_at_extremes);
    suite_add_tcase(s, act);
    TCase *loss = tcase_create("losses");
    tcase_set_timeout(loss, 60);
    tcase_add_test(loss, test_squared_error_mse_rmse);
    tcase_add_test(loss, test_binary_cross_entropy_extreme_logits);
    tcase_add_test(loss, test_binary_cross_entropy_gradient_at_extremes);
    tcase_add_test(loss, test_cross_entropy_targets_extreme_logits);
    tcase_add_test(loss, test_cross_entropy_targets_gradient);
    tcase_add_test(loss, test_binary_hinge);
    tcase_add_test(loss, test_multiclass_hinge);
    tcase_add_test(loss, test_multi_hot_values);
    suite_add_tcase(s, loss);
    return run_suite(s);
}
