"""Reading JSON Lines corpora and queries, their error messages, and the bundled Debian sample."""

import gzip
import json

import pytest

from sqlitebin.datasets import (
    load_corpus,
    load_queries,
    read_jsonl,
    sample_corpus_path,
    sample_queries_path,
)

DOCUMENTS = [
    {"id": "d1", "title": "grep", "text": "search files for lines matching a pattern", "extra": 1},
    {"id": "d2", "title": "sed", "text": "stream editor"},
]


def write_lines(path, lines):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_read_jsonl_plain_and_gzip(tmp_path, name):
    path = write_lines(tmp_path / name, [json.dumps(document) for document in DOCUMENTS] + ["", "  "])
    assert read_jsonl(path) == DOCUMENTS
    assert read_jsonl(str(path)) == DOCUMENTS


def test_load_corpus_keeps_id_title_text(tmp_path):
    lines = [json.dumps(document) for document in DOCUMENTS] + [json.dumps({"id": "d3", "text": "no title"})]
    corpus = load_corpus(write_lines(tmp_path / "corpus.jsonl", lines))
    assert corpus == [
        {"id": "d1", "title": "grep", "text": "search files for lines matching a pattern"},
        {"id": "d2", "title": "sed", "text": "stream editor"},
        {"id": "d3", "title": "", "text": "no title"},
    ]


def test_load_queries(tmp_path):
    path = write_lines(tmp_path / "queries.jsonl.gz", [json.dumps({"qid": "q1", "text": "find text", "doc": "d1"})])
    assert load_queries(path) == [{"qid": "q1", "text": "find text", "doc": "d1"}]


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nothing.jsonl"
    with pytest.raises(FileNotFoundError, match=r"read_jsonl\(\): no such file: .*nothing\.jsonl"):
        read_jsonl(missing)
    with pytest.raises(FileNotFoundError, match=r"load_corpus\(\): no such file"):
        load_corpus(missing)
    with pytest.raises(FileNotFoundError, match=r"load_queries\(\): no such file"):
        load_queries(missing)


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"id": "d9", "text": ', r"line 3: not valid JSON"),
        ('["d9", "text"]', r"line 3: expected a JSON object, got list"),
    ],
)
def test_bad_lines_are_named_by_file_and_line(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "corpus.jsonl", [json.dumps(DOCUMENTS[0]), "", bad_line])
    with pytest.raises(ValueError, match=r"read_jsonl\(\): .*corpus\.jsonl " + message):
        read_jsonl(path)
    with pytest.raises(ValueError, match=r"load_corpus\(\): .*corpus\.jsonl " + message):
        load_corpus(path)


def test_invalid_utf8_is_a_bad_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"id": "d1", "text": "ok"}\n{"id": "d2", "text": "\xff"}\n')
    with pytest.raises(ValueError, match=r"line 2: not valid JSON"):
        read_jsonl(path)


def test_damaged_gzip_is_reported(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id": "d1", "text": "ok"}\n' * 100)[:-20])
    with pytest.raises(ValueError, match=r"read_jsonl\(\): .*corpus\.jsonl\.gz line \d+: gzip data is damaged"):
        read_jsonl(path)
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_bytes(b"{}\n")
    with pytest.raises(ValueError, match=r"plain\.jsonl\.gz line 1: gzip data is damaged"):
        read_jsonl(not_gzip)


def test_corpus_field_errors(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", [json.dumps({"id": "d1", "title": "t"})])
    with pytest.raises(ValueError, match=r"load_corpus\(\): .*corpus\.jsonl line 1: field 'text' is missing"):
        load_corpus(path)
    path = write_lines(tmp_path / "corpus.jsonl", [json.dumps({"id": 7, "text": "t"})])
    with pytest.raises(ValueError, match=r"line 1: field 'id' is not a string \(int\)"):
        load_corpus(path)
    path = write_lines(tmp_path / "corpus.jsonl", [json.dumps(DOCUMENTS[0]), json.dumps(DOCUMENTS[0])])
    with pytest.raises(ValueError, match=r"line 2: id 'd1' already used on line 1"):
        load_corpus(path)


def test_query_field_errors(tmp_path):
    path = write_lines(tmp_path / "queries.jsonl", [json.dumps({"qid": "q1", "text": "find text"})])
    with pytest.raises(ValueError, match=r"load_queries\(\): .*queries\.jsonl line 1: field 'doc' is missing"):
        load_queries(path)


def test_bundled_sample():
    corpus = load_corpus(sample_corpus_path())
    queries = load_queries(sample_queries_path())
    assert len(corpus) == 3000
    assert len(queries) >= 300
    document_ids = {document["id"] for document in corpus}
    assert all(query["doc"] in document_ids for query in queries)
    assert all(document["text"] for document in corpus)
    assert [document["id"] for document in corpus] == sorted(document_ids)  # kept in corpus order
