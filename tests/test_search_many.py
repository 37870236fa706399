"""Collection.search_many(): many queries in one statement, each answer exactly what search() gives."""

import numpy as np
import pytest

import sqlitebin
from sqlitebin.errors import InvalidArgument

DIM = 37  # not a multiple of 8


@pytest.fixture(scope="module")
def collection():
    db = sqlitebin.connect(":memory:")
    col = db.create_collection("v", dim=DIM, embedder=None, rescore="float32", chunk_size=1024)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((3000, DIM)).astype(np.float32)
    col.add(vectors=vectors, metadata=[{"group": i % 3} for i in range(len(vectors))])
    col.delete(list(range(100, 200)))  # deleted slots inside the chunks
    yield col, vectors
    db.close()


def hits(result):
    return [[(h.id, h.score, h.distance) for h in one] for one in result]


OPTIONS = [
    {}, {"k": 1}, {"k": 50, "oversample": 3}, {"rescore": "bits"}, {"rescore": "none"},
    {"candidates": "hamming"}, {"candidates": "hamming", "rescore": "none"},
    {"where": "json_extract(metadata, '$.group') = :group", "params": {"group": 1}},
]


@pytest.mark.parametrize("options", OPTIONS, ids=[str(o) for o in OPTIONS])
def test_identical_to_one_search_at_a_time(collection, options):
    col, _ = collection
    queries = np.random.default_rng(11).standard_normal((70, DIM)).astype(np.float32)  # more than one batch group
    assert hits(col.search_many(queries, **options)) == hits([col.search(q, **options) for q in queries])


def test_exact_top_k_against_numpy(collection):
    col, vectors = collection
    live = np.array([i for i in range(1, len(vectors) + 1) if not 100 <= i < 200])
    normalized = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = np.random.default_rng(12).standard_normal((20, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    # oversample large enough that every live row is a candidate: the float32 rescoring is then exact
    result = col.search_many(queries, k=10, oversample=300)
    for query, got in zip(queries, result):
        scores = normalized[live - 1] @ query
        order = np.lexsort((live, -scores))[:10]
        assert [h.id for h in got] == live[order].tolist()
        np.testing.assert_allclose([h.score for h in got], scores[order], rtol=1e-5, atol=1e-5)


def test_text_queries_in_every_mode():
    with sqlitebin.connect(":memory:") as db:
        col = db.create_collection("notes", dim=64)
        col.add(["SQLite is an embedded database engine.", "Debian is a free operating system.",
                 "Datasette publishes SQLite databases.", "The GPL is a free software license."])
        queries = ["embedded database", "free operating system", "publish data"]
        for mode in (None, "vector", "keyword", "hybrid"):
            assert hits(col.search_many(queries, k=2, mode=mode)) == hits(
                [col.search(q, k=2, mode=mode) for q in queries]), mode


def test_bad_queries_are_one_sentence(collection):
    col, _ = collection
    with pytest.raises(TypeError, match="not one string"):
        col.search_many("one query")
    with pytest.raises(ValueError, match="dimension 5 but the collection has 37"):
        col.search_many(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(InvalidArgument, match="k must be from 1"):
        col.search_many(np.zeros((2, DIM), dtype=np.float32), k=0)
    assert col.search_many(np.zeros((0, DIM), dtype=np.float32)) == []


@pytest.mark.parametrize("dim", [256, 100])
def test_batch_kernels_identical_to_one_at_a_time(dim):
    """Code lengths the batch kernels specialise (32 bytes: the register-blocked Hamming step, 6-bit groups of
    whole triples) and one they pad (13 bytes), with the default int8 rescoring; 45 queries are a group of 32
    and one of 13 (kernel groups of 8, 4 and 1); ties from repeated vectors; k above the number of rows."""
    with sqlitebin.connect(":memory:") as db:
        col = db.create_collection("v", dim=dim, embedder=None, chunk_size=512)
        rng = np.random.default_rng(dim)
        vectors = rng.standard_normal((1500, dim)).astype(np.float32)
        vectors[700:720] = vectors[3]
        col.add(vectors=vectors)
        queries = np.concatenate([rng.standard_normal((43, dim)).astype(np.float32), vectors[[3, 800]]])
        for options in ({}, {"k": 50, "oversample": 7}, {"candidates": "hamming"},
                        {"candidates": "hamming", "rescore": "none", "k": 2000}, {"rescore": "none", "k": 2000}):
            assert hits(col.search_many(queries, **options)) == hits([col.search(q, **options) for q in queries]), (
                options)
