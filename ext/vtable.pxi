# The sqlitebin virtual table module: create / connect, query planning, cursors, reading
# rows, transactions. Writes are in vtable_write.pxi, searches in vtable_search.pxi, the
# maintenance commands in vtable_commands.pxi, storage in storage.pxi.
#
#   CREATE VIRTUAL TABLE idx USING sqlitebin(dim=256)
#   SELECT rowid, score, distance FROM idx WHERE vector MATCH :q AND k = 10

cdef enum:
    COL_VECTOR = 0
    COL_SCORE = 1
    COL_DISTANCE = 2
    COL_K = 3
    COL_OVERSAMPLE = 4
    COL_RESCORE = 5
    COL_CANDIDATES = 6
    COL_QUERY = 7
    COL_COMMAND = 8          # named like the table: INSERT INTO idx(idx) VALUES ('optimize')
    PLAN_FULL_SCAN = 0
    PLAN_ROWID = 1
    PLAN_SEARCH = 2
    # idxNum bits of a search: which arguments follow the query, in this order.
    HAS_K = 4
    HAS_OVERSAMPLE = 8
    HAS_RESCORE = 16
    HAS_CANDIDATES = 32
    HAS_ROWID_EQ = 64
    HAS_ROWID_IN = 128

ctypedef struct VectorCursor:
    sqlite3_vtab_cursor base
    int plan
    int64_t count
    int64_t position
    int64_t *rowids
    int64_t *locations
    double *scores            # searches only
    int64_t *distances
    int64_t *queries          # the query of each row, for batches
    VectorReader reader       # reads vectors and codes for the vector column
    uint8_t *buffer           # 4 * dim + vector_bytes + code_bytes bytes


cdef void table_free(VectorTable *t) noexcept nogil:
    table_finalize_statements(t)
    cache_release(t)
    sqlite3_free(t.schema)
    sqlite3_free(t.name)
    sqlite3_free(t.thresholds)
    sqlite3_free(t.ranges)
    sqlite3_free(t.pending)
    sqlite3_free(t.pending_data)
    sqlite3_free(t.scratch)
    sqlite3_free(t)


cdef VectorTable *table_new(sqlite3 *db, const char *schema, const char *name) noexcept nogil:
    cdef VectorTable *t = <VectorTable*>sqlite3_malloc64(sizeof(VectorTable))
    if t == NULL:
        return NULL
    memset(t, 0, sizeof(VectorTable))
    t.db = db
    t.schema = sqlite3_mprintf("%s", schema)
    t.name = sqlite3_mprintf("%s", name)
    t.need_new_generation = True
    if t.schema == NULL or t.name == NULL:
        table_free(t)
        return NULL
    return t


cdef int declare_table(sqlite3 *db, const char *name) noexcept nogil:
    cdef char *sql = sqlite3_mprintf(
        'CREATE TABLE x(vector, score HIDDEN, distance HIDDEN, k HIDDEN, oversample HIDDEN, rescore HIDDEN, '
        'candidates HIDDEN, query HIDDEN, "%w" HIDDEN)', name)
    cdef int rc
    if sql == NULL:
        return SQLITE_NOMEM
    rc = sqlite3_declare_vtab(db, sql)
    sqlite3_free(sql)
    if rc == SQLITE_OK:
        sqlite3_vtab_config(db, SQLITE_VTAB_CONSTRAINT_SUPPORT, 1)
    return rc


cdef int vtab_create(sqlite3 *db, void *aux, int argc, const char *const *argv,
                     sqlite3_vtab **vtab, char **error) noexcept nogil:
    cdef TableOptions o
    cdef VectorTable *t
    cdef int rc
    error[0] = parse_options(argc, argv, &o)
    if error[0] != NULL:
        sqlite3_free(o.thresholds)
        sqlite3_free(o.ranges)
        return SQLITE_ERROR
    t = table_new(db, argv[1], argv[2])
    if t == NULL:
        sqlite3_free(o.thresholds)
        sqlite3_free(o.ranges)
        return SQLITE_NOMEM
    table_set_shape(t, <int>o.dim, o.rescore, o.chunk_size, o.calibration_rows)
    t.format = FORMAT_VERSION
    t.thresholds = o.thresholds
    t.ranges = o.ranges
    rc = declare_table(db, argv[2])
    if rc == SQLITE_OK:
        rc = storage_create(t)
    if rc != SQLITE_OK:
        error[0] = sqlite3_mprintf("%s", <const char*>t.base.zErrMsg if t.base.zErrMsg != NULL else sqlite3_errmsg(db))
        sqlite3_free(t.base.zErrMsg)
        table_free(t)
        return rc
    vtab[0] = &t.base
    return SQLITE_OK


cdef int vtab_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                      sqlite3_vtab **vtab, char **error) noexcept nogil:
    cdef VectorTable *t = table_new(db, argv[1], argv[2])
    cdef int rc
    if t == NULL:
        return SQLITE_NOMEM
    rc = declare_table(db, argv[2])
    if rc == SQLITE_OK:
        rc = storage_read_options(t)
    if rc != SQLITE_OK:
        error[0] = sqlite3_mprintf("%s", <const char*>t.base.zErrMsg if t.base.zErrMsg != NULL else sqlite3_errmsg(db))
        sqlite3_free(t.base.zErrMsg)
        table_free(t)
        return rc
    vtab[0] = &t.base
    return SQLITE_OK


cdef int vtab_disconnect(sqlite3_vtab *vtab) noexcept nogil:
    table_free(<VectorTable*>vtab)
    return SQLITE_OK


cdef int vtab_destroy(sqlite3_vtab *vtab) noexcept nogil:
    cdef VectorTable *t = <VectorTable*>vtab
    cdef int rc
    table_finalize_statements(t)
    rc = exec_sql(t, sqlite3_mprintf(
        'DROP TABLE IF EXISTS "%w"."%w_config"; DROP TABLE IF EXISTS "%w"."%w_chunks";'
        'DROP TABLE IF EXISTS "%w"."%w_vectors"; DROP TABLE IF EXISTS "%w"."%w_rowids";'
        'DROP TABLE IF EXISTS "%w"."%w_calibration";',
        t.schema, t.name, t.schema, t.name, t.schema, t.name, t.schema, t.name, t.schema, t.name))
    if rc == SQLITE_OK:
        table_free(t)
    return rc


cdef int vtab_rename(sqlite3_vtab *vtab, const char *new_name) noexcept nogil:
    cdef VectorTable *t = <VectorTable*>vtab
    cdef const char *suffixes[5]
    cdef char *renamed
    cdef int i, rc = storage_flush(t)
    suffixes[0] = "config"
    suffixes[1] = "chunks"
    suffixes[2] = "rowids"
    suffixes[3] = "vectors"
    suffixes[4] = "calibration"
    table_finalize_statements(t)
    for i in range(5):
        if rc != SQLITE_OK:
            break
        if (i == 3 and t.rescore == RESCORE_NONE) or (i == 4 and t.rescore != RESCORE_INT8):
            continue
        rc = exec_sql(t, sqlite3_mprintf('ALTER TABLE "%w"."%w_%s" RENAME TO "%w_%s"',
                                         t.schema, t.name, suffixes[i], new_name, suffixes[i]))
    if rc == SQLITE_OK:
        renamed = sqlite3_mprintf("%s", new_name)
        if renamed == NULL:
            return SQLITE_NOMEM
        sqlite3_free(t.name)
        t.name = renamed
    return rc


cdef int vtab_shadow_name(const char *suffix) noexcept nogil:
    return (strcmp(suffix, "config") == 0 or strcmp(suffix, "chunks") == 0 or strcmp(suffix, "vectors") == 0
            or strcmp(suffix, "rowids") == 0 or strcmp(suffix, "calibration") == 0)


# ---------------------------------------------------------------------------
# Planning

cdef int vtab_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) noexcept nogil:
    """MATCH on vector: a search, its options and a rowid prefilter as arguments in the
    order of the HAS_ bits. Else rowid = ?: a point lookup. Else a full scan."""
    cdef int i, column, match = -1, rowid = -1, limit = -1, argument = 1
    cdef int options[4]
    cdef int bits[4]
    bits[0] = HAS_K
    bits[1] = HAS_OVERSAMPLE
    bits[2] = HAS_RESCORE
    bits[3] = HAS_CANDIDATES
    for i in range(4):
        options[i] = -1
    for i in range(info.nConstraint):
        column = info.aConstraint[i].iColumn
        if column == COL_VECTOR and info.aConstraint[i].op == SQLITE_INDEX_CONSTRAINT_MATCH:
            if not info.aConstraint[i].usable:
                return SQLITE_CONSTRAINT
            match = i
        elif COL_K <= column <= COL_CANDIDATES and info.aConstraint[i].op == SQLITE_INDEX_CONSTRAINT_EQ:
            if not info.aConstraint[i].usable:
                return SQLITE_CONSTRAINT
            options[column - COL_K] = i
        elif column == -1 and info.aConstraint[i].op == SQLITE_INDEX_CONSTRAINT_EQ and info.aConstraint[i].usable:
            rowid = i
        elif info.aConstraint[i].op == SQLITE_INDEX_CONSTRAINT_LIMIT and info.aConstraint[i].usable:
            limit = i
    if options[0] < 0 and limit >= 0:
        options[0] = limit  # MATCH ... LIMIT n without k: k = n
    if match < 0:
        for i in range(4):
            if options[i] >= 0 and options[i] != limit:
                vtab.zErrMsg = sqlite3_mprintf(
                    "sqlitebin: k, oversample, rescore and candidates apply only to a search "
                    "(WHERE vector MATCH :query AND k = 10)")
                return SQLITE_ERROR
        return plan_lookup(info, rowid)
    info.idxNum = PLAN_SEARCH
    info.aConstraintUsage[match].argvIndex = argument
    info.aConstraintUsage[match].omit = 1
    for i in range(4):
        if options[i] >= 0:
            argument += 1
            info.aConstraintUsage[options[i]].argvIndex = argument
            info.aConstraintUsage[options[i]].omit = options[i] != limit
            info.idxNum |= bits[i]
    if rowid >= 0:
        argument += 1
        info.aConstraintUsage[rowid].argvIndex = argument
        info.aConstraintUsage[rowid].omit = 1
        if sqlite3_vtab_in(info, rowid, -1):
            sqlite3_vtab_in(info, rowid, 1)
            info.idxNum |= HAS_ROWID_IN
        else:
            info.idxNum |= HAS_ROWID_EQ
    info.estimatedCost = 100.0
    info.estimatedRows = 10
    return SQLITE_OK


cdef int plan_lookup(sqlite3_index_info *info, int rowid) noexcept nogil:
    if rowid >= 0:
        info.idxNum = PLAN_ROWID
        info.aConstraintUsage[rowid].argvIndex = 1
        info.aConstraintUsage[rowid].omit = 1
        info.idxFlags = SQLITE_INDEX_SCAN_UNIQUE
        info.estimatedCost = 10.0
        info.estimatedRows = 1
        return SQLITE_OK
    info.idxNum = PLAN_FULL_SCAN
    info.estimatedCost = 10000000.0
    info.estimatedRows = 1000000
    return SQLITE_OK


# ---------------------------------------------------------------------------
# Cursors

cdef int vtab_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **cursor) noexcept nogil:
    cdef VectorTable *t = <VectorTable*>vtab
    cdef VectorCursor *c = <VectorCursor*>sqlite3_malloc64(sizeof(VectorCursor))
    if c == NULL:
        return SQLITE_NOMEM
    memset(c, 0, sizeof(VectorCursor))
    c.reader.row = -1
    c.buffer = <uint8_t*>sqlite3_malloc64(4 * t.dim + t.vector_bytes + t.code_bytes + 8)
    if c.buffer == NULL:
        sqlite3_free(c)
        return SQLITE_NOMEM
    cursor[0] = &c.base
    return SQLITE_OK


cdef void cursor_reset(VectorCursor *c) noexcept nogil:
    sqlite3_free(c.rowids)
    sqlite3_free(c.locations)
    sqlite3_free(c.scores)
    sqlite3_free(c.distances)
    sqlite3_free(c.queries)
    vector_reader_close(&c.reader)
    c.rowids = NULL
    c.locations = NULL
    c.scores = NULL
    c.distances = NULL
    c.queries = NULL
    c.count = 0
    c.position = 0


cdef int vtab_close(sqlite3_vtab_cursor *cursor) noexcept nogil:
    cdef VectorCursor *c = <VectorCursor*>cursor
    cursor_reset(c)
    sqlite3_free(c.buffer)
    sqlite3_free(c)
    return SQLITE_OK


cdef int cursor_allocate(VectorCursor *c, int64_t count) noexcept nogil:
    c.rowids = <int64_t*>sqlite3_malloc64(8 * count + 8)
    c.locations = <int64_t*>sqlite3_malloc64(8 * count + 8)
    return SQLITE_NOMEM if c.rowids == NULL or c.locations == NULL else SQLITE_OK


cdef int filter_rows(VectorTable *t, VectorCursor *c, int plan, sqlite3_value *rowid) noexcept nogil:
    """A full scan (rowid order) or a point lookup: the (rowid, location) pairs, read up front
    so that writes during the statement cannot disturb the cursor."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int64_t capacity = 1, location = 0
    cdef int rc
    cdef char *sql
    if plan == PLAN_ROWID:
        if sqlite3_value_type(rowid) != SQLITE_INTEGER:
            return SQLITE_OK  # rowid = 'text' or NULL matches nothing
        rc = rowid_location(t, sqlite3_value_int64(rowid), &location)
        if rc == SQLITE_DONE:
            return SQLITE_OK
        if rc == SQLITE_OK:
            rc = cursor_allocate(c, 1)
        if rc == SQLITE_OK:
            c.rowids[0] = sqlite3_value_int64(rowid)
            c.locations[0] = location
            c.count = 1
        return rc
    sql = sqlite3_mprintf('SELECT rowid, location FROM "%w"."%w_rowids" ORDER BY rowid', t.schema, t.name)
    rc = sqlite3_prepare_v2(t.db, sql, -1, &stmt, NULL) if sql != NULL else SQLITE_NOMEM
    sqlite3_free(sql)
    if rc == SQLITE_OK:
        rc = cursor_allocate(c, 1024)
        capacity = 1024
    while rc == SQLITE_OK:
        rc = sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            break
        rc = SQLITE_OK
        if c.count == capacity:
            capacity *= 2
            if grow_array(<void**>&c.rowids, 8 * c.count, 8 * capacity) or grow_array(
                    <void**>&c.locations, 8 * c.count, 8 * capacity):
                rc = SQLITE_NOMEM
                break
        c.rowids[c.count] = sqlite3_column_int64(stmt, 0)
        c.locations[c.count] = sqlite3_column_int64(stmt, 1)
        c.count += 1
    sqlite3_finalize(stmt)
    return SQLITE_OK if rc == SQLITE_DONE else table_sqlite_fail(t, rc)


cdef int vtab_filter(sqlite3_vtab_cursor *cursor, int idx_num, const char *idx_str,
                     int argc, sqlite3_value **argv) noexcept nogil:
    cdef VectorCursor *c = <VectorCursor*>cursor
    cdef VectorTable *t = <VectorTable*>cursor.pVtab
    cdef int64_t generation = 0
    cdef int rc
    cursor_reset(c)
    c.plan = idx_num & 3
    rc = storage_current(t, &generation)
    if rc != SQLITE_OK:
        return rc
    if c.plan == PLAN_SEARCH:
        return search(t, c, idx_num, argv)
    return filter_rows(t, c, c.plan, argv[0] if argc > 0 else NULL)


cdef int vtab_next(sqlite3_vtab_cursor *cursor) noexcept nogil:
    (<VectorCursor*>cursor).position += 1
    return SQLITE_OK


cdef int vtab_eof(sqlite3_vtab_cursor *cursor) noexcept nogil:
    cdef VectorCursor *c = <VectorCursor*>cursor
    return c.position >= c.count


cdef int vtab_rowid(sqlite3_vtab_cursor *cursor, sqlite3_int64 *rowid) noexcept nogil:
    cdef VectorCursor *c = <VectorCursor*>cursor
    rowid[0] = c.rowids[c.position]
    return SQLITE_OK


cdef int vtab_column(sqlite3_vtab_cursor *cursor, sqlite3_context *ctx, int column) noexcept nogil:
    cdef VectorCursor *c = <VectorCursor*>cursor
    cdef VectorTable *t = <VectorTable*>cursor.pVtab
    cdef int rc
    if column == COL_VECTOR:
        if sqlite3_vtab_nochange(ctx):
            return SQLITE_OK  # an UPDATE that leaves the vector alone: xUpdate keeps it
        rc = read_vector_float32(t, &c.reader, c.rowids[c.position], c.locations[c.position], c.buffer)
        if rc != SQLITE_OK:
            return rc
        sqlite3_result_blob(ctx, c.buffer, 4 * t.dim, SQLITE_TRANSIENT)
    elif column == COL_SCORE and c.plan == PLAN_SEARCH:
        sqlite3_result_double(ctx, c.scores[c.position])
    elif column == COL_DISTANCE and c.plan == PLAN_SEARCH:
        sqlite3_result_int64(ctx, c.distances[c.position])
    elif column == COL_QUERY and c.plan == PLAN_SEARCH:
        sqlite3_result_int64(ctx, c.queries[c.position])
    else:
        sqlite3_result_null(ctx)
    return SQLITE_OK


cdef int read_vector_float32(VectorTable *t, VectorReader *reader, int64_t rowid, int64_t location,
                             uint8_t *out) noexcept nogil:
    """The row's vector as float32: exact (float32, or int8 rows waiting for calibration),
    dequantized (int8), or the code as +1/-1 divided by sqrt(dim) (none)."""
    cdef uint8_t *stored = out + 4 * t.dim
    cdef int i, rc
    cdef float value, unit = <float>(1.0 / sqrt(<double>t.dim))
    if t.rescore == RESCORE_INT8 and t.ranges == NULL:
        return read_staged_vector(t, rowid, out)
    if t.rescore == RESCORE_NONE:
        rc = read_stored_code(t, reader, location, stored)
        for i in range(t.dim if rc == SQLITE_OK else 0):
            value = unit if (stored[i >> 3] << (i & 7)) & 0x80 else -unit
            memcpy(out + 4 * i, &value, 4)
        return rc
    rc = read_stored_vector(t, reader, location, out if t.rescore == RESCORE_FLOAT32 else stored)
    if rc == SQLITE_OK and t.rescore == RESCORE_INT8:
        for i in range(t.dim):
            value = int8_value(<int8_t>stored[i], float_at(t.ranges, i), float_at(t.ranges, t.dim + i))
            memcpy(out + 4 * i, &value, 4)
    return rc


# ---------------------------------------------------------------------------
# Transactions: queued writes go to disk at xSync and at each savepoint; a rollback drops
# them with everything read from disk (cache included), so nothing stale survives it.

cdef int vtab_begin(sqlite3_vtab *vtab) noexcept nogil:
    (<VectorTable*>vtab).need_new_generation = True
    return SQLITE_OK


cdef int vtab_sync(sqlite3_vtab *vtab) noexcept nogil:
    return storage_flush(<VectorTable*>vtab)


cdef int vtab_commit(sqlite3_vtab *vtab) noexcept nogil:
    return SQLITE_OK


cdef int vtab_rollback(sqlite3_vtab *vtab) noexcept nogil:
    cdef VectorTable *t = <VectorTable*>vtab
    storage_forget_state(t)
    cache_release(t)
    t.need_new_generation = True
    return SQLITE_OK


cdef int vtab_savepoint(sqlite3_vtab *vtab, int savepoint) noexcept nogil:
    return storage_flush(<VectorTable*>vtab)


cdef int vtab_release(sqlite3_vtab *vtab, int savepoint) noexcept nogil:
    return SQLITE_OK


cdef int vtab_rollback_to(sqlite3_vtab *vtab, int savepoint) noexcept nogil:
    return vtab_rollback(vtab)


cdef sqlite3_module vector_module


cdef int register_vector_module(sqlite3 *db, char **error) noexcept nogil:
    # Filled on every load with the same values (never zeroed first: other connections
    # may be using the struct); unset fields stay zero (static storage).
    vector_module.iVersion = 3
    vector_module.xCreate = vtab_create
    vector_module.xConnect = vtab_connect
    vector_module.xBestIndex = vtab_best_index
    vector_module.xDisconnect = vtab_disconnect
    vector_module.xDestroy = vtab_destroy
    vector_module.xOpen = vtab_open
    vector_module.xClose = vtab_close
    vector_module.xFilter = vtab_filter
    vector_module.xNext = vtab_next
    vector_module.xEof = vtab_eof
    vector_module.xColumn = vtab_column
    vector_module.xRowid = vtab_rowid
    vector_module.xUpdate = vtab_update
    vector_module.xBegin = vtab_begin
    vector_module.xSync = vtab_sync
    vector_module.xCommit = vtab_commit
    vector_module.xRollback = vtab_rollback
    vector_module.xRename = vtab_rename
    vector_module.xSavepoint = vtab_savepoint
    vector_module.xRelease = vtab_release
    vector_module.xRollbackTo = vtab_rollback_to
    vector_module.xShadowName = vtab_shadow_name
    cdef int rc = sqlite3_create_module_v2(db, "sqlitebin", &vector_module, NULL, NULL)
    if rc != SQLITE_OK and error != NULL:
        error[0] = sqlite3_mprintf("sqlitebin: could not register the sqlitebin module: %s", sqlite3_errmsg(db))
    return rc
