/* ast.c - running the parser over a Source (parse_program), the AST
 * constructors the grammar actions use, and the S-expression printer that
 * tests compare against (ast_print). */
#include "frontend/ast.h"
#include "frontend/parser.h"
#include "frontend/lexer.h"
#include "support/util.h"

#include <inttypes.h>
#include <stdlib.h>

/* ---- constructors ------------------------------------------------------------------ */

static Expr *new_expr(Arena *a, ExprKind kind, Span span) {
    Expr *e = ARENA_NEW(a, Expr);
    e->kind = kind;
    e->span = span;
    e->name_span = SPAN_NONE;
    return e;
}

Expr *ast_number(Arena *a, Span span, double value, bool is_int) {
    Expr *e = new_expr(a, EX_NUMBER, span);
    e->number = value;
    e->is_int = is_int;
    return e;
}

Expr *ast_string(Arena *a, Span span, const char *text) {
    Expr *e = new_expr(a, EX_STRING, span);
    e->text = text;
    return e;
}

Expr *ast_name(Arena *a, Span span, const char *name) {
    Expr *e = new_expr(a, EX_NAME, span);
    e->text = name;
    return e;
}

Expr *ast_call(Arena *a, Span span, const char *callee, Span callee_span, Arg *args, int nargs) {
    Expr *e = new_expr(a, EX_CALL, span);
    e->text = callee;
    e->name_span = callee_span;
    e->args = args;
    e->nargs = nargs;
    return e;
}

Expr *ast_binary(Arena *a, Span span, char op, Expr *lhs, Expr *rhs) {
    Expr *e = new_expr(a, EX_BINARY, span);
    e->op = op;
    e->lhs = lhs;
    e->rhs = rhs;
    return e;
}

Expr *ast_neg(Arena *a, Span span, Expr *operand) {
    Expr *e = new_expr(a, EX_NEG, span);
    e->lhs = operand;
    return e;
}

/* A list literal; its items are stored as positional arguments. */
Expr *ast_list(Arena *a, Span span, Arg *items, int n) {
    Expr *e = new_expr(a, EX_LIST, span);
    e->args = items;
    e->nargs = n;
    return e;
}

Stmt *ast_stmt(Arena *a, StmtKind kind, Span span, const char *name, Span name_span) {
    Stmt *s = ARENA_NEW(a, Stmt);
    s->kind = kind;
    s->span = span;
    s->name = name;
    s->name_span = name_span;
    return s;
}

TypeAst *ast_type(Arena *a, Span span, const char *dtype, Span dtype_span, DimAst *dims,
                  int ndims) {
    TypeAst *t = ARENA_NEW(a, TypeAst);
    t->span = span;
    t->dtype = dtype;
    t->dtype_span = dtype_span;
    t->dims = dims;
    t->ndims = ndims;
    return t;
}

/* ---- parsing ------------------------------------------------------------------------- */

Program *parse_program(Arena *a, const Source *src, Diag *d) {
    Program *prog = ARENA_NEW(a, Program);
    ParseState ps = {.arena = a, .src = src, .diag = d, .prog = prog, .at_stmt_start = true};
    yyscan_t scanner;
    if (yylex_init_extra(&ps, &scanner) != 0) NNC_BUG("cannot create the lexer");
    yy_scan_bytes(src->text, src->len, scanner);
    yyparse(scanner, &ps);
    parse_flush_deferred(&ps);
    yylex_destroy(scanner); /* frees the buffer yy_scan_bytes made too */
    return prog;
}

/* ---- printing ------------------------------------------------------------------------ */

/* The shortest of 15, 16 or 17 significant digits that reads back exactly. */
static void print_number(FILE *out, double v) {
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, out);
}

static void print_string(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(out, "\\x%02x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void print_expr(FILE *out, const Expr *e) {
    switch (e->kind) {
    case EX_NUMBER: print_number(out, e->number); break;
    case EX_STRING: print_string(out, e->text); break;
    case EX_NAME: fputs(e->text, out); break;
    case EX_CALL:
        fprintf(out, "(call %s", e->text);
        for (int i = 0; i < e->nargs; i++) {
            fputc(' ', out);
            if (e->args[i].name) {
                fprintf(out, "(%s= ", e->args[i].name);
                print_expr(out, e->args[i].value);
                fputc(')', out);
            } else {
                print_expr(out, e->args[i].value);
            }
        }
        fputc(')', out);
        break;
    case EX_BINARY:
        fprintf(out, "(%c ", e->op);
        print_expr(out, e->lhs);
        fputc(' ', out);
        print_expr(out, e->rhs);
        fputc(')', out);
        break;
    case EX_NEG:
        fputs("(neg ", out);
        print_expr(out, e->lhs);
        fputc(')', out);
        break;
    case EX_LIST:
        fputs("(list", out);
        for (int i = 0; i < e->nargs; i++) {
            fputc(' ', out);
            print_expr(out, e->args[i].value);
        }
        fputc(')', out);
        break;
    }
}

static void print_type(FILE *out, const TypeAst *t) {
    fprintf(out, "(%s", t->dtype);
    for (int i = 0; i < t->ndims; i++) {
        if (t->dims[i].symbol)
            fprintf(out, " %s", t->dims[i].symbol);
        else
            fprintf(out, " %" PRId64, t->dims[i].size);
    }
    fputc(')', out);
}

static void print_options(FILE *out, const Arg *opts, int n) {
    for (int i = 0; i < n; i++) {
        fprintf(out, " (%s ", opts[i].name);
        print_expr(out, opts[i].value);
        fputc(')', out);
    }
}

static const char *stmt_keyword(StmtKind kind) {
    switch (kind) {
    case ST_MODEL: return "model";
    case ST_INPUT: return "input";
    case ST_TARGET: return "target";
    case ST_PARAM: return "param";
    case ST_LET: return "let";
    case ST_OUTPUT: return "output";
    case ST_LOSS: return "loss";
    case ST_TRAIN: return "train";
    case ST_DEF: return "def";
    case ST_RETURN: return "return";
    case ST_DATA: return "data";
    case ST_METRIC: return "metric";
    case ST_FREEZE: return "freeze";
    case ST_PRETRAINED: return "pretrained";
    }
    return "?";
}

static void print_stmt(FILE *out, const Stmt *s) {
    fprintf(out, "(%s", stmt_keyword(s->kind));
    if (s->name) fprintf(out, " %s", s->name);
    switch (s->kind) {
    case ST_INPUT:
    case ST_TARGET:
    case ST_PARAM:
        fputc(' ', out);
        print_type(out, s->type);
        print_options(out, s->opts, s->nopts);
        break;
    case ST_TRAIN:
        fputc(' ', out);
        print_expr(out, s->value);
        print_options(out, s->opts, s->nopts);
        break;
    case ST_DEF:
        fputs(" (", out);
        for (int i = 0; i < s->nparams; i++) fprintf(out, "%s%s", i ? " " : "", s->params[i]);
        fputc(')', out);
        for (int i = 0; i < s->nbody; i++) {
            fputc(' ', out);
            print_stmt(out, s->body[i]);
        }
        break;
    case ST_FREEZE:
    case ST_PRETRAINED:
        if (s->value) {
            fputc(' ', out);
            print_expr(out, s->value);
        }
        for (int i = 0; i < s->nparams; i++) fprintf(out, " %s", s->params[i]);
        break;
    default:
        if (s->value) {
            fputc(' ', out);
            print_expr(out, s->value);
        }
        break;
    }
    fputc(')', out);
}

void ast_print(FILE *out, const Program *p) {
    for (int i = 0; i < p->nstmts; i++) {
        print_stmt(out, p->stmts[i]);
        fputc('\n', out);
    }
}
