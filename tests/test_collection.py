"""Collections: every search path against the NumPy oracle, writes, filters, reopen, errors."""

import itertools
import json

import apsw
import numpy as np
import pytest

import sqlitebin
from oracle import Oracle

SEARCH_PATHS = list(itertools.product(["asymmetric", "hamming"], ["int8", "float32", "bits", "none"]))
CALIBRATION_ROWS = 1024  # the index's default: int8 ranges are set once it holds this many rows

pytestmark = pytest.mark.usefixtures("requires_index")


def random_vectors(n, dim, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def make(db, name="c", dim=64, rescore="int8", n=500, seed=0, chunk_size=4096):
    collection = db.create_collection(name, dim=dim, embedder=None, rescore=rescore, chunk_size=chunk_size)
    vectors = random_vectors(n, dim, seed)
    ids = collection.add(vectors=vectors) if n else []
    oracle = Oracle(dim, lambda: collection.ranges)
    oracle.set(ids, vectors)
    return collection, oracle


@pytest.fixture
def db():
    database = sqlitebin.connect(":memory:")
    yield database
    database.close()


def assert_matches(hits, expected, exact_ids=True):
    assert [h.id for h in hits] == [e[0] for e in expected] if exact_ids else len(hits) == len(expected)
    np.testing.assert_allclose([h.score for h in hits], [e[1] for e in expected], rtol=1e-5, atol=1e-6)
    assert [h.distance for h in hits] == [e[2] for e in expected]


@pytest.mark.parametrize("candidates,rescore", SEARCH_PATHS)
@pytest.mark.parametrize("dim,n", [(64, 700), (100, CALIBRATION_ROWS + 76)])
def test_search_matches_oracle(db, candidates, rescore, dim, n):
    stored = rescore if rescore in ("int8", "float32") else "int8"
    collection, oracle = make(db, dim=dim, rescore=stored, n=n, seed=dim)
    assert (collection.ranges is not None) == (stored == "int8" and n >= CALIBRATION_ROWS)
    for seed in range(5):
        query = random_vectors(1, dim, 1000 + seed)[0]
        for k, oversample in [(1, 1), (10, 4), (25, 10)]:
            hits = collection.search(query, k, oversample=oversample, rescore=rescore, candidates=candidates)
            assert_matches(hits, oracle.search(query, k, oversample, candidates, rescore))


def test_int8_ranges_are_calibrated_by_the_index_from_the_first_rows(db):
    collection = db.create_collection("r", dim=32, embedder=None)
    vectors = random_vectors(CALIBRATION_ROWS + 100, 32, 4)
    collection.add(vectors=vectors[:CALIBRATION_ROWS - 1], batch_size=300)
    assert collection.ranges is None and not collection.info()["calibrated"]
    collection.add(vectors=vectors[CALIBRATION_ROWS - 1:])
    normalized = vectors[:CALIBRATION_ROWS] / np.linalg.norm(vectors[:CALIBRATION_ROWS], axis=1, keepdims=True)
    low, high = normalized.min(axis=0), normalized.max(axis=0)
    margin = (high - low) * np.float32(0.05)
    np.testing.assert_allclose(collection.ranges, np.concatenate([low - margin, high + margin]), rtol=1e-5, atol=1e-6)
    assert collection.info()["calibrated"]


@pytest.mark.usefixtures("requires_empty_index")
def test_k_larger_than_collection_and_empty_collection(db):
    collection, oracle = make(db, n=7)
    query = random_vectors(1, 64, 9)[0]
    hits = collection.search(query, k=50)
    assert len(hits) == 7
    assert_matches(hits, oracle.search(query, 50, 10, "asymmetric", "int8"))
    empty = db.create_collection("empty", dim=64, embedder=None)
    assert empty.search(query, k=5) == []
    assert len(empty) == 0


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 129])
def test_chunk_boundaries(db, n, request):
    if n == 0:
        request.getfixturevalue("requires_empty_index")
    collection, oracle = make(db, n=n, chunk_size=64)
    query = random_vectors(1, 64, 3)[0]
    for candidates, rescore in SEARCH_PATHS:
        if rescore != "float32":
            hits = collection.search(query, 10, rescore=rescore, candidates=candidates)
            assert_matches(hits, oracle.search(query, 10, 10, candidates, rescore))
    assert collection.info()["chunk_size"] == 64


def test_delete_and_upsert_keep_every_path_exact(db):
    collection, oracle = make(db, n=300, chunk_size=64)
    assert collection.delete([5, 6, 7, 999]) == 3
    oracle.delete([5, 6, 7])
    replacement = random_vectors(3, 64, 77)
    collection.upsert(vectors=replacement, ids=[10, 11, 1000])
    oracle.set([10, 11, 1000], replacement)
    assert len(collection) == 298
    for seed in range(5):
        query = random_vectors(1, 64, 300 + seed)[0]
        for candidates in ["hamming", "asymmetric"]:
            hits = collection.search(query, 15, candidates=candidates)
            assert_matches(hits, oracle.search(query, 15, 10, candidates, "int8"))
    # The replaced document itself is found first with its new vector.
    assert collection.search(replacement[0], 1)[0].id == 10


def test_plain_sql_writes_are_seen_at_once(db):
    collection, oracle = make(db, n=200, chunk_size=64)
    new = random_vectors(3, 64, 5)
    blob = lambda v: (v / np.linalg.norm(v)).astype("<f4").tobytes()
    conn = db.conn
    with conn:
        conn.execute('INSERT INTO "c_documents"(id, text) VALUES (5000, \'from sql\')')
        conn.execute('INSERT INTO "c_index"(rowid, vector) VALUES (5000, ?)', (blob(new[0]),))
        conn.execute('UPDATE "c_index" SET vector = ? WHERE rowid = 3', (blob(new[1]),))
        conn.execute('DELETE FROM "c_documents" WHERE id IN (1, 2)')
        conn.execute('UPDATE "c_documents" SET id = 7000 WHERE id = 4')
    with pytest.raises(apsw.SQLError):  # a rolled-back write leaves nothing behind
        with conn:
            conn.execute('INSERT INTO "c_index"(rowid, vector) VALUES (6000, ?)', (blob(new[2]),))
            conn.execute("SELECT no_such_function()")
    oracle.delete([1, 2])
    oracle.set([5000, 3], new)
    oracle.set([7000], [oracle.vectors.pop(4)])
    for seed in range(5):
        query = random_vectors(1, 64, 400 + seed)[0]
        for candidates, rescore in SEARCH_PATHS:
            if rescore != "float32":
                hits = collection.search(query, 20, candidates=candidates, rescore=rescore)
                assert_matches(hits, oracle.search(query, 20, 10, candidates, rescore))
    # Deleting a document removed its index row through the trigger; moving it moved the row.
    rows = dict(conn.execute('SELECT rowid, 1 FROM "c_index" WHERE rowid IN (1, 2, 4, 6000, 7000)').fetchall())
    assert rows == {7000: 1}


def test_where_filters_before_top_k(db):
    collection = db.create_collection("f", dim=64, embedder=None)
    vectors = random_vectors(400, 64, 11)
    ids = collection.add(vectors=vectors, metadata=[{"group": i % 4, "name": f"n{i}"} for i in range(400)])
    oracle = Oracle(64, collection.ranges)
    oracle.set(ids, vectors)
    query = random_vectors(1, 64, 12)[0]
    allowed = {i for i, position in zip(ids, range(400)) if position % 4 == 2}
    for candidates in ("asymmetric", "hamming"):
        hits = collection.search(query, 30, where="json_extract(metadata, '$.group') = :group", params={"group": 2},
                                 candidates=candidates)
        assert len(hits) == 30 and all(h.metadata["group"] == 2 for h in hits)
        assert_matches(hits, oracle.search(query, 30, 10, candidates, "int8", allowed=allowed))
        assert collection.search(query, 5, where="id = :one", params={"one": ids[17]})[0].id == ids[17]
        assert collection.search(query, 5, where="0") == []
        assert len(collection.search(query, 500, where="1")) == 400


def test_reopen_from_disk_uses_stored_settings(tmp_path):
    path = tmp_path / "docs.db"
    with sqlitebin.connect(path) as db:
        collection, oracle = make(db, dim=100, n=CALIBRATION_ROWS + 10)
        query = random_vectors(1, 100, 1)[0]
        before = collection.search(query, 10)
        ranges = collection.ranges.copy()
        oracle._ranges = ranges
    with sqlitebin.connect(path) as db:
        assert db.collections() == ["c"]
        reopened = db.collection("c")
        np.testing.assert_array_equal(reopened.ranges, ranges)
        after = reopened.search(query, 10)
        assert [(h.id, h.score) for h in after] == [(h.id, h.score) for h in before]
        assert_matches(after, oracle.search(query, 10, 10, "asymmetric", "int8"))
        assert db.conn.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"


def test_texts_metadata_and_get(db):
    def embed(texts):
        return np.array([[len(t), t.count("a") + 1.0, 1.0, -1.0] for t in texts], dtype=np.float32)

    embed.name = "test-embedder"
    collection = db.create_collection("t", dim=4, embedder=embed)
    ids = collection.add(["banana", "kiwi", "apple pie"], metadata=[{"fruit": True}, None, {"n": [1, 2]}])
    hits = collection.get(ids)
    assert [h.text for h in hits] == ["banana", "kiwi", "apple pie"]
    assert [h.metadata for h in hits] == [{"fruit": True}, None, {"n": [1, 2]}]
    assert collection.search("banana", 1)[0].text == "banana"
    assert db.conn.execute('SELECT metadata FROM "t_documents" WHERE id = ?', (ids[2],)).fetchall()[0][0] == '{"n": [1, 2]}'
    reopened_without = db.collection("t")
    with pytest.raises(ValueError, match="has no embedder"):
        reopened_without.search("banana")
    assert db.collection("t", embedder=embed).search("kiwi", 1)[0].text == "kiwi"

    def other(texts):
        return embed(texts)

    with pytest.raises(ValueError, match="was built with embedder 'test-embedder'"):
        db.collection("t", embedder=other)


def test_collection_management(db):
    db.create_collection("a", dim=8, embedder=None)
    db.create_collection("b b; DROP TABLE x --\"'", dim=8, embedder=None, rescore="none")
    assert db.collections() == ["a", "b b; DROP TABLE x --\"'"]
    weird = db.collection("b b; DROP TABLE x --\"'")
    weird.add(vectors=random_vectors(5, 8))
    assert len(weird.search(random_vectors(1, 8)[0], 3)) == 3
    with pytest.raises(ValueError, match="already exists"):
        db.create_collection("a", dim=8, embedder=None)
    assert db.create_collection("a", dim=8, embedder=None, exists_ok=True).name == "a"
    db.drop_collection("b b; DROP TABLE x --\"'")
    assert db.collections() == ["a"]
    with pytest.raises(KeyError, match="no collection named 'zzz'"):
        db.collection("zzz")
    with pytest.raises(KeyError):
        db.drop_collection("zzz")


def test_bits_only_collection(db):
    collection, oracle = make(db, rescore="none", n=200)
    query = random_vectors(1, 64, 2)[0]
    assert_matches(collection.search(query, 10, rescore="bits"), oracle.search(query, 10, 10, "asymmetric", "bits"))
    with pytest.raises(ValueError, match="needs int8 vectors, but collection 'c' stores none"):
        collection.search(query, 10, rescore="int8")
    info = collection.info()
    assert info["index_bytes"] > 0 and info["bytes_per_document"] == round(info["index_bytes"] / 200, 1)


BAD_SEARCH = [
    (dict(k=0), ValueError, r"k must be from 1 to 100000, got 0"),
    (dict(k=-1), ValueError, r"k must be from 1 to 100000, got -1"),
    (dict(k=2.5), TypeError, r"k must be an integer, got 2.5"),
    (dict(k=True), TypeError, r"k must be an integer, got True"),
    (dict(oversample=0), ValueError, r"oversample must be from 1 to 1000, got 0"),
    (dict(rescore="int4"), ValueError, r"rescore must be one of 'int8', 'float32', 'bits', 'none', got 'int4'"),
    (dict(rescore="float32"), ValueError, r"rescore='float32' needs float32 vectors"),
    (dict(candidates="x"), ValueError, r"candidates must be one of"),
    (dict(where="1; DROP TABLE c_documents"), ValueError, r"where must be a single SQL condition without ';'"),
    (dict(where=""), ValueError, r"where must be a non-empty SQL condition"),
    (dict(params={"sqlitebin_k": 1}), ValueError, r"reserved"),
]


@pytest.mark.parametrize("options,error,message", BAD_SEARCH)
def test_search_rejects_bad_arguments(db, options, error, message):
    collection, _ = make(db, n=20)
    with pytest.raises(error, match=message):
        collection.search(random_vectors(1, 64)[0], **{"k": 5, **options})


def test_search_rejects_bad_queries(db):
    collection, _ = make(db, n=20)
    with pytest.raises(ValueError, match="vectors have dimension 32 but the collection has 64"):
        collection.search(np.ones(32, np.float32))
    with pytest.raises(ValueError, match=r"non-finite value \(nan\) at index 3"):
        collection.search(np.where(np.arange(64) == 3, np.nan, 1.0))
    with pytest.raises(ValueError, match="has no embedder"):
        collection.search("text query")
    with pytest.raises(apsw.SQLError, match="no such column: nope"):
        collection.search(np.ones(64), where="nope = 1")


def test_add_rejects_bad_input_before_writing(db):
    collection, _ = make(db, n=10)
    cases = [
        (dict(vectors=random_vectors(2, 64), ids=[1, 2]), ValueError, "id 1 already exists in collection 'c'; use upsert"),
        (dict(vectors=random_vectors(2, 64), ids=[50]), ValueError, "got 1 ids for 2 documents"),
        (dict(vectors=random_vectors(2, 64), ids=[50, 50]), ValueError, "ids must be unique"),
        (dict(vectors=random_vectors(2, 64), ids=["a", "b"]), TypeError, "ids must be integers; id 0 is 'a'"),
        (dict(vectors=random_vectors(1, 64), metadata=[{"x": object()}]), TypeError, "metadata 0 is not JSON-serializable"),
        (dict(vectors=random_vectors(1, 64), metadata=[{"x": float("nan")}]), TypeError, "metadata 0 is not JSON-serializable"),
        (dict(vectors=random_vectors(1, 64), metadata={"x": 1}), TypeError, "metadata must be a list"),
        (dict(vectors=np.full((1, 64), np.inf)), ValueError, "non-finite value"),
        (dict(vectors=random_vectors(1, 63)), ValueError, "dimension 63 but the collection has 64"),
        (dict(texts=["a"]), ValueError, "has no embedder"),
        (dict(texts="abc", vectors=random_vectors(1, 64)), TypeError, "not one string"),
        (dict(texts=["\ud800"], vectors=random_vectors(1, 64)), ValueError, "text 0 is not valid Unicode"),
        (dict(), ValueError, "give texts, vectors, or both"),
        (dict(vectors=random_vectors(1, 64), batch_size=0), ValueError, "batch_size must be from 1"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            collection.add(**options)
    assert len(collection) == 10


def test_batches_commit_one_by_one_and_progress_reports(db):
    collection = db.create_collection("p", dim=16, embedder=None)
    seen = []

    def progress(done, total):
        seen.append((done, total))
        if done == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collection.add(vectors=random_vectors(45, 16), batch_size=10, progress=progress)
    assert seen == [(10, 45), (20, 45)]
    assert len(collection) == 20  # both finished batches are committed
    assert db.conn.execute('SELECT count(*) FROM "p_index"').fetchall()[0][0] == 20


def test_create_collection_validates(db):
    with pytest.raises(ValueError, match="collection name must be 1 to 128 characters"):
        db.create_collection("", dim=8, embedder=None)
    with pytest.raises(TypeError, match="collection name must be a string"):
        db.create_collection(5, dim=8, embedder=None)
    with pytest.raises(ValueError, match="dim must be from 1 to 65536, got 0"):
        db.create_collection("x", dim=0, embedder=None)
    with pytest.raises(ValueError, match="rescore must be one of 'int8', 'float32', 'none'"):
        db.create_collection("x", dim=8, embedder=None, rescore="bits")
    with pytest.raises(ValueError, match="WordLlama gives 64, 128 or 256 dimensions, not 100"):
        db.create_collection("x", dim=100)


def test_connect_without_create(tmp_path):
    with pytest.raises(FileNotFoundError, match="no database at"):
        sqlitebin.connect(tmp_path / "missing.db", create=False)


def test_thresholds_are_used_for_codes(db):
    thresholds = np.linspace(-0.1, 0.1, 16).astype(np.float32)
    collection = db.create_collection("th", dim=16, embedder=None, thresholds=thresholds)
    vectors = random_vectors(50, 16)
    collection.add(vectors=vectors)
    reopened = db.collection("th")
    np.testing.assert_array_equal(reopened.thresholds, thresholds)
    oracle = Oracle(16, thresholds=thresholds)
    oracle.set(range(1, 51), vectors)
    for seed in range(5):
        query = random_vectors(1, 16, 3 + seed)[0]
        for candidates in ("hamming", "asymmetric"):
            assert_matches(reopened.search(query, 5, candidates=candidates, rescore="none"),
                           oracle.search(query, 5, 10, candidates, "none"))


def test_search_sql_is_what_search_runs(db):
    collection, _ = make(db, n=50)
    query = random_vectors(1, 64, 8)[0]
    sql = collection.search_sql(k=5, where="id > 3")
    assert "vector MATCH :sqlitebin_vector" in sql and "rowid IN (SELECT id FROM \"c_documents\" WHERE (id > 3))" in sql
    values = collection.search_params(collection.query_vector(query), k=5)
    rows = db.conn.execute(sql, values).fetchall()
    assert [r[0] for r in rows] == [h.id for h in collection.search(query, 5, where="id > 3")]
    assert "candidates = 'hamming'" in collection.search_sql(candidates="hamming")


def test_where_parameter_without_value(db):
    collection, _ = make(db, n=10)
    with pytest.raises(ValueError, match="where uses :wanted but params gives it no value"):
        collection.search(random_vectors(1, 64)[0], where="id = :wanted")


def test_opening_a_file_changes_nothing(tmp_path):
    import apsw as apsw_module

    path = tmp_path / "plain.db"
    plain = apsw_module.Connection(str(path))
    plain.execute("CREATE TABLE t(x)")
    plain.close()
    with sqlitebin.connect(path) as db:
        assert db.collections() == []
    check = apsw_module.Connection(str(path))
    assert check.execute("PRAGMA journal_mode").fetchall()[0][0] == "delete"
    assert [r[0] for r in check.execute("SELECT name FROM sqlite_master")] == ["t"]


def test_exists_ok_refuses_different_settings(db):
    db.create_collection("c", dim=64, embedder=None)
    with pytest.raises(ValueError, match="exists with dim=64, rescore='int8', not dim=256, rescore='int8'"):
        db.create_collection("c", dim=256, embedder=None, exists_ok=True)


def test_vacuum_after_deleting_half_shrinks_the_file(tmp_path):
    from sqlitebin.datasets import load_corpus, sample_corpus_path

    documents = load_corpus(sample_corpus_path())
    path = tmp_path / "vacuum.db"
    with sqlitebin.connect(path) as db:
        collection = db.create_collection("docs", dim=256)
        ids = collection.add([d["text"] for d in documents])
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        full = path.stat().st_size
        collection.delete(ids[::2])
        db.vacuum()
        assert path.stat().st_size <= 0.6 * full
        assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert collection.search(documents[1]["text"], 1)[0].id == ids[1]
        assert [h.id for h in collection.search(documents[1]["text"][:40], 1, mode="keyword")] == [ids[1]]


def test_search_sql_runs_unchanged_in_the_sqlite3_shell(tmp_path):
    """The printed statement, its parameters set with `.parameter set`, in the sqlite3 shell: no Python in that process."""
    import shutil
    import subprocess

    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("no sqlite3 shell on PATH")
    path = tmp_path / "shell.db"
    with sqlitebin.connect(path) as db:
        collection, _ = make(db, n=300)
        query = collection.query_vector(random_vectors(1, 64, 21)[0])
        where = "json_extract(coalesce(metadata, '{}'), '$.x') IS NULL AND id % 2 = 0"
        sql = collection.search_sql(k=7, oversample=5, candidates="hamming", where=where)
        expected = [(h.id, h.distance) for h in collection.search(query, 7, oversample=5, candidates="hamming",
                                                                      where=where)]
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    script = "\n".join([
        f".load {sqlitebin.loadable_path()} {sqlitebin.ENTRY_POINT}",
        f".parameter set :sqlitebin_vector X'{query.astype('<f4').tobytes().hex()}'",
        ".parameter set :sqlitebin_k 7",
        ".parameter set :sqlitebin_oversample 5",
        ".mode list",
        sql.replace("\n", " ") + ";",
    ])
    result = subprocess.run([shell, str(path)], input=script, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr, result.stderr
    rows = [line.split("|") for line in result.stdout.splitlines() if line]
    assert [(int(r[0]), int(r[2])) for r in rows] == expected


def test_chunk_size_is_checked_before_anything_is_created(db):
    for value, error, message in [(100, ValueError, "chunk_size must be a multiple of 64 from 64 to 65536, got 100"),
                                  (32, ValueError, "chunk_size must be from 64 to 65536, got 32"),
                                  (2.0, TypeError, "chunk_size must be an integer")]:
        with pytest.raises(error, match=message):
            db.create_collection("x", dim=8, embedder=None, chunk_size=value)
    assert db.collections() == []
