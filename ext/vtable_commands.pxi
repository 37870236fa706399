# Maintenance of a sqlitebin table, in the FTS5 style (INSERT INTO idx(idx) VALUES ('...')):
# int8 calibration ('recalibrate', and the automatic one after calibration_rows rows),
# 'optimize' (rewrite the chunks without deleted slots) and 'integrity-check'.

ctypedef struct RangeAccumulator:
    float *low
    float *high
    double largest            # max |value|, for the rule under 32 rows
    int64_t rows


cdef int ranges_begin(RangeAccumulator *r, int dim) noexcept nogil:
    cdef int i
    memset(r, 0, sizeof(RangeAccumulator))
    r.low = <float*>sqlite3_malloc64(8 * dim + 8)
    if r.low == NULL:
        return SQLITE_NOMEM
    r.high = r.low + dim
    for i in range(dim):
        r.low[i] = 3.4e38
        r.high[i] = -3.4e38
    return SQLITE_OK


cdef void ranges_add(RangeAccumulator *r, const uint8_t *floats, int dim) noexcept nogil:
    cdef int i
    cdef float x
    for i in range(dim):
        x = float_at(floats, i)
        if x < r.low[i]:
            r.low[i] = x
        if x > r.high[i]:
            r.high[i] = x
        if fabs(x) > r.largest:
            r.largest = fabs(x)
    r.rows += 1


cdef void ranges_finish(RangeAccumulator *r, int dim, uint8_t *out) noexcept nogil:
    """The rule of sqlitebin.quantize.calibrate_ranges: min / max widened by 5% of the span on
    each side (float32); under 32 rows, +-1.5 x the largest magnitude for every dimension."""
    cdef int i
    cdef float low, high, margin, bound
    cdef double wide = r.largest * 1.5
    bound = <float>wide if r.rows > 0 and wide > 0 else 1
    for i in range(dim):
        if r.rows < 32:
            low = -bound
            high = bound
        else:
            margin = (r.high[i] - r.low[i]) * <float>0.05
            low = r.low[i] - margin
            high = r.high[i] + margin
        memcpy(out + 4 * i, &low, 4)
        memcpy(out + 4 * (dim + i), &high, 4)
    sqlite3_free(r.low)
    r.low = NULL


cdef int set_ranges(VectorTable *t, RangeAccumulator *r) noexcept nogil:
    cdef uint8_t *ranges = <uint8_t*>sqlite3_malloc64(8 * t.dim + 8)
    if ranges == NULL:
        sqlite3_free(r.low)
        return SQLITE_NOMEM
    ranges_finish(r, t.dim, ranges)
    sqlite3_free(t.ranges)
    t.ranges = ranges
    return config_set_blob(t, "ranges", ranges, 8 * t.dim)


cdef int calibrate_staged(VectorTable *t) noexcept nogil:
    """Choose the int8 ranges from the staged float32 rows, quantize them into their slots and
    empty N_calibration."""
    cdef sqlite3_stmt *stmt = NULL
    cdef RangeAccumulator r
    cdef uint8_t *code
    cdef uint8_t *stored
    cdef int rc = ranges_begin(&r, t.dim)
    cdef char *sql = sqlite3_mprintf(
        'SELECT c.vector, r.location FROM "%w"."%w_calibration" c JOIN "%w"."%w_rowids" r ON r.rowid = c.rowid',
        t.schema, t.name, t.schema, t.name)
    if rc == SQLITE_OK:
        rc = sqlite3_prepare_v2(t.db, sql, -1, &stmt, NULL) if sql != NULL else SQLITE_NOMEM
    sqlite3_free(sql)
    while rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
        if sqlite3_column_bytes(stmt, 0) == 4 * t.dim:
            ranges_add(&r, <const uint8_t*>sqlite3_column_blob(stmt, 0), t.dim)
    if rc == SQLITE_OK:
        rc = set_ranges(t, &r)
    else:
        sqlite3_free(r.low)
    if rc == SQLITE_OK:
        sqlite3_reset(stmt)
    while rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
        if sqlite3_column_bytes(stmt, 0) == 4 * t.dim:
            rc = encode_vector(t, <const uint8_t*>sqlite3_column_blob(stmt, 0), &code, &stored)
            if rc == SQLITE_OK:
                rc = pending_add(t, sqlite3_column_int64(stmt, 1), WRITE_VECTOR, 0, NULL, stored)
    sqlite3_finalize(stmt)
    if rc == SQLITE_OK:
        rc = exec_sql(t, sqlite3_mprintf('DELETE FROM "%w"."%w_calibration"', t.schema, t.name))
        t.calibration_count = 0
    return table_sqlite_fail(t, rc)


cdef int each_stored_vector(VectorTable *t, RangeAccumulator *r) noexcept nogil:
    """Add every live row's dequantized int8 vector to `r`."""
    cdef sqlite3_stmt *stmt = NULL
    cdef VectorReader reader
    cdef uint8_t *floats = <uint8_t*>sqlite3_malloc64(5 * t.dim + 8)
    cdef int rc
    cdef char *sql = sqlite3_mprintf('SELECT rowid, location FROM "%w"."%w_rowids" ORDER BY location',
                                     t.schema, t.name)
    reader.blob = NULL
    reader.row = -1
    rc = sqlite3_prepare_v2(t.db, sql, -1, &stmt, NULL) if sql != NULL and floats != NULL else SQLITE_NOMEM
    sqlite3_free(sql)
    while rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
        rc = read_vector_float32(t, &reader, sqlite3_column_int64(stmt, 0), sqlite3_column_int64(stmt, 1), floats)
        if rc == SQLITE_OK:
            ranges_add(r, floats, t.dim)
    vector_reader_close(&reader)
    sqlite3_finalize(stmt)
    sqlite3_free(floats)
    return table_sqlite_fail(t, rc)


cdef int recalibrate(VectorTable *t) noexcept nogil:
    """Staged rows: calibrate now. Calibrated: new ranges from the dequantized vectors, every
    vector quantized again (read with the old ranges, written with the new)."""
    cdef RangeAccumulator r
    cdef uint8_t *new_ranges
    cdef uint8_t *old_ranges
    cdef int rc
    memset(&r, 0, sizeof(RangeAccumulator))
    if t.rescore != RESCORE_INT8:
        return table_fail(t, sqlite3_mprintf("sqlitebin: 'recalibrate' applies to rescore=int8 tables; %s stores %s",
                                             t.name, "float32" if t.rescore == RESCORE_FLOAT32 else "no vectors"))
    if staging(t):
        return calibrate_staged(t) if t.calibration_count > 0 else SQLITE_OK
    rc = storage_flush(t)
    if rc == SQLITE_OK:
        rc = ranges_begin(&r, t.dim)
    if rc == SQLITE_OK:
        rc = each_stored_vector(t, &r)
    if rc != SQLITE_OK or r.rows == 0:
        sqlite3_free(r.low)
        return rc
    new_ranges = <uint8_t*>sqlite3_malloc64(8 * t.dim + 8)
    if new_ranges == NULL:
        sqlite3_free(r.low)
        return SQLITE_NOMEM
    ranges_finish(&r, t.dim, new_ranges)
    # Read with the old ranges, write with the new: both in memory until every row is queued.
    old_ranges = t.ranges
    rc = rewrite_with_ranges(t, old_ranges, new_ranges)
    sqlite3_free(old_ranges)
    return rc


cdef int rewrite_with_ranges(VectorTable *t, uint8_t *old_ranges, uint8_t *new_ranges) noexcept nogil:
    """Queue every vector re-quantized: dequantize with old_ranges, quantize with new_ranges."""
    cdef sqlite3_stmt *stmt = NULL
    cdef VectorReader reader
    cdef uint8_t *row = <uint8_t*>sqlite3_malloc64(t.dim + 8)
    cdef int64_t location
    cdef int rc, i
    cdef float value
    cdef char *sql = sqlite3_mprintf('SELECT location FROM "%w"."%w_rowids" ORDER BY location', t.schema, t.name)
    reader.blob = NULL
    reader.row = -1
    t.ranges = new_ranges
    rc = sqlite3_prepare_v2(t.db, sql, -1, &stmt, NULL) if sql != NULL and row != NULL else SQLITE_NOMEM
    sqlite3_free(sql)
    while rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
        location = sqlite3_column_int64(stmt, 0)
        rc = read_stored_vector(t, &reader, location, row)
        for i in range(t.dim if rc == SQLITE_OK else 0):
            value = int8_value(<int8_t>row[i], float_at(old_ranges, i), float_at(old_ranges, t.dim + i))
            row[i] = <uint8_t>int8_code(value, float_at(new_ranges, i), float_at(new_ranges, t.dim + i))
        if rc == SQLITE_OK:
            rc = pending_add(t, location, WRITE_VECTOR, 0, NULL, row)
    vector_reader_close(&reader)
    sqlite3_finalize(stmt)
    sqlite3_free(row)
    if rc == SQLITE_OK:
        rc = config_set_blob(t, "ranges", new_ranges, 8 * t.dim)
    return table_sqlite_fail(t, rc)


cdef int optimize(VectorTable *t) noexcept nogil:
    """Move every live row, in location order, to the first free slots; drop the chunk and
    vector rows left empty. Rows are read from disk before any queued write reaches them
    (a row moves only to a lower location)."""
    cdef sqlite3_stmt *stmt = NULL
    cdef VectorReader codes
    cdef VectorReader vectors
    cdef int64_t n = 0, location, rowid, end
    cdef uint8_t *row = <uint8_t*>sqlite3_malloc64(t.code_bytes + t.vector_bytes + 8)
    cdef int rc = storage_flush(t)
    cdef char *sql = sqlite3_mprintf('SELECT rowid, location FROM "%w"."%w_rowids" ORDER BY location',
                                     t.schema, t.name)
    codes.blob = NULL
    codes.row = -1
    vectors.blob = NULL
    vectors.row = -1
    if rc == SQLITE_OK:
        rc = sqlite3_prepare_v2(t.db, sql, -1, &stmt, NULL) if sql != NULL and row != NULL else SQLITE_NOMEM
    sqlite3_free(sql)
    while rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
        rowid = sqlite3_column_int64(stmt, 0)
        location = sqlite3_column_int64(stmt, 1)
        if location != n:
            rc = read_stored_code(t, &codes, location, row)
            if rc == SQLITE_OK and t.vector_bytes > 0 and not staging(t):
                rc = read_stored_vector(t, &vectors, location, row + t.code_bytes)
            if rc == SQLITE_OK:
                rc = pending_add(t, n, WRITE_ID | WRITE_CODE | SET_LIVE | (
                    WRITE_VECTOR if t.vector_bytes > 0 and not staging(t) else 0), rowid, row, row + t.code_bytes)
            if rc == SQLITE_OK:
                rc = rowid_write(t, ST_ROWID_MOVE, rowid, n)
        n += 1
    vector_reader_close(&codes)
    vector_reader_close(&vectors)
    sqlite3_finalize(stmt)
    sqlite3_free(row)
    end = (n + t.chunk_size - 1) // t.chunk_size * t.chunk_size
    location = n
    while rc == SQLITE_OK and location < end and location < t.next_location:
        rc = pending_add(t, location, CLEAR_LIVE, 0, NULL, NULL)
        location += 1
    if rc == SQLITE_OK:
        rc = exec_sql(t, sqlite3_mprintf('DELETE FROM "%w"."%w_chunks" WHERE chunk_id >= %lld',
                                         t.schema, t.name, end // t.chunk_size))
    if rc == SQLITE_OK and t.vector_bytes > 0:
        rc = exec_sql(t, sqlite3_mprintf('DELETE FROM "%w"."%w_vectors" WHERE block_id >= %lld', t.schema, t.name,
                                         (n + t.vectors_per_row - 1) // t.vectors_per_row))
    if rc == SQLITE_OK:
        t.next_location = n
        t.location_dirty = True
        rc = storage_flush(t)
    cache_release(t)
    return table_sqlite_fail(t, rc)


cdef int count_rows(VectorTable *t, const char *sql_format, int64_t *count) noexcept nogil:
    """count(*) or another single integer from `sql_format` (with schema and name twice)."""
    cdef sqlite3_stmt *stmt = NULL
    cdef char *sql = sqlite3_mprintf(sql_format, t.schema, t.name, t.schema, t.name)
    cdef int rc = sqlite3_prepare_v2(t.db, sql, -1, &stmt, NULL) if sql != NULL else SQLITE_NOMEM
    sqlite3_free(sql)
    count[0] = -1
    if rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
        count[0] = sqlite3_column_int64(stmt, 0)
    sqlite3_finalize(stmt)
    return table_sqlite_fail(t, rc)


cdef int integrity_check(VectorTable *t) noexcept nogil:
    cdef CodeCache loaded
    cdef int64_t count = 0, live = 0, p
    cdef int rc = storage_flush(t)
    memset(&loaded, 0, sizeof(CodeCache))
    if rc == SQLITE_OK:
        rc = storage_load_chunks(t, &loaded)  # checks the chunk rows themselves
    if rc == SQLITE_OK:
        rc = check_rowids(t, &loaded.data)
    for p in range(t.next_location if rc == SQLITE_OK else 0):
        if (loaded.data.validity[p >> 3] << (p & 7)) & 0x80:
            live += 1
    if rc == SQLITE_OK and t.vector_bytes > 0:
        rc = check_vector_rows(t)
    if rc == SQLITE_OK and t.rescore == RESCORE_INT8:
        rc = count_rows(t, 'SELECT count(*) FROM "%w"."%w_calibration"', &count)
        if rc == SQLITE_OK and staging(t) and count != live:
            rc = inconsistent(t, sqlite3_mprintf("%lld rows wait for calibration but %lld rows exist", count, live))
        elif rc == SQLITE_OK and not staging(t) and count != 0:
            rc = inconsistent(t, sqlite3_mprintf("the int8 ranges are set but %lld rows still wait for calibration", count))
    codes_free(&loaded)
    return rc


cdef int check_vector_rows(VectorTable *t) noexcept nogil:
    cdef sqlite3_stmt *stmt = NULL
    cdef int64_t expected = (t.next_location + t.vectors_per_row - 1) // t.vectors_per_row, rows = 0, bad = -1
    cdef char *sql = sqlite3_mprintf('SELECT block_id, length(vectors) FROM "%w"."%w_vectors" ORDER BY block_id',
                                     t.schema, t.name)
    cdef int rc = sqlite3_prepare_v2(t.db, sql, -1, &stmt, NULL) if sql != NULL else SQLITE_NOMEM
    sqlite3_free(sql)
    while rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
        if bad < 0 and (sqlite3_column_int64(stmt, 0) != rows
                        or sqlite3_column_int64(stmt, 1) != t.vectors_per_row * t.vector_bytes):
            bad = rows
        rows += 1
    sqlite3_finalize(stmt)
    if rc == SQLITE_OK and (bad >= 0 or rows != expected):
        return inconsistent(t, sqlite3_mprintf("%s_vectors has %lld rows (%lld expected), first bad at row %lld",
                                               t.name, rows, expected, bad))
    return table_sqlite_fail(t, rc)


cdef int run_command(VectorTable *t, sqlite3_value *command) noexcept nogil:
    cdef const char *text = <const char*>sqlite3_value_text(command)
    cdef int rc
    if text == NULL:
        return SQLITE_NOMEM
    if strcmp(text, "integrity-check") == 0:
        return integrity_check(t)
    if strcmp(text, "recalibrate") != 0 and strcmp(text, "optimize") != 0:
        return table_fail(t, sqlite3_mprintf(
            "sqlitebin: unknown command '%s' for %s (expected 'recalibrate', 'optimize' or 'integrity-check')",
            text, t.name))
    rc = cache_before_write(t)
    if rc == SQLITE_OK and strcmp(text, "recalibrate") == 0:
        rc = recalibrate(t)
    elif rc == SQLITE_OK:
        rc = optimize(t)
    return rc
