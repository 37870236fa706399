"""The extension's SQL functions against NumPy oracles, hand-checked bytes and every error message."""

import os
import shutil
import subprocess
import sys

import apsw
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sqlitebin

EXPECTED_FUNCTIONS = {
    ("hamming", 2),
    ("bit_count", 1),
    ("binary_quantize", 1),
    ("binary_quantize", 2),
    ("int8_quantize", 2),
    ("dot_float32", 2),
    ("dot_int8", 3),
    ("dot_bits", 2),
    ("sqlitebin_version", 0),
    ("sqlitebin_debug", 0),
    ("sqlitebin_bm25_idf", 2),
}
# FTS5 auxiliary functions (called on an FTS5 table's rows): FTS5 lists each as a placeholder SQL function of any
# number of arguments (sqlite3_overload_function), which only works inside an FTS5 query.
FTS5_AUXILIARY_FUNCTIONS = {("sqlitebin_bm25", -1)}


def scalar(conn, sql, *params):
    return conn.execute(sql, params).fetchall()[0][0]


def f32(values):
    return np.asarray(values, dtype="<f4").tobytes()


def oracle_hamming(a: bytes, b: bytes) -> int:
    x = np.frombuffer(a, dtype=np.uint8) ^ np.frombuffer(b, dtype=np.uint8)
    return int(np.unpackbits(x).sum())


def oracle_int8(v, ranges):
    d = len(v)
    low, high = ranges[:d], ranges[d:]
    out = np.full(d, -128, dtype=np.int8)
    spread = high - low
    ok = spread > 0
    level = np.rint(((v[ok] - low[ok]) * np.float32(255)) / spread[ok])
    out[ok] = (np.clip(level, 0, 255) - 128).astype(np.int8)
    return out


# ---------------------------------------------------------------------------
# hamming and bit_count


def test_hamming_hand_checked(conn):
    assert scalar(conn, "select hamming(x'ff00', x'0f0f')") == 8
    assert scalar(conn, "select hamming(x'', x'')") == 0
    assert scalar(conn, "select hamming(x'01', x'80')") == 2
    assert scalar(conn, "select hamming(x'ffffffffffffffffff', x'000000000000000000')") == 72


@pytest.mark.parametrize("kernel", ["portable", "popcnt", "avx2", "avx512"])
def test_hamming_every_kernel_against_numpy(kernel, monkeypatch):
    monkeypatch.setenv("SQLITEBIN_POPCOUNT", kernel)
    connection = apsw.Connection(":memory:")
    sqlitebin.load(connection)
    rng = np.random.default_rng(7)
    for size in list(range(0, 70)) + [255, 256, 257, 511, 1000, 1024, 4096 + 3]:
        a = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        b = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert scalar(connection, "select hamming(?, ?)", a, b) == oracle_hamming(a, b), size
        assert scalar(connection, "select bit_count(?)", a) == int(np.unpackbits(np.frombuffer(a, np.uint8)).sum())
    monkeypatch.delenv("SQLITEBIN_POPCOUNT")
    sqlitebin.load(apsw.Connection(":memory:"))  # restore the default kernel for later tests


def test_hamming_unaligned_blobs(conn):
    # Slices of one buffer at every offset reach the kernel at every alignment.
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, 600, dtype=np.uint8).tobytes()
    for offset in range(9):
        a, b = base[offset : offset + 300], base[offset + 1 : offset + 301]
        assert scalar(conn, "select hamming(substr(?, ?, 300), substr(?, ?, 300))", base, offset + 1, base, offset + 2) == oracle_hamming(a, b)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1024).flatmap(lambda n: st.tuples(st.binary(min_size=n, max_size=n), st.binary(min_size=n, max_size=n))))
def test_hamming_property(pair):
    connection = apsw.Connection(":memory:")
    sqlitebin.load(connection)
    a, b = pair
    assert scalar(connection, "select hamming(?, ?)", a, b) == oracle_hamming(a, b)
    assert scalar(connection, "select hamming(?, ?)", a, a) == 0
    assert scalar(connection, "select hamming(?, ?)", a, b) == scalar(connection, "select hamming(?, ?)", b, a)


def test_edge_bytes(conn):
    for a, b, expected in [(b"\x00", b"\xff", 8), (b"\xaa" * 33, b"\x55" * 33, 264), (b"\xff" * 8, b"\xff" * 8, 0)]:
        assert scalar(conn, "select hamming(?, ?)", a, b) == expected


def test_null_in_null_out(conn):
    for sql in [
        "select hamming(null, x'00')",
        "select hamming(x'00', null)",
        "select bit_count(null)",
        "select binary_quantize(null)",
        "select binary_quantize(?, null)",
        "select int8_quantize(null, ?)",
        "select dot_float32(null, ?)",
        "select dot_int8(?, null, ?)",
        "select dot_bits(?, null)",
    ]:
        params = tuple(f32([1.0]) for _ in range(sql.count("?")))
        assert scalar(conn, sql, *params) is None, sql


# ---------------------------------------------------------------------------
# binary_quantize and int8_quantize


def test_binary_quantize_hand_checked(conn):
    # +1, -1 -> bits 1, 0 -> 0b10000000
    assert scalar(conn, "select hex(binary_quantize(?))", f32([1.0, -1.0])) == "80"
    assert scalar(conn, "select hex(binary_quantize(?))", f32([0.0] * 9)) == "0000"
    assert scalar(conn, "select hex(binary_quantize(?, ?))", f32([0.5, 0.5]), f32([0.4, 0.6])) == "80"
    assert scalar(conn, "select length(binary_quantize(x''))") == 0


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1024), st.integers(0, 2**32 - 1))
def test_binary_quantize_matches_packbits(dim, seed):
    connection = apsw.Connection(":memory:")
    sqlitebin.load(connection)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(dim).astype(np.float32)
    v[rng.random(dim) < 0.05] = 0.0  # exact zeros are not above the threshold
    t = rng.standard_normal(dim).astype(np.float32) * 0.1
    assert scalar(connection, "select binary_quantize(?)", f32(v)) == np.packbits(v > 0).tobytes()
    assert scalar(connection, "select binary_quantize(?, ?)", f32(v), f32(t)) == np.packbits(v > t).tobytes()


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 512), st.integers(0, 2**32 - 1))
def test_int8_quantize_matches_formula(dim, seed):
    connection = apsw.Connection(":memory:")
    sqlitebin.load(connection)
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal(dim) * 2).astype(np.float32)
    low = (rng.standard_normal(dim) - 1).astype(np.float32)
    high = low + np.abs(rng.standard_normal(dim)).astype(np.float32) * 3
    no_spread = rng.random(dim) < 0.05
    high[no_spread] = low[no_spread]
    ranges = np.concatenate([low, high]).astype(np.float32)
    got = np.frombuffer(scalar(connection, "select int8_quantize(?, ?)", f32(v), f32(ranges)), dtype=np.int8)
    np.testing.assert_array_equal(got, oracle_int8(v, ranges))


def test_int8_quantize_hand_checked(conn):
    ranges = f32([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])  # last dimension has no spread
    got = scalar(conn, "select int8_quantize(?, ?)", f32([0.0, 1.0, 0.5, 7.0]), ranges)
    # 0 -> -128, 1 -> 127, 0.5 -> rint(127.5) = 128 (ties to even) -> 0, no spread -> -128
    assert list(np.frombuffer(got, dtype=np.int8)) == [-128, 127, 0, -128]


# ---------------------------------------------------------------------------
# Rescoring dot products


@pytest.mark.parametrize("dim", [1, 7, 64, 256, 1000])
def test_dot_products_match_numpy(conn, dim):
    rng = np.random.default_rng(dim)
    q = rng.standard_normal(dim).astype(np.float32)
    v = rng.standard_normal(dim).astype(np.float32)
    np.testing.assert_allclose(scalar(conn, "select dot_float32(?, ?)", f32(q), f32(v)), float(q.astype(np.float64) @ v), rtol=1e-5)

    low, high = v.min() * np.ones(dim, np.float32), v.max() * np.ones(dim, np.float32)
    ranges = np.concatenate([low, high])
    codes = oracle_int8(v, ranges)
    dequantized = low + (codes.astype(np.float32) + 128) * (high - low) / np.float32(255)
    got = scalar(conn, "select dot_int8(?, ?, ?)", f32(q), codes.tobytes(), f32(ranges))
    np.testing.assert_allclose(got, float(q.astype(np.float64) @ dequantized), rtol=1e-5)

    bits = np.packbits(v > 0)
    signs = np.where(v > 0, 1.0, -1.0)
    np.testing.assert_allclose(scalar(conn, "select dot_bits(?, ?)", f32(q), bits.tobytes()), float(q @ signs), rtol=1e-5)


# ---------------------------------------------------------------------------
# Errors: one sentence naming the function and the values.

ERROR_CASES = [
    ("select hamming('ab', x'00')", (), "hamming(): argument 1 (a) must be a BLOB, got TEXT"),
    ("select hamming(x'00', 5)", (), "hamming(): argument 2 (b) must be a BLOB, got INTEGER"),
    ("select hamming(x'00', 1.5)", (), "hamming(): argument 2 (b) must be a BLOB, got REAL"),
    ("select hamming(x'0000', x'00')", (), "hamming(): BLOB sizes differ (2 vs 1 bytes)"),
    ("select bit_count('x')", (), "bit_count(): argument 1 (a) must be a BLOB, got TEXT"),
    ("select binary_quantize(x'000000')", (), "binary_quantize(): argument 1 (v) is 3 bytes, not a whole number of float32 values (4 bytes each)"),
    ("select binary_quantize(?)", (f32([1.0, np.nan]),), "binary_quantize(): argument 1 (v) holds a non-finite value (NaN) at index 1"),
    ("select binary_quantize(?)", (f32([np.inf]),), "binary_quantize(): argument 1 (v) holds a non-finite value (infinity) at index 0"),
    ("select binary_quantize(?, ?)", (f32([1.0, 2.0]), f32([0.0])), "binary_quantize(): thresholds has 1 values but the vector has 2"),
    ("select int8_quantize(?, ?)", (f32([1.0]), f32([0.0])), "int8_quantize(): ranges has 1 values but needs 2 (1 minimums then 1 maximums)"),
    ("select int8_quantize(?, ?)", (f32([1.0]), f32([2.0, 1.0])), "int8_quantize(): range of dimension 0 has minimum 2 above maximum 1"),
    ("select dot_float32(?, ?)", (f32([1.0]), f32([1.0, 2.0])), "dot_float32(): vector sizes differ (1 vs 2 values)"),
    ("select dot_int8(?, x'0102', ?)", (f32([1.0]), f32([0.0, 1.0])), "dot_int8(): the query has 1 values but the int8 vector has 2"),
    ("select dot_bits(?, x'0102')", (f32([1.0] * 8),), "dot_bits(): the query has 8 values, which pack into 1 bytes, but bits is 2 bytes"),
    ("select dot_bits('q', x'01')", (), "dot_bits(): argument 1 (query) must be a BLOB, got TEXT"),
]


@pytest.mark.parametrize("sql,params,message", ERROR_CASES)
def test_error_messages(conn, sql, params, message):
    with pytest.raises(apsw.SQLError) as excinfo:
        conn.execute(sql, params).fetchall()
    assert str(excinfo.value) == message


def test_wrong_argument_count(conn):
    with pytest.raises(apsw.SQLError, match="wrong number of arguments to function hamming"):
        conn.execute("select hamming(x'00')").fetchall()


# ---------------------------------------------------------------------------
# Registration, version, debug, loading


def registered_functions(conn):
    """{(name, number of arguments): flags} of every function sqlitebin added."""
    sql = "select name, narg, flags from pragma_function_list"
    before = {(name, narg) for name, narg, _ in apsw.Connection(":memory:").execute(sql)}
    return {(name, narg): flags for name, narg, flags in conn.execute(sql) if (name, narg) not in before}


def test_registered_functions_exactly(conn):
    assert set(registered_functions(conn)) == EXPECTED_FUNCTIONS | FTS5_AUXILIARY_FUNCTIONS


def test_functions_are_deterministic_and_innocuous(conn):
    SQLITE_DETERMINISTIC, SQLITE_INNOCUOUS = 0x800, 0x200000
    for key, flags in registered_functions(conn).items():
        if key in FTS5_AUXILIARY_FUNCTIONS:
            continue
        assert flags & SQLITE_DETERMINISTIC, key
        assert flags & SQLITE_INNOCUOUS, key


def test_version_and_debug(conn):
    assert scalar(conn, "select sqlitebin_version()") == sqlitebin.__version__
    debug = dict(line.split("=", 1) for line in scalar(conn, "select sqlitebin_debug()").splitlines())
    assert debug["version"] == sqlitebin.__version__
    assert debug["popcount"] in {"portable", "popcnt", "avx2", "avx512"}
    assert debug["sqlite_runtime"] == apsw.sqlite_lib_version()


def test_loadable_path_is_absolute():
    path = sqlitebin.loadable_path()
    assert os.path.isabs(path) and os.path.exists(path)


def test_extension_has_no_python_symbols():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed")
    out = subprocess.run([nm, "-D", sqlitebin.loadable_path()], capture_output=True, text=True, check=True).stdout
    defined = [line.split()[-1] for line in out.splitlines() if " T " in line]
    assert defined == [sqlitebin.ENTRY_POINT]
    assert "Py" not in out and "sqlite3_api" not in [line.split()[-1] for line in out.splitlines()]


def test_load_leaves_extension_loading_disabled():
    connection = apsw.Connection(":memory:")
    sqlitebin.load(connection)
    with pytest.raises(apsw.ExtensionLoadingError):
        connection.load_extension(sqlitebin.loadable_path())


def test_stdlib_sqlite3():
    import sqlite3

    connection = sqlite3.connect(":memory:")
    if not hasattr(connection, "enable_load_extension"):
        with pytest.raises(RuntimeError, match="built without extension loading"):
            sqlitebin.load(connection)
        pytest.skip("this Python's sqlite3 module cannot load extensions")
    sqlitebin.load(connection)
    assert connection.execute("select hamming(x'ff00', x'0f0f')").fetchone()[0] == 8


def test_sqlite3_shell_loads_the_extension():
    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 command line is not installed")
    result = subprocess.run(
        [shell, ":memory:", f".load {sqlitebin.loadable_path()}", "select hamming(x'ff00', x'0f0f')"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "8"
