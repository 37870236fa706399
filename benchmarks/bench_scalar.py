"""Scalar-function benchmark: sqlitebin's hamming() against sqlite-vec and a bare table scan.

One apsw in-memory database holds a plain table ``t(id INTEGER PRIMARY KEY, code BLOB)`` of random
256-bit codes. The same connection runs three queries, each warmed up once and then timed
``--repeat`` times: a bare scan that touches every row, an exact top-100 search with sqlitebin's
``hamming()``, and the same search with sqlite-vec's ``vec_distance_hamming()``. Each search result is
checked against a NumPy brute force before any time is reported, so a fast wrong answer cannot pass.
Ratios between the queries are the result; absolute times are context for this machine only.

Run ``python benchmarks/bench_scalar.py`` (1M rows) or ``--quick`` (20k rows, for tests).
"""

import argparse
import os
import platform
import statistics
import sys
import time

import apsw
import numpy as np

CODE_BYTES = 32  # 256-bit codes
TOP_K = 100
TARGET_FASTER_THAN_SQLITE_VEC = 1.5  # sqlitebin at least this many times faster than sqlite-vec
TARGET_OVER_BARE_SCAN = 1.6  # sqlitebin at most this many times the bare scan

BARE_SCAN_SQL = f"SELECT count(*) FROM t WHERE length(code) = {CODE_BYTES}"
SQLITEBIN_SQL = f"SELECT id FROM t ORDER BY hamming(code, :q) LIMIT {TOP_K}"
SQLITE_VEC_SQL = f"SELECT id FROM t ORDER BY vec_distance_hamming(vec_bit(code), vec_bit(:q)) LIMIT {TOP_K}"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="rows in the table (default 1,000,000; 20,000 with --quick)")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per query, median reported (default 5; 2 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the NumPy random generator (default 0)")
    parser.add_argument("--quick", action="store_true", help="small run for tests: --n 20000 --repeat 2 unless given")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 20_000 if args.quick else 1_000_000
    if args.repeat is None:
        args.repeat = 2 if args.quick else 5
    if args.n < TOP_K:
        parser.error(f"--n must be at least {TOP_K} (the LIMIT of the searches), got {args.n}")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    return args


def cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_table(conn, codes):
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, code BLOB)")
    # ids are row indices, so a result id indexes the NumPy array directly.
    with conn:
        conn.executemany(
            "INSERT INTO t(id, code) VALUES (?, ?)",
            ((i, codes[i].tobytes()) for i in range(len(codes))),
        )


def brute_force_distances(codes, query):
    """Hamming distance from query to every code: popcount of the XOR, summed over the bytes."""
    return np.bitwise_count(codes ^ query).sum(axis=1, dtype=np.int64)


def check_top_k(name, ids, distances, expected_top_k):
    """Raise AssertionError unless ids are distinct rows whose distances, in result order, are the true top k."""
    ids = np.asarray(ids, dtype=np.int64)
    assert len(ids) == TOP_K, f"{name}: returned {len(ids)} rows, expected {TOP_K}"
    assert len(np.unique(ids)) == TOP_K, f"{name}: returned duplicate ids"
    # Ties make the ids themselves ambiguous; the sorted distances of any correct answer are not.
    got = distances[ids]
    assert np.array_equal(got, expected_top_k), (
        f"{name}: distances of the returned ids {got[:10].tolist()}... differ from the NumPy top {TOP_K} "
        f"{expected_top_k[:10].tolist()}..."
    )


def time_query(conn, sql, params, repeat):
    """Run sql once to warm up, then time it repeat times; return (warm-up rows, seconds per run)."""
    rows = conn.execute(sql, params).fetchall()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        conn.execute(sql, params).fetchall()
        seconds.append(time.perf_counter() - start)
    return rows, seconds


def load_sqlitebin(conn):
    """Load sqlitebin into conn and return its version, or None (with a message) when it is not installed."""
    try:
        import sqlitebin
    except ImportError as error:
        print(f"skipping sqlitebin: cannot import it ({error}); run `pip install -e .` at the repository root")
        return None
    sqlitebin.load(conn)
    version = getattr(sqlitebin, "__version__", "unknown")
    # The popcount kernel is chosen at run time, so the same build can be fast or slow by CPU: report which one ran.
    try:
        debug = conn.execute("SELECT sqlitebin_debug()").fetchall()[0][0]
    except apsw.SQLError:
        return version
    settings = dict(line.split("=", 1) for line in debug.splitlines() if "=" in line)
    return f"{version} (popcount kernel: {settings.get('popcount', 'unknown')})"


def load_sqlite_vec(conn):
    """Load sqlite-vec into conn and return its version, or None (with a message) when it is not installed."""
    try:
        import sqlite_vec
    except ImportError as error:
        print(f"skipping sqlite-vec: cannot import it ({error}); run `pip install sqlite-vec`")
        return None
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peers import load_sqlite_vec as load

    return load(conn, sqlite_vec)


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    codes = rng.integers(0, 256, size=(args.n, CODE_BYTES), dtype=np.uint8)
    query = rng.integers(0, 256, size=CODE_BYTES, dtype=np.uint8)
    params = {"q": query.tobytes()}

    distances = brute_force_distances(codes, query)
    expected_top_k = np.sort(distances)[:TOP_K]

    conn = apsw.Connection(":memory:")
    start = time.perf_counter()
    build_table(conn, codes)
    build_seconds = time.perf_counter() - start

    sqlitebin_version = load_sqlitebin(conn)
    sqlite_vec_version = load_sqlite_vec(conn)

    print(f"CPU:        {cpu_model()} ({os.cpu_count()} cores)")
    print(f"Python:     {platform.python_version()}, NumPy {np.__version__}")
    print(f"SQLite:     {apsw.sqlite_lib_version()} (apsw {apsw.apsw_version()})")
    print(f"sqlitebin:  {sqlitebin_version or 'not installed'}")
    print(f"sqlite-vec: {sqlite_vec_version or 'not installed'}")
    print(f"table:      {args.n:,} rows of {CODE_BYTES * 8}-bit codes, built in {build_seconds:.2f} s; "
          f"top {TOP_K}, median of {args.repeat} runs after 1 warm-up")
    print()

    medians = {}
    rows, seconds = time_query(conn, BARE_SCAN_SQL, {}, args.repeat)
    assert rows[0][0] == args.n, f"bare scan: counted {rows[0][0]} rows, expected {args.n}"
    medians["bare scan"] = statistics.median(seconds)

    if sqlitebin_version is not None:
        rows, seconds = time_query(conn, SQLITEBIN_SQL, params, args.repeat)
        check_top_k("sqlitebin", [row[0] for row in rows], distances, expected_top_k)
        medians["sqlitebin"] = statistics.median(seconds)

    if sqlite_vec_version is not None:
        rows, seconds = time_query(conn, SQLITE_VEC_SQL, params, args.repeat)
        check_top_k("sqlite-vec", [row[0] for row in rows], distances, expected_top_k)
        medians["sqlite-vec"] = statistics.median(seconds)

    print(f"{'query':<12} {'median ms':>10}")
    for name, median in medians.items():
        print(f"{name:<12} {median * 1000:>10.1f}")
    print()

    if "sqlitebin" in medians and "sqlite-vec" in medians:
        faster = medians["sqlite-vec"] / medians["sqlitebin"]
        verdict = "met" if faster >= TARGET_FASTER_THAN_SQLITE_VEC else "NOT met"
        print(f"sqlitebin vs sqlite-vec: {faster:.2f}x faster  "
              f"(target: at least {TARGET_FASTER_THAN_SQLITE_VEC:.2f}x, {verdict})")
    if "sqlitebin" in medians:
        over_scan = medians["sqlitebin"] / medians["bare scan"]
        verdict = "met" if over_scan <= TARGET_OVER_BARE_SCAN else "NOT met"
        print(f"sqlitebin / bare scan:   {over_scan:.2f}x  "
              f"(target: at most {TARGET_OVER_BARE_SCAN:.2f}x, {verdict})")
    if "sqlite-vec" in medians:
        print(f"sqlite-vec / bare scan:  {medians['sqlite-vec'] / medians['bare scan']:.2f}x  (context)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
