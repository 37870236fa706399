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
    assert lines[-1] == "2 320"
