/* Contexts: a model run over one attention backend (a landmark session, or the dense
 * in-memory reference cache), with every scratch buffer allocated once at open. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_export.h"
#include "lmk_model_impl.h"

LMK_API lmk_ctx_opts lmk_ctx_opts_default(void)
{
    lmk_ctx_opts o;
    memset(&o, 0, sizeof o);
    o.backend = LMK_ATTN_SESSION;
    o.mode = (lmk_mode)-1;
    o.pos = LMK_POS_SLOTS;
    o.attend = lmk_attend_opts_default();
    o.chunk = 256;
    return o;
}

LMK_API void lmk_ctx_free(lmk_ctx *c)
{
    if (!c)
        return;
    free(c->x);
    free(c->xn);
    free(c->q);
    free(c->qsel);
    free(c->qpos);
    free(c->k);
    free(c->v);
    free(c->att_out);
    free(c->hg);
    free(c->hu);
    free(c->lg);
    free(c->ids);
    free(c->lrow);
    free(c->ldst);
    if (c->tile)
        for (int i = 0; i < c->n_thr; i++)
            free(c->tile[i]);
    free(c->tile);
    free(c->act);
    if (c->kc)
        for (int l = 0; l < c->m->info.n_layers; l++) {
            free(c->kc[l]);
            free(c->vc[l]);
        }
    free(c->kc);
    free(c->vc);
    if (c->sc)
        for (int i = 0; i < c->n_thr; i++)
            free(c->sc[i]);
    free(c->sc);
    free(c->sc_cap);
    free(c);
}

LMK_API const char *lmk_ctx_errmsg(const lmk_ctx *c) { return c ? c->err : "no context"; }
LMK_API int64_t lmk_ctx_n_past(const lmk_ctx *c) { return c->n_past; }

LMK_API int64_t lmk_ctx_n_regular(const lmk_ctx *c)
{
    return c->lm ? c->n_past - c->n_past / c->block_len : c->n_past;
}

LMK_API void lmk_ctx_get_stats(const lmk_ctx *c, lmk_ctx_stats *st) { *st = c->st; }

LMK_API void lmk_ctx_set_attend(lmk_ctx *c, const lmk_attend_opts *a)
{
    const lmk_pos_policy *pos = c->att.pos;
    lmk_mode mode = c->att.mode;
    c->att = *a;
    c->att.pos = pos;
    c->att.mode = mode;
}

LMK_API int lmk_ctx_open(lmk_model *m, const lmk_ctx_opts *opts, lmk_ctx **out, char *err,
                         size_t cap)
{
    *out = NULL;
    const lmk_model_info *H = &m->info;
    lmk_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return lmk_model__err(err, cap, ENOMEM, "out of memory");
    c->m = m;
    c->o = opts ? *opts : lmk_ctx_opts_default();
    if (c->o.chunk <= 1)
        c->o.chunk = 256;
    if ((int)c->o.mode == -1)
        c->o.mode = H->mem_freq > 0 ? LMK_MODE_GROUPED : LMK_MODE_UNION;
    c->lm = H->mem_freq > 0;
    c->block_len = c->lm ? H->mem_freq + 1 : 0;
    int rc = LMK_OK;
    if (c->o.mode == LMK_MODE_GROUPED && !c->lm) {
        rc = lmk_model__err(err, cap, LMK_EINVAL,
                            "grouped softmax needs a landmark-trained model "
                            "(use union)");
        goto fail;
    }
    if (c->o.backend == LMK_ATTN_SESSION) {
        lmk_session_info si;
        if (!c->o.session) {
            rc = lmk_model__err(err, cap, LMK_EINVAL, "no session given");
            goto fail;
        }
        if ((rc = lmk_session_info_get(c->o.session, &si)) != 0) {
            lmk_model__err(err, cap, rc, "%s", lmk_session_errmsg(c->o.session));
            goto fail;
        }
        if (si.n_layers != H->n_layers || si.n_heads != H->n_heads ||
            si.n_kv_heads != H->n_kv_heads || si.head_dim != H->head_dim ||
            (c->lm && (si.block_len != c->block_len || si.landmark != LMK_LANDMARK_TOKEN))) {
            rc = lmk_model__err(err, cap, LMK_EMISMATCH,
                                "the session's shape (%d layers, %d/%d heads "
                                "of %d, blocks of %d) does not match the model",
                                si.n_layers, si.n_heads, si.n_kv_heads, si.head_dim, si.block_len);
            goto fail;
        }
        if (!c->lm)
            c->block_len = si.block_len;
        c->n_past = si.tokens;
        for (int l = 0; l < H->n_layers; l++)
            if (lmk_session_tokens(c->o.session, l) != si.tokens) {
                /* Layers of different lengths: an interrupted chunk; cut back to the
                 * common prefix so every layer agrees. */
                if ((rc = lmk_session_truncate(c->o.session, si.tokens)) != 0) {
                    lmk_model__err(err, cap, rc, "%s", lmk_session_errmsg(c->o.session));
                    goto fail;
                }
                break;
            }
        c->want_q = si.landmark == LMK_LANDMARK_ATTN || si.landmark == LMK_LANDMARK_QUERY ||
                    c->o.record != NULL;
        c->att = c->o.attend;
        c->att.mode = c->o.mode;
        c->pol.kind = c->o.pos;
        c->pol.rotate = lmk_model_rotate;
        c->pol.ud = m;
        c->pol.rank_pos = c->block_len - 1;
        c->pol.fixed_distance = c->o.fixed_distance;
        c->att.pos = c->o.pos == LMK_POS_AS_GIVEN ? NULL : &c->pol;
    } else {
        if (c->o.pos != LMK_POS_AS_GIVEN && c->o.pos != LMK_POS_SLOTS) {
            rc = lmk_model__err(err, cap, LMK_EINVAL, "dense attention uses absolute positions");
            goto fail;
        }
        c->kc = calloc((size_t)H->n_layers, sizeof *c->kc);
        c->vc = calloc((size_t)H->n_layers, sizeof *c->vc);
        if (!c->kc || !c->vc) {
            rc = lmk_model__err(err, cap, ENOMEM, "out of memory");
            goto fail;
        }
    }
    int C = c->o.chunk, E = H->n_embd, nq = H->n_heads * H->head_dim;
    int nkv = H->n_kv_heads * H->head_dim;
    c->x = malloc((size_t)C * E * sizeof(float));
    c->xn = malloc((size_t)C * E * sizeof(float));
    c->q = malloc((size_t)C * nq * sizeof(float));
    c->k = malloc((size_t)C * nkv * sizeof(float));
    c->v = malloc((size_t)C * nkv * sizeof(float));
    c->att_out = malloc((size_t)C * nq * sizeof(float));
    c->hg = malloc((size_t)C * H->n_ff * sizeof(float));
    c->hu = malloc((size_t)C * H->n_ff * sizeof(float));
    c->ids = malloc((size_t)C * sizeof(int32_t));
    c->lrow = malloc((size_t)C * sizeof(int));
    c->ldst = malloc((size_t)C * sizeof(int64_t));
    if (c->want_q) {
        c->qsel = malloc((size_t)C * nq * sizeof(float));
        c->qpos = malloc((size_t)C * H->n_heads * sizeof(int64_t));
        if (!c->qsel || !c->qpos) {
            rc = lmk_model__err(err, cap, ENOMEM, "out of memory");
            goto fail;
        }
    }
    c->n_thr = m->n_threads;
    c->tile = calloc((size_t)c->n_thr, sizeof *c->tile);
    c->sc = calloc((size_t)c->n_thr, sizeof *c->sc);
    c->sc_cap = calloc((size_t)c->n_thr, sizeof *c->sc_cap);
    c->act = malloc((size_t)c->o.chunk * (m->act_row_bytes ? m->act_row_bytes : 1));
    int64_t maxcols = E > H->n_ff ? E : H->n_ff;
    if (nq > maxcols)
        maxcols = nq;
    int ok = c->x && c->xn && c->q && c->k && c->v && c->att_out && c->hg && c->hu &&
             c->ids && c->lrow && c->ldst && c->tile && c->sc && c->sc_cap && c->act;
    for (int i = 0; ok && i < c->n_thr; i++)
        ok = (c->tile[i] = malloc((size_t)TILE_ROWS * maxcols * sizeof(float))) != NULL;
    if (!ok) {
        rc = lmk_model__err(err, cap, ENOMEM, "out of memory for a chunk of %d", C);
        goto fail;
    }
    *out = c;
    return LMK_OK;
fail:
    lmk_ctx_free(c);
    return rc;
}
