"""Keyword and hybrid search benchmark: sqlitebin's keyword top-k against plain FTS5 BM25, at several corpus sizes.

Builds collections from the Debian package descriptions (the first 10,000, 30,000 and all 59,302 documents) and,
unless `--no-large`, a larger one: the same descriptions plus every paragraph of readable text under
/usr/share/doc (gzip included) and the Python standard library's sources. On each, the Debian dev queries run
through `Collection.search()` in keyword mode and, interleaved query by query on the same connection, through
plain FTS5 BM25 (every query word quoted and joined with OR, `ORDER BY bm25() LIMIT 10`: what keyword search
did before). Hybrid and vector search are timed too. Reported per size and run: latency p50/p95 (one query at a
time, wall time of the call; hybrid includes embedding the query), the speed-up over plain BM25, and the mean
number of documents plain BM25 scores per query. On collections that hold every relevant document, nDCG@10 of
keyword, hybrid and plain BM25, also on queries of ten words or more.

Run `python benchmarks/bench_keyword.py` (about 20 minutes on 2 idle cores) or `--quick` (10,000 documents,
300 queries, one run). Latency is measured on the first `--queries` dev queries (500) at every size but the full
Debian set, which runs all 2,000 for nDCG@10. The machine's CPU and thread count are printed first: absolute times are context, the
ratios against plain BM25 measured in the same run are the result.
"""

import argparse
import gzip
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# One thread: every search here runs on the calling thread (the index would start a worker only on far larger scans).
os.environ.setdefault("SQLITEBIN_THREADS", "1")

import sqlitebin  # noqa: E402
from sqlitebin import metrics  # noqa: E402
from sqlitebin.datasets import load_corpus, load_queries  # noqa: E402

DATA = Path(os.environ.get("SQLITEBIN_DEBIAN", "/work/shared/data/debian-descriptions"))
SIZES = (10_000, 30_000, 59_302)
K = 10
EXTRA_TEXT_ROOTS = ("/usr/share/doc", os.path.dirname(os.__file__))
MIN_PARAGRAPH = 80
MAX_PARAGRAPH = 4000


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def plain_match(text):
    """The MATCH expression keyword search used before: every word quoted, joined with OR."""
    words = re.findall(r"\w+", text)
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words) if words else None


def extra_paragraphs(limit):
    """Paragraphs of real text from the system's documentation and Python's own sources, up to `limit`."""
    out = []
    for root in EXTRA_TEXT_ROOTS:
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = sorted(d for d in subdirectories if d not in ("site-packages", "test", "tests"))
            for name in sorted(files):
                path = os.path.join(directory, name)
                if not (name.endswith((".gz", ".txt", ".md", ".rst", ".py")) or "." not in name):
                    continue
                try:
                    data = gzip.open(path).read() if name.endswith(".gz") else open(path, "rb").read()
                    text = data.decode("utf-8")
                except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
                    continue
                for paragraph in re.split(r"\n\s*\n", text):
                    paragraph = paragraph.strip()
                    if len(paragraph) >= MIN_PARAGRAPH:
                        out.append(paragraph[:MAX_PARAGRAPH])
                        if len(out) >= limit:
                            return out
    return out


def build(path, texts):
    db = sqlitebin.connect(path)
    col = db.create_collection("bench", dim=256)
    start = time.perf_counter()
    col.add(texts, ids=list(range(len(texts))))
    return db, col, time.perf_counter() - start


def percentiles(seconds):
    return np.percentile(seconds, 50) * 1000, np.percentile(seconds, 95) * 1000


def measure(col, queries, relevant, runs, quality):
    conn = col.conn
    fts = col.tables.fts
    plain_sql = f"SELECT rowid FROM {fts} WHERE {fts} MATCH ? ORDER BY bm25({fts}), rowid LIMIT {K}"
    count_sql = f"SELECT count(*) FROM {fts} WHERE {fts} MATCH ?"
    texts = [q["text"] for q in queries]
    matches = [plain_match(t) for t in texts]
    col.search(texts[0], K, mode="hybrid")  # warm-up: embedder, statement cache, pages
    scored = np.mean([conn.execute(count_sql, (m,)).fetchall()[0][0] for m in matches if m])
    rows = []
    for run in range(runs):
        times = {"plain": [], "keyword": [], "hybrid": [], "vector": []}
        cpu = {"plain": [], "keyword": [], "hybrid": [], "vector": []}
        ranked = {"plain": [], "keyword": [], "hybrid": []}
        for text, match in zip(texts, matches):
            start, start_cpu = time.perf_counter(), time.thread_time()
            ids = [r[0] for r in conn.execute(plain_sql, (match,))] if match else []
            times["plain"].append(time.perf_counter() - start)
            cpu["plain"].append(time.thread_time() - start_cpu)
            ranked["plain"].append(ids)
            for mode in ("keyword", "hybrid", "vector"):
                start, start_cpu = time.perf_counter(), time.thread_time()
                hits = col.search(text, K, mode=mode)
                times[mode].append(time.perf_counter() - start)
                if mode in cpu:
                    cpu[mode].append(time.thread_time() - start_cpu)
                if mode in ranked:
                    ranked[mode].append([h.id for h in hits])
        row = {mode: percentiles(seconds) for mode, seconds in times.items()}
        row["cpu"] = {mode: percentiles(seconds) for mode, seconds in cpu.items()}
        if quality and run == 0:
            long = [i for i, t in enumerate(texts) if len(re.findall(r"\w+", t)) >= 10]
            row["ndcg"] = {mode: (metrics.mean_ndcg_at_k(r, relevant, K),
                                  metrics.mean_ndcg_at_k([r[i] for i in long], [relevant[i] for i in long], K),
                                  len(long))
                           for mode, r in ranked.items()}
        rows.append(row)
    return scored, rows


def report(name, documents, seconds, scored, rows):
    print(f"\n{name}: {documents:,} documents (indexed in {seconds:.0f} s); plain BM25 scores {scored:,.0f} "
          f"documents per query on average")
    for run, row in enumerate(rows, start=1):
        plain, kw, hy, ve = row["plain"], row["keyword"], row["hybrid"], row["vector"]
        print(f"  run {run}: keyword p50 {kw[0]:.2f} ms p95 {kw[1]:.2f} | plain BM25 p50 {plain[0]:.2f} p95 "
              f"{plain[1]:.2f} | speed-up p50 x{plain[0] / kw[0]:.1f} p95 x{plain[1] / kw[1]:.1f} | hybrid p50 "
              f"{hy[0]:.2f} p95 {hy[1]:.2f} | vector p50 {ve[0]:.2f} p95 {ve[1]:.2f}")
        kc, pc, hc, vc = (row["cpu"][mode] for mode in ("keyword", "plain", "hybrid", "vector"))
        print(f"         CPU time of the thread: keyword p50 {kc[0]:.2f} ms p95 {kc[1]:.2f} | plain BM25 p50 "
              f"{pc[0]:.2f} p95 {pc[1]:.2f} | hybrid p50 {hc[0]:.2f} p95 {hc[1]:.2f} | vector p50 {vc[0]:.2f} "
              f"p95 {vc[1]:.2f}")
    for mode, (ndcg, long_ndcg, long_count) in rows[0].get("ndcg", {}).items():
        print(f"  nDCG@10 {mode:8s} {ndcg:.4f}  (queries of 10+ words, {long_count}: {long_ndcg:.4f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed passes over the queries per size (default 3)")
    parser.add_argument("--queries", type=int, default=500,
                        help="dev queries timed at each size (default 500); nDCG on all 59,302 uses all 2,000")
    parser.add_argument("--large", type=int, default=200_000,
                        help="documents of the large collection (default 200,000)")
    parser.add_argument("--no-large", action="store_true", help="skip the large collection")
    parser.add_argument("--quick", action="store_true", help="10,000 documents, 300 queries, one run")
    parser.add_argument("--workdir", default=None, help="where the temporary databases go")
    args = parser.parse_args(argv)
    sizes = SIZES
    if args.quick:
        sizes, args.queries, args.runs, args.no_large = (10_000,), 300, 1, True

    print(f"CPU: {cpu_model()}; {os.cpu_count()} hardware threads, searches on one (SQLITEBIN_THREADS="
          f"{os.environ['SQLITEBIN_THREADS']}); load average {os.getloadavg()[0]:.1f}; Python {platform.python_version()}; "
          f"SQLite {sqlitebin.connect(':memory:').conn.execute('SELECT sqlite_version()').fetchall()[0][0]}")
    print(f"sqlitebin keyword search (sqlitebin/keyword.py) against plain FTS5 BM25, interleaved query by query; "
          f"k = {K}; latency = wall time of one call, and CPU time of the calling thread (less sensitive to a "
          f"busy machine)")
    documents = load_corpus(DATA / "corpus.jsonl.gz")
    all_queries = load_queries(DATA / "queries-dev.jsonl.gz")
    queries = all_queries[: args.queries]
    row_of = {d["id"]: i for i, d in enumerate(documents)}
    with tempfile.TemporaryDirectory(prefix="sqlitebin-keyword-", dir=args.workdir) as directory:
        for size in sizes:
            texts = [d["text"] for d in documents[:size]]
            db, col, seconds = build(os.path.join(directory, f"debian-{size}.db"), texts)
            quality = size == len(documents)
            used = all_queries if quality else queries
            scored, rows = measure(col, used, [row_of[q["doc"]] for q in used], args.runs, quality)
            report(f"Debian descriptions, first {size:,}" if size < len(documents) else "Debian descriptions, all",
                   size, seconds, scored, rows)
            db.close()
            sys.stdout.flush()
        if not args.no_large:
            extra = extra_paragraphs(args.large - len(documents))
            texts = [d["text"] for d in documents] + extra
            db, col, seconds = build(os.path.join(directory, "large.db"), texts)
            scored, rows = measure(col, queries, [row_of[q["doc"]] for q in queries], args.runs, True)
            report(f"Debian descriptions + {len(extra):,} paragraphs of /usr/share/doc and Python sources "
                   f"(nDCG on the first {len(queries)} queries)",
                   len(texts), seconds, scored, rows)
            db.close()


if __name__ == "__main__":
    main()
