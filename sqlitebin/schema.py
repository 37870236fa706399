"""The tables behind a collection, written down once.

A collection named N lives in plain tables a user can read with SQL:

- `N_documents(id INTEGER PRIMARY KEY, text, metadata)`: metadata is JSON text.
- `N_codes(id INTEGER PRIMARY KEY, code BLOB)`: the packed bit codes.
- `N_vectors(id INTEGER PRIMARY KEY, vector BLOB)`: rescoring vectors (int8 or
  float32; absent when the collection keeps bits only).
- `N_chunks(chunk_id, count, min_id, max_id, ids, codes)`: the same codes
  packed thousands to a row, which `sqlitebin_knn` scans at memory speed.
- `N_changes(id INTEGER PRIMARY KEY, code BLOB)`: codes written since their
  chunk was (code NULL for a deletion). Triggers on N_codes fill it, so plain
  SQL writes are seen by the scan at once; compaction folds it into the chunks.

Deleting a document deletes its code and vector (triggers, so plain SQL
deletes stay consistent too). The registry table `sqlitebin_collections`
holds one row of settings per collection. ARCHITECTURE.md has the full story.
"""

SCHEMA_VERSION = 1
BIT_LAYOUT = "packbits"  # bit i is bit 7 - i % 8 of byte i // 8, set where value > threshold
REGISTRY = "sqlitebin_collections"
MAX_NAME_LENGTH = 128
# The FTS5 tokenizer of text collections: porter stemming over unicode61, with Chinese, Japanese and Korean cut
# into overlapping character pairs by the extension's sqlitebin_cjk wrapper (ext/tokenizer.h), so that a word
# inside a sentence written without spaces is found (東京 in 東京は日本の首都です). Reading or writing the FTS
# table needs the extension loaded.
FTS_TOKENIZER = "sqlitebin_cjk porter unicode61"

REGISTRY_DDL = f"""
CREATE TABLE IF NOT EXISTS {REGISTRY} (
    name TEXT PRIMARY KEY,
    dim INTEGER NOT NULL,
    code_bytes INTEGER NOT NULL,
    bit_layout TEXT NOT NULL,
    thresholds BLOB,
    rescore TEXT NOT NULL,
    ranges BLOB,
    embedder TEXT,
    embedder_version TEXT,
    embedder_dim INTEGER,
    chunk_codes INTEGER NOT NULL,
    fts INTEGER NOT NULL DEFAULT 0,
    schema_version INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)
"""


def quote_identifier(name):
    """Quote a table or column name for SQL: double quotes, inner quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def validate_name(function, name):
    if not isinstance(name, str):
        raise TypeError(f"{function}: collection name must be a string, got {type(name).__name__}")
    if not name or "\x00" in name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"{function}: collection name must be 1 to {MAX_NAME_LENGTH} characters with no NUL, got {name!r}"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{function}: collection name {name!r} is not valid Unicode ({error.reason})") from None
    if name.lower().startswith("sqlite_") or name.lower() == "sqlite":
        # Its tables would be named sqlite_..., which SQLite keeps for itself.
        raise ValueError(f"{function}: collection names starting with 'sqlite_' are reserved by SQLite, got {name!r}")
    return name


class TableNames:
    """Quoted names of one collection's tables, ready to put in SQL."""

    def __init__(self, collection):
        self.collection = collection
        self.documents = quote_identifier(collection + "_documents")
        self.codes = quote_identifier(collection + "_codes")
        self.vectors = quote_identifier(collection + "_vectors")
        self.chunks = quote_identifier(collection + "_chunks")
        self.changes = quote_identifier(collection + "_changes")
        self.fts = quote_identifier(collection + "_fts")
        self.keyword_terms = quote_identifier(collection + "_keyword_terms")

    def trigger(self, suffix):
        return quote_identifier(f"{self.collection}_{suffix}")

    def all_tables(self):
        return [self.keyword_terms, self.fts, self.changes, self.chunks, self.vectors, self.codes, self.documents]


def collection_ddl(tables, rescore, fts):
    """The CREATE statements for one collection."""
    t = tables
    statements = [
        f"CREATE TABLE {t.documents} (id INTEGER PRIMARY KEY, text TEXT, metadata TEXT)",
        f"CREATE TABLE {t.codes} (id INTEGER PRIMARY KEY, code BLOB NOT NULL)",
        f"""CREATE TABLE {t.chunks} (
            chunk_id INTEGER PRIMARY KEY, count INTEGER NOT NULL,
            min_id INTEGER NOT NULL, max_id INTEGER NOT NULL, ids BLOB NOT NULL, codes BLOB NOT NULL)""",
        f"CREATE TABLE {t.changes} (id INTEGER PRIMARY KEY, code BLOB)",
        # Delete-then-insert rather than REPLACE: inside a trigger SQLite applies the
        # conflict policy of the outer statement (an UPSERT aborts), not the trigger's own.
        f"""CREATE TRIGGER {t.trigger('codes_insert')} AFTER INSERT ON {t.codes} BEGIN
            DELETE FROM {t.changes} WHERE id = new.id;
            INSERT INTO {t.changes} (id, code) VALUES (new.id, new.code); END""",
        f"""CREATE TRIGGER {t.trigger('codes_update')} AFTER UPDATE ON {t.codes} BEGIN
            DELETE FROM {t.changes} WHERE id IN (old.id, new.id);
            INSERT INTO {t.changes} (id, code) SELECT old.id, NULL WHERE old.id != new.id;
            INSERT INTO {t.changes} (id, code) VALUES (new.id, new.code); END""",
        f"""CREATE TRIGGER {t.trigger('codes_delete')} AFTER DELETE ON {t.codes} BEGIN
            DELETE FROM {t.changes} WHERE id = old.id;
            INSERT INTO {t.changes} (id, code) VALUES (old.id, NULL); END""",
    ]
    cascade = [f"DELETE FROM {t.codes} WHERE id = old.id;"]
    if rescore != "none":
        statements.append(f"CREATE TABLE {t.vectors} (id INTEGER PRIMARY KEY, vector BLOB NOT NULL)")
        cascade.append(f"DELETE FROM {t.vectors} WHERE id = old.id;")
    if fts:
        statements += [
            f"""CREATE VIRTUAL TABLE {t.fts} USING fts5(text, content={quote_literal(tables.collection + '_documents')},
                content_rowid='id', tokenize='{FTS_TOKENIZER}')""",
            f"""CREATE TRIGGER {t.trigger('fts_insert')} AFTER INSERT ON {t.documents} BEGIN
                INSERT INTO {t.fts} (rowid, text) VALUES (new.id, new.text); END""",
            f"""CREATE TRIGGER {t.trigger('fts_update')} AFTER UPDATE ON {t.documents} BEGIN
                INSERT INTO {t.fts} ({t.fts}, rowid, text) VALUES ('delete', old.id, old.text);
                INSERT INTO {t.fts} (rowid, text) VALUES (new.id, new.text); END""",
        ]
        cascade.append(f"INSERT INTO {t.fts} ({t.fts}, rowid, text) VALUES ('delete', old.id, old.text);")
    statements.append(
        f"CREATE TRIGGER {t.trigger('documents_delete')} AFTER DELETE ON {t.documents} BEGIN "
        + " ".join(cascade)
        + " END"
    )
    return statements


def quote_literal(value):
    """A SQL string literal (only for DDL options that cannot be bound parameters)."""
    return "'" + value.replace("'", "''") + "'"
