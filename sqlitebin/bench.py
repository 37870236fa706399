"""Scan and ingest speed against peers, measured in one run on one machine: `sqlitebin bench`.

Scan: random binary codes (100k, 1M and 4M of them; 256 and 1024 bits) are searched for their k = 100 nearest by
Hamming distance, one query at a time, by sqlitebin's fast path (a `sqlitebin` virtual table queried with
`vector MATCH :code AND k = 100`, Hamming and asymmetric), its scalar path (a row scan ordered by `hamming()`) and
NumPy (`bitwise_count` + `argpartition`). Other engines plug in through `extra_engines` (see `Engine`): the
peers (sqlite-vec, faiss, usearch) live outside the package, in benchmarks/peers.py, which `python
benchmarks/bench_knn.py` and benchmarks/make_results.py pass in. The SQLite engines share one in-memory database, so every engine reads
codes from RAM. The sqlitebin index is filled through SQL INSERTs, as a user fills it.
Before a time counts, each engine's answer is checked against a NumPy brute force (sorted distances, so ties cannot
hide a wrong answer). Each engine is warmed up on one query, then timed on `repeat` others; the
median is reported, and as a ratio to sqlitebin's fast path.

Ingest: documents per second through `Collection.add(texts)` with the default WordLlama embedder (and the embedder
alone, for context), precomputed vectors per second through `Collection.add(vectors=...)`, and the database file
size per document after a checkpoint.
"""

import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import apsw
import click
import numpy as np

from .database import connect
from .datasets import load_corpus, sample_corpus_path
from .embedding import embed_texts, resolve_embedder
from .version import __version__

SIZES = (100_000, 1_000_000, 4_000_000)
BITS = (256, 1024)
TOP_K = 100
REPEAT = 5
INGEST_VECTORS = 100_000
INGEST_REPEAT = 3
QUICK = {"sizes": (2_000,), "bits": (256,), "repeat": 1, "ingest_documents": 500, "ingest_vectors": 5_000,
         "ingest_repeat": 1}
# An engine whose warm-up query takes long is timed on fewer queries, to keep a full run under half an hour;
# never fewer than MIN_RUNS (or `repeat`, when that is smaller).
TIME_BUDGET_SECONDS = 15.0
MIN_RUNS = 3
COLLECTION = "bench"
BASELINE = "sqlitebin-knn"

# key -> label, in report order.
ENGINES = {
    "sqlitebin-knn": "sqlitebin: index MATCH, hamming (fast path)",
    "sqlitebin-knn-asymmetric": "sqlitebin: index MATCH, asymmetric",
    "sqlitebin-scalar": "sqlitebin: ORDER BY hamming() (scalar path)",
    "numpy": "NumPy: bitwise_count + argpartition",
}

SQL = {
    "sqlitebin-knn": (f'SELECT rowid, distance FROM "{COLLECTION}_index" '
                      "WHERE vector MATCH :query AND k = :k AND candidates = 'hamming' AND rescore = 'none'"),
    "sqlitebin-knn-asymmetric": (f'SELECT rowid, distance FROM "{COLLECTION}_index" '
                                 "WHERE vector MATCH :query AND k = :k AND candidates = 'asymmetric' AND rescore = 'none'"),
    "sqlitebin-scalar": f'SELECT id FROM "{COLLECTION}_codes" ORDER BY hamming(code, :query) LIMIT :k',
}


@dataclass
class Engine:
    """An engine measured beside sqlitebin's own, e.g. a peer from benchmarks/peers.py.

    `labels` maps each engine key it reports to its label. `run(scan)` is called once per size and width with a
    `Scan` (the codes, the queries, the open in-memory connection holding `bench_codes(id, code)`, and
    `measure(engine, run, queries, check)` / `check_sql_rows`); it measures its engines and may record build
    seconds in `scan.builds`. `version` is reported in the machine line.
    """

    name: str
    labels: dict
    run: Callable
    version: Optional[str] = None


@dataclass
class Scan:
    n: int
    bits: int
    k: int
    codes: np.ndarray
    queries: list
    distances: np.ndarray
    conn: object
    measure: Callable
    check_sql_rows: Callable
    check_hamming: Callable
    builds: dict


def _stderr(message):
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------
# The machine


def describe_machine(conn=None) -> dict:
    """CPU, memory, OS and software versions, for the report header."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_gib = int(line.split()[1]) / 2**20
                    break
    except OSError:
        pass
    own = conn is None
    if own:
        conn = apsw.Connection(":memory:")
        from .extension import load

        load(conn)
    debug = dict(line.split("=", 1) for line in conn.execute("SELECT sqlitebin_debug()").fetchall()[0][0].splitlines()
                 if "=" in line)
    if own:
        conn.close()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1) if memory_gib else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apsw_version(),
        "sqlitebin": __version__,
        "popcount_kernel": debug.get("popcount"),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


# ----------------------------------------------------------------------
# Scan benchmark


def hamming_distances(codes, query):
    """The oracle: Hamming distance from one packed query to every packed code, summed byte by byte."""
    return np.bitwise_count(codes ^ query).sum(axis=1, dtype=np.int64)


def asymmetric_scores(codes, query, block=1 << 16):
    """The oracle for the asymmetric scan: dot product of the float query with each code read as +1/-1."""
    bits = query.size
    scores = np.empty(len(codes), dtype=np.float64)
    query = query.astype(np.float64)
    for start in range(0, len(codes), block):
        signs = np.unpackbits(codes[start : start + block], axis=1)[:, :bits].astype(np.float32) * 2 - 1
        scores[start : start + block] = signs @ query
    return scores


def _check_hamming(engine, ids, reported, distances, k):
    ids = np.asarray(ids, dtype=np.int64)
    expected = np.sort(distances)[:k]
    if len(ids) != len(expected) or len(np.unique(ids)) != len(ids):
        raise AssertionError(
            f"{engine}: returned {len(ids)} ids ({len(np.unique(ids))} distinct), expected {len(expected)}")
    got = np.sort(distances[ids])
    if not np.array_equal(got, expected):
        raise AssertionError(f"{engine}: distances of the returned ids {got[:8].tolist()}... differ from the NumPy "
                             f"top {k} {expected[:8].tolist()}...")
    if reported is not None and not np.array_equal(np.asarray(reported, dtype=np.int64), distances[ids]):
        raise AssertionError(f"{engine}: reported distances differ from the NumPy ones for the same ids")


def _check_asymmetric(engine, ids, scores, k):
    ids = np.asarray(ids, dtype=np.int64)
    expected = -np.sort(-scores)[:k]
    got = -np.sort(-scores[ids])
    # The scan sums float32 lookup tables; the oracle sums in float64.
    if len(np.unique(ids)) != len(expected) or not np.allclose(got, expected, rtol=0, atol=1e-3):
        raise AssertionError(f"{engine}: scores of the returned ids {got[:5].tolist()}... differ from the NumPy "
                             f"top {k} {expected[:5].tolist()}...")


def _time_engine(run, queries, repeat):
    """Warm up on queries[0] (its answer is returned for checking), then time runs on the following queries."""
    start = time.perf_counter()
    answer = run(queries[0])
    warm = time.perf_counter() - start
    runs = repeat
    if warm * repeat > TIME_BUDGET_SECONDS:
        runs = max(min(MIN_RUNS, repeat), int(TIME_BUDGET_SECONDS / max(warm, 1e-9)))
    seconds = []
    for query in queries[1 : 1 + runs]:
        start = time.perf_counter()
        run(query)
        seconds.append(time.perf_counter() - start)
    return answer, seconds


def _build_sqlitebin(database, codes, bits):
    """The benchmark's tables, built through SQL only: the `sqlitebin` index `bench_index` (rescore=none,
    so it stores the codes alone) filled by INSERTs of +1/-1 float32 vectors whose signs are the codes, and a
    plain `bench_codes(id, code)` table for the row-scan engines (`hamming()`, `vec_distance_hamming()`)."""
    conn = database.conn
    ids = range(len(codes))
    with conn:
        conn.execute(f'CREATE VIRTUAL TABLE "{COLLECTION}_index" USING sqlitebin(dim={bits}, rescore=none)')
        block = 65536
        for start in range(0, len(codes), block):
            signs = np.unpackbits(codes[start:start + block], axis=1).astype(np.float32) * 2 - 1
            rows = signs.tobytes()
            width = 4 * bits
            conn.executemany(f'INSERT INTO "{COLLECTION}_index" (rowid, vector) VALUES (?, ?)',
                             ((start + i, rows[i * width:(i + 1) * width]) for i in range(len(signs))))
        conn.execute(f'CREATE TABLE "{COLLECTION}_codes" (id INTEGER PRIMARY KEY, code BLOB NOT NULL)')
        conn.executemany(f'INSERT INTO "{COLLECTION}_codes" (id, code) VALUES (?, ?)',
                         zip(ids, (code.tobytes() for code in codes)))
    count = conn.execute(f'SELECT count(*) FROM "{COLLECTION}_index"').fetchall()[0][0]
    if count != len(codes):
        raise RuntimeError(f"bench(): the benchmark index holds {count} rows, expected {len(codes)}")


def _scan_one_size(n, bits, k, repeat, rng, extra_engines, labels, log):
    """Measure every available engine on n random codes of `bits` bits; return {engine: (seconds list, runs)}."""
    code_bytes = bits // 8
    codes = rng.integers(0, 256, size=(n, code_bytes), dtype=np.uint8)
    queries = [rng.integers(0, 256, size=code_bytes, dtype=np.uint8) for _ in range(repeat + 1)]
    float_queries = [rng.standard_normal(bits).astype(np.float32) for _ in range(repeat + 1)]
    distances = hamming_distances(codes, queries[0])
    times, builds = {}, {}

    def measure(engine, run, query_list, check):
        answer, seconds = _time_engine(run, query_list, repeat)
        check(engine, answer)
        times[engine] = seconds
        log(f"  {bits:>4} bits {n:>9,} codes  {labels[engine]:<46} {statistics.median(seconds) * 1000:10.2f} ms "
            f"(median of {len(seconds)})")

    def check_sql_rows(engine, rows):
        _check_hamming(engine, [row[0] for row in rows], [row[1] for row in rows] if len(rows[0]) > 1 else None,
                       distances, k)

    database = connect(":memory:")
    try:
        start = time.perf_counter()
        _build_sqlitebin(database, codes, bits)
        builds["sqlitebin"] = time.perf_counter() - start
        conn = database.conn

        def sql_query(engine):
            def run(query):
                return conn.execute(SQL[engine], {"query": query.tobytes(), "k": k}).fetchall()
            return run
        measure("sqlitebin-knn", sql_query("sqlitebin-knn"), queries, check_sql_rows)
        scores = asymmetric_scores(codes, float_queries[0])
        measure("sqlitebin-knn-asymmetric", sql_query("sqlitebin-knn-asymmetric"), float_queries,
                lambda engine, rows: _check_asymmetric(engine, [row[0] for row in rows], scores, k))
        del scores
        measure("sqlitebin-scalar", sql_query("sqlitebin-scalar"), queries, check_sql_rows)
        scan = Scan(n, bits, k, codes, queries, distances, conn, measure, check_sql_rows,
                    lambda engine, ids, reported: _check_hamming(engine, ids, reported, distances, k), builds)
        for engine in extra_engines:
            engine.run(scan)
    finally:
        database.close()
        del database
        gc.collect()

    words = codes.view(np.uint64) if code_bytes % 8 == 0 else codes

    def numpy_top_k(query):
        query_words = query.view(np.uint64) if code_bytes % 8 == 0 else query
        d = np.bitwise_count(words ^ query_words).sum(axis=1, dtype=np.int32)
        top = np.argpartition(d, k - 1)[:k] if k < len(d) else np.arange(len(d))
        return top[np.argsort(d[top], kind="stable")], d

    measure("numpy", numpy_top_k, queries,
            lambda engine, answer: _check_hamming(engine, answer[0], answer[1][answer[0]], distances, k))
    del codes, words, distances
    gc.collect()
    return times, builds


def scan_benchmark(sizes: Sequence[int] = SIZES, bits: Sequence[int] = BITS, k: int = TOP_K, repeat: int = REPEAT,
                   seed: int = 0, log: Callable[[str], None] = _stderr, extra_engines: Sequence[Engine] = ()) -> dict:
    """Time every engine at every size and code width; return {"rows": [...], "builds": [...]}."""
    labels = dict(ENGINES)
    for engine in extra_engines:
        labels.update(engine.labels)
    rng = np.random.default_rng(seed)
    rows, builds = [], []
    for width in bits:
        for n in sizes:
            times, build = _scan_one_size(n, width, k, repeat, rng, extra_engines, labels, log)
            baseline = statistics.median(times[BASELINE])
            for engine, seconds in times.items():
                median = statistics.median(seconds)
                rows.append({
                    "engine": engine, "label": labels[engine], "n": n, "bits": width,
                    "median_ms": median * 1000, "runs": len(seconds), "times_ms": [s * 1000 for s in seconds],
                    "codes_per_second": n / median if median > 0 else None,
                    "ratio_to_sqlitebin": median / baseline if baseline > 0 else None,
                })
            builds.append({"n": n, "bits": width, **{f"{name}_seconds": value for name, value in build.items()}})
    return {"rows": rows, "builds": builds}


# ----------------------------------------------------------------------
# Ingest benchmark


def _file_bytes(database):
    database.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    paths = [database.path + suffix for suffix in ("", "-wal")]
    return sum(os.path.getsize(path) for path in paths if os.path.exists(path))


def ingest_benchmark(texts: Sequence[str], vector_count: int = INGEST_VECTORS, dim: int = 256,
                     repeat: int = INGEST_REPEAT, seed: int = 0, log: Callable[[str], None] = _stderr,
                     workdir: Optional[str] = None) -> dict:
    """Documents/s through `Collection.add(texts)` (WordLlama, int8, FTS: the defaults), WordLlama alone,
    precomputed vectors/s through `add(vectors=)`, and database bytes per document; medians over `repeat` runs."""
    texts = list(texts)
    embedder = resolve_embedder(f"wordllama-{dim}")  # loads the weights once, outside the timings
    embed_seconds, text_seconds, vector_seconds = [], [], []
    text_bytes = vector_bytes = None
    vectors = np.random.default_rng(seed).standard_normal((vector_count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(prefix="sqlitebin-bench-", dir=workdir) as directory:
        for run in range(repeat):
            start = time.perf_counter()
            embed_texts(embedder, texts)
            embed_seconds.append(time.perf_counter() - start)

            path = os.path.join(directory, f"texts-{run}.db")
            with connect(path) as database:
                collection = database.create_collection("docs", dim)
                start = time.perf_counter()
                collection.add(texts)
                text_seconds.append(time.perf_counter() - start)
                text_bytes = _file_bytes(database) / len(texts)
            os.remove(path)

            path = os.path.join(directory, f"vectors-{run}.db")
            with connect(path) as database:
                collection = database.create_collection("vectors", dim, embedder=None)
                start = time.perf_counter()
                collection.add(vectors=vectors)
                vector_seconds.append(time.perf_counter() - start)
                vector_bytes = _file_bytes(database) / vector_count
            os.remove(path)
            log(f"  ingest run {run + 1}/{repeat}: {len(texts) / text_seconds[-1]:,.0f} documents/s, "
                f"{vector_count / vector_seconds[-1]:,.0f} vectors/s")
    return {
        "documents": len(texts),
        "vectors": vector_count,
        "dim": dim,
        "runs": repeat,
        "documents_per_second": len(texts) / statistics.median(text_seconds),
        "embedder_documents_per_second": len(texts) / statistics.median(embed_seconds),
        "vectors_per_second": vector_count / statistics.median(vector_seconds),
        "text_file_bytes_per_document": text_bytes,
        "vector_file_bytes_per_document": vector_bytes,
    }


# ----------------------------------------------------------------------
# Everything, and the targets


def bench(sizes: Sequence[int] = SIZES, bits: Sequence[int] = BITS, k: int = TOP_K, repeat: int = REPEAT,
          quick: bool = False, ingest: bool = True, corpus=None, seed: int = 0,
          log: Callable[[str], None] = _stderr, extra_engines: Sequence[Engine] = (), skipped: Sequence[str] = ()) -> dict:
    """Run the scan benchmark and (with `ingest`) the ingest benchmark; return one dict (see `format_report()`).

    `extra_engines` are measured beside sqlitebin's (benchmarks/peers.py makes them for sqlite-vec, faiss and
    usearch); `skipped` lists lines about engines that could not run, for the report.
    `quick` is a small run for tests: 2,000 codes of 256 bits, one timed query per engine, a 500-document ingest.
    `corpus` is a corpus file (JSON lines, gzip accepted) for the ingest texts; default: the bundled 3,000-document
    sample. Raises ValueError for sizes smaller than k or code widths that are not a multiple of 64 bits.
    """
    function = "bench()"
    if quick:
        sizes, bits, repeat = QUICK["sizes"], QUICK["bits"], QUICK["repeat"]
    sizes, bits = tuple(int(n) for n in sizes), tuple(int(b) for b in bits)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100_000:
        raise ValueError(f"{function}: k must be from 1 to 100000, got {k!r}")
    if not sizes or min(sizes) < k:
        raise ValueError(f"{function}: every size must be at least k ({k}), got {list(sizes)}")
    if not bits or any(b < 64 or b % 64 for b in bits):
        raise ValueError(f"{function}: bits must be positive multiples of 64, got {list(bits)}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"{function}: repeat must be a positive integer, got {repeat!r}")
    machine = describe_machine()
    machine["peers"] = {engine.name: engine.version for engine in extra_engines if engine.version}
    log(f"scan: top {k} of {', '.join(f'{n:,}' for n in sizes)} codes, {', '.join(map(str, bits))} bits, "
        f"median of {repeat} queries per engine")
    start = time.perf_counter()
    scan = scan_benchmark(sizes, bits, k, repeat, seed, log, extra_engines)
    result = {
        "machine": machine,
        "settings": {"sizes": list(sizes), "bits": list(bits), "k": k, "repeat": repeat, "seed": seed,
                     "storage": "SQLite in-memory database; every engine reads codes from RAM"},
        "skipped": list(skipped),
        "sql": SQL,
        "scan": scan["rows"],
        "builds": scan["builds"],
        "scan_seconds": time.perf_counter() - start,
        "ingest": None,
    }
    if ingest:
        texts = [document["text"] for document in load_corpus(corpus or sample_corpus_path())]
        if quick:
            texts = texts[: QUICK["ingest_documents"]]
        log(f"ingest: {len(texts):,} documents with WordLlama, "
            f"{QUICK['ingest_vectors'] if quick else INGEST_VECTORS:,} precomputed vectors")
        result["ingest"] = ingest_benchmark(
            texts, QUICK["ingest_vectors"] if quick else INGEST_VECTORS,
            repeat=QUICK["ingest_repeat"] if quick else INGEST_REPEAT, seed=seed, log=log)
    result["targets"] = check_targets(result)
    return result


def _median_ms(result, engine, n, bits):
    for row in result["scan"]:
        if row["engine"] == engine and row["n"] == n and row["bits"] == bits:
            return row["median_ms"]
    return None


def check_targets(result: dict) -> list:
    """The project's speed targets that this result can judge: [{target, value, met}]."""
    targets = []
    knn = _median_ms(result, "sqlitebin-knn", 1_000_000, 256)
    if knn:
        vec0 = _median_ms(result, "sqlite-vec-vec0", 1_000_000, 256)
        faiss = _median_ms(result, "faiss", 1_000_000, 256)
        asymmetric = _median_ms(result, "sqlitebin-knn-asymmetric", 1_000_000, 256)
        if vec0:
            targets.append({"target": "1M x 256 bits, k=100: the sqlitebin index at least 20x faster than sqlite-vec vec0",
                            "value": f"{vec0 / knn:.1f}x faster", "met": vec0 / knn >= 20})
        if faiss:
            targets.append({"target": "1M x 256 bits, k=100: the sqlitebin index within 2x of faiss IndexBinaryFlat "
                                      "(1 thread)",
                            "value": f"{knn / faiss:.2f}x faiss's time", "met": knn / faiss <= 2})
        if asymmetric:
            targets.append({"target": "1M x 256 bits, k=100: asymmetric scan within 3x of the Hamming scan",
                            "value": f"{asymmetric / knn:.2f}x", "met": asymmetric / knn <= 3})
    ingest = result.get("ingest")
    if ingest:
        targets.append({"target": "ingest with WordLlama: at least 2,500 documents/s end to end",
                        "value": f"{ingest['documents_per_second']:,.0f} documents/s",
                        "met": ingest["documents_per_second"] >= 2500})
        targets.append({"target": "ingest of precomputed vectors: at least 100,000 vectors/s",
                        "value": f"{ingest['vectors_per_second']:,.0f} vectors/s",
                        "met": ingest["vectors_per_second"] >= 100_000})
    return targets


# ----------------------------------------------------------------------
# Reporting


def describe_machine_line(machine: dict) -> str:
    peers = ", ".join(f"{name} {version}" for name, version in machine.get("peers", {}).items()) or "none"
    return (f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB RAM; {machine['os']}; "
            f"Python {machine['python']}, NumPy {machine['numpy']}, SQLite {machine['sqlite']} (apsw "
            f"{machine['apsw']}); sqlitebin {machine['sqlitebin']} (popcount kernel {machine['popcount_kernel']}); "
            f"peers: {peers}; load average at start {machine['load_average']}")


def _size_label(n):
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def scan_tables(result: dict) -> str:
    """Markdown: per code width, median latency (and ratio to sqlitebin's fast path) by engine and size."""
    sizes, lines = result["settings"]["sizes"], []
    for width in result["settings"]["bits"]:
        lines += [
            f"{width}-bit codes, top {result['settings']['k']}: median ms per query (time / sqlitebin fast path)",
            "",
            "| engine | " + " | ".join(_size_label(n) for n in sizes) + " |",
            "| --- | " + " | ".join("---:" for _ in sizes) + " |",
        ]
        for engine, label in ENGINES.items():
            cells = []
            for n in sizes:
                row = next((r for r in result["scan"] if r["engine"] == engine and r["n"] == n and r["bits"] == width),
                           None)
                cells.append("-" if row is None else f"{row['median_ms']:.2f} ({row['ratio_to_sqlitebin']:.2f}x)")
            if any(cell != "-" for cell in cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", f"{width}-bit codes: throughput, million codes scanned per second", "",
                  "| engine | " + " | ".join(_size_label(n) for n in sizes) + " |",
                  "| --- | " + " | ".join("---:" for _ in sizes) + " |"]
        for engine, label in ENGINES.items():
            cells = []
            for n in sizes:
                row = next((r for r in result["scan"] if r["engine"] == engine and r["n"] == n and r["bits"] == width),
                           None)
                cells.append("-" if row is None else f"{row['codes_per_second'] / 1e6:,.0f}")
            if any(cell != "-" for cell in cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def ingest_table(ingest: dict) -> str:
    return "\n".join([
        "| ingest | rate | file bytes per document |",
        "| --- | ---: | ---: |",
        f"| `add(texts)`: WordLlama {ingest['dim']}-d, int8 rescoring, FTS index ({ingest['documents']:,} documents) "
        f"| {ingest['documents_per_second']:,.0f} documents/s | {ingest['text_file_bytes_per_document']:,.0f} |",
        f"| WordLlama alone (`embed_texts`), for context "
        f"| {ingest['embedder_documents_per_second']:,.0f} documents/s | - |",
        f"| `add(vectors=)`: precomputed {ingest['dim']}-d vectors, int8 rescoring ({ingest['vectors']:,}) "
        f"| {ingest['vectors_per_second']:,.0f} vectors/s | {ingest['vector_file_bytes_per_document']:,.0f} |",
    ])


def targets_table(targets: list) -> str:
    lines = ["| target | measured | |", "| --- | ---: | --- |"]
    lines += [f"| {t['target']} | {t['value']} | {'met' if t['met'] else 'NOT met'} |" for t in targets]
    return "\n".join(lines)


def format_report(result: dict) -> str:
    """A readable report of a `bench()` result."""
    parts = [
        f"sqlitebin {result['machine']['sqlitebin']} bench",
        "machine: " + describe_machine_line(result["machine"]),
        f"storage: {result['settings']['storage']}; each engine warmed up on one query, then timed one query at a "
        "time; answers checked against NumPy",
    ]
    parts += result["skipped"]
    parts += ["", scan_tables(result)]
    if result.get("ingest"):
        parts += ["", ingest_table(result["ingest"])]
    if result.get("targets"):
        parts += ["", targets_table(result["targets"])]
    return "\n".join(parts)


# ----------------------------------------------------------------------
# Command line


def _int_list(option, minimum):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            values = tuple(int(part.replace("_", "")) for part in value.split(",") if part.strip())
        except ValueError:
            raise click.BadParameter(f"expected integers separated by commas, got {value!r}") from None
        if not values or min(values) < minimum:
            raise click.BadParameter(f"expected integers of at least {minimum} separated by commas, got {value!r}")
        return values
    return parse


@click.command()
@click.option("--sizes", default=",".join(map(str, SIZES)), show_default=True, callback=_int_list("--sizes", 1),
              help="Numbers of codes to scan, comma-separated.")
@click.option("--bits", default=",".join(map(str, BITS)), show_default=True, callback=_int_list("--bits", 64),
              help="Code widths in bits (multiples of 64), comma-separated.")
@click.option("--k", default=TOP_K, show_default=True, type=click.IntRange(1, 100_000), help="Neighbours per query.")
@click.option("--repeat", default=REPEAT, show_default=True, type=click.IntRange(1, 1000),
              help="Timed queries per engine and size; the median is reported.")
@click.option("--quick", is_flag=True, help="A small run (2,000 codes, 256 bits, one query) that checks the machinery.")
@click.option("--ingest/--no-ingest", default=True, show_default=True, help="Also measure ingest speed.")
@click.option("--corpus", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Corpus file for the ingest texts (JSON lines); default: the bundled 3,000-document sample.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random codes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def bench_command(sizes, bits, k, repeat, quick, ingest, corpus, seed, as_json):
    """Time sqlitebin's scans (index MATCH, hamming() row scan) against NumPy, and measure ingest speed.

    The comparison with sqlite-vec, faiss and usearch is `python benchmarks/bench_knn.py` in a checkout.
    Progress goes to stderr.

    \b
    Example:
        sqlitebin bench --quick
        sqlitebin bench --sizes 100000,1000000 --bits 256 --repeat 3 --json
    """
    try:
        result = bench(sizes, bits, k=k, repeat=repeat, quick=quick, ingest=ingest, corpus=corpus, seed=seed,
                       log=lambda message: click.echo(message, err=True))
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))
