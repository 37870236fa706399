"""Ingest the Debian corpus into a sqlitebin database, resuming where the database left off: the
worker that tests/test_reliability_faults.py kills with SIGKILL at random moments.

Document i of the corpus (0-based) gets id i + 1, so after any crash the database must hold exactly
ids 1..n for a whole number of batches n. The worker prints `ready N` once the database is open
(N documents already there), `committed N` after each batch's transaction has committed, and `done N`
at the end; every line is flushed at once, so a reader sees each line before the next batch begins.

    python scripts/kill_ingest.py DB CORPUS [--limit N] [--batch-size 500]
"""

import argparse
import sys

import sqlitebin
from sqlitebin.datasets import load_corpus

COLLECTION = "debian"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("corpus")
    parser.add_argument("--limit", type=int, default=None, help="ingest only the first N documents")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()

    documents = load_corpus(args.corpus)[: args.limit]
    db = sqlitebin.connect(args.db)
    collection = db.create_collection(COLLECTION, exists_ok=True)
    start = len(collection)
    print(f"ready {start}", flush=True)

    def committed(done, total):
        print(f"committed {start + done}", flush=True)

    rest = documents[start:]
    collection.add([d["text"] for d in rest], ids=list(range(start + 1, start + len(rest) + 1)),
                   metadata=[{"doc": d["id"]} for d in rest], batch_size=args.batch_size, progress=committed)
    print(f"done {len(collection)}", flush=True)
    db.close()


if __name__ == "__main__":
    sys.exit(main())
