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


@pytest.mark.parametrize("number", [0, 1], ids=["virtual table", "scalar functions"])
def test_sql_quick_start_in_the_sqlite3_shell(number):
    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 command line is not installed")
    block = code_blocks("sql")[number]
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
    blocks = code_blocks("python")[:2]  # the quick starts; the integrations' blocks have their own tests below
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


# ----------------------------------------------------------------------
# The integrations: Python's sqlite3 and its replacements, Datasette, sqlite-utils


def section_blocks(heading, language):
    """The `language` code blocks of the README section under `heading` (up to the next heading)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n" + heading + "\n")
    end = text.find("\n#", start + len(heading) + 2)
    return re.findall(rf"```{language}\n(.*?)```", text[start:end if end != -1 else None], flags=re.S)


@pytest.fixture
def notes_db(tmp_path, monkeypatch):
    """docs.db with the collection "notes", indexed by the README's own command from a notes/ folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "sqlite.txt").write_text("SQLite is an embedded database engine.\n\nIt is small.\n")
    (tmp_path / "notes" / "python.md").write_text("# Python\n\nNumPy is the package for arrays in Python.\n")
    run_sqlitebin("sqlitebin index docs.db notes/ --collection notes", tmp_path)
    return tmp_path


def run_sqlitebin(command, cwd):
    words = shlex.split(command.split("  #")[0])
    assert words[0] == "sqlitebin"
    result = subprocess.run([sys.executable, "-m", "sqlitebin", *words[1:]], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (command, result.stderr[-2000:])
    return result.stdout


SQLITE3_MODULES = {
    "sqlite3": "import sqlite3",
    "pysqlite3": "import pysqlite3.dbapi2 as sqlite3",
    "sqlean": "import sqlean as sqlite3",
}


@pytest.mark.parametrize("module", SQLITE3_MODULES)
def test_sqlite3_modules_block_runs(notes_db, module):
    """The block with each module its first line names (the standard one only where it loads extensions)."""
    (block,) = section_blocks("### Python's sqlite3, pysqlite3 and sqlean", "python")
    first, rest = block.split("\n", 1)
    assert first.startswith("import sqlite3") and SQLITE3_MODULES["pysqlite3"] in first
    assert SQLITE3_MODULES["sqlean"] in first
    name = SQLITE3_MODULES[module].split()[1]
    python, env = sys.executable, None
    try:
        imported = __import__(name, fromlist=["_"])
    except ImportError:
        pytest.skip(f"{name} is not installed")
    if not hasattr(imported.Connection, "enable_load_extension"):
        # Debian's system Python loads extensions: run the block there, with this environment's packages.
        from test_sqlite_modules import system_python_environment

        python, env = system_python_environment()
    # A fresh interpreter: each module's SQLite library is then the first or second in its process.
    code = SQLITE3_MODULES[module] + "\n" + rest
    result = subprocess.run([python, "-c", code], cwd=notes_db, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["(8,)", "SQLite is an embedded database engine."]


def test_datasette_block_runs(notes_db):
    pytest.importorskip("datasette", reason="Datasette is not installed")
    import json
    import urllib.parse
    import urllib.request

    from test_datasette_plugin import Server

    (block,) = section_blocks("### Datasette", "bash")
    lines = [line for line in block.splitlines() if line.strip()]
    assert lines[0] == "pip install 'sqlitebin[datasette]'"
    run_sqlitebin(lines[1], notes_db)
    command, url = (part.strip() for part in lines[2].split("#"))
    assert command == "datasette docs.db" and url.startswith("http://127.0.0.1:8001/")
    server = Server(notes_db / "docs.db")  # the same command, on a free port
    try:
        page = urllib.parse.urlsplit(url)
        with urllib.request.urlopen(f"{server.url}{page.path}.json?{page.query}", timeout=60) as response:
            body = json.loads(response.read())
    finally:
        server.stop()
    assert body["results"][0]["text"] == "SQLite is an embedded database engine."


def test_sqlite_utils_block_runs(notes_db):
    pytest.importorskip("sqlite_utils", reason="sqlite-utils is not installed")
    import json

    from click.testing import CliRunner
    from sqlite_utils.cli import cli
    from sqlite_utils.utils import sqlite3

    (block,) = section_blocks("### sqlite-utils", "bash")
    lines = [line for line in block.splitlines() if line.strip()]
    assert lines[0] == "pip install 'sqlitebin[sqlite-utils]'"
    outputs = []
    for line in lines[1:]:
        command, _, expected = line.partition("  #")
        words = shlex.split(command)
        assert words[0] == "sqlite-utils"
        if words[1] == "query" and not hasattr(sqlite3.Connection, "enable_load_extension"):
            continue  # reported by the plugin's own tests as a skip
        result = CliRunner().invoke(cli, words[1:], catch_exceptions=False)
        assert result.exit_code == 0, (line, result.output)
        if expected.strip():
            assert json.loads(result.output) == json.loads(expected.strip()), line
        outputs.append(result.output)
    assert "SQLite is an embedded database engine" in outputs[-1]
