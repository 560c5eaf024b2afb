/* landmark — status codes shared by every module.
 *
 * Every public function of liblandmark that can fail returns an int status:
 *   LMK_OK (0)      success;
 *   > 0             an errno value passed through unchanged (ENOMEM, ENOSPC, EIO, ...);
 *   LMK_E* (< 0)    one of the project's own codes below, all in [-1099, -1000].
 * A detailed, human-readable message is kept on the handle that failed
 * (lmk_session_errmsg(), lmk_store_errmsg(), lmk_index_errmsg()).
 */
#ifndef LMK_ERROR_H
#define LMK_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
    LMK_OK = 0,
    LMK_EINVAL = -1001,      /* an argument or option is out of range or inconsistent */
    LMK_EUNSUPPORTED = -1002,/* valid request the build or backend cannot do (e.g. index spec) */
    LMK_EINDEX = -1003,      /* the FAISS backend failed; message copied from FAISS */
    LMK_ESTORE = -1004,      /* the LMDB backend failed; message copied from LMDB */
    LMK_ECORRUPT = -1005,    /* stored data failed a check: checksum, length, magic, range */
    LMK_EVERSION = -1006,    /* a file written by another format version */
    LMK_EMISMATCH = -1007,   /* session shape/fingerprint differs from what the caller asked */
    LMK_EBUSY = -1008,       /* the session is open for writing elsewhere */
    LMK_ENOTFOUND = -1009,   /* no such session, key or object */
    LMK_EREADONLY = -1010,   /* write requested on a read-only handle */
    LMK_EMAPFULL = -1011,    /* the LMDB map could not be grown far enough */
    LMK_ESTATE = -1012,      /* call not valid in the handle's current state */
    LMK_EFORMAT = -1013,     /* input file is not of the expected format (e.g. GGUF) */
};

/* Static, never-NULL description of a status code (errno values via strerror). */
const char *lmk_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif
