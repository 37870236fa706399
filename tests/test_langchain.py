"""The LangChain vector store: LangChain's own standard test suite, then filters, MMR, scores and files."""

import json

import numpy as np
import pytest

pytest.importorskip("langchain_core")
langchain_tests = pytest.importorskip("langchain_tests.integration_tests.vectorstores")
pytest.importorskip("pytest_asyncio")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings  # noqa: E402

import sqlitebin  # noqa: E402
import sqlitebin.metadata_filter  # noqa: E402
from sqlitebin.langchain import SqlitebinVectorStore  # noqa: E402


class TestStandardSuite(langchain_tests.VectorStoreIntegrationTests):
    """LangChain's VectorStoreIntegrationTests, unmodified: sync and async, 6-dimensional fake embeddings."""

    @pytest.fixture()
    def vectorstore(self):
        store = SqlitebinVectorStore(self.get_embeddings())
        try:
            yield store
        finally:
            store.close()


class TestStandardSuiteInt8(TestStandardSuite):
    """The same suite on int8 rescoring vectors and a file database."""

    @pytest.fixture()
    def vectorstore(self, tmp_path):
        store = SqlitebinVectorStore(self.get_embeddings(), database=tmp_path / "lc.db", rescore="int8")
        try:
            yield store
        finally:
            store.close()


class KeywordEmbeddings(Embeddings):
    """Counts of a few words, so rankings can be checked by hand."""

    WORDS = ("sqlite", "python", "debian", "vector", "search", "fast", "small", "free", "array", "engine", "x")

    def embed_documents(self, texts):
        return [self.embed_query(text) for text in texts]

    def embed_query(self, text):
        words = text.lower().split()
        vector = [float(words.count(word)) for word in self.WORDS]
        vector[-1] += 0.01  # never all zeros
        return vector


@pytest.fixture()
def random_store():
    """A store over 300 random 11-dimensional vectors keyed by text, with NumPy's view of the same data."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(300, 11)).astype(np.float32)
    lookup = {f"doc {i}": vectors[i] for i in range(300)}

    class TableEmbeddings(Embeddings):
        def embed_documents(self, texts):
            return [lookup[text].tolist() for text in texts]

        def embed_query(self, text):
            return lookup[text].tolist()

    store = SqlitebinVectorStore(TableEmbeddings(), oversample=300)
    metadatas = [{"group": i % 3, "name": f"n{i}", "even": i % 2 == 0, "tags": ["all", f"t{i % 5}"]}
                 for i in range(300)]
    ids = store.add_texts(list(lookup), metadatas, ids=[f"key-{i}" for i in range(300)])
    assert ids == [f"key-{i}" for i in range(300)]
    yield store, vectors, metadatas
    store.close()


def brute_force(vectors, query, allowed, k):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ (query / np.linalg.norm(query))
    order = [i for i in np.argsort(-scores, kind="stable") if allowed[i]]
    return order[:k], scores


@pytest.mark.parametrize("filter, predicate", [
    (None, lambda m: True),
    ({"group": 1}, lambda m: m["group"] == 1),
    ({"group": {"$ne": 1}}, lambda m: m["group"] != 1),
    ({"group": {"$in": [0, 2]}, "even": True}, lambda m: m["group"] in (0, 2) and m["even"]),
    ({"$or": [{"group": 0}, {"name": "n7"}]}, lambda m: m["group"] == 0 or m["name"] == "n7"),
    ({"$not": {"group": {"$gte": 1}}}, lambda m: not m["group"] >= 1),
    ({"tags": {"$contains": "t3"}}, lambda m: "t3" in m["tags"]),
    ({"name": {"$like": "n1%"}, "group": {"$lt": 2}}, lambda m: m["name"].startswith("n1") and m["group"] < 2),
    ({"missing": {"$exists": False}, "group": {"$nin": [1]}}, lambda m: m["group"] != 1),
])
def test_filtered_search_matches_numpy(random_store, filter, predicate):
    store, vectors, metadatas = random_store
    allowed = [predicate(m) for m in metadatas]
    for query_index in (0, 5, 123):
        results = store.similarity_search_with_score(f"doc {query_index}", k=10, filter=filter)
        expected, scores = brute_force(vectors, vectors[query_index], allowed, 10)
        assert [document.id for document, _ in results] == [f"key-{i}" for i in expected]
        np.testing.assert_allclose([score for _, score in results], scores[expected], atol=1e-5)
        assert all(predicate(document.metadata) for document, _ in results)


def test_filter_is_pushed_into_the_search_not_applied_after(random_store):
    """A filter matching 3 of 300 documents still gives all 3, even with k x oversample far below 300."""
    store, vectors, metadatas = random_store
    filter = {"name": {"$in": ["n10", "n200", "n299"]}}
    results = store.similarity_search("doc 0", k=3, filter=filter, oversample=1)
    assert sorted(document.metadata["name"] for document in results) == ["n10", "n200", "n299"]
    sql, _ = sqlitebin.metadata_filter.where_from_filter("test", filter)
    assert "json_extract(metadata" in sql


def test_bad_filters_are_one_sentence(random_store):
    store, _, _ = random_store
    with pytest.raises(ValueError, match=r"unknown filter operator '\$regex' on 'name'"):
        store.similarity_search("doc 0", filter={"name": {"$regex": "x"}})
    with pytest.raises(ValueError, match=r"\$in on 'group' needs a list of values"):
        store.similarity_search("doc 0", filter={"group": {"$in": 1}})
    with pytest.raises(ValueError, match=r"\$eq on 'group' needs a string or a number, a boolean or None, got list"):
        store.similarity_search("doc 0", filter={"group": [1, 2]})
    with pytest.raises(ValueError, match="a filter must be a dict"):
        store.similarity_search("doc 0", filter=lambda document: True)


def test_relevance_scores_and_retriever():
    store = SqlitebinVectorStore.from_texts(
        ["sqlite small fast engine", "python array", "debian free"], KeywordEmbeddings(),
        metadatas=[{"kind": "db"}, {"kind": "python"}, {"kind": "os"}], ids=["a", "b", "c"])
    scored = store.similarity_search_with_relevance_scores("sqlite engine", k=3)
    assert [document.id for document, _ in scored][0] == "a"
    assert all(0.0 <= score <= 1.0 for _, score in scored)
    cosine = dict((d.id, s) for d, s in store.similarity_search_with_score("sqlite engine", k=3))
    assert scored[0][1] == pytest.approx((1 + cosine["a"]) / 2)
    retriever = store.as_retriever(search_kwargs={"k": 1, "filter": {"kind": "os"}})
    assert [document.id for document in retriever.invoke("sqlite engine")] == ["c"]
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 3})
    assert len(mmr.invoke("sqlite")) == 2


def test_max_marginal_relevance_matches_langchain_reference():
    texts = ["sqlite fast", "sqlite fast engine", "sqlite fast small", "python array", "debian free", "vector search"]
    store = SqlitebinVectorStore.from_texts(texts, KeywordEmbeddings())
    embeddings = KeywordEmbeddings()
    from langchain_core.vectorstores.utils import maximal_marginal_relevance

    query = embeddings.embed_query("sqlite fast")
    candidates = store.similarity_search_by_vector(query, k=5)
    expected = maximal_marginal_relevance(np.array(query), embeddings.embed_documents([d.page_content for d in candidates]),
                                          lambda_mult=0.3, k=3)
    chosen = store.max_marginal_relevance_search("sqlite fast", k=3, fetch_k=5, lambda_mult=0.3)
    assert [d.page_content for d in chosen] == [candidates[i].page_content for i in expected]
    # Pure relevance gives the plain search order; strong diversity leaves the near-duplicates out.
    assert [d.page_content for d in store.max_marginal_relevance_search("sqlite fast", k=3, fetch_k=5, lambda_mult=1.0)] \
        == [d.page_content for d in candidates[:3]]
    diverse = [d.page_content for d in store.max_marginal_relevance_search("sqlite fast", k=2, fetch_k=6, lambda_mult=0.1)]
    assert diverse[0] == "sqlite fast" and not diverse[1].startswith("sqlite")
    assert store.max_marginal_relevance_search("sqlite", k=2, filter={"missing": 1}) == []
    with pytest.raises(ValueError, match="lambda_mult must be a number from 0 to 1"):
        store.max_marginal_relevance_search("sqlite", lambda_mult=2)


def test_ids_survive_reopening_and_the_collection_stays_plain(tmp_path):
    path = tmp_path / "store.db"
    store = SqlitebinVectorStore(KeywordEmbeddings(), database=path, collection_name="notes")
    store.add_documents([Document(page_content="sqlite engine", metadata={"kind": "db"}, id="doc-a"),
                         Document(page_content="python array", metadata={"kind": "python"})])
    store.close()

    store = SqlitebinVectorStore(KeywordEmbeddings(), database=path, collection_name="notes")
    assert store.get_by_ids(["doc-a"]) == [Document(id="doc-a", page_content="sqlite engine", metadata={"kind": "db"})]
    assert store.similarity_search("sqlite", k=1)[0].id == "doc-a"
    # The documents table holds exactly the caller's metadata; the key lives beside it.
    conn = store.database.conn
    assert [json.loads(row[0]) for row in conn.execute("SELECT metadata FROM notes_documents ORDER BY id")] == [
        {"kind": "db"}, {"kind": "python"}]
    assert conn.execute("SELECT key FROM sqlitebin_keys WHERE collection = 'notes' AND id = 1").fetchall() == [("doc-a",)]
    # Deleting through the plain Collection API removes the key too.
    store.collection.delete([1])
    assert store.get_by_ids(["doc-a"]) == []
    assert conn.execute("SELECT count(*) FROM sqlitebin_keys WHERE key = 'doc-a'").fetchall() == [(0,)]
    store.delete()
    assert len(store.collection) == 0
    store.close()


def test_keys_of_a_dropped_collection_do_not_leak_into_a_new_one():
    database = sqlitebin.connect()
    store = SqlitebinVectorStore(KeywordEmbeddings(), database=database)
    store.add_texts(["sqlite"], ids=["old"])
    database.drop_collection("langchain")
    store = SqlitebinVectorStore(KeywordEmbeddings(), database=database)
    store.add_texts(["python"], ids=["new"])
    assert store.get_by_ids(["old"]) == []
    assert [d.page_content for d in store.get_by_ids(["new"])] == ["python"]


@pytest.mark.parametrize("dim", [1, 3, 6, 9, 17, 64, 300])
def test_any_dimension(dim):
    store = SqlitebinVectorStore(DeterministicFakeEmbedding(size=dim))
    texts = [f"text {i}" for i in range(40)]
    store.add_texts(texts, ids=texts)
    assert store.collection.dim == dim
    # An exact copy of a stored text is its own nearest neighbour (cosine 1; in one dimension every
    # vector is +1 or -1, so half the texts tie with it).
    for text in texts[::7]:
        document, score = store.similarity_search_with_score(text, k=1)[0]
        assert score == pytest.approx(1.0, abs=1e-5)
        assert document.id == text or dim == 1


def test_bad_input_writes_nothing():
    store = SqlitebinVectorStore(KeywordEmbeddings())
    store.add_texts(["sqlite"], ids=["a"])
    with pytest.raises(ValueError, match="SqlitebinVectorStore: id 'b' appears twice in one call"):
        store.add_texts(["x", "y"], ids=["b", "b"])
    with pytest.raises(TypeError, match="SqlitebinVectorStore: ids must be strings, id 0 is 5"):
        store.add_texts(["x"], ids=[5])
    with pytest.raises(TypeError, match="metadata 0 is not JSON-serializable"):
        store.add_texts(["x", "y"], [{"a": object()}, {}], ids=["c", "a"])
    with pytest.raises(ValueError, match="SqlitebinVectorStore: id 0 is not valid Unicode"):
        store.add_texts(["x"], ids=["\udcff"])
    assert len(store.collection) == 1 and store.get_by_ids(["a"])[0].page_content == "sqlite"
    with pytest.raises(TypeError, match="embedding must be a LangChain Embeddings"):
        SqlitebinVectorStore(lambda texts: texts)
    with pytest.raises(ValueError, match="rescore must be one of"):
        SqlitebinVectorStore(KeywordEmbeddings(), rescore="bits")


def test_sqlitebin_embeddings_make_a_collection_plain_sqlitebin_can_search(tmp_path):
    """With sqlitebin's own embedder the collection records it by name: the Python API and the command line
    reopen it with that embedder, and it keeps a keyword index for hybrid search."""
    from click.testing import CliRunner

    from sqlitebin.cli import main
    from sqlitebin.langchain import SqlitebinEmbeddings

    path = tmp_path / "lc.db"
    store = SqlitebinVectorStore(SqlitebinEmbeddings("wordllama-64"), database=path)
    store.add_texts(["SQLite is an embedded database engine.", "Debian is a free operating system."],
                    ids=["sqlite", "debian"])
    expected = store.similarity_search_with_score("free software", k=2)
    store.close()
    with sqlitebin.connect(path) as db:
        col = db.collection("langchain")
        assert (col.embedder_name, col.dim) == ("wordllama-l2_supercat", 64)
        hits = col.search("free software", k=2, mode="vector")
        assert [h.text for h in hits] == [d.page_content for d, _ in expected]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-6)
        assert col.search("embedded", k=1, mode="keyword")[0].text.startswith("SQLite")
    result = CliRunner().invoke(main, ["search", str(path), "free software", "--collection", "langchain", "--json"])
    assert result.exit_code == 0 and json.loads(result.output.splitlines()[0])["text"].startswith("Debian")
    # Reopening the store with the same embeddings works; with other embeddings it says which were used.
    SqlitebinVectorStore(SqlitebinEmbeddings("wordllama-64"), database=path).close()
    with pytest.raises(ValueError, match="was built with embedder 'wordllama-l2_supercat'"):
        SqlitebinVectorStore(KeywordEmbeddings(), database=path)


def test_a_failed_first_write_leaves_no_collection():
    database = sqlitebin.connect()
    store = SqlitebinVectorStore(KeywordEmbeddings(), database=database)
    with pytest.raises(TypeError, match="metadata 0 is not JSON-serializable"):
        store.add_texts(["sqlite"], [{"a": object()}])
    assert database.collections() == [] and store.collection is None
    assert store.add_texts(["sqlite"], ids=["a"]) == ["a"] and len(store.collection) == 1


def test_langchain_indexing_api_keeps_the_store_in_step():
    """LangChain's own indexing API (record manager, incremental and full cleanup) drives the store's ids."""
    from langchain_core.indexing import InMemoryRecordManager, index

    store = SqlitebinVectorStore(KeywordEmbeddings())
    manager = InMemoryRecordManager(namespace="test")
    manager.create_schema()
    docs = [Document(page_content="sqlite engine", metadata={"source": "a"}),
            Document(page_content="python array", metadata={"source": "b"})]
    assert index(docs, manager, store, cleanup="full", source_id_key="source", key_encoder="sha256") == {
        "num_added": 2, "num_updated": 0, "num_skipped": 0, "num_deleted": 0}
    assert index(docs, manager, store, cleanup="full", source_id_key="source", key_encoder="sha256")["num_skipped"] == 2
    changed = [Document(page_content="sqlite small engine", metadata={"source": "a"})]
    assert index(changed, manager, store, cleanup="full", source_id_key="source", key_encoder="sha256") == {
        "num_added": 1, "num_updated": 0, "num_skipped": 0, "num_deleted": 2}
    assert [d.page_content for d in store.similarity_search("sqlite", k=5)] == ["sqlite small engine"]
    assert len(store.collection) == 1
