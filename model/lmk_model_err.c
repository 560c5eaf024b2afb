/* Private to model/: see lmk_model_err.h. */
#include "lmk_model_err.h"

#include <stdarg.h>
#include <stdio.h>

int lmk_model__err(char *err, size_t cap, int rc, const char *fmt, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return rc;
}
