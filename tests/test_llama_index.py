"""The LlamaIndex vector store in real VectorStoreIndex pipelines: add, query with filters, delete by document."""

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, MockEmbedding, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.embeddings import BaseEmbedding  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

import sqlitebin  # noqa: E402
from sqlitebin.llama_index import SqlitebinVectorStore, filter_from_metadata_filters  # noqa: E402

WORDS = ("sqlite", "python", "debian", "vector", "search", "fast", "small", "free", "array", "engine")


class WordCountEmbedding(BaseEmbedding):
    """Counts of a few words (plus a small constant), so rankings can be checked with NumPy."""

    def _vector(self, text):
        words = text.lower().replace(".", " ").split()
        return [float(words.count(w)) for w in WORDS] + [0.01]

    def _get_text_embedding(self, text):
        return self._vector(text)

    def _get_query_embedding(self, query):
        return self._vector(query)

    async def _aget_query_embedding(self, query):
        return self._vector(query)


DOCUMENTS = [
    Document(text="SQLite is a small fast engine.", metadata={"kind": "db", "year": 2000, "tags": ["c", "db"]},
             doc_id="sqlite"),
    Document(text="Python array search.", metadata={"kind": "python", "year": 1991, "tags": ["python"]},
             doc_id="numpy"),
    Document(text="Debian is a free system. Debian is free.", metadata={"kind": "os", "year": 1993, "tags": ["os"]},
             doc_id="debian"),
    Document(text="Vector search in SQLite, fast and small.", metadata={"kind": "db", "year": 2024, "tags": ["db", "vector"]},
             doc_id="sqlitebin"),
]


def build(database=":memory:", embed_model=None, **options):
    store = SqlitebinVectorStore(database=database, **options)
    index = VectorStoreIndex.from_documents(
        # Only the text is embedded (LlamaIndex would prepend the metadata), so NumPy can check the ranking.
        [Document(text=d.text, metadata=dict(d.metadata), doc_id=d.doc_id,
                  excluded_embed_metadata_keys=list(d.metadata)) for d in DOCUMENTS],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model or WordCountEmbedding())
    return store, index


def test_mock_embedding_pipeline_with_a_query_engine():
    """The pipeline LlamaIndex documents, with its own MockEmbedding and MockLLM: ingest, retrieve, answer, delete."""
    store, index = build(embed_model=MockEmbedding(embed_dim=13))
    assert store.collection.dim == 13 and len(store.collection) == 4
    retriever = index.as_retriever(similarity_top_k=3)
    results = retriever.retrieve("anything")
    # MockEmbedding gives every text the same vector: all similarities 1, ties in insertion order.
    assert [r.node.ref_doc_id for r in results] == ["sqlite", "numpy", "debian"]
    assert all(r.score == pytest.approx(1.0, abs=1e-6) for r in results)
    filtered = index.as_retriever(similarity_top_k=3, filters=MetadataFilters(
        filters=[MetadataFilter(key="kind", value="db")])).retrieve("anything")
    assert [r.node.ref_doc_id for r in filtered] == ["sqlite", "sqlitebin"]
    response = index.as_query_engine(llm=MockLLM(), similarity_top_k=2).query("anything")
    assert len(response.source_nodes) == 2 and str(response)
    index.delete_ref_doc("sqlite")
    assert [r.node.ref_doc_id for r in retriever.retrieve("anything")] == ["numpy", "debian", "sqlitebin"]
    assert len(store.collection) == 3


def brute_force(query, allowed, k):
    embed = WordCountEmbedding()
    vectors = np.array([embed._vector(d.text) for d in DOCUMENTS])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    q = np.array(embed._vector(query))
    scores = vectors @ (q / np.linalg.norm(q))
    order = [i for i in np.argsort(-scores, kind="stable") if allowed(DOCUMENTS[i].metadata)]
    return [DOCUMENTS[i].doc_id for i in order[:k]], scores


FILTERS = [
    (None, lambda m: True),
    (MetadataFilters(filters=[MetadataFilter(key="kind", value="db")]), lambda m: m["kind"] == "db"),
    (MetadataFilters(filters=[MetadataFilter(key="year", value=1995, operator=FilterOperator.GT),
                              MetadataFilter(key="kind", value="os", operator=FilterOperator.NE)]),
     lambda m: m["year"] > 1995 and m["kind"] != "os"),
    (MetadataFilters(filters=[MetadataFilter(key="kind", value=["os", "python"], operator=FilterOperator.IN),
                              MetadataFilter(key="year", value=2000, operator=FilterOperator.GTE)],
                     condition=FilterCondition.OR),
     lambda m: m["kind"] in ("os", "python") or m["year"] >= 2000),
    (MetadataFilters(filters=[MetadataFilter(key="tags", value="db", operator=FilterOperator.CONTAINS)]),
     lambda m: "db" in m["tags"]),
    (MetadataFilters(filters=[MetadataFilter(key="tags", value=["os", "vector"], operator=FilterOperator.ANY)]),
     lambda m: bool({"os", "vector"} & set(m["tags"]))),
    (MetadataFilters(filters=[MetadataFilter(key="tags", value=["db", "c"], operator=FilterOperator.ALL)]),
     lambda m: {"db", "c"} <= set(m["tags"])),
    (MetadataFilters(filters=[MetadataFilter(key="kind", value="db"),
                              MetadataFilter(key="year", value=1991, operator=FilterOperator.LTE)],
                     condition=FilterCondition.NOT),
     lambda m: not (m["kind"] == "db" or m["year"] <= 1991)),
    (MetadataFilters(filters=[MetadataFilter(key="year", value=[1991, 2024], operator=FilterOperator.NIN),
                              MetadataFilters(filters=[MetadataFilter(key="kind", value="db"),
                                                       MetadataFilter(key="kind", value="os")],
                                              condition=FilterCondition.OR)]),
     lambda m: m["year"] not in (1991, 2024) and m["kind"] in ("db", "os")),
]


@pytest.mark.parametrize("filters, allowed", FILTERS)
def test_filtered_retrieval_matches_numpy(filters, allowed):
    store, index = build()
    for query in ("sqlite fast small engine", "free debian", "python search", "vector"):
        results = index.as_retriever(similarity_top_k=3, filters=filters).retrieve(query)
        expected, scores = brute_force(query, allowed, 3)
        assert [r.node.ref_doc_id for r in results] == expected
        order = {d.doc_id: i for i, d in enumerate(DOCUMENTS)}
        np.testing.assert_allclose([r.score for r in results], [scores[order[e]] for e in expected], atol=1e-5)
        assert all(allowed(r.node.metadata) for r in results)


def test_filters_become_sql_not_post_filters():
    store, _ = build()
    query = VectorStoreQuery(query_embedding=WordCountEmbedding()._vector("sqlite"), similarity_top_k=1,
                             filters=MetadataFilters(filters=[MetadataFilter(key="kind", value="os")]))
    # One candidate from the codes per hit, yet the only matching document is found: the filter runs in the scan.
    store._store.oversample = 1
    result = store.query(query)
    assert [node.ref_doc_id for node in result.nodes] == ["debian"]
    assert filter_from_metadata_filters(query.filters) == {"$and": [{"kind": {"$eq": "os"}}]}


def test_nodes_text_metadata_and_ids_round_trip(tmp_path):
    path = tmp_path / "li.db"
    store, index = build(database=path)
    node_ids = [r.node.node_id for r in index.as_retriever(similarity_top_k=4).retrieve("sqlite")]
    store.close()

    store = SqlitebinVectorStore(database=path)
    nodes = store.get_nodes(node_ids=node_ids[:2])
    assert [n.node_id for n in nodes] == node_ids[:2]
    by_doc = {d.doc_id: d for d in DOCUMENTS}
    for node in nodes:
        assert node.get_content() == by_doc[node.ref_doc_id].text
        assert node.metadata == by_doc[node.ref_doc_id].metadata
    assert {n.ref_doc_id for n in store.get_nodes(filters=MetadataFilters(
        filters=[MetadataFilter(key="kind", value="db")]))} == {"sqlite", "sqlitebin"}
    # query by node ids and by document ids
    vector = WordCountEmbedding()._vector("sqlite")
    assert store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=4, node_ids=node_ids[2:])).ids \
        == [i for i in node_ids if i in node_ids[2:]]
    assert [n.ref_doc_id for n in store.query(VectorStoreQuery(
        query_embedding=vector, similarity_top_k=4, doc_ids=["debian", "numpy"])).nodes] == ["numpy", "debian"]
    # The documents table is plain SQL: text in its column, the node's metadata keys at the top level of the JSON.
    rows = store.client.conn.execute(
        "SELECT text, json_extract(metadata, '$.kind'), json_extract(metadata, '$.ref_doc_id') "
        "FROM llama_index_documents ORDER BY id").fetchall()
    assert rows[0] == (DOCUMENTS[0].text, "db", "sqlite")
    store.delete_nodes(node_ids=[node_ids[0]])
    store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="kind", value="os")]))
    assert len(store.collection) == 2
    store.clear()
    assert len(store.collection) == 0 and store.get_nodes(node_ids=node_ids) == []
    store.close()


def test_upsert_by_node_id_and_bad_input():
    store = SqlitebinVectorStore(rescore="int8")
    store.add([TextNode(id_="n1", text="sqlite", embedding=[1.0, 0.0, 0.0])])
    store.add([TextNode(id_="n1", text="python", embedding=[0.0, 1.0, 0.0])])
    result = store.query(VectorStoreQuery(query_embedding=[0.0, 1.0, 0.0], similarity_top_k=5))
    assert result.ids == ["n1"] and result.nodes[0].get_content() == "python"
    with pytest.raises(ValueError, match="node 'n2' has no embedding"):
        store.add([TextNode(id_="n2", text="x")])
    with pytest.raises(ValueError, match="filter operator 'text_match' on 'kind' is not supported"):
        store.query(VectorStoreQuery(query_embedding=[1.0, 0.0, 0.0], filters=MetadataFilters(
            filters=[MetadataFilter(key="kind", value="x", operator=FilterOperator.TEXT_MATCH)])))
    with pytest.raises(ValueError, match="only the default query mode is supported"):
        store.query(VectorStoreQuery(query_embedding=[1.0, 0.0, 0.0], mode="mmr"))
    with pytest.raises(ValueError, match="rescore must be one of"):
        SqlitebinVectorStore(rescore="bits")
    with pytest.raises(TypeError, match="database must be a path or a sqlitebin.Database"):
        SqlitebinVectorStore(database=42)
    assert len(store.collection) == 1


def test_shares_a_database_with_other_collections():
    database = sqlitebin.connect()
    notes = database.create_collection("notes", dim=3, embedder=None)
    notes.add(vectors=[[1.0, 0.0, 0.0]])
    store = SqlitebinVectorStore(database=database, collection_name="nodes")
    store.add([TextNode(id_="a", text="x", embedding=[1.0, 0.0, 0.0])])
    assert database.collections() == ["nodes", "notes"]
    store.close()  # does not close a database it did not open
    assert len(database.collection("notes")) == 1
