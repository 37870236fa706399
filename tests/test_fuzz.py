"""Property-based fuzzing of every SQL function against NumPy oracles.

Each function gets arbitrary SQL values (NULL, integers, reals, text, BLOBs of any length) mixed with
well-formed ones (float32 BLOBs holding NaN, infinities, subnormals and huge values; codes of the right
size; sorted and unsorted id sets), so both the checks and the arithmetic are reached. An oracle
written from the README's definitions says what each call must return: a value, NULL, or its exact
error message. A crash, a different value or a different message fails.

The default run tries a few hundred cases per function. The long run, at least 100,000 per function:

    SQLITEBIN_FUZZ_EXAMPLES=100000 pytest -m slow tests/test_fuzz.py -p no:cacheprovider

(58 minutes on 2 cores; `SQLITEBIN_FUZZ_EXAMPLES` sets the count, 100,000 by default for the slow tests).
"""

import json
import math
import os

import apsw
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import sqlitebin

FAST_EXAMPLES = 150
LONG_EXAMPLES = int(os.environ.get("SQLITEBIN_FUZZ_EXAMPLES", "100000"))
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

INT64 = st.integers(-(2**63), 2**63 - 1)
# Any SQL value apsw can bind (text without lone surrogates: those cannot be UTF-8).
SQL_VALUE = st.one_of(st.none(), INT64, st.floats(), st.text(max_size=12), st.binary(max_size=40))
FLOAT32 = st.floats(width=32)  # NaN, infinities, subnormals, -0.0 included


def float_blob(min_size=0, max_size=24):
    """float32 BLOBs: from values (mostly finite), or raw bit patterns (NaN payloads, subnormals)."""
    finite = st.floats(width=32, allow_nan=False, allow_infinity=False)
    values = st.lists(weighted((8, finite), (1, FLOAT32)), min_size=min_size, max_size=max_size)
    raw = st.binary(min_size=4 * min_size, max_size=4 * max_size).map(lambda b: b[: len(b) // 4 * 4])
    return weighted((3, values.map(lambda v: np.asarray(v, dtype="<f4").tobytes())), (1, raw))


def sized_float_blob(dim):
    finite = st.floats(-(2.0**20), 2.0**20, width=32)
    values = st.lists(weighted((30, finite), (1, FLOAT32)), min_size=dim, max_size=dim)
    return values.map(lambda v: np.asarray(v, dtype="<f4").tobytes())


def weighted(*choices):
    """One of the strategies, picked with the given weights: [(weight, strategy), ...]."""
    return st.sampled_from([strategy for weight, strategy in choices for _ in range(weight)]).flatmap(lambda s: s)


def anything_or(strategy):
    """Mostly well-formed values, sometimes any SQL value at all."""
    return weighted((4, strategy), (1, SQL_VALUE))


# ---------------------------------------------------------------------------
# The oracle's view of SQL values


class SQLError(Exception):
    """The error message the oracle expects."""


def bound(value):
    """The value SQLite sees: apsw binds NaN as a REAL, and SQLite stores NaN as NULL."""
    return None if isinstance(value, float) and math.isnan(value) else value


def type_name(value):
    value = bound(value)
    if value is None:
        return "NULL"
    return {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB"}[type(value)]


def require_blob(function, value, position, name):
    if type_name(value) != "BLOB":
        raise SQLError(f"{function}(): argument {position} ({name}) must be a BLOB, got {type_name(value)}")
    return value


def read_float32(function, value, position, name):
    blob = require_blob(function, value, position, name)
    if len(blob) % 4:
        raise SQLError(f"{function}(): argument {position} ({name}) is {len(blob)} bytes, "
                       "not a whole number of float32 values (4 bytes each)")
    array = np.frombuffer(blob, dtype="<f4")
    bad = np.flatnonzero(~np.isfinite(array))
    if len(bad):
        word = "NaN" if np.isnan(array[bad[0]]) else "infinity"
        raise SQLError(f"{function}(): argument {position} ({name}) holds a non-finite value ({word}) at index {bad[0]}")
    return array


def read_ranges(function, value, position, dim, fmt):
    ranges = read_float32(function, value, position, "ranges")
    if len(ranges) != 2 * dim:
        raise SQLError(f"{function}(): ranges has {len(ranges)} values but needs {2 * dim} "
                       f"({dim} minimums then {dim} maximums)")
    with np.errstate(over="ignore"):
        for i in range(dim):
            low, high = ranges[i], ranges[dim + i]
            if low > high:
                raise SQLError(f"{function}(): range of dimension {i} has minimum {fmt(low)} above maximum {fmt(high)}")
            if np.isinf((high - low) * np.float32(255)):
                raise SQLError(f"{function}(): range of dimension {i} ({fmt(low)} to {fmt(high)}) "
                               "is too wide for the int8 formula in float32")
    return ranges[:dim], ranges[dim:]


def sum_close(got, terms):
    """A double sum of `terms` in any order: within the rounding of a sequential sum."""
    if not all(math.isfinite(t) for t in terms):  # float32 overflow in the int8 formula: inf, or NaN (NULL)
        total = sum(terms)
        return got is None if math.isnan(total) else got == total
    exact = math.fsum(terms)
    bound = (len(terms) + 1) * 2.0**-52 * math.fsum(abs(t) for t in terms) + 1e-300
    return got is not None and abs(got - exact) <= bound


def popcount(blob):
    return int(np.unpackbits(np.frombuffer(blob, dtype=np.uint8)).sum())


# ---------------------------------------------------------------------------
# One connection for all cases: the functions are deterministic, and a long-lived connection is
# what an application has. `FORMAT` renders a float as SQLite's %g does.

_state = {}


def connection():
    if "db" not in _state:
        _state["db"] = sqlitebin.connect(":memory:")
        _state["plain"] = apsw.Connection(":memory:")  # without the extension: SQLite's own renderings
    return _state["db"].conn


def sqlite_g(value):
    return _state["plain"].execute("SELECT printf('%g', ?)", (float(value),)).fetchall()[0][0]


def run(sql, params):
    """("value", v) or ("error", message) for one statement."""
    try:
        rows = connection().execute(sql, params).fetchall()
    except apsw.SQLError as error:
        return "error", str(error)
    return "value", rows


def expect(oracle, *args):
    try:
        return "value", oracle(*args)
    except SQLError as error:
        return "error", str(error)


def check_scalar(name, oracle, args, compare=None):
    kind, got = run(f"SELECT {name}({', '.join('?' * len(args))})", args)
    want_kind, want = expect(oracle, *args)
    event("NULL" if kind == "value" and got[0][0] is None else kind)  # shown by --hypothesis-show-statistics
    assert kind == want_kind, (args, got, want)
    if kind == "error":
        assert got == want, args
        return
    got = got[0][0]
    if want is None or compare is None:
        assert got == want, (args, got, want)
    else:
        assert compare(got, want), (args, got, want)


# ---------------------------------------------------------------------------
# Oracles for the scalar functions, from the README's definitions


def hamming_oracle(a, b):
    if bound(a) is None or bound(b) is None:
        return None
    a, b = require_blob("hamming", a, 1, "a"), require_blob("hamming", b, 2, "b")
    if len(a) != len(b):
        raise SQLError(f"hamming(): BLOB sizes differ ({len(a)} vs {len(b)} bytes)")
    return popcount(bytes(x ^ y for x, y in zip(a, b)))


def bit_count_oracle(a):
    if bound(a) is None:
        return None
    return popcount(require_blob("bit_count", a, 1, "a"))


def binary_quantize_oracle(v, thresholds=None, *, two_arguments=False):
    if bound(v) is None or (two_arguments and bound(thresholds) is None):
        return None
    vector = read_float32("binary_quantize", v, 1, "v")
    t = np.zeros(len(vector), dtype=np.float32)
    if two_arguments:
        t = read_float32("binary_quantize", thresholds, 2, "thresholds")
        if len(t) != len(vector):
            raise SQLError(f"binary_quantize(): thresholds has {len(t)} values but the vector has {len(vector)}")
    return np.packbits(vector > t).tobytes()


def int8_quantize_oracle(v, ranges):
    if bound(v) is None or bound(ranges) is None:
        return None
    vector = read_float32("int8_quantize", v, 1, "v")
    low, high = read_ranges("int8_quantize", ranges, 2, len(vector), sqlite_g)
    with np.errstate(over="ignore", invalid="ignore"):
        level = np.rint(((vector - low) * np.float32(255)) / np.where(high > low, high - low, np.float32(1)))
    codes = (np.clip(level, 0, 255) - 128).astype(np.int8)
    codes[~(high > low)] = -128
    return codes.tobytes()


def dot_float32_terms(query, vector):
    q = read_float32("dot_float32", query, 1, "query")
    v = read_float32("dot_float32", vector, 2, "vector")
    if len(q) != len(v):
        raise SQLError(f"dot_float32(): vector sizes differ ({len(q)} vs {len(v)} values)")
    return [float(a) * float(b) for a, b in zip(q, v)]


def dot_int8_terms(query, vector, ranges):
    q = read_float32("dot_int8", query, 1, "query")
    codes = require_blob("dot_int8", vector, 2, "vector")
    if len(codes) != len(q):
        raise SQLError(f"dot_int8(): the query has {len(q)} values but the int8 vector has {len(codes)}")
    low, high = read_ranges("dot_int8", ranges, 3, len(q), sqlite_g)
    steps = np.frombuffer(codes, dtype=np.int8).astype(np.float32) + np.float32(128)
    values = low + (steps * (high - low)) / np.float32(255)  # float32, in the C order of operations
    return [float(a) * float(b) for a, b in zip(q, values)]


def dot_bits_terms(query, bits):
    q = read_float32("dot_bits", query, 1, "query")
    packed = require_blob("dot_bits", bits, 2, "bits")
    if len(packed) != (len(q) + 7) // 8:
        raise SQLError(f"dot_bits(): the query has {len(q)} values, which pack into {(len(q) + 7) // 8} bytes, "
                       f"but bits is {len(packed)} bytes")
    signs = np.unpackbits(np.frombuffer(packed, dtype=np.uint8))[: len(q)]
    return [float(a) if s else -float(a) for a, s in zip(q, signs)]


def null_or(terms):
    def oracle(*args):
        if any(bound(a) is None for a in args):
            return None
        return terms(*args)
    return oracle


# ---------------------------------------------------------------------------
# The cases: (strategy for the argument tuple, check)


def pair(strategy):
    """Two arguments, often of the same size so the computation itself is reached."""
    same = st.integers(0, 24).flatmap(lambda n: st.tuples(strategy(n), strategy(n)))
    return weighted((3, same), (1, st.tuples(anything_or(strategy(None)), anything_or(strategy(None)))))


def blob_of(n):
    return st.binary(max_size=300) if n is None else st.binary(min_size=n, max_size=n)


def floats_of(n):
    return float_blob() if n is None else sized_float_blob(n)


def check_hamming(args):
    check_scalar("hamming", hamming_oracle, list(args))
    a, b = args
    if isinstance(a, bytes) and isinstance(b, bytes) and len(a) == len(b):
        kind, rows = run("SELECT hamming(?, ?), hamming(?, ?)", (a, b, b, a))
        assert rows[0][0] == rows[0][1]  # symmetric


def check_binary_quantize_1(args):
    check_scalar("binary_quantize", binary_quantize_oracle, list(args))


def check_binary_quantize_2(args):
    check_scalar("binary_quantize", lambda v, t: binary_quantize_oracle(v, t, two_arguments=True), list(args))


def ranges_for(n):
    lows = st.lists(st.floats(-(2.0**20), 2.0**20, width=32), min_size=n, max_size=n)
    spreads = st.lists(weighted((1, st.just(0.0)), (12, st.floats(0, 2.0**20, width=32)),
                                (1, st.floats(0, 2.0**121, width=32))), min_size=n, max_size=n)
    made = st.tuples(lows, spreads).map(lambda ls: np.concatenate([
        np.asarray(ls[0], np.float32), np.asarray(ls[0], np.float32) + np.asarray(ls[1], np.float32)]).astype("<f4").tobytes())
    return weighted((6, made), (1, float_blob()), (1, SQL_VALUE))


def int8_arguments():
    valid = st.integers(0, 12).flatmap(lambda n: st.tuples(sized_float_blob(n), ranges_for(n)))
    return weighted((3, valid), (1, st.tuples(anything_or(float_blob()), anything_or(float_blob()))))


def check_int8_quantize(args):
    check_scalar("int8_quantize", int8_quantize_oracle, list(args))


def check_dot_float32(args):
    check_scalar("dot_float32", null_or(dot_float32_terms), list(args), sum_close)


def dot_int8_arguments():
    valid = st.integers(0, 12).flatmap(
        lambda n: st.tuples(sized_float_blob(n), st.binary(min_size=n, max_size=n), ranges_for(n)))
    loose = st.tuples(anything_or(float_blob()), anything_or(st.binary(max_size=12)), anything_or(float_blob()))
    return weighted((3, valid), (1, loose))


def check_dot_int8(args):
    check_scalar("dot_int8", null_or(dot_int8_terms), list(args), sum_close)


def dot_bits_arguments():
    valid = st.integers(0, 40).flatmap(
        lambda n: st.tuples(sized_float_blob(n), st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8)))
    return weighted((3, valid), (1, st.tuples(anything_or(float_blob()), anything_or(st.binary(max_size=8)))))


def check_dot_bits(args):
    check_scalar("dot_bits", null_or(dot_bits_terms), list(args), sum_close)


def check_version_and_debug(args):
    for name, check in (("sqlitebin_version", lambda v: v == sqlitebin.__version__),
                        ("sqlitebin_debug", lambda v: v.startswith(f"version={sqlitebin.__version__}\npopcount="))):
        kind, got = run(f"SELECT {name}({', '.join('?' * len(args))})", args)
        if args:
            assert (kind, got) == ("error", f"wrong number of arguments to function {name}()")
        else:
            assert kind == "value" and check(got[0][0])


# ---------------------------------------------------------------------------
# A collection's index (WHERE vector MATCH ...) against a brute-force scan of the vectors it holds

KNN_DIM = 20  # 3-byte codes with a partial last byte
INDEX = "fz_index"


def knn_collection():
    """A collection in mid-life: added through Python, then rows deleted, moved, replaced and inserted
    with plain SQL on the documents and on the index. Returns (ids, codes, thresholds) of what it holds."""
    if "knn" not in _state:
        conn = connection()
        db = _state["db"]
        rng = np.random.default_rng(11)
        thresholds = np.round(rng.standard_normal(KNN_DIM) * 0.1, 2).astype(np.float32)
        collection = db.create_collection("fz", dim=KNN_DIM, embedder=None, rescore="none", chunk_size=64,
                                          thresholds=thresholds)
        ids = sorted(rng.choice(np.arange(-500, 500), 120, replace=False).tolist())
        vectors = rng.standard_normal((120, KNN_DIM)).astype(np.float32)
        vectors[5] = vectors[6]  # equal codes: ties broken by id
        collection.add(vectors=vectors, ids=ids)
        conn.execute("DELETE FROM fz_documents WHERE id IN (SELECT id FROM fz_documents ORDER BY id LIMIT 8 OFFSET 20)")
        new = rng.standard_normal((10, KNN_DIM)).astype("<f4")
        conn.executemany(f"UPDATE {INDEX} SET vector = ? WHERE rowid = ?", [(new[i].tobytes(), ids[40 + i]) for i in range(5)])
        conn.executemany("INSERT INTO fz_documents (id) VALUES (?)", [(1000 + i,) for i in range(5)])
        conn.executemany(f"INSERT INTO {INDEX} (rowid, vector) VALUES (?, ?)",
                         [(1000 + i, new[5 + i].tobytes()) for i in range(5)])
        conn.execute(f"UPDATE fz_documents SET id = 990 WHERE id = {ids[60]}")
        live = conn.execute(f"SELECT rowid, vector FROM {INDEX} ORDER BY rowid").fetchall()
        # rescore='none' stores no vectors: reading one gives its code as +1/-1 over sqrt(dim), whose signs
        # are the code's bits against a zero threshold.
        signs = np.frombuffer(b"".join(r[1] for r in live), dtype="<f4").reshape(len(live), KNN_DIM) > 0
        _state["knn"] = (np.array([r[0] for r in live], dtype=np.int64), np.packbits(signs, axis=1), thresholds)
    return _state["knn"]


def knn_arguments():
    ids = st.integers(-520, 1010)
    code, floats = st.binary(min_size=3, max_size=3), sized_float_blob(KNN_DIM)

    @st.composite
    def arguments(draw):
        candidates = draw(weighted((10, st.sampled_from(["hamming", "asymmetric"])), (1, st.text(max_size=8))))
        rescore = draw(weighted((10, st.sampled_from(["none", "bits"])), (1, st.sampled_from(["int8", "float32"])),
                                (1, st.text(max_size=6))))
        query = draw(weighted((12, floats), (3, code), (1, st.binary(max_size=90)), (1, SQL_VALUE)))
        k = draw(weighted((20, st.integers(1, 150)), (1, INT64), (1, SQL_VALUE)))
        oversample = draw(weighted((10, st.integers(1, 20)), (1, st.integers(-3, 0))))
        allowed = draw(st.one_of(st.none(), st.lists(weighted((3, ids), (1, INT64)), max_size=30)))
        return query, k, oversample, rescore, candidates, allowed

    return arguments()


def knn_expected(query, k, oversample, rescore, candidates):
    """(query code or floats, hamming?) or SQLError with the index's message."""
    prefix = f"sqlitebin: {INDEX}: "
    kind = type_name(query)
    size = len(query) if isinstance(query, (bytes, str)) and kind in ("BLOB", "TEXT") else None
    if kind != "BLOB" or size not in (3, 4 * KNN_DIM):
        return None  # the message names what SQLite made of the value: checked by its start only
    is_code = size == 3
    if not is_code:
        floats = np.frombuffer(query, dtype="<f4")
        bad = np.flatnonzero(~np.isfinite(floats))
        if len(bad):
            raise SQLError(f"{prefix}the MATCH query holds a non-finite value at index {bad[0]}")
        if math.fsum(abs(float(x)) for x in floats) > 1e38:
            return None
    if type_name(k) != "INTEGER" or k < 1:
        raise SQLError(f"{prefix}k must be a positive INTEGER, got {k if type_name(k) == 'INTEGER' else type_name(k)}")
    if oversample < 1:
        raise SQLError(f"{prefix}oversample must be a positive INTEGER, got {oversample}")
    # Option values are read as C strings: up to the first NUL.
    rescore, candidates = rescore.split("\x00")[0], candidates.split("\x00")[0]
    if rescore not in ("int8", "float32", "bits", "none"):
        raise SQLError(f"{prefix}rescore must be 'int8', 'float32', 'bits' or 'none', got {rescore}")
    if rescore in ("int8", "float32"):
        raise SQLError(f"{prefix}rescore = '{rescore}' needs stored {rescore} vectors, but {INDEX} stores none")
    if candidates not in ("asymmetric", "hamming"):
        raise SQLError(f"{prefix}candidates must be 'asymmetric' or 'hamming', got {candidates}")
    if is_code and candidates != "hamming":
        raise SQLError(f"{prefix}a packed-code query allows only candidates = 'hamming'")
    return (np.frombuffer(query, np.uint8) if is_code else floats), candidates == "hamming", rescore


def check_knn(args):
    query, k, oversample, rescore, candidates, allowed = args
    ids, codes, thresholds = knn_collection()
    sql = (f"SELECT rowid, distance, score FROM {INDEX} WHERE vector MATCH ? AND k = ? AND oversample = ? "
           "AND rescore = ? AND candidates = ?")
    params = [query, k, oversample, rescore, candidates]
    if allowed is not None:
        sql += " AND rowid IN (SELECT value FROM json_each(?))"
        params.append(json.dumps(allowed))
    kind, got = run(sql, params)
    try:
        expected = knn_expected(query, k, oversample, rescore, candidates)
    except SQLError as error:
        event("error: " + str(error)[len(INDEX) + 13:40])
        assert (kind, got) == ("error", str(error)), args
        return
    if expected is None:
        event("error: query")
        assert kind == "error" and got.startswith(f"sqlitebin: {INDEX}: the MATCH query"), (args, got)
        return
    q, hamming, rescore = expected
    assert kind == "value", (args, got)
    event(f"{'hamming' if hamming else 'asymmetric'} {rescore}{' allowed' if allowed is not None else ''}")
    keep = np.ones(len(ids), bool) if allowed is None else np.isin(ids, allowed)
    live_ids, live_codes = ids[keep], codes[keep]
    query_code = q if q.dtype == np.uint8 else np.packbits(q > thresholds)
    distance = np.unpackbits(live_codes ^ query_code, axis=1).sum(axis=1)  # padding bits of a code query count
    top = min(k, len(live_ids))
    assert len(got) == top, args
    got_ids = [row[0] for row in got]
    position = {int(i): n for n, i in enumerate(live_ids)}
    assert len(set(got_ids)) == len(got_ids) and all(i in position for i in got_ids), args
    assert [row[1] for row in got] == [int(distance[position[i]]) for i in got_ids], args
    if hamming and rescore == "none":
        order = np.lexsort((live_ids, distance))[:top]
        assert got_ids == live_ids[order].tolist(), args
        assert all(abs(row[2] - (1.0 - row[1] * (2.0 / KNN_DIM))) < 1e-9 for row in got), args
        return
    if q.dtype == np.uint8:
        return  # a packed code rescored with 'bits' has no float query to check scores against
    # The float query against each code read as +1/-1; the extension sums in float32, so scores may
    # differ from the exact ones by a rounding bound, and near-ties may swap.
    signs = np.unpackbits(live_codes, axis=1)[:, :KNN_DIM].astype(np.float64) * 2 - 1
    exact = signs @ q.astype(np.float64) / math.sqrt(KNN_DIM)
    tolerance = 1e-5 * float(np.abs(q.astype(np.float64)).sum()) / math.sqrt(KNN_DIM) + 1e-30
    got_scores = np.array([row[2] for row in got])
    assert np.all(np.abs(got_scores - exact[[position[i] for i in got_ids]]) <= tolerance), args
    assert np.all(np.diff(got_scores) <= tolerance), args
    if not hamming and len(got) < len(live_ids):
        left_out = np.setdiff1d(np.arange(len(live_ids)), [position[i] for i in got_ids])
        assert exact[left_out].max() <= got_scores.min() + 2 * tolerance, args


# ---------------------------------------------------------------------------
# The tests: each function with a few hundred cases by default, 100,000 under -m slow.

CASES = {
    "hamming": (pair(blob_of), check_hamming),
    "bit_count": (anything_or(st.binary(max_size=300)).map(lambda v: [v]),
                  lambda args: check_scalar("bit_count", bit_count_oracle, args)),
    "binary_quantize/1": (anything_or(float_blob(max_size=40)).map(lambda v: (v,)), check_binary_quantize_1),
    "binary_quantize/2": (pair(floats_of), check_binary_quantize_2),
    "int8_quantize": (int8_arguments(), check_int8_quantize),
    "dot_float32": (pair(floats_of), check_dot_float32),
    "dot_int8": (dot_int8_arguments(), check_dot_int8),
    "dot_bits": (dot_bits_arguments(), check_dot_bits),
    "index MATCH": (knn_arguments(), check_knn),
    "sqlitebin_version/debug": (st.lists(SQL_VALUE, max_size=2), check_version_and_debug),
}


def fuzz(name, examples):
    strategy, check = CASES[name]
    count = [0]

    @settings(max_examples=examples, deadline=None, suppress_health_check=HEALTH, derandomize=examples == FAST_EXAMPLES)
    @given(strategy)
    def run_case(args):
        count[0] += 1
        check(args)

    run_case()
    return count[0]


@pytest.mark.parametrize("name", list(CASES))
def test_fuzz(name):
    fuzz(name, FAST_EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_fuzz_long(name):
    cases = fuzz(name, LONG_EXAMPLES)
    print(f"{name}: {cases:,} cases")
    assert cases >= LONG_EXAMPLES
