"""A collection sharded over SQLite files, each written and searched by a Dask worker.

`ShardedCollection` spreads documents over N shard files by id (shard = id mod N), each an ordinary
sqlitebin collection of the same name that the `sqlitebin` command and `Database.collection()` open
as they are. Every shard has a home worker (shard i goes to worker i mod W of the sorted worker
addresses); its writes and searches are Dask tasks sent there, so N shards on W machines embed, write
and scan in parallel. Needs `pip install sqlitebin[dask]`.

Exactness: a search gives the hits, scores and order that one collection holding all the documents
gives. A single collection takes the best m = k x oversample candidates by the code estimate (ties
to the smaller id), rescores them, and keeps the best k (score descending, then id). Each shard
returns its own best m candidates with their estimates and rescored scores; the global best m are
among their union, so the coordinator picks them by (estimate, id), then the best k by (score, id).
The int8 ranges are calibrated once for the whole collection, by the rule one collection's index
follows: until it holds 4096 rows they are kept as float32 and rescored exactly; the add that reaches
4096 calibrates the ranges from those 4096 rows (the ones present plus the first of the add). Each
shard's index is then rebuilt with these ranges fixed (`ranges=`), so every shard quantizes alike.

Failures: a shard task whose worker dies is run again by the scheduler on another worker (any
worker can open any shard: the directory must be reachable from every worker, e.g. the same machine
or a shared disk); when that is impossible the call raises ShardUnavailableError naming the shard.
Results are assembled only from every shard's answer, never from part of them.

Not supported across shards: keyword and hybrid search (BM25 weights depend on each shard's own
statistics, so scores from different shards are not comparable) and `upsert()`.
"""

import json
import os
import threading
from pathlib import Path

import numpy as np

from . import quantize
from .collection import (
    CANDIDATE_KINDS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_K,
    DEFAULT_OVERSAMPLE,
    EMBED_BATCH_SIZE,
    MAX_K,
    MAX_OVERSAMPLE,
    RESCORE_KINDS,
    STORED_KINDS,
    Collection,
    Hit,
    _check_choice,
    _check_int,
    _check_unicode,
    _dump_metadata,
    _load_metadata,
    check_documents,
    check_ids,
    check_where,
)
from .database import Database, embedder_for
from .embedding import embed_texts, embedder_name
from .schema import index_options, quote_identifier, validate_name

MANIFEST_FORMAT = 1
MAX_SHARDS = 4096
# The index's default calibration_rows: an int8 index calibrates its ranges once it holds this many rows.
CALIBRATION_ROWS = 4096


class ShardUnavailableError(RuntimeError):
    """A shard's task failed for a reason other than bad input (its worker was lost, its file is missing)."""


def _client_type():
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("sqlitebin.sharded needs Dask distributed: pip install 'sqlitebin[dask]'") from None
    return Client


def manifest_path(directory, name):
    return Path(directory) / f"{name}.sharded.json"


def shard_path(directory, name, shard, shards):
    return Path(directory) / f"{name}.shard-{shard:04d}-of-{shards:04d}.db"


# ----------------------------------------------------------------------
# Worker side: module-level functions, so tasks pickle by reference.

_worker_state = threading.local()


def _open_database(path):
    """This worker thread's connection to a shard file (kept open: its page cache stays warm)."""
    databases = getattr(_worker_state, "databases", None)
    if databases is None:
        databases = _worker_state.databases = {}
    if path not in databases:
        if not os.path.exists(path):
            raise FileNotFoundError(f"sqlitebin.sharded: shard file {path} does not exist")
        databases[path] = Database(path, create=False)
    return databases[path]


def _worker_embedder(spec, dim):
    """A WordLlama name is loaded once per worker thread; a callable arrives with the task."""
    if not isinstance(spec, str):
        return spec
    embedders = getattr(_worker_state, "embedders", None)
    if embedders is None:
        embedders = _worker_state.embedders = {}
    if (spec, dim) not in embedders:
        embedders[spec, dim] = embedder_for(spec, dim)
    return embedders[spec, dim]


def _shard_collection(path, name, embedder_spec=None):
    database = _open_database(path)
    settings = database._settings(name)
    if settings is None:
        raise FileNotFoundError(f"sqlitebin.sharded: shard file {path} holds no collection {name!r}")
    embedder = _worker_embedder(embedder_spec, settings["dim"]) if embedder_spec is not None else None
    return Collection(database, settings, embedder)


def _shard_create(path, name, dim, embedder_spec, rescore, thresholds, fts):
    database = Database(path)
    try:
        database.create_collection(name, dim, embedder=embedder_spec, rescore=rescore, thresholds=thresholds, fts=fts)
    finally:
        database.close()


def _shard_ids_present(path, name, ids):
    collection = _shard_collection(path, name)
    return [hit.id for hit in collection.get(ids)]


def _shard_max_id(path, name):
    collection = _shard_collection(path, name)
    return collection.conn.execute(f"SELECT max(id) FROM {collection.tables.documents}").fetchall()[0][0]


def _shard_staged_vectors(path, name):
    """The float32 vectors of an uncalibrated int8 shard (exact: they wait for calibration as float32)."""
    collection = _shard_collection(path, name)
    rows = collection.conn.execute(f"SELECT vector FROM {collection.tables.index}").fetchall()
    return np.frombuffer(b"".join(row[0] for row in rows), dtype="<f4").reshape(len(rows), collection.dim)


def _shard_fix_ranges(path, name, ranges):
    """Rebuild the shard's index with the collection-wide int8 ranges fixed, its rows put back.

    A shard must never calibrate from its own rows. Before calibration it holds fewer than
    CALIBRATION_ROWS rows (all in float32), so this is cheap; the documents and their triggers
    stay as they are.
    """
    collection = _shard_collection(path, name)
    if collection.ranges is not None:
        return
    t = collection.tables
    ranges = np.asarray(ranges, dtype=quantize.FLOAT32)
    options = index_options(collection.dim, collection.rescore, thresholds=collection.thresholds, ranges=ranges,
                            chunk_size=collection.chunk_size)
    with collection.conn:
        rows = collection.conn.execute(f"SELECT rowid, vector FROM {t.index}").fetchall()
        collection.conn.execute(f"DROP TABLE {t.index}")
        collection.conn.execute(f"CREATE VIRTUAL TABLE {t.index} USING sqlitebin({options})")
        collection.conn.executemany(f"INSERT INTO {t.index} (rowid, vector) VALUES (?, ?)", rows)


def _shard_add(path, name, payload, embedder_spec, batch_size):
    texts, vectors, ids, metadata = payload
    collection = _shard_collection(path, name, embedder_spec if vectors is None else None)
    return collection.add(texts, vectors=vectors, ids=ids, metadata=metadata, batch_size=batch_size)


def _shard_delete(path, name, ids):
    return _shard_collection(path, name).delete(ids)


def _shard_get(path, name, ids):
    return _shard_collection(path, name).get(ids)


def _shard_len(path, name):
    return len(_shard_collection(path, name))


def _shard_search(path, name, vectors, depth, rescore, candidates, where, params):
    """For each query: this shard's best `depth` candidates, each with its estimate and rescored score.

    Two searches of the index in one statement: the candidates rescored (k = depth, oversample = 1:
    the same `depth` candidates a search with k x oversample = depth takes), and the same candidates'
    own scores (rescore = 'none', k = depth: a second scan, cheaper here than a prefilter on the
    first one's ids). Returns one list per query of
    (id, estimate, score, distance, text, metadata_json).
    """
    collection = _shard_collection(path, name)
    t = collection.tables
    chunks = quote_identifier(name + "_index_chunks")
    if not collection.conn.execute(f"SELECT EXISTS (SELECT 1 FROM {chunks})").fetchall()[0][0]:
        # A shard that never held a row has nothing to find: skip the statement.
        return [[] for _ in vectors]
    filter_sql = f" AND rowid IN (SELECT id FROM {t.documents} WHERE ({where}))" if where else ""
    sql = (
        f"WITH rescored AS MATERIALIZED (SELECT rowid AS id, score, distance FROM {t.index}\n"
        f"    WHERE vector MATCH :sqlitebin_vector AND k = :sqlitebin_depth AND oversample = 1\n"
        f"    AND rescore = '{rescore}' AND candidates = '{candidates}'{filter_sql}),\n"
        f"estimated AS MATERIALIZED (SELECT rowid AS id, score FROM {t.index}\n"
        f"    WHERE vector MATCH :sqlitebin_vector AND k = :sqlitebin_depth AND oversample = 1\n"
        f"    AND rescore = 'none' AND candidates = '{candidates}'{filter_sql})\n"
        f"SELECT r.id, e.score, r.score, r.distance, d.text, d.metadata\n"
        f"FROM rescored AS r LEFT JOIN estimated AS e ON e.id = r.id JOIN {t.documents} AS d ON d.id = r.id"
    )
    results = []
    for vector in vectors:
        values = dict(params or {})
        values.update(sqlitebin_vector=np.ascontiguousarray(vector, dtype=quantize.FLOAT32).tobytes(),
                      sqlitebin_depth=int(depth))
        try:
            rows = collection.conn.execute(sql, values).fetchall()
        except KeyError as error:  # apsw: a named parameter without a value
            raise ValueError(
                f"ShardedCollection.search(): where uses :{error.args[0]} but params gives it no value") from None
        if any(row[1] is None for row in rows):  # both searches take the same candidates; never expected
            raise RuntimeError(f"sqlitebin.sharded: shard {path}: the rescored and estimated candidates differ")
        results.append(rows)
    return results


# ----------------------------------------------------------------------
# Coordinator side


class ShardedCollection:
    """A collection split over `shards` SQLite files in `directory`, served by the workers of a Dask `client`.

    Create with `ShardedCollection.create()`, reopen with `ShardedCollection.open()`.
    """

    def __init__(self, client, directory, manifest, embedder):
        self.client = client
        self.directory = Path(directory)
        self.name = manifest["name"]
        self.shards = manifest["shards"]
        self.dim = manifest["dim"]
        self.rescore = manifest["rescore"]
        self.embedder_name = manifest["embedder"]
        self.thresholds = (np.asarray(manifest["thresholds"], dtype=quantize.FLOAT32)
                           if manifest["thresholds"] is not None else None)
        self.ranges = np.asarray(manifest["ranges"], dtype=quantize.FLOAT32) if manifest["ranges"] is not None else None
        self._manifest = manifest
        self._embedder_spec = embedder  # what workers resolve: a WordLlama name or the callable itself
        self._embedder = None  # resolved lazily on the coordinator, for queries
        self.paths = [str(shard_path(self.directory, self.name, i, self.shards)) for i in range(self.shards)]

    def __repr__(self):
        return f"<ShardedCollection {self.name!r} shards={self.shards} dim={self.dim} rescore={self.rescore}>"

    # ------------------------------------------------------------------
    # Creating and opening

    @classmethod
    def create(cls, client, directory, name, *, shards, dim=256, embedder="wordllama", rescore="int8",
               thresholds=None, fts=None):
        """Create `shards` shard files for collection `name` in `directory` (made if missing) and return it.

        `dim`, `embedder`, `rescore`, `thresholds` and `fts` are those of `Database.create_collection()`;
        `embedder` is a WordLlama name, a callable (sent to the workers, so it must pickle) or None.
        Raises ValueError when the collection already exists there or an argument is bad.
        """
        function = "ShardedCollection.create()"
        _check_client(function, client)
        validate_name(function, name)
        shards = _check_int(function, "shards", shards, 1, MAX_SHARDS)
        dim = _check_int(function, "dim", dim, 1, 65536)
        rescore = _check_choice(function, "rescore", rescore, STORED_KINDS)
        if thresholds is not None:
            thresholds = quantize.as_float32_matrix(function, thresholds, dim)[0]
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if manifest_path(directory, name).exists():
            raise ValueError(f"{function}: sharded collection {name!r} already exists in {directory}")
        existing = [i for i in range(shards) if shard_path(directory, name, i, shards).exists()]
        if existing:
            raise ValueError(f"{function}: shard file {shard_path(directory, name, existing[0], shards)} already exists")
        # Resolve here first so a bad embedder fails before any file is made.
        resolved = embedder_for(embedder, dim) if embedder is not None else None
        if resolved is not None and getattr(resolved, "dim", dim) != dim:
            raise ValueError(f"{function}: embedder {embedder_name(resolved)!r} gives {resolved.dim} dimensions, not {dim}")
        spec = embedder if embedder is None or isinstance(embedder, str) else resolved
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "shards": shards,
            "dim": dim,
            "rescore": rescore,
            "embedder": embedder_name(resolved) if resolved is not None else None,
            "embedder_spec": embedder if isinstance(embedder, str) else None,
            "thresholds": thresholds.tolist() if thresholds is not None else None,
            "ranges": None,
            "fts": fts,
        }
        collection = cls(client, directory, manifest, spec)
        collection._embedder = resolved
        collection._run("create", [
            (i, _shard_create, (collection.paths[i], name, dim, spec, rescore, thresholds, fts))
            for i in range(shards)])
        collection._save_manifest()
        return collection

    @classmethod
    def open(cls, client, directory, name, *, embedder=None):
        """Reopen a sharded collection. WordLlama collections get their embedder back by themselves;
        for another embedder pass the same callable as `embedder=`."""
        function = "ShardedCollection.open()"
        _check_client(function, client)
        path = manifest_path(directory, name)
        if not path.exists():
            raise ValueError(f"{function}: no sharded collection {name!r} in {directory} ({path.name} is missing)")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{function}: {path} has format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}")
        missing = [p for i in range(manifest["shards"])
                   if not (p := shard_path(directory, name, i, manifest["shards"])).exists()]
        if missing:
            raise ValueError(f"{function}: shard file {missing[0]} is missing")
        if embedder is not None:
            resolved = embedder_for(embedder, manifest["dim"])
            if manifest["embedder"] is not None and embedder_name(resolved) != manifest["embedder"]:
                raise ValueError(f"{function}: collection {name!r} was built with embedder "
                                 f"{manifest['embedder']!r}, not {embedder_name(resolved)!r}")
            spec = embedder if isinstance(embedder, str) else resolved
        elif manifest["embedder_spec"] is not None:
            spec = manifest["embedder_spec"]
        else:
            spec = None
        return cls(client, directory, manifest, spec)

    def _save_manifest(self):
        path = manifest_path(self.directory, self.name)
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self._manifest, indent=1), encoding="utf-8")
        os.replace(temporary, path)

    # ------------------------------------------------------------------
    # Running tasks on the shards' workers

    def shard_of(self, ids):
        """The shard of each id: id mod shards."""
        return np.mod(np.asarray(ids, dtype=np.int64), self.shards)

    def home_workers(self):
        """The home worker of each shard: worker i mod W of the sorted worker addresses."""
        workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            raise ShardUnavailableError(f"ShardedCollection {self.name!r}: the Dask cluster has no workers")
        return [workers[i % len(workers)] for i in range(self.shards)]

    def _run(self, operation, tasks):
        """Run (shard, function, args) tasks on the shards' home workers; return their results in order.

        Every result is awaited; the first failure raises (bad input as itself, anything else as
        ShardUnavailableError naming the shard), so no caller ever sees part of the answers.
        """
        homes = self.home_workers()
        futures = [
            self.client.submit(function, *args, workers=[homes[shard]], allow_other_workers=True, pure=False)
            for shard, function, args in tasks
        ]
        results = []
        try:
            for (shard, _, _), future in zip(tasks, futures):
                try:
                    results.append(future.result())
                except (ValueError, TypeError, KeyError) as error:
                    raise error
                except Exception as error:
                    if type(error).__module__.startswith("apsw"):
                        raise
                    raise ShardUnavailableError(
                        f"ShardedCollection.{operation}(): shard {shard} ({self.paths[shard]}) failed: "
                        f"{type(error).__name__}: {error}") from error
        finally:
            for future in futures:
                future.release()
        return results

    # ------------------------------------------------------------------
    # Writing

    def __len__(self):
        return sum(self._run("len", [(i, _shard_len, (self.paths[i], self.name)) for i in range(self.shards)]))

    def add(self, texts=None, *, vectors=None, ids=None, metadata=None, batch_size=DEFAULT_BATCH_SIZE):
        """Add documents; return their ids in input order. Same arguments as `Collection.add()`.

        Ids (given, or assigned after the largest id present) route each document to shard
        id mod shards; the shards embed (texts) and write in parallel, each in batches of
        `batch_size`, one transaction per batch. Bad input, an id already present included,
        raises ValueError or TypeError before anything is written.
        """
        function = "ShardedCollection.add()"
        batch_size = _check_int(function, "batch_size", batch_size, 1, 1_000_000)
        texts, vectors, count = check_documents(function, texts, vectors, self.dim, self._embedder_spec is not None,
                                                self.name, self.embedder_name)
        ids = check_ids(function, ids, count)
        metadata = list(metadata) if metadata is not None and not isinstance(metadata, dict) else metadata
        _dump_metadata(function, metadata, count)  # validation only; each shard stores its own part
        if count == 0:
            return []

        if ids is None:
            largest = [m for m in self._run("add", [(i, _shard_max_id, (self.paths[i], self.name))
                                                    for i in range(self.shards)]) if m is not None]
            first = max(largest) + 1 if largest else 1
            ids = list(range(first, first + count))
        else:
            shard_of = self.shard_of(ids)
            present = self._run("add", [
                (i, _shard_ids_present, (self.paths[i], self.name, [ids[j] for j in np.flatnonzero(shard_of == i)]))
                for i in range(self.shards) if (shard_of == i).any()])
            clash = [i for found in present for i in found]
            if clash:
                raise ValueError(f"{function}: id {clash[0]} already exists in collection {self.name!r}")

        if self.rescore == "int8" and self.ranges is None:
            self._calibrate_if_due(function, texts, vectors, count)

        shard_of = self.shard_of(ids)
        homes = self.home_workers()
        tasks = []
        for shard in range(self.shards):
            rows = np.flatnonzero(shard_of == shard)
            if len(rows) == 0:
                continue
            # Sent straight to the home worker: large arguments given to submit() travel through
            # the scheduler, several times slower for blocks of vectors.
            [payload] = self.client.scatter([(
                [texts[j] for j in rows] if texts is not None else None,
                vectors[rows] if vectors is not None else None,
                [ids[j] for j in rows],
                [metadata[j] for j in rows] if metadata is not None else None,
            )], workers=[homes[shard]], direct=True, hash=False)
            tasks.append((shard, _shard_add, (self.paths[shard], self.name, payload, self._embedder_spec, batch_size)))
        try:
            self._run("add", tasks)
        finally:
            for _, _, args in tasks:
                args[2].release()
        return ids

    def _calibrate_if_due(self, function, texts, vectors, count):
        """Calibrate the int8 ranges when this add brings the collection to CALIBRATION_ROWS rows.

        One collection's index calibrates from the rows it holds when their number reaches
        CALIBRATION_ROWS (min and max per dimension: the order of the rows does not matter), so
        the sample is every row the shards hold (all still float32) plus the first rows of the add.
        """
        staged = self._run("add", [(i, _shard_staged_vectors, (self.paths[i], self.name)) for i in range(self.shards)])
        present = sum(len(v) for v in staged)
        if present + count < CALIBRATION_ROWS:
            return
        needed = CALIBRATION_ROWS - present
        if vectors is not None:
            new = vectors[:needed]
        else:
            new = quantize.as_float32_matrix(
                function, embed_texts(self._query_embedder(), texts[:needed], batch_size=EMBED_BATCH_SIZE), self.dim)
        sample = np.concatenate([v for v in staged if len(v)] + [quantize.normalize(new)])
        self.ranges = quantize.calibrate_ranges(sample)
        self._run("add", [(i, _shard_fix_ranges, (self.paths[i], self.name, self.ranges)) for i in range(self.shards)])
        self._manifest["ranges"] = self.ranges.tolist()
        self._save_manifest()

    def delete(self, ids):
        """Delete documents by id; return how many existed."""
        ids = check_ids("ShardedCollection.delete()", ids, None)
        return sum(self._run("delete", self._routed(_shard_delete, ids)))

    def get(self, ids):
        """Fetch documents by id as Hits (score 1.0, no distance) in the order given; missing ids are skipped."""
        ids = check_ids("ShardedCollection.get()", ids, None)
        found = {hit.id: hit for hits in self._run("get", self._routed(_shard_get, ids)) for hit in hits}
        return [found[i] for i in ids if i in found]

    def _routed(self, function, ids):
        shard_of = self.shard_of(ids) if ids else np.zeros(0, dtype=np.int64)
        return [(i, function, (self.paths[i], self.name, [ids[j] for j in np.flatnonzero(shard_of == i)]))
                for i in range(self.shards) if (shard_of == i).any()]

    # ------------------------------------------------------------------
    # Search

    def _query_embedder(self):
        if self._embedder is None:
            if self._embedder_spec is None:
                return None
            self._embedder = embedder_for(self._embedder_spec, self.dim)
        return self._embedder

    def _query_vectors(self, function, queries):
        """Normalised float32 query rows for a list of texts or an (n, dim) array."""
        if isinstance(queries, np.ndarray) or (queries and not isinstance(queries[0], str)):
            vectors = quantize.as_float32_matrix(function, queries, self.dim)
        else:
            for position, query in enumerate(queries):
                if not isinstance(query, str):
                    raise TypeError(f"{function}: query {position} is {type(query).__name__}; give all texts or all vectors")
                _check_unicode(function, f"query {position}", query)
                if not query.strip():
                    raise ValueError(f"{function}: query {position} is empty")
            if self._query_embedder() is None:
                raise ValueError(f"{function}: collection {self.name!r} has no embedder "
                                 f"({self.embedder_name or 'vectors only'}); search with vectors, or reopen it with embedder=")
            vectors = quantize.as_float32_matrix(function, embed_texts(self._query_embedder(), list(queries)), self.dim)
        return quantize.normalize(vectors)

    def search(self, query, k=DEFAULT_K, *, oversample=DEFAULT_OVERSAMPLE, rescore=None, candidates="asymmetric",
               where=None, params=None):
        """The k best documents for a text or vector query, best first: the hits and order that one
        collection holding every shard's documents gives. Arguments as in `Collection.search()`
        (vector mode). Raises ShardUnavailableError when a shard cannot answer."""
        if isinstance(query, str):
            queries = [query]
        else:
            queries = quantize.as_float32_matrix("ShardedCollection.search()", query, self.dim)
            if len(queries) != 1:
                raise ValueError(f"ShardedCollection.search(): expected one query vector, got {len(queries)}")
        return self._search("ShardedCollection.search()", queries, k, oversample, rescore, candidates, where, params)[0]

    def search_many(self, queries, k=DEFAULT_K, *, oversample=DEFAULT_OVERSAMPLE, rescore=None,
                    candidates="asymmetric", where=None, params=None):
        """`search()` for a list of texts or an (n, dim) array of vectors: one list of Hits per query,
        with one task per shard for the whole batch."""
        function = "ShardedCollection.search_many()"
        if isinstance(queries, str):
            raise TypeError(f"{function}: queries must be a list of texts or an array of vectors, not one string")
        if not isinstance(queries, np.ndarray):
            queries = list(queries)
        if len(queries) == 0:
            return []
        return self._search(function, queries, k, oversample, rescore, candidates, where, params)

    def _search(self, function, queries, k, oversample, rescore, candidates, where, params):
        k = _check_int(function, "k", k, 1, MAX_K)
        oversample = _check_int(function, "oversample", oversample, 1, MAX_OVERSAMPLE)
        rescore = self.rescore if rescore is None else _check_choice(function, "rescore", rescore, RESCORE_KINDS)
        if rescore in ("int8", "float32") and rescore != self.rescore:
            raise ValueError(f"{function}: rescore={rescore!r} needs {rescore} vectors, but collection {self.name!r} "
                             f"stores {self.rescore}; use rescore='bits' or 'none'"
                             + (" or 'int8'" if self.rescore == "int8" else ""))
        candidates = _check_choice(function, "candidates", candidates, CANDIDATE_KINDS)
        where = check_where(function, where)
        clash = [name for name in (params or {}) if name.startswith("sqlitebin_")]
        if clash:
            raise ValueError(f"{function}: parameter names starting with 'sqlitebin_' are reserved, got {clash}")
        vectors = self._query_vectors(function, queries)
        # As in the index: k x oversample candidates are rescored; with rescore='none', k are taken.
        depth = k if rescore == "none" else k * oversample
        per_shard = self._run("search", [
            (i, _shard_search, (self.paths[i], self.name, vectors, depth, rescore, candidates, where, params))
            for i in range(self.shards)])
        results = []
        for q in range(len(vectors)):
            rows = [row for shard_rows in per_shard for row in shard_rows[q]]
            rows.sort(key=lambda row: (-row[1], row[0]))  # the global candidates: estimate, then id
            best = sorted(rows[:depth], key=lambda row: (-row[2], row[0]))[:k]
            results.append([Hit(row[0], float(row[2]), row[3], row[4], _load_metadata(row[5])) for row in best])
        return results

    def info(self):
        """Settings, shard files and document counts per shard."""
        counts = self._run("len", [(i, _shard_len, (self.paths[i], self.name)) for i in range(self.shards)])
        return {
            "name": self.name,
            "shards": self.shards,
            "documents": sum(counts),
            "documents_per_shard": counts,
            "dim": self.dim,
            "rescore": self.rescore,
            "embedder": self.embedder_name,
            "paths": list(self.paths),
            "home_workers": self.home_workers(),
        }


def _check_client(function, client):
    Client = _client_type()
    if not isinstance(client, Client):
        raise TypeError(f"{function}: client must be a dask.distributed.Client, got {type(client).__name__}")
