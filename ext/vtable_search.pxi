# Searching a sqlitebin table: WHERE vector MATCH :q AND k = 10 [AND oversample = 10]
# [AND rescore = ...] [AND candidates = ...] [AND rowid IN (...)]. Candidates come from the
# in-memory codes (cache.pxi) through the shared scan, with the rowid prefilter inside it;
# then the candidates' stored vectors are read in location order and rescored here.

cdef enum:
    DEFAULT_K = 10
    DEFAULT_OVERSAMPLE = 10

ctypedef struct SearchRequest:
    int64_t k
    int64_t oversample
    int rescore
    int mode                  # MODE_ASYMMETRIC or MODE_HAMMING
    const uint8_t *floats     # the float32 query (the first of a batch), or NULL for a packed code
    int64_t query_count       # float32 queries in the BLOB: a batch when more than one
    const uint8_t *code
    sqlite3_value *rowids     # the prefilter: an IN list or one value; NULL for none
    bint rowids_in


cdef int positive_integer(VectorTable *t, sqlite3_value *value, const char *what, int64_t *out) noexcept nogil:
    if sqlite3_value_type(value) != SQLITE_INTEGER:
        return table_fail(t, sqlite3_mprintf("sqlitebin: %s: %s must be a positive INTEGER, got %s",
                                             t.name, what, type_name(sqlite3_value_type(value))))
    if sqlite3_value_int64(value) < 1:
        return table_fail(t, sqlite3_mprintf("sqlitebin: %s: %s must be a positive INTEGER, got %lld",
                                             t.name, what, sqlite3_value_int64(value)))
    out[0] = sqlite3_value_int64(value)
    return SQLITE_OK


cdef int read_choice(VectorTable *t, sqlite3_value *value, int *out) noexcept nogil:
    cdef const char *text = <const char*>sqlite3_value_text(value)
    if text != NULL and sqlite3_value_type(value) == SQLITE_TEXT:
        if strcmp(text, "int8") == 0:
            out[0] = RESCORE_INT8
        elif strcmp(text, "float32") == 0:
            out[0] = RESCORE_FLOAT32
        elif strcmp(text, "bits") == 0:
            out[0] = RESCORE_BITS
        elif strcmp(text, "none") == 0:
            out[0] = RESCORE_NONE
        else:
            text = NULL
    else:
        text = NULL
    if text == NULL:
        return table_fail(t, sqlite3_mprintf("sqlitebin: %s: rescore must be 'int8', 'float32', 'bits' or 'none', got %s",
                                             t.name, sqlite3_value_text(value)))
    if (out[0] == RESCORE_INT8 or out[0] == RESCORE_FLOAT32) and out[0] != t.rescore:
        return table_fail(t, sqlite3_mprintf("sqlitebin: %s: rescore = '%s' needs stored %s vectors, but %s stores %s",
                                             t.name, text, text, t.name, "int8" if t.rescore == RESCORE_INT8 else (
                                                 "float32" if t.rescore == RESCORE_FLOAT32 else "none")))
    return SQLITE_OK


cdef int read_query(VectorTable *t, sqlite3_value *query, SearchRequest *r) noexcept nogil:
    """A float32 query of 4 * dim bytes, a batch of n of them (n * 4 * dim bytes), or a packed code."""
    cdef int nbytes = sqlite3_value_bytes(query), bad
    cdef int64_t j
    cdef double magnitude
    if sqlite3_value_type(query) != SQLITE_BLOB or (nbytes % (4 * t.dim) != 0 and nbytes != t.code_bytes) or nbytes == 0:
        return table_fail(t, sqlite3_mprintf(
            "sqlitebin: %s: the MATCH query must be a float32 BLOB of %d bytes (dim %d) or a packed code of %d bytes, "
            "got %s of %d bytes", t.name, 4 * t.dim, t.dim, t.code_bytes, type_name(sqlite3_value_type(query)), nbytes))
    r.query_count = 1
    if nbytes == t.code_bytes:
        r.code = <const uint8_t*>sqlite3_value_blob(query)
        return SQLITE_OK
    r.floats = <const uint8_t*>sqlite3_value_blob(query)
    r.query_count = nbytes // (4 * t.dim)
    for j in range(r.query_count):
        bad = first_non_finite(r.floats + j * 4 * t.dim, t.dim)
        if bad >= 0 and r.query_count == 1:
            return table_fail(t, sqlite3_mprintf("sqlitebin: %s: the MATCH query holds a non-finite value at index %d",
                                                 t.name, bad))
        if bad >= 0:
            return table_fail(t, sqlite3_mprintf("sqlitebin: %s: query %lld of the MATCH batch holds a non-finite "
                                                 "value at index %d", t.name, j, bad))
        magnitude = magnitude_sum(r.floats + j * 4 * t.dim, t.dim)
        if magnitude > SQLITEBIN_MAX_QUERY_MAGNITUDE:
            return table_fail(t, sqlite3_mprintf("sqlitebin: %s: the MATCH query values are too large "
                                                 "(their magnitudes add up to %g; the limit is 1e38)", t.name, magnitude))
    return SQLITE_OK


cdef int read_request(VectorTable *t, int idx_num, sqlite3_value **argv, SearchRequest *r) noexcept nogil:
    """The query and the options, checked, with their defaults."""
    cdef int argument = 1, rc
    cdef const char *text
    memset(r, 0, sizeof(SearchRequest))
    r.k = DEFAULT_K
    r.oversample = DEFAULT_OVERSAMPLE
    r.rescore = -1
    r.mode = -1
    rc = read_query(t, argv[0], r)
    if rc == SQLITE_OK and idx_num & HAS_K:
        rc = positive_integer(t, argv[argument], "k", &r.k)
        argument += 1
    if rc == SQLITE_OK and idx_num & HAS_OVERSAMPLE:
        rc = positive_integer(t, argv[argument], "oversample", &r.oversample)
        argument += 1
    if rc == SQLITE_OK and idx_num & HAS_RESCORE:
        rc = read_choice(t, argv[argument], &r.rescore)
        argument += 1
    if rc == SQLITE_OK and idx_num & HAS_CANDIDATES:
        text = <const char*>sqlite3_value_text(argv[argument])
        if text != NULL and strcmp(text, "asymmetric") == 0:
            r.mode = MODE_ASYMMETRIC
        elif text != NULL and strcmp(text, "hamming") == 0:
            r.mode = MODE_HAMMING
        else:
            rc = table_fail(t, sqlite3_mprintf("sqlitebin: %s: candidates must be 'asymmetric' or 'hamming', got %s",
                                               t.name, text))
        argument += 1
    if rc == SQLITE_OK and idx_num & (HAS_ROWID_EQ | HAS_ROWID_IN):
        r.rowids = argv[argument]
        r.rowids_in = (idx_num & HAS_ROWID_IN) != 0
    if rc == SQLITE_OK:
        rc = request_defaults(t, r)
    return rc


cdef int request_defaults(VectorTable *t, SearchRequest *r) noexcept nogil:
    if r.floats == NULL:
        if r.mode == MODE_ASYMMETRIC:
            return table_fail(t, sqlite3_mprintf("sqlitebin: %s: a packed-code query allows only candidates = 'hamming'",
                                                 t.name))
        if r.rescore == RESCORE_INT8 or r.rescore == RESCORE_FLOAT32:
            return table_fail(t, sqlite3_mprintf("sqlitebin: %s: a packed-code query allows only rescore = 'none' or "
                                                 "'bits' (rescoring needs the float32 query)", t.name))
        r.mode = MODE_HAMMING
        if r.rescore < 0:
            r.rescore = RESCORE_NONE
    if r.mode < 0:
        r.mode = MODE_ASYMMETRIC
    if r.rescore < 0:
        r.rescore = t.rescore
    return SQLITE_OK


cdef int build_prefilter(VectorTable *t, const SearchRequest *r, IdFilter *f) noexcept nogil:
    """The allowed rowids (sorted, unique) as an IdFilter; an empty set when the list is empty."""
    cdef int64_t *ids = NULL
    cdef int64_t count = 0, capacity = 0, unique = 0, i
    cdef sqlite3_value *value = NULL
    cdef int rc = SQLITE_OK
    if r.rowids_in:
        rc = sqlite3_vtab_in_first(r.rowids, &value)
    else:
        value = r.rowids
    while rc == SQLITE_OK and value != NULL:
        if count == capacity:
            capacity = capacity * 2 + 64
            if grow_array(<void**>&ids, 8 * count, 8 * capacity):
                rc = SQLITE_NOMEM
                break
        if sqlite3_value_type(value) == SQLITE_INTEGER:
            ids[count] = sqlite3_value_int64(value)
            count += 1
        if not r.rowids_in:
            break
        rc = sqlite3_vtab_in_next(r.rowids, &value)
    if rc == SQLITE_DONE:
        rc = SQLITE_OK
    if rc == SQLITE_OK and count > 1:  # an empty IN list leaves ids NULL, which qsort must not see
        qsort(ids, count, 8, compare_int64)
    if rc == SQLITE_OK:
        for i in range(count):
            if unique == 0 or ids[i] != ids[unique - 1]:
                ids[unique] = ids[i]
                unique += 1
        rc = filter_build(f, <const uint8_t*>ids, <int>(unique * 8)) if unique * 8 < 2147483647 else SQLITE_TOOBIG
        if f.sorted_ids == <const int64_t*>ids and f.bitmap == NULL:
            f.owned_ids = ids  # the filter reads the array in place: it owns it now
            ids = NULL
    sqlite3_free(ids)
    return table_sqlite_fail(t, rc)


ctypedef struct Candidate:
    int64_t rowid
    int64_t location
    double key
    double score
    int64_t distance


cdef int compare_location(const void *a, const void *b) noexcept nogil:
    cdef int64_t x = (<const Candidate*>a).location, y = (<const Candidate*>b).location
    return (x > y) - (x < y)


cdef int compare_score(const void *a, const void *b) noexcept nogil:
    cdef const Candidate *x = <const Candidate*>a
    cdef const Candidate *y = <const Candidate*>b
    if x.score != y.score:
        return -1 if x.score > y.score else 1
    return (x.rowid > y.rowid) - (x.rowid < y.rowid)


cdef double bits_score(const uint8_t *floats, const uint8_t *code, int dim) noexcept nogil:
    """dot(query, code read as +1/-1) / sqrt(dim)."""
    cdef double total = 0
    cdef int i
    for i in range(dim):
        if (code[i >> 3] << (i & 7)) & 0x80:
            total += float_at(floats, i)
        else:
            total -= float_at(floats, i)
    return total / sqrt(<double>dim)


cdef enum:
    RESCORE_PREFETCH = 8  # candidates ahead whose stored vector is fetched into the CPU cache


cdef void int8_weights(VectorTable *t, const uint8_t *floats, double *weights) noexcept nogil:
    """dot(query, dequantized int8 vector) = weights[dim] + sum of weights[i] * code[i]: the
    dequantization (low + (code + 128) * (high - low) / 255) folded into the query once."""
    cdef double step, base = 0
    cdef int i
    for i in range(t.dim):
        step = (<double>float_at(t.ranges, t.dim + i) - <double>float_at(t.ranges, i)) / 255.0
        weights[i] = <double>float_at(floats, i) * step
        base += <double>float_at(floats, i) * (<double>float_at(t.ranges, i) + 128.0 * step)
    weights[t.dim] = base


cdef double int8_score(const double *weights, const uint8_t *stored, int dim) noexcept nogil:
    """The dot product of int8_weights: four running sums, so the additions overlap."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef const int8_t *codes = <const int8_t*>stored
    cdef int i = 0
    while i + 4 <= dim:
        s0 += weights[i] * codes[i]
        s1 += weights[i + 1] * codes[i + 1]
        s2 += weights[i + 2] * codes[i + 2]
        s3 += weights[i + 3] * codes[i + 3]
        i += 4
    while i < dim:
        s0 += weights[i] * codes[i]
        i += 1
    return weights[dim] + ((s0 + s1) + (s2 + s3))


cdef double float32_score(const uint8_t *floats, const uint8_t *stored, int dim) noexcept nogil:
    """dot(query, stored float32 vector), in double, four running sums."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef int i = 0
    while i + 4 <= dim:
        s0 += <double>float_at(floats, i) * <double>float_at(stored, i)
        s1 += <double>float_at(floats, i + 1) * <double>float_at(stored, i + 1)
        s2 += <double>float_at(floats, i + 2) * <double>float_at(stored, i + 2)
        s3 += <double>float_at(floats, i + 3) * <double>float_at(stored, i + 3)
        i += 4
    while i < dim:
        s0 += <double>float_at(floats, i) * <double>float_at(stored, i)
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef int rescore_candidates(VectorTable *t, const SearchRequest *r, const Query *q, const ChunkData *d,
                            Candidate *hits, int64_t count, uint8_t *buffer) noexcept nogil:
    """Fill the score of every candidate (its distance came from the scan); stored vectors are
    read in location order, through the cache's copies of their rows."""
    cdef VectorReader reader
    cdef int64_t i
    cdef int rc = SQLITE_OK
    cdef const uint8_t *code
    cdef const uint8_t *stored
    cdef bint read_vectors = r.rescore == RESCORE_INT8 or r.rescore == RESCORE_FLOAT32
    cdef bint staged = read_vectors and staging(t)
    cdef double *weights = NULL
    reader.blob = NULL
    reader.row = -1
    if read_vectors:
        qsort(hits, count, sizeof(Candidate), compare_location)
    if read_vectors and not staged and r.rescore == RESCORE_INT8:
        weights = <double*>sqlite3_malloc64(8 * (t.dim + 1))
        if weights == NULL:
            return SQLITE_NOMEM
        int8_weights(t, r.floats, weights)
    for i in range(count):
        code = d.codes + hits[i].location * t.code_bytes  # distance: from the scan (Hit.distance)
        if staged:
            rc = read_staged_vector(t, hits[i].rowid, buffer)
            hits[i].score = float32_score(r.floats, buffer, t.dim)
        elif read_vectors:
            if i + RESCORE_PREFETCH < count:
                cache_prefetch_vector(t, hits[i + RESCORE_PREFETCH].location)
            rc = cache_stored_vector(t, &reader, hits[i].location, buffer, &stored)
            if rc == SQLITE_OK:
                hits[i].score = (int8_score(weights, stored, t.dim) if weights != NULL
                                 else float32_score(r.floats, stored, t.dim))
        elif r.floats != NULL and (r.rescore == RESCORE_BITS or r.mode == MODE_ASYMMETRIC):
            hits[i].score = -hits[i].key / sqrt(<double>t.dim) if r.mode == MODE_ASYMMETRIC else bits_score(
                r.floats, code, t.dim)
        else:
            hits[i].score = 1.0 - 2.0 * hits[i].distance / t.dim
        if rc != SQLITE_OK:
            break
    vector_reader_close(&reader)
    sqlite3_free(weights)
    return rc


cdef int64_t candidates_wanted(VectorTable *t, const SearchRequest *r) noexcept nogil:
    """The best k (rescore none) or k x oversample codes, never more than the slots there are."""
    cdef int64_t wanted = r.k
    if r.rescore != RESCORE_NONE:
        wanted = r.k * r.oversample if r.oversample <= INT64_MAX // r.k else INT64_MAX
    if wanted > t.next_location:
        wanted = t.next_location
    return wanted if wanted > 0 else 1


cdef int scan_candidates(VectorTable *t, const SearchRequest *r, const IdFilter *allowed, ChunkData *d,
                         Query *q, TopK *top) noexcept nogil:
    """The candidates of one query, by the candidate order."""
    cdef ScanContext scan
    cdef int rc = query_prepare(q, r.mode, t.dim, r.floats, r.code, t.thresholds)
    if rc != SQLITE_OK:
        return rc
    scan_context_init(&scan, q, allowed)
    scan.top.k = candidates_wanted(t, r)
    scan.top.heap = <Hit*>sqlite3_malloc64(sizeof(Hit) * scan.top.k)
    if scan.top.heap == NULL:
        return SQLITE_NOMEM
    rc = scan_all(&scan, d)  # the shared copy: its scan-ready layout was built at load
    top[0] = scan.top
    return rc


cdef int finish_query(VectorTable *t, VectorCursor *c, const SearchRequest *r, const Query *q, const ChunkData *d,
                      const TopK *top, int64_t query_index) noexcept nogil:
    """Rescore one query's candidates and append its best k to the cursor."""
    cdef Candidate *hits = <Candidate*>sqlite3_malloc64(sizeof(Candidate) * top.size + 8)
    cdef int64_t i
    cdef int rc
    if hits == NULL:
        return SQLITE_NOMEM
    for i in range(top.size):
        hits[i].rowid = top.heap[i].id
        hits[i].location = top.heap[i].location
        hits[i].key = top.heap[i].key
        hits[i].distance = top.heap[i].distance
    rc = rescore_candidates(t, r, q, d, hits, top.size, c.buffer)
    if rc == SQLITE_OK:
        qsort(hits, top.size, sizeof(Candidate), compare_score)
        rc = cursor_append(c, hits, top.size if top.size < r.k else r.k, query_index)
    sqlite3_free(hits)
    return rc


cdef int search_one(VectorTable *t, VectorCursor *c, SearchRequest *r, const IdFilter *allowed, ChunkData *d,
                    int64_t query_index) noexcept nogil:
    """One query of the request: candidates, rescoring, the best k appended to the cursor."""
    cdef Query q
    cdef TopK top
    cdef int rc
    memset(&top, 0, sizeof(TopK))
    rc = scan_candidates(t, r, allowed, d, &q, &top)
    if rc == SQLITE_OK:
        rc = finish_query(t, c, r, &q, d, &top, query_index)
    sqlite3_free(top.heap)
    query_free(&q)
    return rc


cdef enum:
    BATCH_GROUP = 32  # queries scanned together: their tables and heaps stay near the block of codes


cdef int search_group(VectorTable *t, VectorCursor *c, SearchRequest *r, const IdFilter *allowed, ChunkData *d,
                      const uint8_t *first, int64_t first_index, int64_t count) noexcept nogil:
    """Queries first_index .. first_index + count - 1 of a float32 batch in one scan of the codes
    (scan_all_many: each block of codes read once for all of them), then each rescored in turn."""
    cdef Query *queries = <Query*>sqlite3_malloc64(sizeof(Query) * count)
    cdef ScanContext *scans = <ScanContext*>sqlite3_malloc64(sizeof(ScanContext) * count)
    cdef uint8_t *codes = <uint8_t*>sqlite3_malloc64(count * t.code_bytes + 8)
    cdef uint8_t *tables = NULL
    cdef int64_t j, wanted = candidates_wanted(t, r)
    cdef int rc = SQLITE_OK
    if queries == NULL or scans == NULL or codes == NULL:
        sqlite3_free(queries)
        sqlite3_free(scans)
        sqlite3_free(codes)
        return SQLITE_NOMEM
    memset(queries, 0, sizeof(Query) * count)
    memset(scans, 0, sizeof(ScanContext) * count)
    for j in range(count):
        rc = query_prepare(&queries[j], r.mode, t.dim, first + (first_index + j) * 4 * t.dim, NULL, t.thresholds)
        if rc != SQLITE_OK:
            break
        scan_context_init(&scans[j], &queries[j], allowed)
        scans[j].top.k = wanted
        scans[j].top.heap = <Hit*>sqlite3_malloc64(sizeof(Hit) * wanted)
        if scans[j].top.heap == NULL:
            rc = SQLITE_NOMEM
            break
        memcpy(codes + j * t.code_bytes, queries[j].code, t.code_bytes)
    if rc == SQLITE_OK and r.mode == MODE_ASYMMETRIC and queries[0].nibble_tables != NULL:
        tables = <uint8_t*>kernel_alloc(count * batch_table_bytes(&queries[0]))
        rc = SQLITE_NOMEM if tables == NULL else batch_tables_build(queries, scans, count,
                                                                    first + first_index * 4 * t.dim, tables)
    if rc == SQLITE_OK:
        rc = scan_all_many(scans, count, d, codes, tables)
    for j in range(count if rc == SQLITE_OK else 0):
        r.floats = first + (first_index + j) * 4 * t.dim
        rc = finish_query(t, c, r, &queries[j], d, &scans[j].top, first_index + j)
        if rc != SQLITE_OK:
            break
    for j in range(count):
        sqlite3_free(scans[j].top.heap)
        query_free(&queries[j])
    sqlite3_free(queries)
    sqlite3_free(scans)
    sqlite3_free(codes)
    kernel_free(tables)
    return rc


cdef int search(VectorTable *t, VectorCursor *c, int idx_num, sqlite3_value **argv) noexcept nogil:
    cdef SearchRequest r
    cdef IdFilter allowed
    cdef ChunkData *d = NULL
    cdef const uint8_t *first
    cdef int64_t j, n
    cdef int rc
    memset(&allowed, 0, sizeof(IdFilter))
    rc = read_request(t, idx_num, argv, &r)
    if rc == SQLITE_OK and r.rowids != NULL:
        rc = build_prefilter(t, &r, &allowed)
    if rc == SQLITE_OK:
        rc = cache_for_search(t, &d)
    first = r.floats
    if rc == SQLITE_OK and r.query_count == 1:
        rc = search_one(t, c, &r, &allowed if r.rowids != NULL else NULL, d, 0)
    j = 0
    while rc == SQLITE_OK and r.query_count > 1 and j < r.query_count:
        # A batch: BATCH_GROUP queries at a time share one pass over the codes.
        n = r.query_count - j if r.query_count - j < BATCH_GROUP else BATCH_GROUP
        rc = search_group(t, c, &r, &allowed if r.rowids != NULL else NULL, d, first, j, n)
        j += n
    filter_free(&allowed)
    return rc


cdef int cursor_append(VectorCursor *c, const Candidate *hits, int64_t count, int64_t query_index) noexcept nogil:
    cdef int64_t i, old = c.count, total = c.count + count
    if (grow_array(<void**>&c.rowids, 8 * old, 8 * total) or grow_array(<void**>&c.locations, 8 * old, 8 * total)
            or grow_array(<void**>&c.scores, 8 * old, 8 * total) or grow_array(<void**>&c.distances, 8 * old, 8 * total)
            or grow_array(<void**>&c.queries, 8 * old, 8 * total)):
        return SQLITE_NOMEM
    for i in range(count):
        c.rowids[old + i] = hits[i].rowid
        c.locations[old + i] = hits[i].location
        c.scores[old + i] = hits[i].score
        c.distances[old + i] = hits[i].distance
        c.queries[old + i] = query_index
    c.count = total
    return SQLITE_OK
