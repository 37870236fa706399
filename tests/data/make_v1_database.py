"""Write tests/data/sqlitebin-0.1.0.sqlite: a database exactly as sqlitebin 0.1.0 (schema version 1) left it.

Run with the 0.1.0 code (commit d680bad) installed: `python tests/data/make_v1_database.py`. The migration
test opens this file, so it must keep what the old code really wrote:

- `debian`: a text collection (WordLlama-128, int8 rescoring, FTS5) of 300 Debian package descriptions
  with metadata; 20 deleted through `Collection.delete()`; then plain-SQL writes the old code had not folded
  into its chunks yet (left in `debian_changes`): 10 documents deleted with `DELETE`, and 5 documents
  inserted with `INSERT` into the documents, codes and vectors tables.
- `vectors`: a vectors-only float32 collection (64-d WordLlama vectors of the next 200 descriptions, ids from
  1000), 10 deleted, one vector replaced through `upsert()`, one more inserted with plain SQL.

Ids and vectors are deterministic: the same corpus and WordLlama give the same file.
"""

import os
import sys
from pathlib import Path

import numpy as np

import sqlitebin
from sqlitebin import quantize
from sqlitebin.datasets import load_corpus
from sqlitebin.embedding import resolve_embedder

CORPUS = Path("/work/shared/data/debian-descriptions/corpus.jsonl.gz")
OUTPUT = Path(__file__).with_name("sqlitebin-0.1.0.sqlite")


def main():
    if sqlitebin.__version__ != "0.1.0":
        sys.exit(f"make_v1_database.py: run this with sqlitebin 0.1.0, not {sqlitebin.__version__}")
    corpus = load_corpus(sys.argv[1] if len(sys.argv) > 1 else CORPUS)
    documents = corpus[:300]
    extra = corpus[300:305]
    vector_documents = corpus[305:506]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(str(OUTPUT) + suffix):
            os.remove(str(OUTPUT) + suffix)

    db = sqlitebin.connect(OUTPUT)
    text = db.create_collection("debian", dim=128, embedder="wordllama-128")
    text.add([d["text"] for d in documents], metadata=[{"package": d["id"], "title": d["title"]} for d in documents],
             batch_size=128)
    text.delete(list(range(5, 45, 2)))

    # Plain SQL, as a user of the 0.1.0 tables would write; the old code folds these into its chunks only at
    # the next write through Python, so they stay in debian_changes.
    conn = db.conn
    with conn:
        conn.execute("DELETE FROM debian_documents WHERE id IN (SELECT id FROM debian_documents WHERE id > 250 LIMIT 10)")
        vectors = quantize.normalize(text.embedder([d["text"] for d in extra]))
        codes = quantize.binary_quantize(vectors)
        stored = quantize.int8_quantize(vectors, text.ranges)
        for offset, (document, code, vector) in enumerate(zip(extra, codes, stored)):
            new_id = 400 + offset
            conn.execute("INSERT INTO debian_documents (id, text, metadata) VALUES (?, ?, json_object('package', ?))",
                         (new_id, document["text"], document["id"]))
            conn.execute("INSERT INTO debian_codes (id, code) VALUES (?, ?)", (new_id, code.tobytes()))
            conn.execute("INSERT INTO debian_vectors (id, vector) VALUES (?, ?)", (new_id, vector.tobytes()))

    embed64 = resolve_embedder("wordllama-64")
    matrix = embed64([d["text"] for d in vector_documents])
    plain = db.create_collection("vectors", dim=64, embedder=None, rescore="float32")
    plain.add(vectors=matrix[:200], ids=list(range(1000, 1200)))
    plain.delete(list(range(1000, 1200, 20)))
    plain.upsert(vectors=matrix[200:201] * 2.0, ids=[1001])
    last = quantize.normalize(matrix[199:200] + matrix[0:1])
    with conn:
        conn.execute("INSERT INTO vectors_documents (id) VALUES (5000)")
        conn.execute("INSERT INTO vectors_codes (id, code) VALUES (5000, ?)", (quantize.binary_quantize(last)[0].tobytes(),))
        conn.execute("INSERT INTO vectors_vectors (id, vector) VALUES (5000, ?)", (last[0].tobytes(),))

    pending = {name: conn.execute(f"SELECT count(*) FROM {name}_changes").fetchall()[0][0] for name in ("debian", "vectors")}
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    # One file, no WAL beside it: the test copies it and opens the copy.
    conn = sqlitebin.Database(OUTPUT).conn
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("VACUUM")
    conn.close()
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes); rows waiting in N_changes: {pending}")


if __name__ == "__main__":
    main()
