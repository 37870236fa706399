"""A sqlitebin database: an apsw connection with the extension loaded and a registry of collections.

The database file is the only state. Each collection's settings (dimension,
rescoring kind, embedder, text index, schema version) are stored in the
`sqlitebin_collections` table, and the index's own settings (thresholds, int8
ranges, chunk size) in its `N_index_config` shadow table; reopening a file uses
exactly those. A file written by sqlitebin 0.1.0 (schema version 1) is upgraded
when it is opened for writing (see migration.py).
"""

import os

import apsw

from . import migration, quantize
from .collection import STORED_KINDS, Collection, _check_choice, _check_int, transaction
from .embedding import WORDLLAMA_DIMS, embedder_name, resolve_embedder
from .errors import CollectionExists, CollectionNotFound, InvalidArgument, SchemaVersionError
from .extension import load
from .schema import (
    REGISTRY,
    REGISTRY_COLUMNS,
    REGISTRY_DDL,
    SCHEMA_VERSION,
    TableNames,
    collection_ddl,
    index_options,
    validate_name,
)

DEFAULT_CHUNK_SIZE = 4096  # the index's default; 64 to 65536
BUSY_TIMEOUT_MS = 5000


def connect(path=":memory:", *, readonly=False, create=True):
    """Open (or create) a sqlitebin database at `path`; ":memory:" for a temporary one.

    Files use WAL mode, so readers and one writer work at once, and wait up to
    5 seconds on a busy lock. `create=False` makes a missing file an error.
    """
    return Database(path, readonly=readonly, create=create)


def embedder_for(spec, dim):
    """The embedder for a collection of `dim` dimensions: "wordllama" picks the matching Matryoshka width."""
    if spec == "wordllama":
        if dim not in WORDLLAMA_DIMS:
            raise InvalidArgument(f"Database.create_collection(): WordLlama gives 64, 128 or 256 dimensions, not {dim}")
        spec = f"wordllama-{dim}"
    return resolve_embedder(spec)


class Database:
    """An apsw connection (`.conn`) with sqlitebin loaded, and the collections in it."""

    def __init__(self, path=":memory:", *, readonly=False, create=True):
        path = os.fspath(path)
        if path != ":memory:" and not create and not os.path.exists(path):
            raise FileNotFoundError(f"connect(): no database at {path!r}")
        flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        self.path = path
        self.conn = apsw.Connection(path, flags=flags)
        self.conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        load(self.conn)
        self.readonly = readonly
        if not readonly:
            try:
                migration.upgrade(self.conn)
            except apsw.CantOpenError:
                pass  # a file that cannot be read now (a read-only mount, say) fails where it is first used


    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.conn.close()

    def __repr__(self):
        return f"<Database {self.path!r}>"

    # ------------------------------------------------------------------

    def collections(self):
        """Names of the collections in this database, sorted."""
        if not self._has_registry():
            return []
        return [row[0] for row in self.conn.execute(f"SELECT name FROM {REGISTRY} ORDER BY name")]

    def create_collection(self, name, dim=256, *, embedder="wordllama", rescore="int8", thresholds=None,
                          fts=None, chunk_size=DEFAULT_CHUNK_SIZE, exists_ok=False):
        """Create a collection and return it.

        - `dim`: vector dimension (default 256; with WordLlama, 64, 128 or 256 by Matryoshka truncation).
        - `embedder`: "wordllama" (default), "wordllama-128" etc., any callable taking a list of
          strings and returning an (n, dim) float array, or None for a vectors-only collection.
        - `rescore`: rescoring vectors to store: "int8" (default, dim bytes), "float32" (4 x dim) or "none".
        - `thresholds`: per-dimension binarization thresholds (default: 0, the sign).
        - `fts`: keep an FTS5 index of the texts for keyword and hybrid search
          (default: on when there is an embedder, i.e. a text collection).
        - `chunk_size`: codes per chunk of the index (default 4096; a multiple of 64 from 64 to 65536).
        - `exists_ok`: return the existing collection instead of raising when `name` exists.
        """
        function = "Database.create_collection()"
        validate_name(function, name)
        dim = _check_int(function, "dim", dim, 1, 65536)
        rescore = _check_choice(function, "rescore", rescore, STORED_KINDS)
        chunk_size = _check_int(function, "chunk_size", chunk_size, 64, 65536)
        if chunk_size % 64:
            raise InvalidArgument(f"{function}: chunk_size must be a multiple of 64 from 64 to 65536, got {chunk_size}")
        existing = self._settings(name)
        if existing is not None:
            if not exists_ok:
                raise CollectionExists(f"{function}: collection {name!r} already exists")
            if (existing["dim"], existing["rescore"]) != (dim, rescore):
                raise CollectionExists(
                    f"{function}: collection {name!r} exists with dim={existing['dim']}, "
                    f"rescore={existing['rescore']!r}, not dim={dim}, rescore={rescore!r}")
            return self.collection(name, embedder=embedder if not isinstance(embedder, str) else None)
        embed = embedder_for(embedder, dim) if embedder is not None else None
        if embed is not None and getattr(embed, "dim", dim) != dim:
            raise InvalidArgument(f"{function}: embedder {embedder_name(embed)!r} gives {embed.dim} dimensions, not {dim}")
        if thresholds is not None:
            thresholds = quantize.as_float32_matrix(function, thresholds, dim)[0]
        fts = embed is not None if fts is None else bool(fts)
        settings = {
            "name": name,
            "dim": dim,
            "rescore": rescore,
            "embedder": embedder_name(embed) if embed is not None else None,
            "embedder_version": getattr(embed, "version", None) if embed is not None else None,
            "embedder_dim": getattr(embed, "dim", dim) if embed is not None else None,
            "fts": int(fts),
            "schema_version": SCHEMA_VERSION,
        }
        if self.path != ":memory:":
            self.conn.execute("PRAGMA journal_mode = WAL")  # persistent: set once, with the first collection
        with transaction(self.conn):
            self.conn.execute(REGISTRY_DDL)
            options = index_options(dim, rescore, thresholds=thresholds, chunk_size=chunk_size)
            for statement in collection_ddl(TableNames(name), options, fts):
                self.conn.execute(statement)
            columns = ", ".join(REGISTRY_COLUMNS)
            self.conn.execute(
                f"INSERT INTO {REGISTRY} ({columns}) VALUES ({', '.join('?' * len(REGISTRY_COLUMNS))})",
                [settings[c] for c in REGISTRY_COLUMNS],
            )
        return Collection(self, settings, embed)

    def collection(self, name, *, embedder=None):
        """Reopen a collection with its stored settings.

        A WordLlama collection gets its embedder back by itself; for another
        embedder pass the same callable as `embedder=` (its name must match the
        stored one), or leave it out to use the collection with vectors only.
        """
        function = "Database.collection()"
        validate_name(function, name)
        settings = self._settings(name)
        if settings is None:
            known = ", ".join(map(repr, self.collections())) or "none"
            raise CollectionNotFound(f"{function}: no collection named {name!r} (collections: {known})")
        if settings["schema_version"] != SCHEMA_VERSION:
            raise SchemaVersionError(migration.version_problem(function, self.path, name, settings["schema_version"]))
        stored = settings["embedder"]
        if embedder is None and stored is not None and stored.startswith("wordllama"):
            embed = embedder_for("wordllama", settings["dim"])
        elif embedder is not None:
            embed = embedder_for(embedder, settings["dim"])
            if stored is not None and embedder_name(embed) != stored:
                raise InvalidArgument(
                    f"{function}: collection {name!r} was built with embedder {stored!r}, "
                    f"not {embedder_name(embed)!r}"
                )
        else:
            embed = None
        return Collection(self, settings, embed)

    def drop_collection(self, name):
        """Delete a collection and all its tables."""
        function = "Database.drop_collection()"
        validate_name(function, name)
        if self._settings(name) is None:
            raise CollectionNotFound(f"{function}: no collection named {name!r}")
        with transaction(self.conn):
            for table in TableNames(name).all_tables():
                self.conn.execute(f"DROP TABLE IF EXISTS {table}")
            self.conn.execute(f"DELETE FROM {REGISTRY} WHERE name = ?", (name,))

    def vacuum(self):
        """Give the space of deleted documents back to the file system.

        Rewrites each collection's index without its deleted slots ('optimize') and merges its
        FTS5 index (FTS5 keeps deleted entries until its segments merge), then runs VACUUM, which rewrites the file: https://sqlite.org/lang_vacuum.html
        """
        for name in self.collections():
            tables = TableNames(name)
            # The index keeps deleted slots until 'optimize' rewrites its chunks without them.
            self.conn.execute(f"INSERT INTO {tables.index} ({tables.index}) VALUES ('optimize')")
            if self._settings(name)["fts"]:
                self.conn.execute(f"INSERT INTO {tables.fts} ({tables.fts}) VALUES ('optimize')")
        self.conn.execute("VACUUM")
        if self.path != ":memory:":
            # In WAL mode VACUUM writes the new pages to the WAL; the file shrinks at the checkpoint.
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _has_registry(self):
        return bool(self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (REGISTRY,)).fetchall())

    def _settings(self, name):
        if not self._has_registry():
            return None
        if migration.registry_version(self.conn) == 1:  # a read-only file from 0.1.0: enough to name the problem
            rows = self.conn.execute(f"SELECT name, dim, rescore, schema_version FROM {REGISTRY} WHERE name = ?",
                                     (name,)).fetchall()
            return dict(zip(("name", "dim", "rescore", "schema_version"), rows[0])) if rows else None
        rows = self.conn.execute(
            f"SELECT {', '.join(REGISTRY_COLUMNS)} FROM {REGISTRY} WHERE name = ?", (name,)).fetchall()
        return dict(zip(REGISTRY_COLUMNS, rows[0])) if rows else None
