"""String keys for a collection's documents, for frameworks whose ids are strings (LangChain, LlamaIndex).

A collection's documents have integer ids. `KeyedCollection` keeps a mapping from each string key to its
document id in one table, `sqlitebin_keys(collection, key, id)`, beside the collection's own tables; the
documents table and its `metadata` JSON stay exactly what the caller gave, so SQL and metadata filters see
no extra fields. Writes go through the public `Collection` API (`add()` for new keys, so ids are assigned
as usual, and `upsert()` for known ones) and the mapping is written in the same transaction.

The mapping follows the documents: a trigger on the documents table removes a key when its document is
deleted by any route (plain SQL, `Collection.delete()`), and when a collection is created here the keys
left over from a dropped collection of the same name are cleared first.
"""

import json
import threading
import uuid

import numpy as np

from .collection import _check_unicode, transaction
from .metadata_filter import where_from_filter
from .schema import quote_identifier

KEYS_TABLE = "sqlitebin_keys"
KEYS_DDL = f"""
CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (collection, key),
    UNIQUE (collection, id)
) WITHOUT ROWID
"""


def _sql_string(text):
    return "'" + text.replace("'", "''") + "'"


class KeyedCollection:
    """A collection addressed by string keys. Created lazily: `dim` is known at the first write.

    Every method holds one lock, so one store can be used from the worker threads that async
    frameworks run sync code in (apsw connections must not be used by two threads at once).
    """

    def __init__(self, function, database, name, *, rescore="float32", embedder=None, oversample=10):
        self.function = function
        self.database = database
        self.conn = database.conn
        self.name = name
        self.rescore = rescore
        self.embedder = embedder
        self.oversample = oversample
        self.lock = threading.RLock()
        self.collection = None
        if name in database.collections():
            self.collection = database.collection(name, embedder=embedder)
            with transaction(self.conn):
                self._create_key_storage()

    # ------------------------------------------------------------------

    def _create_key_storage(self):
        self.conn.execute(KEYS_DDL)
        documents = self.collection.tables.documents
        trigger = quote_identifier(f"{self.name}_keys_delete")
        self.conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS {trigger} AFTER DELETE ON {documents} BEGIN "
            f"DELETE FROM {KEYS_TABLE} WHERE collection = {_sql_string(self.name)} AND id = old.id; END"
        )

    def _ensure_collection(self, dim):
        if self.collection is not None:
            return self.collection
        # Keys left by a dropped collection of this name go first. create_collection() runs on its own,
        # outside any transaction, because it may switch a new file to WAL mode.
        with transaction(self.conn):
            self.conn.execute(KEYS_DDL)
            self.conn.execute(f"DELETE FROM {KEYS_TABLE} WHERE collection = ?", (self.name,))
        collection = self.database.create_collection(self.name, dim, embedder=self.embedder, rescore=self.rescore)
        with transaction(self.conn):
            self.collection = collection
            self._create_key_storage()
        return self.collection

    def ids_for(self, keys):
        """{key: document id} for the keys that exist."""
        if self.collection is None or not keys:
            return {}
        rows = self.conn.execute(
            f"SELECT key, id FROM {KEYS_TABLE} WHERE collection = ? AND key IN (SELECT value FROM json_each(?))",
            (self.name, json.dumps(list(keys))),
        ).fetchall()
        return dict(rows)

    def keys_for(self, ids):
        """{document id: key} for the ids that have one."""
        if self.collection is None or not ids:
            return {}
        rows = self.conn.execute(
            f"SELECT id, key FROM {KEYS_TABLE} WHERE collection = ? AND id IN (SELECT value FROM json_each(?))",
            (self.name, json.dumps([int(i) for i in ids])),
        ).fetchall()
        return dict(rows)

    def check_keys(self, keys, count):
        keys = list(keys)
        if len(keys) != count:
            raise ValueError(f"{self.function}: got {len(keys)} ids for {count} texts")
        for position, key in enumerate(keys):
            if key is not None and not isinstance(key, str):
                raise TypeError(f"{self.function}: ids must be strings, id {position} is {key!r}")
            if key is not None:
                _check_unicode(self.function, f"id {position}", key)
        given = [key for key in keys if key is not None]
        if len(set(given)) != len(given):
            duplicate = next(key for key in given if given.count(key) > 1)
            raise ValueError(f"{self.function}: id {duplicate!r} appears twice in one call")
        return [key if key is not None else str(uuid.uuid4()) for key in keys]

    # ------------------------------------------------------------------

    def upsert(self, keys, texts, vectors, metadatas):
        """Write documents under `keys` (a None key gets a new UUID); return the keys. One transaction."""
        texts = list(texts)
        keys = self.check_keys(keys if keys is not None else [None] * len(texts), len(texts))
        if metadatas is None:
            metadatas = [None] * len(texts)
        metadatas = [m if m else None for m in metadatas]  # {} is stored as NULL and read back as {}
        if len(metadatas) != len(texts):
            raise ValueError(f"{self.function}: got {len(metadatas)} metadata entries for {len(texts)} texts")
        vectors = np.asarray(vectors, dtype=np.float32)
        if not texts:
            return []
        if vectors.ndim != 2 or len(vectors) != len(texts) or vectors.shape[1] < 1:
            raise ValueError(
                f"{self.function}: the embeddings have shape {vectors.shape}, expected ({len(texts)}, dim)")
        with self.lock:
            created = self.collection is None
            collection = self._ensure_collection(int(vectors.shape[1]))
            try:
                return self._write(collection, keys, texts, vectors, metadatas)
            except BaseException:
                if created:  # bad input writes nothing, not even the collection its first write made
                    self.collection = None
                    self.database.drop_collection(self.name)
                raise

    def _write(self, collection, keys, texts, vectors, metadatas):
        """The writes of `upsert()`, in one transaction."""
        with transaction(self.conn):
            known = self.ids_for(keys)
            old = [i for i, key in enumerate(keys) if key in known]
            new = [i for i, key in enumerate(keys) if key not in known]
            if old:
                collection.upsert([texts[i] for i in old], vectors=vectors[old],
                                  ids=[known[keys[i]] for i in old], metadata=[metadatas[i] for i in old])
            assigned = {keys[i]: known[keys[i]] for i in old}
            if new:
                new_ids = collection.add([texts[i] for i in new], vectors=vectors[new],
                                         metadata=[metadatas[i] for i in new])
                assigned.update((keys[i], document_id) for i, document_id in zip(new, new_ids))
            # Every key is written again, known ones too: should an upsert ever replace a row by deleting
            # it, the delete trigger would have dropped its key. OR REPLACE also drops a stale key still
            # holding a reassigned id.
            self.conn.executemany(
                f"INSERT OR REPLACE INTO {KEYS_TABLE} (collection, key, id) VALUES (?, ?, ?)",
                [(self.name, key, document_id) for key, document_id in assigned.items()],
            )
        return keys

    def delete(self, keys=None):
        """Delete the documents with these keys (all documents when `keys` is None); missing keys are skipped."""
        with self.lock:
            if self.collection is None:
                return 0
            with transaction(self.conn):
                if keys is None:
                    ids = [row[0] for row in self.conn.execute(f"SELECT id FROM {self.collection.tables.documents}")]
                else:
                    ids = list(self.ids_for(self.check_keys(keys, len(keys))).values())
                return self.collection.delete(ids) if ids else 0

    def condition(self, filter=None, keys=None):
        """``(where, params)`` on the documents table: a metadata filter dict and, when `keys` is given,
        only the documents with those keys. ``where`` is None when there is no condition."""
        where, params = where_from_filter(self.function, filter)
        if keys is not None:
            restriction = (
                f"id IN (SELECT id FROM {KEYS_TABLE} WHERE collection = :keyed_collection "
                "AND key IN (SELECT value FROM json_each(:keyed_keys)))")
            where = f"({where}) AND {restriction}" if where else restriction
            params = dict(params, keyed_collection=self.name, keyed_keys=json.dumps(list(keys)))
        return where, params

    def delete_where(self, filter=None, keys=None):
        """Delete the documents matching `condition(filter, keys)`; return how many."""
        where, params = self.condition(filter, keys)
        with self.lock:
            if self.collection is None:
                return 0
            with transaction(self.conn):
                ids = [row[0] for row in self.conn.execute(
                    f"SELECT id FROM {self.collection.tables.documents} WHERE ({where or 1})", params)]
                return self.collection.delete(ids) if ids else 0

    def select(self, filter=None, keys=None):
        """(key, text, metadata) of the documents matching `condition(filter, keys)`, by id."""
        where, params = self.condition(filter, keys)
        with self.lock:
            if self.collection is None:
                return []
            rows = self.conn.execute(
                f"SELECT d.id, k.key, d.text, d.metadata FROM {self.collection.tables.documents} AS d "
                f"LEFT JOIN {KEYS_TABLE} AS k ON k.collection = :keyed_collection AND k.id = d.id "
                f"WHERE ({where or 1}) ORDER BY d.id", dict(params, keyed_collection=self.name)).fetchall()
        return [(key, text, json.loads(metadata) if metadata is not None else None) for _, key, text, metadata in rows]

    def get(self, keys):
        """(key, text, metadata) for the keys that exist, in the order given."""
        with self.lock:
            known = self.ids_for(list(keys))
            if not known:
                return []
            hits = {hit.id: hit for hit in self.collection.get(list(known.values()))}
        return [(key, hits[known[key]].text, hits[known[key]].metadata)
                for key in keys if key in known and known[key] in hits]

    def search(self, vector, k, filter=None, oversample=None, keys=None):
        """(key, text, metadata, score) of the k nearest documents matching `condition(filter, keys)`, best first."""
        where, params = self.condition(filter, keys)
        with self.lock:
            if self.collection is None:
                return []
            hits = self.collection.search(np.asarray(vector, dtype=np.float32), k,
                                          oversample=oversample or self.oversample, where=where, params=params)
            keys = self.keys_for([hit.id for hit in hits])
        return [(keys.get(hit.id), hit.text, hit.metadata, hit.score) for hit in hits]

    def __len__(self):
        with self.lock:
            return len(self.collection) if self.collection is not None else 0
