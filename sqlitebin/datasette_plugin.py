"""The Datasette plugin: sqlitebin's SQL functions in every connection, and a search page per collection.

Installed with ``pip install 'sqlitebin[datasette]'`` and registered through the
``datasette`` entry point. It adds:

- the extension in every connection Datasette opens (`prepare_connection`), so
  `hamming()`, the `sqlitebin` virtual table and the rest work in Datasette's SQL editor;
- `/-/sqlitebin`: the sqlitebin collections of every database;
- `/-/sqlitebin/DATABASE/COLLECTION?q=...&mode=hybrid&k=10`: a search page (query box,
  mode, k; results with their scores, each linked to its row), and the same with
  `.json` appended to the path for the JSON form.

Searches run `Collection.search()` through sqlitebin's own apsw connection to the
database file (read-only, in Datasette's thread pool), so the page works even
where Datasette's sqlite3 module cannot load extensions.
"""

import asyncio
import json
import os
import threading
import urllib.parse
from pathlib import Path

from datasette import hookimpl
from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import NotFound, Response

from .collection import DEFAULT_K, MODES
from .database import connect
from .extension import load_or_warn

MAX_K = 100  # results on one page
SNIPPET_CHARACTERS = 200
TEMPLATE = Path(__file__).resolve().parent / "templates" / "sqlitebin_search.html"

_lock = threading.Lock()
_databases = {}   # file path -> (sqlitebin Database, its lock)
_warned = []


@hookimpl
def prepare_connection(conn):
    """Load the extension into each connection Datasette opens."""
    load_or_warn(conn, _warned, "; the search pages still work")


@hookimpl
def register_routes():
    return [
        (r"^/-/sqlitebin$", collections_view),
        (r"^/-/sqlitebin/(?P<database>[^/]+)/(?P<collection>[^/]+?)(?P<format>\.json)?$", search_view),
    ]


@hookimpl
def database_actions(datasette, actor, database):
    async def inner():
        path = _database_path(datasette, database)
        if path is None or not await datasette.permission_allowed(actor, "view-database", database, default=True):
            return []
        names = await _run(datasette, _collections, path)
        return [{"href": _search_url(datasette, database, name), "label": f"Search sqlitebin collection {name}"}
                for name in names]

    return inner


# ----------------------------------------------------------------------
# Views


async def collections_view(datasette, request):
    """Every database's sqlitebin collections, each linked to its search page."""
    await _check_view(datasette, request, None)
    databases = []
    for name in datasette.databases:
        path = _database_path(datasette, name)
        if path is None or not await datasette.permission_allowed(
                request.actor, "view-database", name, default=True):
            continue
        names = await _run(datasette, _collections, path)
        if names:
            databases.append({"name": name, "collections": [
                {"name": c, "url": _search_url(datasette, name, c)} for c in names]})
    return Response.html(await _render(datasette, request, {"listing": databases}))


async def search_view(datasette, request):
    # Datasette routes on the raw path: names arrive tilde-encoded (its convention) or percent-encoded.
    database = tilde_decode(urllib.parse.unquote(request.url_vars["database"]))
    name = tilde_decode(urllib.parse.unquote(request.url_vars["collection"]))
    as_json = request.url_vars.get("format") == ".json"
    path = _database_path(datasette, database)
    if path is None:
        raise NotFound(f"Database not found or not a file: {database}")
    await _check_view(datasette, request, database, f"{name}_documents")
    if name not in await _run(datasette, _collections, path):
        raise NotFound(f"No sqlitebin collection named {name!r} in {database}")
    query = request.args.get("q", "")
    mode = request.args.get("mode") or await _run(datasette, _default_mode, path, name)
    k_text = request.args.get("k") or str(DEFAULT_K)
    error, hits = None, []
    try:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not k_text.isdigit() or not 1 <= int(k_text) <= MAX_K:
            raise ValueError(f"k must be a whole number from 1 to {MAX_K}, got {k_text!r}")
        if query.strip():
            hits = await _run(datasette, _search, path, name, query, mode, int(k_text))
    except ValueError as exc:
        error = str(exc).replace("Collection.search(): ", "")
    documents = f"{name}_documents"
    results = [{
        "rank": rank,
        "id": hit.id,
        "score": hit.score,
        "distance": hit.distance,
        "text": hit.text,
        "metadata": hit.metadata,
        "url": datasette.absolute_url(request, datasette.urls.row(database, documents, tilde_encode(str(hit.id)))),
    } for rank, hit in enumerate(hits, start=1)]
    if as_json:
        body = {"ok": error is None, "database": database, "collection": name, "query": query, "mode": mode,
                "k": int(k_text) if k_text.isdigit() else None, "results": results}
        if error is not None:
            body["error"] = error
        return Response.json(body, status=400 if error else 200)
    for result in results:
        text = result["text"] or ""
        result["snippet"] = text if len(text) <= SNIPPET_CHARACTERS else text[:SNIPPET_CHARACTERS].rstrip() + "…"
        result["metadata_json"] = json.dumps(result["metadata"], ensure_ascii=False) if result["metadata"] else ""
    json_url = datasette.urls.path(f"/-/sqlitebin/{tilde_encode(database)}/{tilde_encode(name)}.json")
    if request.query_string:
        json_url += "?" + request.query_string
    context = {
        "database": database, "collection": name, "query": query, "mode": mode, "modes": MODES, "k": k_text,
        "max_k": MAX_K, "error": error, "results": results, "searched": bool(query.strip()) and error is None,
        "json_url": json_url, "documents_url": datasette.urls.table(database, documents),
        "database_url": datasette.urls.database(database),
    }
    return Response.html(await _render(datasette, request, context))


# ----------------------------------------------------------------------
# Helpers


async def _render(datasette, request, context):
    template = datasette.jinja_env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return await datasette.render_template(template, context, request=request)


async def _check_view(datasette, request, database, table=None):
    """Datasette's own rules: results show the documents table, so they need the right to view it."""
    permissions = ["view-instance"]
    if database is not None:
        permissions.insert(0, ("view-database", database))
    if table is not None:
        permissions.insert(0, ("view-table", (database, table)))
    await datasette.ensure_permissions(request.actor, permissions)


async def _run(datasette, function, *args):
    return await asyncio.get_running_loop().run_in_executor(getattr(datasette, "executor", None), function, *args)


def _database_path(datasette, name):
    try:
        database = datasette.get_database(name)
    except KeyError:
        return None
    if database.is_memory or not database.path or not os.path.exists(database.path):
        return None
    return database.path


def _search_url(datasette, database, collection):
    return datasette.urls.path(f"/-/sqlitebin/{tilde_encode(database)}/{tilde_encode(collection)}")


def _database(path):
    """sqlitebin's read-only connection to `path`, opened once, with a lock: one search at a time on it."""
    with _lock:
        if path not in _databases:
            _databases[path] = (connect(path, readonly=True, create=False), threading.Lock())
        return _databases[path]


def _collections(path):
    database, lock = _database(path)
    with lock:
        return database.collections()


def _default_mode(path, name):
    """The mode Collection.search() takes for a text query when given none (hybrid where there is a text index)."""
    database, lock = _database(path)
    with lock:
        return database.collection(name).default_mode("text")


def _search(path, name, query, mode, k):
    database, lock = _database(path)
    with lock:
        collection = database.collection(name)
        if collection.embedder is None and mode != "keyword":
            raise ValueError(
                f"collection {name!r} has no embedder this server can load "
                f"({collection.embedder_name or 'vectors only'}): only mode=keyword can search it by text")
        return collection.search(query, k=k, mode=mode)
