"""The sqlitebin virtual table against a NumPy oracle: every search option after inserts,
updates, deletes, rollbacks, savepoints and reopening, at chunk boundaries, with odd dims."""

import re

import apsw
import numpy as np
import pytest

import sqlitebin
from sqlitebin import quantize

F32 = np.dtype("<f4")


def blob(vector):
    return np.asarray(vector, dtype=F32).tobytes()


class Oracle:
    """What the table should hold: the input vectors by rowid, and how it scores them."""

    def __init__(self, dim, rescore="int8", thresholds=None, calibration_rows=4096, ranges=None):
        self.dim, self.rescore = dim, rescore
        self.thresholds = np.zeros(dim, F32) if thresholds is None else np.asarray(thresholds, F32)
        self.calibration_rows = calibration_rows
        self.ranges = ranges
        self.rows = {}

    def insert(self, rowid, vector):
        self.rows[rowid] = np.asarray(vector, F32)
        if self.rescore == "int8" and self.ranges is None and len(self.rows) >= self.calibration_rows:
            self.ranges = quantize.calibrate_ranges(np.stack(list(self.rows.values())))

    def arrays(self):
        ids = np.array(sorted(self.rows), dtype=np.int64)
        vectors = np.stack([self.rows[i] for i in ids]) if len(ids) else np.zeros((0, self.dim), F32)
        return ids, vectors

    def stored(self, vectors):
        """Vectors as rescoring sees them."""
        if self.rescore == "int8" and self.ranges is not None:
            codes = quantize.int8_quantize(vectors, self.ranges)
            low, high = self.ranges[: self.dim], self.ranges[self.dim:]
            return (low + (codes.astype(F32) + 128) * (high - low) / np.float32(255)).astype(np.float64)
        return vectors.astype(np.float64)

    def bits(self, vectors):
        return np.where(vectors > self.thresholds, 1.0, -1.0)

    def search(self, q, k=10, oversample=10, rescore=None, candidates="asymmetric", allowed=None):
        """(rowid, score, distance) best first, and the scores of every row (for tie checks)."""
        rescore = rescore or self.rescore
        ids, vectors = self.arrays()
        if allowed is not None:
            keep = np.isin(ids, list(allowed))
            ids, vectors = ids[keep], vectors[keep]
        q = np.asarray(q, F32).astype(np.float64)
        bits = self.bits(vectors)
        qbits = np.where(q > self.thresholds, 1.0, -1.0)
        distance = ((bits != qbits).sum(axis=1)).astype(np.int64)
        bit_score = bits @ q / np.sqrt(self.dim)
        key = -bit_score if candidates == "asymmetric" else distance.astype(np.float64)
        wanted = k if rescore == "none" else k * oversample
        order = np.lexsort((ids, key))[:wanted]
        if rescore == "none":
            score = bit_score if candidates == "asymmetric" else 1 - 2 * distance / self.dim
        elif rescore == "bits":
            score = bit_score
        else:
            score = self.stored(vectors) @ q
        chosen = order[np.lexsort((ids[order], -score[order]))][:k]
        return [(int(ids[i]), float(score[i]), int(distance[i])) for i in chosen], dict(zip(ids.tolist(), score))


def assert_same_results(got, expected, all_scores, tolerance=1e-4):
    """Same rows best first; where scores nearly tie, either order (and either row at the edge)."""
    assert len(got) == len(expected), (got, expected)
    for (rowid, score, distance), (_, expected_score, _) in zip(got, expected):
        assert score == pytest.approx(all_scores[rowid], abs=tolerance)
        assert score == pytest.approx(expected_score, abs=tolerance), (got, expected)
    expected_distance = {r: d for r, _, d in expected}
    for rowid, _, distance in got:
        if rowid in expected_distance:
            assert distance == expected_distance[rowid]
    scores = [s for _, s, _ in got]
    assert all(a >= b - tolerance for a, b in zip(scores, scores[1:]))


def search(conn, q, **options):
    sql = "SELECT rowid, score, distance FROM idx WHERE vector MATCH :q"
    params = {"q": blob(q)}
    for name, value in options.items():
        if name == "allowed":
            sql += " AND rowid IN (SELECT value FROM json_each(:allowed))"
            params["allowed"] = "[" + ",".join(map(str, value)) + "]"
        else:
            sql += f" AND {name} = :{name}"
            params[name] = value
    return conn.execute(sql, params).fetchall()


def check(conn, oracle, q, **options):
    got = search(conn, q, **options)
    expected, scores = oracle.search(q, **options)
    assert_same_results(got, expected, scores)
    return got


def make(conn, dim, **options):
    text = ", ".join([f"dim={dim}"] + [f"{k}={v}" for k, v in options.items()])
    conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin({text})")


def shadow_state(conn):
    """Everything the table stores, for before / after comparisons."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'idx\\_%' ESCAPE '\\' "
                                         "AND type = 'table' ORDER BY name")]
    return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables if t != "idx_config"} | {
        "config": conn.execute("SELECT * FROM idx_config WHERE key != 'generation' ORDER BY key").fetchall()}


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.mark.parametrize("rescore", ["int8", "float32", "none"])
@pytest.mark.parametrize("dim", [37, 64])
def test_every_search_option_matches_the_oracle(conn, rng, rescore, dim):
    options = {"rescore": rescore, "chunk_size": 64}
    if rescore == "int8":
        options["calibration_rows"] = 100
    make(conn, dim, **options)
    oracle = Oracle(dim, rescore, calibration_rows=100)
    vectors = rng.standard_normal((333, dim)).astype(F32)
    with conn:
        for i, v in enumerate(vectors):
            conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i * 3 + 1, blob(v)))
            oracle.insert(i * 3 + 1, v)
    rescores = {"int8": ["int8", "bits", "none"], "float32": ["float32", "bits", "none"], "none": ["bits", "none"]}
    for q in rng.standard_normal((4, dim)).astype(F32):
        check(conn, oracle, q)
        check(conn, oracle, q, k=1)
        check(conn, oracle, q, k=500, oversample=1)
        for r in rescores[rescore]:
            # Candidates: all rows (oversample covers them), or exactly k by the candidate order.
            check(conn, oracle, q, k=7, oversample=100, rescore=r)
            check(conn, oracle, q, k=7, rescore=r, candidates="hamming")
        check(conn, oracle, q, k=5, rescore="none")
        check(conn, oracle, q, k=5, rescore="none", candidates="hamming")
        allowed = set(rng.choice(sorted(oracle.rows), 40, replace=False).tolist())
        check(conn, oracle, q, k=8, oversample=100, allowed=allowed)
        check(conn, oracle, q, k=8, rescore="none", allowed=allowed)
        check(conn, oracle, q, k=100, allowed={1, 4, 10**9})  # k rows whenever k match: here 2


def test_k_rows_whenever_k_rows_match_with_a_selective_prefilter(conn, rng):
    make(conn, 16, rescore="float32", chunk_size=64)
    vectors = rng.standard_normal((1000, 16)).astype(F32)
    with conn:
        conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i, blob(v)) for i, v in enumerate(vectors)])
    allowed = list(range(0, 1000, 97))
    rows = search(conn, vectors[0], k=10, allowed=allowed)
    assert len(rows) == 10 and {r for r, _, _ in rows} <= set(allowed)


@pytest.mark.parametrize("candidates", ["asymmetric", "hamming"])
def test_prefilters_of_few_and_many_ids_match_the_oracle(conn, rng, candidates):
    # Up to 1,024 allowed ids the scan checks the filter before the score, above it after: same results.
    dim = 32
    make(conn, dim, rescore="float32", chunk_size=256)
    oracle = Oracle(dim, "float32")
    vectors = rng.standard_normal((3000, dim)).astype(F32)
    with conn:
        for i, v in enumerate(vectors):
            conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i * 2, blob(v)))
            oracle.insert(i * 2, v)
        for i in range(0, 3000, 7):  # pending changes and deletions are filtered too
            conn.execute("UPDATE idx SET vector = ? WHERE rowid = ?", (blob(vectors[(i + 1) % 3000]), i * 2))
            oracle.insert(i * 2, vectors[(i + 1) % 3000])
        for i in range(3, 3000, 11):
            conn.execute("DELETE FROM idx WHERE rowid = ?", (i * 2,))
            del oracle.rows[i * 2]
    rows = sorted(oracle.rows)
    for count in (1, 60, 1024, 1025, 2500):
        allowed = set(rng.choice(rows, count, replace=False).tolist()) | {10**9}
        for q in rng.standard_normal((2, dim)).astype(F32):
            check(conn, oracle, q, k=10, candidates=candidates, allowed=allowed)
            check(conn, oracle, q, k=10, rescore="none", candidates=candidates, allowed=allowed)


def test_writes_updates_deletes_and_rowid_changes(conn, rng):
    dim = 29
    make(conn, dim, rescore="float32", chunk_size=64)
    oracle = Oracle(dim, "float32")
    vectors = rng.standard_normal((200, dim)).astype(F32)
    with conn:
        for i in range(130):  # across two chunk boundaries
            conn.execute("INSERT INTO idx(vector) VALUES (?)", (blob(vectors[i]),))
            oracle.insert(i + 1, vectors[i])
    assert conn.execute("SELECT max(rowid), count(*) FROM idx").fetchone() == (130, 130)
    # Without a rowid: one more than the largest live rowid, as in a plain rowid table.
    conn.execute("DELETE FROM idx WHERE rowid = 130")
    conn.execute("INSERT INTO idx(vector) VALUES (?)", (blob(vectors[129]),))
    assert conn.execute("SELECT max(rowid), count(*) FROM idx").fetchone() == (130, 130)
    conn.execute("UPDATE idx SET vector = ? WHERE rowid = 64", (blob(vectors[150]),))
    oracle.rows[64] = vectors[150]
    conn.execute("UPDATE idx SET rowid = 1000 WHERE rowid = 65")
    oracle.rows[1000] = oracle.rows.pop(65)
    conn.execute("UPDATE idx SET rowid = 2000, vector = ? WHERE rowid = 66", (blob(vectors[151]),))
    del oracle.rows[66]
    oracle.rows[2000] = vectors[151]
    conn.execute("DELETE FROM idx WHERE rowid % 7 = 0")
    for r in [r for r in oracle.rows if r % 7 == 0]:
        del oracle.rows[r]
    conn.execute("INSERT OR REPLACE INTO idx(rowid, vector) VALUES (3, ?)", (blob(vectors[152]),))
    oracle.rows[3] = vectors[152]
    conn.execute("INSERT OR IGNORE INTO idx(rowid, vector) VALUES (4, ?)", (blob(vectors[153]),))
    assert conn.execute("SELECT count(*) FROM idx").fetchone()[0] == len(oracle.rows)
    stored = dict(conn.execute("SELECT rowid, vector FROM idx").fetchall())
    assert sorted(stored) == sorted(oracle.rows)
    for rowid, v in oracle.rows.items():
        assert np.frombuffer(stored[rowid], F32).tolist() == v.tolist()
    assert np.frombuffer(conn.execute("SELECT vector FROM idx WHERE rowid = 1000").fetchone()[0], F32).tolist() == \
        oracle.rows[1000].tolist()
    for q in vectors[150:156]:
        check(conn, oracle, q, k=10, oversample=50)
        check(conn, oracle, q, k=10, rescore="none")
    conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")
    conn.execute("INSERT INTO idx(idx) VALUES ('optimize')")
    conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")
    assert conn.execute("SELECT count(*) FROM idx_chunks").fetchone()[0] == (len(oracle.rows) + 63) // 64
    for q in vectors[150:156]:
        check(conn, oracle, q, k=10, oversample=50)
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (5000, ?)", (blob(vectors[199]),))
    oracle.rows[5000] = vectors[199]
    check(conn, oracle, vectors[199], k=3, oversample=100)
    conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")


def test_rollback_and_savepoints_restore_state_and_searches(conn, rng):
    dim = 24
    make(conn, dim, rescore="float32", chunk_size=64)
    oracle = Oracle(dim, "float32")
    vectors = rng.standard_normal((300, dim)).astype(F32)
    with conn:
        for i in range(100):
            conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i, blob(vectors[i])))
            oracle.insert(i, vectors[i])
    before = shadow_state(conn)
    check(conn, oracle, vectors[0], k=5, oversample=100)  # the cache now holds this state
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i, blob(vectors[i])) for i in range(100, 200)])
    conn.execute("DELETE FROM idx WHERE rowid < 50")
    conn.execute("UPDATE idx SET vector = ? WHERE rowid = 60", (blob(vectors[250]),))
    assert search(conn, vectors[150], k=1)[0][0] == 150  # seen inside the transaction
    conn.execute("ROLLBACK")
    assert shadow_state(conn) == before
    check(conn, oracle, vectors[0], k=5, oversample=100)
    check(conn, oracle, vectors[60], k=5, oversample=100)

    conn.execute("BEGIN")
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (500, ?)", (blob(vectors[200]),))
    oracle.insert(500, vectors[200])
    conn.execute("SAVEPOINT a")
    conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i, blob(vectors[i])) for i in range(201, 240)])
    conn.execute("DELETE FROM idx WHERE rowid = 500")
    assert search(conn, vectors[210], k=1)[0][0] == 210
    conn.execute("ROLLBACK TO a")
    check(conn, oracle, vectors[200], k=5, oversample=100)
    conn.execute("SAVEPOINT b")
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (501, ?)", (blob(vectors[241]),))
    oracle.insert(501, vectors[241])
    conn.execute("RELEASE b")
    conn.execute("COMMIT")
    check(conn, oracle, vectors[241], k=5, oversample=100)
    conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")


def test_reopen_a_file_database(tmp_path, rng):
    path = str(tmp_path / "v.db")
    dim = 33
    vectors = rng.standard_normal((150, dim)).astype(F32)
    oracle = Oracle(dim, "int8", calibration_rows=64)
    conn = apsw.Connection(path)
    sqlitebin.load(conn)
    make(conn, dim, chunk_size=64, calibration_rows=64)
    with conn:
        for i, v in enumerate(vectors):
            conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i + 1, blob(v)))
            oracle.insert(i + 1, v)
    conn.execute("DELETE FROM idx WHERE rowid = 10")
    del oracle.rows[10]
    conn.close()
    conn = apsw.Connection(path)
    sqlitebin.load(conn)
    for q in vectors[:5]:
        check(conn, oracle, q, k=10, oversample=100)
    conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")
    # A second connection sees the first one's commits.
    other = apsw.Connection(path)
    sqlitebin.load(other)
    check(other, oracle, vectors[3], k=5, oversample=100)
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (999, ?)", (blob(vectors[3] * 2),))
    oracle.insert(999, vectors[3] * 2)
    check(other, oracle, vectors[3], k=5, oversample=100)
    other.close()
    conn.close()


def test_calibration_one_at_a_time_equals_bulk_and_recalibrate(rng):
    dim = 19
    vectors = (rng.standard_normal((90, dim)) * rng.uniform(0.5, 3, dim)).astype(F32)
    states = []
    for bulk in (False, True):
        conn = apsw.Connection(":memory:")
        sqlitebin.load(conn)
        make(conn, dim, calibration_rows=40, chunk_size=64)
        if bulk:
            with conn:
                conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)",
                                 [(i, blob(v)) for i, v in enumerate(vectors)])
        else:
            for i, v in enumerate(vectors):
                conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i, blob(v)))
                if i == 20:  # before calibration, rows rescore with their exact vectors
                    staged = Oracle(dim, "int8", calibration_rows=40)
                    for j in range(21):
                        staged.insert(j, vectors[j])
                    check(conn, staged, vectors[3], k=5, oversample=100)
                    assert conn.execute("SELECT count(*) FROM idx_calibration").fetchone()[0] == 21
        states.append(shadow_state(conn))
        ranges = np.frombuffer(conn.execute("SELECT value FROM idx_config WHERE key = 'ranges'").fetchone()[0], F32)
        assert ranges.tolist() == quantize.calibrate_ranges(vectors[:40]).tolist()
        assert conn.execute("SELECT count(*) FROM idx_calibration").fetchone()[0] == 0
        oracle = Oracle(dim, "int8", calibration_rows=40)
        for i, v in enumerate(vectors):
            oracle.insert(i, v)
        check(conn, oracle, vectors[7], k=5, oversample=100)
        # recalibrate: ranges from the dequantized vectors; every vector quantized again.
        conn.execute("INSERT INTO idx(idx) VALUES ('recalibrate')")
        old = oracle.stored(np.stack([oracle.rows[i] for i in sorted(oracle.rows)])).astype(F32)
        new_ranges = quantize.calibrate_ranges(old)
        got = np.frombuffer(conn.execute("SELECT value FROM idx_config WHERE key = 'ranges'").fetchone()[0], F32)
        assert np.allclose(got, new_ranges, atol=1e-6)
        conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")
        conn.close()
    assert states[0] == states[1]


def test_under_32_rows_and_explicit_ranges(conn, rng):
    dim = 8
    vectors = rng.standard_normal((10, dim)).astype(F32)
    make(conn, dim, calibration_rows=10)
    conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i, blob(v)) for i, v in enumerate(vectors)])
    ranges = np.frombuffer(conn.execute("SELECT value FROM idx_config WHERE key = 'ranges'").fetchone()[0], F32)
    assert ranges.tolist() == quantize.calibrate_ranges(vectors).tolist()
    fixed = np.concatenate([np.full(dim, -2, F32), np.full(dim, 2, F32)])
    conn.execute(f"CREATE VIRTUAL TABLE fixed USING sqlitebin(dim={dim}, ranges=X'{fixed.tobytes().hex()}')")
    conn.execute("INSERT INTO fixed(rowid, vector) VALUES (1, ?)", (blob(vectors[0]),))
    assert conn.execute("SELECT count(*) FROM fixed_calibration").fetchone()[0] == 0
    stored = np.frombuffer(conn.execute("SELECT vector FROM fixed").fetchone()[0], F32)
    expected = Oracle(dim, "int8", ranges=fixed).stored(vectors[:1])[0]
    assert np.allclose(stored, expected, atol=1e-6)


def test_thresholds_option_sets_the_bits(conn, rng):
    dim = 12
    thresholds = rng.standard_normal(dim).astype(F32)
    conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim = {dim}, rescore = 'none', "
                 f"thresholds = X'{thresholds.tobytes().hex()}')")
    vectors = rng.standard_normal((50, dim)).astype(F32)
    conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i, blob(v)) for i, v in enumerate(vectors)])
    codes = conn.execute("SELECT substr(codes, 1, 100) FROM idx_chunks").fetchone()[0]
    assert codes == np.packbits(vectors > thresholds, axis=1).tobytes()
    oracle = Oracle(dim, "none", thresholds=thresholds)
    for i, v in enumerate(vectors):
        oracle.insert(i, v)
    check(conn, oracle, vectors[1], k=5, candidates="hamming")
    check(conn, oracle, vectors[1], k=5, rescore="bits", oversample=100)
    code = np.packbits(vectors[1] > thresholds).tobytes()
    rows = conn.execute("SELECT rowid, score, distance FROM idx WHERE vector MATCH ? AND k = 3", (code,)).fetchall()
    assert rows[0][:3] == (1, 1.0, 0)


CREATE_ERRORS = [
    ("dims=3", "sqlitebin: unknown option 'dims' (expected dim, rescore, chunk_size, thresholds, ranges, calibration_rows)"),
    ("rescore=int8", "sqlitebin: option dim is required, as in USING sqlitebin(dim=256)"),
    ("dim=0", "sqlitebin: dim must be an integer from 1 to 65536, got '0'"),
    ("dim=abc", "sqlitebin: dim must be an integer from 1 to 65536, got 'abc'"),
    ("dim=8, dim=8", "sqlitebin: option 'dim' is given twice"),
    ("dim=8, rescore=int4", "sqlitebin: rescore must be int8, float32 or none, got 'int4'"),
    ("dim=8, chunk_size=100", "sqlitebin: chunk_size must be a multiple of 64 from 64 to 65536, got '100'"),
    ("dim=8, chunk_size", "sqlitebin: option 'chunk_size' needs a value, as in dim=256"),
    ("dim=2, thresholds=X'00'", "sqlitebin: thresholds must be 8 bytes (2 float32 values for dim 2), got 1 bytes"),
    ("dim=2, thresholds=12", "sqlitebin: thresholds must be a BLOB literal X'...' of float32 values, got '12'"),
    ("dim=1, thresholds=X'0000c07f'", "sqlitebin: thresholds holds a non-finite value at index 0"),
    ("dim=1, rescore=none, ranges=X'0000000000000000'", "sqlitebin: ranges only apply with rescore=int8"),
    ("dim=1, rescore=float32, calibration_rows=5", "sqlitebin: calibration_rows only applies with rescore=int8"),
    ("dim=1, calibration_rows=0", "sqlitebin: calibration_rows must be an integer from 1 to 100000000, got '0'"),
    ("dim=1, ranges=X'0000803f00000000'",
     "sqlitebin: ranges of dimension 0 (1 to 0) must have minimum <= maximum and a spread finite in float32 "
     "when multiplied by 255"),
]


@pytest.mark.parametrize("arguments, message", CREATE_ERRORS)
def test_bad_create_options_fail_with_one_sentence(conn, arguments, message):
    with pytest.raises(apsw.SQLError, match="^" + re.escape(message) + "$"):
        conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin({arguments})")
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def test_bad_writes_fail_with_one_sentence_and_change_nothing(conn, rng):
    make(conn, 4, chunk_size=64, calibration_rows=3)
    good = rng.standard_normal((5, 4)).astype(F32)
    conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i + 1, blob(v)) for i, v in enumerate(good)])
    before = shadow_state(conn)
    nan = good[0].copy()
    nan[2] = np.nan
    inf = good[0].copy()
    inf[1] = -np.inf
    cases = [
        ("INSERT INTO idx(rowid, vector) VALUES (9, ?)", (b"\0" * 12,),
         "sqlitebin: idx.vector must be a float32 BLOB of 16 bytes (dim 4), got 12 bytes"),
        ("INSERT INTO idx(rowid, vector) VALUES (9, ?)", ("text",),
         "sqlitebin: idx.vector must be a float32 BLOB of 16 bytes (dim 4), got TEXT"),
        ("INSERT INTO idx(rowid, vector) VALUES (9, NULL)", (),
         "sqlitebin: idx.vector must be a float32 BLOB of 16 bytes (dim 4), got NULL"),
        ("INSERT INTO idx(rowid, vector) VALUES (9, ?)", (blob(nan),),
         "sqlitebin: idx.vector holds a non-finite value (nan) at index 2"),
        ("INSERT INTO idx(rowid, vector) VALUES (9, ?)", (blob(inf),),
         "sqlitebin: idx.vector holds a non-finite value (-inf) at index 1"),
        ("INSERT INTO idx(rowid, vector, k) VALUES (9, ?, 3)", (blob(good[0]),),
         "sqlitebin: idx.k is a search column and cannot be written"),
        ("UPDATE idx SET vector = ? WHERE rowid = 2", (b"\0" * 4,),
         "sqlitebin: idx.vector must be a float32 BLOB of 16 bytes (dim 4), got 4 bytes"),
        ("INSERT INTO idx(idx) VALUES ('compact')", (),
         "sqlitebin: unknown command 'compact' for idx (expected 'recalibrate', 'optimize' or 'integrity-check')"),
        ("INSERT INTO idx(rowid, vector) VALUES (6, ?), (7, ?), (8, ?)", (blob(good[0]), b"\0", blob(good[1])),
         "sqlitebin: idx.vector must be a float32 BLOB of 16 bytes (dim 4), got 1 bytes"),
    ]
    for in_transaction in (False, True):
        for sql, params, message in cases:
            if in_transaction:
                conn.execute("BEGIN")
            with pytest.raises(apsw.SQLError) as error:
                conn.execute(sql, params)
            assert str(error.value) == message
            if in_transaction:
                conn.execute("COMMIT")
            assert shadow_state(conn) == before, sql
    for in_transaction in (False, True):
        if in_transaction:
            conn.execute("BEGIN")
        with pytest.raises(apsw.ConstraintError) as error:
            conn.execute("INSERT INTO idx(rowid, vector) VALUES (6, ?), (2, ?)", (blob(good[0]), blob(good[1])))
        assert str(error.value) == "sqlitebin: rowid 2 already exists in idx"
        with pytest.raises(apsw.MismatchError):  # SQLite itself checks the type of a new rowid
            conn.execute("INSERT INTO idx(rowid, vector) VALUES ('x', ?)", (blob(good[0]),))
        with pytest.raises(apsw.ConstraintError, match="rowid 3 already exists in idx"):
            conn.execute("UPDATE idx SET rowid = 3 WHERE rowid = 2")
        if in_transaction:
            conn.execute("COMMIT")
        assert shadow_state(conn) == before


SEARCH_ERRORS = [
    ("vector MATCH ? AND k = 0", "sqlitebin: idx: k must be a positive INTEGER, got 0"),
    ("vector MATCH ? AND k = 'ten'", "sqlitebin: idx: k must be a positive INTEGER, got TEXT"),
    ("vector MATCH ? AND oversample = -1", "sqlitebin: idx: oversample must be a positive INTEGER, got -1"),
    ("vector MATCH ? AND rescore = 'exact'",
     "sqlitebin: idx: rescore must be 'int8', 'float32', 'bits' or 'none', got exact"),
    ("vector MATCH ? AND rescore = 'float32'",
     "sqlitebin: idx: rescore = 'float32' needs stored float32 vectors, but idx stores int8"),
    ("vector MATCH ? AND candidates = 'exact'", "sqlitebin: idx: candidates must be 'asymmetric' or 'hamming', got exact"),
    ("k = 3", "sqlitebin: k, oversample, rescore and candidates apply only to a search "
              "(WHERE vector MATCH :query AND k = 10)"),
]


@pytest.mark.parametrize("where, message", SEARCH_ERRORS)
def test_bad_searches_fail_with_one_sentence(conn, where, message):
    make(conn, 4)
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (1, ?)", (blob([1, 2, 3, 4]),))
    params = (blob([1, 0, 0, 0]),) if "?" in where else ()
    with pytest.raises(apsw.SQLError) as error:
        conn.execute(f"SELECT rowid FROM idx WHERE {where}", params).fetchall()
    assert str(error.value) == message


def test_bad_queries(conn):
    make(conn, 4)
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (1, ?)", (blob([1, 2, 3, 4]),))
    cases = [
        (b"\0" * 3, "", "sqlitebin: idx: the MATCH query must be a float32 BLOB of 16 bytes (dim 4) or a packed code "
                        "of 1 bytes, got BLOB of 3 bytes"),
        (blob([1, np.nan, 0, 0]), "", "sqlitebin: idx: the MATCH query holds a non-finite value at index 1"),
        (b"\x80", " AND candidates = 'asymmetric'",
         "sqlitebin: idx: a packed-code query allows only candidates = 'hamming'"),
        (b"\x80", " AND rescore = 'int8'",
         "sqlitebin: idx: a packed-code query allows only rescore = 'none' or 'bits' (rescoring needs the float32 query)"),
    ]
    for query, extra, message in cases:
        with pytest.raises(apsw.SQLError) as error:
            conn.execute(f"SELECT rowid FROM idx WHERE vector MATCH ?{extra}", (query,)).fetchall()
        assert str(error.value) == message


def test_integrity_check_reports_damage(conn, rng):
    make(conn, 8, chunk_size=64, rescore="float32")
    conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)",
                     [(i, blob(v)) for i, v in enumerate(rng.standard_normal((70, 8)))])
    conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")
    conn.execute("UPDATE idx_rowids SET location = 3 WHERE rowid = 5")
    with pytest.raises(apsw.CorruptError, match="sqlitebin: idx is inconsistent: rowid 5 points at location 3, "
                                                 "which holds rowid 3"):
        conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")
    conn.execute("UPDATE idx_rowids SET location = 5 WHERE rowid = 5")
    conn.execute("DELETE FROM idx_rowids WHERE rowid = 7")
    with pytest.raises(apsw.CorruptError, match="70 slots are live but idx_rowids has 69 rows"):
        conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")
    conn.execute("INSERT INTO idx_rowids(rowid, location) VALUES (7, 7)")
    conn.execute("DELETE FROM idx_vectors WHERE block_id = 1")
    with pytest.raises(apsw.CorruptError, match="idx_vectors has 1 rows"):
        conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")


def test_rename_and_drop_keep_the_shadow_tables_in_step(conn, rng):
    make(conn, 8)
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (1, ?)", (blob(rng.standard_normal(8)),))
    conn.execute("ALTER TABLE idx RENAME TO renamed")
    names = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    assert names == ["renamed", "renamed_calibration", "renamed_chunks", "renamed_config", "renamed_rowids",
                     "renamed_vectors"]
    assert conn.execute("SELECT rowid FROM renamed WHERE vector MATCH ? AND k = 1",
                        (blob(rng.standard_normal(8)),)).fetchall() == [(1,)]
    conn.execute("INSERT INTO renamed(rowid, vector) VALUES (2, ?)", (blob(rng.standard_normal(8)),))
    conn.execute("DROP TABLE renamed")
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def test_joins_with_a_documents_table(conn, rng):
    make(conn, 8, rescore="float32")
    vectors = quantize.normalize(rng.standard_normal((30, 8)).astype(F32))
    conn.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, text, lang)")
    conn.executemany("INSERT INTO docs VALUES (?, ?, ?)", [(i, f"doc {i}", "en" if i % 2 else "de") for i in range(30)])
    conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i, blob(v)) for i, v in enumerate(vectors)])
    rows = conn.execute(
        "WITH v AS (SELECT rowid AS id, score FROM idx WHERE vector MATCH ? AND k = 3 "
        "           AND rowid IN (SELECT id FROM docs WHERE lang = 'en')) "
        "SELECT v.id, d.text FROM v JOIN docs d ON d.id = v.id ORDER BY v.score DESC, v.id",
        (blob(vectors[5]),)).fetchall()
    assert rows[0] == (5, "doc 5") and len(rows) == 3 and all(i % 2 for i, _ in rows)


def test_stored_int8_bytes_equal_numpy_quantization(conn, rng):
    dim = 70
    low = rng.uniform(-2, 0, dim).astype(F32)
    high = (low + rng.uniform(0.5, 3, dim)).astype(F32)
    high[:3] = low[:3]  # degenerate ranges quantize to -128
    ranges = np.concatenate([low, high])
    conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={dim}, chunk_size=64, ranges=X'{ranges.tobytes().hex()}')")
    vectors = rng.uniform(-4, 4, (130, dim)).astype(F32)
    # Values that land exactly on .5 levels, on the bounds and outside them.
    vectors[0] = low + (high - low) * (np.arange(dim) % 255 + 0.5).astype(F32) / 255
    vectors[1], vectors[2] = low, high
    with conn:
        conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i, blob(v)) for i, v in enumerate(vectors)])
    stored = b"".join(r[0] for r in conn.execute("SELECT vectors FROM idx_vectors ORDER BY block_id"))
    got = np.frombuffer(stored, np.int8)[: 130 * dim].reshape(130, dim)
    assert (got == quantize.int8_quantize(vectors, ranges)).all()
    sql = conn.execute("SELECT int8_quantize(?, ?)", (blob(vectors[0]), ranges.tobytes())).fetchone()[0]
    assert np.frombuffer(sql, np.int8).tolist() == got[0].tolist()


def test_limit_without_k_sets_k(conn, rng):
    make(conn, 8, rescore="float32")
    vectors = rng.standard_normal((40, 8)).astype(F32)
    conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i, blob(v)) for i, v in enumerate(vectors)])
    q = blob(vectors[0])
    assert len(conn.execute("SELECT rowid FROM idx WHERE vector MATCH ?", (q,)).fetchall()) == 10
    assert len(conn.execute("SELECT rowid FROM idx WHERE vector MATCH ? LIMIT 25", (q,)).fetchall()) == 25
    assert len(conn.execute("SELECT rowid FROM idx WHERE vector MATCH ? AND k = 3 LIMIT 25", (q,)).fetchall()) == 3
    assert len(conn.execute("SELECT rowid FROM idx LIMIT 5").fetchall()) == 5


def test_a_batch_of_queries_in_one_match(conn, rng):
    dim = 21
    make(conn, dim, rescore="float32", chunk_size=64)
    oracle = Oracle(dim, "float32")
    vectors = rng.standard_normal((150, dim)).astype(F32)
    conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i, blob(v)) for i, v in enumerate(vectors)])
    for i, v in enumerate(vectors):
        oracle.insert(i, v)
    queries = rng.standard_normal((4, dim)).astype(F32)
    rows = conn.execute("SELECT query, rowid, score, distance FROM idx WHERE vector MATCH ? AND k = 6 AND oversample = 50",
                        (queries.tobytes(),)).fetchall()
    assert [r[0] for r in rows] == [q for q in range(4) for _ in range(6)]
    for q in range(4):
        expected, scores = oracle.search(queries[q], k=6, oversample=50)
        assert_same_results([r[1:] for r in rows if r[0] == q], expected, scores)
    single = conn.execute("SELECT query, rowid FROM idx WHERE vector MATCH ? AND k = 2", (blob(queries[1]),)).fetchall()
    assert [r[0] for r in single] == [0, 0]
    bad = queries.copy()
    bad[2, 5] = np.inf
    with pytest.raises(apsw.SQLError, match="sqlitebin: idx: query 2 of the MATCH batch holds a non-finite value at index 5"):
        conn.execute("SELECT rowid FROM idx WHERE vector MATCH ?", (bad.tobytes(),)).fetchall()
