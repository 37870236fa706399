"""`Collection.add(vectors=)` speed: this checkout against another one (sqlitebin 0.1.0, say), in one run.

Each side runs in its own Python process with its own checkout first on sys.path (both built in place with
`python setup.py build_ext --inplace`), adding the same N random 256-d float32 vectors to a new file database
(vectors only, int8 rescoring: the defaults) in batches of 1,000, three times; the median rate is reported, and
the ratio new / old. Also the raw `executemany` INSERT rate into a bare `sqlitebin` virtual table (this checkout
only), the floor under Collection.add. Timings on a shared machine are noisy: compare the ratio, not the rates.

    python benchmarks/ingest_old_vs_new.py --old /path/to/sqlitebin-0.1.0 [--count 200000] [--repeat 3]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, os, statistics, sys, tempfile, time
import numpy as np
import sqlitebin
count, repeat, raw = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "raw"
vectors = np.random.default_rng(0).standard_normal((count, 256)).astype(np.float32)
seconds = []
with tempfile.TemporaryDirectory() as directory:
    for run in range(repeat):
        path = os.path.join(directory, f"ingest-{run}.db")
        db = sqlitebin.connect(path)
        if raw:
            import apsw
            db.conn.execute("CREATE VIRTUAL TABLE idx USING sqlitebin(dim=256)")
            rows = [(i + 1, vectors[i].tobytes()) for i in range(count)]
            start = time.perf_counter()
            with db.conn:
                db.conn.executemany("INSERT INTO idx (rowid, vector) VALUES (?, ?)", rows)
        else:
            collection = db.create_collection("v", 256, embedder=None)
            start = time.perf_counter()
            collection.add(vectors=vectors)
        seconds.append(time.perf_counter() - start)
        db.close()
print(json.dumps({"version": sqlitebin.__version__, "file": sqlitebin.__file__,
                  "vectors_per_second": count / statistics.median(seconds)}))
"""


def measure(checkout, count, repeat, raw=False):
    env = dict(os.environ, PYTHONPATH=str(checkout))
    result = subprocess.run([sys.executable, "-c", WORKER, str(count), str(repeat), "raw" if raw else "add"],
                            capture_output=True, text=True, env=env, cwd=checkout, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, type=Path, help="A checkout of the version to compare against.")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.count:,} x 256-d vectors, median of {args.repeat}")
    old = measure(args.old, args.count, args.repeat)
    new = measure(HERE, args.count, args.repeat)
    raw = measure(HERE, args.count, args.repeat, raw=True)
    print(f"Collection.add(vectors=) {old['version']} ({old['file']}): {old['vectors_per_second']:,.0f} vectors/s")
    print(f"Collection.add(vectors=) {new['version']} ({new['file']}): {new['vectors_per_second']:,.0f} vectors/s")
    print(f"executemany INSERT into a bare sqlitebin table: {raw['vectors_per_second']:,.0f} vectors/s")
    ratio = new["vectors_per_second"] / old["vectors_per_second"]
    print(f"new / old: {ratio:.2f}x (target: at least 1.0x)")
    return 0 if ratio >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
