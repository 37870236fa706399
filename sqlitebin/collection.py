"""A collection: documents with their vectors in a `sqlitebin` virtual table, searched in one SQL statement.

A collection N is the table N_documents (text, metadata), an FTS5 index of the texts (text
collections) and N_index, a `sqlitebin` virtual table whose rowid is the document id; see
schema.py. Every vector read and write goes through SQL on N_index: the extension computes the
binary codes, quantizes the rescoring vectors (calibrating the int8 ranges from the data), and
answers `WHERE vector MATCH :query AND k = ...` with candidates from the codes (the float query
against the codes read as +1/-1, or Hamming distance) rescored with the stored int8 or float32
vectors or the bits. Scores are cosine similarities (vectors are L2-normalised at ingest): higher
is better and comparable across queries. Distances are Hamming bits between the query's code and
the document's. `search_sql()` returns the statement `search()` runs.
"""

import contextlib
import functools
import inspect
import json
from dataclasses import dataclass
from typing import Callable, Optional

import apsw
import numpy as np

from . import keyword, quantize
from .embedding import embed_texts
from .errors import CollectionNotFound, InvalidArgument, InvalidWhere, MissingParameter, NoEmbedder
from .schema import TableNames, quote_identifier

RESCORE_KINDS = ("int8", "float32", "bits", "none")
STORED_KINDS = ("int8", "float32", "none")
CANDIDATE_KINDS = ("asymmetric", "hamming")
MODES = ("vector", "keyword", "hybrid")
MAX_K = 100_000
MAX_OVERSAMPLE = 1000
DEFAULT_K = 10
DEFAULT_OVERSAMPLE = 10
DEFAULT_BATCH_SIZE = 1000
# Hybrid: score = bm25 / min(bm25) + vector_weight x cosine over the union of the keyword
# top 50 and the vector top 20. Tuned on the Debian dev queries (nDCG@10 0.705 against 0.693
# for BM25 alone and 0.495 for vectors alone; every weight from 0.2 to 1.2 beats BM25).
DEFAULT_VECTOR_WEIGHT = 0.6
HYBRID_KEYWORD_DEPTH = 50
HYBRID_VECTOR_DEPTH = 20
EMBED_BATCH_SIZE = 256


@dataclass
class Hit:
    """One search result. `distance` is in Hamming bits (None for keyword-only hits)."""

    id: int
    score: float
    distance: Optional[int]
    text: Optional[str]
    metadata: Optional[dict]


@contextlib.contextmanager
def transaction(conn):
    """A write transaction on `conn`: BEGIN IMMEDIATE ... COMMIT, or a savepoint inside one already open.

    Beginning as a write makes a busy database wait (up to the connection's busy timeout) at BEGIN. A deferred
    transaction that reads first and then writes cannot wait: SQLite fails its upgrade to a write at once with
    "database is locked", since waiting could deadlock against the other writer
    (https://sqlite.org/lang_transaction.html). Inside a transaction the caller opened, a savepoint keeps the
    caller in charge of the commit. Any exception rolls back and is raised as it is; after SQLITE_FULL,
    SQLITE_IOERR or SQLITE_NOMEM, when SQLite has already rolled back by itself, the real error is raised rather
    than "cannot rollback - no transaction is active".
    """
    if conn.in_transaction:
        try:
            with conn:
                yield
        except apsw.SQLError as error:
            cause = error.__context__
            if isinstance(cause, apsw.Error) and "no transaction is active" in str(error):
                raise cause from None
            raise
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def serialised(cls):
    """Class decorator: every public method (and len()) runs holding the owning Database's lock.

    A Database and its collections may then be used from several threads, one call at a time: an apsw connection
    used by two threads at once raises ThreadingViolationError. For searches that run in parallel, open one
    Database per thread (each with its own connection).
    """
    def wrap(method):
        @functools.wraps(method)
        def locked(self, *args, **kwargs):
            with getattr(self, "database", self).lock:
                return method(self, *args, **kwargs)
        return locked

    for name, value in list(vars(cls).items()):
        # Plain methods only: properties, static and class methods keep their own behaviour.
        if inspect.isfunction(value) and (not name.startswith("_") or name == "__len__"):
            setattr(cls, name, wrap(value))
    return cls


def _check_int(function, name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{function}: {name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidArgument(f"{function}: {name} must be from {low} to {high}, got {value}")
    return int(value)


def _check_choice(function, name, value, choices):
    if value not in choices:
        raise InvalidArgument(f"{function}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_where(function, where):
    """Reject a `where=` condition holding more than one SQL statement.

    The condition is the caller's own SQL (like sqlite-utils' `rows_where`),
    but it must stay one expression: a `;` outside quotes would let it run
    further statements.
    """
    if where is None:
        return None
    if not isinstance(where, str) or not where.strip():
        raise InvalidWhere(f"{function}: where must be a non-empty SQL condition, got {where!r}")
    try:
        _check_unicode(function, "where", where)
    except InvalidArgument as error:
        raise InvalidWhere(str(error)) from None
    quote = None
    i = 0
    while i < len(where):
        ch = where[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "[":
            quote = "]"
        elif where.startswith("--", i) or where.startswith("/*", i):
            raise InvalidWhere(f"{function}: where must not contain SQL comments, got {where!r}")
        elif ch == ";":
            raise InvalidWhere(f"{function}: where must be a single SQL condition without ';', got {where!r}")
        elif ch == "?":
            # The search binds its own named parameters, so a positional one could never get a value.
            raise InvalidWhere(f"{function}: where must use named parameters such as :id, not '?', got {where!r}")
        i += 1
    return where


def check_ids(function, ids, count):
    """Check document ids: a sequence of 64-bit integers (`count` of them, unique, when `count` is given).

    One owner for these checks, shared by Collection and ShardedCollection.
    """
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"{function}: ids must be a sequence of integers, got {type(ids).__name__}")
    checked = []
    for position, value in enumerate(ids):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{function}: ids must be integers; id {position} is {value!r}")
        if not -(2**63) <= int(value) < 2**63:
            raise InvalidArgument(f"{function}: id {position} ({value}) does not fit in 64 bits")
        checked.append(int(value))
    if count is not None and len(checked) != count:
        raise InvalidArgument(f"{function}: got {len(checked)} ids for {count} documents")
    if count is not None and len(set(checked)) != len(checked):
        raise InvalidArgument(f"{function}: ids must be unique")
    return checked


def check_documents(function, texts, vectors, dim, has_embedder, name, embedder_name):
    """Check what add()/upsert() were given: (texts as a list or None, vectors as float32 or None, count).

    One owner for these checks, shared by Collection and ShardedCollection.
    """
    if texts is None and vectors is None:
        raise InvalidArgument(f"{function}: give texts, vectors, or both")
    if isinstance(texts, str):
        raise TypeError(f"{function}: texts must be a list of strings, not one string")
    texts = list(texts) if texts is not None else None
    if texts is not None:
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{function}: text {position} is {type(text).__name__}, not str")
            _check_unicode(function, f"text {position}", text)
    if vectors is not None:
        vectors = quantize.as_float32_matrix(function, vectors, dim)
    count = len(texts) if texts is not None else len(vectors)
    if texts is not None and vectors is not None and len(vectors) != count:
        raise InvalidArgument(f"{function}: got {count} texts but {len(vectors)} vectors")
    if vectors is None and not has_embedder:
        raise NoEmbedder(
            f"{function}: collection {name!r} has no embedder ({embedder_name or 'vectors only'}); "
            "pass vectors=, or reopen it with embedder="
        )
    return texts, vectors, count


@serialised
class Collection:
    """A named set of documents in a sqlitebin database. Get one from `Database.create_collection()`
    or `Database.collection()`; do not construct it directly."""

    def __init__(self, database, settings, embedder):
        self.database = database
        self.conn = database.conn
        self.name = settings["name"]
        self.tables = TableNames(self.name)
        self.dim = settings["dim"]
        self.code_bytes = (self.dim + 7) // 8
        self.rescore = settings["rescore"]
        self.fts = bool(settings["fts"])
        self.embedder_name = settings["embedder"]
        self.embedder_version = settings["embedder_version"]
        self.embedder = embedder
        # Fixed when the index is created, so read once; the int8 ranges change (calibration,
        # 'recalibrate'), so `ranges` reads them each time.
        thresholds = self._config("thresholds")
        self.thresholds = np.frombuffer(thresholds, dtype=quantize.FLOAT32).copy() if thresholds else None
        self.chunk_size = self._config("chunk_size")
        self._tokenizer_spec = None
        if self.fts:
            keyword.ensure_terms_table(self.conn, self.name)

    def __repr__(self):
        return f"<Collection {self.name!r} dim={self.dim} rescore={self.rescore} documents={len(self)}>"

    def __len__(self):
        return self.conn.execute(f"SELECT count(*) FROM {self.tables.documents}").fetchall()[0][0]

    def _config(self, key):
        rows = self.conn.execute(f"SELECT value FROM {self.tables.index_config} WHERE key = ?", (key,)).fetchall()
        return rows[0][0] if rows else None

    @property
    def ranges(self):
        """The int8 ranges (dim lows then dim highs, float32) the index quantizes with; None until calibrated."""
        ranges = self._config("ranges") if self.rescore == "int8" else None
        return np.frombuffer(ranges, dtype=quantize.FLOAT32).copy() if ranges else None

    # ------------------------------------------------------------------
    # Writing

    def add(self, texts=None, *, vectors=None, ids=None, metadata=None, batch_size=DEFAULT_BATCH_SIZE,
            progress: Optional[Callable[[int, int], None]] = None):
        """Add documents; return their ids in input order.

        Give `texts` (embedded with the collection's embedder), or `vectors`
        (an (n, dim) float array), or both (texts stored, vectors used).
        `ids` are integers (default: assigned after the largest id present);
        an id already in the collection is an error (use `upsert()`).
        `metadata` is one JSON-serializable dict (or None) per document.
        Each batch of `batch_size` documents is one transaction; `progress(done, total)`
        is called after each. Raises InvalidArgument (a ValueError) or TypeError for bad
        input, before anything is written.
        """
        return self._write("Collection.add()", texts, vectors, ids, metadata, batch_size, progress, replace=False)

    def upsert(self, texts=None, *, vectors=None, ids, metadata=None, batch_size=DEFAULT_BATCH_SIZE,
               progress: Optional[Callable[[int, int], None]] = None):
        """Insert or replace documents by id; same arguments as `add()` but `ids` is required."""
        if ids is None:
            raise InvalidArgument("Collection.upsert(): ids are required")
        return self._write("Collection.upsert()", texts, vectors, ids, metadata, batch_size, progress, replace=True)

    def delete(self, ids):
        """Delete documents by id (their index rows and text index entries go with them); return how many existed."""
        ids = check_ids("Collection.delete()", ids, None)
        if not ids:
            return 0
        with transaction(self.conn):
            existing = self._count_existing(ids)
            self.conn.executemany(f"DELETE FROM {self.tables.documents} WHERE id = ?", [(i,) for i in ids])
        self._refresh_keyword_terms()
        return existing

    def get(self, ids):
        """Fetch documents by id as Hits with score 1.0 and no distance, in the order given; missing ids are skipped."""
        ids = check_ids("Collection.get()", ids, None)
        rows = {
            row[0]: row
            for row in self.conn.execute(
                f"SELECT id, text, metadata FROM {self.tables.documents} WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
        }
        return [Hit(i, 1.0, None, rows[i][1], _load_metadata(rows[i][2])) for i in ids if i in rows]

    def vectors(self, ids):
        """The stored vectors of these documents as an (n, dim) float32 array, in the order given
        (exact for float32, dequantized for int8, the signs / sqrt(dim) for none); missing ids raise KeyError."""
        ids = check_ids("Collection.vectors()", ids, None)
        rows = dict(self.conn.execute(
            f"SELECT rowid, vector FROM {self.tables.index} WHERE rowid IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),)).fetchall())
        missing = [i for i in ids if i not in rows]
        if missing:
            raise CollectionNotFound(f"Collection.vectors(): no vector for id {missing[0]} in collection {self.name!r}")
        return np.frombuffer(b"".join(rows[i] for i in ids), dtype=quantize.FLOAT32).reshape(len(ids), self.dim).copy()

    def _count_existing(self, ids):
        return self.conn.execute(
            f"SELECT count(*) FROM {self.tables.documents} WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        ).fetchall()[0][0]

    def _write(self, function, texts, vectors, ids, metadata, batch_size, progress, replace):
        batch_size = _check_int(function, "batch_size", batch_size, 1, 1_000_000)
        texts, vectors, count = check_documents(function, texts, vectors, self.dim, self.embedder is not None,
                                                self.name, self.embedder_name)
        ids = check_ids(function, ids, count)
        metadata_json = _dump_metadata(function, metadata, count)
        if count == 0:
            return []

        # Batches follow input order, so assigned ids do too; within a batch,
        # embed_texts sends texts to the embedder sorted by length (padding
        # embedders waste less work on batches of similar lengths).
        assigned = [None] * count
        done = 0
        for start in range(0, count, batch_size):
            stop = min(count, start + batch_size)
            batch_texts = texts[start:stop] if texts is not None else None
            if vectors is not None:
                batch_vectors = vectors[start:stop]
            else:
                batch_vectors = quantize.as_float32_matrix(
                    function, embed_texts(self.embedder, batch_texts, batch_size=EMBED_BATCH_SIZE), self.dim)
            batch_ids = ids[start:stop] if ids is not None else None
            written = self._write_batch(function, batch_texts, batch_vectors, batch_ids, metadata_json[start:stop],
                                        replace)
            assigned[start:stop] = written
            done = stop
            if progress is not None:
                progress(done, count)
        self._refresh_keyword_terms()
        return assigned

    def _write_batch(self, function, texts, vectors, ids, metadata, replace):
        """Write one batch in one transaction: documents, then their vectors into the index,
        which computes the codes and quantizes (and calibrates the int8 ranges) itself."""
        vectors = quantize.normalize(vectors)
        t = self.tables
        with transaction(self.conn):
            if ids is None:
                largest = self.conn.execute(f"SELECT coalesce(max(id), 0) FROM {t.documents}").fetchall()[0][0]
                if largest > 2**63 - 1 - len(vectors):
                    raise ValueError(
                        f"{function}: cannot number {len(vectors)} new documents after the largest id, {largest} "
                        f"(ids are 64-bit integers up to {2**63 - 1}); pass ids="
                    )
                ids = list(range(largest + 1, largest + 1 + len(vectors)))
            elif not replace:
                clash = self.conn.execute(
                    f"SELECT id FROM {t.documents} WHERE id IN (SELECT value FROM json_each(?)) LIMIT 1",
                    (json.dumps(ids),),
                ).fetchall()
                if clash:
                    raise InvalidArgument(
                        f"{function}: id {clash[0][0]} already exists in collection {self.name!r}; "
                        "use upsert() to replace it"
                    )
            text_column = texts if texts is not None else [None] * len(ids)
            rows = vectors.tobytes()
            width = 4 * self.dim
            blobs = (rows[i * width:(i + 1) * width] for i in range(len(ids)))
            if replace:
                # An update, not INSERT OR REPLACE: REPLACE would delete without firing
                # the delete triggers that keep the index and the text index in step.
                self.conn.executemany(
                    f"INSERT INTO {t.documents} (id, text, metadata) VALUES (?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET text = excluded.text, metadata = excluded.metadata",
                    zip(ids, text_column, metadata),
                )
                self.conn.executemany(f"INSERT OR REPLACE INTO {t.index} (rowid, vector) VALUES (?, ?)",
                                      zip(ids, blobs))
            else:
                self.conn.executemany(
                    f"INSERT INTO {t.documents} (id, text, metadata) VALUES (?, ?, ?)", zip(ids, text_column, metadata)
                )
                self.conn.executemany(f"INSERT INTO {t.index} (rowid, vector) VALUES (?, ?)", zip(ids, blobs))
        return ids

    # ------------------------------------------------------------------
    # Search

    def query_vector(self, query):
        """The normalised float32 query vector for a text or a vector."""
        if isinstance(query, str):
            if not query.strip():
                raise InvalidArgument("Collection.search(): the query is empty")
            if self.embedder is None:
                raise NoEmbedder(
                    f"Collection.search(): collection {self.name!r} has no embedder "
                    f"({self.embedder_name or 'vectors only'}); search with a vector, or reopen it with embedder="
                )
            # Like keyword search, only the start of a very long query is read (a megabyte would take seconds).
            vector = embed_texts(self.embedder, [query[:keyword.MAX_QUERY_CHARACTERS]])
        else:
            vector = query
        vector = quantize.as_float32_matrix("Collection.search()", vector, self.dim)
        if len(vector) != 1:
            raise InvalidArgument(f"Collection.search(): expected one query vector, got {len(vector)}")
        return quantize.normalize(vector)[0]

    def default_mode(self, query=""):
        """The mode `search()` uses when given none: 'hybrid' for a text query on a collection with a text
        index, else 'vector'. Hybrid is the default because
        it ranks best (nDCG@10 0.70 on the Debian dev queries, against 0.69 for BM25 and 0.49 for vectors)
        at a few milliseconds a query (README, "Keyword and hybrid search")."""
        return "hybrid" if isinstance(query, str) and self.fts else "vector"

    def _search_options(self, mode, k, oversample, rescore, candidates, where, vector_weight):
        function = "Collection.search()"
        mode = _check_choice(function, "mode", mode, MODES)
        if mode != "vector" and not self.fts:
            raise InvalidArgument(
                f"{function}: mode={mode!r} needs a text index, but collection {self.name!r} has none "
                "(create it with fts=True)")
        k = _check_int(function, "k", k, 1, MAX_K)
        oversample = _check_int(function, "oversample", oversample, 1, MAX_OVERSAMPLE)
        rescore = self.rescore if rescore is None else _check_choice(function, "rescore", rescore, RESCORE_KINDS)
        if rescore in ("int8", "float32") and rescore != self.rescore:
            raise InvalidArgument(
                f"{function}: rescore={rescore!r} needs {rescore} vectors, but collection {self.name!r} stores "
                f"{self.rescore}; use rescore='bits' or 'none'" + (" or 'int8'" if self.rescore == "int8" else "")
            )
        candidates = _check_choice(function, "candidates", candidates, CANDIDATE_KINDS)
        where = check_where(function, where)
        if isinstance(vector_weight, bool) or not isinstance(vector_weight, (int, float)) or not (
                0.0 <= vector_weight <= 100.0):
            raise InvalidArgument(f"{function}: vector_weight must be a number from 0 to 100, got {vector_weight!r}")
        return mode, k, oversample, rescore, candidates, where, float(vector_weight)

    def search_sql(self, *, mode=None, k=DEFAULT_K, oversample=DEFAULT_OVERSAMPLE, rescore=None,
                   candidates="asymmetric", where=None, vector_weight=DEFAULT_VECTOR_WEIGHT):
        """The SQL that `search()` runs with these options (for a text query when `mode` is None): one
        statement that also runs in the `sqlite3` shell with the extension loaded. Its parameters are named
        `:sqlitebin_*` (`:sqlitebin_vector` is the normalised query as a float32 BLOB; `search_params()` gives
        them all)."""
        if mode is None:
            mode = self.default_mode()
        mode, k, oversample, rescore, candidates, where, vector_weight = self._search_options(
            mode, k, oversample, rescore, candidates, where, vector_weight)
        t = self.tables
        # LIMIT takes numbers written into the SQL, never parameters: SQLite (3.54) prepares a statement again
        # each time it runs when its LIMIT is a bound parameter, which would cost a keyword search a millisecond.
        if mode == "vector":
            return (
                f"WITH vector AS ({self._vector_sql(':sqlitebin_k', rescore, candidates, where)})\n"
                f"SELECT v.id, v.score, v.distance, d.text, d.metadata\n"
                f"FROM vector AS v JOIN {t.documents} AS d ON d.id = v.id\n"
                f"ORDER BY v.score DESC, v.id"
            )
        if mode == "keyword":
            # The index gives each keyword hit its Hamming distance (rescore='none': nothing else is computed).
            return (
                f"WITH {self._keyword_sql(where, k)},\n"
                f"coded AS ({self._scored_sql('keyword', ':sqlitebin_k', 'none')})\n"
                f"SELECT c.id, c.score, s.distance, d.text, d.metadata\n"
                f"FROM keyword AS c JOIN coded AS s ON s.id = c.id JOIN {t.documents} AS d ON d.id = c.id\n"
                f"ORDER BY c.score DESC, c.id"
            )
        # Hybrid: the keyword top and the vector top, each document scored by its BM25
        # relative to the best keyword hit (1 for it, 0 when absent) plus the weighted
        # cosine from the rescoring vectors, which keyword-only documents get too.
        fused_rescore = "bits" if rescore == "none" else rescore
        return (
            f"WITH vector AS MATERIALIZED ({self._vector_sql(':sqlitebin_vector_depth', rescore, candidates, where)}),\n"
            f"{self._keyword_sql(where, max(k, HYBRID_KEYWORD_DEPTH))},\n"
            f"keyword_scaled AS (SELECT id, coalesce(score / nullif(max(score) OVER (), 0), 1.0) AS part FROM keyword),\n"
            f"fused AS MATERIALIZED (SELECT id FROM keyword UNION SELECT id FROM vector),\n"
            f"scored AS ({self._scored_sql('fused', ':sqlitebin_fused_depth', fused_rescore)}),\n"
            # `scored` holds every fused id (its k is at least their number): no join with `fused` again, and
            # the documents' texts are read for the k returned only.
            f"ranked AS (SELECT s.id, coalesce(k.part, 0.0) + :sqlitebin_vector_weight * s.score AS score, s.distance\n"
            f"  FROM scored AS s LEFT JOIN keyword_scaled AS k ON k.id = s.id\n"
            f"  ORDER BY score DESC, s.id LIMIT {k})\n"
            f"SELECT r.id, r.score, r.distance, d.text, d.metadata\n"
            f"FROM ranked AS r JOIN {t.documents} AS d ON d.id = r.id\n"
            f"ORDER BY r.score DESC, r.id"
        )

    def _vector_sql(self, k, rescore, candidates, where):
        """The vector top k from the index: (id, score, distance), best first; `where` filters inside the scan."""
        t = self.tables
        filter_sql = f"\n    AND rowid IN (SELECT id FROM {t.documents} WHERE ({where}))" if where else ""
        return (
            f"SELECT rowid AS id, score, distance FROM {t.index}\n"
            f"    WHERE vector MATCH :sqlitebin_vector AND k = {k} AND oversample = :sqlitebin_oversample\n"
            f"    AND rescore = '{rescore}' AND candidates = '{candidates}'{filter_sql}"
        )

    def _scored_sql(self, source, k, rescore):
        """Score and distance from the index for the ids of CTE `source` (at most `k` of them): every one is a candidate."""
        return (
            f"SELECT rowid AS id, score, distance FROM {self.tables.index}\n"
            f"    WHERE vector MATCH :sqlitebin_vector AND k = {k} AND oversample = 1 AND rescore = '{rescore}'\n"
            f"    AND rowid IN (SELECT id FROM {source})"
        )

    def _keyword_sql(self, where, limit):
        """The CTEs of the BM25 top `limit` over the FTS5 index, ending with keyword(id, score), score = -bm25
        (higher is better); see sqlitebin/keyword.py for how it avoids scoring every matching document."""
        t = self.tables
        return keyword.keyword_ctes(t.fts, t.documents, t.keyword_terms, where, limit)

    def query_terms(self, text):
        """The distinct terms keyword search looks for in `text`, each with its number of occurrences:
        [[token, phrase, count], ...] (see sqlitebin/keyword.py)."""
        if self._tokenizer_spec is None:
            self._tokenizer_spec = keyword.tokenizer_spec(self.conn, self.name + "_fts")
        # A new tokenizer for each query: one kept past the connection's close would be freed by code
        # (the sqlitebin_cjk tokenizer's) that SQLite has unloaded by then.
        return keyword.query_terms(keyword.tokenizer(self.conn, self._tokenizer_spec), text)

    def update_keyword_terms(self):
        """Recompute the table of frequent terms keyword search uses to choose what to score (writes through
        this API do it when the document count has changed by more than 20%; call this after large changes
        made with plain SQL)."""
        if self.fts:
            with transaction(self.conn):
                keyword.refresh_terms(self.conn, self.name, force=True)

    def _refresh_keyword_terms(self):
        if self.fts:
            with transaction(self.conn):
                keyword.refresh_terms(self.conn, self.name)

    def search_params(self, vector, *, mode="vector", k=DEFAULT_K, oversample=DEFAULT_OVERSAMPLE,
                      params=None, query_text=None, vector_weight=DEFAULT_VECTOR_WEIGHT):
        """The parameter values for `search_sql()` given a normalised query vector (and, for
        keyword and hybrid modes, the query text)."""
        vector = np.ascontiguousarray(vector, dtype=quantize.FLOAT32)
        k, oversample = int(k), int(oversample)  # NumPy integers pass validation, but apsw cannot bind them
        values = dict(params or {})
        clash = [name for name in values if name.startswith("sqlitebin_")]
        if clash:
            raise InvalidArgument(
                f"Collection.search(): parameter names starting with 'sqlitebin_' are reserved, got {clash}")
        vector_depth, keyword_depth = max(k, HYBRID_VECTOR_DEPTH), max(k, HYBRID_KEYWORD_DEPTH)
        values.update(
            sqlitebin_vector=vector.tobytes(),
            sqlitebin_k=k,
            sqlitebin_oversample=oversample,
            sqlitebin_vector_depth=vector_depth,
            sqlitebin_keyword_depth=keyword_depth,
            sqlitebin_fused_depth=vector_depth + keyword_depth,
            sqlitebin_terms=keyword.terms_json(self.query_terms(query_text)) if query_text is not None else None,
            sqlitebin_vector_weight=float(vector_weight),
        )
        return values

    def search(self, query, k=DEFAULT_K, *, mode=None, oversample=DEFAULT_OVERSAMPLE, rescore=None,
               candidates="asymmetric", where=None, params=None, vector_weight=DEFAULT_VECTOR_WEIGHT):
        """The k best documents for a text or vector query, best first.

        - `mode`: 'vector', 'keyword' (SQLite FTS5 BM25 over the texts) or 'hybrid' (both, fused);
          keyword and hybrid need a text query and a collection with a text index. Default
          (`default_mode()`): 'hybrid' for a text query on a collection with a text index, else 'vector'.
        - A text query is read up to its first 4,096 characters, and keyword search uses its first 32
          distinct terms, each once (sqlitebin/keyword.py). A running search stops with apsw.InterruptError
          when another thread calls `conn.interrupt()`.
        - `oversample` (default 10): k x oversample candidates are taken from the codes, then rescored
          (with rescore='none' only k are taken).
        - `rescore`: 'int8' or 'float32' (the stored vectors; default: what the collection stores),
          'bits' (the codes as +1/-1, no extra storage) or 'none' (the candidate score as is).
        - `candidates`: 'asymmetric' (default: float query against +1/-1 codes) or 'hamming'.
        - `where`: a SQL condition on the documents table (columns id, text, metadata; e.g.
          "json_extract(metadata, '$.lang') = :lang"), applied inside the scan, with `params`.
        - `vector_weight` (hybrid, default 0.6): the fused score is the document's BM25 relative
          to the best keyword hit (1 for the best, 0 when absent) plus vector_weight x cosine.

        Scores: cosine similarity (vector), minus BM25 (keyword, higher is better), or the
        fused score (hybrid). Returns fewer than k hits only when fewer documents match.
        Raises InvalidArgument (a ValueError) or TypeError for bad arguments, MissingParameter
        for a `where` parameter missing from `params`, and apsw.SQLError for a `where` that is
        not valid SQL.
        """
        if mode is None:
            mode = self.default_mode(query)
        sql = self.search_sql(mode=mode, k=k, oversample=oversample, rescore=rescore, candidates=candidates,
                              where=where, vector_weight=vector_weight)
        if mode != "vector" and not isinstance(query, str):
            raise TypeError(f"Collection.search(): mode={mode!r} needs a text query, got {type(query).__name__}")
        if isinstance(query, str):
            _check_unicode("Collection.search()", "the query", query)
        if mode == "keyword":
            if not query.strip():
                raise InvalidArgument("Collection.search(): the query is empty")
            vector = np.zeros(self.dim, dtype=quantize.FLOAT32)
        else:
            vector = self.query_vector(query)
        values = self.search_params(vector, mode=mode, k=k, oversample=oversample, params=params,
                                    query_text=query if mode != "vector" else None, vector_weight=vector_weight)
        if mode == "keyword" and values["sqlitebin_terms"] == "[]":
            return []  # no words; in hybrid mode the vectors alone rank
        try:
            rows = self.conn.execute(sql, values).fetchall()
        except KeyError as error:  # apsw: a named parameter without a value
            name = error.args[0]
            raise MissingParameter(
                f"Collection.search(): where uses :{name} but params gives it no value", name) from None
        return [Hit(row[0], float(row[1]), row[2], row[3], _load_metadata(row[4])) for row in rows]

    def search_many(self, queries, k=DEFAULT_K, *, mode=None, oversample=DEFAULT_OVERSAMPLE, rescore=None,
                    candidates="asymmetric", where=None, params=None, vector_weight=DEFAULT_VECTOR_WEIGHT):
        """One list of hits per query, each exactly what `search()` returns for it with the same options.

        `queries` is a list of texts or an (n, dim) array of vectors. Vector searches run as one
        statement: the index takes every query in one MATCH and scans each block of codes for many
        queries at once while it is in cache (`search_many_sql()`). Keyword and hybrid searches
        (texts, `mode` other than 'vector') run one at a time.
        """
        function = "Collection.search_many()"
        if isinstance(queries, str):
            raise TypeError(f"{function}: queries must be a list of texts or an (n, dim) array, not one string")
        texts = isinstance(queries, (list, tuple)) and len(queries) > 0 and all(isinstance(q, str) for q in queries)
        if mode is None:
            mode = self.default_mode("text" if texts else None)
        if not texts or mode == "vector":
            if texts:
                for position, text in enumerate(queries):
                    _check_unicode(function, f"query {position}", text)
                    if not text.strip():
                        raise InvalidArgument(f"{function}: query {position} is empty")
                if self.embedder is None:
                    raise NoEmbedder(
                        f"{function}: collection {self.name!r} has no embedder "
                        f"({self.embedder_name or 'vectors only'}); search with vectors, or reopen it with embedder=")
                vectors = embed_texts(self.embedder, [q[:keyword.MAX_QUERY_CHARACTERS] for q in queries])
            else:
                vectors = queries
            vectors = quantize.normalize(quantize.as_float32_matrix(function, vectors, self.dim))
            if mode != "vector":
                raise TypeError(f"{function}: mode={mode!r} needs text queries")
            return self._search_vectors(function, vectors, k, oversample, rescore, candidates, where, params)
        return [self.search(query, k, mode=mode, oversample=oversample, rescore=rescore, candidates=candidates,
                            where=where, params=params, vector_weight=vector_weight) for query in queries]

    def search_many_sql(self, *, k=DEFAULT_K, oversample=DEFAULT_OVERSAMPLE, rescore=None, candidates="asymmetric",
                        where=None):
        """The SQL that `search_many()` runs for vector queries: `:sqlitebin_vectors` is the n queries
        as one float32 BLOB (n x dim values); rows are (query, id, score, distance, text, metadata),
        by query, best first."""
        mode, k, oversample, rescore, candidates, where, _ = self._search_options(
            "vector", k, oversample, rescore, candidates, where, DEFAULT_VECTOR_WEIGHT)
        t = self.tables
        vector = self._vector_sql(":sqlitebin_k", rescore, candidates, where).replace(
            "SELECT rowid AS id,", "SELECT query, rowid AS id,").replace(":sqlitebin_vector ", ":sqlitebin_vectors ")
        return (
            f"WITH vector AS ({vector})\n"
            f"SELECT v.query, v.id, v.score, v.distance, d.text, d.metadata\n"
            f"FROM vector AS v JOIN {t.documents} AS d ON d.id = v.id\n"
            f"ORDER BY v.query, v.score DESC, v.id"
        )

    def _search_vectors(self, function, vectors, k, oversample, rescore, candidates, where, params):
        sql = self.search_many_sql(k=k, oversample=oversample, rescore=rescore, candidates=candidates, where=where)
        results = [[] for _ in range(len(vectors))]
        if not len(vectors):
            return results
        values = dict(params or {})
        clash = [name for name in values if name.startswith("sqlitebin_")]
        if clash:
            raise InvalidArgument(f"{function}: parameter names starting with 'sqlitebin_' are reserved, got {clash}")
        values.update(sqlitebin_vectors=np.ascontiguousarray(vectors, dtype=quantize.FLOAT32).tobytes(),
                      sqlitebin_k=int(k), sqlitebin_oversample=int(oversample))
        try:
            rows = self.conn.execute(sql, values).fetchall()
        except KeyError as error:  # apsw: a named parameter without a value
            name = error.args[0]
            raise MissingParameter(f"{function}: where uses :{name} but params gives it no value", name) from None
        for row in rows:
            results[row[0]].append(Hit(row[1], float(row[2]), row[3], row[4], _load_metadata(row[5])))
        return results

    # ------------------------------------------------------------------
    # Inspection

    def info(self):
        """Settings and sizes of the collection, as a dict.

        `index_bytes` is what the index's shadow tables take in the file (SQLite's dbstat: whole
        pages, so free space in them counts), and `bytes_per_document` that over the documents.
        """
        count = len(self)
        pattern = self.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "\\_index\\_%"
        index_bytes = self.conn.execute(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE ? ESCAPE '\\'", (pattern,)).fetchall()[0][0]
        chunks = self.conn.execute(f"SELECT count(*) FROM {quote_identifier(self.name + '_index_chunks')}").fetchall()
        return {
            "name": self.name,
            "documents": count,
            "dim": self.dim,
            "code_bytes": self.code_bytes,
            "rescore": self.rescore,
            "index_bytes": index_bytes,
            "bytes_per_document": round(index_bytes / count, 1) if count else None,
            "embedder": self.embedder_name,
            "embedder_version": self.embedder_version,
            "chunks": chunks[0][0],
            "chunk_size": self.chunk_size,
            "calibrated": self.rescore != "int8" or self.ranges is not None,
            "fts": self.fts,
            "tables": {
                "documents": self.name + "_documents",
                "index": self.name + "_index",
                "fts": self.name + "_fts" if self.fts else None,
            },
        }


def _dump_metadata(function, metadata, count):
    if metadata is None:
        return [None] * count
    if isinstance(metadata, dict) or not hasattr(metadata, "__iter__"):
        raise TypeError(f"{function}: metadata must be a list with one dict (or None) per document")
    metadata = list(metadata)
    if len(metadata) != count:
        raise InvalidArgument(f"{function}: got {len(metadata)} metadata entries for {count} documents")
    dumped = []
    for position, entry in enumerate(metadata):
        if entry is None:
            dumped.append(None)
            continue
        if not isinstance(entry, dict):
            raise TypeError(f"{function}: metadata {position} must be a dict or None, got {type(entry).__name__}")
        try:
            dumped.append(json.dumps(entry, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as error:
            raise TypeError(f"{function}: metadata {position} is not JSON-serializable ({error})") from None
        _check_unicode(function, f"metadata {position}", dumped[-1])
    return dumped


def _check_unicode(function, what, text):
    """Raise ValueError for a string SQLite cannot store as UTF-8 (lone surrogates, as from undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidArgument(f"{function}: {what} is not valid Unicode ({error.reason})") from None


def _load_metadata(text):
    return json.loads(text) if text is not None else None
