/* edit.c - applying a statement typed at the REPL's prompt to the model's
 * source text. The text is split into statements the way the lexer ends
 * them (a newline or `;` outside brackets; `#` comments left where they
 * are), each statement keyed by what it defines; a typed statement replaces
 * the one with its key, or is inserted after the statements it depends on,
 * so that `h2 = dense(h, 32)` lands after `h` and a later `logits =
 * dense(h2, 10)` can use it in place. */
#include "cli/repl/repl.h"
#include "support/util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef struct Stmt {
    size_t begin, end; /* [begin, end): without a comment or trailing blanks */
} Stmt;

static bool ident_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == '.'; }

/* The next word (identifier or single punctuation) at or after *p in [.., end). */
static size_t next_word(const char *s, size_t *p, size_t end, char *out, size_t size) {
    while (*p < end && isspace((unsigned char)s[*p])) (*p)++;
    size_t b = *p;
    if (*p < end && ident_char(s[*p]))
        while (*p < end && ident_char(s[*p])) (*p)++;
    else if (*p < end) (*p)++;
    size_t n = *p - b < size - 1 ? *p - b : size - 1;
    memcpy(out, s + b, n);
    out[n] = 0;
    return n;
}

void statement_key(const char *stmt, size_t len, char *key, size_t size) {
    char w1[128], w2[128], w3[128];
    size_t p = 0;
    key[0] = 0;
    next_word(stmt, &p, len, w1, sizeof w1);
    next_word(stmt, &p, len, w2, sizeof w2);
    next_word(stmt, &p, len, w3, sizeof w3);
    if (!strcmp(w1, "model") || !strcmp(w1, "train") || !strcmp(w1, "data")) snprintf(key, size, "%s", w1);
    else if (!strcmp(w1, "input") || !strcmp(w1, "target") || !strcmp(w1, "param") || !strcmp(w1, "def"))
        snprintf(key, size, "%s", w2);
    else if (!strcmp(w1, "output") || !strcmp(w1, "metric")) {
        if (!strcmp(w3, "=")) snprintf(key, size, "%s", w2);
    } else if (!strcmp(w2, "=") && ident_char(w1[0])) snprintf(key, size, "%s", w1);
}

/* Splits text into statements; returns how many (into a heap array). */
static int split(const char *s, Stmt **out) {
    int n = 0, cap = 16;
    Stmt *v = xmalloc(sizeof(Stmt) * (size_t)cap);
    size_t i = 0, len = strlen(s);
    while (i < len) {
        while (i < len && (isspace((unsigned char)s[i]) || s[i] == ';')) i++;
        if (i >= len) break;
        if (s[i] == '#') {
            while (i < len && s[i] != '\n') i++;
            continue;
        }
        size_t b = i, last = i;
        int depth = 0;
        while (i < len) {
            char c = s[i];
            if (c == '"') {
                for (i++; i < len && s[i] != '"' && s[i] != '\n'; i++)
                    if (s[i] == '\\' && i + 1 < len) i++;
                last = ++i;
                continue;
            }
            if (c == '#') {
                while (i < len && s[i] != '\n') i++;
                continue;
            }
            if ((c == '\n' || c == ';') && depth <= 0) break;
            if (c == '(' || c == '[' || c == '{') depth++;
            if (c == ')' || c == ']' || c == '}') depth--;
            if (!isspace((unsigned char)c)) last = i + 1;
            i++;
        }
        if (n == cap) v = xrealloc(v, sizeof(Stmt) * (size_t)(cap *= 2));
        v[n++] = (Stmt){b, last};
    }
    *out = v;
    return n;
}

bool statement_complete(const char *text) {
    int depth = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '#') {
            while (*p && *p != '\n') p++;
            if (!*p) break;
        } else if (*p == '"') {
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1]) p++;
            if (!*p) break;
        } else if (*p == '(' || *p == '[' || *p == '{') depth++;
        else if (*p == ')' || *p == ']' || *p == '}') depth--;
    }
    return depth <= 0;
}

/* Whether identifier `name` occurs as a whole word in [s, s+len). */
static bool uses(const char *s, size_t len, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i + n <= len; i++)
        if (!strncmp(s + i, name, n) && (i == 0 || !ident_char(s[i - 1])) && (i + n == len || !ident_char(s[i + n])))
            return true;
    return false;
}

static char *splice(const char *text, size_t at, size_t cut_end, const char *before, const char *stmt,
                    const char *after) {
    StrBuf sb = {0};
    sb_printf(&sb, "%.*s%s%s%s%s", (int)at, text, before, stmt, after, text + cut_end);
    return sb_take(&sb);
}

static char *apply_one(const char *text, const char *stmt, bool *replaced) {
    char key[128], k2[128];
    statement_key(stmt, strlen(stmt), key, sizeof key);
    Stmt *v;
    int n = split(text, &v);
    char *result = NULL;
    *replaced = false;
    int after = -1;
    for (int i = 0; i < n && key[0]; i++) {
        statement_key(text + v[i].begin, v[i].end - v[i].begin, k2, sizeof k2);
        if (strcmp(key, k2) != 0) continue;
        /* `probs = ...` typed for `output probs = ...` stays an output */
        const char *prefix = "";
        if (!strncmp(text + v[i].begin, "output ", 7) && strncmp(stmt, "output ", 7) != 0) prefix = "output ";
        if (!strncmp(text + v[i].begin, "metric ", 7) && strncmp(stmt, "metric ", 7) != 0) prefix = "metric ";
        result = splice(text, v[i].begin, v[i].end, prefix, stmt, "");
        *replaced = true;
        goto done;
    }
    /* a `model` statement goes first; others after what they use */
    if (!strcmp(key, "model")) {
        result = splice(text, 0, 0, "", stmt, "\n");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        statement_key(text + v[i].begin, v[i].end - v[i].begin, k2, sizeof k2);
        if (k2[0] && strcmp(k2, "train") && strcmp(k2, "data") && strcmp(k2, "model") && uses(stmt, strlen(stmt), k2))
            after = i;
    }
    if (after >= 0) {
        /* after the line's comment, which belongs to the statement it follows */
        const char *eol = strchr(text + v[after].end, '\n');
        size_t at = eol ? (size_t)(eol - text) : strlen(text);
        result = splice(text, at, at, "\n", stmt, "");
    }
    else {
        size_t len = strlen(text);
        result = splice(text, len, len, len && text[len - 1] != '\n' ? "\n" : "", stmt, "\n");
    }
done:
    free(v);
    return result;
}

char *source_apply(const char *text, const char *stmts, bool *replaced) {
    /* `h2 = dense(h, 32); logits = dense(h2, 10)`: one edit, applied in order */
    Stmt *v;
    int n = split(stmts, &v);
    char *result = xstrdup(text);
    *replaced = false;
    for (int i = 0; i < n; i++) {
        char *one = xmalloc(v[i].end - v[i].begin + 1), *next;
        memcpy(one, stmts + v[i].begin, v[i].end - v[i].begin);
        one[v[i].end - v[i].begin] = 0;
        bool r;
        next = apply_one(result, one, &r);
        *replaced |= r;
        free(one);
        free(result);
        result = next;
    }
    free(v);
    return result;
}
