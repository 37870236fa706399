/*
 * A program over ext/scan_kernels.h for tests/test_kernels.py, built with
 * AddressSanitizer and run with detect_stack_use_after_return=1: that mode moves
 * each instrumented frame to ASan's fake stack, which does not keep the 64-byte
 * alignment GCC may give a local array written by a 512-bit store (it then emits
 * an aligned store, which faults there). It runs every vector scan kernel the CPU
 * has on every code size with every code emitted, so each emit path runs. Exits 0
 * when every call emitted every code, 1 otherwise; prints "skip" without AVX2.
 */
#include <stdio.h>
#include <stdlib.h>
#include "scan_kernels.h"

#define COUNT 64        /* one block of the scan-ready layout */
#define LONGEST 130     /* code sizes 1..130 bytes: the 32-byte step, whole 64-byte words and tails */

static int check(const char *kernel, size_t code_bytes, size_t emitted) {
    if (emitted == COUNT) return 0;
    printf("%s emitted %zu of %d codes of %zu bytes\n", kernel, emitted, COUNT, code_bytes);
    return 1;
}

int main(void) {
    if (!sqlitebin_cpu_has_avx2()) {
        puts("skip: this CPU has no AVX2");
        return 0;
    }
    uint8_t *codes = malloc(COUNT * LONGEST), *query = malloc(LONGEST);
    uint8_t *blocked = calloc(COUNT, LONGEST), *tables = calloc(64, LONGEST);
    uint32_t *index = malloc(COUNT * sizeof(uint32_t)), *distance = malloc(COUNT * sizeof(uint32_t));
    for (size_t i = 0; i < COUNT * LONGEST; i++) codes[i] = (uint8_t)((i * 2654435761u) >> 13);
    for (size_t i = 0; i < LONGEST; i++) query[i] = (uint8_t)(i * 40503u);
    int failures = 0;
    for (size_t code_bytes = 1; code_bytes <= LONGEST; code_bytes++) {
        /* Threshold UINT32_MAX (Hamming) and 0 (nibble sums): every code passes. */
        failures += check("hamming_below_avx2", code_bytes, sqlitebin_hamming_below_avx2(
            codes, COUNT, code_bytes, query, UINT32_MAX, index, distance));
        failures += check("nibble_above_avx2", code_bytes, sqlitebin_nibble_above_avx2(
            blocked, 0, COUNT, code_bytes, tables, 0, index));
        if (sqlitebin_cpu_has_avx512()) {
            failures += check("hamming_below_avx512", code_bytes, sqlitebin_hamming_below_avx512(
                codes, COUNT, code_bytes, query, UINT32_MAX, index, distance));
            failures += check("nibble_above_avx512", code_bytes, sqlitebin_nibble_above_avx512(
                blocked, 0, COUNT, code_bytes, tables, 0, index));
        }
        if (sqlitebin_cpu_has_avx512() && sqlitebin_cpu_has_avx512vbmi())
            failures += check("nibble_above_avx512vbmi", code_bytes, sqlitebin_nibble_above_avx512vbmi(
                blocked, 0, COUNT, code_bytes, tables, 0, index));
    }
    free(codes);
    free(query);
    free(blocked);
    free(tables);
    free(index);
    free(distance);
    printf("%s\n", failures ? "failed" : "ok");
    return failures != 0;
}
