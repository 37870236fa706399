"""The Datasette plugin, tested against a real `datasette` server on a loopback port.

The database is a slice of the bundled Debian descriptions indexed with WordLlama. The
oracle for every result list is Collection.search() through sqlitebin's own API (itself
checked against NumPy brute force in test_collection.py and test_debian_slice.py). The
page is driven in headless Chromium: a query typed into the box, the results read back.
Set SQLITEBIN_SCREENSHOT=docs/datasette-search.png to refresh the README's screenshot.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

pytest.importorskip("datasette", reason="Datasette is not installed (pip install 'sqlitebin[datasette]')")

import sqlitebin  # noqa: E402
from sqlitebin.datasets import load_corpus, sample_corpus_path  # noqa: E402

DOCUMENTS = 1000
QUERIES = ("image editor", "compiler for the C language", "play music files")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, expect=200):
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            status, body = response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode("utf-8")
    assert status == expect, (url, status, body[:2000])
    return body


class Server:
    def __init__(self, database_path, *extra):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "datasette", "serve", str(database_path), *extra, "-h", "127.0.0.1",
             "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/-/versions.json", timeout=5).read()
                return
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    raise RuntimeError("datasette did not start: " + self.log.read().decode()[-3000:])
                time.sleep(0.2)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def debian(tmp_path_factory):
    path = tmp_path_factory.mktemp("datasette") / "debian.db"
    documents = load_corpus(sample_corpus_path())[:DOCUMENTS]
    db = sqlitebin.connect(path)
    collection = db.create_collection("debian", dim=256)
    collection.add([d["text"] for d in documents], metadata=[{"package": d["title"]} for d in documents])
    db.create_collection("vectors only", dim=8, embedder=None).add(vectors=[[1.0] * 8])
    db.close()
    return path


@pytest.fixture(scope="module")
def server(debian):
    server = Server(debian)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def oracle(debian):
    db = sqlitebin.connect(debian, readonly=True, create=False)
    yield db.collection("debian")
    db.close()


def search_json(server, collection="debian", expect=200, **args):
    url = f"{server.url}/-/sqlitebin/debian/{urllib.parse.quote(collection)}.json?{urllib.parse.urlencode(args)}"
    return json.loads(get(url, expect))


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_json_results_match_collection_search(server, oracle, query, mode):
    body = search_json(server, q=query, mode=mode, k=7)
    hits = oracle.search(query, k=7, mode=mode)
    assert body["ok"] and (body["collection"], body["query"], body["mode"], body["k"]) == ("debian", query, mode, 7)
    assert [r["id"] for r in body["results"]] == [h.id for h in hits] and len(hits) > 0
    assert [r["score"] for r in body["results"]] == pytest.approx([h.score for h in hits], rel=1e-6)
    assert [r["distance"] for r in body["results"]] == [h.distance for h in hits]
    assert [r["rank"] for r in body["results"]] == list(range(1, len(hits) + 1))
    assert body["results"][0]["metadata"] == hits[0].metadata


def test_results_link_to_their_rows(server, oracle):
    first = search_json(server, q="image editor", k=1)["results"][0]
    assert first["url"] == f"{server.url}/debian/debian_documents/{first['id']}"
    row = json.loads(get(first["url"] + ".json?_shape=array"))
    assert row[0]["id"] == first["id"] and row[0]["text"] == first["text"] == oracle.get([first["id"]])[0].text


def test_bad_requests_say_what_is_wrong(server):
    assert search_json(server, expect=400, q="x", k=0)["error"] == "k must be a whole number from 1 to 100, got '0'"
    assert search_json(server, expect=400, q="x", k="ten")["error"] == "k must be a whole number from 1 to 100, got 'ten'"
    assert search_json(server, expect=400, q="x", mode="fuzzy")["error"] == (
        "mode must be one of vector, keyword, hybrid, got 'fuzzy'")
    assert "only mode=keyword can search it by text" in search_json(server, "vectors only", expect=400, q="x")["error"]
    assert search_json(server, q="")["results"] == []
    get(f"{server.url}/-/sqlitebin/debian/nothing.json?q=x", expect=404)
    get(f"{server.url}/-/sqlitebin/nowhere/debian?q=x", expect=404)


def test_collections_page_and_database_action(server):
    listing = get(server.url + "/-/sqlitebin")
    assert '<a href="/-/sqlitebin/debian/debian">debian</a>' in listing
    assert '<a href="/-/sqlitebin/debian/vectors+only">vectors only</a>' in listing  # Datasette's tilde encoding
    assert "<h1>Search vectors only</h1>" in get(server.url + "/-/sqlitebin/debian/vectors+only")
    assert "/-/sqlitebin/debian/debian" in get(server.url + "/debian")  # the database page's action menu


def test_html_page_shows_scores_and_links(server, oracle):
    page = get(f"{server.url}/-/sqlitebin/debian/debian?q=image+editor&k=3")
    hit = oracle.search("image editor", k=3)[0]
    assert f'<td class="score">{hit.score:.4f}</td>' in page
    assert f'<a href="{server.url}/debian/debian_documents/{hit.id}">{hit.id}</a>' in page
    assert 'href="/-/sqlitebin/debian/debian.json?q=image+editor&amp;k=3"' in page


def test_the_extension_is_loaded_in_datasette_connections(server):
    from datasette.utils.sqlite import sqlite3

    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        pytest.skip(f"Datasette's {sqlite3.__name__} cannot load extensions (pip install pysqlite3-binary)")
    sql = "SELECT hamming(x'ff00', x'0f0f') AS bits, sqlitebin_version() AS version"
    rows = json.loads(get(f"{server.url}/debian.json?_shape=array&sql={urllib.parse.quote(sql)}"))
    assert rows == [{"bits": 8, "version": sqlitebin.__version__}]


def test_datasette_permissions_apply(debian, tmp_path):
    """A database only root may see: its search pages, JSON and listing are closed to anonymous visitors."""
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"databases": {"debian": {"allow": {"id": "root"}}}}))
    server = Server(debian, "--metadata", str(metadata))
    try:
        get(f"{server.url}/-/sqlitebin/debian/debian?q=image+editor", expect=403)
        get(f"{server.url}/-/sqlitebin/debian/debian.json?q=image+editor", expect=403)
        assert "/-/sqlitebin/debian/debian" not in get(server.url + "/-/sqlitebin")
    finally:
        server.stop()


# ----------------------------------------------------------------------
# In a browser

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1100,720")


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path / 'profile'}",):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def test_search_page_in_chromium(server, oracle, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(server.url + "/-/sqlitebin")
    browser.find_element(By.LINK_TEXT, "debian").click()
    box = browser.find_element(By.ID, "sqlitebin-q")
    box.send_keys("image editor")
    Select(browser.find_element(By.ID, "sqlitebin-mode")).select_by_value("hybrid")
    k = browser.find_element(By.ID, "sqlitebin-k")
    k.clear()
    k.send_keys("5")
    browser.find_element(By.ID, "sqlitebin-submit").click()
    WebDriverWait(browser, 30).until(lambda b: "q=image+editor" in b.current_url)
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#sqlitebin-results tbody tr"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#sqlitebin-results tbody tr")
    read = [(int(row.find_element(By.CSS_SELECTOR, "td.id").text), row.find_element(By.CSS_SELECTOR, "td.score").text)
            for row in rows]
    hits = oracle.search("image editor", k=5, mode="hybrid")
    assert read == [(h.id, f"{h.score:.4f}") for h in hits]
    assert browser.find_element(By.ID, "sqlitebin-q").get_attribute("value") == "image editor"
    screenshot = os.environ.get("SQLITEBIN_SCREENSHOT") or str(tmp_path / "search.png")
    browser.save_screenshot(screenshot)
    assert open(screenshot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # The first result's link opens its row in Datasette's own table view.
    rows[0].find_element(By.CSS_SELECTOR, "td.id a").click()
    WebDriverWait(browser, 30).until(lambda b: "/debian_documents/" in b.current_url)
    assert browser.current_url == f"{server.url}/debian/debian_documents/{hits[0].id}"
    assert hits[0].text.split()[0] in browser.find_element(By.TAG_NAME, "body").text


def test_a_sqlite3_without_extension_loading_gets_one_warning(capsys, monkeypatch):
    """Datasette keeps serving (the search pages too) where its sqlite3 cannot load extensions."""
    from sqlitebin import datasette_plugin

    class NoLoading:
        def execute(self, sql):
            raise AssertionError("not reached")

    monkeypatch.setattr(datasette_plugin, "_warned", [])
    datasette_plugin.prepare_connection(NoLoading())
    datasette_plugin.prepare_connection(NoLoading())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sqlitebin: load(): this Python's sqlite3 module was built without")
    assert err.rstrip().endswith("; the search pages still work")
