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
import itertools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePath

import apsw
import click

from .collection import (
    CANDIDATE_KINDS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_VECTOR_WEIGHT,
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
from .embedding import WORDLLAMA_DIMS, embedder_name, resolve_embedder
from .errors import InvalidWhere, MissingParameter, SqlitebinError
from .evaluate import eval_command
from .schema import SCHEMA_VERSION
from .extension import loadable_path
from .version import __version__

DEFAULT_COLLECTION = "documents"
DEFAULT_DIM = 256
DEMO_COLLECTION = "debian"
DEMO_QUERIES = 4
FORMATS = ("txt", "jsonl", "csv")
SPLITS = ("paragraph", "line", "file")
# Which files each format reads from a directory; "auto" and "txt" also read documentation by name and (auto) man
# pages: see _directory_kind().
FORMAT_SUFFIXES = {"txt": (".txt", ".md", ".markdown", ".rst", ".text"), "jsonl": (".jsonl", ".ndjson", ".json"),
                   "csv": (".csv",)}
# Documentation files named by convention rather than by extension (README, README.Debian, changelog.gz, ...).
DOCUMENTATION_NAME = re.compile(
    r"(readme|changelog|changes|news|authors|copying|copyright|install|todo|history|thanks|licen[cs]e|"
    r"contributing|contributors|credits|notice|bugs|faq)([._-][^/]*)?", re.IGNORECASE)
NOT_TEXT_SUFFIXES = {".html", ".htm", ".xhtml", ".pdf", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".xml",
                     ".ps", ".dvi", ".doc", ".docx", ".odt", ".zip", ".bz2", ".xz", ".zst", ".tar"}
MAN_PAGE_SUFFIX = re.compile(r"\.[1-9n][a-z0-9+]{0,8}", re.IGNORECASE)  # ls.1, CA.pl.1ssl, GET.1p (before .gz)
MAN_RENDER_SECONDS = 60
# A paragraph is one document up to this many characters (a short book); a longer one is stored as passages of
# this size overlapping by PASSAGE_OVERLAP characters, so that indexing memory stays bounded (see README).
MAX_DOCUMENT_CHARACTERS = 1 << 20
PASSAGE_OVERLAP = 1000
MAX_SKIPS_LISTED = 20
# `index` reads, compares and writes documents a group at a time, so memory holds one group, not the whole input.
GROUP_DOCUMENTS = 20_000
GROUP_CHARACTERS = 64 << 20
EXIT_INTERRUPTED = 130
MAX_ID_WIDTH = 30
CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default, 128 KiB, is less than some documents
# Library messages start with the Python function that raised them ("Collection.search(): ..."), which
# means nothing on the command line.
FUNCTION_PREFIX = re.compile(r"^[A-Za-z_][\w.]*\(\): ")
CANONICAL_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
# SQLite calls the progress handler every this many virtual machine steps while a search runs, which lets
# Ctrl-C stop it within milliseconds (Python only sees the signal when some Python code runs).
INTERRUPT_CHECK_STEPS = 10_000


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


class UnreadableFile(click.ClickException):
    """A file that cannot be read as text: reported and skipped when found in a directory (unless --strict)."""


@dataclass
class InputFile:
    path: Path
    kind: str  # "txt", "jsonl", "csv" or "man" (a man page, read through its plain-text rendering)
    in_directory: bool


@dataclass
class InputFiles:
    files: list  # of InputFile, in reading order
    skipped: list  # of (path, reason): files and directories not read
    directories: list  # of Path: the directories given


def _directory_kind(path, chosen_format):
    """What to read a file found in a directory as, or None when it is of another type."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = os.path.splitext(name)[1]
    if chosen_format in ("jsonl", "csv"):
        return chosen_format if suffix in FORMAT_SUFFIXES[chosen_format] else None
    if suffix in FORMAT_SUFFIXES["txt"]:
        return "txt"
    if DOCUMENTATION_NAME.fullmatch(name) and suffix not in NOT_TEXT_SUFFIXES:
        return "txt"
    if chosen_format == "auto" and MAN_PAGE_SUFFIX.fullmatch(suffix) and _looks_like_roff(path):
        return "man"
    return None


def _looks_like_roff(path):
    """True when a file starts like a man page source: a roff request or comment (a line starting "." or "'")."""
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as handle:
            head = handle.read(4096)
    except (OSError, EOFError, zlib.error):
        return True  # reported as unreadable when it is read
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    return bool(lines) and lines[0][:1] in (b".", b"'")


def _walk_directory(directory, chosen_format, files, skipped):
    def unreadable(error):
        skipped.append((error.filename or str(directory), f"unreadable directory ({error.strerror or error})"))

    for root, subdirectories, names in os.walk(directory, onerror=unreadable):
        for name in sorted(d for d in subdirectories if d.startswith(".")):
            skipped.append((os.path.join(root, name), "hidden directory"))
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith("."):
                skipped.append((str(path), "hidden file"))
            elif not path.is_file():
                skipped.append((str(path), "not a regular file" if path.exists() else "broken link"))
            else:
                kind = _directory_kind(path, chosen_format)
                if kind is None:
                    skipped.append((str(path), "other type"))
                else:
                    files.append(InputFile(path, kind, True))


def input_files(inputs, chosen_format):
    """The files to read, in order: named files as given, directories walked (sorted) for text files.

    In a directory, `auto` and `txt` read .txt, .md, .markdown, .rst and .text files, documentation named by
    convention (README, README.Debian, changelog, NEWS, COPYING, ... with or without an extension), each also
    gzipped, and (`auto`) man pages such as ls.1.gz through their plain-text rendering; `jsonl` and `csv` read
    files with their extensions. Everything else, hidden files and directories (not entered) and unreadable
    directories are listed in `skipped` with the reason.
    """
    files, skipped, directories = [], [], []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            directories.append(path)
            before = len(files)
            _walk_directory(path, chosen_format, files, skipped)
            if len(files) == before:
                wanted = "text or documentation" if chosen_format in ("auto", "txt") else chosen_format
                raise click.ClickException(f"no {wanted} files in directory {given}" + _skip_note(skipped))
        elif path.is_file():
            kind = _format_of(path, chosen_format)
            files.append(InputFile(path, kind, False))
        elif path.exists():
            raise click.ClickException(f"{given} is not a regular file or directory")
        else:
            raise click.ClickException(f"no such file or directory: {given}")
    return InputFiles(files, skipped, directories)


def _skip_note(skipped):
    return f" ({len(skipped):,} other file{'s' if len(skipped) != 1 else ''} or director{'ies' if len(skipped) != 1 else 'y'} skipped)" if skipped else ""


def _render_man_page(path):
    """The plain-text rendering of a man page, by `man -l` (man-db) or else `groff -man`."""
    environment = dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    environment.pop("MANPAGER", None)
    environment.pop("PAGER", None)
    man, groff = shutil.which("man"), shutil.which("groff")
    try:
        if man:
            command = [man, "-l", "-P", "cat", str(path)]
            result = subprocess.run(command, capture_output=True, env=environment, timeout=MAN_RENDER_SECONDS,
                                    stdin=subprocess.DEVNULL)
        elif groff:
            data = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
            command = [groff, "-man", "-Tutf8", "-P-cbou"]
            result = subprocess.run(command, input=data, capture_output=True, env=environment,
                                    timeout=MAN_RENDER_SECONDS)
        else:
            raise UnreadableFile(f"{path} is a man page and no renderer is installed (man or groff)")
    except subprocess.TimeoutExpired:
        raise UnreadableFile(f"{path} is a man page that took over {MAN_RENDER_SECONDS} s to render") from None
    except (OSError, gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise UnreadableFile(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    text = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0 or not text.strip():
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UnreadableFile(f"{path} is a man page that {Path(command[0]).name} could not render"
                             + (f" ({detail[0]})" if detail else ""))
    return text.replace("\r\n", "\n")


def _read_text(path, encoding, trim=False):
    """The text of a file (gunzipped when it ends in .gz), with line ends made "\\n"; `trim` drops trailing
    whitespace before decoding, so a file of one long paragraph decodes to exactly that paragraph (no copy is made
    to strip it: a 100 MB file of text beyond U+FFFF is 400 MB as a Python string)."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise UnreadableFile(f"{path} is not a valid gzip file ({error})") from None
    except OSError as error:
        raise UnreadableFile(f"cannot read {path}: {error.strerror or error}") from None
    end = len(data)
    if trim and "\n \t".encode(encoding, "replace") == b"\n \t":  # ASCII-compatible encodings only
        while end and data[end - 1] in b" \t\n\r\x0b\x0c":
            end -= 1
    try:
        text = str(memoryview(data)[:end], encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UnreadableFile(
            f"{path} line {line} is not valid {encoding} text (byte 0x{data[error.start]:02x}); "
            "convert the file or pass --encoding"
        ) from None
    del data
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")  # one or more lines holding only whitespace
NOT_SPACE = re.compile(r"\S")
LINE_END_SPACE = re.compile(r"[^\S\n]+\n")


def _paragraphs(text):
    """(first line number, text) of each paragraph: lines separated by blank lines, each line's trailing
    whitespace and the paragraph's leading and trailing whitespace removed. A paragraph that is the whole text is
    that same string, not a copy."""
    line, counted = 1, 0
    start = 0
    for separator in [*BLANK_LINES.finditer(text), None]:
        end = separator.start() if separator else len(text)
        first = NOT_SPACE.search(text, start, end)
        if first:
            last = end
            while text[last - 1].isspace():
                last -= 1
            line += text.count("\n", counted, first.start())
            counted = first.start()
            body = text[first.start():last]
            if LINE_END_SPACE.search(body):
                body = LINE_END_SPACE.sub("\n", body)
            yield line, body
        if separator:
            start = separator.end()


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
    for first_line, body in _paragraphs(text):
        if len(body) <= MAX_DOCUMENT_CHARACTERS:
            yield Document(0, body, {"source": source, "line": first_line}, f"{source} line {first_line}")
            continue
        for number, (offset, passage) in enumerate(_passages(body), start=1):
            yield Document(0, passage, {"source": source, "line": first_line, "passage": number, "offset": offset},
                           f"{source} line {first_line} passage {number}")


def _passages(body):
    """(offset, text) of consecutive passages of at most MAX_DOCUMENT_CHARACTERS, each starting
    PASSAGE_OVERLAP characters before the previous one ended, cut after whitespace where there is some."""
    start = 0
    while True:
        end = start + MAX_DOCUMENT_CHARACTERS
        if end >= len(body):
            yield start, body[start:].strip()
            return
        # The last whitespace in the second half of the window, else a hard cut.
        cut = max(body.rfind(" ", start + MAX_DOCUMENT_CHARACTERS // 2, end),
                  body.rfind("\n", start + MAX_DOCUMENT_CHARACTERS // 2, end))
        end = cut + 1 if cut > 0 else end
        yield start, body[start:end].strip()
        start = end - PASSAGE_OVERLAP


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


def read_documents(path, options, kind=None):
    """The documents in one file, each with its id already derived; `kind` "man" reads a man page's rendering."""
    if kind == "man":
        text = _render_man_page(path)
    else:
        text = _read_text(path, options.encoding, trim=(kind or _format_of(path, options.format)) in ("txt", "man"))
    format_name = kind if kind in ("jsonl", "csv") else _format_of(path, options.format) if kind is None else "txt"
    if format_name == "jsonl":
        return list(_jsonl_documents(path, text, options))
    if format_name == "csv":
        return list(_csv_documents(path, text, options))
    if "\x00" in text and kind is not None:
        raise UnreadableFile(f"{path} holds binary data (NUL bytes), not text")
    documents = list(_text_documents(path, text, options.split))
    del text  # a long paragraph's passages are copies: the whole text can go now
    for document in documents:
        document.id = content_id(document.text)
    return documents


@dataclass
class Reading:
    """What reading the input has found so far, across the groups of documents it yields."""
    seen: dict  # document id -> where it was read, for the ids kept
    read: set  # the files read
    empty: int = 0
    repeated: int = 0
    first_repeat: tuple = None  # (where, where it repeats)


def document_groups(inputs, options, strict, reading, group_documents=None, group_characters=None):
    """Yield the documents of `inputs` (an InputFiles) in groups of about `group_documents` documents or
    `group_characters` characters (a file's documents stay together), without empty texts and repeated ids (the
    first is kept), so that indexing never holds more than a group in memory.

    A file found in a directory that cannot be read as text is added to `inputs.skipped` with the reason (with
    `strict`, it stops the command instead); a file named on the command line always stops it. `reading`
    (a Reading) collects the files read, the ids kept, and the documents skipped.
    """
    group_documents = group_documents or GROUP_DOCUMENTS
    group_characters = group_characters or GROUP_CHARACTERS
    group, characters = [], 0
    for item in inputs.files:
        try:
            found = read_documents(item.path, options, item.kind if item.in_directory else None)
        except UnreadableFile as error:
            if strict or not item.in_directory:
                if item.in_directory:
                    error.message += " (--strict stops at the first file that cannot be read)"
                raise
            inputs.skipped.append((str(item.path), FUNCTION_PREFIX.sub("", error.message)))
            continue
        reading.read.add(str(item.path))
        for document in found:
            if not document.text:
                reading.empty += 1
            elif document.id in reading.seen:
                reading.repeated += 1
                if reading.first_repeat is None:
                    reading.first_repeat = (document.where, reading.seen[document.id])
            else:
                reading.seen[document.id] = document.where
                group.append(document)
                characters += len(document.text)
        del found
        if len(group) >= group_documents or characters >= group_characters:
            yield group
            group, characters = [], 0
    if group:
        yield group


def report_reading(reading):
    if reading.empty:
        click.echo(f"Skipped {_plural(reading.empty, 'document')} with no text.", err=True)
    if reading.repeated:
        where, first = reading.first_repeat
        click.echo(f"Skipped {_plural(reading.repeated, 'repeated document')} "
                   f"(same id or text as an earlier one; first: {where} repeats {first}).", err=True)


def gather_documents(inputs, options, strict=False):
    """All documents from `inputs` at once (see document_groups()); returns them and the set of files read."""
    reading = Reading({}, set())
    documents = [document for group in document_groups(inputs, options, strict, reading) for document in group]
    report_reading(reading)
    return documents, reading.read


def report_skipped(skipped):
    """Tell on stderr which files were not read and why: problems one by one, other types counted by suffix."""
    problems = [(path, reason) for path, reason in skipped if reason not in ("other type", "hidden file")]
    for path, reason in problems[:MAX_SKIPS_LISTED]:
        click.echo(f"Skipped {reason if reason.startswith(str(path)) else f'{path}: {reason}'}", err=True)
    if len(problems) > MAX_SKIPS_LISTED:
        click.echo(f"Skipped {len(problems) - MAX_SKIPS_LISTED:,} more files or directories that could not be read.",
                   err=True)
    others = [path for path, reason in skipped if reason == "other type"]
    if others:
        suffixes = {}
        for path in others:
            suffix = os.path.splitext(os.path.basename(path).lower().removesuffix(".gz"))[1] or "no extension"
            suffixes[suffix] = suffixes.get(suffix, 0) + 1
        common = sorted(suffixes.items(), key=lambda item: (-item[1], item[0]))[:8]
        click.echo(f"Skipped {len(others):,} file{'s' if len(others) != 1 else ''} of other types ("
                   + ", ".join(f"{suffix} {count:,}" for suffix, count in common)
                   + (", ..." if len(suffixes) > len(common) else "") + ").", err=True)
    hidden = sum(reason == "hidden file" for _, reason in skipped)
    if hidden:
        click.echo(f"Skipped {hidden:,} hidden file{'s' if hidden != 1 else ''}.", err=True)


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
        label = f"{metadata['source']}:{metadata['line']}" if "line" in metadata else str(metadata["source"])
        return label + (f"#{metadata['passage']}" if "passage" in metadata else "")
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
        "--mode", type=click.Choice(MODES), default=None,
        help="Vector search, keyword (full-text BM25) search, or both fused.  "
             "[default: hybrid for a collection with a text index, else vector]",
    )(function)


@contextlib.contextmanager
def interruptible(conn):
    """Let Ctrl-C stop a running statement: a progress handler gives Python a chance to raise
    KeyboardInterrupt, which aborts the statement."""
    conn.set_progress_handler(lambda: False, INTERRUPT_CHECK_STEPS)
    try:
        yield
    finally:
        conn.set_progress_handler(None)


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


def _index_embedder(spec, dim):
    """The named embedder `--embedder` gives, checked against `--dim`."""
    try:
        embed = resolve_embedder(spec)
    except (ValueError, TypeError, OSError) as error:
        raise click.ClickException(str(error)) from None
    if not isinstance(getattr(embed, "dim", None), int):
        raise click.ClickException(f"embedder {spec!r} does not say its dimension (a dim attribute)")
    if dim is not None and int(dim) != embed.dim:
        raise click.ClickException(f"embedder {spec!r} gives {embed.dim} dimensions, not {dim}; leave out --dim")
    return embed


@main.command()
@click.argument("db_path", metavar="DB", type=click.Path(dir_okay=False))
@click.argument("inputs", metavar="FILE_OR_DIR...", nargs=-1, required=True)
@collection_option(f"Collection to add to, created when missing.  [default: {DEFAULT_COLLECTION}]")
@click.option("--dim", type=click.Choice([str(d) for d in WORDLLAMA_DIMS]), default=None,
              help=f"Embedding dimensions of a new collection.  [default: {DEFAULT_DIM}]")
@click.option("--rescore", type=click.Choice(STORED_KINDS), default=None,
              help="Rescoring vectors a new collection stores.  [default: int8]")
@click.option("--embedder", metavar="NAME", default=None,
              help="Embedder of a new collection: wordllama, model2vec:PATH (a Model2Vec model in a local "
                   "directory) or a prefix from sqlitebin.register_embedder(); the collection records it, and "
                   "an existing collection keeps its own.  [default: wordllama]")
@click.option("--format", "format_name", type=click.Choice(("auto",) + FORMATS), default="auto", show_default=True,
              help="Input format; auto goes by file extension (.jsonl/.json, .csv, anything else is text).")
@click.option("--split", type=click.Choice(SPLITS), default="paragraph", show_default=True,
              help="Text files: one document per paragraph (blank-line separated), per line, or per file.")
@click.option("--text-field", default="text", show_default=True, help="JSON field or CSV column with the text.")
@click.option("--id-field", default="id", show_default=True,
              help="JSON field or CSV column with each document's id; without one, the id is a hash of the text.")
@click.option("--encoding", default="utf-8", show_default=True, callback=_check_encoding,
              help="Text encoding of the input files.")
@click.option("--strict", is_flag=True,
              help="Stop at the first file in a directory that cannot be read, instead of reporting and skipping it.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Remove the collection's documents that the input no longer holds: old paragraphs of the files "
                   "read, and documents of files gone from the directories read.")
@batch_size_option
@progress_option
@click.pass_context
def index(ctx, db_path, inputs, collection_name, dim, rescore, embedder, format_name, split, text_field, id_field,
          encoding, strict, prune, batch_size, progress):
    """Embed the documents in FILE_OR_DIR... and store them in DB, so that the collection matches the input.

    Reads plain text, Markdown and reStructuredText (one document per paragraph, or per line with --split line),
    JSON lines (.jsonl, .jsonl.gz) and CSV. A directory is searched for .txt, .md, .rst files, documentation such
    as README, NEWS or changelog files without an extension, any of them gzipped, and man pages (read through
    `man` or `groff` when one is installed); files that cannot be read are reported and skipped, and the summary
    counts every file skipped. A paragraph of up to 1 MiB characters is one document (its vector is the mean over
    all its words); a longer one is stored as passages of 1 MiB overlapping by 1,000 characters.

    A document's id is the input's id field (an integer as is, anything else hashed) or a hash of its text, so
    running the same command again adds nothing twice: unchanged documents are skipped, changed ones replaced,
    and (unless --no-prune) documents no longer in a file read, or from files gone from a directory read, are
    removed. `sqlitebin delete` removes documents by id or by source file.
    Ctrl-C keeps every committed batch (exit code 130).

    \b
    Example:
        sqlitebin index docs.db notes/ --collection notes
        sqlitebin index docs.db /usr/share/doc --strict
        sqlitebin index docs.db corpus.jsonl.gz --id-field id --text-field text
        sqlitebin index docs.db poems.txt --split line
        sqlitebin index docs.db notes/ --collection m2v --embedder model2vec:models/potion-base-8M
    """
    name = collection_name or DEFAULT_COLLECTION
    options = ReadOptions(
        format=format_name, split=split, text_field=text_field, id_field=id_field, encoding=encoding,
        id_field_required=ctx.get_parameter_source("id_field") is not click.core.ParameterSource.DEFAULT,
    )
    written = None  # documents committed, once the first group is being written
    removed = new = changed = documents = 0
    reading = Reading({}, set())
    try:
        found = input_files(inputs, format_name)
        groups = document_groups(found, options, strict, reading)
        first = next(groups, None)
        # With nothing to add, a run still prunes what the input no longer holds, from a collection that exists.
        nothing = click.ClickException(f"no documents with text in {', '.join(inputs)}" + _skip_note(found.skipped))
        if first is None and not (prune and reading.read and os.path.exists(db_path)):
            raise nothing
        with open_database(db_path, create=True) as database:
            embed = _index_embedder(embedder, dim) if embedder not in (None, "wordllama") else None
            if first is None and name not in database.collections():
                raise nothing
            if name in database.collections():
                try:
                    collection = database.collection(name)
                except (ValueError, OSError) as error:  # e.g. a named embedder whose model directory is gone
                    raise click.ClickException(str(error)) from None
                stored_embedder = collection.embedder_name or ""
                if embedder is not None and not (
                        stored_embedder.startswith("wordllama") if embed is None
                        else embedder_name(embed) == stored_embedder and embed.dim == collection.dim):
                    raise click.ClickException(
                        f"collection {name!r} in {db_path} ({collection.dim} dimensions) was built with embedder "
                        f"{collection.embedder_name!r}, not {embedder!r}; leave out --embedder or choose another "
                        "--collection"
                    )
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
            elif embed is not None:
                collection = database.create_collection(name, embed.dim, embedder=embed, rescore=rescore or "int8")
            else:
                collection = database.create_collection(name, int(dim or DEFAULT_DIM), rescore=rescore or "int8")
            start = time.perf_counter()
            written = 0
            # Each group of documents is compared with what is stored and written before the next is read.
            for group in itertools.chain([first] if first else [], groups):
                group_changed, group_new = _changed_documents(collection, group)
                committed, finished = upsert_with_progress(collection, group_changed, batch_size=batch_size,
                                                           progress=show_progress(progress))
                if not finished:
                    _interrupted(ctx, written + committed, changed + len(group_changed), db_path)
                written += committed
                documents += len(group)
                changed += len(group_changed)
                new += group_new
                del group, group_changed
            if prune:
                stale = _stale_ids(collection, set(reading.seen), reading.read, found)
                if stale:
                    removed = collection.delete(stale)
            seconds = time.perf_counter() - start
            total = len(collection)
    except KeyboardInterrupt:
        # An interrupt during an upsert was reported above with the count committed; these come before or after it.
        if not written:
            click.echo("Interrupted before any document was written.", err=True)
        else:
            click.echo(f"Interrupted after {_plural(written, 'document')} were committed; run the same command "
                       "again to index the rest.", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    report_reading(reading)
    report_skipped(found.skipped)
    per_second = changed / seconds if changed and seconds > 0 else 0
    rate = f", {per_second:,.0f} docs/s" if per_second >= 10 else f", {per_second:.2g} docs/s" if per_second else ""
    skipped = f", {len(found.skipped):,} skipped" if found.skipped else ""
    click.echo(
        f"Indexed {_plural(documents, 'document')} from {_plural(len(reading.read), 'file')}{skipped} "
        f"into {db_path} collection {name!r}: {new:,} new, {changed - new:,} updated, "
        f"{documents - changed:,} unchanged, {removed:,} removed ({seconds:.1f} s{rate}); "
        f"{_plural(total, 'document')} in all."
    )


def _plural(count, noun):
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


LARGE_TEXT = 1 << 20  # characters; such stored texts are compared in SQL rather than read back


def _changed_documents(collection, documents):
    """The documents that are new or differ from the stored ones (text or metadata), and how many are new."""
    small = [d for d in documents if len(d.text) <= LARGE_TEXT]
    stored = {hit.id: (hit.text, hit.metadata) for hit in collection.get([d.id for d in small])}
    changed = [d for d in small if stored.get(d.id) != (d.text, d.metadata)]
    new = sum(d.id not in stored for d in changed)
    del stored
    for document in documents:
        if len(document.text) > LARGE_TEXT:
            rows = collection.conn.execute(
                f"SELECT text = ?, metadata FROM {collection.tables.documents} WHERE id = ?",
                (document.text, document.id)).fetchall()
            if not rows:
                new += 1
            if not rows or not rows[0][0] or json.loads(rows[0][1] or "null") != document.metadata:
                changed.append(document)
    return changed, new


def _documents_by_source(collection):
    """(id, source) of every document of `collection` that records the file it came from."""
    return collection.conn.execute(
        f"SELECT id, json_extract(metadata, '$.source') FROM {collection.tables.documents} "
        "WHERE json_valid(metadata) AND json_type(metadata, '$.source') = 'text'"
    ).fetchall()


def _stale_ids(collection, current, read, found):
    """Ids of stored documents the input no longer holds: from a file read now, but not among its documents; or
    from under a directory read now, from a file that is neither read nor skipped (deleted, or no longer selected).
    A file skipped because it could not be read keeps its documents."""
    seen = read | {path for path, _ in found.skipped}
    directories = [PurePath(directory) for directory in found.directories]
    stale = []
    for document_id, source in _documents_by_source(collection):
        if document_id in current:
            continue
        if source in read:
            stale.append(document_id)
        elif source not in seen and any(_is_under(PurePath(source), directory) for directory in directories):
            stale.append(document_id)
    return stale


def _is_under(path, directory):
    return path != directory and (path.is_absolute() == directory.is_absolute()) and path.is_relative_to(directory)


@main.command()
@click.argument("db_path", metavar="DB", type=click.Path(dir_okay=False))
@click.argument("ids", metavar="[ID]...", nargs=-1, type=click.IntRange(-(2**63), 2**63 - 1))
@collection_option(f"Collection to delete from.  [default: the only one, or {DEFAULT_COLLECTION}]")
@click.option("--source", "sources", multiple=True, metavar="PATH",
              help="Delete the documents indexed from this file, or from every file under this directory, as "
                   "`sqlitebin index` recorded it (metadata.source). Repeatable.")
def delete(db_path, ids, collection_name, sources):
    """Delete documents from DB by id (the integer ids `search --json` shows) or by the file they came from.

    Runs `Collection.delete()` with the ids given and those of the documents indexed from each --source, in one
    transaction; prints how many documents were deleted and how many ids were not found.

    \b
    Example:
        sqlitebin delete docs.db 1234 5678
        sqlitebin delete docs.db --source notes/old.md
        sqlitebin delete docs.db --source notes/archive --collection notes
    """
    if not ids and not sources:
        raise click.ClickException("give the ids of the documents to delete, or --source PATH")
    if db_path != ":memory:" and not os.path.exists(db_path):
        raise click.ClickException(f"no database at {db_path}; create one with: sqlitebin index {db_path} FILE")
    with open_database(db_path, create=True) as database:
        collection = open_collection(database, db_path, collection_name)
        wanted = list(dict.fromkeys(ids))
        matched = {}
        if sources:
            recorded = _documents_by_source(collection)
            for source in sources:
                path = PurePath(source)
                matched[source] = [document_id for document_id, stored in recorded
                                   if stored == source or _is_under(PurePath(stored), path)]
                wanted.extend(matched[source])
        wanted = list(dict.fromkeys(wanted))
        deleted = collection.delete(wanted) if wanted else 0
        total = len(collection)
    for source, found in matched.items():
        if not found:
            click.echo(f"No documents from {source} in collection {collection.name!r}.", err=True)
    missing = len(wanted) - deleted
    click.echo(f"Deleted {_plural(deleted, 'document')} from {db_path} collection {collection.name!r}"
               + (f" ({_plural(missing, 'id')} not found)" if missing else "")
               + f"; {_plural(total, 'document')} left.")


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
@click.option("--vector-weight", type=click.FloatRange(0, 100), default=DEFAULT_VECTOR_WEIGHT, show_default=True,
              help="Hybrid mode: the fused score is BM25 relative to the best keyword hit plus this x cosine.")
@click.option("--where", metavar="SQL",
              help="SQL condition on the documents (columns id, text, metadata), applied before the top k.")
@click.option("-p", "--param", "params", nargs=2, multiple=True, metavar="NAME VALUE",
              help="A :NAME parameter for --where (the value is text; CAST it for numbers). Repeatable.")
@json_option("One JSON object per result (rank, id, score, distance, text, metadata).")
@click.option("--sql", "show_sql", is_flag=True, help="Print the SQL the search would run, and stop.")
def search(db_path, query, k, collection_name, oversample, rescore, candidates, mode, vector_weight, where,
           params, as_json, show_sql):
    """Find the k documents in DB that best match QUERY, by meaning, by words, or both.

    Prints a table of rank, score, id (the input's own id, or file:line for text files) and the start of
    the text. Scores are higher for better matches: cosine similarity (--mode vector), BM25 (keyword), or
    BM25 relative to the best keyword hit plus --vector-weight x cosine (hybrid). --json gives every field,
    the integer id too. Ctrl-C stops a search at once.

    \b
    Example:
        sqlitebin search docs.db "embedded database" -k 5
        sqlitebin search docs.db "image editor" --json
        sqlitebin search docs.db "parser" --where "json_extract(metadata, '$.source') = :file" -p file notes.md
        sqlitebin search docs.db "parser" --sql
        sqlitebin search docs.db "sqlite3 python bindings" --mode keyword
        sqlitebin search docs.db "sqlite3 python bindings" --mode hybrid --vector-weight 1.0
    """
    if not query.strip():
        raise click.ClickException("the query is empty; give some words to search for")
    options = {"k": k, "oversample": oversample, "rescore": rescore, "candidates": candidates,
               "where": where, "mode": mode, "vector_weight": vector_weight}
    with open_database(db_path, create=False) as database:
        collection = open_collection(database, db_path, collection_name)
        if mode is None and not show_sql:
            mode = collection.default_mode(query)
            options["mode"] = mode
        if collection.embedder is None and not show_sql and mode != "keyword":
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
            try:
                with interruptible(database.conn):
                    hits = collection.search(query, params=dict(params), **options)
            except (KeyboardInterrupt, apsw.InterruptError):
                click.echo("Interrupted.", err=True)
                click.get_current_context().exit(EXIT_INTERRUPTED)
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
    if os.path.isdir(db_path):
        raise click.ClickException(f"{db_path} is a directory, not a database file")
    try:
        database = connect(db_path, create=False)  # opening for writing runs the upgrade
    except apsw.NotADBError:
        raise click.ClickException(f"{db_path} is not a SQLite database") from None
    with database:
        names = database.collections()
        versions = sorted({row[0] for row in database.conn.execute(
            "SELECT schema_version FROM sqlitebin_collections")}) if names else [SCHEMA_VERSION]
    count = len(names)
    shown = ", ".join(map(str, versions))
    click.echo(f"{db_path}: {count} collection{'s' if count != 1 else ''} at schema version {shown}.")


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
