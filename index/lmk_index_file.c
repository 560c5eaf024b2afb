/* landmark — the index file format: header, checksum, atomic save and checked load
 * (layout below). Every length in a file is bounded by the file's size before it is used. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <omp.h>

#include <faiss/c_api/index_io_c.h>

#include "lmk_crc32c.h"
#include "lmk_index_internal.h"
#include "lmk_le.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the index file stores vectors in host order, which must be little-endian"
#endif

/* ---- file layout (all integers little-endian) ----
 *  0  magic "LMKIDX\0\1"        8
 *  8  u32 format version (1)
 * 12  u32 header length (80)
 * 16  u32 dim
 * 20  u32 flags: bit0 "+l2", bit1 FAISS payload present
 * 24  i64 ntotal
 * 32  i64 train_min
 * 40  f32 M (norm bound of the "+l2" transform)
 * 44  u32 spec length (1..SPEC_MAX)
 * 48  u64 vector bytes (= ntotal * dim * 4)
 * 56  u64 FAISS payload bytes
 * 64  i64 vectors held by the FAISS payload (0 or ntotal)
 * 72  u32 CRC-32C of the whole file with these 4 bytes left out
 * 76  u32 reserved, 0
 * 80  spec bytes, then vectors (ntotal, dim) f32, then faiss::write_index output. */
#define HDR_LEN 80
#define FMT_VERSION 1
#define FLAG_L2 1u
#define FLAG_FAISS 2u
static const unsigned char lmk_magic[8] = {'L', 'M', 'K', 'I', 'D', 'X', 0, 1};

struct hdr {
    int dim;
    uint32_t flags;
    int64_t ntotal, train_min, faiss_n;
    float M;
    size_t spec_len, vec_len, faiss_len;
    const char *spec;          /* not terminated, spec_len bytes */
    const unsigned char *vecs; /* vec_len bytes */
    const unsigned char *faiss;
};

/* Every check of an index file image, in an order that never reads past `len` nor trusts
 * a length before it has been bounded by `len`; the checksum is verified last, over
 * bytes that are now known to be in range. */
static int parse(const void *data, size_t len, struct hdr *h, char *msg, size_t cap)
{
    const unsigned char *p = data;
    if (!p || len < 12) {
        snprintf(msg, cap, "index file of %zu bytes is too short", len);
        return LMK_ECORRUPT;
    }
    if (memcmp(p, lmk_magic, 8) != 0) {
        copy_msg(msg, cap, "not a landmark index file (bad magic)");
        return LMK_ECORRUPT;
    }
    uint32_t ver = lmk_get_u32le(p + 8);
    if (ver != FMT_VERSION) {
        snprintf(msg, cap, "index file format version %u, this build reads %d", ver,
                 FMT_VERSION);
        return LMK_EVERSION;
    }
    if (len < HDR_LEN) {
        snprintf(msg, cap, "index file of %zu bytes is shorter than its header", len);
        return LMK_ECORRUPT;
    }
    uint32_t hl = lmk_get_u32le(p + 12), dim = lmk_get_u32le(p + 16);
    h->flags = lmk_get_u32le(p + 20);
    h->ntotal = (int64_t)lmk_get_u64le(p + 24);
    h->train_min = (int64_t)lmk_get_u64le(p + 32);
    uint32_t mbits = lmk_get_u32le(p + 40);
    memcpy(&h->M, &mbits, sizeof h->M);
    uint32_t spec_len = lmk_get_u32le(p + 44);
    uint64_t vec_len = lmk_get_u64le(p + 48), faiss_len = lmk_get_u64le(p + 56);
    h->faiss_n = (int64_t)lmk_get_u64le(p + 64);
    uint32_t crc = lmk_get_u32le(p + 72), reserved = lmk_get_u32le(p + 76);
    if (hl != HDR_LEN || reserved != 0 || (h->flags & ~(FLAG_L2 | FLAG_FAISS))) {
        copy_msg(msg, cap, "index file header is damaged (length, flags or reserved)");
        return LMK_ECORRUPT;
    }
    if (dim < 1 || dim > DIM_MAX || spec_len < 1 || spec_len > SPEC_MAX) {
        snprintf(msg, cap, "index file header is damaged (dim %u, spec length %u)", dim,
                 spec_len);
        return LMK_ECORRUPT;
    }
    size_t rem = len - HDR_LEN;
    if (spec_len > rem) {
        copy_msg(msg, cap, "index file is truncated (spec)");
        return LMK_ECORRUPT;
    }
    rem -= spec_len;
    /* ntotal bounded by what the file can hold before multiplying */
    if (h->ntotal < 0 || (uint64_t)h->ntotal > rem / ((size_t)dim * sizeof(float)) ||
        vec_len != (uint64_t)h->ntotal * dim * sizeof(float)) {
        snprintf(msg, cap,
                 "index file is truncated or damaged (%lld vectors of dim %u, %llu vector "
                 "bytes, %zu bytes left)",
                 (long long)h->ntotal, dim, (unsigned long long)vec_len, rem);
        return LMK_ECORRUPT;
    }
    rem -= (size_t)vec_len;
    if (faiss_len != rem) {
        snprintf(msg, cap,
                 "index file length does not match its header (FAISS part %llu bytes, %zu "
                 "left)",
                 (unsigned long long)faiss_len, rem);
        return LMK_ECORRUPT;
    }
    int has_faiss = (h->flags & FLAG_FAISS) != 0;
    if (has_faiss != (faiss_len > 0) || (has_faiss ? h->faiss_n != h->ntotal : h->faiss_n != 0) ||
        h->train_min < 0 || !isfinite(h->M) || h->M < 0) {
        copy_msg(msg, cap, "index file header is inconsistent");
        return LMK_ECORRUPT;
    }
    uint32_t c = lmk_crc32c(0, p, 72);
    c = lmk_crc32c(c, p + 76, len - 76);
    if (c != crc) {
        snprintf(msg, cap, "index file checksum mismatch (stored %08x, computed %08x)", crc,
                 c);
        return LMK_ECORRUPT;
    }
    h->dim = (int)dim;
    h->spec_len = spec_len;
    h->vec_len = (size_t)vec_len;
    h->faiss_len = (size_t)faiss_len;
    h->spec = (const char *)p + HDR_LEN;
    h->vecs = p + HDR_LEN + spec_len;
    h->faiss = h->vecs + vec_len;
    for (size_t i = 0; i < spec_len; i++) {
        unsigned char ch = (unsigned char)h->spec[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            copy_msg(msg, cap, "index file spec has invalid characters");
            return LMK_ECORRUPT;
        }
    }
    return LMK_OK;
}

LMK_API int lmk_index_parse_header(const void *data, size_t len, int *dim, int64_t *ntotal,
                                   char *spec, size_t spec_cap)
{
    struct hdr h;
    char msg[ERR_CAP];
    int rc = parse(data, len, &h, msg, sizeof msg);
    if (rc != LMK_OK)
        return rc;
    if (dim)
        *dim = h.dim;
    if (ntotal)
        *ntotal = h.ntotal;
    if (spec && spec_cap) { /* truncated to spec_cap - 1 bytes when the buffer is short */
        size_t n = h.spec_len < spec_cap - 1 ? h.spec_len : spec_cap - 1;
        memcpy(spec, h.spec, n);
        spec[n] = 0;
    }
    return LMK_OK;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int fsync_dir_of(const char *path)
{
    size_t l = strlen(path);
    char *dir = malloc(l + 2);
    if (!dir)
        return ENOMEM;
    memcpy(dir, path, l + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    int rc = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        rc = errno;
    else {
        if (fsync(fd) != 0 && errno != EINVAL)
            rc = errno;
        close(fd);
    }
    free(dir);
    return rc;
}

LMK_API int lmk_index_save(lmk_index *idx, const char *path)
{
    if (!idx)
        return LMK_EINVAL;
    if (!path || !*path) {
        set_err(idx, "lmk_index_save: no path");
        return LMK_EINVAL;
    }
    char *fbuf = NULL;
    size_t flen = 0;
    if (idx->in_faiss) {
        FILE *mf = open_memstream(&fbuf, &flen);
        if (!mf) {
            set_err(idx, "open_memstream: %s", strerror(errno));
            return errno ? errno : ENOMEM;
        }
        int frc = faiss_write_index(idx->fi, mf);
        int cerr = fclose(mf);
        if (frc) {
            free(fbuf);
            return faiss_fail(idx, frc, "write_index");
        }
        if (cerr != 0 || flen == 0) {
            free(fbuf);
            set_err(idx, "serializing the FAISS index failed");
            return ENOMEM;
        }
    }
    unsigned char h[HDR_LEN];
    size_t spec_len = strlen(idx->spec);
    size_t vec_len = (size_t)idx->ntotal * idx->dim * sizeof(float);
    uint32_t mbits;
    float M = idx->in_faiss ? idx->M : 0.0f;
    memcpy(&mbits, &M, sizeof mbits);
    memcpy(h, lmk_magic, 8);
    lmk_put_u32le(h + 8, FMT_VERSION);
    lmk_put_u32le(h + 12, HDR_LEN);
    lmk_put_u32le(h + 16, (uint32_t)idx->dim);
    lmk_put_u32le(h + 20, (idx->l2 ? FLAG_L2 : 0) | (idx->in_faiss ? FLAG_FAISS : 0));
    lmk_put_u64le(h + 24, (uint64_t)idx->ntotal);
    lmk_put_u64le(h + 32, (uint64_t)idx->train_min);
    lmk_put_u32le(h + 40, mbits);
    lmk_put_u32le(h + 44, (uint32_t)spec_len);
    lmk_put_u64le(h + 48, vec_len);
    lmk_put_u64le(h + 56, flen);
    lmk_put_u64le(h + 64, (uint64_t)(idx->in_faiss ? idx->ntotal : 0));
    lmk_put_u32le(h + 72, 0);
    lmk_put_u32le(h + 76, 0);
    uint32_t c = lmk_crc32c(0, h, 72);
    c = lmk_crc32c(c, h + 76, 4);
    c = lmk_crc32c(c, idx->spec, spec_len);
    c = lmk_crc32c(c, idx->vecs, vec_len);
    c = lmk_crc32c(c, fbuf, flen);
    lmk_put_u32le(h + 72, c);

    size_t pl = strlen(path);
    char *tmp = malloc(pl + 5);
    if (!tmp) {
        free(fbuf);
        set_err(idx, "out of memory");
        return ENOMEM;
    }
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp", 5);
    /* write <path>.tmp, make it durable, rename it over path, make the rename durable */
    int rc = 0;
    const char *step = "open";
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = errno;
    } else {
        step = "write";
        rc = write_all(fd, h, HDR_LEN);
        if (!rc)
            rc = write_all(fd, idx->spec, spec_len);
        if (!rc && vec_len)
            rc = write_all(fd, idx->vecs, vec_len);
        if (!rc && flen)
            rc = write_all(fd, fbuf, flen);
        if (!rc) {
            step = "fsync";
            if (fsync(fd) != 0)
                rc = errno;
        }
        if (close(fd) != 0 && !rc) {
            step = "close";
            rc = errno;
        }
        if (!rc) {
            step = "rename";
            if (rename(tmp, path) != 0)
                rc = errno;
        }
        if (rc)
            unlink(tmp);
        else {
            /* the new file is in place; an error here only means durability of the
             * rename is not confirmed */
            step = "fsync of the directory";
            rc = fsync_dir_of(path);
        }
    }
    if (rc)
        set_err(idx, "saving index to %s: %s failed: %s", path, step, strerror(rc));
    free(tmp);
    free(fbuf);
    return rc;
}

/* Reads the whole file at path into a new buffer (*out, *out_len; the caller frees it). */
static int read_whole(const char *path, unsigned char **out, size_t *out_len, char *msg,
                      size_t cap)
{
    int rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? LMK_ENOTFOUND : errno;
        snprintf(msg, cap, "cannot open index file %s: %s", path, strerror(errno));
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = errno;
        snprintf(msg, cap, "stat %s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > (uint64_t)SIZE_MAX / 2) {
        close(fd);
        rc = LMK_ECORRUPT;
        snprintf(msg, cap, "%s is not an index file", path);
        return rc;
    }
    /* the only allocation sized from the file is the file's real size */
    size_t len = (size_t)st.st_size;
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf) {
        close(fd);
        rc = ENOMEM;
        snprintf(msg, cap, "out of memory reading %s (%zu bytes)", path, len);
        return rc;
    }
    size_t got = 0;
    int rerr = 0;
    while (got < len) {
        ssize_t r = pread(fd, buf + got, len - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rerr = errno;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != len) {
        /* a read error is passed through; a file that shrank under us is damaged */
        rc = rerr ? rerr : LMK_ECORRUPT;
        snprintf(msg, cap, "short read of %s (%zu of %zu bytes)", path, got, len);
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = len;
    return LMK_OK;
}

#if !defined(__SANITIZE_ADDRESS__)
/* Bytes of address space this process has mapped (0 when unknown). */
static uint64_t vm_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long pages = 0;
    if (f) {
        if (fscanf(f, "%llu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    long ps = sysconf(_SC_PAGESIZE);
    return pages * (uint64_t)(ps > 0 ? ps : 4096);
}
#endif

enum { TRIAL_QUERIES = 16, TRIAL_K = 8, TRIAL_TIMEOUT_MS = 20000 };

/* The child of trial_read(): read the payload under a bounded address space, check what
 * FAISS built against the header, search it with some of the stored vectors. Never
 * returns. */
static void trial_child(const lmk_index *idx, const struct hdr *h)
{
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
#if !defined(__SANITIZE_ADDRESS__)
    /* FAISS sizes its vectors from the payload's length fields (up to 2^40 elements) and
     * zero-fills them before reading: bound that by what the payload can hold. (Not under
     * AddressSanitizer, whose shadow memory counts against RLIMIT_AS.) */
    uint64_t vm = vm_bytes();
    if (vm) {
        rl.rlim_cur = rl.rlim_max = vm + 16 * (uint64_t)h->faiss_len + (256ull << 20);
        setrlimit(RLIMIT_AS, &rl);
    }
#endif
    omp_set_num_threads(1); /* no OpenMP team in a forked child */
    FILE *mf = fmemopen((void *)h->faiss, h->faiss_len, "rb");
    if (!mf)
        _exit(10);
    FaissIndex *fi = NULL;
    int frc = faiss_read_index(mf, 0, &fi);
    fclose(mf);
    if (frc || !fi) {
        const char *m = faiss_get_last_error();
        /* FAISS refused the bytes (an exception): the caller's own read reports it the
         * same way, unless it was the address-space bound, which the caller lacks */
        _exit(m && strstr(m, "bad_alloc") ? 15 : 11);
    }
    if (faiss_Index_d(fi) != idx->fdim || faiss_Index_ntotal(fi) != h->ntotal ||
        faiss_Index_metric_type(fi) != idx->metric || !faiss_Index_is_trained(fi))
        _exit(12);
    int64_t n = h->ntotal;
    int k = n < TRIAL_K ? (int)n : TRIAL_K;
    float q[DIM_MAX + 1];
    float dist[TRIAL_K];
    int64_t lab[TRIAL_K];
    for (int i = 0; i < TRIAL_QUERIES && k > 0; i++) {
        int64_t row = n * i / TRIAL_QUERIES;
        memcpy(q, idx->vecs + (size_t)row * idx->dim, (size_t)idx->dim * sizeof(float));
        if (idx->l2)
            q[idx->dim] = 0.0f;
        if (faiss_Index_search(fi, 1, q, k, dist, lab))
            _exit(13);
        for (int j = 0; j < k; j++)
            if (lab[j] < -1 || lab[j] >= n)
                _exit(14);
    }
    _exit(0);
}

/* FAISS's reader trusts the lengths in its serialization and its search trusts the
 * structures it read (a graph's links, list sizes): the file's checksum is no defence
 * against a crafted file. So the payload is first read and searched in a child process,
 * where a crash, a huge allocation or a hang costs only the child; the caller then reads
 * the same bytes. LMK_OK, or LMK_ECORRUPT with a message (the index is then rebuilt from
 * the vectors). */
static int trial_read(const lmk_index *idx, const struct hdr *h, const char *path, char *msg,
                      size_t cap)
{
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(msg, cap, "index file %s: cannot check its FAISS part (fork: %s)", path,
                 strerror(errno));
        return LMK_ECORRUPT;
    }
    if (pid == 0)
        trial_child(idx, h);
    int st = 0, waited = 0;
    pid_t r;
    for (;;) {
        r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            break;
        if (waited >= TRIAL_TIMEOUT_MS) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            snprintf(msg, cap, "index file %s: reading its FAISS part did not finish in %d s",
                     path, TRIAL_TIMEOUT_MS / 1000);
            return LMK_ECORRUPT;
        }
        int step = waited < 20 ? 1 : 10;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        waited += step;
    }
    if (r == pid && WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 11))
        return LMK_OK;
    if (r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 15) {
        snprintf(msg, cap, "index file %s: its FAISS part asks for more memory than it can "
                           "describe", path);
        return LMK_ECORRUPT;
    }
    if (r == pid && WIFSIGNALED(st))
        snprintf(msg, cap, "index file %s: its FAISS part crashes FAISS (signal %d)", path,
                 WTERMSIG(st));
    else
        snprintf(msg, cap, "index file %s: its FAISS part fails a trial read (step %d)", path,
                 r == pid && WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return LMK_ECORRUPT;
}

/* Hands the FAISS payload of h (it passed the checksum) to FAISS and installs the index
 * it reads, checked against the header. */
static int load_faiss_payload(lmk_index *idx, const struct hdr *h, const char *path,
                              char *msg, size_t cap)
{
    int rc = trial_read(idx, h, path, msg, cap);
    if (rc != LMK_OK)
        return rc;
    FILE *mf = fmemopen((void *)h->faiss, h->faiss_len, "rb");
    if (!mf) {
        rc = errno ? errno : ENOMEM;
        snprintf(msg, cap, "fmemopen: %s", strerror(errno));
        return rc;
    }
    FaissIndex *fi = NULL;
    int frc = faiss_read_index(mf, 0, &fi);
    fclose(mf);
    if (frc) {
        snprintf(msg, cap, "FAISS cannot read the index in %s: %s", path,
                 faiss_msg());
        return LMK_EINDEX;
    }
    if (faiss_Index_d(fi) != idx->fdim || faiss_Index_ntotal(fi) != h->ntotal ||
        faiss_Index_metric_type(fi) != idx->metric || !faiss_Index_is_trained(fi)) {
        snprintf(msg, cap,
                 "index file %s: FAISS index (d %d, ntotal %lld, metric %d, trained %d) "
                 "disagrees with the header (d %d, ntotal %lld, metric %d)",
                 path, faiss_Index_d(fi), (long long)faiss_Index_ntotal(fi),
                 (int)faiss_Index_metric_type(fi), faiss_Index_is_trained(fi), idx->fdim,
                 (long long)h->ntotal, (int)idx->metric);
        faiss_Index_free(fi);
        return LMK_ECORRUPT;
    }
    if (idx->l2 && h->ntotal > 0 && max_norm(idx->vecs, h->ntotal, h->dim) > h->M) {
        faiss_Index_free(fi);
        snprintf(msg, cap, "index file %s: a vector exceeds the +l2 bound", path);
        return LMK_ECORRUPT;
    }
    lmk_index_swap_in(idx, fi); /* efSearch / nprobe are whatever FAISS saved */
    idx->in_faiss = 1;
    idx->M = h->M;
    return LMK_OK;
}

LMK_API int lmk_index_load(const char *path, const char *expect_spec, int expect_dim,
                           lmk_index **out, char *errmsg, size_t errmsg_cap)
{
    char msg[ERR_CAP] = "";
    int rc;
    unsigned char *buf = NULL;
    lmk_index *idx = NULL;
    if (!out) {
        copy_msg(errmsg, errmsg_cap, "lmk_index_load: out is NULL");
        return LMK_EINVAL;
    }
    *out = NULL;
    if (!path) {
        copy_msg(errmsg, errmsg_cap, "lmk_index_load: path is NULL");
        return LMK_EINVAL;
    }
    size_t len = 0;
    rc = read_whole(path, &buf, &len, msg, sizeof msg);
    if (rc != LMK_OK)
        goto done;
    struct hdr h;
    rc = parse(buf, len, &h, msg, sizeof msg);
    if (rc != LMK_OK)
        goto done;
    char spec[SPEC_MAX + 1];
    memcpy(spec, h.spec, h.spec_len);
    spec[h.spec_len] = 0;
    /* NULL / <= 0 expectations mean "any" (verify tools) */
    if ((expect_spec && strcmp(expect_spec, spec) != 0) ||
        (expect_dim > 0 && expect_dim != h.dim)) {
        rc = LMK_EMISMATCH;
        snprintf(msg, sizeof msg,
                 "index file %.200s holds spec \"%.100s\" dim %d, expected \"%.100s\" dim %d",
                 path, spec, h.dim, expect_spec ? expect_spec : spec,
                 expect_dim > 0 ? expect_dim : h.dim);
        goto done;
    }
    rc = lmk_index_new(spec, h.dim, h.train_min, &idx, msg, sizeof msg);
    if (rc != LMK_OK)
        goto done;
    if (idx->l2 != ((h.flags & FLAG_L2) != 0) ||
        (h.faiss_n > 0 && (h.faiss_n < idx->train_min || idx->exact_only))) {
        rc = LMK_ECORRUPT;
        snprintf(msg, sizeof msg, "index file %s: header flags disagree with spec \"%s\"",
                 path, spec);
        goto done;
    }
    if (lmk_index_reserve(idx, h.ntotal)) {
        rc = ENOMEM;
        snprintf(msg, sizeof msg, "out of memory loading %lld vectors", (long long)h.ntotal);
        goto done;
    }
    if (h.vec_len)
        memcpy(idx->vecs, h.vecs, h.vec_len);
    if (!all_finite(idx->vecs, (size_t)h.ntotal * h.dim)) {
        rc = LMK_ECORRUPT;
        snprintf(msg, sizeof msg, "index file %s holds non-finite vectors", path);
        goto done;
    }
    idx->ntotal = h.ntotal;
    if (h.faiss_len) {
        rc = load_faiss_payload(idx, &h, path, msg, sizeof msg);
        if (rc != LMK_OK)
            goto done;
    }
    rc = LMK_OK;
done:
    free(buf);
    if (rc != LMK_OK) {
        lmk_index_free(idx);
        copy_msg(errmsg, errmsg_cap, msg);
        return rc;
    }
    *out = idx;
    return LMK_OK;
}

