/* parser.y - the grammar of .nn files, building the AST of ast.h.
 *
 * The lexer (lexer.l) ends statements with NEWLINE tokens, so the grammar
 * sees one terminator after every statement, including the last statement
 * of a def body before its '}'. Statements that parse are appended to the
 * Program as they complete; a statement with a syntax error is skipped up to
 * its terminator and parsing goes on, so one run reports several errors.
 *
 * Syntax error messages are written by yyreport_syntax_error below:
 *   unexpected <found>[; expected <a or b ...>]
 * where the expected list is given when it has at most four entries once the
 * tokens that can start an expression are counted as one ("expression") and
 * the binary operators that could continue an expression are left out. */

%define api.pure full
%define api.location.type {Span}
%define api.header.include {"frontend/parser.h"}
%define parse.error custom
%define parse.lac full
%locations
%param {void *scanner}
%parse-param {ParseState *ps}
%expect 0

%code requires {
#include "frontend/parse_state.h"
}

%code {
#include "frontend/lexer.h"
#include "support/util.h"

#include <stdarg.h>
#include <string.h>

/* The parser's stack limit: deeper nesting is reported, not overflowed. */
#define YYMAXDEPTH 2000

/* A rule's location runs from its first to its last symbol; an empty rule
 * sits, empty, at the end of the symbol before it. */
#define YYLLOC_DEFAULT(Cur, Rhs, N)                          \
    do {                                                     \
        if (N) {                                             \
            (Cur).begin = YYRHSLOC(Rhs, 1).begin;            \
            (Cur).end = YYRHSLOC(Rhs, N).end;                \
        } else {                                             \
            (Cur).begin = (Cur).end = YYRHSLOC(Rhs, 0).end;  \
        }                                                    \
    } while (0)

static void yyerror(Span *loc, void *scanner, ParseState *ps, const char *msg);
static void add_stmt(ParseState *ps, Stmt *s);
static Stmt *finish_decl(Stmt *s, StmtKind kind, Span span);
static bool too_deep(ParseState *ps, int depth, Span at);
static bool binary(ParseState *ps, ExprVal *out, char op, ExprVal lhs, ExprVal rhs, Span at);
static void push_arg(ParseState *ps, ArgList *list, Arg arg, int depth);
static Stmt *name_list_stmt(ParseState *ps, StmtKind kind, Span span, Expr *value, ArgList names);
}

%union {
    const char *str;
    NumberTok num;
    ExprVal expr;
    Arg arg;
    ArgVal argval;
    ArgList args;
    DimAst dim;
    DimList dims;
    TypeAst *type;
    Stmt *stmt;
    StmtList stmts;
}

/* Declared in the order they are listed in "expected ..." messages. */
%token <str> IDENT STRING
%token <num> NUMBER
%token MODEL INPUT TARGET PARAM OUTPUT LOSS TRAIN DEF RETURN DATA METRIC FREEZE PRETRAINED
%token ',' ')' ']' '}' ':' '=' '(' '[' '{' '+' '-' '*' '/' '@'
%token NEWLINE
%token ';' /* only inside brackets, where it is always an error */

%left '+' '-'
%left '*' '/' '@'
%precedence NEG

%type <stmt> statement simple def decl
%type <type> type
%type <dims> dims
%type <dim> dim
%type <args> options params param_list args arg_list
%type <arg> option
%type <argval> arg
%type <stmts> body
%type <expr> expr primary

%%

/* program: { statement terminator } */
program
    : %empty
    | program statement NEWLINE     { add_stmt(ps, $2); }
    | program error NEWLINE         { yyerrok; }
    | program error '{' body '}' NEWLINE { yyerrok; } /* a def with a broken header */
    ;

/* statement: a simple statement, or a definition (top level only) */
statement
    : simple
    | def
    ;

/* simple: 'model' IDENT
 *       | 'input' decl | 'target' decl | 'param' decl
 *       | IDENT '=' expr
 *       | 'output' IDENT '=' expr | 'output' IDENT
 *       | 'loss' expr
 *       | 'train' primary { option }
 *       | 'data' primary
 *       | 'metric' IDENT '=' expr
 *       | 'freeze' IDENT { ',' IDENT }
 *       | 'pretrained' STRING [ IDENT { ',' IDENT } ]
 *       | 'return' expr
 *       | expr                      (an error: the value would be lost) */
simple
    : MODEL IDENT                   { $$ = ast_stmt(ps->arena, ST_MODEL, @$, $2, @2); }
    | INPUT decl                    { $$ = finish_decl($2, ST_INPUT, @$); }
    | TARGET decl                   { $$ = finish_decl($2, ST_TARGET, @$); }
    | PARAM decl                    { $$ = finish_decl($2, ST_PARAM, @$); }
    | IDENT '=' expr {
        $$ = ast_stmt(ps->arena, ST_LET, @$, $1, @1);
        $$->value = $3.e;
    }
    | OUTPUT IDENT '=' expr {
        $$ = ast_stmt(ps->arena, ST_OUTPUT, @$, $2, @2);
        $$->value = $4.e;
    }
    | OUTPUT IDENT                  { $$ = ast_stmt(ps->arena, ST_OUTPUT, @$, $2, @2); }
    | LOSS expr {
        $$ = ast_stmt(ps->arena, ST_LOSS, @$, NULL, SPAN_NONE);
        $$->value = $2.e;
    }
    | TRAIN primary options {
        $$ = ast_stmt(ps->arena, ST_TRAIN, @$, NULL, SPAN_NONE);
        $$->value = $2.e;
        $$->opts = $3.items;
        $$->nopts = $3.n;
    }
    | RETURN expr {
        $$ = ast_stmt(ps->arena, ST_RETURN, @$, NULL, SPAN_NONE);
        $$->value = $2.e;
    }
    | DATA primary {
        $$ = ast_stmt(ps->arena, ST_DATA, @$, NULL, SPAN_NONE);
        $$->value = $2.e;
    }
    | METRIC IDENT '=' expr {
        $$ = ast_stmt(ps->arena, ST_METRIC, @$, $2, @2);
        $$->value = $4.e;
    }
    | FREEZE param_list             { $$ = name_list_stmt(ps, ST_FREEZE, @$, NULL, $2); }
    | PRETRAINED STRING             { $$ = name_list_stmt(ps, ST_PRETRAINED, @$, ast_string(ps->arena, @2, $2), (ArgList){0}); }
    | PRETRAINED STRING param_list  { $$ = name_list_stmt(ps, ST_PRETRAINED, @$, ast_string(ps->arena, @2, $2), $3); }
    | expr {
        parse_error(ps, @1, "expression statement has no effect; assign it to a name (name = ...)");
        $$ = NULL;
    }
    ;

/* decl: IDENT ':' type { option } */
decl
    : IDENT ':' type options {
        $$ = ast_stmt(ps->arena, ST_INPUT, @$, $1, @1);
        $$->type = $3;
        $$->opts = $4.items;
        $$->nopts = $4.n;
    }
    ;

/* def: 'def' IDENT '(' [ IDENT { ',' IDENT } ] ')' '{' body '}' */
def
    : DEF IDENT '(' params ')' '{' body '}' {
        Stmt *s = name_list_stmt(ps, ST_DEF, @$, NULL, $4);
        s->name = $2;
        s->name_span = @2;
        s->body = $7.items;
        s->nbody = $7.n;
        $$ = s;
    }
    ;

/* params: [ IDENT { ',' IDENT } ] */
params
    : %empty                        { $$ = (ArgList){0}; }
    | param_list
    ;

param_list
    : IDENT {
        $$ = (ArgList){0};
        push_arg(ps, &$$, (Arg){.name = $1, .name_span = @1}, 0);
    }
    | param_list ',' IDENT {
        $$ = $1;
        push_arg(ps, &$$, (Arg){.name = $3, .name_span = @3}, 0);
    }
    ;

/* body: { statement terminator }, where a nested def is an error */
body
    : %empty                        { $$ = (StmtList){0}; }
    | body simple NEWLINE {
        $$ = $1;
        if ($2) VEC_PUSH(ps->arena, $$.items, $$.n, $$.cap, $2);
    }
    | body def NEWLINE {
        $$ = $1;
        parse_error(ps, (Span){@2.begin, @2.begin + 3}, "definitions cannot be nested");
    }
    | body error NEWLINE            { $$ = $1; yyerrok; }
    | body error '{' body '}' NEWLINE { $$ = $1; yyerrok; }
    ;

/* type: IDENT [ '[' dim { ',' dim } ']' ] */
type
    : IDENT                         { $$ = ast_type(ps->arena, @$, $1, @1, NULL, 0); }
    | IDENT '[' dims ']'            { $$ = ast_type(ps->arena, @$, $1, @1, $3.items, $3.n); }
    ;

dims
    : dim {
        $$ = (DimList){0};
        VEC_PUSH(ps->arena, $$.items, $$.n, $$.cap, $1);
    }
    | dims ',' dim {
        $$ = $1;
        VEC_PUSH(ps->arena, $$.items, $$.n, $$.cap, $3);
    }
    ;

/* dim: INTEGER | IDENT */
dim
    : NUMBER {
        if (!$1.is_int) {
            parse_error(ps, @1, "dimension must be an integer");
            YYERROR;
        }
        $$ = (DimAst){.span = @1, .size = $1.ival};
    }
    | IDENT                         { $$ = (DimAst){.span = @1, .symbol = $1}; }
    ;

/* options: { IDENT '=' expr | IDENT primary } */
options
    : %empty                        { $$ = (ArgList){0}; }
    | options option                { $$ = $1; push_arg(ps, &$$, $2, 0); }
    ;

option
    : IDENT '=' expr                { $$ = (Arg){.name = $1, .name_span = @1, .value = $3.e}; }
    | IDENT primary                 { $$ = (Arg){.name = $1, .name_span = @1, .value = $2.e}; }
    ;

/* expr: expr ('+'|'-') expr | expr ('*'|'/'|'@') expr | '-' expr | primary */
expr
    : expr '+' expr                 { if (!binary(ps, &$$, '+', $1, $3, @$)) YYABORT; }
    | expr '-' expr                 { if (!binary(ps, &$$, '-', $1, $3, @$)) YYABORT; }
    | expr '*' expr                 { if (!binary(ps, &$$, '*', $1, $3, @$)) YYABORT; }
    | expr '/' expr                 { if (!binary(ps, &$$, '/', $1, $3, @$)) YYABORT; }
    | expr '@' expr                 { if (!binary(ps, &$$, '@', $1, $3, @$)) YYABORT; }
    | '-' expr %prec NEG {
        $$ = (ExprVal){ast_neg(ps->arena, @$, $2.e), 1 + $2.depth};
        if (too_deep(ps, $$.depth, @$)) YYABORT;
    }
    | primary
    ;

/* primary: NUMBER | STRING | IDENT | IDENT '(' [ arg { ',' arg } [','] ] ')' | '(' expr ')'
 *        | '[' [ expr { ',' expr } [','] ] ']' */
primary
    : NUMBER { $$ = (ExprVal){ast_number(ps->arena, @$, $1.value, $1.is_int), 1}; }
    | STRING { $$ = (ExprVal){ast_string(ps->arena, @$, $1), 1}; }
    | IDENT  { $$ = (ExprVal){ast_name(ps->arena, @$, $1), 1}; }
    | IDENT '(' args ')' {
        $$ = (ExprVal){ast_call(ps->arena, @$, $1, @1, $3.items, $3.n), 1 + $3.depth};
        if (too_deep(ps, $$.depth, @$)) YYABORT;
    }
    | '(' expr ')' { $$ = $2; }
    | '[' args ']' {
        $$ = (ExprVal){ast_list(ps->arena, @$, $2.items, $2.n), 1 + $2.depth};
        if (too_deep(ps, $$.depth, @$)) YYABORT;
    }
    ;

/* args: [ arg { ',' arg } [','] ] */
args
    : %empty                        { $$ = (ArgList){0}; }
    | arg_list
    | arg_list ','
    ;

arg_list
    : arg                           { $$ = (ArgList){0}; push_arg(ps, &$$, $1.arg, $1.depth); }
    | arg_list ',' arg              { $$ = $1; push_arg(ps, &$$, $3.arg, $3.depth); }
    ;

/* arg: expr | IDENT '=' expr */
arg
    : expr                          { $$ = (ArgVal){{.value = $1.e}, $1.depth}; }
    | IDENT '=' expr {
        $$ = (ArgVal){{.name = $1, .name_span = @1, .value = $3.e}, $3.depth};
    }
    ;

%%

static void add_stmt(ParseState *ps, Stmt *s) {
    if (s) VEC_PUSH(ps->arena, ps->prog->stmts, ps->prog->nstmts, ps->stmts_cap, s);
}

/* Completes an input, target or param declaration parsed by `decl`. */
static Stmt *finish_decl(Stmt *s, StmtKind kind, Span span) {
    s->kind = kind;
    s->span = span;
    return s;
}

static bool too_deep(ParseState *ps, int depth, Span at) {
    if (depth <= MAX_EXPR_DEPTH) return false;
    parse_error(ps, at, "expression nested too deeply");
    return true;
}

/* Builds `lhs op rhs`; false (after reporting) if the tree gets too deep. */
static bool binary(ParseState *ps, ExprVal *out, char op, ExprVal lhs, ExprVal rhs, Span at) {
    int depth = 1 + (lhs.depth > rhs.depth ? lhs.depth : rhs.depth);
    if (too_deep(ps, depth, at)) return false;
    *out = (ExprVal){ast_binary(ps->arena, at, op, lhs.e, rhs.e), depth};
    return true;
}

/* A statement with a list of names (def parameters, frozen or pretrained
 * parameters) in params / param_spans. */
static Stmt *name_list_stmt(ParseState *ps, StmtKind kind, Span span, Expr *value, ArgList names) {
    Stmt *s = ast_stmt(ps->arena, kind, span, NULL, SPAN_NONE);
    s->value = value;
    s->nparams = names.n;
    s->params = ARENA_ARRAY(ps->arena, const char *, names.n ? names.n : 1);
    s->param_spans = ARENA_ARRAY(ps->arena, Span, names.n ? names.n : 1);
    for (int i = 0; i < names.n; i++) {
        s->params[i] = names.items[i].name;
        s->param_spans[i] = names.items[i].name_span;
    }
    return s;
}

static void push_arg(ParseState *ps, ArgList *list, Arg arg, int depth) {
    VEC_PUSH(ps->arena, list->items, list->n, list->cap, arg);
    if (depth > list->depth) list->depth = depth;
}

/* Bison calls yyerror only when its stack is full: nesting too deep. */
static void yyerror(Span *loc, void *scanner, ParseState *ps, const char *msg) {
    (void)scanner;
    if (strcmp(msg, "memory exhausted") == 0)
        parse_error(ps, *loc, "expression nested too deeply");
    else
        parse_error(ps, *loc, "%s", msg);
}

/* ---- syntax error messages ------------------------------------------------------ */

/* A token kind in an "expected ..." list. */
static const char *token_name(yysymbol_kind_t kind) {
    switch (kind) {
    case YYSYMBOL_YYEOF: return "end of file";
    case YYSYMBOL_IDENT: return "identifier";
    case YYSYMBOL_NUMBER: return "number";
    case YYSYMBOL_STRING: return "string";
    case YYSYMBOL_NEWLINE: return "end of line";
    case YYSYMBOL_MODEL: return "keyword 'model'";
    case YYSYMBOL_INPUT: return "keyword 'input'";
    case YYSYMBOL_TARGET: return "keyword 'target'";
    case YYSYMBOL_PARAM: return "keyword 'param'";
    case YYSYMBOL_OUTPUT: return "keyword 'output'";
    case YYSYMBOL_LOSS: return "keyword 'loss'";
    case YYSYMBOL_TRAIN: return "keyword 'train'";
    case YYSYMBOL_DEF: return "keyword 'def'";
    case YYSYMBOL_RETURN: return "keyword 'return'";
    case YYSYMBOL_DATA: return "keyword 'data'";
    case YYSYMBOL_METRIC: return "keyword 'metric'";
    case YYSYMBOL_FREEZE: return "keyword 'freeze'";
    case YYSYMBOL_PRETRAINED: return "keyword 'pretrained'";
    default: return yysymbol_name(kind); /* punctuation, quoted: '(' */
    }
}

/* Appends the source text of `at` to buf, at most `max` bytes of it, with
 * bytes that are not printable ASCII written as \xNN. */
static void append_source(char *buf, size_t size, const Source *src, Span at, int max) {
    size_t n = strlen(buf);
    for (int32_t i = at.begin; i < at.end && i < src->len && n + 8 < size; i++) {
        if (i - at.begin == max) {
            n += (size_t)snprintf(buf + n, size - n, "...");
            break;
        }
        unsigned char c = (unsigned char)src->text[i];
        if (c >= 0x20 && c < 0x7f)
            buf[n++] = (char)c;
        else
            n += (size_t)snprintf(buf + n, size - n, "\\x%02x", c);
    }
    buf[n] = '\0';
}

/* The token the parser stopped at, with its text where that helps. */
static void describe_found(char *buf, size_t size, const Source *src, yysymbol_kind_t kind,
                           Span at) {
    switch (kind) {
    case YYSYMBOL_IDENT:
        snprintf(buf, size, "identifier '");
        append_source(buf, size, src, at, 40);
        strncat(buf, "'", size - strlen(buf) - 1);
        return;
    case YYSYMBOL_NUMBER:
        snprintf(buf, size, "number ");
        append_source(buf, size, src, at, 40);
        return;
    case YYSYMBOL_STRING:
        snprintf(buf, size, "string ");
        append_source(buf, size, src, at, 40);
        return;
    case YYSYMBOL_NEWLINE: {
        /* A terminator is a newline, a ';', or supplied before a '}' or at the end. */
        char c = at.begin < src->len ? src->text[at.begin] : '\0';
        snprintf(buf, size, "%s",
                 at.begin >= src->len ? "end of file"
                 : c == ';'           ? "';'"
                 : c == '}'           ? "'}'"
                                      : "end of line");
        return;
    }
    default: snprintf(buf, size, "%s", token_name(kind)); return;
    }
}

/* A statement that starts with an identifier close to a keyword, and fails
 * on the next token, is a misspelt keyword: "trian sgd(lr=0.1)". */
static bool misspelt_keyword(ParseState *ps, yysymbol_kind_t found) {
    static const char *const keywords[] = {"model", "input", "target", "param", "output", "loss", "train",
                                           "data", "metric", "freeze", "pretrained", "def", "return"};
    if (ps->stmt_ntokens != 2 || !ps->stmt_first_ident || ps->nbrackets > 0) return false;
    if (found != YYSYMBOL_IDENT && found != YYSYMBOL_STRING) return false;
    Span at = ps->stmt_first;
    char word[65];
    if (at.end - at.begin >= (int32_t)sizeof word) return false;
    snprintf(word, sizeof word, "%.*s", (int)(at.end - at.begin), ps->src->text + at.begin);
    const char *near = closest_name(word, keywords, (int)(sizeof keywords / sizeof keywords[0]));
    if (!near) return false;
    parse_error(ps, at, "unknown statement '%s'; did you mean '%s'?", word, near);
    return true;
}

static int yyreport_syntax_error(const yypcontext_t *ctx, void *scanner, ParseState *ps) {
    (void)scanner;
    if (ps->unclosed_at_eof) return 0; /* an echo of the unclosed bracket */
    yysymbol_kind_t found = yypcontext_token(ctx);
    Span at = *yypcontext_location(ctx);
    if (found == YYSYMBOL_YYEOF && ps->nbraces > 0) {
        parse_error(ps, ps->braces[ps->nbraces - 1], "'{' was never closed");
        return 0;
    }

    if (misspelt_keyword(ps, found)) return 0;

    char msg[256] = "unexpected ";
    describe_found(msg + strlen(msg), sizeof msg - strlen(msg), ps->src, found, at);

    yysymbol_kind_t expected[YYNTOKENS];
    int nexpected = yypcontext_expected_tokens(ctx, expected, YYNTOKENS);
    bool has[YYNTOKENS] = {false};
    for (int i = 0; i < nexpected; i++) has[expected[i]] = true;
    yysymbol_kind_t lparen = YYTRANSLATE('('), lbracket = YYTRANSLATE('['), minus = YYTRANSLATE('-');
    const yysymbol_kind_t ops[] = {YYTRANSLATE('+'), minus, YYTRANSLATE('*'), YYTRANSLATE('/'),
                                   YYTRANSLATE('@')};
    bool expr_start =
        has[YYSYMBOL_IDENT] && has[YYSYMBOL_NUMBER] && has[YYSYMBOL_STRING] && has[lparen];
    bool operators = true;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) operators = operators && has[ops[i]];
    const char *names[YYNTOKENS];
    int nnames = 0;
    if (expr_start) {
        names[nnames++] = "expression";
        has[YYSYMBOL_IDENT] = has[YYSYMBOL_NUMBER] = has[YYSYMBOL_STRING] = false;
        has[lparen] = has[lbracket] = has[minus] = false;
    }
    if (operators) {
        /* What may follow a complete expression: an operator, or '(' after a name. */
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) has[ops[i]] = false;
        has[lparen] = false;
    }
    for (int k = 0; k < YYNTOKENS; k++)
        if (has[k]) names[nnames++] = token_name((yysymbol_kind_t)k);
    if (nnames >= 1 && nnames <= 4) {
        strncat(msg, "; expected ", sizeof msg - strlen(msg) - 1);
        for (int i = 0; i < nnames; i++) {
            if (i) strncat(msg, " or ", sizeof msg - strlen(msg) - 1);
            strncat(msg, names[i], sizeof msg - strlen(msg) - 1);
        }
    }

    if (ps->nbrackets > 0)
        parse_defer_error(ps, at, msg);
    else
        parse_error(ps, at, "%s", msg);
    return 0;
}

/* ---- reporting --------------------------------------------------------------------- */

void parse_error(ParseState *ps, Span at, const char *fmt, ...) {
    parse_flush_deferred(ps);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    diag_error(ps->diag, at, "%s", msg);
}

void parse_defer_error(ParseState *ps, Span at, const char *msg) {
    parse_flush_deferred(ps);
    ps->has_deferred = true;
    ps->deferred_at = at;
    ps->deferred_msg = arena_strdup(ps->arena, msg);
}

void parse_flush_deferred(ParseState *ps) {
    if (!ps->has_deferred) return;
    ps->has_deferred = false;
    diag_error(ps->diag, ps->deferred_at, "%s", ps->deferred_msg);
}
