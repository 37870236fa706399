# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The sqlitebin SQLite loadable extension.

Registers the SQL functions of sqlitebin (`hamming`, `bit_count`, the
quantizers, the rescoring dot products, version and debug), the `sqlitebin`
virtual table (the index), the `sqlitebin_cjk` FTS5 tokenizer (tokenizer.h) and the
`sqlitebin_bm25` FTS5 auxiliary function (bm25.h). It is compiled from Cython but is not a
Python module: the build exports only the entry point `sqlite3_sqlitebin_init`
and drops everything unreachable from it, so no function here may touch a
Python object. Module-level statements would run only in the (discarded)
Python module initialiser, so all state is set up inside the entry point.

Bit layout, used everywhere: bit i of a vector is bit `7 - i % 8` of byte
`i // 8`, set where the value is above its threshold (exactly
`numpy.packbits(v > t)`). Float vectors are little-endian float32 BLOBs.
"""

from libc.stdint cimport uint8_t, int8_t, uint16_t, uint32_t, uint64_t, int64_t, uintptr_t, INT64_MAX, INT64_MIN
from libc.string cimport memcpy, memset, strcmp, strlen, strncmp
from libc.stdlib cimport getenv, qsort, strtoll
from libc.math cimport isnan, isinf, rintf, sqrt, floor, fabs

from sqlite3ext cimport *

cdef extern from *:
    """
    SQLITE_EXTENSION_INIT1
    /* The API pointer is one global per loaded copy of this file. The first SQLite library to load
       a copy binds it; another library (apsw's and pysqlite3's in one process) is refused, because
       rebinding would send the first library's calls into the second. The message is allocated with
       the caller's own routines, since the caller frees it. sqlitebin.load() then uses a private copy. */
    static int sqlitebin_claim_api(const sqlite3_api_routines *api, char **error) {
        const sqlite3_api_routines *bound = 0;
        if (__atomic_compare_exchange_n(&sqlite3_api, &bound, api, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)
                || bound == api)
            return SQLITE_OK;
        if (error) *error = api->mprintf("sqlitebin: this copy of the extension is already bound to another "
            "SQLite library in this process; load a separate copy of the file into this one (sqlitebin.load() does)");
        return SQLITE_ERROR;
    }
    #ifndef SQLITEBIN_VERSION
    #define SQLITEBIN_VERSION "unknown"
    #endif
    /* Asymmetric mode sums query values in float32 tables (at most 3.4e38): the sum of the
       magnitudes bounds every such sum, so a query within this limit cannot overflow them.
       A C constant: a module-level Cython initialiser would never run in an SQLite process. */
    #define SQLITEBIN_MAX_QUERY_MAGNITUDE 1e38
    #ifdef __VERSION__
    #define SQLITEBIN_COMPILER __VERSION__
    #else
    #define SQLITEBIN_COMPILER "unknown"
    #endif
    """
    int sqlitebin_claim_api(const sqlite3_api_routines *api, char **error) nogil
    const char *SQLITEBIN_VERSION
    const char *SQLITEBIN_COMPILER
    const double SQLITEBIN_MAX_QUERY_MAGNITUDE
    const char *SQLITE_VERSION
    void sqlite3_result_zeroblob(sqlite3_context*, int n) nogil
    void *sqlite3_aggregate_context(sqlite3_context*, int nBytes) nogil
    int sqlite3_total_changes(sqlite3*) nogil
    int sqlite3_get_autocommit(sqlite3*) nogil

cdef extern from "tokenizer.h" nogil:
    int sqlitebin_register_tokenizer(sqlite3 *db, char **error)

cdef extern from "bm25.h" nogil:
    int sqlitebin_register_bm25(sqlite3 *db, char **error)
    void sqlitebin_bm25_idf_sql(sqlite3_context *context, int nargs, sqlite3_value **args) noexcept nogil

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t *thread, const void *attributes, void *(*start)(void *) noexcept nogil, void *argument)
    int pthread_join(pthread_t thread, void **result)

cdef extern from "kernels.h" nogil:
    ctypedef uint64_t (*sqlitebin_hamming_fn)(const uint8_t *a, const uint8_t *b, size_t n) noexcept nogil
    ctypedef uint64_t (*sqlitebin_popcount_fn)(const uint8_t *a, size_t n) noexcept nogil
    int SQLITEBIN_HAVE_X86_KERNELS
    uint64_t sqlitebin_hamming_portable(const uint8_t *a, const uint8_t *b, size_t n)
    uint64_t sqlitebin_popcount_portable(const uint8_t *a, size_t n)
    uint64_t sqlitebin_hamming_popcnt(const uint8_t *a, const uint8_t *b, size_t n)
    uint64_t sqlitebin_popcount_popcnt(const uint8_t *a, size_t n)
    uint64_t sqlitebin_hamming_avx2(const uint8_t *a, const uint8_t *b, size_t n)
    uint64_t sqlitebin_hamming_avx512(const uint8_t *a, const uint8_t *b, size_t n)
    uint64_t sqlitebin_popcount_avx512(const uint8_t *a, size_t n)
    int sqlitebin_cpu_has_popcnt()
    int sqlitebin_cpu_has_avx2()
    int sqlitebin_cpu_has_avx512()
    void sqlitebin_cpu_features(char *out, size_t size)

cdef extern from "scan_kernels.h" nogil:
    int SQLITEBIN_NIBBLE_BLOCK
    int SQLITEBIN_NIBBLE_MAX_BYTES
    uint32_t SQLITEBIN_NO_CANDIDATE
    ctypedef size_t (*sqlitebin_hamming_below_fn)(const uint8_t *codes, size_t count, size_t code_bytes,
                                                  const uint8_t *query, uint32_t threshold,
                                                  uint32_t *out_index, uint32_t *out_distance) noexcept nogil
    ctypedef size_t (*sqlitebin_nibble_above_fn)(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                                 const uint8_t *tables, uint32_t threshold,
                                                 uint32_t *out_index) noexcept nogil
    ctypedef size_t (*sqlitebin_hamming_below_many_fn)(const uint8_t *codes, size_t count, size_t code_bytes,
                                                       const uint8_t *queries, size_t query_count,
                                                       const uint32_t *thresholds, uint32_t *out_index,
                                                       uint32_t *out_distance, size_t *out_count) noexcept nogil
    ctypedef size_t (*sqlitebin_nibble_above_many_fn)(const uint8_t *blocked, size_t first, size_t count,
                                                      size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                      const uint32_t *thresholds, uint32_t *out_index,
                                                      size_t *out_count) noexcept nogil
    ctypedef size_t (*sqlitebin_hamming_blocked_many_fn)(const uint8_t *blocked, size_t first, size_t count,
                                                         size_t code_bytes, const uint8_t *tables,
                                                         size_t query_count, const uint32_t *thresholds,
                                                         uint32_t *out_index, uint32_t *out_distance,
                                                         size_t *out_count) noexcept nogil
    size_t sqlitebin_hamming_blocked_many_avx2(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                               const uint8_t *tables, size_t query_count, const uint32_t *thresholds,
                                               uint32_t *out_index, uint32_t *out_distance, size_t *out_count)
    void sqlitebin_hamming_nibble_tables(const uint8_t *query, size_t code_bytes, uint8_t *tables)
    size_t sqlitebin_hamming_below_portable(const uint8_t *codes, size_t count, size_t code_bytes, const uint8_t *query,
                                            uint32_t threshold, uint32_t *out_index, uint32_t *out_distance)
    size_t sqlitebin_hamming_below_popcnt(const uint8_t *codes, size_t count, size_t code_bytes, const uint8_t *query,
                                          uint32_t threshold, uint32_t *out_index, uint32_t *out_distance)
    size_t sqlitebin_hamming_below_avx2(const uint8_t *codes, size_t count, size_t code_bytes, const uint8_t *query,
                                        uint32_t threshold, uint32_t *out_index, uint32_t *out_distance)
    size_t sqlitebin_hamming_below_avx512(const uint8_t *codes, size_t count, size_t code_bytes, const uint8_t *query,
                                          uint32_t threshold, uint32_t *out_index, uint32_t *out_distance)
    size_t sqlitebin_nibble_above_avx2(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                       const uint8_t *tables, uint32_t threshold, uint32_t *out_index)
    size_t sqlitebin_nibble_above_avx512(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                         const uint8_t *tables, uint32_t threshold, uint32_t *out_index)
    size_t sqlitebin_nibble_above_avx512vbmi(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                             const uint8_t *tables, uint32_t threshold, uint32_t *out_index)
    int sqlitebin_cpu_has_avx512vbmi()
    size_t sqlitebin_sextet_above_many_avx512vbmi(const uint8_t *blocked, size_t first, size_t count,
                                                  size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                  const uint32_t *thresholds, uint32_t *out_index, size_t *out_count)
    size_t sqlitebin_sextet_table_bytes(size_t code_bytes)
    int SQLITEBIN_NIBBLE_LEVELS
    void sqlitebin_transpose_blocks(const uint8_t *codes, size_t count, size_t code_bytes, uint8_t *out)
    uint64_t sqlitebin_hamming_strided(const uint8_t *code, size_t stride, const uint8_t *query, size_t n)
    void sqlitebin_advise_huge_pages(void *buffer, size_t size)
    size_t sqlitebin_hamming_below_many_portable(const uint8_t *codes, size_t count, size_t code_bytes,
                                                 const uint8_t *queries, size_t query_count, const uint32_t *thresholds,
                                                 uint32_t *out_index, uint32_t *out_distance, size_t *out_count)
    size_t sqlitebin_hamming_below_many_popcnt(const uint8_t *codes, size_t count, size_t code_bytes,
                                               const uint8_t *queries, size_t query_count, const uint32_t *thresholds,
                                               uint32_t *out_index, uint32_t *out_distance, size_t *out_count)
    size_t sqlitebin_hamming_below_many_avx2(const uint8_t *codes, size_t count, size_t code_bytes,
                                             const uint8_t *queries, size_t query_count, const uint32_t *thresholds,
                                             uint32_t *out_index, uint32_t *out_distance, size_t *out_count)
    size_t sqlitebin_hamming_below_many_avx512(const uint8_t *codes, size_t count, size_t code_bytes,
                                               const uint8_t *queries, size_t query_count, const uint32_t *thresholds,
                                               uint32_t *out_index, uint32_t *out_distance, size_t *out_count)
    size_t sqlitebin_nibble_above_many_avx2(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                            const uint8_t *tables, size_t query_count, const uint32_t *thresholds,
                                            uint32_t *out_index, size_t *out_count)
    size_t sqlitebin_nibble_above_many_avx512(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                              const uint8_t *tables, size_t query_count, const uint32_t *thresholds,
                                              uint32_t *out_index, size_t *out_count)
    size_t sqlitebin_nibble_above_many_avx512vbmi(const uint8_t *blocked, size_t first, size_t count,
                                                  size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                  const uint32_t *thresholds, uint32_t *out_index, size_t *out_count)

cdef extern from *:
    void __builtin_prefetch(const void *address) nogil

cdef extern from "scan_threads.h" nogil:
    ctypedef struct sqlitebin_work_queue:
        int64_t next
        int64_t units
    int64_t sqlitebin_work_claim(sqlitebin_work_queue *queue)
    long sqlitebin_idle_cpus()
    long sqlitebin_idle_cpus_recent()

include "checks.pxi"
include "quantize.pxi"
include "topk.pxi"
include "idfilter.pxi"
include "scan.pxi"
include "threads.pxi"
include "functions.pxi"
include "storage.pxi"
include "cache.pxi"
include "vtable_options.pxi"
include "vtable.pxi"
include "vtable_write.pxi"
include "vtable_search.pxi"
include "vtable_commands.pxi"

# ---------------------------------------------------------------------------
# The entry point and its one registration table.

ctypedef void (*sql_function)(sqlite3_context*, int, sqlite3_value**) noexcept nogil
ctypedef void (*sql_final)(sqlite3_context*) noexcept nogil

ctypedef struct FunctionEntry:
    const char *name
    int nargs              # -1: any number
    sql_function function  # a scalar function, or an aggregate's step
    sql_final final        # NULL for a scalar function

cdef enum:
    FUNCTION_COUNT = 11


cdef void fill_function_table(FunctionEntry *table) noexcept nogil:
    """Every SQL function, in one table (filled here: module-level data would need the Python
    initialiser). All are DETERMINISTIC | INNOCUOUS | UTF8."""
    table[0] = FunctionEntry("hamming", 2, hamming_sql, NULL)
    table[1] = FunctionEntry("bit_count", 1, bit_count_sql, NULL)
    table[2] = FunctionEntry("binary_quantize", 1, binary_quantize_sql, NULL)
    table[3] = FunctionEntry("binary_quantize", 2, binary_quantize_sql, NULL)
    table[4] = FunctionEntry("int8_quantize", 2, int8_quantize_sql, NULL)
    table[5] = FunctionEntry("dot_float32", 2, dot_float32_sql, NULL)
    table[6] = FunctionEntry("dot_int8", 3, dot_int8_sql, NULL)
    table[7] = FunctionEntry("dot_bits", 2, dot_bits_sql, NULL)
    table[8] = FunctionEntry("sqlitebin_version", 0, version_sql, NULL)
    table[9] = FunctionEntry("sqlitebin_debug", 0, debug_sql, NULL)
    table[10] = FunctionEntry("sqlitebin_bm25_idf", 2, sqlitebin_bm25_idf_sql, NULL)


cdef int register_functions(sqlite3 *db, char **error) noexcept nogil:
    cdef FunctionEntry table[FUNCTION_COUNT]
    cdef int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS
    cdef int i, rc
    fill_function_table(table)
    for i in range(FUNCTION_COUNT):
        if table[i].final == NULL:
            rc = sqlite3_create_function_v2(db, table[i].name, table[i].nargs, flags, NULL,
                                            table[i].function, NULL, NULL, NULL)
        else:
            rc = sqlite3_create_function_v2(db, table[i].name, table[i].nargs, flags, NULL,
                                            NULL, table[i].function, table[i].final, NULL)
        if rc != SQLITE_OK:
            if error != NULL:
                error[0] = sqlite3_mprintf("sqlitebin: could not register %s(): %s", table[i].name, sqlite3_errmsg(db))
            return rc
    return SQLITE_OK


cdef public int sqlite3_sqlitebin_init(sqlite3 *db, char **error,
                                       const sqlite3_api_routines *api) noexcept nogil:
    """Entry point called by SQLite's load_extension; registers everything on `db`."""
    if sqlitebin_claim_api(api, error) != SQLITE_OK:
        return SQLITE_ERROR
    if select_kernels() != 0:
        if error != NULL:
            error[0] = sqlite3_mprintf("sqlitebin: SQLITEBIN_POPCOUNT must be portable, popcnt, avx2 or avx512, got '%s'",
                                       getenv("SQLITEBIN_POPCOUNT"))
        return SQLITE_ERROR
    cdef int rc = register_functions(db, error)
    if rc == SQLITE_OK:
        rc = sqlitebin_register_tokenizer(db, error)
    if rc == SQLITE_OK:
        rc = sqlitebin_register_bm25(db, error)
    if rc == SQLITE_OK:
        rc = register_vector_module(db, error)
    return rc
