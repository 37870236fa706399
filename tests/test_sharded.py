"""ShardedCollection on a Dask LocalCluster of three worker processes.

Oracles: one single-file Collection given the same calls (hits, scores, distances and order must be
identical, scores to the last bit), and NumPy brute force (with k x oversample covering every
document the two-stage search is exact cosine top-k). A worker killed with SIGKILL while a search
waits on it makes the scheduler rerun the shard's task elsewhere (same answer), or, with retries
disabled, a ShardUnavailableError naming the shard: never part of an answer.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

import sqlitebin  # noqa: E402
from sqlitebin.sharded import ShardedCollection, ShardUnavailableError, shard_path  # noqa: E402

DIM = 64
TEXTS = [
    "SQLite is a small, fast, self-contained SQL database engine.",
    "NumPy is the fundamental package for array computing with Python.",
    "The Debian project produces a free operating system.",
    "Dask scales Python code from laptops to clusters.",
    "Raft is a consensus algorithm for managing a replicated log.",
    "A binary code keeps one bit per embedding dimension.",
    "Hamming distance counts the bits that differ between two codes.",
    "PostgreSQL is an object-relational database system.",
    "The Linux kernel schedules processes across CPU cores.",
    "Rescoring re-ranks candidates with richer stored vectors.",
    "Word embeddings map words to dense vectors.",
    "A virtual table exposes custom storage through SQL.",
]


def start_cluster(**config):
    with dask.config.set({"distributed.scheduler.work-stealing": False, **config}):
        cluster = distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=40)
        client = distributed.Client(cluster)
    return cluster, client


@pytest.fixture(scope="module")
def client():
    cluster, client = start_cluster()
    yield client
    client.close()
    cluster.close()


def random_vectors(rng, n, dim=DIM):
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors[:, :8] += 0.5  # some structure, so candidates and rescoring disagree now and then
    return vectors


def hits_tuple(hits):
    return [(h.id, h.score, h.distance, h.text, h.metadata) for h in hits]


def single_collection(dim=DIM, **options):
    db = sqlitebin.connect(":memory:")
    return db.create_collection("single", dim=dim, **options)


def test_vectors_match_one_collection_exactly(client, tmp_path):
    rng = np.random.default_rng(1)
    first, second = random_vectors(rng, 2500), random_vectors(rng, 1500)
    second_ids = rng.choice(np.arange(10_000, 100_000), size=len(second), replace=False).tolist()
    metadata = [{"n": i} for i in range(len(first))]

    sharded = ShardedCollection.create(client, tmp_path, "docs", shards=3, dim=DIM, embedder=None)
    single = single_collection(embedder=None)
    for col in (sharded, single):
        assert col.add(vectors=first, metadata=metadata, batch_size=700) == list(range(1, 2501))
        assert col.add(vectors=second, ids=second_ids, batch_size=700) == second_ids
    assert len(sharded) == len(single) == 4000
    np.testing.assert_array_equal(sharded.ranges, single.ranges)
    counts = sharded.info()["documents_per_shard"]
    assert sum(counts) == 4000 and min(counts) > 1000  # ids spread over the shards

    queries = random_vectors(rng, 12)
    for options in [
        dict(k=10),
        dict(k=5, oversample=3),
        dict(k=20, oversample=2, rescore="bits"),
        dict(k=7, rescore="none"),
        dict(k=10, candidates="hamming", oversample=4),
        dict(k=10, where="id % 7 = :r", params={"r": 3}),
    ]:
        many = sharded.search_many(queries, **options)
        for query, hits in zip(queries, many):
            expected = single.search(query, **options)
            assert hits_tuple(hits) == hits_tuple(expected), options
    assert hits_tuple(sharded.search(queries[0], k=3)) == hits_tuple(single.search(queries[0], k=3))

    # get, delete, len, reopen
    wanted = [second_ids[0], 5, 999_999, 1]
    assert hits_tuple(sharded.get(wanted)) == hits_tuple(single.get(wanted))
    gone = [1, 2, 3, second_ids[5], 777_777]
    assert sharded.delete(gone) == single.delete(gone) == 4
    reopened = ShardedCollection.open(client, tmp_path, "docs")
    assert len(reopened) == 3996
    for query in queries[:4]:
        assert hits_tuple(reopened.search(query, k=10)) == hits_tuple(single.search(query, k=10))
    # Every shard file is an ordinary collection.
    with sqlitebin.connect(str(shard_path(tmp_path, "docs", 2, 3))) as db:
        assert len(db.collection("docs")) == counts[2] - sum(1 for i in gone[:4] if i % 3 == 2)


def test_calibration_reached_over_several_adds(client, tmp_path):
    # Below 4096 rows an int8 index keeps float32 rows; the add that reaches 4096 calibrates from the
    # rows present (deleted ones excluded) and the first rows of the add: the shards follow that rule.
    rng = np.random.default_rng(4)
    first, second, third = random_vectors(rng, 300), random_vectors(rng, 500), random_vectors(rng, 3500)
    sharded = ShardedCollection.create(client, tmp_path, "steps", shards=3, dim=DIM, embedder=None)
    single = single_collection(embedder=None)
    queries = random_vectors(rng, 6)
    for col in (sharded, single):
        col.add(vectors=first)
        col.delete([5, 6, 7, 200])
        col.add(vectors=second, batch_size=128)
    assert sharded.ranges is None and single.ranges is None
    for query in queries:
        assert hits_tuple(sharded.search(query, k=10)) == hits_tuple(single.search(query, k=10))
    for col in (sharded, single):
        col.add(vectors=third, batch_size=300)
    assert single.ranges is not None
    np.testing.assert_array_equal(sharded.ranges, single.ranges)
    for query in queries:
        for options in (dict(k=10), dict(k=25, oversample=2), dict(k=5, rescore="bits")):
            assert hits_tuple(sharded.search(query, **options)) == hits_tuple(single.search(query, **options))
    assert len(sharded) == len(single) == 4296


def test_numpy_oracle_exact_top_k(client, tmp_path):
    rng = np.random.default_rng(2)
    vectors = random_vectors(rng, 600)
    sharded = ShardedCollection.create(client, tmp_path, "exact", shards=4, dim=DIM, embedder=None, rescore="float32")
    ids = sharded.add(vectors=vectors)
    normalized = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = random_vectors(rng, 10)
    # k x oversample >= documents: every document is rescored, so the result is exact cosine top-k.
    for query, hits in zip(queries, sharded.search_many(queries, k=10, oversample=60)):
        q = query / np.linalg.norm(query)
        scores = normalized.astype(np.float64) @ q.astype(np.float64)
        order = np.lexsort((np.asarray(ids), -scores))[:10]
        assert [h.id for h in hits] == [ids[i] for i in order]
        np.testing.assert_allclose([h.score for h in hits], scores[order], rtol=1e-5, atol=1e-6)
        code = np.packbits(q > 0)
        distances = [int(np.unpackbits(np.packbits(normalized[i] > 0) ^ code).sum()) for i in order]
        assert [h.distance for h in hits] == distances


def test_texts_embedded_on_workers(client, tmp_path):
    sharded = ShardedCollection.create(client, tmp_path, "notes", shards=3, dim=64, embedder="wordllama")
    single = single_collection(dim=64)
    metadata = [{"i": i} for i in range(len(TEXTS))]
    assert sharded.add(TEXTS, metadata=metadata) == single.add(TEXTS, metadata=metadata)
    assert len(sharded) == len(TEXTS)
    for query in ["embedded database", "consensus and replication", "bits of a code"]:
        # Shards search by vector (BM25 would depend on each shard's own statistics).
        assert hits_tuple(sharded.search(query, k=4)) == hits_tuple(single.search(query, k=4, mode="vector"))
    assert hits_tuple(sharded.search_many(["operating system"], k=2)[0]) == hits_tuple(
        single.search("operating system", k=2, mode="vector"))
    reopened = ShardedCollection.open(client, tmp_path, "notes")
    assert reopened.search("Python arrays", k=1)[0].text == TEXTS[1]


def test_bad_input_writes_nothing(client, tmp_path):
    sharded = ShardedCollection.create(client, tmp_path, "bad", shards=2, dim=8, embedder=None)
    sharded.add(vectors=np.eye(8, dtype=np.float32), ids=list(range(10, 18)))
    with pytest.raises(ValueError, match="id 13 already exists in collection 'bad'"):
        sharded.add(vectors=np.ones((3, 8), dtype=np.float32), ids=[100, 13, 101])
    with pytest.raises(ValueError, match="must have 8 columns|8"):
        sharded.add(vectors=np.ones((2, 7), dtype=np.float32))
    with pytest.raises(ValueError, match="ids must be unique"):
        sharded.add(vectors=np.ones((2, 8), dtype=np.float32), ids=[1, 1])
    with pytest.raises(ValueError, match="has no embedder"):
        sharded.add(["text"])
    assert len(sharded) == 8
    with pytest.raises(ValueError, match="k must be from 1 to"):
        sharded.search(np.ones(8), k=0)
    with pytest.raises(ValueError, match="rescore='float32' needs float32 vectors"):
        sharded.search(np.ones(8), rescore="float32")
    with pytest.raises(ValueError, match="already exists"):
        ShardedCollection.create(client, tmp_path, "bad", shards=2, dim=8, embedder=None)
    with pytest.raises(ValueError, match="no sharded collection 'missing'"):
        ShardedCollection.open(client, tmp_path, "missing")
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client"):
        ShardedCollection.create("localhost", tmp_path, "x", shards=2, dim=8)


def kill_worker_during_search(client, sharded, query):
    """Block shard 0's home worker with a sleeping task, search, SIGKILL that worker while the search waits."""
    home = sharded.home_workers()[0]
    pid = client.run(os.getpid, workers=[home])[home]
    blocker = client.submit(time.sleep, 30, workers=[home], allow_other_workers=False, pure=False)
    outcome = {}

    def search():
        try:
            outcome["hits"] = sharded.search(query, k=10)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome["error"] = error

    thread = threading.Thread(target=search)
    thread.start()
    time.sleep(1.5)
    assert thread.is_alive(), "the search finished before the worker was killed"
    os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert not thread.is_alive()
    blocker.release()
    return outcome


def prepared(client, directory):
    rng = np.random.default_rng(3)
    vectors = random_vectors(rng, 900)
    sharded = ShardedCollection.create(client, directory, "kill", shards=3, dim=DIM, embedder=None)
    sharded.add(vectors=vectors)
    single = single_collection(embedder=None)
    single.add(vectors=vectors)
    return sharded, single, random_vectors(rng, 1)[0]


@pytest.mark.slow
def test_worker_killed_during_search_is_retried(tmp_path):
    cluster, client = start_cluster()
    try:
        sharded, single, query = prepared(client, tmp_path)
        outcome = kill_worker_during_search(client, sharded, query)
        assert "error" not in outcome, outcome.get("error")
        assert hits_tuple(outcome["hits"]) == hits_tuple(single.search(query, k=10))
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
def test_worker_killed_during_search_without_retries_is_a_clear_error(tmp_path):
    cluster, client = start_cluster(**{"distributed.scheduler.allowed-failures": 0})
    try:
        sharded, _, query = prepared(client, tmp_path)
        outcome = kill_worker_during_search(client, sharded, query)
        assert "hits" not in outcome
        error = outcome["error"]
        assert isinstance(error, ShardUnavailableError)
        assert "ShardedCollection.search(): shard 0" in str(error) and "KilledWorker" in str(error)
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
def test_readme_sharded_example_runs(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    readme = Path(__file__).resolve().parent.parent / "README.md"
    [block] = re.findall(r"```py\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    try:
        exec(compile(block, str(readme), "exec"), namespace)
    finally:
        if "client" in namespace:
            cluster = namespace["client"].cluster
            namespace["client"].close()
            cluster.close()
    assert capsys.readouterr().out.splitlines() == ["1", "2 [1, 2] 1"]


def test_empty_shards_answer_nothing(client, tmp_path):
    sharded = ShardedCollection.create(client, tmp_path, "sparse", shards=4, dim=8, embedder=None)
    assert sharded.search(np.ones(8), k=3) == []
    sharded.add(vectors=np.eye(8, dtype=np.float32)[:2], ids=[4, 8])  # both on shard 0
    assert [h.id for h in sharded.search(np.eye(8)[1], k=3)] == [8, 4]
