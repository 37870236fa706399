"""End to end on real text: the bundled Debian sample with WordLlama, against exact NumPy search."""

import numpy as np
import pytest

import sqlitebin
from sqlitebin.datasets import load_corpus, load_queries, sample_corpus_path, sample_queries_path
from sqlitebin.embedding import WordLlamaEmbedder


def ndcg(ranked, relevant):
    return next((1 / np.log2(rank + 2) for rank, doc in enumerate(ranked[:10]) if doc == relevant), 0.0)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    documents = load_corpus(sample_corpus_path())
    queries = load_queries(sample_queries_path())
    path = tmp_path_factory.mktemp("debian") / "debian.db"
    db = sqlitebin.connect(path)
    collection = db.create_collection("debian", dim=256)
    ids = collection.add([d["text"] for d in documents], metadata=[{"package": d["title"]} for d in documents])
    yield db, collection, documents, queries, ids
    db.close()


def test_vector_search_keeps_the_quality_of_exact_search(indexed):
    _, collection, documents, queries, ids = indexed
    # The oracle: the same embedder, exact float32 cosine with NumPy.
    embed = WordLlamaEmbedder(256)
    doc_vectors = embed([d["text"] for d in documents])
    query_vectors = embed([q["text"] for q in queries])
    id_of = {d["id"]: i for d, i in zip(documents, ids)}
    exact_ndcg, found_ndcg, recall = [], [], []
    for query, vector in zip(queries, query_vectors):
        exact = [ids[i] for i in np.argsort(-(doc_vectors @ vector), kind="stable")[:10]]
        found = [hit.id for hit in collection.search(query["text"], 10, mode="vector")]
        exact_ndcg.append(ndcg(exact, id_of[query["doc"]]))
        found_ndcg.append(ndcg(found, id_of[query["doc"]]))
        recall.append(len(set(exact) & set(found)) / 10)
    assert np.mean(exact_ndcg) > 0.7
    assert np.mean(found_ndcg) >= 0.97 * np.mean(exact_ndcg)
    assert np.mean(recall) >= 0.9


def test_every_mode_finds_packages_by_their_synopsis(indexed):
    _, collection, documents, queries, ids = indexed
    id_of = {d["id"]: i for d, i in zip(documents, ids)}
    for mode in ("vector", "keyword", "hybrid"):
        top1 = np.mean([collection.search(q["text"], 1, mode=mode)[0].id == id_of[q["doc"]] for q in queries[:100]])
        assert top1 > 0.5, mode


def test_reopened_file_answers_the_same(indexed):
    db, collection, _, queries, _ = indexed
    again = sqlitebin.connect(db.path).collection("debian")
    for query in queries[:20]:
        assert [(h.id, h.score) for h in again.search(query["text"], 5)] == [
            (h.id, h.score) for h in collection.search(query["text"], 5)]
    assert again.search(queries[0]["text"], 1, where="json_extract(metadata, '$.package') LIKE 'lib%'")[0].metadata[
        "package"].startswith("lib")
