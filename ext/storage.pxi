# Chunk storage of the sqlitebin virtual table: the one reader and writer of its shadow tables.
#
#   N_config(key TEXT PRIMARY KEY, value) WITHOUT ROWID   options, ranges, generation, next_location
#   N_chunks(chunk_id INTEGER PRIMARY KEY, validity BLOB, ids BLOB, codes BLOB)
#   N_vectors(block_id INTEGER PRIMARY KEY, vectors BLOB)  vectors_per_row slots per row
#   N_rowids(rowid INTEGER PRIMARY KEY, location INTEGER)
#   N_calibration(rowid INTEGER PRIMARY KEY, vector BLOB)  int8: float32 rows until calibrated
#
# Storage format 3 (written since 0.2.0):
# - N_vectors rows hold `vectors_per_row` vectors, chosen at CREATE for the database's page size so
#   the rows fill their pages (83 int8 256-d vectors on 4 KiB pages: 258 bytes a vector);
# - a chunk's ids are packed: an 8-byte little-endian base, then chunk_size little-endian offsets of
#   1, 2, 4 or 8 bytes (the BLOB's length tells which); slot i holds rowid base + offset, modulo 2^64.
#   A chunk starts at the width that rowids inserted in order need (2 bytes for 4,096 slots) with the
#   base chunk_size below its first rowid, so rowids counting down fit too; a rowid that does not fit
#   repacks that chunk's ids from the smallest and largest it holds (ids_flush).
# Earlier formats of the 0.2.0 development versions are read and written in their own format:
# format 2 stores each id as 8 bytes (no base); format 1 as well, with 64 vectors a row.
#
# A row lives at location = chunk_id * chunk_size + slot. Slots are handed out in order
# (next_location) and reused only by 'optimize', so every chunk but the last is full.
# Chunk and vector rows are pre-allocated with zeroblob() and written in place with
# incremental blob I/O. Slot writes are queued in memory (the pending list) and written
# at xSync, xSavepoint, before any read of the shadow tables and when the list is long:
# a bulk load then writes each chunk once, in a few large blob writes.

cdef enum:
    FORMAT_VERSION = 3          # the format CREATE writes; 1 and 2 are read and written too
    FORMAT_64_VECTORS = 1       # the format whose vector rows hold FORMAT1_VECTORS_PER_ROW
    FORMAT_SIZED_ROWS = 2       # the first format with vectors_per_row
    FORMAT_PACKED_IDS = 3       # the first format with packed chunk ids
    FORMAT1_VECTORS_PER_ROW = 64
    MAX_VECTORS_PER_ROW = 128
    RESCORE_INT8 = 0
    RESCORE_FLOAT32 = 1
    RESCORE_NONE = 2
    RESCORE_BITS = 3            # a search-time choice only
    PENDING_LIMIT = 65536       # slot writes queued before a flush
    # What a pending entry writes.
    WRITE_ID = 1
    WRITE_CODE = 2
    WRITE_VECTOR = 4
    SET_LIVE = 8
    CLEAR_LIVE = 16
    # Prepared statements, kept for the life of the connection.
    ST_ROWID_GET = 0
    ST_ROWID_INSERT = 1
    ST_ROWID_DELETE = 2
    ST_ROWID_MAX = 3
    ST_CONFIG_GET = 4
    ST_CONFIG_SET = 5
    ST_CHUNK_NEW = 6
    ST_BLOCK_NEW = 7
    ST_CALIBRATION_PUT = 8
    ST_CALIBRATION_GET = 9
    ST_CALIBRATION_DELETE = 10
    ST_CALIBRATION_MOVE = 11
    ST_ROWID_MOVE = 12
    ST_CHUNK_IDS = 13
    STATEMENT_COUNT = 14

ctypedef struct PendingEntry:
    int64_t location
    int64_t id
    int64_t sequence
    int64_t data_index          # where its code and vector sit in pending_data
    int kind

ctypedef struct CodeCache:
    ChunkData data          # chunk j at positions j * chunk_size; positions are locations
    int64_t generation
    bint loaded
    int64_t capacity_chunks
    # Stored vectors for rescoring, one N_vectors row (vectors_per_row slots) per entry, read
    # from disk the first time a search needs one of its slots (NULL until then) while the
    # copy holds less than vector_budget bytes of them (cache.pxi).
    uint8_t **vector_rows
    int64_t vector_row_capacity
    int64_t vector_bytes_cached    # changed atomically: concurrent searches fill rows
    int64_t vector_budget

ctypedef struct SharedCodes:
    CodeCache codes
    char *key               # database file (or connection, for memory databases) and table
    int references          # tables holding it; it is changed in place only by a sole holder
    bint linked             # findable in the process-wide list (by key and generation)
    bint loading            # being read from disk by one table; others wait for it (cache_load)
    SharedCodes *next

ctypedef struct VectorTable:
    sqlite3_vtab base
    sqlite3 *db
    char *schema
    char *name
    int dim
    int code_bytes
    int rescore               # what is stored: RESCORE_INT8, RESCORE_FLOAT32 or RESCORE_NONE
    int vector_bytes          # stored bytes per vector (dim, 4 * dim or 0)
    int format                # storage format: FORMAT_VERSION, FORMAT_SIZED_ROWS or FORMAT_64_VECTORS
    int64_t vectors_per_row   # slots per N_vectors row
    int64_t chunk_size
    int64_t calibration_rows
    uint8_t *thresholds       # 4 * dim bytes of float32, or NULL for zeros
    uint8_t *ranges           # 8 * dim bytes (lows then highs), NULL until calibrated
    bint state_loaded         # next_location, calibration_count and ranges read from disk
    int64_t next_location
    int64_t calibration_count
    int64_t max_rowid         # no rowid above it exists (an upper bound: deletes leave it): inserts
                              # above it need no conflict lookup
    bint need_new_generation
    int64_t state_generation  # the generation next_location, ranges and calibration_count were read at
    PendingEntry *pending
    uint8_t *pending_data     # per entry: code_bytes of code, then vector_bytes of vector
    int64_t pending_count
    int64_t pending_capacity
    int64_t sequence
    bint location_dirty       # next_location changed since it was written
    SharedCodes *shared       # the codes this table searches (cache.pxi); NULL until a search
    uint8_t *scratch          # code_bytes + vector_bytes + 4 * dim + 16 bytes for one row's encodings
    sqlite3_stmt *statements[STATEMENT_COUNT]


cdef int table_fail(VectorTable *t, char *message) noexcept nogil:
    """Set the table's error message (from sqlite3_mprintf) and return SQLITE_ERROR."""
    sqlite3_free(t.base.zErrMsg)
    t.base.zErrMsg = message
    return SQLITE_ERROR if message != NULL else SQLITE_NOMEM


cdef int table_sqlite_fail(VectorTable *t, int rc) noexcept nogil:
    """Report an error of SQLite itself while reading or writing the shadow tables."""
    if rc == SQLITE_OK or rc == SQLITE_NOMEM:
        return rc
    if t.base.zErrMsg == NULL:  # keep a more precise message set on the way
        t.base.zErrMsg = sqlite3_mprintf("sqlitebin: %s: %s", t.name, sqlite3_errmsg(t.db))
    return rc


cdef char *statement_sql(VectorTable *t, int which) noexcept nogil:
    if which == ST_ROWID_GET:
        return sqlite3_mprintf('SELECT location FROM "%w"."%w_rowids" WHERE rowid = ?1', t.schema, t.name)
    if which == ST_ROWID_INSERT:
        return sqlite3_mprintf('INSERT INTO "%w"."%w_rowids"(rowid, location) VALUES (?1, ?2)', t.schema, t.name)
    if which == ST_ROWID_DELETE:
        return sqlite3_mprintf('DELETE FROM "%w"."%w_rowids" WHERE rowid = ?1', t.schema, t.name)
    if which == ST_ROWID_MAX:
        return sqlite3_mprintf('SELECT max(rowid) FROM "%w"."%w_rowids"', t.schema, t.name)
    if which == ST_ROWID_MOVE:
        return sqlite3_mprintf('UPDATE "%w"."%w_rowids" SET location = ?2 WHERE rowid = ?1', t.schema, t.name)
    if which == ST_CONFIG_GET:
        return sqlite3_mprintf('SELECT value FROM "%w"."%w_config" WHERE key = ?1', t.schema, t.name)
    if which == ST_CONFIG_SET:
        return sqlite3_mprintf('INSERT OR REPLACE INTO "%w"."%w_config"(key, value) VALUES (?1, ?2)', t.schema, t.name)
    if which == ST_CHUNK_NEW:
        return sqlite3_mprintf('INSERT INTO "%w"."%w_chunks"(chunk_id, validity, ids, codes) '
                               'VALUES (?1, zeroblob(?2), ?3, zeroblob(?4))', t.schema, t.name)
    if which == ST_CHUNK_IDS:
        return sqlite3_mprintf('UPDATE "%w"."%w_chunks" SET ids = ?2 WHERE chunk_id = ?1', t.schema, t.name)
    if which == ST_BLOCK_NEW:
        return sqlite3_mprintf('INSERT INTO "%w"."%w_vectors"(block_id, vectors) VALUES (?1, zeroblob(?2))',
                               t.schema, t.name)
    if which == ST_CALIBRATION_PUT:
        return sqlite3_mprintf('INSERT OR REPLACE INTO "%w"."%w_calibration"(rowid, vector) VALUES (?1, ?2)',
                               t.schema, t.name)
    if which == ST_CALIBRATION_GET:
        return sqlite3_mprintf('SELECT vector FROM "%w"."%w_calibration" WHERE rowid = ?1', t.schema, t.name)
    if which == ST_CALIBRATION_DELETE:
        return sqlite3_mprintf('DELETE FROM "%w"."%w_calibration" WHERE rowid = ?1', t.schema, t.name)
    return sqlite3_mprintf('UPDATE "%w"."%w_calibration" SET rowid = ?2 WHERE rowid = ?1', t.schema, t.name)


cdef sqlite3_stmt *table_statement(VectorTable *t, int which) noexcept nogil:
    """The prepared statement `which`, reset and unbound; NULL on error (message set)."""
    cdef char *sql
    cdef int rc
    if t.statements[which] == NULL:
        sql = statement_sql(t, which)
        if sql == NULL:
            return NULL
        rc = sqlite3_prepare_v2(t.db, sql, -1, &t.statements[which], NULL)
        sqlite3_free(sql)
        if rc != SQLITE_OK:
            table_sqlite_fail(t, rc)
            sqlite3_finalize(t.statements[which])
            t.statements[which] = NULL
            return NULL
    return t.statements[which]


cdef void table_finalize_statements(VectorTable *t) noexcept nogil:
    cdef int i
    for i in range(STATEMENT_COUNT):
        sqlite3_finalize(t.statements[i])
        t.statements[i] = NULL


cdef int step_done(VectorTable *t, sqlite3_stmt *stmt) noexcept nogil:
    """Run a writing statement to completion and reset it."""
    cdef int rc
    if stmt == NULL:
        return SQLITE_ERROR if t.base.zErrMsg != NULL else SQLITE_NOMEM
    rc = sqlite3_step(stmt)
    sqlite3_reset(stmt)
    if rc == SQLITE_DONE or rc == SQLITE_ROW:
        return SQLITE_OK
    return table_sqlite_fail(t, rc)


cdef int exec_sql(VectorTable *t, char *sql) noexcept nogil:
    """Run `sql` (from sqlite3_mprintf, freed here)."""
    cdef int rc
    if sql == NULL:
        return SQLITE_NOMEM
    rc = sqlite3_exec(t.db, sql, NULL, NULL, NULL)
    sqlite3_free(sql)
    return table_sqlite_fail(t, rc)


# ---------------------------------------------------------------------------
# idx_config

cdef int config_set_int(VectorTable *t, const char *key, int64_t value) noexcept nogil:
    cdef sqlite3_stmt *stmt = table_statement(t, ST_CONFIG_SET)
    if stmt != NULL:
        sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC)
        sqlite3_bind_int64(stmt, 2, value)
    return step_done(t, stmt)


cdef const char *rescore_name(int rescore) noexcept nogil:
    if rescore == RESCORE_INT8:
        return "int8"
    if rescore == RESCORE_FLOAT32:
        return "float32"
    return "none" if rescore == RESCORE_NONE else "bits"


cdef int config_get_rescore(VectorTable *t, int64_t *rescore) noexcept nogil:
    """The stored rescore name as RESCORE_INT8 / _FLOAT32 / _NONE; -1 when damaged."""
    cdef sqlite3_stmt *stmt = table_statement(t, ST_CONFIG_GET)
    cdef const char *text
    cdef int rc
    if stmt == NULL:
        return SQLITE_ERROR
    sqlite3_bind_text(stmt, 1, "rescore", -1, SQLITE_STATIC)
    rc = sqlite3_step(stmt)
    rescore[0] = -1
    if rc == SQLITE_ROW:
        text = <const char*>sqlite3_column_text(stmt, 0)
        for i in range(3):
            if text != NULL and strcmp(text, rescore_name(i)) == 0:
                rescore[0] = i
        rc = SQLITE_OK
    elif rc == SQLITE_DONE:
        rc = SQLITE_OK
    sqlite3_reset(stmt)
    return table_sqlite_fail(t, rc)


cdef int config_set_text(VectorTable *t, const char *key, const char *value) noexcept nogil:
    cdef sqlite3_stmt *stmt = table_statement(t, ST_CONFIG_SET)
    if stmt != NULL:
        sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC)
        sqlite3_bind_text(stmt, 2, value, -1, SQLITE_STATIC)
    return step_done(t, stmt)


cdef int config_set_blob(VectorTable *t, const char *key, const uint8_t *data, int nbytes) noexcept nogil:
    cdef sqlite3_stmt *stmt = table_statement(t, ST_CONFIG_SET)
    if stmt != NULL:
        sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC)
        if data == NULL:
            sqlite3_bind_null(stmt, 2)
        else:
            sqlite3_bind_blob(stmt, 2, data, nbytes, SQLITE_STATIC)
    return step_done(t, stmt)


cdef int config_get_int(VectorTable *t, const char *key, int64_t *value) noexcept nogil:
    cdef sqlite3_stmt *stmt = table_statement(t, ST_CONFIG_GET)
    cdef int rc
    if stmt == NULL:
        return SQLITE_ERROR
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC)
    rc = sqlite3_step(stmt)
    if rc == SQLITE_ROW and sqlite3_column_type(stmt, 0) == SQLITE_INTEGER:
        value[0] = sqlite3_column_int64(stmt, 0)
        rc = SQLITE_OK
    elif rc == SQLITE_ROW or rc == SQLITE_DONE:
        rc = table_fail(t, sqlite3_mprintf("sqlitebin: %s_config has no integer '%s'", t.name, key))
        rc = SQLITE_CORRUPT_VTAB
    else:
        rc = table_sqlite_fail(t, rc)
    sqlite3_reset(stmt)
    return rc


cdef int config_get_blob(VectorTable *t, const char *key, int nbytes, uint8_t **data) noexcept nogil:
    """A copy of the BLOB value of `key` (NULL when the value is NULL); any other size is corrupt."""
    cdef sqlite3_stmt *stmt = table_statement(t, ST_CONFIG_GET)
    cdef int rc
    data[0] = NULL
    if stmt == NULL:
        return SQLITE_ERROR
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC)
    rc = sqlite3_step(stmt)
    if rc == SQLITE_ROW and sqlite3_column_type(stmt, 0) == SQLITE_NULL:
        rc = SQLITE_OK
    elif rc == SQLITE_ROW and sqlite3_column_type(stmt, 0) == SQLITE_BLOB and sqlite3_column_bytes(stmt, 0) == nbytes:
        data[0] = <uint8_t*>sqlite3_malloc64(nbytes + 1)
        rc = SQLITE_NOMEM if data[0] == NULL else SQLITE_OK
        if data[0] != NULL:
            memcpy(data[0], sqlite3_column_blob(stmt, 0), nbytes)
    elif rc == SQLITE_ROW or rc == SQLITE_DONE:
        table_fail(t, sqlite3_mprintf("sqlitebin: %s_config holds no %d-byte BLOB '%s'", t.name, nbytes, key))
        rc = SQLITE_CORRUPT_VTAB
    else:
        rc = table_sqlite_fail(t, rc)
    sqlite3_reset(stmt)
    return rc


cdef int storage_create(VectorTable *t) noexcept nogil:
    """Create the shadow tables and write the options into idx_config."""
    cdef int rc = exec_sql(t, sqlite3_mprintf(
        'CREATE TABLE "%w"."%w_config"(key TEXT PRIMARY KEY, value) WITHOUT ROWID;'
        'CREATE TABLE "%w"."%w_chunks"(chunk_id INTEGER PRIMARY KEY, validity BLOB, ids BLOB, codes BLOB);'
        'CREATE TABLE "%w"."%w_rowids"(rowid INTEGER PRIMARY KEY, location INTEGER);',
        t.schema, t.name, t.schema, t.name, t.schema, t.name))
    if rc == SQLITE_OK and t.rescore != RESCORE_NONE:
        rc = exec_sql(t, sqlite3_mprintf('CREATE TABLE "%w"."%w_vectors"(block_id INTEGER PRIMARY KEY, vectors BLOB)',
                                         t.schema, t.name))
    if rc == SQLITE_OK and t.rescore == RESCORE_INT8:
        rc = exec_sql(t, sqlite3_mprintf('CREATE TABLE "%w"."%w_calibration"(rowid INTEGER PRIMARY KEY, vector BLOB)',
                                         t.schema, t.name))
    if rc == SQLITE_OK:
        rc = config_set_int(t, "format", FORMAT_VERSION)
    if rc == SQLITE_OK and t.vector_bytes > 0:
        rc = choose_vectors_per_row(t)
    if rc == SQLITE_OK and t.vector_bytes > 0:
        rc = config_set_int(t, "vectors_per_row", t.vectors_per_row)
    if rc == SQLITE_OK:
        rc = config_set_int(t, "dim", t.dim)
    if rc == SQLITE_OK:
        rc = config_set_text(t, "rescore", rescore_name(t.rescore))
    if rc == SQLITE_OK:
        rc = config_set_int(t, "chunk_size", t.chunk_size)
    if rc == SQLITE_OK:
        rc = config_set_int(t, "calibration_rows", t.calibration_rows)
    if rc == SQLITE_OK:
        rc = config_set_blob(t, "thresholds", t.thresholds, 4 * t.dim)
    if rc == SQLITE_OK:
        rc = config_set_blob(t, "ranges", t.ranges, 8 * t.dim)
    if rc == SQLITE_OK:
        rc = config_set_int(t, "next_location", 0)
    if rc == SQLITE_OK:
        rc = config_set_int(t, "generation", random_int64())
    return rc


cdef int64_t random_int64() noexcept nogil:
    cdef int64_t value = 0
    sqlite3_randomness(8, &value)
    return value


cdef int storage_read_options(VectorTable *t) noexcept nogil:
    """xConnect: the options written by storage_create."""
    cdef int64_t format = 0, dim = 0, rescore = -1, chunk_size = 0, calibration_rows = 0
    cdef int rc = config_get_int(t, "format", &format)
    if rc == SQLITE_OK and (format < FORMAT_64_VECTORS or format > FORMAT_VERSION):
        return table_fail(t, sqlite3_mprintf("sqlitebin: %s was made by a newer sqlitebin (storage format %lld; "
                                             "this one reads formats 1 to %d)", t.name, format, <int>FORMAT_VERSION))
    t.format = <int>format
    if rc == SQLITE_OK:
        rc = config_get_int(t, "dim", &dim)
    if rc == SQLITE_OK:
        rc = config_get_rescore(t, &rescore)
    if rc == SQLITE_OK:
        rc = config_get_int(t, "chunk_size", &chunk_size)
    if rc == SQLITE_OK:
        rc = config_get_int(t, "calibration_rows", &calibration_rows)
    if rc != SQLITE_OK:
        return rc
    if dim < 1 or dim > 65536 or rescore < 0 or rescore > RESCORE_NONE or chunk_size < 64 or chunk_size > 65536 \
            or chunk_size % 64 != 0:
        table_fail(t, sqlite3_mprintf("sqlitebin: %s_config is damaged (dim %lld, rescore %lld, chunk_size %lld)",
                                      t.name, dim, rescore, chunk_size))
        return SQLITE_CORRUPT_VTAB
    table_set_shape(t, <int>dim, <int>rescore, chunk_size, calibration_rows)
    if t.format >= FORMAT_SIZED_ROWS and t.vector_bytes > 0:
        rc = config_get_int(t, "vectors_per_row", &t.vectors_per_row)
        if rc == SQLITE_OK and (t.vectors_per_row < 1 or t.vectors_per_row > MAX_VECTORS_PER_ROW):
            table_fail(t, sqlite3_mprintf("sqlitebin: %s_config is damaged (vectors_per_row %lld)",
                                          t.name, t.vectors_per_row))
            rc = SQLITE_CORRUPT_VTAB
        if rc != SQLITE_OK:
            return rc
    return config_get_blob(t, "thresholds", 4 * t.dim, &t.thresholds)


cdef int choose_vectors_per_row(VectorTable *t) noexcept nogil:
    """The vectors per N_vectors row that waste the least of the pages they fill, from the
    database's page size and SQLite's rules for spilling a row to overflow pages (a table
    b-tree leaf keeps at most usable - 35 bytes of a row; a longer one keeps
    min_local + (payload - min_local) % (usable - 4) bytes when that fits, else min_local)."""
    cdef sqlite3_stmt *stmt = NULL
    cdef char *sql = sqlite3_mprintf('PRAGMA "%w".page_size', t.schema)
    cdef int rc = sqlite3_prepare_v2(t.db, sql, -1, &stmt, NULL) if sql != NULL else SQLITE_NOMEM
    cdef int64_t usable = 4096, v, best = 1, payload, local, overflow, cell, per_page
    cdef int64_t max_local, min_local
    cdef double cost, best_cost = 1e300
    sqlite3_free(sql)
    if rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
        usable = sqlite3_column_int64(stmt, 0)
    sqlite3_finalize(stmt)
    if rc != SQLITE_OK:
        return table_sqlite_fail(t, rc)
    max_local = usable - 35
    min_local = (usable - 12) * 32 // 255 - 23
    for v in range(1, MAX_VECTORS_PER_ROW + 1):
        payload = v * t.vector_bytes + 5  # the record header: its size, NULL (the key), the BLOB's type
        local, overflow = payload, 0
        if payload > max_local:
            local = min_local + (payload - min_local) % (usable - 4)
            if local > max_local:
                local = min_local
            overflow = (payload - local + usable - 5) // (usable - 4)
        cell = local + (4 if overflow > 0 else 0) + 3 + 9 + 2  # payload size, key, cell pointer (upper bounds)
        per_page = (usable - 8) // cell
        cost = (overflow + 1.0 / (per_page if per_page > 0 else 1)) / v
        if cost < best_cost * 0.999:  # a smaller row unless a larger one is clearly better
            best, best_cost = v, cost
    t.vectors_per_row = best
    return SQLITE_OK


cdef void table_set_shape(VectorTable *t, int dim, int rescore, int64_t chunk_size, int64_t calibration_rows) noexcept nogil:
    t.dim = dim
    t.code_bytes = (dim + 7) // 8
    t.rescore = rescore
    t.vector_bytes = dim if rescore == RESCORE_INT8 else (4 * dim if rescore == RESCORE_FLOAT32 else 0)
    t.chunk_size = chunk_size
    t.calibration_rows = calibration_rows
    t.vectors_per_row = FORMAT1_VECTORS_PER_ROW


cdef int storage_load_state(VectorTable *t) noexcept nogil:
    """Read what writes change (next_location, ranges, the staged row count), once per
    transaction state: after a rollback it is read again."""
    cdef sqlite3_stmt *stmt = NULL
    cdef char *sql
    cdef int rc
    if t.state_loaded:
        return SQLITE_OK
    sqlite3_free(t.ranges)
    t.ranges = NULL
    t.calibration_count = 0
    rc = config_get_int(t, "next_location", &t.next_location)
    if rc == SQLITE_OK:
        rc = rowid_largest(t, &t.max_rowid)
    if rc == SQLITE_OK and t.rescore == RESCORE_INT8:
        rc = config_get_blob(t, "ranges", 8 * t.dim, &t.ranges)
    if rc == SQLITE_OK and t.rescore == RESCORE_INT8 and t.ranges == NULL:
        sql = sqlite3_mprintf('SELECT count(*) FROM "%w"."%w_calibration"', t.schema, t.name)
        rc = sqlite3_prepare_v2(t.db, sql, -1, &stmt, NULL) if sql != NULL else SQLITE_NOMEM
        sqlite3_free(sql)
        if rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
            t.calibration_count = sqlite3_column_int64(stmt, 0)
        sqlite3_finalize(stmt)
        rc = table_sqlite_fail(t, rc)
    t.state_loaded = rc == SQLITE_OK
    t.location_dirty = False
    return rc


cdef int storage_current(VectorTable *t, int64_t *generation) noexcept nogil:
    """Before a read: write queued slots, then make sure what was read from disk is still what
    the database holds (another connection may have committed since); give the generation."""
    cdef int rc = storage_load_state(t)
    if rc == SQLITE_OK:
        rc = storage_flush(t)
    if rc == SQLITE_OK:
        rc = config_get_int(t, "generation", generation)
    if rc == SQLITE_OK and generation[0] != t.state_generation:
        t.state_loaded = False
        rc = storage_load_state(t)
        t.state_generation = generation[0]
    return rc


cdef void storage_forget_state(VectorTable *t) noexcept nogil:
    """After a rollback: drop the queued writes and everything read from disk."""
    t.pending_count = 0
    t.state_loaded = False
    t.location_dirty = False


# ---------------------------------------------------------------------------
# rowid -> location

cdef int rowid_location(VectorTable *t, int64_t rowid, int64_t *location) noexcept nogil:
    """SQLITE_OK with the location, SQLITE_DONE when the rowid does not exist, or an error."""
    cdef sqlite3_stmt *stmt = table_statement(t, ST_ROWID_GET)
    cdef int rc
    if stmt == NULL:
        return SQLITE_ERROR
    sqlite3_bind_int64(stmt, 1, rowid)
    rc = sqlite3_step(stmt)
    if rc == SQLITE_ROW:
        location[0] = sqlite3_column_int64(stmt, 0)
        rc = SQLITE_OK
    elif rc != SQLITE_DONE:
        rc = table_sqlite_fail(t, rc)
    sqlite3_reset(stmt)
    return rc


cdef int rowid_largest(VectorTable *t, int64_t *rowid) noexcept nogil:
    """The largest rowid, or 0 when there is none."""
    cdef sqlite3_stmt *stmt = table_statement(t, ST_ROWID_MAX)
    cdef int rc
    if stmt == NULL:
        return SQLITE_ERROR
    rc = sqlite3_step(stmt)
    rowid[0] = 0
    if rc == SQLITE_ROW:
        if sqlite3_column_type(stmt, 0) == SQLITE_INTEGER:
            rowid[0] = sqlite3_column_int64(stmt, 0)
        rc = SQLITE_OK
    else:
        rc = table_sqlite_fail(t, rc)
    sqlite3_reset(stmt)
    return rc


cdef int rowid_write(VectorTable *t, int which, int64_t rowid, int64_t location) noexcept nogil:
    """ST_ROWID_INSERT, ST_ROWID_MOVE (rowid, location) or ST_ROWID_DELETE (rowid)."""
    cdef sqlite3_stmt *stmt = table_statement(t, which)
    if stmt != NULL:
        sqlite3_bind_int64(stmt, 1, rowid)
        if which != ST_ROWID_DELETE:
            sqlite3_bind_int64(stmt, 2, location)
    if which == ST_ROWID_INSERT and rowid > t.max_rowid:
        t.max_rowid = rowid
    return step_done(t, stmt)


# ---------------------------------------------------------------------------
# Allocation of slots, and the pending writes

cdef int chunk_create(VectorTable *t, int64_t chunk, int64_t first_rowid) noexcept nogil:
    """A new N_chunks row, all slots empty; packed ids start at the width and base that rowids
    inserted in order from first_rowid (or counting down from it) fit."""
    cdef sqlite3_stmt *stmt = table_statement(t, ST_CHUNK_NEW)
    cdef int header = ids_header_bytes(t)
    cdef int width = ids_width_for(<uint64_t>(2 * t.chunk_size - 1)) if header > 0 else 8
    cdef int64_t nbytes = header + width * t.chunk_size
    cdef uint8_t *ids = <uint8_t*>sqlite3_malloc64(nbytes)
    cdef int rc
    if ids == NULL:
        return SQLITE_NOMEM
    memset(ids, 0, nbytes)
    if header > 0:
        store_le(ids, <uint64_t>first_rowid - <uint64_t>t.chunk_size, 8)
    if stmt != NULL:
        sqlite3_bind_int64(stmt, 1, chunk)
        sqlite3_bind_int64(stmt, 2, t.chunk_size // 8)
        sqlite3_bind_blob(stmt, 3, ids, <int>nbytes, SQLITE_STATIC)
        sqlite3_bind_int64(stmt, 4, t.chunk_size * t.code_bytes)
    rc = step_done(t, stmt)
    if stmt != NULL:
        sqlite3_bind_null(stmt, 3)
    sqlite3_free(ids)
    return rc


cdef int storage_new_slot(VectorTable *t, int64_t rowid, int64_t *location) noexcept nogil:
    """The next free location, for `rowid`, creating its chunk row (and vector row) when it opens one."""
    cdef sqlite3_stmt *stmt
    cdef int rc = SQLITE_OK
    cdef int64_t next = t.next_location
    if next % t.chunk_size == 0:
        rc = chunk_create(t, next // t.chunk_size, rowid)
    if rc == SQLITE_OK and t.vector_bytes > 0 and next % t.vectors_per_row == 0:
        stmt = table_statement(t, ST_BLOCK_NEW)
        if stmt != NULL:
            sqlite3_bind_int64(stmt, 1, next // t.vectors_per_row)
            sqlite3_bind_int64(stmt, 2, t.vectors_per_row * t.vector_bytes)
        rc = step_done(t, stmt)
    if rc == SQLITE_OK:
        location[0] = next
        t.next_location = next + 1
        t.location_dirty = True
    return rc


cdef int pending_add(VectorTable *t, int64_t location, int kind, int64_t rowid,
                     const uint8_t *code, const uint8_t *vector) noexcept nogil:
    """Queue a slot write; `code` / `vector` are read only when kind asks for them."""
    cdef int64_t width = t.code_bytes + t.vector_bytes, capacity
    cdef void *grown
    cdef PendingEntry *entry
    cdef int rc
    if t.pending_count >= PENDING_LIMIT:
        rc = storage_flush(t)
        if rc != SQLITE_OK:
            return rc
    if t.pending_count == t.pending_capacity:
        capacity = t.pending_capacity * 2 + 256
        grown = sqlite3_realloc64(t.pending, capacity * sizeof(PendingEntry))
        if grown == NULL:
            return SQLITE_NOMEM
        t.pending = <PendingEntry*>grown
        grown = sqlite3_realloc64(t.pending_data, capacity * width + 1)
        if grown == NULL:
            return SQLITE_NOMEM
        t.pending_data = <uint8_t*>grown
        t.pending_capacity = capacity
    entry = &t.pending[t.pending_count]
    entry.location = location
    entry.id = rowid
    entry.kind = kind
    entry.sequence = t.sequence
    entry.data_index = t.pending_count
    t.sequence += 1
    if kind & WRITE_VECTOR:
        cache_forget_vector(t, location)
    if kind & WRITE_CODE:
        memcpy(t.pending_data + t.pending_count * width, code, t.code_bytes)
    if kind & WRITE_VECTOR:
        memcpy(t.pending_data + t.pending_count * width + t.code_bytes, vector, t.vector_bytes)
    t.pending_count += 1
    return SQLITE_OK


cdef int compare_pending(const void *a, const void *b) noexcept nogil:
    cdef const PendingEntry *x = <const PendingEntry*>a
    cdef const PendingEntry *y = <const PendingEntry*>b
    if x.location != y.location:
        return -1 if x.location < y.location else 1
    return -1 if x.sequence < y.sequence else (1 if x.sequence > y.sequence else 0)


cdef int blob_at(VectorTable *t, sqlite3_blob **blob, int64_t *open_row, const char *table,
                 const char *column, int64_t row, int writing) noexcept nogil:
    """Point `blob` at `row` of column `column` of shadow table N_`table`: reopen the handle
    when it is open on another row, open it otherwise (again after an expired handle)."""
    cdef char *name
    cdef int rc
    if blob[0] != NULL and open_row[0] == row:
        return SQLITE_OK
    if blob[0] != NULL:
        rc = sqlite3_blob_reopen(blob[0], row)
        if rc == SQLITE_OK:
            open_row[0] = row
            return SQLITE_OK
        sqlite3_blob_close(blob[0])
        blob[0] = NULL
    name = sqlite3_mprintf("%s_%s", t.name, table)
    if name == NULL:
        return SQLITE_NOMEM
    rc = sqlite3_blob_open(t.db, t.schema, name, column, row, writing, blob)
    sqlite3_free(name)
    if rc != SQLITE_OK:
        sqlite3_blob_close(blob[0])
        blob[0] = NULL
        open_row[0] = -1
        table_fail(t, sqlite3_mprintf("sqlitebin: %s_%s has no row %lld (%s)", t.name, table, row, sqlite3_errmsg(t.db)))
        return SQLITE_CORRUPT_VTAB
    open_row[0] = row
    return SQLITE_OK


cdef int flush_column(VectorTable *t, int kind, const char *table, const char *column, int64_t width,
                      int64_t per_row, int64_t data_offset, uint8_t *buffer) noexcept nogil:
    """Write the latest queued value of one column for each location, one blob write per
    run of consecutive locations in the same row. `buffer` holds per_row * width bytes."""
    cdef sqlite3_blob *blob = NULL
    cdef int64_t open_row = -1, i = 0, j, first, row, count
    cdef int64_t stride = t.code_bytes + t.vector_bytes
    cdef int rc = SQLITE_OK
    cdef PendingEntry *e
    while i < t.pending_count and rc == SQLITE_OK:
        e = &t.pending[i]
        if not (e.kind & kind):
            i += 1
            continue
        first = e.location
        row = first // per_row
        count = 0
        # Extend the run while the next location in the same row has a queued value.
        j = i
        while j < t.pending_count and t.pending[j].location // per_row == row and t.pending[j].location <= first + count:
            if t.pending[j].kind & kind:
                if t.pending[j].location == first + count:
                    count += 1
                memcpy(buffer + (t.pending[j].location - first) * width,
                       t.pending_data + t.pending[j].data_index * stride + data_offset, width)
            j += 1
        rc = blob_at(t, &blob, &open_row, table, column, row, 1)
        if rc == SQLITE_OK:
            rc = table_sqlite_fail(t, sqlite3_blob_write(blob, buffer, <int>(count * width),
                                                         <int>((first % per_row) * width)))
        i = j
    sqlite3_blob_close(blob)
    return rc


# ---------------------------------------------------------------------------
# Chunk ids: 8 bytes each (formats 1 and 2), or packed (format 3; the format notes above)

cdef int ids_header_bytes(VectorTable *t) noexcept nogil:
    return 8 if t.format >= FORMAT_PACKED_IDS else 0


cdef int ids_width(VectorTable *t, int64_t nbytes) noexcept nogil:
    """The bytes per id of a chunk's ids BLOB of `nbytes` bytes; 0 when no width gives that length."""
    cdef int width = 1
    cdef int header = ids_header_bytes(t)
    while width <= 8:
        if (header > 0 or width == 8) and nbytes == header + width * t.chunk_size:
            return width
        width *= 2
    return 0


cdef int ids_width_for(uint64_t offset) noexcept nogil:
    """The fewest bytes (1, 2, 4 or 8) that hold `offset`."""
    if offset < 0x100:
        return 1
    if offset < 0x10000:
        return 2
    return 4 if offset <= <uint64_t>0xffffffffU else 8


cdef inline void store_le(uint8_t *out, uint64_t value, int width) noexcept nogil:
    cdef int b
    for b in range(width):
        out[b] = <uint8_t>(value >> (8 * b))


cdef inline uint64_t load_le(const uint8_t *p, int width) noexcept nogil:
    cdef uint64_t value = 0
    cdef int b
    for b in range(width):
        value |= (<uint64_t>p[b]) << (8 * b)
    return value


cdef void ids_unpack(const uint8_t *offsets, int64_t count, uint64_t base, int header, int width,
                     int64_t *out) noexcept nogil:
    """`count` packed offsets from `base` as rowids (8-byte ids when there is no header): ids_pack undone."""
    cdef int64_t i
    if header == 0:
        memcpy(out, offsets, 8 * count)  # 8-byte ids in the machine's order, as formats 1 and 2 wrote them
    elif width == 2:  # the usual case, kept a simple loop the compiler vectorises
        for i in range(count):
            out[i] = <int64_t>(base + ((<uint64_t>offsets[2 * i]) | ((<uint64_t>offsets[2 * i + 1]) << 8)))
    else:
        for i in range(count):
            out[i] = <int64_t>(base + load_le(offsets + i * width, width))


cdef void ids_pack(const int64_t *ids, int64_t count, uint64_t base, int header, int width,
                   uint8_t *out) noexcept nogil:
    """`count` rowids as packed offsets from `base` (8-byte ids when there is no header)."""
    cdef int64_t i
    if header == 0:
        memcpy(out, ids, 8 * count)
        return
    for i in range(count):
        store_le(out + i * width, <uint64_t>ids[i] - base, width)


cdef int ids_repack(VectorTable *t, int64_t chunk, const int64_t *ids, uint8_t *buffer) noexcept nogil:
    """Rewrite a chunk's packed ids with the base and width its ids need now: the base chunk_size
    below the smallest, the width that holds the largest (a new BLOB length: an UPDATE of the row)."""
    cdef sqlite3_stmt *stmt = table_statement(t, ST_CHUNK_IDS)
    cdef int64_t i, low = ids[0], high = ids[0]
    cdef uint64_t base, span
    cdef int width, rc
    for i in range(1, t.chunk_size):
        low = ids[i] if ids[i] < low else low
        high = ids[i] if ids[i] > high else high
    span = <uint64_t>high - <uint64_t>low  # high >= low: no wrap
    if span > <uint64_t>0xffffffffffffffffU - <uint64_t>t.chunk_size:  # the slack below would wrap past high
        base, width = <uint64_t>low, 8
    else:
        base = <uint64_t>low - <uint64_t>t.chunk_size
        width = ids_width_for(span + <uint64_t>t.chunk_size)
    store_le(buffer, base, 8)
    ids_pack(ids, t.chunk_size, base, 8, width, buffer + 8)
    if stmt != NULL:
        sqlite3_bind_int64(stmt, 1, chunk)
        sqlite3_bind_blob(stmt, 2, buffer, <int>(8 + width * t.chunk_size), SQLITE_STATIC)
    rc = step_done(t, stmt)
    if stmt != NULL:
        sqlite3_bind_null(stmt, 2)
    return rc


cdef int ids_flush(VectorTable *t, uint8_t *buffer) noexcept nogil:
    """Write the queued ids, per chunk. When every queued rowid fits the chunk's base and width, only
    the span of slots written is read, updated in queue order and written back (a single-row commit
    touches a few bytes); otherwise the whole column is read and repacked. `buffer` holds
    8 + 8 * chunk_size bytes."""
    cdef sqlite3_blob *blob = NULL
    cdef int64_t open_row = -1, i = 0, j, chunk, low, high, nbytes, first, slots
    cdef int64_t *ids = <int64_t*>sqlite3_malloc64(8 * t.chunk_size)
    cdef int header = ids_header_bytes(t), width
    cdef uint64_t base = 0
    cdef bint fits
    cdef int rc = SQLITE_OK if ids != NULL else SQLITE_NOMEM
    while i < t.pending_count and rc == SQLITE_OK:
        if not (t.pending[i].kind & WRITE_ID):
            i += 1
            continue
        chunk = t.pending[i].location // t.chunk_size
        rc = blob_at(t, &blob, &open_row, "chunks", "ids", chunk, 1)
        if rc != SQLITE_OK:
            break
        nbytes = sqlite3_blob_bytes(blob)
        width = ids_width(t, nbytes)
        if width == 0:
            table_fail(t, sqlite3_mprintf("sqlitebin: %s_chunks is damaged at chunk_id %lld (ids of %lld bytes "
                                          "for %lld slots)", t.name, chunk, nbytes, t.chunk_size))
            rc = SQLITE_CORRUPT_VTAB
            break
        rc = table_sqlite_fail(t, sqlite3_blob_read(blob, buffer, header, 0))
        base = load_le(buffer, header)  # 0 without a header
        # The chunk's queued ids: the span of slots they cover, and whether each fits.
        low, high, fits = t.chunk_size, -1, True
        j = i
        while j < t.pending_count and t.pending[j].location // t.chunk_size == chunk:
            if t.pending[j].kind & WRITE_ID:
                low = min(low, t.pending[j].location % t.chunk_size)
                high = max(high, t.pending[j].location % t.chunk_size)
                fits = fits and (header == 0 or ids_width_for(<uint64_t>t.pending[j].id - base) <= width)
            j += 1
        first = low if fits else 0
        slots = high - low + 1 if fits else t.chunk_size
        if rc == SQLITE_OK:
            rc = table_sqlite_fail(t, sqlite3_blob_read(blob, buffer, <int>(slots * width),
                                                        <int>(header + first * width)))
        if rc != SQLITE_OK:
            break
        ids_unpack(buffer, slots, base, header, width, ids + first)
        while i < j:
            if t.pending[i].kind & WRITE_ID:
                ids[t.pending[i].location % t.chunk_size] = t.pending[i].id
            i += 1
        if fits:
            ids_pack(ids + low, slots, base, header, width, buffer)
            rc = table_sqlite_fail(t, sqlite3_blob_write(blob, buffer, <int>(slots * width),
                                                         <int>(header + low * width)))
        else:
            sqlite3_blob_close(blob)  # the UPDATE would expire it
            blob, open_row = NULL, -1
            rc = ids_repack(t, chunk, ids, buffer)
    sqlite3_blob_close(blob)
    sqlite3_free(ids)
    return rc


cdef int flush_validity(VectorTable *t, uint8_t *buffer) noexcept nogil:
    """Apply the queued live / deleted marks: per chunk, read its validity bits, set and
    clear them in queue order, write them back."""
    cdef sqlite3_blob *blob = NULL
    cdef int64_t open_row = -1, i = 0, chunk, slot
    cdef int nbytes = <int>(t.chunk_size // 8)
    cdef int rc = SQLITE_OK
    while i < t.pending_count and rc == SQLITE_OK:
        if not (t.pending[i].kind & (SET_LIVE | CLEAR_LIVE)):
            i += 1
            continue
        chunk = t.pending[i].location // t.chunk_size
        rc = blob_at(t, &blob, &open_row, "chunks", "validity", chunk, 1)
        if rc == SQLITE_OK:
            rc = table_sqlite_fail(t, sqlite3_blob_read(blob, buffer, nbytes, 0))
        while rc == SQLITE_OK and i < t.pending_count and t.pending[i].location // t.chunk_size == chunk:
            slot = t.pending[i].location % t.chunk_size
            if t.pending[i].kind & SET_LIVE:
                buffer[slot >> 3] |= <uint8_t>(0x80 >> (slot & 7))
            elif t.pending[i].kind & CLEAR_LIVE:
                buffer[slot >> 3] &= <uint8_t>~(0x80 >> (slot & 7))
            i += 1
        if rc == SQLITE_OK:
            rc = table_sqlite_fail(t, sqlite3_blob_write(blob, buffer, nbytes, 0))
    sqlite3_blob_close(blob)
    return rc


cdef bint pending_sorted(VectorTable *t) noexcept nogil:
    cdef int64_t i
    for i in range(1, t.pending_count):
        if compare_pending(&t.pending[i - 1], &t.pending[i]) > 0:
            return False
    return True


cdef int storage_flush(VectorTable *t) noexcept nogil:
    """Write the queued slot writes and next_location. Bulk appends come out as one blob write
    per chunk and column; a single row as a few small ones."""
    cdef int rc = SQLITE_OK
    cdef int64_t largest = t.chunk_size * (8 if t.code_bytes < 8 else t.code_bytes)
    cdef uint8_t *buffer
    if t.pending_count > 0:
        if t.vectors_per_row * t.vector_bytes > largest:
            largest = t.vectors_per_row * t.vector_bytes
        buffer = <uint8_t*>sqlite3_malloc64(largest + 8)
        if buffer == NULL:
            return SQLITE_NOMEM
        if not pending_sorted(t):
            qsort(t.pending, t.pending_count, sizeof(PendingEntry), compare_pending)
        rc = ids_flush(t, buffer)
        if rc == SQLITE_OK and t.code_bytes > 0:
            rc = flush_column(t, WRITE_CODE, "chunks", "codes", t.code_bytes, t.chunk_size, 0, buffer)
        if rc == SQLITE_OK and t.vector_bytes > 0:
            rc = flush_column(t, WRITE_VECTOR, "vectors", "vectors", t.vector_bytes, t.vectors_per_row,
                              t.code_bytes, buffer)
        if rc == SQLITE_OK:
            rc = flush_validity(t, buffer)
        sqlite3_free(buffer)
        if rc != SQLITE_OK:
            return rc
        t.pending_count = 0
    if t.location_dirty:
        rc = config_set_int(t, "next_location", t.next_location)
        t.location_dirty = rc != SQLITE_OK
    return rc


# ---------------------------------------------------------------------------
# Reads (after a flush)

ctypedef struct VectorReader:
    sqlite3_blob *blob
    int64_t row


cdef void vector_reader_close(VectorReader *reader) noexcept nogil:
    sqlite3_blob_close(reader.blob)
    reader.blob = NULL
    reader.row = -1


cdef int reader_read(VectorTable *t, VectorReader *reader, const char *table, const char *column, int64_t row,
                     uint8_t *out, int nbytes, int offset) noexcept nogil:
    """Read from a shadow table's BLOB through the reader's handle, opened again when a write since
    (a chunk's ids widened: an UPDATE of its row) expired it."""
    cdef int rc = blob_at(t, &reader.blob, &reader.row, table, column, row, 0)
    if rc == SQLITE_OK:
        rc = sqlite3_blob_read(reader.blob, out, nbytes, offset)
        if rc == SQLITE_ABORT:
            vector_reader_close(reader)
            rc = blob_at(t, &reader.blob, &reader.row, table, column, row, 0)
            if rc == SQLITE_OK:
                rc = sqlite3_blob_read(reader.blob, out, nbytes, offset)
        rc = table_sqlite_fail(t, rc)
    return rc


cdef int read_stored_vector(VectorTable *t, VectorReader *reader, int64_t location, uint8_t *out) noexcept nogil:
    """The stored rescoring vector (vector_bytes) of `location`."""
    return reader_read(t, reader, "vectors", "vectors", location // t.vectors_per_row, out, t.vector_bytes,
                       <int>((location % t.vectors_per_row) * t.vector_bytes))


cdef int read_stored_code(VectorTable *t, VectorReader *reader, int64_t location, uint8_t *out) noexcept nogil:
    return reader_read(t, reader, "chunks", "codes", location // t.chunk_size, out, t.code_bytes,
                       <int>((location % t.chunk_size) * t.code_bytes))


cdef int read_staged_vector(VectorTable *t, int64_t rowid, uint8_t *out) noexcept nogil:
    """The float32 vector of a row waiting for int8 calibration."""
    cdef sqlite3_stmt *stmt = table_statement(t, ST_CALIBRATION_GET)
    cdef int rc
    if stmt == NULL:
        return SQLITE_ERROR
    sqlite3_bind_int64(stmt, 1, rowid)
    rc = sqlite3_step(stmt)
    if rc == SQLITE_ROW and sqlite3_column_bytes(stmt, 0) == 4 * t.dim:
        memcpy(out, sqlite3_column_blob(stmt, 0), 4 * t.dim)
        rc = SQLITE_OK
    elif rc == SQLITE_ROW or rc == SQLITE_DONE:
        table_fail(t, sqlite3_mprintf("sqlitebin: %s_calibration has no %d-byte vector for rowid %lld",
                                      t.name, 4 * t.dim, rowid))
        rc = SQLITE_CORRUPT_VTAB
    else:
        rc = table_sqlite_fail(t, rc)
    sqlite3_reset(stmt)
    return rc


cdef int storage_load_chunks(VectorTable *t, CodeCache *cache) noexcept nogil:
    """Read every chunk into `cache` (after a flush), laid out by location."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int64_t chunks = (t.next_location + t.chunk_size - 1) // t.chunk_size, j = 0, chunk_id
    cdef int rc, width, header = ids_header_bytes(t)
    cdef const uint8_t *ids
    cdef char *sql
    rc = cache_reserve(cache, t, chunks)
    if rc != SQLITE_OK:
        return rc
    sql = sqlite3_mprintf('SELECT chunk_id, validity, ids, codes FROM "%w"."%w_chunks" ORDER BY chunk_id',
                          t.schema, t.name)
    rc = sqlite3_prepare_v2(t.db, sql, -1, &stmt, NULL) if sql != NULL else SQLITE_NOMEM
    sqlite3_free(sql)
    while rc == SQLITE_OK:
        rc = sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            break
        rc = SQLITE_OK
        chunk_id = sqlite3_column_int64(stmt, 0)
        width = ids_width(t, sqlite3_column_bytes(stmt, 2))
        if (chunk_id != j or j >= chunks or sqlite3_column_bytes(stmt, 1) != t.chunk_size // 8 or width == 0
                or sqlite3_column_bytes(stmt, 3) != t.chunk_size * t.code_bytes):
            table_fail(t, sqlite3_mprintf(
                "sqlitebin: %s_chunks is damaged at chunk_id %lld (expected chunk %lld of %lld with %lld slots)",
                t.name, chunk_id, j, chunks, t.chunk_size))
            rc = SQLITE_CORRUPT_VTAB
            break
        memcpy(cache.data.validity + j * (t.chunk_size // 8), sqlite3_column_blob(stmt, 1), t.chunk_size // 8)
        ids = <const uint8_t*>sqlite3_column_blob(stmt, 2)
        ids_unpack(ids + header, t.chunk_size, load_le(ids, header), header, width, cache.data.ids + j * t.chunk_size)
        if t.code_bytes > 0:
            memcpy(cache.data.codes + j * t.chunk_size * t.code_bytes, sqlite3_column_blob(stmt, 3),
                   t.chunk_size * t.code_bytes)
        j += 1
    if rc == SQLITE_DONE and j != chunks:
        table_fail(t, sqlite3_mprintf("sqlitebin: %s_chunks has %lld chunks but next_location %lld needs %lld",
                                      t.name, j, t.next_location, chunks))
        rc = SQLITE_CORRUPT_VTAB
    elif rc == SQLITE_DONE:
        rc = SQLITE_OK
    sqlite3_finalize(stmt)
    if rc == SQLITE_OK:
        cache_set_extent(cache, t, chunks)
    return table_sqlite_fail(t, rc)


cdef int inconsistent(VectorTable *t, char *what) noexcept nogil:
    table_fail(t, sqlite3_mprintf("sqlitebin: %s is inconsistent: %s", t.name, what))
    sqlite3_free(what)
    return SQLITE_CORRUPT_VTAB


cdef int check_rowids(VectorTable *t, ChunkData *d) noexcept nogil:
    """Every N_rowids row points at its own live slot, which holds its rowid, and every live
    slot has one."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int64_t rowid, location, rows = 0, live = 0, p
    cdef uint8_t *claimed = <uint8_t*>sqlite3_malloc64(t.next_location // 8 + 8)
    cdef char *sql = sqlite3_mprintf('SELECT rowid, location FROM "%w"."%w_rowids"', t.schema, t.name)
    cdef int rc = sqlite3_prepare_v2(t.db, sql, -1, &stmt, NULL) if sql != NULL and claimed != NULL else SQLITE_NOMEM
    sqlite3_free(sql)
    if claimed != NULL:
        memset(claimed, 0, t.next_location // 8 + 8)
    while rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
        rowid = sqlite3_column_int64(stmt, 0)
        location = sqlite3_column_int64(stmt, 1)
        rows += 1
        if location < 0 or location >= t.next_location:
            rc = inconsistent(t, sqlite3_mprintf("rowid %lld has location %lld, outside 0 to %lld",
                                                 rowid, location, t.next_location - 1))
        elif not ((d.validity[location >> 3] << (location & 7)) & 0x80):
            rc = inconsistent(t, sqlite3_mprintf("rowid %lld points at location %lld, whose slot is marked deleted",
                                                 rowid, location))
        elif (claimed[location >> 3] << (location & 7)) & 0x80 or d.ids[location] != rowid:
            rc = inconsistent(t, sqlite3_mprintf("rowid %lld points at location %lld, which holds rowid %lld",
                                                 rowid, location, d.ids[location]))
        else:
            claimed[location >> 3] |= <uint8_t>(0x80 >> (location & 7))
    sqlite3_finalize(stmt)
    sqlite3_free(claimed)
    for p in range(t.next_location if rc == SQLITE_OK else 0):
        if (d.validity[p >> 3] << (p & 7)) & 0x80:
            live += 1
    if rc == SQLITE_OK and live != rows:
        rc = inconsistent(t, sqlite3_mprintf("%lld slots are live but %s_rowids has %lld rows", live, t.name, rows))
    return table_sqlite_fail(t, rc)
