# The scan: kernel dispatch (chosen at load time from the CPU), the per-query lookup tables,
# and the hot loop: the fused kernels (scan_kernels.h) emit only codes that can still enter the
# top-k heap; those few are scored exactly, checked (live bit, prefilter, change set) and offered.

# ---------------------------------------------------------------------------
# Kernel selection, done once per load from what the CPU reports.

cdef sqlitebin_hamming_fn hamming_kernel
cdef sqlitebin_popcount_fn popcount_kernel
cdef sqlitebin_hamming_below_fn hamming_below_kernel
cdef sqlitebin_nibble_above_fn nibble_above_kernel  # NULL below AVX2: the asymmetric scan then scores every code exactly
cdef sqlitebin_hamming_below_many_fn hamming_below_many_kernel  # the batch kernels: several queries per block
cdef sqlitebin_nibble_above_many_fn nibble_above_many_kernel  # NULL exactly when nibble_above_kernel is
cdef sqlitebin_hamming_blocked_many_fn hamming_blocked_many_kernel  # AVX2 Hamming batches on the scan-ready layout, else NULL
cdef const char *kernel_name


cdef int select_kernels() noexcept nogil:
    """Pick the fastest kernels the CPU supports: avx512 (VPOPCNTDQ + BW), avx2,
    popcnt or portable. SQLITEBIN_POPCOUNT caps the choice at one of those levels
    (the tests use it to check every kernel); it never selects instructions the
    CPU lacks. Returns -1, choosing nothing, when the variable holds another value.

    Other threads may be running queries on other connections while this runs
    (every load calls it), so the choice is made in locals and each global is
    written once, with a usable kernel: never a transient NULL."""
    global hamming_kernel, popcount_kernel, kernel_name, hamming_below_kernel, nibble_above_kernel
    global hamming_below_many_kernel, nibble_above_many_kernel, hamming_blocked_many_kernel
    cdef sqlitebin_hamming_fn hamming = sqlitebin_hamming_portable
    cdef sqlitebin_popcount_fn popcount = sqlitebin_popcount_portable
    cdef sqlitebin_hamming_below_fn hamming_below = sqlitebin_hamming_below_portable
    cdef sqlitebin_nibble_above_fn nibble_above = NULL
    cdef sqlitebin_hamming_below_many_fn hamming_below_many = sqlitebin_hamming_below_many_portable
    cdef sqlitebin_nibble_above_many_fn nibble_above_many = NULL
    cdef sqlitebin_hamming_blocked_many_fn hamming_blocked_many = NULL
    cdef const char *name = "portable"
    cdef const char *cap = getenv("SQLITEBIN_POPCOUNT")
    cdef int level = 3  # 0 portable, 1 popcnt, 2 avx2, 3 avx512
    if cap != NULL and cap[0] != 0:
        if strcmp(cap, "portable") == 0:
            level = 0
        elif strcmp(cap, "popcnt") == 0:
            level = 1
        elif strcmp(cap, "avx2") == 0:
            level = 2
        elif strcmp(cap, "avx512") != 0:
            return -1
    if SQLITEBIN_HAVE_X86_KERNELS and level >= 3 and sqlitebin_cpu_has_avx512():
        hamming = sqlitebin_hamming_avx512
        popcount = sqlitebin_popcount_avx512
        hamming_below = sqlitebin_hamming_below_avx512
        hamming_below_many = sqlitebin_hamming_below_many_avx512
        if sqlitebin_cpu_has_avx512vbmi():
            nibble_above = sqlitebin_nibble_above_avx512vbmi
            nibble_above_many = sqlitebin_sextet_above_many_avx512vbmi
        else:
            nibble_above = sqlitebin_nibble_above_avx512
            nibble_above_many = sqlitebin_nibble_above_many_avx512
        name = "avx512"
    elif SQLITEBIN_HAVE_X86_KERNELS and level >= 2 and sqlitebin_cpu_has_avx2():
        hamming = sqlitebin_hamming_avx2
        popcount = sqlitebin_popcount_popcnt
        hamming_below = sqlitebin_hamming_below_avx2
        hamming_below_many = sqlitebin_hamming_below_many_avx2
        nibble_above = sqlitebin_nibble_above_avx2
        nibble_above_many = sqlitebin_nibble_above_many_avx2
        hamming_blocked_many = sqlitebin_hamming_blocked_many_avx2
        name = "avx2"
    elif SQLITEBIN_HAVE_X86_KERNELS and level >= 1 and sqlitebin_cpu_has_popcnt():
        hamming = sqlitebin_hamming_popcnt
        popcount = sqlitebin_popcount_popcnt
        hamming_below = sqlitebin_hamming_below_popcnt
        hamming_below_many = sqlitebin_hamming_below_many_popcnt
        name = "popcnt"
    hamming_kernel = hamming
    popcount_kernel = popcount
    hamming_below_kernel = hamming_below
    nibble_above_kernel = nibble_above
    hamming_below_many_kernel = hamming_below_many
    nibble_above_many_kernel = nibble_above_many
    hamming_blocked_many_kernel = hamming_blocked_many
    kernel_name = name
    return 0


# Memory the kernels read: the arrays the scan streams through (the codes, their ids, the scan-ready copy)
# and each query's tables. It starts on a cache line and shares no line with any other object. SQLite's
# allocator gives 8-byte alignment (a large block starts 24 bytes into a line), and then every 64-byte
# load of the nibble kernel spans two lines: over 1M codes the kernel alone took 1.2 ms against 0.92 ms
# on aligned codes.

cdef enum:
    KERNEL_ALIGN = 64


cdef void *kernel_alloc(int64_t bytes) noexcept nogil:
    """`bytes` on a KERNEL_ALIGN boundary, with 8 more readable past them and the rest of the last line
    unshared; huge pages are asked for before the caller first writes it (large arrays). Not zeroed.
    Freed with kernel_free; the block from sqlite3_malloc64 is kept in the 8 bytes before the array."""
    cdef int64_t lines = (bytes + 8 + KERNEL_ALIGN - 1) // KERNEL_ALIGN
    cdef uint8_t *block = <uint8_t*>sqlite3_malloc64(KERNEL_ALIGN * (lines + 1) + 8)
    cdef uint8_t *array
    if block == NULL:
        return NULL
    array = <uint8_t*>((<uintptr_t>block + 8 + KERNEL_ALIGN - 1) & ~(<uintptr_t>KERNEL_ALIGN - 1))
    memcpy(array - 8, &block, sizeof(void*))
    sqlitebin_advise_huge_pages(array, bytes + 8)
    return array


cdef void kernel_free(void *array) noexcept nogil:
    cdef void *block
    if array == NULL:
        return
    memcpy(&block, <uint8_t*>array - 8, sizeof(void*))
    sqlite3_free(block)


cdef int grow_kernel_array(void **array, int64_t old_bytes, int64_t new_bytes) noexcept nogil:
    """grow_array for an array from kernel_alloc: a new block, the old contents copied into it."""
    cdef uint8_t *grown = <uint8_t*>kernel_alloc(new_bytes)
    if grown == NULL:
        return 1
    if array[0] != NULL:
        memcpy(grown, array[0], old_bytes)
        kernel_free(array[0])
    memset(grown + old_bytes, 0, new_bytes + 8 - old_bytes)
    array[0] = grown
    return 0


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
    uint8_t *blocked       # the scan-ready copy of the codes (scan_kernels.h) for the nibble scan; made on first need


cdef inline int64_t chunk_used(const ChunkData *d, int64_t j) noexcept nogil:
    if d.chunk_used != NULL:
        return d.chunk_used[j]
    return d.chunk_start[j + 1] - d.chunk_start[j]


cdef void chunk_data_free(ChunkData *d) noexcept nogil:
    sqlite3_free(d.chunk_start)
    sqlite3_free(d.chunk_used)
    sqlite3_free(d.chunk_min)
    sqlite3_free(d.chunk_max)
    kernel_free(d.ids)
    kernel_free(d.codes)
    sqlite3_free(d.validity)
    kernel_free(d.blocked)
    memset(d, 0, sizeof(ChunkData))


# One query, prepared for the scan: its code, and in asymmetric mode its lookup tables.
ctypedef struct Query:
    int mode
    int dim
    int code_bytes
    uint8_t *code            # the query binarized with the thresholds (or the code given)
    float *exact_tables      # asymmetric: per code byte, 16 float sums for its high nibble, 16 for its low
    uint8_t *nibble_tables   # asymmetric fast scan; NULL without a nibble kernel
    double query_sum
    double approx_scale
    double approx_high
    # The kernels of this query, read once from the globals (a load elsewhere may replace them).
    sqlitebin_hamming_fn hamming
    sqlitebin_hamming_below_fn hamming_below
    sqlitebin_nibble_above_fn nibble_above
    sqlitebin_hamming_below_many_fn hamming_below_many
    sqlitebin_nibble_above_many_fn nibble_above_many
    sqlitebin_hamming_blocked_many_fn hamming_blocked_many


cdef void query_free(Query *q) noexcept nogil:
    sqlite3_free(q.code)
    kernel_free(q.exact_tables)
    kernel_free(q.nibble_tables)
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
    q.hamming = hamming_kernel
    q.hamming_below = hamming_below_kernel
    q.nibble_above = nibble_above_kernel
    q.hamming_below_many = hamming_below_many_kernel
    q.nibble_above_many = nibble_above_many_kernel
    q.hamming_blocked_many = hamming_blocked_many_kernel
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
    q.exact_tables = <float*>kernel_alloc(<int64_t>q.code_bytes * 32 * 4)
    if values == NULL or q.exact_tables == NULL:
        sqlite3_free(values)
        return SQLITE_NOMEM
    memcpy(values, floats, 4 * dim)
    build_exact_tables(values, dim, q.code_bytes, q.exact_tables)
    if q.nibble_above != NULL and 0 < q.code_bytes <= SQLITEBIN_NIBBLE_MAX_BYTES:
        q.nibble_tables = <uint8_t*>kernel_alloc(64 * q.code_bytes)
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
    scan.exact_tables = q.exact_tables
    scan.query_sum = q.query_sum
    scan.allowed = allowed
    scan.hamming = q.hamming
    scan.hamming_below = q.hamming_below
    scan.nibble_above = q.nibble_above
    scan.hamming_below_many = q.hamming_below_many
    scan.nibble_above_many = q.nibble_above_many
    scan.hamming_blocked_many = q.hamming_blocked_many
    scan.nibble_tables = q.nibble_tables
    scan.approx_scale = q.approx_scale
    scan.approx_high = q.approx_high
    scan.filter_first = allowed != NULL and allowed.count <= SPARSE_FILTER_IDS


cdef void build_exact_tables(const float *query, int dim, int code_bytes, float *tables) noexcept nogil:
    """tables[32 * j + 16 * half + n] = sum of the query values whose bits are set in nibble value n of
    code byte j (half 0: the high nibble, dimensions 8j .. 8j + 3; half 1: the low, 8j + 4 .. 8j + 7).
    4 KB for a 256-bit code: a table of 256 sums per byte (32 KB) made each code the nibble kernel
    emits cost about 1,000 cycles, its lookups missing a cache the scan keeps filling."""
    cdef int t, n, low_bit, dimension
    for t in range(2 * code_bytes):
        tables[16 * t] = 0
        for n in range(1, 16):
            low_bit = 0
            while not ((n >> low_bit) & 1):
                low_bit += 1
            dimension = 4 * t + (3 - low_bit)
            tables[16 * t + n] = tables[16 * t + (n & (n - 1))] + (query[dimension] if dimension < dim else 0)


cdef int build_nibble_tables(const float *query, int dim, int code_bytes, uint8_t *tables,
                             double *scale, double *high) noexcept nogil:
    """uint8 nibble tables for the fast scan (layout in scan_kernels.h) and their error bound.

    Table entry (j, nibble n) is the sum of the query values of the 4 dimensions
    that nibble covers with bits set in n; each table is shifted by its minimum
    and quantized to 0..SQLITEBIN_NIBBLE_LEVELS with one step for all tables. The sum of the exact entries is
    then at most scale * (sum of quantized entries) + high, where `high` adds the
    minimums and each table's largest rounding error (at most half a step)."""
    cdef int j, half, n, r, dimension, t
    cdef double values[256]  # 2 tables x 16 entries, then reused per byte
    cdef double step = 0, low, top, offset = 0, level, worst, rounding = 0
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
                worst = -1e300
                for n in range(16):
                    level = floor((values[n] - low) / step + 0.5) if step > 0 else 0
                    if level > SQLITEBIN_NIBBLE_LEVELS:
                        level = SQLITEBIN_NIBBLE_LEVELS
                    tables[64 * j + 32 * half + n] = <uint8_t>level
                    tables[64 * j + 32 * half + 16 + n] = <uint8_t>level
                    if values[n] - low - step * level > worst:
                        worst = values[n] - low - step * level
                rounding += worst
        if pass_number == 0:
            step = step / SQLITEBIN_NIBBLE_LEVELS
            for t in range(2 * code_bytes):
                offset += minimum[t]
    sqlite3_free(minimum)
    scale[0] = step
    # Rounding error: each table's largest (at most half a step, about 0.44 of one on average), which
    # bounds every code tighter than half a step per table; a little more for float rounding in the exact sums.
    high[0] = offset + rounding + 1e-4
    return SQLITE_OK


cdef int build_sextet_tables(const float *query, int dim, int code_bytes, uint8_t *tables,
                             double *scale, double *high) noexcept nogil:
    """uint8 tables for the batch scan on 6-bit groups (layout in scan_kernels.h) and their error bound, by
    build_nibble_tables' rule: entry (g, n) is the sum of the query values of the dimensions 6g .. 6g + 5
    whose bits are set in n (bit 5 the first), each table shifted by its minimum and quantized to
    0..SQLITEBIN_NIBBLE_LEVELS with one step for all; the exact sum is at most scale * (sum of quantized
    entries) + high, where `high` adds the minimums and each table's largest rounding error."""
    cdef int groups = 4 * ((code_bytes + 2) // 3), g, n, low_bit, dimension, pass_number
    cdef double values[64]
    cdef double step = 0, low, top, offset = 0, level, worst, rounding = 0
    for pass_number in range(2):
        for g in range(groups):
            values[0] = 0
            low = 0
            top = 0
            for n in range(1, 64):
                low_bit = 0
                while not ((n >> low_bit) & 1):
                    low_bit += 1
                dimension = 6 * g + 5 - low_bit
                values[n] = values[n & (n - 1)] + (query[dimension] if dimension < dim else 0)
                if values[n] < low:
                    low = values[n]
                if values[n] > top:
                    top = values[n]
            if pass_number == 0:
                offset += low
                if top - low > step:
                    step = top - low
                continue
            worst = -1e300
            for n in range(64):
                level = floor((values[n] - low) / step + 0.5) if step > 0 else 0
                if level > SQLITEBIN_NIBBLE_LEVELS:
                    level = SQLITEBIN_NIBBLE_LEVELS
                tables[64 * g + n] = <uint8_t>level
                if values[n] - low - step * level > worst:
                    worst = values[n] - low - step * level
            rounding += worst
        if pass_number == 0:
            step = step / SQLITEBIN_NIBBLE_LEVELS
    scale[0] = step
    high[0] = offset + rounding + 1e-4
    return SQLITE_OK


cdef inline size_t batch_table_bytes(const Query *q) noexcept nogil:
    """Bytes of one query's tables in a batch: 6-bit-group tables for the VBMI batch kernel, else nibble tables."""
    if q.nibble_above_many == sqlitebin_sextet_above_many_avx512vbmi:
        return sqlitebin_sextet_table_bytes(q.code_bytes)
    return 64 * <size_t>q.code_bytes


cdef int batch_tables_build(const Query *queries, ScanContext *scans, int64_t count, const uint8_t *floats,
                            uint8_t *tables) noexcept nogil:
    """The tables of a batch's queries side by side (batch_table_bytes each), for its asymmetric scan.
    `floats`: the count float32 queries (4 * dim bytes each, checked). With 6-bit-group tables each
    scan's bound (approx_scale, approx_high) is replaced by theirs."""
    cdef size_t size = batch_table_bytes(&queries[0])
    cdef int64_t j
    cdef int dim = queries[0].dim
    cdef float *values
    if size == 64 * <size_t>queries[0].code_bytes:
        for j in range(count):
            memcpy(tables + j * size, queries[j].nibble_tables, size)
        return SQLITE_OK
    values = <float*>sqlite3_malloc64(4 * dim + 4)
    if values == NULL:
        return SQLITE_NOMEM
    for j in range(count):
        memcpy(values, floats + j * 4 * dim, 4 * dim)
        build_sextet_tables(values, dim, queries[j].code_bytes, tables + j * size, &scans[j].approx_scale,
                            &scans[j].approx_high)
    sqlite3_free(values)
    return SQLITE_OK


cdef inline float byte_sum(const float *tables, int j, uint8_t byte) noexcept nogil:
    return tables[32 * j + (byte >> 4)] + tables[32 * j + 16 + (byte & 15)]


cdef inline float asymmetric_sum(const float *tables, const uint8_t *code, int code_bytes,
                                 int stride) noexcept nogil:
    """Sum of the query values at the code's set bits (tables from build_exact_tables), four
    bytes per step. Byte j of the code is at code[j * stride]: 1 for a row-major code, the block
    width for one in the scan-ready layout. The same additions in the same order
    either way, so every scan path gives the same float."""
    cdef float s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef int j = 0
    while j + 4 <= code_bytes:
        s0 += byte_sum(tables, j, code[j * stride])
        s1 += byte_sum(tables, j + 1, code[(j + 1) * stride])
        s2 += byte_sum(tables, j + 2, code[(j + 2) * stride])
        s3 += byte_sum(tables, j + 3, code[(j + 3) * stride])
        j += 4
    while j < code_bytes:
        s0 += byte_sum(tables, j, code[j * stride])
        j += 1
    return (s0 + s1) + (s2 + s3)


ctypedef struct ScanContext:
    int mode
    int code_bytes
    const uint8_t *query_code
    const float *exact_tables
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
    # The kernels of this query (Query.hamming...).
    sqlitebin_hamming_fn hamming
    sqlitebin_hamming_below_fn hamming_below
    sqlitebin_nibble_above_fn nibble_above
    sqlitebin_hamming_below_many_fn hamming_below_many
    sqlitebin_nibble_above_many_fn nibble_above_many
    sqlitebin_hamming_blocked_many_fn hamming_blocked_many
    # Asymmetric fast scan: the true sum of a code is at most
    # approx_scale * (its nibble sum) + approx_high, so a code whose best case
    # cannot enter the heap is skipped without computing its exact score.
    const uint8_t *nibble_tables
    const uint8_t *blocked   # the chunk codes in the scan-ready layout (scan_kernels.h), or NULL
    double approx_scale
    double approx_high
    int64_t scanned          # codes run through a kernel so far (kernel_block)


cdef enum:
    SCAN_BLOCK = 1024  # codes per kernel call; the threshold is refreshed from the heap between calls
    # The nibble bound is looser than an exact distance, so a stale threshold lets more codes through
    # to exact scoring: the asymmetric scan refreshes it more often.
    NIBBLE_SCAN_BLOCK = 256
    SPARSE_FILTER_IDS = 1024  # a prefilter of at most this many ids is checked before the score
    FIRST_SCAN_BLOCK = 16  # the first kernel call of a scan (kernel_block)


cdef inline int64_t kernel_block(ScanContext *scan, int64_t remaining, int64_t block) noexcept nogil:
    """How many codes the next kernel call covers, counted into scan.scanned: `block`, or fewer at the
    start of a scan. Until a heap has seen about a block of codes its threshold (the k-th best so far)
    lets most codes through, and every code a kernel emits is offered to the heap: a batch's first
    block of 1,024 codes offered 1,024 per query. The first calls cover 16, 16, 32, 64 ... codes, each
    as many as were scanned before it, so the threshold is refreshed as often as it improves."""
    cdef int64_t n = block
    if scan.scanned < block:
        n = scan.scanned if scan.scanned > FIRST_SCAN_BLOCK else FIRST_SCAN_BLOCK
    if remaining < n:
        n = remaining
    scan.scanned += n
    return n


cdef inline uint32_t hamming_threshold(const TopK *top) noexcept nogil:
    """The largest distance that can still enter the heap (ties may, by id)."""
    return 0xFFFFFFFF if top.size < top.k else <uint32_t>top.heap[0].key


cdef inline uint32_t nibble_threshold(const ScanContext *scan) noexcept nogil:
    """The smallest nibble sum whose best case can still enter the heap: a code
    can only if query_sum - 2 * (approx_scale * sum + approx_high) <= the worst
    key kept. Rounded down by one more step, so float rounding never drops one."""
    cdef double needed
    if scan.top.size < scan.top.k:
        return 0
    needed = (scan.query_sum - scan.top.heap[0].key) * 0.5 - scan.approx_high
    if scan.approx_scale <= 0:
        return 0 if needed <= 0 else SQLITEBIN_NO_CANDIDATE
    needed = floor(needed / scan.approx_scale) - 1
    if needed <= 0:
        return 0
    if needed >= 65536:
        return SQLITEBIN_NO_CANDIDATE
    return <uint32_t>needed


cdef inline bint scan_uses_nibbles(const ScanContext *scan, int64_t first_position) noexcept nogil:
    return (scan.mode == MODE_ASYMMETRIC and first_position >= 0 and scan.nibble_above != NULL
            and scan.blocked != NULL and scan.nibble_tables != NULL)


cdef int64_t score_nibble_emitted(ScanContext *scan, const uint8_t *ids_blob, int64_t start,
                                  int64_t first_position, const uint32_t *indices, int64_t m, uint32_t *survivors,
                                  double *keys) noexcept nogil:
    """The exact scores of the codes the nibble kernel emitted from the block at `start` (indices relative
    to it), from the scan-ready copy it has just read (in cache). Only codes that can still enter the heap
    are kept (in survivors and keys; `survivors` may be `indices`): most of those the loose nibble bound
    lets through are dropped here, before their ids and validity bits, far apart in memory, are read. Those
    of the survivors are requested now and read by offer_scored, after the next kernel call where it can
    wait that long, so the memory latency overlaps the scan. Returns how many survived."""
    cdef int64_t e, position, kept = 0
    cdef int code_bytes = scan.code_bytes
    cdef const uint8_t *transposed
    cdef double key
    cdef TopK *top = &scan.top
    for e in range(m):
        position = first_position + start + indices[e]
        transposed = (scan.blocked + (position // SQLITEBIN_NIBBLE_BLOCK) * code_bytes * SQLITEBIN_NIBBLE_BLOCK
                      + position % SQLITEBIN_NIBBLE_BLOCK)
        key = scan.query_sum - 2.0 * <double>asymmetric_sum(scan.exact_tables, transposed, code_bytes, SQLITEBIN_NIBBLE_BLOCK)
        if top.size == top.k and key > top.heap[0].key:
            continue
        survivors[kept] = indices[e]
        keys[kept] = key
        kept += 1
        __builtin_prefetch(ids_blob + 8 * (start + indices[e]))
        if scan.validity != NULL:
            __builtin_prefetch(scan.validity + (position >> 3))
    return kept


cdef void offer_scored(ScanContext *scan, const uint8_t *ids_blob, int64_t start, int64_t first_position,
                       bint skip_changed, const uint32_t *indices, const double *keys, int64_t m) noexcept nogil:
    """Offer codes of the block at `start` already scored (score_nibble_emitted) to the top-k: the key against
    the heap as it is now, then the validity, id and filter checks. Their Hamming distances are filled in
    after the scan (fill_distances)."""
    cdef int64_t e, i, id, position
    cdef TopK *top = &scan.top
    for e in range(m):
        if top.size == top.k and keys[e] > top.heap[0].key:
            continue
        i = start + indices[e]
        position = first_position + i
        if scan.validity != NULL and not ((scan.validity[position >> 3] << (position & 7)) & 0x80):
            continue
        memcpy(&id, ids_blob + 8 * i, 8)
        if scan.allowed != NULL and not filter_allows(scan.allowed, id):
            continue
        if skip_changed and id_in_sorted(scan.changed_ids, scan.changed_count, id):
            continue
        topk_offer(top, keys[e], id, position, 0)


cdef void offer_emitted(ScanContext *scan, const uint8_t *ids_blob, const uint8_t *codes, int64_t start,
                        int64_t first_position, bint skip_changed, const uint32_t *indices,
                        const uint32_t *distances, int64_t m) noexcept nogil:
    """Offer the codes a Hamming kernel emitted from the block at `start` (indices relative to it, with their
    distances), or in asymmetric mode without the nibble scan the codes at `indices` (NULL: the first m codes
    of the block), scored here, to the top-k: the key, then the validity, id and filter checks for those that
    would enter the heap."""
    cdef int64_t i, e, id, position = -1
    cdef uint32_t distance
    cdef int code_bytes = scan.code_bytes
    cdef double key
    cdef TopK *top = &scan.top
    cdef bint hamming = scan.mode == MODE_HAMMING
    for e in range(m):
        if hamming:
            i = start + indices[e]
            key = <double>distances[e]
        else:
            i = start + (indices[e] if indices != NULL else e)
            key = scan.query_sum - 2.0 * <double>asymmetric_sum(scan.exact_tables, codes + i * code_bytes, code_bytes, 1)
        if top.size == top.k and key > top.heap[0].key:
            continue
        # Only emitted codes that would enter the heap reach the slot and id checks.
        position = first_position + i if first_position >= 0 else -1
        if scan.validity != NULL and position >= 0 and not ((scan.validity[position >> 3] << (position & 7)) & 0x80):
            continue
        memcpy(&id, ids_blob + 8 * i, 8)
        if scan.allowed != NULL and not filter_allows(scan.allowed, id):
            continue
        if skip_changed and id_in_sorted(scan.changed_ids, scan.changed_count, id):
            continue
        # The Hamming distance reported beside an asymmetric score: for codes in the ChunkData it is
        # computed once the scan is over, for the hits kept only (fill_distances); at k = 100 about ten
        # times as many codes enter the heap during a scan as stay in it.
        if hamming:
            distance = distances[e]
        elif position >= 0:
            distance = 0
        else:
            distance = <uint32_t>scan.hamming(codes + i * code_bytes, scan.query_code, code_bytes)
        topk_offer(top, key, id, position, distance)


cdef void offer_allowed(ScanContext *scan, const uint8_t *ids_blob, const uint8_t *codes, int64_t start, int64_t n,
                        int64_t first_position, bint skip_changed) noexcept nogil:
    """A prefilter of a few ids (scan.filter_first): the ids of the block at `start` are checked first
    and only the allowed codes are scored, so a search restricted to a handful of rows (the keyword
    hits of a hybrid search) does not score every code before its heap fills."""
    cdef uint32_t indices[SCAN_BLOCK]
    cdef uint32_t distances[SCAN_BLOCK]
    cdef int64_t i, id, m = 0
    cdef int code_bytes = scan.code_bytes
    for i in range(n):
        memcpy(&id, ids_blob + 8 * (start + i), 8)
        if not filter_allows(scan.allowed, id):
            continue
        indices[m] = <uint32_t>i
        if scan.mode == MODE_HAMMING:
            distances[m] = <uint32_t>scan.hamming(codes + (start + i) * code_bytes, scan.query_code, code_bytes)
        m += 1
    if m > 0:
        offer_emitted(scan, ids_blob, codes, start, first_position, skip_changed, indices,
                      distances if scan.mode == MODE_HAMMING else NULL, m)


cdef void scan_codes_nibble(ScanContext *scan, const uint8_t *ids_blob, int64_t count, int64_t first_position,
                            bint skip_changed) noexcept nogil:
    """scan_codes for the asymmetric nibble scan: each kernel call's survivors are scored at once
    (score_nibble_emitted) and offered after the next call, when their ids have arrived."""
    cdef int64_t start = 0, n, m, pending = 0, pending_start = 0
    cdef uint32_t indices[NIBBLE_SCAN_BLOCK]
    cdef uint32_t survivors_a[NIBBLE_SCAN_BLOCK]
    cdef uint32_t survivors_b[NIBBLE_SCAN_BLOCK]
    cdef double keys_a[NIBBLE_SCAN_BLOCK]
    cdef double keys_b[NIBBLE_SCAN_BLOCK]
    cdef uint32_t *survivors = survivors_a
    cdef uint32_t *pending_survivors = survivors_b
    cdef double *keys = keys_a
    cdef double *pending_keys = keys_b
    cdef uint32_t *swap_survivors
    cdef double *swap_keys
    while start < count:
        n = kernel_block(scan, count - start, NIBBLE_SCAN_BLOCK)
        m = <int64_t>scan.nibble_above(scan.blocked, first_position + start, n, scan.code_bytes,
                                       scan.nibble_tables, nibble_threshold(scan), indices)
        m = score_nibble_emitted(scan, ids_blob, start, first_position, indices, m, survivors, keys)
        offer_scored(scan, ids_blob, pending_start, first_position, skip_changed, pending_survivors,
                     pending_keys, pending)
        swap_survivors = pending_survivors
        pending_survivors = survivors
        survivors = swap_survivors
        swap_keys = pending_keys
        pending_keys = keys
        keys = swap_keys
        pending = m
        pending_start = start
        start += n
    offer_scored(scan, ids_blob, pending_start, first_position, skip_changed, pending_survivors, pending_keys,
                 pending)


cdef void scan_codes(ScanContext *scan, const uint8_t *ids_blob, const uint8_t *codes, int64_t count,
                     int64_t first_position, bint skip_changed) noexcept nogil:
    """Offer `count` codes to the top-k. A kernel scores a block of codes and
    emits only those that can still enter the heap (at or below the k-th best
    distance, or with a nibble bound that could reach it); the exact score and
    the validity, id and filter checks are for those few. `first_position` is
    the position of these codes in the ChunkData (its validity bits, its
    scan-ready copy scan.blocked, and the rows' locations), or -1 for codes
    outside it (every one live, no scan-ready copy)."""
    cdef int64_t start = 0, n, m
    cdef int code_bytes = scan.code_bytes
    cdef uint32_t indices[SCAN_BLOCK]
    cdef uint32_t distances[SCAN_BLOCK]
    cdef bint hamming = scan.mode == MODE_HAMMING
    if not scan.filter_first and scan_uses_nibbles(scan, first_position):
        scan_codes_nibble(scan, ids_blob, count, first_position, skip_changed)
        return
    while start < count:
        if hamming and not scan.filter_first:
            n = kernel_block(scan, count - start, SCAN_BLOCK)
        else:
            n = count - start if count - start < SCAN_BLOCK else SCAN_BLOCK
        if scan.filter_first:
            offer_allowed(scan, ids_blob, codes, start, n, first_position, skip_changed)
        elif hamming:
            m = <int64_t>scan.hamming_below(codes + start * code_bytes, n, code_bytes, scan.query_code,
                                            hamming_threshold(&scan.top), indices, distances)
            offer_emitted(scan, ids_blob, codes, start, first_position, skip_changed, indices, distances, m)
        else:
            offer_emitted(scan, ids_blob, codes, start, first_position, skip_changed, NULL, NULL, n)
        start += n


# A batch of queries (the same mode, kernels and prefilter) scanned together: each block of codes is
# read from memory once and the batch kernels (scan_kernels.h, "many queries per pass") load each step of
# it into registers once for many queries, each at its own threshold, into its own heap.

ctypedef struct BatchBuffers:
    const uint8_t *query_codes    # query_count codes side by side
    const uint8_t *nibble_tables  # query_count x 64 * code_bytes, or NULL
    uint32_t *thresholds          # query_count
    uint32_t *indices             # query_count x SCAN_BLOCK
    uint32_t *distances           # query_count x SCAN_BLOCK
    double *keys                  # query_count x NIBBLE_SCAN_BLOCK: the nibble scan's exact scores
    size_t *counts                # query_count


cdef int batch_buffers_alloc(BatchBuffers *b, int64_t query_count) noexcept nogil:
    """The per-thread outputs (the query codes and tables are shared and set by the caller)."""
    b.thresholds = <uint32_t*>sqlite3_malloc64(4 * query_count + 8)
    b.indices = <uint32_t*>sqlite3_malloc64(4 * query_count * SCAN_BLOCK + 8)
    b.distances = <uint32_t*>sqlite3_malloc64(4 * query_count * SCAN_BLOCK + 8)
    b.keys = <double*>sqlite3_malloc64(8 * query_count * NIBBLE_SCAN_BLOCK + 8)
    b.counts = <size_t*>sqlite3_malloc64(sizeof(size_t) * query_count + 8)
    if b.thresholds == NULL or b.indices == NULL or b.distances == NULL or b.keys == NULL or b.counts == NULL:
        return SQLITE_NOMEM
    return SQLITE_OK


cdef void batch_buffers_free(BatchBuffers *b) noexcept nogil:
    sqlite3_free(b.thresholds)
    sqlite3_free(b.indices)
    sqlite3_free(b.distances)
    sqlite3_free(b.keys)
    sqlite3_free(b.counts)
    b.thresholds = NULL
    b.indices = NULL
    b.distances = NULL
    b.keys = NULL
    b.counts = NULL


cdef void scan_codes_many(ScanContext *scans, int64_t query_count, BatchBuffers *b, const uint8_t *ids_blob,
                          const uint8_t *codes, int64_t count, int64_t first_position, bint skip_changed) noexcept nogil:
    """scan_codes for every query of a batch, block by block."""
    cdef int64_t start = 0, n, q
    cdef ScanContext *first = &scans[0]
    cdef int code_bytes = first.code_bytes
    cdef bint hamming = first.mode == MODE_HAMMING
    cdef bint nibble = (scan_uses_nibbles(first, first_position) and b.nibble_tables != NULL
                        and first.nibble_above_many != NULL)
    while start < count:
        if hamming or nibble:
            n = kernel_block(first, count - start, NIBBLE_SCAN_BLOCK if nibble else SCAN_BLOCK)
        else:
            n = count - start if count - start < SCAN_BLOCK else SCAN_BLOCK
        if hamming:
            for q in range(query_count):
                b.thresholds[q] = hamming_threshold(&scans[q].top)
            if first.blocked != NULL and b.nibble_tables != NULL:  # AVX2: popcount tables on the scan-ready copy
                first.hamming_blocked_many(first.blocked, first_position + start, n, code_bytes, b.nibble_tables,
                                           query_count, b.thresholds, b.indices, b.distances, b.counts)
            else:
                first.hamming_below_many(codes + start * code_bytes, n, code_bytes, b.query_codes, query_count,
                                         b.thresholds, b.indices, b.distances, b.counts)
            for q in range(query_count):
                if b.counts[q] > 0:  # most blocks emit nothing for most queries
                    offer_emitted(&scans[q], ids_blob, codes, start, first_position, skip_changed,
                                  b.indices + q * n, b.distances + q * n, <int64_t>b.counts[q])
        elif nibble:
            for q in range(query_count):
                b.thresholds[q] = nibble_threshold(&scans[q])
            first.nibble_above_many(first.blocked, first_position + start, n, code_bytes, b.nibble_tables,
                                    query_count, b.thresholds, b.indices, b.counts)
            # Every query's survivors are scored (their ids requested) before any is offered: the other
            # queries' scoring covers the memory latency (score_nibble_emitted).
            for q in range(query_count):
                if b.counts[q] > 0:
                    b.counts[q] = <size_t>score_nibble_emitted(&scans[q], ids_blob, start, first_position,
                                                               b.indices + q * n, <int64_t>b.counts[q],
                                                               b.indices + q * n, b.keys + q * NIBBLE_SCAN_BLOCK)
            for q in range(query_count):
                if b.counts[q] > 0:
                    offer_scored(&scans[q], ids_blob, start, first_position, skip_changed, b.indices + q * n,
                                 b.keys + q * NIBBLE_SCAN_BLOCK, <int64_t>b.counts[q])
        else:
            for q in range(query_count):
                offer_emitted(&scans[q], ids_blob, codes, start, first_position, skip_changed, NULL, NULL, n)
        start += n
