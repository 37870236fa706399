"""The README's LangChain, LlamaIndex and named-embedder examples run, and print what their comments say.

A line ``print(...)  # -> expected`` must print ``expected`` (text after two spaces following it is a note).
"""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def section_block(heading):
    """The python block of the README section titled `heading` (at any level, up to the next heading)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^#{{2,6}} {re.escape(heading)}\n(.*?)(?=^#{{2,6}} |\Z)", text, flags=re.S | re.M)
    assert match, heading
    section = match.group(1)
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, heading
    return blocks[0]


def run_block(block):
    expected = [re.split(r"  ", line.split("# -> ", 1)[1].strip())[0] for line in block.splitlines() if "# -> " in line]
    assert expected
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    assert output.getvalue().splitlines() == expected


def test_langchain_section(tmp_path, monkeypatch):
    pytest.importorskip("langchain_core")
    monkeypatch.chdir(tmp_path)
    run_block(section_block("LangChain"))


def test_llama_index_section(tmp_path, monkeypatch):
    pytest.importorskip("llama_index.core")
    monkeypatch.chdir(tmp_path)
    run_block(section_block("LlamaIndex"))


def test_named_embedders_section(tmp_path, monkeypatch):
    """The example's model directory is a small model built here (the README saves a real one from the hub)."""
    pytest.importorskip("model2vec")
    from sqlitebin import embedding

    from test_named_embedders import build_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(embedding, "_FACTORIES", dict(embedding._FACTORIES))
    build_model(tmp_path / "potion-base-8M", dim=256)
    block = section_block("Named embedders")
    run_block(block)
