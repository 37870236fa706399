"""Scale: one collection file against the same vectors sharded over 2 and 4 SQLite files on Dask.

    nice python benchmarks/bench_scale.py --documents 4000000 --dim 256 --workers 2

Vectors are random normal float32 (seeded, generated block by block so memory stays flat); search
is the default (asymmetric candidates, int8 rescoring, oversample 10, k 10). For each layout it
reports ingest throughput (Collection.add / ShardedCollection.add of 100,000-vector blocks), the
median and 90th-percentile latency of single searches, search_many throughput, the search time of
one shard file alone in this process (what one machine does when each machine holds one shard),
and the Dask round trip of an empty task (the coordination cost a sharded search adds). Sharded
results are checked against the single file on every query. The machine and its load are printed:
on a shared machine absolute times are noisy; compare layouts measured in the same run.
"""

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import sqlitebin
from sqlitebin.sharded import ShardedCollection

BLOCK = 100_000


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def blocks(documents, dim, seed):
    for start in range(0, documents, BLOCK):
        rng = np.random.default_rng([seed, start])
        yield rng.standard_normal((min(BLOCK, documents - start), dim)).astype(np.float32)


def timed_searches(search, queries):
    search(queries[0])  # warm the page cache and the chunk cache
    times, results = [], []
    for q in queries:
        t = time.perf_counter()
        results.append(search(q))
        times.append(time.perf_counter() - t)
    return times, results


def summary(times):
    times = sorted(times)
    return statistics.median(times) * 1000, times[int(0.9 * (len(times) - 1))] * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=4_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--shards", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--directory", default=None, help="where the files go (default: a temporary directory)")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    directory = Path(args.directory or tempfile.mkdtemp(prefix="sqlitebin-scale-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; load average at start {os.getloadavg()[0]:.1f}")
    print(f"{args.documents:,} random vectors x {args.dim}-d; {args.queries} queries, k={args.k}, "
          f"oversample 10, int8 rescoring; Dask LocalCluster: {args.workers} worker processes x 1 thread")
    queries = np.random.default_rng(99).standard_normal((args.queries, args.dim)).astype(np.float32)
    rows = []

    # One file.
    single_path = directory / "single.db"
    db = sqlitebin.connect(str(single_path))
    col = db.create_collection("docs", dim=args.dim, embedder=None)
    t = time.perf_counter()
    for block in blocks(args.documents, args.dim, 1):
        col.add(vectors=block, batch_size=10_000)
    ingest = args.documents / (time.perf_counter() - t)
    times, expected = timed_searches(lambda q: col.search(q, k=args.k), queries)
    t = time.perf_counter()
    for q in queries:
        col.search(q, k=args.k)
    batch_qps = len(queries) / (time.perf_counter() - t)
    median, p90 = summary(times)
    rows.append(("1 file", ingest, median, p90, batch_qps, median, None))
    print(f"1 file: ingest {ingest:,.0f}/s, search median {median:.1f} ms, p90 {p90:.1f} ms", flush=True)

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        round_trips = []
        for _ in range(30):
            t = time.perf_counter()
            client.submit(int, 0, pure=False).result()
            round_trips.append(time.perf_counter() - t)
        round_trip = statistics.median(round_trips) * 1000
        print(f"Dask round trip of an empty task: {round_trip:.1f} ms", flush=True)
        for shards in args.shards:
            name = f"docs{shards}"
            sharded = ShardedCollection.create(client, directory, name, shards=shards, dim=args.dim, embedder=None)
            t = time.perf_counter()
            for block in blocks(args.documents, args.dim, 1):
                sharded.add(vectors=block, batch_size=10_000)
            ingest = args.documents / (time.perf_counter() - t)
            times, results = timed_searches(lambda q: sharded.search(q, k=args.k), queries)
            mismatches = sum(
                [(h.id, h.score) for h in got] != [(h.id, h.score) for h in want]
                for got, want in zip(results, expected))
            t = time.perf_counter()
            sharded.search_many(queries, k=args.k)
            batch_qps = len(queries) / (time.perf_counter() - t)
            median, p90 = summary(times)
            # One shard file searched alone here: the work one machine does per query.
            with sqlitebin.connect(sharded.paths[0]) as shard_db:
                shard = shard_db.collection(name)
                shard_times, _ = timed_searches(lambda q: shard.search(q, k=args.k, oversample=10), queries)
            shard_median, _ = summary(shard_times)
            rows.append((f"{shards} shards", ingest, median, p90, batch_qps, shard_median, mismatches))
            print(f"{shards} shards: ingest {ingest:,.0f}/s, search median {median:.1f} ms, p90 {p90:.1f} ms, "
                  f"one shard alone {shard_median:.1f} ms, results differing from 1 file: {mismatches}", flush=True)

    print(f"\nload average at end {os.getloadavg()[0]:.1f}\n")
    print("| layout | ingest (vectors/s) | search median (ms) | search p90 (ms) | search_many (queries/s) "
          "| one file/shard alone, median (ms) | results differing from 1 file |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for layout, ingest, median, p90, qps, alone, mismatches in rows:
        print(f"| {layout} | {ingest:,.0f} | {median:.1f} | {p90:.1f} | {qps:,.0f} | {alone:.1f} | "
              f"{'-' if mismatches is None else f'{mismatches} of {len(queries)}'} |")
    print(f"\nDask round trip of an empty task: {round_trip:.1f} ms")
    if args.directory is None:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
