"""The `sqlitebin_bm25` FTS5 auxiliary function and `sqlitebin_bm25_idf()` (ext/bm25.h): against FTS5's own bm25()
bit for bit, against BM25 computed in Python from the raw texts, the bound that skips documents, and bad input."""

import math
import random
from collections import Counter

import apsw
import pytest

import sqlitebin

WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "honey", "iris", "juniper", "kiwi", "lemon"]


def texts(count, seed):
    """Plain lowercase words (so unicode61 splits them as str.split() does), skewed so that some are frequent."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, weights=[1 + 30 / (i + 1) for i in range(len(WORDS))], k=rng.randint(1, 30)))
            for _ in range(count)]


def oracle(documents, phrases, counts=None, weights=None, columns=None):
    """FTS5's BM25 (k1 = 1.2, b = 0.75, IDF log((N - n + 0.5) / (n + 0.5)) clamped to 1e-6) from the raw texts:
    {rowid: -score} for every document holding a phrase. `documents` maps rowid to a list of column texts."""
    tokens = {rowid: [column.split() for column in columns_] for rowid, columns_ in documents.items()}
    length = {rowid: sum(len(c) for c in cols) for rowid, cols in tokens.items()}
    average = sum(length.values()) / len(documents)
    frequency = {rowid: Counter(word for column in cols for word in column) for rowid, cols in tokens.items()}
    scores = {}
    for i, phrase in enumerate(phrases):
        n = sum(1 for f in frequency.values() if f[phrase]) if counts is None or counts[i] is None else counts[i]
        if counts is not None and counts[i] == "-":
            continue
        idf = math.log((len(documents) - n + 0.5) / (n + 0.5))
        idf = idf if idf > 0 else 1e-6
        weight = 1 if weights is None else weights[i]
        for rowid, f in frequency.items():
            tf = f[phrase]
            if tf:
                norm = 1.2 * (1 - 0.75 + 0.75 * length[rowid] / average)
                scores[rowid] = scores.get(rowid, 0.0) + weight * idf * tf * 2.2 / (tf + norm)
    return {rowid: -score for rowid, score in scores.items()}


@pytest.fixture
def table():
    conn = apsw.Connection(":memory:")
    sqlitebin.load(conn)
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(a, b, tokenize = 'unicode61')")
    rows = {i + 1: (a, b) for i, (a, b) in enumerate(zip(texts(400, 1), texts(400, 2)))}
    conn.executemany("INSERT INTO t(rowid, a, b) VALUES (?, ?, ?)", [(r, a, b) for r, (a, b) in rows.items()])
    return conn, rows


def run(conn, match, *arguments):
    placeholders = ", ".join("?" for _ in arguments)
    return conn.execute(f"SELECT rowid, sqlitebin_bm25(t, {placeholders}) FROM t WHERE t MATCH ?",
                        (*arguments, match)).fetchall()


@pytest.mark.parametrize("match", ["apple", "kiwi OR lemon", "banana OR iris OR juniper OR apple",
                                   "(cherry AND fig) OR honey", '"apple banana" OR date', "lemon NOT apple"])
def test_the_same_as_fts5_bm25_to_the_last_bit(table, match):
    conn, _ = table
    expected = conn.execute("SELECT rowid, bm25(t) FROM t WHERE t MATCH ?", (match,)).fetchall()
    assert expected
    assert run(conn, match, 0, None, None) == expected
    phrases = len(match.replace(" OR ", " ").replace(" AND ", " ").replace(" NOT ", " ").split()) - match.count('"') // 2
    assert run(conn, match, 0, " ".join("?" * phrases), 0) == expected


def test_against_bm25_from_the_raw_texts(table):
    conn, rows = table
    phrases = ["banana", "iris", "apple", "kiwi"]
    got = dict(run(conn, " OR ".join(phrases), 0, None, None))
    expected = oracle(rows, phrases)
    assert got.keys() == expected.keys()
    for rowid, score in expected.items():
        assert got[rowid] == pytest.approx(score, rel=1e-12)


def test_given_counts_weights_and_phrases_left_out(table):
    conn, rows = table
    phrases = ["banana", "iris", "apple", "kiwi"]
    got = dict(run(conn, " OR ".join(phrases), 0, "? 37 - 120*2.5", None))
    expected = oracle(rows, phrases, counts=[None, 37, "-", 120], weights=[1, 1, 1, 2.5])
    assert got.keys() == set(oracle(rows, phrases))  # the rows are the MATCH's, scored or not
    for rowid in got:
        assert got[rowid] == pytest.approx(expected.get(rowid, 0.0), rel=1e-12, abs=1e-15)
    # A count taken when the table held 200 rows is scaled to the 400 it holds now.
    scaled = dict(run(conn, "iris", 0, "20", 200))
    assert scaled == pytest.approx(oracle(rows, ["iris"], counts=[40]), rel=1e-12)


@pytest.mark.parametrize("k", [1, 5, 50, 1000])
def test_the_bound_never_drops_a_document_of_the_top_k(table, k):
    conn, _ = table
    for match in ["apple OR kiwi OR lemon", "banana OR cherry", "juniper", "iris OR (apple AND lemon)"]:
        everything = sorted((score, rowid) for rowid, score in run(conn, match, 0, None, None))
        bounded = run(conn, match, k, None, None)
        assert [r for r, _ in bounded] == sorted(r for _, r in everything)  # every row, in rowid order
        kept = sorted((score, rowid) for rowid, score in bounded if score is not None)
        assert kept[:k] == everything[:k]
        for rowid, score in bounded:  # the others are NULL, never a wrong score
            assert score is None or (score, rowid) in everything
    skipped = sum(score is None for _, score in run(conn, "apple OR kiwi OR lemon", 5, None, None))
    assert skipped > 50  # the bound does skip documents here


def test_the_shape_keyword_search_uses(table):
    """`E OR (E AND F)`: the rows holding E, with F's instances for those holding both; the repeat not scored."""
    conn, rows = table
    got = dict(run(conn, "kiwi OR (kiwi AND (apple OR banana))", 0, "? - ? ?", None))
    expected = oracle({r: v for r, v in rows.items() if "kiwi" in " ".join(v).split()}, [])
    full = oracle(rows, ["kiwi", "apple", "banana"])
    assert got.keys() == {r for r, v in rows.items() if "kiwi" in " ".join(v).split()} and not expected
    for rowid, score in got.items():
        assert score == pytest.approx(full[rowid], rel=1e-12)


def test_called_twice_for_one_row_answers_the_same(table):
    conn, _ = table
    rows = conn.execute("SELECT rowid, sqlitebin_bm25(t, 3, NULL, NULL) AS s, sqlitebin_bm25(t, 3, NULL, NULL) "
                        "FROM t WHERE t MATCH 'apple OR kiwi' ORDER BY s IS NULL, s").fetchall()
    assert all(a == b for _, a, b in rows)
    assert sum(a is not None for _, a, _ in rows) >= 3


@pytest.mark.parametrize("arguments, message", [
    ((-1, None, None), r"sqlitebin_bm25\(\): k must be an integer from 0 to 1000000, got -1"),
    (("ten", None, None), r"sqlitebin_bm25\(\): k must be an integer from 0 to 1000000, got ten"),
    ((0, "? ?", None), r"sqlitebin_bm25\(\): counts names 2 phrases but the query has 3: '\? \?'"),
    ((0, "? ? ? ?", None), r"sqlitebin_bm25\(\): counts names more than the 3 phrases of the query: '\? \? \? \?'"),
    ((0, "? x ?", None), r"sqlitebin_bm25\(\): each word of counts must be \?, - or a document count of 0 or more, "
                         r"optionally followed by \*weight, got 'x'"),
    ((0, "? -3 ?", None), r"got '-3'"),
    ((0, "? 3*0 ?", None), r"sqlitebin_bm25\(\): a weight in counts must be a number above 0, got '3\*0'"),
    ((0, "? 3* ?", None), r"a weight in counts must be a number above 0, got '3\*'"),
    ((0, 5, None), r"sqlitebin_bm25\(\): counts must be text or NULL, got 5"),
    ((0, None, -2), r"sqlitebin_bm25\(\): counted_in must be a document count of 0 or more, or NULL, got -2"),
    ((0, None, "many"), r"counted_in must be a document count of 0 or more, or NULL, got many"),
])
def test_bad_arguments_fail_with_one_sentence(table, arguments, message):
    conn, _ = table
    with pytest.raises(apsw.SQLError, match=message):
        run(conn, "apple OR kiwi OR lemon", *arguments)
    with pytest.raises(apsw.SQLError, match=r"sqlitebin_bm25\(\): takes the table and 3 arguments"):
        conn.execute("SELECT sqlitebin_bm25(t, 1) FROM t WHERE t MATCH 'apple'").fetchall()


def test_idf_function(table):
    conn, _ = table
    value, = conn.execute("SELECT sqlitebin_bm25_idf(10, 1000)").fetchall()[0]
    assert value == math.log(990.5 / 10.5)
    assert conn.execute("SELECT sqlitebin_bm25_idf(600, 1000), sqlitebin_bm25_idf(NULL, 5), "
                        "sqlitebin_bm25_idf(1, NULL)").fetchall() == [(1e-6, None, None)]
    for arguments, message in [(("x", 3), "the document count must be a number, got x"),
                               ((1, "y"), "the total must be a number, got y"),
                               ((5, 3), "the document count must be from 0 to the total, got 5.0 of 3.0"),
                               ((-1, 3), "the document count must be from 0 to the total, got -1.0 of 3.0")]:
        with pytest.raises(apsw.SQLError, match=r"sqlitebin_bm25_idf\(\): " + message):
            conn.execute("SELECT sqlitebin_bm25_idf(?, ?)", arguments).fetchall()
