"""Faults: a crash loses nothing committed, and a full disk or a read-only file gives a clear error.

Kill -9: `scripts/kill_ingest.py` ingests the Debian corpus in batches of 500, resuming from what the
database holds, and is killed with SIGKILL at random moments, again and again. After every kill the
database is reopened and checked: `PRAGMA integrity_check` is ok; it holds exactly the documents of
the batches committed before the kill (at least every batch the worker reported, at most one more,
never part of one); and every derived structure agrees with the documents table: codes, rescoring
vectors in the index, the FTS index, and search through the index. The default run kills the bundled
3,000-document sample a few times; `pytest -m slow tests/test_reliability_faults.py` kills the full
59,302-document corpus at least 20 times (SQLITEBIN_KILLS sets how many; SQLITEBIN_DEBIAN_CORPUS where
the corpus is).

Disk full is made two ways: `PRAGMA max_page_count` (SQLITE_FULL, anywhere) and a real 3 MiB tmpfs
(needs root; skipped otherwise). A read-only file is made with `chattr +i` (root) and with
`connect(readonly=True)`.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import apsw
import numpy as np
import pytest
from click.testing import CliRunner

import sqlitebin
from sqlitebin.cli import main
from sqlitebin.datasets import load_corpus, sample_corpus_path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "scripts" / "kill_ingest.py"
FULL_CORPUS = Path(os.environ.get("SQLITEBIN_DEBIAN_CORPUS", "/work/shared/data/debian-descriptions/corpus.jsonl.gz"))
BATCH = 500
COLLECTION = "debian"


# ---------------------------------------------------------------------------
# Consistency of a collection's derived structures with its documents table


def check_collection(db, name):
    """Assert that the index (its rows, its own integrity check) and the FTS index agree with the documents."""
    conn = db.conn
    quoted = {suffix: '"' + f"{name}_{suffix}".replace('"', '""') + '"' for suffix in ("documents", "index", "fts")}
    ids = [row[0] for row in conn.execute(f"SELECT id FROM {quoted['documents']} ORDER BY id")]
    collection = db.collection(name)
    rows = conn.execute(f"SELECT rowid, length(vector) FROM {quoted['index']} ORDER BY rowid").fetchall()
    assert [row[0] for row in rows] == ids, "the index and the documents disagree"
    assert all(row[1] == 4 * collection.dim for row in rows)
    if collection.fts:
        conn.execute(f"INSERT INTO {quoted['fts']}({quoted['fts']}) VALUES ('integrity-check')")
        docsize = '"' + f"{name}_fts_docsize".replace('"', '""') + '"'
        assert conn.execute(f"SELECT count(*) FROM {docsize}").fetchall() == [(len(ids),)]
    # The index's own check (shadow tables against each other) finds nothing wrong.
    if ids and not conn.readonly("main"):  # a command is an INSERT, which a read-only connection refuses
        conn.execute(f"INSERT INTO {quoted['index']}({quoted['index']}) VALUES ('integrity-check')")
    # Every stored vector finds itself first (Hamming distance 0), through the index.
    if ids:
        for doc_id in ids[:: max(1, len(ids) // 5)]:
            vector = collection.vectors([doc_id])[0]
            hits = collection.search(vector, 1, candidates="hamming", rescore="none", where="id = :id",
                                     params={"id": doc_id})
            assert [h.id for h in hits] == [doc_id]
    return ids


# ---------------------------------------------------------------------------
# Kill -9 during ingest


class Worker:
    """scripts/kill_ingest.py in a subprocess; its stdout lines are collected as they come."""

    def __init__(self, db, corpus, limit):
        command = [sys.executable, str(WORKER), str(db), str(corpus), "--batch-size", str(BATCH)]
        if limit is not None:
            command += ["--limit", str(limit)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        cwd=ROOT)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.started = time.monotonic()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.split())

    def ready(self):
        return any(line[0] == "ready" for line in self.lines)

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.reader.join()

    def finish(self, timeout):
        self.process.wait(timeout=timeout)
        self.reader.join()
        assert self.process.returncode == 0, self.process.stderr.read()[-3000:]

    def reported(self):
        """The most documents the worker said were committed (ready N counts what was already there)."""
        return max([int(line[1]) for line in self.lines if line[0] in ("ready", "committed", "done")], default=0)


def check_after_kill(path, documents, reported, note):
    """Reopen after a crash; return how many documents the database holds."""
    db = sqlitebin.connect(path)
    try:
        assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], note
        if COLLECTION not in db.collections():
            assert reported == 0, note
            return 0
        ids = check_collection(db, COLLECTION)
        count = len(ids)
        assert ids == list(range(1, count + 1)), f"{note}: ids are not exactly 1..{count}"
        # Every reported batch is there; at most the one batch whose report the kill cut off is extra;
        # only whole batches (the last of the corpus may be short).
        assert reported <= count <= reported + BATCH, f"{note}: {count} documents, {reported} reported"
        assert count % BATCH == 0 or count == len(documents), f"{note}: {count} is not whole batches"
        rows = db.conn.execute(f"SELECT id, text, metadata FROM {COLLECTION}_documents ORDER BY id").fetchall()
        for doc_id, text, metadata in rows:
            assert text == documents[doc_id - 1]["text"], f"{note}: document {doc_id} differs"
            assert json.loads(metadata) == {"doc": documents[doc_id - 1]["id"]}, note
        # Searchable: each sampled document is found by its own text through the filtered scan, and
        # by its own stored vector through the index with distance 0.
        collection = db.collection(COLLECTION)
        for doc_id in random.Random(count).sample(ids, min(10, count)):
            text = documents[doc_id - 1]["text"]
            hits = collection.search(text, 1, where="id = :id", params={"id": doc_id})
            assert [h.id for h in hits] == [doc_id], note
            vector = db.conn.execute(f"SELECT vector FROM {COLLECTION}_index WHERE rowid = ?",
                                     (doc_id,)).fetchall()[0][0]
            rows = db.conn.execute(
                f"SELECT rowid, distance FROM {COLLECTION}_index WHERE vector MATCH ? AND k = 1 "
                f"AND candidates = 'hamming' AND rowid IN (SELECT id FROM {COLLECTION}_documents WHERE id = ?)",
                (vector, doc_id)).fetchall()
            assert [row[0] for row in rows] == [doc_id], note
        return count
    finally:
        db.close()


def kill_repeatedly(tmp_path, corpus, limit, kills, seed, spawn_window, ingest_window):
    """Kill the worker `kills` times; return a log of (phase, documents before, reported, after) and
    how many database files were filled with the whole corpus along the way."""
    documents = load_corpus(corpus)[:limit]
    rng = random.Random(seed)
    log = []
    generation = 0
    path = tmp_path / f"kill-{generation}.db"
    held = 0
    while len(log) < kills:
        worker = Worker(path, corpus, limit)
        # Some kills land at a random time after the start (often during start-up and recovery),
        # most at a random time after the worker is ready (during ingest).
        from_spawn = rng.random() < 0.3
        delay = rng.uniform(*spawn_window) if from_spawn else rng.uniform(*ingest_window)
        if not from_spawn:
            while not worker.ready() and worker.process.poll() is None and time.monotonic() - worker.started < 120:
                time.sleep(0.005)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and worker.process.poll() is None:
            time.sleep(0.002)
        finished = worker.process.poll() is not None
        worker.kill()
        reported = max(worker.reported(), held)  # a worker killed before `ready` reported nothing itself
        note = f"kill {len(log) + 1} (seed {seed}, {'spawn' if from_spawn else 'ingest'} + {delay:.3f} s)"
        if finished:
            assert worker.process.returncode == 0, worker.process.stderr.read()[-3000:]
        count = check_after_kill(path, documents, reported, note)
        assert count >= held, f"{note}: documents went missing ({held} before, {count} after)"
        if not finished:
            log.append(("spawn" if from_spawn else "ingest", held, reported, count))
        held = count
        if count == len(documents):  # the corpus is in: start again on a new file
            generation += 1
            path = tmp_path / f"kill-{generation}.db"
            held = 0
    # Finally let one run to the end on the last file: it completes what the kills left.
    worker = Worker(path, corpus, limit)
    worker.finish(timeout=600)
    assert check_after_kill(path, documents, worker.reported(), "final run") == len(documents)
    return log, generation + 1


def test_kill_9_during_ingest_loses_nothing_committed(tmp_path):
    log, _ = kill_repeatedly(tmp_path, sample_corpus_path(), None, kills=5, seed=int(os.environ.get("SQLITEBIN_KILL_SEED", 7)),
                          spawn_window=(0.2, 1.2), ingest_window=(0.02, 0.6))
    assert len(log) == 5


@pytest.mark.slow
def test_kill_9_during_ingest_of_the_full_corpus(tmp_path):
    if not FULL_CORPUS.exists():
        pytest.skip(f"the full Debian corpus is not at {FULL_CORPUS} (set SQLITEBIN_DEBIAN_CORPUS)")
    kills = int(os.environ.get("SQLITEBIN_KILLS", 25))
    seed = int(os.environ.get("SQLITEBIN_KILL_SEED", random.randrange(10**6)))
    start = time.monotonic()
    log, files = kill_repeatedly(tmp_path, FULL_CORPUS, None, kills=kills, seed=seed,
                                 spawn_window=(0.0, 3.0), ingest_window=(0.0, 3.0))
    mid_ingest = sum(1 for phase, before, reported, after in log if after > before or reported > before)
    extra = sum(1 for phase, before, reported, after in log if after > reported)
    print(f"\n{len(log)} kills (seed {seed}) in {time.monotonic() - start:.0f} s over {files} ingests of the "
          f"{len(load_corpus(FULL_CORPUS)):,}-document corpus: {mid_ingest} after at least one batch had committed "
          f"in that run, {extra} where the last committed batch had not been reported yet; every check passed "
          "after every kill")
    assert len(log) >= kills >= 20


# ---------------------------------------------------------------------------
# Disk full


def fill_until_full(collection, rng, batch_size=100):
    """Add batches of random vectors until the disk is full; return (documents added, the error)."""
    added = 0
    for _ in range(10_000):
        try:
            collection.add(vectors=rng.standard_normal((batch_size, collection.dim)),
                           metadata=[{"pad": "x" * 200}] * batch_size, batch_size=batch_size)
        except apsw.FullError as error:
            return added, error
        added += batch_size
    raise AssertionError("the database never filled up")


def test_database_full_by_max_page_count(tmp_path):
    path = tmp_path / "full.db"
    db = sqlitebin.connect(path)
    collection = db.create_collection("c", dim=64, embedder=None, rescore="float32")
    collection.add(vectors=np.random.default_rng(0).standard_normal((1000, 64)))
    pages = db.conn.execute("PRAGMA page_count").fetchall()[0][0]
    db.conn.execute(f"PRAGMA max_page_count = {pages + 60}")
    added, error = fill_until_full(collection, np.random.default_rng(1))
    # From SQLite, or from the index, which names itself: "sqlitebin: c_index: database or disk is full".
    assert re.fullmatch(r"(sqlitebin: c_index: )?database or disk is full", str(error)), str(error)
    assert len(collection) == 1000 + added and added % 100 == 0
    assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    check_collection(db, "c")
    # Still usable: reads, deletes (which free space), and writes once there is room.
    assert len(collection.search(np.ones(64), 5)) == 5
    assert collection.delete(list(range(1, 51))) == 50
    db.conn.execute(f"PRAGMA max_page_count = {pages + 10_000}")
    collection.add(vectors=np.ones((500, 64)))
    assert len(collection) == 1000 + added - 50 + 500
    check_collection(db, "c")
    db.close()


@pytest.fixture
def tmpfs(tmp_path):
    """A 3 MiB tmpfs, mounted for the test (needs root; skipped otherwise)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not root'})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_on_a_real_filesystem(tmpfs):
    path = tmpfs / "docs.db"
    db = sqlitebin.connect(path)
    collection = db.create_collection(COLLECTION, dim=64)   # WordLlama-64 text, with the FTS index
    documents = load_corpus(sample_corpus_path())
    collection.add([d["text"] for d in documents[:300]], batch_size=100)
    filler = tmpfs / "filler"
    free = shutil.disk_usage(tmpfs).free
    filler.write_bytes(b"\0" * max(0, free - 600_000))    # leave about 600 kB
    added = 0
    with pytest.raises(apsw.FullError, match=rf"^(sqlitebin: {COLLECTION}_index: )?database or disk is full$"):
        for start in range(300, len(documents), 100):
            collection.add([d["text"] for d in documents[start:start + 100]], batch_size=100)
            added += 100
    assert len(collection) == 300 + added
    assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    check_collection(db, COLLECTION)
    assert [h.id for h in collection.search(documents[5]["text"], 3)][0] == 6
    # The command line says the same in one line, and keeps the committed batches.
    corpus = tmpfs.parent / "more.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in documents[1000:1400]), encoding="utf-8")
    result = CliRunner().invoke(main, ["index", str(path), str(corpus), "--collection", COLLECTION,
                                       "--batch-size", "100"])
    assert result.exit_code == 1 and re.fullmatch(rf"Error: SQLite: (sqlitebin: {COLLECTION}_index: )?database or disk is full",
                                                  result.output.strip().splitlines()[-1])
    # Room again: writing works, and nothing was lost or half-written.
    filler.unlink()
    collection.add([d["text"] for d in documents[2000:2200]], batch_size=100)
    check_collection(db, COLLECTION)
    db.close()
    db = sqlitebin.connect(path)
    assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    check_collection(db, COLLECTION)
    db.close()


# ---------------------------------------------------------------------------
# Read-only files


@pytest.fixture
def stored(tmp_path):
    path = tmp_path / "ro.db"
    db = sqlitebin.connect(path)
    db.create_collection("c", dim=32, embedder=None).add(vectors=np.random.default_rng(2).standard_normal((500, 32)))
    db.close()
    return path


def check_read_only(db):
    collection = db.collection("c")
    before = [h.id for h in collection.search(np.ones(32), 5)]
    for write in (lambda: collection.add(vectors=np.ones((3, 32))), lambda: collection.delete([1, 2]),
                  lambda: db.create_collection("d", dim=8, embedder=None)):
        with pytest.raises(apsw.ReadOnlyError, match=r"^attempt to write a readonly database$"):
            write()
    assert len(collection) == 500 and [h.id for h in collection.search(np.ones(32), 5)] == before
    assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    check_collection(db, "c")


def test_read_only_connection(stored):
    with sqlitebin.connect(stored, readonly=True) as db:
        check_read_only(db)
    with sqlitebin.connect(stored) as db:                  # writable again
        db.collection("c").add(vectors=np.ones((3, 32)))
        assert len(db.collection("c")) == 503


def test_read_only_file(stored):
    """A file nobody may write (chattr +i stops even root): it opens read-only, reads work, writes fail clearly."""
    result = subprocess.run(["chattr", "+i", str(stored)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot make the file immutable here ({result.stderr.strip()})")
    try:
        with sqlitebin.connect(stored) as db:
            assert db.conn.readonly("main")
            check_read_only(db)
        result = CliRunner().invoke(main, ["index", str(stored), str(sample_corpus_path()), "--collection", "c"])
        assert result.exit_code == 1
        assert result.output.strip().splitlines()[-1].startswith("Error: ")
    finally:
        subprocess.run(["chattr", "-i", str(stored)], check=True)
    with sqlitebin.connect(stored) as db:
        db.collection("c").add(vectors=np.ones((3, 32)))
        check_collection(db, "c")


def test_read_only_filesystem(tmpfs):
    """On a read-only mount a WAL database cannot even be opened for reading (SQLite needs its -shm
    file): the command line says what to check."""
    path = tmpfs / "docs.db"
    with sqlitebin.connect(path) as db:
        db.create_collection("c", dim=8, embedder=None).add(vectors=np.ones((5, 8)))
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    db = sqlitebin.connect(path)
    with pytest.raises(apsw.CantOpenError, match=r"^unable to open database file$"):
        db.collections()
    db.close()
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: cannot open database {path}: check that its directory exists and is writable"
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    with sqlitebin.connect(path) as db:
        assert len(db.collection("c")) == 5
        check_collection(db, "c")
