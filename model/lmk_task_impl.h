/* Private to model/: helpers the tasks (lmk_run.c, lmk_passkey.c, lmk_perplexity.c) share.
 * Not installed. */
#ifndef LMK_TASK_IMPL_H
#define LMK_TASK_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_model_err.h"
#include "lmk_tasks.h"

/* A message through o's log callback (when set). */
void lmk_task__log(const lmk_task_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int lmk_task__interrupted(const lmk_task_opts *o);

/* The attention settings of o: chunk retrieval when chunkwise, else o->retrieve. */
lmk_attend_opts lmk_task__attend(const lmk_task_opts *o, int chunkwise);
/* A context over session s with o's settings. */
int lmk_task__ctx_open(const lmk_task_opts *o, lmk_model *m, lmk_session *s, lmk_ctx **out,
                       char *err, size_t cap);

/* Feed ids in o->piece pieces (the interrupt flag is checked before each: EINTR with
 * "interrupted after I of N tokens"); logits (n_vocab) after the last token when non-NULL.
 * Progress calls under `what` when what is non-NULL. */
int lmk_task__feed(const lmk_task_opts *o, lmk_ctx *c, const int32_t *ids, int64_t n,
                   float *logits, const char *what, char *err, size_t cap);
/* The same, ids being a text's tokens from index `at` on: pieces end at multiples of
 * o->piece of the text's own index, so a feed resumed at any point the session was
 * committed at runs the same forward steps as one uninterrupted feed. */
int lmk_task__feed_at(const lmk_task_opts *o, lmk_ctx *c, const int32_t *ids, int64_t n,
                      int64_t at, float *logits, const char *what, char *err, size_t cap);

/* A temporary session for task `name` ("passkey"): a new directory under o->workdir (or
 * $TMPDIR, /tmp) in dir, and the session opened in it (durability NONE). On failure the
 * directory is removed. */
/* The representative o asks for into a new session's options (ordinary models only). */
void lmk_task__repr(const lmk_task_opts *o, const lmk_model *m, lmk_session_opts *so);

int lmk_task__temp_open(const lmk_task_opts *o, const lmk_model *m, const char *name,
                        char *dir, size_t dir_cap, lmk_session **out, char *err, size_t cap);
/* Close s and remove its directory (flat: made by lmk_task__temp_open). */
void lmk_task__temp_close(lmk_session *s, const char *dir);

#endif
