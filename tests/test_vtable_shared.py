"""Connections to one database file share one in-memory copy of a sqlitebin table's codes, and
each still sees exactly its own transaction's state (issue 12)."""

import threading

import apsw
import numpy as np
import pytest

import sqlitebin
from test_vtable import F32, Oracle, blob, check


def shared_copies(conn):
    debug = dict(line.split("=", 1) for line in conn.execute("SELECT sqlitebin_debug()").fetchone()[0].splitlines())
    return int(debug["shared_code_caches"])


def connect(path):
    conn = apsw.Connection(path)
    sqlitebin.load(conn)
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    return conn


def test_connections_share_one_copy_and_see_their_own_state(tmp_path):
    rng = np.random.default_rng(5)
    dim = 20
    path = str(tmp_path / "shared.db")
    a, b, c = connect(path), connect(path), connect(path)
    a.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={dim}, rescore=float32, chunk_size=64)")
    committed = Oracle(dim, "float32")
    vectors = rng.standard_normal((400, dim)).astype(F32)
    with a:
        for i in range(200):
            a.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i, blob(vectors[i])))
            committed.insert(i, vectors[i])
    before = shared_copies(a)
    for conn in (a, b, c):
        check(conn, committed, vectors[7], k=5, oversample=100)
    assert shared_copies(a) == before + 1  # one copy for three connections

    # A writes inside a transaction: B and C keep searching the committed state, from the shared copy.
    a.execute("BEGIN")
    mine = Oracle(dim, "float32")
    mine.rows = dict(committed.rows)
    for i in range(200, 260):
        a.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (i, blob(vectors[i])))
        mine.insert(i, vectors[i])
    a.execute("DELETE FROM idx WHERE rowid < 20")
    for r in range(20):
        del mine.rows[r]
    check(a, mine, vectors[210], k=5, oversample=100)
    check(b, committed, vectors[210], k=5, oversample=100)
    check(c, committed, vectors[3], k=5, oversample=100)
    a.execute("UPDATE idx SET vector = ? WHERE rowid = 100", (blob(vectors[399]),))
    mine.rows[100] = vectors[399]
    check(a, mine, vectors[399], k=3, oversample=100)
    check(b, committed, vectors[399], k=3, oversample=100)
    a.execute("COMMIT")
    committed = mine
    for conn in (b, c, a):
        check(conn, committed, vectors[399], k=3, oversample=100)
        check(conn, committed, vectors[250], k=3, oversample=100)

    # B writes while A and C hold the same copy: B lets go of it and reloads; nobody sees a mix.
    b.execute("INSERT INTO idx(rowid, vector) VALUES (1000, ?)", (blob(vectors[300]),))
    committed.insert(1000, vectors[300])
    for conn in (a, b, c):
        check(conn, committed, vectors[300], k=3, oversample=100)
    # A rollback on one connection leaves the others' copy alone.
    c.execute("BEGIN")
    c.execute("DELETE FROM idx")
    assert c.execute("SELECT count(*) FROM idx").fetchone()[0] == 0
    check(a, committed, vectors[300], k=3, oversample=100)
    c.execute("ROLLBACK")
    for conn in (a, b, c):
        check(conn, committed, vectors[300], k=3, oversample=100)
    for conn in (a, b, c):
        conn.close()


def test_memory_databases_do_not_share(conn):
    other = apsw.Connection(":memory:")
    sqlitebin.load(other)
    for db in (conn, other):
        db.execute("CREATE VIRTUAL TABLE idx USING sqlitebin(dim=4)")
        db.execute("INSERT INTO idx(rowid, vector) VALUES (1, ?)", (blob([1, 2, 3, 4]),))
    other.execute("INSERT INTO idx(rowid, vector) VALUES (2, ?)", (blob([-1, -2, -3, -4]),))
    q = blob([-1, -2, -3, -4])
    assert conn.execute("SELECT rowid FROM idx WHERE vector MATCH ?", (q,)).fetchall() == [(1,)]
    assert other.execute("SELECT rowid FROM idx WHERE vector MATCH ?", (q,)).fetchall() == [(2,), (1,)]
    other.close()


def test_threads_searching_and_writing_through_separate_connections(tmp_path):
    """Readers on their own connections while a writer commits batches: every answer is one of
    the committed states (checked by row count and a self-match), and nothing crashes."""
    rng = np.random.default_rng(9)
    dim = 32
    path = str(tmp_path / "threads.db")
    writer = connect(path)
    writer.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={dim}, rescore=float32, chunk_size=256)")
    vectors = rng.standard_normal((6000, dim)).astype(F32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # each row is its own best match
    with writer:
        writer.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i, blob(vectors[i])) for i in range(2000)])
    errors = []
    done = threading.Event()

    def read(seed):
        try:
            conn = connect(path)
            local = np.random.default_rng(seed)
            while not done.is_set():
                i = int(local.integers(0, 2000))
                rows = conn.execute("SELECT rowid FROM idx WHERE vector MATCH ? AND k = 1 AND oversample = 50",
                                    (blob(vectors[i]),)).fetchall()
                if rows != [(i,)]:
                    errors.append((i, rows))
            conn.close()
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    readers = [threading.Thread(target=read, args=(s,)) for s in range(2)]
    for thread in readers:
        thread.start()
    for start in range(2000, 6000, 500):
        with writer:
            writer.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)",
                               [(i, blob(vectors[i])) for i in range(start, start + 500)])
        writer.execute("SELECT rowid FROM idx WHERE vector MATCH ? AND k = 1", (blob(vectors[start]),)).fetchall()
    done.set()
    for thread in readers:
        thread.join()
    assert errors == []
    assert writer.execute("SELECT count(*) FROM idx").fetchone()[0] == 6000
    writer.close()
