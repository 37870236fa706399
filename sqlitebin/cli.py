"""The `sqlitebin` command line (also `python -m sqlitebin`): index files, search, inspect, demo.

Each command is a thin layer over the Python API: `index` reads files into documents and calls
`Collection.upsert()`, `search` calls `Collection.search()` (or prints `Collection.search_sql()`), `info`
shows `Collection.info()`, `path` prints `loadable_path()`. Documents get deterministic integer ids (the
input's own id, or a hash of it or of the text), so indexing the same input again replaces rather than
duplicates. A user's mistake ends the command with one line, `Error: ...`, and exit code 1 (click's usage
errors keep code 2, Ctrl-C during `index` gives 130); `sqlitebin --debug COMMAND` shows the traceback instead.
"""

import codecs
import contextlib
import csv
import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import apsw
import click

from .collection import (
    CANDIDATE_KINDS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_K,
    DEFAULT_OVERSAMPLE,
    MAX_K,
    MAX_OVERSAMPLE,
    MODES,
    RESCORE_KINDS,
    STORED_KINDS,
)
from .bench import bench_command
from .database import connect
from .errors import InvalidWhere, MissingParameter, SqlitebinError
from .schema import SCHEMA_VERSION
from .evaluate import eval_command
from .embedding import WORDLLAMA_DIMS
from .extension import loadable_path
from .version import __version__

DEFAULT_COLLECTION = "documents"
DEFAULT_DIM = 256
DEMO_COLLECTION = "debian"
DEMO_QUERIES = 4
FORMATS = ("txt", "jsonl", "csv")
SPLITS = ("paragraph", "line", "file")
# Which files each format reads from a directory; "auto" reads plain text and Markdown.
FORMAT_SUFFIXES = {"txt": (".txt", ".md"), "jsonl": (".jsonl", ".ndjson", ".json"), "csv": (".csv",)}
EXIT_INTERRUPTED = 130
MAX_ID_WIDTH = 30
CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default, 128 KiB, is less than some documents
# Library messages start with the Python function that raised them ("Collection.search(): ..."), which
# means nothing on the command line.
FUNCTION_PREFIX = re.compile(r"^[A-Za-z_][\w.]*\(\): ")
CANONICAL_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


# ----------------------------------------------------------------------
# Document ids


def _hash63(text):
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def content_id(text):
    """The id of a document that has none of its own: a 63-bit BLAKE2b hash of its text, never negative.

    The same text always gets the same id, so indexing it again replaces the stored copy.
    """
    return _hash63(text)


def source_id(value):
    """The integer id for an id taken from the input (a JSON or CSV id field).

    A 64-bit integer, or a string that is one written canonically ("42", not "042"), is used as it is; any
    other string (or a float) becomes a 63-bit BLAKE2b hash of its text, never negative. Raises TypeError
    for other values (booleans, null, lists, objects) and ValueError for an integer beyond 64 bits.
    """
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise TypeError(f"an id must be a string or an integer, got {json.dumps(value)}")
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"an integer id must fit in 64 bits, got {value}")
        return value
    text = value if isinstance(value, str) else repr(value)
    if CANONICAL_INTEGER.fullmatch(text) and -(2**63) <= int(text) < 2**63:
        return int(text)
    return _hash63(text)


# ----------------------------------------------------------------------
# Reading input files


@dataclass
class Document:
    id: int
    text: str
    metadata: dict
    where: str  # "file line N", for messages


@dataclass
class ReadOptions:
    format: str  # "auto" or one of FORMATS
    split: str
    text_field: str
    id_field: str
    id_field_required: bool
    encoding: str


def _format_of(path, chosen):
    if chosen != "auto":
        return chosen
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = os.path.splitext(name)[1]
    for format_name in ("jsonl", "csv"):
        if suffix in FORMAT_SUFFIXES[format_name]:
            return format_name
    return "txt"


def input_files(inputs, chosen_format):
    """The files to read, in order: named files as given, directories searched (sorted) for matching files."""
    files = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            suffixes = FORMAT_SUFFIXES["txt" if chosen_format == "auto" else chosen_format]
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and p.name.lower().removesuffix(".gz").endswith(suffixes)
            )
            if not found:
                raise click.ClickException(f"no {' or '.join(suffixes)} files in directory {given}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise click.ClickException(f"{given} is not a regular file or directory")
        else:
            raise click.ClickException(f"no such file or directory: {given}")
    return files


def _read_text(path, encoding):
    try:
        data = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise click.ClickException(f"{path} is not a valid gzip file ({error})") from None
    except OSError as error:
        raise click.ClickException(f"cannot read {path}: {error.strerror or error}") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise click.ClickException(
            f"{path} line {line} is not valid {encoding} text (byte 0x{data[error.start]:02x}); "
            "convert the file or pass --encoding"
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _text_documents(path, text, split):
    source = str(path)
    if split == "file":
        if text.strip():
            yield Document(0, text.strip(), {"source": source}, source)
        return
    if split == "line":
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                yield Document(0, line.strip(), {"source": source, "line": number}, f"{source} line {number}")
        return
    paragraph, first_line = [], None
    for number, line in enumerate(text.split("\n") + [""], start=1):
        if line.strip():
            if not paragraph:
                first_line = number
            paragraph.append(line.rstrip())
        elif paragraph:
            body = "\n".join(paragraph).strip()
            yield Document(0, body, {"source": source, "line": first_line}, f"{source} line {first_line}")
            paragraph = []


def _record_document(record, where, source, options):
    text = record.get(options.text_field)
    if options.text_field not in record:
        fields = ", ".join(map(str, record)) or "none"
        raise click.ClickException(
            f"{where}: no {options.text_field!r} field (fields: {fields}); choose one with --text-field"
        )
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise click.ClickException(f"{where}: field {options.text_field!r} is {type(text).__name__}, not text")
    metadata = {key: value for key, value in record.items() if key not in (options.text_field, options.id_field)}
    metadata["source"] = source
    raw_id = record.get(options.id_field)
    if raw_id is None or raw_id == "":
        if options.id_field_required:
            raise click.ClickException(f"{where}: no {options.id_field!r} field (the --id-field)")
        return Document(content_id(text.strip()), text.strip(), metadata, where)
    try:
        document_id = source_id(raw_id)
    except (TypeError, ValueError) as error:
        raise click.ClickException(f"{where}: field {options.id_field!r}: {error}") from None
    metadata["source_id"] = raw_id
    return Document(document_id, text.strip(), metadata, where)


def _jsonl_documents(path, text, options):
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except ValueError as error:
            raise click.ClickException(f"{where}: not valid JSON ({error})") from None
        if not isinstance(record, dict):
            raise click.ClickException(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield _record_document(record, where, str(path), options)


def _csv_documents(path, text, options):
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = reader.fieldnames or []
        if options.text_field not in columns:
            raise click.ClickException(
                f"{path} has no {options.text_field!r} column (columns: {', '.join(columns) or 'none'}); "
                "choose one with --text-field"
            )
        if options.id_field_required and options.id_field not in columns:
            raise click.ClickException(f"{path} has no {options.id_field!r} column (the --id-field)")
        for row in reader:
            row.pop(None, None)  # cells beyond the header
            yield _record_document(row, f"{path} line {reader.line_num}", str(path), options)
    except csv.Error as error:
        raise click.ClickException(f"{path} line {reader.line_num}: {error}") from None


def read_documents(path, options):
    """The documents in one file, each with its id already derived."""
    text = _read_text(path, options.encoding)
    format_name = _format_of(path, options.format)
    if format_name == "jsonl":
        return list(_jsonl_documents(path, text, options))
    if format_name == "csv":
        return list(_csv_documents(path, text, options))
    documents = list(_text_documents(path, text, options.split))
    for document in documents:
        document.id = content_id(document.text)
    return documents


def gather_documents(files, options):
    """All documents from `files`, without empty texts and without repeated ids (the first one is kept)."""
    documents, seen = [], {}
    empty, repeated = 0, []
    for path in files:
        for document in read_documents(path, options):
            if not document.text:
                empty += 1
            elif document.id in seen:
                repeated.append((document, seen[document.id]))
            else:
                seen[document.id] = document.where
                documents.append(document)
    if empty:
        click.echo(f"Skipped {empty:,} document{'s' if empty != 1 else ''} with no text.", err=True)
    if repeated:
        document, first = repeated[0]
        click.echo(
            f"Skipped {len(repeated):,} repeated document{'s' if len(repeated) != 1 else ''} "
            f"(same id or text as an earlier one; first: {document.where} repeats {first}).",
            err=True,
        )
    return documents


# ----------------------------------------------------------------------
# Databases, errors and output


@contextlib.contextmanager
def open_database(path, *, create):
    """Open `path` for writing (creating it) or, with `create=False`, read-only and only if it exists."""
    if path != ":memory:" and os.path.isdir(path):
        raise click.ClickException(f"{path} is a directory, not a database file")
    if not create and path != ":memory:" and not os.path.exists(path):
        raise click.ClickException(f"no database at {path}; create one with: sqlitebin index {path} FILE")
    try:
        database = connect(path, readonly=not create, create=create)
    except apsw.NotADBError:
        raise click.ClickException(f"{path} is not a SQLite database") from None
    except apsw.CantOpenError:
        raise click.ClickException(
            f"cannot open database {path}: check that its directory exists and is writable") from None
    try:
        try:
            database.collections()  # a file that is not SQLite fails here when opened read-only
        except apsw.NotADBError:
            raise click.ClickException(f"{path} is not a SQLite database") from None
        except apsw.CantOpenError:  # e.g. a WAL database on a read-only mount, which has no -shm file
            raise click.ClickException(
                f"cannot open database {path}: check that its directory exists and is writable") from None
        yield database
    finally:
        database.close()


def open_collection(database, path, name):
    """The collection `name` of an open database; with no name, the only one, or "documents"."""
    names = database.collections()
    if name is None:
        if not names:
            raise click.ClickException(f"{path} has no collections; add documents with: sqlitebin index {path} FILE")
        if len(names) == 1:
            name = names[0]
        elif DEFAULT_COLLECTION in names:
            name = DEFAULT_COLLECTION
        else:
            raise click.ClickException(
                f"{path} has {len(names)} collections ({', '.join(names)}); choose one with --collection"
            )
    if name not in names:
        known = ", ".join(names) or "none"
        raise click.ClickException(f"no collection named {name!r} in {path} (collections: {known})")
    return database.collection(name)


def describe(error):
    """One line for a library exception: its message without the Python function name."""
    if isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    else:
        message = str(error) or type(error).__name__
    message = FUNCTION_PREFIX.sub("", message.strip().splitlines()[0] if message.strip() else message)
    if isinstance(error, apsw.Error):
        return f"SQLite: {message}"
    if isinstance(error, (SqlitebinError, ValueError, TypeError, KeyError, OSError)):
        return message
    return f"unexpected {type(error).__name__}: {message} (run `sqlitebin --debug ...` for the traceback)"


def debugging():
    """True under `sqlitebin --debug`: errors a command would reword are raised as they are."""
    context = click.get_current_context(silent=True)
    return bool(context and context.find_root().params.get("debug"))


class CommandGroup(click.Group):
    """A click group that turns exceptions from the library into one `Error:` line unless `--debug` is on."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            if isinstance(error, OSError) and error.errno == errno.EPIPE:
                raise  # click's own handling: the reader of a pipe went away
            raise click.ClickException(describe(error)) from None


def human_bytes(count):
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count:,} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count:,} B"


def snippet(text, width):
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: max(0, width - 3)].rstrip() + "..."


def hit_label(hit):
    """What the id column shows: the input's own id, else the file and line the text came from, else the id."""
    metadata = hit.metadata or {}
    if "source_id" in metadata:
        return str(metadata["source_id"])
    if "source" in metadata:
        return f"{metadata['source']}:{metadata['line']}" if "line" in metadata else str(metadata["source"])
    return str(hit.id)


def _fit(label, width):
    # Keep the end, where a file name and line number are.
    return label if len(label) <= width else "..." + label[-(width - 3):]


def hit_lines(hits, label=hit_label, heading="id", width=None):
    """A table of hits: rank, score, id, and as much of the text as the terminal has room for."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    labels = [_fit(label(hit), MAX_ID_WIDTH) for hit in hits]
    id_width = max([len(heading)] + [len(text) for text in labels])
    text_width = max(20, width - (4 + 2 + 6 + 2 + id_width + 2) - 1)
    lines = [f"{'rank':>4}  {'score':>6}  {heading:<{id_width}}  text"]
    for rank, (hit, text) in enumerate(zip(hits, labels), start=1):
        lines.append(f"{rank:>4}  {hit.score:>6.3f}  {text:<{id_width}}  {snippet(hit.text, text_width)}")
    return lines


def hit_json(rank, hit):
    return {"rank": rank, "id": hit.id, "score": hit.score, "distance": hit.distance, "text": hit.text,
            "metadata": hit.metadata}


def show_progress(flag):
    return sys.stderr.isatty() if flag is None else flag


def upsert_with_progress(collection, documents, *, batch_size, progress):
    """Upsert `documents` with a progress bar on stderr; return how many were committed and whether all were.

    Each batch is its own transaction in the library, so after Ctrl-C every finished batch is kept.
    """
    from tqdm import tqdm

    committed = 0
    bar = tqdm(total=len(documents), unit="doc", desc="Indexing", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, leave=False)

    def on_batch(done, total):
        nonlocal committed
        bar.update(done - committed)
        committed = done

    try:
        collection.upsert([d.text for d in documents], ids=[d.id for d in documents],
                          metadata=[d.metadata for d in documents], batch_size=batch_size, progress=on_batch)
    except KeyboardInterrupt:
        bar.close()
        # Count from the database: Ctrl-C can land after a batch's commit but before its progress call.
        wanted = {d.id: (d.text, d.metadata) for d in documents}
        stored = collection.get(list(wanted))
        return sum((hit.text, hit.metadata) == wanted[hit.id] for hit in stored), False
    finally:
        bar.close()
    return committed, True


def _interrupted(ctx, committed, total, path):
    if committed:
        message = (f"Interrupted: {committed:,} of {total:,} documents were committed to {path}; "
                   "run the same command again to index the rest.")
    else:
        message = "Interrupted before the first batch was committed; no documents were written."
    click.echo(message, err=True)
    ctx.exit(EXIT_INTERRUPTED)


# ----------------------------------------------------------------------
# Shared options


def collection_option(help_text):
    return click.option("-c", "--collection", "collection_name", metavar="NAME", help=help_text)


def json_option(help_text):
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def progress_option(function):
    return click.option(
        "--progress/--no-progress", default=None,
        help="Show a progress bar on stderr (default: when stderr is a terminal).",
    )(function)


def batch_size_option(function):
    return click.option(
        "--batch-size", type=click.IntRange(1, 1_000_000), default=DEFAULT_BATCH_SIZE, show_default=True,
        help="Documents embedded and committed per transaction; Ctrl-C keeps every finished batch.",
    )(function)


def mode_option(function):
    return click.option(
        "--mode", type=click.Choice(MODES), default="vector", show_default=True,
        help="Vector search, keyword (full-text) search, or both combined.",
    )(function)


def _check_encoding(ctx, param, value):
    try:
        codecs.lookup(value)
    except LookupError:
        raise click.BadParameter(f"unknown encoding {value!r}") from None
    return value


# ----------------------------------------------------------------------
# Commands


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="sqlitebin")
@click.option("--debug", is_flag=True, envvar="SQLITEBIN_DEBUG",
              help="Show the Python traceback of an error instead of one line (or set SQLITEBIN_DEBUG=1).")
def main(debug):
    """Binary-quantized embedding search inside SQLite.

    Index text files into a SQLite database, search them by meaning, and inspect what is stored.

    \b
    Example:
        sqlitebin index docs.db notes/
        sqlitebin search docs.db "embedded database" -k 5
        sqlitebin demo
    """


@main.command()
@click.argument("db_path", metavar="DB", type=click.Path(dir_okay=False))
@click.argument("inputs", metavar="FILE_OR_DIR...", nargs=-1, required=True)
@collection_option(f"Collection to add to, created when missing.  [default: {DEFAULT_COLLECTION}]")
@click.option("--dim", type=click.Choice([str(d) for d in WORDLLAMA_DIMS]), default=None,
              help=f"Embedding dimensions of a new collection.  [default: {DEFAULT_DIM}]")
@click.option("--rescore", type=click.Choice(STORED_KINDS), default=None,
              help="Rescoring vectors a new collection stores.  [default: int8]")
@click.option("--format", "format_name", type=click.Choice(("auto",) + FORMATS), default="auto", show_default=True,
              help="Input format; auto goes by file extension (.jsonl/.json, .csv, anything else is text).")
@click.option("--split", type=click.Choice(SPLITS), default="paragraph", show_default=True,
              help="Text files: one document per paragraph (blank-line separated), per line, or per file.")
@click.option("--text-field", default="text", show_default=True, help="JSON field or CSV column with the text.")
@click.option("--id-field", default="id", show_default=True,
              help="JSON field or CSV column with each document's id; without one, the id is a hash of the text.")
@click.option("--encoding", default="utf-8", show_default=True, callback=_check_encoding,
              help="Text encoding of the input files.")
@batch_size_option
@progress_option
@click.pass_context
def index(ctx, db_path, inputs, collection_name, dim, rescore, format_name, split, text_field, id_field, encoding,
          batch_size, progress):
    """Embed the documents in FILE_OR_DIR... and store them in DB.

    Reads plain text and Markdown (one document per paragraph, or per line with --split line), JSON lines
    (.jsonl, .jsonl.gz) and CSV; a directory is searched for .txt and .md files. A document's id is the
    input's id field (an integer as is, anything else hashed) or a hash of its text, so running the same
    command again adds nothing twice: unchanged documents are skipped, changed ones replaced.
    Ctrl-C keeps every committed batch (exit code 130).

    \b
    Example:
        sqlitebin index docs.db notes/ --collection notes
        sqlitebin index docs.db corpus.jsonl.gz --id-field id --text-field text
        sqlitebin index docs.db poems.txt --split line
    """
    name = collection_name or DEFAULT_COLLECTION
    options = ReadOptions(
        format=format_name, split=split, text_field=text_field, id_field=id_field, encoding=encoding,
        id_field_required=ctx.get_parameter_source("id_field") is not click.core.ParameterSource.DEFAULT,
    )
    written = None  # set once the upsert has finished
    try:
        files = input_files(inputs, format_name)
        documents = gather_documents(files, options)
        if not documents:
            raise click.ClickException(f"no documents with text in {', '.join(inputs)}")
        with open_database(db_path, create=True) as database:
            if name in database.collections():
                collection = database.collection(name)
                if dim is not None and int(dim) != collection.dim:
                    raise click.ClickException(
                        f"collection {name!r} in {db_path} has {collection.dim} dimensions, not {dim}; "
                        "leave out --dim or choose another --collection"
                    )
                if rescore is not None and rescore != collection.rescore:
                    raise click.ClickException(
                        f"collection {name!r} in {db_path} stores {collection.rescore} vectors, not {rescore}; "
                        "leave out --rescore or choose another --collection"
                    )
            else:
                collection = database.create_collection(name, int(dim or DEFAULT_DIM), rescore=rescore or "int8")
            stored = {hit.id: hit for hit in collection.get([d.id for d in documents])}
            changed = [d for d in documents
                       if d.id not in stored or (stored[d.id].text, stored[d.id].metadata) != (d.text, d.metadata)]
            new = sum(d.id not in stored for d in changed)
            start = time.perf_counter()
            committed, finished = upsert_with_progress(collection, changed, batch_size=batch_size,
                                                       progress=show_progress(progress))
            if not finished:
                _interrupted(ctx, committed, len(changed), db_path)
            written = committed
            seconds = time.perf_counter() - start
            total = len(collection)
    except KeyboardInterrupt:
        # An interrupt during the upsert was reported above with the count committed; these come before or after it.
        if written is None:
            click.echo("Interrupted before any document was written.", err=True)
        else:
            click.echo(f"Interrupted after all {written:,} documents were committed.", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    rate = f", {len(changed) / seconds:,.0f} docs/s" if changed and seconds > 0 else ""
    click.echo(
        f"Indexed {len(documents):,} documents from {len(files):,} file{'s' if len(files) != 1 else ''} "
        f"into {db_path} collection {name!r}: {new:,} new, {len(changed) - new:,} updated, "
        f"{len(documents) - len(changed):,} unchanged ({seconds:.1f} s{rate}); {total:,} documents in all."
    )


@main.command()
@click.argument("db_path", metavar="DB", type=click.Path(dir_okay=False))
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, MAX_K), default=DEFAULT_K, show_default=True,
              help="How many results.")
@collection_option(f"Collection to search.  [default: the only one, or {DEFAULT_COLLECTION}]")
@click.option("--oversample", type=click.IntRange(1, MAX_OVERSAMPLE), default=DEFAULT_OVERSAMPLE,
              show_default=True, help="k x oversample candidates come from the binary codes, then are rescored.")
@click.option("--rescore", type=click.Choice(RESCORE_KINDS), default=None,
              help="Rescore candidates with the stored int8 or float32 vectors, the bits, or not at all.  "
                   "[default: what the collection stores]")
@click.option("--candidates", type=click.Choice(CANDIDATE_KINDS), default="asymmetric", show_default=True,
              help="Candidate score: the float query against the codes, or Hamming distance between codes.")
@mode_option
@click.option("--where", metavar="SQL",
              help="SQL condition on the documents (columns id, text, metadata), applied before the top k.")
@click.option("-p", "--param", "params", nargs=2, multiple=True, metavar="NAME VALUE",
              help="A :NAME parameter for --where (the value is text; CAST it for numbers). Repeatable.")
@json_option("One JSON object per result (rank, id, score, distance, text, metadata).")
@click.option("--sql", "show_sql", is_flag=True, help="Print the SQL the search would run, and stop.")
def search(db_path, query, k, collection_name, oversample, rescore, candidates, where, params, as_json,
           show_sql, mode):
    """Find the k documents in DB closest in meaning to QUERY.

    Prints a table of rank, score, id (the input's own id, or file:line for text files) and the start of
    the text; scores are cosine similarities, higher is better. --json gives every field, the integer id too.

    \b
    Example:
        sqlitebin search docs.db "embedded database" -k 5
        sqlitebin search docs.db "image editor" --json
        sqlitebin search docs.db "parser" --where "json_extract(metadata, '$.source') = :file" -p file notes.md
        sqlitebin search docs.db "parser" --sql
    """
    if not query.strip():
        raise click.ClickException("the query is empty; give some words to search for")
    options = {"k": k, "oversample": oversample, "rescore": rescore, "candidates": candidates, "where": where,
               "mode": mode}
    with open_database(db_path, create=False) as database:
        collection = open_collection(database, db_path, collection_name)
        if collection.embedder is None and not show_sql:
            if collection.embedder_name is None:
                reason = "stores vectors only (no embedder), so it cannot be searched by text"
            else:
                reason = f"was built with embedder {collection.embedder_name!r}, which the command line cannot load"
            raise click.ClickException(
                f"collection {collection.name!r} in {db_path} {reason}; search it from Python with a query vector")
        try:
            if show_sql:
                click.echo(collection.search_sql(**options))
                return
            hits = collection.search(query, params=dict(params), **options)
        except MissingParameter as error:
            if debugging():
                raise
            name = error.parameter
            raise click.ClickException(f"--where uses :{name} but gives it no value; add -p {name} VALUE") from None
        except InvalidWhere as error:
            if debugging():
                raise
            raise click.ClickException("--" + describe(error)) from None
        except apsw.SQLError as error:
            if where is None or debugging():
                raise
            raise click.ClickException(f"--where {where!r} is not valid SQL: {error}") from None
    if as_json:
        for rank, hit in enumerate(hits, start=1):
            click.echo(json.dumps(hit_json(rank, hit), ensure_ascii=False))
    elif hits:
        click.echo("\n".join(hit_lines(hits)))
    else:
        click.echo("No documents matched.", err=True)


@main.command()
@click.argument("db_path", metavar="DB", type=click.Path(dir_okay=False))
@json_option("Print one JSON object: path, file sizes, and each collection's settings and sizes.")
def info(db_path, as_json):
    """Show the collections in DB: documents, dimensions, embedder, bytes per document, file size.

    \b
    Example:
        sqlitebin info docs.db
        sqlitebin info docs.db --json
    """
    with open_database(db_path, create=False) as database:
        collections = [database.collection(name).info() for name in database.collections()]
    file_bytes = os.path.getsize(db_path) if db_path != ":memory:" else 0
    wal_path = db_path + "-wal"
    wal_bytes = os.path.getsize(wal_path) if os.path.exists(wal_path) else 0
    if as_json:
        click.echo(json.dumps({"path": db_path, "file_bytes": file_bytes, "wal_bytes": wal_bytes,
                               "collections": collections}, indent=2))
        return
    wal = f" + {human_bytes(wal_bytes)} write-ahead log" if wal_bytes else ""
    count = len(collections)
    click.echo(f"{db_path}: {human_bytes(file_bytes)}{wal}, {count} collection{'s' if count != 1 else ''}")
    if not collections:
        return
    rows = [("collection", "documents", "dim", "rescore", "bytes/doc", "embedder")]
    for entry in collections:
        embedder = entry["embedder"] or "none (vectors only)"
        if entry["embedder_version"]:
            embedder += f" {entry['embedder_version']}"
        rows.append((entry["name"], f"{entry['documents']:,}", str(entry["dim"]), entry["rescore"],
                     str(entry["bytes_per_document"]), embedder))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {1, 2, 4}
    for row in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        click.echo("  ".join(cells).rstrip())


@main.command()
@click.argument("db_path", metavar="DB", type=click.Path(dir_okay=False, exists=True))
def migrate(db_path):
    """Upgrade DB, written by an older sqlitebin, to this version's tables (opening it for writing does the same).

    \b
    Example:
        sqlitebin migrate docs.db
    """
    with open_database(db_path, create=False) as database:  # opening for writing runs the upgrade
        names = database.collections()
    count = len(names)
    click.echo(f"{db_path}: {count} collection{'s' if count != 1 else ''} at schema version {SCHEMA_VERSION}.")


@main.command()
def path():
    """Print the path of the loadable SQLite extension, for `.load` in the sqlite3 shell.

    \b
    Example:
        sqlite3 docs.db ".load $(sqlitebin path)" "SELECT hamming(x'ff', x'0f');"
    """
    click.echo(loadable_path())


@main.command()
@click.option("--db", "db_path", type=click.Path(dir_okay=False),
              help="Keep the demo database at this path (default: a temporary file, deleted afterwards).")
@click.option("-q", "--query", "queries", multiple=True, metavar="TEXT",
              help="Search for this instead of the sample queries. Repeatable.")
@click.option("-k", "k", type=click.IntRange(1, 10), default=3, show_default=True, help="Results shown per query.")
@progress_option
@click.pass_context
def demo(ctx, db_path, queries, k, progress):
    """Index a bundled sample of 3,000 real Debian package descriptions, then search it.

    Prints the indexing speed and, for a few of the sample's labelled queries, the top results with
    their scores, the rank of the one relevant package, and the time each search took. Works offline.

    \b
    Example:
        sqlitebin demo
        sqlitebin demo --db demo.db -q "draw diagrams" -q "play chess"
    """
    from .datasets import load_corpus, load_queries, sample_corpus_path, sample_queries_path

    corpus = load_corpus(sample_corpus_path())
    labelled = load_queries(sample_queries_path())
    if queries:
        chosen = [{"text": text, "doc": None} for text in queries if text.strip()]
        if not chosen:
            raise click.ClickException("the query is empty; give some words to search for")
    else:
        # Evenly spaced through the file rather than picked by hand.
        chosen = [labelled[i * len(labelled) // DEMO_QUERIES] for i in range(DEMO_QUERIES)]
    documents = [
        Document(source_id(d["id"]), d["text"], {"source_id": d["id"], "title": d["title"]}, d["id"])
        for d in corpus
    ]
    titles = {d["id"]: d["title"] for d in corpus}

    with contextlib.ExitStack() as stack:
        if db_path is None:
            path = os.path.join(stack.enter_context(tempfile.TemporaryDirectory(prefix="sqlitebin-demo-")),
                                "demo.db")
        else:
            path = db_path
        database = stack.enter_context(open_database(path, create=True))
        collection = database.create_collection(DEMO_COLLECTION, exists_ok=True)
        click.echo(f"Indexing {len(documents):,} Debian package descriptions (the bundled sample) "
                   f"into {path if db_path else 'a temporary database'} ...")
        start = time.perf_counter()
        committed, finished = upsert_with_progress(collection, documents, batch_size=DEFAULT_BATCH_SIZE,
                                                   progress=show_progress(progress))
        if not finished:
            _interrupted(ctx, committed, len(documents), path)
        seconds = time.perf_counter() - start
        database.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = os.path.getsize(path)
        click.echo(f"Indexed {len(documents):,} documents in {seconds:.2f} s ({len(documents) / seconds:,.0f} docs/s); "
                   f"{collection.info()['bytes_per_document']} bytes per document, database {human_bytes(size)}.")

        latencies = []
        for query in chosen:
            start = time.perf_counter()
            hits = collection.search(query["text"], k=10)
            latencies.append((time.perf_counter() - start) * 1000)
            click.echo(f"\nQuery: {query['text']!r}  ({latencies[-1]:.1f} ms)")
            lines = hit_lines(hits[:k], label=lambda hit: hit.metadata["title"], heading="package")
            click.echo("\n".join(lines))
            if query["doc"] is not None:
                ranks = [hit.metadata["source_id"] for hit in hits]
                place = f"rank {ranks.index(query['doc']) + 1}" if query["doc"] in ranks else "not in the top 10"
                click.echo(f"  relevant package: {titles[query['doc']]} ({query['doc']}), {place}")
        latencies.sort()
        click.echo(f"\nSearch latency over {len(latencies)} queries: median {latencies[len(latencies) // 2]:.1f} ms "
                   "(embedding the query included).")
        if db_path:
            click.echo(f"Try your own: sqlitebin search {db_path} \"text to find\" --collection {DEMO_COLLECTION}")
        else:
            click.echo("Keep the database with --db demo.db, then: sqlitebin search demo.db \"text to find\"")


main.add_command(eval_command, "eval")
main.add_command(bench_command, "bench")
