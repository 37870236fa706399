# The top-k heap: a bounded max-heap of hits ordered by (key, rowid), so ties go to the
# smaller rowid and results never depend on scan order.

ctypedef struct Hit:
    double key          # what is minimised: Hamming distance, or minus the asymmetric score
    int64_t id
    int64_t location    # where the row's code lives (chunk_id * chunk_size + slot), for rescoring; -1 outside chunks
    uint32_t distance   # Hamming distance to the binarized query, taken from the code as it is scanned


cdef inline bint hit_worse(Hit a, Hit b) noexcept nogil:
    return a.key > b.key or (a.key == b.key and a.id > b.id)


cdef void heap_sift_down(Hit *heap, int64_t size, int64_t i) noexcept nogil:
    """Max-heap on (key, id): the root is the worst hit kept so far."""
    cdef int64_t child
    cdef Hit item = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and hit_worse(heap[child + 1], heap[child]):
            child += 1
        if not hit_worse(heap[child], item):
            break
        heap[i] = heap[child]
        i = child
    heap[i] = item


cdef void heap_sift_up(Hit *heap, int64_t i) noexcept nogil:
    cdef int64_t parent
    cdef Hit item = heap[i]
    while i > 0:
        parent = (i - 1) // 2
        if not hit_worse(item, heap[parent]):
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = item


ctypedef struct TopK:
    Hit *heap
    int64_t size
    int64_t k


cdef inline void topk_offer(TopK *top, double key, int64_t id, int64_t location, uint32_t distance) noexcept nogil:
    cdef Hit hit
    hit.key = key
    hit.id = id
    hit.location = location
    hit.distance = distance
    if top.size < top.k:
        top.heap[top.size] = hit
        top.size += 1
        heap_sift_up(top.heap, top.size - 1)
    elif hit_worse(top.heap[0], hit):
        top.heap[0] = hit
        heap_sift_down(top.heap, top.size, 0)


cdef void topk_sort(TopK *top) noexcept nogil:
    """Turn the heap into the hits best first, in place: pop the worst to the back."""
    cdef int64_t n = top.size
    cdef Hit hit
    while n > 0:
        hit = top.heap[0]
        top.heap[0] = top.heap[n - 1]
        top.heap[n - 1] = hit
        n -= 1
        heap_sift_down(top.heap, n, 0)
