"""The sqlite-utils plugin, through sqlite-utils' own command line and Python API.

The oracles: hand-checked values for the SQL functions, and `sqlitebin search` itself
for `sqlite-utils sqlitebin-search`, whose output must be identical for the same options.
"""

import json

import pytest

pytest.importorskip("sqlite_utils", reason="sqlite-utils is not installed (pip install 'sqlitebin[sqlite-utils]')")

from click.testing import CliRunner  # noqa: E402
from sqlite_utils.cli import cli as sqlite_utils_cli  # noqa: E402
from sqlite_utils.utils import sqlite3 as sqlite_utils_sqlite3  # noqa: E402

import sqlitebin  # noqa: E402
from sqlitebin.cli import main as sqlitebin_cli  # noqa: E402


def needs_extension_loading():
    if not hasattr(sqlite_utils_sqlite3.Connection, "enable_load_extension"):
        pytest.skip(f"sqlite-utils' {sqlite_utils_sqlite3.__name__} cannot load extensions (pip install pysqlite3-binary)")


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    path = tmp_path_factory.mktemp("sqlite_utils") / "docs.db"
    db = sqlitebin.connect(path)
    collection = db.create_collection("notes", dim=256)
    collection.add(["SQLite is a small, fast, self-contained SQL database engine.",
                    "NumPy is the fundamental package for array computing with Python.",
                    "The Debian project produces a free operating system.",
                    "Datasette is a tool for exploring and publishing data."],
                   metadata=[{"kind": "db"}, {"kind": "python"}, {"kind": "os"}, {"kind": "web"}])
    db.close()
    return str(path)


def run(command, args):
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    return result


def test_query_sees_the_sql_functions(docs):
    needs_extension_loading()
    result = run(sqlite_utils_cli, ["query", docs, "SELECT hamming(x'ff00', x'0f0f') AS bits, "
                                                   "bit_count(x'ff01') AS ones, sqlitebin_version() AS version"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"bits": 8, "ones": 9, "version": sqlitebin.__version__}]


def test_python_api_connections_have_the_extension(docs):
    needs_extension_loading()
    import sqlite_utils

    db = sqlite_utils.Database(docs)
    assert db.execute("SELECT hamming(x'f0', x'0f')").fetchone()[0] == 8
    db.close()


@pytest.mark.parametrize("options", [
    ["-k", "2"],
    ["-k", "3", "--json"],
    ["--mode", "hybrid", "-k", "2", "--json"],
    ["--where", "json_extract(metadata, '$.kind') = :kind", "-p", "kind", "python", "--json"],
    ["--sql"],
])
def test_search_command_mirrors_sqlitebin_search(docs, options):
    mirrored = run(sqlite_utils_cli, ["sqlitebin-search", docs, "embedded database", *options])
    original = run(sqlitebin_cli, ["search", docs, "embedded database", *options])
    assert mirrored.exit_code == original.exit_code == 0, mirrored.output
    assert mirrored.output == original.output and mirrored.output.strip()


def test_search_command_finds_the_right_document(docs):
    result = run(sqlite_utils_cli, ["sqlitebin-search", docs, "embedded database", "-k", "1", "--json"])
    hit = json.loads(result.output)
    assert hit["rank"] == 1 and hit["text"].startswith("SQLite is a small") and hit["metadata"] == {"kind": "db"}


@pytest.mark.parametrize("args", [
    ["x", "--collection", "missing"],
    ["x", "--rescore", "float32"],       # a library error: reworded by the command, not a traceback
    ["x", "--where", "id = :nothing"],
])
def test_search_command_errors_are_the_same_one_line(docs, args):
    mirrored = run(sqlite_utils_cli, ["sqlitebin-search", docs, *args])
    original = run(sqlitebin_cli, ["search", docs, *args])
    assert mirrored.exit_code == original.exit_code == 1
    assert mirrored.output == original.output
    assert mirrored.output.startswith("Error: ") and mirrored.output.count("\n") == 1


def test_search_command_on_a_missing_file(tmp_path):
    result = run(sqlite_utils_cli, ["sqlitebin-search", str(tmp_path / "none.db"), "x"])
    assert result.exit_code == 1 and result.output.startswith("Error: no database at ")


def test_search_command_help_names_itself():
    result = run(sqlite_utils_cli, ["sqlitebin-search", "--help"])
    assert result.exit_code == 0
    assert "sqlite-utils sqlitebin-search docs.db" in result.output and "sqlitebin search" not in result.output
    assert "sqlitebin-search" in run(sqlite_utils_cli, ["--help"]).output


def test_a_sqlite3_without_extension_loading_gets_one_warning(capsys, monkeypatch):
    """sqlite-utils keeps working (without the functions) where its sqlite3 cannot load extensions."""
    from sqlitebin import sqlite_utils_plugin

    class NoLoading:  # the shape of sqlite3.Connection on macOS's system Python or a pyenv build
        def execute(self, sql):
            raise AssertionError("not reached")

    monkeypatch.setattr(sqlite_utils_plugin, "_warned", [])
    sqlite_utils_plugin.prepare_connection(NoLoading())
    sqlite_utils_plugin.prepare_connection(NoLoading())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sqlitebin: load(): this Python's sqlite3 module was built without")
