"""The storage formats of the sqlitebin virtual table: format 2 (N_vectors rows sized to the page)
and format 1 tables (64 vectors a row), written by the 0.2.0 development code
(tests/data/sqlitebin-format1.sqlite), read and written in their own format."""

import shutil
from pathlib import Path

import apsw
import numpy as np
import pytest

import sqlitebin
from test_vtable import F32, Oracle, blob, check

FORMAT1_FILE = Path(__file__).parent / "data" / "sqlitebin-format1.sqlite"


def vectors(seed, n, dim):  # as tests/data/make_format1_database.py made them
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(F32)


def config(conn, table, key):
    row = conn.execute(f"SELECT value FROM {table}_config WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def format1_oracles(conn):
    """What the three tables of the format 1 file hold."""
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


@pytest.fixture
def format1(tmp_path):
    path = tmp_path / "format1.sqlite"
    shutil.copy(FORMAT1_FILE, path)
    conn = apsw.Connection(str(path))
    sqlitebin.load(conn)
    yield conn
    conn.close()


def test_format1_tables_are_searched_as_they_were_written(format1):
    oracles = format1_oracles(format1)
    for table, oracle in oracles.items():
        assert config(format1, table, "format") == 1
        check_table(format1, table, oracle, vectors(9, 4, oracle.dim))
        rows = dict(format1.execute(f"SELECT rowid, vector FROM {table}").fetchall())
        assert sorted(rows) == sorted(oracle.rows)


def test_format1_tables_are_written_in_format1(format1):
    oracles = format1_oracles(format1)
    for table, oracle in oracles.items():
        extra = vectors(10, 80, oracle.dim)
        with format1:
            for i in range(70):  # past a chunk and a 64-vector row
                format1.execute(f"INSERT INTO {table}(rowid, vector) VALUES (?, ?)", (20000 + i, blob(extra[i])))
                oracle.rows[20000 + i] = extra[i]
        format1.execute(f"UPDATE {table} SET vector = ? WHERE rowid = 20003", (blob(extra[70]),))
        oracle.rows[20003] = extra[70]
        format1.execute(f"DELETE FROM {table} WHERE rowid = 20004")
        del oracle.rows[20004]
        check_table(format1, table, oracle, extra[70:74])
        format1.execute(f"INSERT INTO {table}({table}) VALUES ('optimize')")
        check_table(format1, table, oracle, extra[70:74])
        assert config(format1, table, "format") == 1
        assert config(format1, table, "vectors_per_row") is None
        assert {n for (n,) in format1.execute(f"SELECT DISTINCT length(ids) FROM {table}_chunks")} == {
            8 * config(format1, table, "chunk_size")}
        if oracle.rescore != "none":
            assert {n for (n,) in format1.execute(f"SELECT DISTINCT length(vectors) FROM {table}_vectors")} == {
                64 * oracle.dim * (1 if oracle.rescore == "int8" else 4)}
    # The rowids kept in the chunks are the ones N_rowids names.
    chunk_size = config(format1, "v_float32", "chunk_size")
    for rowid, location in format1.execute("SELECT rowid, location FROM v_float32_rowids"):
        ids = format1.execute("SELECT ids FROM v_float32_chunks WHERE chunk_id = ?",
                              (location // chunk_size,)).fetchone()[0]
        assert np.frombuffer(ids, "<i8")[location % chunk_size] == rowid


def test_format2_sizes_vector_rows_to_the_page():
    conn = apsw.Connection(":memory:")
    sqlitebin.load(conn)
    conn.execute("CREATE VIRTUAL TABLE idx USING sqlitebin(dim=256)")
    n = 16384
    data = vectors(11, n, 256)
    with conn:
        conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", ((i + 1, blob(data[i])) for i in range(n)))
    assert config(conn, "idx", "format") == 2
    assert {n for (n,) in conn.execute("SELECT DISTINCT length(ids) FROM idx_chunks")} == {8 * 4096}
    per_row = config(conn, "idx", "vectors_per_row")
    assert {n for (n,) in conn.execute("SELECT DISTINCT length(vectors) FROM idx_vectors")} == {256 * per_row}
    # The index's pages (whole pages, SQLite's dbstat) per document: the 32-byte code, the 256-byte
    # int8 vector, the rowid twice (8 bytes beside the code, for the scan; the key of idx_rowids,
    # for writes) and the b-trees: 308.5 bytes measured.
    pages = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat WHERE name LIKE 'idx\\_%' ESCAPE '\\' "
                              "GROUP BY name").fetchall())
    stored = sum(size for name, size in pages.items() if name not in ("idx_config", "idx_calibration"))
    assert stored / n <= 32 + 256 + 8 + 16
    assert stored / n - pages["idx_vectors"] / n - pages["idx_chunks"] / n < 11  # idx_rowids
    assert pages["idx_vectors"] / n < 256 + 2  # vector rows fill their pages
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
    conn.execute("UPDATE idx_config SET value = 3 WHERE key = 'format'")
    conn.close()
    conn = apsw.Connection(path)
    sqlitebin.load(conn)
    with pytest.raises(apsw.SQLError, match=r"^sqlitebin: idx was made by a newer sqlitebin \(storage format "
                                            r"3; this one reads formats 1 and 2\)$"):
        conn.execute("SELECT count(*) FROM idx").fetchall()
    conn.execute("UPDATE idx_config SET value = 2 WHERE key = 'format'")
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
