"""Embedders: embed_texts() batching and checks, name resolution, and WordLlama loaded offline from the package."""

import importlib.metadata
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sqlitebin import embedding
from sqlitebin.embedding import WordLlamaEmbedder, embed_texts, embedder_name, resolve_embedder

REPO_ROOT = Path(__file__).resolve().parent.parent


class LengthEmbedder:
    """Fake embedder: row i is [len(text), number of the call that embedded it], so order and batching are visible."""

    name = "fake-length"
    dim = 2

    def __init__(self):
        self.batches = []

    def __call__(self, texts):
        self.batches.append(list(texts))
        return np.array([[len(text), len(self.batches)] for text in texts], dtype=np.float64)


def test_embed_texts_returns_rows_in_input_order_though_batches_are_sorted():
    texts = ["x" * length for length in (9, 1, 7, 3, 8, 2, 6, 4, 5, 0)]
    embedder = LengthEmbedder()
    vectors = embed_texts(embedder, texts, batch_size=3)
    assert vectors.dtype == np.float32
    assert vectors[:, 0].tolist() == [9, 1, 7, 3, 8, 2, 6, 4, 5, 0]
    assert [[len(text) for text in batch] for batch in embedder.batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    # The shortest texts went in the first call, the longest in the last.
    assert vectors[texts.index(""), 1] == 1 and vectors[texts.index("x" * 9), 1] == 4


def test_embed_texts_reports_progress_after_each_batch():
    calls = []
    embed_texts(LengthEmbedder(), ["a"] * 7, batch_size=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 7), (6, 7), (7, 7)]


def test_embed_texts_accepts_a_plain_function_and_empty_input():
    def constant(texts):
        return np.ones((len(texts), 4), dtype=np.float32)

    assert embed_texts(constant, ["a", "b"]).shape == (2, 4)
    assert embed_texts(LengthEmbedder(), []).shape == (0, 2)
    assert embed_texts(constant, []).shape == (0, 0)


@pytest.mark.parametrize(
    "returned, message",
    [
        (lambda texts: np.ones(len(texts)), r"returned shape \(2,\) for 2 texts, expected \(2, dim\)"),
        (lambda texts: np.ones((1, 4)), r"returned shape \(1, 4\) for 2 texts"),
        (lambda texts: np.ones((len(texts), 4), dtype=np.int64), r"returned int64 values, expected floats"),
        (lambda texts: np.full((len(texts), 4), np.nan), r"NaN or infinite values for 2 of 2 texts"),
    ],
)
def test_embed_texts_rejects_bad_embedder_output(returned, message):
    with pytest.raises(ValueError, match=r"embed_texts\(\): embedder .*" + message):
        embed_texts(returned, ["a", "b"])


def test_embed_texts_rejects_changing_width_and_bad_batch_size():
    widths = iter([3, 5])

    def changing(texts):
        return np.ones((len(texts), next(widths)))

    with pytest.raises(ValueError, match=r"returned 5 columns for one batch after 3 for earlier ones"):
        embed_texts(changing, ["a", "b"], batch_size=1)
    with pytest.raises(ValueError, match=r"embed_texts\(\): batch_size must be a positive integer, got 0"):
        embed_texts(LengthEmbedder(), ["a"], batch_size=0)
    with pytest.raises(TypeError, match=r"embed_texts\(\): texts must be a list of strings"):
        embed_texts(LengthEmbedder(), "abc")


def test_embedder_name():
    def my_embedder(texts):
        return np.zeros((len(texts), 2))

    assert embedder_name(LengthEmbedder()) == "fake-length"
    assert embedder_name(my_embedder) == f"{__name__}.test_embedder_name.<locals>.my_embedder"

    class Unnamed:
        def __call__(self, texts):
            return np.zeros((len(texts), 2))

    assert embedder_name(Unnamed()) == f"{__name__}.test_embedder_name.<locals>.Unnamed"


def test_resolve_embedder():
    assert resolve_embedder("wordllama").dim == 256
    for dim in (64, 128, 256):
        assert resolve_embedder(f"wordllama-{dim}").dim == dim
        assert resolve_embedder(f"wordllama-l2_supercat-{dim}").dim == dim
    assert resolve_embedder("wordllama-l2_supercat").dim == 256
    fake = LengthEmbedder()
    assert resolve_embedder(fake) is fake
    with pytest.raises(ValueError, match=r"resolve_embedder\(\): unknown embedder 'wordllama-512'; use one of"):
        resolve_embedder("wordllama-512")
    with pytest.raises(ValueError, match=r"resolve_embedder\(\): expected an embedder name or a callable"):
        resolve_embedder(42)


def test_wordllama_loads_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("WordLlamaEmbedder tried to use the network")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    requests = pytest.importorskip("requests")
    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(requests.Session, "request", no_network)
    embedding._load_wordllama_files.cache_clear()
    embedding._load_wordllama.cache_clear()

    embedder = WordLlamaEmbedder()
    assert embedder.name == "wordllama-l2_supercat"
    assert embedder.version == importlib.metadata.version("wordllama")
    assert embedder(["offline embedding"]).shape == (1, 256)


def test_importing_embedding_does_not_import_wordllama_or_touch_logging():
    # A fresh interpreter: in this one, other tests may have imported wordllama already.
    code = (
        "import logging, sys\n"
        "import sqlitebin.embedding as embedding\n"
        "assert 'wordllama' not in sys.modules, 'import sqlitebin.embedding imported wordllama'\n"
        "embedding.WordLlamaEmbedder(64)(['hello'])\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize("dim", [64, 128, 256])
def test_wordllama_shapes_and_unit_norms(dim):
    embedder = WordLlamaEmbedder(dim)
    vectors = embedder(["a fast text search library", "GNU C compiler", "x"])
    assert vectors.shape == (3, dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_wordllama_text_without_tokens_gives_zeros_not_nan():
    vectors = WordLlamaEmbedder()(["", "some words", ""])
    assert np.isfinite(vectors).all()
    assert not vectors[0].any() and not vectors[2].any()
    assert np.linalg.norm(vectors[1]) == pytest.approx(1.0, abs=1e-5)
    assert WordLlamaEmbedder()([]).shape == (0, 256)


def test_wordllama_similar_texts_are_closer_than_unrelated_ones():
    anchor, similar, unrelated = WordLlamaEmbedder()(
        ["utility to compress and decompress files", "file compression tool", "a strategy game with dragons"]
    )
    assert anchor @ similar > anchor @ unrelated + 0.2


def test_wordllama_constructing_twice_reuses_the_loaded_model():
    first, second = WordLlamaEmbedder(128), WordLlamaEmbedder(128)
    assert first._weights is second._weights


def wordllama_reference(texts, dim):
    """The same embedding computed by WordLlama's own inference code from the package's files."""
    wordllama_inference = pytest.importorskip("wordllama.inference")
    from safetensors import safe_open
    from tokenizers import Tokenizer

    package_dir = Path(wordllama_inference.__file__).parent
    tokenizer = Tokenizer.from_file(str(package_dir / "tokenizers" / "l2_supercat_tokenizer_config.json"))
    with safe_open(str(package_dir / "weights" / "l2_supercat_256.safetensors"), framework="np") as weights_file:
        weights = weights_file.get_tensor("embedding.weight")
    pooled = wordllama_inference.WordLlamaInference(weights, tokenizer).embed(texts, norm=False)
    truncated = pooled[:, :dim]
    return truncated / np.linalg.norm(truncated, axis=1, keepdims=True)


TEXTS = [
    "SQLite extension for vector search",
    "Debian package of the GNU Compiler Collection, with a long description spanning many more tokens than the rest",
    "résumé naïve café",
    "   ",
]


@pytest.mark.parametrize("dim", [64, 128, 256])
def test_wordllama_matches_wordllama_inference_and_matryoshka_truncation(dim):
    # Each dim is the first dim columns of the 256-column mean-pooled embedding, renormalised.
    np.testing.assert_allclose(WordLlamaEmbedder(dim)(TEXTS), wordllama_reference(TEXTS, dim), atol=2e-6)


@pytest.mark.parametrize("dim", [0, 32, 100, 512, "256", 256.0, True])
def test_wordllama_rejects_unsupported_dims(dim):
    with pytest.raises(ValueError, match=r"WordLlamaEmbedder\(\): dim must be one of 64, 128 or 256, got "):
        WordLlamaEmbedder(dim)


def test_wordllama_rejects_bad_input():
    with pytest.raises(ValueError, match=r"WordLlamaEmbedder\(\): batch_size must be a positive integer, got 0"):
        WordLlamaEmbedder(batch_size=0)
    with pytest.raises(TypeError, match=r"WordLlamaEmbedder\(\): texts must be a list of strings, got a single str"):
        WordLlamaEmbedder()("hello")
    with pytest.raises(TypeError, match=r"item 1 is NoneType"):
        WordLlamaEmbedder()(["hello", None])


def test_wordllama_batch_size_does_not_change_results():
    texts = [f"package number {index} " * (index % 5) for index in range(25)]
    np.testing.assert_array_equal(WordLlamaEmbedder(batch_size=4)(texts), WordLlamaEmbedder(batch_size=1000)(texts))
