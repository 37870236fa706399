"""Regenerate BENCHMARKS.md and its plots: `sqlitebin eval` on the Debian dev queries and the full `sqlitebin bench`.

    python benchmarks/make_results.py                 # about 5 minutes on 2 cores
    python benchmarks/make_results.py --quick --output /tmp/B.md --plots /tmp/plots   # a smoke run, seconds

It runs `sqlitebin.evaluate.evaluate()` on the corpus and dev queries of the Debian package-description set
(default location ../shared/data/debian-descriptions, beside the repository) and `sqlitebin.bench.bench()` at
100k, 1M and 4M codes of 256 and 1024 bits with ingest measured on the same corpus, then writes the page and three
PNG plots (matplotlib). `--save-json` keeps the raw results; `--from-json` rewrites the page from them without
measuring again. BLAS is limited to one thread, so the NumPy exact-search latency is single-threaded like every
other engine measured.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads OpenBLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Every engine scans on one thread (faiss, usearch and NumPy are set so below): sqlitebin too, though by default
# it splits a scan over two threads while a core is idle (benchmarks/bench_kernels.py measures that default).
os.environ.setdefault("SQLITEBIN_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/peers.py, also when loaded by path
import peers  # noqa: E402
from sqlitebin.bench import (  # noqa: E402
    ENGINES,
    bench,
    describe_machine_line,
    ingest_table,
    scan_tables,
    targets_table,
)
from sqlitebin.datasets import sample_corpus_path, sample_queries_path  # noqa: E402

LABELS = {**ENGINES, **peers.LABELS}
from sqlitebin.evaluate import TEXT_MODES, curve_rows, evaluate, headline_rows, markdown_tables  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "debian-descriptions"
COMMAND = "python benchmarks/make_results.py"
QUALITY_MODE, QUALITY_OVERSAMPLE = "asymmetric + int8", 10
QUALITY_RETAINED, QUALITY_RECALL = 0.99, 0.94


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="directory with corpus.jsonl.gz and queries-dev.jsonl.gz (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="page to write")
    parser.add_argument("--plots", type=Path, default=REPO_ROOT / "benchmarks" / "plots", help="directory for PNGs")
    parser.add_argument("--quick", action="store_true",
                        help="bundled sample and bench --quick: checks the script, measures nothing worth reading")
    parser.add_argument("--save-json", type=Path, help="also write the raw eval and bench results here")
    parser.add_argument("--from-json", type=Path, help="rewrite the page from results saved with --save-json")
    return parser.parse_args(argv)


def log(message):
    print(message, file=sys.stderr, flush=True)


def measure(args):
    if args.quick:
        corpus, queries = sample_corpus_path(), sample_queries_path()
    else:
        corpus, queries = args.data / "corpus.jsonl.gz", args.data / "queries-dev.jsonl.gz"
        for path in (corpus, queries):
            if not path.is_file():
                sys.exit(f"make_results.py: {path} is missing; point --data at the debian-descriptions directory")
    started = start = time.perf_counter()
    log(f"eval: {corpus}")
    quality = evaluate(corpus, queries, progress=sys.stderr.isatty())
    log(f"eval took {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    extra, skipped = peers.engines(log)
    speed = bench(quick=args.quick, corpus=corpus, log=log, extra_engines=extra, skipped=skipped)
    log(f"bench took {time.perf_counter() - start:.0f} s")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "eval": quality,
        "bench": speed,
        "seconds": time.perf_counter() - started,
    }


# ----------------------------------------------------------------------
# Plots


def plot_scan_latency(speed, path):
    import matplotlib.pyplot as plt

    widths = speed["settings"]["bits"]
    figure, axes = plt.subplots(1, len(widths), figsize=(6.5 * len(widths), 5.4), squeeze=False)
    for axis, width in zip(axes[0], widths):
        for engine, label in ENGINES.items():
            rows = sorted((r for r in speed["scan"] if r["engine"] == engine and r["bits"] == width),
                          key=lambda r: r["n"])
            if rows:
                style = "-" if engine.startswith("sqlitebin") else "--"
                axis.plot([r["n"] for r in rows], [r["median_ms"] for r in rows], style, marker="o", label=label,
                          linewidth=2.2 if engine == "sqlitebin-knn" else 1.4)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("codes in the collection")
        axis.set_ylabel(f"median ms per query (top {speed['settings']['k']})")
        axis.set_title(f"{width}-bit codes, one query, one thread")
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_quality_frontier(quality, path):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 5))
    for mode, by_oversample in curve_rows(quality).items():
        rows = [by_oversample[value] for value in sorted(by_oversample)]
        axis.plot([r["p50_ms"] for r in rows], [r["recall_at_10"] for r in rows], marker="o",
                  label=f"{mode} ({rows[0]['bytes_per_document']:,} B/doc)")
        for row in rows:
            axis.annotate(f"x{row['oversample']}", (row["p50_ms"], row["recall_at_10"]), fontsize=7,
                          textcoords="offset points", xytext=(3, -9))
    for row in quality["results"]:
        # Keyword and hybrid do not try to reproduce the exact vector top 10, so recall against it says little.
        if row["rescore"] in (None, "none") and row["mode"] not in TEXT_MODES:
            axis.plot(row["p50_ms"], row["recall_at_10"], marker="s", linestyle="none",
                      label=f"{row['mode']} ({row['bytes_per_document']:,.0f} B/doc)"
                      if row["bytes_per_document"] is not None else row["mode"])
    axis.set_xscale("log")
    # Plain numbers (0.2, 0.5, 1, 2) on the log axis rather than powers of ten.
    from matplotlib.ticker import LogLocator, StrMethodFormatter

    axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.xaxis.set_minor_formatter(StrMethodFormatter(""))
    axis.set_xlabel("p50 latency per query, ms (log)")
    axis.set_ylabel("recall@10 against exact float32")
    axis.set_title(f"Quality/speed as oversample grows: {quality['documents']:,} documents, "
                   f"{quality['query_count']:,} queries")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_ndcg_retained(quality, path):
    import matplotlib.pyplot as plt

    rows = headline_rows(quality)
    figure, axis = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.2))
    labels = [row["mode"] + (f" x{row['oversample']}" if row["rescore"] not in (None, "none") else "")
              for row in rows]
    values = [100 * row["ndcg_retained"] for row in rows]
    bars = axis.barh(labels, values, color=["#888888" if row["mode"] == "exact float32" else "#4477aa"
                                            for row in rows])
    for bar, row in zip(bars, rows):
        size = f", {row['bytes_per_document']:,.0f} B/doc" if row["bytes_per_document"] is not None else ""
        axis.text(bar.get_width() + 0.3, bar.get_y() + bar.get_height() / 2,
                  f"{100 * row['ndcg_retained']:.1f}%{size}", va="center", fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(min(values) - 5, max(values) + 14)
    axis.set_xlabel(f"% of exact float32 nDCG@10 retained (exact = {quality['exact_ndcg_at_10']:.3f})")
    axis.set_title(f"nDCG@10 retained per mode (oversample {quality['headline_oversample']} where it applies)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ----------------------------------------------------------------------
# The page


def _row(rows, **match):
    return next((r for r in rows if all(r.get(key) == value for key, value in match.items())), None)


def quality_targets(quality):
    row = _row(quality["results"], mode=QUALITY_MODE, oversample=QUALITY_OVERSAMPLE)
    if row is None:
        return []
    return [
        {"target": f"Debian dev queries: {QUALITY_MODE} at oversample {QUALITY_OVERSAMPLE} keeps at least "
                   f"{QUALITY_RETAINED:.0%} of exact float32 nDCG@10",
         "value": f"{100 * row['ndcg_retained']:.1f}%", "met": row["ndcg_retained"] >= QUALITY_RETAINED},
        {"target": f"Debian dev queries: {QUALITY_MODE} at oversample {QUALITY_OVERSAMPLE} reaches recall@10 of "
                   f"at least {QUALITY_RECALL}",
         "value": f"{row['recall_at_10']:.3f}", "met": row["recall_at_10"] >= QUALITY_RECALL},
    ]


def headline(results):
    quality, speed = results["eval"], results["bench"]
    lines = []
    row = _row(quality["results"], mode=QUALITY_MODE, oversample=quality["headline_oversample"])
    if row:
        lines.append(
            f"- **Quality**: asymmetric candidates + int8 rescoring at oversample {row['oversample']} (the default) "
            f"keep **{100 * row['ndcg_retained']:.1f}%** of exact float32 nDCG@10 "
            f"({row['ndcg_at_10']:.3f} vs {quality['exact_ndcg_at_10']:.3f}) "
            f"with recall@10 **{row['recall_at_10']:.3f}**, "
            f"in {row['bytes_per_document']:,} bytes per document instead of {4 * quality['dim']:,} "
            f"(p50 {row['p50_ms']:.2f} ms per query over {quality['documents']:,} documents).")
    text_rows = [r for r in quality["results"] if r["mode"] in TEXT_MODES]
    if text_rows:
        lines.append("- **Keyword and hybrid**: " + ", ".join(
            f"{r['mode']} nDCG@10 {r['ndcg_at_10']:.3f} (p50 {r['p50_ms']:.2f} ms)" for r in text_rows)
            + f", against {quality['exact_ndcg_at_10']:.3f} for exact float32 vector search.")
    sizes = speed["settings"]["sizes"]
    n = 1_000_000 if 1_000_000 in sizes else max(sizes)
    width = 256 if 256 in speed["settings"]["bits"] else speed["settings"]["bits"][0]
    base = _row(speed["scan"], engine="sqlitebin-knn", n=n, bits=width)
    if base:
        parts = []
        for engine, name in (("sqlite-vec-vec0", "sqlite-vec `vec0` KNN"),
                             ("sqlite-vec-scan", "a sqlite-vec `vec_distance_hamming()` scan"),
                             ("faiss", "faiss `IndexBinaryFlat`"), ("usearch", "usearch exact"),
                             ("numpy", "NumPy `bitwise_count`"),
                             ("sqlitebin-scalar", "sqlitebin's own `ORDER BY hamming()`")):
            other = _row(speed["scan"], engine=engine, n=n, bits=width)
            if other is None:
                continue
            ratio = other["ratio_to_sqlitebin"]
            parts.append(f"**{ratio:.1f}x** faster than {name}" if ratio >= 1
                         else f"{name} is **{1 / ratio:.1f}x** faster")
        lines.append(f"- **Scan**: top {speed['settings']['k']} of {n:,} {width}-bit codes, one query, one thread: "
                     f"the `sqlitebin` index (Hamming candidates) takes {base['median_ms']:.2f} ms, " + "; ".join(parts) + ".")
    ingest = speed.get("ingest")
    if ingest:
        lines.append(f"- **Ingest**: {ingest['documents_per_second']:,.0f} documents/s end to end with WordLlama "
                     f"(the embedder alone: {ingest['embedder_documents_per_second']:,.0f}/s); "
                     f"{ingest['vectors_per_second']:,.0f} precomputed vectors/s.")
    return "\n".join(lines)


def write_page(results, output, plots):
    quality, speed = results["eval"], results["bench"]
    plots.mkdir(parents=True, exist_ok=True)
    plot_scan_latency(speed, plots / "scan_latency.png")
    plot_quality_frontier(quality, plots / "quality_frontier.png")
    plot_ndcg_retained(quality, plots / "ndcg_retained.png")
    relative = os.path.relpath(plots, output.parent)
    targets = quality_targets(quality) + speed.get("targets", [])
    ingest = speed.get("ingest")
    scan_minutes = speed.get("scan_seconds", 0) / 60
    took = f"; this run took {results['seconds'] / 60:.0f} minutes on the machine below" if "seconds" in results else ""
    page = f"""# Benchmarks

Regenerate this page, its tables and its plots with one command from the repository root:

```sh
pip install -e '.[bench]'   # sqlitebin plus the peers (sqlite-vec, faiss-cpu, usearch) and matplotlib
{COMMAND}
```

It reads the Debian package-description set from `../shared/data/debian-descriptions` (`--data DIR` to point
elsewhere){took}. The two halves are also commands of their own:
`sqlitebin eval --corpus corpus.jsonl.gz --queries queries-dev.jsonl.gz` and `sqlitebin bench`.
{"**This page came from a `--quick` smoke run: its numbers mean nothing.**" if results.get("quick") else ""}

Measured {results['date']} on: {describe_machine_line(speed['machine'])}.
The machine is a shared 2-core VM, and other jobs ran beside this one (see the load average): absolute times are
context, p95 latencies carry that noise, and the result is the ratios between engines measured in the same run.
Peers skipped: {", ".join(speed["skipped"]) or "none"}.

## Headline

{headline(results)}

{targets_table(targets)}

## Quality: `sqlitebin eval` on the Debian dev queries

{quality['documents']:,} documents, {quality['query_count']:,} queries (each with one relevant document),
{quality['embedder']} {quality['dim']}-d embeddings, k = {quality['k']}. Exact float32 nDCG@10 is
**{quality['exact_ndcg_at_10']:.4f}**, computed with NumPy (`metrics.exact_search`) independently of the code being
measured; recall@10 is against that exact top 10, and "nDCG retained" is a mode's nDCG@10 over the exact one.
Every mode searches the same document vectors (embedded once); latency is the wall time of one
`Collection.search()` call with the query vector, one query at a time, on a file database in the page cache.
Bytes per document are what the index's shadow tables take in the file, whole pages (SQLite's `dbstat`), over
the documents, i.e. `Collection.info()["bytes_per_document"]`; exact float32 is the bare float32 matrix.

{markdown_tables(quality)}

![recall@10 against latency as oversample grows]({relative}/quality_frontier.png)

![nDCG@10 retained per mode]({relative}/ndcg_retained.png)

Modes: *hamming* ranks by Hamming distance between the query's code and the documents' codes; *asymmetric* ranks
by the float query against the codes read as +1/-1; "+ int8", "+ float32" and "+ bits" rescore the k x oversample
candidates with the stored int8 or float32 vectors or with the bits themselves. Modes without rescoring do not
depend on oversample. Asymmetric + bits is not listed: its score is the asymmetric score, so it ranks exactly as
asymmetric alone. *keyword* is SQLite FTS5 BM25 over the texts and *hybrid* fuses it with the vector search
(`Collection.search(text, mode=...)`, given the query text, so hybrid latency includes embedding the query); their
bytes per document are the FTS5 index pages (from `dbstat`, not counting the stored text), plus the int8 mode's
bytes for hybrid. Recall@10 against exact float32 is not their aim, and the frontier plot leaves them out.

## Scan speed: `sqlitebin bench`

Random codes (seed {speed['settings']['seed']}), top {speed['settings']['k']} by Hamming distance, one query at a
time; each engine is warmed up on one query whose answer is checked against a NumPy brute force (sorted distances,
so ties cannot hide a wrong answer), then timed on {speed['settings']['repeat']} other queries and the median
reported (engines that take over 3 s a query are timed on fewer, never under 3). All SQLite engines share one
in-memory database; sqlitebin runs with `SQLITEBIN_THREADS=1`, faiss with `omp_set_num_threads(1)`, usearch with
`threads=1`, NumPy single-threaded. Ratios are each engine's time over sqlitebin's fast path (the `sqlitebin` index, Hamming candidates, `rescore = 'none'`) at the same size:
above 1 means slower than sqlitebin. The scan section took {scan_minutes:.1f} minutes.

{scan_tables(speed)}

![latency against collection size for every engine]({relative}/scan_latency.png)

The queries, as run:

| engine | query |
| --- | --- |
""" + "\n".join(f"| {LABELS[engine]} | `{sql}` |" for engine, sql in {**speed["sql"], **peers.SQL}.items()) + f"""
| {LABELS['faiss']} | `faiss.IndexBinaryFlat(bits)`, `index.search(query, k)` |
| {LABELS['usearch']} | `usearch.index.search(codes, query, k, MetricKind.Hamming, exact=True, threads=1)` |
| {LABELS['numpy']} | `np.bitwise_count(codes_u64 ^ query_u64).sum(axis=1)`, `argpartition`, sort of the top k |

Caveats: the `sqlitebin` index keeps its codes in memory between queries, one copy per process (see ARCHITECTURE.md),
so the warm-up query fills that cache, much as faiss, usearch and NumPy hold their codes in memory from the start; the row
scans (`ORDER BY hamming()`, `vec_distance_hamming()`) and `vec0` read SQLite pages on every query. usearch is
measured through its exact brute-force search (no HNSW graph is built), which is its right tool for exact top-k but
not what it is tuned for. Build times (not part of any ratio) are in the JSON output of `sqlitebin
bench --json`.
"""
    if ingest:
        page += f"""
## Ingest

Medians of {ingest['runs']} runs, each into a fresh database file; file size after a WAL checkpoint.
Text ingest is `Collection.add(texts)` with the defaults (WordLlama {ingest['dim']}-d embedding, binary codes,
int8 rescoring vectors, the FTS5 index and the texts themselves) on {ingest['documents']:,} documents of the corpus;
vector ingest is `Collection.add(vectors=...)` of {ingest['vectors']:,} random unit vectors into a collection
without embedder (codes + int8 vectors).

{ingest_table(ingest)}
"""
    # The sections after this marker come from benchmarks with their own scripts (the index, the kernels,
    # batches, keyword search, sharding): kept as they are when this page is regenerated.
    kept = ""
    if output.exists() and KEPT_MARKER in output.read_text(encoding="utf-8"):
        kept = output.read_text(encoding="utf-8").split(KEPT_MARKER, 1)[1]
    output.write_text(page.replace("\n\n\n", "\n\n").rstrip("\n") + "\n\n" + KEPT_MARKER + kept)


KEPT_MARKER = "<!-- The sections below are written by hand from their own benchmark scripts. -->\n"


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        results = measure(args)
        if args.save_json:
            args.save_json.write_text(json.dumps(results, indent=2))
    write_page(results, args.output, args.plots)
    log(f"wrote {args.output} and the plots in {args.plots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
