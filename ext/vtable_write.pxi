# Writes to a sqlitebin table (xUpdate): INSERT, UPDATE (vector, rowid or both), DELETE,
# INSERT OR REPLACE, and the FTS5-style commands. Every input is checked before anything is
# written; each write then goes to N_rowids at once and to the chunks through the pending
# list (storage.pxi), and into the code cache.

cdef int vector_error(VectorTable *t, sqlite3_value *vector) noexcept nogil:
    """Check an input vector: a finite float32 BLOB of 4 * dim bytes; SQLITE_OK or the error."""
    cdef int value_type = sqlite3_value_type(vector)
    cdef int nbytes, bad
    cdef float x
    if value_type != SQLITE_BLOB:
        return table_fail(t, sqlite3_mprintf("sqlitebin: %s.vector must be a float32 BLOB of %d bytes (dim %d), got %s",
                                             t.name, 4 * t.dim, t.dim, type_name(value_type)))
    nbytes = sqlite3_value_bytes(vector)
    if nbytes != 4 * t.dim:
        return table_fail(t, sqlite3_mprintf(
            "sqlitebin: %s.vector must be a float32 BLOB of %d bytes (dim %d), got %d bytes",
            t.name, 4 * t.dim, t.dim, nbytes))
    bad = first_non_finite(<const uint8_t*>sqlite3_value_blob(vector), t.dim)
    if bad >= 0:
        x = float_at(<const uint8_t*>sqlite3_value_blob(vector), bad)
        return table_fail(t, sqlite3_mprintf("sqlitebin: %s.vector holds a non-finite value (%s) at index %d",
                                             t.name, "nan" if isnan(x) else ("inf" if x > 0 else "-inf"), bad))
    return SQLITE_OK


cdef int rowid_error(VectorTable *t, sqlite3_value *rowid) noexcept nogil:
    if sqlite3_value_type(rowid) != SQLITE_INTEGER:
        return table_fail(t, sqlite3_mprintf("sqlitebin: %s rowid must be an INTEGER, got %s",
                                             t.name, type_name(sqlite3_value_type(rowid))))
    return SQLITE_OK


cdef int encode_vector(VectorTable *t, const uint8_t *floats, uint8_t **code, uint8_t **stored) noexcept nogil:
    """The row's code and stored vector (int8 once calibrated, or float32), in t.scratch.
    Loops over aligned float arrays so the compiler vectorizes them; the int8 formula is
    int8_code's (division, round half to even, clamp), written branch-free."""
    cdef int i, j, dim = t.dim
    cdef float *values
    cdef float *low
    cdef float *high
    cdef float level
    cdef const float *thresholds = <const float*>t.thresholds  # from sqlite3_malloc64: aligned
    cdef int byte
    if t.scratch == NULL:
        t.scratch = <uint8_t*>sqlite3_malloc64(t.code_bytes + t.vector_bytes + 4 * dim + 64)
        if t.scratch == NULL:
            return SQLITE_NOMEM
    values = <float*>(t.scratch + ((t.code_bytes + t.vector_bytes + 15) & ~15))
    memcpy(values, floats, 4 * dim)
    code[0] = t.scratch
    stored[0] = t.scratch + t.code_bytes
    for j in range(t.code_bytes):
        byte = 0
        # Branch-free: the bits of random data would defeat the branch predictor.
        if thresholds != NULL:
            for i in range(8 * j, 8 * j + 8 if 8 * j + 8 <= dim else dim):
                byte |= (values[i] > thresholds[i]) << (7 - (i & 7))
        else:
            for i in range(8 * j, 8 * j + 8 if 8 * j + 8 <= dim else dim):
                byte |= (values[i] > 0) << (7 - (i & 7))
        code[0][j] = <uint8_t>byte
    if t.rescore == RESCORE_FLOAT32:
        memcpy(stored[0], floats, 4 * dim)
    elif t.rescore == RESCORE_INT8 and t.ranges != NULL:
        low = <float*>t.ranges
        high = low + dim
        for i in range(dim):
            # rint(clamp(x, 0, 255)) == clamp(rint(x), 0, 255); adding and removing 2^23 rounds
            # half to even in float32 for 0 <= x < 2^23, as rintf does. NaN (0 / 0) clamps to 0.
            level = ((values[i] - low[i]) * <float>255) / (high[i] - low[i])
            level = level if level > 0 else <float>0
            level = level if level < 255 else <float>255
            level = (level + <float>8388608) - <float>8388608
            stored[0][i] = <uint8_t>(<int>level - 128)
        for i in range(dim):
            if not (high[i] > low[i]):
                stored[0][i] = <uint8_t>(-128 & 0xff)
    return SQLITE_OK


cdef inline bint staging(VectorTable *t) noexcept nogil:
    """int8 rows wait in N_calibration (as float32) until the ranges are chosen."""
    return t.rescore == RESCORE_INT8 and t.ranges == NULL


cdef int staged_write(VectorTable *t, int which, int64_t rowid, int64_t other, const uint8_t *floats) noexcept nogil:
    """ST_CALIBRATION_PUT (rowid, floats), ST_CALIBRATION_DELETE (rowid) or ST_CALIBRATION_MOVE (rowid -> other)."""
    cdef sqlite3_stmt *stmt = table_statement(t, which)
    if stmt != NULL:
        sqlite3_bind_int64(stmt, 1, rowid)
        if which == ST_CALIBRATION_PUT:
            sqlite3_bind_blob(stmt, 2, floats, 4 * t.dim, SQLITE_STATIC)
        elif which == ST_CALIBRATION_MOVE:
            sqlite3_bind_int64(stmt, 2, other)
    return step_done(t, stmt)


cdef int conflict(VectorTable *t, int64_t rowid, int64_t *location) noexcept nogil:
    """SQLITE_DONE when `rowid` is free; SQLITE_OK (its location set) when it is taken and the
    statement's conflict policy is REPLACE; else SQLITE_CONSTRAINT with the sentence."""
    cdef int rc
    if rowid > t.max_rowid:
        return SQLITE_DONE  # above every rowid: no lookup needed (bulk appends)
    rc = rowid_location(t, rowid, location)
    if rc != SQLITE_OK:
        return rc
    if sqlite3_vtab_on_conflict(t.db) == SQLITE_REPLACE:
        return SQLITE_OK
    table_fail(t, sqlite3_mprintf("sqlitebin: rowid %lld already exists in %s", rowid, t.name))
    return SQLITE_CONSTRAINT


cdef int delete_row(VectorTable *t, int64_t rowid, int64_t location) noexcept nogil:
    cdef int rc = rowid_write(t, ST_ROWID_DELETE, rowid, 0)
    if rc == SQLITE_OK and rowid == t.max_rowid:
        rc = rowid_largest(t, &t.max_rowid)  # a new row without rowid gets max + 1 of the live rows
    if rc == SQLITE_OK and staging(t):
        rc = staged_write(t, ST_CALIBRATION_DELETE, rowid, 0, NULL)
        t.calibration_count -= 1
    if rc == SQLITE_OK:
        rc = pending_add(t, location, CLEAR_LIVE, rowid, NULL, NULL)
    if rc == SQLITE_OK:
        cache_clear_slot(t, location)
    return rc


cdef int write_delete(VectorTable *t, sqlite3_value *rowid_value) noexcept nogil:
    cdef int64_t location = 0, rowid = sqlite3_value_int64(rowid_value)
    cdef int rc = rowid_location(t, rowid, &location)
    if rc == SQLITE_DONE:
        return SQLITE_OK
    if rc == SQLITE_OK:
        rc = cache_before_write(t)
    if rc == SQLITE_OK:
        rc = delete_row(t, rowid, location)
    return rc


cdef int write_slot(VectorTable *t, int64_t location, int64_t rowid, const uint8_t *floats, int kind) noexcept nogil:
    """Write the row's code (and its vector, or stage it) at `location`."""
    cdef uint8_t *code
    cdef uint8_t *stored
    cdef bint staged = staging(t)
    cdef int rc = encode_vector(t, floats, &code, &stored)
    if rc == SQLITE_OK and staged:
        rc = staged_write(t, ST_CALIBRATION_PUT, rowid, 0, floats)
    if rc == SQLITE_OK:
        if t.vector_bytes > 0 and not staged:
            kind |= WRITE_VECTOR
        rc = pending_add(t, location, kind | WRITE_ID | WRITE_CODE, rowid, code, stored)
    if rc == SQLITE_OK:
        rc = cache_write_slot(t, location, rowid, code)
    return rc


cdef int write_insert(VectorTable *t, sqlite3_value *rowid_value, sqlite3_value *vector,
                      sqlite3_int64 *rowid_out) noexcept nogil:
    cdef int64_t rowid = 0, location = 0, taken = 0
    cdef int rc = vector_error(t, vector)
    if rc == SQLITE_OK and sqlite3_value_type(rowid_value) == SQLITE_NULL:
        if t.max_rowid == INT64_MAX:
            return table_fail(t, sqlite3_mprintf("sqlitebin: %s has a row with the largest rowid; give a rowid", t.name))
        rowid = t.max_rowid + 1
    elif rc == SQLITE_OK:
        rc = rowid_error(t, rowid_value)
        rowid = sqlite3_value_int64(rowid_value)
    if rc != SQLITE_OK:
        return rc
    rc = conflict(t, rowid, &taken)
    if rc != SQLITE_OK and rc != SQLITE_DONE:
        return rc
    if rc == SQLITE_OK:
        rc = cache_before_write(t)
        if rc == SQLITE_OK:
            rc = delete_row(t, rowid, taken)
    if rc == SQLITE_DONE or rc == SQLITE_OK:
        rc = cache_before_write(t)
    if rc == SQLITE_OK:
        rc = storage_new_slot(t, rowid, &location)
    if rc == SQLITE_OK:
        rc = rowid_write(t, ST_ROWID_INSERT, rowid, location)
    if rc == SQLITE_OK:
        rc = write_slot(t, location, rowid, <const uint8_t*>sqlite3_value_blob(vector), SET_LIVE)
    if rc == SQLITE_OK and staging(t):
        t.calibration_count += 1
        if t.calibration_count >= t.calibration_rows:
            rc = calibrate_staged(t)
    rowid_out[0] = rowid
    return rc


cdef int write_update(VectorTable *t, sqlite3_value *old_value, sqlite3_value *new_value,
                      sqlite3_value *vector) noexcept nogil:
    cdef int64_t old = sqlite3_value_int64(old_value), new, location = 0, taken = 0
    cdef bint new_vector = not sqlite3_value_nochange(vector)
    cdef int rc = rowid_error(t, new_value)
    if rc == SQLITE_OK and new_vector:
        rc = vector_error(t, vector)
    if rc == SQLITE_OK:
        rc = rowid_location(t, old, &location)
    if rc != SQLITE_OK:
        return SQLITE_OK if rc == SQLITE_DONE else rc
    new = sqlite3_value_int64(new_value)
    if new != old:
        rc = conflict(t, new, &taken)
        if rc != SQLITE_OK and rc != SQLITE_DONE:
            return rc
        if rc == SQLITE_OK:
            rc = cache_before_write(t)
            if rc == SQLITE_OK:
                rc = delete_row(t, new, taken)
        if rc == SQLITE_OK or rc == SQLITE_DONE:
            rc = move_rowid(t, old, new, location)
    else:
        rc = cache_before_write(t)
    if rc == SQLITE_OK and new_vector:
        rc = write_slot(t, location, new, <const uint8_t*>sqlite3_value_blob(vector), 0)
    elif rc == SQLITE_OK and new != old:
        rc = pending_add(t, location, WRITE_ID, new, NULL, NULL)
        if rc == SQLITE_OK:
            rc = cache_write_slot(t, location, new, NULL)
    return rc


cdef int move_rowid(VectorTable *t, int64_t old, int64_t new, int64_t location) noexcept nogil:
    cdef int rc = cache_before_write(t)
    if rc == SQLITE_OK:
        rc = rowid_write(t, ST_ROWID_DELETE, old, 0)
    if rc == SQLITE_OK:
        rc = rowid_write(t, ST_ROWID_INSERT, new, location)
    if rc == SQLITE_OK and old == t.max_rowid:
        rc = rowid_largest(t, &t.max_rowid)
    if rc == SQLITE_OK and staging(t):
        rc = staged_write(t, ST_CALIBRATION_MOVE, old, new, NULL)
    return rc


cdef int hidden_input_error(VectorTable *t, sqlite3_value **argv) noexcept nogil:
    """INSERT may set rowid, vector and the command column only."""
    cdef int column
    cdef const char *names[8]
    names[COL_SCORE] = "score"
    names[COL_DISTANCE] = "distance"
    names[COL_K] = "k"
    names[COL_OVERSAMPLE] = "oversample"
    names[COL_RESCORE] = "rescore"
    names[COL_CANDIDATES] = "candidates"
    names[COL_QUERY] = "query"
    for column in range(COL_SCORE, COL_QUERY + 1):
        if sqlite3_value_type(argv[2 + column]) != SQLITE_NULL:
            return table_fail(t, sqlite3_mprintf(
                "sqlitebin: %s.%s is a search column and cannot be written", t.name, names[column]))
    return SQLITE_OK


cdef int vtab_update(sqlite3_vtab *vtab, int argc, sqlite3_value **argv, sqlite3_int64 *rowid_out) noexcept nogil:
    cdef VectorTable *t = <VectorTable*>vtab
    cdef int rc = storage_load_state(t)
    if rc != SQLITE_OK:
        return rc
    if argc == 1:
        return write_delete(t, argv[0])
    if sqlite3_value_type(argv[0]) == SQLITE_NULL:
        if sqlite3_value_type(argv[2 + COL_COMMAND]) != SQLITE_NULL:
            return run_command(t, argv[2 + COL_COMMAND])
        rc = hidden_input_error(t, argv)
        if rc == SQLITE_OK:
            rc = write_insert(t, argv[1], argv[2 + COL_VECTOR], rowid_out)
        return rc
    return write_update(t, argv[0], argv[1], argv[2 + COL_VECTOR])
