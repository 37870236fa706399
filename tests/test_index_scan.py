"""A collection's index at the SQL level: `WHERE vector MATCH ... AND k = ...` on N_index against NumPy, with
prefilters, the per-connection cache across connections, transactions and re-creation, every scan kernel and
the two-thread split."""

import apsw
import numpy as np
import pytest

import sqlitebin

pytestmark = pytest.mark.usefixtures("requires_index")


@pytest.fixture
def setup():
    """A vectors-only collection of 2,000 random 100-d vectors in 64-code chunks, and its float data."""
    db = sqlitebin.connect(":memory:")
    collection = db.create_collection("k n", dim=100, embedder=None, rescore="none", chunk_size=64)
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


def match(conn, table, query, k, candidates="hamming", extra="", params=()):
    sql = (f'SELECT rowid, distance, score FROM "{table}_index" WHERE vector MATCH ? AND k = ? '
           f"AND candidates = '{candidates}' AND rescore = 'none'{extra}")
    return conn.execute(sql, (query, k, *params)).fetchall()


def test_hamming_matches_numpy_for_packed_and_float_queries(setup):
    db, ids, vectors = setup
    for seed in range(5):
        query = np.random.default_rng(100 + seed).standard_normal(100).astype(np.float32)
        for k in (1, 10, 100, 2000, 5000):
            expected = oracle_hamming(ids, vectors, query, k)
            for blob in (np.packbits(query > 0).tobytes(), query.tobytes()):
                rows = match(db.conn, "k n", blob, k)
                assert [(r[0], r[1]) for r in rows] == expected
                assert all(abs(r[2] - (1 - 2 * r[1] / 100)) < 1e-9 for r in rows)


def test_asymmetric_matches_numpy(setup):
    db, ids, vectors = setup
    for seed in range(5):
        query = np.random.default_rng(200 + seed).standard_normal(100).astype(np.float32)
        rows = match(db.conn, "k n", query.tobytes(), 50, "asymmetric")
        expected_ids, expected_scores = oracle_asymmetric(ids, vectors, query, 50)
        assert [r[0] for r in rows] == expected_ids
        np.testing.assert_allclose([r[2] for r in rows], expected_scores, rtol=1e-5, atol=1e-6)
        hamming = dict(oracle_hamming(ids, vectors, query, 2000))
        assert [r[1] for r in rows] == [hamming[i] for i in expected_ids]


def test_join_with_the_documents(setup):
    db, ids, vectors = setup
    query = np.packbits(vectors[3] > 0).tobytes()
    joined = db.conn.execute(
        'SELECT d.id, m.distance FROM (SELECT rowid AS id, distance FROM "k n_index" '
        "WHERE vector MATCH ? AND k = 5 AND candidates = 'hamming' AND rescore = 'none') AS m "
        'JOIN "k n_documents" AS d ON d.id = m.id', (query,)).fetchall()
    assert joined[0] == (int(ids[3]), 0) and len(joined) == 5


@pytest.mark.parametrize("keep", ["nothing", "one", "some", "everything", "far apart"])
def test_prefilter_inside_the_scan(setup, keep):
    db, ids, vectors = setup
    allowed = {"nothing": [], "one": [int(ids[1234])], "some": ids[::3].tolist(), "everything": ids.tolist(),
               "far apart": [int(ids[0]), int(ids[-1]), 10**15]}[keep]
    query_vector = np.random.default_rng(5).standard_normal(100).astype(np.float32)
    rows = match(db.conn, "k n", np.packbits(query_vector > 0).tobytes(), 25,
                 extra=' AND rowid IN (SELECT id FROM "k n_documents" WHERE id IN (SELECT value FROM json_each(?)))',
                 params=(str(allowed),))
    assert [(r[0], r[1]) for r in rows] == oracle_hamming(ids, vectors, query_vector, 25, allowed=set(allowed))


def nearest(conn, name, vector, k=5):
    return [r[0] for r in match(conn, name, np.asarray(vector, np.float32).tobytes(), k)]


def test_cache_sees_other_connections_writes(tmp_path):
    path = tmp_path / "cache.db"
    vectors = np.random.default_rng(0).standard_normal((300, 32)).astype(np.float32)
    with sqlitebin.connect(path) as writer, sqlitebin.connect(path) as reader:
        collection = writer.create_collection("c", dim=32, embedder=None, rescore="none", chunk_size=64)
        collection.add(vectors=vectors[:200], ids=list(range(1, 201)))
        probe = vectors[250]
        assert 251 not in nearest(reader.conn, "c", probe)  # fills the reader's cache
        collection.add(vectors=vectors[200:], ids=list(range(201, 301)))
        assert nearest(reader.conn, "c", probe)[0] == 251
        collection.delete([251])
        assert 251 not in nearest(reader.conn, "c", probe)


def test_cache_sees_own_writes_rollbacks_and_recreation(tmp_path):
    db = sqlitebin.connect(tmp_path / "own.db")
    vectors = np.random.default_rng(1).standard_normal((100, 32)).astype(np.float32)
    collection = db.create_collection("c", dim=32, embedder=None, rescore="none", chunk_size=64)
    collection.add(vectors=vectors[:50], ids=list(range(1, 51)))
    probe = vectors[70]
    assert 71 not in nearest(db.conn, "c", probe)
    collection.add(vectors=vectors[50:], ids=list(range(51, 101)))
    assert nearest(db.conn, "c", probe)[0] == 71
    db.conn.execute("BEGIN")
    db.conn.execute('DELETE FROM "c_documents" WHERE id = 71')
    assert 71 not in nearest(db.conn, "c", probe)
    db.conn.execute("ROLLBACK")
    assert nearest(db.conn, "c", probe)[0] == 71
    # Dropping and recreating a collection of the same name starts from the new tables.
    db.drop_collection("c")
    again = db.create_collection("c", dim=32, embedder=None, rescore="none")
    again.add(vectors=vectors[:3], ids=[7, 8, 9])
    assert sorted(nearest(db.conn, "c", probe)) == [7, 8, 9]
    db.close()


def test_several_collections_on_one_connection(tmp_path):
    db = sqlitebin.connect(tmp_path / "many.db")
    rng = np.random.default_rng(2)
    expected = {}
    for n in range(6):
        name = f"c{n}"
        vectors = rng.standard_normal((40, 16)).astype(np.float32)
        db.create_collection(name, dim=16, embedder=None, rescore="none").add(vectors=vectors, ids=list(range(1, 41)))
        expected[name] = vectors
    for _ in range(2):
        for name, vectors in expected.items():
            assert nearest(db.conn, name, vectors[12], k=1) == [13]
    db.close()


@pytest.mark.parametrize("kernel", ["avx512", "avx2", "popcnt", "portable"])
def test_every_kernel_gives_the_oracle_results(kernel, monkeypatch, tmp_path):
    monkeypatch.setenv("SQLITEBIN_POPCOUNT", kernel)
    db = sqlitebin.connect(tmp_path / "fast.db")
    try:
        for dim in (256, 100, 1024):
            collection = db.create_collection(f"a{dim}", dim=dim, embedder=None, rescore="none", chunk_size=1024)
            rng = np.random.default_rng(dim)
            # Clustered data, so many codes score close to the k-th best.
            centers = rng.standard_normal((5, dim))
            vectors = (centers[rng.integers(0, 5, 6000)] + 0.7 * rng.standard_normal((6000, dim))).astype(np.float32)
            ids = np.array(collection.add(vectors=vectors), dtype=np.int64)
            normalized = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            for seed in range(3):
                query = (centers[seed] + 0.5 * rng.standard_normal(dim)).astype(np.float32)
                for k in (1, 10, 100):
                    rows = match(db.conn, f"a{dim}", query.tobytes(), k, "asymmetric")
                    expected_ids, expected_scores = oracle_asymmetric(ids, normalized, query, k)
                    assert [r[0] for r in rows] == expected_ids
                    np.testing.assert_allclose([r[2] for r in rows], expected_scores, rtol=1e-5, atol=1e-5)
                    rows = match(db.conn, f"a{dim}", np.packbits(query > 0).tobytes(), k)
                    assert [(r[0], r[1]) for r in rows] == oracle_hamming(ids, normalized, query, k)
    finally:
        db.close()
        monkeypatch.delenv("SQLITEBIN_POPCOUNT")
        sqlitebin.load(apsw.Connection(":memory:"))  # restore the default kernels


@pytest.mark.parametrize("threads", ["1", "2"])
def test_two_thread_scan_gives_the_same_results(threads, monkeypatch):
    monkeypatch.setenv("SQLITEBIN_THREADS", threads)
    db = sqlitebin.connect(":memory:")
    collection = db.create_collection("t", dim=64, embedder=None, rescore="none", chunk_size=128)
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((3000, 64)).astype(np.float32)
    ids = np.array(collection.add(vectors=vectors), dtype=np.int64)
    db.conn.execute('DELETE FROM "t_documents" WHERE id % 10 = 0')
    live = ids % 10 != 0
    normalized = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    allowed = [int(i) for i in ids[live] if i % 3]
    for seed in range(4):
        query = rng.standard_normal(64).astype(np.float32)
        code = np.packbits(query > 0).tobytes()
        rows = match(db.conn, "t", code, 40)
        assert [(r[0], r[1]) for r in rows] == oracle_hamming(ids[live], normalized[live], query, 40)
        rows = match(db.conn, "t", code, 40, extra=" AND rowid IN (SELECT value FROM json_each(?))",
                     params=(str(allowed),))
        assert [(r[0], r[1]) for r in rows] == oracle_hamming(ids[live], normalized[live], query, 40,
                                                              allowed=set(allowed))
        rows = match(db.conn, "t", query.tobytes(), 40, "asymmetric")
        assert [r[0] for r in rows] == oracle_asymmetric(ids[live], normalized[live], query, 40)[0]
    db.close()
