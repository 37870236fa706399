"""Make the bundled sample in sqlitebin/data/ from the full Debian package-description set.

The sample is every document relevant to the first 300 dev queries (in qid order) plus documents drawn by a seeded
random generator from the rest, 3,000 in all, written in corpus order; its queries are all dev queries whose relevant
document is in the sample. Output is byte-for-byte reproducible (fixed seed, gzip header without a timestamp).

    python scripts/make_sample.py [--source DIR] [--output DIR]
"""

import argparse
import gzip
import json
import random
from pathlib import Path

SAMPLE_SIZE = 3000
LABELLED_QUERIES = 300
SEED = 20261122

REPO_ROOT = Path(__file__).resolve().parent.parent


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def write_jsonl_gz(path: Path, records: list[dict]) -> None:
    # mtime=0 and no file name in the header keep the output identical from one run to the next.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
        for record in records:
            compressed.write((json.dumps(record) + "\n").encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=REPO_ROOT.parent / "shared" / "data" / "debian-descriptions",
        help="folder holding corpus.jsonl.gz and queries-dev.jsonl.gz",
    )
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "sqlitebin" / "data", help="where to write")
    arguments = parser.parse_args()

    corpus = read_jsonl_gz(arguments.source / "corpus.jsonl.gz")
    queries = sorted(read_jsonl_gz(arguments.source / "queries-dev.jsonl.gz"), key=lambda query: query["qid"])

    chosen_ids = {query["doc"] for query in queries[:LABELLED_QUERIES]}
    other_ids = sorted(document["id"] for document in corpus if document["id"] not in chosen_ids)
    chosen_ids.update(random.Random(SEED).sample(other_ids, SAMPLE_SIZE - len(chosen_ids)))

    sample_documents = [document for document in corpus if document["id"] in chosen_ids]
    sample_queries = [query for query in queries if query["doc"] in chosen_ids]
    arguments.output.mkdir(parents=True, exist_ok=True)
    write_jsonl_gz(arguments.output / "debian-sample.jsonl.gz", sample_documents)
    write_jsonl_gz(arguments.output / "debian-sample-queries.jsonl.gz", sample_queries)
    print(f"{len(sample_documents)} documents, {len(sample_queries)} queries written to {arguments.output}")


if __name__ == "__main__":
    main()
