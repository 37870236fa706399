# The scan: kernel dispatch (chosen at load time from the CPU), the per-query lookup tables,
# and the hot loop offering codes to the top-k heap.

# ---------------------------------------------------------------------------
# Kernel selection, done once per load from what the CPU reports.

cdef sqlitebin_hamming_fn hamming_kernel
cdef sqlitebin_hamming_block_fn hamming_block_kernel
cdef sqlitebin_nibble_sums_fn nibble_sums_kernel  # NULL without AVX2: the asymmetric scan then scores every code exactly
cdef sqlitebin_popcount_fn popcount_kernel
cdef const char *kernel_name


cdef void select_kernels() noexcept nogil:
    """Pick the fastest kernels the CPU supports. SQLITEBIN_POPCOUNT=portable or
    popcnt caps the choice (used by the tests to check every kernel); it can
    never select instructions the CPU lacks.

    Other threads may be running queries on other connections while this runs
    (every load calls it), so the choice is made in locals and each global is
    written once, with a usable kernel: never a transient NULL."""
    global hamming_kernel, hamming_block_kernel, popcount_kernel, kernel_name, nibble_sums_kernel
    cdef sqlitebin_hamming_fn hamming = sqlitebin_hamming_portable
    cdef sqlitebin_hamming_block_fn hamming_block = sqlitebin_hamming_block_portable
    cdef sqlitebin_nibble_sums_fn nibble_sums = NULL
    cdef sqlitebin_popcount_fn popcount = sqlitebin_popcount_portable
    cdef const char *name = "portable"
    cdef const char *cap = getenv("SQLITEBIN_POPCOUNT")
    cdef bint allow_avx2 = cap == NULL or strcmp(cap, "avx2") == 0
    cdef bint allow_popcnt = allow_avx2 or strcmp(cap, "popcnt") == 0
    if SQLITEBIN_HAVE_X86_KERNELS and allow_avx2 and sqlitebin_cpu_has_avx2():
        hamming = sqlitebin_hamming_avx2
        hamming_block = sqlitebin_hamming_block_avx2
        nibble_sums = sqlitebin_nibble_sums_avx2
        popcount = sqlitebin_popcount_popcnt
        name = "avx2"
    elif SQLITEBIN_HAVE_X86_KERNELS and allow_popcnt and sqlitebin_cpu_has_popcnt():
        hamming = sqlitebin_hamming_popcnt
        hamming_block = sqlitebin_hamming_block_popcnt
        popcount = sqlitebin_popcount_popcnt
        name = "popcnt"
    hamming_kernel = hamming
    hamming_block_kernel = hamming_block
    nibble_sums_kernel = nibble_sums
    popcount_kernel = popcount
    kernel_name = name


cdef enum:
    MODE_HAMMING = 0
    MODE_ASYMMETRIC = 1

# The layout the scan reads: codes of every chunk side by side in memory. Position p holds
# ids[p] and codes[p * code_bytes]; chunk j covers positions chunk_start[j] to
# chunk_start[j] + used(j). The virtual table lays chunks out at chunk_id * chunk_size,
# so a position is the row's location.
ctypedef struct ChunkData:
    int code_bytes
    int64_t chunk_count
    int64_t *chunk_start   # chunk_count + 1 offsets into ids/codes
    int64_t *chunk_used    # slots used in each chunk; NULL: up to the next chunk's start
    int64_t *chunk_min     # bounds of the ids in each chunk (the prefilter skips whole chunks)
    int64_t *chunk_max
    int64_t *ids
    uint8_t *codes
    uint8_t *validity      # a bit per position, set = live; NULL: every position is live
    uint8_t *blocked       # codes transposed in blocks of 32 for the nibble scan; made on first need


cdef inline int64_t chunk_used(const ChunkData *d, int64_t j) noexcept nogil:
    if d.chunk_used != NULL:
        return d.chunk_used[j]
    return d.chunk_start[j + 1] - d.chunk_start[j]


cdef void chunk_data_free(ChunkData *d) noexcept nogil:
    sqlite3_free(d.chunk_start)
    sqlite3_free(d.chunk_used)
    sqlite3_free(d.chunk_min)
    sqlite3_free(d.chunk_max)
    sqlite3_free(d.ids)
    sqlite3_free(d.codes)
    sqlite3_free(d.validity)
    sqlite3_free(d.blocked)
    memset(d, 0, sizeof(ChunkData))


# One query, prepared for the scan: its code, and in asymmetric mode its lookup tables.
ctypedef struct Query:
    int mode
    int dim
    int code_bytes
    uint8_t *code            # the query binarized with the thresholds (or the code given)
    float *tables            # asymmetric: code_bytes tables of 256 sums
    uint8_t *nibble_tables   # asymmetric fast scan; NULL without AVX2
    double query_sum
    double approx_scale
    double approx_high
    sqlitebin_nibble_sums_fn nibble_sums  # read once: a load elsewhere may change the global


cdef void query_free(Query *q) noexcept nogil:
    sqlite3_free(q.code)
    sqlite3_free(q.tables)
    sqlite3_free(q.nibble_tables)
    memset(q, 0, sizeof(Query))


cdef int query_prepare(Query *q, int mode, int dim, const uint8_t *floats, const uint8_t *code,
                       const uint8_t *thresholds) noexcept nogil:
    """Prepare a checked query: `floats` (4 * dim bytes, finite, magnitude within
    SQLITEBIN_MAX_QUERY_MAGNITUDE) or, in hamming mode only, `code` (ceil(dim / 8) bytes).
    `thresholds` (4 * dim bytes) or NULL for zeros. The caller frees with query_free."""
    cdef int i
    cdef float value, threshold
    cdef float *values = NULL
    memset(q, 0, sizeof(Query))
    q.mode = mode
    q.dim = dim
    q.code_bytes = (dim + 7) // 8
    q.nibble_sums = nibble_sums_kernel
    q.code = <uint8_t*>sqlite3_malloc64(q.code_bytes + 1)
    if q.code == NULL:
        return SQLITE_NOMEM
    memset(q.code, 0, q.code_bytes + 1)
    if floats == NULL:
        if code != NULL:
            memcpy(q.code, code, q.code_bytes)
        return SQLITE_OK
    for i in range(dim):
        value = float_at(floats, i)
        threshold = float_at(thresholds, i) if thresholds != NULL else 0
        if value > threshold:
            q.code[i >> 3] |= <uint8_t>(0x80 >> (i & 7))
        q.query_sum += value
    if mode == MODE_HAMMING:
        return SQLITE_OK
    values = <float*>sqlite3_malloc64(4 * dim + 4)
    q.tables = <float*>sqlite3_malloc64(<int64_t>q.code_bytes * 256 * 4 + 4)
    if values == NULL or q.tables == NULL:
        sqlite3_free(values)
        return SQLITE_NOMEM
    memcpy(values, floats, 4 * dim)
    build_lookup_tables(values, dim, q.code_bytes, q.tables)
    if q.nibble_sums != NULL and 0 < q.code_bytes <= 128:
        q.nibble_tables = <uint8_t*>sqlite3_malloc64(64 * q.code_bytes)
        if q.nibble_tables == NULL or build_nibble_tables(
                values, dim, q.code_bytes, q.nibble_tables, &q.approx_scale, &q.approx_high) != SQLITE_OK:
            sqlite3_free(values)
            return SQLITE_NOMEM
    sqlite3_free(values)
    return SQLITE_OK


cdef void scan_context_init(ScanContext *scan, const Query *q, const IdFilter *allowed) noexcept nogil:
    memset(scan, 0, sizeof(ScanContext))
    scan.mode = q.mode
    scan.code_bytes = q.code_bytes
    scan.query_code = q.code
    scan.tables = q.tables
    scan.query_sum = q.query_sum
    scan.allowed = allowed
    scan.filter_first = allowed != NULL and allowed.count <= SPARSE_FILTER_IDS


cdef void build_lookup_tables(const float *query, int dim, int code_bytes, float *tables) noexcept nogil:
    """tables[j * 256 + b] = sum of the query values whose bits are set in byte value b at code byte j."""
    cdef int j, b, low_bit, dimension
    for j in range(code_bytes):
        tables[j * 256] = 0
        for b in range(1, 256):
            low_bit = 0
            while not ((b >> low_bit) & 1):
                low_bit += 1
            dimension = j * 8 + (7 - low_bit)
            tables[j * 256 + b] = tables[j * 256 + (b & (b - 1))] + (query[dimension] if dimension < dim else 0)


cdef int build_nibble_tables(const float *query, int dim, int code_bytes, uint8_t *tables,
                             double *scale, double *high) noexcept nogil:
    """uint8 nibble tables for the fast scan (layout in kernels.h) and their error bound.

    Table entry (j, nibble n) is the sum of the query values of the 4 dimensions
    that nibble covers with bits set in n; each table is shifted by its minimum
    and quantized with one step for all tables. The sum of the exact entries is
    then at most scale * (sum of quantized entries) + high, where `high` adds the
    minimums and the worst-case rounding (half a step per table)."""
    cdef int j, half, n, r, dimension, t
    cdef double values[256]  # 2 tables x 16 entries, then reused per byte
    cdef double step = 0, low, top, offset = 0, level
    cdef double *minimum = <double*>sqlite3_malloc64(16 * code_bytes + 16)
    if minimum == NULL:
        return SQLITE_NOMEM
    # Pass 1: the widest table fixes the step.
    for pass_number in range(2):
        for j in range(code_bytes):
            for half in range(2):
                t = 2 * j + half
                low = 0
                top = 0
                for n in range(16):
                    values[n] = 0
                    for r in range(4):
                        dimension = 8 * j + 4 * half + r
                        if (n >> (3 - r)) & 1 and dimension < dim:
                            values[n] += query[dimension]
                    if values[n] < low:
                        low = values[n]
                    if values[n] > top:
                        top = values[n]
                if pass_number == 0:
                    minimum[t] = low
                    if top - low > step:
                        step = top - low
                    continue
                for n in range(16):
                    level = floor((values[n] - low) / step + 0.5) if step > 0 else 0
                    if level > 255:
                        level = 255
                    tables[64 * j + 32 * half + n] = <uint8_t>level
                    tables[64 * j + 32 * half + 16 + n] = <uint8_t>level
        if pass_number == 0:
            step = step / 255.0
            for t in range(2 * code_bytes):
                offset += minimum[t]
    sqlite3_free(minimum)
    scale[0] = step
    # Rounding error: half a step per table; a little more for float rounding in the exact sums.
    high[0] = offset + code_bytes * step + 1e-4
    return SQLITE_OK


cdef inline float asymmetric_sum(const float *tables, const uint8_t *code, int code_bytes) noexcept nogil:
    """Sum of the query values at the code's set bits, four table lookups per step."""
    cdef float s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef int j = 0
    while j + 4 <= code_bytes:
        s0 += tables[j * 256 + code[j]]
        s1 += tables[(j + 1) * 256 + code[j + 1]]
        s2 += tables[(j + 2) * 256 + code[j + 2]]
        s3 += tables[(j + 3) * 256 + code[j + 3]]
        j += 4
    while j < code_bytes:
        s0 += tables[j * 256 + code[j]]
        j += 1
    return (s0 + s1) + (s2 + s3)


ctypedef struct ScanContext:
    int mode
    int code_bytes
    const uint8_t *query_code
    const float *tables
    double query_sum
    const IdFilter *allowed
    # The filter is checked before the score (a few allowed ids: scoring every code for them costs ~1 ms per 60k).
    bint filter_first
    # Live positions (bit set, numpy.packbits order), or NULL when every position is live.
    const uint8_t *validity
    # Ids whose chunk entries are stale (deleted or changed since the chunk was written).
    const int64_t *changed_ids
    int64_t changed_count
    TopK top
    # Asymmetric fast scan: the true sum of a code is at most
    # approx_scale * approx[i] + approx_high, so a code whose best case cannot
    # enter the heap is skipped without computing its exact score.
    double approx_scale
    double approx_high


cdef enum:
    SCAN_BLOCK = 1024  # codes scored per kernel call; their distances stay in L1
    SPARSE_FILTER_IDS = 1024  # a prefilter of at most this many ids is checked before the score


cdef void scan_codes(ScanContext *scan, const uint8_t *ids_blob, const uint8_t *codes, int64_t count,
                     int64_t first_position, bint skip_changed, const uint16_t *approx) noexcept nogil:
    """Offer `count` codes (at positions first_position...) to the top-k. The score comes
    first; the validity, id and filter checks only for codes that would enter the heap."""
    cdef int64_t start, i, n, id, position
    cdef int code_bytes = scan.code_bytes
    cdef double key
    cdef uint32_t distances[SCAN_BLOCK]
    cdef TopK *top = &scan.top
    start = 0
    while start < count:
        n = count - start if count - start < SCAN_BLOCK else SCAN_BLOCK
        if scan.mode == MODE_HAMMING:
            hamming_block_kernel(codes + start * code_bytes, n, code_bytes, scan.query_code, distances)
        for i in range(n):
            if scan.filter_first:
                memcpy(&id, ids_blob + 8 * (start + i), 8)
                if not filter_allows(scan.allowed, id):
                    continue
            if scan.mode == MODE_HAMMING:
                key = <double>distances[i]
            else:
                if approx != NULL and top.size == top.k and scan.query_sum - 2.0 * (
                        scan.approx_scale * approx[start + i] + scan.approx_high) > top.heap[0].key:
                    continue
                key = scan.query_sum - 2.0 * <double>asymmetric_sum(
                    scan.tables, codes + (start + i) * code_bytes, code_bytes)
            if top.size == top.k and key > top.heap[0].key:
                continue
            position = first_position + start + i
            if scan.validity != NULL and not ((scan.validity[position >> 3] << (position & 7)) & 0x80):
                continue
            memcpy(&id, ids_blob + 8 * (start + i), 8)
            if scan.allowed != NULL and not filter_allows(scan.allowed, id):
                continue
            if skip_changed and id_in_sorted(scan.changed_ids, scan.changed_count, id):
                continue
            topk_offer(top, key, id, position)
        start += n
