"""The README's examples are executed, so they cannot rot."""

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sqlitebin

README = Path(__file__).resolve().parent.parent / "README.md"


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_opens_with_the_two_commands():
    first = code_blocks("bash")[0].splitlines()
    assert first[0].startswith("pip install . && sqlitebin demo")
    assert first[1].startswith("pip install -e '.[test]' && pytest")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -e '.[test]' && pytest" in ci


def test_sql_quick_start_in_the_sqlite3_shell():
    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 command line is not installed")
    block = code_blocks("sql")[0]
    statements, expected = [], []
    current = []
    for line in block.splitlines():
        if line.startswith("--"):
            continue
        code, _, comment = line.partition("-- ")
        current.append(code)
        if code.rstrip().endswith(";"):
            statements.append("\n".join(current))
            current = []
            if comment.strip():
                expected += comment.strip().split("  ")
    result = subprocess.run([shell, ":memory:", f".load {sqlitebin.loadable_path()}", *statements],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


def test_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks("python")
    assert len(blocks) == 2
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        for block in blocks:
            exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    lines = output.getvalue().splitlines()
    assert lines[0] == "[(8,)]"
    # The embedded-database query finds the SQLite sentence first; the filter finds NumPy's.
    assert lines[1].startswith("1 ") and lines[1].endswith("{'kind': 'db'}")
    assert lines[2].startswith("NumPy is the fundamental package")
    assert lines[-1] == "2 int8"


def test_command_line_block_runs(tmp_path):
    """Every command of the README's command-line section, in order, on small real data."""
    import gzip
    import json

    from sqlitebin.datasets import load_corpus, load_queries, sample_corpus_path, sample_queries_path

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "sqlite.txt").write_text("SQLite is an embedded database engine.\n\nIt is small.\n")
    (tmp_path / "notes" / "python.md").write_text("# Python\n\nsqlite3 is the Python module for SQLite.\n")
    queries = load_queries(sample_queries_path())[:40]
    wanted = {q["doc"] for q in queries}
    documents = [d for d in load_corpus(sample_corpus_path()) if d["id"] in wanted][:40]
    documents += [d for d in load_corpus(sample_corpus_path()) if d["id"] not in wanted][:200]
    for name, rows in (("corpus.jsonl.gz", documents), ("queries.jsonl.gz", queries)):
        with gzip.open(tmp_path / name, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    block = code_blocks("bash")[1]
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert len(commands) >= 8
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "sqlitebin"
        result = subprocess.run([sys.executable, "-m", "sqlitebin", *words[1:]], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        if words[1] == "search" and "--sql" not in words:
            assert result.stdout.strip(), command
