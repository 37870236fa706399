/*
 * A small shared library over ext/scan_kernels.h, for tests/test_kernels.py:
 * it exposes every kernel level directly (the extension itself exports only
 * its SQLite entry point), so the tests can hand each kernel edge cases the
 * SQL interface cannot reach (unaligned pointers, any threshold, any range of
 * the scan-ready layout) and compare with NumPy. Levels: 0 portable, 1 popcnt,
 * 2 avx2, 3 avx512. A level the CPU lacks is refused (-1), never run. Built
 * with -DSQLITEBIN_NO_X86 it holds only what a non-x86 build gets.
 */
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE
#endif
#include <stdlib.h>
#include "scan_kernels.h"
#include "scan_threads.h"

int harness_supported(int level) {
    switch (level) {
    case 0: return 1;
    case 1: return sqlitebin_cpu_has_popcnt();
    case 2: return sqlitebin_cpu_has_avx2();
    case 3: return sqlitebin_cpu_has_avx512();
    case 4: return sqlitebin_cpu_has_avx512();  /* the nibble scan with VBMI, checked again there */
    }
    return 0;
}

long harness_hamming_below(int level, const uint8_t *codes, size_t count, size_t code_bytes, const uint8_t *query,
                           uint32_t threshold, uint32_t *out_index, uint32_t *out_distance) {
    if (!harness_supported(level))
        return -1;
#if SQLITEBIN_HAVE_X86_KERNELS
    if (level == 1) return (long)sqlitebin_hamming_below_popcnt(codes, count, code_bytes, query, threshold, out_index, out_distance);
    if (level == 2) return (long)sqlitebin_hamming_below_avx2(codes, count, code_bytes, query, threshold, out_index, out_distance);
    if (level == 3) return (long)sqlitebin_hamming_below_avx512(codes, count, code_bytes, query, threshold, out_index, out_distance);
#endif
    return (long)sqlitebin_hamming_below_portable(codes, count, code_bytes, query, threshold, out_index, out_distance);
}

long harness_hamming(int level, const uint8_t *a, const uint8_t *b, size_t n) {
    if (!harness_supported(level))
        return -1;
#if SQLITEBIN_HAVE_X86_KERNELS
    if (level == 1) return (long)sqlitebin_hamming_popcnt(a, b, n);
    if (level == 2) return (long)sqlitebin_hamming_avx2(a, b, n);
    if (level == 3) return (long)sqlitebin_hamming_avx512(a, b, n);
#endif
    return (long)sqlitebin_hamming_portable(a, b, n);
}

long harness_popcount(int level, const uint8_t *a, size_t n) {
    if (!harness_supported(level))
        return -1;
#if SQLITEBIN_HAVE_X86_KERNELS
    if (level == 1 || level == 2) return (long)sqlitebin_popcount_popcnt(a, n);
    if (level == 3) return (long)sqlitebin_popcount_avx512(a, n);
#endif
    return (long)sqlitebin_popcount_portable(a, n);
}

/* Nibble kernels: 0 the portable one, 2 AVX2, 3 AVX-512, 4 AVX-512 with VBMI; 1 has none (-1). */
long harness_nibble_above(int level, const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                          const uint8_t *tables, uint32_t threshold, uint32_t *out_index) {
    if (level == 0)
        return (long)sqlitebin_nibble_above_portable(blocked, first, count, code_bytes, tables, threshold, out_index);
    if (level < 2 || !harness_supported(level))
        return -1;
#if SQLITEBIN_HAVE_X86_KERNELS
    if (level == 2) return (long)sqlitebin_nibble_above_avx2(blocked, first, count, code_bytes, tables, threshold, out_index);
    if (level == 4) return sqlitebin_cpu_has_avx512vbmi() ? (long)sqlitebin_nibble_above_avx512vbmi(blocked, first, count, code_bytes, tables, threshold, out_index) : -1;
    return (long)sqlitebin_nibble_above_avx512(blocked, first, count, code_bytes, tables, threshold, out_index);
#else
    return -1;
#endif
}

/* The batch kernels at each level: several queries over one block of codes. */
long harness_hamming_below_many(int level, const uint8_t *codes, size_t count, size_t code_bytes,
                                const uint8_t *queries, size_t query_count, const uint32_t *thresholds,
                                uint32_t *out_index, uint32_t *out_distance, size_t *out_count) {
    sqlitebin_hamming_below_many_fn kernel = sqlitebin_hamming_below_many_portable;
    if (!harness_supported(level))
        return -1;
#if SQLITEBIN_HAVE_X86_KERNELS
    if (level == 1) kernel = sqlitebin_hamming_below_many_popcnt;
    if (level == 2) kernel = sqlitebin_hamming_below_many_avx2;
    if (level == 3) kernel = sqlitebin_hamming_below_many_avx512;
#endif
    return (long)kernel(codes, count, code_bytes, queries, query_count, thresholds, out_index, out_distance,
                        out_count);
}

/* Levels as harness_nibble_above: 0 portable, 2 AVX2, 3 AVX-512, 4 AVX-512 with VBMI. */
long harness_nibble_above_many(int level, const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                               const uint8_t *tables, size_t query_count, const uint32_t *thresholds,
                               uint32_t *out_index, size_t *out_count) {
    sqlitebin_nibble_above_many_fn kernel = sqlitebin_nibble_above_many_portable;
    if (level == 1 || !harness_supported(level))
        return -1;
#if SQLITEBIN_HAVE_X86_KERNELS
    if (level == 2) kernel = sqlitebin_nibble_above_many_avx2;
    if (level == 3) kernel = sqlitebin_nibble_above_many_avx512;
    if (level == 4) {
        if (!sqlitebin_cpu_has_avx512vbmi())
            return -1;
        kernel = sqlitebin_nibble_above_many_avx512vbmi;
    }
#endif
    return (long)kernel(blocked, first, count, code_bytes, tables, query_count, thresholds, out_index, out_count);
}

/* The batch scan on 6-bit groups: 0 one code at a time, 4 AVX-512 VBMI. */
long harness_sextet_above_many(int level, const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                               const uint8_t *tables, size_t query_count, const uint32_t *thresholds,
                               uint32_t *out_index, size_t *out_count) {
    if (level == 0)
        return (long)sqlitebin_sextet_above_many_portable(blocked, first, count, code_bytes, tables, query_count,
                                                          thresholds, out_index, out_count);
    if (level != 4 || !harness_supported(level) || !sqlitebin_cpu_has_avx512vbmi())
        return -1;
    return (long)sqlitebin_sextet_above_many_avx512vbmi(blocked, first, count, code_bytes, tables, query_count,
                                                        thresholds, out_index, out_count);
}

/* Hamming on the scan-ready layout with per-query nibble popcount tables: 0 one code at a time, 2 AVX2. */
long harness_hamming_blocked_many(int level, const uint8_t *blocked, size_t first, size_t count, size_t code_bytes,
                                  const uint8_t *queries, size_t query_count, const uint32_t *thresholds,
                                  uint32_t *out_index, uint32_t *out_distance, size_t *out_count) {
    if ((level != 0 && level != 2) || !harness_supported(level))
        return -1;
    if (query_count == 0 || code_bytes == 0)
        return 0;
    uint8_t *tables = malloc(query_count * 64 * code_bytes);
    if (tables == NULL)
        return -2;
    for (size_t q = 0; q < query_count; q++)
        sqlitebin_hamming_nibble_tables(queries + q * code_bytes, code_bytes, tables + q * 64 * code_bytes);
    long m = (long)(level == 0 ? sqlitebin_hamming_blocked_many_portable : sqlitebin_hamming_blocked_many_avx2)(
        blocked, first, count, code_bytes, tables, query_count, thresholds, out_index, out_distance, out_count);
    free(tables);
    return m;
}

void harness_transpose(const uint8_t *codes, size_t count, size_t code_bytes, uint8_t *out) {
    sqlitebin_transpose_blocks(codes, count, code_bytes, out);
}

long harness_idle_cpus(void) {
    return sqlitebin_idle_cpus();
}

long harness_idle_cpus_recent(void) {
    return sqlitebin_idle_cpus_recent();
}

int64_t harness_claim_all(int64_t units) {
    sqlitebin_work_queue queue = {0, units};
    int64_t claimed = 0;
    while (sqlitebin_work_claim(&queue) < queue.units)
        claimed++;
    return claimed;
}

void harness_cpu_features(char *out, size_t size) {
    sqlitebin_cpu_features(out, size);
}

long harness_hamming_strided(const uint8_t *code, size_t stride, const uint8_t *query, size_t n) {
    return (long)sqlitebin_hamming_strided(code, stride, query, n);
}

/* Advising huge pages is only advice: the buffer must read back unchanged. */
int harness_advise_huge_pages(uint8_t *buffer, size_t size) {
    sqlitebin_advise_huge_pages(buffer, size);
    return buffer[0];
}

int harness_has_x86_kernels(void) {
    return SQLITEBIN_HAVE_X86_KERNELS;
}
