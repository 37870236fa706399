"""Finding and loading the compiled sqlitebin SQLite extension.

The extension is one shared object, `sqlitebin/sqlitebin.so`, that any SQLite
can load: apsw, Python's sqlite3 module (where that Python allows extension
loading), its drop-in replacements pysqlite3 and sqlean.py, and the `sqlite3`
shell (`.load PATH`).

Like every SQLite extension, a loaded copy of the file keeps the routines of
the SQLite library that loaded it in one process-wide pointer, so a copy can
serve only one library. A process can hold several (apsw's private SQLite
next to pysqlite3's and the system's), so `load()` gives each further library
its own copy of the file (a separate file is a separate `dlopen` instance with
its own pointer), cached in the user's cache directory. The extension itself
refuses a second library with one sentence, so a copy loaded by hand can never
crash the first library.

This module needs only the standard library, so it can be used on its own.
"""

import hashlib
import os
import shutil
import sys
import tempfile
import threading

ENTRY_POINT = "sqlite3_sqlitebin_init"
# The entry point's refusal of a second SQLite library (ext/sqlitebin.pyx, sqlitebin_claim_api).
BOUND_ELSEWHERE = "already bound to another SQLite library"
MAX_COPIES = 16  # distinct SQLite libraries in one process, beyond the first

_lock = threading.Lock()
_slots = {}        # connection class -> the copy (0 = the installed file) that last loaded into it
_copy_root = None  # the directory of this build's private copies, chosen once per process

NO_EXTENSION_LOADING = (
    "load(): this Python's sqlite3 module was built without extension loading (no enable_load_extension), "
    "as on macOS's system Python and default pyenv builds; use apsw (sqlitebin.connect()), "
    "pysqlite3 (pip install pysqlite3-binary) or sqlean.py (pip install sqlean.py) instead"
)


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
    """Load the extension into ``conn`` and return it.

    ``conn`` is any sqlite3-compatible connection: ``apsw.Connection``, or a
    DB-API connection from Python's ``sqlite3``, ``pysqlite3`` or ``sqlean``.
    Extension loading is switched on only for the load and off again afterwards
    (https://sqlite.org/c3ref/load_extension.html). Each SQLite library in the
    process gets its own copy of the extension file, so apsw, pysqlite3, sqlean
    and the system's sqlite3 can all use sqlitebin side by side.

    Raises TypeError for an object that is not a connection, RuntimeError for a
    ``sqlite3`` module built without extension loading (macOS's system Python,
    pyenv builds; apsw, pysqlite3 and sqlean always have it), and the module's own
    error when SQLite refuses the load.
    """
    if not (hasattr(conn, "load_extension") or hasattr(conn, "execute")):
        raise TypeError(
            f"load(): expected an apsw, sqlite3, pysqlite3 or sqlean connection, got {type(conn).__name__}")
    if not hasattr(conn, "enable_load_extension"):
        raise RuntimeError(NO_EXTENSION_LOADING)
    key = type(conn)
    with _lock:
        first = _slots.get(key, 0)
    for slot in [first] + [slot for slot in range(MAX_COPIES + 1) if slot != first]:
        path = loadable_path() if slot == 0 else _private_copy(slot)
        try:
            _load_file(conn, path)
        except Exception as error:
            if BOUND_ELSEWHERE in str(error):
                continue  # that copy serves another SQLite library: try the next one
            raise
        with _lock:
            _slots[key] = slot
        return conn
    raise RuntimeError(
        f"load(): every copy of the extension (1 + {MAX_COPIES}) is bound to another SQLite library in this process")


def _load_file(conn, path):
    apsw = type(conn).__module__.split(".")[0] == "apsw"
    conn.enable_load_extension(True)
    try:
        if apsw:
            conn.load_extension(path, ENTRY_POINT)
        else:
            # The DB-API modules take the path alone; SQLite derives the entry point,
            # sqlite3_sqlitebin_init, from the file name, which every copy keeps.
            conn.load_extension(path)
    finally:
        conn.enable_load_extension(False)


def _private_copy(slot):
    """The path of private copy number `slot` of the extension, written on first use."""
    source = loadable_path()
    directory = os.path.join(_copies_directory(source), str(slot))
    path = os.path.join(directory, "sqlitebin.so")
    if os.path.exists(path) and os.path.getsize(path) == os.path.getsize(source):
        return path
    os.makedirs(directory, exist_ok=True)
    # Written beside and renamed into place, so another process never loads a partial file.
    handle, partial = tempfile.mkstemp(dir=directory, prefix=".sqlitebin-", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as target, open(source, "rb") as original:
            shutil.copyfileobj(original, target)
        os.chmod(partial, 0o755)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return path


def _copies_directory(source):
    """One directory per build of the extension (named by its SHA-256), in the user's cache."""
    global _copy_root
    with _lock:
        if _copy_root is None:
            with open(source, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()[:16]
            base = os.environ.get("SQLITEBIN_CACHE_DIR") or os.path.join(
                os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sqlitebin")
            root = os.path.join(base, f"extension-{digest}")
            try:
                os.makedirs(root, exist_ok=True)
                if not os.access(root, os.W_OK):
                    raise PermissionError(root)
            except OSError:
                # No writable cache: a private directory for this process.
                root = tempfile.mkdtemp(prefix=f"sqlitebin-{digest}-")
            _copy_root = root
        return _copy_root


def load_or_warn(conn, warned, note=""):
    """Load the extension into a connection a plugin's host opened (Datasette, sqlite-utils).

    Where that Python's sqlite3 module cannot load extensions, print one warning to stderr (once per
    `warned` list) instead of failing the host.
    """
    try:
        load(conn)
    except RuntimeError as error:
        if not warned:
            warned.append(True)
            print(f"sqlitebin: {error}{note}", file=sys.stderr)
