# Argument checks and result helpers: each check sets the SQL error itself and returns -1,
# so a function body reads as a list of checks followed by the work.

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


cdef int first_non_finite(const uint8_t *data, int count) noexcept nogil:
    """Index of the first NaN or infinity among `count` float32 values, or -1."""
    cdef int i
    cdef float x
    for i in range(count):
        memcpy(&x, data + 4 * i, 4)
        if isnan(x) or isinf(x):
            return i
    return -1


cdef double magnitude_sum(const uint8_t *data, int count) noexcept nogil:
    """Sum of |x| over float32 values: it bounds every partial sum the asymmetric tables hold."""
    cdef double total = 0
    cdef int i
    for i in range(count):
        total += fabs(float_at(data, i))
    return total
