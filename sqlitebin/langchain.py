"""A LangChain vector store backed by a sqlitebin collection (``pip install 'sqlitebin[langchain]'``).

`SqlitebinVectorStore` is a ``langchain_core`` `VectorStore` (and `SqlitebinEmbeddings` makes sqlitebin's
offline embedders usable as LangChain `Embeddings`): texts are embedded with the LangChain
`Embeddings` it is given and stored in a sqlitebin collection (binary codes for candidates, float32
vectors for exact cosine rescoring by default), so the whole store is one SQLite file. LangChain's string
ids map to the collection's integer ids through the `sqlitebin_keys` table (see `sqlitebin.keyed`);
metadata is stored as given in the documents table's JSON column, and a `filter` dict becomes a SQL
condition on it that the search applies before the top-k (see `sqlitebin.metadata_filter`).
"""

import os
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sqlitebin.langchain needs langchain-core: pip install 'sqlitebin[langchain]'") from error

from .collection import DEFAULT_OVERSAMPLE, STORED_KINDS, _check_choice, _check_int
from .database import Database
from .embedding import embed_texts, resolve_embedder
from .keyed import KeyedCollection

DEFAULT_COLLECTION = "langchain"


class SqlitebinEmbeddings(Embeddings):
    """A sqlitebin embedder as LangChain `Embeddings`: "wordllama" (default, offline), "wordllama-128",
    "model2vec:PATH", a prefix from `sqlitebin.register_embedder()`, or any callable
    ``list[str] -> (n, dim)`` array. Rows come back as the embedder makes them (unit length for
    WordLlama and Model2Vec)."""

    def __init__(self, embedder="wordllama"):
        self.embedder = resolve_embedder(embedder)

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        return embed_texts(self.embedder, list(texts)).tolist()

    def embed_query(self, text: str) -> List[float]:
        return self.embed_documents([text])[0]


class _LangChainEmbedder:
    """The store's LangChain embeddings as a collection embedder, so `Collection.add(texts)` and
    `Collection.search(text)` work on the same collection from plain sqlitebin too."""

    def __init__(self, embedding):
        self.embedding = embedding
        kind = type(embedding)
        self.name = f"langchain-{kind.__module__}.{kind.__qualname__}"

    def __call__(self, texts):
        return np.asarray(self.embedding.embed_documents(list(texts)), dtype=np.float32)


class SqlitebinVectorStore(VectorStore):
    """LangChain vector store on a sqlitebin collection.

    - `embedding`: the LangChain `Embeddings` for texts and queries (any dimension).
    - `database`: a path (default ":memory:") or an open `sqlitebin.Database`; a path is opened here and
      closed by `close()`.
    - `collection_name` (default "langchain"): created at the first write, with the embeddings' dimension;
      an existing collection is reused (its dimension must match the embeddings').
    - `rescore`: what a new collection stores for re-ranking: "float32" (default: exact cosine scores,
      4 x dim bytes per document), "int8" (dim bytes) or "none" (codes only).
    - `oversample` (default 10): candidates taken from the codes per hit before rescoring.

    Scores from `similarity_search_with_score` are cosine similarities (higher is better); relevance
    scores are ``(1 + cosine) / 2``, in [0, 1]. Raises ValueError or TypeError for bad arguments.
    """

    def __init__(self, embedding: Embeddings, *, database=":memory:", collection_name: str = DEFAULT_COLLECTION,
                 rescore: str = "float32", oversample: int = DEFAULT_OVERSAMPLE):
        function = "SqlitebinVectorStore()"
        if not isinstance(embedding, Embeddings):
            raise TypeError(f"{function}: embedding must be a LangChain Embeddings, got {type(embedding).__name__}")
        rescore = _check_choice(function, "rescore", rescore, STORED_KINDS)
        oversample = _check_int(function, "oversample", oversample, 1, 1000)
        if isinstance(database, Database):
            self.database, self._owns_database = database, False
        elif isinstance(database, (str, os.PathLike)):
            self.database, self._owns_database = Database(database), True
        else:
            raise TypeError(f"{function}: database must be a path or a sqlitebin.Database, got {type(database).__name__}")
        self.embedding = embedding
        # With sqlitebin's own embedder the collection records it by name, so plain sqlitebin (and
        # `sqlitebin search`) reopens it with that embedder; any other is recorded by its class.
        embedder = embedding.embedder if isinstance(embedding, SqlitebinEmbeddings) else _LangChainEmbedder(embedding)
        self.store = KeyedCollection("SqlitebinVectorStore", self.database, collection_name, rescore=rescore,
                                     embedder=embedder, oversample=oversample)

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    @property
    def collection(self):
        """The sqlitebin `Collection` behind the store (None until the first write)."""
        return self.store.collection

    def close(self) -> None:
        """Close the database if the store opened it."""
        if self._owns_database:
            self.database.close()

    # ------------------------------------------------------------------
    # Writing

    def add_texts(self, texts: Iterable[str], metadatas: Optional[List[dict]] = None, *,
                  ids: Optional[List[Optional[str]]] = None, **kwargs: Any) -> List[str]:
        """Embed and store texts; return their ids. A given id that exists is replaced (an upsert);
        None ids get a new UUID. All texts are written in one transaction."""
        texts = list(texts)
        if not texts:
            return []
        vectors = self.embedding.embed_documents(texts)
        return self.store.upsert(ids, texts, vectors, metadatas)

    async def aadd_texts(self, texts: Iterable[str], metadatas: Optional[List[dict]] = None, *,
                         ids: Optional[List[Optional[str]]] = None, **kwargs: Any) -> List[str]:
        texts = list(texts)
        if not texts:
            return []
        vectors = await self.embedding.aembed_documents(texts)
        from langchain_core.runnables.config import run_in_executor

        return await run_in_executor(None, self.store.upsert, ids, texts, vectors, metadatas)

    def add_documents(self, documents: List[Document], **kwargs: Any) -> List[str]:
        """Store documents; their `id`s (or `ids=`) are kept, missing ones get a UUID."""
        if "ids" not in kwargs and any(document.id for document in documents):
            kwargs["ids"] = [document.id for document in documents]
        return self.add_texts([d.page_content for d in documents], [d.metadata for d in documents], **kwargs)

    async def aadd_documents(self, documents: List[Document], **kwargs: Any) -> List[str]:
        if "ids" not in kwargs and any(document.id for document in documents):
            kwargs["ids"] = [document.id for document in documents]
        return await self.aadd_texts([d.page_content for d in documents], [d.metadata for d in documents], **kwargs)

    def delete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Delete documents by id (missing ids are skipped); with no ids, delete every document. Returns True."""
        if ids is not None and isinstance(ids, str):
            raise TypeError("SqlitebinVectorStore.delete(): ids must be a list of strings, got one str")
        self.store.delete(list(ids) if ids is not None else None)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        """The documents with these ids, in the order given; missing ids are skipped."""
        if isinstance(ids, str):
            raise TypeError("SqlitebinVectorStore.get_by_ids(): ids must be a list of strings, got one str")
        return [Document(id=key, page_content=text or "", metadata=metadata or {})
                for key, text, metadata in self.store.get(list(ids))]

    # ------------------------------------------------------------------
    # Searching

    def similarity_search_with_score_by_vector(self, embedding: List[float], k: int = 4,
                                               filter: Optional[dict] = None,
                                               **kwargs: Any) -> List[Tuple[Document, float]]:
        """The k nearest documents to a query vector with their cosine similarity, best first.
        `filter` (a dict, see `sqlitebin.metadata_filter`) is applied inside the search;
        `oversample=` overrides the store's setting for this call."""
        results = self.store.search(embedding, k, filter=filter, oversample=kwargs.get("oversample"))
        return [(Document(id=key, page_content=text or "", metadata=metadata or {}), score)
                for key, text, metadata, score in results]

    def similarity_search_with_score(self, query: str, k: int = 4, filter: Optional[dict] = None,
                                     **kwargs: Any) -> List[Tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k, filter, **kwargs)

    def similarity_search(self, query: str, k: int = 4, filter: Optional[dict] = None,
                          **kwargs: Any) -> List[Document]:
        return [document for document, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(self, embedding: List[float], k: int = 4, filter: Optional[dict] = None,
                                    **kwargs: Any) -> List[Document]:
        return [document for document, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    def _select_relevance_score_fn(self):
        return _relevance_from_cosine

    def max_marginal_relevance_search_by_vector(self, embedding: List[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: Optional[dict] = None,
                                                **kwargs: Any) -> List[Document]:
        """Maximal marginal relevance: `fetch_k` nearest documents (after `filter`), then `k` of them
        chosen for relevance to the query and difference from each other (`lambda_mult`, 0 to 1:
        1 is pure relevance). The candidates' vectors are their texts embedded again with the store's
        embeddings (the collection keeps binary codes and rescoring vectors, not the original floats)."""
        function = "SqlitebinVectorStore.max_marginal_relevance_search()"
        k = _check_int(function, "k", k, 1, 100_000)
        fetch_k = _check_int(function, "fetch_k", fetch_k, 1, 100_000)
        if isinstance(lambda_mult, bool) or not isinstance(lambda_mult, (int, float)) or not 0 <= lambda_mult <= 1:
            raise ValueError(f"{function}: lambda_mult must be a number from 0 to 1, got {lambda_mult!r}")
        candidates = self.similarity_search_by_vector(embedding, max(k, fetch_k), filter, **kwargs)
        if not candidates:
            return []
        vectors = self.embedding.embed_documents([document.page_content for document in candidates])
        chosen = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32), vectors, lambda_mult=lambda_mult, k=k)
        return [candidates[i] for i in chosen]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: Optional[dict] = None, **kwargs: Any) -> List[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self.embedding.embed_query(query), k, fetch_k, lambda_mult, filter, **kwargs)

    # ------------------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: List[str], embedding: Embeddings, metadatas: Optional[List[dict]] = None, *,
                   ids: Optional[List[str]] = None, **kwargs: Any) -> "SqlitebinVectorStore":
        """A new store (keyword arguments as for the constructor) holding `texts`."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


def _relevance_from_cosine(score: float) -> float:
    return min(1.0, max(0.0, (1.0 + score) / 2.0))
