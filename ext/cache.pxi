# The code cache: the codes of a sqlitebin table kept in memory between searches, so a
# search reads no chunk BLOB. It is valid while the table's `generation` in N_config is
# the value it was loaded (or last updated) at. A fresh random generation is written by
# the first write after a search, after xBegin and after a rollback, so a state that was
# cached never comes back under another state's generation. Writes on this connection
# update the cache in place (they are seen by the next search without a reload); a
# rollback drops it. Memory: 8 + code_bytes (+ 1/8) bytes per slot, per connection.
#
# Interface: cache_for_search, cache_before_write, cache_write_slot, cache_clear_slot,
# cache_drop.


cdef void cache_drop(CodeCache *cache) noexcept nogil:
    chunk_data_free(&cache.data)
    cache.loaded = False
    cache.generation = 0
    cache.capacity_chunks = 0


cdef int cache_reserve(CodeCache *cache, VectorTable *t, int64_t chunks) noexcept nogil:
    """Room for `chunks` chunks, new space zeroed; the transposed copy is dropped when it grows."""
    cdef ChunkData *d = &cache.data
    cdef int64_t old = cache.capacity_chunks, capacity, size = t.chunk_size
    if chunks <= old:
        return SQLITE_OK
    capacity = chunks if chunks > 2 * old else 2 * old
    if (grow_array(<void**>&d.chunk_start, 8 * (old + 1), 8 * (capacity + 1))
            or grow_array(<void**>&d.chunk_used, 8 * old, 8 * capacity)
            or grow_array(<void**>&d.chunk_min, 8 * old, 8 * capacity)
            or grow_array(<void**>&d.chunk_max, 8 * old, 8 * capacity)
            or grow_array(<void**>&d.ids, 8 * size * old, 8 * size * capacity)
            or grow_array(<void**>&d.codes, size * t.code_bytes * old, size * t.code_bytes * capacity)
            or grow_array(<void**>&d.validity, size // 8 * old, size // 8 * capacity)):
        return SQLITE_NOMEM
    sqlite3_free(d.blocked)
    d.blocked = NULL
    d.code_bytes = t.code_bytes
    cache.capacity_chunks = capacity
    return SQLITE_OK


cdef int grow_array(void **array, int64_t old_bytes, int64_t new_bytes) noexcept nogil:
    """Resize to new_bytes, zeroing what is new; non-zero on failure (the array is kept)."""
    cdef void *grown = sqlite3_realloc64(array[0], new_bytes + 8)
    if grown == NULL:
        return 1
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


cdef int cache_write_slot(VectorTable *t, int64_t location, int64_t rowid, const uint8_t *code) noexcept nogil:
    """Mirror a slot write (code NULL: only the rowid changes) into a loaded cache."""
    cdef CodeCache *cache = &t.cache
    cdef ChunkData *d = &cache.data
    cdef int64_t chunk = location // t.chunk_size, j, lane
    cdef uint8_t *block
    if not cache.loaded:
        return SQLITE_OK
    if cache_reserve(cache, t, chunk + 1) != SQLITE_OK:
        cache_drop(cache)
        return SQLITE_OK  # the next search reloads
    while d.chunk_count <= chunk:
        d.chunk_used[d.chunk_count] = 0
        d.chunk_min[d.chunk_count] = INT64_MAX
        d.chunk_max[d.chunk_count] = INT64_MIN
        d.chunk_count += 1
        d.chunk_start[d.chunk_count] = d.chunk_count * t.chunk_size
        sqlite3_free(d.blocked)
        d.blocked = NULL
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
            block = d.blocked + (location // 32) * 32 * t.code_bytes
            lane = location % 32
            for j in range(t.code_bytes):
                block[j * 32 + lane] = code[j]
    return SQLITE_OK


cdef void cache_clear_slot(VectorTable *t, int64_t location) noexcept nogil:
    if t.cache.loaded and location // t.chunk_size < t.cache.data.chunk_count:
        t.cache.data.validity[location >> 3] &= <uint8_t>~(0x80 >> (location & 7))


cdef int cache_before_write(VectorTable *t) noexcept nogil:
    """Called before every write: when a search, xBegin or a rollback came since the last
    write, write a fresh generation; the cache follows it only if it was current."""
    cdef int64_t stored = 0, fresh
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
    if t.cache.loaded and t.cache.generation == stored:
        t.cache.generation = fresh
    else:
        cache_drop(&t.cache)
    t.need_new_generation = False
    return SQLITE_OK


cdef int cache_for_search(VectorTable *t, ChunkData **data) noexcept nogil:
    """The codes of every row as they stand now (flushing queued writes first)."""
    cdef int64_t generation = 0
    cdef int rc = storage_current(t, &generation)
    if rc != SQLITE_OK:
        return rc
    if not (t.cache.loaded and t.cache.generation == generation):
        cache_drop(&t.cache)
        rc = storage_load_chunks(t, &t.cache)
        if rc != SQLITE_OK:
            cache_drop(&t.cache)
            return rc
        t.cache.loaded = True
        t.cache.generation = generation
    t.need_new_generation = True
    data[0] = &t.cache.data
    return SQLITE_OK
