# The id filter: the set of allowed rowids a prefilter hands to the scan, as a bitmap over
# [low, high] when dense enough, else a sorted array searched by bisection.

ctypedef struct IdFilter:
    # Allowed ids: a bitmap over [low, high] when dense enough, else the sorted array.
    const int64_t *sorted_ids
    int64_t *owned_ids   # an aligned copy of the array, when the BLOB was not 8-byte aligned
    int64_t count
    int64_t low
    int64_t high
    uint8_t *bitmap


cdef bint id_in_sorted(const int64_t *ids, int64_t count, int64_t id) noexcept nogil:
    cdef int64_t lo = 0, hi = count, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if ids[mid] < id:
            lo = mid + 1
        else:
            hi = mid
    return lo < count and ids[lo] == id


cdef inline bint filter_allows(const IdFilter *f, int64_t id) noexcept nogil:
    if f == NULL:
        return True
    if id < f.low or id > f.high:
        return False
    if f.bitmap != NULL:
        return (f.bitmap[(id - f.low) >> 3] >> ((id - f.low) & 7)) & 1
    return id_in_sorted(f.sorted_ids, f.count, id)


cdef int filter_build(IdFilter *f, const uint8_t *blob, int nbytes) noexcept nogil:
    """Build the filter from ascending ids (sorted by the caller)."""
    cdef int64_t i, offset
    cdef uint64_t span
    f.count = nbytes // 8
    f.sorted_ids = <const int64_t*>blob
    f.bitmap = NULL
    if f.count == 0:
        f.low = 1
        f.high = 0
        return SQLITE_OK
    memcpy(&f.low, blob, 8)
    memcpy(&f.high, blob + 8 * (f.count - 1), 8)
    # Unsigned, so ids far apart cannot overflow; a span of 2^64 wraps to 0 and gets no bitmap.
    span = <uint64_t>f.high - <uint64_t>f.low + 1
    # A bitmap costs span/8 bytes; use it when that is at most the size of the id list times 8.
    if span > 0 and span <= <uint64_t>(64 * f.count + 4096):
        f.bitmap = <uint8_t*>sqlite3_malloc64(span // 8 + 1)
        if f.bitmap == NULL:
            return SQLITE_NOMEM
        memset(f.bitmap, 0, span // 8 + 1)
        for i in range(f.count):
            memcpy(&offset, blob + 8 * i, 8)
            offset -= f.low
            f.bitmap[offset >> 3] |= <uint8_t>(1 << (offset & 7))
    elif (<size_t>blob) % 8 != 0:
        # The binary search reads the array in place, so it must be aligned.
        f.owned_ids = <int64_t*>sqlite3_malloc64(nbytes)
        if f.owned_ids == NULL:
            return SQLITE_NOMEM
        memcpy(f.owned_ids, blob, nbytes)
        f.sorted_ids = f.owned_ids
    return SQLITE_OK


cdef void filter_free(IdFilter *f) noexcept nogil:
    sqlite3_free(f.bitmap)
    sqlite3_free(f.owned_ids)


cdef int compare_int64(const void *a, const void *b) noexcept nogil:
    """qsort order for the prefilter's rowids."""
    cdef int64_t x = (<const int64_t*>a)[0]
    cdef int64_t y = (<const int64_t*>b)[0]
    return (x > y) - (x < y)
