/* test_ir.c - the Graph IR and Kernel IR on their own: the op table, types
 * and broadcasting, shape errors, dead-node removal, the verifier, the
 * printer, and the folding done by the Kernel IR builders. */
#include "ir/ir.h"
#include "ir/kir.h"
#include "passes/passes.h"

#include "check_main.h"
#include <stdlib.h>
#include <string.h>

/* Captures what a function prints into a FILE. */
typedef struct Capture {
    char *buf;
    size_t len;
    FILE *f;
} Capture;

static FILE *capture_begin(Capture *c) {
    c->buf = NULL;
    c->f = open_memstream(&c->buf, &c->len);
    return c->f;
}

static const char *capture_end(Capture *c) {
    fclose(c->f);
    return c->buf;
}

START_TEST(test_op_table) {
    for (int i = 0; i < OP_COUNT; i++) {
        const OpInfo *info = op_info((Op)i);
        ck_assert_ptr_nonnull(info->name);
        ck_assert_int_eq(op_lookup(info->name), i);
        ck_assert(info->arity >= 0 && info->arity <= IR_MAX_INPUTS);
        if (info->flags & OPF_LEAF) ck_assert_int_eq(info->arity, 0);
        for (int j = i + 1; j < OP_COUNT; j++) ck_assert_str_ne(info->name, op_info((Op)j)->name);
    }
    const OpInfo *mm = op_info(OP_MATMUL);
    ck_assert_int_eq(mm->nattrs, 2);
    ck_assert_str_eq(mm->attr_names[1], "tb");
    ck_assert(!mm->attr_required[0]);
    const OpInfo *sum = op_info(OP_SUM);
    ck_assert(sum->attr_required[0]);
    ck_assert_double_eq(sum->attr_defaults[1], 0);
    ck_assert_int_eq(op_lookup("no_such_op"), OP_COUNT);
}
END_TEST

START_TEST(test_types_and_broadcasting) {
    char buf[TYPE_STR_MAX];
    IrType a = type_tensor(DT_F32, 2, (int64_t[]){IR_BATCH, 784});
    ck_assert_str_eq(type_str(&a, buf, sizeof buf), "f32[N,784]");
    IrType s = type_scalar(DT_I32);
    ck_assert_str_eq(type_str(&s, buf, sizeof buf), "i32");
    int64_t c0, c1;
    type_numel(&a, &c0, &c1);
    ck_assert_int_eq(c0, 0);
    ck_assert_int_eq(c1, 784);

    IrType out, b = type_tensor(DT_F32, 1, (int64_t[]){784});
    ck_assert(shape_broadcast(&a, &b, &out));
    ck_assert(type_equal(&out, &a));
    IrType col = type_tensor(DT_F32, 2, (int64_t[]){IR_BATCH, 1}), row = type_tensor(DT_F32, 2, (int64_t[]){1, 5});
    ck_assert(shape_broadcast(&col, &row, &out));
    ck_assert_str_eq(type_str(&out, buf, sizeof buf), "f32[N,5]");
    IrType three = type_tensor(DT_F32, 1, (int64_t[]){3}), four = type_tensor(DT_F32, 1, (int64_t[]){4});
    ck_assert(!shape_broadcast(&three, &four, &out));
}
END_TEST

static int leaf(Graph *g, Op op, const char *name, IrType t) {
    int id = graph_add(g, op, 0, NULL, NULL, SPAN_NONE);
    g->nodes[id].name = name;
    g->nodes[id].type = t;
    return id;
}

START_TEST(test_shape_error_names_both_shapes) {
    Arena a = {0};
    Graph *g = graph_new(&a, "f");
    int x = leaf(g, OP_INPUT, "x", type_tensor(DT_F32, 2, (int64_t[]){IR_BATCH, 784}));
    int w = leaf(g, OP_PARAM, "W", type_tensor(DT_F32, 2, (int64_t[]){100, 10}));
    int mm = graph_add(g, OP_MATMUL, 2, (int32_t[]){x, w}, NULL, SPAN_NONE);
    Capture cap;
    Diag d;
    diag_init(&d, NULL, capture_begin(&cap));
    ck_assert(!shape_infer(g, mm, &d));
    const char *msg = capture_end(&cap);
    ck_assert_str_eq(msg, "nnc: error: matrix product of 'x' (f32[N,784]) and 'W' (f32[100,10]): inner "
                          "dimensions differ\n");
    free(cap.buf);
    arena_free_all(&a);
}
END_TEST

START_TEST(test_remove_dead_and_print) {
    Arena a = {0};
    Graph *g = graph_new(&a, "f");
    Diag d;
    diag_init(&d, NULL, stderr);
    int x = leaf(g, OP_INPUT, "x", type_tensor(DT_F32, 2, (int64_t[]){IR_BATCH, 3}));
    int unused = graph_add(g, OP_EXP, 1, (int32_t[]){x}, NULL, SPAN_NONE);
    ck_assert(shape_infer(g, unused, &d));
    int r = graph_add(g, OP_RELU, 1, (int32_t[]){x}, NULL, SPAN_NONE);
    ck_assert(shape_infer(g, r, &d));
    int s = graph_add(g, OP_SUM, 1, (int32_t[]){r}, (double[]){2, 0}, SPAN_NONE);
    ck_assert(shape_infer(g, s, &d));
    g->nodes[s].flags |= NF_OUTPUT;
    g->nodes[s].name = "total";
    graph_remove_dead(g);
    ck_assert_int_eq(g->n, 3);
    Capture cap;
    graph_print(capture_begin(&cap), g);
    const char *text = capture_end(&cap);
    ck_assert_str_eq(text, "func f {\n"
                           "  %0 = input x : f32[N,3]\n"
                           "  %1 = relu %0 : f32[N,3]\n"
                           "  %2 = sum %1 {axes=[1]} : f32[N] output              # total\n"
                           "}\n");
    free(cap.buf);
    ck_assert(graph_verify(g, stderr));
    ck_assert(pass_shape_recheck(g, stderr));
    arena_free_all(&a);
}
END_TEST

START_TEST(test_verifier_catches_broken_graphs) {
    Arena a = {0};
    Graph *g = graph_new(&a, "broken");
    int x = leaf(g, OP_INPUT, "x", type_tensor(DT_F32, 1, (int64_t[]){4}));
    int e = graph_add(g, OP_EXP, 1, (int32_t[]){x}, NULL, SPAN_NONE);
    g->nodes[e].type = g->nodes[x].type;
    g->nodes[e].in[0] = e; /* not an earlier node */
    leaf(g, OP_INPUT, "x", type_tensor(DT_F32, 1, (int64_t[]){4})); /* a second x */
    Capture cap;
    ck_assert(!graph_verify(g, capture_begin(&cap)));
    const char *text = capture_end(&cap);
    ck_assert_ptr_nonnull(strstr(text, "input 0 is %1, not an earlier node"));
    ck_assert_ptr_nonnull(strstr(text, "input x is declared twice"));
    free(cap.buf);

    /* a type that disagrees with the shape rule */
    Graph *h = graph_new(&a, "mistyped");
    int y = leaf(h, OP_INPUT, "y", type_tensor(DT_F32, 1, (int64_t[]){4}));
    int t = graph_add(h, OP_TANH, 1, (int32_t[]){y}, NULL, SPAN_NONE);
    h->nodes[t].type = type_tensor(DT_F32, 1, (int64_t[]){5});
    ck_assert(!pass_shape_recheck(h, capture_begin(&cap)));
    capture_end(&cap);
    ck_assert_ptr_nonnull(strstr(cap.buf, "type f32[5], but its shape rule gives f32[4]"));
    free(cap.buf);
    arena_free_all(&a);
}
END_TEST

START_TEST(test_kernel_ir_folding) {
    Arena a = {0};
    Kx *i = kx_var(&a, 0);
    ck_assert_ptr_eq(kx_bin(&a, KX_ADD, kx_bin(&a, KX_MUL, i, kx_int(&a, 1)), kx_int(&a, 0)), i);
    Kx *six = kx_bin(&a, KX_MUL, kx_int(&a, 2), kx_int(&a, 3));
    ck_assert_int_eq(six->op, KX_INT);
    ck_assert_int_eq(six->i, 6);
    Kx *zero = kx_bin(&a, KX_MUL, kx_int(&a, 0), i);
    ck_assert_int_eq(zero->op, KX_INT);
    ck_assert_int_eq(zero->i, 0);
    Kx *neg = kx_un(&a, KX_NEG, kx_real(&a, 2.5));
    ck_assert_double_eq(neg->r, -2.5);
    /* N stays symbolic */
    Kx *n = kx_npoly(&a, (NPoly){0, 784});
    ck_assert_int_eq(n->op, KX_MUL);
    arena_free_all(&a);
}
END_TEST

/* Extents evaluated at a batch; 2*m*n*k per product, times a batched gemm's count. */
START_TEST(test_kernel_ir_gemm_flops) {
    Arena a = {0};
    int64_t v;
    ck_assert(kx_eval_int(kx_npoly(&a, (NPoly){3, 784}), 2, &v));
    ck_assert_int_eq(v, 1571);
    ck_assert(kx_eval_int(kx_bin(&a, KX_DIV, kx_batch(&a), kx_int(&a, 4)), 10, &v));
    ck_assert_int_eq(v, 2);
    ck_assert(!kx_eval_int(kx_var(&a, 0), 10, &v));
    ck_assert(!kx_eval_int(kx_bin(&a, KX_MOD, kx_batch(&a), kx_int(&a, 0)), 10, &v));

    KProgram *p = kprog_new(&a, "forward", PROG_FORWARD);
    ck_assert_double_eq(kprog_gemm_flops(p, 64), 0);
    Kernel *k = kprog_add_kernel(p, KK_GEMM, "dense", -1);
    k->gemm = (KGemm){.m = kx_batch(&a), .n = kx_int(&a, 10), .k = kx_int(&a, 784)};
    kprog_add_kernel(p, KK_LOOP, "sigmoid", -1);
    k = kprog_add_kernel(p, KK_GEMM, "conv", -1);
    k->gemm = (KGemm){.m = kx_int(&a, 6), .n = kx_int(&a, 784), .k = kx_int(&a, 25), .count = kx_batch(&a)};
    ck_assert_double_eq(kprog_gemm_flops(p, 64), 2.0 * 64 * 10 * 784 + 2.0 * 6 * 784 * 25 * 64);
    k = kprog_add_kernel(p, KK_GEMM, "odd", -1);
    k->gemm = (KGemm){.m = kx_var(&a, 0), .n = kx_int(&a, 1), .k = kx_int(&a, 1)};
    ck_assert_double_eq(kprog_gemm_flops(p, 64), -1);
    arena_free_all(&a);
}
END_TEST

int main(void) {
    Suite *s = suite_create("ir");
    TCase *tc = tcase_create("graph");
    tcase_add_test(tc, test_op_table);
    tcase_add_test(tc, test_types_and_broadcasting);
    tcase_add_test(tc, test_shape_error_names_both_shapes);
    tcase_add_test(tc, test_remove_dead_and_print);
    tcase_add_test(tc, test_verifier_catches_broken_graphs);
    tcase_add_test(tc, test_kernel_ir_folding);
    tcase_add_test(tc, test_kernel_ir_gemm_flops);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
