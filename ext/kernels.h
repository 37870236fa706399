/*
 * Compute kernels for sqlitebin (popcount, and the asymmetric scan's nibble
 * lookups), chosen once at load time from what the CPU reports (never from
 * compile-time flags), so the same binary runs on any x86-64 CPU and uses
 * POPCNT, AVX2 or AVX-512 (VPOPCNTDQ + BW) where they exist. The scan's fused
 * kernels (distance and threshold in one pass) are in scan_kernels.h.
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

/* SQLITEBIN_NO_X86 builds what a non-x86 CPU gets, on x86-64 too (the tests use it). */
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(SQLITEBIN_NO_X86)
#  define SQLITEBIN_X86_64 1
#  include <immintrin.h>
#else
#  define SQLITEBIN_X86_64 0
#endif

typedef uint64_t (*sqlitebin_hamming_fn)(const uint8_t *a, const uint8_t *b, size_t n);
typedef uint64_t (*sqlitebin_popcount_fn)(const uint8_t *a, size_t n);

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

/* ---- AVX-512 (F, BW, VL, VPOPCNTDQ) ----------------------------------- */

#define SQLITEBIN_AVX512_TARGET "avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,popcnt,bmi,bmi2"

/* 64 bytes a step with VPOPCNTQ; the tail through a byte-masked load, which
 * never touches memory past the end. */
__attribute__((target(SQLITEBIN_AVX512_TARGET)))
static uint64_t sqlitebin_hamming_avx512(const uint8_t *a, const uint8_t *b, size_t n) {
    __m512i acc = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(a + i),
                                                                         _mm512_loadu_si512(b + i))));
    if (i < n) {
        __mmask64 tail = _bzhi_u64(~0ULL, (unsigned)(n - i));
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, a + i),
                                                                         _mm512_maskz_loadu_epi8(tail, b + i))));
    }
    return (uint64_t)_mm512_reduce_add_epi64(acc);
}

__attribute__((target(SQLITEBIN_AVX512_TARGET)))
static uint64_t sqlitebin_popcount_avx512(const uint8_t *a, size_t n) {
    __m512i acc = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_loadu_si512(a + i)));
    if (i < n)
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_maskz_loadu_epi8(_bzhi_u64(~0ULL, (unsigned)(n - i)), a + i)));
    return (uint64_t)_mm512_reduce_add_epi64(acc);
}

static int sqlitebin_cpu_has_popcnt(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("popcnt");
}

static int sqlitebin_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

/* The AVX-512 kernels use F, BW (byte masks, 16-bit compares), VL and VPOPCNTDQ,
 * and BMI1/BMI2 (TZCNT, BZHI), which every CPU with those has but is checked too.
 * __builtin_cpu_supports also checks that the OS saves the ZMM and mask
 * registers (XCR0), so a kernel with AVX-512 disabled by the OS is never chosen. */
static int sqlitebin_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return sqlitebin_cpu_has_avx2() && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2")
        && __builtin_cpu_supports("avx512f")
        && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq");
}

/* What the CPU reports, for sqlitebin_debug(): the features the kernels care about. */
static void sqlitebin_cpu_features(char *out, size_t size) {
    static const char *const names[] = {"popcnt", "avx2", "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512vpopcntdq"};
    size_t used = 0;
    __builtin_cpu_init();
    out[0] = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int has = 0;
        switch (i) {  /* __builtin_cpu_supports needs a string literal */
        case 0: has = __builtin_cpu_supports("popcnt"); break;
        case 1: has = __builtin_cpu_supports("avx2"); break;
        case 2: has = __builtin_cpu_supports("bmi2"); break;
        case 3: has = __builtin_cpu_supports("avx512f"); break;
        case 4: has = __builtin_cpu_supports("avx512bw"); break;
        case 5: has = __builtin_cpu_supports("avx512vl"); break;
        case 6: has = __builtin_cpu_supports("avx512vpopcntdq"); break;
        }
        size_t len = strlen(names[i]);
        if (has && used + len + 2 < size) {
            if (used) out[used++] = ' ';
            memcpy(out + used, names[i], len + 1);
            used += len;
        }
    }
    if (!used && size > 8) memcpy(out, "baseline", 9);
}

#else
#  define SQLITEBIN_HAVE_X86_KERNELS 0
/* Not x86-64: the vector kernels' names stand for the portable ones, so code that
 * names them builds everywhere; the CPU checks below never let them be chosen. */
#  define sqlitebin_hamming_popcnt sqlitebin_hamming_portable
#  define sqlitebin_hamming_avx2 sqlitebin_hamming_portable
#  define sqlitebin_hamming_avx512 sqlitebin_hamming_portable
#  define sqlitebin_popcount_popcnt sqlitebin_popcount_portable
#  define sqlitebin_popcount_avx512 sqlitebin_popcount_portable
static int sqlitebin_cpu_has_popcnt(void) { return 0; }
static int sqlitebin_cpu_has_avx2(void) { return 0; }
static int sqlitebin_cpu_has_avx512(void) { return 0; }
static void sqlitebin_cpu_features(char *out, size_t size) {
    if (size > 14) memcpy(out, "not x86-64", 11);
    else if (size) out[0] = 0;
}
#endif

#endif
