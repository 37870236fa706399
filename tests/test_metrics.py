"""Retrieval metrics against hand-computed values, and exact_search() against a plain Python loop."""

import math

import numpy as np
import pytest

from sqlitebin.metrics import (
    exact_search,
    mean_mrr_at_k,
    mean_ndcg_at_k,
    mean_recall_at_k,
    mrr_at_k,
    ndcg_at_k,
    percentile,
    recall_at_k,
)


def test_ndcg_at_k_by_rank():
    assert ndcg_at_k(["a", "b", "c"], "a") == 1.0
    assert ndcg_at_k(["a", "b", "c"], "b") == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(["a", "b", "c"], "c") == 0.5  # 1 / log2(4)
    assert ndcg_at_k(["a", "b", "c"], "z") == 0.0


def test_ndcg_at_k_ignores_ranks_past_k():
    ranking = [f"d{i}" for i in range(20)]
    assert ndcg_at_k(ranking, "d9", k=10) == pytest.approx(1 / math.log2(11))
    assert ndcg_at_k(ranking, "d10", k=10) == 0.0
    assert ndcg_at_k(ranking, "d2", k=2) == 0.0


def test_mrr_at_k_by_rank():
    assert mrr_at_k([7, 8, 9], 7) == 1.0
    assert mrr_at_k([7, 8, 9], 9) == pytest.approx(1 / 3)
    assert mrr_at_k([7, 8, 9], 9, k=2) == 0.0
    assert mrr_at_k([], 9) == 0.0


def test_metrics_accept_numpy_rankings():
    ranking = np.array([5, 3, 1], dtype=np.int64)
    assert ndcg_at_k(ranking, 1) == 0.5
    assert mrr_at_k(ranking, 3) == 0.5


def test_recall_at_k():
    assert recall_at_k([1, 2, 3, 4], [4, 3, 2, 1], k=4) == 1.0
    assert recall_at_k([1, 2, 9, 8], [1, 2, 3, 4], k=4) == 0.5
    assert recall_at_k([1, 2, 3, 4, 5], [5, 6, 7, 8, 9], k=4) == 0.0  # 5 is past k in the retrieved list
    # Fewer documents than k: the denominator is what exact search could return.
    assert recall_at_k([2, 1], [1, 2], k=10) == 1.0


def test_mean_metrics_average_over_queries():
    rankings = [["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"]]
    assert mean_ndcg_at_k(rankings, ["a", "c", "z"]) == pytest.approx((1 + 0.5 + 0) / 3)
    assert mean_mrr_at_k(rankings, ["a", "c", "z"]) == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert mean_recall_at_k([[1, 2], [1, 3]], [[1, 2], [1, 2]], k=2) == pytest.approx(0.75)


def test_metric_errors_name_function_and_value():
    with pytest.raises(ValueError, match=r"ndcg_at_k\(\): k must be a positive integer, got 0"):
        ndcg_at_k([1], 1, k=0)
    with pytest.raises(ValueError, match=r"mrr_at_k\(\).*got 2.5"):
        mrr_at_k([1], 1, k=2.5)
    with pytest.raises(ValueError, match=r"recall_at_k\(\): exact_ids is empty"):
        recall_at_k([1], [], k=3)
    with pytest.raises(ValueError, match=r"mean_ndcg_at_k\(\): 2 ranked lists but 1 references"):
        mean_ndcg_at_k([[1], [2]], [1])
    with pytest.raises(ValueError, match=r"mean_mrr_at_k\(\): no queries"):
        mean_mrr_at_k([], [])


def test_percentile():
    latencies = [float(value) for value in range(1, 101)]  # 1..100
    assert percentile(latencies, 50) == pytest.approx(50.5)
    assert percentile(latencies, 95) == pytest.approx(95.05)
    assert percentile([3.0], 95) == 3.0
    with pytest.raises(ValueError, match=r"percentile\(\): no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"percentile\(\): q must be between 0 and 100, got 101"):
        percentile([1.0], 101)


def naive_top_k(doc_vectors, query_vector, k):
    """Score every document with a Python loop; order by score descending, then row number ascending."""
    scored = []
    for row, doc_vector in enumerate(doc_vectors):
        score = sum(float(a) * float(b) for a, b in zip(doc_vector, query_vector))
        scored.append((-score, row))
    scored.sort()
    return [row for _, row in scored[:k]], [-negative for negative, _ in scored[:k]]


def test_exact_search_matches_naive_loop_on_integer_vectors_with_ties():
    # Small integers make every dot product exact in float32, so ties are real ties and the orders must agree.
    rng = np.random.default_rng(0)
    doc_vectors = rng.integers(-2, 3, size=(300, 8)).astype(np.float32)
    query_vectors = rng.integers(-2, 3, size=(25, 8)).astype(np.float32)
    for k in (1, 5, 10, 300):
        indices, scores = exact_search(doc_vectors, query_vectors, k)
        assert indices.shape == scores.shape == (25, k)
        assert indices.dtype == np.int64 and scores.dtype == np.float32
        for query_row, query_vector in enumerate(query_vectors):
            expected_rows, expected_scores = naive_top_k(doc_vectors, query_vector, k)
            assert indices[query_row].tolist() == expected_rows
            assert scores[query_row].tolist() == expected_scores


def test_exact_search_breaks_ties_at_the_kth_place_by_lower_row():
    doc_vectors = np.ones((50, 4), dtype=np.float32)  # every document scores the same
    doc_vectors[17] = 2.0
    indices, scores = exact_search(doc_vectors, np.ones(4, dtype=np.float32), 5)
    assert indices.tolist() == [[17, 0, 1, 2, 3]]
    assert scores.tolist() == [[8.0, 4.0, 4.0, 4.0, 4.0]]


def test_exact_search_matches_naive_loop_on_random_unit_vectors():
    rng = np.random.default_rng(1)
    doc_vectors = rng.standard_normal((500, 32)).astype(np.float32)
    doc_vectors /= np.linalg.norm(doc_vectors, axis=1, keepdims=True)
    query_vectors = rng.standard_normal((10, 32)).astype(np.float32)
    indices, scores = exact_search(doc_vectors, query_vectors, 10)
    for query_row, query_vector in enumerate(query_vectors):
        expected_rows, expected_scores = naive_top_k(doc_vectors, query_vector, 10)
        assert indices[query_row].tolist() == expected_rows
        np.testing.assert_allclose(scores[query_row], expected_scores, rtol=1e-5, atol=1e-6)


def test_exact_search_blocks_of_queries_agree_with_one_at_a_time():
    rng = np.random.default_rng(2)
    doc_vectors = rng.standard_normal((100_000, 4)).astype(np.float32)  # blocks of 41 queries
    query_vectors = rng.standard_normal((100, 4)).astype(np.float32)
    indices, scores = exact_search(doc_vectors, query_vectors, 3)
    for query_row in (0, 40, 41, 99):
        single_indices, single_scores = exact_search(doc_vectors, query_vectors[query_row], 3)
        assert indices[query_row].tolist() == single_indices[0].tolist()
        np.testing.assert_allclose(scores[query_row], single_scores[0], rtol=1e-6)


def test_exact_search_k_larger_than_collection():
    indices, scores = exact_search(np.eye(3, dtype=np.float32), np.array([[0.0, 1.0, 0.5]]), 10)
    assert indices.tolist() == [[1, 2, 0]]
    assert scores.tolist() == [[1.0, 0.5, 0.0]]


def test_exact_search_errors():
    with pytest.raises(ValueError, match=r"exact_search\(\): dimensions differ \(doc_vectors 4 vs query_vectors 3\)"):
        exact_search(np.zeros((5, 4)), np.zeros((1, 3)), 2)
    with pytest.raises(ValueError, match=r"exact_search\(\): expected 2-D arrays"):
        exact_search(np.zeros(4), np.zeros((1, 4)), 2)
    with pytest.raises(ValueError, match=r"exact_search\(\): vectors contain NaN"):
        exact_search(np.full((5, 4), np.nan), np.zeros((1, 4)), 2)
    with pytest.raises(ValueError, match=r"exact_search\(\): k must be a positive integer, got 0"):
        exact_search(np.zeros((5, 4)), np.zeros((1, 4)), 0)
