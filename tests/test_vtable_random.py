"""Random sequences of writes, transactions, savepoints and maintenance on a sqlitebin table,
checked after every step against a NumPy oracle that keeps its own snapshots."""

import copy

import apsw
import numpy as np
import pytest

import sqlitebin
from test_vtable import F32, Oracle, blob, check

SEEDS = [1, 2, 3, 4]


def run_random_session(seed, rescore, steps=160):
    rng = np.random.default_rng(seed)
    dim = int(rng.choice([5, 16, 33]))
    conn = apsw.Connection(":memory:")
    sqlitebin.load(conn)
    options = f"dim={dim}, chunk_size=64, rescore={rescore}" + (", calibration_rows=40" if rescore == "int8" else "")
    conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin({options})")
    oracle = Oracle(dim, rescore, calibration_rows=40)
    saved = []  # oracle snapshots: the transaction's start, then one per savepoint
    next_rowid = 1

    def new_vector():
        return rng.standard_normal(dim).astype(F32)

    for step in range(steps):
        action = rng.choice(["insert", "many", "replace", "update", "move", "delete", "bad", "begin", "commit",
                             "rollback", "savepoint", "rollback_to", "release", "optimize", "search"],
                            p=[.2, .08, .05, .08, .05, .08, .04, .05, .05, .05, .05, .05, .03, .02, .12])
        live = sorted(oracle.rows)
        if action == "insert":
            v = new_vector()
            conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?)", (next_rowid, blob(v)))
            oracle.insert(next_rowid, v)
            next_rowid += 1
        elif action == "many":
            batch = [(next_rowid + i, new_vector()) for i in range(int(rng.integers(2, 90)))]
            with conn:  # its own transaction, or a savepoint inside the open one
                conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(r, blob(v)) for r, v in batch])
            for r, v in batch:
                oracle.insert(r, v)
            next_rowid += len(batch)
        elif action == "replace" and live:
            r, v = int(rng.choice(live)), new_vector()
            conn.execute("INSERT OR REPLACE INTO idx(rowid, vector) VALUES (?, ?)", (r, blob(v)))
            del oracle.rows[r]
            oracle.insert(r, v)
        elif action == "update" and live:
            r, v = int(rng.choice(live)), new_vector()
            conn.execute("UPDATE idx SET vector = ? WHERE rowid = ?", (blob(v), r))
            oracle.rows[r] = v
        elif action == "move" and live:
            r = int(rng.choice(live))
            conn.execute("UPDATE idx SET rowid = ? WHERE rowid = ?", (next_rowid, r))
            oracle.rows[next_rowid] = oracle.rows.pop(r)
            next_rowid += 1
        elif action == "delete" and live:
            chosen = rng.choice(live, size=min(len(live), int(rng.integers(1, 6))), replace=False)
            conn.execute("DELETE FROM idx WHERE rowid IN (SELECT value FROM json_each(?))",
                         ("[" + ",".join(map(str, chosen)) + "]",))
            for r in chosen:
                del oracle.rows[int(r)]
        elif action == "bad":
            with pytest.raises(apsw.SQLError):
                conn.execute("INSERT INTO idx(rowid, vector) VALUES (?, ?), (?, ?)",
                              (next_rowid, blob(new_vector()), next_rowid + 1, b"\0" * 3))
        elif action == "begin" and conn.get_autocommit():
            conn.execute("BEGIN")
            saved.append(copy.deepcopy(oracle))
        elif action == "commit" and not conn.get_autocommit() and len(saved) == 1:
            conn.execute("COMMIT")
            saved.clear()
        elif action == "rollback" and not conn.get_autocommit():
            conn.execute("ROLLBACK")
            oracle = saved[0]
            saved.clear()
        elif action == "savepoint" and not conn.get_autocommit():
            conn.execute(f"SAVEPOINT s{len(saved)}")
            saved.append(copy.deepcopy(oracle))
        elif action == "rollback_to" and len(saved) > 1:
            conn.execute(f"ROLLBACK TO s{len(saved) - 1}")
            oracle = copy.deepcopy(saved[-1])
        elif action == "release" and len(saved) > 1:
            conn.execute(f"RELEASE s{len(saved) - 1}")
            saved.pop()
        elif action == "optimize":
            conn.execute("INSERT INTO idx(idx) VALUES ('optimize')")
        elif action == "search" and oracle.rows:
            q = new_vector()
            n = len(oracle.rows)
            check(conn, oracle, q, k=int(rng.integers(1, 12)), oversample=n)
            check(conn, oracle, q, k=int(rng.integers(1, 12)), rescore="none")
            check(conn, oracle, q, k=5, oversample=n, allowed=set(rng.choice(sorted(oracle.rows), 5).tolist()))
        assert conn.execute("SELECT count(*) FROM idx").fetchone()[0] == len(oracle.rows), (step, action)
    if not conn.get_autocommit():
        conn.execute("COMMIT")
    conn.execute("INSERT INTO idx(idx) VALUES ('integrity-check')")
    if oracle.rows:
        check(conn, oracle, rng.standard_normal(dim).astype(F32), k=10, oversample=len(oracle.rows))
    stored = dict(conn.execute("SELECT rowid, vector FROM idx").fetchall())
    assert sorted(stored) == sorted(oracle.rows)
    if rescore == "float32":
        for r, v in oracle.rows.items():
            assert np.frombuffer(stored[r], F32).tolist() == v.tolist()
    conn.close()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rescore", ["int8", "float32", "none"])
def test_random_sessions_match_the_oracle(seed, rescore):
    run_random_session(seed, rescore)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 120))
@pytest.mark.parametrize("rescore", ["int8", "float32", "none"])
def test_long_random_sessions_match_the_oracle(seed, rescore):
    run_random_session(seed, rescore, steps=500)
