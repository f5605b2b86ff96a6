/* test_training.c - the training driver end to end on small CSV tasks it
 * writes itself: learning an exact linear rule, frozen parameters that do
 * not move, pretrained parameters copied from another model's checkpoint,
 * early stopping, CSV errors, and class subsets of Fashion-MNIST. */
#include "check_main.h"
#include "cli/driver.h"
#include "runtime/checkpoint.h"
#include "runtime/data.h"
#include "runtime/nnrt.h"
#include "runtime/rng.h"
#include "support/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[64];

static const char *path_in(const char *name) {
    static char buf[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void setup(void) {
    strcpy(dir, "/tmp/nnc-training-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    nnrt_set_threads(1);
}

static void write_text(const char *name, const char *text) {
    FILE *f = fopen(path_in(name), "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* y = 2 x1 - 3 x2 + 1, exactly, for 400 rows of x in [-1, 1]. */
static void write_linear_csv(const char *name) {
    FILE *f = fopen(path_in(name), "w");
    fputs("x1,x2,y\n", f);
    for (int i = 0; i < 400; i++) {
        double a = 2 * nnrt_rand_uniform(1, (uint64_t)i) - 1, b = 2 * nnrt_rand_uniform(2, (uint64_t)i) - 1;
        fprintf(f, "%.6f, %.6f, %.6f\n", a, b, 2 * a - 3 * b + 1);
    }
    fclose(f);
}

/* Compiles model text written to a file in the scratch folder. */
static Module *compile(Arena *a, const char *name, const char *text) {
    write_text(name, text);
    Diag d;
    diag_init(&d, NULL, stderr);
    Module *m = nnc_load_model(a, path_in(name), &d, NULL);
    ck_assert_msg(m != NULL, "%s does not compile", name);
    return m;
}

/* The tensors of checkpoint `file` as the model's state layout. */
static float *read_state(Module *m, const char *file) {
    float *state = xcalloc((size_t)m->state_size + 1, sizeof(float));
    char err[512];
    int rc = nnrt_checkpoint_load(state, module_tensor_table(m), m->nslots, NNRT_PARAM, file, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    return state;
}

static const char *linear_model = "data csv(\"linear.csv\", test=0.25)\n"
                                  "input x : f32[N, 2]\n"
                                  "target y : f32[N, 1]\n"
                                  "output p = dense(x, 1)\n"
                                  "loss mse(p, y)\n"
                                  "train sgd(lr=0.3) batch 16 epochs 40\n";

START_TEST(test_learns_a_linear_rule_from_csv) {
    setup();
    write_linear_csv("linear.csv");
    Arena a = {0};
    Module *m = compile(&a, "linear.nn", linear_model);
    TrainResult r;
    TrainConfig c = {.seed = 1, .val = 20, .quiet = true, .save = path_in("linear.safetensors")};
    ck_assert_int_eq(trainer_run(m, &c, &r), 0);
    ck_assert_msg(r.test_loss < 1e-6, "test loss %g", r.test_loss);
    ck_assert(!r.has_accuracy);
    float *state = read_state(m, path_in("linear.safetensors"));
    const StateSlot *w = module_find_slot(m, "p.W"), *b = module_find_slot(m, "p.b");
    ck_assert_double_eq_tol(state[w->offset], 2, 1e-3);
    ck_assert_double_eq_tol(state[w->offset + 1], -3, 1e-3);
    ck_assert_double_eq_tol(state[b->offset], 1, 1e-3);
    free(state);
    arena_free_all(&a);
}
END_TEST

/* A model whose first layer is frozen: after training it is the init's,
 * bit for bit, while the second layer has moved. */
START_TEST(test_frozen_parameters_do_not_move) {
    setup();
    write_linear_csv("linear.csv");
    Arena a = {0};
    Module *m = compile(&a, "frozen.nn",
                        "data csv(\"linear.csv\")\ninput x : f32[N, 2]\ntarget y : f32[N, 1]\n"
                        "h = dense(x, 8, act=tanh)\noutput p = dense(h, 1)\nloss mse(p, y)\nfreeze h\n"
                        "train adam(lr=0.01) batch 16 epochs 3\n");
    ck_assert(module_find_slot(m, "h.W")->flags & NF_FROZEN);
    ck_assert(module_find_slot(m, "h.b")->flags & NF_FROZEN);
    ck_assert(!(module_find_slot(m, "p.W")->flags & NF_FROZEN));
    /* the frozen layer gets no optimizer state */
    ck_assert_ptr_null(module_find_slot(m, "h.W.adam_m"));

    Diag d;
    diag_init(&d, NULL, stderr);
    Session *s = session_create(m, FN_BIT(FN_INIT), false, &d);
    session_init(s, 5);
    TrainConfig c = {.seed = 5, .quiet = true, .save = path_in("frozen.safetensors")};
    ck_assert_int_eq(trainer_run(m, &c, NULL), 0);
    float *trained = read_state(m, path_in("frozen.safetensors"));
    const float *init = s->state;
    for (int i = 0; i < m->nslots; i++) {
        const StateSlot *slot = &m->slots[i];
        if (slot->flags & (NF_OPT_STATE | NF_HYPER)) continue;
        bool same = memcmp(init + slot->offset, trained + slot->offset, sizeof(float) * (size_t)slot->size) == 0;
        ck_assert_msg(same == ((slot->flags & NF_FROZEN) != 0), "%s %s", slot->name, same ? "did not move" : "moved");
    }
    free(trained);
    session_destroy(s);
    arena_free_all(&a);
}
END_TEST

/* Model B takes layer h from model A's checkpoint (and keeps it frozen). */
START_TEST(test_pretrained_parameters_are_loaded) {
    setup();
    write_linear_csv("linear.csv");
    Arena a = {0};
    Module *ma = compile(&a, "a.nn",
                         "data csv(\"linear.csv\")\ninput x : f32[N, 2]\ntarget y : f32[N, 1]\n"
                         "h = dense(x, 4, act=tanh)\noutput p = dense(h, 1)\nloss mse(p, y)\n"
                         "train sgd(lr=0.1) batch 16 epochs 2\n");
    TrainConfig ca = {.seed = 3, .quiet = true, .save = path_in("a.safetensors")};
    ck_assert_int_eq(trainer_run(ma, &ca, NULL), 0);
    Module *mb = compile(&a, "b.nn",
                         "data csv(\"linear.csv\")\ninput x : f32[N, 2]\ntarget y : f32[N, 1]\n"
                         "pretrained \"a.safetensors\" h\nfreeze h\n"
                         "h = dense(x, 4, act=tanh)\noutput q = dense(h, 1)\nloss mse(q, y)\n"
                         "train sgd(lr=0.1) batch 16 epochs 2\n");
    TrainConfig cb = {.seed = 9, .quiet = true, .save = path_in("b.safetensors")};
    ck_assert_int_eq(trainer_run(mb, &cb, NULL), 0);
    float *sa = read_state(ma, path_in("a.safetensors")), *sb = read_state(mb, path_in("b.safetensors"));
    const StateSlot *wa = module_find_slot(ma, "h.W"), *wb = module_find_slot(mb, "h.W");
    ck_assert_mem_eq(sa + wa->offset, sb + wb->offset, sizeof(float) * (size_t)wa->size);
    free(sa);
    free(sb);
    arena_free_all(&a);
}
END_TEST

/* A learning rate that diverges after the first epoch: with patience 1 the
 * run stops one epoch later and keeps the first epoch's state. */
START_TEST(test_early_stopping_keeps_the_best_epoch) {
    setup();
    write_linear_csv("linear.csv");
    Arena a = {0};
    Module *m = compile(&a, "diverge.nn",
                        "data csv(\"linear.csv\")\ninput x : f32[N, 2]\ntarget y : f32[N, 1]\n"
                        "output p = dense(x, 1)\nloss mse(p, y)\ntrain sgd(lr=5) batch 400 epochs 30\n");
    TrainResult r;
    TrainConfig c = {.seed = 1, .val = 40, .patience = 2, .quiet = true};
    ck_assert_int_eq(trainer_run(m, &c, &r), 0);
    ck_assert_int_lt(r.epochs, 30);
    ck_assert_int_eq(r.epochs, r.best_epoch + 2);
    arena_free_all(&a);
}
END_TEST

START_TEST(test_csv_errors) {
    setup();
    RtDataset d;
    char err[512];
    write_text("bad.csv", "1,2,3\n4,x5,6\n");
    ck_assert_int_eq(rt_csv_load(&d, path_in("bad.csv"), false, 2, false, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "bad.csv:2:3: not a number: 'x5'"));
    write_text("ragged.csv", "a,b,c\n1,2,3\n\n# a comment\n4,5\n");
    ck_assert_int_eq(rt_csv_load(&d, path_in("ragged.csv"), true, 2, false, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "ragged.csv:5: 2 fields, but the first row has 3"));
    write_text("labels.csv", "1,2,0\n3,4,1.5\n");
    ck_assert_int_eq(rt_csv_load(&d, path_in("labels.csv"), false, 2, true, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "row 2: the class label 1.5 is not a whole number"));
    ck_assert_int_eq(rt_csv_load(&d, path_in("labels.csv"), false, 3, false, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "has 3 columns, but the model takes 3 inputs and at least one target"));
    write_text("ok.csv", "1,2,0\r\n3,4,2\r\n");
    ck_assert_int_eq(rt_csv_load(&d, path_in("ok.csv"), false, 2, true, err, sizeof err), 0);
    ck_assert_int_eq(d.n, 2);
    ck_assert_int_eq(d.nclasses, 3);
    ck_assert_int_eq(d.y[1], 2);
    ck_assert_float_eq(d.x[2], 3);
    rt_dataset_free(&d);
}
END_TEST

/* sneaker (7) vs ankle boot (9) as a binary task: labels 0 and 1. */
START_TEST(test_class_subset_as_binary_task) {
    setup();
    Arena a = {0};
    Module *m = compile(&a, "pair.nn",
                        "data fashion_mnist(classes=[7, 9])\ninput x : f32[N, 784]\ntarget y : f32[N, 1]\n"
                        "logits = dense(x, 1)\noutput p = sigmoid(logits)\nloss mse(p, y)\n");
    Data data;
    Task task;
    Diag d;
    diag_init(&d, NULL, stderr);
    ck_assert(data_load(m, NULL, 0, 0, &data, &task, &d));
    ck_assert_int_eq(task.kind, TASK_BINARY);
    ck_assert_int_eq(data.train.n, 12000); /* 6000 of each class */
    ck_assert_int_eq(data.test.n, 2000);
    int64_t ones = 0;
    for (int64_t i = 0; i < data.train.n; i++) {
        ck_assert(data.train.y[i] == 0 || data.train.y[i] == 1);
        ones += data.train.y[i];
    }
    ck_assert_int_eq(ones, 6000);
    float x[784 * 2], y[2];
    data_batch(&task, &data.train, (int64_t[]){0, 1}, 2, x, y);
    ck_assert(y[0] == (float)data.train.y[0] && y[1] == (float)data.train.y[1]);
    data_free(&data);
    arena_free_all(&a);
}
END_TEST

int main(void) {
    Suite *s = suite_create("training");
    TCase *tc = tcase_create("driver");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_learns_a_linear_rule_from_csv);
    tcase_add_test(tc, test_frozen_parameters_do_not_move);
    tcase_add_test(tc, test_pretrained_parameters_are_loaded);
    tcase_add_test(tc, test_early_stopping_keeps_the_best_epoch);
    tcase_add_test(tc, test_csv_errors);
    tcase_add_test(tc, test_class_subset_as_binary_task);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
