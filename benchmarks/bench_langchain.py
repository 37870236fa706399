"""LangChain store benchmark: `SqlitebinVectorStore` against LangChain's own `InMemoryVectorStore`, in one run.

Both stores get the same clustered random vectors (256 dimensions by default) through an `Embeddings` that looks
them up, so embedding costs nothing and only the stores are timed: `add_texts` of every document, then one
`similarity_search` (k = 10) per query, plain and with a metadata filter matching one document in ten
(a dict pushed into SQL for sqlitebin, a Python callable for InMemoryVectorStore, which is how each takes
filters). InMemoryVectorStore computes exact cosine similarities, so it is also the oracle: recall@10 is the
share of its top 10 that sqlitebin returns. Ratios are to InMemoryVectorStore; absolute times are context.

Run `python benchmarks/bench_langchain.py` (20,000 documents, 200 queries) or `--quick` (2,000 and 20).
It needs langchain-core (`pip install 'sqlitebin[langchain]'`).
"""

import argparse
import os
import time

import numpy as np

from sqlitebin.bench import describe_machine, describe_machine_line


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="documents (default 20,000)")
    parser.add_argument("--queries", type=int, default=200, help="queries (default 200)")
    parser.add_argument("--dim", type=int, default=256, help="dimensions (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 documents and 20 queries")
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries = 2000, 20

    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    from sqlitebin.langchain import SqlitebinVectorStore

    rng = np.random.default_rng(args.seed)
    centers = rng.normal(size=(max(2, args.n // 100), args.dim))
    documents = centers[rng.integers(0, len(centers), args.n)] + 0.6 * rng.normal(size=(args.n, args.dim))
    queries = centers[rng.integers(0, len(centers), args.queries)] + 0.6 * rng.normal(size=(args.queries, args.dim))
    lookup = {f"d{i}": row.tolist() for i, row in enumerate(documents)}
    lookup.update({f"q{i}": row.tolist() for i, row in enumerate(queries)})

    class LookupEmbeddings(Embeddings):
        def embed_documents(self, texts):
            return [lookup[text] for text in texts]

        def embed_query(self, text):
            return lookup[text]

    texts = [f"d{i}" for i in range(args.n)]
    metadatas = [{"group": i % 10} for i in range(args.n)]
    stores = [
        ("InMemoryVectorStore", InMemoryVectorStore(LookupEmbeddings()), lambda document: document.metadata["group"] == 3),
        ("sqlitebin float32", SqlitebinVectorStore(LookupEmbeddings()), {"group": 3}),
        ("sqlitebin int8", SqlitebinVectorStore(LookupEmbeddings(), rescore="int8"), {"group": 3}),
    ]
    print(describe_machine_line(describe_machine()))
    print(f"{args.n:,} documents x {args.dim} dimensions, {args.queries} queries, k = 10, "
          f"{os.cpu_count()} CPUs visible, one thread per store")
    print(f"{'store':22s} {'add docs/s':>11s} {'search ms':>10s} {'filtered ms':>12s} {'recall@10':>10s} "
          f"{'filtered':>9s}  {'search x':>9s} {'filtered x':>10s}")
    results = {}
    for name, store, filter in stores:
        start = time.perf_counter()
        store.add_texts(texts, metadatas, ids=texts)
        add = time.perf_counter() - start
        start = time.perf_counter()
        plain = [[d.id for d in store.similarity_search(f"q{i}", k=10)] for i in range(args.queries)]
        search = (time.perf_counter() - start) / args.queries
        start = time.perf_counter()
        filtered = [[d.id for d in store.similarity_search(f"q{i}", k=10, filter=filter)] for i in range(args.queries)]
        filtered_search = (time.perf_counter() - start) / args.queries
        results[name] = (plain, filtered, search, filtered_search)
        exact_plain, exact_filtered, base_search, base_filtered = results["InMemoryVectorStore"]
        recall = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(plain, exact_plain)])
        recall_filtered = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(filtered, exact_filtered)])
        print(f"{name:22s} {args.n / add:11,.0f} {search * 1000:10.2f} {filtered_search * 1000:12.2f} "
              f"{recall:10.3f} {recall_filtered:9.3f}  {base_search / search:8.1f}x {base_filtered / filtered_search:9.1f}x")
        if hasattr(store, "close"):
            store.close()


if __name__ == "__main__":
    main()
