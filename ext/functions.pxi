# The scalar SQL functions: hamming, bit_count, the quantizers, the rescoring dot products,
# sqlitebin_version and sqlitebin_debug.

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
    cdef char features[256]
    cdef const char *asymmetric = "byte-table"
    if nibble_above_kernel == sqlitebin_nibble_above_avx512vbmi:
        asymmetric = "nibble-avx512vbmi"
    elif nibble_above_kernel == sqlitebin_nibble_above_avx512:
        asymmetric = "nibble-avx512"
    elif nibble_above_kernel == sqlitebin_nibble_above_avx2:
        asymmetric = "nibble-avx2"
    # The batch kernels (several queries per pass over the codes; scan_kernels.h).
    cdef const char *batch_hamming = "loop"
    cdef const char *batch_asymmetric = "byte-table"
    if hamming_below_many_kernel == sqlitebin_hamming_below_many_avx512:
        batch_hamming = "avx512-transposed"
    elif hamming_blocked_many_kernel != NULL:
        batch_hamming = "avx2-popcount-tables"
    if nibble_above_many_kernel == sqlitebin_sextet_above_many_avx512vbmi:
        batch_asymmetric = "sextet-avx512vbmi"
    elif nibble_above_many_kernel == sqlitebin_nibble_above_many_avx512:
        batch_asymmetric = "nibble-avx512"
    elif nibble_above_many_kernel == sqlitebin_nibble_above_many_avx2:
        batch_asymmetric = "nibble-avx2"
    sqlitebin_cpu_features(features, sizeof(features))
    if SQLITEBIN_HAVE_X86_KERNELS:
        cpu = "x86-64 avx512" if sqlitebin_cpu_has_avx512() else (
            "x86-64 avx2" if sqlitebin_cpu_has_avx2() else (
                "x86-64 popcnt" if sqlitebin_cpu_has_popcnt() else "x86-64 baseline"))
    cdef char *text = sqlite3_mprintf(
        "version=%s\npopcount=%s\nasymmetric_scan=%s\nbatch_hamming=%s\nbatch_asymmetric=%s\ncpu=%s\n"
        "cpu_features=%s\nidle_cpus=%ld\n"
        "sqlite_headers=%s\nsqlite_runtime=%s\ncompiler=%s\nshared_code_caches=%d\ncached_vector_bytes=%lld",
        SQLITEBIN_VERSION, kernel_name, asymmetric, batch_hamming, batch_asymmetric, cpu, features,
        sqlitebin_idle_cpus(), SQLITE_VERSION, sqlite3_libversion(), SQLITEBIN_COMPILER, shared_cache_count(),
        shared_cached_vector_bytes())
    if text == NULL:
        sqlite3_result_error_nomem(ctx)
        return
    sqlite3_result_text(ctx, text, -1, sqlite3_free)
