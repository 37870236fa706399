"""Concurrent writers wait for each other instead of failing: processes and threads, each with its own connection,
adding, upserting and deleting in one collection at once; and one Database shared by threads.

Every write transaction begins with BEGIN IMMEDIATE, so a writer that finds the database busy waits (up to the
5-second busy timeout) rather than failing as a deferred transaction does when it upgrades to a write. Each writer
records what it wrote; at the end every write must be there and no writer may have seen an error, not even
SQLITE_BUSY. Before, two processes adding for 5 s got about 6,000 "database is locked" errors each.

This file is also the writer process: `python tests/test_concurrent_writers.py DB SECONDS SEED START`.
The default run goes for 2 seconds; `pytest -m slow tests/test_concurrent_writers.py` for 10.
"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import sqlitebin

COLLECTION = "shared"
DIM = 32
MINIMUM_OPERATIONS = 3


def write_for(path, seconds, seed, start_at):
    """Add, upsert and delete in random order until `seconds` have passed; return what was done and any errors."""
    rng = np.random.default_rng(seed)
    database = sqlitebin.connect(path)
    collection = database.collection(COLLECTION)
    live, deleted, errors = {}, set(), []
    operations = {"add": 0, "upsert": 0, "delete": 0}
    time.sleep(max(0.0, start_at - time.time()))
    stop = time.time() + seconds
    # Every kind of write happens at least a few times, however slow a busy machine makes the writers.
    while time.time() < stop or min(operations.values()) < MINIMUM_OPERATIONS:
        choice = rng.choice(["add", "add", "upsert", "delete"]) if live else "add"
        try:
            if choice == "add":
                count = int(rng.integers(1, 20))
                ids = collection.add(vectors=rng.normal(size=(count, DIM)),
                                     metadata=[{"writer": seed, "version": 0}] * count)
                live.update(dict.fromkeys(ids, 0))
            elif choice == "upsert":
                ids = [int(i) for i in rng.choice(list(live), size=min(5, len(live)), replace=False)]
                version = operations["upsert"] + 1
                collection.upsert(vectors=rng.normal(size=(len(ids), DIM)), ids=ids,
                                  metadata=[{"writer": seed, "version": version}] * len(ids))
                live.update(dict.fromkeys(ids, version))
            else:
                ids = [int(i) for i in rng.choice(list(live), size=min(3, len(live)), replace=False)]
                assert collection.delete(ids) == len(ids)
                for i in ids:
                    del live[i]
                deleted.update(ids)
            operations[choice] += 1
        except Exception as error:  # every error is a failure of the test, recorded to be shown
            errors.append(f"{choice}: {type(error).__name__}: {error}")
    database.close()
    return {"live": {str(k): v for k, v in live.items()}, "deleted": sorted(deleted), "errors": errors[:20],
            "error_count": len(errors), "operations": operations}


def create(path):
    database = sqlitebin.connect(path)
    database.create_collection(COLLECTION, dim=DIM, embedder=None, rescore="int8")
    database.close()


def check_everything_present(path, results):
    database = sqlitebin.connect(path)
    collection = database.collection(COLLECTION)
    expected = {}
    for result in results:
        assert result["error_count"] == 0, result["errors"]
        expected.update({int(k): (result["writer"], v) for k, v in result["live"].items()})
    stored = {hit.id: (hit.metadata["writer"], hit.metadata["version"]) for hit in collection.get(list(expected))}
    assert stored == expected
    # Auto-assigned ids are max(id) + 1, so a deleted largest id can come back as another writer's new document.
    deleted = {i for result in results for i in result["deleted"]} - set(expected)
    assert collection.get(sorted(deleted)) == []
    assert len(collection) == len(expected)
    # The chunk scan sees exactly the live documents: a search for k = all returns them all.
    hits = collection.search(np.ones(DIM), k=len(expected) + 10, oversample=1, rescore="none")
    assert sorted(hit.id for hit in hits) == sorted(expected)
    integrity = database.conn.execute("PRAGMA integrity_check").fetchall()
    database.close()
    assert integrity == [("ok",)]


def run_writers(tmp_path, seconds):
    path = str(tmp_path / "writers.db")
    create(path)
    start_at = time.time() + 1.5  # both processes are up and have opened the database by then
    processes = [
        subprocess.Popen([sys.executable, __file__, path, str(seconds), str(seed), str(start_at)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in (1, 2)
    ]
    thread_results = {}

    def in_thread(seed):
        thread_results[seed] = write_for(path, seconds, seed, start_at)

    threads = [threading.Thread(target=in_thread, args=(seed,)) for seed in (3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = []
    for seed, process in zip((1, 2), processes):
        out, err = process.communicate(timeout=seconds + 120)
        assert process.returncode == 0, err[-3000:]
        results.append(dict(json.loads(out.strip().splitlines()[-1]), writer=seed))
    results += [dict(thread_results[seed], writer=seed) for seed in (3, 4)]
    check_everything_present(path, results)
    for result in results:
        assert min(result["operations"].values()) >= MINIMUM_OPERATIONS, result["operations"]
    return results


def test_two_processes_and_two_threads_write_for_2_seconds_without_an_error(tmp_path):
    run_writers(tmp_path, 2)


@pytest.mark.slow
def test_two_processes_and_two_threads_write_for_10_seconds_without_an_error(tmp_path):
    results = run_writers(tmp_path, 10)
    print({result["writer"]: result["operations"] for result in results})


def test_a_database_shared_by_threads_serialises_their_calls(tmp_path):
    database = sqlitebin.connect(str(tmp_path / "shared.db"))
    collection = database.create_collection(COLLECTION, dim=DIM, embedder=None, rescore="float32")
    collection.add(vectors=np.random.default_rng(0).normal(size=(50, DIM)))
    errors, added = [], []

    def work(seed):
        rng = np.random.default_rng(seed)
        for step in range(250):
            try:
                if step % 5 == 0:
                    added.extend(collection.add(vectors=rng.normal(size=(2, DIM))))
                elif step % 5 == 1:
                    collection.upsert(vectors=rng.normal(size=(1, DIM)), ids=[int(rng.integers(1, 50))])
                elif step % 5 == 2:
                    len(collection)
                    database.collections()
                else:
                    assert len(collection.search(rng.normal(size=DIM), k=5)) == 5
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(added)) == 4 * 50 * 2 and len(collection) == 50 + 400
    database.close()


def test_a_write_inside_a_callers_transaction_is_a_savepoint(tmp_path):
    database = sqlitebin.connect(str(tmp_path / "outer.db"))
    collection = database.create_collection(COLLECTION, dim=DIM, embedder=None)
    database.conn.execute("BEGIN")
    collection.add(vectors=np.ones((2, DIM)))
    with pytest.raises(ValueError, match="already exists"):
        collection.add(vectors=np.ones((1, DIM)), ids=[1])
    assert len(collection) == 2  # the failed add rolled back to its savepoint only
    database.conn.execute("ROLLBACK")
    assert len(collection) == 0
    database.close()


if __name__ == "__main__":
    db_path, run_seconds, writer_seed, start_time = sys.argv[1:5]
    print(json.dumps(write_for(db_path, float(run_seconds), int(writer_seed), float(start_time))))
