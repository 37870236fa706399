"""Replicated: the extension, unchanged, inside a three-node dqlite cluster (Raft-replicated SQLite).

dqlite nodes (`dqlite-demo` from Debian's go-dqlite, on the system libsqlite3 through libdqlite0)
never load extensions, so each node runs with `LD_PRELOAD=sqlitebin/sqlitebin_preload.so`, which
registers sqlitebin with sqlite3_auto_extension (ext/preload.c). The demo's HTTP API only stores
key/value pairs, so every statement goes through the `dqlite` shell (go-dqlite's client: it finds
the leader and runs arbitrary SQL there). Loopback addresses only.

The test writes vectors with plain SQL into a `sqlitebin` virtual table (int8 rescoring, calibrated
through the cluster) beside a documents table, and into a plain table searched with the scalar
functions; it searches both with rescoring (virtual table: `vector MATCH ... AND k = 10`, joined to
the documents; plain table: hamming() candidates rescored with dot_float32(); both checked against
NumPy), kills the leader
with SIGKILL, and after the election checks that the same searches give identical results and that
every acknowledged write is there; then the killed node restarts and catches up, which is shown by
failing over until it is the leader and running the searches on it.

Needs `apt-get install libdqlite0 go-dqlite`; skipped without them. Slow (about a minute):
`pytest -m slow tests/test_replicated.py`.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import sqlitebin
from sqlitebin import quantize

pytestmark = pytest.mark.slow

DQLITE_DEMO = shutil.which("dqlite-demo")
DQLITE_SHELL = shutil.which("dqlite")
PACKAGE = Path(sqlitebin.__file__).resolve().parent
PRELOAD = PACKAGE / "sqlitebin_preload.so"
DATABASE = "demo"  # the database dqlite-demo opens
DIM = 64
DOCUMENTS = 400
BATCH = 40
CANDIDATES = 60
CALIBRATION_ROWS = 100
K = 10
TIMEOUT = 60.0

if DQLITE_DEMO is None or DQLITE_SHELL is None:
    pytest.skip("needs dqlite-demo and dqlite (Debian packages libdqlite0 and go-dqlite)", allow_module_level=True)
if not PRELOAD.exists():
    pytest.skip(f"{PRELOAD} is not built (python setup.py build_ext --inplace)", allow_module_level=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ShellError(RuntimeError):
    pass


class Cluster:
    """Three dqlite-demo nodes on loopback, each with sqlitebin preloaded; SQL through the dqlite shell."""

    def __init__(self, directory, size=3):
        self.directory = directory
        self.nodes = []
        for i in range(size):
            self.nodes.append({
                "api": f"127.0.0.1:{free_port()}",
                "db": f"127.0.0.1:{free_port()}",
                "dir": directory / f"node{i}",
                "process": None,
            })
        self.environment = dict(os.environ, LD_PRELOAD=str(PRELOAD))

    def start(self, i):
        node = self.nodes[i]
        node["dir"].mkdir(exist_ok=True)
        command = [DQLITE_DEMO, "--api", node["api"], "--db", node["db"], "--dir", str(node["dir"])]
        if i > 0:
            command += ["--join", self.nodes[0]["db"]]
        log = open(node["dir"] / "node.log", "ab")
        node["process"] = subprocess.Popen(command, env=self.environment, stdout=log, stderr=log)
        log.close()

    def start_all(self):
        self.start(0)
        self.wait(lambda: self.leader() == self.nodes[0]["db"], "the first node to lead")
        for i in range(1, len(self.nodes)):
            self.start(i)
        self.wait(lambda: self.voters() == len(self.nodes), "three voters")

    def kill(self, i):
        process = self.nodes[i]["process"]
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.nodes[i]["process"] = None

    def stop_all(self):
        for i, node in enumerate(self.nodes):
            if node["process"] is not None:
                self.kill(i)

    def servers(self):
        return ",".join(node["db"] for node in self.nodes if node["process"] is not None)

    def shell(self, statement, timeout=20):
        result = subprocess.run([DQLITE_SHELL, "-s", self.servers(), DATABASE, statement],
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0 or result.stdout.startswith("Error"):
            raise ShellError(f"dqlite shell failed ({result.returncode}): {(result.stdout + result.stderr).strip()[:300]}")
        return [line.split("|") for line in result.stdout.splitlines() if line]

    def leader(self):
        try:
            rows = self.shell(".leader", timeout=10)
        except (ShellError, subprocess.TimeoutExpired):
            return None
        return rows[0][0] if rows and rows[0][0] else None

    def voters(self):
        try:
            rows = self.shell(".cluster", timeout=10)
        except (ShellError, subprocess.TimeoutExpired):
            return 0
        return sum(1 for row in rows if len(row) == 3 and row[2] == "voter")

    def index_of(self, address):
        return next(i for i, node in enumerate(self.nodes) if node["db"] == address)

    def wait(self, condition, what):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}")

    def execute(self, statement):
        """Run a write until the cluster acknowledges it (retrying through an election)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                return self.shell(statement)
            except (ShellError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def hex_float32(vector):
    return "x'" + np.asarray(vector, dtype="<f4").tobytes().hex() + "'"


def search_sql(query):
    """Top K by hamming() candidates over the codes, rescored with the float32 vectors: one statement.

    It starts with SELECT, not WITH: the dqlite shell sends statements starting with SELECT as
    queries and everything else as exec (which fails on a statement returning rows).
    """
    q = hex_float32(query)
    return (
        f"SELECT c.id, dot_float32({q}, d.vector) AS score, c.distance FROM "
        f"(SELECT id, hamming(code, binary_quantize({q})) AS distance FROM docs "
        f"ORDER BY distance, id LIMIT {CANDIDATES}) AS c "
        f"JOIN docs AS d ON d.id = c.id ORDER BY score DESC, c.id LIMIT {K}"
    )


def oracle(vectors, ids, query):
    """The same search in NumPy: hamming candidates (ties by id), rescored by the float32 dot product."""
    codes = np.packbits(vectors > 0, axis=1)
    query_code = np.packbits(query > 0)
    distance = np.unpackbits(codes ^ query_code, axis=1).sum(axis=1)
    order = np.lexsort((ids, distance))[:CANDIDATES]
    scores = vectors[order].astype(np.float64) @ query.astype(np.float64)
    best = sorted(zip(-scores, ids[order], distance[order]))[:K]
    return [(int(i), -s, int(d)) for s, i, d in best]


def index_sql(query, oversample=10):
    """The virtual table's search (int8 rescoring), joined to the documents."""
    return (
        f"SELECT v.id, d.title, v.score, v.distance FROM (SELECT rowid AS id, score, distance FROM idx "
        f"WHERE vector MATCH {hex_float32(query)} AND k = {K} AND oversample = {oversample}) AS v "
        f"JOIN documents AS d ON d.id = v.id ORDER BY v.score DESC, v.id"
    )


def index_oracle(vectors, ids, query, ranges):
    """Every row rescored with its int8 vector (sqlitebin.quantize, the documented formula)."""
    stored = quantize.int8_dequantize(quantize.int8_quantize(vectors, ranges), ranges)
    scores = stored.astype(np.float64) @ query.astype(np.float64)
    order = np.lexsort((ids, -scores))[:K]
    return [int(ids[i]) for i in order], scores[order]


def run_searches(cluster, queries):
    return [cluster.execute(search_sql(q)) for q in queries] + [cluster.execute(index_sql(q)) for q in queries]


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def test_sqlitebin_survives_leader_failover_in_dqlite(cluster):
    rng = np.random.default_rng(15)
    vectors = rng.standard_normal((DOCUMENTS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1, DOCUMENTS + 1)
    queries = rng.standard_normal((5, DIM)).astype(np.float32)

    # The extension is present on the leader (the node that runs statements).
    assert cluster.execute("SELECT hamming(x'ff00', x'0f0f'), sqlitebin_version()") == [["8", sqlitebin.__version__]]
    cluster.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, code BLOB NOT NULL, vector BLOB NOT NULL)")
    # The virtual table: int8 rescoring, calibrated through the cluster after CALIBRATION_ROWS rows.
    cluster.execute(f"CREATE TABLE documents (id INTEGER PRIMARY KEY, title TEXT NOT NULL); "
                    f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={DIM}, rescore=int8, chunk_size=64, "
                    f"calibration_rows={CALIBRATION_ROWS})")

    acknowledged = []

    def insert(start, stop):
        values = ", ".join(
            f"({int(ids[i])}, binary_quantize({hex_float32(vectors[i])}), {hex_float32(vectors[i])})"
            for i in range(start, stop))
        titles = ", ".join(f"({int(ids[i])}, 'document {int(ids[i])}')" for i in range(start, stop))
        rows = ", ".join(f"({int(ids[i])}, {hex_float32(vectors[i])})" for i in range(start, stop))
        # One exec is one transaction (the shell wraps it), so a batch is in all three tables or none.
        # OR IGNORE / OR REPLACE: a batch retried after a timeout may have been committed by the first try.
        cluster.execute(f"INSERT OR IGNORE INTO docs (id, code, vector) VALUES {values}; "
                        f"INSERT OR IGNORE INTO documents (id, title) VALUES {titles}; "
                        f"INSERT OR REPLACE INTO idx (rowid, vector) VALUES {rows}")
        acknowledged.extend(int(i) for i in ids[start:stop])

    half = DOCUMENTS // 2
    for start in range(0, half, BATCH):
        insert(start, min(half, start + BATCH))

    # The codes the extension wrote through the cluster are numpy.packbits(v > 0).
    some = cluster.execute("SELECT id, hex(code) FROM docs WHERE id IN (1, 2, 3) ORDER BY id")
    assert some == [[str(i), np.packbits(vectors[i - 1] > 0).tobytes().hex().upper()] for i in (1, 2, 3)]

    # Kill -9 the leader in the middle of the ingest; the rest goes through the new leader.
    first_leader = cluster.index_of(cluster.leader())
    cluster.kill(first_leader)
    cluster.wait(lambda: cluster.leader() not in (None, cluster.nodes[first_leader]["db"]), "a new leader")
    for start in range(half, DOCUMENTS, BATCH):
        insert(start, min(DOCUMENTS, start + BATCH))

    present = [int(row[0]) for row in cluster.execute("SELECT id FROM docs ORDER BY id")]
    assert set(acknowledged) <= set(present), "an acknowledged write was lost in the failover"
    assert present == sorted(acknowledged)
    assert [int(row[0]) for row in cluster.execute("SELECT id FROM documents ORDER BY id")] == present
    assert [int(row[0]) for row in cluster.execute("SELECT rowid FROM idx ORDER BY rowid")] == present

    # Searches with rescoring, against NumPy.
    before = run_searches(cluster, queries)
    for query, rows in zip(queries, before):
        expected = oracle(vectors, ids, query)
        assert [int(r[0]) for r in rows] == [e[0] for e in expected]
        assert [int(r[2]) for r in rows] == [e[2] for e in expected]
        np.testing.assert_allclose([float(r[1]) for r in rows], [e[1] for e in expected], rtol=1e-5, atol=1e-6)

    # The virtual table: calibrated once through the cluster; with every row a candidate the
    # search is the exact int8-rescored top K.
    config = dict(cluster.execute("SELECT key, hex(value) FROM idx_config WHERE key IN ('ranges', 'dim')"))
    ranges = np.frombuffer(bytes.fromhex(config["ranges"]), dtype="<f4")
    assert len(ranges) == 2 * DIM
    np.testing.assert_array_equal(ranges, quantize.calibrate_ranges(vectors[:CALIBRATION_ROWS]))
    assert cluster.execute("SELECT count(*) FROM idx") == [[str(DOCUMENTS)]]
    cluster.execute("INSERT INTO idx (idx) VALUES ('integrity-check')")
    for query in queries:
        rows = cluster.execute(index_sql(query, oversample=DOCUMENTS // K))
        expected_ids, expected_scores = index_oracle(vectors, ids, query, ranges)
        assert [int(r[0]) for r in rows] == expected_ids
        assert [r[1] for r in rows] == [f"document {i}" for i in expected_ids]
        np.testing.assert_allclose([float(r[2]) for r in rows], expected_scores, rtol=1e-5, atol=1e-6)
    for rows in before[len(queries):]:
        assert len(rows) == K

    # Kill this leader too: the same searches give identical results (to the last printed digit).
    second_leader = cluster.index_of(cluster.leader())
    cluster.start(first_leader)
    cluster.wait(lambda: cluster.voters() == 3, "the restarted node to rejoin")
    cluster.kill(second_leader)
    cluster.wait(lambda: cluster.leader() not in (None, cluster.nodes[second_leader]["db"]), "a new leader")
    assert run_searches(cluster, queries) == before
    cluster.start(second_leader)
    cluster.wait(lambda: cluster.voters() == 3, "the restarted node to rejoin")

    # The node killed first has caught up: fail over until it leads, then search on it.
    for _ in range(8):
        leader = cluster.index_of(cluster.leader())
        if leader == first_leader:
            break
        cluster.kill(leader)
        cluster.wait(lambda: cluster.leader() not in (None, cluster.nodes[leader]["db"]), "a new leader")
        cluster.start(leader)
        cluster.wait(lambda: cluster.voters() == 3, "the restarted node to rejoin")
    else:
        pytest.fail("the node killed first never became the leader in 8 elections")
    assert cluster.leader() == cluster.nodes[first_leader]["db"]
    assert [int(row[0]) for row in cluster.execute("SELECT id FROM docs ORDER BY id")] == present
    assert run_searches(cluster, queries) == before
    assert cluster.execute("SELECT * FROM pragma_integrity_check") == [["ok"]]
    cluster.execute("INSERT INTO idx (idx) VALUES ('integrity-check')")
