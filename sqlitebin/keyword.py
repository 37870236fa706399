"""Keyword search: an FTS5 BM25 top-k that does not score every document sharing a word with the query.

FTS5's `bm25()` costs about half a microsecond per matching document, plus one pass over each query term's whole
posting list to count its documents (the IDF). With every query word joined by OR, a typical query on the 59,302
Debian descriptions matches 44,000 documents and takes 20-30 ms. This module keeps the ranking while scoring far
fewer documents, in plain SQL that runs in the `sqlite3` shell:

- The query's words are tokenized with the collection's own FTS5 tokenizer (in Python, through apsw), each distinct
  term once (a repeated word counts once), the first `MAX_QUERY_TERMS` of them, read from the first
  `MAX_QUERY_CHARACTERS` characters of the query.
- A small table `N_keyword_terms(term, documents, kind)` lists the terms found in more than `ESSENTIAL_SHARE` (2%) of
  the documents: `kind` 'frequent', or 'common' for those in half the documents or more, whose FTS5 IDF is zero
  (FTS5 clamps it to 1e-6): they cannot change a ranking and are left out of the query (unless the query has
  nothing else). The row with the empty term holds the document count the table was computed from.
- Terms absent from that table are *essential*: only documents containing an essential term are scored (the least
  frequent term is essential when none is rare). Frequent terms are added to the score, least frequent first, while
  their document counts add up to at most `FREQUENT_BUDGET` times the collection's size. Each document is scored
  by FTS5's own `bm25()`: `(essential) AND (frequent)` scores the documents holding both kinds of terms with every
  kept term, and `essential` alone scores the others, whose frequent-term contribution is zero. So every returned
  score is the exact BM25 of the document over the kept terms. When fewer than k documents hold an essential term,
  the best of the others (scored by every other term) fill the list, so k documents come back whenever k match.
  (Hybrid search takes a deeper keyword list, 50, but fills it only up to k: the vectors bring the rest.)
- A query made only of common terms scores the first `COMMON_ONLY_DOCUMENTS` (1,000) documents that match.
- Work per query: the essential terms' posting lists (each in at most 2% of the documents), one pass over the
  kept frequent terms' lists (together no more postings than documents), and BM25 for the documents found; the
  fill-in, when it runs, is plain BM25 over the other terms. `Connection.interrupt()` stops it between documents.

What is approximated: a document holding none of the essential terms (only frequent or common ones) is not
returned when k documents hold an essential term, even if plain BM25 would rank it in the top k; common terms and
the frequent terms beyond the budget add nothing (the former have an FTS5 IDF of 1e-6 anyway, the latter the
smallest IDFs of the query); and the term table is refreshed by `Collection` writes when the document count has
changed by more than `REFRESH_CHANGE` (20%) since it was computed (or by `Collection.update_keyword_terms()`), so
between refreshes terms are classed on slightly stale counts (scores stay exact FTS5 BM25). Collections under
`PRUNING_MIN_DOCUMENTS` (5,000) documents keep no term table and get plain BM25 over the distinct query terms.
On the Debian dev queries this keeps nDCG@10 at plain BM25's level (0.692 against 0.693) while scoring a few
thousand documents instead of tens of thousands (benchmarks/bench_keyword.py).
"""

import json
import re

import apsw

from .schema import quote_identifier

MAX_QUERY_TERMS = 32  # distinct terms searched; the rest of the query is ignored
MAX_QUERY_CHARACTERS = 4096  # characters of a text query read for terms and embedded
ESSENTIAL_SHARE = 0.02  # terms in more than this share of the documents are 'frequent'
PRUNING_MIN_DOCUMENTS = 5_000  # below this, plain BM25 over the distinct query terms
REFRESH_CHANGE = 0.2  # refresh the term table when the document count moved by more than this share
# Frequent terms are kept, least frequent first, while their document counts add up to at most this many times
# the collection's size: FTS5 reads each kept term's whole posting list once per query (for its IDF), so this
# bounds that work; the terms left out are the most common, with the smallest IDF.
FREQUENT_BUDGET = 1.0
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
    """The distinct terms of a query, in order: [token, phrase] pairs, at most MAX_QUERY_TERMS.

    `token` is the indexed form (after stemming), `phrase` the query's own word quoted for FTS5, so that
    punctuation, `*`, and words such as AND, OR, NEAR or NOT are searched for, never parsed.
    """
    data = text[:MAX_QUERY_CHARACTERS].encode("utf-8")
    terms = {}
    for start, end, *tokens in tokenize(data, apsw.FTS5_TOKENIZE_QUERY, None):
        token = tokens[0]
        if token in terms:
            continue
        word = data[start:end].decode("utf-8", errors="replace")
        terms[token] = '"' + word.replace('"', '""') + '"'
        if len(terms) == MAX_QUERY_TERMS:
            break
    return [[token, phrase] for token, phrase in terms.items()]


def terms_json(terms):
    return json.dumps(terms, ensure_ascii=False)


def keyword_ctes(fts, documents, terms, where, limit):
    """The CTEs of a keyword top-`limit`; the last, `keyword(id, score)`, has score = -bm25 (higher is better).

    Takes the query terms from the JSON parameter :sqlitebin_terms ([[token, phrase], ...]) and k from :sqlitebin_k.
    """
    filter_sql = f" AND {fts}.rowid IN (SELECT id FROM {documents} WHERE ({where}))" if where else ""
    # The FTS5 queries take their MATCH text from a joined one-row CTE: as a scalar subquery it costs
    # about a millisecond more per query.
    return (
        # Each term with its document count when it is frequent or common (NULL when rare), the least frequent first.
        f"keyword_terms AS (SELECT t.value ->> 1 AS phrase, s.documents, s.kind,\n"
        f"    row_number() OVER (ORDER BY s.documents, t.key) AS rarity,\n"
        f"    sum(s.documents) OVER (ORDER BY s.documents, t.key ROWS UNBOUNDED PRECEDING) AS running\n"
        f"  FROM json_each(:sqlitebin_terms) AS t LEFT JOIN {terms} AS s ON s.term = t.value ->> 0),\n"
        f"keyword_match AS (SELECT\n"
        f"    coalesce(group_concat(phrase, ' OR ') FILTER (WHERE documents IS NULL OR rarity = 1), '\"\"') AS essential,\n"
        f"    group_concat(phrase, ' OR ') FILTER (WHERE documents IS NOT NULL AND rarity > 1 AND kind = 'frequent'\n"
        f"      AND running <= {FREQUENT_BUDGET} * (SELECT documents FROM {terms} WHERE term = '')) AS frequent,\n"
        f"    coalesce(group_concat(phrase, ' OR ') FILTER (WHERE documents IS NOT NULL AND rarity > 1), '\"\"')"
        f" AS others,\n"
        f"    coalesce(max(rarity = 1 AND kind = 'common'), 0) AS common_only\n"
        f"  FROM keyword_terms),\n"
        # Documents with an essential and a frequent term, scored over all kept terms ...
        f"keyword_both AS MATERIALIZED (SELECT {fts}.rowid AS id, bm25({fts}) AS bm25\n"
        f"  FROM keyword_match AS m, {fts} WHERE {fts} MATCH CASE WHEN m.frequent IS NULL THEN '\"\"'\n"
        f"    ELSE '(' || m.essential || ') AND (' || m.frequent || ')' END{filter_sql}\n"
        f"  ORDER BY bm25, {fts}.rowid LIMIT {limit}),\n"
        # ... and those with essential terms only (frequent ones would add nothing), minus the first list.
        f"keyword_rest AS MATERIALIZED (SELECT id, bm25 FROM (SELECT {fts}.rowid AS id, bm25({fts}) AS bm25\n"
        f"  FROM keyword_match AS m, {fts} WHERE {fts} MATCH m.essential\n"
        f"    AND {fts}.rowid NOT IN (SELECT id FROM keyword_both){filter_sql}\n"
        f"  LIMIT (SELECT CASE WHEN common_only THEN {COMMON_ONLY_DOCUMENTS} ELSE -1 END FROM keyword_match))\n"
        f"  ORDER BY bm25, id LIMIT {limit}),\n"
        # Only when fewer than k documents hold an essential term: the best of the others, by all other terms
        # (k, not the hybrid keyword depth: there the vectors fill the list).
        f"keyword_more AS MATERIALIZED (SELECT {fts}.rowid AS id, bm25({fts}) AS bm25\n"
        f"  FROM keyword_match AS m, {fts} WHERE {fts} MATCH m.others\n"
        f"    AND (SELECT count(*) FROM keyword_both) + (SELECT count(*) FROM keyword_rest) < :sqlitebin_k\n"
        f"    AND {fts}.rowid NOT IN (SELECT id FROM keyword_both UNION ALL SELECT id FROM keyword_rest){filter_sql}\n"
        f"  ORDER BY bm25, {fts}.rowid LIMIT {limit}),\n"
        f"keyword AS MATERIALIZED (SELECT id, -bm25 AS score FROM\n"
        f"  (SELECT * FROM keyword_both UNION ALL SELECT * FROM keyword_rest UNION ALL SELECT * FROM keyword_more)\n"
        f"  ORDER BY bm25, id LIMIT {limit})"
    )


def refresh_terms(conn, collection_name, force=False):
    """Recompute a collection's term table from its FTS5 index when the document count has moved by more than
    REFRESH_CHANGE since the last time (always with `force`). Returns True when it was recomputed.

    Runs inside the caller's transaction when there is one. About 0.1 s on 59,302 documents (one pass over the
    index's vocabulary through a temporary fts5vocab table).
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
