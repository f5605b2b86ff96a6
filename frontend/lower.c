/* lower.c - giving a parsed .nn program its meaning: the model graph.
 *
 * Statements run top to bottom. Names bind to values (tensors, numbers) in
 * scopes; a `def` is expanded at every call, with a scope of its own.
 * Calls resolve to, in order: a def of the program, a layer (dense,
 * flatten; layers create parameters), a function (sum, mean, mse,
 * cross_entropy, ...) or a public op of ops.def (relu, exp, ...). Every
 * call's arguments are matched against a signature, so a typo, a missing
 * argument or a stray keyword is an error with the nearest correct name.
 *
 * Parameters are named after what creates them: `h = dense(x, 10)` makes
 * h.W and h.b; a layer nested in an expression or a def is named by its
 * place, e.g. logits.dense0.W (see docs/language.md, "Parameter names"). */
#include "frontend/frontend.h"
#include "passes/passes.h"
#include "support/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- values and scopes -------------------------------------------------------------- */

typedef enum { V_ERROR, V_TENSOR, V_NUMBER, V_STRING } ValueKind;

typedef struct Value {
    ValueKind kind;
    int node;    /* V_TENSOR */
    double num;  /* V_NUMBER */
    bool is_int; /* V_NUMBER */
    const char *str;
} Value;

static const Value value_error = {.kind = V_ERROR};

typedef struct Binding {
    const char *name;
    Span span; /* where it was defined */
    Value value;
    const Stmt *def; /* a def, instead of a value */
} Binding;

typedef struct Scope {
    struct Scope *parent;
    Binding *items;
    int n, cap;
    const char *prefix;  /* parameter names inside it start with this */
    int counters[64];    /* per "prefix.kind": how many unnamed ones so far */
    const char *counter_names[64];
    int ncounters;
} Scope;

typedef struct Lower {
    Module *m;
    Graph *g;
    Arena *a;
    Diag *d;
    Scope *scope;
    Scope globals;
    const Expr *stmt_root; /* the right-hand side of the statement being run */
    const char *stmt_name; /* the name it binds, or NULL */
    int depth;             /* def calls in progress */
    bool have_model, have_train, have_data;
    Span model_span;
    const Stmt **name_lists; /* freeze and pretrained statements, resolved at the end */
    int nname_lists, name_lists_cap;
    struct ActCall *acts; /* activations given with arguments: act=leaky_relu(alpha=0.2) */
    int nacts, acts_cap;
} Lower;

/* An activation with its attributes, for act=NAME(...). */
typedef struct ActCall {
    Op op;
    double attr[IR_MAX_ATTRS];
} ActCall;

static Binding *lookup(Lower *L, const char *name) {
    for (Scope *s = L->scope; s; s = s->parent)
        for (int i = s->n - 1; i >= 0; i--)
            if (strcmp(s->items[i].name, name) == 0) return &s->items[i];
    return NULL;
}

static Binding *lookup_local(Scope *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->items[i].name, name) == 0) return &s->items[i];
    return NULL;
}

/* Binds `name` in the current scope; a second definition is an error. */
static bool bind(Lower *L, const char *name, Span span, Value v, const Stmt *def) {
    Binding *old = lookup_local(L->scope, name);
    if (old) {
        int line, col;
        source_line_col(L->m->src, old->span.begin, &line, &col);
        diag_error(L->d, span, "'%s' is already defined (line %d); names are defined once", name, line);
        return false;
    }
    Binding b = {.name = name, .span = span, .value = v, .def = def};
    VEC_PUSH(L->a, L->scope->items, L->scope->n, L->scope->cap, b);
    return true;
}

/* ---- building nodes ------------------------------------------------------------------ */

enum { MAX_DIM = 1 << 30 };
#define MAX_ELEMENTS ((int64_t)1 << 40)

/* A tensor nnc can address: every dimension at most 2^30, at most 2^40
 * elements per example (so offsets never overflow). */
static bool size_fits(Lower *L, const IrType *t, Span span) {
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) {
        if (t->dim[i] == IR_BATCH) continue;
        if (t->dim[i] > MAX_DIM || n > MAX_ELEMENTS / t->dim[i]) {
            diag_error(L->d, span, "this tensor is too large (a dimension may be at most 2^30, and a tensor hold "
                                   "at most 2^40 values per example)");
            return false;
        }
        n *= t->dim[i];
    }
    return true;
}

/* Adds a node and runs its shape rule; V_ERROR if the shapes do not fit. */
static Value emit(Lower *L, Op op, int nin, const int32_t *in, const double *attr, Span span, const char *name) {
    int id = graph_add(L->g, op, nin, in, attr, span);
    L->g->nodes[id].name = name;
    if (!shape_infer(L->g, id, L->d) || !size_fits(L, &L->g->nodes[id].type, span)) return value_error;
    return (Value){.kind = V_TENSOR, .node = id};
}

static Value emit1(Lower *L, Op op, int a, Span span, const char *name) {
    return emit(L, op, 1, (int32_t[]){a}, NULL, span, name);
}

static Value emit2(Lower *L, Op op, int a, int b, Span span, const char *name) {
    return emit(L, op, 2, (int32_t[]){a, b}, NULL, span, name);
}

static Value constant(Lower *L, double v, Span span) {
    return emit(L, OP_CONST, 0, NULL, (double[]){v}, span, NULL);
}

static const IrType *type_of(Lower *L, Value v) { return &L->g->nodes[v.node].type; }

static const char *type_text(Lower *L, Value v) {
    char buf[TYPE_STR_MAX];
    return arena_strdup(L->a, type_str(type_of(L, v), buf, sizeof buf));
}

/* A number used where a tensor is needed becomes a scalar constant. */
static Value as_tensor(Lower *L, Value v, Span span, const char *what) {
    if (v.kind == V_TENSOR || v.kind == V_ERROR) return v;
    if (v.kind == V_NUMBER) return constant(L, v.num, span);
    diag_error(L->d, span, "%s must be a tensor or a number, not a string", what);
    return value_error;
}

/* ---- parameter names ----------------------------------------------------------------------- */

/* The name of the layer (or def call) at `call`: the statement's name if it
 * is the whole right-hand side of a top-level statement, else the scope's
 * prefix plus the kind and a per-kind counter. */
static const char *layer_name(Lower *L, const Expr *call, const char *kind) {
    if (call == L->stmt_root && L->stmt_name && L->depth == 0) return L->stmt_name;
    Scope *s = L->scope;
    const char *prefix = s->prefix ? s->prefix : (L->stmt_name ? L->stmt_name : "layer");
    const char *key = arena_printf(L->a, "%s.%s", prefix, kind);
    int k;
    for (k = 0; k < s->ncounters; k++)
        if (strcmp(s->counter_names[k], key) == 0) break;
    if (k == s->ncounters) {
        if (k == 64) {
            diag_error(L->d, call->span, "too many unnamed layers in one statement; name some of them");
            k = 63;
        } else {
            s->counter_names[s->ncounters++] = key;
        }
    }
    int index = s->counters[k]++;
    return arena_printf(L->a, "%s%d", key, index);
}

/* ---- initialisers ---------------------------------------------------------------------------- */

typedef struct InitSpec {
    InitKind kind;
    double arg;
    bool given;
} InitSpec;

static const struct {
    const char *name;
    InitKind kind;
} init_aliases[] = {
    {"zeros", INIT_ZEROS},           {"ones", INIT_ONES},
    {"xavier", INIT_XAVIER_UNIFORM}, {"glorot", INIT_XAVIER_UNIFORM},
    {"xavier_uniform", INIT_XAVIER_UNIFORM}, {"xavier_normal", INIT_XAVIER_NORMAL},
    {"glorot_uniform", INIT_XAVIER_UNIFORM}, {"glorot_normal", INIT_XAVIER_NORMAL},
    {"he", INIT_HE_NORMAL},          {"kaiming", INIT_HE_NORMAL},
    {"he_normal", INIT_HE_NORMAL},   {"he_uniform", INIT_HE_UNIFORM},
    {"uniform", INIT_UNIFORM},       {"normal", INIT_NORMAL},
    {"constant", INIT_CONST},
};
enum { NINIT_ALIASES = sizeof init_aliases / sizeof init_aliases[0] };

static void suggest(Lower *L, Span span, const char *what, const char *name, const char *const *cands, int n) {
    const char *near = closest_name(name, cands, n);
    if (near) diag_error(L->d, span, "unknown %s '%s'; did you mean '%s'?", what, name, near);
    else diag_error(L->d, span, "unknown %s '%s'", what, name);
}

/* init=he, init=normal(0.02), init=uniform(0.05), init=constant(0.1), init=0.1 */
static bool parse_init(Lower *L, const Expr *e, InitSpec *out) {
    if (e->kind == EX_NUMBER) {
        *out = (InitSpec){INIT_CONST, e->number, true};
        return true;
    }
    if (e->kind == EX_NEG && e->lhs->kind == EX_NUMBER) {
        *out = (InitSpec){INIT_CONST, -e->lhs->number, true};
        return true;
    }
    if (e->kind != EX_NAME && e->kind != EX_CALL) {
        diag_error(L->d, e->span, "init= expects an initialiser such as he, xavier, zeros or normal(0.01)");
        return false;
    }
    const char *cands[NINIT_ALIASES];
    for (int i = 0; i < NINIT_ALIASES; i++) {
        cands[i] = init_aliases[i].name;
        if (strcmp(e->text, init_aliases[i].name) != 0) continue;
        InitKind k = init_aliases[i].kind;
        bool takes_arg = k == INIT_UNIFORM || k == INIT_NORMAL || k == INIT_CONST;
        if (takes_arg != (e->kind == EX_CALL)) {
            if (takes_arg)
                diag_error(L->d, e->span, "initialiser '%s' needs a value, e.g. %s(%s)", e->text, e->text,
                           k == INIT_CONST ? "0.1" : "0.05");
            else
                diag_error(L->d, e->span, "initialiser '%s' takes no arguments", e->text);
            return false;
        }
        double arg = 0;
        if (takes_arg) {
            const Expr *v = e->nargs == 1 && !e->args[0].name ? e->args[0].value : NULL;
            bool neg = v && v->kind == EX_NEG && v->lhs->kind == EX_NUMBER;
            if (!v || (v->kind != EX_NUMBER && !neg)) {
                diag_error(L->d, e->span, "initialiser '%s' takes one number", e->text);
                return false;
            }
            arg = neg ? -v->lhs->number : v->number;
            if ((k == INIT_UNIFORM || k == INIT_NORMAL) && arg <= 0) {
                diag_error(L->d, v->span, "the %s of '%s' must be positive",
                           k == INIT_UNIFORM ? "bound" : "standard deviation", e->text);
                return false;
            }
        }
        *out = (InitSpec){k, arg, true};
        return true;
    }
    suggest(L, e->kind == EX_CALL ? e->name_span : e->span, "initialiser", e->text, cands, NINIT_ALIASES);
    return false;
}

/* A parameter in the state. fan_in / fan_out follow the usual conventions:
 * [in, out] for matrices, [out, in, kh, kw] for convolution kernels. */
static Value make_param(Lower *L, const char *name, IrType type, InitSpec init, Span span) {
    double fan_in = 1, fan_out = 1;
    if (type.rank == 1) fan_in = fan_out = (double)type.dim[0];
    else if (type.rank == 2) fan_in = (double)type.dim[0], fan_out = (double)type.dim[1];
    else if (type.rank >= 3) {
        double field = 1;
        for (int i = 2; i < type.rank; i++) field *= (double)type.dim[i];
        fan_in = (double)type.dim[1] * field;
        fan_out = (double)type.dim[0] * field;
    }
    if (!init.given) init.kind = type.rank >= 2 ? INIT_XAVIER_UNIFORM : INIT_ZEROS;
    if (!size_fits(L, &type, span)) return value_error;
    if (graph_find_leaf(L->g, OP_PARAM, name) >= 0) {
        diag_error(L->d, span, "a parameter named '%s' already exists", name);
        return value_error;
    }
    int id = graph_add(L->g, OP_PARAM, 0, NULL, (double[]){init.kind, init.arg, fan_in, fan_out}, span);
    Node *n = &L->g->nodes[id];
    n->name = name;
    n->type = type;
    return (Value){.kind = V_TENSOR, .node = id};
}

/* ---- call signatures --------------------------------------------------------------------------- */

typedef enum { A_TENSOR, A_INT, A_REAL, A_ACT, A_INIT, A_BOOL, A_AXIS, A_LIST, A_STRING, A_PAIR } ArgKind;

typedef struct ParamSpec {
    const char *name;
    ArgKind kind;
    bool required;
    double dflt; /* A_INT, A_REAL, A_BOOL, A_PAIR (both); A_AXIS: INT_MIN = all axes */
} ParamSpec;

enum { MAX_PARAMS = 8 };
#define ALL_AXES (-1000.0)

/* The arguments of one call, matched to a signature. */
typedef struct Args {
    const ParamSpec *spec;
    int n;
    bool given[MAX_PARAMS];
    Span span[MAX_PARAMS];
    Value v[MAX_PARAMS];   /* A_TENSOR */
    double num[MAX_PARAMS]; /* A_INT, A_REAL, A_BOOL, A_AXIS; A_ACT: see act_arg */
    InitSpec init[MAX_PARAMS];
    int64_t pair[MAX_PARAMS][2]; /* A_PAIR: (h, w) */
    const Expr *expr[MAX_PARAMS]; /* as written (A_LIST: for the builder to read), or NULL */
    Span call_span;
    const char *callee;
} Args;

static Value eval(Lower *L, const Expr *e);
static bool bind_args(Lower *L, const Expr *call, const ParamSpec *spec, Args *args);

static const char *kind_text(ArgKind k) {
    switch (k) {
    case A_TENSOR: return "a tensor";
    case A_INT: return "an integer";
    case A_REAL: return "a number";
    case A_ACT: return "an activation";
    case A_INIT: return "an initialiser";
    case A_BOOL: return "true or false";
    case A_LIST: return "a list";
    case A_STRING: return "a string";
    case A_PAIR: return "an integer or [h, w]";
    default: return "an axis";
    }
}

/* A constant number written in place: 3, -2, 0.5 (possibly negated). */
static bool literal_number(const Expr *e, double *v, bool *is_int) {
    const Expr *num = e->kind == EX_NEG ? e->lhs : e;
    if (num->kind != EX_NUMBER || !isfinite(num->number)) return false;
    *v = e->kind == EX_NEG ? -num->number : num->number;
    *is_int = num->is_int && fabs(num->number) <= 9007199254740992.0;
    return true;
}

/* The value of a numeric argument: any expression that evaluates to a
 * number (a literal, a name bound to one, arithmetic on them). */
static bool number_arg(Lower *L, const Expr *e, double *v, bool *is_int) {
    if (literal_number(e, v, is_int)) return true;
    if (e->kind != EX_NAME && e->kind != EX_BINARY && e->kind != EX_NEG) return false;
    Value val = eval(L, e);
    if (val.kind != V_NUMBER || !isfinite(val.num)) return false;
    *v = val.num;
    /* an integer is one that a 64-bit integer holds exactly */
    *is_int = (val.is_int || val.num == floor(val.num)) && fabs(val.num) <= 9007199254740992.0;
    return true;
}

static bool int_list(Lower *L, const Expr *list, const char *what, int64_t lo, int64_t hi, int64_t *out, int max,
                     int *n);

/* A size along the two image axes: one integer for both, or [h, w]. The
 * layer checks the range (a kernel is at least 1, a padding at least 0). */
static bool bind_pair(Lower *L, Args *args, int k, const Expr *e) {
    const char *name = args->spec[k].name;
    if (e->kind == EX_LIST) {
        int n;
        const char *what = arena_printf(L->a, "%s: '%s'", args->callee, name);
        if (e->nargs == 2 && int_list(L, e, what, 0, MAX_DIM, args->pair[k], 2, &n)) return true;
        if (e->nargs != 2)
            diag_error(L->d, e->span, "%s: '%s' takes two integers [h, w], or one for both axes", args->callee,
                       name);
        return false;
    }
    double num;
    bool is_int;
    if (!number_arg(L, e, &num, &is_int) || !is_int || fabs(num) > MAX_DIM) {
        diag_error(L->d, e->span, "%s: '%s' must be an integer or a list of two, as in [5, 3]", args->callee,
                   name);
        return false;
    }
    args->pair[k][0] = args->pair[k][1] = (int64_t)num;
    return true;
}

/* act=NAME or act=NAME(attr=value, ...). The argument's number is -1 for
 * none (identity, linear), the op for a bare name, and OP_COUNT + i for
 * the i-th entry of L->acts, an op with attributes of its own. */
static bool act_arg(Lower *L, Args *args, int k, const Expr *e) {
    if (e->kind != EX_NAME && e->kind != EX_CALL) {
        diag_error(L->d, e->span, "%s: act= expects an activation such as relu or leaky_relu(alpha=0.1)",
                   args->callee);
        return false;
    }
    bool none =
        strcmp(e->text, "none") == 0 || strcmp(e->text, "identity") == 0 || strcmp(e->text, "linear") == 0;
    Op op = op_lookup(e->text);
    if (!none && (op == OP_COUNT || !(op_info(op)->flags & OPF_ACT))) {
        const char *cands[OP_COUNT + 3];
        int n = 0;
        for (int i = 0; i < OP_COUNT; i++)
            if (op_info((Op)i)->flags & OPF_ACT) cands[n++] = op_info((Op)i)->name;
        cands[n++] = "none";
        suggest(L, e->kind == EX_CALL ? e->name_span : e->span, "activation", e->text, cands, n);
        return false;
    }
    args->num[k] = none ? -1.0 : (double)op;
    if (e->kind == EX_NAME) return true;
    const OpInfo *info = none ? NULL : op_info(op);
    ParamSpec spec[IR_MAX_ATTRS + 1] = {{0}};
    for (int i = 0; info && i < info->nattrs; i++)
        spec[i] = (ParamSpec){info->attr_names[i], A_REAL, info->attr_required[i], info->attr_defaults[i]};
    Args sub;
    if (!bind_args(L, e, spec, &sub)) return false;
    if (!info || info->nattrs == 0) return true;
    ActCall act = {.op = op};
    for (int i = 0; i < info->nattrs; i++) act.attr[i] = sub.num[i];
    VEC_PUSH(L->a, L->acts, L->nacts, L->acts_cap, act);
    args->num[k] = OP_COUNT + L->nacts - 1;
    return true;
}

static bool bind_arg(Lower *L, Args *args, int k, const Expr *e) {
    const ParamSpec *p = &args->spec[k];
    args->given[k] = true;
    args->span[k] = e->span;
    args->expr[k] = e;
    double num;
    bool is_int;
    switch (p->kind) {
    case A_TENSOR:
        args->v[k] = as_tensor(L, eval(L, e), e->span, p->name);
        return args->v[k].kind != V_ERROR;
    case A_INT:
    case A_AXIS:
        if (!number_arg(L, e, &num, &is_int) || !is_int) {
            diag_error(L->d, e->span, "%s: '%s' must be an integer", args->callee, p->name);
            return false;
        }
        args->num[k] = num;
        return true;
    case A_REAL:
        if (!number_arg(L, e, &num, &is_int)) {
            diag_error(L->d, e->span, "%s: '%s' must be a number", args->callee, p->name);
            return false;
        }
        args->num[k] = num;
        return true;
    case A_BOOL:
        if (e->kind == EX_NAME && (strcmp(e->text, "true") == 0 || strcmp(e->text, "false") == 0)) {
            args->num[k] = strcmp(e->text, "true") == 0;
            return true;
        }
        diag_error(L->d, e->span, "%s: '%s' must be true or false", args->callee, p->name);
        return false;
    case A_ACT: return act_arg(L, args, k, e);
    case A_INIT: return parse_init(L, e, &args->init[k]);
    case A_LIST:
        if (e->kind != EX_LIST) {
            diag_error(L->d, e->span, "%s: '%s' must be a list, as in [1, 2]", args->callee, p->name);
            return false;
        }
        return true;
    case A_STRING:
        if (e->kind != EX_STRING) {
            diag_error(L->d, e->span, "%s: '%s' must be a string, as in \"file.csv\"", args->callee, p->name);
            return false;
        }
        return true;
    case A_PAIR: return bind_pair(L, args, k, e);
    }
    return false;
}

/* Matches a call's arguments to `spec` (positional first, then keywords). */
static bool bind_args(Lower *L, const Expr *call, const ParamSpec *spec, Args *args) {
    memset(args, 0, sizeof *args);
    args->spec = spec;
    args->call_span = call->span;
    args->callee = call->text;
    while (args->n < MAX_PARAMS && spec[args->n].name) args->n++;
    bool ok = true;
    int pos = 0;
    for (int i = 0; i < call->nargs; i++) {
        const Arg *a = &call->args[i];
        int k = -1;
        if (!a->name) {
            if (pos >= args->n) {
                diag_error(L->d, a->value->span, "%s takes at most %d argument%s", call->text, args->n,
                           args->n == 1 ? "" : "s");
                ok = false;
                continue;
            }
            k = pos++;
        } else {
            for (int j = 0; j < args->n; j++)
                if (strcmp(spec[j].name, a->name) == 0) k = j;
            if (k < 0) {
                const char *cands[MAX_PARAMS];
                for (int j = 0; j < args->n; j++) cands[j] = spec[j].name;
                const char *near = closest_name(a->name, cands, args->n);
                if (near)
                    diag_error(L->d, a->name_span, "%s has no argument '%s'; did you mean '%s'?", call->text,
                               a->name, near);
                else
                    diag_error(L->d, a->name_span, "%s has no argument '%s'", call->text, a->name);
                ok = false;
                continue;
            }
            if (args->given[k]) {
                diag_error(L->d, a->name_span, "%s: argument '%s' given twice", call->text, a->name);
                ok = false;
                continue;
            }
        }
        ok &= bind_arg(L, args, k, a->value);
    }
    for (int k = 0; k < args->n; k++) {
        if (args->given[k]) continue;
        if (spec[k].required) {
            diag_error(L->d, call->span, "%s needs argument '%s' (%s)", call->text, spec[k].name,
                       kind_text(spec[k].kind));
            ok = false;
        }
        args->num[k] = spec[k].kind == A_ACT ? -1 : spec[k].dflt;
        args->pair[k][0] = args->pair[k][1] = (int64_t)spec[k].dflt;
        args->span[k] = call->span;
    }
    return ok;
}

/* The integers of a list argument ([7, 9]) into out[0..*n); at most `max`
 * of them, each in [lo, hi]. */
static bool int_list(Lower *L, const Expr *list, const char *what, int64_t lo, int64_t hi, int64_t *out, int max,
                     int *n) {
    *n = 0;
    if (list->nargs > max) {
        diag_error(L->d, list->span, "%s: at most %d items", what, max);
        return false;
    }
    for (int i = 0; i < list->nargs; i++) {
        double v;
        bool is_int;
        const Expr *item = list->args[i].value;
        if (!number_arg(L, item, &v, &is_int) || !is_int || v < (double)lo || v > (double)hi) {
            diag_error(L->d, item->span, "%s: each item must be an integer in [%lld, %lld]", what, (long long)lo,
                       (long long)hi);
            return false;
        }
        out[(*n)++] = (int64_t)v;
    }
    return true;
}

/* The axis bitmask for `axis` (negative counts from the end) of a tensor of rank `rank`. */
static bool axis_mask(Lower *L, const Args *args, int k, int rank, unsigned *mask) {
    double a = args->num[k];
    if (a == ALL_AXES) {
        *mask = rank ? (1u << rank) - 1 : 0;
        return true;
    }
    int ax = (int)a < 0 ? (int)a + rank : (int)a;
    if (ax < 0 || ax >= rank) {
        diag_error(L->d, args->span[k], "%s: axis %d is out of range for a %d-D tensor", args->callee, (int)a, rank);
        return false;
    }
    *mask = 1u << ax;
    return true;
}

/* ---- layers and functions -------------------------------------------------------------------- */

typedef Value (*BuildFn)(Lower *L, const Expr *call, Args *args);

typedef struct Builtin {
    const char *name;
    ParamSpec params[MAX_PARAMS];
    BuildFn build;
} Builtin;

/* `act` as act_arg gives it: -1 (none), an op, or OP_COUNT + an entry of L->acts. */
static Value apply_act(Lower *L, Value v, double act, Span span, const char *name) {
    if (v.kind == V_ERROR || act < 0) return v;
    if (act >= OP_COUNT) {
        const ActCall *ac = &L->acts[(int)act - OP_COUNT];
        return emit(L, ac->op, 1, (int32_t[]){v.node}, ac->attr, span, name);
    }
    return emit1(L, (Op)(int)act, v.node, span, name);
}

/* dense(x, units, act=none, init=xavier, bias=true): x @ W + b, then act.
 * W : [K, units], b : [units]; x : [N, K]. */
static Value build_dense(Lower *L, const Expr *call, Args *a) {
    Value x = a->v[0];
    const IrType *t = type_of(L, x);
    if (t->rank != 2) {
        diag_error(L->d, a->span[0], "dense expects a [N, K] input, got %s%s", type_text(L, x),
                   t->rank > 2 ? "; flatten it first" : "");
        return value_error;
    }
    if (a->num[1] < 1) {
        diag_error(L->d, a->span[1], "dense: units must be at least 1");
        return value_error;
    }
    const char *name = layer_name(L, call, "dense");
    int64_t units = (int64_t)a->num[1];
    int64_t wdims[2] = {t->dim[1], units};
    Value w = make_param(L, arena_printf(L->a, "%s.W", name), type_tensor(DT_F32, 2, wdims), a->init[3], call->span);
    if (w.kind == V_ERROR) return w;
    Value h = emit2(L, OP_MATMUL, x.node, w.node, call->span, name);
    if (h.kind != V_ERROR && a->num[4] != 0) {
        Value b = make_param(L, arena_printf(L->a, "%s.b", name), type_tensor(DT_F32, 1, &units),
                             (InitSpec){INIT_ZEROS, 0, true}, call->span);
        if (b.kind == V_ERROR) return b;
        h = emit2(L, OP_ADD, h.node, b.node, call->span, name);
    }
    return apply_act(L, h, a->num[2], call->span, name);
}

/* flatten(x): [N, d1, d2, ...] -> [N, d1 * d2 * ...] */
static Value build_flatten(Lower *L, const Expr *call, Args *a) {
    Value x = a->v[0];
    const IrType *t = type_of(L, x);
    if (t->rank < 1) {
        diag_error(L->d, a->span[0], "flatten expects a tensor with a batch axis, got %s", type_text(L, x));
        return value_error;
    }
    int64_t rest = 1;
    for (int i = 1; i < t->rank; i++) rest *= t->dim[i];
    int id = graph_add(L->g, OP_RESHAPE, 1, (int32_t[]){x.node}, NULL, call->span);
    L->g->nodes[id].type = type_tensor(t->dtype, 2, (int64_t[]){t->dim[0], rest});
    L->g->nodes[id].name = L->stmt_name;
    if (!shape_infer(L->g, id, L->d)) return value_error;
    return (Value){.kind = V_TENSOR, .node = id};
}

static Value build_reduce(Lower *L, const Expr *call, Args *a, Op op) {
    unsigned mask;
    if (!axis_mask(L, a, 1, type_of(L, a->v[0])->rank, &mask)) return value_error;
    return emit(L, op, 1, (int32_t[]){a->v[0].node}, (double[]){mask, a->num[2]}, call->span, L->stmt_name);
}

static Value build_sum(Lower *L, const Expr *call, Args *a) { return build_reduce(L, call, a, OP_SUM); }
static Value build_mean(Lower *L, const Expr *call, Args *a) { return build_reduce(L, call, a, OP_MEAN); }

/* matmul(a, b, transpose_a=false, transpose_b=false) */
static Value build_matmul(Lower *L, const Expr *call, Args *a) {
    return emit(L, OP_MATMUL, 2, (int32_t[]){a->v[0].node, a->v[1].node}, (double[]){a->num[2], a->num[3]},
                call->span, L->stmt_name);
}

/* The two tensors a loss compares (arguments 0 and 1, called `what0` and
 * `what1` in messages) hold reals; `hint` follows a complaint about the
 * second. */
static bool loss_reals(Lower *L, const Args *a, const char *what0, const char *what1, const char *hint) {
    const char *what[2] = {what0, what1};
    for (int k = 0; k < 2; k++)
        if (type_of(L, a->v[k])->dtype != DT_F32) {
            diag_error(L->d, a->span[k], "%s: the %s must be real (f32), but this is %s%s", a->callee, what[k],
                       type_text(L, a->v[k]), k == 1 && hint ? hint : "");
            return false;
        }
    return true;
}

/* ... and have one shape. Broadcasting is not applied: a [N, 1] head
 * against [N] targets is a mistake, not a wish. */
static bool loss_pair(Lower *L, const Args *a, const char *what0, const char *what1, const char *hint) {
    if (!loss_reals(L, a, what0, what1, hint)) return false;
    if (!type_equal(type_of(L, a->v[0]), type_of(L, a->v[1]))) {
        diag_error(L->d, a->call_span, "%s: %s %s and %s %s must have the same shape", a->callee, what0,
                   type_text(L, a->v[0]), what1, type_text(L, a->v[1]));
        return false;
    }
    return true;
}

/* Loss nodes are named "loss", whatever statement they are part of. */
static Value loss1(Lower *L, Op op, Value x, Span span) {
    return x.kind == V_ERROR ? x : emit1(L, op, x.node, span, "loss");
}

static Value loss2(Lower *L, Op op, Value x, Value y, Span span) {
    return x.kind == V_ERROR || y.kind == V_ERROR ? value_error : emit2(L, op, x.node, y.node, span, "loss");
}

/* sum or mean of x over all its axes */
static Value reduce_all(Lower *L, Op op, Value x, Span span) {
    if (x.kind == V_ERROR) return x;
    unsigned all = (1u << type_of(L, x)->rank) - 1;
    return emit(L, op, 1, (int32_t[]){x.node}, (double[]){all, 0}, span, "loss");
}

/* x divided by the size of the first (batch) axis of `like` */
static Value per_example(Lower *L, Value x, Value like, Span span) {
    Value rows = emit(L, OP_SIZE, 1, (int32_t[]){like.node}, (double[]){1}, span, "loss");
    return loss2(L, OP_DIV, x, rows, span);
}

/* cross_entropy(logits, labels): mean over the batch of -log softmax(logits)[label]
 * for class labels i32[N]; for targets f32[N, C] (one-hot or probabilities),
 * mean over the batch of -sum_c t_c log_softmax(logits)_c, log_softmax being
 * computed in the log-sum-exp form. */
static Value build_cross_entropy(Lower *L, const Expr *call, Args *a) {
    Value z = a->v[0], t = a->v[1];
    if (type_of(L, t)->dtype == DT_I32) return emit2(L, OP_CROSS_ENTROPY, z.node, t.node, call->span, "loss");
    if (!loss_reals(L, a, "logits", "targets", NULL)) return value_error;
    if (type_of(L, z)->rank != 2) {
        diag_error(L->d, a->span[0], "cross_entropy expects logits of shape [N, classes], got %s",
                   type_text(L, z));
        return value_error;
    }
    if (!type_equal(type_of(L, z), type_of(L, t))) {
        diag_error(L->d, a->span[1],
                   "cross_entropy: targets %s do not fit logits %s: give class labels i32[N], or targets of the "
                   "logits' shape (one-hot or probabilities)",
                   type_text(L, t), type_text(L, z));
        return value_error;
    }
    Value terms = loss2(L, OP_MUL, t, loss1(L, OP_LOG_SOFTMAX, z, call->span), call->span);
    Value total = reduce_all(L, OP_SUM, terms, call->span);
    return per_example(L, loss1(L, OP_NEG, total, call->span), z, call->span);
}

/* (pred - target)^2, elementwise */
static Value squared_difference(Lower *L, const Args *a, Span span) {
    return loss1(L, OP_SQUARE, loss2(L, OP_SUB, a->v[0], a->v[1], span), span);
}

/* mse(pred, target): mean over all elements of (pred - target)^2. */
static Value build_mse(Lower *L, const Expr *call, Args *a) {
    if (!loss_pair(L, a, "prediction", "target", NULL)) return value_error;
    return reduce_all(L, OP_MEAN, squared_difference(L, a, call->span), call->span);
}

/* rmse(pred, target) = sqrt(mse(pred, target)) */
static Value build_rmse(Lower *L, const Expr *call, Args *a) {
    return loss1(L, OP_SQRT, build_mse(L, call, a), call->span);
}

/* squared_error(pred, target): 1/2 sum over the elements of each example of
 * (pred - target)^2, mean over the batch (the first axis). */
static Value build_squared_error(Lower *L, const Expr *call, Args *a) {
    if (!loss_pair(L, a, "prediction", "target", NULL)) return value_error;
    if (type_of(L, a->v[0])->rank < 1) {
        diag_error(L->d, a->span[0], "squared_error expects values with a batch axis, [N, ...], got %s",
                   type_text(L, a->v[0]));
        return value_error;
    }
    Value total = reduce_all(L, OP_SUM, squared_difference(L, a, call->span), call->span);
    Value half = loss2(L, OP_MUL, total, constant(L, 0.5, call->span), call->span);
    return per_example(L, half, a->v[0], call->span);
}

/* binary_cross_entropy(logits, targets), also sigmoid_cross_entropy: mean over
 * all elements of -t ln sigmoid(z) - (1 - t) ln(1 - sigmoid(z)), computed as
 * max(z, 0) - t z + log1p(e^-|z|). */
static Value build_binary_cross_entropy(Lower *L, const Expr *call, Args *a) {
    if (!loss_pair(L, a, "logits", "targets", "; make targets from class labels with multi_hot"))
        return value_error;
    return reduce_all(L, OP_MEAN, loss2(L, OP_LOGISTIC_LOSS, a->v[0], a->v[1], call->span), call->span);
}

/* Weston-Watkins: mean over the batch of sum_{j != y} max(0, margin + s_j - s_y). */
static Value multiclass_hinge(Lower *L, const Expr *call, Args *a) {
    Value s = a->v[0], y = a->v[1];
    const IrType *ts = type_of(L, s), *ty = type_of(L, y);
    Span sp = call->span;
    if (ts->dtype != DT_F32 || ts->rank != 2) {
        diag_error(L->d, a->span[0], "hinge with class labels expects scores f32[N, classes], got %s",
                   type_text(L, s));
        return value_error;
    }
    if (ty->rank != 1 || ty->dim[0] != ts->dim[0]) {
        diag_error(L->d, a->span[1], "hinge: scores %s need one class label per row, i32[%s], got %s",
                   type_text(L, s), ts->dim[0] == IR_BATCH ? "N" : "rows", type_text(L, y));
        return value_error;
    }
    Value onehot = emit(L, OP_ONEHOT, 1, (int32_t[]){y.node}, (double[]){(double)ts->dim[1]}, sp, "loss");
    Value picked = loss2(L, OP_MUL, s, onehot, sp);
    if (picked.kind == V_ERROR) return picked;
    Value sy = emit(L, OP_SUM, 1, (int32_t[]){picked.node}, (double[]){2, 1}, sp, "loss"); /* [N, 1] */
    Value diff = loss2(L, OP_SUB, loss2(L, OP_ADD, s, constant(L, a->num[2], sp), sp), sy, sp);
    Value others = loss2(L, OP_SUB, constant(L, 1, sp), onehot, sp);
    Value terms = loss2(L, OP_MUL, loss1(L, OP_RELU, diff, sp), others, sp);
    return per_example(L, reduce_all(L, OP_SUM, terms, sp), s, sp);
}

/* hinge(scores, targets, margin=1): with targets f32 in {-1, +1} of the
 * scores' shape, mean over all elements of max(0, margin - t s); with class
 * labels i32[N], the multi-class hinge above. */
static Value build_hinge(Lower *L, const Expr *call, Args *a) {
    if (!(a->num[2] >= 0)) {
        diag_error(L->d, a->span[2], "hinge: the margin must be at least 0");
        return value_error;
    }
    if (type_of(L, a->v[1])->dtype == DT_I32) return multiclass_hinge(L, call, a);
    if (!loss_pair(L, a, "scores", "targets", NULL)) return value_error;
    Span sp = call->span;
    Value ts = loss2(L, OP_MUL, a->v[1], a->v[0], sp);
    Value terms = loss1(L, OP_RELU, loss2(L, OP_SUB, constant(L, a->num[2], sp), ts, sp), sp);
    return reduce_all(L, OP_MEAN, terms, sp);
}

enum { MULTI_HOT_CLASSES = 52 }; /* a set's bitmask stays exact in a double */

/* The bitmask of one set of class ids, each in [0, limit). */
static bool class_set(Lower *L, const Expr *set, int64_t limit, const char *limit_text, double *mask) {
    if (set->kind != EX_LIST || set->nargs == 0) {
        diag_error(L->d, set->span, "multi_hot: each set is a non-empty list of class ids, as in [5, 7, 9]");
        return false;
    }
    uint64_t bits = 0;
    for (int i = 0; i < set->nargs; i++) {
        const Expr *item = set->args[i].value;
        double v;
        bool is_int;
        if (!number_arg(L, item, &v, &is_int) || !is_int) {
            diag_error(L->d, item->span, "multi_hot: a class id must be an integer");
            return false;
        }
        if (v < 0 || v >= (double)limit) {
            diag_error(L->d, item->span, "multi_hot: class %.0f is out of range: %s", v, limit_text);
            return false;
        }
        bits |= (uint64_t)1 << (int)v;
    }
    *mask = (double)bits;
    return true;
}

/* multi_hot(labels, [[5, 7, 9], [0, 2, 4, 6]]): f32[N, K], column k 1 where
 * the label is in set k. At most IR_MAX_ATTRS sets (one attribute each). */
static Value build_multi_hot(Lower *L, const Expr *call, Args *a) {
    Value y = a->v[0];
    const IrType *t = type_of(L, y);
    if (t->dtype != DT_I32 || t->rank != 1) {
        diag_error(L->d, a->span[0], "multi_hot expects class labels i32[N], got %s", type_text(L, y));
        return value_error;
    }
    const Expr *sets = a->expr[1];
    if (sets->nargs == 0 || sets->args[0].value->kind != EX_LIST) {
        diag_error(L->d, sets->span,
                   "multi_hot expects a list of sets of class ids, as in [[5, 7, 9], [0, 2]]");
        return value_error;
    }
    if (sets->nargs > IR_MAX_ATTRS) {
        diag_error(L->d, sets->span, "multi_hot takes at most %d sets, got %d", IR_MAX_ATTRS, sets->nargs);
        return value_error;
    }
    const Node *labels = &L->g->nodes[y.node];
    int64_t classes = labels->op == OP_INPUT ? (int64_t)labels->attr[0] : 0, limit = MULTI_HOT_CLASSES;
    const char *limit_text = "class ids go from 0 to 51";
    if (classes > 0 && classes <= MULTI_HOT_CLASSES) {
        limit = classes;
        limit_text = arena_printf(L->a, "'%s' has %lld classes, 0 to %lld", labels->name, (long long)classes,
                                  (long long)classes - 1);
    }
    double masks[IR_MAX_ATTRS] = {0};
    for (int k = 0; k < sets->nargs; k++)
        if (!class_set(L, sets->args[k].value, limit, limit_text, &masks[k])) return value_error;
    return emit(L, OP_MULTI_HOT, 1, (int32_t[]){y.node}, masks, call->span, L->stmt_name);
}

/* identity(x), linear(x): x itself (the activation that does nothing). */
static Value build_identity(Lower *L, const Expr *call, Args *a) {
    (void)L;
    (void)call;
    return a->v[0];
}

/* accuracy(scores, labels): the fraction of examples whose best score is at the label. */
static Value build_accuracy(Lower *L, const Expr *call, Args *a) {
    return emit2(L, OP_ACCURACY, a->v[0].node, a->v[1].node, call->span, L->stmt_name);
}

/* binary_accuracy(probs, targets, threshold=0.5) */
static Value build_binary_accuracy(Lower *L, const Expr *call, Args *a) {
    return emit(L, OP_BINARY_ACCURACY, 2, (int32_t[]){a->v[0].node, a->v[1].node}, (double[]){a->num[2]},
                call->span, L->stmt_name);
}

/* ---- convolution and pooling ------------------------------------------------------------------- */

/* "5" for the same size on both axes, "[5, 3]" otherwise. */
static const char *pair_text(Lower *L, const int64_t *p) {
    if (p[0] == p[1]) return arena_printf(L->a, "%lld", (long long)p[0]);
    return arena_printf(L->a, "[%lld, %lld]", (long long)p[0], (long long)p[1]);
}

/* The first argument must be a batch of images [N, C, H, W]. */
static bool nchw_input(Lower *L, const Args *a, const char *layer) {
    const IrType *t = type_of(L, a->v[0]);
    bool ok = t->rank == 4 && t->dtype == DT_F32;
    for (int i = 1; ok && i < 4; i++) ok = t->dim[i] != IR_BATCH;
    if (ok) return true;
    diag_error(L->d, a->span[0], "%s expects a [N, C, H, W] input, got %s", layer, type_text(L, a->v[0]));
    return false;
}

/* Argument k, a pair, is at least `lo` on both axes. */
static bool pair_at_least(Lower *L, const Args *a, int k, int64_t lo) {
    if (a->pair[k][0] >= lo && a->pair[k][1] >= lo) return true;
    if (lo == 0) diag_error(L->d, a->span[k], "%s: %s must not be negative", a->callee, a->spec[k].name);
    else diag_error(L->d, a->span[k], "%s: %s must be at least %lld", a->callee, a->spec[k].name, (long long)lo);
    return false;
}

/* A view of `v` with another shape of as many elements. */
static Value reshape(Lower *L, Value v, IrType t, Span span, const char *name) {
    int id = graph_add(L->g, OP_RESHAPE, 1, (int32_t[]){v.node}, NULL, span);
    L->g->nodes[id].type = t;
    L->g->nodes[id].name = name;
    if (!shape_infer(L->g, id, L->d)) return value_error;
    return (Value){.kind = V_TENSOR, .node = id};
}

/* conv2d(x, filters, kernel=3, stride=1, pad=0, act=none, init=he_normal, bias=true):
 * x [N, C, H, W] -> [N, filters, Ho, Wo], Ho = (H + 2 pad - kernel) / stride + 1;
 * W : [filters, C, kh, kw], b : [filters] (zeros), added to every pixel. */
static Value build_conv2d(Lower *L, const Expr *call, Args *a) {
    if (!nchw_input(L, a, "conv2d")) return value_error;
    if (a->num[1] < 1) {
        diag_error(L->d, a->span[1], "conv2d: filters must be at least 1");
        return value_error;
    }
    if (!pair_at_least(L, a, 2, 1) || !pair_at_least(L, a, 3, 1) || !pair_at_least(L, a, 4, 0))
        return value_error;
    Value x = a->v[0];
    const IrType t = *type_of(L, x);
    const int64_t *k = a->pair[2], *s = a->pair[3], *p = a->pair[4];
    if (t.dim[2] + 2 * p[0] < k[0] || t.dim[3] + 2 * p[1] < k[1]) {
        diag_error(L->d, a->span[2], "conv2d: kernel %s with padding %s does not fit a %lldx%lld input",
                   pair_text(L, k), pair_text(L, p), (long long)t.dim[2], (long long)t.dim[3]);
        return value_error;
    }
    const char *name = layer_name(L, call, "conv2d");
    int64_t filters = (int64_t)a->num[1];
    InitSpec init = a->init[6];
    if (!init.given) init = (InitSpec){INIT_HE_NORMAL, 0, true};
    IrType wt = type_tensor(DT_F32, 4, (int64_t[]){filters, t.dim[1], k[0], k[1]});
    Value w = make_param(L, arena_printf(L->a, "%s.W", name), wt, init, call->span);
    if (w.kind == V_ERROR) return w;
    double attr[] = {(double)s[0], (double)s[1], (double)p[0], (double)p[1]};
    Value y = emit(L, OP_CONV2D, 2, (int32_t[]){x.node, w.node}, attr, call->span, name);
    if (y.kind != V_ERROR && a->num[7] != 0) {
        Value b = make_param(L, arena_printf(L->a, "%s.b", name), type_tensor(DT_F32, 1, &filters),
                             (InitSpec){INIT_ZEROS, 0, true}, call->span);
        if (b.kind == V_ERROR) return b;
        /* [F] as [F, 1, 1]: broadcast over the pixels of each channel */
        b = reshape(L, b, type_tensor(DT_F32, 3, (int64_t[]){filters, 1, 1}), call->span, name);
        if (b.kind == V_ERROR) return b;
        y = emit2(L, OP_ADD, y.node, b.node, call->span, name);
    }
    return apply_act(L, y, a->num[5], call->span, name);
}

/* maxpool / avgpool(x, window, stride=window): the largest value / the mean
 * of each window, on each channel; no padding. */
static Value build_pool(Lower *L, const Expr *call, Args *a, Op op) {
    if (!nchw_input(L, a, a->callee)) return value_error;
    if (!a->given[2]) memcpy(a->pair[2], a->pair[1], sizeof a->pair[1]);
    if (!pair_at_least(L, a, 1, 1) || !pair_at_least(L, a, 2, 1)) return value_error;
    const IrType *t = type_of(L, a->v[0]);
    const int64_t *k = a->pair[1], *s = a->pair[2];
    if (t->dim[2] < k[0] || t->dim[3] < k[1]) {
        diag_error(L->d, a->span[1], "%s window %s does not fit a %lldx%lld input", a->callee, pair_text(L, k),
                   (long long)t->dim[2], (long long)t->dim[3]);
        return value_error;
    }
    double attr[] = {(double)k[0], (double)k[1], (double)s[0], (double)s[1]};
    return emit(L, op, 1, (int32_t[]){a->v[0].node}, attr, call->span, L->stmt_name);
}

static Value build_maxpool(Lower *L, const Expr *call, Args *a) { return build_pool(L, call, a, OP_MAXPOOL2D); }
static Value build_avgpool(Lower *L, const Expr *call, Args *a) { return build_pool(L, call, a, OP_AVGPOOL2D); }

/* ---- dropout ------------------------------------------------------------------------------------ */

/* The hyper-parameter scalar `name` of the state, made on first use: rng.seed
 * (the init program's seed) and opt.step (the optimizer pass counts steps in
 * it) give dropout masks that change every step and can be drawn again. */
static Value state_scalar(Lower *L, const char *name, InitKind init, Span span) {
    int id = graph_find_leaf(L->g, OP_PARAM, name);
    if (id >= 0 && !(L->g->nodes[id].flags & NF_HYPER)) {
        diag_error(L->d, span, "dropout keeps its state in '%s', but a parameter of that name is declared",
                   name);
        return value_error;
    }
    if (id < 0) {
        id = graph_add(L->g, OP_PARAM, 0, NULL, (double[]){init, 0, 0, 0}, span);
        Node *n = &L->g->nodes[id];
        n->name = name;
        n->type = type_scalar(DT_F32);
        n->flags = NF_HYPER;
    }
    return (Value){.kind = V_TENSOR, .node = id};
}

/* dropout(x, rate): in training, each element kept with probability 1 - rate
 * and scaled by 1 / (1 - rate), else 0; at inference, x. */
static Value build_dropout(Lower *L, const Expr *call, Args *a) {
    double rate = a->num[1];
    if (!(rate >= 0 && rate < 1)) {
        diag_error(L->d, a->span[1], "dropout rate must be in [0, 1), got %g", rate);
        return value_error;
    }
    int stream = 0;
    for (int i = 0; i < L->g->n; i++) stream += L->g->nodes[i].op == OP_DROPOUT;
    if (stream >= IR_DROPOUT_STREAMS) {
        diag_error(L->d, call->span, "a model has at most %d dropout layers", IR_DROPOUT_STREAMS);
        return value_error;
    }
    Value seed = state_scalar(L, "rng.seed", INIT_SEED, call->span);
    Value step = state_scalar(L, "opt.step", INIT_ZEROS, call->span);
    if (seed.kind == V_ERROR || step.kind == V_ERROR) return value_error;
    return emit(L, OP_DROPOUT, 3, (int32_t[]){a->v[0].node, seed.node, step.node}, (double[]){rate, stream},
                call->span, L->stmt_name);
}

#define T(n) {n, A_TENSOR, true, 0}
static const Builtin builtins[] = {
    {"dense", {T("x"), {"units", A_INT, true, 0}, {"act", A_ACT, false, 0}, {"init", A_INIT, false, 0},
               {"bias", A_BOOL, false, 1}}, build_dense},
    {"flatten", {T("x")}, build_flatten},
    {"sum", {T("x"), {"axis", A_AXIS, false, ALL_AXES}, {"keepdims", A_BOOL, false, 0}}, build_sum},
    {"mean", {T("x"), {"axis", A_AXIS, false, ALL_AXES}, {"keepdims", A_BOOL, false, 0}}, build_mean},
    {"matmul", {T("a"), T("b"), {"transpose_a", A_BOOL, false, 0}, {"transpose_b", A_BOOL, false, 0}},
     build_matmul},
    {"cross_entropy", {T("logits"), T("labels")}, build_cross_entropy},
    {"mse", {T("pred"), T("target")}, build_mse},
    {"accuracy", {T("scores"), T("labels")}, build_accuracy},
    {"binary_accuracy", {T("probs"), T("targets"), {"threshold", A_REAL, false, 0.5}}, build_binary_accuracy},
    {"conv2d", {T("x"), {"filters", A_INT, true, 0}, {"kernel", A_PAIR, false, 3}, {"stride", A_PAIR, false, 1},
                {"pad", A_PAIR, false, 0}, {"act", A_ACT, false, 0}, {"init", A_INIT, false, 0},
                {"bias", A_BOOL, false, 1}}, build_conv2d},
    {"maxpool", {T("x"), {"window", A_PAIR, true, 0}, {"stride", A_PAIR, false, 1}}, build_maxpool},
    {"avgpool", {T("x"), {"window", A_PAIR, true, 0}, {"stride", A_PAIR, false, 1}}, build_avgpool},
    {"dropout", {T("x"), {"rate", A_REAL, true, 0}}, build_dropout},
    {"rmse", {T("pred"), T("target")}, build_rmse},
    {"squared_error", {T("pred"), T("target")}, build_squared_error},
    {"binary_cross_entropy", {T("logits"), T("targets")}, build_binary_cross_entropy},
    {"sigmoid_cross_entropy", {T("logits"), T("targets")}, build_binary_cross_entropy},
    {"hinge", {T("scores"), T("targets"), {"margin", A_REAL, false, 1}}, build_hinge},
    {"multi_hot", {T("labels"), {"sets", A_LIST, true, 0}}, build_multi_hot},
    {"identity", {T("x")}, build_identity},
    {"linear", {T("x")}, build_identity},
};
#undef T
enum { NBUILTINS = sizeof builtins / sizeof builtins[0] };

const char *const *frontend_builtin_names(void) {
    static const char *names[NBUILTINS + OP_COUNT + 1];
    if (!names[0]) {
        int n = 0;
        for (int i = 0; i < NBUILTINS; i++) names[n++] = builtins[i].name;
        for (int i = 0; i < OP_COUNT; i++)
            if (op_info((Op)i)->flags & OPF_PUBLIC) names[n++] = op_info((Op)i)->name;
        names[n] = NULL;
    }
    return names;
}

/* A public op of ops.def, called as name(inputs..., attr=value...). */
static Value call_op(Lower *L, const Expr *call, Op op) {
    const OpInfo *info = op_info(op);
    ParamSpec spec[MAX_PARAMS + 1] = {{0}};
    int n = 0;
    static const char *const input_names[] = {"x", "y", "z", "w"};
    for (int i = 0; i < info->arity; i++) spec[n++] = (ParamSpec){input_names[i], A_TENSOR, true, 0};
    for (int i = 0; i < info->nattrs; i++)
        spec[n++] = (ParamSpec){info->attr_names[i], A_REAL, info->attr_required[i], info->attr_defaults[i]};
    Args a;
    if (!bind_args(L, call, spec, &a)) return value_error;
    int32_t in[IR_MAX_INPUTS];
    double attr[IR_MAX_ATTRS];
    for (int i = 0; i < info->arity; i++) in[i] = a.v[i].node;
    for (int i = 0; i < info->nattrs; i++) attr[i] = a.num[info->arity + i];
    return emit(L, op, info->arity, in, attr, call->span, L->stmt_name);
}

static void exec_block(Lower *L, Stmt *const *stmts, int n, Value *ret, bool in_def);

/* Expands a def: a new scope with the parameters bound, its statements
 * run, the value of its `return`. */
static Value call_def(Lower *L, const Expr *call, const Stmt *def) {
    if (L->depth >= 32) {
        diag_error(L->d, call->span, "calls of '%s' nest too deeply (recursion is not supported)", def->name);
        return value_error;
    }
    Value args[64];
    int npos = 0;
    bool given[64] = {0};
    bool ok = true;
    for (int i = 0; i < call->nargs && i < 64; i++) {
        const Arg *a = &call->args[i];
        int k = -1;
        if (!a->name) {
            k = npos++;
            if (k >= def->nparams) {
                diag_error(L->d, a->value->span, "%s takes %d argument%s", def->name, def->nparams,
                           def->nparams == 1 ? "" : "s");
                ok = false;
                continue;
            }
        } else {
            for (int j = 0; j < def->nparams; j++)
                if (strcmp(def->params[j], a->name) == 0) k = j;
            if (k < 0) {
                const char *near = closest_name(a->name, def->params, def->nparams);
                if (near)
                    diag_error(L->d, a->name_span, "%s has no parameter '%s'; did you mean '%s'?", def->name,
                               a->name, near);
                else
                    diag_error(L->d, a->name_span, "%s has no parameter '%s'", def->name, a->name);
                ok = false;
                continue;
            }
            if (given[k]) {
                diag_error(L->d, a->name_span, "%s: argument '%s' given twice", def->name, a->name);
                ok = false;
                continue;
            }
        }
        given[k] = true;
        args[k] = eval(L, a->value);
        if (args[k].kind == V_ERROR) ok = false;
    }
    for (int j = 0; j < def->nparams && j < 64; j++)
        if (!given[j]) {
            diag_error(L->d, call->span, "%s needs argument '%s'", def->name, def->params[j]);
            ok = false;
        }
    if (!ok) return value_error;

    Scope *scope = ARENA_NEW(L->a, Scope);
    scope->parent = &L->globals;
    scope->prefix = layer_name(L, call, def->name);
    Scope *saved_scope = L->scope;
    const Expr *saved_root = L->stmt_root;
    const char *saved_name = L->stmt_name;
    L->scope = scope;
    for (int j = 0; j < def->nparams; j++) bind(L, def->params[j], def->param_spans[j], args[j], NULL);
    L->depth++;
    Value ret = {.kind = V_ERROR};
    bool returned = false;
    exec_block(L, def->body, def->nbody, &ret, true);
    for (int i = 0; i < def->nbody; i++) returned |= def->body[i]->kind == ST_RETURN;
    L->depth--;
    L->scope = saved_scope;
    L->stmt_root = saved_root;
    L->stmt_name = saved_name;
    if (!returned) {
        diag_error(L->d, def->span, "def '%s' has no return statement", def->name);
        return value_error;
    }
    return ret;
}

static Value eval_call(Lower *L, const Expr *e) {
    Binding *b = lookup(L, e->text);
    if (b && b->def) return call_def(L, e, b->def);
    if (b) {
        diag_error(L->d, e->name_span, "'%s' is a value, not a function", e->text);
        return value_error;
    }
    for (int i = 0; i < NBUILTINS; i++) {
        if (strcmp(builtins[i].name, e->text) != 0) continue;
        Args a;
        if (!bind_args(L, e, builtins[i].params, &a)) return value_error;
        return builtins[i].build(L, e, &a);
    }
    Op op = op_lookup(e->text);
    if (op != OP_COUNT && (op_info(op)->flags & OPF_PUBLIC)) return call_op(L, e, op);

    /* Unknown: suggest from every callable name. */
    const char *const *names = frontend_builtin_names();
    int n = 0;
    while (names[n]) n++;
    const char **cands = ARENA_ARRAY(L->a, const char *, n + L->globals.n + 1);
    memcpy(cands, names, sizeof(char *) * (size_t)n);
    for (int i = 0; i < L->globals.n; i++)
        if (L->globals.items[i].def) cands[n++] = L->globals.items[i].name;
    suggest(L, e->name_span, "function", e->text, cands, n);
    return value_error;
}

static Value eval_binary(Lower *L, const Expr *e) {
    Value l = eval(L, e->lhs), r = eval(L, e->rhs);
    if (l.kind == V_ERROR || r.kind == V_ERROR) return value_error;
    if (l.kind == V_NUMBER && r.kind == V_NUMBER && e->op != '@') {
        /* Fold arithmetic on literals, so `2 * 0.5` is a number again. */
        double v = e->op == '+' ? l.num + r.num : e->op == '-' ? l.num - r.num
                 : e->op == '*' ? l.num * r.num : l.num / r.num;
        bool is_int = l.is_int && r.is_int && e->op != '/';
        return (Value){.kind = V_NUMBER, .num = v, .is_int = is_int};
    }
    l = as_tensor(L, l, e->lhs->span, "an operand");
    r = as_tensor(L, r, e->rhs->span, "an operand");
    if (l.kind == V_ERROR || r.kind == V_ERROR) return value_error;
    Op op = e->op == '+' ? OP_ADD : e->op == '-' ? OP_SUB : e->op == '*' ? OP_MUL : e->op == '/' ? OP_DIV : OP_MATMUL;
    return emit2(L, op, l.node, r.node, e->span, L->stmt_name);
}

static Value eval(Lower *L, const Expr *e) {
    switch (e->kind) {
    case EX_NUMBER: return (Value){.kind = V_NUMBER, .num = e->number, .is_int = e->is_int};
    case EX_STRING: return (Value){.kind = V_STRING, .str = e->text};
    case EX_NAME: {
        Binding *b = lookup(L, e->text);
        if (b && !b->def) return b->value;
        if (b) {
            diag_error(L->d, e->span, "'%s' is a def; call it with arguments", e->text);
            return value_error;
        }
        /* Suggest from the names in scope. */
        const char *cands[256];
        int n = 0;
        for (Scope *s = L->scope; s; s = s->parent)
            for (int i = 0; i < s->n && n < 256; i++) cands[n++] = s->items[i].name;
        const char *near = closest_name(e->text, cands, n);
        Op op = op_lookup(e->text);
        if (op != OP_COUNT && (op_info(op)->flags & OPF_PUBLIC))
            diag_error(L->d, e->span, "'%s' is a function; call it, as in %s(x)", e->text, e->text);
        else if (near)
            diag_error(L->d, e->span, "unknown name '%s'; did you mean '%s'?", e->text, near);
        else
            diag_error(L->d, e->span, "unknown name '%s'", e->text);
        /* Remember it as an error so it is reported once. */
        bind(L, e->text, e->span, value_error, NULL);
        return value_error;
    }
    case EX_CALL: return eval_call(L, e);
    case EX_BINARY: return eval_binary(L, e);
    case EX_LIST:
        diag_error(L->d, e->span, "a list can only be an argument (as in classes=[7, 9])");
        return value_error;
    case EX_NEG: {
        Value v = eval(L, e->lhs);
        if (v.kind == V_NUMBER) return (Value){.kind = V_NUMBER, .num = -v.num, .is_int = v.is_int};
        v = as_tensor(L, v, e->span, "the operand of '-'");
        if (v.kind == V_ERROR) return v;
        return emit1(L, OP_NEG, v.node, e->span, L->stmt_name);
    }
    }
    return value_error;
}

/* ---- declarations ------------------------------------------------------------------------------ */

static bool is_identifier(const char *s) {
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* Resolves a TypeAst. Inputs and targets must have N first; params must not
 * mention N at all. */
static bool resolve_type(Lower *L, const Stmt *s, bool batch_first, IrType *out) {
    const TypeAst *t = s->type;
    DType dt;
    if (strcmp(t->dtype, "f32") == 0) dt = DT_F32;
    else if (strcmp(t->dtype, "i32") == 0) dt = DT_I32;
    else {
        static const char *const cands[] = {"f32", "i32"};
        const char *near = closest_name(t->dtype, cands, 2);
        diag_error(L->d, t->dtype_span, "unknown element type '%s'%s%s%s", t->dtype, near ? "; did you mean '" : "",
                   near ? near : "", near ? "'?" : " (f32 and i32 are supported)");
        return false;
    }
    if (t->ndims > IR_MAX_RANK) {
        diag_error(L->d, t->span, "tensors have at most %d dimensions, this one has %d", IR_MAX_RANK, t->ndims);
        return false;
    }
    *out = (IrType){.dtype = dt, .rank = t->ndims};
    for (int i = 0; i < t->ndims; i++) {
        const DimAst *dm = &t->dims[i];
        if (dm->symbol) {
            if (strcmp(dm->symbol, "N") != 0) {
                diag_error(L->d, dm->span, "unknown dimension '%s'; only N (the batch size) is symbolic", dm->symbol);
                return false;
            }
            if (!batch_first || i != 0) {
                diag_error(L->d, dm->span, batch_first ? "N must be the first dimension"
                                                        : "parameters cannot depend on the batch size N");
                return false;
            }
            out->dim[i] = IR_BATCH;
        } else {
            if (dm->size < 1 || dm->size > MAX_DIM) {
                diag_error(L->d, dm->span, dm->size < 1 ? "a dimension must be a positive size, got %lld"
                                                        : "dimension %lld is too large (at most 2^30)",
                           (long long)dm->size);
                return false;
            }
            out->dim[i] = dm->size;
        }
    }
    if (batch_first && (t->ndims == 0 || out->dim[0] != IR_BATCH)) {
        diag_error(L->d, t->span, "%s '%s' needs the batch dimension first, as in %s[N, ...]",
                   s->kind == ST_TARGET ? "target" : "input", s->name, t->dtype);
        return false;
    }
    return true;
}

/* Reports an option that a statement does not take. */
static void unknown_option(Lower *L, const Arg *o, const char *stmt, const char *const *known, int nknown) {
    const char *near = closest_name(o->name, known, nknown);
    if (near) diag_error(L->d, o->name_span, "%s has no option '%s'; did you mean '%s'?", stmt, o->name, near);
    else if (nknown) diag_error(L->d, o->name_span, "%s has no option '%s'", stmt, o->name);
    else diag_error(L->d, o->name_span, "%s takes no options", stmt);
}

static bool option_int(Lower *L, const Arg *o, int64_t lo, int64_t *out) {
    double v;
    bool is_int;
    if (!literal_number(o->value, &v, &is_int) || !is_int || v < (double)lo || v > 1e12) {
        diag_error(L->d, o->value->span, "%s must be an integer of at least %lld", o->name, (long long)lo);
        return false;
    }
    *out = (int64_t)v;
    return true;
}

static void exec_input(Lower *L, const Stmt *s) {
    bool target = s->kind == ST_TARGET;
    IrType t;
    bool ok = resolve_type(L, s, true, &t);
    double classes = 0;
    static const char *const target_opts[] = {"classes"};
    for (int i = 0; i < s->nopts; i++) {
        const Arg *o = &s->opts[i];
        if (target && strcmp(o->name, "classes") == 0) {
            int64_t c;
            if (!option_int(L, o, 2, &c)) ok = false;
            else if (t.dtype != DT_I32) {
                diag_error(L->d, o->name_span, "classes applies to class-label targets (i32), not %s", s->type->dtype);
                ok = false;
            } else classes = (double)c;
        } else {
            unknown_option(L, o, target ? "target" : "input", target_opts, target ? 1 : 0);
            ok = false;
        }
    }
    if (!ok) {
        bind(L, s->name, s->name_span, value_error, NULL);
        return;
    }
    if (!size_fits(L, &t, s->span)) {
        bind(L, s->name, s->name_span, value_error, NULL);
        return;
    }
    int id = graph_add(L->g, OP_INPUT, 0, NULL, (double[]){classes}, s->name_span);
    Node *n = &L->g->nodes[id];
    n->name = s->name;
    n->type = t;
    if (target) n->flags |= NF_TARGET;
    bind(L, s->name, s->name_span, (Value){.kind = V_TENSOR, .node = id}, NULL);
}

static void exec_param(Lower *L, const Stmt *s) {
    IrType t;
    bool ok = resolve_type(L, s, false, &t);
    if (ok && t.dtype != DT_F32) {
        diag_error(L->d, s->type->dtype_span, "parameters hold real numbers (f32)");
        ok = false;
    }
    InitSpec init = {0};
    static const char *const opts[] = {"init"};
    for (int i = 0; i < s->nopts; i++) {
        if (strcmp(s->opts[i].name, "init") == 0) ok &= parse_init(L, s->opts[i].value, &init);
        else {
            unknown_option(L, &s->opts[i], "param", opts, 1);
            ok = false;
        }
    }
    Value v = ok ? make_param(L, s->name, t, init, s->name_span) : value_error;
    bind(L, s->name, s->name_span, v, NULL);
}

/* schedule cosine | cosine(min_lr=1e-5) | step(every=2, gamma=0.5) | exponential(gamma=0.9) */
static void parse_schedule(Lower *L, const Expr *e, TrainSpec *ts) {
    static const ParamSpec none[] = {{0}};
    static const ParamSpec step[] = {{"every", A_REAL, false, 1}, {"gamma", A_REAL, false, 0.1}, {0}};
    static const ParamSpec exponential[] = {{"gamma", A_REAL, false, 0.9}, {0}};
    static const ParamSpec cosine[] = {{"min_lr", A_REAL, false, 0}, {0}};
    static const ParamSpec *const specs[SCHED_COUNT] = {none, step, exponential, cosine};
    if (e->kind != EX_NAME && e->kind != EX_CALL) {
        diag_error(L->d, e->span, "schedule expects a name, as in 'schedule cosine'");
        return;
    }
    int k;
    for (k = 0; k < SCHED_COUNT; k++)
        if (strcmp(e->text, schedule_names[k]) == 0) break;
    if (k == SCHED_COUNT) {
        suggest(L, e->kind == EX_CALL ? e->name_span : e->span, "schedule", e->text, schedule_names, SCHED_COUNT);
        return;
    }
    Expr bare = *e;
    if (e->kind == EX_NAME) bare.nargs = 0;
    Args a;
    if (!bind_args(L, &bare, specs[k], &a)) return;
    ts->schedule = (ScheduleKind)k;
    if (k == SCHED_STEP) ts->every = a.num[0], ts->gamma = a.num[1];
    if (k == SCHED_EXPONENTIAL) ts->gamma = a.num[0];
    if (k == SCHED_COSINE) ts->min_lr = a.num[0];
    if ((k == SCHED_STEP && !(ts->every > 0)) || ((k == SCHED_STEP || k == SCHED_EXPONENTIAL) && !(ts->gamma > 0)))
        diag_error(L->d, e->span, "%s: every and gamma must be positive", e->text);
}

/* The arguments of each optimizer, indexed by OptimizerKind. The defaults
 * are torch.optim's (sgd's lr aside, which PyTorch requires). */
#define REAL(name, v) {name, A_REAL, false, v}
#define NESTEROV {"nesterov", A_BOOL, false, 0}
#define BETAS_EPS REAL("beta1", 0.9), REAL("beta2", 0.999), REAL("eps", 1e-8)
static const ParamSpec optimizer_params[OPT_COUNT][MAX_PARAMS] = {
    [OPT_SGD] = {REAL("lr", 0.01), REAL("momentum", 0), REAL("weight_decay", 0), NESTEROV},
    [OPT_MOMENTUM] = {REAL("lr", 0.01), REAL("momentum", 0.9), REAL("weight_decay", 0), NESTEROV},
    [OPT_ADAGRAD] = {REAL("lr", 0.01), REAL("eps", 1e-10), REAL("weight_decay", 0)},
    [OPT_RMSPROP] = {REAL("lr", 0.01), REAL("rho", 0.99), REAL("eps", 1e-8), REAL("weight_decay", 0)},
    [OPT_ADAM] = {REAL("lr", 1e-3), BETAS_EPS, REAL("weight_decay", 0)},
    [OPT_ADAMW] = {REAL("lr", 1e-3), BETAS_EPS, REAL("weight_decay", 0.01)},
};
#undef REAL
#undef NESTEROV
#undef BETAS_EPS

/* The value of the optimizer's argument `name` into *out, if it has one;
 * returns its index, or -1. */
static int optimizer_arg(const Args *a, const char *name, double *out) {
    for (int k = 0; k < a->n; k++)
        if (strcmp(a->spec[k].name, name) == 0) {
            *out = a->num[k];
            return k;
        }
    return -1;
}

/* Reports a hyper-parameter outside its range: positive for lr and eps,
 * [0, 1) for momentum, rho and the betas, at least 0 for the weight decay. */
static void check_hypers(Lower *L, const Args *a) {
    static const char *const unit[] = {"momentum", "rho", "beta1", "beta2"};
    double v;
    int k;
    if ((k = optimizer_arg(a, "lr", &v)) >= 0 && !(v > 0))
        diag_error(L->d, a->span[k], "%s: 'lr' (the learning rate) must be positive, not %g", a->callee, v);
    for (size_t i = 0; i < sizeof unit / sizeof unit[0]; i++)
        if ((k = optimizer_arg(a, unit[i], &v)) >= 0 && !(v >= 0 && v < 1))
            diag_error(L->d, a->span[k], "%s: '%s' must be in [0, 1), not %g", a->callee, unit[i], v);
    if ((k = optimizer_arg(a, "eps", &v)) >= 0 && !(v > 0))
        diag_error(L->d, a->span[k], "%s: 'eps' must be positive, not %g", a->callee, v);
    if ((k = optimizer_arg(a, "weight_decay", &v)) >= 0 && !(v >= 0))
        diag_error(L->d, a->span[k], "%s: 'weight_decay' must not be negative, not %g", a->callee, v);
}

/* A train option that takes a positive number (clip_norm 1.0). */
static bool option_positive(Lower *L, const Arg *o, double *out) {
    double v;
    bool is_int;
    if (!literal_number(o->value, &v, &is_int) || !(v > 0)) {
        diag_error(L->d, o->value->span, "%s must be a positive number", o->name);
        return false;
    }
    *out = v;
    return true;
}

/* train sgd(lr=0.1, momentum=0.9) batch 64 epochs 5 schedule cosine clip_norm 1 */
static void exec_train(Lower *L, const Stmt *s) {
    if (L->have_train) {
        diag_error(L->d, s->span, "a model has one train statement");
        return;
    }
    L->have_train = true;
    TrainSpec *ts = &L->m->train_spec;
    ts->span = s->span;
    const Expr *opt = s->value;
    const char *name = opt->text;
    if (opt->kind != EX_NAME && opt->kind != EX_CALL) {
        diag_error(L->d, opt->span, "train expects an optimizer, as in train sgd(lr=0.1)");
        return;
    }
    int kind;
    for (kind = 0; kind < OPT_COUNT; kind++)
        if (strcmp(name, optimizer_names[kind]) == 0) break;
    if (kind == OPT_COUNT) {
        suggest(L, opt->kind == EX_CALL ? opt->name_span : opt->span, "optimizer", name, optimizer_names, OPT_COUNT);
        return;
    }
    Args a;
    Expr bare = *opt;
    if (opt->kind == EX_NAME) bare.nargs = 0;
    if (bind_args(L, &bare, optimizer_params[kind], &a)) {
        ts->optimizer = (OptimizerKind)kind;
        optimizer_arg(&a, "lr", &ts->lr);
        optimizer_arg(&a, "momentum", &ts->momentum);
        optimizer_arg(&a, "beta1", &ts->beta1);
        optimizer_arg(&a, "beta2", &ts->beta2);
        optimizer_arg(&a, "eps", &ts->eps);
        optimizer_arg(&a, "rho", &ts->rho);
        optimizer_arg(&a, "weight_decay", &ts->weight_decay);
        double nesterov = 0;
        int k = optimizer_arg(&a, "nesterov", &nesterov);
        ts->nesterov = nesterov != 0;
        /* sgd with a momentum is the momentum optimizer. */
        if (kind == OPT_SGD && ts->momentum != 0) ts->optimizer = OPT_MOMENTUM;
        check_hypers(L, &a);
        if (ts->nesterov && ts->momentum == 0)
            diag_error(L->d, a.span[k], "%s: nesterov needs a momentum, as in %s(lr=0.1, momentum=0.9, "
                       "nesterov=true)", name, name);
    }

    static const char *const known[] = {"batch", "epochs", "schedule", "clip_norm"};
    for (int i = 0; i < s->nopts; i++) {
        const Arg *o = &s->opts[i];
        if (strcmp(o->name, "batch") == 0) option_int(L, o, 1, &ts->batch);
        else if (strcmp(o->name, "epochs") == 0) option_int(L, o, 1, &ts->epochs);
        else if (strcmp(o->name, "schedule") == 0) parse_schedule(L, o->value, ts);
        else if (strcmp(o->name, "clip_norm") == 0) option_positive(L, o, &ts->clip_norm);
        else unknown_option(L, o, "train", known, 4);
    }
}

/* augment=[flip, shift(2), crop(pad=2)]: crop pads by `pad` and crops back
 * at a random offset, which is a random shift of up to `pad` pixels. */
static bool parse_augment(Lower *L, const Expr *list, DataSpec *ds) {
    static const char *const names[] = {"flip", "shift", "crop"};
    for (int i = 0; i < list->nargs; i++) {
        const Expr *e = list->args[i].value;
        if ((e->kind != EX_NAME && e->kind != EX_CALL) ||
            (strcmp(e->text, "flip") != 0 && strcmp(e->text, "shift") != 0 && strcmp(e->text, "crop") != 0)) {
            if (e->kind == EX_NAME || e->kind == EX_CALL) suggest(L, e->span, "augmentation", e->text, names, 3);
            else diag_error(L->d, e->span, "augment expects flip, shift(PIXELS) or crop(pad=PIXELS)");
            return false;
        }
        if (strcmp(e->text, "flip") == 0) {
            if (e->kind == EX_CALL) {
                diag_error(L->d, e->span, "flip takes no arguments");
                return false;
            }
            ds->augment |= AUG_FLIP;
            continue;
        }
        static const ParamSpec shift[] = {{"pixels", A_INT, true, 0}, {0}};
        static const ParamSpec crop[] = {{"pad", A_INT, true, 0}, {0}};
        Expr bare = *e;
        if (e->kind == EX_NAME) bare.nargs = 0;
        Args a;
        if (!bind_args(L, &bare, strcmp(e->text, "shift") == 0 ? shift : crop, &a)) return false;
        if (a.num[0] < 1 || a.num[0] > 8) {
            diag_error(L->d, a.span[0], "%s: between 1 and 8 pixels", e->text);
            return false;
        }
        ds->augment |= AUG_SHIFT;
        ds->shift = (int)a.num[0];
    }
    return true;
}

/* data fashion_mnist(classes=[7, 9], augment=[flip, shift(2)])
 * data idx("DIR", classes=..., augment=...)
 * data csv("FILE", header=true, test=0.2) */
static void exec_data(Lower *L, const Stmt *s) {
    if (L->have_data) {
        diag_error(L->d, s->span, "a model has one data statement");
        return;
    }
    L->have_data = true;
    static const char *const kinds[] = {"fashion_mnist", "idx", "csv"};
    static const ParamSpec fashion[] = {{"classes", A_LIST, false, 0}, {"augment", A_LIST, false, 0}, {0}};
    static const ParamSpec idx[] = {{"path", A_STRING, true, 0}, {"classes", A_LIST, false, 0},
                                    {"augment", A_LIST, false, 0}, {0}};
    static const ParamSpec csv[] = {{"path", A_STRING, true, 0}, {"header", A_BOOL, false, 1},
                                    {"test", A_REAL, false, 0.2}, {0}};
    const Expr *e = s->value;
    if (e->kind != EX_NAME && e->kind != EX_CALL) {
        diag_error(L->d, e->span, "data expects a source: fashion_mnist, idx(\"DIR\") or csv(\"FILE\")");
        return;
    }
    DataSpec *ds = &L->m->data;
    int k;
    for (k = 0; k < 3; k++)
        if (strcmp(e->text, kinds[k]) == 0) break;
    if (k == 3) {
        suggest(L, e->kind == EX_CALL ? e->name_span : e->span, "data source", e->text, kinds, 3);
        return;
    }
    const ParamSpec *specs[] = {fashion, idx, csv};
    Expr bare = *e;
    if (e->kind == EX_NAME) bare.nargs = 0;
    Args a;
    if (!bind_args(L, &bare, specs[k], &a)) return;
    ds->kind = (DataKind)k;
    ds->span = s->span;
    if (k == DATA_CSV) {
        ds->path = a.expr[0]->text;
        ds->header = a.num[1] != 0;
        ds->test_fraction = a.num[2];
        if (!(ds->test_fraction >= 0 && ds->test_fraction <= 0.9))
            diag_error(L->d, a.span[2], "csv: test is the fraction of rows held out, in [0, 0.9]");
        return;
    }
    if (k == DATA_IDX) ds->path = a.expr[0]->text;
    int first = k == DATA_IDX ? 1 : 0;
    if (a.given[first]) {
        int n;
        if (!int_list(L, a.expr[first], "classes", 0, 255, ds->classes, 64, &n)) return;
        ds->nclasses = n;
        if (n < 2) diag_error(L->d, a.span[first], "classes: a subset needs at least two classes");
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
                if (ds->classes[i] == ds->classes[j])
                    diag_error(L->d, a.span[first], "classes: %lld is listed twice", (long long)ds->classes[i]);
    }
    if (a.given[first + 1]) parse_augment(L, a.expr[first + 1], ds);
}

/* Marks `v` as an output named `name`; a value that is already an output or
 * a leaf is copied first so each output is a value of its own. */
static void mark_output(Lower *L, Value v, const char *name, Span span) {
    if (v.kind != V_TENSOR) {
        if (v.kind == V_NUMBER) diag_error(L->d, span, "an output must be a tensor, not a number");
        return;
    }
    Node *n = &L->g->nodes[v.node];
    if ((n->flags & NF_OUTPUT) || (op_info(n->op)->flags & OPF_LEAF)) {
        int id = graph_add(L->g, OP_RESHAPE, 1, (int32_t[]){v.node}, NULL, span);
        L->g->nodes[id].type = n->type;
        shape_infer(L->g, id, L->d);
        v.node = id;
        n = &L->g->nodes[id];
    }
    if (n->type.dtype != DT_F32) {
        diag_error(L->d, span, "an output must hold real numbers (f32)");
        return;
    }
    n->flags |= NF_OUTPUT;
    n->name = name;
}

/* metric NAME = expr: a scalar the eval function reports (accuracy, ...). */
static void exec_metric(Lower *L, const Stmt *s) {
    L->stmt_name = s->name;
    L->stmt_root = s->value;
    Value v = as_tensor(L, eval(L, s->value), s->value->span, "a metric");
    if (v.kind == V_TENSOR && type_of(L, v)->rank != 0) {
        diag_error(L->d, s->value->span, "a metric must be a scalar, but this is %s; reduce it with mean()",
                   type_text(L, v));
        v = value_error;
    }
    if (v.kind == V_TENSOR) {
        Node *n = &L->g->nodes[v.node];
        if (n->flags & (NF_OUTPUT | NF_METRIC | NF_LOSS) || (op_info(n->op)->flags & OPF_LEAF)) {
            int id = graph_add(L->g, OP_RESHAPE, 1, (int32_t[]){v.node}, NULL, s->span);
            L->g->nodes[id].type = n->type;
            shape_infer(L->g, id, L->d);
            v.node = id;
            n = &L->g->nodes[id];
        }
        n->flags |= NF_METRIC;
        n->name = s->name;
    }
    bind(L, s->name, s->name_span, v, NULL);
}

/* The params a name of a freeze or pretrained statement means: the param of
 * that name, or every param of the layer (prefix "name."). */
static int mark_params(Lower *L, const char *name, uint32_t flag) {
    size_t n = strlen(name);
    int count = 0;
    for (int i = 0; i < L->g->n; i++) {
        Node *p = &L->g->nodes[i];
        if (p->op != OP_PARAM || !p->name) continue;
        if (strcmp(p->name, name) == 0 || (strncmp(p->name, name, n) == 0 && p->name[n] == '.')) {
            p->flags |= flag;
            count++;
        }
    }
    return count;
}

/* freeze and pretrained statements name params that may be defined after
 * them; they are resolved once every statement has run. */
static void resolve_name_lists(Lower *L) {
    for (int k = 0; k < L->nname_lists; k++) {
        const Stmt *s = L->name_lists[k];
        bool freeze = s->kind == ST_FREEZE;
        for (int i = 0; i < s->nparams; i++) {
            if (mark_params(L, s->params[i], freeze ? NF_FROZEN : 0) > 0) continue;
            /* candidates: every param, and every layer (a param's name up to its last dot) */
            const char **names = ARENA_ARRAY(L->a, const char *, 2 * L->g->n + 1);
            int n = 0;
            for (int j = 0; j < L->g->n; j++) {
                const char *pname = L->g->nodes[j].name;
                if (L->g->nodes[j].op != OP_PARAM) continue;
                names[n++] = pname;
                const char *dot = strrchr(pname, '.');
                if (dot) names[n++] = arena_strndup(L->a, pname, (size_t)(dot - pname));
            }
            const char *near = closest_name(s->params[i], names, n);
            if (near)
                diag_error(L->d, s->param_spans[i], "no parameter or layer '%s'; did you mean '%s'?", s->params[i],
                           near);
            else
                diag_error(L->d, s->param_spans[i], "no parameter or layer '%s'", s->params[i]);
        }
        if (!freeze) {
            Pretrained p = {.path = s->value->text, .names = s->params, .nnames = s->nparams, .span = s->span};
            VEC_PUSH(L->a, L->m->pretrained, L->m->npretrained, L->m->pretrained_cap, p);
        }
    }
}

static void exec_loss(Lower *L, const Stmt *s) {
    L->stmt_name = "loss";
    L->stmt_root = s->value;
    Value v = as_tensor(L, eval(L, s->value), s->value->span, "the loss");
    if (v.kind == V_ERROR) return;
    if (type_of(L, v)->rank != 0) {
        diag_error(L->d, s->value->span, "the loss must be a scalar, but this is %s; reduce it with mean() or sum()",
                   type_text(L, v));
        return;
    }
    /* Several loss statements add up (multi-task training). */
    for (int i = 0; i < L->g->n; i++)
        if (L->g->nodes[i].flags & NF_LOSS) {
            L->g->nodes[i].flags &= ~NF_LOSS;
            v = emit2(L, OP_ADD, i, v.node, s->span, "loss");
            if (v.kind == V_ERROR) return;
            break;
        }
    L->g->nodes[v.node].flags |= NF_LOSS;
}

static void exec_stmt(Lower *L, const Stmt *s, Value *ret, bool in_def) {
    L->stmt_root = NULL;
    L->stmt_name = NULL;
    static const char *const kinds[] = {"model", "input", "target", "param", "assignment", "output",   "loss",
                                        "train", "def",   "return", "data",   "metric",    "freeze", "pretrained"};
    if (in_def && s->kind != ST_LET && s->kind != ST_RETURN) {
        diag_error(L->d, s->span, "'%s' is not allowed inside a def (only assignments and return)", kinds[s->kind]);
        return;
    }
    switch (s->kind) {
    case ST_MODEL:
        if (L->have_model) {
            diag_error(L->d, s->span, "the model is already named '%s'", L->m->name);
        } else if (!is_identifier(s->name)) {
            diag_error(L->d, s->name_span, "a model name must be a C identifier (letters, digits, _)");
        } else {
            L->m->name = s->name;
            L->have_model = true;
            L->model_span = s->span;
        }
        break;
    case ST_INPUT:
    case ST_TARGET: exec_input(L, s); break;
    case ST_PARAM: exec_param(L, s); break;
    case ST_LET:
    case ST_OUTPUT: {
        if (strchr(s->name, '.')) {
            diag_error(L->d, s->name_span, "'%s': dotted names belong to parameters; choose a plain name", s->name);
            return;
        }
        if (!s->value) { /* output NAME */
            Binding *b = lookup(L, s->name);
            if (!b || b->def) diag_error(L->d, s->name_span, "unknown name '%s'", s->name);
            else mark_output(L, b->value, s->name, s->name_span);
            return;
        }
        L->stmt_name = L->scope->prefix ? arena_printf(L->a, "%s.%s", L->scope->prefix, s->name) : s->name;
        L->stmt_root = s->value;
        Value v = eval(L, s->value);
        if (v.kind == V_TENSOR && !(op_info(L->g->nodes[v.node].op)->flags & OPF_LEAF) &&
            !L->g->nodes[v.node].name)
            L->g->nodes[v.node].name = L->stmt_name;
        if (s->kind == ST_OUTPUT) mark_output(L, v, s->name, s->name_span);
        bind(L, s->name, s->name_span, v, NULL);
        break;
    }
    case ST_LOSS: exec_loss(L, s); break;
    case ST_DATA: exec_data(L, s); break;
    case ST_METRIC: exec_metric(L, s); break;
    case ST_FREEZE:
    case ST_PRETRAINED: VEC_PUSH(L->a, L->name_lists, L->nname_lists, L->name_lists_cap, s); break;
    case ST_TRAIN: exec_train(L, s); break;
    case ST_DEF:
        if (lookup(L, s->name) == NULL) {
            const char *const *names = frontend_builtin_names();
            for (int i = 0; names[i]; i++)
                if (strcmp(names[i], s->name) == 0)
                    diag_error(L->d, s->name_span, "'%s' is a built-in function; choose another name", s->name);
        }
        bind(L, s->name, s->name_span, value_error, s);
        break;
    case ST_RETURN:
        if (!in_def) {
            diag_error(L->d, s->span, "return outside a def");
            return;
        }
        L->stmt_root = s->value;
        L->stmt_name = L->scope->prefix;
        *ret = eval(L, s->value);
        break;
    }
}

static void exec_block(Lower *L, Stmt *const *stmts, int n, Value *ret, bool in_def) {
    for (int i = 0; i < n; i++) {
        exec_stmt(L, stmts[i], ret, in_def);
        if (in_def && stmts[i]->kind == ST_RETURN) {
            if (i + 1 < n) diag_error(L->d, stmts[i + 1]->span, "statement after return is never run");
            break;
        }
    }
}

bool lower_program(Module *m, const Program *prog, Diag *d) {
    Lower L = {.m = m, .g = m->model, .a = m->arena, .d = d};
    L.scope = &L.globals;
    int errors_before = d->nerrors;
    exec_block(&L, prog->stmts, prog->nstmts, NULL, false);
    resolve_name_lists(&L);

    bool has_output = false;
    for (int i = 0; i < L.g->n; i++) has_output |= (L.g->nodes[i].flags & NF_OUTPUT) != 0;
    if (!has_output && d->nerrors == errors_before)
        diag_error(d, SPAN_NONE, "the model has no output; mark one with 'output NAME = ...'");
    return d->nerrors == errors_before;
}
