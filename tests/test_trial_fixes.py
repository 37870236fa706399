"""Smaller problems found by trying sqlitebin as a new user would, each reproduced here."""

import shutil

import apsw
import numpy as np
import pytest
from click.testing import CliRunner

import sqlitebin
from sqlitebin.cli import main


def test_add_after_the_largest_64_bit_id_says_so(tmp_path):
    db = sqlitebin.connect(":memory:")
    collection = db.create_collection("c", dim=8, embedder=None)
    collection.add(vectors=np.ones((1, 8)), ids=[2**63 - 1])
    with pytest.raises(ValueError, match=r"^Collection.add\(\): cannot number 1 new documents after the largest id, "
                                         r"9223372036854775807 \(ids are 64-bit integers up to 9223372036854775807\); "
                                         r"pass ids=$"):
        collection.add(vectors=np.ones((1, 8)))
    collection.add(vectors=np.ones((2, 8)), ids=[2**63 - 3, 2**63 - 2])
    assert len(collection) == 3
    db.close()


def test_add_numbers_up_to_the_largest_id_exactly():
    db = sqlitebin.connect(":memory:")
    collection = db.create_collection("c", dim=8, embedder=None)
    collection.add(vectors=np.ones((1, 8)), ids=[2**63 - 3])
    assert collection.add(vectors=np.ones((2, 8))) == [2**63 - 2, 2**63 - 1]
    with pytest.raises(ValueError, match="cannot number 1 new documents"):
        collection.add(vectors=np.ones((1, 8)))


@pytest.fixture
def text_db(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Alpha one.\n\nBeta two.\n", encoding="utf-8")
    db = tmp_path / "t.db"
    assert CliRunner().invoke(main, ["index", str(db), str(path)]).exit_code == 0
    return db


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_a_positional_parameter_in_where_is_one_clear_sentence(text_db, mode):
    with sqlitebin.connect(text_db) as db:
        with pytest.raises(ValueError, match=r"^Collection.search\(\): where must use named parameters such as :id, "
                                             r"not '\?', got 'id = \?'$"):
            db.collection("documents").search("alpha", where="id = ?", mode=mode)
        # A ? inside a string is text, not a parameter.
        assert db.collection("documents").search("alpha", where="text != '?'", mode=mode)
    result = CliRunner().invoke(main, ["search", str(text_db), "alpha", "--where", "id = ?"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --where must use named parameters such as :id, not '?', got 'id = ?'"


DAMAGE = [
    ("UPDATE sqlitebin_collections SET fts = 7",
     "the sqlitebin_collections entry of collection 'documents' is damaged: fts is 7, not 0 or 1"),
    ("UPDATE sqlitebin_collections SET dim = 'abc'",
     "the sqlitebin_collections entry of collection 'documents' is damaged: dim is 'abc', not an integer from 1 to 65536"),
    ("UPDATE sqlitebin_collections SET rescore = 'int4'",
     "the sqlitebin_collections entry of collection 'documents' is damaged: rescore is 'int4', not one of int8, "
     "float32, none"),
    ("UPDATE sqlitebin_collections SET embedder = x'05'",
     "the sqlitebin_collections entry of collection 'documents' is damaged: embedder is b'\\x05', not a name"),
    ("ALTER TABLE sqlitebin_collections DROP COLUMN fts",
     "the sqlitebin_collections table of {db} is damaged or from another version of sqlitebin (no such column: fts)"),
    ('DROP TABLE "documents_documents"',
     "collection 'documents' is damaged: sqlitebin_collections lists it but its table \"documents_documents\" is "
     "missing"),
    ('DROP TABLE "documents_index"',
     "collection 'documents' is damaged: sqlitebin_collections lists it but its table \"documents_index\" is "
     "missing"),
]


@pytest.mark.parametrize("damage, message", DAMAGE, ids=[d[0].split()[0] + " " + d[0].split()[-1] for d in DAMAGE])
def test_a_damaged_registry_is_one_clear_sentence(text_db, tmp_path, damage, message):
    damaged = tmp_path / "damaged.db"
    shutil.copy(text_db, damaged)
    conn = apsw.Connection(str(damaged))
    sqlitebin.load(conn)
    conn.execute(damage)
    conn.close()
    message = message.format(db=damaged)
    with sqlitebin.connect(damaged) as db:
        with pytest.raises(ValueError) as error:
            db.collection("documents")
        assert str(error.value) == "Database.collection(): " + message
    result = CliRunner().invoke(main, ["search", str(damaged), "alpha"])
    assert result.exit_code == 1 and result.output.strip() == "Error: " + message


def test_search_help_does_not_call_keyword_scores_cosine():
    text = " ".join(CliRunner().invoke(main, ["search", "--help"]).output.split())
    assert "cosine similarity (--mode vector)" in text and "BM25 (keyword)" in text
    assert "scores are cosine similarities" not in text


CJK_TEXTS = ["東京は日本の首都です", "我爱北京天安门", "서울은 한국의 수도입니다", "SQLite is a small database engine",
             "京都の寺"]


@pytest.mark.parametrize("query, expected", [
    ("東京", [0]), ("日本の首都", [0]), ("首都です", [0]), ("北京", [1]), ("天安门", [1]), ("서울은", [2]),
    ("京都", [4]), ("databases", [3]), ("首都 database", [0, 3]),
])
def test_keyword_search_finds_cjk_words_inside_a_sentence(query, expected):
    db = sqlitebin.connect(":memory:")
    collection = db.create_collection("cjk", dim=8, embedder=None, fts=True)
    ids = collection.add(CJK_TEXTS, vectors=np.eye(8)[: len(CJK_TEXTS)])
    hits = collection.search(query, mode="keyword", k=10)
    assert sorted(hit.id for hit in hits) == [ids[i] for i in expected]
    db.close()


def test_the_cjk_tokenizer_keeps_the_index_consistent_through_updates_and_deletes(conn):
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize = 'sqlitebin_cjk porter unicode61')")
    conn.execute("INSERT INTO t (rowid, x) VALUES (1, '東京は日本の首都です'), (2, 'Running foxes 北京')")
    assert conn.execute("SELECT rowid FROM t WHERE t MATCH '\"run\" AND \"北京\"'").fetchall() == [(2,)]
    conn.execute("UPDATE t SET x = '大阪は大きい' WHERE rowid = 1")
    assert conn.execute("SELECT rowid FROM t WHERE t MATCH '\"東京\"'").fetchall() == []
    assert conn.execute("SELECT rowid FROM t WHERE t MATCH '\"大阪\"'").fetchall() == [(1,)]
    conn.execute("DELETE FROM t WHERE rowid = 2")
    conn.execute("INSERT INTO t (t) VALUES ('integrity-check')")
    # Tokens as FTS5 stores them: Latin words as porter gives them, CJK runs as pairs, one character alone.
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'row')")
    assert [row[0] for row in conn.execute("SELECT term FROM v ORDER BY term")] == ["きい", "は大", "大き", "大阪", "阪は"]
    # No argument: porter over unicode61. An unknown wrapped tokenizer: FTS5's own error.
    conn.execute("CREATE VIRTUAL TABLE d USING fts5(x, tokenize = 'sqlitebin_cjk')")
    conn.execute("INSERT INTO d VALUES ('jumping 東京')")
    assert conn.execute("SELECT count(*) FROM d WHERE d MATCH 'jump AND 東京'").fetchall() == [(1,)]
    with pytest.raises(apsw.SQLError, match="error in tokenizer constructor"):
        conn.execute("CREATE VIRTUAL TABLE e USING fts5(x, tokenize = 'sqlitebin_cjk nosuch')")
