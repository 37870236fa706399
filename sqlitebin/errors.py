"""The exceptions sqlitebin raises, so that callers (the command line among them) can tell mistakes apart by type.

Every one derives from `SqlitebinError`, and also from the built-in exception a caller would expect
(`ValueError` for a bad argument, `KeyError` for a missing collection), so `except ValueError` keeps working.
Errors from SQLite itself (a `where=` condition that is not valid SQL, a locked or damaged file) stay
`apsw.Error`s.
"""


class SqlitebinError(Exception):
    """Base class of the exceptions sqlitebin raises itself."""


class InvalidArgument(SqlitebinError, ValueError):
    """An argument has a bad value: out of range, not one of the choices, wrong shape, not valid Unicode."""


class InvalidWhere(InvalidArgument):
    """A `where=` condition is not one SQL expression (it holds `;` or a comment, or is empty)."""


class MissingParameter(InvalidArgument):
    """A `where=` condition names a :parameter that `params=` gives no value; `.parameter` is its name."""

    def __init__(self, message, parameter):
        super().__init__(message)
        self.parameter = parameter


class NoEmbedder(InvalidArgument):
    """Texts were given to a collection that has no embedder to turn them into vectors."""


class CollectionExists(InvalidArgument):
    """`create_collection()` was asked for a name already in use."""


class CollectionNotFound(SqlitebinError, KeyError):
    """No collection of that name in the database."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class SchemaVersionError(SqlitebinError):
    """The database was written by a sqlitebin whose schema this one cannot open or upgrade as asked."""
