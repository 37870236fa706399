"""Reading retrieval data sets: documents and labelled queries stored as JSON Lines.

A corpus file holds one ``{"id", "title", "text"}`` object a line and a queries file one ``{"qid", "text", "doc"}``
object a line, where ``doc`` is the id of the query's one relevant document; either may be gzip-compressed
(``.jsonl.gz``). This is the format of the Debian package-description set the project evaluates on, and a
3,000-document sample of it ships with the package (``sample_corpus_path()``, ``sample_queries_path()``) so that
tests and examples run without it. Problems are reported with the file and line number.
"""

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Iterator, Union

DATA_DIR = Path(__file__).parent / "data"

PathLike = Union[str, os.PathLike]


def sample_corpus_path() -> Path:
    """Path of the bundled sample corpus: 3,000 Debian 12 package descriptions (see ``sqlitebin/data/README.md``)."""
    return DATA_DIR / "debian-sample.jsonl.gz"


def sample_queries_path() -> Path:
    """Path of the bundled sample queries: the Debian dev queries whose relevant document is in the sample corpus."""
    return DATA_DIR / "debian-sample-queries.jsonl.gz"


def _numbered_records(function: str, path: PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line of a .jsonl or .jsonl.gz file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{function}: no such file: {path}")
    opener = gzip.open if path.name.endswith(".gz") else open
    line_number = 0
    try:
        with opener(path, "rb") as lines:
            for line_number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8"))
                except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
                    raise ValueError(f"{function}: {path} line {line_number}: not valid JSON ({error})") from None
                if not isinstance(record, dict):
                    raise ValueError(
                        f"{function}: {path} line {line_number}: expected a JSON object, "
                        f"got {type(record).__name__}"
                    )
                yield line_number, record
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(
            f"{function}: {path} line {line_number + 1}: gzip data is damaged or cut short ({error})"
        ) from None


def read_jsonl(path: PathLike) -> list[dict]:
    """All objects in a JSON Lines file (``.jsonl``, or gzip-compressed ``.jsonl.gz``), skipping blank lines.

    Raises FileNotFoundError for a missing file and ValueError naming the file and line for a line that is not a
    JSON object.
    """
    return [record for _, record in _numbered_records("read_jsonl()", path)]


def _read_records(
    function: str, path: PathLike, fields: tuple[str, ...], id_field: str, defaults: dict
) -> list[dict]:
    """Records keeping only ``fields``, each a string (``defaults`` fills absent ones), unique in ``id_field``."""
    records = []
    line_of_id = {}
    for line_number, record in _numbered_records(function, path):
        record = {**defaults, **record}
        for field in fields:
            if not isinstance(record.get(field), str):
                problem = "missing" if field not in record else f"not a string ({type(record[field]).__name__})"
                raise ValueError(f"{function}: {path} line {line_number}: field {field!r} is {problem}")
        record_id = record[id_field]
        if record_id in line_of_id:
            raise ValueError(
                f"{function}: {path} line {line_number}: {id_field} {record_id!r} "
                f"already used on line {line_of_id[record_id]}"
            )
        line_of_id[record_id] = line_number
        records.append({field: record[field] for field in fields})
    return records


def load_corpus(path: PathLike) -> list[dict]:
    """Documents from a corpus file, as dicts with string ``id``, ``title`` and ``text``, in file order.

    ``title`` may be absent (it becomes ``""``); ``id`` and ``text`` are required and ids must be unique. Other
    fields are dropped. Raises FileNotFoundError for a missing file and ValueError naming the file and line.
    """
    return _read_records("load_corpus()", path, ("id", "title", "text"), "id", defaults={"title": ""})


def load_queries(path: PathLike) -> list[dict]:
    """Queries from a queries file, as dicts with string ``qid``, ``text`` and ``doc`` (the relevant document's id).

    All three fields are required and qids must be unique. Other fields are dropped. Raises FileNotFoundError for a
    missing file and ValueError naming the file and line.
    """
    return _read_records("load_queries()", path, ("qid", "text", "doc"), "qid", defaults={})
