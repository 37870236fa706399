"""Upgrading databases written by sqlitebin 0.1.0 (schema version 1) to the virtual-table layout (version 2).

Version 1 kept a collection N in plain tables: N_codes (one packed code per document), N_vectors
(int8 or float32 rescoring vectors), N_chunks and N_changes (the same codes packed for the scan,
and the writes not yet folded into them), with thresholds and int8 ranges in the registry. The
rows of N_codes and N_vectors are the truth; chunks and changes are derived from them and are
dropped. Version 2 keeps the vectors in N_index, a `sqlitebin` virtual table (schema.py).

`upgrade()` runs when a database is opened for writing, in one transaction (all collections or
none). Each document's vector goes into N_index so that the index holds the same codes and the
same rescoring vectors as before:

- float32: the stored vector as it is (its code is the same by construction);
- int8: the index is created with the collection's ranges (no recalibration), and the vector is
  the dequantized one; where dequantizing moved a value across its threshold (values within half
  an int8 step of it), the value is put just on the code's side of the threshold, which still
  quantizes to the same int8 level, so codes and int8 vectors are kept bit for bit;
- none: each value is put just above or below its threshold, as the code says.
"""

import numpy as np

from .schema import REGISTRY, REGISTRY_COLUMNS, REGISTRY_DDL, SCHEMA_VERSION, TableNames, collection_ddl, \
    index_options, quote_identifier

FLOAT32 = np.dtype("<f4")
BATCH = 10_000


def registry_version(conn):
    """1 when the registry has the 0.1.0 shape, 2 for the current one, None without a registry."""
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({REGISTRY})")]
    if not columns:
        return None
    return 1 if "code_bytes" in columns else SCHEMA_VERSION


def version_problem(function, path, name, version):
    """The one sentence for a collection this code cannot open as it is."""
    if version == 1:
        return (f"{function}: collection {name!r} in {path!r} was written by sqlitebin 0.1.0 (schema version 1); "
                f"open the database once for writing (or run `sqlitebin migrate {path}`) to upgrade it")
    return (f"{function}: collection {name!r} has schema version {version}, "
            f"this sqlitebin reads version {SCHEMA_VERSION}; upgrade sqlitebin to open it")


def upgrade(conn):
    """Upgrade every version-1 collection in one transaction; return the names upgraded (none: nothing to do)."""
    if registry_version(conn) != 1:
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        if registry_version(conn) != 1:  # another connection upgraded it while this one waited for the lock
            conn.execute("COMMIT")
            return []
        old_columns = [row[1] for row in conn.execute(f"PRAGMA table_info({REGISTRY})")]
        rows = [dict(zip(old_columns, row)) for row in conn.execute(f"SELECT * FROM {REGISTRY} ORDER BY name")]
        for settings in rows:
            _upgrade_collection(conn, settings)
        conn.execute(f"ALTER TABLE {REGISTRY} RENAME TO sqlitebin_collections_v1")
        conn.execute(REGISTRY_DDL)
        columns = ", ".join(REGISTRY_COLUMNS[:-1])
        conn.execute(f"INSERT INTO {REGISTRY} ({columns}, schema_version, created_at) "
                     f"SELECT {columns}, {SCHEMA_VERSION}, created_at FROM sqlitebin_collections_v1")
        conn.execute("DROP TABLE sqlitebin_collections_v1")
        conn.execute("COMMIT")
    except BaseException:
        if not conn.getautocommit():
            conn.execute("ROLLBACK")
        raise
    return [settings["name"] for settings in rows]


def _upgrade_collection(conn, settings):
    name, dim, rescore = settings["name"], settings["dim"], settings["rescore"]
    t = TableNames(name)
    old = {suffix: quote_identifier(f"{name}_{suffix}") for suffix in ("codes", "vectors", "chunks", "changes")}
    thresholds = _floats(settings["thresholds"], dim)
    ranges = _floats(settings["ranges"], 2 * dim) if rescore == "int8" else None
    for trigger in ("codes_insert", "codes_update", "codes_delete", "documents_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {t.trigger(trigger)}")
    # The FTS5 table and its insert/update triggers are the same in both versions; collection_ddl()
    # also writes them, so they are skipped here.
    options = index_options(dim, rescore, thresholds=thresholds, ranges=ranges)
    for statement in collection_ddl(t, options, fts=False):
        if not statement.startswith(f"CREATE TABLE {t.documents}"):
            conn.execute(statement)
    if settings["fts"]:
        # The version-1 delete trigger also removed the FTS5 entry; the new one must too.
        conn.execute(f"DROP TRIGGER {t.trigger('documents_delete')}")
        conn.execute(collection_ddl(t, options, fts=True)[-1])
    vector_join = (f" LEFT JOIN {old['vectors']} AS v ON v.id = c.id" if rescore != "none" else "")
    vector_column = "v.vector" if rescore != "none" else "NULL"
    cursor = conn.execute(f"SELECT c.id, c.code, {vector_column} FROM {old['codes']} AS c{vector_join} ORDER BY c.id")
    while True:
        batch = cursor.fetchmany(BATCH) if hasattr(cursor, "fetchmany") else _take(cursor, BATCH)
        if not batch:
            break
        vectors = _vectors(batch, dim, rescore, thresholds, ranges)
        conn.executemany(f"INSERT INTO {t.index} (rowid, vector) VALUES (?, ?)",
                         [(row[0], vector.tobytes()) for row, vector in zip(batch, vectors)])
    for table in ("changes", "chunks", "vectors", "codes"):
        conn.execute(f"DROP TABLE IF EXISTS {old[table]}")


def _take(cursor, count):
    rows = []
    for row in cursor:
        rows.append(row)
        if len(rows) == count:
            break
    return rows


def _floats(blob, count):
    if blob is None:
        return None
    values = np.frombuffer(blob, dtype=FLOAT32)
    if len(values) != count:
        raise ValueError(f"upgrade(): a stored setting has {len(values)} float32 values, expected {count}")
    return values.copy()


def _vectors(rows, dim, rescore, thresholds, ranges):
    """Float32 vectors whose code (and int8 level) the index computes as version 1 stored them."""
    code_bytes = (dim + 7) // 8
    codes = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.uint8).reshape(len(rows), code_bytes)
    bits = np.unpackbits(codes, axis=1)[:, :dim].astype(bool)
    t = np.zeros(dim, FLOAT32) if thresholds is None else thresholds
    above = np.nextafter(t, np.float32(np.inf))
    if rescore == "float32":
        vectors = _stored(rows, dim, FLOAT32, bits, t)
        return vectors
    if rescore == "int8":
        levels = _stored(rows, dim, np.int8, bits, t)
        if ranges is None:  # no vectors were ever added, so there is nothing to dequantize
            return levels.astype(FLOAT32)
        low, high = ranges[:dim], ranges[dim:]
        vectors = (low + (levels.astype(FLOAT32) + np.float32(128)) * (high - low) / np.float32(255)).astype(FLOAT32)
    else:
        vectors = np.where(bits, np.maximum(t + 1, above), np.minimum(t - 1, t)).astype(FLOAT32)
    vectors = np.where(bits & ~(vectors > t), above, vectors)
    vectors = np.where(~bits & (vectors > t), t, vectors)
    return vectors.astype(FLOAT32)


def _stored(rows, dim, dtype, bits, thresholds):
    """The stored vectors of `rows` (row[2]); a row that has none (written half by hand) gets its code's signs."""
    width = dim * np.dtype(dtype).itemsize
    out = np.empty((len(rows), dim), dtype=dtype)
    for position, row in enumerate(rows):
        if row[2] is not None and len(row[2]) == width:
            out[position] = np.frombuffer(row[2], dtype=dtype)
        elif dtype == FLOAT32:
            out[position] = np.where(bits[position], thresholds + 1, thresholds - 1)
        else:
            out[position] = np.where(bits[position], 127, -128)
    return out
