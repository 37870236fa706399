# Scanning chunks, on one thread or two: the split, the worker threads and the merge of
# their heaps.

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
    ScanContext scan
    const ChunkData *chunks
    sqlitebin_work_queue *queue


cdef void scan_chunk(ScanContext *scan, const ChunkData *chunks, int64_t j) noexcept nogil:
    cdef int64_t start = chunks.chunk_start[j]
    if scan.allowed != NULL and (chunks.chunk_max[j] < scan.allowed.low or chunks.chunk_min[j] > scan.allowed.high):
        return
    scan_codes(scan, <const uint8_t*>(chunks.ids + start), chunks.codes + start * scan.code_bytes,
               chunk_used(chunks, j), start,
               scan.changed_count > 0 and not (chunks.chunk_max[j] < scan.changed_ids[0]
                                               or chunks.chunk_min[j] > scan.changed_ids[scan.changed_count - 1]))


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
            scan_chunk(&job.scan, job.chunks, j)
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


cdef int scan_chunks(ScanContext *scan, const ChunkData *chunks) noexcept nogil:
    """Scan every chunk into scan.top, on one thread or two."""
    cdef int64_t total = chunks.chunk_start[chunks.chunk_count], i
    cdef sqlitebin_work_queue queue
    cdef ScanJob here, there
    cdef pthread_t thread
    cdef bint started = False
    queue.next = 0
    queue.units = (total + SCAN_UNIT_CODES - 1) // SCAN_UNIT_CODES + 1  # the last unit holds any empty chunks after the codes
    here.scan = scan[0]
    here.scan.validity = chunks.validity
    here.chunks = chunks
    here.queue = &queue
    if use_two_threads(total):
        there = here
        there.scan.top.size = 0
        there.scan.top.heap = <Hit*>sqlite3_malloc64(sizeof(Hit) * there.scan.top.k)
        if there.scan.top.heap == NULL:
            return SQLITE_NOMEM
        started = pthread_create(&thread, NULL, scan_thread, &there) == 0
        if not started:
            sqlite3_free(there.scan.top.heap)
    scan_units(&here)
    if started:
        pthread_join(thread, NULL)
        for i in range(there.scan.top.size):
            topk_offer(&here.scan.top, there.scan.top.heap[i].key, there.scan.top.heap[i].id,
                       there.scan.top.heap[i].location, there.scan.top.heap[i].distance)
        sqlite3_free(there.scan.top.heap)
    scan[0] = here.scan
    return SQLITE_OK


cdef int scan_all(ScanContext *scan, ChunkData *chunks, bint may_transpose) noexcept nogil:
    """Scan every chunk of `chunks` into scan.top. The asymmetric nibble scan reads the codes
    in the scan-ready layout: the shared code cache builds it when it loads (cache.pxi);
    otherwise it is built here on first need when `may_transpose` (a private ChunkData).
    Without it the scan scores every code exactly: the same results, more slowly."""
    cdef int64_t total = chunks.chunk_start[chunks.chunk_count]
    cdef int64_t size
    scan.blocked = NULL
    if scan.mode == MODE_ASYMMETRIC and scan.nibble_tables != NULL and total > 0:
        if chunks.blocked == NULL and may_transpose:
            size = (total + SQLITEBIN_NIBBLE_BLOCK - 1) // SQLITEBIN_NIBBLE_BLOCK * SQLITEBIN_NIBBLE_BLOCK * scan.code_bytes
            chunks.blocked = <uint8_t*>sqlite3_malloc64(size + 8)
            if chunks.blocked == NULL:
                return SQLITE_NOMEM
            sqlitebin_advise_huge_pages(chunks.blocked, size)
            sqlitebin_transpose_blocks(chunks.codes, total, scan.code_bytes, chunks.blocked)
        scan.blocked = chunks.blocked
    return scan_chunks(scan, chunks)
