# Scanning chunks, on one thread or two: the split, the worker threads and the merge of
# their heaps.

# ---------------------------------------------------------------------------
# Two threads for large scans. A collection of at least PARALLEL_MIN_CODES
# codes is split in two halves of chunks, each scanned by its own thread into
# its own heap; the heaps are merged after. Ties are broken by id, so the result
# does not depend on the split. The worker thread calls no SQLite routine.

cdef enum:
    PARALLEL_MIN_CODES = 262144

ctypedef struct ScanJob:
    ScanContext scan
    const ChunkData *chunks
    int64_t first_chunk
    int64_t end_chunk
    const uint16_t *approx
    # The nibble sums this job computes before the scan (asymmetric fast scan).
    sqlitebin_nibble_sums_fn nibble_sums
    const uint8_t *nibble_tables
    int64_t first_block
    int64_t end_block
    uint16_t *approx_out


cdef void scan_chunk_range(ScanJob *job) noexcept nogil:
    cdef const ChunkData *chunks = job.chunks
    cdef ScanContext *scan = &job.scan
    cdef int64_t j, start
    cdef int code_bytes = scan.code_bytes
    for j in range(job.first_chunk, job.end_chunk):
        if scan.allowed != NULL and (chunks.chunk_max[j] < scan.allowed.low or chunks.chunk_min[j] > scan.allowed.high):
            continue
        start = chunks.chunk_start[j]
        scan_codes(scan, <const uint8_t*>(chunks.ids + start), chunks.codes + start * code_bytes,
                   chunk_used(chunks, j), start,
                   scan.changed_count > 0 and not (chunks.chunk_max[j] < scan.changed_ids[0]
                                                   or chunks.chunk_min[j] > scan.changed_ids[scan.changed_count - 1]),
                   job.approx + start if job.approx != NULL else NULL)


cdef void nibble_sum_range(ScanJob *job) noexcept nogil:
    cdef int64_t code_bytes = job.scan.code_bytes
    if job.end_block > job.first_block:
        job.nibble_sums(job.chunks.blocked + job.first_block * 32 * code_bytes, job.end_block - job.first_block,
                        code_bytes, job.nibble_tables, job.approx_out + job.first_block * 32)


cdef void *nibble_sum_thread(void *argument) noexcept nogil:
    nibble_sum_range(<ScanJob*>argument)
    return NULL


cdef void *scan_thread(void *argument) noexcept nogil:
    scan_chunk_range(<ScanJob*>argument)
    return NULL


cdef bint use_two_threads(int64_t codes) noexcept nogil:
    """Unset SQLITEBIN_THREADS: two threads for large collections on a multi-core machine;
    "1": never; "2": always (the tests use it to check the split on small data)."""
    cdef const char *setting = getenv("SQLITEBIN_THREADS")
    if setting != NULL and strcmp(setting, "1") == 0:
        return False
    if setting != NULL and strcmp(setting, "2") == 0:
        return codes > 0
    return codes >= PARALLEL_MIN_CODES and sysconf(_SC_NPROCESSORS_ONLN) >= 2


cdef void run_in_two(void *(*work)(void *) noexcept nogil, ScanJob *here, ScanJob *there) noexcept nogil:
    """Run `work` on `there` in a new thread and on `here` in this one; without a thread, both here."""
    cdef pthread_t thread
    cdef bint started = pthread_create(&thread, NULL, work, there) == 0
    work(here)
    if started:
        pthread_join(thread, NULL)
    else:
        work(there)


cdef int scan_chunks(ScanContext *scan, ChunkData *chunks, sqlitebin_nibble_sums_fn nibble_sums,
                     const uint8_t *nibble_tables, uint16_t *approx) noexcept nogil:
    """Scan every chunk into scan.top, on one thread or two; compute the nibble sums first when asked."""
    cdef int64_t total = chunks.chunk_start[chunks.chunk_count]
    cdef int64_t blocks = (total + 31) // 32, split = 0, i
    cdef ScanJob here, there
    memset(&here, 0, sizeof(ScanJob))
    here.scan = scan[0]
    here.scan.validity = chunks.validity
    here.chunks = chunks
    here.first_chunk = 0
    here.end_chunk = chunks.chunk_count
    here.approx = approx
    here.nibble_sums = nibble_sums
    here.nibble_tables = nibble_tables
    here.first_block = 0
    here.end_block = blocks
    here.approx_out = approx
    if not use_two_threads(total):
        if approx != NULL:
            nibble_sum_range(&here)
        scan_chunk_range(&here)
        scan[0] = here.scan
        return SQLITE_OK
    there = here
    there.scan.top.size = 0
    there.scan.top.heap = <Hit*>sqlite3_malloc64(sizeof(Hit) * there.scan.top.k)
    if there.scan.top.heap == NULL:
        return SQLITE_NOMEM
    while split < chunks.chunk_count and chunks.chunk_start[split] < total // 2:
        split += 1
    here.end_chunk = split
    there.first_chunk = split
    here.end_block = blocks // 2
    there.first_block = blocks // 2
    if approx != NULL:
        run_in_two(nibble_sum_thread, &here, &there)
    run_in_two(scan_thread, &here, &there)
    for i in range(there.scan.top.size):
        topk_offer(&here.scan.top, there.scan.top.heap[i].key, there.scan.top.heap[i].id,
                   there.scan.top.heap[i].location)
    sqlite3_free(there.scan.top.heap)
    scan[0] = here.scan
    return SQLITE_OK


cdef int scan_all(ScanContext *scan, ChunkData *chunks, const Query *q) noexcept nogil:
    """Scan every chunk of `chunks` for query `q` into scan.top: in asymmetric mode with the
    nibble tables, first transpose the codes (once per ChunkData) and bound every code."""
    cdef int64_t total = chunks.chunk_start[chunks.chunk_count]
    cdef int64_t blocks = (total + 31) // 32
    cdef uint16_t *approx = NULL
    cdef int rc
    if q.nibble_tables == NULL or total == 0:
        return scan_chunks(scan, chunks, NULL, NULL, NULL)
    if chunks.blocked == NULL:
        chunks.blocked = <uint8_t*>sqlite3_malloc64(blocks * 32 * q.code_bytes)
        if chunks.blocked == NULL:
            return SQLITE_NOMEM
        sqlitebin_transpose_blocks(chunks.codes, total, q.code_bytes, chunks.blocked)
    approx = <uint16_t*>sqlite3_malloc64(blocks * 32 * 2)
    if approx == NULL:
        return SQLITE_NOMEM
    scan.approx_scale = q.approx_scale
    scan.approx_high = q.approx_high
    rc = scan_chunks(scan, chunks, q.nibble_sums, q.nibble_tables, approx)
    sqlite3_free(approx)
    return rc
