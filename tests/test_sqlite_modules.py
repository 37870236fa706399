"""sqlitebin.load() with every sqlite3-compatible module, and several SQLite libraries in one process.

apsw, pysqlite3 (the pysqlite3-binary wheel) and sqlean.py each carry their own
SQLite library; Debian's system Python's sqlite3 uses the system's. An extension
keeps the routines of the library that loaded it in one process-wide pointer, so
the one-process tests run in a subprocess: a crash fails the test instead of
killing pytest. The oracle for every search is Collection.search() on apsw, which
test_collection.py checks against NumPy brute force, and hamming() a hand-checked value.
"""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import apsw
import pytest

import sqlitebin

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(sqlitebin.__file__)))
SYSTEM_PYTHON = "/usr/bin/python3"
DBAPI_MODULES = ("pysqlite3.dbapi2", "sqlean", "sqlite3")


def dbapi_module(name):
    try:
        module = importlib.import_module(name)
    except ImportError:
        pytest.skip(f"{name} is not installed (pip install {'pysqlite3-binary' if 'pysqlite3' in name else name})")
    if not hasattr(module.Connection, "enable_load_extension"):
        pytest.skip(f"this Python's {name} module cannot load extensions")
    return module


@pytest.mark.parametrize("name", DBAPI_MODULES)
def test_each_dbapi_module_loads_and_searches(name, tmp_path):
    module = dbapi_module(name)
    db = sqlitebin.connect(tmp_path / "v.db")
    col = db.create_collection("v", dim=16, embedder=None, rescore="float32")
    col.add(vectors=[[1.0] * 16, [-1.0] * 16, [1.0] * 8 + [-1.0] * 8])
    conn = module.connect(str(tmp_path / "v.db"))
    assert sqlitebin.load(conn) is conn
    assert conn.execute("SELECT hamming(x'ff00', x'0f0f')").fetchone()[0] == 8
    query = [1.0] * 15 + [-1.0]
    sql = col.search_sql(k=2)
    rows = conn.execute(sql, col.search_params(col.query_vector(query), k=2)).fetchall()
    assert [(row[0], row[2]) for row in rows] == [(h.id, h.distance) for h in col.search(query, k=2)] == [(1, 1), (3, 7)]
    # Loading is switched off again afterwards.
    with pytest.raises(module.OperationalError):
        conn.load_extension(sqlitebin.loadable_path())
    conn.close()
    db.close()


def test_load_without_extension_loading_says_what_to_use():
    class NoLoading:  # the shape of sqlite3.Connection on macOS's system Python or a pyenv build
        def execute(self, sql):
            raise AssertionError("not reached")

    with pytest.raises(RuntimeError, match=r"^load\(\): this Python's sqlite3 module was built without extension "
                                           r"loading .* use apsw .*pysqlite3-binary.*sqlean\.py"):
        sqlitebin.load(NoLoading())


# Run in a fresh interpreter: one SQLite library per module, loaded in the order of the issue that
# crashed (a DB-API module first, apsw after), then every connection searched in turns.
ONE_PROCESS = textwrap.dedent("""
    import importlib, json, sys
    import apsw, numpy as np, sqlitebin

    path, modules = sys.argv[1], sys.argv[2].split(",")
    connections = {}
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if not hasattr(module.Connection, "enable_load_extension"):
            continue
        first = module.connect(":memory:")  # the first load of the process binds the installed file
        sqlitebin.load(first)
        assert first.execute("SELECT hamming(x'ff00', x'0f0f')").fetchone()[0] == 8
        connections[name] = (module, first)

    db = sqlitebin.connect(path)  # apsw: a different SQLite library from all of the above
    col = db.create_collection("v", dim=64, embedder=None)
    rng = np.random.default_rng(16)
    vectors = rng.standard_normal((5000, 64)).astype(np.float32)
    col.add(vectors=vectors)
    queries = rng.standard_normal((4, 64)).astype(np.float32)
    expected = [[(h.id, h.distance) for h in col.search(q, k=10)] for q in queries]
    code = np.packbits(queries[0] > 0).tobytes()
    codes = np.packbits(vectors > 0, axis=1)  # the index's codes (ids 1..5000), computed independently
    distances = np.unpackbits(codes ^ np.frombuffer(code, np.uint8), axis=1).sum(axis=1)
    nearest = sorted(zip(distances.tolist(), range(1, len(distances) + 1)))[:5]

    handles = {"apsw": db.conn}
    for name, (module, first) in connections.items():
        conn = module.connect(path)
        sqlitebin.load(conn)
        handles[name], handles[name + " (first)"] = conn, first
    second = apsw.Connection(path)
    sqlitebin.load(second)
    handles["apsw (second)"] = second

    sql = col.search_sql(k=10)
    versions = {}
    for turn in range(3):
        for name, conn in handles.items():
            assert conn.execute("SELECT hamming(x'ff00', x'0f0f')").fetchone()[0] == 8, name
            versions[name] = conn.execute("SELECT sqlite_version()").fetchone()[0]
            if name.endswith("(first)"):
                continue  # an in-memory database: no collection in it
            for query, want in zip(queries, expected):
                got = conn.execute(sql, col.search_params(col.query_vector(query), k=10)).fetchall()
                assert [(row[0], row[2]) for row in got] == want, (name, turn)
            rows = conn.execute("SELECT distance, rowid FROM v_index WHERE vector MATCH ? AND k = 5 "
                                "AND candidates = 'hamming' AND rescore = 'none'", (code,)).fetchall()
            assert [tuple(row) for row in rows] == nearest, (name, rows, nearest)
    print(json.dumps(versions))
""")


def run_one_process(python, tmp_path, modules, env=None):
    script = tmp_path / "one_process.py"
    script.write_text(ONE_PROCESS)
    result = subprocess.run([python, str(script), str(tmp_path / "v.db"), ",".join(modules)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, f"exit status {result.returncode}\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def test_apsw_pysqlite3_sqlean_in_one_process(tmp_path):
    for name in ("pysqlite3.dbapi2", "sqlean"):
        dbapi_module(name)
    versions = run_one_process(sys.executable, tmp_path, DBAPI_MODULES)
    assert {"apsw", "pysqlite3.dbapi2", "sqlean", "apsw (second)"} <= set(versions)


def system_python_environment():
    """Debian's system Python and an environment giving it this one's packages, or a skip saying why not."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is missing (apt-get install python3)")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import sys, sqlite3; print('%d.%d' % sys.version_info[:2], "
                                                 "hasattr(sqlite3.Connection, 'enable_load_extension'))"],
                           capture_output=True, text=True, check=True).stdout.split()
    if probe[1] != "True":
        pytest.skip(f"{SYSTEM_PYTHON}'s sqlite3 cannot load extensions")
    if probe[0] != "%d.%d" % sys.version_info[:2]:
        pytest.skip(f"{SYSTEM_PYTHON} is Python {probe[0]}: apsw, NumPy and the others here are built for another version")
    # The system Python with this environment's packages (same Python version, so the same ABI).
    paths = [PACKAGE_ROOT] + [p for p in sys.path if p.endswith("site-packages")]
    return SYSTEM_PYTHON, dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONNOUSERSITE="1")


def test_system_python_sqlite3_with_the_others_in_one_process(tmp_path):
    """Debian's /usr/bin/python3 loads extensions into the system's libsqlite3: four libraries at once."""
    python, env = system_python_environment()
    versions = run_one_process(python, tmp_path, ("sqlite3", "pysqlite3.dbapi2", "sqlean"), env=env)
    expected = {"apsw", "sqlite3"} | {name for name in ("pysqlite3.dbapi2", "sqlean") if importlib.util.find_spec(
        name.split(".")[0])}
    assert expected <= set(versions)


REFUSAL = textwrap.dedent("""
    import apsw, pysqlite3.dbapi2 as pysqlite3, sqlitebin
    path = sqlitebin.loadable_path()
    first = pysqlite3.connect(":memory:")
    first.enable_load_extension(True)
    first.load_extension(path)          # by hand: this file is now bound to pysqlite3's SQLite
    other = apsw.Connection(":memory:")
    other.enable_load_extension(True)
    try:
        other.load_extension(path, sqlitebin.ENTRY_POINT)
    except apsw.ExtensionLoadingError as error:
        print(error)
    else:
        raise SystemExit("a second SQLite library was accepted")
    assert first.execute("SELECT hamming(x'ff00', x'0f0f')").fetchone()[0] == 8
    sqlitebin.load(other)               # a private copy
    assert other.execute("SELECT hamming(x'ff00', x'0f0f')").fetchone()[0] == 8
    assert first.execute("SELECT bit_count(x'ff01')").fetchone()[0] == 9
""")


def test_entry_point_refuses_a_second_library_and_the_first_keeps_working(tmp_path):
    dbapi_module("pysqlite3.dbapi2")
    result = subprocess.run([sys.executable, "-c", REFUSAL], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("sqlitebin: this copy of the extension is already bound to another SQLite library in this process; "
            "load a separate copy of the file into this one (sqlitebin.load() does)") in result.stdout


def test_private_copies_live_in_the_cache_directory(tmp_path):
    env = dict(os.environ, SQLITEBIN_CACHE_DIR=str(tmp_path / "cache"))
    code = ("import apsw, sqlite3, sqlitebin, pysqlite3.dbapi2 as p\n"
            "first = sqlitebin.load(p.connect(':memory:')); second = sqlitebin.load(apsw.Connection(':memory:'))\n")
    dbapi_module("pysqlite3.dbapi2")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    copies = list((tmp_path / "cache").glob("extension-*/*/sqlitebin.so"))
    assert len(copies) == 1 and copies[0].parent.name == "1"
    assert copies[0].read_bytes() == open(sqlitebin.loadable_path(), "rb").read()


def test_load_rejects_other_objects():
    with pytest.raises(TypeError, match=r"^load\(\): expected an apsw, sqlite3, pysqlite3 or sqlean connection, got int$"):
        sqlitebin.load(42)


def test_apsw_loads_twice():
    conn = apsw.Connection(":memory:")
    sqlitebin.load(conn)
    sqlitebin.load(conn)
    assert conn.execute("SELECT hamming(x'ff00', x'0f0f')").fetchone()[0] == 8


def test_the_shell_loads_the_same_file_twice():
    """One SQLite library loading the file again is no second library: accepted."""
    import shutil

    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 command line is not installed")
    path = sqlitebin.loadable_path()
    result = subprocess.run([shell, ":memory:", f".load {path}", f".load {path}", "SELECT hamming(x'ff00', x'0f0f')"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "8"
