/* error.h - how the runtime reports a failure: a message in the caller's
 * buffer (err may be NULL when errlen is 0) and -1. */
#ifndef NNRT_ERROR_H
#define NNRT_ERROR_H

#include <stddef.h>

int nnrt_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
