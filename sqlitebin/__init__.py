"""sqlitebin: binary-quantized embedding search inside SQLite.

`loadable_path()` and `load()` give the compiled SQL extension (`hamming()`,
the quantizers, rescoring dot products, the `sqlitebin` virtual table);
`connect()` opens a database with collections of texts or vectors to search.
Exceptions are in `sqlitebin.errors`, all derived from `SqlitebinError`.
"""

from .collection import Collection, Hit
from .database import Database, connect
from .errors import (
    CollectionExists,
    CollectionNotFound,
    InvalidArgument,
    InvalidWhere,
    MissingParameter,
    NoEmbedder,
    SchemaVersionError,
    SqlitebinError,
)
from .extension import ENTRY_POINT, load, loadable_path
from .version import __version__

__all__ = [
    "ENTRY_POINT", "Collection", "CollectionExists", "CollectionNotFound", "Database", "Hit", "InvalidArgument",
    "InvalidWhere", "MissingParameter", "NoEmbedder", "SchemaVersionError", "SqlitebinError", "__version__",
    "connect", "load", "loadable_path",
]
