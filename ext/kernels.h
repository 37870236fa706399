/*
 * Compute kernels for sqlitebin (popcount, and the asymmetric scan's nibble
 * lookups), chosen once at load time from what the CPU reports (never from
 * compile-time flags), so the same binary runs on any x86-64 CPU and uses
 * POPCNT or AVX2 where they exist.
 *
 * These live in C rather than Cython because each kernel needs a per-function
 * `target` attribute, which Cython cannot express. Every load goes through
 * memcpy (or an unaligned vector load) because BLOB pointers handed out by
 * SQLite have no alignment guarantee.
 */
#ifndef SQLITEBIN_KERNELS_H
#define SQLITEBIN_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#  define SQLITEBIN_X86_64 1
#  include <immintrin.h>
#else
#  define SQLITEBIN_X86_64 0
#endif

typedef uint64_t (*sqlitebin_hamming_fn)(const uint8_t *a, const uint8_t *b, size_t n);
typedef uint64_t (*sqlitebin_popcount_fn)(const uint8_t *a, size_t n);
/* Distances from `query` to `count` consecutive codes of `code_bytes` each, into `out`. */
typedef void (*sqlitebin_hamming_block_fn)(const uint8_t *codes, size_t count, size_t code_bytes,
                                           const uint8_t *query, uint32_t *out);
/* Approximate asymmetric sums of blocks of 32 transposed codes (see sqlitebin_nibble_sums_avx2). */
typedef void (*sqlitebin_nibble_sums_fn)(const uint8_t *blocked, size_t blocks, size_t code_bytes,
                                         const uint8_t *tables, uint16_t *out);

static inline uint64_t sqlitebin_load64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* Tail of 0..7 bytes, zero-padded into one word. */
static inline uint64_t sqlitebin_load_tail(const uint8_t *p, size_t n) {
    uint64_t w = 0;
    memcpy(&w, p, n);
    return w;
}

static inline uint64_t sqlitebin_swar_popcount64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return (x * 0x0101010101010101ULL) >> 56;
}

/* ---- portable ---------------------------------------------------------- */

static uint64_t sqlitebin_hamming_portable(const uint8_t *a, const uint8_t *b, size_t n) {
    uint64_t total = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        total += sqlitebin_swar_popcount64(sqlitebin_load64(a + i) ^ sqlitebin_load64(b + i));
    if (i < n)
        total += sqlitebin_swar_popcount64(sqlitebin_load_tail(a + i, n - i) ^ sqlitebin_load_tail(b + i, n - i));
    return total;
}

static uint64_t sqlitebin_popcount_portable(const uint8_t *a, size_t n) {
    uint64_t total = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        total += sqlitebin_swar_popcount64(sqlitebin_load64(a + i));
    if (i < n)
        total += sqlitebin_swar_popcount64(sqlitebin_load_tail(a + i, n - i));
    return total;
}

/* Lay codes out for the nibble scan: block b of 32 codes holds, for each byte
 * position j, byte j of its 32 codes side by side. The last block is zero-padded. */
static void sqlitebin_transpose_blocks(const uint8_t *codes, size_t count, size_t code_bytes, uint8_t *out) {
    size_t blocks = (count + 31) / 32;
    memset(out, 0, blocks * 32 * code_bytes);
    for (size_t i = 0; i < count; i++) {
        uint8_t *block = out + (i / 32) * 32 * code_bytes + (i % 32);
        for (size_t j = 0; j < code_bytes; j++)
            block[j * 32] = codes[i * code_bytes + j];
    }
}

static void sqlitebin_hamming_block_portable(const uint8_t *codes, size_t count, size_t code_bytes,
                                             const uint8_t *query, uint32_t *out) {
    for (size_t i = 0; i < count; i++)
        out[i] = (uint32_t)sqlitebin_hamming_portable(codes + i * code_bytes, query, code_bytes);
}

#if SQLITEBIN_X86_64 && (defined(__GNUC__) || defined(__clang__))
#  define SQLITEBIN_HAVE_X86_KERNELS 1

/* ---- POPCNT ------------------------------------------------------------ */

__attribute__((target("popcnt")))
static uint64_t sqlitebin_hamming_popcnt(const uint8_t *a, const uint8_t *b, size_t n) {
    uint64_t total = 0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        total += (uint64_t)__builtin_popcountll(sqlitebin_load64(a + i) ^ sqlitebin_load64(b + i));
        total += (uint64_t)__builtin_popcountll(sqlitebin_load64(a + i + 8) ^ sqlitebin_load64(b + i + 8));
        total += (uint64_t)__builtin_popcountll(sqlitebin_load64(a + i + 16) ^ sqlitebin_load64(b + i + 16));
        total += (uint64_t)__builtin_popcountll(sqlitebin_load64(a + i + 24) ^ sqlitebin_load64(b + i + 24));
    }
    for (; i + 8 <= n; i += 8)
        total += (uint64_t)__builtin_popcountll(sqlitebin_load64(a + i) ^ sqlitebin_load64(b + i));
    if (i < n)
        total += (uint64_t)__builtin_popcountll(sqlitebin_load_tail(a + i, n - i) ^ sqlitebin_load_tail(b + i, n - i));
    return total;
}

__attribute__((target("popcnt")))
static uint64_t sqlitebin_popcount_popcnt(const uint8_t *a, size_t n) {
    uint64_t total = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        total += (uint64_t)__builtin_popcountll(sqlitebin_load64(a + i));
    if (i < n)
        total += (uint64_t)__builtin_popcountll(sqlitebin_load_tail(a + i, n - i));
    return total;
}

/* The scan's inner loop: the query's words stay in registers and the common
 * 256-bit code is fully unrolled, which a call per code through a function
 * pointer cannot do. */
__attribute__((target("popcnt")))
static void sqlitebin_hamming_block_popcnt(const uint8_t *codes, size_t count, size_t code_bytes,
                                           const uint8_t *query, uint32_t *out) {
    if (code_bytes == 32) {
        const uint64_t q0 = sqlitebin_load64(query), q1 = sqlitebin_load64(query + 8),
                       q2 = sqlitebin_load64(query + 16), q3 = sqlitebin_load64(query + 24);
        for (size_t i = 0; i < count; i++) {
            const uint8_t *c = codes + i * 32;
            out[i] = (uint32_t)(__builtin_popcountll(sqlitebin_load64(c) ^ q0)
                              + __builtin_popcountll(sqlitebin_load64(c + 8) ^ q1)
                              + __builtin_popcountll(sqlitebin_load64(c + 16) ^ q2)
                              + __builtin_popcountll(sqlitebin_load64(c + 24) ^ q3));
        }
        return;
    }
    for (size_t i = 0; i < count; i++)
        out[i] = (uint32_t)sqlitebin_hamming_popcnt(codes + i * code_bytes, query, code_bytes);
}

/* ---- AVX2 -------------------------------------------------------------- */

/* Nibble lookup with vpshufb, summed per 64-bit lane with vpsadbw (the method
 * of Mula, Kurz and Lemire). Worth it only on long vectors: below 256 bytes
 * four POPCNT instructions per 32 bytes win, so short inputs fall through. */
__attribute__((target("avx2,popcnt")))
static uint64_t sqlitebin_hamming_avx2(const uint8_t *a, const uint8_t *b, size_t n) {
    if (n < 256)
        return sqlitebin_hamming_popcnt(a, b, n);
    const __m256i lookup = _mm256_setr_epi8(
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    __m256i acc = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i x = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + i)),
                                     _mm256_loadu_si256((const __m256i *)(b + i)));
        __m256i lo = _mm256_and_si256(x, low_mask);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low_mask);
        __m256i counts = _mm256_add_epi8(_mm256_shuffle_epi8(lookup, lo), _mm256_shuffle_epi8(lookup, hi));
        acc = _mm256_add_epi64(acc, _mm256_sad_epu8(counts, _mm256_setzero_si256()));
    }
    uint64_t total = (uint64_t)_mm256_extract_epi64(acc, 0) + (uint64_t)_mm256_extract_epi64(acc, 1)
                   + (uint64_t)_mm256_extract_epi64(acc, 2) + (uint64_t)_mm256_extract_epi64(acc, 3);
    return total + sqlitebin_hamming_popcnt(a + i, b + i, n - i);
}

__attribute__((target("avx2,popcnt")))
static void sqlitebin_hamming_block_avx2(const uint8_t *codes, size_t count, size_t code_bytes,
                                         const uint8_t *query, uint32_t *out) {
    if (code_bytes < 256) {
        sqlitebin_hamming_block_popcnt(codes, count, code_bytes, query, out);
        return;
    }
    for (size_t i = 0; i < count; i++)
        out[i] = (uint32_t)sqlitebin_hamming_avx2(codes + i * code_bytes, query, code_bytes);
}

/* Approximate asymmetric sums, 32 codes at a time: `tables` holds two 16-entry
 * uint8 tables per code byte (high nibble, then low nibble), each written twice
 * so one 32-byte load fills both AVX2 lanes; out[i] is the sum of code i's
 * 2 * code_bytes entries (at most 2 * 128 * 255, so code_bytes <= 128). */
__attribute__((target("avx2")))
static void sqlitebin_nibble_sums_avx2(const uint8_t *blocked, size_t blocks, size_t code_bytes,
                                       const uint8_t *tables, uint16_t *out) {
    const __m256i mask = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    for (size_t b = 0; b < blocks; b++) {
        const uint8_t *block = blocked + b * code_bytes * 32;
        __m256i acc_low = zero, acc_high = zero;
        for (size_t j = 0; j < code_bytes; j++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(block + j * 32));
            __m256i high = _mm256_and_si256(_mm256_srli_epi16(x, 4), mask);
            __m256i low = _mm256_and_si256(x, mask);
            __m256i a = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(tables + 64 * j)), high);
            __m256i c = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(tables + 64 * j + 32)), low);
            acc_low = _mm256_add_epi16(acc_low, _mm256_add_epi16(_mm256_unpacklo_epi8(a, zero), _mm256_unpacklo_epi8(c, zero)));
            acc_high = _mm256_add_epi16(acc_high, _mm256_add_epi16(_mm256_unpackhi_epi8(a, zero), _mm256_unpackhi_epi8(c, zero)));
        }
        /* unpacklo takes bytes 0-7 of each 128-bit lane: acc_low holds codes 0-7 and
         * 16-23, acc_high codes 8-15 and 24-31. */
        uint16_t low_sums[16], high_sums[16];
        _mm256_storeu_si256((__m256i *)low_sums, acc_low);
        _mm256_storeu_si256((__m256i *)high_sums, acc_high);
        uint16_t *o = out + b * 32;
        memcpy(o, low_sums, 16);
        memcpy(o + 8, high_sums, 16);
        memcpy(o + 16, low_sums + 8, 16);
        memcpy(o + 24, high_sums + 8, 16);
    }
}

static int sqlitebin_cpu_has_popcnt(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("popcnt");
}

static int sqlitebin_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

#else
#  define SQLITEBIN_HAVE_X86_KERNELS 0
#endif

#endif
