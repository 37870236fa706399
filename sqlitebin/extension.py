"""Finding and loading the compiled sqlitebin SQLite extension.

The extension is one shared object, `sqlitebin/sqlitebin.so`, that any SQLite
can load: apsw, Python's sqlite3 module (where that Python allows extension
loading) and the `sqlite3` shell (`.load PATH`).
"""

import os

ENTRY_POINT = "sqlite3_sqlitebin_init"


def loadable_path():
    """Return the absolute path of the extension, for ``load_extension()`` or the shell's ``.load``.

    Raises FileNotFoundError when the package was not built (``pip install .`` builds it).
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sqlitebin.so")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"loadable_path(): the compiled extension is missing at {path}; "
            "build it with `pip install .` (or `python setup.py build_ext --inplace` in a checkout)"
        )
    return path


def load(conn):
    """Load the extension into ``conn``, an ``apsw.Connection`` or a ``sqlite3.Connection``.

    Extension loading is switched on only for the load and off again afterwards.
    Raises TypeError for other objects, and RuntimeError for a ``sqlite3``
    module built without extension loading (apsw always has it): see
    https://sqlite.org/c3ref/load_extension.html
    """
    path = loadable_path()
    module = type(conn).__module__
    if module == "apsw" or module.startswith("apsw."):
        conn.enable_load_extension(True)
        try:
            conn.load_extension(path, ENTRY_POINT)
        finally:
            conn.enable_load_extension(False)
        return conn
    if module in ("sqlite3", "_sqlite3") or module.startswith("sqlite3."):
        if not hasattr(conn, "enable_load_extension"):
            raise RuntimeError(
                "load(): this Python's sqlite3 module was built without extension loading "
                "(no enable_load_extension); use apsw, or a Python built with --enable-loadable-sqlite-extensions"
            )
        conn.enable_load_extension(True)
        try:
            conn.load_extension(path, entrypoint=ENTRY_POINT) if _accepts_entrypoint() else conn.load_extension(path)
        finally:
            conn.enable_load_extension(False)
        return conn
    raise TypeError(f"load(): expected an apsw.Connection or sqlite3.Connection, got {type(conn).__name__}")


def _accepts_entrypoint():
    # sqlite3.Connection.load_extension gained the entrypoint argument in Python 3.12.
    import sys

    return sys.version_info >= (3, 12)
