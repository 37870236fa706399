"""Keyword and hybrid search: fusion by hand, hostile FTS5 input, the text index kept in step."""

import numpy as np
import pytest

import sqlitebin

TEXTS = [
    "sqlite database engine in a small library",
    "python bindings for the sqlite database",
    "a fast vector search library",
    "gardening tools and seeds",
    "database backups with compression",
]


def embed(texts):
    """A tiny deterministic embedder: counts of a few words."""
    words = ["sqlite", "database", "python", "vector", "search", "library", "garden", "seeds"]
    return np.array([[t.count(w) + 0.01 * (i + 1) for i, w in enumerate(words)] for t in texts], dtype=np.float32)


embed.name = "tests.word-counts"


@pytest.fixture
def collection():
    db = sqlitebin.connect(":memory:")
    col = db.create_collection("h", dim=8, embedder=embed, rescore="float32")
    col.add(TEXTS, ids=[1, 2, 3, 4, 5])
    yield col
    db.close()


def test_keyword_mode_is_bm25(collection):
    conn = collection.conn
    expected = conn.execute(
        'SELECT rowid, -bm25("h_fts") FROM "h_fts" WHERE "h_fts" MATCH \'"database" OR "sqlite"\' ORDER BY bm25("h_fts")'
    ).fetchall()
    hits = collection.search("database sqlite", 10, mode="keyword")
    assert [(h.id, pytest.approx(h.score)) for h in hits] == [(i, pytest.approx(s)) for i, s in expected]
    assert {h.id for h in hits} == {1, 2, 5}


def test_hybrid_fusion_by_hand(collection):
    query = "sqlite library"
    conn = collection.conn
    bm25 = dict(conn.execute(
        'SELECT rowid, bm25("h_fts") FROM "h_fts" WHERE "h_fts" MATCH \'"sqlite" OR "library"\'').fetchall())
    vectors = embed(TEXTS)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    q = embed([query])[0]
    q /= np.linalg.norm(q)
    cosine = {i + 1: float(vectors[i] @ q) for i in range(5)}
    best = min(bm25.values())
    # Every document is in the vector top 20 here, so all five are fused.
    expected = {i: (bm25[i] / best if i in bm25 else 0.0) + 0.6 * cosine[i] for i in range(1, 6)}
    hits = collection.search(query, 5, mode="hybrid")
    assert [h.id for h in hits] == sorted(expected, key=lambda i: (-expected[i], i))
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.id], rel=1e-5)
    # vector_weight moves the balance: at 0 the keyword order wins, documents without keywords last.
    keyword_only = collection.search(query, 5, mode="hybrid", vector_weight=0.0)
    assert [h.id for h in keyword_only][: len(bm25)] == sorted(bm25, key=lambda i: (bm25[i], i))


def test_hybrid_falls_back_to_vectors_without_keywords(collection):
    # No words at all, or words no document has: FTS5 finds nothing and the vectors alone rank.
    assert collection.search("!!! ???", 3, mode="keyword") == []
    assert len(collection.search("!!! ???", 3, mode="hybrid")) == 3
    hybrid = collection.search("zzzunknownword", 3, mode="hybrid")
    vector = collection.search("zzzunknownword", 3, mode="vector")
    assert [h.id for h in hybrid] == [h.id for h in vector]
    assert [h.score for h in hybrid] == pytest.approx([0.6 * h.score for h in vector])


HOSTILE = ['"', "'", '""', "a AND", "OR", "NEAR(sqlite database)", "sqlite*", "*", "NOT database", "(", ")",
           "col:val", "^sqlite", "h_fts:sqlite", "sqlite + database - python", "'; DROP TABLE h_documents; --",
           "日本語 テキスト", "naïve café", "C++ and C#", "\\", "{sqlite}", "a\"b\"c", "sqlite NEAR/2 database"]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_never_break_fts5(collection, query):
    for mode in ("keyword", "hybrid"):
        hits = collection.search(query, 5, mode=mode)
        assert all(isinstance(h.id, int) for h in hits)
    assert len(collection) == 5


def test_text_index_in_step_after_delete_upsert_and_reopen(tmp_path):
    path = tmp_path / "fts.db"
    with sqlitebin.connect(path) as db:
        col = db.create_collection("h", dim=8, embedder=embed)
        col.add(TEXTS, ids=[1, 2, 3, 4, 5])
        col.delete([4])
        assert col.search("gardening", 5, mode="keyword") == []
        col.upsert(["orchids and tulips"], ids=[3])
        assert [h.id for h in col.search("tulips", 5, mode="keyword")] == [3]
        assert col.search("vector", 5, mode="keyword") == []
        # Plain SQL writes go through the same triggers.
        db.conn.execute('UPDATE "h_documents" SET text = \'rosebushes\' WHERE id = 5')
        db.conn.execute('DELETE FROM "h_documents" WHERE id = 1')
    with sqlitebin.connect(path) as db:
        col = db.collection("h", embedder=embed)
        assert [h.id for h in col.search("rosebushes", 5, mode="keyword")] == [5]
        assert [h.id for h in col.search("sqlite", 5, mode="keyword")] == [2]
        db.conn.execute("INSERT INTO \"h_fts\"(\"h_fts\") VALUES ('integrity-check')")  # raises if out of step
        assert [h.id for h in col.search("tulips rosebushes", 5, mode="hybrid")][:2] in ([3, 5], [5, 3])


def test_where_applies_to_keyword_and_hybrid(collection):
    hits = collection.search("database", 5, mode="keyword", where="id != 1")
    assert {h.id for h in hits} == {2, 5}
    assert all(h.id != 1 for h in collection.search("database", 5, mode="hybrid", where="id != 1"))


def test_mode_errors(collection):
    with pytest.raises(ValueError, match="mode must be one of 'vector', 'keyword', 'hybrid', got 'bm25'"):
        collection.search("x", mode="bm25")
    with pytest.raises(TypeError, match="mode='keyword' needs a text query"):
        collection.search(np.ones(8), mode="keyword")
    with pytest.raises(ValueError, match="vector_weight must be a number from 0 to 100"):
        collection.search("x", mode="hybrid", vector_weight=-1)
    db = collection.database
    vectors_only = db.create_collection("v", dim=8, embedder=None)
    with pytest.raises(ValueError, match="mode='hybrid' needs a text index"):
        vectors_only.search(np.ones(8), mode="hybrid")
