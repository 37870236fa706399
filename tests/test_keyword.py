"""Keyword search that scores only documents holding a rare query term: against a BM25 oracle in Python,
bounded query terms, interruption, and the printed SQL in the sqlite3 shell."""

import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import apsw
import numpy as np
import pytest

import sqlitebin
from sqlitebin import keyword
from sqlitebin.datasets import load_corpus, load_queries, sample_corpus_path, sample_queries_path

# A `where` condition that takes hours (in constant memory): only an interrupt ends a search using it.
ENDLESS = ("(WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000000000) "
           "SELECT max(x) FROM n) > 0")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The bundled 3,000 Debian descriptions, with the frequent-term table computed (the threshold lowered)."""
    path = tmp_path_factory.mktemp("keyword") / "sample.db"
    documents = load_corpus(sample_corpus_path())
    queries = load_queries(sample_queries_path())
    saved = keyword.PRUNING_MIN_DOCUMENTS
    keyword.PRUNING_MIN_DOCUMENTS = 1000
    db = sqlitebin.connect(path)
    col = db.create_collection("s", dim=8, embedder=word_vectors)
    col.add([d["text"] for d in documents], ids=list(range(1, len(documents) + 1)))
    yield col, queries
    db.close()
    keyword.PRUNING_MIN_DOCUMENTS = saved


def word_vectors(texts):
    """A cheap deterministic embedder (the vectors do not matter to keyword search)."""
    return np.array([[len(t) % 7 + 1, t.count("e") + 1, t.count("a") + 1, t.count(" ") + 1, 1, 2, 3, 4]
                     for t in texts], dtype=np.float32)


word_vectors.name = "tests.letter-counts"


class Oracle:
    """FTS5's BM25 (k1 = 1.2, b = 0.75, IDF clamped to 1e-6), recomputed in Python from every token of the index."""

    def __init__(self, conn, name):
        conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.oracle_{name} USING fts5vocab(main, {name}_fts, 'instance')")
        self.tf = defaultdict(Counter)  # term -> document -> count
        self.length = Counter()
        for term, document in conn.execute(f"SELECT term, doc FROM temp.oracle_{name}"):
            self.tf[term][document] += 1
            self.length[document] += 1
        self.count = conn.execute(f"SELECT count(*) FROM {name}_documents").fetchall()[0][0]
        self.average = sum(self.length.values()) / self.count

    def documents(self, term):
        return len(self.tf.get(term, ()))

    def idf(self, term):
        n = self.documents(term)
        value = math.log((self.count - n + 0.5) / (n + 0.5))
        return value if value > 0 else 1e-6

    def score(self, document, terms, weights=None):
        total = 0.0
        for term in terms:
            tf = self.tf.get(term, {}).get(document, 0)
            if tf:
                norm = 1.2 * (1 - 0.75 + 0.75 * self.length[document] / self.average)
                total += (weights or {}).get(term, 1) * self.idf(term) * tf * 2.2 / (tf + norm)
        return total

    def top(self, terms, k, candidates=None, weights=None):
        if candidates is None:
            candidates = set().union(*(self.tf.get(t, {}).keys() for t in terms))
        scored = sorted(((-self.score(d, terms, weights), d) for d in candidates))
        return [(d, -s) for s, d in scored[:k]]

    def pruned_top(self, terms, k, weights=None):
        """The documented rule: rare terms (in at most 2% of documents), or else the least frequent one, are
        essential; the frequent ones stay non-essential, most frequent first, while their weight x IDF adds up to
        at most half of the whole query's (rare terms counted at the IDF of 2%); the others become essential. The
        documents holding an essential term are scored by every term in under half the documents."""
        weights = weights or {}
        share = keyword.ESSENTIAL_SHARE * self.count

        def idf(n):
            value = math.log((self.count - n + 0.5) / (n + 0.5))
            return value if value > 0 else 1e-6

        rare = [t for t in terms if self.documents(t) <= share]
        by_rarity = sorted(terms, key=lambda t: (self.documents(t) if self.documents(t) > share else -1,
                                                 terms.index(t)))
        bound = {t: weights.get(t, 1) * idf(self.documents(t) if t not in rare else share) for t in terms}
        essential, running = set(rare) | {by_rarity[0]}, 0.0
        for term in reversed(by_rarity):  # the most frequent first
            if term in rare:
                continue
            running += bound[term]
            if running > keyword.NON_ESSENTIAL_SHARE * sum(bound.values()):
                essential.add(term)
        kept = [t for t in terms if t in essential or 2 * self.documents(t) < self.count]
        candidates = set().union(*(self.tf.get(t, {}).keys() for t in essential))
        top = self.top(kept, k, candidates, weights)
        if len(candidates) < k:  # then the best of the other documents, by all the other terms
            others = [t for t in terms if t not in essential]
            more = set().union(*(self.tf.get(t, {}).keys() for t in others)) - candidates
            top = sorted(top + self.top(others, k, more, weights), key=lambda item: (-item[1], item[0]))[:k]
        return top


def tokens(col, text):
    return [token for token, _, _ in col.query_terms(text)]


def weights(col, text):
    return {token: count for token, _, count in col.query_terms(text)}


def test_pruned_keyword_search_is_exact_bm25_over_the_kept_terms(sample):
    col, queries = sample
    oracle = Oracle(col.conn, "s")
    frequent = col.conn.execute("SELECT count(*) FROM s_keyword_terms WHERE kind = 'frequent'").fetchall()[0][0]
    assert frequent > 50  # the sample has enough frequent words for the split to matter
    overlap, same_first = [], 0
    for query in queries[:150]:
        terms = tokens(col, query["text"])
        hits = col.search(query["text"], 10, mode="keyword")
        expected = oracle.pruned_top(terms, 10, weights(col, query["text"]))
        assert [h.id for h in hits] == [d for d, _ in expected], query["text"]
        assert [h.score for h in hits] == pytest.approx([s for _, s in expected], rel=1e-6, abs=1e-9)
        plain = [d for d, _ in oracle.top(terms, 10, weights=weights(col, query["text"]))]
        overlap.append(len(set(plain) & {h.id for h in hits}) / max(1, len(plain)))
        same_first += bool(hits) and plain[0] == hits[0].id
    # What is approximated (documents with no rare term) changes little of a top 10.
    print(f"top 10 overlap with plain BM25 {np.mean(overlap):.3f}, same first hit {same_first / 150:.3f}")
    assert np.mean(overlap) >= 0.85 and same_first >= 0.95 * 150


def test_fewer_than_k_documents_with_an_essential_term_are_filled_in(sample):
    col, _ = sample
    oracle = Oracle(col.conn, "s")
    for text in ["zzxqv library library", "zzxqv qqwvb library audio files"]:
        terms = tokens(col, text)
        assert oracle.documents(terms[0]) == 0 and oracle.documents("librari") > 0.02 * oracle.count
        hits = col.search(text, 10, mode="keyword")
        expected = oracle.pruned_top(terms, 10, weights(col, text))
        assert len(hits) == 10
        assert [(h.id, pytest.approx(h.score, rel=1e-9)) for h in hits] == expected


def test_hybrid_uses_the_same_keyword_top(sample):
    col, queries = sample
    for query in queries[:20]:
        keyword_ids = [h.id for h in col.search(query["text"], 50, mode="keyword")]
        hybrid = col.search(query["text"], 50, mode="hybrid", vector_weight=0.0)
        assert [h.id for h in hybrid][: len(keyword_ids)] == keyword_ids


def test_small_collections_get_plain_bm25():
    with sqlitebin.connect(":memory:") as db:
        col = db.create_collection("t", dim=8, embedder=word_vectors)
        col.add(["apple banana", "apple cherry", "apple", "banana split"])
        assert db.conn.execute("SELECT count(*) FROM t_keyword_terms").fetchall() == [(0,)]
        # 'apple' is in 3 of 4 documents, yet still found and ranked as FTS5 ranks it.
        expected = db.conn.execute(
            "SELECT rowid, -bm25(t_fts) FROM t_fts WHERE t_fts MATCH 'apple OR banana' ORDER BY bm25(t_fts), rowid"
        ).fetchall()
        hits = col.search("apple banana", 10, mode="keyword")
        assert [(h.id, h.score) for h in hits] == [(i, pytest.approx(s)) for i, s in expected]


def test_term_table_follows_the_collection(tmp_path, monkeypatch):
    monkeypatch.setattr(keyword, "PRUNING_MIN_DOCUMENTS", 100)
    with sqlitebin.connect(tmp_path / "t.db") as db:
        col = db.create_collection("t", dim=8, embedder=word_vectors)
        col.add([f"common word{i % 40} filler" for i in range(200)])
        rows = dict(db.conn.execute("SELECT term, kind FROM t_keyword_terms").fetchall())
        assert rows[""] == "documents" and rows["common"] == "common" and rows["filler"] == "common"
        assert rows["word1"] == "frequent"  # 5 of 200 documents, above 2%
        assert db.conn.execute("SELECT documents FROM t_keyword_terms WHERE term = ''").fetchall() == [(200,)]
        col.add([f"extra{i}" for i in range(10)])  # 5% more: not refreshed yet
        assert db.conn.execute("SELECT documents FROM t_keyword_terms WHERE term = ''").fetchall() == [(200,)]
        col.add([f"extra{i}" for i in range(40)])
        assert db.conn.execute("SELECT documents FROM t_keyword_terms WHERE term = ''").fetchall() == [(250,)]
        # A refresh also merges the text index into one segment.
        assert db.conn.execute("SELECT count(DISTINCT segid) FROM t_fts_idx").fetchall() == [(1,)]
        db.conn.execute("INSERT INTO t_fts (t_fts) VALUES ('integrity-check')")
        col.update_keyword_terms()
        db.drop_collection("t")
        assert db.conn.execute("SELECT count(*) FROM sqlite_schema WHERE name LIKE 't_%'").fetchall() == [(0,)]


def test_repeated_words_weigh_their_term(sample):
    col, _ = sample
    oracle = Oracle(col.conn, "s")
    text = "audio audio AUDIO editor audio editors"
    assert col.query_terms(text) == [["audio", '"audio"', 4], ["editor", '"editor"', 2]]
    hits = col.search(text, 10, mode="keyword")
    expected = oracle.pruned_top(["audio", "editor"], 10, {"audio": 4, "editor": 2})
    assert [(h.id, pytest.approx(h.score, rel=1e-9)) for h in hits] == expected
    # As FTS5's bm25() scores the query with each word its own phrase.
    with sqlitebin.connect(":memory:") as db:
        small = db.create_collection("t", dim=8, embedder=word_vectors)
        small.add(["apple banana", "apple cherry", "apple apple", "banana split", "cherry"])
        plain = db.conn.execute("SELECT rowid, -bm25(t_fts) FROM t_fts WHERE t_fts MATCH "
                                "'apple OR banana OR apple OR apples' ORDER BY bm25(t_fts), rowid").fetchall()
        assert [(h.id, h.score) for h in small.search("apple banana apple apples", 10, mode="keyword")] == [
            (i, pytest.approx(s, rel=1e-12)) for i, s in plain]


def test_query_terms_are_capped(sample):
    col, _ = sample
    words = [f"word{i}" for i in range(200)]
    terms = col.query_terms(" ".join(words))
    assert [t for t, _, _ in terms] == words[: keyword.MAX_QUERY_TERMS]
    assert col.query_terms(" ".join(words + words[-3:])) == terms  # a term past the cap is not counted either
    assert col.query_terms(" ".join(words + words[:3]))[:4] == [["word0", '"word0"', 2], ["word1", '"word1"', 2],
                                                              ["word2", '"word2"', 2], ["word3", '"word3"', 1]]
    assert col.query_terms(" ".join(words[:2] + words[:2])) == [["word0", '"word0"', 2], ["word1", '"word1"', 2]]
    assert col.query_terms("the " * 1000) == [["the", '"the"', 1000]]
    # Only the first MAX_QUERY_CHARACTERS characters are read.
    long_query = "x" * keyword.MAX_QUERY_CHARACTERS + " audio"
    assert col.query_terms(long_query) == [["x" * keyword.MAX_QUERY_CHARACTERS, '"' + "x" * 4096 + '"', 1]]


LICENSE = "/usr/share/common-licenses/GPL-3"


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_huge_and_repetitive_queries_finish(sample, mode):
    # The queries of the report: "the " x 1000 (72 s before), the first 4 KB of the GPL (4.9 s), 16 KB and
    # 1 MB of text (minutes). Each now reads at most MAX_QUERY_CHARACTERS and MAX_QUERY_TERMS distinct terms.
    col, _ = sample
    assert col.search("the " * 1000, 5, mode=mode)
    prose = open(LICENSE).read() if os.path.exists(LICENSE) else " ".join(f"clause{i} of the license" for i in
                                                                           range(3000))
    assert len(col.query_terms(prose[:4096])) == keyword.MAX_QUERY_TERMS
    assert col.search(prose[:4096], 5, mode=mode)
    for size in (16_384, 1_000_000):
        long_query = (prose * (1 + size // len(prose)))[:size]
        hits = col.search(long_query, 5, mode=mode)
        first = col.search(long_query[: keyword.MAX_QUERY_CHARACTERS], 5, mode=mode)
        assert [h.id for h in hits] == [h.id for h in first]


@pytest.mark.parametrize("name", ['we"ird name', "semi;colon", "it's", "SELECT"])
def test_term_table_with_any_collection_name(tmp_path, monkeypatch, name):
    monkeypatch.setattr(keyword, "PRUNING_MIN_DOCUMENTS", 10)
    with sqlitebin.connect(tmp_path / "n.db") as db:
        col = db.create_collection(name, dim=8, embedder=word_vectors)
        col.add([f"common word{i % 3} thing{i}" for i in range(50)])
        assert db.conn.execute(f"SELECT count(*) FROM {col.tables.keyword_terms}").fetchall() == [(5,)]
        assert [h.id for h in col.search("word1 thing4 common", 3, mode="keyword")] == [5, 2, 8]


def test_query_words_are_quoted_for_fts5(sample):
    col, _ = sample
    assert col.query_terms('say "hi" AND bye*') == [["sai", '"say"', 1], ["hi", '"hi"', 1], ["and", '"AND"', 1],
                                                     ["bye", '"bye"', 1]]
    assert col.query_terms("...") == []
    assert col.query_terms("naïve") == [["naiv", '"naïve"', 1]]


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_interrupt_from_another_thread(sample, mode):
    col, queries = sample
    outcome = []

    def run():
        try:
            col.search(queries[0]["text"], 5, mode=mode, where=ENDLESS)
            outcome.append("finished")
        except apsw.InterruptError:
            outcome.append("interrupted")

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.3)
    col.conn.interrupt()
    worker.join(timeout=30)
    assert not worker.is_alive() and outcome == ["interrupted"]
    assert col.search(queries[0]["text"], 5, mode=mode)  # the connection still works


def test_ctrl_c_stops_a_command_line_search(sample):
    col, queries = sample
    path = col.database.path
    process = subprocess.Popen(
        [sys.executable, "-m", "sqlitebin", "search", str(path), queries[0]["text"], "--collection", "s",
         "--mode", "keyword", "--where", ENDLESS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    time.sleep(3)  # started, and searching
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Interrupted" in stderr


def test_search_sql_runs_in_the_sqlite3_shell(sample):
    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 command line is not installed")
    col, queries = sample
    text = queries[3]["text"]
    for mode in ("keyword", "hybrid"):
        expected = [(h.id, h.score) for h in col.search(text, 5, mode=mode)]
        vector = col.query_vector(text) if mode == "hybrid" else np.zeros(col.dim, dtype=np.float32)
        values = col.search_params(vector, mode=mode, k=5, query_text=text)
        inserts = []
        for name, value in values.items():
            if isinstance(value, bytes):
                literal = f"x'{value.hex()}'"
            elif isinstance(value, str):
                literal = "'" + value.replace("'", "''") + "'"
            elif value is None:
                literal = "NULL"
            else:
                literal = repr(value)
            inserts.append(f"INSERT INTO temp.sqlite_parameters VALUES (':{name}', {literal});")
        script = "\n".join([f".load {sqlitebin.loadable_path()}", ".parameter init", *inserts,
                            ".mode list", col.search_sql(mode=mode, k=5) + ";"])
        result = subprocess.run([shell, str(col.database.path)], input=script, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        rows = [line.split("|") for line in result.stdout.splitlines() if line and line.split("|")[0].isdigit()]
        assert [(int(r[0]), pytest.approx(float(r[1]), rel=1e-6)) for r in rows] == expected


def test_a_query_of_common_words_scores_a_bounded_number_of_documents(tmp_path, monkeypatch):
    monkeypatch.setattr(keyword, "PRUNING_MIN_DOCUMENTS", 100)
    monkeypatch.setattr(keyword, "COMMON_ONLY_DOCUMENTS", 50)
    with sqlitebin.connect(tmp_path / "c.db") as db:
        col = db.create_collection("c", dim=8, embedder=word_vectors)
        col.add([("the " * (1 + i % 5)) + f"item{i}" for i in range(300)] + ["the xylophone"])
        hits = col.search("the the THE", 10, mode="keyword")  # one term of weight 3
        expected = db.conn.execute(
            "SELECT id, -3 * bm25 FROM (SELECT rowid AS id, bm25(c_fts) AS bm25 FROM c_fts WHERE c_fts MATCH 'the' "
            "LIMIT 50) ORDER BY bm25, id LIMIT 10").fetchall()
        assert [(h.id, pytest.approx(h.score)) for h in hits] == [(i, pytest.approx(s)) for i, s in expected]
        # With a rarer word, that word chooses: the common one only adds to its score.
        assert [h.id for h in col.search("the xylophone", 10, mode="keyword")][0] == 301
