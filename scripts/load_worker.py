"""Processes and threads for tests/test_reliability_load.py: concurrent ingest and search on one file.

    python scripts/load_worker.py writer   DB --start T --seconds S --first-id N [--batch 500]
    python scripts/load_worker.py searcher DB --start T --seconds S --seed K [--batch 500]
    python scripts/load_worker.py threads  DB --seconds S [--threads 4]

Vectors are a pure function of their id (`vectors_for`), so a searcher can rebuild exactly what the
writer stored and check every answer against a NumPy brute force over the ids its snapshot held.
The writer appends ids in batches, so every committed state holds ids 1..M for M = first + j x batch.

Each process prints one JSON line with its counts. SQLITE_BUSY is the only error tolerated: it is
counted and the operation retried (connections wait up to 5 s first; in WAL mode readers and the one
writer do not block each other, so it should not happen at all).
"""

import argparse
import json
import random
import sys
import threading
import time

import apsw
import numpy as np

import sqlitebin
from sqlitebin import quantize

COLLECTION = "load"
DIM = 64
K = 10
OVERSAMPLE = 4
_tables = {}


def vectors_for(ids):
    """The float32 vector of each id: two random tables combined, so 2^26 ids are all distinct."""
    if not _tables:
        _tables["low"] = np.random.default_rng(1).standard_normal((1 << 16, DIM)).astype(np.float32)
        _tables["high"] = (np.random.default_rng(2).standard_normal((1 << 10, DIM)) * 0.5).astype(np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    return _tables["low"][ids & 0xFFFF] + _tables["high"][(ids >> 16) & 0x3FF]


class Oracle:
    """Brute force over ids 1..M: Hamming candidates, then exact float32 rescoring, as search() does
    with candidates="hamming", rescore="float32"."""

    def __init__(self):
        self.codes = np.zeros(0, dtype=np.uint64)

    def grow(self, count):
        start = len(self.codes)
        if count > start:
            vectors = quantize.normalize(vectors_for(np.arange(start + 1, count + 1)))
            new = np.packbits(vectors > 0, axis=1).view("<u8")[:, 0]
            self.codes = np.concatenate([self.codes, new])

    def keys(self, query_code, count):
        """(distance, id) of ids 1..count, as one sortable integer each: distance << 40 | id."""
        self.grow(count)
        distance = np.bitwise_count(self.codes[:count] ^ query_code).astype(np.int64)
        return (distance << 40) | np.arange(1, count + 1, dtype=np.int64)

    @staticmethod
    def smallest(keys, count, wanted):
        """The `wanted` smallest of the first `count` keys, in order."""
        wanted = min(wanted, count)
        if wanted == 0:
            return keys[:0]
        chosen = keys[:count][np.argpartition(keys[:count], wanted - 1)[:wanted]] if wanted < count else keys[:count]
        return np.sort(chosen)

    def search(self, query, keys, count):
        """[(id, score, distance)] best first among ids 1..count, given the keys of ids 1..>=count."""
        chosen = self.smallest(keys, count, K * OVERSAMPLE)
        candidates, distance = chosen & ((1 << 40) - 1), chosen >> 40
        stored = quantize.normalize(vectors_for(candidates)).astype(np.float64)
        scores = stored @ query.astype(np.float64)
        order = np.lexsort((candidates, -scores))[:K]
        return [(int(candidates[i]), float(scores[i]), int(distance[i])) for i in order]

    def knn(self, keys, count):
        """The index's Hamming top K (rescore='none') among ids 1..count: [(id, distance)]."""
        chosen = self.smallest(keys, count, K)
        return [(int(key & ((1 << 40) - 1)), int(key >> 40)) for key in chosen]


def same(hits, expected):
    return ([h.id for h in hits] == [e[0] for e in expected]
            and [h.distance for h in hits] == [e[2] for e in expected]
            and np.allclose([h.score for h in hits], [e[1] for e in expected], rtol=1e-9, atol=1e-12))


def retry_busy(counter, function, label=""):
    """Run `function`, retrying after SQLITE_BUSY (counted): the documented busy wait."""
    while True:
        started = time.monotonic()
        try:
            return function()
        except apsw.BusyError as error:
            counter["busy"] += 1
            counter.setdefault("busy_detail", []).append(
                f"{label}: {error} (extended code {getattr(error, 'extendedresult', '?')}, "
                f"after {time.monotonic() - started:.3f} s)")
            time.sleep(0.01)


def wait_until(start):
    time.sleep(max(0.0, start - time.time()))


def writer(args):
    db = sqlitebin.connect(args.db)
    collection = db.collection(COLLECTION)
    counts = {"role": "writer", "docs": 0, "batches": 0, "busy": 0, "errors": []}
    next_id = args.first_id
    vectors_for([1])
    wait_until(args.start)
    began = time.time()
    while time.time() < args.start + args.seconds:
        ids = list(range(next_id, next_id + args.batch))
        try:
            retry_busy(counts, lambda: collection.add(vectors=vectors_for(ids), ids=ids, batch_size=args.batch), "add")
        except Exception as error:  # anything but a busy wait is a failure the test reports
            counts["errors"].append(f"{type(error).__name__}: {error}")
            break
        next_id += args.batch
        counts["docs"] += args.batch
        counts["batches"] += 1
    counts["seconds"] = time.time() - began
    db.close()
    print(json.dumps(counts), flush=True)


def searcher(args):
    db = sqlitebin.connect(args.db)
    collection = db.collection(COLLECTION)
    oracle = Oracle()
    rng = np.random.default_rng(args.seed)
    counts = {"role": "searcher", "queries": 0, "in_transaction": 0, "autocommit": 0, "snapshots_considered": 0,
              "busy": 0, "errors": [], "wrong": [], "search_seconds": 0.0, "transaction_seconds": 0.0}
    max_id = f"SELECT coalesce(max(id), 0) FROM {COLLECTION}_documents"
    first = db.conn.execute(max_id).fetchall()[0][0]
    oracle.grow(first + 200_000)  # most of what the run will add, so growing is rarely on the clock
    wait_until(args.start)
    began = time.time()
    while time.time() < args.start + args.seconds:
        query = rng.standard_normal(DIM).astype(np.float32)
        normalized = quantize.normalize(query.reshape(1, -1))[0]
        code_bytes = np.packbits(normalized > 0).tobytes()
        code = np.frombuffer(code_bytes, dtype="<u8")[0]
        try:
            if counts["queries"] % 2 == 0:
                # An explicit read transaction: the count and both searches see one snapshot.
                def in_snapshot():
                    with db.conn:
                        count = db.conn.execute(max_id).fetchall()[0][0]
                        t = time.perf_counter()
                        hits = collection.search(query, K, oversample=OVERSAMPLE, candidates="hamming",
                                                 rescore="float32")
                        elapsed = time.perf_counter() - t
                        rows = db.conn.execute(
                            f"SELECT rowid, distance FROM {COLLECTION}_index WHERE vector MATCH ? AND k = {K} "
                            "AND candidates = 'hamming' AND rescore = 'none'", (normalized.tobytes(),)).fetchall()
                    return count, hits, rows, elapsed

                count, hits, rows, elapsed = retry_busy(counts, in_snapshot, "read transaction")
                keys = oracle.keys(code, count)
                expected = oracle.search(normalized, keys, count)
                if not same(hits, expected) or rows != oracle.knn(keys, count):
                    counts["wrong"].append({"snapshot": count, "got": [h.id for h in hits], "expected": expected})
                counts["in_transaction"] += 1
                counts["transaction_seconds"] += elapsed
            else:
                # Autocommit (the chunk cache's path): the search's snapshot lies between two counts.
                before = retry_busy(counts, lambda: db.conn.execute(max_id).fetchall()[0][0], "count before")
                t = time.perf_counter()
                hits = retry_busy(counts, lambda: collection.search(query, K, oversample=OVERSAMPLE,
                                                                    candidates="hamming", rescore="float32"),
                                  "autocommit search")
                elapsed = time.perf_counter() - t
                after = retry_busy(counts, lambda: db.conn.execute(max_id).fetchall()[0][0], "count after")
                keys = oracle.keys(code, after)
                snapshots = range(after, before - 1, -args.batch)
                counts["snapshots_considered"] += len(snapshots)
                if not any(same(hits, oracle.search(normalized, keys, m)) for m in snapshots):
                    counts["wrong"].append({"between": [before, after], "got": [h.id for h in hits]})
                counts["autocommit"] += 1
        except Exception as error:
            counts["errors"].append(f"{type(error).__name__}: {error}")
            break
        counts["queries"] += 1
        counts["search_seconds"] += elapsed
    counts["seconds"] = time.time() - began
    counts["wrong"] = counts["wrong"][:5]
    db.close()
    print(json.dumps(counts), flush=True)


def threads(args):
    """Several threads of one process, each with its own connection and the extension loaded into it:
    searches on every path must give exactly the answers a single thread gave, while another thread
    keeps opening connections (loading the extension again) and another writes to a second collection."""
    db = sqlitebin.connect(args.db)
    collection = db.collection(COLLECTION)
    rng = np.random.default_rng(0)
    paths = [dict(candidates=c, rescore=r) for c in ("asymmetric", "hamming") for r in ("float32", "bits", "none")]
    queries = [rng.standard_normal(DIM).astype(np.float32) for _ in range(30)]
    expected = {(q, p): [(h.id, h.score, h.distance) for h in collection.search(queries[q], K, **paths[p])]
                for q in range(len(queries)) for p in range(len(paths))}
    db.close()
    stop = time.time() + args.seconds
    counts = {"role": "threads", "searches": 0, "loads": 0, "writes": 0, "busy": 0, "errors": [], "wrong": []}
    lock = threading.Lock()

    def add(key, n=1):
        with lock:
            counts[key] += n

    def fail(kind, text):
        with lock:
            counts[kind].append(text)

    def search(seed):
        try:
            own = sqlitebin.connect(args.db)
            mine = own.collection(COLLECTION)
            order = random.Random(seed)
            while time.time() < stop:
                q, p = order.randrange(len(queries)), order.randrange(len(paths))
                if order.random() < 0.5:
                    with own.conn:  # an explicit transaction: chunks read afresh instead of cached
                        hits = mine.search(queries[q], K, **paths[p])
                else:
                    hits = mine.search(queries[q], K, **paths[p])
                if [(h.id, h.score, h.distance) for h in hits] != expected[q, p]:
                    fail("wrong", f"query {q} path {paths[p]}")
                add("searches")
            own.close()
        except Exception as error:
            fail("errors", f"search: {type(error).__name__}: {error}")

    def load():
        try:
            while time.time() < stop:
                other = sqlitebin.connect(args.db)
                other.conn.execute("SELECT hamming(x'ff', x'0f'), sqlitebin_version()").fetchall()
                other.close()
                add("loads")
        except Exception as error:
            fail("errors", f"load: {type(error).__name__}: {error}")

    def write():
        try:
            own = sqlitebin.connect(args.db)
            side = own.collection("side")
            n = 0
            while time.time() < stop:
                retry_busy(counts, lambda: side.add(vectors=vectors_for(np.arange(n + 1, n + 101)), ids=list(range(n + 1, n + 101))))
                n += 100
                add("writes", 100)
            own.close()
        except Exception as error:
            fail("errors", f"write: {type(error).__name__}: {error}")

    workers = [threading.Thread(target=search, args=(i,)) for i in range(args.threads)]
    workers += [threading.Thread(target=load), threading.Thread(target=write)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    counts["wrong"] = counts["wrong"][:5]
    print(json.dumps(counts), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["writer", "searcher", "threads"])
    parser.add_argument("db")
    parser.add_argument("--start", type=float, default=0.0, help="time.time() at which to begin")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-id", type=int, default=1)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    {"writer": writer, "searcher": searcher, "threads": threads}[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
