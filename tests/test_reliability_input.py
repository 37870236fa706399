"""Bad input never crashes or corrupts: every SQL function, the Python API and the command line, case by case.

Each case is one row of a table: the input, and the one clear error it must give (or the value, for
inputs that are odd but valid, such as empty BLOBs and NULLs). After every Python API case the
database is checked unchanged: `PRAGMA integrity_check` is ok, no row was written and the same
search gives the same answer. 100 MB BLOBs get their own tests.
"""

import zlib

import apsw
import numpy as np
import pytest
from click.testing import CliRunner

import sqlitebin
from sqlitebin.cli import main

MIB = 1 << 20


def f32(values):
    return np.asarray(values, dtype="<f4").tobytes()


def i64(values):
    return np.asarray(values, dtype="<i8").tobytes()


def toy_embedder(texts):
    """A deterministic stand-in for WordLlama: 16 dimensions from a hash of each text."""
    out = np.empty((len(texts), 16), dtype=np.float32)
    for row, text in enumerate(texts):
        out[row] = np.random.default_rng(zlib.crc32(text.encode("utf-8"))).standard_normal(16)
    return out


# ---------------------------------------------------------------------------
# SQL functions: every BLOB argument given the wrong type, NULL, empty, odd-length, non-finite
# or of the wrong size.

# name, argument names, valid arguments (4-d vectors), the result for those arguments
FUNCTIONS = [
    ("hamming", ["a", "b"], [b"\x0f\xf0", b"\xff\xff"], 8),
    ("bit_count", ["a"], [b"\x0f\xf1"], 9),
    ("binary_quantize", ["v"], [f32([1, -1, 2, 0])], b"\xa0"),
    ("binary_quantize", ["v", "thresholds"], [f32([1, -1, 2, 0]), f32([2, -2, 0, -1])], b"\x70"),
    ("int8_quantize", ["v", "ranges"], [f32([0, 1, 0.5, 7]), f32([0, 0, 0, 0, 1, 1, 1, 0])], bytes([0x80, 0x7f, 0x00, 0x80])),
    ("dot_float32", ["query", "vector"], [f32([1, 2, 3, 4]), f32([1, 1, 1, -1])], 2.0),
    ("dot_int8", ["query", "vector", "ranges"], [f32([1, 2, 3, 4]), bytes([0x80, 0x7f, 0x80, 0x80]),
                                                 f32([0, 0, 0, 0, 1, 1, 1, 1])], 2.0),
    ("dot_bits", ["query", "bits"], [f32([1, 2, 3, 4]), b"\xa0"], -2.0),
]
FLOAT_ARGUMENTS = {("binary_quantize", 0), ("binary_quantize", 1), ("int8_quantize", 0), ("int8_quantize", 1),
                   ("dot_float32", 0), ("dot_float32", 1), ("dot_int8", 0), ("dot_int8", 2), ("dot_bits", 0)}


def call_sql(name, count):
    return f"SELECT {name}({', '.join('?' * count)})"


def sql_cases():
    cases = []
    for name, arguments, valid, result in FUNCTIONS:
        n = len(arguments)
        label = f"{name}/{n}"
        cases.append((f"{label} valid", call_sql(name, n), valid, ("value", result)))
        for position, argument in enumerate(arguments):
            def replaced(value, position=position):
                return [value if i == position else v for i, v in enumerate(valid)]

            where = f"argument {position + 1} ({argument})"
            for value, type_name in (("text", "TEXT"), (5, "INTEGER"), (1.5, "REAL")):
                cases.append((f"{label} {argument} {type_name}", call_sql(name, n), replaced(value),
                              f"{name}(): {where} must be a BLOB, got {type_name}"))
            cases.append((f"{label} {argument} NULL", call_sql(name, n), replaced(None), ("value", None)))
            # NaN as a REAL parameter: SQLite stores NaN as NULL, so NULL comes out.
            cases.append((f"{label} {argument} REAL NaN", call_sql(name, n), replaced(float("nan")), ("value", None)))
            if (name, position) in FLOAT_ARGUMENTS:
                size = len(valid[position])
                for odd in (1, 3, 5, size + 2):
                    cases.append((f"{label} {argument} {odd} bytes", call_sql(name, n), replaced(b"\x01" * odd),
                                  f"{name}(): {where} is {odd} bytes, not a whole number of float32 values (4 bytes each)"))
                values = np.frombuffer(valid[position], dtype="<f4").copy()
                for bad, word in ((np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")):
                    spoiled = values.copy()
                    spoiled[-1] = bad
                    cases.append((f"{label} {argument} {word} {bad}", call_sql(name, n), replaced(spoiled.tobytes()),
                                  f"{name}(): {where} holds a non-finite value ({word}) at index {len(values) - 1}"))
        cases.append((f"{label} all NULL", call_sql(name, n), [None] * n, ("value", None)))
        # Non-UTF-8 text where a BLOB belongs.
        bad_text = ", ".join(["CAST(x'fffe' AS TEXT)"] + ["?"] * (n - 1))
        cases.append((f"{label} non-UTF-8 TEXT", f"SELECT {name}({bad_text})", valid[1:],
                      f"{name}(): argument 1 ({arguments[0]}) must be a BLOB, got TEXT"))
    empty = [("hamming", 2, 0), ("bit_count", 1, 0), ("binary_quantize", 1, b""), ("binary_quantize", 2, b""),
             ("int8_quantize", 2, b""), ("dot_float32", 2, 0.0), ("dot_int8", 3, 0.0), ("dot_bits", 2, 0.0)]
    for name, n, result in empty:
        cases.append((f"{name}/{n} empty BLOBs", call_sql(name, n), [b""] * n, ("value", result)))
    # Sizes that disagree: the message carries both numbers.
    cases += [
        ("hamming sizes differ", "SELECT hamming(?, ?)", [b"\x00" * 3, b"\x00" * 2], "hamming(): BLOB sizes differ (3 vs 2 bytes)"),
        ("hamming empty vs one", "SELECT hamming(?, ?)", [b"", b"\x00"], "hamming(): BLOB sizes differ (0 vs 1 bytes)"),
        ("thresholds wrong dimension", "SELECT binary_quantize(?, ?)", [f32([1, 2, 3]), f32([0, 0])],
         "binary_quantize(): thresholds has 2 values but the vector has 3"),
        ("ranges wrong dimension", "SELECT int8_quantize(?, ?)", [f32([1, 2]), f32([0, 0, 1])],
         "int8_quantize(): ranges has 3 values but needs 4 (2 minimums then 2 maximums)"),
        ("ranges minimum above maximum", "SELECT int8_quantize(?, ?)", [f32([1, 2]), f32([0, 3, 1, 1])],
         "int8_quantize(): range of dimension 1 has minimum 3 above maximum 1"),
        ("ranges wider than float32", "SELECT int8_quantize(?, ?)", [f32([1]), f32([-3e38, 3e38])],
         "int8_quantize(): range of dimension 0 (-3e+38 to 3e+38) is too wide for the int8 formula in float32"),
        ("ranges too wide for 255 steps", "SELECT int8_quantize(?, ?)", [f32([1]), f32([0, 2e36])],
         "int8_quantize(): range of dimension 0 (0 to 2e+36) is too wide for the int8 formula in float32"),
        ("ranges just narrow enough", "SELECT hex(int8_quantize(?, ?))", [f32([1e36]), f32([0, 1.3e36])], ("value", "44")),
        ("dot_int8 ranges wider than float32", "SELECT dot_int8(?, ?, ?)", [f32([1]), b"\x00", f32([-3e38, 3e38])],
         "dot_int8(): range of dimension 0 (-3e+38 to 3e+38) is too wide for the int8 formula in float32"),
        ("dot_float32 wrong dimension", "SELECT dot_float32(?, ?)", [f32([1, 2, 3]), f32([1, 2])],
         "dot_float32(): vector sizes differ (3 vs 2 values)"),
        ("dot_int8 wrong dimension", "SELECT dot_int8(?, ?, ?)", [f32([1, 2, 3]), b"\x00\x00", f32([0] * 6)],
         "dot_int8(): the query has 3 values but the int8 vector has 2"),
        ("dot_int8 ranges wrong dimension", "SELECT dot_int8(?, ?, ?)", [f32([1, 2]), b"\x00\x00", f32([0] * 6)],
         "dot_int8(): ranges has 6 values but needs 4 (2 minimums then 2 maximums)"),
        ("dot_bits wrong dimension", "SELECT dot_bits(?, ?)", [f32([1] * 9), b"\x00"],
         "dot_bits(): the query has 9 values, which pack into 2 bytes, but bits is 1 bytes"),
        ("sqlitebin_version argument", "SELECT sqlitebin_version(1)", [], "wrong number of arguments to function sqlitebin_version()"),
        ("sqlitebin_debug argument", "SELECT sqlitebin_debug(x'00')", [], "wrong number of arguments to function sqlitebin_debug()"),
        ("hamming three arguments", "SELECT hamming(x'00', x'00', x'00')", [], "wrong number of arguments to function hamming()"),
    ]
    return cases


SQL_CASES = sql_cases()


@pytest.mark.parametrize("sql,params,expected", [c[1:] for c in SQL_CASES], ids=[c[0] for c in SQL_CASES])
def test_sql_function_input(conn, sql, params, expected):
    if isinstance(expected, tuple):
        assert conn.execute(sql, params).fetchall()[0][0] == expected[1]
    else:
        with pytest.raises(apsw.SQLError) as excinfo:
            conn.execute(sql, params).fetchall()
        assert str(excinfo.value) == expected


# ---------------------------------------------------------------------------
# A collection's index searched from SQL: query, k, oversample, rescore, candidates and prefilter.

INDEX_NAME = "we'ird \"name\"; DROP TABLE victim; --"
INDEX_TABLE = '"' + (INDEX_NAME + "_index").replace('"', '""') + '"'
INDEX_SHOWN = INDEX_NAME + "_index"


@pytest.fixture(scope="module")
def index_db():
    db = sqlitebin.connect(":memory:")
    db.conn.execute("CREATE TABLE victim (x)")
    collection = db.create_collection(INDEX_NAME, dim=16, embedder=None, rescore="none", chunk_size=64)
    vectors = np.random.default_rng(3).standard_normal((50, 16)).astype(np.float32)
    collection.add(vectors=vectors)
    yield db, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    db.close()


CODE = b"\x0f\xf0"            # 16-bit query code
FLOATS = f32(np.linspace(-1, 1, 16))
QUERY_SIZES = "the MATCH query must be a float32 BLOB of 64 bytes (dim 16) or a packed code of 2 bytes, got"
INDEX_CASES = [
    ("query TEXT", "k = 5", ["abc"], f"{QUERY_SIZES} TEXT of 3 bytes"),
    ("query INTEGER", "k = 5", [7], f"{QUERY_SIZES} INTEGER of 1 bytes"),
    ("query NULL", "k = 5", [None], f"{QUERY_SIZES} NULL of 0 bytes"),
    ("query empty", "k = 5", [b""], f"{QUERY_SIZES} BLOB of 0 bytes"),
    ("query odd length", "k = 5", [b"abc"], f"{QUERY_SIZES} BLOB of 3 bytes"),
    ("query NaN", "k = 5", [f32(np.where(np.arange(16) == 15, np.nan, 1.0))],
     "the MATCH query holds a non-finite value at index 15"),
    ("query infinity", "k = 5", [f32(np.full(16, np.inf))], "the MATCH query holds a non-finite value at index 0"),
    ("query too large for float32 sums", "k = 5", [f32(np.full(16, 3e38))],
     "the MATCH query values are too large (their magnitudes add up to 4.8e+39; the limit is 1e38)"),
    ("k 0", "k = 0", [FLOATS], "k must be a positive INTEGER, got 0"),
    ("k negative", "k = -3", [FLOATS], "k must be a positive INTEGER, got -3"),
    ("k REAL", "k = 2.5", [FLOATS], "k must be a positive INTEGER, got REAL"),
    ("k TEXT", "k = '5'", [FLOATS], "k must be a positive INTEGER, got TEXT"),
    ("k NULL", "k = NULL", [FLOATS], "k must be a positive INTEGER, got NULL"),
    ("oversample 0", "k = 5 AND oversample = 0", [FLOATS], "oversample must be a positive INTEGER, got 0"),
    ("rescore unknown", "k = 5 AND rescore = 'int4'", [FLOATS],
     "rescore must be 'int8', 'float32', 'bits' or 'none', got int4"),
    ("rescore not stored", "k = 5 AND rescore = 'int8'", [FLOATS],
     f"rescore = 'int8' needs stored int8 vectors, but {INDEX_SHOWN} stores none"),
    ("candidates unknown", "k = 5 AND candidates = 'cosine'", [FLOATS],
     "candidates must be 'asymmetric' or 'hamming', got cosine"),
    ("packed code, asymmetric", "k = 5 AND candidates = 'asymmetric'", [CODE],
     "a packed-code query allows only candidates = 'hamming'"),
    ("k above the collection size", "k = 1000000000", [FLOATS], 50),
    ("k default", "1", [FLOATS], 10),
    ("packed code", "k = 7 AND candidates = 'hamming'", [CODE], 7),
    ("query large but within the limit", "k = 5", [f32(np.full(16, 6e36))], 5),
    ("prefilter empty", "k = 5 AND rowid IN (SELECT value FROM json_each('[]'))", [FLOATS], 0),
    ("prefilter int64 extremes", f"k = 5 AND rowid IN ({-(2**63)}, {2**63 - 1}, 3)", [FLOATS], 1),
    ("prefilter with repeats", "k = 5 AND rowid IN (4, 4, 4, 9)", [FLOATS], 2),
]


@pytest.mark.parametrize("condition,params,expected", [c[1:] for c in INDEX_CASES], ids=[c[0] for c in INDEX_CASES])
def test_index_search_input(index_db, condition, params, expected):
    db, _ = index_db
    sql = f"SELECT rowid, distance FROM {INDEX_TABLE} WHERE vector MATCH ? AND {condition}"
    if isinstance(expected, int):
        assert len(db.conn.execute(sql, params).fetchall()) == expected
    else:
        with pytest.raises(apsw.SQLError) as excinfo:
            db.conn.execute(sql, params).fetchall()
        assert str(excinfo.value) == f"sqlitebin: {INDEX_SHOWN}: {expected}"
    assert db.conn.execute("SELECT count(*) FROM victim").fetchall() == [(0,)]


# ---------------------------------------------------------------------------
# 100 MB BLOBs: correct answers (or the size error), no crash.


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(100)
    return rng.integers(0, 256, 100 * MIB, dtype=np.uint8)


def bits_set(array):
    return int(np.bitwise_count(array.view(np.uint64)).sum())


def test_100_mb_hamming_and_bit_count(conn, big):
    other = np.roll(big, 1)
    assert conn.execute("SELECT hamming(?, ?)", (big.tobytes(), other.tobytes())).fetchall()[0][0] == bits_set(big ^ other)
    assert conn.execute("SELECT bit_count(?)", (big.tobytes(),)).fetchall()[0][0] == bits_set(big)
    with pytest.raises(apsw.SQLError, match=rf"hamming\(\): BLOB sizes differ \({100 * MIB} vs {100 * MIB - 1} bytes\)"):
        conn.execute("SELECT hamming(?, ?)", (big.tobytes(), big[1:].tobytes())).fetchall()


def test_100_mb_float_vectors(conn):
    vector = np.random.default_rng(101).standard_normal(25 * MIB).astype(np.float32)
    blob = vector.tobytes()
    assert conn.execute("SELECT binary_quantize(?)", (blob,)).fetchall()[0][0] == np.packbits(vector > 0).tobytes()
    got = conn.execute("SELECT dot_float32(?, ?)", (blob, blob)).fetchall()[0][0]
    assert got == pytest.approx(float(np.dot(vector.astype(np.float64), vector)), rel=1e-9)
    signs = np.packbits(vector > 0).tobytes()
    got = conn.execute("SELECT dot_bits(?, ?)", (blob, signs)).fetchall()[0][0]
    assert got == pytest.approx(float(np.abs(vector.astype(np.float64)).sum()), rel=1e-9)
    vector[-1] = np.nan
    with pytest.raises(apsw.SQLError) as excinfo:
        conn.execute("SELECT binary_quantize(?)", (vector.tobytes(),)).fetchall()
    assert str(excinfo.value) == f"binary_quantize(): argument 1 (v) holds a non-finite value (NaN) at index {25 * MIB - 1}"
    with pytest.raises(apsw.SQLError, match=r"not a whole number of float32 values"):
        conn.execute("SELECT binary_quantize(?)", (blob[:-1],)).fetchall()


def test_100_mb_index_query(index_db, big):
    db, _ = index_db
    sql = f"SELECT rowid FROM {INDEX_TABLE} WHERE vector MATCH ? AND k = 5"
    with pytest.raises(apsw.SQLError, match=rf"or a packed code of 2 bytes, got BLOB of {100 * MIB - 1} bytes$"):
        db.conn.execute(sql, (big.tobytes()[:-1],)).fetchall()
    # A whole number of 16-d float32 queries is a batch: random bytes hold values no scan can sum.
    with pytest.raises(apsw.SQLError, match=rf"^sqlitebin: .*_index: the MATCH query "):
        db.conn.execute(sql, (big.tobytes(),)).fetchall()


def test_100_mb_python_inputs(tmp_path):
    db = sqlitebin.connect(tmp_path / "big.db")
    collection = db.create_collection("c", dim=16, embedder=None)
    collection.add(vectors=np.ones((3, 16)))
    huge = np.ones(25 * MIB, dtype=np.float32)
    with pytest.raises(ValueError, match=rf"Collection.search\(\): vectors have dimension {25 * MIB} but the collection has 16"):
        collection.search(huge)
    with pytest.raises(ValueError, match=rf"Collection.add\(\): vectors have dimension {25 * MIB} but the collection has 16"):
        collection.add(vectors=huge)
    # A 100 MB text and metadata are stored and read back whole.
    text = "x" * (100 * MIB)
    [new_id] = collection.add([text], vectors=np.ones((1, 16)), metadata=[{"blob": "y" * MIB}])
    [hit] = collection.get([new_id])
    assert len(hit.text) == 100 * MIB and len(hit.metadata["blob"]) == MIB
    assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()


# ---------------------------------------------------------------------------
# The Python API: each bad call raises one clear error, and the database is unchanged after it.


@pytest.fixture
def api(tmp_path):
    db = sqlitebin.connect(tmp_path / "api.db")
    vectors = db.create_collection("vectors", dim=16, embedder=None, rescore="int8")
    vectors.add(vectors=np.random.default_rng(0).standard_normal((300, 16)), metadata=[{"n": i} for i in range(300)])
    texts = db.create_collection("texts", dim=16, embedder=toy_embedder, fts=True)
    texts.add([f"document number {i} about {word}" for i, word in enumerate(["sqlite", "numpy", "debian"] * 20)])
    before = snapshot(db)
    yield db, vectors, texts
    assert snapshot(db) == before, "a rejected call changed the database"
    db.close()


def snapshot(db):
    """Everything a rejected call must leave alone: integrity, every table's rows, and search answers."""
    conn = db.conn
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    tables = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name")]
    contents = {table: conn.execute(f'SELECT * FROM "{table.replace(chr(34), chr(34) * 2)}"').fetchall()
                for table in tables if not table.endswith(("_data", "_idx", "_config", "_docsize"))}
    query = np.linspace(-1, 1, 16)
    searches = [[h.id for h in db.collection("vectors").search(query, 10, candidates=candidates)]
                for candidates in ("asymmetric", "hamming")]
    searches.append([h.id for h in db.collection("texts", embedder=toy_embedder).search("sqlite", 5, mode="hybrid")])
    return tables, contents, searches


Q = np.linspace(-1, 1, 16)
ONE = np.ones((1, 16))
API_CASES = [
    # k: 0, negative, non-integer, above the collection size
    ("k 0", lambda v, t: v.search(Q, 0), ValueError, r"Collection.search\(\): k must be from 1 to 100000, got 0"),
    ("k negative", lambda v, t: v.search(Q, -5), ValueError, r"k must be from 1 to 100000, got -5"),
    ("k too large", lambda v, t: v.search(Q, 100_001), ValueError, r"k must be from 1 to 100000, got 100001"),
    ("k float", lambda v, t: v.search(Q, 2.5), TypeError, r"Collection.search\(\): k must be an integer, got 2.5"),
    ("k whole float", lambda v, t: v.search(Q, 3.0), TypeError, r"k must be an integer, got 3.0"),
    ("k string", lambda v, t: v.search(Q, "3"), TypeError, r"k must be an integer, got '3'"),
    ("k None", lambda v, t: v.search(Q, None), TypeError, r"k must be an integer, got None"),
    ("k bool", lambda v, t: v.search(Q, True), TypeError, r"k must be an integer, got True"),
    ("k NaN", lambda v, t: v.search(Q, float("nan")), TypeError, r"k must be an integer, got nan"),
    # oversample out of range
    ("oversample 0", lambda v, t: v.search(Q, 5, oversample=0), ValueError, r"oversample must be from 1 to 1000, got 0"),
    ("oversample negative", lambda v, t: v.search(Q, 5, oversample=-1), ValueError, r"oversample must be from 1 to 1000, got -1"),
    ("oversample 1001", lambda v, t: v.search(Q, 5, oversample=1001), ValueError, r"oversample must be from 1 to 1000, got 1001"),
    ("oversample float", lambda v, t: v.search(Q, 5, oversample=1.5), TypeError, r"oversample must be an integer, got 1.5"),
    # query vectors: NaN, infinity, wrong dimension, wrong shape, wrong type
    ("query NaN", lambda v, t: v.search(np.full(16, np.nan)), ValueError,
     r"Collection.search\(\): vector 0 holds a non-finite value \(nan\) at index 0"),
    ("query infinity", lambda v, t: v.search(np.r_[np.zeros(15), np.inf]), ValueError,
     r"vector 0 holds a non-finite value \(inf\) at index 15"),
    ("query overflows float32", lambda v, t: v.search(np.full(16, 1e300)), ValueError, r"non-finite value \(inf\)"),
    ("query dimension 15", lambda v, t: v.search(np.ones(15)), ValueError, r"vectors have dimension 15 but the collection has 16"),
    ("query dimension 17", lambda v, t: v.search(np.ones(17)), ValueError, r"vectors have dimension 17 but the collection has 16"),
    ("query two vectors", lambda v, t: v.search(np.ones((2, 16))), ValueError, r"expected one query vector, got 2"),
    ("query 3-D", lambda v, t: v.search(np.ones((1, 1, 16))), ValueError, r"vectors must be 2-D \(n, dim\), got shape \(1, 1, 16\)"),
    ("query bytes", lambda v, t: v.search(b"\x00" * 64), TypeError, r"vectors must be numeric arrays"),
    ("query None", lambda v, t: v.search(None), ValueError, r"vectors must be 2-D \(n, dim\), got shape \(\)"),
    ("query strings", lambda v, t: v.search(["a"] * 16), TypeError, r"vectors must be numeric arrays"),
    ("query empty text", lambda v, t: t.search("   "), ValueError, r"Collection.search\(\): the query is empty"),
    ("query text, no embedder", lambda v, t: v.search("sqlite"), ValueError, r"collection 'vectors' has no embedder"),
    ("query not UTF-8", lambda v, t: t.search("caf\udce9"), ValueError,
     r"Collection.search\(\): the query is not valid Unicode \(surrogates not allowed\)"),
    ("keyword query not UTF-8", lambda v, t: t.search("caf\udce9", mode="keyword"), ValueError, r"the query is not valid Unicode"),
    ("keyword vector query", lambda v, t: t.search(Q, mode="keyword"), TypeError, r"mode='keyword' needs a text query, got ndarray"),
    ("keyword without FTS", lambda v, t: v.search("x", mode="keyword"), ValueError, r"mode='keyword' needs a text index"),
    ("mode unknown", lambda v, t: v.search(Q, mode="fuzzy"), ValueError, r"mode must be one of 'vector', 'keyword', 'hybrid', got 'fuzzy'"),
    ("rescore unknown", lambda v, t: v.search(Q, rescore="int4"), ValueError, r"rescore must be one of"),
    ("rescore not stored", lambda v, t: v.search(Q, rescore="float32"), ValueError, r"rescore='float32' needs float32 vectors"),
    ("candidates unknown", lambda v, t: v.search(Q, candidates="cosine"), ValueError, r"candidates must be one of"),
    ("vector_weight NaN", lambda v, t: t.search("x", mode="hybrid", vector_weight=float("nan")), ValueError,
     r"vector_weight must be a number from 0 to 100, got nan"),
    # where: SQL injection, comments, bad SQL, missing parameters, non-UTF-8
    ("where two statements", lambda v, t: v.search(Q, where="1; DROP TABLE vectors_documents"), ValueError,
     r"where must be a single SQL condition without ';'"),
    ("where comment", lambda v, t: v.search(Q, where="1 -- comment"), ValueError, r"where must not contain SQL comments"),
    ("where empty", lambda v, t: v.search(Q, where="  "), ValueError, r"where must be a non-empty SQL condition"),
    ("where not SQL", lambda v, t: v.search(Q, where="nonsense((("), apsw.SQLError, r"syntax error"),
    ("where missing parameter", lambda v, t: v.search(Q, where="id = :x"), ValueError,
     r"where uses :x but params gives it no value"),
    ("where reserved parameter", lambda v, t: v.search(Q, where="id = :sqlitebin_k", params={"sqlitebin_k": 1}), ValueError,
     r"parameter names starting with 'sqlitebin_' are reserved"),
    ("where not UTF-8", lambda v, t: v.search(Q, where="metadata = '\udcff'"), ValueError,
     r"Collection.search\(\): where is not valid Unicode \(surrogates not allowed\)"),
    # add: vectors
    ("add NaN", lambda v, t: v.add(vectors=np.r_[np.ones((5, 16)), np.full((1, 16), np.nan)], batch_size=2), ValueError,
     r"Collection.add\(\): vector 5 holds a non-finite value \(nan\) at index 0"),
    ("add infinity", lambda v, t: v.add(vectors=np.full((1, 16), -np.inf)), ValueError, r"vector 0 holds a non-finite value \(-inf\)"),
    ("add wrong dimension", lambda v, t: v.add(vectors=np.ones((2, 15))), ValueError, r"vectors have dimension 15 but the collection has 16"),
    ("add ragged", lambda v, t: v.add(vectors=[[1.0] * 16, [1.0] * 15]), TypeError, r"vectors must be numeric arrays"),
    ("add nothing", lambda v, t: v.add(), ValueError, r"give texts, vectors, or both"),
    ("add one string", lambda v, t: t.add("text"), TypeError, r"texts must be a list of strings, not one string"),
    ("add bytes text", lambda v, t: t.add([b"text"]), TypeError, r"text 0 is bytes, not str"),
    ("add None text", lambda v, t: t.add(["a", None]), TypeError, r"text 1 is NoneType, not str"),
    ("add text not UTF-8", lambda v, t: t.add(["fine"] * 3 + ["caf\udce9"], batch_size=2), ValueError,
     r"Collection.add\(\): text 3 is not valid Unicode \(surrogates not allowed\)"),
    ("add texts and vectors disagree", lambda v, t: t.add(["a", "b"], vectors=ONE), ValueError, r"got 2 texts but 1 vectors"),
    ("add batch_size 0", lambda v, t: v.add(vectors=ONE, batch_size=0), ValueError, r"batch_size must be from 1 to 1000000, got 0"),
    # add: ids
    ("add string id", lambda v, t: v.add(vectors=ONE, ids=["1"]), TypeError, r"ids must be integers; id 0 is '1'"),
    ("add float id", lambda v, t: v.add(vectors=ONE, ids=[1.5]), TypeError, r"ids must be integers; id 0 is 1.5"),
    ("add id beyond 64 bits", lambda v, t: v.add(vectors=ONE, ids=[2**63]), ValueError, r"id 0 \(9223372036854775808\) does not fit in 64 bits"),
    ("add repeated ids", lambda v, t: v.add(vectors=np.ones((2, 16)), ids=[900, 900]), ValueError, r"ids must be unique"),
    ("add existing id", lambda v, t: v.add(vectors=ONE, ids=[1]), ValueError, r"id 1 already exists in collection 'vectors'"),
    ("add too few ids", lambda v, t: v.add(vectors=np.ones((2, 16)), ids=[901]), ValueError, r"got 1 ids for 2 documents"),
    # add: metadata that is not JSON-serializable
    ("metadata set", lambda v, t: v.add(vectors=ONE, metadata=[{"a": {1, 2}}]), TypeError,
     r"Collection.add\(\): metadata 0 is not JSON-serializable \(Object of type set is not JSON serializable\)"),
    ("metadata bytes", lambda v, t: v.add(vectors=ONE, metadata=[{"a": b"x"}]), TypeError, r"Object of type bytes is not JSON serializable"),
    ("metadata NaN", lambda v, t: v.add(vectors=ONE, metadata=[{"a": float("nan")}]), TypeError, r"Out of range float values"),
    ("metadata object", lambda v, t: v.add(vectors=ONE, metadata=[{"a": object()}]), TypeError, r"Object of type object"),
    ("metadata tuple key", lambda v, t: v.add(vectors=ONE, metadata=[{(1, 2): 1}]), TypeError, r"keys must be str"),
    ("metadata circular", lambda v, t: v.add(vectors=ONE, metadata=[circular()]), TypeError, r"Circular reference detected"),
    ("metadata not a dict", lambda v, t: v.add(vectors=ONE, metadata=[[1, 2]]), TypeError, r"metadata 0 must be a dict or None, got list"),
    ("metadata one dict", lambda v, t: v.add(vectors=ONE, metadata={"a": 1}), TypeError, r"metadata must be a list with one dict"),
    ("metadata count", lambda v, t: v.add(vectors=ONE, metadata=[None, None]), ValueError, r"got 2 metadata entries for 1 documents"),
    ("metadata not UTF-8, second batch", lambda v, t: v.add(vectors=np.ones((5, 16)), metadata=[{}] * 4 + [{"a": "\udcff"}],
                                                          batch_size=2), ValueError,
     r"Collection.add\(\): metadata 4 is not valid Unicode \(surrogates not allowed\)"),
    # delete and get
    ("delete a string", lambda v, t: v.delete("12"), TypeError, r"Collection.delete\(\): ids must be a sequence of integers, got str"),
    ("delete floats", lambda v, t: v.delete([1.0]), TypeError, r"ids must be integers; id 0 is 1.0"),
    ("get a number", lambda v, t: v.get(5), TypeError, r"Collection.get\(\): ids must be a sequence of integers, got int"),
]


def circular():
    entry = {}
    entry["self"] = entry
    return entry


@pytest.mark.parametrize("call,error,message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_python_api_input(api, call, error, message):
    _, vectors, texts = api
    with pytest.raises(error, match=message):
        call(vectors, texts)


def test_odd_but_valid_queries(api):
    _, vectors, texts = api
    assert len(vectors.search(Q, 1000)) == 300                  # k above the collection size: all of it
    assert len(vectors.search(Q, np.int64(7), oversample=np.int32(3))) == 7  # NumPy integers
    assert len(vectors.search(np.zeros(16), 5)) == 5            # a zero vector has no direction, but is valid
    assert len(vectors.search(np.full(16, 1e-30), 5)) == 5      # tiny values normalise fine
    assert len(texts.search("\x00 sqlite \U0001F600", 5)) == 5  # NUL and astral characters are text like any other
    assert texts.search("AND OR NOT \" * NEAR(", 5, mode="keyword") == []
    assert vectors.search(Q, 5, where="json_extract(metadata, '$.n') = :n", params={"n": 7})[0].metadata == {"n": 7}


NAMES = [
    'a"b', "a'b", "with space", "semi;colon", "select", "order", "table", "drop", "a.b", "main", "temp",
    'x"; DROP TABLE victim; --', "Robert'); DROP TABLE victim;--", "%s%n%q%w", "[brackets]", "`tick`",
    "Ünïcödé 名前 🙂", "tab\tnew\nline", "x" * 128,
]


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_collection_names_are_quoted_everywhere(tmp_path, name):
    """Names are identifiers, never SQL: every operation works and nothing else in the file is touched."""
    path = tmp_path / "names.db"
    db = sqlitebin.connect(path)
    db.conn.execute("CREATE TABLE victim (x)")
    db.conn.execute("INSERT INTO victim VALUES (1)")
    collection = db.create_collection(name, dim=16, embedder=toy_embedder, fts=True, chunk_size=64)
    vectors = np.random.default_rng(1).standard_normal((30, 16))
    ids = collection.add([f"text {i} sqlite" for i in range(30)], vectors=vectors)
    knn = [h.id for h in collection.search(vectors[3], 5)]
    assert knn[0] == ids[3]
    assert collection.search("sqlite", 3, mode="keyword") and collection.search("text", 3, mode="hybrid")
    index = '"' + (name + "_index").replace('"', '""') + '"'
    query = (vectors[3] / np.linalg.norm(vectors[3])).astype("<f4").tobytes()
    assert db.conn.execute(f"SELECT rowid FROM {index} WHERE vector MATCH ? AND k = 1", (query,)).fetchall() == [
        (ids[3],)]
    collection.delete(ids[:10])
    collection.upsert(["changed"], vectors=vectors[:1], ids=[ids[20]])
    db.close()
    db = sqlitebin.connect(path)
    assert db.collections() == [name]
    reopened = db.collection(name, embedder=toy_embedder)
    assert len(reopened) == 20 and reopened.get([ids[20]])[0].text == "changed"
    assert reopened.info()["documents"] == 20
    db.drop_collection(name)
    assert db.conn.execute("SELECT x FROM victim").fetchall() == [(1,)]
    assert [r[0] for r in db.conn.execute("SELECT name FROM sqlite_master")] == ["victim", "sqlitebin_collections",
                                                                                "sqlite_autoindex_sqlitebin_collections_1"]
    assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()


NAME_ERRORS = [
    ("", ValueError, r"collection name must be 1 to 128 characters with no NUL, got ''"),
    ("a\x00b", ValueError, r"collection name must be 1 to 128 characters with no NUL"),
    ("x" * 129, ValueError, r"collection name must be 1 to 128 characters"),
    (5, TypeError, r"collection name must be a string, got int"),
    (None, TypeError, r"collection name must be a string, got NoneType"),
    (b"name", TypeError, r"collection name must be a string, got bytes"),
    ("caf\udce9", ValueError, r"collection name 'caf\\udce9' is not valid Unicode \(surrogates not allowed\)"),
    ("sqlite", ValueError, r"collection names starting with 'sqlite_' are reserved by SQLite, got 'sqlite'"),
    ("SQLite_stat", ValueError, r"collection names starting with 'sqlite_' are reserved by SQLite"),
]


@pytest.mark.parametrize("name,error,message", NAME_ERRORS, ids=range(len(NAME_ERRORS)))
def test_bad_collection_names(tmp_path, name, error, message):
    db = sqlitebin.connect(tmp_path / "bad.db")
    for call in (lambda: db.create_collection(name, dim=8, embedder=None), lambda: db.collection(name),
                 lambda: db.drop_collection(name)):
        with pytest.raises(error, match=message):
            call()
    assert db.conn.execute("SELECT count(*) FROM sqlite_master").fetchall() == [(0,)]
    db.close()


def test_names_differing_only_in_case_clash_cleanly(tmp_path):
    """SQLite table names ignore case: the second collection fails whole, and the first is untouched."""
    db = sqlitebin.connect(tmp_path / "case.db")
    first = db.create_collection("Notes", dim=8, embedder=None)
    first.add(vectors=np.ones((3, 8)))
    with pytest.raises(apsw.SQLError, match=r'table "notes_documents" already exists'):
        db.create_collection("notes", dim=8, embedder=None)
    assert db.collections() == ["Notes"] and len(db.collection("Notes")) == 3
    assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()


# ---------------------------------------------------------------------------
# The command line: one `Error:` line, never a traceback.

CLI_NAME = 'we"ird; DROP TABLE x --'


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory):
    import json

    from sqlitebin.datasets import load_corpus, sample_corpus_path

    folder = tmp_path_factory.mktemp("cli")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in load_corpus(sample_corpus_path())[:60]), encoding="utf-8")
    (folder / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    (folder / "notdb.db").write_bytes(b"This is not a database file at all, just text." * 100)
    result = CliRunner().invoke(main, ["index", str(folder / "t.db"), str(corpus), "--collection", CLI_NAME])
    assert result.exit_code == 0, result.output
    return folder


CLI_CASES = [
    ("-k 0", ["search", "{db}", "editor", "-k", "0"], 2, "Invalid value for '-k': 0 is not in the range 1<=x<=100000."),
    ("-k negative", ["search", "{db}", "editor", "-k", "-1"], 2, "Invalid value for '-k': -1 is not in the range 1<=x<=100000."),
    ("-k float", ["search", "{db}", "editor", "-k", "1.5"], 2, "Invalid value for '-k': '1.5' is not a valid integer range."),
    ("-k too large", ["search", "{db}", "editor", "-k", "100001"], 2, "Invalid value for '-k': 100001 is not in the range"),
    ("--oversample 0", ["search", "{db}", "editor", "--oversample", "0"], 2, "Invalid value for '--oversample': 0 is not in the range 1<=x<=1000."),
    ("--oversample 1001", ["search", "{db}", "editor", "--oversample", "1001"], 2, "Invalid value for '--oversample': 1001 is not in the range"),
    ("--mode unknown", ["search", "{db}", "editor", "--mode", "fuzzy"], 2, "Invalid value for '--mode': 'fuzzy' is not one of"),
    ("empty query", ["search", "{db}", "  "], 1, "Error: the query is empty; give some words to search for"),
    ("query not UTF-8", ["search", "{db}", "caf\udce9"], 1, "Error: the query is not valid Unicode (surrogates not allowed)"),
    ("where not UTF-8", ["search", "{db}", "editor", "--where", "text = '\udce9'"], 1, "Error: --where is not valid Unicode"),
    ("where two statements", ["search", "{db}", "editor", "--where", "1; DROP TABLE x"], 1,
     "Error: --where must be a single SQL condition without ';'"),
    ("where not SQL", ["search", "{db}", "editor", "--where", "((("], 1, "Error: --where '(((' is not valid SQL"),
    ("collection unknown", ["search", "{db}", "editor", "--collection", "nope"], 1, "Error: no collection named 'nope' in"),
    ("collection not UTF-8", ["search", "{db}", "editor", "--collection", "\udcff"], 1, "Error: no collection named '\\udcff' in"),
    ("index collection not UTF-8", ["index", "{db}", "{dir}/corpus.jsonl", "--collection", "\udcff"], 1,
     "Error: collection name '\\udcff' is not valid Unicode (surrogates not allowed)"),
    ("index collection reserved", ["index", "{db}", "{dir}/corpus.jsonl", "--collection", "sqlite_x"], 1,
     "Error: collection names starting with 'sqlite_' are reserved by SQLite, got 'sqlite_x'"),
    ("index not UTF-8 file", ["index", "{db}", "{dir}/latin1.txt"], 1,
     "latin1.txt line 1 is not valid utf-8 text (byte 0xe9); convert the file or pass --encoding"),
    ("search not a database", ["search", "{dir}/notdb.db", "editor"], 1, "Error: {dir}/notdb.db is not a SQLite database"),
    ("search missing database", ["search", "{dir}/missing.db", "editor"], 1, "Error: no database at {dir}/missing.db"),
    ("index batch size 0", ["index", "{db}", "{dir}/corpus.jsonl", "--batch-size", "0"], 2, "Invalid value for '--batch-size'"),
]


@pytest.mark.parametrize("args,exit_code,message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_command_line_input(cli_db, args, exit_code, message):
    before = CliRunner().invoke(main, ["info", str(cli_db / "t.db"), "--json"]).output
    fill = {"db": str(cli_db / "t.db"), "dir": str(cli_db)}
    result = CliRunner().invoke(main, [arg.format(**fill) for arg in args])
    assert result.exit_code == exit_code, result.output
    assert message.format(**fill) in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    after = CliRunner().invoke(main, ["info", str(cli_db / "t.db"), "--json"]).output
    assert after == before


def test_command_line_weird_collection_name_round_trip(cli_db):
    result = CliRunner().invoke(main, ["search", str(cli_db / "t.db"), "text editor", "-k", "3", "--collection", CLI_NAME,
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 3
    with sqlitebin.connect(cli_db / "t.db", create=False) as db:
        assert db.collections() == [CLI_NAME]
        assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
