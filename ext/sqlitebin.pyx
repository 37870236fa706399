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

from libc.stdint cimport uint8_t, int8_t, uint64_t, int64_t
from libc.string cimport memcpy, memset, strcmp
from libc.stdlib cimport getenv
from libc.math cimport isnan, isinf, rintf, sqrt

from sqlite3ext cimport *

cdef extern from *:
    """
    SQLITE_EXTENSION_INIT1
    #define sqlitebin_set_api(p) SQLITE_EXTENSION_INIT2(p)
    #ifndef SQLITEBIN_VERSION
    #define SQLITEBIN_VERSION "unknown"
    #endif
    #ifdef __VERSION__
    #define SQLITEBIN_COMPILER __VERSION__
    #else
    #define SQLITEBIN_COMPILER "unknown"
    #endif
    """
    void sqlitebin_set_api(const sqlite3_api_routines *api) nogil
    const char *SQLITEBIN_VERSION
    const char *SQLITEBIN_COMPILER
    const char *SQLITE_VERSION
    void sqlite3_result_zeroblob(sqlite3_context*, int n) nogil

cdef extern from "popcount.h" nogil:
    ctypedef uint64_t (*sqlitebin_hamming_fn)(const uint8_t *a, const uint8_t *b, size_t n) noexcept nogil
    ctypedef uint64_t (*sqlitebin_popcount_fn)(const uint8_t *a, size_t n) noexcept nogil
    int SQLITEBIN_HAVE_X86_KERNELS
    uint64_t sqlitebin_hamming_portable(const uint8_t *a, const uint8_t *b, size_t n)
    uint64_t sqlitebin_popcount_portable(const uint8_t *a, size_t n)
    uint64_t sqlitebin_hamming_popcnt(const uint8_t *a, const uint8_t *b, size_t n)
    uint64_t sqlitebin_popcount_popcnt(const uint8_t *a, size_t n)
    uint64_t sqlitebin_hamming_avx2(const uint8_t *a, const uint8_t *b, size_t n)
    int sqlitebin_cpu_has_popcnt()
    int sqlitebin_cpu_has_avx2()


# ---------------------------------------------------------------------------
# Kernel selection, done once per load from what the CPU reports.

cdef sqlitebin_hamming_fn hamming_kernel
cdef sqlitebin_popcount_fn popcount_kernel
cdef const char *kernel_name


cdef void select_kernels() noexcept nogil:
    """Pick the fastest kernels the CPU supports. SQLITEBIN_POPCOUNT=portable or
    popcnt caps the choice (used by the tests to check every kernel); it can
    never select instructions the CPU lacks."""
    global hamming_kernel, popcount_kernel, kernel_name
    cdef const char *cap = getenv("SQLITEBIN_POPCOUNT")
    cdef bint allow_avx2 = cap == NULL or strcmp(cap, "avx2") == 0
    cdef bint allow_popcnt = allow_avx2 or strcmp(cap, "popcnt") == 0
    if SQLITEBIN_HAVE_X86_KERNELS and allow_avx2 and sqlitebin_cpu_has_avx2():
        hamming_kernel = sqlitebin_hamming_avx2
        popcount_kernel = sqlitebin_popcount_popcnt
        kernel_name = "avx2"
    elif SQLITEBIN_HAVE_X86_KERNELS and allow_popcnt and sqlitebin_cpu_has_popcnt():
        hamming_kernel = sqlitebin_hamming_popcnt
        popcount_kernel = sqlitebin_popcount_popcnt
        kernel_name = "popcnt"
    else:
        hamming_kernel = sqlitebin_hamming_portable
        popcount_kernel = sqlitebin_popcount_portable
        kernel_name = "portable"


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
    """Check a ranges BLOB: d float32 minimums then d maximums, each minimum <= maximum."""
    cdef int count, i
    if read_float32(ctx, function, value, position, "ranges", ranges, &count) < 0:
        return -1
    if count != 2 * dim:
        result_error_owned(ctx, sqlite3_mprintf(
            "%s(): ranges has %d values but needs %d (%d minimums then %d maximums)",
            function, count, 2 * dim, dim, dim))
        return -1
    for i in range(dim):
        if float_at(ranges[0], i) > float_at(ranges[0], dim + i):
            result_error_owned(ctx, sqlite3_mprintf(
                "%s(): range of dimension %d has minimum %g above maximum %g",
                function, i, <double>float_at(ranges[0], i), <double>float_at(ranges[0], dim + i)))
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
# sqlitebin_version() and sqlitebin_debug()

cdef void version_sql(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    sqlite3_result_text(ctx, SQLITEBIN_VERSION, -1, SQLITE_STATIC)


cdef void debug_sql(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    cdef const char *cpu = "other"
    if SQLITEBIN_HAVE_X86_KERNELS:
        cpu = "x86-64 avx2" if sqlitebin_cpu_has_avx2() else (
            "x86-64 popcnt" if sqlitebin_cpu_has_popcnt() else "x86-64 baseline")
    cdef char *text = sqlite3_mprintf(
        "version=%s\npopcount=%s\ncpu=%s\nsqlite_headers=%s\nsqlite_runtime=%s\ncompiler=%s",
        SQLITEBIN_VERSION, kernel_name, cpu, SQLITE_VERSION, sqlite3_libversion(),
        SQLITEBIN_COMPILER)
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


cdef public int sqlite3_sqlitebin_init(sqlite3 *db, char **error,
                                       const sqlite3_api_routines *api) noexcept nogil:
    """Entry point called by SQLite's load_extension; registers everything on `db`."""
    sqlitebin_set_api(api)
    select_kernels()
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
    return SQLITE_OK
