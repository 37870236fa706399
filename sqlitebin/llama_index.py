"""A LlamaIndex vector store backed by a sqlitebin collection (``pip install 'sqlitebin[llama-index]'``).

`SqlitebinVectorStore` is a ``llama_index.core`` `BasePydanticVectorStore` that stores text: each node's
text goes into the collection's documents table, its embedding into the binary codes and rescoring vectors,
and its metadata into the `metadata` JSON column, in the form LlamaIndex's own stores use
(``node_to_metadata_dict``: the node's metadata keys at the top level, plus ``_node_content``,
``_node_type`` and ``ref_doc_id``). Node ids map to the collection's integer ids through the
`sqlitebin_keys` table (see `sqlitebin.keyed`). `MetadataFilters` become a SQL condition on the metadata
that the search applies before the top-k (see `sqlitebin.metadata_filter`). `SqlitebinEmbedding` makes
sqlitebin's offline embedders usable as a LlamaIndex embedding model.
"""

import os
from typing import Any, List, Optional, Sequence

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.schema import BaseNode, MetadataMode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sqlitebin.llama_index needs llama-index-core: pip install 'sqlitebin[llama-index]'") from error

from .collection import DEFAULT_OVERSAMPLE, STORED_KINDS, _check_choice, _check_int
from .database import Database
from .embedding import embed_texts, embedder_name, resolve_embedder
from .keyed import KeyedCollection

DEFAULT_COLLECTION = "llama_index"
FUNCTION = "SqlitebinVectorStore"
OPERATORS = {
    FilterOperator.EQ: "$eq", FilterOperator.NE: "$ne", FilterOperator.GT: "$gt", FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt", FilterOperator.LTE: "$lte", FilterOperator.IN: "$in", FilterOperator.NIN: "$nin",
    FilterOperator.CONTAINS: "$contains",
}


def filter_from_metadata_filters(filters: Optional[MetadataFilters]) -> Optional[dict]:
    """LlamaIndex `MetadataFilters` (nested ones too) as the filter dict of `sqlitebin.metadata_filter`.

    Operators: ==, !=, >, >=, <, <=, in, nin, contains, any and all (a list-valued key holding any or all
    of the values); conditions and, or, not (not: none of the filters holds, as in LlamaIndex's own store).
    Raises ValueError for the text-match and is_empty operators, which have no SQL form here.
    """
    if filters is None:
        return None
    parts = []
    for item in filters.filters:
        if isinstance(item, MetadataFilters):
            parts.append(filter_from_metadata_filters(item))
            continue
        operator = FilterOperator(item.operator)
        if operator in OPERATORS:
            parts.append({item.key: {OPERATORS[operator]: item.value}})
        elif operator in (FilterOperator.ANY, FilterOperator.ALL):
            if not isinstance(item.value, (list, tuple)) or not item.value:
                raise ValueError(f"{FUNCTION}: operator {operator.value!r} on {item.key!r} needs a non-empty list")
            key = "$or" if operator == FilterOperator.ANY else "$and"
            parts.append({key: [{item.key: {"$contains": value}} for value in item.value]})
        else:
            raise ValueError(
                f"{FUNCTION}: filter operator {operator.value!r} on {item.key!r} is not supported "
                f"(supported: {', '.join(o.value for o in OPERATORS)}, any, all)")
    if not parts:
        return None
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.AND:
        return {"$and": parts}
    if condition == FilterCondition.OR:
        return {"$or": parts}
    return {"$not": {"$or": parts}}


class SqlitebinEmbedding(BaseEmbedding):
    """A sqlitebin embedder as a LlamaIndex embedding model: "wordllama" (default, offline), "wordllama-128",
    "model2vec:PATH", a prefix from `sqlitebin.register_embedder()`, or any callable
    ``list[str] -> (n, dim)`` array."""

    _embedder: Any = PrivateAttr()

    def __init__(self, embedder="wordllama", **kwargs: Any):
        resolved = resolve_embedder(embedder)
        kwargs.setdefault("model_name", embedder_name(resolved))
        super().__init__(**kwargs)
        self._embedder = resolved

    @classmethod
    def class_name(cls) -> str:
        return "SqlitebinEmbedding"

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return embed_texts(self._embedder, list(texts)).tolist()

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)


class SqlitebinVectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store on a sqlitebin collection.

    - `database`: a path (default ":memory:") or an open `sqlitebin.Database`; a path is opened here and
      closed by `close()`.
    - `collection_name` (default "llama_index"): created at the first `add()` with the embeddings'
      dimension; an existing collection is reused.
    - `rescore`: what a new collection stores for re-ranking: "float32" (default, exact cosine
      similarities), "int8" or "none".
    - `oversample` (default 10): candidates taken from the codes per hit before rescoring.

    Similarities are cosine similarities. Only the default (dense) query mode is supported.
    """

    stores_text: bool = True
    flat_metadata: bool = False
    collection_name: str = DEFAULT_COLLECTION
    rescore: str = "float32"
    oversample: int = DEFAULT_OVERSAMPLE

    _database: Any = PrivateAttr()
    _owns_database: bool = PrivateAttr()
    _store: Any = PrivateAttr()

    def __init__(self, database=":memory:", collection_name: str = DEFAULT_COLLECTION, rescore: str = "float32",
                 oversample: int = DEFAULT_OVERSAMPLE, **kwargs: Any):
        function = "SqlitebinVectorStore()"
        rescore = _check_choice(function, "rescore", rescore, STORED_KINDS)
        oversample = _check_int(function, "oversample", oversample, 1, 1000)
        if not isinstance(database, (Database, str, os.PathLike)):
            raise TypeError(f"{function}: database must be a path or a sqlitebin.Database, got {type(database).__name__}")
        super().__init__(collection_name=collection_name, rescore=rescore, oversample=oversample, **kwargs)
        if isinstance(database, Database):
            self._database, self._owns_database = database, False
        else:
            self._database, self._owns_database = Database(database), True
        self._store = KeyedCollection(FUNCTION, self._database, collection_name, rescore=rescore, oversample=oversample)

    @classmethod
    def class_name(cls) -> str:
        return "SqlitebinVectorStore"

    @property
    def client(self) -> Database:
        """The sqlitebin `Database`."""
        return self._database

    @property
    def collection(self):
        """The sqlitebin `Collection` behind the store (None until the first `add()`)."""
        return self._store.collection

    def close(self) -> None:
        """Close the database if the store opened it."""
        if self._owns_database:
            self._database.close()

    # ------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> List[str]:
        """Store nodes with their embeddings (one transaction); a node id that exists is replaced."""
        nodes = list(nodes)
        if not nodes:
            return []
        for node in nodes:
            if node.embedding is None:
                raise ValueError(f"{FUNCTION}.add(): node {node.node_id!r} has no embedding")
        texts = [node.get_content(metadata_mode=MetadataMode.NONE) for node in nodes]
        metadatas = [node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata) for node in nodes]
        vectors = [node.get_embedding() for node in nodes]
        return self._store.upsert([node.node_id for node in nodes], texts, vectors, metadatas)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the document `ref_doc_id`."""
        self._store.delete_where({"ref_doc_id": ref_doc_id})

    def delete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                     **delete_kwargs: Any) -> None:
        """Delete the nodes with these ids and/or matching these filters (both must hold when both are given)."""
        if node_ids is None and filters is None:
            return
        self._store.delete_where(filter_from_metadata_filters(filters), node_ids)

    def clear(self) -> None:
        """Delete every node."""
        self._store.delete(None)

    def get_nodes(self, node_ids: Optional[List[str]] = None,
                  filters: Optional[MetadataFilters] = None) -> List[BaseNode]:
        """Nodes by id (in the order given) or by filters (in insertion order), or both."""
        if filters is None and node_ids is not None:
            rows = self._store.get(list(node_ids))
        else:
            rows = self._store.select(filter_from_metadata_filters(filters), node_ids)
        return [metadata_dict_to_node(metadata, text) for _, text, metadata in rows]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The `similarity_top_k` nodes nearest to `query.query_embedding` that match `query.filters`,
        `query.doc_ids` and `query.node_ids`, best first, with cosine similarities."""
        function = FUNCTION + ".query()"
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise ValueError(f"{function}: only the default query mode is supported, got {query.mode!r}")
        if query.query_embedding is None:
            raise ValueError(f"{function}: the query has no embedding")
        filter = filter_from_metadata_filters(query.filters)
        if query.doc_ids:
            doc_filter = {"ref_doc_id": {"$in": list(query.doc_ids)}}
            filter = {"$and": [filter, doc_filter]} if filter else doc_filter
        # Node ids live in sqlitebin_keys; they become part of the SQL condition as well.
        results = self._store.search(query.query_embedding, query.similarity_top_k, filter=filter,
                                     keys=list(query.node_ids) if query.node_ids else None)
        nodes = [metadata_dict_to_node(metadata, text) for _, text, metadata, _ in results]
        return VectorStoreQueryResult(nodes=nodes, similarities=[score for *_, score in results],
                                      ids=[key for key, *_ in results])
