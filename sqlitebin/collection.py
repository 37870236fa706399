"""A collection: texts or vectors stored as binary codes plus rescoring vectors, searched in SQL.

Search runs in two stages, both in one SQL statement that `search_sql()`
returns: candidates (k x oversample) come from the binary codes, by Hamming
distance or by the asymmetric score (the float query against the codes read
as +1/-1), through the compiled `sqlitebin_knn` scan (`method="knn"`) or a
plain row scan with `hamming()` (`method="sql"`); then the candidates are
re-ranked with the float query against the stored int8 or float32 vectors, or
the bits themselves. Scores are cosine similarities (vectors are L2-normalised
at ingest): higher is better and comparable across queries. Distances are
Hamming bits between the query's code and the document's.
"""

import contextlib
import functools
import inspect
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import apsw
import numpy as np

from . import keyword, quantize
from .embedding import embed_texts, embedder_name
from .schema import TableNames

RESCORE_KINDS = ("int8", "float32", "bits", "none")
STORED_KINDS = ("int8", "float32", "none")
CANDIDATE_KINDS = ("asymmetric", "hamming")
METHODS = ("knn", "sql")
MODES = ("vector", "keyword", "hybrid")
MAX_K = 100_000  # also the limit of sqlitebin_knn
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
        raise ValueError(f"{function}: {name} must be from {low} to {high}, got {value}")
    return int(value)


def _check_choice(function, name, value, choices):
    if value not in choices:
        raise ValueError(f"{function}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
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
        raise ValueError(f"{function}: where must be a non-empty SQL condition, got {where!r}")
    _check_unicode(function, "where", where)
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
            raise ValueError(f"{function}: where must not contain SQL comments, got {where!r}")
        elif ch == ";":
            raise ValueError(f"{function}: where must be a single SQL condition without ';', got {where!r}")
        elif ch == "?":
            # The search binds its own named parameters, so a positional one could never get a value.
            raise ValueError(f"{function}: where must use named parameters such as :id, not '?', got {where!r}")
        i += 1
    return where


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
        self.code_bytes = settings["code_bytes"]
        self.rescore = settings["rescore"]
        self.chunk_codes = settings["chunk_codes"]
        self.fts = bool(settings["fts"])
        self.embedder_name = settings["embedder"]
        self.embedder_version = settings["embedder_version"]
        self.thresholds = (
            np.frombuffer(settings["thresholds"], dtype=quantize.FLOAT32).copy() if settings["thresholds"] else None
        )
        self.ranges = np.frombuffer(settings["ranges"], dtype=quantize.FLOAT32).copy() if settings["ranges"] else None
        self.embedder = embedder
        self._tokenize = None
        if self.fts:
            keyword.ensure_terms_table(self.conn, self.name)

    def __repr__(self):
        return f"<Collection {self.name!r} dim={self.dim} rescore={self.rescore} documents={len(self)}>"

    def __len__(self):
        return self.conn.execute(f"SELECT count(*) FROM {self.tables.documents}").fetchall()[0][0]

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
        is called after each. Raises ValueError or TypeError for bad input,
        before anything is written.
        """
        return self._write("Collection.add()", texts, vectors, ids, metadata, batch_size, progress, replace=False)

    def upsert(self, texts=None, *, vectors=None, ids, metadata=None, batch_size=DEFAULT_BATCH_SIZE,
               progress: Optional[Callable[[int, int], None]] = None):
        """Insert or replace documents by id; same arguments as `add()` but `ids` is required."""
        if ids is None:
            raise ValueError("Collection.upsert(): ids are required")
        return self._write("Collection.upsert()", texts, vectors, ids, metadata, batch_size, progress, replace=True)

    def delete(self, ids):
        """Delete documents by id (codes, vectors and index entries go with them); return how many existed."""
        ids = self._check_ids("Collection.delete()", ids, None)
        if not ids:
            return 0
        with transaction(self.conn):
            existing = self._count_existing(ids)
            self.conn.executemany(f"DELETE FROM {self.tables.documents} WHERE id = ?", [(i,) for i in ids])
            self._compact()
        self._refresh_keyword_terms()
        return existing

    def get(self, ids):
        """Fetch documents by id as Hits with score 1.0 and no distance, in the order given; missing ids are skipped."""
        ids = self._check_ids("Collection.get()", ids, None)
        rows = {
            row[0]: row
            for row in self.conn.execute(
                f"SELECT id, text, metadata FROM {self.tables.documents} WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
        }
        return [Hit(i, 1.0, None, rows[i][1], _load_metadata(rows[i][2])) for i in ids if i in rows]

    def _count_existing(self, ids):
        return self.conn.execute(
            f"SELECT count(*) FROM {self.tables.documents} WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        ).fetchall()[0][0]

    def _check_ids(self, function, ids, count):
        if ids is None:
            return None
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
            raise TypeError(f"{function}: ids must be a sequence of integers, got {type(ids).__name__}")
        checked = []
        for position, value in enumerate(ids):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{function}: ids must be integers; id {position} is {value!r}")
            if not -(2**63) <= int(value) < 2**63:
                raise ValueError(f"{function}: id {position} ({value}) does not fit in 64 bits")
            checked.append(int(value))
        if count is not None and len(checked) != count:
            raise ValueError(f"{function}: got {len(checked)} ids for {count} documents")
        if count is not None and len(set(checked)) != len(checked):
            raise ValueError(f"{function}: ids must be unique")
        return checked

    def _write(self, function, texts, vectors, ids, metadata, batch_size, progress, replace):
        batch_size = _check_int(function, "batch_size", batch_size, 1, 1_000_000)
        if texts is None and vectors is None:
            raise ValueError(f"{function}: give texts, vectors, or both")
        if isinstance(texts, str):
            raise TypeError(f"{function}: texts must be a list of strings, not one string")
        texts = list(texts) if texts is not None else None
        if texts is not None:
            for position, text in enumerate(texts):
                if not isinstance(text, str):
                    raise TypeError(f"{function}: text {position} is {type(text).__name__}, not str")
                _check_unicode(function, f"text {position}", text)
        if vectors is not None:
            vectors = quantize.as_float32_matrix(function, vectors, self.dim)
        count = len(texts) if texts is not None else len(vectors)
        if texts is not None and vectors is not None and len(vectors) != count:
            raise ValueError(f"{function}: got {count} texts but {len(vectors)} vectors")
        if vectors is None and self.embedder is None:
            raise ValueError(
                f"{function}: collection {self.name!r} has no embedder ({self.embedder_name or 'vectors only'}); "
                "pass vectors=, or reopen it with embedder="
            )
        ids = self._check_ids(function, ids, count)
        metadata_json = _dump_metadata(function, metadata, count)
        if count == 0:
            return []

        # Batches follow input order, so assigned ids do too; within a batch,
        # embed_texts sends texts to the embedder sorted by length (padding
        # embedders waste less work on batches of similar lengths).
        assigned = [None] * count
        done = 0
        for start in range(0, count, batch_size):
            batch = np.arange(start, min(count, start + batch_size))
            batch_texts = [texts[i] for i in batch] if texts is not None else None
            if vectors is not None:
                batch_vectors = vectors[batch]
            else:
                batch_vectors = quantize.as_float32_matrix(
                    function, embed_texts(self.embedder, batch_texts, batch_size=EMBED_BATCH_SIZE), self.dim)
            batch_ids = [ids[i] for i in batch] if ids is not None else None
            batch_metadata = [metadata_json[i] for i in batch]
            # The int8 ranges are calibrated once, from the first batch a collection receives.
            new_ranges = None
            if self.rescore == "int8" and self.ranges is None:
                new_ranges = quantize.calibrate_ranges(quantize.normalize(batch_vectors))
            written = self._write_batch(function, batch_texts, batch_vectors, batch_ids, batch_metadata, replace,
                                        new_ranges)
            for position, new_id in zip(batch, written):
                assigned[position] = new_id
            done += len(batch)
            if progress is not None:
                progress(done, count)
        self._refresh_keyword_terms()
        return assigned

    def _write_batch(self, function, texts, vectors, ids, metadata, replace, new_ranges):
        """Write one batch in one transaction; `new_ranges`, when given, are stored with it."""
        vectors = quantize.normalize(vectors)
        codes = quantize.binary_quantize(vectors, self.thresholds)
        ranges = new_ranges if new_ranges is not None else self.ranges
        if self.rescore == "int8":
            stored = quantize.int8_quantize(vectors, ranges)
        elif self.rescore == "float32":
            stored = vectors
        else:
            stored = None
        t = self.tables
        with transaction(self.conn):
            if new_ranges is not None:
                # Another connection may have calibrated the collection since this one was opened: its ranges win,
                # so that every stored vector is read back with the ranges it was quantized with.
                current = self.conn.execute(
                    "SELECT ranges FROM sqlitebin_collections WHERE name = ?", (self.name,)).fetchall()
                if current and current[0][0] is not None:
                    new_ranges = None
                    self.ranges = np.frombuffer(current[0][0], dtype=quantize.FLOAT32).copy()
                    stored = quantize.int8_quantize(vectors, self.ranges)
                else:
                    self.conn.execute(
                        "UPDATE sqlitebin_collections SET ranges = ? WHERE name = ?", (new_ranges.tobytes(), self.name)
                    )
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
                    raise ValueError(
                        f"{function}: id {clash[0][0]} already exists in collection {self.name!r}; use upsert() to replace it"
                    )
            text_column = texts if texts is not None else [None] * len(ids)
            if replace:
                # An update, not INSERT OR REPLACE: REPLACE would delete without firing
                # the delete triggers that keep codes, vectors and the text index in step.
                self.conn.executemany(
                    f"INSERT INTO {t.documents} (id, text, metadata) VALUES (?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET text = excluded.text, metadata = excluded.metadata",
                    zip(ids, text_column, metadata),
                )
                self.conn.executemany(
                    f"INSERT INTO {t.codes} (id, code) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET code = excluded.code",
                    zip(ids, (c.tobytes() for c in codes)),
                )
                if stored is not None:
                    self.conn.executemany(
                        f"INSERT INTO {t.vectors} (id, vector) VALUES (?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET vector = excluded.vector",
                        zip(ids, (v.tobytes() for v in stored)),
                    )
            else:
                self.conn.executemany(
                    f"INSERT INTO {t.documents} (id, text, metadata) VALUES (?, ?, ?)", zip(ids, text_column, metadata)
                )
                self.conn.executemany(
                    f"INSERT INTO {t.codes} (id, code) VALUES (?, ?)", zip(ids, (c.tobytes() for c in codes))
                )
                if stored is not None:
                    self.conn.executemany(
                        f"INSERT INTO {t.vectors} (id, vector) VALUES (?, ?)", zip(ids, (v.tobytes() for v in stored))
                    )
            self._compact()
        if new_ranges is not None:
            self.ranges = new_ranges
        return ids

    # ------------------------------------------------------------------
    # Chunk storage

    def compact(self):
        """Fold the change table into the chunk table (done after every write through this API)."""
        with transaction(self.conn):
            self._compact()

    def _compact(self):
        t = self.tables
        rows = self.conn.execute(f"SELECT id, code FROM {t.changes} ORDER BY id").fetchall()
        if not rows:
            return
        changed = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        stale_chunks = self.conn.execute(
            f"SELECT chunk_id, ids, codes FROM {t.chunks} WHERE max_id >= ? AND min_id <= ?",
            (int(changed[0]), int(changed[-1])),
        ).fetchall()
        for chunk_id, ids_blob, codes_blob in stale_chunks:
            chunk_ids = np.frombuffer(ids_blob, dtype="<i8")
            keep = ~np.isin(chunk_ids, changed)
            if keep.all():
                continue
            if not keep.any():
                self.conn.execute(f"DELETE FROM {t.chunks} WHERE chunk_id = ?", (chunk_id,))
                continue
            chunk_codes = np.frombuffer(codes_blob, dtype=np.uint8).reshape(len(chunk_ids), self.code_bytes)
            self._write_chunk(chunk_id, chunk_ids[keep], chunk_codes[keep])
        live = [(row[0], row[1]) for row in rows if row[1] is not None]
        if live:
            new_ids = np.fromiter((row[0] for row in live), dtype=np.int64, count=len(live))
            new_codes = np.frombuffer(b"".join(row[1] for row in live), dtype=np.uint8).reshape(len(live), self.code_bytes)
            tail = self.conn.execute(
                f"SELECT chunk_id, ids, codes FROM {t.chunks} ORDER BY chunk_id DESC LIMIT 1"
            ).fetchall()
            if tail and len(tail[0][1]) // 8 < self.chunk_codes:
                chunk_id, ids_blob, codes_blob = tail[0]
                tail_ids = np.frombuffer(ids_blob, dtype="<i8")
                room = self.chunk_codes - len(tail_ids)
                tail_codes = np.frombuffer(codes_blob, dtype=np.uint8).reshape(len(tail_ids), self.code_bytes)
                self._write_chunk(chunk_id, np.concatenate([tail_ids, new_ids[:room]]),
                                  np.concatenate([tail_codes, new_codes[:room]]))
                new_ids, new_codes = new_ids[room:], new_codes[room:]
            for start in range(0, len(new_ids), self.chunk_codes):
                self._write_chunk(None, new_ids[start : start + self.chunk_codes], new_codes[start : start + self.chunk_codes])
        self.conn.execute(f"DELETE FROM {t.changes}")

    def _write_chunk(self, chunk_id, ids, codes):
        self.conn.execute(
            f"REPLACE INTO {self.tables.chunks} (chunk_id, count, min_id, max_id, ids, codes) VALUES (?, ?, ?, ?, ?, ?)",
            (chunk_id, len(ids), int(ids.min()), int(ids.max()),
             np.ascontiguousarray(ids, dtype="<i8").tobytes(), np.ascontiguousarray(codes).tobytes()),
        )

    # ------------------------------------------------------------------
    # Search

    def query_vector(self, query):
        """The normalised float32 query vector for a text or a vector."""
        if isinstance(query, str):
            if not query.strip():
                raise ValueError("Collection.search(): the query is empty")
            if self.embedder is None:
                raise ValueError(
                    f"Collection.search(): collection {self.name!r} has no embedder "
                    f"({self.embedder_name or 'vectors only'}); search with a vector, or reopen it with embedder="
                )
            # Like keyword search, only the start of a very long query is read (a megabyte would take seconds).
            vector = embed_texts(self.embedder, [query[:keyword.MAX_QUERY_CHARACTERS]])
        else:
            vector = query
        vector = quantize.as_float32_matrix("Collection.search()", vector, self.dim)
        if len(vector) != 1:
            raise ValueError(f"Collection.search(): expected one query vector, got {len(vector)}")
        return quantize.normalize(vector)[0]

    def default_mode(self, query=""):
        """The mode `search()` uses when given none: 'hybrid' for a text query on a collection with a text
        index, else 'vector'. Hybrid is the default because
        it ranks best (nDCG@10 0.70 on the Debian dev queries, against 0.69 for BM25 and 0.49 for vectors)
        at a few milliseconds a query (README, "Keyword and hybrid search")."""
        return "hybrid" if isinstance(query, str) and self.fts else "vector"

    def _search_options(self, mode, k, oversample, rescore, candidates, method, where, vector_weight):
        function = "Collection.search()"
        mode = _check_choice(function, "mode", mode, MODES)
        if mode != "vector" and not self.fts:
            raise ValueError(
                f"{function}: mode={mode!r} needs a text index, but collection {self.name!r} has none "
                "(create it with fts=True)")
        k = _check_int(function, "k", k, 1, MAX_K)
        oversample = _check_int(function, "oversample", oversample, 1, MAX_OVERSAMPLE)
        rescore = self.rescore if rescore is None else _check_choice(function, "rescore", rescore, RESCORE_KINDS)
        if rescore in ("int8", "float32") and rescore != self.rescore:
            raise ValueError(
                f"{function}: rescore={rescore!r} needs {rescore} vectors, but collection {self.name!r} stores "
                f"{self.rescore}; use rescore='bits' or 'none'" + (" or 'int8'" if self.rescore == "int8" else "")
            )
        candidates = _check_choice(function, "candidates", candidates, CANDIDATE_KINDS)
        method = _check_choice(function, "method", method, METHODS)
        where = check_where(function, where)
        if isinstance(vector_weight, bool) or not isinstance(vector_weight, (int, float)) or not (
                0.0 <= vector_weight <= 100.0):
            raise ValueError(f"{function}: vector_weight must be a number from 0 to 100, got {vector_weight!r}")
        return mode, k, oversample, rescore, candidates, method, where, float(vector_weight)

    def search_sql(self, *, mode=None, k=DEFAULT_K, oversample=DEFAULT_OVERSAMPLE, rescore=None,
                   candidates="asymmetric", method="knn", where=None, vector_weight=DEFAULT_VECTOR_WEIGHT):
        """The SQL that `search()` runs with these options (for a text query when `mode` is None); its
        parameters are named `:sqlitebin_*`."""
        if mode is None:
            mode = self.default_mode()
        mode, k, oversample, rescore, candidates, method, where, vector_weight = self._search_options(
            mode, k, oversample, rescore, candidates, method, where, vector_weight)
        t = self.tables
        if mode == "vector":
            return (
                f"WITH candidates AS ({self._candidates_sql(candidates, method, where)}),\n"
                f"vector AS ({self._rescored_sql(rescore, ':sqlitebin_k')})\n"
                f"SELECT c.id, c.score, c.distance, d.text, d.metadata\n"
                f"FROM vector AS c JOIN {t.documents} AS d ON d.id = c.id\n"
                f"ORDER BY c.score DESC, c.id"
            )
        if mode == "keyword":
            return (
                f"WITH {self._keyword_sql(where, ':sqlitebin_k')}\n"
                f"SELECT c.id, c.score, hamming(b.code, :sqlitebin_code) AS distance, d.text, d.metadata\n"
                f"FROM keyword AS c JOIN {t.documents} AS d ON d.id = c.id JOIN {t.codes} AS b ON b.id = c.id\n"
                f"ORDER BY c.score DESC, c.id"
            )
        # Hybrid: the keyword top and the vector top, each document scored by its BM25
        # relative to the best keyword hit (1 for it, 0 when absent) plus the weighted
        # cosine from the rescoring vectors, which keyword-only documents get too.
        score, join = self._score_sql(rescore, "c")
        return (
            f"WITH candidates AS ({self._candidates_sql(candidates, method, where)}),\n"
            f"vector AS MATERIALIZED ({self._rescored_sql(rescore, ':sqlitebin_vector_depth')}),\n"
            f"{self._keyword_sql(where, ':sqlitebin_keyword_depth')},\n"
            f"keyword_scaled AS (SELECT id, coalesce(score / nullif(max(score) OVER (), 0), 1.0) AS part FROM keyword),\n"
            f"fused AS (SELECT id FROM keyword UNION SELECT id FROM vector)\n"
            f"SELECT c.id, coalesce(k.part, 0.0) + :sqlitebin_vector_weight * {score} AS score,\n"
            f"  hamming(b.code, :sqlitebin_code) AS distance, d.text, d.metadata\n"
            f"FROM fused AS c LEFT JOIN keyword_scaled AS k ON k.id = c.id{join}\n"
            f"  JOIN {t.codes} AS b ON b.id = c.id JOIN {t.documents} AS d ON d.id = c.id\n"
            f"ORDER BY score DESC, c.id\n"
            f"LIMIT :sqlitebin_k"
        )

    def _candidates_sql(self, candidates, method, where):
        """k x oversample candidates from the codes: (id, distance, estimate)."""
        t = self.tables
        if method == "knn":
            allowed = f", (SELECT sqlitebin_ids(id) FROM {t.documents} WHERE ({where}))" if where else ""
            return (
                "SELECT id, distance, score AS estimate FROM sqlitebin_knn("
                f":sqlitebin_collection, :sqlitebin_query, :sqlitebin_candidates, '{candidates}'{allowed})"
            )
        filter_sql = f" WHERE id IN (SELECT id FROM {t.documents} WHERE ({where}))" if where else ""
        if candidates == "hamming":
            return (
                f"SELECT id, hamming(code, :sqlitebin_code) AS distance, "
                f"1.0 - 2.0 * hamming(code, :sqlitebin_code) / {self.dim}.0 AS estimate "
                f"FROM {t.codes}{filter_sql} ORDER BY distance, id LIMIT :sqlitebin_candidates"
            )
        return (
            f"SELECT id, hamming(code, :sqlitebin_code) AS distance, "
            f"dot_bits(:sqlitebin_vector, code) / {math.sqrt(self.dim)!r} AS estimate "
            f"FROM {t.codes}{filter_sql} ORDER BY estimate DESC, id LIMIT :sqlitebin_candidates"
        )

    def _score_sql(self, rescore, alias):
        """The rescoring expression for the document `alias`.id, and the join it needs."""
        t = self.tables
        if rescore == "int8":
            return "dot_int8(:sqlitebin_vector, v.vector, :sqlitebin_ranges)", f" JOIN {t.vectors} AS v ON v.id = {alias}.id"
        if rescore == "float32":
            return "dot_float32(:sqlitebin_vector, v.vector)", f" JOIN {t.vectors} AS v ON v.id = {alias}.id"
        # 'bits', and 'none' outside the candidate list: the code read as +1/-1.
        return f"dot_bits(:sqlitebin_vector, s.code) / {math.sqrt(self.dim)!r}", f" JOIN {t.codes} AS s ON s.id = {alias}.id"

    def _rescored_sql(self, rescore, limit):
        """The candidates rescored with the float query: (id, score, distance), best `limit` first."""
        score, join = ("c.estimate", "") if rescore == "none" else self._score_sql(rescore, "c")
        return f"SELECT c.id, {score} AS score, c.distance FROM candidates AS c{join} ORDER BY score DESC, c.id LIMIT {limit}"

    def _keyword_sql(self, where, limit):
        """The CTEs of the BM25 top `limit` over the FTS5 index, ending with keyword(id, score), score = -bm25
        (higher is better); see sqlitebin/keyword.py for how it avoids scoring every matching document."""
        t = self.tables
        return keyword.keyword_ctes(t.fts, t.documents, t.keyword_terms, where, limit)

    def query_terms(self, text):
        """The distinct terms keyword search looks for in `text`: [[token, phrase], ...] (see sqlitebin/keyword.py)."""
        if self._tokenize is None:
            self._tokenize = keyword.tokenizer(self.conn, self.name + "_fts")
        return keyword.query_terms(self._tokenize, text)

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
                      candidates="asymmetric", params=None, query_text=None, vector_weight=DEFAULT_VECTOR_WEIGHT):
        """The parameter values for `search_sql()` given a normalised query vector (and, for
        keyword and hybrid modes, the query text)."""
        vector = np.ascontiguousarray(vector, dtype=quantize.FLOAT32)
        code = quantize.binary_quantize(vector.reshape(1, -1), self.thresholds)[0].tobytes()
        k, oversample = int(k), int(oversample)  # NumPy integers pass validation, but apsw cannot bind them
        values = dict(params or {})
        clash = [name for name in values if name.startswith("sqlitebin_")]
        if clash:
            raise ValueError(f"Collection.search(): parameter names starting with 'sqlitebin_' are reserved, got {clash}")
        values.update(
            sqlitebin_collection=self.name,
            sqlitebin_query=vector.tobytes() if candidates == "asymmetric" else code,
            sqlitebin_code=code,
            sqlitebin_vector=vector.tobytes(),
            sqlitebin_candidates=min(MAX_K, (max(k, HYBRID_VECTOR_DEPTH) if mode == "hybrid" else k) * oversample),
            sqlitebin_k=k,
            sqlitebin_vector_depth=max(k, HYBRID_VECTOR_DEPTH),
            sqlitebin_keyword_depth=max(k, HYBRID_KEYWORD_DEPTH),
            sqlitebin_ranges=self.ranges.tobytes() if self.ranges is not None else None,
            sqlitebin_terms=keyword.terms_json(self.query_terms(query_text)) if query_text is not None else None,
            sqlitebin_vector_weight=float(vector_weight),
        )
        return values

    def search(self, query, k=DEFAULT_K, *, mode=None, oversample=DEFAULT_OVERSAMPLE, rescore=None,
               candidates="asymmetric", method="knn", where=None, params=None,
               vector_weight=DEFAULT_VECTOR_WEIGHT):
        """The k best documents for a text or vector query, best first.

        - `mode`: 'vector', 'keyword' (SQLite FTS5 BM25 over the texts) or 'hybrid' (both, fused);
          keyword and hybrid need a text query and a collection with a text index. Default
          (`default_mode()`): 'hybrid' for a text query on a collection with a text index, else 'vector'.
        - A text query is read up to its first 4,096 characters, and keyword search uses its first 32
          distinct terms, each once (sqlitebin/keyword.py). A running search stops with apsw.InterruptError
          when another thread calls `conn.interrupt()`.
        - `oversample` (default 10): k x oversample candidates are taken from the codes, then rescored.
        - `rescore`: 'int8' or 'float32' (the stored vectors; default: what the collection stores),
          'bits' (the codes as +1/-1, no extra storage) or 'none' (the candidate score as is).
        - `candidates`: 'asymmetric' (default: float query against +1/-1 codes) or 'hamming'.
        - `method`: 'knn' (default: the compiled chunk scan) or 'sql' (a row scan with hamming()).
        - `where`: a SQL condition on the documents table (columns id, text, metadata; e.g.
          "json_extract(metadata, '$.lang') = :lang"), applied before the top-k, with `params`.
        - `vector_weight` (hybrid, default 0.6): the fused score is the document's BM25 relative
          to the best keyword hit (1 for the best, 0 when absent) plus vector_weight x cosine.

        Scores: cosine similarity (vector), minus BM25 (keyword, higher is better), or the
        fused score (hybrid). Returns fewer than k hits only when fewer documents match.
        Raises ValueError or TypeError for bad arguments (a `where` parameter missing from
        `params` included) and apsw.SQLError for a `where` that is not valid SQL.
        """
        if mode is None:
            mode = self.default_mode(query)
        sql = self.search_sql(mode=mode, k=k, oversample=oversample, rescore=rescore, candidates=candidates,
                              method=method, where=where, vector_weight=vector_weight)
        if mode != "vector" and not isinstance(query, str):
            raise TypeError(f"Collection.search(): mode={mode!r} needs a text query, got {type(query).__name__}")
        if isinstance(query, str):
            _check_unicode("Collection.search()", "the query", query)
        if mode == "keyword":
            if not query.strip():
                raise ValueError("Collection.search(): the query is empty")
            vector = np.zeros(self.dim, dtype=quantize.FLOAT32)
        else:
            vector = self.query_vector(query)
        values = self.search_params(vector, mode=mode, k=k, oversample=oversample, candidates=candidates,
                                    params=params, query_text=query if mode != "vector" else None,
                                    vector_weight=vector_weight)
        if mode == "keyword" and values["sqlitebin_terms"] == "[]":
            return []  # no words; in hybrid mode the vectors alone rank
        try:
            rows = self.conn.execute(sql, values).fetchall()
        except KeyError as error:  # apsw: a named parameter without a value
            raise ValueError(
                f"Collection.search(): where uses :{error.args[0]} but params gives it no value") from None
        return [Hit(row[0], float(row[1]), row[2], row[3], _load_metadata(row[4])) for row in rows]

    # ------------------------------------------------------------------
    # Inspection

    def info(self):
        """Settings and sizes of the collection, as a dict."""
        t = self.tables
        count = len(self)
        vector_bytes = {"int8": self.dim, "float32": 4 * self.dim, "none": 0}[self.rescore]
        chunks, chunked = self.conn.execute(f"SELECT count(*), coalesce(sum(count), 0) FROM {t.chunks}").fetchall()[0]
        pending = self.conn.execute(f"SELECT count(*) FROM {t.changes}").fetchall()[0][0]
        return {
            "name": self.name,
            "documents": count,
            "dim": self.dim,
            "code_bytes": self.code_bytes,
            "rescore": self.rescore,
            "bytes_per_document": self.code_bytes * 2 + vector_bytes,  # codes are kept in rows and in chunks
            "embedder": self.embedder_name,
            "embedder_version": self.embedder_version,
            "chunks": chunks,
            "chunked_codes": chunked,
            "pending_changes": pending,
            "chunk_codes": self.chunk_codes,
            "fts": self.fts,
            "tables": {
                "documents": self.name + "_documents",
                "codes": self.name + "_codes",
                "vectors": self.name + "_vectors" if self.rescore != "none" else None,
                "chunks": self.name + "_chunks",
                "changes": self.name + "_changes",
            },
        }


def _dump_metadata(function, metadata, count):
    if metadata is None:
        return [None] * count
    if isinstance(metadata, dict) or not hasattr(metadata, "__iter__"):
        raise TypeError(f"{function}: metadata must be a list with one dict (or None) per document")
    metadata = list(metadata)
    if len(metadata) != count:
        raise ValueError(f"{function}: got {len(metadata)} metadata entries for {count} documents")
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
        raise ValueError(f"{function}: {what} is not valid Unicode ({error.reason})") from None


def _load_metadata(text):
    return json.loads(text) if text is not None else None
