# Scanning chunks, on one thread or two, for one query or a batch scanned together: the work
# units, the worker thread and the merge of the heaps.

# ---------------------------------------------------------------------------
# Two threads for large scans, only when they pay. The chunks are cut into
# units of SCAN_UNIT_CODES codes; the calling thread and one worker each claim
# the next unclaimed unit (scan_threads.h) and scan it into their own heap,
# merged at the end. Ties are broken by id, so the result does not depend on
# who scanned what. A worker that starts late or shares a busy core claims
# fewer units, and none is started unless a CPU is idle, so the split never
# costs much more than one thread. The worker calls no SQLite routine.

cdef enum:
    PARALLEL_MIN_CODES = 262144
    SCAN_UNIT_CODES = 32768

ctypedef struct ScanJob:
    ScanContext *scans        # one per query, each with its own heap
    int64_t query_count       # more than one: a batch, scanned together (scan_codes_many)
    const ChunkData *chunks
    sqlitebin_work_queue *queue
    BatchBuffers buffers      # a batch's kernel outputs, one set per thread


cdef void scan_chunk(ScanJob *job, int64_t j) noexcept nogil:
    cdef const ChunkData *chunks = job.chunks
    cdef ScanContext *scan = &job.scans[0]  # the prefilter and change set are the same for every query
    cdef int64_t start = chunks.chunk_start[j]
    cdef bint skip_changed
    if scan.allowed != NULL and (chunks.chunk_max[j] < scan.allowed.low or chunks.chunk_min[j] > scan.allowed.high):
        return
    skip_changed = scan.changed_count > 0 and not (chunks.chunk_max[j] < scan.changed_ids[0]
                                                   or chunks.chunk_min[j] > scan.changed_ids[scan.changed_count - 1])
    if job.query_count == 1:
        scan_codes(scan, <const uint8_t*>(chunks.ids + start), chunks.codes + start * scan.code_bytes,
                   chunk_used(chunks, j), start, skip_changed)
    else:
        scan_codes_many(job.scans, job.query_count, &job.buffers, <const uint8_t*>(chunks.ids + start),
                        chunks.codes + start * scan.code_bytes, chunk_used(chunks, j), start, skip_changed)


cdef int64_t first_chunk_from(const ChunkData *chunks, int64_t position) noexcept nogil:
    """The first chunk starting at or after code `position`."""
    cdef int64_t lo = 0, hi = chunks.chunk_count, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if chunks.chunk_start[mid] < position:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef void scan_units(ScanJob *job) noexcept nogil:
    """Claim units until none is left; unit u is the chunks starting in its span of codes."""
    cdef int64_t unit, j, end
    while True:
        unit = sqlitebin_work_claim(job.queue)
        if unit >= job.queue.units:
            return
        j = first_chunk_from(job.chunks, unit * SCAN_UNIT_CODES)
        end = first_chunk_from(job.chunks, (unit + 1) * SCAN_UNIT_CODES)
        while j < end:
            scan_chunk(job, j)
            j += 1


cdef void *scan_thread(void *argument) noexcept nogil:
    scan_units(<ScanJob*>argument)
    return NULL


cdef bint use_two_threads(int64_t codes) noexcept nogil:
    """Unset SQLITEBIN_THREADS: two threads for large scans while a CPU is idle;
    "1": never; "2": always (the tests use it to check the split on small data)."""
    cdef const char *setting = getenv("SQLITEBIN_THREADS")
    if setting != NULL and strcmp(setting, "1") == 0:
        return False
    if setting != NULL and strcmp(setting, "2") == 0:
        return codes > 0
    return codes >= PARALLEL_MIN_CODES and sqlitebin_idle_cpus_recent() >= 1


cdef void scan_job_free(ScanJob *job) noexcept nogil:
    """A worker's own contexts: their heaps, the array and the batch buffers."""
    cdef int64_t q
    if job.scans != NULL:
        for q in range(job.query_count):
            sqlite3_free(job.scans[q].top.heap)
        sqlite3_free(job.scans)
        job.scans = NULL
    batch_buffers_free(&job.buffers)


cdef int scan_chunks_many(ScanContext *scans, int64_t query_count, const ChunkData *chunks,
                          const uint8_t *query_codes, const uint8_t *nibble_tables) noexcept nogil:
    """Scan every chunk into each scans[q].top, on one thread or two. A batch (query_count > 1)
    gives its query codes side by side, and its nibble tables side by side when they are used."""
    cdef int64_t total = chunks.chunk_start[chunks.chunk_count], i, q
    cdef sqlitebin_work_queue queue
    cdef ScanJob here, there
    cdef pthread_t thread
    cdef bint started = False
    cdef int rc = SQLITE_OK
    memset(&here, 0, sizeof(ScanJob))
    memset(&there, 0, sizeof(ScanJob))
    queue.next = 0
    queue.units = (total + SCAN_UNIT_CODES - 1) // SCAN_UNIT_CODES + 1  # the last unit holds any empty chunks after the codes
    for q in range(query_count):
        scans[q].validity = chunks.validity
    here.scans = scans
    here.query_count = query_count
    here.chunks = chunks
    here.queue = &queue
    here.buffers.query_codes = query_codes
    here.buffers.nibble_tables = nibble_tables
    if query_count > 1 and batch_buffers_alloc(&here.buffers, query_count) != SQLITE_OK:
        batch_buffers_free(&here.buffers)
        return SQLITE_NOMEM
    if use_two_threads(total):
        there = here
        memset(&there.buffers, 0, sizeof(BatchBuffers))
        there.buffers.query_codes = query_codes
        there.buffers.nibble_tables = nibble_tables
        there.scans = <ScanContext*>sqlite3_malloc64(sizeof(ScanContext) * query_count)
        if there.scans != NULL:
            memset(there.scans, 0, sizeof(ScanContext) * query_count)
            for q in range(query_count):
                there.scans[q] = scans[q]
                there.scans[q].top.size = 0
                there.scans[q].top.heap = <Hit*>sqlite3_malloc64(sizeof(Hit) * scans[q].top.k)
                if there.scans[q].top.heap == NULL:
                    rc = SQLITE_NOMEM
                    break
        if there.scans == NULL or (query_count > 1 and batch_buffers_alloc(&there.buffers, query_count) != SQLITE_OK):
            rc = SQLITE_NOMEM
        if rc != SQLITE_OK:
            scan_job_free(&there)
            batch_buffers_free(&here.buffers)
            return rc
        started = pthread_create(&thread, NULL, scan_thread, &there) == 0
    scan_units(&here)
    if started:
        pthread_join(thread, NULL)
        for q in range(query_count):
            for i in range(there.scans[q].top.size):
                topk_offer(&scans[q].top, there.scans[q].top.heap[i].key, there.scans[q].top.heap[i].id,
                           there.scans[q].top.heap[i].location, there.scans[q].top.heap[i].distance)
    scan_job_free(&there)
    batch_buffers_free(&here.buffers)
    return SQLITE_OK


cdef int scan_chunks(ScanContext *scan, const ChunkData *chunks) noexcept nogil:
    """Scan every chunk into scan.top, on one thread or two."""
    return scan_chunks_many(scan, 1, chunks, NULL, NULL)


cdef int scan_all_many(ScanContext *scans, int64_t query_count, const ChunkData *chunks,
                       const uint8_t *query_codes, const uint8_t *nibble_tables) noexcept nogil:
    """Scan every chunk of `chunks` into each scans[q].top (see scan_chunks_many for a batch). The
    asymmetric nibble scan reads the codes in the scan-ready layout, which the shared code cache builds
    when it loads (cache.pxi); without it the scan scores every code exactly: the same results, more
    slowly. An AVX2 Hamming batch reads the scan-ready copy too, through per-query popcount tables. An
    asymmetric scan's Hamming distances are filled in once it is over (fill_distances)."""
    cdef int64_t q
    cdef int rc
    cdef uint8_t *popcount_tables = NULL
    cdef ScanContext *scan = &scans[0]
    for q in range(query_count):
        scans[q].blocked = chunks.blocked if scan.mode == MODE_ASYMMETRIC and scan.nibble_tables != NULL else NULL
    if (scan.mode == MODE_HAMMING and query_count > 1 and scan.hamming_blocked_many != NULL and chunks.blocked != NULL
            and query_codes != NULL):
        # An AVX2 Hamming batch reads the scan-ready copy through per-query popcount tables.
        popcount_tables = <uint8_t*>kernel_alloc(query_count * 64 * scan.code_bytes)
        if popcount_tables == NULL:
            return SQLITE_NOMEM
        for q in range(query_count):
            sqlitebin_hamming_nibble_tables(query_codes + q * scan.code_bytes, scan.code_bytes,
                                            popcount_tables + q * 64 * scan.code_bytes)
            scans[q].blocked = chunks.blocked
        nibble_tables = popcount_tables
    rc = scan_chunks_many(scans, query_count, chunks, query_codes, nibble_tables)
    kernel_free(popcount_tables)
    if rc == SQLITE_OK and scan.mode == MODE_ASYMMETRIC:
        for q in range(query_count):
            fill_distances(&scans[q], chunks)
    return rc


cdef void fill_distances(ScanContext *scan, const ChunkData *chunks) noexcept nogil:
    """The Hamming distances of an asymmetric scan's hits in the ChunkData, left at 0 when they entered the
    heap: from the row-major codes, once per hit kept (their codes are far apart: requested all at once first)."""
    cdef int64_t i, location
    cdef TopK *top = &scan.top
    for i in range(top.size):
        if top.heap[i].location >= 0:
            __builtin_prefetch(chunks.codes + top.heap[i].location * scan.code_bytes)
    for i in range(top.size):
        location = top.heap[i].location
        if location >= 0:
            top.heap[i].distance = <uint32_t>scan.hamming(chunks.codes + location * scan.code_bytes, scan.query_code,
                                                          scan.code_bytes)


cdef int scan_all(ScanContext *scan, const ChunkData *chunks) noexcept nogil:
    return scan_all_many(scan, 1, chunks, NULL, NULL)
