"""Metadata filters as SQL: a dict of conditions becomes one `where=` condition on the documents table.

The LangChain and LlamaIndex stores take filters as data; `where_from_filter()` turns them into a SQL
condition on `json_extract(metadata, ...)` with every value bound as a parameter, which
`Collection.search(where=..., params=...)` applies before the top-k (so filtered searches still return
k hits whenever k documents match; nothing is filtered after the search).

The filter language is the one most LangChain stores accept (a subset of MongoDB's):

- ``{"kind": "db"}``: equality; several keys in one dict must all hold.
- ``{"year": {"$gte": 2020}}``: an operator: ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``,
  ``$in`` and ``$nin`` (a list of values), ``$exists`` (true or false), ``$contains`` (the metadata value
  is a JSON array holding the value), ``$like`` (SQL LIKE on a text value: ``%`` and ``_`` wildcards, ASCII
  letters case-insensitive).
- ``{"$and": [filter, ...]}``, ``{"$or": [filter, ...]}``, ``{"$not": filter}``.

Values are strings, integers, finite floats, booleans or None (a JSON null). Booleans match JSON true and
false only (not 1 and 0). ``$ne`` and ``$nin`` also match documents without the key, as in MongoDB; the
comparisons match only documents that have it. Keys are top-level metadata keys, taken literally (a dot is
part of the key, not a path).
"""

import json
import math

COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains", "$like")
PARAMETER_PREFIX = "metadata_filter_"


def where_from_filter(function, filter):
    """``(where, params)`` for ``Collection.search()`` from a filter dict; ``(None, {})`` for an empty one.

    Raises ValueError (naming ``function``, the key and the value) for an unknown operator, a key that
    cannot be a JSON path label, or a value that is not a string, number, boolean or None.
    """
    if filter is None:
        return None, {}
    builder = _Builder(function)
    sql = builder.filter(filter)
    return (sql or None), builder.params


class _Builder:
    def __init__(self, function):
        self.function = function
        self.params = {}

    def bind(self, value):
        name = f"{PARAMETER_PREFIX}{len(self.params)}"
        self.params[name] = value
        return ":" + name

    def filter(self, filter):
        if not isinstance(filter, dict):
            raise ValueError(f"{self.function}: a filter must be a dict, got {type(filter).__name__}")
        parts = []
        for key, condition in filter.items():
            if key in ("$and", "$or"):
                if not isinstance(condition, (list, tuple)) or not condition:
                    raise ValueError(f"{self.function}: {key} needs a non-empty list of filters, got {condition!r}")
                joined = f" {key[1:].upper()} ".join(f"({self.filter(item)})" for item in condition)
                parts.append(joined)
            elif key == "$not":
                parts.append(f"NOT coalesce(({self.filter(condition)}), 0)")
            elif isinstance(key, str) and key.startswith("$"):
                raise ValueError(
                    f"{self.function}: unknown filter operator {key!r} at the top level "
                    "(expected a metadata key, $and, $or or $not)")
            else:
                parts.append(self.field(key, condition))
        if not parts:
            return "1"
        return " AND ".join(f"({part})" for part in parts)

    def field(self, key, condition):
        if not isinstance(key, str) or not key or '"' in key:
            raise ValueError(
                f"{self.function}: metadata filter keys must be non-empty strings without '\"', got {key!r}")
        path = self.bind('$."' + key + '"')
        if not isinstance(condition, dict):
            return self.equal(key, path, condition)
        if not condition:
            raise ValueError(f"{self.function}: the condition on {key!r} is an empty dict")
        parts = []
        for operator, value in condition.items():
            if operator not in OPERATORS:
                raise ValueError(
                    f"{self.function}: unknown filter operator {operator!r} on {key!r} "
                    f"(expected one of {', '.join(OPERATORS)})")
            parts.append(self.operator(key, path, operator, value))
        return " AND ".join(f"({part})" for part in parts)

    def operator(self, key, path, operator, value):
        value_sql = f"json_extract(metadata, {path})"
        if operator == "$eq":
            return self.equal(key, path, value)
        if operator == "$ne":
            return f"NOT coalesce(({self.equal(key, path, value)}), 0)"
        if operator in COMPARISONS:
            self.check_scalar(key, operator, value, allow_bool=False, allow_none=False)
            return f"json_type(metadata, {path}) IN ('integer', 'real', 'text') AND {value_sql} {COMPARISONS[operator]} {self.bind(value)}"
        if operator in ("$in", "$nin"):
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{self.function}: {operator} on {key!r} needs a list of values, got {value!r}")
            for item in value:
                self.check_scalar(key, operator, item, allow_bool=False, allow_none=False)
            membership = (f"json_type(metadata, {path}) IN ('integer', 'real', 'text') AND "
                          f"{value_sql} IN (SELECT value FROM json_each({self.bind(json.dumps(list(value)))}))")
            return membership if operator == "$in" else f"NOT coalesce(({membership}), 0)"
        if operator == "$exists":
            if not isinstance(value, bool):
                raise ValueError(f"{self.function}: $exists on {key!r} needs true or false, got {value!r}")
            return f"json_type(metadata, {path}) IS {'NOT ' if value else ''}NULL"
        if operator == "$contains":
            self.check_scalar(key, operator, value, allow_bool=False, allow_none=False)
            return (f"json_type(metadata, {path}) = 'array' AND EXISTS "
                    f"(SELECT 1 FROM json_each(metadata, {path}) AS item WHERE item.value = {self.bind(value)} "
                    "AND item.type IN ('integer', 'real', 'text'))")
        # $like
        if not isinstance(value, str):
            raise ValueError(f"{self.function}: $like on {key!r} needs a string pattern, got {value!r}")
        return f"json_type(metadata, {path}) = 'text' AND {value_sql} LIKE {self.bind(value)}"

    def equal(self, key, path, value):
        self.check_scalar(key, "$eq", value, allow_bool=True, allow_none=True)
        if value is None:
            return f"json_type(metadata, {path}) = 'null'"
        if isinstance(value, bool):
            return f"json_type(metadata, {path}) = '{'true' if value else 'false'}'"
        # The type check keeps a JSON true from equalling 1.
        return (f"json_type(metadata, {path}) IN ('integer', 'real', 'text') AND "
                f"json_extract(metadata, {path}) = {self.bind(value)}")

    def check_scalar(self, key, operator, value, *, allow_bool, allow_none):
        if value is None and allow_none:
            return
        if isinstance(value, bool):
            if allow_bool:
                return
        elif isinstance(value, str) or isinstance(value, int):
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise ValueError(f"{self.function}: filter value {value} for {key!r} does not fit in 64 bits")
            return
        elif isinstance(value, float):
            if math.isfinite(value):
                return
            raise ValueError(f"{self.function}: filter value for {key!r} must be finite, got {value!r}")
        kinds = "a string or a number" + (", a boolean or None" if allow_bool else "")
        raise ValueError(
            f"{self.function}: {operator} on {key!r} needs {kinds}, got {type(value).__name__} {value!r}")
