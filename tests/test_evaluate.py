"""`sqlitebin eval` and `sqlitebin bench`: metrics by hand, eval on a 300-document slice, bench in quick mode."""

import gzip
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from sqlitebin import bench as bench_module
from sqlitebin.bench import bench, bench_command, check_targets, format_report as bench_report
from sqlitebin.datasets import load_corpus, load_queries, sample_corpus_path, sample_queries_path
from sqlitebin.evaluate import VECTOR_MODES, eval_command, evaluate, format_report, headline_rows
from sqlitebin.metrics import mean_mrr_at_k, mean_ndcg_at_k, mean_recall_at_k, percentile


# ----------------------------------------------------------------------
# The figures eval reports, computed by hand on a three-query example.


def test_eval_figures_by_hand():
    ranked = [[4, 7, 1], [2, 3, 9], [5, 6, 8]]
    relevant = [4, 9, 0]  # ranks 1, 3 and absent
    exact = [[4, 1, 7], [2, 8, 9], [8, 6, 0]]
    assert mean_ndcg_at_k(ranked, relevant) == pytest.approx((1 + 0.5 + 0) / 3)
    assert mean_mrr_at_k(ranked, relevant) == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert mean_recall_at_k(ranked, exact, k=3) == pytest.approx((3 / 3 + 2 / 3 + 2 / 3) / 3)
    assert mean_ndcg_at_k(ranked, relevant, k=2) == pytest.approx(1 / 3)  # rank 3 falls outside k = 2
    # Retained: a mode's nDCG over exact nDCG, e.g. ranks (2, 3, absent) against exact ranks (1, 3, absent).
    mode = mean_ndcg_at_k([[7, 4], [2, 3, 9], [5]], relevant)
    assert mode / mean_ndcg_at_k(ranked, relevant) == pytest.approx((1 / math.log2(3) + 0.5) / 1.5)
    # p50 and p95 interpolate linearly between order statistics.
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)


# ----------------------------------------------------------------------
# eval on a slice of the bundled sample


@pytest.fixture(scope="module")
def small_set():
    """The first 60 labelled queries of the sample and 300 documents: their answers plus distractors."""
    documents = load_corpus(sample_corpus_path())
    queries = load_queries(sample_queries_path())[:60]
    wanted = {query["doc"] for query in queries}
    chosen = [d for d in documents if d["id"] in wanted]
    chosen += [d for d in documents if d["id"] not in wanted][: 300 - len(chosen)]
    return chosen, queries


@pytest.fixture(scope="module")
def small_result(small_set):
    documents, queries = small_set
    return evaluate(documents, queries, oversample=(1, 10), progress=False)


def _rows(result, mode):
    return [row for row in result["results"] if row["mode"] == mode]


def test_evaluate_reports_every_mode(small_result):
    assert small_result["documents"] == 300 and small_result["query_count"] == 60
    modes = {row["mode"] for row in small_result["results"]}
    assert {"exact float32"} | {name for name, *_ in VECTOR_MODES} <= modes
    for name, candidates, rescore, stored in VECTOR_MODES:
        expected = [1] if rescore == "none" else [1, 10]
        assert sorted(row["oversample"] for row in _rows(small_result, name)) == expected
    for row in small_result["results"]:
        assert 0 <= row["recall_at_10"] <= 1 and 0 <= row["ndcg_at_10"] <= 1
        assert 0 <= row["mrr_at_10"] <= row["ndcg_at_10"] + 1e-12  # one relevant document: 1/r <= 1/log2(r+1)
        assert 0 < row["p50_ms"] <= row["p95_ms"]
    json.dumps(small_result)  # --json must be able to print it


def test_evaluate_exact_baseline_and_bytes(small_result):
    exact = _rows(small_result, "exact float32")[0]
    assert exact["recall_at_10"] == 1.0 and exact["ndcg_retained"] == 1.0
    assert exact["ndcg_at_10"] == small_result["exact_ndcg_at_10"] > 0.5
    assert exact["bytes_per_document"] == 4 * 256
    bytes_by_mode = {row["mode"]: row["bytes_per_document"] for row in small_result["results"]}
    # What the index's shadow tables take in the file (dbstat pages) per document: at least the payload
    # (a small slice is dominated by the first chunk, allocated whole).
    assert 32 <= bytes_by_mode["hamming"] == bytes_by_mode["asymmetric"]
    assert 32 + 256 <= bytes_by_mode["hamming + int8"]
    assert 32 + 4 * 256 <= bytes_by_mode["asymmetric + float32"]


def test_evaluate_quality_on_the_slice(small_result):
    by_key = {(row["mode"], row["oversample"]): row for row in small_result["results"]}
    # 100 candidates of 300 documents, rescored with int8: close to exact.
    assert by_key[("asymmetric + int8", 10)]["recall_at_10"] >= 0.9
    assert by_key[("asymmetric + int8", 10)]["ndcg_retained"] >= 0.95
    # Rescoring more candidates does not lose much, and bits alone recover less than the stored vectors.
    assert by_key[("hamming + int8", 10)]["recall_at_10"] >= by_key[("hamming", 1)]["recall_at_10"]
    assert by_key[("hamming + float32", 10)]["recall_at_10"] >= by_key[("hamming + bits", 10)]["recall_at_10"]


def test_format_report_has_both_tables(small_result):
    text = format_report(small_result)
    assert "| asymmetric + int8 | 10 |" in text
    assert "| mode | bytes/doc | x1 | x10 |" in text
    assert len(headline_rows(small_result)) == 1 + len(VECTOR_MODES) + sum(
        1 for row in small_result["results"] if row["mode"] in ("keyword", "hybrid"))


def test_evaluate_rejects_an_unknown_relevant_document(small_set):
    documents, queries = small_set
    broken = queries[:2] + [{"qid": "q-x", "text": "anything", "doc": "no-such-doc"}]
    with pytest.raises(ValueError, match=r"1 of 3 queries .*q-x -> no-such-doc"):
        evaluate(documents, broken, progress=False)
    with pytest.raises(ValueError, match="oversample"):
        evaluate(documents, queries, oversample=(0,), progress=False)


def _write_jsonl_gz(path, records):
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")


def test_eval_command_json_and_table(small_set, tmp_path):
    documents, queries = small_set
    corpus, query_file = tmp_path / "corpus.jsonl.gz", tmp_path / "queries.jsonl"
    _write_jsonl_gz(corpus, documents[:120])
    kept = {document["id"] for document in documents[:120]}
    query_file.write_text("".join(json.dumps(q) + "\n" for q in queries if q["doc"] in kept))
    runner = CliRunner()
    result = runner.invoke(eval_command, ["--corpus", str(corpus), "--queries", str(query_file), "--oversample", "2,4",
                                          "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert parsed["oversample"] == [2, 4] and parsed["documents"] == 120
    result = runner.invoke(eval_command, ["--corpus", str(corpus), "--queries", str(query_file), "--oversample", "4",
                                          "--dim", "64", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "64-d" in result.stdout and "| hamming + int8 | 4 |" in result.stdout


def test_eval_command_errors_are_one_line(tmp_path):
    runner = CliRunner()
    corpus = str(sample_corpus_path())
    result = runner.invoke(eval_command, ["--corpus", corpus, "--queries", corpus])
    assert result.exit_code == 1
    assert "field 'qid' is missing" in result.output and "Traceback" not in result.output
    result = runner.invoke(eval_command, ["--corpus", str(sample_corpus_path()), "--queries",
                                          str(sample_queries_path()), "--oversample", "1,x"])
    assert result.exit_code == 2 and "--oversample" in result.output


# ----------------------------------------------------------------------
# bench in quick mode


def test_bench_quick_runs_every_available_engine():
    result = bench(quick=True, log=lambda message: None)
    engines = {row["engine"] for row in result["scan"]}
    assert {"sqlitebin-knn", "sqlitebin-knn-asymmetric", "sqlitebin-scalar", "numpy"} <= engines
    baseline = next(row for row in result["scan"] if row["engine"] == "sqlitebin-knn")
    assert baseline["ratio_to_sqlitebin"] == 1.0 and baseline["n"] == 2000 and baseline["runs"] == 1
    ingest = result["ingest"]
    assert ingest["documents_per_second"] > 0 and ingest["vectors_per_second"] > 0
    assert ingest["vector_file_bytes_per_document"] > 32 + 256  # code + int8 vector at least
    assert [t["target"].split(":")[0] for t in result["targets"]] == ["ingest with WordLlama",
                                                                         "ingest of precomputed vectors"]
    assert [t["met"] for t in result["targets"]] == [None, None]  # a quick run is too small to judge its targets
    text = bench_report(result)
    assert "256-bit codes, top 100" in text and "documents/s" in text
    assert "NOT met" not in text and text.count("not judged (--quick run)") == 2
    json.dumps(result)


def test_bench_peers_come_from_the_benchmarks_directory_and_a_missing_one_is_skipped(monkeypatch):
    peers = _load_script("peers")
    extra, skipped = peers.engines(log=lambda message: None)
    result = bench(quick=True, ingest=False, log=lambda message: None, extra_engines=extra, skipped=skipped)
    engines = {row["engine"] for row in result["scan"]}
    assert {"sqlitebin-knn", "numpy"} <= engines and {label for e in extra for label in e.labels} <= engines
    monkeypatch.setattr(peers, "PEERS", (("nopeer", "sqlitebin_no_such_module", "nopeer-package"),))
    lines = []
    extra, skipped = peers.engines(log=lines.append)
    assert extra == [] and skipped == lines
    assert lines[0].startswith("skipping nopeer: it is not installed") and "pip install nopeer-package" in lines[0]
    result = bench(quick=True, ingest=False, log=lambda message: None, extra_engines=extra, skipped=skipped)
    assert result["skipped"] == lines and {row["engine"] for row in result["scan"]} == {
        "sqlitebin-knn", "sqlitebin-knn-asymmetric", "sqlitebin-scalar", "numpy"}
    assert not any(hasattr(bench_module, name) for name in ("PEERS", "load_peers", "load_sqlite_vec"))


def test_bench_answer_checks_catch_a_wrong_top_k():
    distances = np.array([5, 1, 3, 1, 9], dtype=np.int64)
    bench_module._check_hamming("ok", [3, 1], None, distances, 2)  # ties: either order of the two 1s
    with pytest.raises(AssertionError, match="wrong: distances"):
        bench_module._check_hamming("wrong", [1, 2], None, distances, 2)
    with pytest.raises(AssertionError, match="reported distances"):
        bench_module._check_hamming("liar", [1, 3], [1, 2], distances, 2)
    codes = np.packbits(np.array([[1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0]], dtype=np.uint8), axis=1)
    query = np.array([1, 1, -1, -1, 0, 0, 0, 0], dtype=np.float32)
    assert bench_module.asymmetric_scores(codes, query).tolist() == [4.0, -4.0]


def test_targets_are_judged_from_the_one_million_row():
    rows = [{"engine": e, "n": 1_000_000, "bits": 256, "median_ms": ms} for e, ms in
            (("sqlitebin-knn", 2.0), ("sqlite-vec-vec0", 50.0), ("faiss", 0.5), ("sqlitebin-knn-asymmetric", 5.0))]
    targets = check_targets({"scan": rows, "ingest": None})
    assert [t["met"] for t in targets] == [True, False, True]
    assert targets[1]["value"] == "4.00x faiss's time"


def test_bench_command_quick_and_errors():
    runner = CliRunner()
    result = runner.invoke(bench_command, ["--quick", "--no-ingest", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["sizes"] == [2000]
    result = runner.invoke(bench_command, ["--sizes", "50", "--no-ingest"])
    assert result.exit_code == 1 and "every size must be at least k (100)" in result.output
    result = runner.invoke(bench_command, ["--bits", "100", "--no-ingest"])
    assert result.exit_code == 1 and "positive multiples of 64, got [100]" in result.output
    result = runner.invoke(bench_command, ["--sizes", "1e6"])
    assert result.exit_code == 2 and "--sizes" in result.output


# ----------------------------------------------------------------------
# The scripts behind BENCHMARKS.md, in their quick modes


def _load_script(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_knn_script_quick(capsys):
    assert _load_script("bench_knn").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "ns/code" in out and "256-bit codes, top 100" in out


def test_bench_kernels_script_quick(capsys):
    pytest.importorskip("faiss")
    assert _load_script("bench_kernels").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "first asymmetric / first hamming query" in out


def test_bench_batch_script_small(capsys):
    pytest.importorskip("faiss")
    assert _load_script("bench_batch").main(["--n", "3000", "--queries", "20"]) in (0, None)
    out = capsys.readouterr().out
    assert "same top-10 distances as faiss for every query: True" in out


def test_make_results_quick_writes_the_page_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    make_results = _load_script("make_results")
    page, plots, saved = tmp_path / "BENCHMARKS.md", tmp_path / "plots", tmp_path / "results.json"
    assert make_results.main(["--quick", "--output", str(page), "--plots", str(plots), "--save-json", str(saved)]) == 0
    text = page.read_text()
    assert "python benchmarks/make_results.py" in text and "--quick" in text
    for name in ("scan_latency.png", "quality_frontier.png", "ndcg_retained.png"):
        assert (plots / name).stat().st_size > 10_000
        assert f"(plots/{name})" in text
    # The page can be rebuilt from the saved results without measuring again.
    page.unlink()
    assert make_results.main(["--from-json", str(saved), "--output", str(page), "--plots", str(plots)]) == 0
    assert page.read_text() == text
