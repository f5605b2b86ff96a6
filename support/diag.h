/* diag.h - compiler diagnostics: `file:line:col: error: message`, the source
 * line, and a caret under the offending text.
 *
 * Locations are byte offsets into the source (a Span); line and column are
 * computed only when a message is printed. Errors are counted, not fatal:
 * every stage reports what it can and the driver stops at the end. */
#ifndef NNC_DIAG_H
#define NNC_DIAG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct Source {
    const char *path; /* as the user named it */
    const char *text; /* NUL-terminated */
    int32_t len;
} Source;

/* [begin, end) byte offsets into a Source; begin < 0 means "no location". */
typedef struct Span {
    int32_t begin, end;
} Span;

#define SPAN_NONE ((Span){-1, -1})
static inline bool span_valid(Span s) { return s.begin >= 0; }
static inline Span span_join(Span a, Span b) {
    if (!span_valid(a)) return b;
    if (!span_valid(b)) return a;
    return (Span){a.begin < b.begin ? a.begin : b.begin, a.end > b.end ? a.end : b.end};
}

typedef struct Diag {
    const Source *src; /* may be NULL: messages then carry no location */
    FILE *out;         /* stderr unless redirected (tests, the REPL) */
    int nerrors;
    int max_errors; /* stop printing after this many; 0 = default (20) */
    bool color;
    /* Recent messages, so the same error at the same place (a def expanded
     * twice) is reported once. */
    uint64_t recent[32];
    int nrecent;
} Diag;

void diag_init(Diag *d, const Source *src, FILE *out);
void diag_error(Diag *d, Span at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_warning(Diag *d, Span at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_note(Diag *d, Span at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* 1-based line and column of a byte offset. */
void source_line_col(const Source *src, int32_t offset, int *line, int *col);

#endif
