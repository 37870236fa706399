"""The command line on small real data: index, search, info, path, demo, and each user mistake's one-line error."""

import csv
import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

import sqlitebin
from sqlitebin import cli
from sqlitebin.cli import content_id, main, source_id
from sqlitebin.collection import Collection
from sqlitebin.datasets import load_corpus, load_queries, sample_corpus_path, sample_queries_path

SLICE = 200


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def count(db, collection="documents"):
    with sqlitebin.connect(db, create=False) as database:
        return len(database.collection(collection))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The first 200 documents of the bundled Debian sample as a .jsonl file, and the queries answered by them."""
    folder = tmp_path_factory.mktemp("sample")
    documents = load_corpus(sample_corpus_path())[:SLICE]
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in documents), encoding="utf-8")
    ids = {d["id"] for d in documents}
    queries = [q for q in load_queries(sample_queries_path()) if q["doc"] in ids]
    return path, documents, queries


@pytest.fixture(scope="module")
def indexed(sample, tmp_path_factory):
    """A database with the slice indexed once, shared by tests that only read it."""
    db = tmp_path_factory.mktemp("db") / "debian.db"
    run("index", db, sample[0])
    return db


@pytest.fixture
def notes(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "databases.txt").write_text(
        "SQLite is a small embedded database engine that runs inside the application.\n\n"
        "PostgreSQL is a client-server relational database.\n", encoding="utf-8")
    (folder / "sub" / "cooking.md").write_text(
        "# Pasta\n\nBoil the spaghetti and stir in the tomato sauce with basil.\n", encoding="utf-8")
    (folder / "ignored.log").write_text("A log file the directory scan skips.\n", encoding="utf-8")
    return folder


# ----------------------------------------------------------------------
# index and search


def test_index_then_search_finds_the_expected_document(sample, indexed):
    _, _, queries = sample
    query = next(q for q in queries if q["doc"] == "d00040")  # "ASCII art stereogram generator"
    result = run("search", indexed, query["text"], "-k", 3)
    lines = result.output.splitlines()
    assert lines[0].split() == ["rank", "score", "id", "text"]
    assert lines[1].split()[:3][::2] == ["1", "d00040"]
    assert len(lines) == 4


def test_search_json_lines_parse(sample, indexed):
    _, documents, queries = sample
    texts = {d["id"]: d["text"] for d in documents}
    query = next(q for q in queries if q["doc"] == "d00040")
    result = run("search", indexed, query["text"], "--json", "-k", 5)
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [hit["rank"] for hit in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["metadata"]["source_id"] == "d00040"
    assert hits[0]["id"] == source_id("d00040")
    assert hits[0]["text"] == texts["d00040"]
    assert hits[0]["metadata"]["title"] == "aa3d"
    assert hits[0]["score"] >= hits[1]["score"] and isinstance(hits[0]["distance"], int)


def test_search_options_mirror_the_api(sample, indexed):
    _, _, queries = sample
    query = next(q for q in queries if q["doc"] == "d00040")["text"]
    for options in (["--rescore", "bits"], ["--candidates", "hamming"], ["--oversample", 1]):
        hits = [json.loads(line) for line in run("search", indexed, query, "--json", "-k", 1, *options).stdout.splitlines()]
        assert hits[0]["metadata"]["source_id"] == "d00040", options


def test_search_where_filters_before_top_k(sample, indexed):
    _, documents, _ = sample
    wanted = documents[7]
    result = run("search", indexed, "anything at all", "--json", "--where",
                 "json_extract(metadata, '$.source_id') = :id", "-p", "id", wanted["id"])
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [hit["metadata"]["source_id"] for hit in hits] == [wanted["id"]]


def test_search_sql_prints_the_sql_search_runs(indexed):
    with sqlitebin.connect(indexed, create=False) as database:
        expected = database.collection("documents").search_sql(k=5, candidates="hamming", where="id > 0")
    result = run("search", indexed, "some query", "--sql", "-k", 5, "--candidates", "hamming", "--where", "id > 0")
    assert result.output.strip() == expected.strip()
    assert "vector MATCH :sqlitebin_vector" in result.output


def test_reindexing_adds_nothing_twice(sample, tmp_path):
    db = tmp_path / "again.db"
    run("index", db, sample[0])
    again = run("index", db, sample[0])
    assert "0 new, 0 updated, 200 unchanged" in again.output
    assert count(db) == SLICE


def test_changed_text_replaces_by_id(tmp_path):
    db, path = tmp_path / "docs.db", tmp_path / "docs.jsonl"
    path.write_text('{"id": 7, "text": "the first version of a note"}\n{"id": "n2", "text": "another"}\n')
    run("index", db, path)
    path.write_text('{"id": 7, "text": "a rewritten note about gardening"}\n{"id": "n2", "text": "another"}\n')
    assert "0 new, 1 updated, 1 unchanged" in run("index", db, path).output
    with sqlitebin.connect(db, create=False) as database:
        hits = database.collection("documents").get([7, source_id("n2")])
    assert [hit.text for hit in hits] == ["a rewritten note about gardening", "another"]
    assert hits[1].metadata == {"source": str(path), "source_id": "n2"}


def test_index_directory_of_text_and_markdown(notes, tmp_path):
    db = tmp_path / "notes.db"
    result = run("index", db, notes, "--collection", "notes")
    assert "from 2 files" in result.output and "4 new" in result.output  # 2 paragraphs + heading + 1 paragraph
    hits = [json.loads(line) for line in run("search", db, "embedded database engine", "--json", "-k", 1).stdout.splitlines()]
    assert hits[0]["text"].startswith("SQLite is a small embedded database")
    assert hits[0]["metadata"] == {"source": str(notes / "databases.txt"), "line": 1}
    assert hits[0]["id"] == content_id(hits[0]["text"])
    table = run("search", db, "tomato sauce", "-k", 1, "--collection", "notes").output
    assert "cooking.md:3" in table


def test_index_text_per_line_and_per_file(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("roses are red\nviolets are blue\n\nsugar is sweet\n", encoding="utf-8")
    run("index", tmp_path / "lines.db", path, "--split", "line")
    run("index", tmp_path / "whole.db", path, "--split", "file")
    assert count(tmp_path / "lines.db") == 3
    assert count(tmp_path / "whole.db") == 1


def test_index_csv_with_id_and_text_columns(tmp_path):
    path, db = tmp_path / "packages.csv", tmp_path / "csv.db"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "body", "section"])
        writer.writerow(["p1", "a text editor for programmers, with syntax highlighting", "editors"])
        writer.writerow(["42", "a chess engine that plays strong games", "games"])
    run("index", db, path, "--id-field", "key", "--text-field", "body", "--format", "csv")
    hits = [json.loads(line) for line in run("search", db, "play chess", "--json", "-k", 1).stdout.splitlines()]
    assert hits[0]["id"] == 42
    assert hits[0]["metadata"] == {"section": "games", "source": str(path), "source_id": "42"}


def test_index_gzipped_jsonl_and_dim(tmp_path):
    db = tmp_path / "small.db"
    run("index", db, sample_corpus_path(), "--dim", 64, "--rescore", "float32", "--batch-size", 1000)
    info = json.loads(run("info", db, "--json").output)
    entry = info["collections"][0]
    assert (entry["documents"], entry["dim"], entry["rescore"]) == (3000, 64, "float32")


def test_ctrl_c_keeps_committed_batches(sample, tmp_path, monkeypatch):
    db = tmp_path / "interrupted.db"
    upsert = Collection.upsert

    def interrupt_after_first_batch(self, *args, progress=None, **kwargs):
        def on_batch(done, total):
            progress(done, total)
            raise KeyboardInterrupt

        return upsert(self, *args, progress=on_batch, **kwargs)

    monkeypatch.setattr(Collection, "upsert", interrupt_after_first_batch)
    result = run("index", db, sample[0], "--batch-size", 50, ok=False)
    assert result.exit_code == 130
    assert "Interrupted: 50 of 200 documents were committed" in result.output
    assert count(db) == 50
    monkeypatch.undo()
    assert "150 new, 0 updated, 50 unchanged" in run("index", db, sample[0]).output
    assert count(db) == SLICE


def test_ctrl_c_while_reading_writes_nothing(sample, tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "gather_documents", interrupted)
    result = run("index", tmp_path / "never.db", sample[0], ok=False)
    assert result.exit_code == 130 and "Interrupted before any document was written." in result.output
    assert not (tmp_path / "never.db").exists()


def test_progress_bar_reports_documents_per_second(sample, tmp_path):
    result = run("index", tmp_path / "bar.db", sample[0], "--batch-size", 100, "--progress")
    assert "doc/s" in result.output  # stderr; CliRunner mixes it into output


# ----------------------------------------------------------------------
# info, path, demo, help


def test_info_table_and_json(indexed):
    text = run("info", indexed).output.splitlines()
    assert text[0].startswith(f"{indexed}: ") and text[0].endswith("1 collection")
    assert text[1].split() == ["collection", "documents", "dim", "rescore", "bytes/doc", "embedder"]
    assert text[2].split()[:4] == ["documents", "200", "256", "int8"]
    assert float(text[2].split()[4]) >= 32 + 256  # the index's own bytes per document, from dbstat
    assert "wordllama" in text[2]
    info = json.loads(run("info", indexed, "--json").output)
    assert info["file_bytes"] > 0
    entry = info["collections"][0]
    assert (entry["name"], entry["documents"]) == ("documents", 200) and entry["bytes_per_document"] >= 32 + 256
    assert entry["embedder"].startswith("wordllama")


def test_path_prints_the_extension():
    assert run("path").output.strip() == sqlitebin.loadable_path()


@pytest.mark.skipif(shutil.which("sqlitebin") is None, reason="the sqlitebin script is not on PATH")
def test_console_script_path():
    result = subprocess.run(["sqlitebin", "path"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sqlitebin.loadable_path()


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "sqlitebin", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: sqlitebin ")
    for command in ("index", "search", "info", "path", "demo"):
        assert f"  {command} " in result.stdout


def test_demo_runs_and_keeps_its_database(tmp_path):
    db = tmp_path / "demo.db"
    output = run("demo", "--db", db).output
    assert "Indexed 3,000 documents" in output and "docs/s" in output
    assert output.count("Query: ") == cli.DEMO_QUERIES
    assert output.count("relevant package: ") == cli.DEMO_QUERIES and " ms" in output
    assert "relevant package: aa3d (d00040), rank 1" in output
    assert count(db, "debian") == 3000
    own = run("demo", "--db", db, "-q", "chess engine", "-k", 2).output
    assert "Query: 'chess engine'" in own and "0 new" not in own


def test_demo_default_uses_a_temporary_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = run("demo", "-q", "photo editor").output
    assert "a temporary database" in output and "Query: 'photo editor'" in output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [[], ["index"], ["search"], ["info"], ["path"], ["demo"], ["eval"], ["bench"]])
def test_every_command_has_help_with_an_example(command):
    output = run(*command, "--help").output
    assert "Example:" in output and "sqlitebin " in output.split("Example:")[1]


def test_every_command_is_registered():
    assert {"index", "search", "info", "path", "demo", "eval", "bench", "migrate"} <= set(main.commands)
    assert "--mode" in run("search", "--help").output


# ----------------------------------------------------------------------
# user mistakes: one line, exit code 1, no traceback


def error_line(result, code=1):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ")
    if code == 1:
        assert len(lines) == 1, result.output
    return lines[-1]


def test_index_missing_file(tmp_path):
    line = error_line(run("index", tmp_path / "x.db", tmp_path / "missing.txt", ok=False))
    assert line == f"Error: no such file or directory: {tmp_path / 'missing.txt'}"
    assert not (tmp_path / "x.db").exists()


def test_index_bad_encoding(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    line = error_line(run("index", tmp_path / "x.db", path, ok=False))
    assert line == f"Error: {path} line 2 is not valid utf-8 text (byte 0xe9); convert the file or pass --encoding"
    run("index", tmp_path / "x.db", path, "--encoding", "latin-1")
    assert count(tmp_path / "x.db") == 1


def test_index_jsonl_problems(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "body": "words"}\n', encoding="utf-8")
    assert error_line(run("index", tmp_path / "x.db", path, ok=False)) == (
        f"Error: {path} line 1: no 'text' field (fields: id, body); choose one with --text-field")
    path.write_text('{"text": "fine"}\n[1, 2]\n', encoding="utf-8")
    assert error_line(run("index", tmp_path / "x.db", path, ok=False)) == (
        f"Error: {path} line 2: expected a JSON object, got list")
    path.write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    assert error_line(run("index", tmp_path / "x.db", path, ok=False)).startswith(
        f"Error: {path} line 2: not valid JSON")
    path.write_text('{"text": "fine", "key": true}\n', encoding="utf-8")
    assert error_line(run("index", tmp_path / "x.db", path, "--id-field", "key", ok=False)) == (
        f"Error: {path} line 1: field 'key': an id must be a string or an integer, got true")


def test_index_nothing_to_index(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    assert error_line(run("index", tmp_path / "x.db", tmp_path / "empty.txt", ok=False)) == (
        f"Error: no documents with text in {tmp_path / 'empty.txt'}")
    assert error_line(run("index", tmp_path / "x.db", tmp_path / "folder", ok=False)) == (
        f"Error: no .txt or .md files in directory {tmp_path / 'folder'}")


def test_index_into_a_file_that_is_not_a_database(tmp_path, notes):
    bogus = tmp_path / "bogus.db"
    bogus.write_text("this is not SQLite " * 50, encoding="utf-8")
    assert error_line(run("index", bogus, notes, ok=False)) == f"Error: {bogus} is not a SQLite database"
    assert error_line(run("search", bogus, "query", ok=False)) == f"Error: {bogus} is not a SQLite database"


def test_index_dim_of_an_existing_collection(indexed, notes):
    assert error_line(run("index", indexed, notes, "--dim", 64, ok=False)) == (
        f"Error: collection 'documents' in {indexed} has 256 dimensions, not 64; "
        "leave out --dim or choose another --collection")


def test_search_database_that_does_not_exist(tmp_path):
    missing = tmp_path / "missing.db"
    assert error_line(run("search", missing, "query", ok=False)) == (
        f"Error: no database at {missing}; create one with: sqlitebin index {missing} FILE")
    assert not missing.exists()
    assert error_line(run("info", missing, ok=False)).startswith("Error: no database at ")


def test_search_unknown_collection(indexed):
    assert error_line(run("search", indexed, "query", "--collection", "nope", ok=False)) == (
        f"Error: no collection named 'nope' in {indexed} (collections: documents)")


def test_search_empty_query(indexed):
    assert error_line(run("search", indexed, "   ", ok=False)) == (
        "Error: the query is empty; give some words to search for")


def test_search_where_that_is_not_sql(indexed):
    line = error_line(run("search", indexed, "query", "--where", "title ==== (", ok=False))
    assert line.startswith("Error: --where 'title ==== (' is not valid SQL: near ") and line.endswith("syntax error")
    assert error_line(run("search", indexed, "query", "--where", "no_such_column = 1", ok=False)) == (
        "Error: --where 'no_such_column = 1' is not valid SQL: no such column: no_such_column")
    assert error_line(run("search", indexed, "query", "--where", "id = 1; DROP TABLE x", ok=False)) == (
        "Error: --where must be a single SQL condition without ';', got 'id = 1; DROP TABLE x'")
    assert error_line(run("search", indexed, "query", "--where", "id = :wanted", ok=False)) == (
        "Error: --where uses :wanted but gives it no value; add -p wanted VALUE")


def test_search_rescore_the_collection_does_not_store(indexed):
    line = error_line(run("search", indexed, "query", "--rescore", "float32", ok=False))
    assert line.startswith("Error: rescore='float32' needs float32 vectors, but collection 'documents' stores int8")


def test_search_collection_without_embedder(tmp_path):
    db = tmp_path / "vectors.db"
    with sqlitebin.connect(db) as database:
        database.create_collection("points", dim=8, embedder=None).add(vectors=[[1, 0, 0, 0, 0, 0, 0, 1]])
    assert error_line(run("search", db, "words", ok=False)) == (
        f"Error: collection 'points' in {db} stores vectors only (no embedder), so it cannot be searched by text; "
        "search it from Python with a query vector")
    assert "vector MATCH" in run("search", db, "words", "--sql").output


def test_search_database_without_collections(tmp_path):
    with sqlitebin.connect(tmp_path / "empty.db"):
        pass
    assert error_line(run("search", tmp_path / "empty.db", "query", ok=False)) == (
        f"Error: {tmp_path / 'empty.db'} has no collections; add documents with: "
        f"sqlitebin index {tmp_path / 'empty.db'} FILE")


def test_usage_errors_keep_exit_code_2(indexed):
    assert "'-k': 0 is not in the range" in error_line(run("search", indexed, "q", "-k", 0, ok=False), code=2)
    assert "'wat' is not one of" in error_line(run("search", indexed, "q", "--rescore", "wat", ok=False), code=2)
    assert "unknown encoding 'nope'" in error_line(run("index", indexed, "x.txt", "--encoding", "nope", ok=False), code=2)


def test_debug_shows_the_library_exception(indexed):
    result = run("--debug", "search", indexed, "query", "--where", "(((", ok=False)
    assert type(result.exception).__name__ == "SQLError"
    assert error_line(run("search", indexed, "query", "--where", "(((", ok=False)).startswith("Error: --where '(((' ")


# ----------------------------------------------------------------------
# ids


def test_ids_are_stable_and_fit_63_bits():
    assert source_id(42) == 42 and source_id("42") == 42 and source_id(-3) == -3
    assert source_id("042") != 42 and source_id("042") == source_id("042")
    assert source_id("d00123") == 3895603723672835653  # pinned: re-indexing after an upgrade must hit the same rows
    assert content_id("hello") == source_id("hello")
    for text in ("d00123", "042", "", "é" * 1000):
        assert 0 <= source_id(text) < 2**63
    with pytest.raises(TypeError):
        source_id(True)
    with pytest.raises(ValueError):
        source_id(2**64)
