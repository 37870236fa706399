"""Passages or whole documents? Retrieval quality of both ways of embedding long texts, on the Debian set.

A retrieval tool can give a long document one vector (the mean of all its token vectors, what sqlitebin does) or
split it into passages of a fixed number of words with some overlap, embed each, and score the document by its best
passage. This script measures both with WordLlama-256 and exact float32 search (NumPy), on the 59,302 Debian package
descriptions and their 2,000 dev queries: nDCG@10 and MRR@10 for all queries, and for the queries whose relevant
document is long (over 200 words, the 99th percentile is about 200). Run from a checkout:

    python benchmarks/long_documents.py /work/shared/data/debian-descriptions
"""

import sys
import time
from pathlib import Path

import numpy as np

from sqlitebin import metrics
from sqlitebin.datasets import load_corpus, load_queries
from sqlitebin.embedding import WordLlamaEmbedder, embed_texts

K = 10
LONG_WORDS = 200
# (words per passage, words of overlap with the previous passage)
PASSAGE_SETTINGS = ((64, 16), (128, 32), (256, 64))


def passages(text, size, overlap):
    words = text.split()
    if len(words) <= size:
        return [text]
    step = size - overlap
    return [" ".join(words[start : start + size]) for start in range(0, max(1, len(words) - overlap), step)]


def rank_documents(query_vectors, passage_vectors, owners):
    """Top-K documents per query, a document scored by its best passage (owners are in document order)."""
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    ranked = []
    for block in range(0, len(query_vectors), 256):
        scores = query_vectors[block : block + 256] @ passage_vectors.T
        best = np.maximum.reduceat(scores, starts, axis=1)
        ranked.extend(np.argsort(-best, axis=1, kind="stable")[:, :K].tolist())
    return ranked


def main(data_dir):
    data_dir = Path(data_dir)
    corpus = load_corpus(data_dir / "corpus.jsonl.gz")
    queries = load_queries(data_dir / "queries-dev.jsonl.gz")
    embed = WordLlamaEmbedder(256)
    position = {document["id"]: row for row, document in enumerate(corpus)}
    relevant = [position[query["doc"]] for query in queries]
    long_queries = [i for i, row in enumerate(relevant) if len(corpus[row]["text"].split()) > LONG_WORDS]
    query_vectors = embed_texts(embed, [query["text"] for query in queries])

    settings = [("whole document, one vector", None)] + [
        (f"passages of {size} words, {overlap} overlap, best passage", (size, overlap))
        for size, overlap in PASSAGE_SETTINGS
    ]
    print(f"{len(corpus):,} documents, {len(queries):,} queries ({len(long_queries)} with a relevant document of "
          f"over {LONG_WORDS} words); WordLlama-256, exact float32 search")
    print(f"{'embedding':<52} {'vectors':>8} {'nDCG@10':>8} {'MRR@10':>7} {'nDCG@10 long':>13} {'seconds':>8}")
    for label, setting in settings:
        start = time.perf_counter()
        texts, owners = [], []
        for row, document in enumerate(corpus):
            pieces = [document["text"]] if setting is None else passages(document["text"], *setting)
            texts.extend(pieces)
            owners.extend([row] * len(pieces))
        vectors = embed_texts(embed, texts)
        if setting is None:
            ranked = metrics.exact_search(vectors, query_vectors, K)[0].tolist()
        else:
            ranked = rank_documents(query_vectors, vectors, np.asarray(owners))
        seconds = time.perf_counter() - start
        ndcg = metrics.mean_ndcg_at_k(ranked, relevant, K)
        mrr = metrics.mean_mrr_at_k(ranked, relevant, K)
        ndcg_long = metrics.mean_ndcg_at_k([ranked[i] for i in long_queries], [relevant[i] for i in long_queries], K)
        print(f"{label:<52} {len(texts):>8,} {ndcg:>8.3f} {mrr:>7.3f} {ndcg_long:>13.3f} {seconds:>8.1f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/debian-descriptions")
