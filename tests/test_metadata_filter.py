"""Metadata filter dicts as SQL conditions, checked against a Python oracle on awkward metadata."""

import numpy as np
import pytest

import sqlitebin
from sqlitebin.metadata_filter import where_from_filter

METADATA = [
    {"flag": True, "n": 1, "s": "a", "list": [1, "x"]},
    {"flag": False, "n": 1.0, "s": "b"},
    {"flag": 1, "n": None, "s": "1"},
    {"n": 2, "s": "A%", "list": ["y"], "nested": {"n": 1}},
    {"odd key.with dots": "v", "it's": 3},
    None,
]

MISSING = object()


def get(metadata, key):
    return (metadata or {}).get(key, MISSING)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


CASES = [
    ({"flag": True}, lambda m: get(m, "flag") is True),
    ({"flag": 1}, lambda m: is_number(get(m, "flag")) and get(m, "flag") == 1),
    ({"flag": {"$ne": True}}, lambda m: get(m, "flag") is not True),
    ({"n": 1}, lambda m: is_number(get(m, "n")) and get(m, "n") == 1),
    ({"n": None}, lambda m: get(m, "n") is None),
    ({"n": {"$exists": True}}, lambda m: get(m, "n") is not MISSING),
    ({"n": {"$gte": 1, "$lt": 2}}, lambda m: is_number(get(m, "n")) and 1 <= get(m, "n") < 2),
    ({"s": {"$in": ["a", "1"]}}, lambda m: get(m, "s") in ("a", "1")),
    ({"s": {"$nin": ["a", "1"]}}, lambda m: get(m, "s") not in ("a", "1")),
    ({"s": "1"}, lambda m: get(m, "s") == "1"),
    ({"s": {"$like": "a%"}}, lambda m: isinstance(get(m, "s"), str) and get(m, "s").lower().startswith("a")),
    ({"list": {"$contains": "x"}}, lambda m: isinstance(get(m, "list"), list) and "x" in get(m, "list")),
    ({"list": {"$contains": 1}}, lambda m: isinstance(get(m, "list"), list) and 1 in get(m, "list")),
    ({"odd key.with dots": "v"}, lambda m: get(m, "odd key.with dots") == "v"),
    ({"it's": 3}, lambda m: get(m, "it's") == 3),
    ({"nested": {"$exists": True}}, lambda m: get(m, "nested") is not MISSING),
    ({"$or": [{"s": "a"}, {"$not": {"n": {"$exists": True}}}]},
     lambda m: get(m, "s") == "a" or get(m, "n") is MISSING),
    ({}, lambda m: True),
]


@pytest.fixture(scope="module")
def collection():
    db = sqlitebin.connect()
    col = db.create_collection("docs", dim=4, embedder=None)
    col.add(vectors=np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]], metadata=METADATA)
    return col


@pytest.mark.parametrize("filter, oracle", CASES, ids=[repr(c[0]) for c in CASES])
def test_filter_matches_the_oracle(collection, filter, oracle):
    where, params = where_from_filter("test", filter)
    hits = collection.search(np.ones(4), k=10, where=where, params=params)
    assert sorted(hit.id for hit in hits) == [i + 1 for i, m in enumerate(METADATA) if oracle(m)]


@pytest.mark.parametrize("filter, message", [
    ({"$regex": 1}, "unknown filter operator '$regex' at the top level"),
    ({"a": {"$gt": True}}, "$gt on 'a' needs a string or a number, got bool True"),
    ({"a": {"$gt": float("nan")}}, "filter value for 'a' must be finite"),
    ({"a": {"$in": [None]}}, "$in on 'a' needs a string or a number, got NoneType None"),
    ({"a": {"$exists": 1}}, "$exists on 'a' needs true or false"),
    ({"a": {}}, "the condition on 'a' is an empty dict"),
    ({'a"b': 1}, "metadata filter keys must be non-empty strings without '\"'"),
    ({"$and": []}, "$and needs a non-empty list of filters"),
    ({"a": 2**70}, "does not fit in 64 bits"),
    ([("a", 1)], "a filter must be a dict, got list"),
])
def test_bad_filters(filter, message):
    with pytest.raises(ValueError) as error:
        where_from_filter("f()", filter)
    assert str(error.value).startswith("f(): ") and message in str(error.value)
