# The options of CREATE VIRTUAL TABLE ... USING sqlitebin(...): parsed and checked before
# anything is written, each mistake reported in one sentence.
#
#   dim=256 (required, 1..65536)  rescore=int8|float32|none (int8)  chunk_size=4096 (64..65536,
#   a multiple of 64)  thresholds=X'..' (4*dim bytes)  ranges=X'..' (8*dim bytes, int8 only)
#   calibration_rows=1024 (int8 only, 1..100000000)

cdef enum:
    DEFAULT_CHUNK_SIZE = 4096
    DEFAULT_CALIBRATION_ROWS = 1024
    MAX_DIM = 65536

ctypedef struct TableOptions:
    int64_t dim
    int rescore
    int64_t chunk_size
    int64_t calibration_rows
    uint8_t *thresholds      # owned: 4 * dim bytes or NULL
    uint8_t *ranges          # owned: 8 * dim bytes or NULL
    int thresholds_bytes
    int ranges_bytes
    unsigned seen            # a bit per option given



cdef char *trim(char *text) noexcept nogil:
    cdef size_t n
    while text[0] == c' ' or text[0] == c'\t' or text[0] == c'\n' or text[0] == c'\r':
        text += 1
    n = strlen(text)
    while n > 0 and (text[n - 1] == c' ' or text[n - 1] == c'\t' or text[n - 1] == c'\n' or text[n - 1] == c'\r'):
        n -= 1
    text[n] = 0
    return text


cdef char *unquote(char *value) noexcept nogil:
    cdef size_t n = strlen(value)
    if n >= 2 and (value[0] == c"'" or value[0] == c'"') and value[n - 1] == value[0]:
        value[n - 1] = 0
        return value + 1
    return value


cdef int parse_integer(const char *value, int64_t low, int64_t high, int64_t *out) noexcept nogil:
    cdef char *end = NULL
    cdef int64_t number
    if value[0] == 0:
        return -1
    number = strtoll(value, &end, 10)
    if end[0] != 0 or number < low or number > high:
        return -1
    out[0] = number
    return 0


cdef int hex_digit(char c) noexcept nogil:
    if c'0' <= c <= c'9':
        return c - c'0'
    if c'a' <= c <= c'f':
        return c - c'a' + 10
    if c'A' <= c <= c'F':
        return c - c'A' + 10
    return -1


cdef int parse_hex_blob(const char *value, uint8_t **out, int *nbytes) noexcept nogil:
    """X'0a1b..' to bytes (sqlite3_malloc64); -1 when not a hex literal, -2 out of memory."""
    cdef size_t n = strlen(value), i
    cdef int high, low
    if n < 3 or (value[0] != c'X' and value[0] != c'x') or value[1] != c"'" or value[n - 1] != c"'" or (n - 3) % 2:
        return -1
    out[0] = <uint8_t*>sqlite3_malloc64((n - 3) // 2 + 1)
    if out[0] == NULL:
        return -2
    for i in range((n - 3) // 2):
        high = hex_digit(value[2 + 2 * i])
        low = hex_digit(value[3 + 2 * i])
        if high < 0 or low < 0:
            sqlite3_free(out[0])
            out[0] = NULL
            return -1
        out[0][i] = <uint8_t>(high * 16 + low)
    nbytes[0] = <int>((n - 3) // 2)
    return 0


cdef int option_index(const char *key) noexcept nogil:
    if strcmp(key, "dim") == 0:
        return 0
    if strcmp(key, "rescore") == 0:
        return 1
    if strcmp(key, "chunk_size") == 0:
        return 2
    if strcmp(key, "thresholds") == 0:
        return 3
    if strcmp(key, "ranges") == 0:
        return 4
    if strcmp(key, "calibration_rows") == 0:
        return 5
    return -1


cdef char *parse_option(TableOptions *o, int option, const char *key, const char *value) noexcept nogil:
    """Store one option; the error sentence (sqlite3_mprintf) or NULL."""
    cdef int rc
    if option == 0 and parse_integer(value, 1, MAX_DIM, &o.dim) < 0:
        return sqlite3_mprintf("sqlitebin: dim must be an integer from 1 to %d, got '%s'", <int>MAX_DIM, value)
    if option == 1:
        if strcmp(value, "int8") == 0:
            o.rescore = RESCORE_INT8
        elif strcmp(value, "float32") == 0:
            o.rescore = RESCORE_FLOAT32
        elif strcmp(value, "none") == 0:
            o.rescore = RESCORE_NONE
        else:
            return sqlite3_mprintf("sqlitebin: rescore must be int8, float32 or none, got '%s'", value)
    if option == 2 and (parse_integer(value, 64, 65536, &o.chunk_size) < 0 or o.chunk_size % 64 != 0):
        return sqlite3_mprintf("sqlitebin: chunk_size must be a multiple of 64 from 64 to 65536, got '%s'", value)
    if option == 3 or option == 4:
        rc = parse_hex_blob(value, &o.thresholds if option == 3 else &o.ranges,
                            &o.thresholds_bytes if option == 3 else &o.ranges_bytes)
        if rc == -2:
            return NULL
        if rc < 0:
            return sqlite3_mprintf("sqlitebin: %s must be a BLOB literal X'...' of float32 values, got '%s'", key, value)
    if option == 5 and parse_integer(value, 1, 100000000, &o.calibration_rows) < 0:
        return sqlite3_mprintf("sqlitebin: calibration_rows must be an integer from 1 to 100000000, got '%s'", value)
    return NULL


cdef char *parse_argument(TableOptions *o, const char *argument) noexcept nogil:
    """One `key=value` argument; the error sentence or NULL."""
    cdef char *copy = sqlite3_mprintf("%s", argument)
    cdef char *equals
    cdef char *key
    cdef char *value
    cdef char *error = NULL
    cdef int option
    if copy == NULL:
        return NULL
    equals = copy
    while equals[0] != 0 and equals[0] != c'=':
        equals += 1
    if equals[0] == 0:
        error = sqlite3_mprintf("sqlitebin: option '%s' needs a value, as in dim=256", trim(copy))
    else:
        equals[0] = 0
        key = trim(copy)
        value = unquote(trim(equals + 1))
        option = option_index(key)
        if option < 0:
            error = sqlite3_mprintf("sqlitebin: unknown option '%s' (expected dim, rescore, chunk_size, "
                                   "thresholds, ranges, calibration_rows)", key)
        elif o.seen & (1u << option):
            error = sqlite3_mprintf("sqlitebin: option '%s' is given twice", key)
        else:
            o.seen |= 1u << option
            error = parse_option(o, option, key, value)
    sqlite3_free(copy)
    return error


cdef char *check_float_blob(const char *what, const uint8_t *data, int nbytes, int expected, int64_t dim) noexcept nogil:
    cdef int bad
    if nbytes != expected:
        return sqlite3_mprintf("sqlitebin: %s must be %d bytes (%d float32 values for dim %lld), got %d bytes",
                               what, expected, expected // 4, dim, nbytes)
    bad = first_non_finite(data, nbytes // 4)
    if bad >= 0:
        return sqlite3_mprintf("sqlitebin: %s holds a non-finite value at index %d", what, bad)
    return NULL


cdef char *check_options(TableOptions *o) noexcept nogil:
    """Checks that need several options; the error sentence or NULL."""
    cdef int i
    cdef char *error = NULL
    cdef float low, high
    if not (o.seen & 1):
        return sqlite3_mprintf("sqlitebin: option dim is required, as in USING sqlitebin(dim=256)")
    if o.rescore != RESCORE_INT8 and o.seen & (1u << 4):
        return sqlite3_mprintf("sqlitebin: ranges only apply with rescore=int8")
    if o.rescore != RESCORE_INT8 and o.seen & (1u << 5):
        return sqlite3_mprintf("sqlitebin: calibration_rows only applies with rescore=int8")
    if o.thresholds != NULL:
        error = check_float_blob("thresholds", o.thresholds, o.thresholds_bytes, <int>(4 * o.dim), o.dim)
    if error == NULL and o.ranges != NULL:
        error = check_float_blob("ranges", o.ranges, o.ranges_bytes, <int>(8 * o.dim), o.dim)
        for i in range(<int>o.dim if error == NULL else 0):
            low = float_at(o.ranges, i)
            high = float_at(o.ranges, o.dim + i)
            if low > high or isinf((high - low) * <float>255):
                return sqlite3_mprintf("sqlitebin: ranges of dimension %d (%g to %g) must have minimum <= maximum "
                                       "and a spread finite in float32 when multiplied by 255",
                                       i, <double>low, <double>high)
    return error


cdef char *parse_options(int argc, const char *const *argv, TableOptions *o) noexcept nogil:
    """All of CREATE's arguments (argv[3:]) into `o`; the error sentence or NULL."""
    cdef int i
    cdef char *error = NULL
    memset(o, 0, sizeof(TableOptions))
    o.rescore = RESCORE_INT8
    o.chunk_size = DEFAULT_CHUNK_SIZE
    o.calibration_rows = DEFAULT_CALIBRATION_ROWS
    for i in range(3, argc):
        error = parse_argument(o, argv[i])
        if error != NULL:
            return error
    return check_options(o)
