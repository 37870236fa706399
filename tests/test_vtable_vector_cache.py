"""Stored vectors kept in memory for rescoring (the code cache's rows of N_vectors): every search
still scores with the vectors of its own state, after writes, rollbacks, recalibration and
optimize, from other connections and threads, whatever SQLITEBIN_VECTOR_CACHE_MB allows."""

import threading

import apsw
import numpy as np
import pytest

from test_vtable import F32, Oracle, blob, check
from test_vtable_shared import connect

DIM = 24


def cached_vector_bytes(conn):
    debug = dict(line.split("=", 1) for line in conn.execute("SELECT sqlitebin_debug()").fetchone()[0].splitlines())
    return int(debug["cached_vector_bytes"])


def fill(conn, oracle, vectors, rescore):
    calibration = ", calibration_rows=64" if rescore == "int8" else ""
    conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={DIM}, rescore={rescore}, chunk_size=64{calibration})")
    with conn:
        for i, v in enumerate(vectors):
            conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i + 1, blob(v)))
            oracle.insert(i + 1, v)


def check_all(conn, oracle, queries):
    for q in queries:
        check(conn, oracle, q, k=10, oversample=30)  # 300 candidates: most rows are read


@pytest.mark.parametrize("rescore", ["int8", "float32"])
def test_cached_rows_follow_every_write_of_the_same_connection(tmp_path, rescore):
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((400, DIM)).astype(F32)
    queries = vectors[:4] + 0.1 * rng.standard_normal((4, DIM)).astype(F32)
    conn = connect(str(tmp_path / "cache.db"))
    oracle = Oracle(DIM, rescore, calibration_rows=64)
    fill(conn, oracle, vectors[:300], rescore)
    check_all(conn, oracle, queries)
    assert cached_vector_bytes(conn) > 0  # the rows are in memory now
    # Updates of cached rows, new rows in a cached row, a replaced rowid, a delete.
    for rowid, source in ((1, 301), (2, 302), (70, 303), (299, 304)):
        conn.execute("UPDATE idx SET vector = ? WHERE rowid = ?", (blob(vectors[source]), rowid))
        oracle.rows[rowid] = vectors[source]
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (301, ?)", (blob(vectors[305]),))
    oracle.insert(301, vectors[305])
    conn.execute("INSERT OR REPLACE INTO idx(rowid, vector) VALUES (3, ?)", (blob(vectors[306]),))
    oracle.rows[3] = vectors[306]
    conn.execute("DELETE FROM idx WHERE rowid = 4")
    del oracle.rows[4]
    check_all(conn, oracle, np.concatenate([queries, vectors[301:307]]))
    # A rolled-back transaction and savepoint leave the committed vectors.
    conn.execute("BEGIN")
    conn.execute("UPDATE idx SET vector = ? WHERE rowid = 5", (blob(vectors[310]),))
    check(conn, Oracle_with(oracle, {5: vectors[310]}), vectors[310], k=10, oversample=30)
    conn.execute("SAVEPOINT inner")
    conn.execute("UPDATE idx SET vector = ? WHERE rowid = 6", (blob(vectors[311]),))
    check(conn, Oracle_with(oracle, {5: vectors[310], 6: vectors[311]}), vectors[311], k=10, oversample=30)
    conn.execute("ROLLBACK TO inner")
    check(conn, Oracle_with(oracle, {5: vectors[310]}), vectors[311], k=10, oversample=30)
    conn.execute("ROLLBACK")
    check_all(conn, oracle, np.concatenate([queries, vectors[310:312]]))
    if rescore == "int8":  # new ranges re-quantize every stored vector
        conn.execute("INSERT INTO idx(idx) VALUES ('recalibrate')")
        # Scores are the dot products with the re-quantized vectors, as the vector column (read
        # from disk) returns them.
        stored = {rowid: np.frombuffer(v, F32) for rowid, v in conn.execute("SELECT rowid, vector FROM idx")}
        for q in queries:
            got = conn.execute("SELECT rowid, score FROM idx WHERE vector MATCH ? AND k = 10 AND oversample = 30",
                               (blob(q),)).fetchall()
            assert len(got) == 10
            for rowid, score in got:
                assert score == pytest.approx(float(stored[rowid].astype(np.float64) @ q.astype(np.float64)),
                                              abs=1e-4)
        oracle.rows = stored
        oracle.rescore = "float32"  # the dequantized vectors, scored as they are
        conn.execute("UPDATE idx SET vector = vector")  # codes from the dequantized vectors too
    conn.execute("DELETE FROM idx WHERE rowid % 3 = 0")
    for rowid in [r for r in oracle.rows if r % 3 == 0]:
        del oracle.rows[rowid]
    check_all(conn, oracle, queries)
    conn.execute("INSERT INTO idx(idx) VALUES ('optimize')")  # rows move to other slots
    check_all(conn, oracle, queries)
    conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")


def Oracle_with(oracle, changes):
    """A copy of `oracle` with some rows replaced."""
    copy = Oracle(oracle.dim, oracle.rescore, calibration_rows=oracle.calibration_rows, ranges=oracle.ranges)
    copy.rows = dict(oracle.rows) | changes
    return copy


def test_a_write_from_another_connection_is_seen(tmp_path):
    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((300, DIM)).astype(F32)
    path = str(tmp_path / "two.db")
    a, b = connect(path), connect(path)
    oracle = Oracle(DIM, "float32")
    fill(a, oracle, vectors[:200], "float32")
    check_all(a, oracle, vectors[:3])
    check_all(b, oracle, vectors[:3])
    for rowid in range(1, 60):
        b.execute("UPDATE idx SET vector = ? WHERE rowid = ?", (blob(vectors[200 + rowid]), rowid))
        oracle.rows[rowid] = vectors[200 + rowid]
    check_all(a, oracle, vectors[201:205])
    check_all(b, oracle, vectors[201:205])


def test_threads_filling_the_same_rows_agree(tmp_path):
    rng = np.random.default_rng(9)
    vectors = rng.standard_normal((2000, DIM)).astype(F32)
    path = str(tmp_path / "threads.db")
    oracle = Oracle(DIM, "float32")
    first = connect(path)
    fill(first, oracle, vectors, "float32")
    queries = rng.standard_normal((12, DIM)).astype(F32)
    expected = [oracle.search(q, k=10, oversample=40)[0] for q in queries]
    errors = []

    start = threading.Barrier(4)

    def run(conn):
        try:
            start.wait()  # the first searches race to load the same copy: one read, the others wait
            for q, want in zip(queries, expected):
                got = conn.execute("SELECT rowid FROM idx WHERE vector MATCH ? AND k = 10 AND oversample = 40",
                                   (blob(q),)).fetchall()
                assert [r for (r,) in got] == [r for r, _, _ in want]
        except Exception as error:  # reported by the main thread
            errors.append(error)

    connections = [connect(path) for _ in range(4)]
    before = cached_vector_bytes(first)  # other tests' copies are listed too
    threads = [threading.Thread(target=run, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    per_row = first.execute("SELECT value FROM idx_config WHERE key = 'vectors_per_row'").fetchone()[0]
    rows = -(-len(vectors) // per_row)
    assert cached_vector_bytes(first) - before == rows * per_row * DIM * 4  # one copy of each row, shared by all


@pytest.mark.parametrize("megabytes, cached", [("0", False), ("1", True)])
def test_the_budget_limits_what_is_kept_and_never_the_results(tmp_path, monkeypatch, megabytes, cached):
    monkeypatch.setenv("SQLITEBIN_VECTOR_CACHE_MB", megabytes)
    rng = np.random.default_rng(10)
    dim = 256
    vectors = rng.standard_normal((4000, dim)).astype(F32)  # 4 MB of float32 vectors: more than 1 MiB
    conn = connect(str(tmp_path / "budget.db"))
    conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={dim}, rescore=float32)")
    oracle = Oracle(dim, "float32")
    with conn:
        for i, v in enumerate(vectors):
            conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i + 1, blob(v)))
            oracle.insert(i + 1, v)
    before = cached_vector_bytes(conn)  # other tests' copies are listed too
    for q in vectors[:5]:
        check(conn, oracle, q, k=10, oversample=200)
    held = cached_vector_bytes(conn) - before
    assert (held > 0) == cached
    assert held <= int(megabytes) * 1024 * 1024


@pytest.mark.parametrize("setting", ["-1", "1.5", "lots", ""])
def test_a_bad_budget_fails_the_search_with_one_sentence(tmp_path, monkeypatch, setting):
    conn = connect(str(tmp_path / f"bad{len(setting)}.db"))
    conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={DIM})")
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (1, ?)", (blob(np.ones(DIM)),))
    monkeypatch.setenv("SQLITEBIN_VECTOR_CACHE_MB", setting)
    with pytest.raises(apsw.SQLError, match=(
            r"^sqlitebin: SQLITEBIN_VECTOR_CACHE_MB must be a whole number of MiB \(0 turns the vector "
            rf"cache off\), not '{setting}'$")):
        conn.execute("SELECT rowid FROM idx WHERE vector MATCH ? AND k = 1", (blob(np.ones(DIM)),)).fetchall()
