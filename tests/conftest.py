"""Shared fixtures: a fresh in-memory apsw connection with sqlitebin loaded."""

import apsw
import pytest

import sqlitebin


@pytest.fixture
def conn():
    connection = apsw.Connection(":memory:")
    sqlitebin.load(connection)
    yield connection
    connection.close()


def _has_index_module():
    connection = apsw.Connection(":memory:")
    try:
        sqlitebin.load(connection)
        connection.execute("CREATE VIRTUAL TABLE temp.probe USING sqlitebin(dim=8)")
        return True
    except apsw.SQLError:
        return False
    finally:
        connection.close()


HAS_INDEX_MODULE = _has_index_module()


@pytest.fixture
def requires_index():
    """Skip where the compiled extension has no `sqlitebin` virtual table yet (it comes from the ext/ work)."""
    if not HAS_INDEX_MODULE:
        pytest.skip("the compiled extension has no `sqlitebin` virtual table module")


_EMPTY_PROBE = """
import apsw, sqlitebin
conn = apsw.Connection(":memory:")
sqlitebin.load(conn)
conn.execute("CREATE VIRTUAL TABLE probe USING sqlitebin(dim=8)")
conn.execute("SELECT rowid FROM probe WHERE vector MATCH zeroblob(32) AND k = 1").fetchall()
conn.execute("INSERT INTO probe(probe) VALUES ('integrity-check')")
"""


@pytest.fixture(scope="session")
def empty_index_works():
    """Whether searching and checking an index that holds no chunk yet works; run in a child process,
    because an extension that crashes there would take the whole test run down."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _EMPTY_PROBE], capture_output=True, timeout=60).returncode == 0


@pytest.fixture
def requires_empty_index(requires_index, empty_index_works):
    if not empty_index_works:
        pytest.skip("the compiled extension crashes on a search or integrity-check of an index with no chunk yet")
