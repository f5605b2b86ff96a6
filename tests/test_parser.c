/* test_parser.c - tests of the .nn lexer and parser: the AST of valid
 * programs (compared as ast_print text), the exact diagnostics for malformed
 * ones, and a loop that feeds random and mutated input to the parser to show
 * that it never crashes (run it under ASan and UBSan). */
#include "frontend/ast.h"

#include "check_main.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------- */

typedef struct Parsed {
    Arena arena;
    Program *prog;
    char *ast;   /* ast_print output */
    char *diags; /* everything the Diag printed */
    int nerrors;
} Parsed;

static Parsed parse_bytes(const char *text, size_t len) {
    Parsed r = {0};
    char *copy = malloc(len + 1); /* a Source is NUL-terminated */
    memcpy(copy, text, len);
    copy[len] = '\0';
    Source src = {.path = "t.nn", .text = copy, .len = (int32_t)len};
    size_t dlen, alen;
    FILE *dout = open_memstream(&r.diags, &dlen);
    Diag d;
    diag_init(&d, &src, dout);
    d.color = false;
    r.prog = parse_program(&r.arena, &src, &d);
    fclose(dout);
    r.nerrors = d.nerrors;
    FILE *aout = open_memstream(&r.ast, &alen);
    ast_print(aout, r.prog);
    fclose(aout);
    free(copy);
    return r;
}

static Parsed parse(const char *text) { return parse_bytes(text, strlen(text)); }

static void parsed_free(Parsed *r) {
    free(r->ast);
    free(r->diags);
    arena_free_all(&r->arena);
}

/* The AST of a program that must parse without errors. */
#define ASSERT_AST(text, expected)                \
    do {                                          \
        Parsed r_ = parse(text);                  \
        ck_assert_str_eq(r_.diags, "");           \
        ck_assert_int_eq(r_.nerrors, 0);          \
        ck_assert_str_eq(r_.ast, expected);       \
        parsed_free(&r_);                         \
    } while (0)

/* The first line of each diagnostic (without the source excerpt). */
static char *headlines(const char *diags) {
    char *out = calloc(strlen(diags) + 1, 1);
    size_t n = 0;
    for (const char *line = diags; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line + 1) : strlen(line);
        if (line[0] != ' ') {
            memcpy(out + n, line, len);
            n += len;
        }
        line += len;
    }
    return out;
}

/* The diagnostics' first lines, their count, and what still parsed. */
#define ASSERT_ERRORS_BYTES(text, len, nerr, expected_diags, expected_ast) \
    do {                                                                   \
        Parsed r_ = parse_bytes(text, len);                                \
        char *h_ = headlines(r_.diags);                                    \
        ck_assert_str_eq(h_, expected_diags);                              \
        ck_assert_int_eq(r_.nerrors, nerr);                                \
        ck_assert_str_eq(r_.ast, expected_ast);                            \
        free(h_);                                                          \
        parsed_free(&r_);                                                  \
    } while (0)
#define ASSERT_ERRORS(text, nerr, expected_diags, expected_ast) \
    ASSERT_ERRORS_BYTES(text, strlen(text), nerr, expected_diags, expected_ast)

/* The whole diagnostic output, excerpt and caret included. */
#define ASSERT_DIAGS(text, expected)              \
    do {                                          \
        Parsed r_ = parse(text);                  \
        ck_assert_str_eq(r_.diags, expected);     \
        parsed_free(&r_);                         \
    } while (0)

static const char MNIST_MLP[] =
    "# examples/mnist_mlp.nn\n"
    "model mnist_mlp\n"
    "\n"
    "input  x : f32[N, 784]            # a flattened 28x28 image\n"
    "target y : i32[N] classes 10\n"
    "\n"
    "h      = dense(x, 10, act=sigmoid)\n"
    "logits = dense(h, 10)\n"
    "output probs = softmax(logits)\n"
    "loss   cross_entropy(logits, y)\n"
    "\n"
    "train sgd(lr=0.1) batch 64 epochs 5\n";

static const char LENET[] =
    "model lenet\n"
    "input  x : f32[N, 1, 28, 28]\n"
    "target y : i32[N] classes 10\n"
    "\n"
    "def conv_block(t, c) {                      # reusable blocks\n"
    "  return maxpool(conv2d(t, c, kernel=5, pad=2, act=relu), 2)\n"
    "}\n"
    "f      = flatten(conv_block(conv_block(x, 6), 16))\n"
    "h      = dropout(dense(f, 120, act=relu, init=he), 0.5)\n"
    "logits = dense(dense(h, 84, act=relu), 10)\n"
    "output probs = softmax(logits)\n"
    "loss   cross_entropy(logits, y)\n"
    "train  adam(lr=1e-3, weight_decay=1e-4) batch 64 epochs 3\n";

static const char TENSOR_LEVEL[] =
    "param W : f32[784, 128] init=he\n"
    "param b : f32[128]      init=zeros\n"
    "z = relu(x @ W + b)\n";

/* ---- valid programs ------------------------------------------------------------------ */

START_TEST(example_mnist_mlp) {
    ASSERT_AST(MNIST_MLP,
               "(model mnist_mlp)\n"
               "(input x (f32 N 784))\n"
               "(target y (i32 N) (classes 10))\n"
               "(let h (call dense x 10 (act= sigmoid)))\n"
               "(let logits (call dense h 10))\n"
               "(output probs (call softmax logits))\n"
               "(loss (call cross_entropy logits y))\n"
               "(train (call sgd (lr= 0.1)) (batch 64) (epochs 5))\n");
}
END_TEST

START_TEST(example_lenet) {
    ASSERT_AST(LENET,
               "(model lenet)\n"
               "(input x (f32 N 1 28 28))\n"
               "(target y (i32 N) (classes 10))\n"
               "(def conv_block (t c) (return (call maxpool (call conv2d t c (kernel= 5) "
               "(pad= 2) (act= relu)) 2)))\n"
               "(let f (call flatten (call conv_block (call conv_block x 6) 16)))\n"
               "(let h (call dropout (call dense f 120 (act= relu) (init= he)) 0.5))\n"
               "(let logits (call dense (call dense h 84 (act= relu)) 10))\n"
               "(output probs (call softmax logits))\n"
               "(loss (call cross_entropy logits y))\n"
               "(train (call adam (lr= 0.001) (weight_decay= 0.0001)) (batch 64) (epochs 3))\n");
}
END_TEST

START_TEST(example_tensor_level) {
    ASSERT_AST(TENSOR_LEVEL,
               "(param W (f32 784 128) (init he))\n"
               "(param b (f32 128) (init zeros))\n"
               "(let z (call relu (+ (@ x W) b)))\n");
}
END_TEST

START_TEST(list_literals) {
    ASSERT_AST("a = f(x, classes=[7, 9], sets=[[5, 7], [0, 2,],], none=[])\n",
               "(let a (call f x (classes= (list 7 9)) (sets= (list (list 5 7) (list 0 2))) (none= (list))))\n");
}
END_TEST

START_TEST(training_statements) {
    ASSERT_AST("data fashion_mnist(classes=[7, 9])\nmetric acc = accuracy(p, y)\nfreeze c1, c2.W\n"
               "pretrained \"lenet.safetensors\" c1, c2\npretrained \"all.safetensors\"\n",
               "(data (call fashion_mnist (classes= (list 7 9))))\n"
               "(metric acc (call accuracy p y))\n"
               "(freeze c1 c2.W)\n"
               "(pretrained \"lenet.safetensors\" c1 c2)\n"
               "(pretrained \"all.safetensors\")\n");
}
END_TEST

START_TEST(one_line_and_empty_defs) {
    ASSERT_AST("def f(x) { return relu(x) }\n"
               "def g() {}\n"
               "def h(a, b) { }\n"
               "def k(a) { y = a * 2; return y }\n",
               "(def f (x) (return (call relu x)))\n"
               "(def g ())\n"
               "(def h (a b))\n"
               "(def k (a) (let y (* a 2)) (return y))\n");
}
END_TEST

START_TEST(multi_line_def_body) {
    ASSERT_AST("def block(t, c) {\n"
               "\n"
               "  h = dense(t, c)   # first\n"
               "\n"
               "  return relu(h)\n"
               "\n"
               "}\n"
               "out = block(x, 3)\n",
               "(def block (t c) (let h (call dense t c)) (return (call relu h)))\n"
               "(let out (call block x 3))\n");
}
END_TEST

START_TEST(multi_line_calls) {
    ASSERT_AST("h = dense(\n"
               "    x,        # the input\n"
               "    10,\n"
               "\n"
               "    act=relu,\n"
               ")\n"
               "input x : f32[N,\n"
               "               784]\n"
               "y = (a\n"
               "     + b)\n",
               "(let h (call dense x 10 (act= relu)))\n"
               "(input x (f32 N 784))\n"
               "(let y (+ a b))\n");
}
END_TEST

START_TEST(semicolon_separators) {
    ASSERT_AST("model m; input x : f32[N]; h = relu(x);; ;\n"
               ";\n"
               "output h; loss mse(h, x)",
               "(model m)\n"
               "(input x (f32 N))\n"
               "(let h (call relu x))\n"
               "(output h)\n"
               "(loss (call mse h x))\n");
}
END_TEST

START_TEST(comments_everywhere) {
    ASSERT_AST("# leading comment\n"
               "   # indented comment\n"
               "model m # after a statement\n"
               "def f(x) { # after a brace\n"
               "  # inside a body\n"
               "  return x # after return\n"
               "} # after the closing brace\n"
               "y = f(1, # inside a call\n"
               "      2)\n"
               "# trailing comment without a newline",
               "(model m)\n"
               "(def f (x) (return x))\n"
               "(let y (call f 1 2))\n");
}
END_TEST

START_TEST(no_trailing_newline) {
    ASSERT_AST("x = 1", "(let x 1)\n");
    ASSERT_AST("def f(x) {\n  return x\n}", "(def f (x) (return x))\n");
    ASSERT_AST("output probs", "(output probs)\n");
}
END_TEST

START_TEST(crlf_line_endings) {
    ASSERT_AST("model m\r\ninput x : f32[N]\r\ny = x\r\n",
               "(model m)\n(input x (f32 N))\n(let y x)\n");
}
END_TEST

START_TEST(empty_and_blank_files) {
    ASSERT_AST("", "");
    ASSERT_AST("\n\n\n", "");
    ASSERT_AST("# only a comment", "");
    ASSERT_AST(" ; \n ;; \n", "");
}
END_TEST

START_TEST(operator_precedence) {
    ASSERT_AST("a = x + y * z\n"
               "b = x - y - z\n"
               "c = x @ W @ V + b\n"
               "d = -x * y\n"
               "e = (x + y) / 2\n"
               "f = x - -y\n"
               "g = - - x\n"
               "z = x @ W + -b\n",
               "(let a (+ x (* y z)))\n"
               "(let b (- (- x y) z))\n"
               "(let c (+ (@ (@ x W) V) b))\n"
               "(let d (* (neg x) y))\n"
               "(let e (/ (+ x y) 2))\n"
               "(let f (- x (neg y)))\n"
               "(let g (neg (neg x)))\n"
               "(let z (+ (@ x W) (neg b)))\n");
}
END_TEST

START_TEST(number_forms) {
    ASSERT_AST("a = f(0.1, 1., .5, 1e-3, 2.5E+4, 007, 12, 9223372036854775807, 1e300)\n",
               "(let a (call f 0.1 1 0.5 0.001 25000 7 12 9.223372036854776e+18 1e+300))\n");
    Parsed r = parse("a = 12\nb = 1.\nc = 2e3\n");
    ck_assert_int_eq(r.prog->nstmts, 3);
    ck_assert(r.prog->stmts[0]->value->is_int);
    ck_assert(!r.prog->stmts[1]->value->is_int);
    ck_assert(!r.prog->stmts[2]->value->is_int);
    ck_assert(r.prog->stmts[2]->value->number == 2000.0);
    parsed_free(&r);
}
END_TEST

START_TEST(strings_and_escapes) {
    ASSERT_AST("d = load(\"data/train.idx\", \"a\\\"b\\\\c\\nd\\te\", \"\")\n",
               "(let d (call load \"data/train.idx\" \"a\\\"b\\\\c\\nd\\te\" \"\"))\n");
    Parsed r = parse("s = \"a\\\"b\\n\"\n");
    ck_assert_str_eq(r.prog->stmts[0]->value->text, "a\"b\n");
    parsed_free(&r);
}
END_TEST

START_TEST(dotted_names_and_keyword_prefixes) {
    ASSERT_AST("h.W = opt.lr * model_x\n"
               "y = f(inputs, losses, trainer, definition, returns)\n",
               "(let h.W (* opt.lr model_x))\n"
               "(let y (call f inputs losses trainer definition returns))\n");
}
END_TEST

START_TEST(options_in_every_form) {
    ASSERT_AST("input x : f32 init=he\n"
               "target y : i32[N] classes 10 weight=(1 + 2) tag \"t\"\n"
               "param W : f32[4, 4] init=normal(std=0.1) frozen 1\n"
               "train sgd batch=32 epochs 2 lr=-0.5\n",
               "(input x (f32) (init he))\n"
               "(target y (i32 N) (classes 10) (weight (+ 1 2)) (tag \"t\"))\n"
               "(param W (f32 4 4) (init (call normal (std= 0.1))) (frozen 1))\n"
               "(train sgd (batch 32) (epochs 2) (lr (neg 0.5)))\n");
}
END_TEST

START_TEST(calls_with_keywords_and_trailing_comma) {
    ASSERT_AST("a = f()\nb = g(x,)\nc = h(x, k=1, m=n(2),)\n",
               "(let a (call f))\n"
               "(let b (call g x))\n"
               "(let c (call h x (k= 1) (m= (call n 2))))\n");
}
END_TEST

START_TEST(output_and_return_forms) {
    ASSERT_AST("output probs\noutput p = softmax(l)\nreturn x\n",
               "(output probs)\n"
               "(output p (call softmax l))\n"
               "(return x)\n");
}
END_TEST

START_TEST(spans_point_into_the_source) {
    const char *text = "input x : f32[N, 784] classes 10\nh = dense(x, 10)\n";
    Parsed r = parse(text);
    ck_assert_int_eq(r.nerrors, 0);
    Stmt *in = r.prog->stmts[0];
    ck_assert_int_eq(in->span.begin, 0);
    ck_assert_int_eq(in->span.end, 32);
    ck_assert_int_eq(in->name_span.begin, 6);
    ck_assert_int_eq(in->name_span.end, 7);
    ck_assert_int_eq(in->type->span.begin, 10);
    ck_assert_int_eq(in->type->span.end, 21);
    ck_assert_int_eq(in->type->dims[1].span.begin, 17);
    ck_assert_int_eq(in->type->dims[1].size, 784);
    ck_assert_str_eq(in->opts[0].name, "classes");
    ck_assert_int_eq(in->opts[0].name_span.begin, 22);
    Stmt *let = r.prog->stmts[1];
    ck_assert_int_eq(let->span.begin, 33);
    ck_assert_int_eq(let->span.end, 49);
    Expr *call = let->value;
    ck_assert_int_eq(call->span.begin, 37);
    ck_assert_int_eq(call->span.end, 49);
    ck_assert_int_eq(call->name_span.begin, 37);
    ck_assert_int_eq(call->name_span.end, 42);
    ck_assert_int_eq(call->args[1].value->span.begin, 46);
    parsed_free(&r);
}
END_TEST

/* ---- malformed programs ------------------------------------------------------------- */

START_TEST(error_missing_colon_in_input) {
    ASSERT_DIAGS("input x f32[N]\n",
                 "t.nn:1:9: error: unexpected identifier 'f32'; expected ':'\n"
                 "    1 | input x f32[N]\n"
                 "      |         ^~~\n");
}
END_TEST

START_TEST(error_bad_type_dims) {
    ASSERT_ERRORS("input x : f32[N,]\n", 1,
                  "t.nn:1:17: error: unexpected ']'; expected identifier or number\n", "");
    ASSERT_ERRORS("input x : f32[]\n", 1,
                  "t.nn:1:15: error: unexpected ']'; expected identifier or number\n", "");
    ASSERT_ERRORS("input x : f32[N, 2.5]\n", 1,
                  "t.nn:1:18: error: dimension must be an integer\n", "");
}
END_TEST

START_TEST(error_unclosed_paren_at_eof) {
    ASSERT_DIAGS("x = (1 + 2",
                 "t.nn:1:5: error: '(' was never closed\n"
                 "    1 | x = (1 + 2\n"
                 "      |     ^\n");
}
END_TEST

START_TEST(error_unclosed_paren_swallowing_later_lines) {
    ASSERT_ERRORS("model m\n"
                  "h = dense(x, 10\n"
                  "logits = dense(h, 10)\n"
                  "output probs = softmax(logits)\n",
                  1, "t.nn:2:10: error: '(' was never closed\n", "(model m)\n");
    ASSERT_ERRORS("input x : f32[N, 784\ny = 1\n", 1,
                  "t.nn:1:14: error: '[' was never closed\n", "");
}
END_TEST

START_TEST(error_stray_closing_brackets) {
    ASSERT_DIAGS("x = 1)\n",
                 "t.nn:1:6: error: unexpected ')'; expected end of line\n"
                 "    1 | x = 1)\n"
                 "      |      ^\n");
    ASSERT_ERRORS(")\nx = 1\n", 1, "t.nn:1:1: error: unexpected ')'\n", "(let x 1)\n");
    ASSERT_ERRORS("y = f(x]\n", 1,
                  "t.nn:1:8: error: unexpected ']'; expected ',' or ')' or '='\n", "");
    ASSERT_ERRORS("}\nx = 1\n", 1, "t.nn:1:1: error: unexpected '}'\n", "(let x 1)\n");
}
END_TEST

START_TEST(error_malformed_numbers) {
    ASSERT_DIAGS("x = 1e\n",
                 "t.nn:1:5: error: malformed number '1e'\n"
                 "    1 | x = 1e\n"
                 "      |     ^~\n");
    ASSERT_ERRORS("x = 1e+\ny = 2.5E-\nz = 1\n", 2,
                  "t.nn:1:5: error: malformed number '1e+'\n"
                  "t.nn:2:5: error: malformed number '2.5E-'\n",
                  "(let z 1)\n");
}
END_TEST

START_TEST(error_integer_literal_too_large) {
    ASSERT_ERRORS("input x : f32[99999999999999999999]\nx = 9223372036854775808\n", 2,
                  "t.nn:1:15: error: integer literal too large\n"
                  "t.nn:2:5: error: integer literal too large\n",
                  "");
}
END_TEST

START_TEST(error_unterminated_string) {
    ASSERT_DIAGS("d = load(\"data/train\n",
                 "t.nn:1:10: error: unterminated string\n"
                 "    1 | d = load(\"data/train\n"
                 "      |          ^~~~~~~~~~~\n");
    ASSERT_ERRORS("s = \"abc\\", 1, "t.nn:1:5: error: unterminated string\n", "");
    /* A bracket opened on an earlier line can still be closed on a later one. */
    ASSERT_ERRORS("h = f(\n  \"abc,\n  3)\nx = 1\n", 1,
                  "t.nn:2:3: error: unterminated string\n", "(let x 1)\n");
}
END_TEST

START_TEST(error_bad_string_contents) {
    ASSERT_ERRORS("s = \"a\\qb\"\nt = 1\n", 1,
                  "t.nn:1:7: error: unknown escape sequence '\\q' in string\n", "(let t 1)\n");
    ASSERT_ERRORS_BYTES("s = \"a\0b\"\n", 10, 1, "t.nn:1:7: error: string contains a NUL byte\n",
                        "");
}
END_TEST

START_TEST(error_unexpected_characters) {
    ASSERT_DIAGS("x = $ 1\n",
                 "t.nn:1:5: error: unexpected character '$'\n"
                 "    1 | x = $ 1\n"
                 "      |     ^\n");
    ASSERT_ERRORS("a = 1 \x01\nb = 2\n", 1,
                  "t.nn:1:7: error: unexpected character '\\x01'\n", "(let b 2)\n");
    ASSERT_ERRORS("a = \xc3\xa9\nb = \xff\n", 2,
                  "t.nn:1:5: error: unexpected character '\xc3\xa9' (U+00E9)\n"
                  "t.nn:2:5: error: unexpected character '\\xff'\n",
                  "");
}
END_TEST

START_TEST(error_nul_byte_in_input) {
    ASSERT_ERRORS_BYTES("x = 1\0\ny = 2\n", 12, 1,
                        "t.nn:1:6: error: unexpected character '\\x00'\n", "(let y 2)\n");
}
END_TEST

START_TEST(error_bare_expression_statement) {
    ASSERT_DIAGS("relu(x)\ny = 1\n",
                 "t.nn:1:1: error: expression statement has no effect; assign it to a name "
                 "(name = ...)\n"
                 "    1 | relu(x)\n"
                 "      | ^~~~~~~\n");
    ASSERT_ERRORS("def f(x) {\n  x + 1\n  return x\n}\n", 1,
                  "t.nn:2:3: error: expression statement has no effect; assign it to a name "
                  "(name = ...)\n",
                  "(def f (x) (return x))\n");
}
END_TEST

START_TEST(error_nested_def) {
    ASSERT_DIAGS("def f(x) {\n  def g(y) { return y }\n  return x\n}\n",
                 "t.nn:2:3: error: definitions cannot be nested\n"
                 "    2 |   def g(y) { return y }\n"
                 "      |   ^~~\n");
    ASSERT_ERRORS("def f(x) {\n  def g(y) { return y }\n  return x\n}\n", 1,
                  "t.nn:2:3: error: definitions cannot be nested\n", "(def f (x) (return x))\n");
}
END_TEST

START_TEST(error_missing_closing_brace) {
    ASSERT_DIAGS("def f(x) {\n  return x\n",
                 "t.nn:1:10: error: '{' was never closed\n"
                 "    1 | def f(x) {\n"
                 "      |          ^\n");
    ASSERT_ERRORS("def f(x) {\n  return x\ny = 1\n", 1,
                  "t.nn:1:10: error: '{' was never closed\n", "");
}
END_TEST

START_TEST(error_two_errors_in_one_file) {
    ASSERT_ERRORS("model m\n"
                  "input x f32[N]\n"
                  "h = dense(x,, 10)\n"
                  "output h\n",
                  2,
                  "t.nn:2:9: error: unexpected identifier 'f32'; expected ':'\n"
                  "t.nn:3:13: error: unexpected ','; expected expression or ')'\n",
                  "(model m)\n(output h)\n");
}
END_TEST

START_TEST(error_recovery_inside_def_body) {
    ASSERT_ERRORS("def f(x) {\n  y = = 2\n  return y\n}\nz = f(1)\n", 1,
                  "t.nn:2:7: error: unexpected '='; expected expression\n",
                  "(def f (x) (return y))\n(let z (call f 1))\n");
    ASSERT_ERRORS("def f(x) { return x + }\nz = 1\n", 1,
                  "t.nn:1:23: error: unexpected '}'; expected expression\n",
                  "(def f (x))\n(let z 1)\n");
}
END_TEST

START_TEST(error_broken_def_header) {
    ASSERT_ERRORS("def f(x y) {\n  return x\n  z = = 1\n}\nw = 1\n", 2,
                  "t.nn:1:9: error: unexpected identifier 'y'; expected ',' or ')'\n"
                  "t.nn:3:7: error: unexpected '='; expected expression\n",
                  "(let w 1)\n");
    ASSERT_ERRORS("def (x) { return x }\n", 1,
                  "t.nn:1:5: error: unexpected '('; expected identifier\n", "");
    ASSERT_ERRORS("def f(x) return x\n", 1,
                  "t.nn:1:10: error: unexpected keyword 'return'; expected '{'\n", "");
}
END_TEST

START_TEST(error_missing_pieces) {
    ASSERT_ERRORS("model\n", 1, "t.nn:1:6: error: unexpected end of line; expected identifier\n",
                  "");
    ASSERT_ERRORS("x = 1 +", 1, "t.nn:1:8: error: unexpected end of file; expected expression\n",
                  "");
    ASSERT_ERRORS("train\n", 1, "t.nn:1:6: error: unexpected end of line; expected expression\n",
                  "");
    ASSERT_ERRORS("train sgd batch\n", 1,
                  "t.nn:1:16: error: unexpected end of line; expected expression or '='\n", "");
    ASSERT_ERRORS("output p 3\n", 1,
                  "t.nn:1:10: error: unexpected number 3; expected '=' or end of line\n", "");
}
END_TEST

START_TEST(error_unexpected_tokens) {
    ASSERT_ERRORS("x = loss\n", 1,
                  "t.nn:1:5: error: unexpected keyword 'loss'; expected expression\n", "");
    ASSERT_ERRORS("x = a b\n", 1,
                  "t.nn:1:7: error: unexpected identifier 'b'; expected end of line\n", "");
    ASSERT_ERRORS("x = 1 \"s\"\n", 1,
                  "t.nn:1:7: error: unexpected string \"s\"; expected end of line\n", "");
    ASSERT_ERRORS("x = 1 2; y = 3\n", 1,
                  "t.nn:1:7: error: unexpected number 2; expected end of line\n", "(let y 3)\n");
    ASSERT_ERRORS("h = dense(x 10)\n", 1,
                  "t.nn:1:13: error: unexpected number 10; expected ',' or ')' or '='\n", "");
    ASSERT_ERRORS("x = f(a; b)\n", 1,
                  "t.nn:1:8: error: unexpected ';'; expected ',' or ')' or '='\n", "");
    ASSERT_ERRORS("x : f32\n", 1,
                  "t.nn:1:3: error: unexpected ':'; expected '=' or end of line\n", "");
    ASSERT_ERRORS("= 1\n", 1, "t.nn:1:1: error: unexpected '='\n", "");
}
END_TEST

START_TEST(error_deep_nesting) {
    enum { DEPTH = 5000 };
    char *text = malloc(DEPTH + 16);
    strcpy(text, "x = ");
    memset(text + 4, '(', DEPTH);
    strcpy(text + 4 + DEPTH, "1");
    Parsed r = parse(text);
    char *h = headlines(r.diags);
    ck_assert_str_eq(h, "t.nn:1:2000: error: expression nested too deeply\n");
    ck_assert_int_eq(r.nerrors, 1);
    ck_assert_int_eq(r.prog->nstmts, 0);
    free(h);
    parsed_free(&r);

    /* Long operator chains nest just as deeply, in the tree instead of the parser. */
    char *chain = malloc(5 + 2 * DEPTH + 1);
    strcpy(chain, "y = a");
    for (int i = 0; i < DEPTH; i++) memcpy(chain + 5 + 2 * i, "+a", 3);
    r = parse(chain);
    h = headlines(r.diags);
    ck_assert_str_eq(h, "t.nn:1:5: error: expression nested too deeply\n");
    ck_assert_int_eq(r.nerrors, 1);
    free(h);
    parsed_free(&r);
    free(chain);
    free(text);
}
END_TEST

START_TEST(nesting_within_the_limit) {
    enum { DEPTH = 500 };
    char *text = malloc(4 + 3 * DEPTH + 2);
    strcpy(text, "x = ");
    char *p = text + 4;
    for (int i = 0; i < DEPTH; i++) *p++ = '(';
    *p++ = '1';
    for (int i = 0; i < DEPTH; i++) *p++ = ')';
    *p = '\0';
    ASSERT_AST(text, "(let x 1)\n");
    free(text);
}
END_TEST

START_TEST(error_limit_stops_printing) {
    char text[200] = "";
    for (int i = 0; i < 25; i++) strcat(text, "$\n");
    Parsed r = parse(text);
    ck_assert_int_eq(r.nerrors, 25);
    ck_assert_ptr_nonnull(strstr(r.diags, "nnc: too many errors; stopping here\n"));
    parsed_free(&r);
}
END_TEST

/* ---- never crashes -------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static const char *const FRAGMENTS[] = {
    "x", "dense", "h.W", "(", ")", "[", "]", "{", "}", ",", "=", ":", "\n", ";", " ", "  ",
    "def", "return", "model", "input", "target", "param", "output", "loss", "train", "1",
    "0.5", "1e", "1e-3", ".", "\"s\"", "\"", "\\", "# c", "@", "+", "-", "*", "/", "f32[N, 3]",
    "99999999999999999999", "\xc3\xa9", "\xff", "\x01", "$", "\t", "\r\n",
};

/* Appends a random fragment or byte. */
static size_t random_piece(char *buf) {
    if (rnd() % 4 == 0) {
        buf[0] = (char)(rnd() & 0xff);
        return 1;
    }
    const char *f = FRAGMENTS[rnd() % (sizeof FRAGMENTS / sizeof FRAGMENTS[0])];
    size_t n = strlen(f);
    memcpy(buf, f, n);
    return n;
}

/* Parses, prints, and checks the error count against the printed messages. */
static void check_survives(const char *text, size_t len) {
    Parsed r = parse_bytes(text, len);
    ck_assert_int_ge(r.nerrors, 0);
    int printed = 0;
    for (const char *p = r.diags; (p = strstr(p, ": error: ")); p++) printed++;
    ck_assert_int_eq(printed, r.nerrors < 20 ? r.nerrors : 20);
    ck_assert_int_ge(r.prog->nstmts, 0);
    parsed_free(&r);
}

START_TEST(never_crashes_on_random_input) {
    rng_state = 0x9e3779b97f4a7c15u;
    char buf[4096];
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = 0;
        int pieces = (int)(rnd() % 60);
        for (int i = 0; i < pieces; i++) len += random_piece(buf + len);
        check_survives(buf, len);
    }
}
END_TEST

START_TEST(never_crashes_on_mutated_examples) {
    rng_state = 0x2545f4914f6cdd1du;
    const char *examples[] = {MNIST_MLP, LENET, TENSOR_LEVEL};
    char *buf = malloc(16384);
    for (int iter = 0; iter < 3000; iter++) {
        const char *ex = examples[iter % 3];
        size_t len = strlen(ex);
        memcpy(buf, ex, len);
        int nmut = 1 + (int)(rnd() % 8);
        for (int m = 0; m < nmut && len > 0; m++) {
            size_t at = rnd() % len;
            switch (rnd() % 5) {
            case 0: { /* delete a range */
                size_t n = 1 + rnd() % 12;
                if (n > len - at) n = len - at;
                memmove(buf + at, buf + at + n, len - at - n);
                len -= n;
                break;
            }
            case 1: { /* insert a fragment */
                char piece[32];
                size_t n = random_piece(piece);
                if (len + n > 12000) break;
                memmove(buf + at + n, buf + at, len - at);
                memcpy(buf + at, piece, n);
                len += n;
                break;
            }
            case 2: /* replace a byte */
                buf[at] = (char)(rnd() & 0xff);
                break;
            case 3: { /* duplicate a range */
                size_t n = 1 + rnd() % 40;
                if (n > len - at) n = len - at;
                if (len + n > 12000) break;
                memmove(buf + at + n, buf + at, len - at);
                len += n;
                break;
            }
            default: /* truncate */
                len = at;
                break;
            }
        }
        check_survives(buf, len);
    }
    free(buf);
}
END_TEST

/* ---- suite ---------------------------------------------------------------------------- */

static Suite *parser_suite(void) {
    Suite *s = suite_create("parser");

    TCase *valid = tcase_create("valid programs");
    tcase_add_test(valid, example_mnist_mlp);
    tcase_add_test(valid, example_lenet);
    tcase_add_test(valid, example_tensor_level);
    tcase_add_test(valid, list_literals);
    tcase_add_test(valid, training_statements);
    tcase_add_test(valid, one_line_and_empty_defs);
    tcase_add_test(valid, multi_line_def_body);
    tcase_add_test(valid, multi_line_calls);
    tcase_add_test(valid, semicolon_separators);
    tcase_add_test(valid, comments_everywhere);
    tcase_add_test(valid, no_trailing_newline);
    tcase_add_test(valid, crlf_line_endings);
    tcase_add_test(valid, empty_and_blank_files);
    tcase_add_test(valid, operator_precedence);
    tcase_add_test(valid, number_forms);
    tcase_add_test(valid, strings_and_escapes);
    tcase_add_test(valid, dotted_names_and_keyword_prefixes);
    tcase_add_test(valid, options_in_every_form);
    tcase_add_test(valid, calls_with_keywords_and_trailing_comma);
    tcase_add_test(valid, output_and_return_forms);
    tcase_add_test(valid, spans_point_into_the_source);
    tcase_add_test(valid, nesting_within_the_limit);
    suite_add_tcase(s, valid);

    TCase *errors = tcase_create("malformed programs");
    tcase_add_test(errors, error_missing_colon_in_input);
    tcase_add_test(errors, error_bad_type_dims);
    tcase_add_test(errors, error_unclosed_paren_at_eof);
    tcase_add_test(errors, error_unclosed_paren_swallowing_later_lines);
    tcase_add_test(errors, error_stray_closing_brackets);
    tcase_add_test(errors, error_malformed_numbers);
    tcase_add_test(errors, error_integer_literal_too_large);
    tcase_add_test(errors, error_unterminated_string);
    tcase_add_test(errors, error_bad_string_contents);
    tcase_add_test(errors, error_unexpected_characters);
    tcase_add_test(errors, error_nul_byte_in_input);
    tcase_add_test(errors, error_bare_expression_statement);
    tcase_add_test(errors, error_nested_def);
    tcase_add_test(errors, error_missing_closing_brace);
    tcase_add_test(errors, error_two_errors_in_one_file);
    tcase_add_test(errors, error_recovery_inside_def_body);
    tcase_add_test(errors, error_broken_def_header);
    tcase_add_test(errors, error_missing_pieces);
    tcase_add_test(errors, error_unexpected_tokens);
    tcase_add_test(errors, error_deep_nesting);
    tcase_add_test(errors, error_limit_stops_printing);
    suite_add_tcase(s, errors);

    TCase *fuzz = tcase_create("never crashes");
    tcase_set_timeout(fuzz, 300);
    tcase_add_test(fuzz, never_crashes_on_random_input);
    tcase_add_test(fuzz, never_crashes_on_mutated_examples);
    suite_add_tcase(s, fuzz);
    return s;
}

int main(void) { return run_suite(parser_suite()); }
