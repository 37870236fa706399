"""The scan kernels at every level (portable, popcnt, avx2, avx512) against NumPy.

Two ways in. The kernels themselves, through tests/kernel_harness.c compiled into a small library (the extension
exports only its SQLite entry point): edge cases the SQL interface cannot reach, such as unaligned pointers, any
threshold and any range of the scan-ready layout. And the `sqlitebin` virtual table, loaded
with SQLITEBIN_POPCOUNT capping the kernel: results must match NumPy and be identical across levels. A level the
CPU lacks is skipped, never run. Besides these, tests/kernel_fake_stack.c runs each vector kernel under
AddressSanitizer's use-after-return mode, whose fake stack does not keep the alignment GCC may assume.
"""

import ctypes
import json
import os
import shutil
import subprocess

import apsw
import numpy as np
import pytest

import sqlitebin

HERE = os.path.dirname(os.path.abspath(__file__))
EXT = os.path.join(os.path.dirname(HERE), "ext")
LEVELS = ["portable", "popcnt", "avx2", "avx512"]
NIBBLE_LEVELS = {"portable": 0, "avx2": 2, "avx512": 3, "avx512vbmi": 4}
NO_CANDIDATE = 0x10000
NIBBLE_TOP = 63  # SQLITEBIN_NIBBLE_LEVELS: the largest nibble table entry
BLOCK = 64  # codes per block of the scan-ready layout
U32 = np.uint32


def build_harness(directory, *defines):
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the kernel harness")
    library = str(directory / "harness.so")
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", *defines, "-I", EXT, os.path.join(HERE, "kernel_harness.c"),
                    "-o", library], check=True)
    lib = ctypes.CDLL(library)
    P, size, u32, i64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_int64
    lib.harness_supported.argtypes = [ctypes.c_int]
    lib.harness_hamming_below.argtypes = [ctypes.c_int, P, size, size, P, u32, P, P]
    lib.harness_hamming_below.restype = ctypes.c_long
    lib.harness_hamming.argtypes = [ctypes.c_int, P, P, size]
    lib.harness_hamming.restype = ctypes.c_long
    lib.harness_popcount.argtypes = [ctypes.c_int, P, size]
    lib.harness_popcount.restype = ctypes.c_long
    lib.harness_nibble_above.argtypes = [ctypes.c_int, P, size, size, size, P, u32, P]
    lib.harness_nibble_above.restype = ctypes.c_long
    lib.harness_transpose.argtypes = [P, size, size, P]
    lib.harness_idle_cpus.restype = ctypes.c_long
    lib.harness_idle_cpus_recent.restype = ctypes.c_long
    lib.harness_claim_all.argtypes = [i64]
    lib.harness_claim_all.restype = i64
    lib.harness_cpu_features.argtypes = [ctypes.c_char_p, size]
    lib.harness_hamming_strided.argtypes = [P, size, P, size]
    lib.harness_hamming_strided.restype = ctypes.c_long
    lib.harness_hamming_below_many.argtypes = [ctypes.c_int, P, size, size, P, size, P, P, P, P]
    lib.harness_hamming_below_many.restype = ctypes.c_long
    lib.harness_nibble_above_many.argtypes = [ctypes.c_int, P, size, size, size, P, size, P, P, P]
    lib.harness_nibble_above_many.restype = ctypes.c_long
    lib.harness_sextet_above_many.argtypes = [ctypes.c_int, P, size, size, size, P, size, P, P, P]
    lib.harness_sextet_above_many.restype = ctypes.c_long
    lib.harness_hamming_blocked_many.argtypes = [ctypes.c_int, P, size, size, size, P, size, P, P, P, P]
    lib.harness_hamming_blocked_many.restype = ctypes.c_long
    lib.harness_advise_huge_pages.argtypes = [P, size]
    return lib


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return build_harness(tmp_path_factory.mktemp("harness"))


@pytest.fixture(scope="module")
def harness_not_x86(tmp_path_factory):
    """What a non-x86 build gets (SQLITEBIN_NO_X86): portable kernels only, under the vector kernels' names."""
    return build_harness(tmp_path_factory.mktemp("harness_not_x86"), "-DSQLITEBIN_NO_X86")


def supported(harness, level):
    if not harness.harness_supported(level):
        pytest.skip(f"this CPU lacks kernel level {level}")


def unaligned(data, offset):
    """A copy of `data` starting `offset` bytes into a fresh buffer (and the buffer, to keep it alive)."""
    buffer = np.zeros(len(data) + offset + 64, np.uint8)
    buffer[offset:offset + len(data)] = np.frombuffer(bytes(data), np.uint8)
    return buffer, buffer.ctypes.data + offset


def numpy_distances(codes, query):
    return np.unpackbits(codes ^ query, axis=1).sum(axis=1).astype(np.int64) if codes.size else np.zeros(len(codes), np.int64)


def hamming_below(harness, level, codes, query, threshold, offset=0):
    count, code_bytes = codes.shape
    keep_codes, codes_pointer = unaligned(codes.tobytes(), offset)
    keep_query, query_pointer = unaligned(query.tobytes(), (offset + 3) % 8)
    index = np.full(count + 1, 0xFFFFFFFF, U32)
    distance = np.full(count + 1, 0xFFFFFFFF, U32)
    m = harness.harness_hamming_below(level, codes_pointer, count, code_bytes, query_pointer, threshold,
                                      index.ctypes.data, distance.ctypes.data)
    assert m >= 0
    return sorted(zip(index[:m].tolist(), distance[:m].tolist()))


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_hamming_below_every_code_size(harness, level):
    """Code sizes 1..130 bytes, counts around the vector width, unaligned starts, thresholds 0 to max."""
    supported(harness, level)
    rng = np.random.default_rng(level)
    for code_bytes in range(1, 131):
        for count in (0, [1, 7, 8, 9, 15, 16, 17, 23][code_bytes % 8], 67):
            codes = rng.integers(0, 256, (count, code_bytes), dtype=np.uint8)
            query = rng.integers(0, 256, code_bytes, dtype=np.uint8)
            if count > 3:
                codes[2] = query  # distance 0
                codes[3] = codes[1]  # a tie
            distances = numpy_distances(codes, query)
            middle = int(np.median(distances)) if count else 0
            for threshold in (0, middle, 8 * code_bytes, 0xFFFFFFFF):
                expected = [(i, int(d)) for i, d in enumerate(distances) if d <= threshold]
                got = hamming_below(harness, level, codes, query, threshold, offset=(code_bytes + count) % 8)
                assert got == expected, (code_bytes, count, threshold)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_hamming_below_long_blocks(harness, level):
    """A scan-sized block of the common sizes, every alignment, ties at the threshold."""
    supported(harness, level)
    rng = np.random.default_rng(10 + level)
    for code_bytes in (8, 16, 24, 32, 48, 64, 96, 128, 256, 300):
        codes = rng.integers(0, 256, (1021, code_bytes), dtype=np.uint8)
        codes[500:520] = codes[499]  # a run of equal codes: equal distances
        query = rng.integers(0, 256, code_bytes, dtype=np.uint8)
        distances = numpy_distances(codes, query)
        for offset in range(0, 8, 3):
            for threshold in (int(distances.min()), int(distances[499]), int(np.percentile(distances, 10))):
                expected = [(i, int(d)) for i, d in enumerate(distances) if d <= threshold]
                assert hamming_below(harness, level, codes, query, threshold, offset) == expected


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_hamming_and_popcount(harness, level):
    supported(harness, level)
    rng = np.random.default_rng(20 + level)
    for n in list(range(0, 140)) + [255, 256, 257, 1000, 4099]:
        a = rng.integers(0, 256, n, dtype=np.uint8)
        b = rng.integers(0, 256, n, dtype=np.uint8)
        keep_a, pa = unaligned(a.tobytes(), n % 5)
        keep_b, pb = unaligned(b.tobytes(), n % 3)
        assert harness.harness_hamming(level, pa, pb, n) == int(np.unpackbits(a ^ b).sum()), n
        assert harness.harness_popcount(level, pa, n) == int(np.unpackbits(a).sum()), n


def numpy_blocked(codes):
    """The scan-ready layout, by its definition: byte j of code 64b + i at ((b * code_bytes) + j) * 64 + i."""
    count, code_bytes = codes.shape
    blocks = (count + BLOCK - 1) // BLOCK
    padded = np.zeros((blocks * BLOCK, code_bytes), np.uint8)
    padded[:count] = codes
    return padded.reshape(blocks, BLOCK, code_bytes).transpose(0, 2, 1).reshape(-1)


def transpose(harness, codes, offset=0):
    count, code_bytes = codes.shape
    blocks = (count + BLOCK - 1) // BLOCK
    out = np.full(blocks * BLOCK * code_bytes, 0xAB, np.uint8)
    keep, pointer = unaligned(codes.tobytes(), offset)
    harness.harness_transpose(pointer, count, code_bytes, out.ctypes.data)
    return out


def test_transpose_matches_the_layout(harness):
    rng = np.random.default_rng(30)
    for code_bytes in (1, 2, 15, 16, 17, 31, 32, 33, 48, 100, 128, 130):
        for count in (1, 63, 64, 65, 128, 1000):
            codes = rng.integers(0, 256, (count, code_bytes), dtype=np.uint8)
            np.testing.assert_array_equal(transpose(harness, codes, offset=count % 7), numpy_blocked(codes),
                                          err_msg=f"{count} codes of {code_bytes} bytes")


def test_hamming_of_a_code_in_the_layout(harness):
    """The distance reported for an asymmetric result is read from the scan-ready layout, bytes 64 apart."""
    rng = np.random.default_rng(35)
    for code_bytes in (1, 7, 32, 130):
        codes = rng.integers(0, 256, (130, code_bytes), dtype=np.uint8)
        blocked = numpy_blocked(codes)
        query = rng.integers(0, 256, code_bytes, dtype=np.uint8)
        for i in (0, 63, 64, 129):
            start = (i // BLOCK) * code_bytes * BLOCK + i % BLOCK
            got = harness.harness_hamming_strided(blocked.ctypes.data + start, BLOCK, query.ctypes.data, code_bytes)
            assert got == int(np.unpackbits(codes[i] ^ query).sum())


def nibble_tables(rng, code_bytes, top=NIBBLE_TOP):
    """Random tables in the kernel layout: per byte, the high nibble's 16 entries twice, then the low nibble's."""
    high = rng.integers(0, top + 1, (code_bytes, 16), dtype=np.uint8)
    low = rng.integers(0, top + 1, (code_bytes, 16), dtype=np.uint8)
    return np.concatenate([high, high, low, low], axis=1), high, low


def numpy_nibble_sums(codes, high, low):
    j = np.arange(codes.shape[1])
    return (high[j, codes >> 4].astype(np.int64) + low[j, codes & 15]).sum(axis=1)


@pytest.mark.parametrize("name", sorted(NIBBLE_LEVELS))
def test_nibble_above(harness, name):
    """Sums and the bound check of the fused asymmetric kernel, over any range of the layout."""
    level = NIBBLE_LEVELS[name]
    supported(harness, level)
    rng = np.random.default_rng(40 + level)
    probe = harness.harness_nibble_above(level, None, 0, 0, 1, None, 0, None)
    if probe < 0:
        pytest.skip(f"this CPU lacks the {name} nibble kernel")
    for code_bytes in list(range(1, 34)) + [48, 64, 100, 127, 128, 129, 130, 255, 512]:
        count = 200 + code_bytes
        codes = rng.integers(0, 256, (count, code_bytes), dtype=np.uint8)
        codes[150:160] = codes[149]  # equal sums
        top = NIBBLE_TOP if code_bytes % 2 else int(rng.integers(0, NIBBLE_TOP + 1))
        tables, high, low = nibble_tables(rng, code_bytes, top)
        blocked = numpy_blocked(codes)
        sums = numpy_nibble_sums(codes, high, low)
        assert sums.max() < 1 << 16
        out = np.zeros(count + 64, U32)
        for first, length in ((0, count), (5, 70), (63, 1), (64, 64), (130, count - 130), (17, 0)):
            part = sums[first:first + length]
            for threshold in (0, int(sums[149]), int(np.percentile(sums, 90)), int(sums.max()), int(sums.max()) + 1,
                              NO_CANDIDATE, 0xFFFFFFFF):
                m = harness.harness_nibble_above(level, blocked.ctypes.data, first, length, code_bytes,
                                                 tables.ctypes.data, threshold, out.ctypes.data)
                expected = [i for i, s in enumerate(part) if s >= threshold]
                assert sorted(out[:m].tolist()) == expected, (code_bytes, first, length, threshold)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_hamming_below_many_queries(harness, level):
    """The batch kernel: each query of a batch over one block, at its own threshold, as if run alone. Every code
    length the register-blocked AVX-512 kernel specialises (8 to 128 bytes) and some it leaves to the loop; code
    counts that are not a multiple of its 16-code step (codes of up to 32 bytes) or 8-code step; query counts of
    1 to 33; unaligned codes and queries; ties."""
    supported(harness, level)
    rng = np.random.default_rng(60 + level)
    cases = [(32, 1024, 8), (17, 101, 5), (64, 9, 1), (8, 0, 3), (32, 1023, 33), (32, 7, 2), (8, 77, 9),
             (16, 130, 4), (24, 65, 3), (48, 41, 6), (96, 33, 5), (128, 50, 7), (40, 30, 3), (1, 20, 2), (256, 19, 2)]
    for code_bytes, count, query_count in cases:
        codes = rng.integers(0, 256, (count, code_bytes), dtype=np.uint8)
        queries = rng.integers(0, 256, (query_count, code_bytes), dtype=np.uint8)
        if count:
            queries[0] = codes[count // 2]
            codes[count // 3:count // 3 + 3] = codes[count // 4]  # equal distances
        expected_all = [numpy_distances(codes, q) for q in queries]
        thresholds = np.array([int(np.percentile(d, 5 * q % 100)) if count else 0 for q, d in enumerate(expected_all)],
                              U32)
        thresholds[-1] = 0xFFFFFFFF
        if query_count > 2:
            thresholds[1] = 0
        offset = (code_bytes + count) % 8
        keep_codes, codes_pointer = unaligned(codes.tobytes(), offset)
        keep_queries, queries_pointer = unaligned(queries.tobytes(), (offset + 3) % 8)
        index = np.zeros(max(query_count * count, 1), U32)
        distance = np.zeros(max(query_count * count, 1), U32)
        counts = np.zeros(query_count, np.uintp)
        total = harness.harness_hamming_below_many(level, codes_pointer, count, code_bytes, queries_pointer,
                                                   query_count, thresholds.ctypes.data, index.ctypes.data,
                                                   distance.ctypes.data, counts.ctypes.data)
        assert total == counts.sum()
        for q in range(query_count):
            m = int(counts[q])
            got = sorted(zip(index[q * count:q * count + m].tolist(), distance[q * count:q * count + m].tolist()))
            assert got == [(i, int(d)) for i, d in enumerate(expected_all[q]) if d <= thresholds[q]], (
                code_bytes, count, q)


def test_kernels_run_on_the_fake_stack(tmp_path):
    """Every vector kernel under AddressSanitizer with detect_stack_use_after_return=1 (as scripts/check_memory.sh
    runs): its fake stack does not keep 64-byte alignment, so a kernel keeping a vector-stored array on the stack
    faults there (GCC turns the unaligned store into an aligned one). Built -O3, as the extension is."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the kernels")
    program = str(tmp_path / "kernel_fake_stack")
    build = subprocess.run([compiler, "-O3", "-fsanitize=address", "-I", EXT, os.path.join(HERE, "kernel_fake_stack.c"),
                            "-o", program], capture_output=True, text=True)
    if build.returncode:
        pytest.skip(f"{compiler} cannot build with AddressSanitizer: {build.stderr.strip()[-300:]}")
    env = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
    env["ASAN_OPTIONS"] = "detect_stack_use_after_return=1:detect_leaks=0"
    run = subprocess.run([program], capture_output=True, text=True, env=env)
    if run.stdout.startswith("skip"):
        pytest.skip(run.stdout.strip())
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr[-3000:]


def above_many_thresholds(sums, length, first_never):
    """Per query, a threshold at a percentile of its sums, and the edges: query 0 one no sum reaches (when
    first_never), query 2 zero, query 3 the largest uint32, query 4 exactly its largest sum."""
    query_count = len(sums)
    thresholds = np.array([int(np.percentile(v, 50 + 7 * q % 50)) if length else 0 for q, v in enumerate(sums)], U32)
    if first_never:
        thresholds[0] = NO_CANDIDATE
    if query_count > 2:
        thresholds[2] = 0
    if query_count > 3:
        thresholds[3] = 0xFFFFFFFF
    if query_count > 4 and length:
        thresholds[4] = int(sums[4].max())
    return thresholds


def check_above_many(kernel, level, blocked, first, length, code_bytes, tables, sums, thresholds):
    """Run a many-query "sum at or above" kernel of the harness and compare each query's codes with NumPy's."""
    query_count = len(sums)
    index = np.zeros(max(query_count * length, 1), U32)
    counts = np.full(query_count, 12345, np.uintp)
    total = kernel(level, blocked.ctypes.data, first, length, code_bytes, tables.ctypes.data, query_count,
                   thresholds.ctypes.data, index.ctypes.data, counts.ctypes.data)
    assert total == counts.sum()
    for q in range(query_count):
        got = sorted(index[q * length:q * length + int(counts[q])].tolist())
        assert got == [i for i, v in enumerate(sums[q]) if v >= thresholds[q]], (code_bytes, first, length, q)


@pytest.mark.parametrize("name", sorted(NIBBLE_LEVELS))
def test_nibble_above_many_queries(harness, name):
    """The register-blocked nibble kernels (groups of 8, 4, 2 and 1 queries; AVX2 4, 2, 1) against NumPy, as if
    each query ran alone: any range of the layout, odd code lengths, query counts that are not a multiple of a
    group, a threshold no sum reaches, and equal sums."""
    level = NIBBLE_LEVELS[name]
    supported(harness, level)
    if harness.harness_nibble_above_many(level, None, 0, 0, 1, None, 0, None, None, None) < 0:
        pytest.skip(f"this CPU lacks the {name} nibble kernel")
    rng = np.random.default_rng(70 + level)
    cases = [(32, 1000, 6, 37, 900), (32, 256, 15, 0, 256), (1, 70, 3, 5, 64), (3, 200, 9, 63, 1),
             (31, 300, 13, 64, 130), (33, 129, 8, 1, 128), (64, 200, 5, 17, 0), (100, 90, 2, 30, 60),
             (512, 70, 3, 0, 70), (2, 64, 1, 0, 64)]
    for code_bytes, count, query_count, first, length in cases:
        codes = rng.integers(0, 256, (count, code_bytes), dtype=np.uint8)
        codes[first + length // 2:first + length // 2 + 3] = codes[first]  # equal sums
        blocked = numpy_blocked(codes)
        made = [nibble_tables(rng, code_bytes, NIBBLE_TOP if (q + code_bytes) % 2 else int(rng.integers(0, 64)))
                for q in range(query_count)]
        tables = np.concatenate([m[0].reshape(-1) for m in made])
        sums = [numpy_nibble_sums(codes, high, low)[first:first + length] for _, high, low in made]
        check_above_many(harness.harness_nibble_above_many, level, blocked, first, length, code_bytes, tables, sums,
                         above_many_thresholds(sums, length, first_never=True))


@pytest.mark.parametrize("level", [0, 2])
def test_hamming_blocked_many_queries(harness, level):
    """The AVX2 batch Hamming kernel on the scan-ready layout (and its one-code-at-a-time reference) against
    NumPy: exact distances at or below each query's threshold, for code lengths around its 31-row widening,
    ranges starting and ending inside blocks and halves, groups of 4, 2 and 1 queries, and ties."""
    supported(harness, level)
    rng = np.random.default_rng(85 + level)
    cases = [(32, 1000, 7, 37, 900), (1, 70, 3, 5, 64), (30, 130, 4, 33, 60), (31, 200, 5, 64, 130),
             (32, 96, 2, 0, 96), (62, 129, 9, 1, 128), (63, 100, 1, 31, 2), (100, 90, 6, 0, 90), (512, 70, 3, 3, 60)]
    for code_bytes, count, query_count, first, length in cases:
        codes = rng.integers(0, 256, (count, code_bytes), dtype=np.uint8)
        codes[first + length // 2:first + length // 2 + 3] = codes[first]  # equal distances
        queries = rng.integers(0, 256, (query_count, code_bytes), dtype=np.uint8)
        queries[0] = codes[first]
        blocked = numpy_blocked(codes)
        expected = [numpy_distances(codes, q)[first:first + length] for q in queries]
        thresholds = np.array([int(np.percentile(d, 3 + 11 * q % 90)) if length else 0 for q, d in enumerate(expected)],
                              U32)
        thresholds[-1] = 0xFFFFFFFF
        if query_count > 2:
            thresholds[1] = 0
        index = np.zeros(max(query_count * length, 1), U32)
        distance = np.zeros(max(query_count * length, 1), U32)
        counts = np.zeros(query_count, np.uintp)
        total = harness.harness_hamming_blocked_many(level, blocked.ctypes.data, first, length, code_bytes,
                                                     queries.ctypes.data, query_count, thresholds.ctypes.data,
                                                     index.ctypes.data, distance.ctypes.data, counts.ctypes.data)
        assert total == counts.sum()
        for q in range(query_count):
            m = int(counts[q])
            got = sorted(zip(index[q * length:q * length + m].tolist(), distance[q * length:q * length + m].tolist()))
            assert got == [(i, int(d)) for i, d in enumerate(expected[q]) if d <= thresholds[q]], (
                code_bytes, first, length, q)


def numpy_sextet_sums(codes, tables):
    """Each code read as 6-bit groups (bit 5 of a group's index is its first dimension), three bytes at a time,
    a last partial triple padded with zero bytes; tables[g] is group g's 64 entries."""
    count, code_bytes = codes.shape
    padded = np.zeros((count, 3 * ((code_bytes + 2) // 3)), np.uint8)
    padded[:, :code_bytes] = codes
    bits = np.unpackbits(padded, axis=1).reshape(count, -1, 6)
    groups = (bits.astype(np.int64) << np.arange(5, -1, -1)).sum(axis=2)
    return tables[np.arange(groups.shape[1]), groups].astype(np.int64).sum(axis=1)


@pytest.mark.parametrize("level", [0, 4])
def test_sextet_above_many_queries(harness, level):
    """The batch scan on 6-bit groups (VBMI; the portable one for reference) against NumPy: code lengths of
    every remainder mod 3, ranges of the layout that start and end inside blocks, groups of 8, 4, 2 and 1
    queries, thresholds no sum reaches, and equal sums."""
    if harness.harness_sextet_above_many(level, None, 0, 0, 1, None, 0, None, None, None) < 0:
        pytest.skip("this CPU lacks AVX-512 VBMI")
    rng = np.random.default_rng(80 + level)
    cases = [(32, 1000, 15, 37, 900), (1, 70, 3, 5, 64), (2, 130, 9, 63, 1), (3, 200, 8, 64, 130),
             (31, 300, 13, 1, 298), (33, 129, 4, 0, 129), (64, 200, 5, 17, 0), (100, 90, 2, 30, 60),
             (512, 70, 3, 0, 70), (5, 64, 1, 0, 64)]
    for code_bytes, count, query_count, first, length in cases:
        codes = rng.integers(0, 256, (count, code_bytes), dtype=np.uint8)
        codes[first + length // 2:first + length // 2 + 3] = codes[first]  # equal sums
        blocked = numpy_blocked(codes)
        groups = 4 * ((code_bytes + 2) // 3)
        made = [rng.integers(0, NIBBLE_TOP + 1 if q % 2 else int(rng.integers(1, NIBBLE_TOP + 1)), (groups, 64),
                             dtype=np.uint8) for q in range(query_count)]
        tables = np.concatenate([m.reshape(-1) for m in made])
        sums = [numpy_sextet_sums(codes, m)[first:first + length] for m in made]
        assert max(int(v.max()) for v in sums if len(v)) < 1 << 16 if length else True
        check_above_many(harness.harness_sextet_above_many, level, blocked, first, length, code_bytes, tables, sums,
                         above_many_thresholds(sums, length, first_never=query_count > 1))


def test_the_non_x86_build(harness_not_x86):
    """Built as for a CPU without x86 kernels: no level above portable is offered, and the portable kernels
    (Hamming, the scalar transpose, the nibble scan) match NumPy."""
    lib = harness_not_x86
    assert lib.harness_has_x86_kernels() == 0
    assert [lib.harness_supported(level) for level in range(4)] == [1, 0, 0, 0]
    rng = np.random.default_rng(90)
    for code_bytes in (1, 16, 32, 33):
        codes = rng.integers(0, 256, (130, code_bytes), dtype=np.uint8)
        query = rng.integers(0, 256, code_bytes, dtype=np.uint8)
        distances = numpy_distances(codes, query)
        threshold = int(np.median(distances))
        assert hamming_below(lib, 0, codes, query, threshold, 3) == [
            (i, int(d)) for i, d in enumerate(distances) if d <= threshold]
        blocked = transpose(lib, codes, offset=1)
        np.testing.assert_array_equal(blocked, numpy_blocked(codes))
        tables, high, low = nibble_tables(rng, code_bytes)
        sums = numpy_nibble_sums(codes, high, low)
        out = np.zeros(200, U32)
        limit = int(np.median(sums))
        m = lib.harness_nibble_above(0, blocked.ctypes.data, 10, 100, code_bytes, tables.ctypes.data, limit,
                                     out.ctypes.data)
        assert out[:m].tolist() == [i for i, v in enumerate(sums[10:110]) if v >= limit]
        # The batch kernels: the loops over the portable ones, and the 6-bit groups one code at a time.
        counts = np.zeros(2, np.uintp)
        index = np.zeros(2 * 130, U32)
        distance = np.zeros(2 * 130, U32)
        queries = np.stack([query, codes[5]])
        thresholds = np.array([threshold, 0xFFFFFFFF], U32)
        lib.harness_hamming_below_many(0, codes.ctypes.data, 130, code_bytes, queries.ctypes.data, 2,
                                       thresholds.ctypes.data, index.ctypes.data, distance.ctypes.data,
                                       counts.ctypes.data)
        for q in range(2):
            got = list(zip(index[130 * q:130 * q + int(counts[q])].tolist(),
                           distance[130 * q:130 * q + int(counts[q])].tolist()))
            expected = numpy_distances(codes, queries[q])
            assert got == [(i, int(d)) for i, d in enumerate(expected) if d <= thresholds[q]]
        assert lib.harness_hamming_below_many(3, None, 0, 1, None, 0, None, None, None, None) == -1
        sextets = rng.integers(0, NIBBLE_TOP + 1, (4 * ((code_bytes + 2) // 3), 64), dtype=np.uint8)
        sextet_sums = numpy_sextet_sums(codes, sextets)[10:110]
        limit = np.array([int(np.median(sextet_sums))], U32)
        m = lib.harness_sextet_above_many(0, blocked.ctypes.data, 10, 100, code_bytes, sextets.ctypes.data, 1,
                                          limit.ctypes.data, out.ctypes.data, counts.ctypes.data)
        assert out[:m].tolist() == [i for i, v in enumerate(sextet_sums) if v >= limit[0]]
        assert lib.harness_sextet_above_many(4, None, 0, 0, 1, None, 0, None, None, None) == -1


def test_huge_page_advice_keeps_the_data(harness):
    data = np.arange(8 << 20, dtype=np.uint64).view(np.uint8)
    expected = data.copy()
    harness.harness_advise_huge_pages(data.ctypes.data + 3, data.size - 3)
    np.testing.assert_array_equal(data, expected)


def test_idle_cpus_and_work_queue(harness):
    assert harness.harness_idle_cpus() <= (os.cpu_count() or 1) - 1
    assert harness.harness_idle_cpus_recent() <= (os.cpu_count() or 1) - 1
    for units in (0, 1, 5, 1000):
        assert harness.harness_claim_all(units) == units
    features = ctypes.create_string_buffer(256)
    harness.harness_cpu_features(features, 256)
    assert features.value


# --- loading at a kernel cap -----------------------------------------------------------------------------------


def load_level(level):
    """Load with the kernel capped at `level`; returns what sqlitebin_debug() reports.
    The kernel choice is process-wide, so every connection uses it from now on."""
    os.environ["SQLITEBIN_POPCOUNT"] = level
    connection = apsw.Connection(":memory:")
    sqlitebin.load(connection)
    debug = dict(line.split("=", 1) for line in connection.execute("SELECT sqlitebin_debug()").fetchall()[0][0].splitlines())
    connection.close()
    return debug


@pytest.fixture
def restore_kernels():
    saved = os.environ.get("SQLITEBIN_POPCOUNT")
    yield
    if saved is None:
        os.environ.pop("SQLITEBIN_POPCOUNT", None)
    else:
        os.environ["SQLITEBIN_POPCOUNT"] = saved
    sqlitebin.load(apsw.Connection(":memory:"))


def test_kernel_cap_never_exceeds_the_cpu(restore_kernels):
    capability = {"x86-64 avx512": "avx512", "x86-64 avx2": "avx2", "x86-64 popcnt": "popcnt"}
    for level in LEVELS:
        debug = load_level(level)
        best = capability.get(debug["cpu"], "portable")
        assert debug["popcount"] == LEVELS[min(LEVELS.index(level), LEVELS.index(best))]
        assert debug["asymmetric_scan"].startswith("nibble-") == (debug["popcount"] in ("avx2", "avx512"))
        # The batch kernels follow the level: 6-bit groups exactly where the one-query scan uses VBMI.
        assert debug["batch_hamming"] == {"avx512": "avx512-transposed", "avx2": "avx2-popcount-tables"}.get(
            debug["popcount"], "loop")
        assert (debug["batch_asymmetric"] == "sextet-avx512vbmi") == (debug["asymmetric_scan"] == "nibble-avx512vbmi")
        if debug["asymmetric_scan"] != "nibble-avx512vbmi":
            assert debug["batch_asymmetric"] == debug["asymmetric_scan"]
        assert debug["cpu_features"]


def test_unknown_kernel_cap_is_refused(restore_kernels):
    os.environ["SQLITEBIN_POPCOUNT"] = "sse9"
    with pytest.raises(apsw.Error, match="SQLITEBIN_POPCOUNT must be portable, popcnt, avx2 or avx512, got 'sse9'"):
        sqlitebin.load(apsw.Connection(":memory:"))


def test_each_level_in_a_fresh_process(tmp_path):
    """A fresh process per cap, as a user would set it: the level reported is the cap (or what the CPU has)."""
    script = ("import apsw, sqlitebin; c = apsw.Connection(':memory:'); sqlitebin.load(c); "
              "print(dict(l.split('=', 1) for l in c.execute('select sqlitebin_debug()').fetchall()[0][0].splitlines())"
              "['popcount'])")
    seen = []
    for level in LEVELS:
        env = dict(os.environ, SQLITEBIN_POPCOUNT=level)
        out = subprocess.run([os.sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        seen.append(out.stdout.strip())
    assert seen[0] == "portable"
    assert all(LEVELS.index(s) <= LEVELS.index(level) for s, level in zip(seen, LEVELS))


# --- through the sqlitebin virtual table ------------------------------------------------------------------------


def vtable_data():
    """Tables with code sizes 1..130 bytes, several chunks (chunk_size 64 and 128), ties (repeated vectors),
    deleted slots, and queries equal to a stored vector."""
    rng = np.random.default_rng(60)
    data = []
    for dim, count, chunk in ((8, 300, 64), (20, 400, 128), (100, 500, 64), (256, 1500, 1024), (520, 300, 128),
                              (1040, 200, 64)):
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors[count // 2:count // 2 + 25] = vectors[count // 3]  # ties in every mode
        deleted = sorted(rng.choice(np.arange(1, count + 1), count // 10, replace=False).tolist())
        queries = [vectors[count // 3], rng.standard_normal(dim).astype(np.float32)]
        data.append((dim, vectors, chunk, deleted, queries))
    return data


def vtable_oracle(ids, vectors, query, k, candidates, allowed=None):
    """(rowid, distance) best first and the scores, with rescore = 'none'."""
    dim = vectors.shape[1]
    if allowed is not None:
        keep = np.isin(ids, allowed)
        ids, vectors = ids[keep], vectors[keep]
    bits = vectors > 0
    distance = (bits != (query > 0)).sum(axis=1)
    if candidates == "hamming":
        score = 1 - 2 * distance / dim
    else:
        score = np.where(bits, 1.0, -1.0) @ query.astype(np.float64) / np.sqrt(dim)
    order = np.lexsort((ids, -score))[:k]
    return [(int(ids[i]), int(distance[i])) for i in order], score[order].tolist()


def run_vtable_everywhere(level, keep=None):
    """Every table of vtable_data() searched with both candidate kinds, single queries, a packed code, a
    prefilter and a batch, all checked against NumPy. `keep` collects the connection (for a later search
    after the kernels changed); otherwise it is closed."""
    debug = load_level(level)
    results = []
    for n, (dim, vectors, chunk, deleted, queries) in enumerate(vtable_data()):
        conn = apsw.Connection(":memory:")
        sqlitebin.load(conn)
        conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={dim}, rescore=none, chunk_size={chunk})")
        with conn:
            conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)",
                             ((3 * i + 1, v.tobytes()) for i, v in enumerate(vectors)))
            conn.executemany("DELETE FROM idx WHERE rowid = ?", ((3 * (d - 1) + 1,) for d in deleted))
        ids = np.arange(len(vectors)) * 3 + 1
        live = ~np.isin(np.arange(1, len(vectors) + 1), deleted)
        ids, live_vectors = ids[live], vectors[live]
        allowed = ids[::3].tolist()
        results.append(search_vtable_table(conn, ids, live_vectors, queries, allowed, (level, dim)))
        if keep is not None:
            keep.append((conn, ids, live_vectors, queries, allowed))
        else:
            conn.close()
    return debug, results


def search_vtable_table(conn, ids, vectors, queries, allowed, where):
    dim = vectors.shape[1]
    results = []
    for k in (1, 10, 26, len(ids) + 5):
        for candidates in ("hamming", "asymmetric"):
            for query in queries:
                for prefilter in (None, allowed):
                    sql = ("SELECT rowid, distance, score FROM idx WHERE vector MATCH ? AND k = ? AND rescore = 'none' "
                           "AND candidates = ?")
                    params = [query.tobytes(), k, candidates]
                    if prefilter is not None:
                        sql += " AND rowid IN (SELECT value FROM json_each(?))"
                        params.append("[" + ",".join(map(str, prefilter)) + "]")
                    rows = conn.execute(sql, params).fetchall()
                    expected, scores = vtable_oracle(ids, vectors, query, k, candidates, prefilter)
                    assert [(r[0], r[1]) for r in rows] == expected, (where, k, candidates)
                    np.testing.assert_allclose([r[2] for r in rows], scores, rtol=1e-5, atol=1e-5)
                    results.append(rows)
            # Batches in one MATCH: the rows of each query, in turn, against NumPy; and nineteen queries (groups
            # of 8, 8, 2 and 1 in the batch kernels; some equal stored vectors, one repeated) against the same
            # queries one at a time, row for row (NumPy's float64 scores order near-ties differently).
            single = ("SELECT rowid, distance, score FROM idx WHERE vector MATCH ? AND k = ? AND rescore = 'none' "
                      "AND candidates = ?")
            many = list(queries) + [vectors[i] for i in range(0, len(vectors), max(1, len(vectors) // 9))][:9]
            many += [np.random.default_rng(len(many)).standard_normal(dim).astype(np.float32) for _ in range(7)]
            many.append(many[0])
            for batch in (queries, many):
                rows = conn.execute("SELECT query, rowid, distance, score FROM idx WHERE vector MATCH ? AND k = ? "
                                    "AND rescore = 'none' AND candidates = ?",
                                    (np.concatenate(batch).tobytes(), k, candidates)).fetchall()
                if batch is queries:
                    expected = [(j, rowid, distance) for j, query in enumerate(batch)
                                for rowid, distance in vtable_oracle(ids, vectors, query, k, candidates)[0]]
                    assert [row[:3] for row in rows] == expected, (where, k, candidates, "batch")
                else:
                    expected = [(j, *row) for j, query in enumerate(batch)
                                for row in conn.execute(single, (query.tobytes(), k, candidates)).fetchall()]
                    assert rows == expected, (where, k, candidates, "batch of 19")
                results.append(rows)
        # A packed code: hamming candidates only.
        code = np.packbits(queries[0] > 0)
        rows = conn.execute("SELECT rowid, distance FROM idx WHERE vector MATCH ? AND k = ?",
                            (code.tobytes(), k)).fetchall()
        assert rows == vtable_oracle(ids, vectors, queries[0], k, "hamming")[0], (where, k, "code")
        results.append(rows)
    return results


def test_vtable_identical_at_every_level(restore_kernels):
    """The virtual table's search at each kernel cap (hamming and asymmetric candidates, prefilter, deleted
    slots, batches) matches NumPy, and every level returns exactly the same rows. A table whose code cache was
    loaded under the portable kernels (no scan-ready copy) still answers the same after a load chose the
    nibble kernels: it then scores every code exactly."""
    reference = None
    kept = []
    for level in LEVELS:
        debug, results = run_vtable_everywhere(level, keep=kept if level == "portable" else None)
        assert LEVELS.index(debug["popcount"]) <= LEVELS.index(level)
        if reference is None:
            reference = results
        else:
            assert results == reference, f"{debug['popcount']} differs from portable"
    try:
        again = [search_vtable_table(conn, ids, vectors, queries, allowed, ("portable cache", vectors.shape[1]))
                 for conn, ids, vectors, queries, allowed in kept]
        assert again == reference
    finally:
        for conn, *_ in kept:
            conn.close()


def test_vtable_split_by_units_gives_the_same_results(monkeypatch):
    """The virtual table's scan split into work units on both threads, on one, or by the default policy,
    for single queries and for a batch scanned together."""
    rng = np.random.default_rng(81)
    dim, count = 64, 70_000
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors[count - 40:] = vectors[7]
    conn = apsw.Connection(":memory:")
    sqlitebin.load(conn)
    conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={dim}, rescore=none, chunk_size=4096)")
    with conn:
        conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)",
                         ((i + 1, v.tobytes()) for i, v in enumerate(vectors)))
    ids = np.arange(1, count + 1)
    batch = np.concatenate([vectors[[7, 100, count - 1]], rng.standard_normal((37, dim)).astype(np.float32)])
    try:
        for threads in ("1", "2", None):
            if threads is None:
                monkeypatch.delenv("SQLITEBIN_THREADS", raising=False)
            else:
                monkeypatch.setenv("SQLITEBIN_THREADS", threads)
            for candidates in ("hamming", "asymmetric"):
                for k in (1, 50):
                    rows = conn.execute("SELECT rowid, distance FROM idx WHERE vector MATCH ? AND k = ? "
                                        "AND rescore = 'none' AND candidates = ?",
                                        (vectors[7].tobytes(), k, candidates)).fetchall()
                    assert rows == vtable_oracle(ids, vectors, vectors[7], k, candidates)[0], (threads, candidates)
                # A batch of 40 queries (more than one group of 32 scanned together), with a prefilter.
                allowed = ids[(ids % 5 != 0) | (ids > count - 100)]
                rows = conn.execute("SELECT query, rowid, distance FROM idx WHERE vector MATCH ? AND k = 5 "
                                    "AND rescore = 'none' AND candidates = ? "
                                    "AND rowid IN (SELECT value FROM json_each(?))",
                                    (batch.tobytes(), candidates, json.dumps(allowed.tolist()))).fetchall()
                expected = [(j, rowid, distance) for j, query in enumerate(batch)
                            for rowid, distance in vtable_oracle(ids, vectors, query, 5, candidates, allowed)[0]]
                assert rows == expected, (threads, candidates, "batch")
    finally:
        conn.close()
