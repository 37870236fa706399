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
