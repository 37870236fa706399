"""Search quality through the SQL interface alone: a `sqlitebin` virtual table driven with apsw, no Python layer.

The Debian package descriptions and their dev queries are embedded with WordLlama-256 (normalised, as the
collections store them); the documents go into `CREATE VIRTUAL TABLE idx USING sqlitebin(dim=256)` with the
defaults (int8 rescoring, ranges calibrated by the extension), once in bulk (one `executemany` in one
transaction) and once one row at a time (each INSERT its own transaction, so calibration happens part-way);
each query is one `SELECT rowid FROM idx WHERE vector MATCH ? AND k = 10`. Reported against exact float32
search (NumPy brute force): nDCG@10 retained (target >= 99%) and recall@10 (target >= 0.95), with the ingest
rates and the median query time (context only: timings on a shared machine are noisy).

    python benchmarks/quality_sql.py [--corpus corpus.jsonl.gz --queries queries-dev.jsonl.gz] [--limit N]
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import apsw
import numpy as np

import sqlitebin
from sqlitebin import metrics
from sqlitebin.datasets import load_corpus, load_queries
from sqlitebin.embedding import embed_texts, resolve_embedder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "debian-descriptions"
K = 10
DIM = 256


def normalize(vectors):
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1)).astype("<f4")


def fill(conn, vectors, one_at_a_time):
    conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={DIM})")
    rows = [(i, vectors[i].tobytes()) for i in range(len(vectors))]
    start = time.perf_counter()
    if one_at_a_time:
        for row in rows:
            conn.execute("INSERT INTO idx (rowid, vector) VALUES (?, ?)", row)
    else:
        with conn:
            conn.executemany("INSERT INTO idx (rowid, vector) VALUES (?, ?)", rows)
    return time.perf_counter() - start


def run(vectors, query_vectors, one_at_a_time):
    conn = apsw.Connection(":memory:")
    sqlitebin.load(conn)
    seconds = fill(conn, vectors, one_at_a_time)
    calibrated = conn.execute("SELECT value IS NOT NULL FROM idx_config WHERE key = 'ranges'").fetchall()[0][0]
    ranked, times = [], []
    for query in query_vectors:
        start = time.perf_counter()
        ids = [row[0] for row in conn.execute("SELECT rowid FROM idx WHERE vector MATCH ? AND k = 10",
                                              (query.tobytes(),))]
        times.append(time.perf_counter() - start)
        ranked.append(ids)
    conn.close()
    return ranked, len(vectors) / seconds, statistics.median(times) * 1000, bool(calibrated)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=DATA / "corpus.jsonl.gz")
    parser.add_argument("--queries", default=DATA / "queries-dev.jsonl.gz")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N documents (and their queries).")
    args = parser.parse_args()

    documents = load_corpus(args.corpus)[:args.limit]
    row_of = {d["id"]: i for i, d in enumerate(documents)}
    queries = [q for q in load_queries(args.queries) if q["doc"] in row_of]
    embedder = resolve_embedder(f"wordllama-{DIM}")
    vectors = normalize(embed_texts(embedder, [d["text"] for d in documents]))
    query_vectors = normalize(embed_texts(embedder, [q["text"] for q in queries]))
    relevant = [row_of[q["doc"]] for q in queries]

    exact_ids, _ = metrics.exact_search(vectors, query_vectors, K)
    exact_lists = exact_ids.tolist()
    exact_ndcg = metrics.mean_ndcg_at_k(exact_lists, relevant, K)
    print(f"sqlitebin {sqlitebin.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite {apsw.sqlite_lib_version()}")
    print(f"{len(documents):,} documents, {len(queries):,} dev queries, WordLlama-{DIM}; "
          f"exact float32 nDCG@10 = {exact_ndcg:.4f}")
    print(f"{'load':<22} {'nDCG@10':>8} {'retained':>9} {'recall@10':>10} {'ingest/s':>10} {'p50 ms':>7}  calibrated")
    failed = False
    for name, one_at_a_time in (("bulk executemany", False), ("one row at a time", True)):
        ranked, rate, p50, calibrated = run(vectors, query_vectors, one_at_a_time)
        ndcg = metrics.mean_ndcg_at_k(ranked, relevant, K)
        recall = metrics.mean_recall_at_k(ranked, exact_lists, K)
        retained = ndcg / exact_ndcg
        failed |= retained < 0.99 or recall < 0.95
        print(f"{name:<22} {ndcg:8.4f} {retained:9.2%} {recall:10.4f} {rate:10,.0f} {p50:7.2f}  {calibrated}")
    print("targets: nDCG@10 retained >= 99%, recall@10 >= 0.95: " + ("NOT MET" if failed else "met"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
