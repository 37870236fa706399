"""The tables behind a collection, written down once.

A collection named N lives in tables a user can read and write with SQL:

- `N_documents(id INTEGER PRIMARY KEY, text, metadata)`: metadata is JSON text.
- `N_index`: a `sqlitebin` virtual table whose rowid is the document id. It owns the
  binary codes, the rescoring vectors and the int8 ranges (in its shadow tables
  `N_index_config`, `N_index_chunks`, ...; ARCHITECTURE.md describes them), and answers
  `WHERE vector MATCH :query AND k = 10`.
- `N_fts`: an FTS5 index of the texts (text collections), external content from N_documents.

Triggers on N_documents delete the index row and the FTS5 entry with the document, and move
them when a document's id changes, so plain SQL deletes and updates keep the three in step.
The registry table `sqlitebin_collections` holds one row of settings per collection.
"""

SCHEMA_VERSION = 2
REGISTRY = "sqlitebin_collections"
MAX_NAME_LENGTH = 128

REGISTRY_DDL = f"""
CREATE TABLE IF NOT EXISTS {REGISTRY} (
    name TEXT PRIMARY KEY,
    dim INTEGER NOT NULL,
    rescore TEXT NOT NULL,
    embedder TEXT,
    embedder_version TEXT,
    embedder_dim INTEGER,
    fts INTEGER NOT NULL DEFAULT 0,
    schema_version INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)
"""
REGISTRY_COLUMNS = ("name", "dim", "rescore", "embedder", "embedder_version", "embedder_dim", "fts", "schema_version")


def quote_identifier(name):
    """Quote a table or column name for SQL: double quotes, inner quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value):
    """A SQL string literal (only for DDL options that cannot be bound parameters)."""
    return "'" + value.replace("'", "''") + "'"


def validate_name(function, name):
    from .errors import InvalidArgument

    if not isinstance(name, str):
        raise TypeError(f"{function}: collection name must be a string, got {type(name).__name__}")
    if not name or "\x00" in name or len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"{function}: collection name must be 1 to {MAX_NAME_LENGTH} characters with no NUL, got {name!r}"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidArgument(f"{function}: collection name {name!r} is not valid Unicode ({error.reason})") from None
    if name.lower().startswith("sqlite_") or name.lower() == "sqlite":
        # Its tables would be named sqlite_..., which SQLite keeps for itself.
        raise InvalidArgument(
            f"{function}: collection names starting with 'sqlite_' are reserved by SQLite, got {name!r}")
    return name


class TableNames:
    """Quoted names of one collection's tables, ready to put in SQL."""

    def __init__(self, collection):
        self.collection = collection
        self.documents = quote_identifier(collection + "_documents")
        self.index = quote_identifier(collection + "_index")
        self.index_config = quote_identifier(collection + "_index_config")
        self.fts = quote_identifier(collection + "_fts")

    def trigger(self, suffix):
        return quote_identifier(f"{self.collection}_{suffix}")

    def all_tables(self):
        """Every table, in an order that DROP TABLE accepts (the virtual tables drop their own shadow tables)."""
        return [self.fts, self.index, self.documents]


def index_options(dim, rescore, thresholds=None, ranges=None, chunk_size=None):
    """The `sqlitebin(...)` arguments for a collection's index; thresholds and ranges are float32 arrays."""
    options = [f"dim={int(dim)}", f"rescore={rescore}"]
    if chunk_size is not None:
        options.append(f"chunk_size={int(chunk_size)}")
    if thresholds is not None:
        options.append(f"thresholds=X'{thresholds.astype('<f4').tobytes().hex()}'")
    if ranges is not None:
        options.append(f"ranges=X'{ranges.astype('<f4').tobytes().hex()}'")
    return ", ".join(options)


def collection_ddl(tables, options, fts):
    """The CREATE statements for one collection; `options` from index_options()."""
    t = tables
    statements = [
        f"CREATE TABLE {t.documents} (id INTEGER PRIMARY KEY, text TEXT, metadata TEXT)",
        f"CREATE VIRTUAL TABLE {t.index} USING sqlitebin({options})",
        # A document whose id changes takes its vector along (and leaves no stale index row behind).
        f"""CREATE TRIGGER {t.trigger('documents_move')} AFTER UPDATE OF id ON {t.documents}
            WHEN old.id != new.id BEGIN
            DELETE FROM {t.index} WHERE rowid = new.id;
            UPDATE {t.index} SET rowid = new.id WHERE rowid = old.id; END""",
    ]
    cascade = [f"DELETE FROM {t.index} WHERE rowid = old.id;"]
    if fts:
        statements += [
            f"""CREATE VIRTUAL TABLE {t.fts} USING fts5(text, content={quote_literal(tables.collection + '_documents')},
                content_rowid='id', tokenize='porter unicode61')""",
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
