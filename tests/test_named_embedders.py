"""Named embedders: Model2Vec models from local files, recorded with the collection; register_embedder()."""

import json
import socket

import numpy as np
import pytest
from click.testing import CliRunner

import sqlitebin
from sqlitebin import embedding
from sqlitebin.cli import main

pytest.importorskip("model2vec")

WORDS = ["[PAD]", "[UNK]", "sqlite", "database", "engine", "python", "array", "debian", "free", "system",
         "small", "fast", "package", "library", "search", "vector", "text", "file", "code", "data"]
DIM = 13  # not a multiple of 8


def build_model(directory, dim=DIM, seed=0):
    """A tiny Model2Vec static model: random vectors for 20 words and a whitespace word-level tokenizer."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    vectors = np.random.default_rng(seed).normal(size=(len(WORDS), dim)).astype(np.float32)
    StaticModel(vectors, tokenizer, normalize=True).save_pretrained(str(directory))
    return vectors


def oracle(vectors, text):
    """Mean of the known words' vectors, L2-normalised (zeros when no word is known)."""
    rows = [vectors[WORDS.index(w)] for w in text.lower().split() if w in WORDS[2:]]
    if not rows:
        return np.zeros(vectors.shape[1], dtype=np.float32)
    mean = np.mean(rows, axis=0)
    return mean / np.linalg.norm(mean)


@pytest.fixture()
def model(tmp_path):
    directory = tmp_path / "tiny-model"
    return directory, build_model(directory)


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a named embedder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


TEXTS = ["SQLite database engine", "python array library", "debian free system", "fast vector search",
         "small text file", "package data code", "sqlite python library", "unknown words only"]


def test_model2vec_embeddings_match_numpy(model, no_network):
    directory, vectors = model
    embed = embedding.resolve_embedder(f"model2vec:{directory}")
    assert (embed.name, embed.dim) == (f"model2vec:{directory.resolve()}", DIM)
    assert embed.version == __import__("importlib.metadata").metadata.version("model2vec")
    result = embed(TEXTS)
    assert result.dtype == np.float32 and result.shape == (len(TEXTS), DIM)
    np.testing.assert_allclose(result, [oracle(vectors, t) for t in TEXTS], atol=1e-6)
    assert not result[-1].any()  # no known token: zeros, not NaN


def test_collection_records_and_reopens_the_model(model, tmp_path, no_network, monkeypatch):
    directory, vectors = model
    monkeypatch.chdir(directory.parent)
    path = tmp_path / "docs.db"
    with sqlitebin.connect(path) as db:
        col = db.create_collection("notes", dim=DIM, embedder="model2vec:tiny-model", rescore="float32")  # relative
        col.add(TEXTS[:-1], metadata=[{"n": i} for i in range(len(TEXTS) - 1)])
        row = db.conn.execute(
            "SELECT embedder, embedder_version, embedder_dim FROM sqlitebin_collections WHERE name = 'notes'").fetchall()
    assert row == [(f"model2vec:{directory.resolve()}", embedding.Model2VecEmbedder(directory).version, DIM)]

    monkeypatch.chdir(tmp_path.parent)  # the recorded path is absolute, so the working directory does not matter
    with sqlitebin.connect(path, create=False) as db:
        col = db.collection("notes")
        assert col.embedder is not None and col.embedder.name == row[0][0]
        stored = np.array([oracle(vectors, t) for t in TEXTS[:-1]])
        for query in ("sqlite library", "free system", "vector search fast"):
            hits = col.search(query, k=3, mode="vector")
            expected = np.argsort(-(stored @ oracle(vectors, query)), kind="stable")[:3] + 1
            assert [h.id for h in hits] == list(expected)
        # An explicit embedder= must name the same model.
        assert db.collection("notes", embedder=f"model2vec:{directory}").embedder.name == row[0][0]


def test_missing_model_is_one_sentence_and_writes_nothing(tmp_path, no_network):
    missing = tmp_path / "nowhere"
    with sqlitebin.connect() as db:
        with pytest.raises(FileNotFoundError) as error:
            db.create_collection("notes", dim=DIM, embedder=f"model2vec:{missing}")
        assert str(error.value) == (
            f"Model2VecEmbedder(): no directory {str(missing)!r}; a Model2Vec model is loaded from a local "
            "directory written by StaticModel.save_pretrained(), never downloaded")
        assert db.collections() == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json, model.safetensors, tokenizer.json in the directory"):
        embedding.resolve_embedder(f"model2vec:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="names no model after 'model2vec:'"):
        embedding.resolve_embedder("model2vec:")


def test_reopening_after_the_model_moved_says_so(model, tmp_path):
    directory, _ = model
    path = tmp_path / "docs.db"
    with sqlitebin.connect(path) as db:
        db.create_collection("notes", dim=DIM, embedder=f"model2vec:{directory}").add(TEXTS[:2])
    directory.rename(tmp_path / "moved")
    with sqlitebin.connect(path) as db:
        with pytest.raises(FileNotFoundError, match="Model2VecEmbedder\\(\\): no directory"):
            db.collection("notes")


def test_dimension_mismatch(model):
    directory, _ = model
    with sqlitebin.connect() as db:
        with pytest.raises(ValueError, match=f"gives {DIM} dimensions, not 256"):
            db.create_collection("notes", embedder=f"model2vec:{directory}")


def test_register_embedder(monkeypatch, tmp_path):
    monkeypatch.setattr(embedding, "_FACTORIES", dict(embedding._FACTORIES))
    calls = []

    def hashing(argument):
        """A toy embedder family: 'hash:N' gives N-dimensional vectors from character codes."""
        calls.append(argument)
        dim = int(argument)

        def embed(texts):
            out = np.zeros((len(texts), dim), dtype=np.float32)
            for row, text in enumerate(texts):
                for position, char in enumerate(text):
                    out[row, (ord(char) + position) % dim] += 1.0
            return out

        embed.dim, embed.version = dim, "1"
        return embed

    sqlitebin.register_embedder("hash", hashing)
    path = tmp_path / "docs.db"
    with sqlitebin.connect(path) as db:
        db.create_collection("notes", dim=10, embedder="hash:10").add(["abc", "xyz"])
        assert db.conn.execute("SELECT embedder, embedder_version, embedder_dim FROM sqlitebin_collections"
                               ).fetchall() == [("hash:10", "1", 10)]
    with sqlitebin.connect(path) as db:
        assert db.collection("notes").search("abc", k=1)[0].text == "abc"
    assert calls == ["10", "10"]

    with pytest.raises(ValueError, match="prefix 'hash' is already registered; pass replace=True"):
        sqlitebin.register_embedder("hash", hashing)
    sqlitebin.register_embedder("hash", hashing, replace=True)
    with pytest.raises(ValueError, match="prefix must be lower-case letters"):
        sqlitebin.register_embedder("Bad Prefix", hashing)
    with pytest.raises(ValueError, match="and not wordllama"):
        sqlitebin.register_embedder("wordllama", hashing)
    with pytest.raises(TypeError, match="factory must be callable"):
        sqlitebin.register_embedder("other", 42)
    with pytest.raises(ValueError, match=r"unknown embedder 'nothing:1'; .* a name starting with hash:, model2vec:"):
        embedding.resolve_embedder("nothing:1")


def test_unregistered_prefix_reopens_as_vectors_only(monkeypatch, tmp_path):
    """A collection whose prefix this process has not registered still opens, for vector search."""
    factories = dict(embedding._FACTORIES)
    monkeypatch.setattr(embedding, "_FACTORIES", factories)

    def ones(argument):
        return lambda texts: np.ones((len(texts), 4), dtype=np.float32)

    sqlitebin.register_embedder("ones", ones)
    path = tmp_path / "docs.db"
    with sqlitebin.connect(path) as db:
        db.create_collection("notes", dim=4, embedder="ones:x").add(["a"])
    del factories["ones"]
    with sqlitebin.connect(path) as db:
        col = db.collection("notes")
        assert col.embedder is None and col.embedder_name == "ones:x"
        assert col.search(np.ones(4), k=1)[0].text == "a"


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_command_line_embedder(model, tmp_path, no_network):
    directory, vectors = model
    notes = tmp_path / "notes.txt"
    notes.write_text("\n\n".join(TEXTS[:-1]) + "\n", encoding="utf-8")
    db = tmp_path / "docs.db"
    output = run("index", db, notes, "--collection", "m2v", "--embedder", f"model2vec:{directory}").output
    assert "7 new" in output
    info = json.loads(run("info", db, "--json").output)["collections"][0]
    assert (info["embedder"], info["dim"]) == (f"model2vec:{directory.resolve()}", DIM)
    hits = [json.loads(line) for line in run("search", db, "free debian", "--collection", "m2v", "--json", "-k", "1"
                                             ).output.splitlines()]
    assert hits[0]["text"] == "debian free system"
    # Adding to the collection again needs no --embedder; a different one is refused.
    assert "7 unchanged" in run("index", db, notes, "--collection", "m2v").output
    other = tmp_path / "other-model"
    build_model(other, seed=1)
    result = run("index", db, notes, "--collection", "m2v", "--embedder", f"model2vec:{other}", ok=False)
    assert result.exit_code == 1 and "was built with embedder" in result.output
    result = run("index", db, notes, "--collection", "m2v", "--embedder", "wordllama", ok=False)
    assert result.exit_code == 1 and "not 'wordllama'; leave out --embedder" in result.output
    result = run("index", db, notes, "--collection", "m2v", "--embedder", f"model2vec:{directory}/", ok=True)
    assert "7 unchanged" in result.output  # the same model, named with a trailing slash
    result = run("index", db, notes, "--collection", "x", "--embedder", f"model2vec:{tmp_path / 'missing'}", ok=False)
    assert result.exit_code == 1 and result.output.startswith("Error: Model2VecEmbedder(): no directory")
    assert "Traceback" not in result.output
    result = run("index", db, notes, "--collection", "x", "--embedder", f"model2vec:{directory}", "--dim", "64",
                 ok=False)
    assert f"gives {DIM} dimensions, not 64" in result.output
