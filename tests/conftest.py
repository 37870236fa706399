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
