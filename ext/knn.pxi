# sqlitebin_knn, the legacy table-valued scan over the Python layer's N_chunks / N_changes
# tables (kept until the Python layer moves onto the sqlitebin virtual table).

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

ctypedef struct KnnCacheEntry:
    ChunkData data
    char *collection       # sqlite3_mprintf copy; NULL for an empty slot
    int64_t data_version
    int64_t schema_version
    int total_changes
    int64_t last_used


cdef void knn_cache_entry_free(KnnCacheEntry *e) noexcept nogil:
    sqlite3_free(e.collection)
    chunk_data_free(&e.data)
    memset(e, 0, sizeof(KnnCacheEntry))


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
    cdef KnnCacheEntry *e = NULL
    if sqlite3_get_autocommit(table.db) == 0:
        rc = chunk_data_load(table.db, cursor, collection, code_bytes, uncached)
        result[0] = uncached
        return rc
    rc = read_versions(table.db, &data_version, &schema_version)
    if rc != SQLITE_OK:
        return rc
    table.clock += 1
    for i in range(CACHE_ENTRIES):
        e = &table.cache[i]
        if e.collection == NULL or strcmp(e.collection, collection) != 0:
            continue
        if (e.data_version == data_version and e.schema_version == schema_version
                and e.total_changes == total_changes and e.data.code_bytes == code_bytes):
            e.last_used = table.clock
            result[0] = &e.data
            return SQLITE_OK
        knn_cache_entry_free(e)
    for i in range(CACHE_ENTRIES):
        if table.cache[i].collection == NULL:
            victim = i
            break
        if table.cache[i].last_used < table.cache[victim].last_used:
            victim = i
    e = &table.cache[victim]
    knn_cache_entry_free(e)
    rc = chunk_data_load(table.db, cursor, collection, code_bytes, &e.data)
    if rc == SQLITE_OK:
        e.collection = sqlite3_mprintf("%s", collection)
        rc = SQLITE_NOMEM if e.collection == NULL else SQLITE_OK
    if rc != SQLITE_OK:
        knn_cache_entry_free(e)
        return rc
    e.data_version = data_version
    e.schema_version = schema_version
    e.total_changes = total_changes
    e.last_used = table.clock
    result[0] = &e.data
    return SQLITE_OK


ctypedef struct KnnTable:
    sqlite3_vtab base
    sqlite3 *db          # the scan reads the collection's tables through it
    KnnCacheEntry cache[CACHE_ENTRIES]
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
        knn_cache_entry_free(&table.cache[i])
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


ctypedef struct KnnArguments:
    const char *collection
    sqlite3_value *query
    int64_t k
    int mode
    sqlite3_value *allowed   # NULL when absent or NULL


cdef int knn_read_arguments(sqlite3_vtab_cursor *cursor, int idx_num, sqlite3_value **argv,
                            KnnArguments *a) noexcept nogil:
    """Check the arguments, in column order as knn_best_index laid them out."""
    cdef int argument = 2
    cdef const char *mode_text
    a.k = 10
    a.mode = MODE_HAMMING
    a.allowed = NULL
    if sqlite3_value_type(argv[0]) != SQLITE_TEXT:
        return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): collection must be TEXT, got %s",
                                                type_name(sqlite3_value_type(argv[0]))))
    a.collection = <const char*>sqlite3_value_text(argv[0])
    if a.collection == NULL:
        return SQLITE_NOMEM
    if <int>strlen(a.collection) != sqlite3_value_bytes(argv[0]):
        # Names never hold NUL; without this check 'a' || char(0) || 'b' would search collection 'a'.
        return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): collection name '%q' is followed by a NUL character",
                                                a.collection))
    a.query = argv[1]
    if idx_num & (1 << (KNN_COLUMN_K - KNN_COLUMN_COLLECTION)):
        if sqlite3_value_type(argv[argument]) != SQLITE_INTEGER:
            return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): k must be an INTEGER, got %s",
                                                    type_name(sqlite3_value_type(argv[argument]))))
        a.k = sqlite3_value_int64(argv[argument])
        argument += 1
        if a.k < 1 or a.k > KNN_MAX_K:
            return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): k must be from 1 to %d, got %lld",
                                                    <int>KNN_MAX_K, a.k))
    if idx_num & (1 << (KNN_COLUMN_MODE - KNN_COLUMN_COLLECTION)):
        if sqlite3_value_type(argv[argument]) != SQLITE_NULL:
            mode_text = <const char*>sqlite3_value_text(argv[argument])
            if mode_text == NULL:
                return SQLITE_NOMEM
            if strcmp(mode_text, "asymmetric") == 0:
                a.mode = MODE_ASYMMETRIC
            elif strcmp(mode_text, "hamming") != 0:
                return knn_fail(cursor, sqlite3_mprintf(
                    "sqlitebin_knn(): mode must be 'hamming' or 'asymmetric', got '%q'", mode_text))
        argument += 1
    if idx_num & (1 << (KNN_COLUMN_ALLOWED - KNN_COLUMN_COLLECTION)):
        if sqlite3_value_type(argv[argument]) != SQLITE_NULL:
            a.allowed = argv[argument]
            return knn_check_allowed(cursor, a.allowed)
    return SQLITE_OK


cdef int knn_check_allowed(sqlite3_vtab_cursor *cursor, sqlite3_value *allowed) noexcept nogil:
    cdef int64_t unsorted
    if sqlite3_value_type(allowed) != SQLITE_BLOB or sqlite3_value_bytes(allowed) % 8 != 0:
        return knn_fail(cursor, sqlite3_mprintf(
            "sqlitebin_knn(): allowed must be an id set from sqlitebin_ids() (a BLOB of 8-byte ids), got %s of %d bytes",
            type_name(sqlite3_value_type(allowed)), sqlite3_value_bytes(allowed)))
    unsorted = first_unsorted_id(<const uint8_t*>sqlite3_value_blob(allowed), sqlite3_value_bytes(allowed) // 8)
    if unsorted >= 0:
        return knn_fail(cursor, sqlite3_mprintf(
            "sqlitebin_knn(): allowed must hold ids in ascending order, as sqlitebin_ids() makes them; "
            "id %lld at position %lld is smaller than the one before it",
            read_int64(<const uint8_t*>sqlite3_value_blob(allowed), unsorted), unsorted))
    return SQLITE_OK


cdef int knn_prepare_query(sqlite3_vtab_cursor *cursor, const KnnArguments *a, int dim,
                           const uint8_t *thresholds, Query *q) noexcept nogil:
    """Check the query against the collection and prepare it for the scan."""
    cdef int query_type = sqlite3_value_type(a.query)
    cdef int code_bytes = (dim + 7) // 8, nbytes = sqlite3_value_bytes(a.query), bad
    cdef const uint8_t *blob
    cdef double magnitude
    if query_type != SQLITE_BLOB:
        return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): query must be a BLOB, got %s", type_name(query_type)))
    blob = <const uint8_t*>sqlite3_value_blob(a.query)
    if a.mode == MODE_HAMMING:
        if nbytes != code_bytes:
            return knn_fail(cursor, sqlite3_mprintf(
                "sqlitebin_knn(): collection '%q' has %d-bit codes, so a hamming query is %d bytes; got %d",
                a.collection, dim, code_bytes, nbytes))
        return query_prepare(q, MODE_HAMMING, dim, NULL, blob, thresholds)
    if nbytes != 4 * dim:
        return knn_fail(cursor, sqlite3_mprintf(
            "sqlitebin_knn(): collection '%q' has dimension %d, so an asymmetric query is %d bytes of float32; got %d",
            a.collection, dim, 4 * dim, nbytes))
    bad = first_non_finite(blob, dim)
    if bad >= 0:
        return knn_fail(cursor, sqlite3_mprintf("sqlitebin_knn(): query holds a non-finite value at index %d", bad))
    magnitude = magnitude_sum(blob, dim)
    if magnitude > SQLITEBIN_MAX_QUERY_MAGNITUDE:
        # The lookup tables hold sums of query values in float32: keep every such sum finite.
        return knn_fail(cursor, sqlite3_mprintf(
            "sqlitebin_knn(): query values are too large for the asymmetric scan "
            "(their magnitudes add up to %g; the limit is 1e38)", magnitude))
    return query_prepare(q, MODE_ASYMMETRIC, dim, blob, NULL, thresholds)


ctypedef struct KnnChanges:
    int64_t *changed_ids     # every id in the change table, ascending
    int64_t changed_count
    int64_t *pending_ids     # the live ones among them, with their codes
    uint8_t *pending_codes
    int64_t pending_count
    int64_t capacity


cdef void knn_changes_free(KnnChanges *changes) noexcept nogil:
    sqlite3_free(changes.changed_ids)
    sqlite3_free(changes.pending_ids)
    sqlite3_free(changes.pending_codes)
    memset(changes, 0, sizeof(KnnChanges))


cdef int knn_changes_grow(KnnChanges *changes, int code_bytes) noexcept nogil:
    cdef int64_t capacity = changes.capacity * 2 + 64
    cdef void *grown = sqlite3_realloc64(changes.changed_ids, capacity * 8)
    if grown == NULL:
        return SQLITE_NOMEM
    changes.changed_ids = <int64_t*>grown
    grown = sqlite3_realloc64(changes.pending_ids, capacity * 8)
    if grown == NULL:
        return SQLITE_NOMEM
    changes.pending_ids = <int64_t*>grown
    grown = sqlite3_realloc64(changes.pending_codes, capacity * code_bytes + 1)
    if grown == NULL:
        return SQLITE_NOMEM
    changes.pending_codes = <uint8_t*>grown
    changes.capacity = capacity
    return SQLITE_OK


cdef int knn_read_changes(sqlite3 *db, const char *collection, int code_bytes, KnnChanges *changes) noexcept nogil:
    """The change table: ids changed since their chunk was written (sorted, by the INTEGER
    PRIMARY KEY), and the current codes of the live ones."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int rc
    cdef char *sql = sqlite3_mprintf('SELECT id, code FROM "%w_changes" ORDER BY id', collection)
    rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) if sql != NULL else SQLITE_NOMEM
    sqlite3_free(sql)
    while rc == SQLITE_OK:
        rc = sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            break
        rc = SQLITE_OK
        if changes.changed_count == changes.capacity:
            rc = knn_changes_grow(changes, code_bytes)
            if rc != SQLITE_OK:
                break
        changes.changed_ids[changes.changed_count] = sqlite3_column_int64(stmt, 0)
        changes.changed_count += 1
        if sqlite3_column_type(stmt, 1) == SQLITE_BLOB and sqlite3_column_bytes(stmt, 1) == code_bytes:
            changes.pending_ids[changes.pending_count] = sqlite3_column_int64(stmt, 0)
            if code_bytes > 0:
                memcpy(changes.pending_codes + changes.pending_count * code_bytes, sqlite3_column_blob(stmt, 1), code_bytes)
            changes.pending_count += 1
    if rc == SQLITE_DONE:
        rc = SQLITE_OK
    sqlite3_finalize(stmt)
    return rc


cdef int knn_scan(sqlite3_vtab_cursor *cursor, const char *collection, ScanContext *scan, const Query *q) noexcept nogil:
    """Scan the chunks (skipping entries whose id is in the change table), then the change
    table's live codes, into scan.top."""
    cdef KnnChanges changes
    cdef ChunkData uncached
    cdef ChunkData *chunks = NULL
    cdef int rc
    memset(&changes, 0, sizeof(KnnChanges))
    memset(&uncached, 0, sizeof(ChunkData))
    rc = knn_read_changes(knn_db(cursor), collection, q.code_bytes, &changes)
    scan.changed_ids = changes.changed_ids
    scan.changed_count = changes.changed_count
    if rc == SQLITE_OK:
        rc = chunk_data_get(<KnnTable*>cursor.pVtab, cursor, collection, q.code_bytes, &chunks, &uncached)
    if rc == SQLITE_OK:
        rc = scan_all(scan, chunks, True)
    if rc == SQLITE_OK and changes.pending_count > 0:
        scan.validity = NULL
        scan_codes(scan, <const uint8_t*>changes.pending_ids, changes.pending_codes, changes.pending_count,
                   -1, False)
    chunk_data_free(&uncached)
    knn_changes_free(&changes)
    return rc


cdef int knn_filter(sqlite3_vtab_cursor *cursor, int idx_num, const char *idx_str,
                    int argc, sqlite3_value **argv) noexcept nogil:
    cdef KnnCursor *c = <KnnCursor*>cursor
    cdef KnnArguments arguments
    cdef Query q
    cdef IdFilter allowed
    cdef ScanContext scan
    cdef uint8_t *thresholds = NULL
    cdef int dim = 0, rc
    knn_reset(c)
    memset(&q, 0, sizeof(Query))
    memset(&allowed, 0, sizeof(IdFilter))
    memset(&scan, 0, sizeof(ScanContext))
    rc = knn_read_arguments(cursor, idx_num, argv, &arguments)
    if rc == SQLITE_OK:
        rc = read_collection(knn_db(cursor), cursor, arguments.collection, &dim, &thresholds)
    if rc == SQLITE_OK:
        rc = knn_prepare_query(cursor, &arguments, dim, thresholds, &q)
    if rc == SQLITE_OK and arguments.allowed != NULL:
        rc = filter_build(&allowed, <const uint8_t*>sqlite3_value_blob(arguments.allowed),
                          sqlite3_value_bytes(arguments.allowed))
    if rc == SQLITE_OK:
        scan_context_init(&scan, &q, &allowed if arguments.allowed != NULL else NULL)
        scan.top.k = arguments.k
        scan.top.heap = <Hit*>sqlite3_malloc64(sizeof(Hit) * arguments.k)
        rc = SQLITE_NOMEM if scan.top.heap == NULL else SQLITE_OK
    if rc == SQLITE_OK:
        rc = knn_scan(cursor, arguments.collection, &scan, &q)
    if rc == SQLITE_OK:
        topk_sort(&scan.top)
        c.mode = q.mode
        c.dim = dim
        c.code_bytes = q.code_bytes
        c.score_scale = (2.0 / dim if q.mode == MODE_HAMMING else 1.0 / sqrt(<double>dim)) if dim > 0 else 0
        c.count = scan.top.size
        c.hits = scan.top.heap
        c.query_code = q.code
        scan.top.heap = NULL
        q.code = NULL
    sqlite3_free(scan.top.heap)
    sqlite3_free(thresholds)
    filter_free(&allowed)
    query_free(&q)
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
