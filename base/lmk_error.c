#include <string.h>

#include "lmk_error.h"

#include "lmk_export.h"

LMK_API const char *lmk_strerror(int code)
{
    switch (code) {
    case LMK_OK: return "success";
    case LMK_EINVAL: return "invalid argument";
    case LMK_EUNSUPPORTED: return "not supported";
    case LMK_EINDEX: return "index (FAISS) error";
    case LMK_ESTORE: return "storage (LMDB) error";
    case LMK_ECORRUPT: return "data is damaged";
    case LMK_EVERSION: return "unsupported format version";
    case LMK_EMISMATCH: return "session does not match (shape or model fingerprint)";
    case LMK_EBUSY: return "session is in use";
    case LMK_ENOTFOUND: return "not found";
    case LMK_EREADONLY: return "session is read-only";
    case LMK_EMAPFULL: return "storage map is full and could not grow";
    case LMK_ESTATE: return "call not valid in the current state";
    case LMK_EFORMAT: return "not a file of the expected format";
    default:
        if (code > 0)
            return strerror(code);
        return "unknown error";
    }
}
