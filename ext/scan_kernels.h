/*
 * The scan's fused kernels: each scores a block of codes and emits only the
 * codes that can still enter the top k, so the per-code work outside the
 * kernel (id checks, the heap) touches only those few.
 *
 * - Hamming: `sqlitebin_hamming_below_*` computes the distance from the query
 *   to `count` consecutive codes and writes (index, distance) of each code at
 *   or below `threshold` (the k-th best distance so far; UINT32_MAX while the
 *   heap fills). The caller refreshes the threshold from its heap between blocks.
 * - Asymmetric: `sqlitebin_nibble_above_*` sums per-query uint8 nibble tables
 *   over codes in the scan-ready layout (below) and writes the index of each
 *   code whose sum is at or above `threshold`: the codes whose best case could
 *   still enter the heap. No per-query buffer of all sums is ever written.
 *
 * The scan-ready layout for the nibble scan: blocks of 64 codes; in block b,
 * byte j of code 64b + i is at blocked[(b * code_bytes + j) * 64 + i], so one
 * 64-byte load (or two 32-byte loads) holds byte j of 64 codes. The last block
 * is zero-padded. `sqlitebin_transpose_blocks` builds it from row-major codes
 * with 16x16 byte-tile transposes (SSE2, part of every x86-64 CPU).
 *
 * Nibble tables: for each code byte j, 64 bytes: the 16-entry table of the
 * high nibble written twice (one per 128-bit lane of an AVX2 register), then
 * the low nibble's, written twice. Entries are at most SQLITEBIN_NIBBLE_LEVELS
 * (63), so two code bytes' four entries add in 8 bits, and a code's sum, at
 * most 2 * 512 * 63, fits in 16 bits for code_bytes <= SQLITEBIN_NIBBLE_MAX_BYTES.
 *
 * Every kernel reads codes through unaligned loads (BLOB data has no alignment
 * guarantee) and never reads past codes + count * code_bytes.
 */
#ifndef SQLITEBIN_SCAN_KERNELS_H
#define SQLITEBIN_SCAN_KERNELS_H

#include "kernels.h"

#define SQLITEBIN_NIBBLE_BLOCK 64      /* codes per block of the scan-ready layout */
#define SQLITEBIN_NIBBLE_MAX_BYTES 512 /* longest code the 16-bit nibble sums can hold (2 * 512 * 63 < 2^16) */
#define SQLITEBIN_NIBBLE_LEVELS 63     /* largest table entry: a pair of bytes' four entries fit in one byte */
#define SQLITEBIN_NO_CANDIDATE 0x10000u /* a nibble threshold no 16-bit sum reaches */
#define SQLITEBIN_PREFETCH_BYTES 8192  /* how far ahead the streaming kernels request codes (2 KB was 1.2-1.3x slower on 1M codes) */

/* Request the lines of `bytes` bytes of codes SQLITEBIN_PREFETCH_BYTES ahead of `c` (a prefetch never faults,
 * even past the end). The AVX-512 scan of codes of other lengths than 256 bits calls it per step of eight codes:
 * without it a 1M x 1024-bit scan took 17 ms against 7 (the one-code-at-a-time POPCNT and AVX2 loops keep the
 * hardware prefetcher on its own: prefetching there made them 5% slower). */
static inline void sqlitebin_prefetch_ahead(const uint8_t *c, size_t bytes) {
    for (size_t line = 0; line < bytes; line += 64)
        __builtin_prefetch(c + SQLITEBIN_PREFETCH_BYTES + line);
}

typedef size_t (*sqlitebin_hamming_below_fn)(const uint8_t *codes, size_t count, size_t code_bytes,
                                             const uint8_t *query, uint32_t threshold,
                                             uint32_t *out_index, uint32_t *out_distance);
/* Codes [first, first + count) of the scan-ready layout; indices written are relative to `first`. */
typedef size_t (*sqlitebin_nibble_above_fn)(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                            const uint8_t *tables, uint32_t threshold, uint32_t *out_index);

/* Several queries over one block of codes (batch search); outputs as documented at sqlitebin_hamming_below_many. */
typedef size_t (*sqlitebin_hamming_below_many_fn)(const uint8_t *codes, size_t count, size_t code_bytes,
                                                  const uint8_t *queries, size_t query_count,
                                                  const uint32_t *thresholds, uint32_t *out_index,
                                                  uint32_t *out_distance, size_t *out_count);
/* Hamming for several queries on the scan-ready layout (AVX2 batches; tables from sqlitebin_hamming_nibble_tables). */
typedef size_t (*sqlitebin_hamming_blocked_many_fn)(const uint8_t *blocked, size_t first, size_t count,
                                                    size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                    const uint32_t *thresholds, uint32_t *out_index,
                                                    uint32_t *out_distance, size_t *out_count);
typedef size_t (*sqlitebin_nibble_above_many_fn)(const uint8_t *blocked, size_t first, size_t count,
                                                 size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                 const uint32_t *thresholds, uint32_t *out_index, size_t *out_count);

/* ---- Hamming, portable --------------------------------------------------- */

static size_t sqlitebin_hamming_below_portable(const uint8_t *codes, size_t count, size_t code_bytes,
                                               const uint8_t *query, uint32_t threshold,
                                               uint32_t *out_index, uint32_t *out_distance) {
    size_t m = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t d = (uint32_t)sqlitebin_hamming_portable(codes + i * code_bytes, query, code_bytes);
        /* Written unconditionally, kept only when below: no branch to mispredict. */
        out_index[m] = (uint32_t)i;
        out_distance[m] = d;
        m += d <= threshold;
    }
    return m;
}

/* Hamming distance of one code stored with its bytes `stride` apart (in the scan-ready layout). For the
 * few codes that enter the heap, so a plain loop. */
static uint64_t sqlitebin_hamming_strided(const uint8_t *code, size_t stride, const uint8_t *query, size_t n) {
    uint64_t total = 0;
    for (size_t j = 0; j < n; j++)
        total += sqlitebin_swar_popcount64((uint64_t)(code[j * stride] ^ query[j]));
    return total;
}

/* Ask for transparent huge pages on a large buffer the scan streams through (before it is first written):
 * with 4 KB pages a scan of 128 MB takes 32,768 TLB misses. Only advice: ignored where unsupported. */
#if defined(__linux__)
#  include <sys/mman.h>
#endif
static void sqlitebin_advise_huge_pages(void *buffer, size_t size) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t start = ((uintptr_t)buffer + huge - 1) & ~(huge - 1), end = ((uintptr_t)buffer + size) & ~(huge - 1);
    if (end > start)
        madvise((void *)start, end - start, MADV_HUGEPAGE);
#else
    (void)buffer;
    (void)size;
#endif
}

/* ---- the scan-ready layout ----------------------------------------------- */

#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SQLITEBIN_NO_X86)
#  include <emmintrin.h>
/* A 16x16 byte tile: row r of `out` is column r of `in`. Four rounds of
 * interleaving rows i and i + 8 rotate the 8-bit (row, column) index by one
 * bit each, which after four rounds swaps row and column. */
static inline void sqlitebin_transpose16(const uint8_t *in, size_t in_stride, uint8_t *out, size_t out_stride) {
    __m128i r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm_loadu_si128((const __m128i *)(in + i * in_stride));
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 8; i++) {
            t[2 * i] = _mm_unpacklo_epi8(r[i], r[i + 8]);
            t[2 * i + 1] = _mm_unpackhi_epi8(r[i], r[i + 8]);
        }
        for (int i = 0; i < 16; i++)
            r[i] = t[i];
    }
    for (int i = 0; i < 16; i++)
        _mm_storeu_si128((__m128i *)(out + i * out_stride), r[i]);
}
#  define SQLITEBIN_HAVE_TRANSPOSE16 1
#else
#  define SQLITEBIN_HAVE_TRANSPOSE16 0
#endif

static void sqlitebin_transpose_blocks(const uint8_t *codes, size_t count, size_t code_bytes, uint8_t *out) {
    const size_t B = SQLITEBIN_NIBBLE_BLOCK;
    for (size_t b = 0; b * B < count; b++) {
        const uint8_t *in = codes + b * B * code_bytes;
        uint8_t *block = out + b * code_bytes * B;
        size_t n = count - b * B < B ? count - b * B : B, j0 = 0;
        if (n < B)
            memset(block, 0, code_bytes * B);
#if SQLITEBIN_HAVE_TRANSPOSE16
        if (n == B) {
            for (; j0 + 16 <= code_bytes; j0 += 16)
                for (size_t i0 = 0; i0 < B; i0 += 16)
                    sqlitebin_transpose16(in + i0 * code_bytes + j0, code_bytes, block + j0 * B + i0, B);
        }
#endif
        /* Columns left over (and the partial last block): byte by byte, writing sequentially. */
        for (size_t j = j0; j < code_bytes; j++)
            for (size_t i = 0; i < n; i++)
                block[j * B + i] = in[i * code_bytes + j];
    }
}

/* ---- many queries per pass (batch search) -------------------------------- */

/* A batch search reads each block of codes from memory once and runs every
 * query of the batch over it while it sits in L1/L2 (a block of 1,024 256-bit
 * codes is 32 KB): memory traffic is paid once per batch instead of once per
 * query. Query q's results go to out_index/out_distance + q * count, its count
 * to out_count[q], each at or below its own threshold, which the caller
 * refreshes from that query's heap between blocks. Returns the total emitted. */
static size_t sqlitebin_hamming_below_many(sqlitebin_hamming_below_fn kernel, const uint8_t *codes, size_t count,
                                           size_t code_bytes, const uint8_t *queries, size_t query_count,
                                           const uint32_t *thresholds, uint32_t *out_index, uint32_t *out_distance,
                                           size_t *out_count) {
    size_t total = 0;
    for (size_t q = 0; q < query_count; q++) {
        out_count[q] = kernel(codes, count, code_bytes, queries + q * code_bytes, thresholds[q],
                              out_index + q * count, out_distance + q * count);
        total += out_count[q];
    }
    return total;
}

/* The same for the asymmetric nibble scan: query q's tables at tables + q * 64 * code_bytes. */
static size_t sqlitebin_nibble_above_many(sqlitebin_nibble_above_fn kernel, const uint8_t *blocked, size_t first,
                                          size_t count, size_t code_bytes, const uint8_t *tables, size_t query_count,
                                          const uint32_t *thresholds, uint32_t *out_index, size_t *out_count) {
    size_t total = 0;
    for (size_t q = 0; q < query_count; q++) {
        out_count[q] = kernel(blocked, first, count, code_bytes, tables + q * 64 * code_bytes, thresholds[q],
                              out_index + q * count);
        total += out_count[q];
    }
    return total;
}

/* ---- asymmetric nibble scan, portable ------------------------------------ */

/* The nibble sums and bound check one code at a time, for CPUs without the
 * vector kernels below (the scan then uses it in their place on non-x86 builds;
 * on x86-64 below AVX2 the exact byte-table path is faster and is used instead). */
static size_t sqlitebin_nibble_above_portable(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                              const uint8_t *tables, uint32_t threshold, uint32_t *out_index) {
    const size_t B = SQLITEBIN_NIBBLE_BLOCK;
    size_t m = 0;
    if (threshold >= SQLITEBIN_NO_CANDIDATE)
        return 0;
    for (size_t i = 0; i < count; i++) {
        size_t code = first + i;
        const uint8_t *c = blocked + (code / B) * code_bytes * B + code % B;
        uint32_t sum = 0;
        for (size_t j = 0; j < code_bytes; j++)
            sum += (uint32_t)tables[64 * j + (c[j * B] >> 4)] + tables[64 * j + 32 + (c[j * B] & 15)];
        out_index[m] = (uint32_t)i;
        m += sum >= threshold;
    }
    return m;
}

static size_t sqlitebin_hamming_below_many_portable(const uint8_t *codes, size_t count, size_t code_bytes,
                                                   const uint8_t *queries, size_t query_count,
                                                   const uint32_t *thresholds, uint32_t *out_index,
                                                   uint32_t *out_distance, size_t *out_count) {
    return sqlitebin_hamming_below_many(sqlitebin_hamming_below_portable, codes, count, code_bytes, queries,
                                        query_count, thresholds, out_index, out_distance, out_count);
}

static size_t sqlitebin_nibble_above_many_portable(const uint8_t *blocked, size_t first, size_t count,
                                                  size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                  const uint32_t *thresholds, uint32_t *out_index, size_t *out_count) {
    return sqlitebin_nibble_above_many(sqlitebin_nibble_above_portable, blocked, first, count, code_bytes, tables,
                                       query_count, thresholds, out_index, out_count);
}

#if SQLITEBIN_HAVE_X86_KERNELS

/* ---- Hamming, POPCNT ----------------------------------------------------- */

/* Codes of a fixed number of 64-bit words, the query's words held in registers;
 * inlined with a constant `words`, so the loop over words is unrolled. */
__attribute__((target("popcnt"), always_inline))
static inline size_t sqlitebin_below_words_popcnt(const uint8_t *codes, size_t count, size_t words,
                                                  const uint8_t *query, uint32_t threshold,
                                                  uint32_t *out_index, uint32_t *out_distance) {
    uint64_t q[8];
    size_t m = 0;
#pragma GCC unroll 8
    for (size_t w = 0; w < words; w++)
        q[w] = sqlitebin_load64(query + 8 * w);
    for (size_t i = 0; i < count; i++) {
        const uint8_t *c = codes + i * 8 * words;
        uint32_t d = 0;
        if (words >= 4)  /* at least half a line per code: request the codes SQLITEBIN_PREFETCH_BYTES ahead (never faults) */
            __builtin_prefetch(c + SQLITEBIN_PREFETCH_BYTES);
#pragma GCC unroll 8
        for (size_t w = 0; w < words; w++)
            d += (uint32_t)__builtin_popcountll(sqlitebin_load64(c + 8 * w) ^ q[w]);
        out_index[m] = (uint32_t)i;
        out_distance[m] = d;
        m += d <= threshold;
    }
    return m;
}

__attribute__((target("popcnt")))
static size_t sqlitebin_hamming_below_popcnt(const uint8_t *codes, size_t count, size_t code_bytes,
                                             const uint8_t *query, uint32_t threshold,
                                             uint32_t *out_index, uint32_t *out_distance) {
    switch (code_bytes) {
    case 8: return sqlitebin_below_words_popcnt(codes, count, 1, query, threshold, out_index, out_distance);
    case 16: return sqlitebin_below_words_popcnt(codes, count, 2, query, threshold, out_index, out_distance);
    case 24: return sqlitebin_below_words_popcnt(codes, count, 3, query, threshold, out_index, out_distance);
    case 32: return sqlitebin_below_words_popcnt(codes, count, 4, query, threshold, out_index, out_distance);
    case 48: return sqlitebin_below_words_popcnt(codes, count, 6, query, threshold, out_index, out_distance);
    case 64: return sqlitebin_below_words_popcnt(codes, count, 8, query, threshold, out_index, out_distance);
    }
    size_t m = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t d = (uint32_t)sqlitebin_hamming_popcnt(codes + i * code_bytes, query, code_bytes);
        out_index[m] = (uint32_t)i;
        out_distance[m] = d;
        m += d <= threshold;
    }
    return m;
}

/* ---- Hamming, AVX2 ------------------------------------------------------- */

/* AVX2 has no vector popcount: below 256 bytes four POPCNTs per 32 bytes beat
 * the nibble-lookup method, which pays off only on long codes. */
__attribute__((target("avx2,popcnt")))
static size_t sqlitebin_hamming_below_avx2(const uint8_t *codes, size_t count, size_t code_bytes,
                                           const uint8_t *query, uint32_t threshold,
                                           uint32_t *out_index, uint32_t *out_distance) {
    if (code_bytes < 256)
        return sqlitebin_hamming_below_popcnt(codes, count, code_bytes, query, threshold, out_index, out_distance);
    size_t m = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t d = (uint32_t)sqlitebin_hamming_avx2(codes + i * code_bytes, query, code_bytes);
        out_index[m] = (uint32_t)i;
        out_distance[m] = d;
        m += d <= threshold;
    }
    return m;
}

/* ---- Hamming, AVX-512 ---------------------------------------------------- */

/* Eight vectors of 64-bit counts to one vector of their eight sums, in order:
 * three rounds of pairwise adds after interleaving. */
__attribute__((target(SQLITEBIN_AVX512_TARGET), always_inline))
static inline __m512i sqlitebin_sum8_avx512(__m512i v0, __m512i v1, __m512i v2, __m512i v3,
                                            __m512i v4, __m512i v5, __m512i v6, __m512i v7) {
    __m512i t01 = _mm512_add_epi64(_mm512_unpacklo_epi64(v0, v1), _mm512_unpackhi_epi64(v0, v1));
    __m512i t23 = _mm512_add_epi64(_mm512_unpacklo_epi64(v2, v3), _mm512_unpackhi_epi64(v2, v3));
    __m512i t45 = _mm512_add_epi64(_mm512_unpacklo_epi64(v4, v5), _mm512_unpackhi_epi64(v4, v5));
    __m512i t67 = _mm512_add_epi64(_mm512_unpacklo_epi64(v6, v7), _mm512_unpackhi_epi64(v6, v7));
    __m512i u0 = _mm512_add_epi64(_mm512_shuffle_i64x2(t01, t23, _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i64x2(t01, t23, _MM_SHUFFLE(3, 1, 3, 1)));
    __m512i u1 = _mm512_add_epi64(_mm512_shuffle_i64x2(t45, t67, _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i64x2(t45, t67, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi64(_mm512_shuffle_i64x2(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i64x2(u0, u1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Counts of one code of any length, as a vector whose lanes sum to its distance. */
__attribute__((target(SQLITEBIN_AVX512_TARGET), always_inline))
static inline __m512i sqlitebin_code_counts_avx512(const uint8_t *c, const uint8_t *query, size_t code_bytes,
                                                   __mmask64 tail) {
    __m512i acc = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + 64 <= code_bytes; j += 64)
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c + j),
                                                                         _mm512_loadu_si512(query + j))));
    if (j < code_bytes)
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, c + j),
                                                                         _mm512_maskz_loadu_epi8(tail, query + j))));
    return acc;
}

/* Emit the codes of an 8-code step whose lanes pass `mask`; lane p is code base + order[p].
 * The eight distances are stored (as 32-bit values) into out_distance at m, the step's own slots
 * (m + 8 <= the step's end <= count, which the output arrays hold), and compacted in place: lane p
 * is read before slot m + j <= m + p is written. No copy on the stack: GCC gives such a copy
 * 64-byte alignment and an aligned store, which faults under AddressSanitizer's use-after-return
 * mode, whose fake stack frames do not keep that alignment (see scripts/check_memory.sh); and
 * reading each lane from the register (vpermq) made k = 100 scans slower. */
#define SQLITEBIN_EMIT8(mask, distances, base, order)                                        \
    do {                                                                                     \
        unsigned mask_ = (mask);                                                             \
        uint32_t *d_ = out_distance + m;                                                     \
        _mm256_storeu_si256((__m256i *)d_, _mm512_cvtepi64_epi32(distances));               \
        while (mask_) {                                                                      \
            unsigned p_ = (unsigned)__builtin_ctz(mask_);                                    \
            mask_ &= mask_ - 1;                                                              \
            out_index[m] = (uint32_t)((base) + (order)[p_]);                                 \
            out_distance[m] = d_[p_];                                                        \
            m++;                                                                             \
        }                                                                                    \
    } while (0)

/* Eight codes a step: distances as a vector of eight, compared with the
 * threshold in one instruction; almost every step emits nothing. */
__attribute__((target(SQLITEBIN_AVX512_TARGET)))
static size_t sqlitebin_hamming_below_avx512(const uint8_t *codes, size_t count, size_t code_bytes,
                                             const uint8_t *query, uint32_t threshold,
                                             uint32_t *out_index, uint32_t *out_distance) {
    static const uint8_t in_order[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    /* The 256-bit step below leaves its sums in the lane order a c b d e g f h. */
    static const uint8_t order_32[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    const __m512i limit = _mm512_set1_epi64((long long)threshold);
    size_t m = 0, i = 0;
    if (code_bytes == 32) {
        /* Two codes per register: four loads cover eight codes. */
        const __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)query));
        for (; i + 8 <= count; i += 8) {
            const uint8_t *c = codes + i * 32;
            /* Codes stream from memory beyond the cache: ask for them 8 KB ahead, one request per line.
             * A prefetch never faults, even past the end of the codes. */
            _mm_prefetch((const char *)(c + SQLITEBIN_PREFETCH_BYTES), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + SQLITEBIN_PREFETCH_BYTES + 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + SQLITEBIN_PREFETCH_BYTES + 128), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + SQLITEBIN_PREFETCH_BYTES + 192), _MM_HINT_T0);
            __m512i p0 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c), q));
            __m512i p1 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c + 64), q));
            __m512i p2 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c + 128), q));
            __m512i p3 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c + 192), q));
            __m512i t01 = _mm512_add_epi64(_mm512_unpacklo_epi64(p0, p1), _mm512_unpackhi_epi64(p0, p1));
            __m512i t23 = _mm512_add_epi64(_mm512_unpacklo_epi64(p2, p3), _mm512_unpackhi_epi64(p2, p3));
            __m512i d = _mm512_add_epi64(_mm512_shuffle_i64x2(t01, t23, _MM_SHUFFLE(2, 0, 2, 0)),
                                         _mm512_shuffle_i64x2(t01, t23, _MM_SHUFFLE(3, 1, 3, 1)));
            __mmask8 pass = _mm512_cmple_epu64_mask(d, limit);
            if (pass)
                SQLITEBIN_EMIT8(pass, d, i, order_32);
        }
    } else {
        const __mmask64 tail = _bzhi_u64(~0ULL, (unsigned)(code_bytes % 64));
        const size_t cb = code_bytes;
        for (; i + 8 <= count; i += 8) {
            const uint8_t *c = codes + i * cb;
            sqlitebin_prefetch_ahead(c, 8 * cb);
            __m512i d = sqlitebin_sum8_avx512(
                sqlitebin_code_counts_avx512(c, query, cb, tail),
                sqlitebin_code_counts_avx512(c + cb, query, cb, tail),
                sqlitebin_code_counts_avx512(c + 2 * cb, query, cb, tail),
                sqlitebin_code_counts_avx512(c + 3 * cb, query, cb, tail),
                sqlitebin_code_counts_avx512(c + 4 * cb, query, cb, tail),
                sqlitebin_code_counts_avx512(c + 5 * cb, query, cb, tail),
                sqlitebin_code_counts_avx512(c + 6 * cb, query, cb, tail),
                sqlitebin_code_counts_avx512(c + 7 * cb, query, cb, tail));
            __mmask8 pass = _mm512_cmple_epu64_mask(d, limit);
            if (pass)
                SQLITEBIN_EMIT8(pass, d, i, in_order);
        }
    }
    for (; i < count; i++) {
        uint32_t d = (uint32_t)sqlitebin_hamming_avx512(codes + i * code_bytes, query, code_bytes);
        out_index[m] = (uint32_t)i;
        out_distance[m] = d;
        m += d <= threshold;
    }
    return m;
}

/* ---- asymmetric nibble scan, AVX2 ---------------------------------------- */

/* The two entries of code byte j for the 32 codes at `half` (0 or 32) of a block, added (at most 2 * 63). */
#define SQLITEBIN_NIBBLE_AVX2_LOOKUP(j, half)                                                                  \
    _mm256_add_epi8(                                                                                           \
        _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(tables + 64 * (j))),                          \
                            _mm256_and_si256(_mm256_srli_epi16(                                                \
                                _mm256_loadu_si256((const __m256i *)(block + (j) * B + (half))), 4), nibble)), \
        _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(tables + 64 * (j) + 32)),                     \
                            _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(block + (j) * B + (half))), nibble)))

/* Sums of 64 codes' table entries in 16-bit lanes, without widening each
 * lookup: two code bytes' four entries (each at most 63) add in 8 bits; `all`
 * adds those as 16-bit words (low byte: even code, high byte: odd code,
 * wrapping), `odd` adds the high bytes alone; the even codes' sums are then
 * all - 256 * odd (mod 2^16), exact because each sum fits in 16 bits. */
__attribute__((target("avx2")))
static size_t sqlitebin_nibble_above_avx2(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                          const uint8_t *tables, uint32_t threshold, uint32_t *out_index) {
    const size_t B = SQLITEBIN_NIBBLE_BLOCK;
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    const __m256i limit = _mm256_set1_epi16((short)(uint16_t)threshold);
    size_t m = 0, end = first + count;
    if (threshold >= SQLITEBIN_NO_CANDIDATE || count == 0)
        return 0;
    for (size_t b = first / B; b * B < end; b++) {
        const uint8_t *block = blocked + b * code_bytes * B;
        __m256i all0 = _mm256_setzero_si256(), odd0 = all0, all1 = all0, odd1 = all0;
        size_t j = 0;
#pragma GCC unroll 2
        for (; j + 2 <= code_bytes; j += 2) {
            __m256i s0 = _mm256_add_epi8(SQLITEBIN_NIBBLE_AVX2_LOOKUP(j, 0), SQLITEBIN_NIBBLE_AVX2_LOOKUP(j + 1, 0));
            __m256i s1 = _mm256_add_epi8(SQLITEBIN_NIBBLE_AVX2_LOOKUP(j, 32), SQLITEBIN_NIBBLE_AVX2_LOOKUP(j + 1, 32));
            all0 = _mm256_add_epi16(all0, s0);
            odd0 = _mm256_add_epi16(odd0, _mm256_srli_epi16(s0, 8));
            all1 = _mm256_add_epi16(all1, s1);
            odd1 = _mm256_add_epi16(odd1, _mm256_srli_epi16(s1, 8));
        }
        if (j < code_bytes) {
            __m256i s0 = SQLITEBIN_NIBBLE_AVX2_LOOKUP(j, 0), s1 = SQLITEBIN_NIBBLE_AVX2_LOOKUP(j, 32);
            all0 = _mm256_add_epi16(all0, s0);
            odd0 = _mm256_add_epi16(odd0, _mm256_srli_epi16(s0, 8));
            all1 = _mm256_add_epi16(all1, s1);
            odd1 = _mm256_add_epi16(odd1, _mm256_srli_epi16(s1, 8));
        }
        __m256i even0 = _mm256_sub_epi16(all0, _mm256_slli_epi16(odd0, 8));
        __m256i even1 = _mm256_sub_epi16(all1, _mm256_slli_epi16(odd1, 8));
        /* x >= limit (unsigned) exactly when max(x, limit) == x; two mask bits per 16-bit lane. */
        uint32_t pass[4] = {
            (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_max_epu16(even0, limit), even0)),
            (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_max_epu16(odd0, limit), odd0)),
            (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_max_epu16(even1, limit), even1)),
            (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_max_epu16(odd1, limit), odd1)),
        };
        if (!(pass[0] | pass[1] | pass[2] | pass[3]))
            continue;
        for (unsigned h = 0; h < 4; h++) {
            uint32_t bits = pass[h] & 0x55555555u;
            while (bits) {
                unsigned lane = (unsigned)__builtin_ctz(bits) >> 1;
                bits &= bits - 1;
                size_t code = b * B + 32 * (h >> 1) + 2 * lane + (h & 1);
                if (code >= first && code < end)
                    out_index[m++] = (uint32_t)(code - first);
            }
        }
    }
    return m;
}

/* ---- asymmetric nibble scan, AVX-512 ------------------------------------- */

/* The two entries of code byte j for 64 codes, added (at most 2 * 63). */
#define SQLITEBIN_NIBBLE_AVX512_LOOKUP(j)                                                                         \
    _mm512_add_epi8(                                                                                              \
        _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tables + 64 * (j)))),        \
                            _mm512_and_si512(_mm512_srli_epi16(_mm512_loadu_si512(block + (j) * B), 4), nibble)), \
        _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tables + 64 * (j) + 32))),   \
                            _mm512_and_si512(_mm512_loadu_si512(block + (j) * B), nibble)))

/* The body both AVX-512 nibble kernels share: 64 codes a step in one register, 16-bit compares into
 * masks; LOOKUP(j) gives the two table entries of code byte j for the 64 codes of `block`. */
#define SQLITEBIN_NIBBLE_ABOVE_AVX512_BODY(LOOKUP)                                    \
    const __m512i limit = _mm512_set1_epi16((short)(uint16_t)threshold);              \
    size_t m = 0, end = first + count;                                                \
    if (threshold >= SQLITEBIN_NO_CANDIDATE || count == 0)                            \
        return 0;                                                                     \
    for (size_t b = first / B; b * B < end; b++) {                                    \
        const uint8_t *block = blocked + b * code_bytes * B;                          \
        __m512i all = _mm512_setzero_si512(), odd = all;                              \
        size_t j = 0;                                                                 \
        _Pragma("GCC unroll 2")                                                   \
        for (; j + 2 <= code_bytes; j += 2) {                                         \
            /* Two code bytes' four entries add in 8 bits; widened once per pair. */  \
            __m512i s = _mm512_add_epi8(LOOKUP(j), LOOKUP(j + 1));                    \
            all = _mm512_add_epi16(all, s);                                           \
            odd = _mm512_add_epi16(odd, _mm512_srli_epi16(s, 8));                     \
        }                                                                             \
        if (j < code_bytes) {                                                         \
            __m512i s = LOOKUP(j);                                                    \
            all = _mm512_add_epi16(all, s);                                           \
            odd = _mm512_add_epi16(odd, _mm512_srli_epi16(s, 8));                     \
        }                                                                             \
        __m512i even = _mm512_sub_epi16(all, _mm512_slli_epi16(odd, 8));              \
        uint32_t pass_even = _mm512_cmpge_epu16_mask(even, limit);                    \
        uint32_t pass_odd = _mm512_cmpge_epu16_mask(odd, limit);                      \
        if (!(pass_even | pass_odd))                                                  \
            continue;                                                                 \
        for (unsigned parity = 0; parity < 2; parity++) {                             \
            uint32_t bits = parity ? pass_odd : pass_even;                            \
            while (bits) {                                                            \
                unsigned lane = (unsigned)__builtin_ctz(bits);                        \
                bits &= bits - 1;                                                     \
                size_t code = b * B + 2 * lane + parity;                              \
                if (code >= first && code < end)                                      \
                    out_index[m++] = (uint32_t)(code - first);                        \
            }                                                                         \
        }                                                                             \
    }                                                                                 \
    return m;

/* As the AVX2 kernel, with VPSHUFB lookups (the nibbles masked). */
__attribute__((target(SQLITEBIN_AVX512_TARGET)))
static size_t sqlitebin_nibble_above_avx512(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                            const uint8_t *tables, uint32_t threshold, uint32_t *out_index) {
    const size_t B = SQLITEBIN_NIBBLE_BLOCK;
    const __m512i nibble = _mm512_set1_epi8(0x0f);
    SQLITEBIN_NIBBLE_ABOVE_AVX512_BODY(SQLITEBIN_NIBBLE_AVX512_LOOKUP)
}

/* With VBMI, VPERMB looks up 64-entry tables by the low 6 bits of each byte:
 * a 16-entry table broadcast to all four lanes is such a table with entry e =
 * table[e & 15], so neither nibble needs masking (bits 4 and 5 of the index
 * select among identical copies): two instructions fewer per code byte. */
/* The two entries of code byte j for 64 codes, added (at most 2 * 63). */
#define SQLITEBIN_NIBBLE_VBMI_LOOKUP(j)                                                                          \
    _mm512_add_epi8(                                                                                             \
        _mm512_permutexvar_epi8(_mm512_srli_epi16(_mm512_loadu_si512(block + (j) * B), 4),                      \
                                _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tables + 64 * (j))))),  \
        _mm512_permutexvar_epi8(_mm512_loadu_si512(block + (j) * B),                                            \
                                _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tables + 64 * (j) + 32)))))

__attribute__((target(SQLITEBIN_AVX512_TARGET ",avx512vbmi")))
static size_t sqlitebin_nibble_above_avx512vbmi(const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                                const uint8_t *tables, uint32_t threshold, uint32_t *out_index) {
    const size_t B = SQLITEBIN_NIBBLE_BLOCK;
    SQLITEBIN_NIBBLE_ABOVE_AVX512_BODY(SQLITEBIN_NIBBLE_VBMI_LOOKUP)
}

static int sqlitebin_cpu_has_avx512vbmi(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vbmi");
}

/* POPCNT and AVX2 Hamming batches: each query over the block in turn. Four POPCNTs per 256-bit code
 * and query either way; holding the code in registers would trade its loads for the query's. */
__attribute__((target("popcnt")))
static size_t sqlitebin_hamming_below_many_popcnt(const uint8_t *codes, size_t count, size_t code_bytes,
                                                  const uint8_t *queries, size_t query_count,
                                                  const uint32_t *thresholds, uint32_t *out_index,
                                                  uint32_t *out_distance, size_t *out_count) {
    return sqlitebin_hamming_below_many(sqlitebin_hamming_below_popcnt, codes, count, code_bytes, queries,
                                        query_count, thresholds, out_index, out_distance, out_count);
}

__attribute__((target("avx2,popcnt")))
static size_t sqlitebin_hamming_below_many_avx2(const uint8_t *codes, size_t count, size_t code_bytes,
                                                const uint8_t *queries, size_t query_count,
                                                const uint32_t *thresholds, uint32_t *out_index,
                                                uint32_t *out_distance, size_t *out_count) {
    return sqlitebin_hamming_below_many(sqlitebin_hamming_below_avx2, codes, count, code_bytes, queries,
                                        query_count, thresholds, out_index, out_distance, out_count);
}

/* ---- many queries per pass: register-blocked batch kernels ---------------- */

/* The loops above (sqlitebin_hamming_below_many and sqlitebin_nibble_above_many) run each query of a batch
 * over a block while it sits in L1/L2, but each query still loads every code and redoes the work that does
 * not depend on it. The kernels below load a step of codes into registers once and run every query of the
 * batch (Hamming) or of a group of up to eight (nibble) over it before moving on: per code and query only the
 * query's own instructions remain. Same arguments and outputs as the loops: query q's results at
 * out_index/out_distance + q * count, its count in out_count[q], each at its own threshold. */

/* Emit the lanes of a step passing `mask` for query q: lane p is code base + p, its distance lane p of
 * `distances` read as `lane` (uint64_t: an 8-code step; uint32_t: a 16-code step). */
#define SQLITEBIN_EMIT_MANY(mask, distances, lane, base, q)                                        \
    do {                                                                                          \
        lane d_[64 / sizeof(lane)];                                                               \
        unsigned mask_ = (mask);                                                                  \
        uint32_t *index_ = out_index + (q) * count + out_count[q];                                \
        uint32_t *distance_ = out_distance + (q) * count + out_count[q];                          \
        _mm512_storeu_si512(d_, (distances));                                                     \
        while (mask_) {                                                                           \
            unsigned p_ = (unsigned)__builtin_ctz(mask_);                                         \
            mask_ &= mask_ - 1;                                                                   \
            *index_++ = (uint32_t)((base) + p_);                                                  \
            *distance_++ = (uint32_t)d_[p_];                                                      \
        }                                                                                         \
        out_count[q] = (size_t)(index_ - (out_index + (q) * count));                              \
    } while (0)

/* Load the eight codes at c (of `words` 64-bit words) transposed: w[k] holds word k of each. Requests
 * the codes SQLITEBIN_PREFETCH_BYTES ahead. */
__attribute__((target(SQLITEBIN_AVX512_TARGET), always_inline))
static inline void sqlitebin_load8_transposed(const uint8_t *c, const size_t words, __m512i *w) {
    const size_t cb = 8 * words;
    const __m512i gather = _mm512_set_epi64(7 * (long long)words, 6 * (long long)words, 5 * (long long)words,
                                            4 * (long long)words, 3 * (long long)words, 2 * (long long)words,
                                            (long long)words, 0);
    /* For four words: pairs of registers (two codes each) to words 0-1 and 2-3 of four codes. */
    const __m512i words01 = _mm512_set_epi64(13, 9, 5, 1, 12, 8, 4, 0);
    const __m512i words23 = _mm512_set_epi64(15, 11, 7, 3, 14, 10, 6, 2);
#pragma GCC unroll 16
    for (size_t line = 0; line < cb; line += 8)  /* the step is 8 * cb bytes: one request per 64 */
        _mm_prefetch((const char *)(c + SQLITEBIN_PREFETCH_BYTES + 8 * line), _MM_HINT_T0);
    if (words == 4) {
        __m512i r0 = _mm512_loadu_si512(c), r1 = _mm512_loadu_si512(c + 64);
        __m512i r2 = _mm512_loadu_si512(c + 128), r3 = _mm512_loadu_si512(c + 192);
        __m512i t0 = _mm512_permutex2var_epi64(r0, words01, r1), t1 = _mm512_permutex2var_epi64(r0, words23, r1);
        __m512i t2 = _mm512_permutex2var_epi64(r2, words01, r3), t3 = _mm512_permutex2var_epi64(r2, words23, r3);
        w[0] = _mm512_shuffle_i64x2(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
        w[1] = _mm512_shuffle_i64x2(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
        w[2] = _mm512_shuffle_i64x2(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
        w[3] = _mm512_shuffle_i64x2(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    } else {
#pragma GCC unroll 16
        for (size_t k = 0; k < words; k++)
            w[k] = _mm512_i64gather_epi64(gather, (const void *)(c + 8 * k), 8);
    }
}

/* Hamming, AVX-512, codes of `words` 64-bit words (a constant once inlined). Eight codes a step are
 * loaded and transposed so that register k holds word k of the eight codes; a query is then `words`
 * XORs with its word broadcast from memory, `words` VPOPCNTQs and the adds, with no horizontal sum
 * (the one-query kernel spends half its instructions on that). Codes of up to four words go sixteen a
 * step, in two such sets of registers: each query's broadcasts, threshold, compare and branch then
 * serve sixteen codes (its two sets of distances packed into one register of 32-bit lanes). */
__attribute__((target(SQLITEBIN_AVX512_TARGET), always_inline))
static inline size_t sqlitebin_below_many_words_avx512(const uint8_t *codes, size_t count, const size_t words,
                                                       const uint8_t *queries, size_t query_count,
                                                       const uint32_t *thresholds, uint32_t *out_index,
                                                       uint32_t *out_distance, size_t *out_count) {
    const size_t cb = 8 * words;
    /* The low 32 bits of each 64-bit lane of two registers, the first's in lanes 0-7. */
    const __m512i low_halves = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    size_t i = 0, total = 0;
    for (size_t q = 0; q < query_count; q++)
        out_count[q] = 0;
    if (words <= 4) {
        for (; i + 16 <= count; i += 16) {
            __m512i w[4], v[4];
            sqlitebin_load8_transposed(codes + i * cb, words, w);
            sqlitebin_load8_transposed(codes + (i + 8) * cb, words, v);
            for (size_t q = 0; q < query_count; q++) {
                const uint8_t *qq = queries + q * cb;
                __m512i b = _mm512_set1_epi64((long long)sqlitebin_load64(qq));
                __m512i d0 = _mm512_popcnt_epi64(_mm512_xor_si512(w[0], b));
                __m512i d1 = _mm512_popcnt_epi64(_mm512_xor_si512(v[0], b));
#pragma GCC unroll 4
                for (size_t k = 1; k < words; k++) {
                    b = _mm512_set1_epi64((long long)sqlitebin_load64(qq + 8 * k));
                    d0 = _mm512_add_epi64(d0, _mm512_popcnt_epi64(_mm512_xor_si512(w[k], b)));
                    d1 = _mm512_add_epi64(d1, _mm512_popcnt_epi64(_mm512_xor_si512(v[k], b)));
                }
                __m512i d = _mm512_permutex2var_epi32(d0, low_halves, d1);
                __mmask16 pass = _mm512_cmple_epu32_mask(d, _mm512_set1_epi32((int)thresholds[q]));
                if (pass)
                    SQLITEBIN_EMIT_MANY(pass, d, uint32_t, i, q);
            }
        }
    }
    for (; i + 8 <= count; i += 8) {
        __m512i w[16];
        sqlitebin_load8_transposed(codes + i * cb, words, w);
        for (size_t q = 0; q < query_count; q++) {
            const uint8_t *qq = queries + q * cb;
            __m512i d = _mm512_popcnt_epi64(_mm512_xor_si512(w[0], _mm512_set1_epi64((long long)sqlitebin_load64(qq))));
#pragma GCC unroll 16
            for (size_t k = 1; k < words; k++)
                d = _mm512_add_epi64(d, _mm512_popcnt_epi64(_mm512_xor_si512(
                                            w[k], _mm512_set1_epi64((long long)sqlitebin_load64(qq + 8 * k)))));
            __mmask8 pass = _mm512_cmple_epu64_mask(d, _mm512_set1_epi64((long long)thresholds[q]));
            if (pass)
                SQLITEBIN_EMIT_MANY(pass, d, uint64_t, i, q);
        }
    }
    for (size_t q = 0; q < query_count; q++) {
        if (i < count) {  /* the last codes, fewer than a step: the one-query kernel, indices shifted */
            uint32_t *index = out_index + q * count + out_count[q];
            size_t m = sqlitebin_hamming_below_avx512(codes + i * cb, count - i, cb, queries + q * cb, thresholds[q],
                                                      index, out_distance + q * count + out_count[q]);
            for (size_t e = 0; e < m; e++)
                index[e] += (uint32_t)i;
            out_count[q] += m;
        }
        total += out_count[q];
    }
    return total;
}

__attribute__((target(SQLITEBIN_AVX512_TARGET)))
static size_t sqlitebin_hamming_below_many_avx512(const uint8_t *codes, size_t count, size_t code_bytes,
                                                  const uint8_t *queries, size_t query_count,
                                                  const uint32_t *thresholds, uint32_t *out_index,
                                                  uint32_t *out_distance, size_t *out_count) {
#define SQLITEBIN_BELOW_MANY_WORDS(words) \
    sqlitebin_below_many_words_avx512(codes, count, words, queries, query_count, thresholds, out_index, \
                                      out_distance, out_count)
    switch (code_bytes) {
    case 8: return SQLITEBIN_BELOW_MANY_WORDS(1);
    case 16: return SQLITEBIN_BELOW_MANY_WORDS(2);
    case 24: return SQLITEBIN_BELOW_MANY_WORDS(3);
    case 32: return SQLITEBIN_BELOW_MANY_WORDS(4);
    case 48: return SQLITEBIN_BELOW_MANY_WORDS(6);
    case 64: return SQLITEBIN_BELOW_MANY_WORDS(8);
    case 96: return SQLITEBIN_BELOW_MANY_WORDS(12);
    case 128: return SQLITEBIN_BELOW_MANY_WORDS(16);
    }
#undef SQLITEBIN_BELOW_MANY_WORDS
    /* Other lengths (a partial last word, or long codes): each query over the block in turn. */
    return sqlitebin_hamming_below_many(sqlitebin_hamming_below_avx512, codes, count, code_bytes, queries,
                                        query_count, thresholds, out_index, out_distance, out_count);
}

/* Emit, for query g of a group, the codes of block b whose 16-bit sums pass (even and odd lanes). */
#define SQLITEBIN_NIBBLE_EMIT_MANY(pass_even, pass_odd, g)                                        \
    do {                                                                                          \
        uint32_t *index_ = out_index + (g) * count + out_count[g];                                \
        for (unsigned parity_ = 0; parity_ < 2; parity_++) {                                      \
            uint32_t bits_ = parity_ ? (pass_odd) : (pass_even);                                  \
            while (bits_) {                                                                       \
                unsigned lane_ = (unsigned)__builtin_ctz(bits_);                                  \
                bits_ &= bits_ - 1;                                                               \
                size_t code_ = b * B + 2 * lane_ + parity_;                                       \
                if (code_ >= first && code_ < end)                                                \
                    *index_++ = (uint32_t)(code_ - first);                                        \
            }                                                                                     \
        }                                                                                         \
        out_count[g] = (size_t)(index_ - (out_index + (g) * count));                              \
    } while (0)

/* For each query g of a group whose block sums are in all[g] and odd[g] (16-bit lanes: even codes in the low
 * bytes of `all`, wrapping; odd codes alone in `odd`), split the even codes' sums out, compare both halves with
 * the query's threshold and emit the codes that pass. */
#define SQLITEBIN_NIBBLE_PASS_MANY()                                                              \
    do {                                                                                          \
        _Pragma("GCC unroll 8")                                                                   \
        for (size_t g = 0; g < G; g++) {                                                          \
            if (thresholds[g] >= SQLITEBIN_NO_CANDIDATE)                                          \
                continue;                                                                         \
            const __m512i limit = _mm512_set1_epi16((short)(uint16_t)thresholds[g]);              \
            __m512i even = _mm512_sub_epi16(all[g], _mm512_slli_epi16(odd[g], 8));                \
            uint32_t pass_even = _mm512_cmpge_epu16_mask(even, limit);                            \
            uint32_t pass_odd = _mm512_cmpge_epu16_mask(odd[g], limit);                           \
            if (pass_even | pass_odd)                                                             \
                SQLITEBIN_NIBBLE_EMIT_MANY(pass_even, pass_odd, g);                               \
        }                                                                                         \
    } while (0)

/* The nibble scan for a group of G queries (a constant once inlined, at most 8): for each pair of code
 * bytes of a block the two 64-byte rows are loaded and their nibbles split once (SPLIT), then each query
 * looks up its own tables (LOOKUP) into its own two accumulators (2G registers). `count` is the stride of
 * the outputs (the caller's whole range); the group's tables, thresholds and outputs start at query 0. */
#define SQLITEBIN_NIBBLE_MANY_GROUP_BODY(SPLIT, LOOKUP)                                                    \
    const size_t B = SQLITEBIN_NIBBLE_BLOCK;                                                               \
    const size_t end = first + count;                                                                      \
    const size_t table_bytes = 64 * code_bytes;                                                            \
    for (size_t b = first / B; b * B < end; b++) {                                                         \
        const uint8_t *block = blocked + b * code_bytes * B;                                               \
        __m512i all[8], odd[8];                                                                            \
        _Pragma("GCC unroll 8")                                                                            \
        for (size_t g = 0; g < G; g++)                                                                     \
            all[g] = odd[g] = _mm512_setzero_si512();                                                      \
        size_t j = 0;                                                                                      \
        for (; j + 2 <= code_bytes; j += 2) {                                                              \
            __m512i h0, l0, h1, l1;                                                                        \
            SPLIT(_mm512_loadu_si512(block + j * B), h0, l0);                                              \
            SPLIT(_mm512_loadu_si512(block + (j + 1) * B), h1, l1);                                        \
            _Pragma("GCC unroll 8")                                                                        \
            for (size_t g = 0; g < G; g++) {                                                               \
                const uint8_t *t = tables + g * table_bytes + 64 * j;                                      \
                /* Two code bytes' four entries add in 8 bits; widened once per pair. */                   \
                __m512i s = _mm512_add_epi8(_mm512_add_epi8(LOOKUP(h0, t), LOOKUP(l0, t + 32)),            \
                                            _mm512_add_epi8(LOOKUP(h1, t + 64), LOOKUP(l1, t + 96)));      \
                all[g] = _mm512_add_epi16(all[g], s);                                                      \
                odd[g] = _mm512_add_epi16(odd[g], _mm512_srli_epi16(s, 8));                                \
            }                                                                                              \
        }                                                                                                  \
        if (j < code_bytes) {                                                                              \
            __m512i h0, l0;                                                                                \
            SPLIT(_mm512_loadu_si512(block + j * B), h0, l0);                                              \
            _Pragma("GCC unroll 8")                                                                        \
            for (size_t g = 0; g < G; g++) {                                                               \
                const uint8_t *t = tables + g * table_bytes + 64 * j;                                      \
                __m512i s = _mm512_add_epi8(LOOKUP(h0, t), LOOKUP(l0, t + 32));                            \
                all[g] = _mm512_add_epi16(all[g], s);                                                      \
                odd[g] = _mm512_add_epi16(odd[g], _mm512_srli_epi16(s, 8));                                \
            }                                                                                              \
        }                                                                                                  \
        SQLITEBIN_NIBBLE_PASS_MANY();                                                                      \
    }

/* The groups of a batch: eight queries at a time, the rest as four, two and one. */
#define SQLITEBIN_NIBBLE_MANY_GROUPS(GROUP)                                                                \
    size_t total = 0, q = 0;                                                                               \
    for (size_t r = 0; r < query_count; r++)                                                               \
        out_count[r] = 0;                                                                                  \
    if (count == 0)                                                                                        \
        return 0;                                                                                          \
    for (; q + 8 <= query_count; q += 8)                                                                   \
        GROUP(8);                                                                                          \
    if (q + 4 <= query_count) {                                                                            \
        GROUP(4);                                                                                          \
        q += 4;                                                                                            \
    }                                                                                                      \
    if (q + 2 <= query_count) {                                                                            \
        GROUP(2);                                                                                          \
        q += 2;                                                                                            \
    }                                                                                                      \
    if (q < query_count)                                                                                   \
        GROUP(1);                                                                                          \
    for (size_t r = 0; r < query_count; r++)                                                               \
        total += out_count[r];                                                                             \
    return total;

#define SQLITEBIN_NIBBLE_GROUP_CALL(kernel, G)                                                             \
    kernel(blocked, first, count, code_bytes, tables + q * 64 * code_bytes, G, thresholds + q,             \
           out_index + q * count, out_count + q)

/* AVX-512 BW: VPSHUFB looks up 16-entry tables broadcast to the four lanes, so both nibbles are masked. */
#define SQLITEBIN_SPLIT_MASKED(x, high, low)                                                               \
    do {                                                                                                   \
        __m512i x_ = (x);                                                                                  \
        high = _mm512_and_si512(_mm512_srli_epi16(x_, 4), nibble);                                         \
        low = _mm512_and_si512(x_, nibble);                                                                \
    } while (0)
#define SQLITEBIN_LOOKUP_SHUFFLE(index, table) \
    _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(table))), index)

__attribute__((target(SQLITEBIN_AVX512_TARGET), always_inline))
static inline void sqlitebin_nibble_many_group_avx512(const uint8_t *blocked, size_t first, size_t count,
                                                      size_t code_bytes, const uint8_t *tables, const size_t G,
                                                      const uint32_t *thresholds, uint32_t *out_index,
                                                      size_t *out_count) {
    const __m512i nibble = _mm512_set1_epi8(0x0f);
    SQLITEBIN_NIBBLE_MANY_GROUP_BODY(SQLITEBIN_SPLIT_MASKED, SQLITEBIN_LOOKUP_SHUFFLE)
}

__attribute__((target(SQLITEBIN_AVX512_TARGET)))
static size_t sqlitebin_nibble_above_many_avx512(const uint8_t *blocked, size_t first, size_t count,
                                                 size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                 const uint32_t *thresholds, uint32_t *out_index, size_t *out_count) {
#define SQLITEBIN_GROUP(G) SQLITEBIN_NIBBLE_GROUP_CALL(sqlitebin_nibble_many_group_avx512, G)
    SQLITEBIN_NIBBLE_MANY_GROUPS(SQLITEBIN_GROUP)
#undef SQLITEBIN_GROUP
}

/* Hamming on the scan-ready layout, for AVX2 batches (AVX2 has no vector popcount, and four POPCNTs per
 * 256-bit code and query leave a batch no faster than one query at a time). The distance is a sum over code
 * bytes of popcount(byte ^ query byte), and per query each byte's two nibbles have 16-entry tables of those
 * popcounts (at most 4), in the nibble tables' layout (sqlitebin_hamming_nibble_tables): a row of 32 codes is
 * then two VPSHUFBs and an add per query, after the nibbles are split once for up to four queries. Byte sums
 * (at most 8) add in 8 bits for 31 rows, then widen; exact. Outputs as sqlitebin_hamming_below_many, the
 * indices relative to `first`. */
__attribute__((target("avx2"), always_inline))
static inline void sqlitebin_hamming_blocked_group_avx2(const uint8_t *blocked, size_t first, size_t count,
                                                        size_t code_bytes, const uint8_t *tables, const size_t G,
                                                        const uint32_t *thresholds, uint32_t *out_index,
                                                        uint32_t *out_distance, size_t *out_count) {
    const size_t B = SQLITEBIN_NIBBLE_BLOCK;
    const size_t end = first + count;
    const size_t table_bytes = 64 * code_bytes;
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    for (size_t b = first / B; b * B < end; b++) {
        const uint8_t *block = blocked + b * code_bytes * B;
        for (size_t half = 0; half < B; half += 32) {
            if (b * B + half + 32 <= first || b * B + half >= end)
                continue;  /* a half wholly outside the range */
            __m256i all[4], odd[4], bytes[4];
#pragma GCC unroll 4
            for (size_t g = 0; g < G; g++)
                all[g] = odd[g] = bytes[g] = _mm256_setzero_si256();
            for (size_t j = 0; j < code_bytes; j++) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(block + j * B + half));
                __m256i high = _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble), low = _mm256_and_si256(x, nibble);
                const int widen = j % 31 == 30 || j + 1 == code_bytes;
#pragma GCC unroll 4
                for (size_t g = 0; g < G; g++) {
                    const uint8_t *t = tables + g * table_bytes + 64 * j;
                    bytes[g] = _mm256_add_epi8(bytes[g], _mm256_add_epi8(
                        _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)t), high),
                        _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(t + 32)), low)));
                    if (widen) {
                        all[g] = _mm256_add_epi16(all[g], bytes[g]);
                        odd[g] = _mm256_add_epi16(odd[g], _mm256_srli_epi16(bytes[g], 8));
                        bytes[g] = _mm256_setzero_si256();
                    }
                }
            }
#pragma GCC unroll 4
            for (size_t g = 0; g < G; g++) {
                const __m256i limit = _mm256_set1_epi16((short)(thresholds[g] < 0xFFFF ? thresholds[g] : 0xFFFF));
                __m256i even = _mm256_sub_epi16(all[g], _mm256_slli_epi16(odd[g], 8));
                /* x <= limit (unsigned) exactly when min(x, limit) == x; two mask bits per 16-bit lane. */
                uint32_t pass[2] = {
                    (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_min_epu16(even, limit), even)),
                    (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_min_epu16(odd[g], limit), odd[g])),
                };
                if (!(pass[0] | pass[1]))
                    continue;
                uint16_t sums[2][16];
                _mm256_storeu_si256((__m256i *)sums[0], even);
                _mm256_storeu_si256((__m256i *)sums[1], odd[g]);
                uint32_t *index = out_index + g * count + out_count[g];
                uint32_t *distance = out_distance + g * count + out_count[g];
                for (unsigned parity = 0; parity < 2; parity++) {
                    uint32_t bits = pass[parity] & 0x55555555u;
                    while (bits) {
                        unsigned lane = (unsigned)__builtin_ctz(bits) >> 1;
                        bits &= bits - 1;
                        size_t code = b * B + half + 2 * lane + parity;
                        if (code >= first && code < end) {
                            *index++ = (uint32_t)(code - first);
                            *distance++ = sums[parity][lane];
                        }
                    }
                }
                out_count[g] = (size_t)(index - (out_index + g * count));
            }
        }
    }
}

__attribute__((target("avx2")))
static size_t sqlitebin_hamming_blocked_many_avx2(const uint8_t *blocked, size_t first, size_t count,
                                                  size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                  const uint32_t *thresholds, uint32_t *out_index,
                                                  uint32_t *out_distance, size_t *out_count) {
#define SQLITEBIN_HAMMING_GROUP(G)                                                                         \
    sqlitebin_hamming_blocked_group_avx2(blocked, first, count, code_bytes, tables + q * 64 * code_bytes,  \
                                         G, thresholds + q, out_index + q * count,                         \
                                         out_distance + q * count, out_count + q)
    size_t total = 0, q = 0;
    for (size_t r = 0; r < query_count; r++)
        out_count[r] = 0;
    if (count == 0)
        return 0;
    for (; q + 4 <= query_count; q += 4)
        SQLITEBIN_HAMMING_GROUP(4);
    if (q + 2 <= query_count) {
        SQLITEBIN_HAMMING_GROUP(2);
        q += 2;
    }
    if (q < query_count)
        SQLITEBIN_HAMMING_GROUP(1);
#undef SQLITEBIN_HAMMING_GROUP
    for (size_t r = 0; r < query_count; r++)
        total += out_count[r];
    return total;
}

/* AVX2: half a block (32 codes) at a time, up to four queries per pass (sixteen YMM registers: two
 * accumulators per query and the four split rows), VPSHUFB on 16-entry tables written twice. */
__attribute__((target("avx2"), always_inline))
static inline void sqlitebin_nibble_many_group_avx2(const uint8_t *blocked, size_t first, size_t count,
                                                    size_t code_bytes, const uint8_t *tables, const size_t G,
                                                    const uint32_t *thresholds, uint32_t *out_index,
                                                    size_t *out_count) {
    const size_t B = SQLITEBIN_NIBBLE_BLOCK;
    const size_t end = first + count;
    const size_t table_bytes = 64 * code_bytes;
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    for (size_t b = first / B; b * B < end; b++) {
        const uint8_t *block = blocked + b * code_bytes * B;
        for (size_t half = 0; half < B; half += 32) {
            if (b * B + half + 32 <= first || b * B + half >= end)
                continue;  /* a half wholly outside the range */
            __m256i all[4], odd[4];
#pragma GCC unroll 4
            for (size_t g = 0; g < G; g++)
                all[g] = odd[g] = _mm256_setzero_si256();
            size_t j = 0;
            for (; j < code_bytes; j += 2) {
                const int pair = j + 1 < code_bytes;
                __m256i x0 = _mm256_loadu_si256((const __m256i *)(block + j * B + half));
                __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(x0, 4), nibble), l0 = _mm256_and_si256(x0, nibble);
                __m256i h1 = h0, l1 = l0;
                if (pair) {
                    __m256i x1 = _mm256_loadu_si256((const __m256i *)(block + (j + 1) * B + half));
                    h1 = _mm256_and_si256(_mm256_srli_epi16(x1, 4), nibble);
                    l1 = _mm256_and_si256(x1, nibble);
                }
#pragma GCC unroll 4
                for (size_t g = 0; g < G; g++) {
                    const uint8_t *t = tables + g * table_bytes + 64 * j;
                    __m256i s = _mm256_add_epi8(_mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)t), h0),
                                                _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(t + 32)), l0));
                    if (pair)
                        s = _mm256_add_epi8(s, _mm256_add_epi8(
                            _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(t + 64)), h1),
                            _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(t + 96)), l1)));
                    all[g] = _mm256_add_epi16(all[g], s);
                    odd[g] = _mm256_add_epi16(odd[g], _mm256_srli_epi16(s, 8));
                }
            }
#pragma GCC unroll 4
            for (size_t g = 0; g < G; g++) {
                if (thresholds[g] >= SQLITEBIN_NO_CANDIDATE)
                    continue;
                const __m256i limit = _mm256_set1_epi16((short)(uint16_t)thresholds[g]);
                __m256i even = _mm256_sub_epi16(all[g], _mm256_slli_epi16(odd[g], 8));
                /* x >= limit (unsigned) exactly when max(x, limit) == x; two mask bits per 16-bit lane. */
                uint32_t pass[2] = {
                    (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_max_epu16(even, limit), even)),
                    (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_max_epu16(odd[g], limit), odd[g])),
                };
                if (!(pass[0] | pass[1]))
                    continue;
                uint32_t *index = out_index + g * count + out_count[g];
                for (unsigned parity = 0; parity < 2; parity++) {
                    uint32_t bits = pass[parity] & 0x55555555u;
                    while (bits) {
                        unsigned lane = (unsigned)__builtin_ctz(bits) >> 1;
                        bits &= bits - 1;
                        size_t code = b * B + half + 2 * lane + parity;
                        if (code >= first && code < end)
                            *index++ = (uint32_t)(code - first);
                    }
                }
                out_count[g] = (size_t)(index - (out_index + g * count));
            }
        }
    }
}

__attribute__((target("avx2")))
static size_t sqlitebin_nibble_above_many_avx2(const uint8_t *blocked, size_t first, size_t count,
                                               size_t code_bytes, const uint8_t *tables, size_t query_count,
                                               const uint32_t *thresholds, uint32_t *out_index, size_t *out_count) {
    size_t total = 0, q = 0;
    for (size_t r = 0; r < query_count; r++)
        out_count[r] = 0;
    if (count == 0)
        return 0;
    for (; q + 4 <= query_count; q += 4)
        SQLITEBIN_NIBBLE_GROUP_CALL(sqlitebin_nibble_many_group_avx2, 4);
    if (q + 2 <= query_count) {
        SQLITEBIN_NIBBLE_GROUP_CALL(sqlitebin_nibble_many_group_avx2, 2);
        q += 2;
    }
    if (q < query_count)
        SQLITEBIN_NIBBLE_GROUP_CALL(sqlitebin_nibble_many_group_avx2, 1);
    for (size_t r = 0; r < query_count; r++)
        total += out_count[r];
    return total;
}

/* VBMI: VPERMB reads only the low 6 bits of each index, and the table repeats every 16 entries, so
 * neither nibble is masked (see SQLITEBIN_NIBBLE_VBMI_LOOKUP). */
#define SQLITEBIN_SPLIT_UNMASKED(x, high, low)                                                             \
    do {                                                                                                   \
        low = (x);                                                                                         \
        high = _mm512_srli_epi16(low, 4);                                                                  \
    } while (0)
#define SQLITEBIN_LOOKUP_PERMUTE(index, table) \
    _mm512_permutexvar_epi8(index, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(table))))

__attribute__((target(SQLITEBIN_AVX512_TARGET ",avx512vbmi"), always_inline))
static inline void sqlitebin_nibble_many_group_avx512vbmi(const uint8_t *blocked, size_t first, size_t count,
                                                          size_t code_bytes, const uint8_t *tables, const size_t G,
                                                          const uint32_t *thresholds, uint32_t *out_index,
                                                          size_t *out_count) {
    SQLITEBIN_NIBBLE_MANY_GROUP_BODY(SQLITEBIN_SPLIT_UNMASKED, SQLITEBIN_LOOKUP_PERMUTE)
}

__attribute__((target(SQLITEBIN_AVX512_TARGET ",avx512vbmi")))
static size_t sqlitebin_nibble_above_many_avx512vbmi(const uint8_t *blocked, size_t first, size_t count,
                                                     size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                     const uint32_t *thresholds, uint32_t *out_index,
                                                     size_t *out_count) {
#define SQLITEBIN_GROUP(G) SQLITEBIN_NIBBLE_GROUP_CALL(sqlitebin_nibble_many_group_avx512vbmi, G)
    SQLITEBIN_NIBBLE_MANY_GROUPS(SQLITEBIN_GROUP)
#undef SQLITEBIN_GROUP
}

#endif /* SQLITEBIN_HAVE_X86_KERNELS */

/* ---- batch asymmetric scan on 6-bit groups (VBMI) -------------------------- */

/* VPERMB looks up a full 64-entry table, so with VBMI a batch reads each code as 6-bit groups instead of
 * nibbles: every three code bytes (24 dimensions) are four lookups instead of six. The groups are cut from
 * the three rows of the scan-ready layout once per block for all the queries of a group (shifts and a bit
 * select), leaving each query four VPERMBs, whose tables come straight from memory, and the adds.
 *
 * Sextet tables: for each group g of 6 dimensions (4 per 3 code bytes, a last partial triple padded with
 * zero bytes), 64 uint8 entries, entry n for the dimensions of the group whose bits are set in n (bit 5 the
 * first dimension). Entries are at most SQLITEBIN_NIBBLE_LEVELS, so a triple's four add in 8 bits, and a
 * code's sum (at most 4 * 171 * 63 for 512 bytes) fits in 16 bits. */
static inline size_t sqlitebin_sextet_table_bytes(size_t code_bytes) {
    return 256 * ((code_bytes + 2) / 3);
}

#if SQLITEBIN_HAVE_X86_KERNELS
__attribute__((target(SQLITEBIN_AVX512_TARGET ",avx512vbmi"), always_inline))
static inline void sqlitebin_sextet_many_group_avx512vbmi(const uint8_t *blocked, size_t first, size_t count,
                                                          size_t code_bytes, const uint8_t *tables, const size_t G,
                                                          const uint32_t *thresholds, uint32_t *out_index,
                                                          size_t *out_count) {
    const size_t B = SQLITEBIN_NIBBLE_BLOCK;
    const size_t end = first + count;
    const size_t table_bytes = sqlitebin_sextet_table_bytes(code_bytes);
    const __m512i bits45 = _mm512_set1_epi8(0x30), bits2345 = _mm512_set1_epi8(0x3c);
    for (size_t b = first / B; b * B < end; b++) {
        const uint8_t *block = blocked + b * code_bytes * B;
        __m512i all[8], odd[8];
#pragma GCC unroll 8
        for (size_t g = 0; g < G; g++)
            all[g] = odd[g] = _mm512_setzero_si512();
        for (size_t j = 0; j < code_bytes; j += 3) {
            const __m512i x0 = _mm512_loadu_si512(block + j * B);
            const __m512i x1 = j + 1 < code_bytes ? _mm512_loadu_si512(block + (j + 1) * B) : _mm512_setzero_si512();
            const __m512i x2 = j + 2 < code_bytes ? _mm512_loadu_si512(block + (j + 2) * B) : _mm512_setzero_si512();
            /* Only the low 6 bits of each byte index VPERMB, so bits shifted in from the neighbouring byte of
             * a 16-bit lane land where they are ignored or are replaced by the select (0xE4: c ? a : b). */
            const __m512i g0 = _mm512_srli_epi16(x0, 2);
            const __m512i g1 = _mm512_ternarylogic_epi32(_mm512_slli_epi16(x0, 4), _mm512_srli_epi16(x1, 4), bits45, 0xE4);
            const __m512i g2 = _mm512_ternarylogic_epi32(_mm512_slli_epi16(x1, 2), _mm512_srli_epi16(x2, 6), bits2345, 0xE4);
            const __m512i g3 = x2;
#pragma GCC unroll 8
            for (size_t g = 0; g < G; g++) {
                const uint8_t *t = tables + g * table_bytes + 256 * (j / 3);
                __m512i s = _mm512_add_epi8(
                    _mm512_add_epi8(_mm512_permutexvar_epi8(g0, _mm512_loadu_si512(t)),
                                    _mm512_permutexvar_epi8(g1, _mm512_loadu_si512(t + 64))),
                    _mm512_add_epi8(_mm512_permutexvar_epi8(g2, _mm512_loadu_si512(t + 128)),
                                    _mm512_permutexvar_epi8(g3, _mm512_loadu_si512(t + 192))));
                all[g] = _mm512_add_epi16(all[g], s);
                odd[g] = _mm512_add_epi16(odd[g], _mm512_srli_epi16(s, 8));
            }
        }
        SQLITEBIN_NIBBLE_PASS_MANY();
    }
}

__attribute__((target(SQLITEBIN_AVX512_TARGET ",avx512vbmi")))
static size_t sqlitebin_sextet_above_many_avx512vbmi(const uint8_t *blocked, size_t first, size_t count,
                                                     size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                     const uint32_t *thresholds, uint32_t *out_index,
                                                     size_t *out_count) {
#define SQLITEBIN_GROUP(G)                                                                                 \
    sqlitebin_sextet_many_group_avx512vbmi(blocked, first, count, code_bytes,                              \
                                           tables + q * sqlitebin_sextet_table_bytes(code_bytes), G,       \
                                           thresholds + q, out_index + q * count, out_count + q)
    SQLITEBIN_NIBBLE_MANY_GROUPS(SQLITEBIN_GROUP)
#undef SQLITEBIN_GROUP
}
#endif

/* The same on one code at a time, for tests and for builds without the vector kernels. */
static size_t sqlitebin_sextet_above_many_portable(const uint8_t *blocked, size_t first, size_t count,
                                                   size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                   const uint32_t *thresholds, uint32_t *out_index,
                                                   size_t *out_count) {
    const size_t B = SQLITEBIN_NIBBLE_BLOCK, table_bytes = sqlitebin_sextet_table_bytes(code_bytes);
    size_t total = 0;
    for (size_t q = 0; q < query_count; q++) {
        const uint8_t *tq = tables + q * table_bytes;
        out_count[q] = 0;
        if (thresholds[q] >= SQLITEBIN_NO_CANDIDATE)
            continue;
        for (size_t i = 0; i < count; i++) {
            size_t code = first + i;
            const uint8_t *c = blocked + (code / B) * code_bytes * B + code % B;
            uint32_t sum = 0;
            for (size_t j = 0; j < code_bytes; j += 3) {
                uint32_t bits = (uint32_t)c[j * B] << 16;
                if (j + 1 < code_bytes) bits |= (uint32_t)c[(j + 1) * B] << 8;
                if (j + 2 < code_bytes) bits |= c[(j + 2) * B];
                for (unsigned g = 0; g < 4; g++)
                    sum += tq[256 * (j / 3) + 64 * g + ((bits >> (18 - 6 * g)) & 63)];
            }
            if (sum >= thresholds[q])
                out_index[q * count + out_count[q]++] = (uint32_t)i;
        }
        total += out_count[q];
    }
    return total;
}

static void sqlitebin_hamming_nibble_tables(const uint8_t *query, size_t code_bytes, uint8_t *tables) {
    for (size_t j = 0; j < code_bytes; j++)
        for (unsigned n = 0; n < 16; n++) {
            uint8_t high = (uint8_t)sqlitebin_swar_popcount64(n ^ (query[j] >> 4u));
            uint8_t low = (uint8_t)sqlitebin_swar_popcount64(n ^ (query[j] & 15u));
            tables[64 * j + n] = tables[64 * j + 16 + n] = high;
            tables[64 * j + 32 + n] = tables[64 * j + 48 + n] = low;
        }
}

/* The same one code at a time, for tests and for builds without the vector kernels. */
static size_t sqlitebin_hamming_blocked_many_portable(const uint8_t *blocked, size_t first, size_t count,
                                                      size_t code_bytes, const uint8_t *tables, size_t query_count,
                                                      const uint32_t *thresholds, uint32_t *out_index,
                                                      uint32_t *out_distance, size_t *out_count) {
    const size_t B = SQLITEBIN_NIBBLE_BLOCK;
    size_t total = 0;
    for (size_t q = 0; q < query_count; q++) {
        const uint8_t *tq = tables + q * 64 * code_bytes;
        out_count[q] = 0;
        for (size_t i = 0; i < count; i++) {
            size_t code = first + i;
            const uint8_t *c = blocked + (code / B) * code_bytes * B + code % B;
            uint32_t d = 0;
            for (size_t j = 0; j < code_bytes; j++)
                d += (uint32_t)tq[64 * j + (c[j * B] >> 4)] + tq[64 * j + 32 + (c[j * B] & 15)];
            if (d <= thresholds[q]) {
                out_index[q * count + out_count[q]] = (uint32_t)i;
                out_distance[q * count + out_count[q]++] = d;
            }
        }
        total += out_count[q];
    }
    return total;
}

#if !SQLITEBIN_HAVE_X86_KERNELS /* not x86-64: the vector kernels' names stand for the portable ones, never chosen (see kernels.h) */
#  define sqlitebin_hamming_below_popcnt sqlitebin_hamming_below_portable
#  define sqlitebin_hamming_below_avx2 sqlitebin_hamming_below_portable
#  define sqlitebin_hamming_below_avx512 sqlitebin_hamming_below_portable
#  define sqlitebin_nibble_above_avx2 sqlitebin_nibble_above_portable
#  define sqlitebin_nibble_above_avx512 sqlitebin_nibble_above_portable
#  define sqlitebin_nibble_above_avx512vbmi sqlitebin_nibble_above_portable
#  define sqlitebin_hamming_below_many_popcnt sqlitebin_hamming_below_many_portable
#  define sqlitebin_hamming_below_many_avx2 sqlitebin_hamming_below_many_portable
#  define sqlitebin_hamming_below_many_avx512 sqlitebin_hamming_below_many_portable
#  define sqlitebin_nibble_above_many_avx2 sqlitebin_nibble_above_many_portable
#  define sqlitebin_nibble_above_many_avx512 sqlitebin_nibble_above_many_portable
#  define sqlitebin_nibble_above_many_avx512vbmi sqlitebin_nibble_above_many_portable
#  define sqlitebin_sextet_above_many_avx512vbmi sqlitebin_sextet_above_many_portable
#  define sqlitebin_hamming_blocked_many_avx2 sqlitebin_hamming_blocked_many_portable
static int sqlitebin_cpu_has_avx512vbmi(void) { return 0; }
#endif

#endif
