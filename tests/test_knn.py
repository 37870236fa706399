"""sqlitebin_knn and sqlitebin_ids at the SQL level: results against NumPy, prefilters, errors, the shell."""

import shutil
import subprocess

import apsw
import numpy as np
import pytest

import sqlitebin


@pytest.fixture
def setup():
    """A vectors-only collection of 2,000 random 100-d vectors in 7-code chunks, and its float data."""
    db = sqlitebin.connect(":memory:")
    collection = db.create_collection("k n", dim=100, embedder=None, rescore="none", chunk_codes=7)
    vectors = np.random.default_rng(1).standard_normal((2000, 100)).astype(np.float32)
    ids = np.array(collection.add(vectors=vectors, ids=list(range(10, 40010, 20))), dtype=np.int64)
    normalized = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    yield db, ids, normalized
    db.close()


def oracle_hamming(ids, vectors, query, k, allowed=None):
    codes = np.packbits(vectors > 0, axis=1)
    query_code = np.packbits(query > 0)
    distance = np.unpackbits(codes ^ query_code, axis=1).sum(axis=1)
    keep = np.ones(len(ids), bool) if allowed is None else np.isin(ids, list(allowed))
    order = np.lexsort((ids[keep], distance[keep]))[:k]
    return list(zip(ids[keep][order].tolist(), distance[keep][order].tolist()))


def oracle_asymmetric(ids, vectors, query, k):
    signs = np.where(vectors > 0, 1.0, -1.0)
    score = signs @ query.astype(np.float64)
    order = np.lexsort((ids, -score))[:k]
    return ids[order].tolist(), (score[order] / np.sqrt(vectors.shape[1])).tolist()


def test_hamming_mode_matches_numpy(setup):
    db, ids, vectors = setup
    for seed in range(5):
        query = np.random.default_rng(100 + seed).standard_normal(100).astype(np.float32)
        code = np.packbits(query > 0).tobytes()
        for k in (1, 10, 100, 2000, 5000):
            rows = db.conn.execute("SELECT id, distance, score FROM sqlitebin_knn('k n', ?, ?)", (code, k)).fetchall()
            assert [(r[0], r[1]) for r in rows] == oracle_hamming(ids, vectors, query, k)
            assert all(abs(r[2] - (1 - 2 * r[1] / 100)) < 1e-12 for r in rows)


def test_asymmetric_mode_matches_numpy(setup):
    db, ids, vectors = setup
    for seed in range(5):
        query = np.random.default_rng(200 + seed).standard_normal(100).astype(np.float32)
        rows = db.conn.execute("SELECT id, distance, score FROM sqlitebin_knn('k n', ?, 50, 'asymmetric')",
                               (query.tobytes(),)).fetchall()
        expected_ids, expected_scores = oracle_asymmetric(ids, vectors, query, 50)
        assert [r[0] for r in rows] == expected_ids
        np.testing.assert_allclose([r[2] for r in rows], expected_scores, rtol=1e-5, atol=1e-6)
        # distance: Hamming bits between the binarized query and the code, as in hamming mode.
        hamming = dict(oracle_hamming(ids, vectors, query, 2000))
        assert [r[1] for r in rows] == [hamming[i] for i in expected_ids]


def test_default_k_named_arguments_and_join(setup):
    db, ids, vectors = setup
    query = np.packbits(vectors[3] > 0).tobytes()
    assert len(db.conn.execute("SELECT * FROM sqlitebin_knn('k n', ?)", (query,)).fetchall()) == 10
    rows = db.conn.execute(
        "SELECT k.id, k.distance FROM sqlitebin_knn AS k WHERE k.collection = 'k n' AND k.query = ? AND k.k = 3",
        (query,)).fetchall()
    assert rows[0] == (int(ids[3]), 0) and len(rows) == 3
    joined = db.conn.execute(
        'SELECT d.id, k.distance FROM sqlitebin_knn(\'k n\', ?, 5) AS k JOIN "k n_documents" AS d ON d.id = k.id',
        (query,)).fetchall()
    assert joined[0] == (int(ids[3]), 0) and len(joined) == 5


@pytest.mark.parametrize("keep", ["nothing", "one", "some", "everything"])
def test_prefilter(setup, keep):
    db, ids, vectors = setup
    allowed = {"nothing": [], "one": [int(ids[1234])], "some": ids[::3].tolist(), "everything": ids.tolist()}[keep]
    query_vector = np.random.default_rng(5).standard_normal(100).astype(np.float32)
    query = np.packbits(query_vector > 0).tobytes()
    where = "id IN (SELECT value FROM json_each(?))"
    blob = db.conn.execute(f'SELECT sqlitebin_ids(id) FROM "k n_documents" WHERE {where}',
                           (str(allowed),)).fetchall()[0][0]
    rows = db.conn.execute("SELECT id, distance FROM sqlitebin_knn('k n', ?, 25, 'hamming', ?)", (query, blob)).fetchall()
    assert rows == oracle_hamming(ids, vectors, query_vector, 25, allowed=set(allowed))


def test_prefilter_sparse_ids_use_binary_search(setup):
    # Ids far apart make the bitmap too large, so the sorted-array path is taken.
    db, ids, vectors = setup
    allowed = [int(ids[0]), int(ids[-1]), 10**15]
    blob = np.array(sorted(allowed), dtype="<i8").tobytes()
    query_vector = vectors[0]
    rows = db.conn.execute("SELECT id FROM sqlitebin_knn('k n', ?, 10, 'hamming', ?)",
                           (np.packbits(query_vector > 0).tobytes(), blob)).fetchall()
    assert [r[0] for r in rows] == [int(ids[0]), int(ids[-1])]


def test_sqlitebin_ids_sorts_and_deduplicates(conn):
    conn.execute("CREATE TABLE t(x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in [5, -3, 5, 2**62, None, 0]])
    blob = conn.execute("SELECT sqlitebin_ids(x) FROM t").fetchall()[0][0]
    assert np.frombuffer(blob, dtype="<i8").tolist() == [-3, 0, 5, 2**62]
    assert conn.execute("SELECT length(sqlitebin_ids(x)) FROM t WHERE 0").fetchall()[0][0] == 0
    with pytest.raises(apsw.SQLError, match=r"sqlitebin_ids\(\): argument 1 \(id\) must be an INTEGER, got TEXT"):
        conn.execute("SELECT sqlitebin_ids('a')").fetchall()


KNN_ERRORS = [
    ("SELECT * FROM sqlitebin_knn('nope', x'00', 5)", (), "sqlitebin_knn(): no collection named 'nope'"),
    ("SELECT * FROM sqlitebin_knn('k n', x'00', 5)", (), "sqlitebin_knn(): collection 'k n' has 100-bit codes, so a hamming query is 13 bytes; got 1"),
    ("SELECT * FROM sqlitebin_knn('k n', x'00', 5, 'asymmetric')", (), "sqlitebin_knn(): collection 'k n' has dimension 100, so an asymmetric query is 400 bytes of float32; got 1"),
    ("SELECT * FROM sqlitebin_knn('k n', 'text', 5)", (), "sqlitebin_knn(): query must be a BLOB, got TEXT"),
    ("SELECT * FROM sqlitebin_knn('k n', zeroblob(13), 0)", (), "sqlitebin_knn(): k must be from 1 to 100000, got 0"),
    ("SELECT * FROM sqlitebin_knn('k n', zeroblob(13), -4)", (), "sqlitebin_knn(): k must be from 1 to 100000, got -4"),
    ("SELECT * FROM sqlitebin_knn('k n', zeroblob(13), 2.5)", (), "sqlitebin_knn(): k must be an INTEGER, got REAL"),
    ("SELECT * FROM sqlitebin_knn('k n', zeroblob(13), 5, 'cosine')", (), "sqlitebin_knn(): mode must be 'hamming' or 'asymmetric', got 'cosine'"),
    ("SELECT * FROM sqlitebin_knn('k n', zeroblob(13), 5, 'hamming', x'0102')", (), "sqlitebin_knn(): allowed must be an id set from sqlitebin_ids() (a BLOB of 8-byte ids), got BLOB of 2 bytes"),
    ("SELECT * FROM sqlitebin_knn(5, zeroblob(13))", (), "sqlitebin_knn(): collection must be TEXT, got INTEGER"),
    ("SELECT * FROM sqlitebin_knn('k n')", (), "sqlitebin_knn(): needs at least a collection name and a query, as in sqlitebin_knn('docs', :query, 10)"),
    ("SELECT * FROM sqlitebin_knn('k n', ?, 5, 'asymmetric')", (np.full(100, np.nan, np.float32).tobytes(),), "sqlitebin_knn(): query holds a non-finite value at index 0"),
]


@pytest.mark.parametrize("sql,params,message", KNN_ERRORS)
def test_knn_errors(setup, sql, params, message):
    db, _, _ = setup
    with pytest.raises(apsw.SQLError) as excinfo:
        db.conn.execute(sql, params).fetchall()
    assert str(excinfo.value) == message


def test_knn_without_any_collection(conn):
    with pytest.raises(apsw.SQLError, match=r"no collection named 'x' \(this database has no sqlitebin collections\)"):
        conn.execute("SELECT * FROM sqlitebin_knn('x', x'00')").fetchall()


def test_knn_in_the_sqlite3_shell(tmp_path):
    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 command line is not installed")
    path = tmp_path / "shell.db"
    with sqlitebin.connect(path) as db:
        collection = db.create_collection("docs", dim=16, embedder=None)
        collection.add(vectors=np.eye(16, dtype=np.float32) - 0.01, ids=list(range(1, 17)))
    query = np.packbits((np.eye(16)[4] - 0.01) > 0).tobytes().hex()
    result = subprocess.run(
        [shell, str(path), f".load {sqlitebin.loadable_path()}",
         f"SELECT id, distance FROM sqlitebin_knn('docs', x'{query}', 2)"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5|0", "1|2"]


def knn_ids(conn, name, vector, k=5):
    code = np.packbits(np.asarray(vector) > 0).tobytes()
    return [r[0] for r in conn.execute("SELECT id FROM sqlitebin_knn(?, ?, ?)", (name, code, k))]


def test_chunk_cache_sees_other_connections_writes(tmp_path):
    path = tmp_path / "cache.db"
    vectors = np.random.default_rng(0).standard_normal((300, 32)).astype(np.float32)
    with sqlitebin.connect(path) as writer, sqlitebin.connect(path) as reader:
        collection = writer.create_collection("c", dim=32, embedder=None, rescore="none", chunk_codes=16)
        collection.add(vectors=vectors[:200], ids=list(range(1, 201)))
        probe = vectors[250]
        assert 251 not in knn_ids(reader.conn, "c", probe)  # fills the reader's cache
        collection.add(vectors=vectors[200:], ids=list(range(201, 301)))
        assert knn_ids(reader.conn, "c", probe)[0] == 251
        collection.delete([251])
        assert 251 not in knn_ids(reader.conn, "c", probe)


def test_chunk_cache_sees_own_writes_transactions_and_recreation(tmp_path):
    db = sqlitebin.connect(tmp_path / "own.db")
    vectors = np.random.default_rng(1).standard_normal((100, 32)).astype(np.float32)
    collection = db.create_collection("c", dim=32, embedder=None, rescore="none", chunk_codes=8)
    collection.add(vectors=vectors[:50], ids=list(range(1, 51)))
    probe = vectors[70]
    assert 71 not in knn_ids(db.conn, "c", probe)
    collection.add(vectors=vectors[50:], ids=list(range(51, 101)))
    assert knn_ids(db.conn, "c", probe)[0] == 71
    # Inside an explicit transaction the scan reads the tables as they are, and after ROLLBACK too.
    db.conn.execute("BEGIN")
    db.conn.execute('DELETE FROM "c_chunks"')
    assert 71 not in knn_ids(db.conn, "c", probe)
    db.conn.execute("ROLLBACK")
    assert knn_ids(db.conn, "c", probe)[0] == 71
    # Dropping and recreating a collection of the same name starts from the new tables.
    db.drop_collection("c")
    again = db.create_collection("c", dim=32, embedder=None, rescore="none")
    assert knn_ids(db.conn, "c", probe) == []
    again.add(vectors=vectors[:3], ids=[7, 8, 9])
    assert sorted(knn_ids(db.conn, "c", probe)) == [7, 8, 9]
    db.close()


def test_chunk_cache_holds_several_collections(tmp_path):
    db = sqlitebin.connect(tmp_path / "many.db")
    rng = np.random.default_rng(2)
    expected = {}
    for n in range(6):  # more collections than cache entries
        name = f"c{n}"
        vectors = rng.standard_normal((40, 16)).astype(np.float32)
        db.create_collection(name, dim=16, embedder=None, rescore="none").add(vectors=vectors, ids=list(range(1, 41)))
        expected[name] = vectors
    for _ in range(2):
        for name, vectors in expected.items():
            assert knn_ids(db.conn, name, vectors[12], k=1) == [13]
    db.close()


@pytest.mark.parametrize("kernel", ["avx512", "avx2", "popcnt", "portable"])
def test_asymmetric_fast_scan_is_exact(kernel, monkeypatch, tmp_path):
    """The nibble fast scan (AVX2, AVX-512) only skips codes that cannot enter the top k: same results as scoring all."""
    monkeypatch.setenv("SQLITEBIN_POPCOUNT", kernel)
    db = sqlitebin.connect(tmp_path / "fast.db")
    try:
        for dim in (256, 100, 1024):
            collection = db.create_collection(f"a{dim}", dim=dim, embedder=None, rescore="none", chunk_codes=1000)
            rng = np.random.default_rng(dim)
            # Clustered data, so many codes score close to the k-th best.
            centers = rng.standard_normal((5, dim))
            vectors = (centers[rng.integers(0, 5, 6000)] + 0.7 * rng.standard_normal((6000, dim))).astype(np.float32)
            ids = np.array(collection.add(vectors=vectors), dtype=np.int64)
            normalized = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            for seed in range(3):
                query = (centers[seed] + 0.5 * rng.standard_normal(dim)).astype(np.float32)
                for k in (1, 10, 100):
                    rows = db.conn.execute(f"SELECT id, score FROM sqlitebin_knn('a{dim}', ?, ?, 'asymmetric')",
                                           (query.tobytes(), k)).fetchall()
                    expected_ids, expected_scores = oracle_asymmetric(ids, normalized, query, k)
                    assert [r[0] for r in rows] == expected_ids
                    np.testing.assert_allclose([r[1] for r in rows], expected_scores, rtol=1e-5, atol=1e-5)
        debug = db.conn.execute("SELECT sqlitebin_debug()").fetchall()[0][0]
        nibble = "popcount=avx2" in debug or "popcount=avx512" in debug
        assert ("asymmetric_scan=nibble-" in debug) == nibble
    finally:
        db.close()
        monkeypatch.delenv("SQLITEBIN_POPCOUNT")
        sqlitebin.load(apsw.Connection(":memory:"))  # restore the default kernels


@pytest.mark.parametrize("threads", ["1", "2"])
def test_two_thread_scan_gives_the_same_results(threads, monkeypatch):
    """SQLITEBIN_THREADS=2 splits even small scans in two; results must equal the oracle either way."""
    monkeypatch.setenv("SQLITEBIN_THREADS", threads)
    db = sqlitebin.connect(":memory:")
    collection = db.create_collection("t", dim=64, embedder=None, rescore="none", chunk_codes=97)
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((3000, 64)).astype(np.float32)
    ids = np.array(collection.add(vectors=vectors), dtype=np.int64)
    # Changes not yet folded into chunks, and a prefilter, on top of the split.
    db.conn.execute('DELETE FROM "t_documents" WHERE id % 10 = 0')
    live = ids % 10 != 0
    normalized = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    allowed = [int(i) for i in ids[live] if i % 3]
    blob = np.array(sorted(allowed), dtype="<i8").tobytes()
    for seed in range(4):
        query = rng.standard_normal(64).astype(np.float32)
        code = np.packbits(query > 0).tobytes()
        rows = db.conn.execute("SELECT id, distance FROM sqlitebin_knn('t', ?, 40)", (code,)).fetchall()
        assert rows == oracle_hamming(ids[live], normalized[live], query, 40)
        rows = db.conn.execute("SELECT id, distance FROM sqlitebin_knn('t', ?, 40, 'hamming', ?)", (code, blob)).fetchall()
        assert rows == oracle_hamming(ids[live], normalized[live], query, 40, allowed=set(allowed))
        rows = db.conn.execute("SELECT id FROM sqlitebin_knn('t', ?, 40, 'asymmetric')", (query.tobytes(),)).fetchall()
        assert [r[0] for r in rows] == oracle_asymmetric(ids[live], normalized[live], query, 40)[0]
    db.close()
