"""sqlitebin: binary-quantized embedding search inside SQLite.

`loadable_path()` and `load()` give the compiled SQL extension (`hamming()`,
the quantizers, rescoring dot products, the `sqlitebin_knn` scan); `connect()`
opens a database with collections of texts or vectors to search.
"""

from .collection import Collection, Hit
from .database import Database, connect
from .embedding import register_embedder
from .extension import ENTRY_POINT, load, loadable_path
from .version import __version__

__all__ = ["ENTRY_POINT", "Collection", "Database", "Hit", "__version__", "connect", "load", "loadable_path", "register_embedder"]
