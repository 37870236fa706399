# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The sqlitebin SQLite loadable extension.

Registers the SQL functions of sqlitebin (`hamming`, `bit_count`, the
quantizers, the rescoring dot products, version and debug) and the
`sqlitebin_knn` table-valued function. It is compiled from Cython but is not a
Python module: the build exports only the entry point `sqlite3_sqlitebin_init`
and drops everything unreachable from it, so no function here may touch a
Python object. Module-level statements would run only in the (discarded)
Python module initialiser, so all state is set up inside the entry point.

Bit layout, used everywhere: bit i of a vector is bit `7 - i % 8` of byte
`i // 8`, set where the value is above its threshold (exactly
`numpy.packbits(v > t)`). Float vectors are little-endian float32 BLOBs.
"""

from libc.stdint cimport uint8_t, int8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memset, strcmp, strlen
from libc.stdlib cimport getenv, qsort
from libc.math cimport isnan, isinf, rintf, sqrt, floor, fabs

from sqlite3ext cimport *

cdef extern from *:
    """
    SQLITE_EXTENSION_INIT1
    #define sqlitebin_set_api(p) SQLITE_EXTENSION_INIT2(p)
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
    void sqlitebin_set_api(const sqlite3_api_routines *api) nogil
    const char *SQLITEBIN_VERSION
    const char *SQLITEBIN_COMPILER
    const double SQLITEBIN_MAX_QUERY_MAGNITUDE
    const char *SQLITE_VERSION
    void sqlite3_result_zeroblob(sqlite3_context*, int n) nogil
    void *sqlite3_aggregate_context(sqlite3_context*, int nBytes) nogil
    int sqlite3_bind_int64(sqlite3_stmt*, int, sqlite3_int64) nogil
    int sqlite3_reset(sqlite3_stmt*) nogil
    int sqlite3_total_changes(sqlite3*) nogil
    int sqlite3_get_autocommit(sqlite3*) nogil

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
    int SQLITEBIN_NIBBLE_LEVELS
    void sqlitebin_transpose_blocks(const uint8_t *codes, size_t count, size_t code_bytes, uint8_t *out)
    uint64_t sqlitebin_hamming_strided(const uint8_t *code, size_t stride, const uint8_t *query, size_t n)
    void sqlitebin_advise_huge_pages(void *buffer, size_t size)

cdef extern from *:
    void __builtin_prefetch(const void *address) nogil

cdef extern from "scan_threads.h" nogil:
    ctypedef struct sqlitebin_work_queue:
        int64_t next
        int64_t units
    int64_t sqlitebin_work_claim(sqlitebin_work_queue *queue)
    long sqlitebin_idle_cpus()
    long sqlitebin_idle_cpus_recent()


# ---------------------------------------------------------------------------
# Kernel selection, done once per load from what the CPU reports.

cdef sqlitebin_hamming_fn hamming_kernel
cdef sqlitebin_popcount_fn popcount_kernel
cdef sqlitebin_hamming_below_fn hamming_below_kernel
cdef sqlitebin_nibble_above_fn nibble_above_kernel  # NULL below AVX2: the asymmetric scan then scores every code exactly
cdef const char *kernel_name


cdef int select_kernels() noexcept nogil:
    """Pick the fastest kernels the CPU supports: avx512 (VPOPCNTDQ + BW), avx2,
    popcnt or portable. SQLITEBIN_POPCOUNT caps the choice at one of those levels
    (the tests use it to check every kernel); it never selects instructions the
    CPU lacks. Returns -1, choosing nothing, when the variable holds another value.

    Other threads may be running queries on other connections while this runs
    (every load calls it), so the choice is made in locals and each global is
    written once, with a usable kernel: never a transient NULL."""
    global hamming_kernel, popcount_kernel, kernel_name, hamming_below_kernel, nibble_above_kernel
    cdef sqlitebin_hamming_fn hamming = sqlitebin_hamming_portable
    cdef sqlitebin_popcount_fn popcount = sqlitebin_popcount_portable
    cdef sqlitebin_hamming_below_fn hamming_below = sqlitebin_hamming_below_portable
    cdef sqlitebin_nibble_above_fn nibble_above = NULL
    cdef const char *name = "portable"
    cdef const char *cap = getenv("SQLITEBIN_POPCOUNT")
    cdef int level = 3  # 0 portable, 1 popcnt, 2 avx2, 3 avx512
    if cap != NULL and cap[0] != 0:
        if strcmp(cap, "portable") == 0:
            level = 0
        elif strcmp(cap, "popcnt") == 0:
            level = 1
        elif strcmp(cap, "avx2") == 0:
            level = 2
        elif strcmp(cap, "avx512") != 0:
            return -1
    if SQLITEBIN_HAVE_X86_KERNELS and level >= 3 and sqlitebin_cpu_has_avx512():
        hamming = sqlitebin_hamming_avx512
        popcount = sqlitebin_popcount_avx512
        hamming_below = sqlitebin_hamming_below_avx512
        nibble_above = sqlitebin_nibble_above_avx512vbmi if sqlitebin_cpu_has_avx512vbmi() else sqlitebin_nibble_above_avx512
        name = "avx512"
    elif SQLITEBIN_HAVE_X86_KERNELS and level >= 2 and sqlitebin_cpu_has_avx2():
        hamming = sqlitebin_hamming_avx2
        popcount = sqlitebin_popcount_popcnt
        hamming_below = sqlitebin_hamming_below_avx2
        nibble_above = sqlitebin_nibble_above_avx2
        name = "avx2"
    elif SQLITEBIN_HAVE_X86_KERNELS and level >= 1 and sqlitebin_cpu_has_popcnt():
        hamming = sqlitebin_hamming_popcnt
        popcount = sqlitebin_popcount_popcnt
        hamming_below = sqlitebin_hamming_below_popcnt
        name = "popcnt"
    hamming_kernel = hamming
    popcount_kernel = popcount
    hamming_below_kernel = hamming_below
    nibble_above_kernel = nibble_above
    kernel_name = name
    return 0


# ---------------------------------------------------------------------------
# Argument checking. Each helper sets the SQL error itself and returns -1, so
# a function body reads as a list of checks followed by the work.

cdef const char *type_name(int value_type) noexcept nogil:
    if value_type == SQLITE_INTEGER:
        return "INTEGER"
    if value_type == SQLITE_FLOAT:
        return "REAL"
    if value_type == SQLITE_TEXT:
        return "TEXT"
    if value_type == SQLITE_BLOB:
        return "BLOB"
    return "NULL"


cdef void result_error_owned(sqlite3_context *ctx, char *message) noexcept nogil:
    """Report `message` (from sqlite3_mprintf) as the SQL error and free it."""
    if message == NULL:
        sqlite3_result_error_nomem(ctx)
        return
    sqlite3_result_error(ctx, message, -1)
    sqlite3_free(message)


cdef bint any_null(int argc, sqlite3_value **argv) noexcept nogil:
    cdef int i
    for i in range(argc):
        if sqlite3_value_type(argv[i]) == SQLITE_NULL:
            return True
    return False


cdef int require_blob(sqlite3_context *ctx, const char *function, sqlite3_value *value,
                      int position, const char *what) noexcept nogil:
    cdef int value_type = sqlite3_value_type(value)
    if value_type != SQLITE_BLOB:
        result_error_owned(ctx, sqlite3_mprintf(
            "%s(): argument %d (%s) must be a BLOB, got %s",
            function, position, what, type_name(value_type)))
        return -1
    return 0


cdef int read_float32(sqlite3_context *ctx, const char *function, sqlite3_value *value,
                      int position, const char *what,
                      const uint8_t **data, int *count) noexcept nogil:
    """Check that `value` is a float32 BLOB of finite values; give its data and length."""
    cdef int nbytes, i
    cdef float x
    if require_blob(ctx, function, value, position, what) < 0:
        return -1
    nbytes = sqlite3_value_bytes(value)
    if nbytes % 4 != 0:
        result_error_owned(ctx, sqlite3_mprintf(
            "%s(): argument %d (%s) is %d bytes, not a whole number of float32 values (4 bytes each)",
            function, position, what, nbytes))
        return -1
    data[0] = <const uint8_t*>sqlite3_value_blob(value)
    count[0] = nbytes // 4
    for i in range(count[0]):
        memcpy(&x, data[0] + 4 * i, 4)
        if isnan(x) or isinf(x):
            result_error_owned(ctx, sqlite3_mprintf(
                "%s(): argument %d (%s) holds a non-finite value (%s) at index %d",
                function, position, what, "NaN" if isnan(x) else "infinity", i))
            return -1
    return 0


cdef inline float float_at(const uint8_t *data, Py_ssize_t i) noexcept nogil:
    cdef float x
    memcpy(&x, data + 4 * i, 4)
    return x


cdef void result_blob_owned(sqlite3_context *ctx, uint8_t *buffer, int nbytes) noexcept nogil:
    """Return `buffer` (from sqlite3_malloc64) as the BLOB result; SQLite frees it."""
    if nbytes == 0:
        sqlite3_free(buffer)
        sqlite3_result_zeroblob(ctx, 0)
    else:
        sqlite3_result_blob(ctx, buffer, nbytes, sqlite3_free)


cdef uint8_t *allocate(sqlite3_context *ctx, int nbytes) noexcept nogil:
    # One spare byte so a zero-length result still gets a real pointer.
    cdef uint8_t *buffer = <uint8_t*>sqlite3_malloc64(nbytes + 1)
    if buffer == NULL:
        sqlite3_result_error_nomem(ctx)
    return buffer


# ---------------------------------------------------------------------------
# hamming(a, b) and bit_count(a)

cdef void hamming_sql(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    if any_null(argc, argv):
        sqlite3_result_null(ctx)
        return
    if require_blob(ctx, "hamming", argv[0], 1, "a") < 0 or require_blob(ctx, "hamming", argv[1], 2, "b") < 0:
        return
    cdef int size_a = sqlite3_value_bytes(argv[0])
    cdef int size_b = sqlite3_value_bytes(argv[1])
    if size_a != size_b:
        result_error_owned(ctx, sqlite3_mprintf(
            "hamming(): BLOB sizes differ (%d vs %d bytes)", size_a, size_b))
        return
    if size_a == 0:
        sqlite3_result_int64(ctx, 0)
        return
    cdef const uint8_t *a = <const uint8_t*>sqlite3_value_blob(argv[0])
    cdef const uint8_t *b = <const uint8_t*>sqlite3_value_blob(argv[1])
    sqlite3_result_int64(ctx, <sqlite3_int64>hamming_kernel(a, b, size_a))


cdef void bit_count_sql(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    if any_null(argc, argv):
        sqlite3_result_null(ctx)
        return
    if require_blob(ctx, "bit_count", argv[0], 1, "a") < 0:
        return
    cdef int size = sqlite3_value_bytes(argv[0])
    if size == 0:
        sqlite3_result_int64(ctx, 0)
        return
    sqlite3_result_int64(ctx, <sqlite3_int64>popcount_kernel(
        <const uint8_t*>sqlite3_value_blob(argv[0]), size))


# ---------------------------------------------------------------------------
# binary_quantize(v [, thresholds]) and int8_quantize(v, ranges)

cdef void binary_quantize_sql(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    cdef const uint8_t *vector
    cdef const uint8_t *thresholds = NULL
    cdef int dim, threshold_count, i
    cdef float threshold = 0
    if any_null(argc, argv):
        sqlite3_result_null(ctx)
        return
    if read_float32(ctx, "binary_quantize", argv[0], 1, "v", &vector, &dim) < 0:
        return
    if argc == 2:
        if read_float32(ctx, "binary_quantize", argv[1], 2, "thresholds", &thresholds, &threshold_count) < 0:
            return
        if threshold_count != dim:
            result_error_owned(ctx, sqlite3_mprintf(
                "binary_quantize(): thresholds has %d values but the vector has %d",
                threshold_count, dim))
            return
    cdef int nbytes = (dim + 7) // 8
    cdef uint8_t *bits = allocate(ctx, nbytes)
    if bits == NULL:
        return
    memset(bits, 0, nbytes + 1)
    for i in range(dim):
        if thresholds != NULL:
            threshold = float_at(thresholds, i)
        if float_at(vector, i) > threshold:
            bits[i >> 3] |= <uint8_t>(0x80 >> (i & 7))
    result_blob_owned(ctx, bits, nbytes)


cdef inline int8_t int8_code(float value, float low, float high) noexcept nogil:
    """The int8 formula, written once (sqlitebin/quantize.py mirrors it):
    code = clamp(rint((v - low) * 255 / (high - low)), 0, 255) - 128 in float32,
    and -128 where high == low. Dequantized: low + (code + 128) * (high - low) / 255."""
    cdef float scale = 255
    cdef float level
    if not (high > low):
        return -128
    level = rintf(((value - low) * scale) / (high - low))
    if level < 0:
        level = 0
    elif level > 255:
        level = 255
    return <int8_t>(<int>level - 128)


cdef inline float int8_value(int8_t code, float low, float high) noexcept nogil:
    cdef float scale = 255
    return low + (<float>(<int>code + 128)) * (high - low) / scale


cdef int read_ranges(sqlite3_context *ctx, const char *function, sqlite3_value *value,
                     int position, int dim, const uint8_t **ranges) noexcept nogil:
    """Check a ranges BLOB: d float32 minimums then d maximums, each minimum <= maximum, and each
    spread small enough that 255 times it is finite in float32 (about 1.3e36)."""
    cdef int count, i
    if read_float32(ctx, function, value, position, "ranges", ranges, &count) < 0:
        return -1
    if count != 2 * dim:
        result_error_owned(ctx, sqlite3_mprintf(
            "%s(): ranges has %d values but needs %d (%d minimums then %d maximums)",
            function, count, 2 * dim, dim, dim))
        return -1
    cdef float low, high, spread, scale = 255
    for i in range(dim):
        low = float_at(ranges[0], i)
        high = float_at(ranges[0], dim + i)
        if low > high:
            result_error_owned(ctx, sqlite3_mprintf(
                "%s(): range of dimension %d has minimum %g above maximum %g",
                function, i, <double>low, <double>high))
            return -1
        # The int8 formulas run in float32: a spread whose 255-fold overflows would give
        # NaN levels (undefined when converted to an integer in C) and infinite values.
        spread = high - low
        if isinf(spread * scale):
            result_error_owned(ctx, sqlite3_mprintf(
                "%s(): range of dimension %d (%g to %g) is too wide for the int8 formula in float32",
                function, i, <double>low, <double>high))
            return -1
    return 0


cdef void int8_quantize_sql(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    cdef const uint8_t *vector
    cdef const uint8_t *ranges
    cdef int dim, i
    if any_null(argc, argv):
        sqlite3_result_null(ctx)
        return
    if read_float32(ctx, "int8_quantize", argv[0], 1, "v", &vector, &dim) < 0:
        return
    if read_ranges(ctx, "int8_quantize", argv[1], 2, dim, &ranges) < 0:
        return
    cdef uint8_t *codes = allocate(ctx, dim)
    if codes == NULL:
        return
    for i in range(dim):
        codes[i] = <uint8_t>int8_code(float_at(vector, i), float_at(ranges, i), float_at(ranges, dim + i))
    result_blob_owned(ctx, codes, dim)


# ---------------------------------------------------------------------------
# Rescoring: dot products of a float32 query with the stored representations.

cdef void dot_float32_sql(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    cdef const uint8_t *query
    cdef const uint8_t *vector
    cdef int dim_query, dim_vector, i
    cdef double total = 0
    if any_null(argc, argv):
        sqlite3_result_null(ctx)
        return
    if read_float32(ctx, "dot_float32", argv[0], 1, "query", &query, &dim_query) < 0:
        return
    if read_float32(ctx, "dot_float32", argv[1], 2, "vector", &vector, &dim_vector) < 0:
        return
    if dim_query != dim_vector:
        result_error_owned(ctx, sqlite3_mprintf(
            "dot_float32(): vector sizes differ (%d vs %d values)", dim_query, dim_vector))
        return
    for i in range(dim_query):
        total += <double>float_at(query, i) * <double>float_at(vector, i)
    sqlite3_result_double(ctx, total)


cdef void dot_int8_sql(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    cdef const uint8_t *query
    cdef const uint8_t *codes
    cdef const uint8_t *ranges
    cdef int dim, ncodes, i
    cdef double total = 0
    if any_null(argc, argv):
        sqlite3_result_null(ctx)
        return
    if read_float32(ctx, "dot_int8", argv[0], 1, "query", &query, &dim) < 0:
        return
    if require_blob(ctx, "dot_int8", argv[1], 2, "vector") < 0:
        return
    ncodes = sqlite3_value_bytes(argv[1])
    if ncodes != dim:
        result_error_owned(ctx, sqlite3_mprintf(
            "dot_int8(): the query has %d values but the int8 vector has %d", dim, ncodes))
        return
    if read_ranges(ctx, "dot_int8", argv[2], 3, dim, &ranges) < 0:
        return
    codes = <const uint8_t*>sqlite3_value_blob(argv[1])
    for i in range(dim):
        total += <double>float_at(query, i) * <double>int8_value(
            <int8_t>codes[i], float_at(ranges, i), float_at(ranges, dim + i))
    sqlite3_result_double(ctx, total)


cdef void dot_bits_sql(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    cdef const uint8_t *query
    cdef const uint8_t *bits
    cdef int dim, nbytes, i
    cdef double total = 0
    cdef double value
    if any_null(argc, argv):
        sqlite3_result_null(ctx)
        return
    if read_float32(ctx, "dot_bits", argv[0], 1, "query", &query, &dim) < 0:
        return
    if require_blob(ctx, "dot_bits", argv[1], 2, "bits") < 0:
        return
    nbytes = sqlite3_value_bytes(argv[1])
    if nbytes != (dim + 7) // 8:
        result_error_owned(ctx, sqlite3_mprintf(
            "dot_bits(): the query has %d values, which pack into %d bytes, but bits is %d bytes",
            dim, (dim + 7) // 8, nbytes))
        return
    bits = <const uint8_t*>sqlite3_value_blob(argv[1])
    for i in range(dim):
        value = <double>float_at(query, i)
        if bits[i >> 3] & (0x80 >> (i & 7)):
            total += value
        else:
            total -= value
    sqlite3_result_double(ctx, total)


# ---------------------------------------------------------------------------
# sqlitebin_ids(id): aggregate building the prefilter id set for sqlitebin_knn.
# The set is a BLOB of sorted, unique little-endian int64 ids.

ctypedef struct IdBuffer:
    int64_t *ids
    int64_t count
    int64_t capacity


cdef void ids_step(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    cdef IdBuffer *buffer
    cdef int64_t *grown
    cdef int value_type = sqlite3_value_type(argv[0])
    if value_type == SQLITE_NULL:
        return
    if value_type != SQLITE_INTEGER:
        result_error_owned(ctx, sqlite3_mprintf(
            "sqlitebin_ids(): argument 1 (id) must be an INTEGER, got %s", type_name(value_type)))
        return
    buffer = <IdBuffer*>sqlite3_aggregate_context(ctx, sizeof(IdBuffer))
    if buffer == NULL:
        sqlite3_result_error_nomem(ctx)
        return
    if buffer.count == buffer.capacity:
        grown = <int64_t*>sqlite3_realloc64(buffer.ids, (buffer.capacity * 2 + 256) * 8)
        if grown == NULL:
            sqlite3_result_error_nomem(ctx)
            return
        buffer.ids = grown
        buffer.capacity = buffer.capacity * 2 + 256
    buffer.ids[buffer.count] = sqlite3_value_int64(argv[0])
    buffer.count += 1


cdef int compare_int64(const void *a, const void *b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0]
    cdef int64_t y = (<const int64_t*>b)[0]
    return (x > y) - (x < y)


cdef void ids_final(sqlite3_context *ctx) noexcept nogil:
    cdef IdBuffer *buffer = <IdBuffer*>sqlite3_aggregate_context(ctx, 0)
    cdef int64_t unique = 0, i
    if buffer == NULL or buffer.count == 0:
        sqlite3_result_zeroblob(ctx, 0)
        if buffer != NULL:
            sqlite3_free(buffer.ids)
        return
    qsort(buffer.ids, buffer.count, 8, compare_int64)
    for i in range(buffer.count):
        if unique == 0 or buffer.ids[i] != buffer.ids[unique - 1]:
            buffer.ids[unique] = buffer.ids[i]
            unique += 1
    if unique * 8 > 2147483647:
        sqlite3_free(buffer.ids)
        sqlite3_result_error_toobig(ctx)
        return
    sqlite3_result_blob(ctx, buffer.ids, <int>(unique * 8), sqlite3_free)


# ---------------------------------------------------------------------------
# sqlitebin_knn: the top-k scan as an eponymous table-valued function.
#
#   SELECT id, distance, score FROM sqlitebin_knn(collection, query [, k [, mode [, allowed]]])
#
# It scans the collection's chunk table (thousands of codes per row) plus the
# rows of its change table not yet merged into chunks, keeping the best k in a
# bounded heap. mode 'hamming' (default) takes a packed code and orders by
# Hamming distance; mode 'asymmetric' takes the float32 query and orders by
# the dot product with the codes read as +1/-1, computed from per-query lookup
# tables (one 256-entry table per code byte) instead of unpacking bits.
# Ties are broken by the smaller id, so results are deterministic.

cdef enum:
    KNN_COLUMN_ID = 0
    KNN_COLUMN_DISTANCE = 1
    KNN_COLUMN_SCORE = 2
    KNN_COLUMN_COLLECTION = 3
    KNN_COLUMN_QUERY = 4
    KNN_COLUMN_K = 5
    KNN_COLUMN_MODE = 6
    KNN_COLUMN_ALLOWED = 7
    KNN_MAX_K = 100000
    KNN_MAX_DIM = 65536  # as Database.create_collection() allows
    MODE_HAMMING = 0
    MODE_ASYMMETRIC = 1

ctypedef struct Hit:
    double key          # what is minimised: Hamming distance, or minus the asymmetric score
    int64_t id
    uint32_t distance   # Hamming distance to the binarized query, taken from the code as it is scanned

ctypedef struct KnnCursor:
    sqlite3_vtab_cursor base
    Hit *hits           # the results, best first, once the scan is done
    int64_t count
    int64_t position
    int mode
    int dim
    uint8_t *query_code  # the query binarized with the collection's thresholds
    int code_bytes
    double score_scale   # turns a Hamming distance or a +1/-1 dot product into a cosine-like score
    int64_t *code_ids    # ids of the results, in order


cdef inline bint hit_worse(Hit a, Hit b) noexcept nogil:
    return a.key > b.key or (a.key == b.key and a.id > b.id)


cdef void heap_sift_down(Hit *heap, int64_t size, int64_t i) noexcept nogil:
    """Max-heap on (key, id): the root is the worst hit kept so far."""
    cdef int64_t child
    cdef Hit item = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and hit_worse(heap[child + 1], heap[child]):
            child += 1
        if not hit_worse(heap[child], item):
            break
        heap[i] = heap[child]
        i = child
    heap[i] = item


cdef void heap_sift_up(Hit *heap, int64_t i) noexcept nogil:
    cdef int64_t parent
    cdef Hit item = heap[i]
    while i > 0:
        parent = (i - 1) // 2
        if not hit_worse(item, heap[parent]):
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = item


ctypedef struct TopK:
    Hit *heap
    int64_t size
    int64_t k
    uint8_t *codes       # codes of the kept hits, parallel to heap slots (asymmetric mode only)


cdef inline void topk_offer(TopK *top, double key, int64_t id, uint32_t distance) noexcept nogil:
    cdef Hit hit
    hit.key = key
    hit.id = id
    hit.distance = distance
    if top.size < top.k:
        top.heap[top.size] = hit
        top.size += 1
        heap_sift_up(top.heap, top.size - 1)
    elif hit_worse(top.heap[0], hit):
        top.heap[0] = hit
        heap_sift_down(top.heap, top.size, 0)


ctypedef struct IdFilter:
    # Allowed ids: a bitmap over [low, high] when dense enough, else the sorted array.
    const int64_t *sorted_ids
    int64_t *owned_ids   # an aligned copy of the array, when the BLOB was not 8-byte aligned
    int64_t count
    int64_t low
    int64_t high
    uint8_t *bitmap


cdef bint id_in_sorted(const int64_t *ids, int64_t count, int64_t id) noexcept nogil:
    cdef int64_t lo = 0, hi = count, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if ids[mid] < id:
            lo = mid + 1
        else:
            hi = mid
    return lo < count and ids[lo] == id


cdef inline bint filter_allows(const IdFilter *f, int64_t id) noexcept nogil:
    if f == NULL:
        return True
    if id < f.low or id > f.high:
        return False
    if f.bitmap != NULL:
        return (f.bitmap[(id - f.low) >> 3] >> ((id - f.low) & 7)) & 1
    return id_in_sorted(f.sorted_ids, f.count, id)


cdef inline int64_t read_int64(const uint8_t *blob, int64_t i) noexcept nogil:
    cdef int64_t value
    memcpy(&value, blob + 8 * i, 8)
    return value


cdef int64_t first_unsorted_id(const uint8_t *blob, int64_t count) noexcept nogil:
    """Index of the first id smaller than the one before it, or -1 when the ids ascend.
    The filter's bitmap and binary search rely on the order sqlitebin_ids() gives."""
    cdef int64_t i, previous, current
    for i in range(1, count):
        memcpy(&previous, blob + 8 * (i - 1), 8)
        memcpy(&current, blob + 8 * i, 8)
        if current < previous:
            return i
    return -1


cdef int filter_build(IdFilter *f, const uint8_t *blob, int nbytes) noexcept nogil:
    """Build the filter from ascending ids (checked by the caller with first_unsorted_id)."""
    cdef int64_t i, offset
    cdef uint64_t span
    f.count = nbytes // 8
    f.sorted_ids = <const int64_t*>blob
    f.bitmap = NULL
    if f.count == 0:
        f.low = 1
        f.high = 0
        return SQLITE_OK
    memcpy(&f.low, blob, 8)
    memcpy(&f.high, blob + 8 * (f.count - 1), 8)
    # Unsigned, so ids far apart cannot overflow; a span of 2^64 wraps to 0 and gets no bitmap.
    span = <uint64_t>f.high - <uint64_t>f.low + 1
    # A bitmap costs span/8 bytes; use it when that is at most the size of the id list times 8.
    if span > 0 and span <= <uint64_t>(64 * f.count + 4096):
        f.bitmap = <uint8_t*>sqlite3_malloc64(span // 8 + 1)
        if f.bitmap == NULL:
            return SQLITE_NOMEM
        memset(f.bitmap, 0, span // 8 + 1)
        for i in range(f.count):
            memcpy(&offset, blob + 8 * i, 8)
            offset -= f.low
            f.bitmap[offset >> 3] |= <uint8_t>(1 << (offset & 7))
    elif (<size_t>blob) % 8 != 0:
        # The binary search reads the array in place, so it must be aligned.
        f.owned_ids = <int64_t*>sqlite3_malloc64(nbytes)
        if f.owned_ids == NULL:
            return SQLITE_NOMEM
        memcpy(f.owned_ids, blob, nbytes)
        f.sorted_ids = f.owned_ids
    return SQLITE_OK


cdef void filter_free(IdFilter *f) noexcept nogil:
    sqlite3_free(f.bitmap)
    sqlite3_free(f.owned_ids)


cdef void build_lookup_tables(const float *query, int dim, int code_bytes, float *tables) noexcept nogil:
    """tables[j * 256 + b] = sum of the query values whose bits are set in byte value b at code byte j."""
    cdef int j, b, low_bit, dimension
    for j in range(code_bytes):
        tables[j * 256] = 0
        for b in range(1, 256):
            low_bit = 0
            while not ((b >> low_bit) & 1):
                low_bit += 1
            dimension = j * 8 + (7 - low_bit)
            tables[j * 256 + b] = tables[j * 256 + (b & (b - 1))] + (query[dimension] if dimension < dim else 0)


cdef int build_nibble_tables(const float *query, int dim, int code_bytes, uint8_t *tables,
                             double *scale, double *high) noexcept nogil:
    """uint8 nibble tables for the fast scan (layout in scan_kernels.h) and their error bound.

    Table entry (j, nibble n) is the sum of the query values of the 4 dimensions
    that nibble covers with bits set in n; each table is shifted by its minimum
    and quantized to 0..SQLITEBIN_NIBBLE_LEVELS with one step for all tables. The sum of the exact entries is
    then at most scale * (sum of quantized entries) + high, where `high` adds the
    minimums and the worst-case rounding (half a step per table)."""
    cdef int j, half, n, r, dimension, t
    cdef double values[256]  # 2 tables x 16 entries, then reused per byte
    cdef double step = 0, low, top, offset = 0, level
    cdef double *minimum = <double*>sqlite3_malloc64(16 * code_bytes + 16)
    if minimum == NULL:
        return SQLITE_NOMEM
    # Pass 1: the widest table fixes the step.
    for pass_number in range(2):
        for j in range(code_bytes):
            for half in range(2):
                t = 2 * j + half
                low = 0
                top = 0
                for n in range(16):
                    values[n] = 0
                    for r in range(4):
                        dimension = 8 * j + 4 * half + r
                        if (n >> (3 - r)) & 1 and dimension < dim:
                            values[n] += query[dimension]
                    if values[n] < low:
                        low = values[n]
                    if values[n] > top:
                        top = values[n]
                if pass_number == 0:
                    minimum[t] = low
                    if top - low > step:
                        step = top - low
                    continue
                for n in range(16):
                    level = floor((values[n] - low) / step + 0.5) if step > 0 else 0
                    if level > SQLITEBIN_NIBBLE_LEVELS:
                        level = SQLITEBIN_NIBBLE_LEVELS
                    tables[64 * j + 32 * half + n] = <uint8_t>level
                    tables[64 * j + 32 * half + 16 + n] = <uint8_t>level
        if pass_number == 0:
            step = step / SQLITEBIN_NIBBLE_LEVELS
            for t in range(2 * code_bytes):
                offset += minimum[t]
    sqlite3_free(minimum)
    scale[0] = step
    # Rounding error: half a step per table; a little more for float rounding in the exact sums.
    high[0] = offset + code_bytes * step + 1e-4
    return SQLITE_OK


cdef inline float asymmetric_sum(const float *tables, const uint8_t *code, int code_bytes,
                                 int stride) noexcept nogil:
    """Sum of the query values at the code's set bits, four table lookups per step.
    Byte j of the code is at code[j * stride]: 1 for a row-major code, the block
    width for one in the scan-ready layout. The same additions in the same order
    either way, so every scan path gives the same float."""
    cdef float s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef int j = 0
    while j + 4 <= code_bytes:
        s0 += tables[j * 256 + code[j * stride]]
        s1 += tables[(j + 1) * 256 + code[(j + 1) * stride]]
        s2 += tables[(j + 2) * 256 + code[(j + 2) * stride]]
        s3 += tables[(j + 3) * 256 + code[(j + 3) * stride]]
        j += 4
    while j < code_bytes:
        s0 += tables[j * 256 + code[j * stride]]
        j += 1
    return (s0 + s1) + (s2 + s3)


ctypedef struct ScanContext:
    int mode
    int code_bytes
    const uint8_t *query_code
    const float *tables
    double query_sum
    const IdFilter *allowed
    # Ids whose chunk entries are stale (deleted or changed since the chunk was written).
    const int64_t *changed_ids
    int64_t changed_count
    TopK top
    # The kernels of this query, read once from the globals (a load elsewhere may replace them).
    sqlitebin_hamming_fn hamming
    sqlitebin_hamming_below_fn hamming_below
    sqlitebin_nibble_above_fn nibble_above
    # Asymmetric fast scan: the true sum of a code is at most
    # approx_scale * (its nibble sum) + approx_high, so a code whose best case
    # cannot enter the heap is skipped without computing its exact score.
    const uint8_t *nibble_tables
    const uint8_t *blocked   # the chunk codes in the scan-ready layout (scan_kernels.h)
    double approx_scale
    double approx_high


cdef enum:
    SCAN_BLOCK = 1024  # codes per kernel call; the threshold is refreshed from the heap between calls
    # The nibble bound is looser than an exact distance, so a stale threshold lets more codes through
    # to exact scoring: the asymmetric scan refreshes it more often.
    NIBBLE_SCAN_BLOCK = 256


cdef inline uint32_t hamming_threshold(const TopK *top) noexcept nogil:
    """The largest distance that can still enter the heap (ties may, by id)."""
    return 0xFFFFFFFF if top.size < top.k else <uint32_t>top.heap[0].key


cdef inline uint32_t nibble_threshold(const ScanContext *scan) noexcept nogil:
    """The smallest nibble sum whose best case can still enter the heap: a code
    can only if query_sum - 2 * (approx_scale * sum + approx_high) <= the worst
    key kept. Rounded down by one more step, so float rounding never drops one."""
    cdef double needed
    if scan.top.size < scan.top.k:
        return 0
    needed = (scan.query_sum - scan.top.heap[0].key) * 0.5 - scan.approx_high
    if scan.approx_scale <= 0:
        return 0 if needed <= 0 else SQLITEBIN_NO_CANDIDATE
    needed = floor(needed / scan.approx_scale) - 1
    if needed <= 0:
        return 0
    if needed >= 65536:
        return SQLITEBIN_NO_CANDIDATE
    return <uint32_t>needed


cdef void scan_codes(ScanContext *scan, const uint8_t *ids_blob, const uint8_t *codes, int64_t count,
                     bint skip_changed, int64_t blocked_first) noexcept nogil:
    """Offer `count` codes to the top-k. A kernel scores a block of codes and
    emits only those that can still enter the heap (at or below the k-th best
    distance, or with a nibble bound that could reach it); the exact score and
    the id checks are for those few. `blocked_first` is the position of these
    codes in scan.blocked, or -1 when they are not in it."""
    cdef int64_t start, i, n, m, e, id, position = 0
    cdef uint32_t distance
    cdef const uint8_t *transposed
    cdef int code_bytes = scan.code_bytes
    cdef double key
    cdef uint32_t indices[SCAN_BLOCK]
    cdef uint32_t distances[SCAN_BLOCK]
    cdef TopK *top = &scan.top
    cdef bint hamming = scan.mode == MODE_HAMMING
    cdef bint nibble = not hamming and blocked_first >= 0 and scan.nibble_above != NULL and scan.blocked != NULL
    start = 0
    while start < count:
        n = count - start if count - start < SCAN_BLOCK else SCAN_BLOCK
        if nibble and n > NIBBLE_SCAN_BLOCK:
            n = NIBBLE_SCAN_BLOCK
        if hamming:
            m = <int64_t>scan.hamming_below(codes + start * code_bytes, n, code_bytes, scan.query_code,
                                            hamming_threshold(top), indices, distances)
        elif nibble:
            m = <int64_t>scan.nibble_above(scan.blocked, blocked_first + start, n, code_bytes,
                                           scan.nibble_tables, nibble_threshold(scan), indices)
        else:
            m = n
        if nibble:
            # The ids of the few candidates are far apart in memory: request them all before scoring any.
            for e in range(m):
                __builtin_prefetch(ids_blob + 8 * (start + indices[e]))
        for e in range(m):
            if hamming:
                i = start + indices[e]
                key = <double>distances[e]
            elif nibble:
                # Scored from the scan-ready copy the kernel has just read (in cache), not the row-major codes.
                i = start + indices[e]
                position = blocked_first + i
                transposed = (scan.blocked + (position // SQLITEBIN_NIBBLE_BLOCK) * code_bytes * SQLITEBIN_NIBBLE_BLOCK
                              + position % SQLITEBIN_NIBBLE_BLOCK)
                key = scan.query_sum - 2.0 * <double>asymmetric_sum(scan.tables, transposed, code_bytes,
                                                                    SQLITEBIN_NIBBLE_BLOCK)
            else:
                i = start + e
                key = scan.query_sum - 2.0 * <double>asymmetric_sum(scan.tables, codes + i * code_bytes, code_bytes, 1)
            if top.size == top.k and key > top.heap[0].key:
                continue
            memcpy(&id, ids_blob + 8 * i, 8)
            if scan.allowed != NULL and not filter_allows(scan.allowed, id):
                continue
            if skip_changed and id_in_sorted(scan.changed_ids, scan.changed_count, id):
                continue
            # The Hamming distance reported beside an asymmetric score, from the code at hand: only codes
            # entering the heap pay for it, and no lookup of the results' codes is needed afterwards.
            if hamming:
                distance = distances[e]
            elif nibble:
                distance = <uint32_t>sqlitebin_hamming_strided(transposed, SQLITEBIN_NIBBLE_BLOCK, scan.query_code, code_bytes)
            else:
                distance = <uint32_t>scan.hamming(codes + i * code_bytes, scan.query_code, code_bytes)
            topk_offer(top, key, id, distance)
        start += n


# ---------------------------------------------------------------------------
# Two threads for large scans, only when they pay. The chunks are cut into
# units of SCAN_UNIT_CODES codes; the calling thread and one worker each claim
# the next unclaimed unit (scan_threads.h) and scan it into their own heap,
# merged at the end. Ties are broken by id, so the result does not depend on
# who scanned what. A worker that starts late or shares a busy core claims
# fewer units, and none is started unless a CPU is idle, so the split never
# costs much more than one thread. The worker calls no SQLite routine.

cdef enum:
    PARALLEL_MIN_CODES = 262144
    SCAN_UNIT_CODES = 32768

ctypedef struct ScanJob:
    ScanContext scan
    const ChunkData *chunks
    sqlitebin_work_queue *queue


cdef void scan_chunk(ScanContext *scan, const ChunkData *chunks, int64_t j) noexcept nogil:
    cdef int64_t start = chunks.chunk_start[j]
    if scan.allowed != NULL and (chunks.chunk_max[j] < scan.allowed.low or chunks.chunk_min[j] > scan.allowed.high):
        return
    scan_codes(scan, <const uint8_t*>(chunks.ids + start), chunks.codes + start * scan.code_bytes,
               chunks.chunk_start[j + 1] - start,
               scan.changed_count > 0 and not (chunks.chunk_max[j] < scan.changed_ids[0]
                                               or chunks.chunk_min[j] > scan.changed_ids[scan.changed_count - 1]),
               start)


cdef int64_t first_chunk_from(const ChunkData *chunks, int64_t position) noexcept nogil:
    """The first chunk starting at or after code `position`."""
    cdef int64_t lo = 0, hi = chunks.chunk_count, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if chunks.chunk_start[mid] < position:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef void scan_units(ScanJob *job) noexcept nogil:
    """Claim units until none is left; unit u is the chunks starting in its span of codes."""
    cdef int64_t unit, j, end
    while True:
        unit = sqlitebin_work_claim(job.queue)
        if unit >= job.queue.units:
            return
        j = first_chunk_from(job.chunks, unit * SCAN_UNIT_CODES)
        end = first_chunk_from(job.chunks, (unit + 1) * SCAN_UNIT_CODES)
        while j < end:
            scan_chunk(&job.scan, job.chunks, j)
            j += 1


cdef void *scan_thread(void *argument) noexcept nogil:
    scan_units(<ScanJob*>argument)
    return NULL


cdef bint use_two_threads(int64_t codes) noexcept nogil:
    """Unset SQLITEBIN_THREADS: two threads for large scans while a CPU is idle;
    "1": never; "2": always (the tests use it to check the split on small data)."""
    cdef const char *setting = getenv("SQLITEBIN_THREADS")
    if setting != NULL and strcmp(setting, "1") == 0:
        return False
    if setting != NULL and strcmp(setting, "2") == 0:
        return codes > 0
    return codes >= PARALLEL_MIN_CODES and sqlitebin_idle_cpus_recent() >= 1


cdef int scan_chunks(ScanContext *scan, ChunkData *chunks) noexcept nogil:
    """Scan every chunk into scan.top, on one thread or two."""
    cdef int64_t total = chunks.chunk_start[chunks.chunk_count], i
    cdef sqlitebin_work_queue queue
    cdef ScanJob here, there
    cdef pthread_t thread
    cdef bint started = False
    queue.next = 0
    queue.units = (total + SCAN_UNIT_CODES - 1) // SCAN_UNIT_CODES + 1  # the last unit holds any empty chunks after the codes
    here.scan = scan[0]
    here.chunks = chunks
    here.queue = &queue
    if use_two_threads(total):
        there = here
        there.scan.top.size = 0
        there.scan.top.heap = <Hit*>sqlite3_malloc64(sizeof(Hit) * there.scan.top.k)
        if there.scan.top.heap == NULL:
            return SQLITE_NOMEM
        started = pthread_create(&thread, NULL, scan_thread, &there) == 0
        if not started:
            sqlite3_free(there.scan.top.heap)
    scan_units(&here)
    if started:
        pthread_join(thread, NULL)
        for i in range(there.scan.top.size):
            topk_offer(&here.scan.top, there.scan.top.heap[i].key, there.scan.top.heap[i].id,
                       there.scan.top.heap[i].distance)
        sqlite3_free(there.scan.top.heap)
    scan[0] = here.scan
    return SQLITE_OK


# ---------------------------------------------------------------------------
# The chunk cache. Reading a million codes out of chunk BLOBs costs SQLite a
# copy through its page cache on every query (tens of milliseconds on a file
# database); each connection therefore keeps the chunks of its recently used
# collections in memory. An entry is used only while nothing can have changed
# the chunk table since it was read: no explicit transaction is open, this
# connection has made no change (sqlite3_total_changes), no other connection
# has committed (PRAGMA data_version) and the schema is the same (PRAGMA
# schema_version). Memory: 8 + code_bytes bytes per code, per connection.

cdef enum:
    CACHE_ENTRIES = 4

ctypedef struct ChunkData:
    char *collection       # sqlite3_mprintf copy; NULL for an empty slot
    int code_bytes
    int64_t chunk_count
    int64_t *chunk_start   # chunk_count + 1 offsets into ids/codes
    int64_t *chunk_min
    int64_t *chunk_max
    int64_t *ids
    uint8_t *codes
    uint8_t *blocked       # codes transposed in blocks of 32 for the nibble scan; made on first need
    int64_t data_version
    int64_t schema_version
    int total_changes
    int64_t last_used


cdef void chunk_data_free(ChunkData *d) noexcept nogil:
    sqlite3_free(d.collection)
    sqlite3_free(d.chunk_start)
    sqlite3_free(d.chunk_min)
    sqlite3_free(d.chunk_max)
    sqlite3_free(d.ids)
    sqlite3_free(d.codes)
    sqlite3_free(d.blocked)
    memset(d, 0, sizeof(ChunkData))


cdef int read_versions(sqlite3 *db, int64_t *data_version, int64_t *schema_version) noexcept nogil:
    cdef sqlite3_stmt *stmt = NULL
    cdef int rc = sqlite3_prepare_v2(
        db, "SELECT (SELECT data_version FROM pragma_data_version), (SELECT schema_version FROM pragma_schema_version)",
        -1, &stmt, NULL)
    if rc == SQLITE_OK:
        rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW:
            data_version[0] = sqlite3_column_int64(stmt, 0)
            schema_version[0] = sqlite3_column_int64(stmt, 1)
            rc = SQLITE_OK
    sqlite3_finalize(stmt)
    return rc


cdef int chunk_data_load(sqlite3 *db, sqlite3_vtab_cursor *cursor, const char *collection, int code_bytes,
                         ChunkData *d) noexcept nogil:
    """Read every chunk of `collection` into `d` (contiguous ids and codes)."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int64_t total = 0, chunks = 0, count, position = 0, chunk = 0
    cdef int rc
    cdef char *sql = sqlite3_mprintf('SELECT count(*), coalesce(sum(count), 0) FROM "%w_chunks"', collection)
    if sql == NULL:
        return SQLITE_NOMEM
    rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)
    sqlite3_free(sql)
    if rc != SQLITE_OK:
        sqlite3_finalize(stmt)
        return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): cannot read the chunks of collection '%q': %s",
                                                collection, sqlite3_errmsg(db)))
    if sqlite3_step(stmt) == SQLITE_ROW:
        chunks = sqlite3_column_int64(stmt, 0)
        total = sqlite3_column_int64(stmt, 1)
    sqlite3_finalize(stmt)
    stmt = NULL
    d.code_bytes = code_bytes
    d.chunk_start = <int64_t*>sqlite3_malloc64(8 * (chunks + 1))
    d.chunk_min = <int64_t*>sqlite3_malloc64(8 * chunks + 8)
    d.chunk_max = <int64_t*>sqlite3_malloc64(8 * chunks + 8)
    d.ids = <int64_t*>sqlite3_malloc64(8 * total + 8)
    d.codes = <uint8_t*>sqlite3_malloc64(total * code_bytes + 1)
    if d.chunk_start == NULL or d.chunk_min == NULL or d.chunk_max == NULL or d.ids == NULL or d.codes == NULL:
        return SQLITE_NOMEM
    sqlitebin_advise_huge_pages(d.codes, total * code_bytes)  # the scan streams through it
    sql = sqlite3_mprintf('SELECT count, min_id, max_id, ids, codes FROM "%w_chunks"', collection)
    if sql == NULL:
        return SQLITE_NOMEM
    rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)
    sqlite3_free(sql)
    while rc == SQLITE_OK:
        rc = sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            break
        rc = SQLITE_OK
        count = sqlite3_column_int64(stmt, 0)
        if (chunk >= chunks or position + count > total or count < 0
                or sqlite3_column_bytes(stmt, 3) != count * 8 or sqlite3_column_bytes(stmt, 4) != count * code_bytes):
            rc = knn_fail(cursor, sqlite3_mprintf(
                "sqlitebin_knn(): a chunk of collection '%q' is malformed (%lld codes, %d id bytes, %d code bytes)",
                collection, count, sqlite3_column_bytes(stmt, 3), sqlite3_column_bytes(stmt, 4)))
            break
        d.chunk_start[chunk] = position
        d.chunk_min[chunk] = sqlite3_column_int64(stmt, 1)
        d.chunk_max[chunk] = sqlite3_column_int64(stmt, 2)
        if count > 0:
            memcpy(d.ids + position, sqlite3_column_blob(stmt, 3), count * 8)
            if code_bytes > 0:
                memcpy(d.codes + position * code_bytes, sqlite3_column_blob(stmt, 4), count * code_bytes)
        position += count
        chunk += 1
    if rc == SQLITE_DONE:
        rc = SQLITE_OK
    sqlite3_finalize(stmt)
    d.chunk_count = chunk
    d.chunk_start[chunk] = position
    return rc


cdef int chunk_data_get(KnnTable *table, sqlite3_vtab_cursor *cursor, const char *collection, int code_bytes,
                        ChunkData **result, ChunkData *uncached) noexcept nogil:
    """The chunks of `collection`: a valid cache entry, a newly filled one, or (inside an
    explicit transaction, where no entry can be trusted) `uncached`, which the caller frees."""
    cdef int64_t data_version = 0, schema_version = 0
    cdef int total_changes = sqlite3_total_changes(table.db)
    cdef int i, rc, victim = 0
    cdef ChunkData *d
    cdef bint cacheable = sqlite3_get_autocommit(table.db) != 0
    if cacheable:
        rc = read_versions(table.db, &data_version, &schema_version)
        if rc != SQLITE_OK:
            return rc
        table.clock += 1
        for i in range(CACHE_ENTRIES):
            d = &table.cache[i]
            if d.collection == NULL or strcmp(d.collection, collection) != 0:
                continue
            if (d.data_version == data_version and d.schema_version == schema_version
                    and d.total_changes == total_changes and d.code_bytes == code_bytes):
                d.last_used = table.clock
                result[0] = d
                return SQLITE_OK
            chunk_data_free(d)
        for i in range(CACHE_ENTRIES):
            if table.cache[i].collection == NULL:
                victim = i
                break
            if table.cache[i].last_used < table.cache[victim].last_used:
                victim = i
        d = &table.cache[victim]
        chunk_data_free(d)
    else:
        d = uncached
    rc = chunk_data_load(table.db, cursor, collection, code_bytes, d)
    if rc != SQLITE_OK:
        chunk_data_free(d)
        return rc
    if cacheable:
        d.collection = sqlite3_mprintf("%s", collection)
        if d.collection == NULL:
            chunk_data_free(d)
            return SQLITE_NOMEM
        d.data_version = data_version
        d.schema_version = schema_version
        d.total_changes = total_changes
        d.last_used = table.clock
    result[0] = d
    return SQLITE_OK


ctypedef struct KnnTable:
    sqlite3_vtab base
    sqlite3 *db          # the scan reads the collection's tables through it
    ChunkData cache[CACHE_ENTRIES]
    int64_t clock


cdef inline sqlite3 *knn_db(sqlite3_vtab_cursor *cursor) noexcept nogil:
    return (<KnnTable*>cursor.pVtab).db


cdef int knn_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                     sqlite3_vtab **vtab, char **error) noexcept nogil:
    cdef int rc = sqlite3_declare_vtab(db,
        "CREATE TABLE x(id INTEGER, distance INTEGER, score REAL, "
        "collection HIDDEN, query HIDDEN, k HIDDEN, mode HIDDEN, allowed HIDDEN)")
    if rc != SQLITE_OK:
        return rc
    cdef KnnTable *table = <KnnTable*>sqlite3_malloc64(sizeof(KnnTable))
    if table == NULL:
        return SQLITE_NOMEM
    memset(table, 0, sizeof(KnnTable))
    table.db = db
    vtab[0] = &table.base
    sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS)
    return SQLITE_OK


cdef int knn_disconnect(sqlite3_vtab *vtab) noexcept nogil:
    cdef KnnTable *table = <KnnTable*>vtab
    cdef int i
    for i in range(CACHE_ENTRIES):
        chunk_data_free(&table.cache[i])
    sqlite3_free(vtab)
    return SQLITE_OK


cdef int knn_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) noexcept nogil:
    """Pass each hidden-column equality to xFilter; idxNum is the bitmask of those present."""
    cdef int i, column, bit, mask = 0, next_argument = 1
    cdef int argument_of[8]
    for i in range(8):
        argument_of[i] = -1
    for i in range(info.nConstraint):
        column = info.aConstraint[i].iColumn
        if column < KNN_COLUMN_COLLECTION or info.aConstraint[i].op != SQLITE_INDEX_CONSTRAINT_EQ:
            continue
        if not info.aConstraint[i].usable:
            if column == KNN_COLUMN_COLLECTION or column == KNN_COLUMN_QUERY:
                return SQLITE_CONSTRAINT
            continue
        argument_of[column] = i
    if argument_of[KNN_COLUMN_COLLECTION] < 0 or argument_of[KNN_COLUMN_QUERY] < 0:
        vtab.zErrMsg = sqlite3_mprintf(
            "sqlitebin_knn(): needs at least a collection name and a query, "
            "as in sqlitebin_knn('docs', :query, 10)")
        return SQLITE_ERROR
    for column in range(KNN_COLUMN_COLLECTION, KNN_COLUMN_ALLOWED + 1):
        if argument_of[column] >= 0:
            info.aConstraintUsage[argument_of[column]].argvIndex = next_argument
            info.aConstraintUsage[argument_of[column]].omit = 1
            next_argument += 1
            mask |= 1 << (column - KNN_COLUMN_COLLECTION)
    info.idxNum = mask
    info.estimatedCost = 1000000.0
    info.estimatedRows = 10
    return SQLITE_OK


cdef int knn_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **cursor) noexcept nogil:
    cdef KnnCursor *c = <KnnCursor*>sqlite3_malloc64(sizeof(KnnCursor))
    if c == NULL:
        return SQLITE_NOMEM
    memset(c, 0, sizeof(KnnCursor))
    cursor[0] = &c.base
    return SQLITE_OK


cdef void knn_reset(KnnCursor *c) noexcept nogil:
    sqlite3_free(c.hits)
    sqlite3_free(c.query_code)
    c.hits = NULL
    c.query_code = NULL
    c.count = 0
    c.position = 0


cdef int knn_close(sqlite3_vtab_cursor *cursor) noexcept nogil:
    knn_reset(<KnnCursor*>cursor)
    sqlite3_free(cursor)
    return SQLITE_OK


cdef int knn_fail(sqlite3_vtab_cursor *cursor, char *message) noexcept nogil:
    """Set the error message (from sqlite3_mprintf) on the table and return SQLITE_ERROR."""
    sqlite3_free(cursor.pVtab.zErrMsg)
    cursor.pVtab.zErrMsg = message
    return SQLITE_ERROR if message != NULL else SQLITE_NOMEM


cdef int read_collection(sqlite3 *db, sqlite3_vtab_cursor *cursor, const char *name,
                         int *dim, uint8_t **thresholds) noexcept nogil:
    """Read dim and thresholds (a float32 BLOB, or NULL for zeros) from the registry."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int rc = sqlite3_prepare_v2(db, "SELECT dim, thresholds FROM sqlitebin_collections WHERE name = ?1",
                                     -1, &stmt, NULL)
    if rc != SQLITE_OK:
        sqlite3_finalize(stmt)
        return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): no collection named '%q' (this database has no sqlitebin collections)", name))
    sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC)
    rc = sqlite3_step(stmt)
    if rc != SQLITE_ROW:
        sqlite3_finalize(stmt)
        return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): no collection named '%q'", name))
    cdef sqlite3_int64 stored_dim = sqlite3_column_int64(stmt, 0)
    if stored_dim < 1 or stored_dim > KNN_MAX_DIM:
        # A damaged or hand-edited registry: say so, rather than fail on a huge or negative allocation.
        sqlite3_finalize(stmt)
        return knn_fail(cursor, sqlite3_mprintf(
            "sqlitebin_knn(): collection '%q' has dimension %lld in sqlitebin_collections, outside 1 to %d",
            name, stored_dim, <int>KNN_MAX_DIM))
    dim[0] = <int>stored_dim
    thresholds[0] = NULL
    cdef int nbytes = sqlite3_column_bytes(stmt, 1)
    if sqlite3_column_type(stmt, 1) == SQLITE_BLOB and nbytes == 4 * dim[0] and nbytes > 0:
        thresholds[0] = <uint8_t*>sqlite3_malloc64(nbytes)
        if thresholds[0] == NULL:
            sqlite3_finalize(stmt)
            return SQLITE_NOMEM
        memcpy(thresholds[0], sqlite3_column_blob(stmt, 1), nbytes)
    sqlite3_finalize(stmt)
    return SQLITE_OK


cdef int knn_filter(sqlite3_vtab_cursor *cursor, int idx_num, const char *idx_str,
                    int argc, sqlite3_value **argv) noexcept nogil:
    cdef KnnCursor *c = <KnnCursor*>cursor
    cdef sqlite3 *db
    cdef int argument = 0, rc = SQLITE_OK, dim = 0, i, query_type, code_bytes
    cdef const char *collection
    cdef const char *mode_text
    cdef sqlite3_value *query_value
    cdef sqlite3_value *allowed_value = NULL
    cdef int64_t k = 10
    cdef uint8_t *thresholds = NULL
    cdef float *query_floats = NULL
    cdef float *tables = NULL
    cdef float value, threshold
    cdef IdFilter allowed
    cdef bint have_allowed = False
    cdef const uint8_t *allowed_blob = NULL
    cdef sqlite3_stmt *stmt = NULL
    cdef int64_t *changed_ids = NULL
    cdef int64_t changed_count = 0, changed_capacity = 0, count, n, j
    cdef int64_t *grown
    cdef uint8_t *pending_codes = NULL
    cdef int64_t *pending_ids = NULL
    cdef int64_t pending_count = 0
    cdef ScanContext scan
    cdef char *sql = NULL
    cdef ChunkData uncached
    cdef ChunkData *chunks = NULL
    cdef Hit hit
    cdef uint8_t *nibble_tables = NULL
    cdef int64_t blocks, unsorted
    cdef double magnitude = 0

    knn_reset(c)
    memset(&uncached, 0, sizeof(ChunkData))
    memset(&scan, 0, sizeof(ScanContext))
    memset(&allowed, 0, sizeof(IdFilter))
    # Read once: a load on another connection may change the globals between a check and a call.
    scan.hamming = hamming_kernel
    scan.hamming_below = hamming_below_kernel
    scan.nibble_above = nibble_above_kernel
    db = knn_db(cursor)

    # Arguments, in column order, as knn_best_index laid them out.
    if sqlite3_value_type(argv[argument]) != SQLITE_TEXT:
        return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): collection must be TEXT, got %s",
                                                type_name(sqlite3_value_type(argv[argument]))))
    collection = <const char*>sqlite3_value_text(argv[argument])
    if collection == NULL:
        return SQLITE_NOMEM
    if <int>strlen(collection) != sqlite3_value_bytes(argv[argument]):
        # Names never hold NUL; without this check 'a' || char(0) || 'b' would search collection 'a'.
        return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): collection name '%q' is followed by a NUL character",
                                                collection))
    argument += 1
    query_value = argv[argument]
    argument += 1
    if idx_num & (1 << (KNN_COLUMN_K - KNN_COLUMN_COLLECTION)):
        if sqlite3_value_type(argv[argument]) != SQLITE_INTEGER:
            return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): k must be an INTEGER, got %s",
                                                    type_name(sqlite3_value_type(argv[argument]))))
        k = sqlite3_value_int64(argv[argument])
        argument += 1
        if k < 1 or k > KNN_MAX_K:
            return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): k must be from 1 to %d, got %lld",
                                                    <int>KNN_MAX_K, k))
    c.mode = MODE_HAMMING
    if idx_num & (1 << (KNN_COLUMN_MODE - KNN_COLUMN_COLLECTION)):
        if sqlite3_value_type(argv[argument]) != SQLITE_NULL:
            mode_text = <const char*>sqlite3_value_text(argv[argument])
            if mode_text == NULL:
                return SQLITE_NOMEM
            if strcmp(mode_text, "asymmetric") == 0:
                c.mode = MODE_ASYMMETRIC
            elif strcmp(mode_text, "hamming") != 0:
                return knn_fail(cursor, sqlite3_mprintf(
                    "sqlitebin_knn(): mode must be 'hamming' or 'asymmetric', got '%q'", mode_text))
        argument += 1
    if idx_num & (1 << (KNN_COLUMN_ALLOWED - KNN_COLUMN_COLLECTION)):
        allowed_value = argv[argument]
        argument += 1
        if sqlite3_value_type(allowed_value) == SQLITE_NULL:
            allowed_value = NULL
        elif sqlite3_value_type(allowed_value) != SQLITE_BLOB or sqlite3_value_bytes(allowed_value) % 8 != 0:
            return knn_fail(cursor, sqlite3_mprintf(
                "sqlitebin_knn(): allowed must be an id set from sqlitebin_ids() (a BLOB of 8-byte ids), got %s of %d bytes",
                type_name(sqlite3_value_type(allowed_value)), sqlite3_value_bytes(allowed_value)))
        else:
            unsorted = first_unsorted_id(<const uint8_t*>sqlite3_value_blob(allowed_value),
                                         sqlite3_value_bytes(allowed_value) // 8)
            if unsorted >= 0:
                return knn_fail(cursor, sqlite3_mprintf(
                    "sqlitebin_knn(): allowed must hold ids in ascending order, as sqlitebin_ids() makes them; "
                    "id %lld at position %lld is smaller than the one before it",
                    read_int64(<const uint8_t*>sqlite3_value_blob(allowed_value), unsorted), unsorted))

    rc = read_collection(db, cursor, collection, &dim, &thresholds)
    if rc != SQLITE_OK:
        return rc
    code_bytes = (dim + 7) // 8
    c.dim = dim
    c.code_bytes = code_bytes

    # The query: a packed code (hamming) or float32 values (asymmetric).
    query_type = sqlite3_value_type(query_value)
    if query_type != SQLITE_BLOB:
        sqlite3_free(thresholds)
        return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): query must be a BLOB, got %s", type_name(query_type)))
    c.query_code = <uint8_t*>sqlite3_malloc64(code_bytes + 1)
    if c.query_code == NULL:
        sqlite3_free(thresholds)
        return SQLITE_NOMEM
    memset(c.query_code, 0, code_bytes + 1)
    if c.mode == MODE_HAMMING:
        if sqlite3_value_bytes(query_value) != code_bytes:
            sqlite3_free(thresholds)
            return knn_fail(cursor, sqlite3_mprintf(
                "sqlitebin_knn(): collection '%q' has %d-bit codes, so a hamming query is %d bytes; got %d",
                collection, dim, code_bytes, sqlite3_value_bytes(query_value)))
        if code_bytes > 0:
            memcpy(c.query_code, sqlite3_value_blob(query_value), code_bytes)
        c.score_scale = 2.0 / dim if dim > 0 else 0
    else:
        if sqlite3_value_bytes(query_value) != 4 * dim:
            sqlite3_free(thresholds)
            return knn_fail(cursor, sqlite3_mprintf(
                "sqlitebin_knn(): collection '%q' has dimension %d, so an asymmetric query is %d bytes of float32; got %d",
                collection, dim, 4 * dim, sqlite3_value_bytes(query_value)))
        query_floats = <float*>sqlite3_malloc64(4 * dim + 4)
        tables = <float*>sqlite3_malloc64(<int64_t>code_bytes * 256 * 4 + 4)
        if query_floats == NULL or tables == NULL:
            sqlite3_free(thresholds)
            sqlite3_free(query_floats)
            sqlite3_free(tables)
            return SQLITE_NOMEM
        if dim > 0:
            memcpy(query_floats, sqlite3_value_blob(query_value), 4 * dim)
        for i in range(dim):
            value = query_floats[i]
            if isnan(value) or isinf(value):
                sqlite3_free(thresholds)
                sqlite3_free(query_floats)
                sqlite3_free(tables)
                return knn_fail(cursor, sqlite3_mprintf(
                    "sqlitebin_knn(): query holds a non-finite value at index %d", i))
            threshold = float_at(thresholds, i) if thresholds != NULL else 0
            if value > threshold:
                c.query_code[i >> 3] |= <uint8_t>(0x80 >> (i & 7))
            scan.query_sum += value
            magnitude += fabs(value)
        if magnitude > SQLITEBIN_MAX_QUERY_MAGNITUDE:
            # The lookup tables hold sums of query values in float32: keep every such sum finite.
            sqlite3_free(thresholds)
            sqlite3_free(query_floats)
            sqlite3_free(tables)
            return knn_fail(cursor, sqlite3_mprintf(
                "sqlitebin_knn(): query values are too large for the asymmetric scan "
                "(their magnitudes add up to %g; the limit is 1e38)", magnitude))
        build_lookup_tables(query_floats, dim, code_bytes, tables)
        c.score_scale = 1.0 / sqrt(<double>dim) if dim > 0 else 0
        if scan.nibble_above != NULL and 0 < code_bytes <= SQLITEBIN_NIBBLE_MAX_BYTES:
            nibble_tables = <uint8_t*>sqlite3_malloc64(64 * code_bytes)
            if nibble_tables == NULL or build_nibble_tables(
                    query_floats, dim, code_bytes, nibble_tables, &scan.approx_scale, &scan.approx_high) != SQLITE_OK:
                sqlite3_free(thresholds)
                sqlite3_free(query_floats)
                sqlite3_free(tables)
                sqlite3_free(nibble_tables)
                return SQLITE_NOMEM
    sqlite3_free(thresholds)
    sqlite3_free(query_floats)

    scan.mode = c.mode
    scan.code_bytes = code_bytes
    scan.query_code = c.query_code
    scan.tables = tables
    scan.top.k = k
    scan.top.heap = <Hit*>sqlite3_malloc64(sizeof(Hit) * k)
    if scan.top.heap == NULL:
        sqlite3_free(tables)
        return SQLITE_NOMEM
    if allowed_value != NULL:
        allowed_blob = <const uint8_t*>sqlite3_value_blob(allowed_value)
        rc = filter_build(&allowed, allowed_blob, sqlite3_value_bytes(allowed_value))
        if rc != SQLITE_OK:
            sqlite3_free(tables)
            sqlite3_free(scan.top.heap)
            return rc
        have_allowed = True
        scan.allowed = &allowed

    # 1. The change table: ids changed since their chunk was written (sorted,
    #    by the INTEGER PRIMARY KEY), and the current codes of the live ones.
    sql = sqlite3_mprintf('SELECT id, code FROM "%w_changes" ORDER BY id', collection)
    rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) if sql != NULL else SQLITE_NOMEM
    sqlite3_free(sql)
    if rc == SQLITE_OK:
        while True:
            rc = sqlite3_step(stmt)
            if rc != SQLITE_ROW:
                break
            if changed_count == changed_capacity:
                changed_capacity = changed_capacity * 2 + 64
                grown = <int64_t*>sqlite3_realloc64(changed_ids, changed_capacity * 8)
                if grown == NULL:
                    rc = SQLITE_NOMEM
                    break
                changed_ids = grown
                grown = <int64_t*>sqlite3_realloc64(pending_ids, changed_capacity * 8)
                if grown == NULL:
                    rc = SQLITE_NOMEM
                    break
                pending_ids = grown
                grown = <int64_t*>sqlite3_realloc64(pending_codes, changed_capacity * code_bytes + 1)
                if grown == NULL:
                    rc = SQLITE_NOMEM
                    break
                pending_codes = <uint8_t*>grown
            changed_ids[changed_count] = sqlite3_column_int64(stmt, 0)
            changed_count += 1
            if sqlite3_column_type(stmt, 1) == SQLITE_BLOB and sqlite3_column_bytes(stmt, 1) == code_bytes:
                pending_ids[pending_count] = sqlite3_column_int64(stmt, 0)
                if code_bytes > 0:
                    memcpy(pending_codes + pending_count * code_bytes, sqlite3_column_blob(stmt, 1), code_bytes)
                pending_count += 1
        if rc == SQLITE_DONE:
            rc = SQLITE_OK
    sqlite3_finalize(stmt)
    stmt = NULL
    scan.changed_ids = changed_ids
    scan.changed_count = changed_count

    # 2. The chunks, skipping entries whose id is in the change table.
    if rc == SQLITE_OK:
        memset(&uncached, 0, sizeof(ChunkData))
        rc = chunk_data_get(<KnnTable*>cursor.pVtab, cursor, collection, code_bytes, &chunks, &uncached)
    if rc == SQLITE_OK and nibble_tables != NULL and chunks.chunk_start[chunks.chunk_count] > 0:
        # The nibble scan reads the codes in the scan-ready layout, built once per cache entry.
        blocks = (chunks.chunk_start[chunks.chunk_count] + SQLITEBIN_NIBBLE_BLOCK - 1) // SQLITEBIN_NIBBLE_BLOCK
        if chunks.blocked == NULL:
            chunks.blocked = <uint8_t*>sqlite3_malloc64(blocks * SQLITEBIN_NIBBLE_BLOCK * code_bytes)
            if chunks.blocked != NULL:
                sqlitebin_advise_huge_pages(chunks.blocked, blocks * SQLITEBIN_NIBBLE_BLOCK * code_bytes)
                sqlitebin_transpose_blocks(chunks.codes, chunks.chunk_start[chunks.chunk_count], code_bytes, chunks.blocked)
        if chunks.blocked == NULL:
            rc = SQLITE_NOMEM
        scan.blocked = chunks.blocked
        scan.nibble_tables = nibble_tables
    if rc == SQLITE_OK:
        rc = scan_chunks(&scan, chunks)
    chunk_data_free(&uncached)
    sqlite3_free(nibble_tables)
    scan.blocked = NULL
    scan.nibble_tables = NULL

    # 3. The live rows of the change table.
    if rc == SQLITE_OK and pending_count > 0:
        scan_codes(&scan, <const uint8_t*>pending_ids, pending_codes, pending_count, False, -1)

    # Results, best first: pop the max-heap from the back.
    if rc == SQLITE_OK:
        c.count = scan.top.size
        n = scan.top.size
        while n > 0:
            hit = scan.top.heap[0]
            scan.top.heap[0] = scan.top.heap[n - 1]
            scan.top.heap[n - 1] = hit
            n -= 1
            heap_sift_down(scan.top.heap, n, 0)
        c.hits = scan.top.heap
        scan.top.heap = NULL

    sqlite3_free(scan.top.heap)
    sqlite3_free(tables)
    sqlite3_free(changed_ids)
    sqlite3_free(pending_ids)
    sqlite3_free(pending_codes)
    if have_allowed:
        filter_free(&allowed)
    return rc


cdef int knn_next(sqlite3_vtab_cursor *cursor) noexcept nogil:
    (<KnnCursor*>cursor).position += 1
    return SQLITE_OK


cdef int knn_eof(sqlite3_vtab_cursor *cursor) noexcept nogil:
    cdef KnnCursor *c = <KnnCursor*>cursor
    return c.position >= c.count


cdef int knn_column(sqlite3_vtab_cursor *cursor, sqlite3_context *ctx, int column) noexcept nogil:
    cdef KnnCursor *c = <KnnCursor*>cursor
    cdef Hit hit = c.hits[c.position]
    if column == KNN_COLUMN_ID:
        sqlite3_result_int64(ctx, hit.id)
    elif column == KNN_COLUMN_DISTANCE:
        sqlite3_result_int64(ctx, <sqlite3_int64>hit.distance)
    elif column == KNN_COLUMN_SCORE:
        if c.mode == MODE_HAMMING:
            sqlite3_result_double(ctx, 1.0 - hit.key * c.score_scale)
        else:
            sqlite3_result_double(ctx, -hit.key * c.score_scale)
    else:
        sqlite3_result_null(ctx)
    return SQLITE_OK


cdef int knn_rowid(sqlite3_vtab_cursor *cursor, sqlite3_int64 *rowid) noexcept nogil:
    rowid[0] = (<KnnCursor*>cursor).position
    return SQLITE_OK


cdef sqlite3_module knn_module


cdef int register_knn(sqlite3 *db, char **error) noexcept nogil:
    # Filled in on every load (identical values each time): module-level
    # initialisers would only run in the discarded Python module init. No
    # memset first: other connections may be using the struct right now, and
    # zeroing it would hand them NULL methods. Unset fields stay zero (static).
    knn_module.iVersion = 0
    knn_module.xCreate = NULL  # eponymous-only: no CREATE VIRTUAL TABLE
    knn_module.xConnect = knn_connect
    knn_module.xBestIndex = knn_best_index
    knn_module.xDisconnect = knn_disconnect
    knn_module.xDestroy = knn_disconnect
    knn_module.xOpen = knn_open
    knn_module.xClose = knn_close
    knn_module.xFilter = knn_filter
    knn_module.xNext = knn_next
    knn_module.xEof = knn_eof
    knn_module.xColumn = knn_column
    knn_module.xRowid = knn_rowid
    cdef int rc = sqlite3_create_module_v2(db, "sqlitebin_knn", &knn_module, NULL, NULL)
    if rc != SQLITE_OK and error != NULL:
        error[0] = sqlite3_mprintf("sqlitebin: could not register sqlitebin_knn: %s", sqlite3_errmsg(db))
    return rc


# ---------------------------------------------------------------------------
# sqlitebin_version() and sqlitebin_debug()

cdef void version_sql(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    sqlite3_result_text(ctx, SQLITEBIN_VERSION, -1, SQLITE_STATIC)


cdef void debug_sql(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    cdef const char *cpu = "other"
    cdef char features[256]
    cdef const char *asymmetric = "byte-table"
    if nibble_above_kernel == sqlitebin_nibble_above_avx512vbmi:
        asymmetric = "nibble-avx512vbmi"
    elif nibble_above_kernel == sqlitebin_nibble_above_avx512:
        asymmetric = "nibble-avx512"
    elif nibble_above_kernel == sqlitebin_nibble_above_avx2:
        asymmetric = "nibble-avx2"
    sqlitebin_cpu_features(features, sizeof(features))
    if SQLITEBIN_HAVE_X86_KERNELS:
        cpu = "x86-64 avx512" if sqlitebin_cpu_has_avx512() else (
            "x86-64 avx2" if sqlitebin_cpu_has_avx2() else (
                "x86-64 popcnt" if sqlitebin_cpu_has_popcnt() else "x86-64 baseline"))
    cdef char *text = sqlite3_mprintf(
        "version=%s\npopcount=%s\nasymmetric_scan=%s\ncpu=%s\ncpu_features=%s\nidle_cpus=%ld\n"
        "sqlite_headers=%s\nsqlite_runtime=%s\ncompiler=%s",
        SQLITEBIN_VERSION, kernel_name, asymmetric, cpu, features, sqlitebin_idle_cpus(), SQLITE_VERSION,
        sqlite3_libversion(), SQLITEBIN_COMPILER)
    if text == NULL:
        sqlite3_result_error_nomem(ctx)
        return
    sqlite3_result_text(ctx, text, -1, sqlite3_free)


# ---------------------------------------------------------------------------
# Registration

ctypedef void (*scalar_function)(sqlite3_context*, int, sqlite3_value**) noexcept nogil


cdef int register(sqlite3 *db, const char *name, int nargs, scalar_function function,
                  char **error) noexcept nogil:
    cdef int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS
    cdef int rc = sqlite3_create_function_v2(db, name, nargs, flags, NULL, function, NULL, NULL, NULL)
    if rc != SQLITE_OK and error != NULL:
        error[0] = sqlite3_mprintf("sqlitebin: could not register %s(): %s", name, sqlite3_errmsg(db))
    return rc


cdef int register_aggregate(sqlite3 *db, const char *name, int nargs, scalar_function step,
                            void (*final)(sqlite3_context*) noexcept nogil, char **error) noexcept nogil:
    cdef int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS
    cdef int rc = sqlite3_create_function_v2(db, name, nargs, flags, NULL, NULL, step, final, NULL)
    if rc != SQLITE_OK and error != NULL:
        error[0] = sqlite3_mprintf("sqlitebin: could not register %s(): %s", name, sqlite3_errmsg(db))
    return rc


cdef public int sqlite3_sqlitebin_init(sqlite3 *db, char **error,
                                       const sqlite3_api_routines *api) noexcept nogil:
    """Entry point called by SQLite's load_extension; registers everything on `db`."""
    sqlitebin_set_api(api)
    if select_kernels() != 0:
        if error != NULL:
            error[0] = sqlite3_mprintf("sqlitebin: SQLITEBIN_POPCOUNT must be portable, popcnt, avx2 or avx512, got '%s'",
                                       getenv("SQLITEBIN_POPCOUNT"))
        return SQLITE_ERROR
    # The function table: name, number of arguments (-1: any), implementation.
    if (register(db, "hamming", 2, hamming_sql, error)
            or register(db, "bit_count", 1, bit_count_sql, error)
            or register(db, "binary_quantize", 1, binary_quantize_sql, error)
            or register(db, "binary_quantize", 2, binary_quantize_sql, error)
            or register(db, "int8_quantize", 2, int8_quantize_sql, error)
            or register(db, "dot_float32", 2, dot_float32_sql, error)
            or register(db, "dot_int8", 3, dot_int8_sql, error)
            or register(db, "dot_bits", 2, dot_bits_sql, error)
            or register(db, "sqlitebin_version", 0, version_sql, error)
            or register(db, "sqlitebin_debug", 0, debug_sql, error)):
        return SQLITE_ERROR
    if register_aggregate(db, "sqlitebin_ids", 1, ids_step, ids_final, error):
        return SQLITE_ERROR
    return register_knn(db, error)
