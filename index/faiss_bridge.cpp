/* landmark — the subset of FAISS's C API that index/lmk_index.c calls, implemented over
 * FAISS's C++ classes.
 *
 * Why: Debian's libfaiss-dev ships the C API headers but its libfaiss.a contains none of
 * the C API functions. The build compiles this file only when no system libfaiss_c is
 * found (or -Dfaiss_bridge=true). Signatures are exactly those of the faiss/c_api
 * headers (they are included, so the compiler checks them); behaviour follows FAISS's
 * own c_api/macros_impl.h: every call is wrapped in try/catch, returns 0 on success, -2 for a
 * faiss::FaissException, -4 for any other std::exception, -1 for anything else, and keeps
 * the exception text for faiss_get_last_error() in a thread_local string.
 *
 * Functions provided (keep this list and lmk_index.c in step):
 *   faiss_get_last_error
 *   faiss_index_factory
 *   faiss_Index_free, faiss_Index_d, faiss_Index_ntotal, faiss_Index_is_trained,
 *   faiss_Index_metric_type
 *   faiss_Index_train, faiss_Index_add, faiss_Index_search, faiss_Index_reset,
 *   faiss_Index_remove_ids
 *   faiss_IDSelectorRange_new, faiss_IDSelectorRange_free
 *   faiss_write_index, faiss_read_index                       (FILE* variants)
 *   faiss_ParameterSpace_new, faiss_ParameterSpace_free,
 *   faiss_ParameterSpace_set_index_parameter
 */
#include <cstdio>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include <faiss/AutoTune.h>
#include <faiss/Index.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#define BRIDGE_API __attribute__((visibility("default")))

namespace {

thread_local std::string last_error;

/* Same codes as FAISS's CATCH_AND_HANDLE (macros_impl.h), message kept per thread. */
#define BRIDGE_CATCH                                                                   \
    catch (faiss::FaissException & e) {                                                \
        last_error = e.what();                                                         \
        return -2;                                                                     \
    }                                                                                  \
    catch (std::exception & e) {                                                       \
        last_error = e.what();                                                         \
        return -4;                                                                     \
    }                                                                                  \
    catch (...) {                                                                      \
        last_error = "Unknown error";                                                  \
        return -1;                                                                     \
    }                                                                                  \
    return 0;

inline faiss::Index *ix(FaissIndex *p) { return reinterpret_cast<faiss::Index *>(p); }
inline const faiss::Index *ix(const FaissIndex *p)
{
    return reinterpret_cast<const faiss::Index *>(p);
}

} // namespace

extern "C" {

BRIDGE_API const char *faiss_get_last_error()
{
    return last_error.c_str();
}

BRIDGE_API int faiss_index_factory(FaissIndex **p_index, int d, const char *description,
                                   FaissMetricType metric)
{
    try {
        *p_index = nullptr;
        faiss::Index *index = faiss::index_factory(
            d, description, static_cast<faiss::MetricType>(metric));
        *p_index = reinterpret_cast<FaissIndex *>(index);
    }
    BRIDGE_CATCH
}

BRIDGE_API void faiss_Index_free(FaissIndex *obj)
{
    delete ix(obj);
}

BRIDGE_API int faiss_Index_d(const FaissIndex *obj)
{
    return ix(obj)->d;
}

BRIDGE_API int faiss_Index_is_trained(const FaissIndex *obj)
{
    return ix(obj)->is_trained ? 1 : 0;
}

BRIDGE_API idx_t faiss_Index_ntotal(const FaissIndex *obj)
{
    return ix(obj)->ntotal;
}

BRIDGE_API FaissMetricType faiss_Index_metric_type(const FaissIndex *obj)
{
    return static_cast<FaissMetricType>(ix(obj)->metric_type);
}

BRIDGE_API int faiss_Index_train(FaissIndex *index, idx_t n, const float *x)
{
    try {
        ix(index)->train(n, x);
    }
    BRIDGE_CATCH
}

BRIDGE_API int faiss_Index_add(FaissIndex *index, idx_t n, const float *x)
{
    try {
        ix(index)->add(n, x);
    }
    BRIDGE_CATCH
}

BRIDGE_API int faiss_Index_search(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                                  float *distances, idx_t *labels)
{
    try {
        ix(index)->search(n, x, k, distances, labels);
    }
    BRIDGE_CATCH
}

BRIDGE_API int faiss_Index_reset(FaissIndex *index)
{
    try {
        ix(index)->reset();
    }
    BRIDGE_CATCH
}

BRIDGE_API int faiss_Index_remove_ids(FaissIndex *index, const FaissIDSelector *sel,
                                      size_t *n_removed)
{
    try {
        size_t n = ix(index)->remove_ids(*reinterpret_cast<const faiss::IDSelector *>(sel));
        if (n_removed)
            *n_removed = n;
    }
    BRIDGE_CATCH
}

BRIDGE_API int faiss_IDSelectorRange_new(FaissIDSelectorRange **p_sel, idx_t imin, idx_t imax)
{
    try {
        *p_sel = reinterpret_cast<FaissIDSelectorRange *>(
            new faiss::IDSelectorRange(imin, imax));
    }
    BRIDGE_CATCH
}

BRIDGE_API void faiss_IDSelectorRange_free(FaissIDSelectorRange *obj)
{
    delete reinterpret_cast<faiss::IDSelectorRange *>(obj);
}

BRIDGE_API int faiss_write_index(const FaissIndex *idx, FILE *f)
{
    try {
        faiss::write_index(ix(idx), f);
    }
    BRIDGE_CATCH
}

BRIDGE_API int faiss_read_index(FILE *f, int io_flags, FaissIndex **p_out)
{
    try {
        *p_out = nullptr;
        faiss::Index *out = faiss::read_index(f, io_flags);
        *p_out = reinterpret_cast<FaissIndex *>(out);
    }
    BRIDGE_CATCH
}

BRIDGE_API int faiss_ParameterSpace_new(FaissParameterSpace **space)
{
    try {
        *space = reinterpret_cast<FaissParameterSpace *>(new faiss::ParameterSpace());
    }
    BRIDGE_CATCH
}

BRIDGE_API void faiss_ParameterSpace_free(FaissParameterSpace *obj)
{
    delete reinterpret_cast<faiss::ParameterSpace *>(obj);
}

BRIDGE_API int faiss_ParameterSpace_set_index_parameter(const FaissParameterSpace *space,
                                                        FaissIndex *index, const char *name,
                                                        double value)
{
    try {
        reinterpret_cast<const faiss::ParameterSpace *>(space)->set_index_parameter(
            ix(index), name, value);
    }
    BRIDGE_CATCH
}

} // extern "C"
