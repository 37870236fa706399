"""Retrieval quality and latency of every search mode on a labelled data set: `sqlitebin eval`.

The corpus is embedded once, with the embedder a WordLlama collection gets by default, and every mode is measured on
those same vectors, so the modes differ only in how they search. The reference is exact float32 search computed
here with NumPy (`metrics.exact_search()`), independently of the SQLite code being measured. Each quantized mode runs
through `Collection.search()` on a collection that stores exactly what the mode needs (codes only, codes + int8, or
codes + float32), so "bytes per document" is the storage that mode costs. Reported per mode and oversample: nDCG@10
and MRR@10 against the labelled document, recall@10 against exact float32, the share of exact nDCG@10 retained,
query latency p50/p95 (wall time of one `search()` call, one query at a time) and bytes per document. Keyword
(BM25) and hybrid search are measured too once `Collection.search()` takes `mode=`; they are given the query text,
so hybrid latency includes embedding the query.
"""

import inspect
import json
import os
import tempfile
import time
from typing import Optional, Sequence

import click
import numpy as np

from . import metrics
from .collection import DEFAULT_OVERSAMPLE, MAX_OVERSAMPLE, Collection
from .database import connect
from .datasets import load_corpus, load_queries
from .embedding import WORDLLAMA_DIMS, embed_texts, embedder_name
from .version import __version__

K = 10
OVERSAMPLE_SWEEP = (1, 2, 4, 10, 20, 40)

# (name, candidates, rescore, stored vectors). Modes whose rescore is "none" return the first k candidates as they
# are, so oversampling cannot change them and they are measured once. Asymmetric candidates rescored with "bits"
# are left out: the bits score is the asymmetric score itself, so that ranking equals "asymmetric" alone.
VECTOR_MODES = (
    ("hamming", "hamming", "none", "none"),
    ("hamming + bits", "hamming", "bits", "none"),
    ("hamming + int8", "hamming", "int8", "int8"),
    ("hamming + float32", "hamming", "float32", "float32"),
    ("asymmetric", "asymmetric", "none", "none"),
    ("asymmetric + int8", "asymmetric", "int8", "int8"),
    ("asymmetric + float32", "asymmetric", "float32", "float32"),
)
TEXT_MODES = ("keyword", "hybrid")  # measured when Collection.search() takes mode=


class _Progress:
    """A tqdm bar on stderr (stdout stays clean for --json), or nothing when progress is off.

    `advance_to(done)` takes the running totals that `embed_texts()` and `Collection.add()` report.
    """

    def __init__(self, enabled, total, description):
        self.bar = None
        self.done = 0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)

    def update(self, n=1):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def advance_to(self, done, total=None):
        self.update(done - self.done)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _records(value, loader):
    if isinstance(value, (str, os.PathLike)):
        return loader(value)
    return list(value)


def _check_oversample(function, oversample):
    values = tuple(oversample)
    if not values:
        raise ValueError(f"{function}: oversample needs at least one value")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_OVERSAMPLE:
            raise ValueError(
                f"{function}: oversample values must be integers from 1 to {MAX_OVERSAMPLE}, got {value!r}")
    return tuple(sorted(set(int(v) for v in values)))


def headline_oversample(oversample: Sequence[int]) -> int:
    """The oversample a summary quotes: the library default (10) when it was measured, else the largest measured."""
    return DEFAULT_OVERSAMPLE if DEFAULT_OVERSAMPLE in oversample else max(oversample)


def _text_modes_available():
    return "mode" in inspect.signature(Collection.search).parameters


def _fts_bytes_per_document(database, name, count):
    """Pages held by a collection's FTS5 tables, per document (None where SQLite lacks the dbstat table)."""
    try:
        rows = database.conn.execute(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE ? ESCAPE '\\'",
            (name.replace("_", "\\_") + "\\_fts%",),
        ).fetchall()
    except Exception:  # dbstat is a compile-time option of SQLite
        return None
    return rows[0][0] / count if count else None


def _time_searches(search, queries, bar):
    """Run search(query) -> ranked ids for each query; return (ranked id lists, seconds per query)."""
    search(queries[0])  # warm-up: statement cache and pages
    ranked, seconds = [], []
    for query in queries:
        start = time.perf_counter()
        ids = search(query)
        seconds.append(time.perf_counter() - start)
        ranked.append(ids)
        bar.update()
    return ranked, seconds


def _row(mode, candidates, rescore, oversample, ranked, seconds, relevant, exact_ids, exact_ndcg, bytes_per_document):
    ndcg = metrics.mean_ndcg_at_k(ranked, relevant, K)
    return {
        "mode": mode,
        "candidates": candidates,
        "rescore": rescore,
        "oversample": oversample,
        "ndcg_at_10": ndcg,
        "mrr_at_10": metrics.mean_mrr_at_k(ranked, relevant, K),
        "recall_at_10": metrics.mean_recall_at_k(ranked, exact_ids, K),
        "ndcg_retained": ndcg / exact_ndcg if exact_ndcg > 0 else None,
        "p50_ms": metrics.percentile(seconds, 50) * 1000,
        "p95_ms": metrics.percentile(seconds, 95) * 1000,
        "bytes_per_document": bytes_per_document,
    }


def evaluate(corpus, queries, dim: int = 256, oversample: Sequence[int] = OVERSAMPLE_SWEEP,
             progress: bool = True, workdir: Optional[str] = None) -> dict:
    """Measure every search mode on a labelled retrieval set; return the results as a dict (see `format_report()`).

    `corpus` and `queries` are paths to JSON Lines files (gzip accepted; the format `sqlitebin.datasets` reads) or
    lists of the dicts `load_corpus()` and `load_queries()` return. `dim` is the WordLlama width (64, 128 or 256).
    `oversample` lists the values swept for the modes that rescore (default 1, 2, 4, 10, 20, 40). `progress` shows
    bars on stderr. The collections live in a temporary database under `workdir` (default: the system temporary
    directory), removed afterwards. Raises ValueError for bad arguments, an empty corpus or query set, or a query
    whose relevant document is not in the corpus; FileNotFoundError for a missing file.
    """
    function = "evaluate()"
    if isinstance(dim, bool) or dim not in WORDLLAMA_DIMS:
        raise ValueError(f"{function}: dim must be one of {', '.join(map(str, WORDLLAMA_DIMS))}, got {dim!r}")
    oversample = _check_oversample(function, oversample)
    documents = _records(corpus, load_corpus)
    query_records = _records(queries, load_queries)
    if not documents:
        raise ValueError(f"{function}: the corpus is empty")
    if not query_records:
        raise ValueError(f"{function}: there are no queries")
    row_of_id = {document["id"]: row for row, document in enumerate(documents)}
    missing = [query for query in query_records if query["doc"] not in row_of_id]
    if missing:
        raise ValueError(
            f"{function}: {len(missing)} of {len(query_records)} queries name a relevant document that is not in "
            f"the corpus (first: {missing[0]['qid']} -> {missing[0]['doc']})"
        )
    texts = [document["text"] for document in documents]
    query_texts = [query["text"] for query in query_records]
    # Document ids in the collections are row numbers, so search results index `relevant` and the exact top 10.
    relevant = [row_of_id[query["doc"]] for query in query_records]
    count, query_count = len(documents), len(query_records)

    with tempfile.TemporaryDirectory(prefix="sqlitebin-eval-", dir=workdir) as directory:
        database = connect(os.path.join(directory, "eval.db"))
        try:
            return _evaluate_in(database, documents, texts, query_texts, relevant, dim, oversample, progress,
                                corpus, queries, count, query_count)
        finally:
            database.close()


def _evaluate_in(database, documents, texts, query_texts, relevant, dim, oversample, progress,
                 corpus, queries, count, query_count):
    # The first collection's default embedder (WordLlama at `dim`) embeds everything, once.
    collections = {"int8": database.create_collection("eval_int8", dim, rescore="int8")}
    embedder = collections["int8"].embedder
    bar = _Progress(progress, count, "embedding documents")
    start = time.perf_counter()
    doc_vectors = embed_texts(embedder, texts, progress=bar.advance_to)
    embed_seconds = time.perf_counter() - start
    bar.close()
    query_vectors = embed_texts(embedder, query_texts)
    # Normalised as the collections store them, so exact dot products are cosine similarities.
    doc_vectors = _normalize(doc_vectors)
    query_vectors = _normalize(query_vectors)

    # The reference: exact float32 top 10 in NumPy, and its latency one query at a time.
    exact_ids, _ = metrics.exact_search(doc_vectors, query_vectors, K)
    exact_lists = exact_ids.tolist()
    exact_ndcg = metrics.mean_ndcg_at_k(exact_lists, relevant, K)
    bar = _Progress(progress, query_count, "exact float32")
    _, exact_seconds = _time_searches(lambda q: metrics.exact_search(doc_vectors, q, K)[0][0].tolist(),
                                      query_vectors, bar)
    bar.close()
    rows = [_row("exact float32", None, None, None, exact_lists, exact_seconds, relevant, exact_lists, exact_ndcg,
                 4 * dim)]

    collections["float32"] = database.create_collection("eval_float32", dim, rescore="float32")
    collections["none"] = database.create_collection("eval_none", dim, rescore="none")
    bar = _Progress(progress, count * len(collections), "storing collections")
    ids = list(range(count))
    for collection in collections.values():
        base = bar.done
        # Texts are stored (for keyword search) but not embedded again: the vectors given are the ones used.
        collection.add(texts, vectors=doc_vectors, ids=ids, progress=lambda done, total: bar.advance_to(base + done))
    bar.close()

    text_modes = TEXT_MODES if _text_modes_available() else ()
    plan = []
    for name, candidates, rescore, stored in VECTOR_MODES:
        for value in (oversample if rescore != "none" else (1,)):
            plan.append((name, candidates, rescore, stored, value))
    bar = _Progress(progress, (len(plan) + len(text_modes)) * query_count, "searching")
    for name, candidates, rescore, stored, value in plan:
        collection = collections[stored]
        options = {"oversample": value, "rescore": rescore, "candidates": candidates}
        ranked, seconds = _time_searches(
            lambda q: [hit.id for hit in collection.search(q, K, **options)], query_vectors, bar)
        rows.append(_row(name, candidates, rescore, value, ranked, seconds, relevant, exact_lists, exact_ndcg,
                         collection.info()["bytes_per_document"]))
    for mode in text_modes:
        collection = collections["int8"]
        ranked, seconds = _time_searches(lambda q: [hit.id for hit in collection.search(q, K, mode=mode)],
                                          query_texts, bar)
        fts_bytes = _fts_bytes_per_document(database, collection.name, count)
        stored_bytes = collection.info()["bytes_per_document"] if mode == "hybrid" else 0
        rows.append(_row(mode, None, None, None, ranked, seconds, relevant, exact_lists, exact_ndcg,
                         None if fts_bytes is None else stored_bytes + fts_bytes))
    bar.close()

    return {
        "sqlitebin_version": __version__,
        "corpus": os.fspath(corpus) if isinstance(corpus, (str, os.PathLike)) else None,
        "queries": os.fspath(queries) if isinstance(queries, (str, os.PathLike)) else None,
        "documents": count,
        "query_count": query_count,
        "embedder": embedder_name(embedder),
        "embedder_version": getattr(embedder, "version", None),
        "dim": dim,
        "k": K,
        "oversample": list(oversample),
        "headline_oversample": headline_oversample(oversample),
        "embedding_documents_per_second": count / embed_seconds if embed_seconds > 0 else None,
        "exact_ndcg_at_10": exact_ndcg,
        "results": rows,
    }


def _normalize(vectors):
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1)).astype(np.float32)


# ----------------------------------------------------------------------
# Reporting


def headline_rows(result: dict) -> list:
    """One row per mode: the headline oversample for modes that rescore, the only measurement for the others."""
    headline = result["headline_oversample"]
    rows = []
    for row in result["results"]:
        rescores = row["rescore"] not in (None, "none")
        if (rescores and row["oversample"] == headline) or not rescores:
            rows.append(row)
    return rows


def curve_rows(result: dict) -> dict:
    """{mode: {oversample: row}} for the modes that rescore: the quality/speed curve as oversample grows."""
    curves = {}
    for row in result["results"]:
        if row["rescore"] not in (None, "none"):
            curves.setdefault(row["mode"], {})[row["oversample"]] = row
    return curves


def _percent(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def _number(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def _bytes(value):
    return "-" if value is None else f"{value:,.0f}"


def markdown_tables(result: dict) -> str:
    """The modes table and the oversample curve as Markdown (also the readable output of `sqlitebin eval`)."""
    headline = result["headline_oversample"]
    lines = [
        f"| mode | oversample | nDCG@10 | MRR@10 | recall@10 | nDCG retained | p50 ms | p95 ms | bytes/doc |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in headline_rows(result):
        lines.append(
            f"| {row['mode']} | {row['oversample'] if row['oversample'] is not None else '-'} "
            f"| {_number(row['ndcg_at_10'])} | {_number(row['mrr_at_10'])} | {_number(row['recall_at_10'])} "
            f"| {_percent(row['ndcg_retained'])} | {_number(row['p50_ms'], 2)} | {_number(row['p95_ms'], 2)} "
            f"| {_bytes(row['bytes_per_document'])} |"
        )
    lines += [
        "",
        f"nDCG@10 retained / recall@10 against exact float32, by oversample (k = {result['k']}; "
        f"{headline} is the library default):",
        "",
        "| mode | bytes/doc | " + " | ".join(f"x{value}" for value in result["oversample"]) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in result["oversample"]) + " |",
    ]
    for mode, by_oversample in curve_rows(result).items():
        cells = []
        for value in result["oversample"]:
            row = by_oversample.get(value)
            cells.append("-" if row is None else f"{_percent(row['ndcg_retained'])} / {row['recall_at_10']:.3f}")
        first = next(iter(by_oversample.values()))
        lines.append(f"| {mode} | {_bytes(first['bytes_per_document'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_report(result: dict) -> str:
    """A readable report of an `evaluate()` result: what was measured, then the tables."""
    rate = result.get("embedding_documents_per_second")
    header = [
        f"sqlitebin {result['sqlitebin_version']} eval: {result['documents']:,} documents, "
        f"{result['query_count']:,} queries, {result['embedder']} {result['dim']}-d, k = {result['k']}",
        f"exact float32 nDCG@10 = {result['exact_ndcg_at_10']:.4f} (NumPy brute force; the reference for "
        "recall and nDCG retained)" + (f"; embedding ran at {rate:,.0f} documents/s" if rate else ""),
        "latency: one query at a time, wall time of one search call; bytes/doc: codes (row + chunk copy) plus "
        "stored rescoring vectors",
    ]
    return "\n".join(header) + "\n\n" + markdown_tables(result)


# ----------------------------------------------------------------------
# Command line


def _parse_oversample(ctx, param, value):
    try:
        values = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected integers from 1 to {MAX_OVERSAMPLE} separated by commas, got {value!r}") from None
    try:
        return _check_oversample("--oversample", values)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command()
@click.option("--corpus", required=True, type=click.Path(exists=True, dir_okay=False),
              help='Documents, JSON lines {"id", "title", "text"} (.jsonl or .jsonl.gz).')
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False),
              help='Labelled queries, JSON lines {"qid", "text", "doc"} where doc is the relevant document id.')
@click.option("--dim", type=click.Choice([str(d) for d in WORDLLAMA_DIMS]), default="256", show_default=True,
              help="WordLlama embedding width.")
@click.option("--oversample", default=",".join(map(str, OVERSAMPLE_SWEEP)), show_default=True,
              callback=_parse_oversample, help="Oversample values swept for the modes that rescore.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars (they go to stderr).")
def eval_command(corpus, queries, dim, oversample, as_json, no_progress):
    """Measure search quality and latency of every mode on a labelled retrieval set.

    Reports nDCG@10, MRR@10, recall@10 against exact float32 search (computed with NumPy), the share of exact
    nDCG@10 retained, query latency p50/p95 and bytes per document, for each mode and oversample value.

    \b
    Example:
        sqlitebin eval --corpus corpus.jsonl.gz --queries queries-dev.jsonl.gz
        sqlitebin eval --corpus corpus.jsonl.gz --queries queries-dev.jsonl.gz --oversample 4,10 --json
    """
    try:
        result = evaluate(corpus, queries, dim=int(dim), oversample=oversample, progress=not no_progress)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))
