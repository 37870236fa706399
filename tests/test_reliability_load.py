"""Load: one process ingesting while four search, in WAL mode; threads of one process, each with its
own connection; and the space a VACUUM gives back after deletes.

Every search is checked against a NumPy brute force over exactly the ids its snapshot held (see
scripts/load_worker.py): inside an explicit read transaction the snapshot is known; in autocommit
(where the chunk cache is used) it lies between the counts read just before and just after. SQLITE_BUSY
is the only error allowed, counted and retried (connections wait up to 5 s first); none is expected.

The default run goes for 5 seconds; `pytest -m slow tests/test_reliability_load.py -s` for 60 and
prints queries/s and ingest docs/s.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sqlitebin
from sqlitebin.datasets import load_corpus, sample_corpus_path
from test_reliability_faults import check_collection

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "scripts" / "load_worker.py"
_spec = importlib.util.spec_from_file_location("load_worker", WORKER)
load_worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(load_worker)

INITIAL = 20_000
SEARCHERS = 4


def build(path, count=INITIAL):
    db = sqlitebin.connect(path)
    collection = db.create_collection(load_worker.COLLECTION, dim=load_worker.DIM, embedder=None, rescore="float32")
    for start in range(1, count + 1, 5000):
        ids = np.arange(start, min(count, start + 4999) + 1)
        collection.add(vectors=load_worker.vectors_for(ids), ids=ids.tolist(), batch_size=5000)
    db.create_collection("side", dim=load_worker.DIM, embedder=None, rescore="int8")
    db.close()


def worker(*args):
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def results(process, timeout):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"worker exited with {process.returncode}: {err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def ingest_while_searching(tmp_path, seconds):
    path = tmp_path / "load.db"
    build(path)
    start = time.time() + 2.0  # every process has started and built its oracle tables by then
    processes = [worker("writer", path, "--start", start, "--seconds", seconds, "--first-id", INITIAL + 1)]
    processes += [worker("searcher", path, "--start", start, "--seconds", seconds, "--seed", seed)
                  for seed in range(SEARCHERS)]
    done = [results(p, timeout=seconds + 300) for p in processes]
    writer, searchers = done[0], done[1:]
    assert writer["errors"] == [] and writer["docs"] > 0
    for searcher in searchers:
        assert searcher["errors"] == [], searcher["errors"]
        assert searcher["wrong"] == [], searcher["wrong"]
        assert searcher["in_transaction"] > 0 and searcher["autocommit"] > 0
    queries = sum(s["queries"] for s in searchers)
    stats = {
        "seconds": seconds,
        "queries": queries,
        "queries_per_second": queries / seconds,
        "mean_search_ms": 1000 * sum(s["search_seconds"] for s in searchers) / queries,
        "autocommit_search_ms": 1000 * sum(s["search_seconds"] - s["transaction_seconds"] for s in searchers)
        / sum(s["autocommit"] for s in searchers),
        "transaction_search_ms": 1000 * sum(s["transaction_seconds"] for s in searchers)
        / sum(s["in_transaction"] for s in searchers),
        "ingested": writer["docs"],
        "ingest_docs_per_second": writer["docs"] / writer["seconds"],
        "busy_retries": writer["busy"] + sum(s["busy"] for s in searchers),
        "busy_detail": [d for p in done for d in p.get("busy_detail", [])],
        "final_documents": INITIAL + writer["docs"],
    }
    with sqlitebin.connect(path) as db:
        assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert check_collection(db, load_worker.COLLECTION) == list(range(1, INITIAL + writer["docs"] + 1))
    for leftover in tmp_path.glob("load.db*"):  # the minute-long run writes a few GB
        leftover.unlink()
    print(f"\n{seconds} s, 1 writer + {SEARCHERS} searchers: {stats['queries_per_second']:,.0f} verified queries/s "
          f"(mean search {stats['mean_search_ms']:.2f} ms: {stats['autocommit_search_ms']:.2f} ms in autocommit, "
          f"{stats['transaction_search_ms']:.2f} ms in a read transaction), ingest {stats['ingest_docs_per_second']:,.0f} docs/s "
          f"({stats['ingested']:,} documents, {stats['final_documents']:,} at the end), "
          f"{stats['busy_retries']} busy retries" + "".join(f"\n  busy: {d}" for d in stats["busy_detail"]))
    return stats


def test_ingest_while_four_processes_search(tmp_path):
    stats = ingest_while_searching(tmp_path, 5)
    assert stats["queries"] > 0


@pytest.mark.slow
def test_ingest_while_four_processes_search_for_a_minute(tmp_path):
    stats = ingest_while_searching(tmp_path, 60)
    assert stats["queries"] > 1000


def threads_of_one_process(tmp_path, seconds):
    path = tmp_path / "threads.db"
    build(path, 10_000)
    result = results(worker("threads", path, "--seconds", seconds, "--threads", 4), timeout=seconds + 300)
    assert result["errors"] == [] and result["wrong"] == [], result
    assert result["searches"] > 0 and result["loads"] > 0 and result["writes"] > 0
    print(f"\n{seconds} s, 4 searching threads + 1 loading the extension + 1 writing: {result['searches']:,} searches "
          f"all equal to the single-threaded answers, {result['loads']:,} extension loads, "
          f"{result['writes']:,} documents written")
    return result


def test_threads_each_with_a_connection(tmp_path):
    threads_of_one_process(tmp_path, 5)


@pytest.mark.slow
def test_threads_each_with_a_connection_for_a_minute(tmp_path):
    threads_of_one_process(tmp_path, 60)


# ---------------------------------------------------------------------------
# Space: deleting half a collection and VACUUM shrink the file


def file_bytes(db, path):
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = Path(str(path) + "-wal")
    return os.path.getsize(path) + (wal.stat().st_size if wal.exists() else 0)


def shrink_after_deleting_half(tmp_path, documents, texts):
    """Sizes (full, half deleted, VACUUM, then Database.vacuum() for texts) of a collection of
    `documents` when every other document is deleted: the worst case for page reuse."""
    path = tmp_path / "space.db"
    db = sqlitebin.connect(path)
    if texts:
        collection = db.create_collection("debian", dim=256)          # texts, int8 vectors, FTS index
        ids = collection.add([d["text"] for d in documents], metadata=[{"title": d["title"]} for d in documents])
    else:
        collection = db.create_collection("debian", dim=256, embedder=None)
        vectors = np.random.default_rng(0).standard_normal((len(documents), 256))
        ids = collection.add(vectors=vectors, metadata=[{"title": d["title"]} for d in documents])
    sizes = {"full": file_bytes(db, path)}
    collection.delete(ids[::2])
    sizes["half deleted"] = file_bytes(db, path)
    db.conn.execute("VACUUM")
    sizes["VACUUM"] = file_bytes(db, path)
    # The index keeps deleted slots until 'optimize' rewrites its chunks, and FTS5 keeps deleted entries
    # until its segments merge: Database.vacuum() does both, then VACUUM.
    db.vacuum()
    sizes["Database.vacuum()"] = file_bytes(db, path)
    assert db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert check_collection(db, "debian") == ids[1::2]
    if texts:
        assert collection.search(documents[1::2][7]["text"], 1)[0].id == ids[1::2][7]
    db.close()
    print(f"\n{len(ids):,} documents ({'texts' if texts else 'vectors only'}): " + ", ".join(
        f"{label} {size:,} bytes" + (f" ({1 - size / sizes['full']:.1%} smaller)" if label != "full" else "")
        for label, size in sizes.items()))
    return {label: 1 - size / sizes["full"] for label, size in sizes.items()}


def test_delete_half_then_vacuum_shrinks_vectors(tmp_path):
    documents = load_corpus(sample_corpus_path()) * 4   # 12,000 documents
    assert shrink_after_deleting_half(tmp_path, documents, texts=False)["Database.vacuum()"] >= 0.40


def test_delete_half_then_vacuum_shrinks_texts(tmp_path):
    shrink = shrink_after_deleting_half(tmp_path, load_corpus(sample_corpus_path()), texts=True)
    assert shrink["Database.vacuum()"] >= 0.40


@pytest.mark.slow
def test_delete_half_then_vacuum_the_full_corpus(tmp_path):
    from test_reliability_faults import FULL_CORPUS

    if not FULL_CORPUS.exists():
        pytest.skip(f"the full Debian corpus is not at {FULL_CORPUS}")
    shrink = shrink_after_deleting_half(tmp_path, load_corpus(FULL_CORPUS), texts=True)
    assert shrink["Database.vacuum()"] >= 0.40
