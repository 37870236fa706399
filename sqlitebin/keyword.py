"""Keyword search: an FTS5 BM25 top-k that does not score every document sharing a word with the query.

With every query word joined by OR, a typical query on the 59,302 Debian descriptions matches 44,000 documents, and
FTS5's `bm25()` scores them all (about half a microsecond each), after walking each term's whole posting list to
count its documents (the IDF): 20-30 ms a query. This module keeps BM25's ranking while scoring a few hundred
documents, in one SQL statement that runs in the `sqlite3` shell:

- The query's words are tokenized with the collection's own FTS5 tokenizer (in Python, through apsw): each
  distinct term once, with the number of times it occurs (its weight: a repeated word counts as often as it is
  repeated, as in `bm25()` over every word of the query), the first `MAX_QUERY_TERMS` terms of the first
  `MAX_QUERY_CHARACTERS` characters.
- A small table `N_keyword_terms(term, documents, kind)` lists the terms found in more than `ESSENTIAL_SHARE` (2%) of
  the documents: `kind` 'frequent', or 'common' for those in half the documents or more, whose FTS5 IDF is zero
  (FTS5 clamps it to 1e-6): they cannot change a ranking and are left out of the query (unless the query has
  nothing else). The row with the empty term holds the document count the table was computed from.
- Only documents holding an *essential* term are scored. Rare terms (absent from that table) are essential, and
  so is the least frequent term when none is rare. The frequent terms stay non-essential, most frequent first,
  while their largest possible share of the score (weight x IDF each) adds up to at most `NON_ESSENTIAL_SHARE`
  (half) of the query's largest possible score (all terms, rare ones counted at the IDF of a term in 2% of the
  documents); the others become essential too. So a document holding no essential term could reach at most
  half of the best possible score.
- Each document found is scored by `sqlitebin_bm25()` (ext/bm25.h): FTS5's own BM25 (k1 = 1.2, b = 0.75, its IDF)
  over every kept term, compiled, with the frequent terms' IDF from their counts in the term table instead of
  a walk of their posting lists, and without reading the length of a document that cannot enter the top k. The
  frequent terms are found through `essential OR (essential AND (frequent))`: FTS5 seeks their lists to the
  documents at hand only. So every returned score is the exact BM25 of the document over the kept terms. When
  fewer than k documents hold an essential term, the best of the others (scored the same way over every other
  term) fill the list, so k documents come back whenever k match. (Hybrid search takes a deeper keyword
  list, 50, but fills it only up to k: the vectors bring the rest.)
- A query made only of common terms scores the first `COMMON_ONLY_DOCUMENTS` (1,000) documents that match.
- Work per query: the essential terms' posting lists, a seek in each frequent term's list per document found, and
  BM25 for the documents found. `Connection.interrupt()` stops it between documents.

What is approximated: a document holding none of the essential terms (only frequent or common ones) is not
returned when k documents hold an essential term, even if plain BM25 would rank it in the top k; common terms add
nothing (their FTS5 IDF is 1e-6 anyway); the frequent terms' IDF comes from the term table, whose counts are
scaled by the collection's size now over its size when they were counted. The table is refreshed by `Collection`
writes when the document count has changed by more than `REFRESH_CHANGE` (20%) since it was computed (or by
`Collection.update_keyword_terms()`), which also merges the FTS5 index into one segment (FTS5 looks each query
term up in every segment); between refreshes terms are classed, and frequent terms weighed, on slightly stale
counts (just after a refresh the scores are FTS5's exactly). Collections under
`PRUNING_MIN_DOCUMENTS` (5,000) documents keep no term table and get exact BM25 over every distinct query term.
On the Debian dev queries this ranks as plain BM25 does (nDCG@10 0.694 against 0.693; on queries of ten words or
more 0.7352, the same) while scoring a few hundred documents instead of tens of thousands
(benchmarks/bench_keyword.py).
"""

import json
import re

import apsw

from .schema import quote_identifier

MAX_QUERY_TERMS = 32  # distinct terms searched; the rest of the query is ignored
MAX_QUERY_CHARACTERS = 4096  # characters of a text query read for terms and embedded
ESSENTIAL_SHARE = 0.02  # terms in more than this share of the documents are 'frequent'
# The frequent terms left non-essential may together carry at most this share of the query's largest possible score.
NON_ESSENTIAL_SHARE = 0.5
PRUNING_MIN_DOCUMENTS = 5_000  # below this, exact BM25 over the distinct query terms
REFRESH_CHANGE = 0.2  # refresh the term table when the document count moved by more than this share
# A query whose every term is in half the documents or more ("the the the") has nothing BM25 can rank by
# (FTS5's IDF is 1e-6 for each): only the first this many matching documents are scored.
COMMON_ONLY_DOCUMENTS = 1000

DEFAULT_TOKENIZER = ("porter", ["unicode61"])
_TOKENIZE_OPTION = re.compile(r"""tokenize\s*=\s*(?:'((?:[^']|'')*)'|"((?:[^"]|"")*)")""", re.IGNORECASE)


def terms_table(collection_name):
    """The quoted name of a collection's keyword term table."""
    return quote_identifier(collection_name + "_keyword_terms")


def terms_table_ddl(collection_name):
    return (f"CREATE TABLE IF NOT EXISTS {terms_table(collection_name)} "
            "(term TEXT PRIMARY KEY, documents INTEGER NOT NULL, kind TEXT NOT NULL) WITHOUT ROWID")


def ensure_terms_table(conn, collection_name):
    """Create the term table of a collection made before it existed; in the temp schema when the file is read-only."""
    name = collection_name + "_keyword_terms"
    exists = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)).fetchall()
    if exists:
        return
    try:
        conn.execute(terms_table_ddl(collection_name))
    except apsw.ReadOnlyError:
        conn.execute(terms_table_ddl(collection_name).replace("IF NOT EXISTS ", "IF NOT EXISTS temp.", 1))


def tokenizer_spec(conn, fts_name):
    """The FTS5 tokenizer a collection's text index uses: (name, arguments)."""
    rows = conn.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (fts_name,)).fetchall()
    name, args = DEFAULT_TOKENIZER
    match = _TOKENIZE_OPTION.search(rows[0][0]) if rows and rows[0][0] else None
    if match:
        spec = (match.group(1) if match.group(1) is not None else match.group(2)).split()
        if spec:
            name, args = spec[0], spec[1:]
    return name, args


def tokenizer(conn, spec):
    """An apsw tokenizer callable for `spec` from tokenizer_spec(). Keep it no longer than one call: it may
    belong to the sqlitebin extension, which SQLite unloads when the connection closes."""
    return conn.fts5_tokenizer(*spec)


def query_terms(tokenize, text):
    """The distinct terms of a query, in order: [token, phrase, count] lists, at most MAX_QUERY_TERMS.

    `token` is the indexed form (after stemming), `phrase` the query's own word quoted for FTS5, so that
    punctuation, `*`, and words such as AND, OR, NEAR or NOT are searched for, never parsed. `count` is how many
    times the term occurs in the query: it weighs the term's score, as FTS5's bm25() over every word of the
    query (the repeated word a phrase each time) would.
    """
    data = text[:MAX_QUERY_CHARACTERS].encode("utf-8")
    terms = {}
    for start, end, *tokens in tokenize(data, apsw.FTS5_TOKENIZE_QUERY, None):
        token = tokens[0]
        if token in terms:
            terms[token][2] += 1
        elif len(terms) < MAX_QUERY_TERMS:
            word = data[start:end].decode("utf-8", errors="replace")
            terms[token] = [token, '"' + word.replace('"', '""') + '"', 1]
    return list(terms.values())


def terms_json(terms):
    return json.dumps(terms, ensure_ascii=False)


def keyword_ctes(fts, documents, terms, where, limit):
    """The CTEs of a keyword top-`limit` (an int, written into the SQL); the last, `keyword(id, score)`, has
    score = -bm25 (higher is better).

    Takes the query terms from the JSON parameter :sqlitebin_terms ([[token, phrase, count], ...]) and k from
    :sqlitebin_k.
    """
    limit = int(limit)
    filter_sql = f" AND {fts}.rowid IN (SELECT id FROM {documents} WHERE ({where}))" if where else ""
    # The FTS5 queries take their MATCH text from a joined one-row CTE: as a scalar subquery it costs
    # about a millisecond more per query.
    return (
        # Each term with its weight (occurrences in the query), its document count when it is frequent or common
        # (NULL when rare) and its rank by that count (1: the least frequent).
        f"keyword_terms AS (SELECT t.value ->> 1 AS phrase, coalesce(t.value ->> 2, 1) AS weight, s.documents,\n"
        f"    s.kind, row_number() OVER (ORDER BY s.documents, t.key) AS rarity, t.key AS position\n"
        f"  FROM json_each(:sqlitebin_terms) AS t LEFT JOIN {terms} AS s ON s.term = t.value ->> 0),\n"
        f"keyword_count AS (SELECT documents AS n FROM {terms} WHERE term = ''),\n"
        # The largest share of the score each term can give, over k1 + 1 (a rare term: at least that of a term in
        # ESSENTIAL_SHARE of the documents).
        f"keyword_bounds AS (SELECT t.*, t.weight * sqlitebin_bm25_idf(coalesce(t.documents, {ESSENTIAL_SHARE} * c.n), c.n)\n"
        f"    AS bound FROM keyword_terms AS t LEFT JOIN keyword_count AS c),\n"
        f"keyword_essential AS (SELECT *, documents IS NULL OR rarity = 1 OR sum(bound) OVER\n"
        f"    (ORDER BY documents DESC, position DESC ROWS UNBOUNDED PRECEDING) > {NON_ESSENTIAL_SHARE} * sum(bound) OVER ()\n"
        f"    AS essential FROM keyword_bounds),\n"
        f"keyword_kept AS (SELECT *, NOT essential AND kind = 'frequent' AS frequent FROM keyword_essential),\n"
        # One pass, so each list of phrases and its list of counts are in the same order.
        f"keyword_lists AS (SELECT\n"
        f"    coalesce(group_concat(phrase, ' OR ') FILTER (WHERE essential), '\"\"') AS essential,\n"
        f"    group_concat(coalesce(documents, '?') || iif(weight > 1, '*' || weight, ''), ' ') FILTER (WHERE essential)\n"
        f"      AS essential_counts,\n"
        f"    group_concat('-', ' ') FILTER (WHERE essential) AS repeats,\n"
        f"    group_concat(phrase, ' OR ') FILTER (WHERE frequent) AS frequent,\n"
        f"    group_concat(documents || iif(weight > 1, '*' || weight, ''), ' ') FILTER (WHERE frequent) AS frequent_counts,\n"
        f"    coalesce(group_concat(phrase, ' OR ') FILTER (WHERE NOT essential), '\"\"') AS others,\n"
        f"    group_concat(coalesce(documents, '?') || iif(weight > 1, '*' || weight, ''), ' ') FILTER (WHERE NOT essential)\n"
        f"      AS others_counts,\n"
        f"    coalesce(max(rarity = 1 AND kind = 'common'), 0) AS common_only\n"
        f"  FROM keyword_kept),\n"
        # The documents holding an essential term; the frequent terms, repeated under an AND, are looked up in
        # those documents only (FTS5 seeks their lists), and the repeated essential phrases are not scored.
        f"keyword_match AS (SELECT *, CASE WHEN frequent IS NULL THEN essential\n"
        f"    ELSE essential || ' OR ((' || essential || ') AND (' || frequent || '))' END AS expression,\n"
        f"  CASE WHEN frequent IS NULL THEN essential_counts\n"
        f"    ELSE essential_counts || ' ' || repeats || ' ' || frequent_counts END AS counts\n"
        f"  FROM keyword_lists),\n"
        # sqlitebin_bm25() (ext/bm25.h) is FTS5's bm25() over the scored phrases, with the frequent terms' IDF
        # from their counts; NULL for a document that cannot be among the best `limit` (the subquery is not
        # materialized, so those never reach a temporary table).
        f"keyword_found AS MATERIALIZED (SELECT id, bm25 FROM (SELECT {fts}.rowid AS id,\n"
        f"    sqlitebin_bm25({fts}, {limit}, m.counts, (SELECT n FROM keyword_count)) AS bm25\n"
        f"  FROM keyword_match AS m, {fts} WHERE {fts} MATCH m.expression{filter_sql}\n"
        f"  LIMIT (SELECT CASE WHEN common_only THEN {COMMON_ONLY_DOCUMENTS} ELSE -1 END FROM keyword_match))\n"
        f"  WHERE bm25 IS NOT NULL ORDER BY bm25, id LIMIT {limit}),\n"
        # Only when fewer than k documents hold an essential term: the best of the others, by all other terms
        # (k, not the hybrid keyword depth: there the vectors fill the list).
        f"keyword_more AS MATERIALIZED (SELECT {fts}.rowid AS id,\n"
        f"    sqlitebin_bm25({fts}, 0, m.others_counts, (SELECT n FROM keyword_count)) AS bm25\n"
        f"  FROM keyword_match AS m, {fts} WHERE {fts} MATCH m.others\n"
        f"    AND (SELECT count(*) FROM keyword_found) < :sqlitebin_k\n"
        f"    AND {fts}.rowid NOT IN (SELECT id FROM keyword_found){filter_sql}\n"
        f"  ORDER BY bm25, {fts}.rowid LIMIT {limit}),\n"
        f"keyword AS MATERIALIZED (SELECT id, -bm25 AS score FROM\n"
        f"  (SELECT * FROM keyword_found UNION ALL SELECT * FROM keyword_more)\n"
        f"  ORDER BY bm25, id LIMIT {limit})"
    )


def refresh_terms(conn, collection_name, force=False):
    """Recompute a collection's term table from its FTS5 index when the document count has moved by more than
    REFRESH_CHANGE since the last time (always with `force`). Returns True when it was recomputed.

    Also merges the FTS5 index into one segment ('optimize'). Runs inside the caller's transaction when there
    is one. About 0.4 s on 59,302 documents (the merge, then one pass over the index's vocabulary through a
    temporary fts5vocab table).
    """
    terms = terms_table(collection_name)
    documents = quote_identifier(collection_name + "_documents")
    fts_name = collection_name + "_fts"
    count = conn.execute(f"SELECT count(*) FROM {documents}").fetchall()[0][0]
    stored = conn.execute(f"SELECT documents FROM {terms} WHERE term = ''").fetchall()
    if not force:
        before = stored[0][0] if stored else 0
        if count < PRUNING_MIN_DOCUMENTS and before == 0:
            return False
        if before and abs(count - before) <= REFRESH_CHANGE * before:
            return False
    vocabulary = quote_identifier("sqlitebin_vocabulary_" + collection_name)
    with conn:
        conn.execute(f"DELETE FROM {terms}")
        if count >= PRUNING_MIN_DOCUMENTS:
            # One segment: FTS5 looks every query term up in each segment of its index (an SQL statement that
            # SQLite 3.54 prepares again each time), and a bulk load leaves a dozen of them (14 for the 59,302
            # Debian descriptions, where merging them takes 0.3 s and makes keyword search about 0.5 ms faster).
            # Refreshes come at most every 20% of change in size, so the merging costs a few times one merge
            # of the whole index over a collection's growth.
            fts = quote_identifier(fts_name)
            conn.execute(f"INSERT INTO {fts} ({fts}) VALUES ('optimize')")
            conn.execute(f"CREATE VIRTUAL TABLE temp.{vocabulary} USING fts5vocab(main, "
                         f"{quote_identifier(fts_name)}, 'row')")
            try:
                conn.execute(
                    f"INSERT INTO {terms} (term, documents, kind) SELECT term, doc, "
                    f"CASE WHEN 2 * doc >= :count THEN 'common' ELSE 'frequent' END "
                    f"FROM temp.{vocabulary} WHERE doc > :share * :count",
                    {"count": count, "share": ESSENTIAL_SHARE})
            finally:
                conn.execute(f"DROP TABLE temp.{vocabulary}")
            conn.execute(f"INSERT INTO {terms} (term, documents, kind) VALUES ('', ?, 'documents')", (count,))
    return True
