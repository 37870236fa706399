# The code cache: the codes of a sqlitebin table kept in memory between searches, so a
# search reads no chunk BLOB, and one copy per process: connections to the same database
# file share it (memory databases: one per connection).
#
# A copy is valid while the table's `generation` in N_config is the value it was loaded (or
# last updated) at. A fresh random generation is written by the first write after a search,
# after xBegin and after a rollback, so a state that was cached never comes back under another
# state's generation; a copy can therefore be shared under (database, table, generation) with
# no other check, even one loaded inside a write transaction (its generation is invisible to
# others until the commit, and any later write moves it on). Writes update the copy in place
# (seen by the next search without a reload) only when this table holds it alone; it is taken
# out of the list first, so no other connection can pick it up meanwhile. Otherwise the writer
# lets go of it and reloads at its next search. Memory: 8 + code_bytes (+ 1/8) bytes per slot.
#
# The copy also keeps stored vectors for rescoring, a whole N_vectors row at a time, read the
# first time a search rescores one of its slots: a later candidate in that row costs no B-tree
# walk (reading one slot of a row means following its overflow pages, about 2 us a candidate).
# Rows are added by searches, concurrently, with an atomic compare-and-swap (the loser frees
# its copy); a queued vector write drops its row from the writer's own copy (pending_add). They
# stop being added when the copy holds SQLITEBIN_VECTOR_CACHE_MB (default 1024) MiB of them;
# 0 turns this off. Memory: up to vector_bytes per slot, once per process.
#
# Interface: cache_for_search, cache_before_write, cache_write_slot, cache_clear_slot,
# cache_stored_vector, cache_prefetch_vector, cache_forget_vector, cache_release; shared_cache_count and
# shared_cached_vector_bytes for sqlitebin_debug().

cdef extern from *:
    """
    #include <pthread.h>
    static pthread_mutex_t sqlitebin_shared_mutex = PTHREAD_MUTEX_INITIALIZER;
    static void *sqlitebin_shared_head = 0;
    #define sqlitebin_shared_lock() pthread_mutex_lock(&sqlitebin_shared_mutex)
    #define sqlitebin_shared_unlock() pthread_mutex_unlock(&sqlitebin_shared_mutex)
    static pthread_cond_t sqlitebin_shared_loaded = PTHREAD_COND_INITIALIZER;
    #define sqlitebin_shared_wait() pthread_cond_wait(&sqlitebin_shared_loaded, &sqlitebin_shared_mutex)
    #define sqlitebin_shared_wake() pthread_cond_broadcast(&sqlitebin_shared_loaded)
    static inline uint8_t *sqlitebin_row_get(uint8_t **slot) { return __atomic_load_n(slot, __ATOMIC_ACQUIRE); }
    static inline int sqlitebin_row_put(uint8_t **slot, uint8_t *row) {
        uint8_t *expected = 0;
        return __atomic_compare_exchange_n(slot, &expected, row, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    static inline int64_t sqlitebin_add64(int64_t *total, int64_t amount) {
        return __atomic_add_fetch(total, amount, __ATOMIC_RELAXED);
    }
    """
    void *sqlitebin_shared_head
    void sqlitebin_shared_lock() nogil
    void sqlitebin_shared_unlock() nogil
    void sqlitebin_shared_wait() nogil
    void sqlitebin_shared_wake() nogil
    uint8_t *sqlitebin_row_get(uint8_t **slot) nogil
    int sqlitebin_row_put(uint8_t **slot, uint8_t *row) nogil
    int64_t sqlitebin_add64(int64_t *total, int64_t amount) nogil
    void __builtin_prefetch(const void *address) nogil


cdef void codes_free(CodeCache *cache) noexcept nogil:
    cdef int64_t i
    chunk_data_free(&cache.data)
    for i in range(cache.vector_row_capacity):
        sqlite3_free(cache.vector_rows[i])
    sqlite3_free(cache.vector_rows)
    cache.vector_rows = NULL
    cache.vector_row_capacity = 0
    cache.vector_bytes_cached = 0
    cache.loaded = False
    cache.generation = 0
    cache.capacity_chunks = 0


cdef int cache_reserve(CodeCache *cache, VectorTable *t, int64_t chunks) noexcept nogil:
    """Room for `chunks` chunks, new space zeroed (zero codes transpose to zeros, so the
    transposed copy grows the same way)."""
    cdef ChunkData *d = &cache.data
    cdef int64_t old = cache.capacity_chunks, capacity, size = t.chunk_size
    if chunks <= old and d.chunk_start != NULL:  # an empty index still needs chunk_start[0]
        return SQLITE_OK
    capacity = chunks if chunks > 2 * old else 2 * old
    if (grow_array(<void**>&d.chunk_start, 8 * (old + 1), 8 * (capacity + 1))
            or grow_array(<void**>&d.chunk_used, 8 * old, 8 * capacity)
            or grow_array(<void**>&d.chunk_min, 8 * old, 8 * capacity)
            or grow_array(<void**>&d.chunk_max, 8 * old, 8 * capacity)
            or grow_kernel_array(<void**>&d.ids, 8 * size * old, 8 * size * capacity)
            or grow_kernel_array(<void**>&d.codes, size * t.code_bytes * old, size * t.code_bytes * capacity)
            or grow_array(<void**>&d.validity, size // 8 * old, size // 8 * capacity)
            or (d.blocked != NULL and grow_kernel_array(<void**>&d.blocked, size * t.code_bytes * old,
                                                        size * t.code_bytes * capacity))
            or (t.vector_bytes > 0 and grow_array(<void**>&cache.vector_rows, 8 * cache.vector_row_capacity,
                                                  8 * vector_rows_for(t, capacity * size)))):
        return SQLITE_NOMEM
    if t.vector_bytes > 0:
        cache.vector_row_capacity = vector_rows_for(t, capacity * size)
    d.code_bytes = t.code_bytes
    cache.capacity_chunks = capacity
    return SQLITE_OK


cdef int64_t vector_rows_for(VectorTable *t, int64_t slots) noexcept nogil:
    return (slots + t.vectors_per_row - 1) // t.vectors_per_row


cdef int grow_array(void **array, int64_t old_bytes, int64_t new_bytes) noexcept nogil:
    """Resize to new_bytes, zeroing what is new; non-zero on failure (the array is kept). Transparent huge
    pages are asked for before the new part is first written (the zeroing): a page touched before the
    advice stays 4 KB. The arrays the scan streams through use grow_kernel_array."""
    cdef void *grown = sqlite3_realloc64(array[0], new_bytes + 8)
    if grown == NULL:
        return 1
    sqlitebin_advise_huge_pages(grown, new_bytes + 8)
    memset(<uint8_t*>grown + old_bytes, 0, new_bytes + 8 - old_bytes)
    array[0] = grown
    return 0


cdef void cache_set_extent(CodeCache *cache, VectorTable *t, int64_t chunks) noexcept nogil:
    """Chunk offsets, used slots and id bounds after a load."""
    cdef ChunkData *d = &cache.data
    cdef int64_t j, p, end
    d.chunk_count = chunks
    for j in range(chunks + 1):
        d.chunk_start[j] = j * t.chunk_size
    for j in range(chunks):
        end = t.next_location - j * t.chunk_size
        d.chunk_used[j] = t.chunk_size if end > t.chunk_size else end
        d.chunk_min[j] = INT64_MAX
        d.chunk_max[j] = INT64_MIN
        for p in range(j * t.chunk_size, j * t.chunk_size + d.chunk_used[j]):
            if (d.validity[p >> 3] << (p & 7)) & 0x80:
                if d.ids[p] < d.chunk_min[j]:
                    d.chunk_min[j] = d.ids[p]
                if d.ids[p] > d.chunk_max[j]:
                    d.chunk_max[j] = d.ids[p]


cdef int codes_transpose(CodeCache *cache, VectorTable *t) noexcept nogil:
    """The nibble scan's scan-ready copy (blocks of SQLITEBIN_NIBBLE_BLOCK codes, scan_kernels.h),
    made before the copy is shared: the scan never writes shared memory, and a search that finds
    no scan-ready copy (the kernels chosen at load had no nibble scan) scores every code exactly.
    Chunks hold a multiple of 64 slots, so every chunk starts a block and growing the copy
    appends whole blocks."""
    cdef ChunkData *d = &cache.data
    cdef int64_t size = cache.capacity_chunks * t.chunk_size * t.code_bytes
    if (nibble_above_kernel == NULL or t.code_bytes == 0 or t.code_bytes > SQLITEBIN_NIBBLE_MAX_BYTES
            or d.blocked != NULL):
        return SQLITE_OK
    d.blocked = <uint8_t*>kernel_alloc(size)
    if d.blocked == NULL:
        return SQLITE_NOMEM
    memset(d.blocked, 0, size + 8)
    sqlitebin_transpose_blocks(d.codes, d.chunk_start[d.chunk_count], t.code_bytes, d.blocked)
    return SQLITE_OK


# ---------------------------------------------------------------------------
# The process-wide list (under sqlitebin_shared_lock)

cdef void shared_unlink(SharedCodes *entry) noexcept nogil:
    cdef SharedCodes **link = <SharedCodes**>&sqlitebin_shared_head
    while link[0] != NULL:
        if link[0] == entry:
            link[0] = entry.next
            break
        link = &link[0].next
    entry.next = NULL
    entry.linked = False


cdef void shared_free(SharedCodes *entry) noexcept nogil:
    codes_free(&entry.codes)
    sqlite3_free(entry.key)
    sqlite3_free(entry)


cdef void shared_link(SharedCodes *entry) noexcept nogil:
    """Make `entry` findable; drop unused copies of the same table (older generations)."""
    global sqlitebin_shared_head
    cdef SharedCodes *other = <SharedCodes*>sqlitebin_shared_head
    cdef SharedCodes *next
    while other != NULL:
        next = other.next
        if other != entry and other.references == 0 and strcmp(other.key, entry.key) == 0:
            shared_unlink(other)
            shared_free(other)
        other = next
    if not entry.linked:
        entry.next = <SharedCodes*>sqlitebin_shared_head
        sqlitebin_shared_head = entry
        entry.linked = True


cdef SharedCodes *shared_find(const char *key, int64_t generation) noexcept nogil:
    cdef SharedCodes *entry = <SharedCodes*>sqlitebin_shared_head
    while entry != NULL:
        if entry.codes.generation == generation and strcmp(entry.key, key) == 0:
            entry.references += 1
            return entry
        entry = entry.next
    return NULL


cdef int shared_cache_count() noexcept nogil:
    cdef int count = 0
    cdef SharedCodes *entry
    sqlitebin_shared_lock()
    entry = <SharedCodes*>sqlitebin_shared_head
    while entry != NULL:
        count += 1
        entry = entry.next
    sqlitebin_shared_unlock()
    return count


cdef int64_t shared_cached_vector_bytes() noexcept nogil:
    """Stored vectors held by every listed copy, for sqlitebin_debug()."""
    cdef int64_t total = 0
    cdef SharedCodes *entry
    sqlitebin_shared_lock()
    entry = <SharedCodes*>sqlitebin_shared_head
    while entry != NULL:
        total += sqlitebin_add64(&entry.codes.vector_bytes_cached, 0)
        entry = entry.next
    sqlitebin_shared_unlock()
    return total


cdef char *shared_key(VectorTable *t) noexcept nogil:
    cdef const char *file = sqlite3_db_filename(t.db, t.schema)
    if file == NULL or file[0] == 0:
        return sqlite3_mprintf("memory:%p\x1f%s\x1f%s", t.db, t.schema, t.name)
    return sqlite3_mprintf("file:%s\x1f%s", file, t.name)


# ---------------------------------------------------------------------------
# The interface

cdef void cache_release(VectorTable *t) noexcept nogil:
    """Let go of the table's copy; free it when nobody holds it and it cannot be found again
    usefully (a memory database's, or one unlisted)."""
    cdef SharedCodes *entry = t.shared
    if entry == NULL:
        return
    t.shared = NULL
    sqlitebin_shared_lock()
    entry.references -= 1
    if entry.references == 0 and entry.linked and strncmp(entry.key, "memory:", 7) == 0:
        shared_unlink(entry)
    if entry.references == 0 and not entry.linked:
        shared_free(entry)
    sqlitebin_shared_unlock()


cdef SharedCodes *shared_find_loaded(const char *key, int64_t generation) noexcept nogil:
    """(Under the lock.) The listed copy for `generation`, waiting while another table reads it
    from disk; NULL when there is none, or when that read failed (the caller reads it itself)."""
    cdef SharedCodes *entry = shared_find(key, generation)
    while entry != NULL and entry.loading:
        sqlitebin_shared_wait()  # the reference shared_find took keeps the entry alive
    if entry != NULL and not entry.codes.loaded:  # unlisted by its loader
        entry.references -= 1
        if entry.references == 0:
            shared_free(entry)
        return NULL
    return entry


cdef int cache_load(VectorTable *t, int64_t generation) noexcept nogil:
    """Find the copy for `generation` in the list, or read it from disk and list it. The copy
    is listed as loading first, so connections that search the same state at the same time
    wait for one read instead of each reading (and holding) a copy of their own."""
    cdef char *key = shared_key(t)
    cdef SharedCodes *entry
    cdef int rc
    if key == NULL:
        return SQLITE_NOMEM
    sqlitebin_shared_lock()
    entry = shared_find_loaded(key, generation)
    if entry != NULL:
        sqlitebin_shared_unlock()
        sqlite3_free(key)
        t.shared = entry
        return SQLITE_OK
    entry = <SharedCodes*>sqlite3_malloc64(sizeof(SharedCodes))
    if entry != NULL:
        memset(entry, 0, sizeof(SharedCodes))
        entry.key = key
        entry.references = 1
        entry.loading = True
        entry.codes.generation = generation
        shared_link(entry)
    sqlitebin_shared_unlock()
    if entry == NULL:
        sqlite3_free(key)
        return SQLITE_NOMEM
    rc = vector_cache_budget(t, &entry.codes.vector_budget)
    if rc == SQLITE_OK:
        rc = storage_load_chunks(t, &entry.codes)
    if rc == SQLITE_OK:
        rc = codes_transpose(&entry.codes, t)
    sqlitebin_shared_lock()
    entry.loading = False
    entry.codes.loaded = rc == SQLITE_OK
    if rc != SQLITE_OK:
        shared_unlink(entry)
        entry.references -= 1
        if entry.references == 0:
            shared_free(entry)
        entry = NULL
    sqlitebin_shared_wake()
    sqlitebin_shared_unlock()
    t.shared = entry
    return rc


cdef int cache_for_search(VectorTable *t, ChunkData **data) noexcept nogil:
    """The codes of every row as they stand now (flushing queued writes first)."""
    cdef int64_t generation = 0
    cdef int rc = storage_current(t, &generation)
    if rc != SQLITE_OK:
        return rc
    if t.shared != NULL and t.shared.codes.generation == generation:
        if not t.shared.linked:
            sqlitebin_shared_lock()
            shared_link(t.shared)  # changed in place by this table's writes: shareable again
            sqlitebin_shared_unlock()
    else:
        cache_release(t)
        rc = cache_load(t, generation)
        if rc != SQLITE_OK:
            return rc
    t.need_new_generation = True
    data[0] = &t.shared.codes.data
    return SQLITE_OK


cdef int cache_before_write(VectorTable *t) noexcept nogil:
    """Called before every write: when a search, xBegin or a rollback came since the last
    write, write a fresh generation. The table's copy follows it only if it was current and
    nobody else holds it; it is unlisted first."""
    cdef int64_t stored = 0, fresh
    cdef bint keep = False
    cdef int rc
    if not t.need_new_generation:
        return SQLITE_OK
    rc = config_get_int(t, "generation", &stored)
    if rc == SQLITE_OK and stored != t.state_generation:
        t.state_loaded = False  # another connection wrote since: read next_location etc. again
        rc = storage_load_state(t)
    if rc != SQLITE_OK:
        return rc
    fresh = random_int64()
    rc = config_set_int(t, "generation", fresh)
    if rc != SQLITE_OK:
        return rc
    t.state_generation = fresh
    if t.shared != NULL and t.shared.codes.generation == stored:
        sqlitebin_shared_lock()
        keep = t.shared.references == 1
        if keep and t.shared.linked:
            shared_unlink(t.shared)
        sqlitebin_shared_unlock()
    if keep:
        t.shared.codes.generation = fresh
    else:
        cache_release(t)
    t.need_new_generation = False
    return SQLITE_OK


cdef int cache_write_slot(VectorTable *t, int64_t location, int64_t rowid, const uint8_t *code) noexcept nogil:
    """Mirror a slot write (code NULL: only the rowid changes) into the table's own copy."""
    cdef CodeCache *cache
    cdef ChunkData *d
    cdef int64_t chunk = location // t.chunk_size, j, lane
    cdef uint8_t *block
    if t.shared == NULL:
        return SQLITE_OK
    cache = &t.shared.codes
    d = &cache.data
    if cache_reserve(cache, t, chunk + 1) != SQLITE_OK:
        cache_release(t)
        return SQLITE_OK  # the next search reloads
    while d.chunk_count <= chunk:
        d.chunk_used[d.chunk_count] = 0
        d.chunk_min[d.chunk_count] = INT64_MAX
        d.chunk_max[d.chunk_count] = INT64_MIN
        d.chunk_count += 1
        d.chunk_start[d.chunk_count] = d.chunk_count * t.chunk_size
    if location - chunk * t.chunk_size >= d.chunk_used[chunk]:
        d.chunk_used[chunk] = location - chunk * t.chunk_size + 1
    if rowid < d.chunk_min[chunk]:
        d.chunk_min[chunk] = rowid
    if rowid > d.chunk_max[chunk]:
        d.chunk_max[chunk] = rowid
    d.ids[location] = rowid
    d.validity[location >> 3] |= <uint8_t>(0x80 >> (location & 7))
    if code != NULL:
        memcpy(d.codes + location * t.code_bytes, code, t.code_bytes)
        if d.blocked != NULL:
            block = d.blocked + (location // SQLITEBIN_NIBBLE_BLOCK) * SQLITEBIN_NIBBLE_BLOCK * t.code_bytes
            lane = location % SQLITEBIN_NIBBLE_BLOCK
            for j in range(t.code_bytes):
                block[j * SQLITEBIN_NIBBLE_BLOCK + lane] = code[j]
    return SQLITE_OK


cdef void cache_clear_slot(VectorTable *t, int64_t location) noexcept nogil:
    if t.shared != NULL and location // t.chunk_size < t.shared.codes.data.chunk_count:
        t.shared.codes.data.validity[location >> 3] &= <uint8_t>~(0x80 >> (location & 7))


cdef int vector_cache_budget(VectorTable *t, int64_t *budget) noexcept nogil:
    """SQLITEBIN_VECTOR_CACHE_MB in bytes (default 1024 MiB); a value that is not a whole number
    of MiB fails the search with one sentence."""
    cdef const char *setting = getenv("SQLITEBIN_VECTOR_CACHE_MB")
    cdef int64_t megabytes = 0
    cdef int i = 0
    budget[0] = <int64_t>1024 * 1024 * 1024
    if setting == NULL:
        return SQLITE_OK
    while setting[i] >= 48 and setting[i] <= 57 and i < 12:  # '0'..'9'
        megabytes = megabytes * 10 + (setting[i] - 48)
        i += 1
    if i == 0 or setting[i] != 0:
        return table_fail(t, sqlite3_mprintf(
            "sqlitebin: SQLITEBIN_VECTOR_CACHE_MB must be a whole number of MiB (0 turns the vector cache off), "
            "not '%s'", setting))
    budget[0] = megabytes * 1024 * 1024
    return SQLITE_OK


cdef int cache_stored_vector(VectorTable *t, VectorReader *reader, int64_t location, uint8_t *buffer,
                             const uint8_t **vector) noexcept nogil:
    """Point `vector` at the stored rescoring vector of `location`: in the cached copy of its
    N_vectors row (read whole and kept when the budget allows), else read into `buffer`."""
    cdef CodeCache *cache = &t.shared.codes if t.shared != NULL else NULL
    cdef int64_t row = location // t.vectors_per_row, row_bytes = t.vectors_per_row * t.vector_bytes
    cdef uint8_t *data = NULL
    cdef uint8_t *fresh
    cdef int rc
    if cache != NULL and row < cache.vector_row_capacity:
        data = sqlitebin_row_get(&cache.vector_rows[row])
        if data == NULL and sqlitebin_add64(&cache.vector_bytes_cached, 0) + row_bytes <= cache.vector_budget:
            fresh = <uint8_t*>sqlite3_malloc64(row_bytes)
            if fresh == NULL:
                return SQLITE_NOMEM
            rc = blob_at(t, &reader.blob, &reader.row, "vectors", "vectors", row, 0)
            if rc == SQLITE_OK:
                rc = sqlite3_blob_read(reader.blob, fresh, <int>row_bytes, 0)
            if rc != SQLITE_OK:
                sqlite3_free(fresh)
                return table_sqlite_fail(t, rc)
            if sqlitebin_row_put(&cache.vector_rows[row], fresh):
                sqlitebin_add64(&cache.vector_bytes_cached, row_bytes)
                data = fresh
            else:  # another search kept the same row first
                sqlite3_free(fresh)
                data = sqlitebin_row_get(&cache.vector_rows[row])
    if data != NULL:
        vector[0] = data + (location % t.vectors_per_row) * t.vector_bytes
        return SQLITE_OK
    vector[0] = buffer
    return read_stored_vector(t, reader, location, buffer)


cdef void cache_forget_vector(VectorTable *t, int64_t location) noexcept nogil:
    """A vector write is queued for `location`: drop its row from the table's own copy (a
    writer holds its copy alone, cache_before_write), so the next search reads it again."""
    cdef CodeCache *cache
    cdef int64_t row = location // t.vectors_per_row
    if t.shared == NULL:
        return
    cache = &t.shared.codes
    if row < cache.vector_row_capacity and cache.vector_rows[row] != NULL:
        sqlite3_free(cache.vector_rows[row])
        cache.vector_rows[row] = NULL
        sqlitebin_add64(&cache.vector_bytes_cached, -(t.vectors_per_row * t.vector_bytes))


cdef void cache_prefetch_vector(VectorTable *t, int64_t location) noexcept nogil:
    """Ask the CPU for a cached stored vector ahead of its use (rescoring reads candidates in
    location order, so each lands in a different row: a cache miss each without this)."""
    cdef CodeCache *cache = &t.shared.codes if t.shared != NULL else NULL
    cdef int64_t row = location // t.vectors_per_row, offset
    cdef const uint8_t *data
    if cache == NULL or row >= cache.vector_row_capacity:
        return
    data = sqlitebin_row_get(&cache.vector_rows[row])
    if data == NULL:
        return
    data += (location % t.vectors_per_row) * t.vector_bytes
    offset = 0
    while offset < t.vector_bytes:
        __builtin_prefetch(data + offset)
        offset += 64
