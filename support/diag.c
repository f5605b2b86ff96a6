/* diag.c - see diag.h. */
#include "diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void diag_init(Diag *d, const Source *src, FILE *out) {
    *d = (Diag){.src = src, .out = out ? out : stderr};
    d->color = (d->out == stderr) && isatty(2) && !getenv("NO_COLOR");
}

void source_line_col(const Source *src, int32_t offset, int *line, int *col) {
    int l = 1, c = 1;
    for (int32_t i = 0; i < offset && i < src->len; i++) {
        if (src->text[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *col = c;
}

/* The source line around `at`, a caret under its first character and
 * tildes under the rest (up to the end of that line). */
static void print_excerpt(Diag *d, Span at) {
    const Source *src = d->src;
    int32_t begin = at.begin > src->len ? src->len : at.begin;
    int32_t ls = begin, le = begin;
    while (ls > 0 && src->text[ls - 1] != '\n') ls--;
    while (le < src->len && src->text[le] != '\n') le++;
    int line, col;
    source_line_col(src, begin, &line, &col);
    fprintf(d->out, "%5d | %.*s\n", line, (int)(le - ls), src->text + ls);
    fprintf(d->out, "      | ");
    for (int32_t i = ls; i < begin; i++) fputc(src->text[i] == '\t' ? '\t' : ' ', d->out);
    if (d->color) fputs("\033[1;32m", d->out);
    fputc('^', d->out);
    int32_t end = at.end > le ? le : at.end;
    for (int32_t i = begin + 1; i < end; i++) fputc('~', d->out);
    if (d->color) fputs("\033[0m", d->out);
    fputc('\n', d->out);
}

static void report(Diag *d, const char *kind, const char *color, Span at, const char *fmt,
                   va_list ap) {
    bool located = d->src && span_valid(at);
    if (d->color) fputs("\033[1m", d->out);
    if (located) {
        int line, col;
        source_line_col(d->src, at.begin, &line, &col);
        fprintf(d->out, "%s:%d:%d: ", d->src->path, line, col);
    } else if (d->src) {
        fprintf(d->out, "%s: ", d->src->path);
    } else {
        fputs("nnc: ", d->out);
    }
    if (d->color) fprintf(d->out, "%s", color);
    fprintf(d->out, "%s: ", kind);
    if (d->color) fputs("\033[0m\033[1m", d->out);
    vfprintf(d->out, fmt, ap);
    if (d->color) fputs("\033[0m", d->out);
    fputc('\n', d->out);
    if (located) print_excerpt(d, at);
}

/* FNV-1a over the location and the formatted message. */
static uint64_t message_key(Span at, const char *fmt, va_list ap) {
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uint32_t)at.begin;
    for (const char *p = buf; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

/* True if this message was reported before (and remembers it if not). */
static bool seen_before(Diag *d, Span at, const char *fmt, va_list ap) {
    uint64_t key = message_key(at, fmt, ap);
    int n = d->nrecent < 32 ? d->nrecent : 32;
    for (int i = 0; i < n; i++)
        if (d->recent[i] == key) return true;
    d->recent[d->nrecent++ % 32] = key;
    return false;
}

void diag_error(Diag *d, Span at, const char *fmt, ...) {
    int limit = d->max_errors ? d->max_errors : 20;
    va_list dup;
    va_start(dup, fmt);
    bool repeat = seen_before(d, at, fmt, dup);
    va_end(dup);
    if (repeat) {
        d->nerrors++; /* still an error, just not printed again */
        return;
    }
    d->nerrors++;
    if (d->nerrors > limit) {
        if (d->nerrors == limit + 1) fprintf(d->out, "nnc: too many errors; stopping here\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    report(d, "error", "\033[31m", at, fmt, ap);
    va_end(ap);
}

void diag_warning(Diag *d, Span at, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report(d, "warning", "\033[35m", at, fmt, ap);
    va_end(ap);
}

void diag_note(Diag *d, Span at, const char *fmt, ...) {
    int limit = d->max_errors ? d->max_errors : 20;
    if (d->nerrors > limit) return;
    va_list ap;
    va_start(ap, fmt);
    report(d, "note", "\033[36m", at, fmt, ap);
    va_end(ap);
}
