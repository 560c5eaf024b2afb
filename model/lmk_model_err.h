/* Private to model/: the error message of a failed call, into the caller's buffer. */
#ifndef LMK_MODEL_ERR_H
#define LMK_MODEL_ERR_H

#include <stddef.h>

/* Format the message into err (when err and cap are nonzero) and return rc. */
int lmk_model__err(char *err, size_t cap, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
