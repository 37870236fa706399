"""Long documents: WordLlama embeds a text of any length in bounded memory, with the vector of the whole text."""

import gzip
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from sqlitebin.embedding import WINDOW_CHARACTERS, WordLlamaEmbedder, text_windows

DATA = Path(__file__).resolve().parent.parent / "sqlitebin" / "data" / "debian-sample.jsonl.gz"


@pytest.fixture(scope="module")
def embedder():
    return WordLlamaEmbedder(256)


@pytest.fixture(scope="module")
def real_text():
    """About 600 KB of real English prose in one paragraph, with some runs of spaces and newlines inside."""
    with gzip.open(DATA, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle]
    return "  ".join(texts)


def whole_text_mean(embedder, text):
    """The unbatched computation: tokenize the whole text at once, average every token's vector (float64)."""
    ids = embedder._tokenizer.encode(text, add_special_tokens=False).ids
    mean = embedder._weights[ids].astype(np.float64).mean(axis=0)
    return mean / np.linalg.norm(mean)


@pytest.mark.parametrize("size", [100, 1000, 4097, 30000])
def test_windows_give_the_tokens_of_the_whole_text(embedder, real_text, size):
    text = real_text[:200_000]
    windows = list(text_windows(text, size))
    assert max(len(window) for window in windows) <= size
    assert " ".join(windows) == text
    whole = embedder._tokenizer.encode(text, add_special_tokens=False).ids
    pieces = [i for w in windows for i in embedder._tokenizer.encode(w, add_special_tokens=False).ids]
    assert pieces == whole


def test_a_text_without_spaces_is_cut_at_the_window_size():
    text = "東京は日本の首都です" * 100
    windows = list(text_windows(text, 64))
    assert "".join(windows) == text and all(len(w) <= 64 for w in windows) and len(windows) == 16


def test_long_text_vector_equals_the_unbatched_computation(embedder, real_text):
    text = real_text[:200_000]  # tokenizing a whole text at once gets slow quickly: that is the point of windows
    assert len(text) > 3 * WINDOW_CHARACTERS
    vector = embedder([text, "short text", real_text[: WINDOW_CHARACTERS + 1]])
    np.testing.assert_allclose(vector[0], whole_text_mean(embedder, text), atol=1e-6)
    np.testing.assert_allclose(vector[2], whole_text_mean(embedder, real_text[: WINDOW_CHARACTERS + 1]), atol=1e-6)
    # The short text goes through the ordinary path, unchanged.
    np.testing.assert_allclose(vector[1], whole_text_mean(embedder, "short text"), atol=1e-6)


def test_text_of_only_spaces_gets_a_unit_vector_and_empty_text_zeros(embedder):
    vectors = embedder([" " * (WINDOW_CHARACTERS * 2), ""])
    assert np.isclose(np.linalg.norm(vectors[0]), 1.0) and not vectors[1].any()


def _peak_python_bytes(embedder, text):
    tracemalloc.start()
    try:
        embedder([text])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_python_memory_does_not_grow_with_the_text_250k_to_1m(embedder, real_text):
    one = real_text[:250_000]
    four = (real_text * 2)[:1_000_000]
    small, large = _peak_python_bytes(embedder, one), _peak_python_bytes(embedder, four)
    # A batch of windows, their token ids and the vocabulary counts (about 15 MB here; tracemalloc sees NumPy and Python, not the tokenizer), whatever the length;
    # before, the tokens x 256 float32 array alone was about 250 MB for 1 MB of text.
    assert large < 32_000_000, large
    assert large < small * 1.5 + 1_000_000, (small, large)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to reset the peak RSS")
def test_process_memory_does_not_grow_with_the_text(tmp_path):
    """Peak RSS (tokenizer included, which tracemalloc cannot see) for 1 MB and 4 MB texts, in a fresh process."""
    script = textwrap.dedent(f"""
        import gzip, json, resource
        from sqlitebin.embedding import WordLlamaEmbedder

        def peak_kib():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))

        def reset_peak():
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")

        with gzip.open({str(DATA)!r}, "rt", encoding="utf-8") as handle:
            base = "  ".join(json.loads(line)["text"] for line in handle)
        embedder = WordLlamaEmbedder(256)
        embedder([base[:200_000]])
        texts = {{size: (base * (size // len(base) + 1))[:size] for size in (1_000_000, 4_000_000)}}
        growth = []
        for size, text in texts.items():
            reset_peak()
            before = peak_kib()
            embedder([text])
            growth.append(peak_kib() - before)
        print(json.dumps(growth))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    small, large = json.loads(result.stdout.strip().splitlines()[-1])
    # Before, 4 MB of text took about 2 GB here; now both stay within a few tens of MiB of the baseline.
    assert large < 64 * 1024, (small, large)
    assert large < 2 * small + 32 * 1024, (small, large)


def test_a_paragraph_longer_than_the_document_limit_becomes_overlapping_passages(tmp_path, monkeypatch, real_text):
    from click.testing import CliRunner

    from sqlitebin import cli

    monkeypatch.setattr(cli, "MAX_DOCUMENT_CHARACTERS", 20_000)
    monkeypatch.setattr(cli, "PASSAGE_OVERLAP", 500)
    paragraph = " ".join(real_text[:70_000].split())  # one paragraph, single spaces
    path = tmp_path / "long.txt"
    path.write_text("A short first paragraph.\n\n" + paragraph + "\n", encoding="utf-8")
    db = tmp_path / "long.db"
    result = CliRunner().invoke(cli.main, ["index", str(db), str(path)])
    assert result.exit_code == 0, result.output
    import sqlitebin

    with sqlitebin.connect(db, create=False) as database:
        rows = database.conn.execute(
            "SELECT text, json_extract(metadata, '$.line'), json_extract(metadata, '$.passage'), "
            "json_extract(metadata, '$.offset') FROM documents_documents ORDER BY 3").fetchall()
    passages = [row for row in rows if row[2] is not None]
    assert [row[2] for row in passages] == list(range(1, len(passages) + 1)) and len(passages) == 4
    assert all(row[1] == 3 and len(row[0]) <= 20_000 for row in passages)
    for (text, _, _, offset) in passages:
        assert paragraph[offset:].startswith(text)  # each passage is where its offset says
    for previous, following in zip(passages, passages[1:]):
        end = previous[3] + len(previous[0])
        assert following[3] == end + 1 - 500 or following[3] == end - 500  # 500 characters of overlap
    assert passages[-1][3] + len(passages[-1][0]) == len(paragraph)  # nothing lost at the end
    assert "Indexed 5 documents" in result.output
    hits = CliRunner().invoke(cli.main, ["search", str(db), paragraph[30_000:30_200], "-k", "1"]).output
    assert "long.txt:3#" in hits  # the label: file, line and passage
