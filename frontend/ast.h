/* ast.h - the syntax tree of a .nn file, as the parser builds it.
 *
 * The tree is purely syntactic: names are not resolved and calls are not
 * checked here; frontend/lower.c gives them meaning and reports what is
 * wrong. Everything is allocated from the compilation's arena. */
#ifndef NNC_AST_H
#define NNC_AST_H

#include "support/arena.h"
#include "support/diag.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct Expr Expr;
typedef struct Stmt Stmt;

/* A call argument or a declaration option: `value` (positional, name NULL),
 * `name=value`, or, for options only, `name value` (as in `batch 64`). */
typedef struct Arg {
    const char *name;
    Span name_span;
    Expr *value;
} Arg;

typedef enum {
    EX_NUMBER, /* 3, 0.1, 1e-3                  */
    EX_STRING, /* "path/to/file"                */
    EX_NAME,   /* x, relu, h.W                   */
    EX_CALL,   /* name(args...)                  */
    EX_BINARY, /* lhs op rhs, op one of + - * / @ */
    EX_NEG,    /* -operand                       */
    EX_LIST,   /* [a, b, c]: items in args (positional) */
} ExprKind;

struct Expr {
    ExprKind kind;
    Span span; /* the whole expression */
    /* EX_NUMBER */
    double number;
    bool is_int; /* written without '.' or exponent */
    /* EX_NAME: the name; EX_CALL: the callee; EX_STRING: the unescaped text */
    const char *text;
    Span name_span; /* EX_CALL: the callee */
    /* EX_BINARY */
    char op;
    Expr *lhs, *rhs; /* EX_NEG: lhs only */
    /* EX_CALL, EX_LIST */
    Arg *args;
    int nargs;
};

/* One dimension of a type: a size (`784`) or a symbol (`N`). */
typedef struct DimAst {
    Span span;
    const char *symbol; /* NULL for a number */
    int64_t size;
} DimAst;

/* `f32[N, 784]`, `i32[N]`, or a scalar `f32` (ndims 0). */
typedef struct TypeAst {
    Span span;
    const char *dtype;
    Span dtype_span;
    DimAst *dims;
    int ndims;
} TypeAst;

typedef enum {
    ST_MODEL,  /* model NAME                                 */
    ST_INPUT,  /* input NAME : TYPE options                  */
    ST_TARGET, /* target NAME : TYPE options                 */
    ST_PARAM,  /* param NAME : TYPE options                  */
    ST_LET,    /* NAME = expr                                */
    ST_OUTPUT, /* output NAME = expr, or output NAME          */
    ST_LOSS,   /* loss expr                                  */
    ST_TRAIN,  /* train optimizer-expr options               */
    ST_DEF,    /* def NAME(params) { statements }            */
    ST_RETURN, /* return expr                                */
    ST_DATA,   /* data expr: what the model trains on         */
    ST_METRIC, /* metric NAME = expr                          */
    ST_FREEZE, /* freeze NAME, ... (in params)                */
    ST_PRETRAINED, /* pretrained "FILE" [NAME, ...] (value: the file, params: names) */
} StmtKind;

struct Stmt {
    StmtKind kind;
    Span span; /* the whole statement */
    const char *name;
    Span name_span;
    TypeAst *type; /* INPUT, TARGET, PARAM */
    Expr *value;   /* LET, OUTPUT (NULL in `output NAME`), LOSS, RETURN; TRAIN: the optimizer */
    Arg *opts;     /* INPUT, TARGET, PARAM, TRAIN: options after the type / optimizer */
    int nopts;
    /* DEF: parameters; FREEZE, PRETRAINED: the names listed */
    const char **params;
    Span *param_spans;
    int nparams;
    Stmt **body;
    int nbody;
};

typedef struct Program {
    Stmt **stmts;
    int nstmts;
} Program;

/* Parses a whole file (or, for the REPL, a fragment: any statements).
 * Syntax errors go to `d` (several per run; the parser recovers at the
 * next line) and the statements that parsed are returned; the caller
 * checks d->nerrors. Never returns NULL. */
Program *parse_program(Arena *a, const Source *src, Diag *d);

/* Prints the tree as S-expressions, one statement per line (for tests). */
void ast_print(FILE *out, const Program *p);

#endif
