"""Opening a database that sqlitebin 0.1.0 wrote (tests/data/sqlitebin-0.1.0.sqlite, made by make_v1_database.py).

The oracle reads the version-1 tables with plain apsw (no sqlitebin) before the upgrade: the documents,
each document's code from N_codes and its stored vector from N_vectors (int8 levels dequantized with the
registry's ranges). After the upgrade, every search path must return what NumPy computes from that data.
"""

import shutil
from pathlib import Path

import apsw
import numpy as np
import pytest

import sqlitebin
from oracle import Oracle

FIXTURE = Path(__file__).parent / "data" / "sqlitebin-0.1.0.sqlite"

pytestmark = pytest.mark.usefixtures("requires_index")


def read_version_1(path):
    """{name: (settings, documents {id: (text, metadata)}, ids, codes, vectors)} straight from the file."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(sqlitebin_collections)")]
    result = {}
    for row in conn.execute("SELECT * FROM sqlitebin_collections").fetchall():
        settings = dict(zip(columns, row))
        name, dim = settings["name"], settings["dim"]
        documents = {r[0]: (r[1], r[2]) for r in conn.execute(f"SELECT id, text, metadata FROM {name}_documents")}
        rows = conn.execute(f"SELECT c.id, c.code, v.vector FROM {name}_codes c JOIN {name}_vectors v USING (id) "
                            "ORDER BY c.id").fetchall()
        ids = [r[0] for r in rows]
        codes = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(len(rows), (dim + 7) // 8)
        if settings["rescore"] == "int8":
            ranges = np.frombuffer(settings["ranges"], "<f4")
            levels = np.frombuffer(b"".join(r[2] for r in rows), np.int8).reshape(len(rows), dim).astype(np.float32)
            vectors = ranges[:dim] + (levels + 128) * (ranges[dim:] - ranges[:dim]) / np.float32(255)
        else:
            vectors = np.frombuffer(b"".join(r[2] for r in rows), "<f4").reshape(len(rows), dim)
        result[name] = (settings, documents, ids, codes, vectors.astype(np.float32))
    conn.close()
    return result


@pytest.fixture
def migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copy(FIXTURE, path)
    return path


def test_the_fixture_is_a_version_1_database():
    old = read_version_1(FIXTURE)
    assert set(old) == {"debian", "vectors"}
    assert all(settings["schema_version"] == 1 for settings, *_ in old.values())
    conn = apsw.Connection(str(FIXTURE), flags=apsw.SQLITE_OPEN_READONLY)
    # Plain-SQL writes the 0.1.0 code had not folded into its chunks yet.
    assert conn.execute("SELECT count(*) FROM debian_changes").fetchall()[0][0] == 15
    assert conn.execute("SELECT count(*) FROM vectors_changes").fetchall()[0][0] == 1


def test_opening_upgrades_in_place_with_the_same_documents_and_results(migrated):
    old = read_version_1(FIXTURE)
    with sqlitebin.connect(migrated) as db:
        assert db.collections() == ["debian", "vectors"]
        registry = db.conn.execute("SELECT name, schema_version FROM sqlitebin_collections ORDER BY name").fetchall()
        assert registry == [("debian", 2), ("vectors", 2)]
        tables = {row[0] for row in db.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for name in ("debian", "vectors"):
            assert not {f"{name}_codes", f"{name}_vectors", f"{name}_chunks", f"{name}_changes"} & tables
        for name, (settings, documents, ids, codes, vectors) in old.items():
            collection = db.collection(name)
            assert collection.dim == settings["dim"] and collection.rescore == settings["rescore"]
            assert len(collection) == len(documents)
            hits = collection.get(sorted(documents))
            assert {h.id: (h.text, h.metadata) for h in hits} == {
                i: (text, None if metadata is None else __import__("json").loads(metadata))
                for i, (text, metadata) in documents.items()}
            if settings["rescore"] == "int8":
                np.testing.assert_array_equal(collection.ranges, np.frombuffer(settings["ranges"], "<f4"))
            np.testing.assert_allclose(collection.vectors(ids), vectors, rtol=0, atol=1e-6)
            oracle = Oracle(settings["dim"], collection.ranges)
            oracle.set(ids, vectors, codes=codes, normalized=True)
            rng = np.random.default_rng(7)
            queries = [vectors[i] for i in rng.choice(len(ids), 5, replace=False)]
            queries += list(rng.standard_normal((3, settings["dim"])).astype(np.float32))
            for query in queries:
                for candidates in ("asymmetric", "hamming"):
                    for rescore in (settings["rescore"], "bits", "none"):
                        hits = collection.search(query, 10, candidates=candidates, rescore=rescore)
                        expected = oracle.search(query, 10, 10, candidates, rescore)
                        assert [h.id for h in hits] == [e[0] for e in expected]
                        assert [h.distance for h in hits] == [e[2] for e in expected]
                        np.testing.assert_allclose([h.score for h in hits], [e[1] for e in expected],
                                                   rtol=1e-5, atol=1e-6)
        text = db.collection("debian")
        assert text.search("photo editor", 3, mode="keyword")
        assert len(text.search("photo editor", 5, mode="hybrid")) == 5
        # The new triggers are in place: a plain-SQL delete takes the index row and FTS entry along.
        db.conn.execute("DELETE FROM debian_documents WHERE id = 46")
        assert db.conn.execute("SELECT count(*) FROM debian_index WHERE rowid = 46").fetchall()[0][0] == 0
        assert 46 not in [h.id for h in text.search("Auto Adjust Photo", 5, mode="keyword")]
    with sqlitebin.connect(migrated) as db:  # a second open has nothing left to do
        assert [r[0] for r in db.conn.execute("SELECT schema_version FROM sqlitebin_collections")] == [2, 2]


def test_read_only_open_names_the_way_to_upgrade(migrated):
    with sqlitebin.connect(migrated, readonly=True) as db:
        with pytest.raises(sqlitebin.SchemaVersionError,
                           match=r"was written by sqlitebin 0.1.0 \(schema version 1\); open the database once for "
                                 r"writing \(or run `sqlitebin migrate .*`\) to upgrade it"):
            db.collection("debian")


def test_a_failed_upgrade_changes_nothing(migrated, monkeypatch):
    from sqlitebin import migration

    calls = []
    original = migration._upgrade_collection

    def fail_on_second(conn, settings):
        calls.append(settings["name"])
        if len(calls) == 2:
            raise RuntimeError("disk trouble")
        original(conn, settings)

    monkeypatch.setattr(migration, "_upgrade_collection", fail_on_second)
    before = FIXTURE.read_bytes()
    with pytest.raises(RuntimeError, match="disk trouble"):
        sqlitebin.connect(migrated)
    conn = apsw.Connection(str(migrated))
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("SELECT count(*) FROM sqlitebin_collections WHERE schema_version = 1").fetchall()[0][0] == 2
    assert conn.execute("SELECT count(*) FROM debian_codes").fetchall()[0][0] > 0
    conn.close()
    assert len(before) > 0
