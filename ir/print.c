/* print.c - the Graph IR as text.
 *
 * The format is stable (golden tests compare it) and reads top-down:
 *
 *   %4 = matmul %0, %2 {tb=1} : f32[N,10]       # h, line 6
 *
 * Attributes at their default value are left out. Leaves print their name
 * first; flags (output, loss, target, ...) follow the type. */
#include "ir/ir.h"

#include <string.h>

/* Axis sets and multi_hot's sets of classes print as lists ([0, 2]),
 * initialisers by name. */
static int print_attr_value(FILE *out, const OpInfo *info, Op op, int k, double v) {
    if (op == OP_PARAM && k == 0 && v >= 0 && v < INIT_COUNT) return fprintf(out, "%s", init_names[(int)v]);
    if (strcmp(info->attr_names[k], "axes") == 0) {
        unsigned mask = (unsigned)v;
        int n = fprintf(out, "[");
        const char *sep = "";
        for (int i = 0; i < IR_MAX_RANK; i++)
            if (mask & (1u << i)) {
                n += fprintf(out, "%s%d", sep, i);
                sep = ", ";
            }
        return n + fprintf(out, "]");
    }
    if (op == OP_MULTI_HOT) { /* a set of classes, as a bitmask */
        uint64_t mask = (uint64_t)v;
        int n = fprintf(out, "[");
        const char *sep = "";
        for (int i = 0; i < 64; i++)
            if (mask >> i & 1) {
                n += fprintf(out, "%s%d", sep, i);
                sep = ", ";
            }
        return n + fprintf(out, "]");
    }
    return fprintf(out, "%.9g", v);
}

/* Whether attribute k of n is worth printing: not at its default, and for
 * params, fans only where the initialiser uses them. */
static bool attr_shown(const Node *n, const OpInfo *info, int k) {
    if (info->attr_required[k]) return true;
    if (n->attr[k] == info->attr_defaults[k]) return false;
    if (n->op == OP_PARAM && k >= 2) {
        InitKind init = (InitKind)n->attr[0];
        return init >= INIT_XAVIER_UNIFORM && init <= INIT_HE_NORMAL;
    }
    return true;
}

static int print_flags(FILE *out, uint32_t flags) {
    static const struct {
        uint32_t flag;
        const char *name;
    } names[] = {
        {NF_TARGET, "target"}, {NF_OUTPUT, "output"},       {NF_LOSS, "loss"},
        {NF_FROZEN, "frozen"}, {NF_OPT_STATE, "opt_state"}, {NF_HYPER, "hyper"},
        {NF_GRAD, "grad"},       {NF_METRIC, "metric"},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (flags & names[i].flag) n += fprintf(out, " %s", names[i].name);
    return n;
}

static void print_node(FILE *out, const Graph *g, int id, const Source *src) {
    const Node *n = &g->nodes[id];
    const OpInfo *info = op_info(n->op);
    char line[512];
    int len = snprintf(line, sizeof line, "  %%%d = %s", id, info->name);
    bool leaf_named = (n->op == OP_INPUT || n->op == OP_PARAM) && n->name;
    if (leaf_named) len += snprintf(line + len, sizeof line - (size_t)len, " %s", n->name);
    for (int i = 0; i < n->nin; i++)
        len += snprintf(line + len, sizeof line - (size_t)len, "%s%%%d", i ? ", " : " ", n->in[i]);
    fputs(line, out);
    int col = len;

    bool open = false;
    for (int k = 0; k < info->nattrs; k++) {
        if (!attr_shown(n, info, k)) continue;
        col += fprintf(out, "%s%s=", open ? ", " : " {", info->attr_names[k]);
        col += print_attr_value(out, info, n->op, k, n->attr[k]);
        open = true;
    }
    if (open) col += fprintf(out, "}");

    char tb[TYPE_STR_MAX];
    col += fprintf(out, " : %s", type_str(&n->type, tb, sizeof tb));
    col += print_flags(out, n->flags);

    if (!leaf_named && (n->name || span_valid(n->span))) {
        /* Align trailing comments so the graph reads as a table. */
        for (int c = col; c < 52; c++) fputc(' ', out);
        fputs("  #", out);
        if (n->name && !leaf_named) fprintf(out, " %s%s", n->name, span_valid(n->span) ? "," : "");
        if (span_valid(n->span) && src) {
            int l, c;
            source_line_col(src, n->span.begin, &l, &c);
            fprintf(out, " line %d", l);
        }
    }
    fputc('\n', out);
}

static void graph_print_src(FILE *out, const Graph *g, const Source *src) {
    fprintf(out, "func %s {\n", g->name);
    for (int i = 0; i < g->n; i++) print_node(out, g, i, src);
    fprintf(out, "}\n");
}

void graph_print(FILE *out, const Graph *g) { graph_print_src(out, g, NULL); }

void module_print(FILE *out, const Module *m) {
    fprintf(out, "module %s\n", m->name);
    if (m->nslots) {
        fprintf(out, "\nstate {  # %lld floats\n", (long long)m->state_size);
        for (int i = 0; i < m->nslots; i++) {
            const StateSlot *s = &m->slots[i];
            char tb[TYPE_STR_MAX];
            fprintf(out, "  %-24s %-16s @%-8lld %s", s->name, type_str(&s->type, tb, sizeof tb),
                    (long long)s->offset, init_names[s->init]);
            if (s->init == INIT_CONST || s->init == INIT_UNIFORM || s->init == INIT_NORMAL)
                fprintf(out, "(%.9g)", s->init_arg);
            print_flags(out, s->flags);
            fputc('\n', out);
        }
        fprintf(out, "}\n");
    }
    const Graph *graphs[] = {m->forward, m->eval, m->grad, m->train};
    bool any = false;
    for (size_t i = 0; i < sizeof graphs / sizeof graphs[0]; i++) {
        if (!graphs[i]) continue;
        fputc('\n', out);
        graph_print_src(out, graphs[i], m->src);
        any = true;
    }
    if (!any && m->model) {
        fputc('\n', out);
        graph_print_src(out, m->model, m->src);
    }
}
