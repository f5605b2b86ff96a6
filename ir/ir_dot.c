/* ir_dot.c - the Graph IR as a Graphviz picture (`nnc FILE.nn --emit-dot`).
 *
 * One digraph holds each function given as a cluster of its own. Nodes
 * are labelled with their op and the .nn name they compute; inputs,
 * params, optimizer state and constants have shapes and colours of their
 * own; the loss, outputs and metrics have a double border. Every edge
 * carries the type of the value it moves. In a function with a loss, the
 * nodes the loss depends on (the forward pass) are white, the gradient
 * and update computations shaded, and assignments to the state green.
 * Nodes computed by one kernel (passes/fuse.c's plan, given as `kernel_of`) are
 * drawn inside a cluster of their own. */
#include "ir/ir.h"
#include "support/util.h"

#include <stdlib.h>
#include <string.h>

/* A double-quoted DOT string. */
static void put_quoted(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', out);
        if (*s == '\n') fputs("\\n", out);
        else fputc(*s, out);
    }
    fputc('"', out);
}

static void node_label(const Graph *g, const Node *n, char *buf, size_t size) {
    const char *op = op_info(n->op)->name;
    /* an assignment is named by the state it writes */
    if (n->op == OP_ASSIGN && !n->name && g->nodes[n->in[0]].name) {
        snprintf(buf, size, "%s\n%s", op, g->nodes[n->in[0]].name);
        return;
    }
    if (n->op == OP_CONST) snprintf(buf, size, "%g", n->attr[0]);
    else if (n->op == OP_INPUT) snprintf(buf, size, "%s\n%s", n->flags & NF_TARGET ? "target" : "input", n->name);
    else if (n->name && (n->flags & NF_GRAD)) snprintf(buf, size, "%s\ngrad %s", op, n->name);
    else if (n->name) snprintf(buf, size, "%s\n%s", op, n->name);
    else snprintf(buf, size, "%s", op);
}

static void node_style(FILE *out, const Node *n, bool backward) {
    if (n->op == OP_INPUT) fputs(" shape=invhouse style=filled fillcolor=\"#c6dbef\"", out);
    else if (n->op == OP_PARAM && (n->flags & (NF_OPT_STATE | NF_HYPER)))
        fputs(" shape=box style=\"filled,rounded\" fillcolor=\"#e0e0e0\"", out);
    else if (n->op == OP_PARAM)
        fprintf(out, " shape=box style=\"filled,rounded\" fillcolor=\"%s\"", n->flags & NF_FROZEN ? "#d9d9d9" : "#fdd0a2");
    else if (n->op == OP_CONST || n->op == OP_SIZE) fputs(" shape=plaintext fontsize=10", out);
    else if (n->op == OP_ASSIGN) fputs(" style=filled fillcolor=\"#c7e9c0\"", out);
    else if (backward) fputs(" style=filled fillcolor=\"#fef0e1\"", out);
    if (n->flags & (NF_OUTPUT | NF_LOSS | NF_METRIC)) fputs(" peripheries=2", out);
}

static void print_node(FILE *out, const Graph *g, char prefix, int i, bool backward) {
    char label[256];
    node_label(g, &g->nodes[i], label, sizeof label);
    fprintf(out, "    %c%d [label=", prefix, i);
    put_quoted(out, label);
    node_style(out, &g->nodes[i], backward);
    fputs("];\n", out);
}

/* One function as `subgraph cluster_<prefix>`, its fused kernels nested. */
static void print_function(FILE *out, const Graph *g, char prefix, const char *title, const int *kernel_of) {
    /* What the loss depends on is the forward pass; without a loss, all is. */
    bool *forward = xcalloc((size_t)g->n + 1, sizeof(bool));
    bool has_loss = false;
    for (int i = g->n - 1; i >= 0; i--) {
        if (g->nodes[i].flags & NF_LOSS) forward[i] = has_loss = true;
        if (forward[i])
            for (int k = 0; k < g->nodes[i].nin; k++) forward[g->nodes[i].in[k]] = true;
    }
    fprintf(out, "  subgraph cluster_%c {\n    label=", prefix);
    put_quoted(out, title);
    fputs(" fontsize=16 style=dashed color=\"#888888\";\n", out);

    /* members of each kernel that computes more than one node */
    int *members = xcalloc((size_t)g->n + 1, sizeof(int));
    for (int i = 0; i < g->n; i++)
        if (kernel_of && kernel_of[i] >= 0) members[kernel_of[i]]++;
    for (int k = 0; k < g->n; k++) {
        if (members[k] < 2) continue;
        bool update = g->nodes[k].op == OP_ASSIGN;
        fprintf(out, "   subgraph cluster_%c_fused_%d {\n    label=\"%s (%d ops)\" style=\"rounded,filled\" "
                     "fillcolor=\"%s\" color=\"#6a51a3\" fontcolor=\"#6a51a3\";\n",
                prefix, k, update ? "one update loop" : "fused kernel", members[k], update ? "#f2f0f7" : "#efedf5");
        for (int i = 0; i < g->n; i++)
            if (kernel_of[i] == k) print_node(out, g, prefix, i, has_loss && !forward[i]);
        fputs("   }\n", out);
    }
    for (int i = 0; i < g->n; i++)
        if (!kernel_of || kernel_of[i] < 0 || members[kernel_of[i]] < 2)
            print_node(out, g, prefix, i, has_loss && !forward[i]);
    for (int i = 0; i < g->n; i++) {
        const Node *n = &g->nodes[i];
        for (int k = 0; k < n->nin; k++) {
            char tb[TYPE_STR_MAX];
            fprintf(out, "    %c%d -> %c%d [label=\"%s\"];\n", prefix, n->in[k], prefix, i,
                    type_str(&g->nodes[n->in[k]].type, tb, sizeof tb));
        }
    }
    fputs("  }\n", out);
    free(members);
    free(forward);
}

void module_print_dot(FILE *out, const Module *m, const Graph *const *graphs, const char *const *titles,
                      const int *const *kernel_of, int n) {
    fputs("digraph ", out);
    put_quoted(out, m->name);
    fputs(" {\n  graph [fontname=\"Helvetica\" rankdir=TB newrank=true];\n"
          "  node [fontname=\"Helvetica\" fontsize=11];\n"
          "  edge [fontname=\"Helvetica\" fontsize=9 fontcolor=\"#555555\"];\n  label=",
          out);
    put_quoted(out, m->name);
    fputs(" labelloc=t fontsize=20;\n", out);
    for (int k = 0; k < n && k < 26; k++) print_function(out, graphs[k], (char)('a' + k), titles[k], kernel_of[k]);
    fputs("}\n", out);
}
