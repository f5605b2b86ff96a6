/* parse_state.h - what the lexer (lexer.l), the grammar (parser.y) and ast.c
 * share while one .nn file is parsed: the parse state, the shapes of the
 * grammar's semantic values, the AST constructors the grammar actions call,
 * and error reporting that knows about unclosed brackets.
 *
 * Private to the frontend: everything else sees only ast.h. */
#ifndef NNC_PARSE_STATE_H
#define NNC_PARSE_STATE_H

#include "frontend/ast.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ParseState {
    Arena *arena;
    const Source *src;
    Diag *diag;
    Program *prog;
    int stmts_cap;

    /* The lexer's position and bracket bookkeeping. */
    int32_t offset;     /* byte offset of the next unread character */
    bool at_stmt_start; /* nothing since the last terminator or '{': skip terminators */
    Span *brackets;     /* unclosed '(' and '[', innermost last; newlines are ignored inside */
    int nbrackets, brackets_cap;
    Span *braces; /* unclosed '{', innermost last */
    int nbraces, braces_cap;
    bool unclosed_at_eof; /* "'(' was never closed" was reported: later syntax errors echo it */
    /* The tokens of the statement so far and the span of its first, when
     * that is an identifier: a misspelt keyword ("trian sgd(...)") fails on
     * the second token, and the message names the first. */
    int stmt_ntokens;
    bool stmt_first_ident;
    Span stmt_first;

    /* A syntax error found inside brackets waits here until they close. If
     * they never do, the unclosed bracket is the real mistake and the
     * deferred message is dropped in favour of "'(' was never closed". */
    bool has_deferred;
    Span deferred_at;
    const char *deferred_msg;
} ParseState;

/* The value of a NUMBER token. */
typedef struct NumberTok {
    double value;
    int64_t ival; /* the value when is_int */
    bool is_int;
} NumberTok;

/* An expression under construction and the depth of its tree. */
typedef struct ExprVal {
    Expr *e;
    int depth;
} ExprVal;

/* A call argument and the depth of its value. */
typedef struct ArgVal {
    Arg arg;
    int depth;
} ArgVal;

/* Growable lists built by left-recursive rules (arena-backed, see VEC_PUSH). */
typedef struct ArgList {
    Arg *items;
    int n, cap;
    int depth; /* the deepest argument value */
} ArgList;

typedef struct DimList {
    DimAst *items;
    int n, cap;
} DimList;

typedef struct StmtList {
    Stmt **items;
    int n, cap;
} StmtList;

/* Expression trees deeper than this are rejected, so that every recursive
 * walk over the AST (printing, lowering) runs in bounded stack. */
enum { MAX_EXPR_DEPTH = 1000 };

/* AST constructors (ast.c). */
Expr *ast_number(Arena *a, Span span, double value, bool is_int);
Expr *ast_string(Arena *a, Span span, const char *text);
Expr *ast_name(Arena *a, Span span, const char *name);
Expr *ast_call(Arena *a, Span span, const char *callee, Span callee_span, Arg *args, int nargs);
Expr *ast_binary(Arena *a, Span span, char op, Expr *lhs, Expr *rhs);
Expr *ast_neg(Arena *a, Span span, Expr *operand);
Expr *ast_list(Arena *a, Span span, Arg *items, int n);
Stmt *ast_stmt(Arena *a, StmtKind kind, Span span, const char *name, Span name_span);
TypeAst *ast_type(Arena *a, Span span, const char *dtype, Span dtype_span, DimAst *dims,
                  int ndims);

/* Error reporting while parsing (parser.y). parse_error reports at once,
 * after any deferred message, so that messages come out in source order. */
void parse_error(ParseState *ps, Span at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void parse_defer_error(ParseState *ps, Span at, const char *msg);
void parse_flush_deferred(ParseState *ps);

#endif
