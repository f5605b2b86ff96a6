/* util.h - allocation that cannot fail silently, internal-error reporting,
 * and a growable string buffer. */
#ifndef NNC_UTIL_H
#define NNC_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* An internal compiler error: a bug in nnc, never the user's fault. */
_Noreturn void nnc_internal_error(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define NNC_BUG(...) nnc_internal_error(__FILE__, __LINE__, __VA_ARGS__)
#define NNC_ASSERT(cond) \
    ((cond) ? (void)0 : nnc_internal_error(__FILE__, __LINE__, "assertion failed: %s", #cond))

/* A growable, always NUL-terminated heap string. */
typedef struct StrBuf {
    char *data;
    size_t len, cap;
} StrBuf;

void sb_putc(StrBuf *sb, char c);
void sb_puts(StrBuf *sb, const char *s);
void sb_printf(StrBuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_vprintf(StrBuf *sb, const char *fmt, va_list ap);
void sb_free(StrBuf *sb);
char *sb_take(StrBuf *sb); /* hands the heap string to the caller */

/* Reads a whole file; NULL with errno set on failure. *len excludes the NUL. */
char *read_file(const char *path, size_t *len);

/* Writes `len` bytes to `path` through a temporary file and a rename, so a
 * crash never leaves a half-written file behind. Returns 0 or -1 (errno). */
int write_file_atomic(const char *path, const void *data, size_t len);

/* Edit distance, for "did you mean" suggestions. */
int edit_distance(const char *a, const char *b);
/* The candidate closest to `name` if it is close enough to be a likely typo. */
const char *closest_name(const char *name, const char *const *candidates, int n);
/* "; did you mean 'X'?" when closest_name finds X, else "": the tail of an
 * "unknown ..." message. Written into buf, which is returned. */
const char *did_you_mean(const char *name, const char *const *candidates, int n, char *buf, size_t size);
enum { DID_YOU_MEAN_MAX = 96 };

double now_seconds(void); /* monotonic clock */

#endif
