"""The storage formats of the sqlitebin virtual table: format 3 (N_vectors rows sized to the page,
chunk ids packed) against bytes decoded here by hand, and the formats 1 and 2 that the 0.2.0
development code wrote (tests/data/sqlitebin-format1.sqlite and -format2.sqlite), read and written
in their own format."""

import shutil
import struct
from pathlib import Path

import apsw
import numpy as np
import pytest

import sqlitebin
from test_vtable import F32, Oracle, blob, check

DATA = Path(__file__).parent / "data"
OLD_FORMATS = [1, 2]


def vectors(seed, n, dim):  # as tests/data/make_old_format_database.py made them
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(F32)


def config(conn, table, key):
    row = conn.execute(f"SELECT value FROM {table}_config WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def old_format_oracles(conn):
    """What the three tables of an old format file hold."""
    int8 = Oracle(20, "int8", calibration_rows=64)
    data = vectors(1, 301, 20)
    for i in range(300):
        if (i + 1) % 7:
            int8.rows[i + 1] = data[i]
    int8.rows[10] = data[300]
    int8.ranges = np.frombuffer(config(conn, "v_int8", "ranges"), F32)
    float32 = Oracle(33, "float32")
    data = vectors(2, 200, 33)
    for i in range(200):
        float32.rows[1001 + i] = data[i]
    float32.rows[5000] = float32.rows.pop(1005)
    none = Oracle(70, "none")
    data = vectors(3, 100, 70)
    for i in range(100):
        none.rows[i + 1] = data[i]
    return {"v_int8": int8, "v_float32": float32, "v_none": none}


def check_table(conn, table, oracle, queries):
    for q in queries:
        got = conn.execute(f"SELECT rowid, score, distance FROM {table} WHERE vector MATCH ? AND k = 10 "
                           "AND oversample = 20", (blob(q),)).fetchall()
        expected, scores = oracle.search(q, k=10, oversample=20)
        assert [r for r, _, _ in got] == [r for r, _, _ in expected]
        for (_, score, _), (_, want, _) in zip(got, expected):
            assert score == pytest.approx(want, abs=1e-4)
    conn.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")


@pytest.fixture(params=OLD_FORMATS)
def old_format(request, tmp_path):
    """A copy of the file in an earlier storage format, and that format."""
    path = tmp_path / "old.sqlite"
    shutil.copy(DATA / f"sqlitebin-format{request.param}.sqlite", path)
    conn = apsw.Connection(str(path))
    sqlitebin.load(conn)
    yield conn, request.param
    conn.close()


def test_old_format_tables_are_searched_as_they_were_written(old_format):
    conn, version = old_format
    oracles = old_format_oracles(conn)
    for table, oracle in oracles.items():
        assert config(conn, table, "format") == version
        check_table(conn, table, oracle, vectors(9, 4, oracle.dim))
        rows = dict(conn.execute(f"SELECT rowid, vector FROM {table}").fetchall())
        assert sorted(rows) == sorted(oracle.rows)


def test_old_format_tables_are_written_in_their_format(old_format):
    conn, version = old_format
    oracles = old_format_oracles(conn)
    for table, oracle in oracles.items():
        per_row = config(conn, table, "vectors_per_row")
        extra = vectors(10, 80, oracle.dim)
        with conn:
            for i in range(70):  # past a chunk and a 64-vector row
                conn.execute(f"INSERT INTO {table}(rowid, vector) VALUES (?, ?)", (20000 + i, blob(extra[i])))
                oracle.rows[20000 + i] = extra[i]
            # Far from the others: would repack packed ids; these formats keep 8 bytes an id.
            conn.execute(f"INSERT INTO {table}(rowid, vector) VALUES (?, ?)", (-(2 ** 62), blob(extra[75])))
            oracle.rows[-(2 ** 62)] = extra[75]
        conn.execute(f"UPDATE {table} SET vector = ? WHERE rowid = 20003", (blob(extra[70]),))
        oracle.rows[20003] = extra[70]
        conn.execute(f"DELETE FROM {table} WHERE rowid = 20004")
        del oracle.rows[20004]
        check_table(conn, table, oracle, extra[70:74])
        conn.execute(f"INSERT INTO {table}({table}) VALUES ('optimize')")
        check_table(conn, table, oracle, extra[70:74])
        assert config(conn, table, "format") == version
        assert config(conn, table, "vectors_per_row") == per_row
        assert (per_row is None) == (version == 1 or oracle.rescore == "none")
        assert {n for (n,) in conn.execute(f"SELECT DISTINCT length(ids) FROM {table}_chunks")} == {
            8 * config(conn, table, "chunk_size")}
        if oracle.rescore != "none":
            assert {n for (n,) in conn.execute(f"SELECT DISTINCT length(vectors) FROM {table}_vectors")} == {
                (per_row or 64) * oracle.dim * (1 if oracle.rescore == "int8" else 4)}
    # The rowids kept in the chunks are the ones N_rowids names.
    chunk_size = config(conn, "v_float32", "chunk_size")
    for rowid, location in conn.execute("SELECT rowid, location FROM v_float32_rowids"):
        ids = conn.execute("SELECT ids FROM v_float32_chunks WHERE chunk_id = ?", (location // chunk_size,)).fetchone()[0]
        assert np.frombuffer(ids, "<i8")[location % chunk_size] == rowid


def packed_ids(ids_blob, chunk_size):
    """Format 3 chunk ids decoded by hand: an 8-byte little-endian base, then chunk_size little-endian
    offsets of 1, 2, 4 or 8 bytes; each id is base + offset modulo 2^64, read as signed."""
    width, rest = divmod(len(ids_blob) - 8, chunk_size)
    assert rest == 0 and width in (1, 2, 4, 8)
    (base,) = struct.unpack("<Q", ids_blob[:8])
    ids = []
    for i in range(chunk_size):
        offset = int.from_bytes(ids_blob[8 + i * width: 8 + (i + 1) * width], "little")
        value = (base + offset) % 2 ** 64
        ids.append(value - 2 ** 64 if value >= 2 ** 63 else value)
    return width, ids


def check_chunk_ids(conn, table="idx"):
    """Every live rowid is in its slot of the packed ids; returns the widths of the chunks."""
    chunk_size = config(conn, table, "chunk_size")
    chunks = {chunk_id: packed_ids(ids, chunk_size)
              for chunk_id, ids in conn.execute(f"SELECT chunk_id, ids FROM {table}_chunks")}
    for rowid, location in conn.execute(f"SELECT rowid, location FROM {table}_rowids"):
        assert chunks[location // chunk_size][1][location % chunk_size] == rowid
    return sorted(width for width, _ in chunks.values())


def test_format3_sizes_vector_rows_to_the_page_and_packs_ids():
    conn = apsw.Connection(":memory:")
    sqlitebin.load(conn)
    conn.execute("CREATE VIRTUAL TABLE idx USING sqlitebin(dim=256)")
    n = 16384
    data = vectors(11, n, 256)
    with conn:
        conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", ((i + 1, blob(data[i])) for i in range(n)))
    assert config(conn, "idx", "format") == 3
    assert {n for (n,) in conn.execute("SELECT DISTINCT length(ids) FROM idx_chunks")} == {8 + 2 * 4096}
    assert check_chunk_ids(conn) == [2, 2, 2, 2]
    per_row = config(conn, "idx", "vectors_per_row")
    assert {n for (n,) in conn.execute("SELECT DISTINCT length(vectors) FROM idx_vectors")} == {256 * per_row}
    # The index's pages (whole pages, SQLite's dbstat) per document: the 32-byte code, the 256-byte
    # int8 vector, the rowid packed beside the code (2 bytes) and as the key of idx_rowids, and the
    # b-trees: 302.4 bytes measured.
    pages = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat WHERE name LIKE 'idx\\_%' ESCAPE '\\' "
                              "GROUP BY name").fetchall())
    stored = sum(size for name, size in pages.items() if name not in ("idx_config", "idx_calibration"))
    assert stored / n <= 32 + 256 + 16
    assert pages["idx_chunks"] / n < 32 + 2 + 1
    assert pages["idx_vectors"] / n < 256 + 2  # vector rows fill their pages
    conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")


@pytest.mark.parametrize("rowids, widths", [
    (lambda rng: np.arange(5000, 4872, -1), [1, 1]),  # counting down: fits the starting width
    (lambda rng: np.arange(1, 129) * 1000, [2, 2]),  # spread: widened from 1 byte in each chunk
    (lambda rng: np.arange(1, 129) * 2000, [4, 4]),  # wider: 1 byte, then 2, then 4
    (lambda rng: rng.permutation(np.arange(1, 129) * 100), [2, 2]),  # shuffled: repacked from the smallest
    (lambda rng: rng.integers(-2 ** 63, 2 ** 63 - 1, 128, dtype=np.int64), [8, 8]),  # random 64-bit
    (lambda rng: np.array([2 ** 63 - 1, -2 ** 63, 0, -1] + list(range(1, 125))), [1, 8]),  # extremes, then in order
])
def test_packed_ids_repack_for_rowids_that_do_not_fit(conn, rowids, widths):
    rng = np.random.default_rng(5)
    ids = [int(r) for r in rowids(rng)]
    conn.execute("CREATE VIRTUAL TABLE idx USING sqlitebin(dim=24, rescore=float32, chunk_size=64)")
    oracle = Oracle(24, "float32")
    data = vectors(13, len(ids) + 4, 24)
    for i, rowid in enumerate(ids):  # one at a time: each write reads and writes back its chunk's ids
        conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (rowid, blob(data[i])))
        oracle.rows[rowid] = data[i]
    assert check_chunk_ids(conn) == widths
    for q in data[-4:]:
        check(conn, oracle, q, k=10, oversample=20)
    conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")
    # Repacking inside a transaction that rolls back leaves the chunk as it was.
    before = conn.execute("SELECT ids FROM idx_chunks ORDER BY chunk_id").fetchall()
    conn.execute("BEGIN")
    conn.execute("UPDATE idx SET rowid = ? WHERE rowid = ?", (-2 ** 62, ids[5]))
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (2 ** 62, blob(data[-1])))
    assert conn.execute("SELECT rowid FROM idx WHERE vector MATCH ? AND k = 1", (blob(data[-1]),)).fetchall() == [
        (2 ** 62,)]
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT ids FROM idx_chunks ORDER BY chunk_id").fetchall() == before
    for q in data[-4:]:
        check(conn, oracle, q, k=10, oversample=20)


def test_a_reading_cursor_survives_its_chunk_repacking(conn):
    """A full scan reads codes through an open BLOB handle; a write that repacks that chunk's ids
    (an UPDATE of its row) expires the handle, which is opened again."""
    conn.execute("CREATE VIRTUAL TABLE idx USING sqlitebin(dim=16, rescore=none, chunk_size=64)")
    data = vectors(14, 40, 16)
    for i in range(30):
        conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i + 1, blob(data[i])))
    seen = []
    for rowid, vector in conn.execute("SELECT rowid, vector FROM idx"):
        seen.append((rowid, vector))
        if rowid == 3:
            conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (10 ** 12, blob(data[35])))
    assert [r for r, _ in seen[:30]] == list(range(1, 31))
    for rowid, vector in seen[:30]:  # sign bits read back as +-1 / sqrt(dim)
        assert np.array_equal(np.frombuffer(vector, F32), np.where(data[rowid - 1] > 0, 0.25, -0.25).astype(F32))
    assert check_chunk_ids(conn) == [8]


def test_damaged_packed_ids_are_reported(conn):
    conn.execute("CREATE VIRTUAL TABLE idx USING sqlitebin(dim=16, rescore=none, chunk_size=64)")
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (1, ?)", (blob(np.ones(16)),))
    conn.execute("UPDATE idx_chunks SET ids = zeroblob(8 + 3 * 64)")
    with pytest.raises(apsw.CorruptError, match=r"^sqlitebin: idx_chunks is damaged at chunk_id 0"):
        conn.execute("SELECT rowid FROM idx WHERE vector MATCH ? AND k = 1", (blob(np.ones(16)),)).fetchall()
    with pytest.raises(apsw.CorruptError, match=r"^sqlitebin: idx_chunks is damaged at chunk_id 0 \(ids of 200 "
                                                r"bytes for 64 slots\)$"):
        conn.execute("INSERT INTO idx(rowid, vector) VALUES (2, ?)", (blob(np.ones(16)),))
        conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")


@pytest.mark.parametrize("page_size", [1024, 8192, 65536])
@pytest.mark.parametrize("dim, rescore", [(20, "int8"), (300, "int8"), (130, "float32")])
def test_every_page_size_and_vector_size(page_size, dim, rescore):
    conn = apsw.Connection(":memory:")
    sqlitebin.load(conn)
    conn.execute(f"PRAGMA page_size = {page_size}")
    calibration = ", calibration_rows=64" if rescore == "int8" else ""
    conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={dim}, rescore={rescore}, chunk_size=64{calibration})")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == page_size
    per_row = config(conn, "idx", "vectors_per_row")
    assert 1 <= per_row <= 128
    oracle = Oracle(dim, rescore, calibration_rows=64)
    data = vectors(12, 400, dim)
    with conn:
        for i in range(300):
            conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i + 1, blob(data[i])))
            oracle.insert(i + 1, data[i])
    conn.execute("DELETE FROM idx WHERE rowid % 5 = 0")
    for rowid in range(5, 301, 5):
        del oracle.rows[rowid]
    conn.execute("UPDATE idx SET vector = ? WHERE rowid = 1", (blob(data[300]),))
    oracle.rows[1] = data[300]
    if rescore == "int8":
        oracle.ranges = np.frombuffer(config(conn, "idx", "ranges"), F32)
    for q in data[300:304]:
        check(conn, oracle, q, k=10, oversample=20)
    conn.execute("INSERT INTO idx(idx) VALUES ('optimize')")
    for q in data[300:304]:
        check(conn, oracle, q, k=10, oversample=20)
    conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")


def test_a_newer_format_or_damaged_row_size_fails_with_one_sentence(tmp_path):
    path = str(tmp_path / "newer.db")
    conn = apsw.Connection(path)
    sqlitebin.load(conn)
    conn.execute("CREATE VIRTUAL TABLE idx USING sqlitebin(dim=8)")
    conn.execute("UPDATE idx_config SET value = 4 WHERE key = 'format'")
    conn.close()
    conn = apsw.Connection(path)
    sqlitebin.load(conn)
    with pytest.raises(apsw.SQLError, match=r"^sqlitebin: idx was made by a newer sqlitebin \(storage format "
                                            r"4; this one reads formats 1 to 3\)$"):
        conn.execute("SELECT count(*) FROM idx").fetchall()
    conn.execute("UPDATE idx_config SET value = 3 WHERE key = 'format'")
    conn.execute("UPDATE idx_config SET value = 0 WHERE key = 'vectors_per_row'")
    conn.close()
    conn = apsw.Connection(path)
    sqlitebin.load(conn)
    with pytest.raises(apsw.CorruptError, match=r"sqlitebin: idx_config is damaged \(vectors_per_row 0\)$"):
        conn.execute("SELECT count(*) FROM idx").fetchall()


def test_a_rowid_map_pointing_twice_at_one_slot_is_reported(conn):
    conn.execute("CREATE VIRTUAL TABLE idx USING sqlitebin(dim=16, rescore=none)")
    for i in range(10):
        conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i + 1, blob(np.ones(16) * (i - 4.5))))
    conn.execute("UPDATE idx_rowids SET location = 3 WHERE rowid = 5")  # rowid 4's slot as well
    with pytest.raises(apsw.CorruptError, match="points at location 3, which holds rowid 4|points at location 3, "
                                                "which holds rowid 5"):
        conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")
