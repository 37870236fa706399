"""The sqlitebin virtual table from clients other than apsw: the sqlite3 shell (no Python in
that process) and Python's standard sqlite3 module (Debian's /usr/bin/python3); and what a
document costs on disk."""

import json
import os
import shutil
import struct
import subprocess

import apsw
import numpy as np
import pytest

import sqlitebin

F32 = np.dtype("<f4")
DIM = 12


def hex_literal(vector):
    return "X'" + np.asarray(vector, F32).tobytes().hex() + "'"


def vectors(n, seed=7):
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(F32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def float32_top(stored, q, k, allowed=None):
    """rowid, score best first by exact float32 dot products (rowid breaks ties)."""
    items = [(r, float(np.dot(v.astype(np.float64), q.astype(np.float64)))) for r, v in stored.items()
             if allowed is None or r in allowed]
    return sorted(items, key=lambda item: (-item[1], item[0]))[:k]


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 shell is not installed")
def test_a_shell_only_session(tmp_path):
    rows = vectors(60)
    statements = [
        ".bail on",
        f".load {sqlitebin.loadable_path()}",
        f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={DIM}, rescore=float32, chunk_size=64);",
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, lang TEXT);",
        "BEGIN;",
    ]
    for i in range(50):
        statements.append(f"INSERT INTO idx(rowid, vector) VALUES ({i + 1}, {hex_literal(rows[i])});")
        statements.append(f"INSERT INTO docs VALUES ({i + 1}, '{'en' if i % 3 else 'fr'}');")
    statements += [
        "COMMIT;",
        f"UPDATE idx SET vector = {hex_literal(rows[55])} WHERE rowid = 10;",
        "DELETE FROM idx WHERE rowid = 11;",
        "BEGIN;",
        f"INSERT INTO idx(rowid, vector) VALUES (100, {hex_literal(rows[56])});",
        "DELETE FROM idx WHERE rowid = 12;",
        "ROLLBACK;",
        "INSERT INTO idx(idx) VALUES ('integrity-check');",
        ".mode list",
        f"SELECT rowid, printf('%.6f', score) FROM idx WHERE vector MATCH {hex_literal(rows[55])} AND k = 5 "
        "AND oversample = 20 AND rescore = 'float32' AND rowid IN (SELECT id FROM docs WHERE lang = 'en');",
        "SELECT count(*) FROM idx;",
    ]
    result = subprocess.run(["sqlite3", str(tmp_path / "shell.db")], input="\n".join(statements),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    stored = {i + 1: rows[i] for i in range(50) if i + 1 != 11}
    stored[10] = rows[55]
    allowed = {i + 1 for i in range(50) if i % 3}
    expected = float32_top(stored, rows[55], 5, allowed)
    got = [line.split("|") for line in lines[:-1]]
    assert [int(r) for r, _ in got] == [r for r, _ in expected]
    assert [float(s) for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert lines[-1] == "49"


STDLIB_SCRIPT = r"""
import json, sqlite3, struct, sys
path, dim = sys.argv[1], int(sys.argv[2])
rows = json.loads(sys.stdin.read())
conn = sqlite3.connect(":memory:")
conn.enable_load_extension(True)
conn.load_extension(path)
conn.enable_load_extension(False)
conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={dim}, rescore=float32)")
pack = lambda v: struct.pack(f"<{dim}f", *v)
with conn:
    conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i + 1, pack(v)) for i, v in enumerate(rows)])
conn.execute("DELETE FROM idx WHERE rowid = 2")
try:
    conn.execute("INSERT INTO idx(rowid, vector) VALUES (1, ?)", (pack(rows[0]),))
except sqlite3.Error as error:
    duplicate = str(error)
found = conn.execute("SELECT rowid, score FROM idx WHERE vector MATCH ? AND k = 3 AND oversample = 50",
                     (pack(rows[1]),)).fetchall()
print(json.dumps({"found": found, "duplicate": duplicate}))
"""


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="Debian's /usr/bin/python3 is not installed")
def test_python_standard_sqlite3_module(tmp_path):
    check = subprocess.run(["/usr/bin/python3", "-c", "import sqlite3; sqlite3.connect(':memory:').enable_load_extension"],
                           capture_output=True, timeout=60)
    if check.returncode != 0:
        pytest.skip("/usr/bin/python3's sqlite3 module cannot load extensions")
    rows = vectors(40, seed=3)
    script = tmp_path / "stdlib.py"
    script.write_text(STDLIB_SCRIPT)
    result = subprocess.run(["/usr/bin/python3", str(script), sqlitebin.loadable_path(), str(DIM)],
                            input=json.dumps(rows.tolist()), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["duplicate"] == "sqlitebin: rowid 1 already exists in idx"
    stored = {i + 1: rows[i] for i in range(40) if i != 1}
    expected = float32_top(stored, rows[1], 3)
    assert [r for r, _ in output["found"]] == [r for r, _ in expected]
    assert [s for _, s in output["found"]] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_bytes_per_document_dim_256_int8(tmp_path, capsys):
    """Measured with dbstat over every shadow table; the target is 32 + 256 + 16 = 304 bytes."""
    path = str(tmp_path / "size.db")
    conn = apsw.Connection(path)
    sqlitebin.load(conn)
    n = 16384
    rows = np.random.default_rng(1).standard_normal((n, 256)).astype(F32)
    conn.execute("CREATE VIRTUAL TABLE idx USING sqlitebin(dim=256)")
    with conn:
        conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)", [(i + 1, v.tobytes()) for i, v in enumerate(rows)])
    conn.execute("VACUUM")
    per_table = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat WHERE name LIKE 'idx%' GROUP BY name"))
    total = sum(per_table.values())
    with capsys.disabled():
        print(f"\nbytes per document (dim 256, int8, {n} rows): {total / n:.1f}; by table: "
              + ", ".join(f"{k} {v / n:.1f}" for k, v in sorted(per_table.items())))
    assert total / n <= 32 + 256 + 16
    conn.close()
