"""The peers sqlitebin is measured against (sqlite-vec, faiss, usearch), as engines for `sqlitebin.bench`.

Kept out of the installed package: they are benchmark dependencies (`pip install 'sqlitebin[bench]'`), and a
missing one is skipped with a line saying so. `engines(log)` returns ([Engine], [skip lines]) to pass to
`sqlitebin.bench.bench()` or `scan_benchmark()` as `extra_engines`.
"""

import gc
import importlib
import sys
import time

import apsw

from sqlitebin.bench import COLLECTION, Engine

PEERS = (  # name, module, pip package
    ("sqlite-vec", "sqlite_vec", "sqlite-vec"),
    ("faiss", "faiss", "faiss-cpu"),
    ("usearch", "usearch.index", "usearch"),
)

SQL = {
    "sqlite-vec-scan": (f'SELECT id FROM "{COLLECTION}_codes" '
                        "ORDER BY vec_distance_hamming(vec_bit(code), vec_bit(:query)) LIMIT :k"),
    "sqlite-vec-vec0": "SELECT rowid, distance FROM vec_codes WHERE code MATCH vec_bit(:query) AND k = :k",
}


LABELS = {
    "sqlite-vec-scan": "sqlite-vec: ORDER BY vec_distance_hamming()",
    "sqlite-vec-vec0": "sqlite-vec: vec0 KNN",
    "faiss": "faiss: IndexBinaryFlat, 1 thread",
    "usearch": "usearch: exact b1 hamming, 1 thread",
}


def _stderr(message):
    print(message, file=sys.stderr, flush=True)


def load_sqlite_vec(conn, sqlite_vec):
    """Load sqlite-vec into an apsw connection (loading switched off again after); return its version."""
    conn.enable_load_extension(True)
    try:
        conn.load_extension(sqlite_vec.loadable_path())
    finally:
        conn.enable_load_extension(False)
    return conn.execute("SELECT vec_version()").fetchall()[0][0]


def _sqlite_vec_engine(sqlite_vec):
    conn = apsw.Connection(":memory:")
    version = load_sqlite_vec(conn, sqlite_vec)
    conn.close()

    def run(scan):
        conn = scan.conn
        load_sqlite_vec(conn, sqlite_vec)

        def query(engine):
            return lambda q: conn.execute(SQL[engine], {"query": q.tobytes(), "k": scan.k}).fetchall()

        scan.measure("sqlite-vec-scan", query("sqlite-vec-scan"), scan.queries, scan.check_sql_rows)
        start = time.perf_counter()
        conn.execute(f"CREATE VIRTUAL TABLE vec_codes USING vec0(code bit[{scan.bits}])")
        with conn:
            conn.executemany("INSERT INTO vec_codes (rowid, code) VALUES (?, vec_bit(?))",
                             zip(range(scan.n), (code.tobytes() for code in scan.codes)))
        scan.builds["sqlite-vec-vec0"] = time.perf_counter() - start
        # vec0 reports distances as floats; whole numbers for Hamming.
        scan.measure("sqlite-vec-vec0", query("sqlite-vec-vec0"), scan.queries, scan.check_sql_rows)

    return Engine("sqlite-vec", {key: LABELS[key] for key in SQL}, run, version)


def _faiss_engine(faiss):
    def run(scan):
        faiss.omp_set_num_threads(1)
        index = faiss.IndexBinaryFlat(scan.bits)
        index.add(scan.codes)
        scan.measure("faiss", lambda q: index.search(q.reshape(1, -1), scan.k), scan.queries,
                     lambda engine, answer: scan.check_hamming(engine, answer[1][0], answer[0][0]))
        del index
        gc.collect()

    return Engine("faiss", {"faiss": LABELS["faiss"]}, run, faiss.__version__)


def _usearch_engine(usearch):
    def run(scan):
        metric = usearch.MetricKind.Hamming
        scan.measure("usearch", lambda q: usearch.search(scan.codes, q, scan.k, metric, exact=True, threads=1),
                     scan.queries, lambda engine, matches: scan.check_hamming(engine, matches.keys, matches.distances))

    return Engine("usearch", {"usearch": LABELS["usearch"]}, run,
                  importlib.import_module("usearch").__version__)


MAKERS = {"sqlite-vec": _sqlite_vec_engine, "faiss": _faiss_engine, "usearch": _usearch_engine}


def engines(log=_stderr):
    """([Engine] for the peers that import, [skip lines]); each missing peer is logged."""
    found, skipped = [], []
    for name, module_name, package in PEERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            message = (f"skipping {name}: it is not installed ({error}); "
                       f"pip install {package}, or pip install 'sqlitebin[bench]'")
            log(message)
            skipped.append(message)
            continue
        found.append(MAKERS[name](module))
    return found, skipped
