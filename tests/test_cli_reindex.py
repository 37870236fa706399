"""`sqlitebin index` on real-world directories and again after changes, and `sqlitebin delete`.

Directories hold what /usr/share/doc holds: files that are not UTF-8, unreadable folders, README files without an
extension, reStructuredText, gzipped changelogs and man pages. Each is read or reported and skipped, never silently
dropped, and never stops the run unless --strict. Indexing again makes the collection match the files: changed
paragraphs replaced, removed paragraphs and deleted files' documents removed.
"""

import gzip
import json
import os
import shutil

import pytest
from click.testing import CliRunner

import sqlitebin
from sqlitebin.cli import main

MAN_PAGE = """.TH FROBNICATE 1 "2024" "frob 1.0" "User Commands"
.SH NAME
frobnicate \\- adjust the flux capacitor of a frobnicator
.SH DESCRIPTION
.B frobnicate
tunes the quantum widget until the sprocket hums.
"""


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def stored(db, collection="documents"):
    """{text: metadata} of every document."""
    with sqlitebin.connect(db, create=False) as database:
        table = f'"{collection}_documents"'
        return {text: json.loads(meta) for text, meta in database.conn.execute(f"SELECT text, metadata FROM {table}")}


@pytest.fixture
def tree(tmp_path):
    """A documentation tree like /usr/share/doc, built for the test."""
    root = tmp_path / "doc"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "README").write_text("The widget reads sprockets.\n\nIt was written in 1999.\n", encoding="utf-8")
    (root / "pkg" / "guide.rst").write_text("Guide\n=====\n\nInstall the gizmo with care.\n", encoding="utf-8")
    (root / "pkg" / "changelog.Debian.gz").write_bytes(gzip.compress(b"pkg (1.0) unstable\n\n  * Fixed the gadget.\n"))
    (root / "pkg" / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (root / "pkg" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (root / "pkg" / ".hidden.txt").write_text("never read\n", encoding="utf-8")
    man = root / "man" / "man1"
    man.mkdir(parents=True)
    (man / "frobnicate.1.gz").write_bytes(gzip.compress(MAN_PAGE.encode()))
    (root / "notes.md").write_text("First note about apples.\n\nSecond note about pears.\n", encoding="utf-8")
    locked = root / "locked"
    locked.mkdir()
    (locked / "secret.txt").write_text("hidden away\n", encoding="utf-8")
    locked.chmod(0)
    yield root
    locked.chmod(0o755)


def test_a_documentation_tree_is_read_and_every_skipped_file_reported(tree, tmp_path, monkeypatch):
    db = tmp_path / "doc.db"
    # root reads a chmod 0 folder anyway: make listing it fail as it does for everyone else.
    scandir = os.scandir

    def denied(path="."):
        if os.fspath(path) == str(tree / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    result = run("index", db, tree)
    texts = stored(db)
    assert "The widget reads sprockets." in texts and "It was written in 1999." in texts  # README, no extension
    assert "Install the gizmo with care." in texts  # .rst
    assert "* Fixed the gadget." in texts  # changelog.Debian.gz
    assert "First note about apples." in texts
    renderer = shutil.which("man") or shutil.which("groff")
    man_texts = [text for text in texts if "sprocket hums" in text]
    if renderer:
        assert len(man_texts) == 1 and "\\-" not in man_texts[0] and ".B" not in man_texts[0]
        assert any("frobnicate - adjust the flux capacitor" in text for text in texts)
    else:
        assert man_texts == [] and "no renderer is installed (man or groff)" in result.output
    # Not UTF-8: reported, skipped, the run goes on.
    assert f"Skipped {tree / 'pkg' / 'latin1.txt'} line 1 is not valid utf-8 text (byte 0xe9)" in result.output
    assert "Skipped 1 file of other types (.png 1)." in result.output
    assert "Skipped 1 hidden file." in result.output
    assert f"Skipped {tree / 'locked'}: unreadable directory (Permission denied)" in result.output
    assert "hidden away" not in texts
    assert f"from {4 + (renderer is not None)} files, 4 skipped into" in result.output


def test_strict_stops_at_the_first_file_that_cannot_be_read(tree, tmp_path):
    result = run("index", tmp_path / "strict.db", tree, "--strict", ok=False)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {tree / 'pkg' / 'latin1.txt'} line 1 is not valid utf-8 text (byte 0xe9); convert the file or pass "
        "--encoding (--strict stops at the first file that cannot be read)")
    assert not (tmp_path / "strict.db").exists()


def test_a_file_that_is_not_text_in_a_directory_is_skipped(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "README").write_bytes(b"ELF\x00\x01\x02 binary")
    (folder / "a.txt").write_text("plain words\n", encoding="utf-8")
    (folder / "bad.txt.gz").write_bytes(b"not gzip at all")
    result = run("index", tmp_path / "x.db", folder)
    assert f"Skipped {folder / 'README'} holds binary data (NUL bytes), not text" in result.output
    assert f"Skipped {folder / 'bad.txt.gz'} is not a valid gzip file" in result.output
    assert "Indexed 1 document from 1 file, 2 skipped into" in result.output
    assert "1 document in all." in result.output


def test_reindexing_replaces_changed_paragraphs_and_removes_deleted_ones(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("Alpha one.\n\nBeta two.\n\nGamma three.\n", encoding="utf-8")
    (folder / "b.txt").write_text("Delta four.\n", encoding="utf-8")
    db = tmp_path / "notes.db"
    run("index", db, folder)
    assert set(stored(db)) == {"Alpha one.", "Beta two.", "Gamma three.", "Delta four."}

    # One word changed, one paragraph removed, one file deleted.
    (folder / "a.txt").write_text("Alpha one.\n\nBeta TWO.\n", encoding="utf-8")
    (folder / "b.txt").unlink()
    result = run("index", db, folder)
    assert "Indexed 2 documents from 1 file into" in result.output
    assert "1 new, 0 updated, 1 unchanged, 3 removed" in result.output
    texts = stored(db)
    assert set(texts) == {"Alpha one.", "Beta TWO."}
    assert texts["Beta TWO."] == {"source": str(folder / "a.txt"), "line": 3}  # a.txt:3, one label, one text
    search = run("search", db, "beta", "--json")
    assert [json.loads(line)["text"] for line in search.output.splitlines()] == ["Beta TWO.", "Alpha one."]


def test_reindexing_a_single_file_and_no_prune(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("Old text here.\n\nKept text.\n", encoding="utf-8")
    db = tmp_path / "x.db"
    run("index", db, path)
    path.write_text("New text here.\n\nKept text.\n", encoding="utf-8")
    assert "1 new, 0 updated, 1 unchanged, 0 removed" in run("index", db, path, "--no-prune").output
    assert set(stored(db)) == {"Old text here.", "New text here.", "Kept text."}
    assert "0 new, 0 updated, 2 unchanged, 1 removed" in run("index", db, path).output
    assert set(stored(db)) == {"New text here.", "Kept text."}
    # Other inputs' documents are left alone.
    other = tmp_path / "other.txt"
    other.write_text("Another file.\n", encoding="utf-8")
    run("index", db, other)
    assert set(stored(db)) == {"New text here.", "Kept text.", "Another file."}
    # A file emptied of text: its documents go.
    path.write_text("\n\n", encoding="utf-8")
    assert "0 new, 0 updated, 0 unchanged, 2 removed" in run("index", db, path).output
    assert set(stored(db)) == {"Another file."}


def test_reindexing_jsonl_removes_records_no_longer_there(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"record {i}"}) + "\n" for i in range(5)), encoding="utf-8")
    db = tmp_path / "j.db"
    run("index", db, path)
    path.write_text("".join(json.dumps({"id": i, "text": f"record {i}"}) + "\n" for i in (0, 2, 4)), encoding="utf-8")
    assert "0 new, 0 updated, 3 unchanged, 2 removed" in run("index", db, path).output
    assert set(stored(db)) == {"record 0", "record 2", "record 4"}


def test_delete_by_id_and_by_source(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Alpha.\n\nBeta.\n", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("Gamma.\n", encoding="utf-8")
    (folder / "sub" / "c.txt").write_text("Delta.\n", encoding="utf-8")
    db = tmp_path / "d.db"
    run("index", db, folder)
    ids = {json.loads(line)["text"]: json.loads(line)["id"]
           for line in run("search", db, "letters", "-k", "10", "--json").output.splitlines()}
    result = run("delete", db, ids["Alpha."], 12345)
    assert result.output.strip() == f"Deleted 1 document from {db} collection 'documents' (1 id not found); 3 documents left."
    result = run("delete", db, "--source", folder / "sub")
    assert result.output.strip() == f"Deleted 2 documents from {db} collection 'documents'; 1 document left."
    assert set(stored(db)) == {"Beta."}
    result = run("delete", db, "--source", folder / "a.txt", "--source", folder / "gone.txt")
    assert f"No documents from {folder / 'gone.txt'} in collection 'documents'." in result.output
    assert "Deleted 1 document" in result.output and stored(db) == {}


@pytest.mark.parametrize("args, message", [
    ([], "Error: give the ids of the documents to delete, or --source PATH"),
    (["abc"], "Invalid value for '[ID]...': 'abc' is not a valid integer range."),
    (["--collection", "nope", "1"], "Error: no collection named 'nope' in"),
])
def test_delete_mistakes(tmp_path, args, message):
    path = tmp_path / "a.txt"
    path.write_text("Alpha.\n", encoding="utf-8")
    run("index", tmp_path / "x.db", path)
    result = run("delete", tmp_path / "x.db", *args, ok=False)
    assert message in result.output and "Traceback" not in result.output
    assert run("delete", tmp_path / "missing.db", "1", ok=False).output.strip() == (
        f"Error: no database at {tmp_path / 'missing.db'}; create one with: sqlitebin index {tmp_path / 'missing.db'} FILE")
    assert not (tmp_path / "missing.db").exists()


def test_a_man_page_without_a_renderer_is_reported(tmp_path, monkeypatch):
    folder = tmp_path / "man1"
    folder.mkdir()
    (folder / "frobnicate.1").write_text(MAN_PAGE, encoding="utf-8")
    (folder / "notes.txt").write_text("Some notes.\n", encoding="utf-8")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = run("index", tmp_path / "m.db", folder)
    assert f"Skipped {folder / 'frobnicate.1'} is a man page and no renderer is installed (man or groff)" in result.output
    assert "Indexed 1 document from 1 file, 1 skipped into" in result.output


def test_index_reads_and_writes_a_group_of_documents_at_a_time(tmp_path, monkeypatch):
    """Memory holds one group of documents, not the whole input: groups are written as they are read."""
    from sqlitebin import cli

    folder = tmp_path / "many"
    folder.mkdir()
    for number in range(7):
        (folder / f"{number}.txt").write_text(f"File {number} first.\n\nFile {number} second.\n", encoding="utf-8")
    (folder / "dup.txt").write_text("File 0 first.\n\n\n", encoding="utf-8")
    monkeypatch.setattr(cli, "GROUP_DOCUMENTS", 3)
    sizes = []
    upsert = cli.upsert_with_progress

    def recording(collection, documents, **kwargs):
        sizes.append(len(documents))
        return upsert(collection, documents, **kwargs)

    monkeypatch.setattr(cli, "upsert_with_progress", recording)
    db = tmp_path / "g.db"
    result = run("index", db, folder)
    assert sizes == [4, 4, 4, 2]  # two files' documents a group (a file's documents stay together)
    assert "Indexed 14 documents from 8 files into" in result.output and "14 new" in result.output
    assert "Skipped 1 repeated document (same id or text as an earlier one; first: " in result.output
    (folder / "6.txt").unlink()
    result = run("index", db, folder)
    assert sizes[4:] == [0, 0, 0] and "0 new, 0 updated, 12 unchanged, 2 removed" in result.output
