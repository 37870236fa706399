"""Batch search and the per-process code cache, measured side by side in one run.

1. Memory: a database of N x 256-d vectors (int8 rescoring) is searched from one connection, then from a
   second connection to the same file in the same process: the second must cost little, because the
   codes are cached once per process (target: two connections at most 1.3x the memory growth of one).
2. Batch: 1,000 queries, k = 10, one thread (SQLITEBIN_THREADS=1, faiss.omp_set_num_threads(1)), with the
   kernels capped at avx512 and at avx2 in turn (those this CPU has):
   - Hamming top-k (candidates='hamming', rescore='none'): one MATCH holding every query against
     faiss IndexBinaryFlat's batched search over the same codes (target: at least faiss's throughput),
     and against sqlitebin's own loop of one query per statement (target: at least 3x);
   - the default search (asymmetric candidates, int8 rescoring): one MATCH holding every query (what
     Collection.search_many() runs) against one statement per query (target: at least 3x).

Prints the CPU model and flags, the thread counts, and ratios; absolute times are context only.

    python benchmarks/bench_batch.py [--n 1000000] [--queries 1000]
"""

import os

# NumPy's BLAS threads spin on the second core after a matrix product and would count in the CPU time of a
# one-thread benchmark.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import apsw  # noqa: E402
import numpy as np  # noqa: E402

import sqlitebin  # noqa: E402

DIM = 256


def cpu_description():
    model, flags = "unknown", set()
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    wanted = [f for f in ("popcnt", "avx2", "avx512f", "avx512bw", "avx512_vpopcntdq", "avx512vbmi") if f in flags]
    return f"{model} ({os.cpu_count()} CPUs; {' '.join(wanted)})"


def rss_bytes():
    """Resident anonymous memory (the heap: the code cache, SQLite's page caches); pages of the database
    file mapped by mmap_size are the operating system's page cache, shared, and not counted here."""
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def build(path, n, seed=1):
    rng = np.random.default_rng(seed)
    conn = apsw.Connection(path)
    sqlitebin.load(conn)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"CREATE VIRTUAL TABLE idx USING sqlitebin(dim={DIM})")
    with conn:
        for start in range(0, n, 100_000):
            block = rng.standard_normal((min(100_000, n - start), DIM)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            conn.executemany("INSERT INTO idx(rowid, vector) VALUES (?, ?)",
                             ((start + i + 1, v.tobytes()) for i, v in enumerate(block)))
    conn.close()


def open_connection(path):
    conn = apsw.Connection(path)
    sqlitebin.load(conn)
    conn.execute("PRAGMA mmap_size = 1073741824")
    return conn


def memory(path, query):
    sql = "SELECT rowid FROM idx WHERE vector MATCH ? AND k = 10"
    base = rss_bytes()
    first = open_connection(path)
    first.execute(sql, (query.tobytes(),)).fetchall()
    one = rss_bytes() - base
    second = open_connection(path)
    second.execute(sql, (query.tobytes(),)).fetchall()
    two = rss_bytes() - base
    debug = dict(line.split("=", 1) for line in first.execute("SELECT sqlitebin_debug()").fetchall()[0][0].splitlines())
    first.close()
    second.close()
    return one, two, debug.get("shared_code_caches")


def use_kernel(cap):
    """Load the extension with the kernel capped at `cap` ("" for no cap); the choice is process-wide, so every
    connection uses it from now on. Returns the level in use."""
    os.environ["SQLITEBIN_POPCOUNT"] = cap
    scratch = apsw.Connection(":memory:")
    sqlitebin.load(scratch)
    level = dict(line.split("=", 1)
                 for line in scratch.execute("SELECT sqlitebin_debug()").fetchall()[0][0].splitlines())["popcount"]
    scratch.close()
    return level


def timed(function, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return best


def main(argv=None):
    saved = {name: os.environ.get(name) for name in ("SQLITEBIN_THREADS", "SQLITEBIN_POPCOUNT")}
    os.environ["SQLITEBIN_THREADS"] = "1"  # read by every scan: each figure here is one thread
    try:
        return run(argv)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(argv):
    saved_cap = os.environ.get("SQLITEBIN_POPCOUNT")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((args.queries, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"CPU: {cpu_description()}")
    print(f"{args.n:,} x {DIM}-d vectors (int8 rescoring), {args.queries:,} queries, k = 10; "
          "sqlitebin and faiss on one thread each; times are CPU seconds, best of 3")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "batch.db")
        build(path, args.n)

        one, two, caches = memory(path, queries[0])
        print(f"\nHeap growth (RssAnon): one connection {one / 2**20:.1f} MiB, two connections {two / 2**20:.1f} MiB "
              f"({two / one:.2f}x; target <= 1.3x), shared copies listed: {caches}")

        conn = open_connection(path)
        # The same codes for faiss, read back through the table's own shadow tables (slot order): the
        # codes from the chunks, each slot's rowid from idx_rowids.
        slot_codes = np.concatenate([np.frombuffer(c, np.uint8).reshape(-1, DIM // 8)
                                     for (c,) in conn.execute("SELECT codes FROM idx_chunks ORDER BY chunk_id")])
        pairs = np.array(conn.execute("SELECT rowid, location FROM idx_rowids ORDER BY location").fetchall(),
                         dtype=np.int64).reshape(-1, 2)
        ids, codes = pairs[:, 0], slot_codes[pairs[:, 1]]
        position = len(ids)
        index = faiss.IndexBinaryFlat(DIM)
        index.add(codes[:position])
        query_codes = np.packbits(queries > 0, axis=1)

        hamming_one = "SELECT rowid FROM idx WHERE vector MATCH ? AND k = 10 AND candidates = 'hamming' AND rescore = 'none'"
        default_one = "SELECT rowid, score FROM idx WHERE vector MATCH ? AND k = 10"
        blob = queries.tobytes()
        t_faiss = timed(lambda: index.search(query_codes, 10))

        def batch_and_loop(sql):
            """CPU seconds for every query in one MATCH, and for one statement per query."""
            return (timed(lambda: conn.execute(sql, (blob,)).fetchall()),
                    timed(lambda: [conn.execute(sql, (q.tobytes(),)).fetchall() for q in queries]))

        for cap in ("avx512", "avx2"):
            level = use_kernel(cap)
            if level != cap:
                print(f"\nKernel cap {cap}: this CPU lacks it; skipped")
                continue
            kernels = dict(line.split("=", 1)
                           for line in conn.execute("SELECT sqlitebin_debug()").fetchall()[0][0].splitlines())
            print(f"\nKernels capped at {cap}: popcount={kernels.get('popcount')} "
                  f"asymmetric={kernels.get('asymmetric_scan')}")
            t_batch, t_loop = batch_and_loop(hamming_one)
            print("Hamming top 10 (candidates='hamming', rescore='none'):")
            print(f"  faiss IndexBinaryFlat batched search   {args.queries / t_faiss:10,.0f} queries/s")
            print(f"  sqlitebin, one MATCH for all queries   {args.queries / t_batch:10,.0f} queries/s "
                  f"({t_faiss / t_batch:.2f}x faiss's throughput; target >= 1.0x)")
            print(f"  sqlitebin, one statement per query     {args.queries / t_loop:10,.0f} queries/s "
                  f"(batch = {t_loop / t_batch:.2f}x the loop; target >= 3x)")

            # Exactness: the batch returns the same top 10 as faiss (ties broken differently, so compare distances).
            got = conn.execute("SELECT query, distance FROM idx WHERE vector MATCH ? AND k = 10 "
                               "AND candidates = 'hamming' AND rescore = 'none'", (blob,)).fetchall()
            distances, _ = index.search(query_codes, 10)
            ours = np.array([row[1] for row in got]).reshape(args.queries, 10)
            print(f"  same top-10 distances as faiss for every query: {bool((ours == distances).all())}")

            t_default_batch, t_default_loop = batch_and_loop(default_one)
            print("Default search (asymmetric candidates, oversample 10, int8 rescoring):")
            print(f"  one MATCH for all queries   {args.queries / t_default_batch:10,.0f} queries/s")
            print(f"  one statement per query     {args.queries / t_default_loop:10,.0f} queries/s "
                  f"(batch = {t_default_loop / t_default_batch:.2f}x the loop; target >= 3x)")
        use_kernel(saved_cap or "")
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
