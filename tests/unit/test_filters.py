"""The filter language: compilation, the allow-list, and hostile values against a real LanceDB table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from stratus.fields import coerce_value, parse_filter_fields
from stratus.retrieval.filters import (
    MAX_CLAUSES,
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_STRING_CHARS,
    FilterError,
    compile_filter,
)

FIELDS = {"year": "int", "category": "string", "score": "float", "public": "bool"}


def test_declared_fields_parse_from_json_or_a_comma_list() -> None:
    # given the two accepted spellings of STRATUS_FILTER_FIELDS
    # when they are parsed
    # then both give the same typed mapping, and a bare name is a string field
    assert parse_filter_fields('{"year": "int", "category": "string"}') == {
        "year": "int",
        "category": "string",
    }
    assert parse_filter_fields("year:int, category") == {"year": "int", "category": "string"}
    assert parse_filter_fields("") == {}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Year:int", "filter field name"),
        ("year:date", "not one of"),
        ("source:string", "built in"),
        ('{"a b": "int"}', "filter field name"),
    ],
)
def test_bad_field_declarations_are_refused(spec: str, message: str) -> None:
    # given a declaration with a bad name, an unknown type or a built-in name
    # when it is parsed
    # then it is refused with a message that says why
    with pytest.raises(ValueError, match=message):
        parse_filter_fields(spec)


def test_comparisons_compile_to_sql_over_prefixed_columns() -> None:
    # given a filter with a range, a set and a built-in field
    spec = {
        "and": [
            {"field": "year", "gte": 2020, "lt": 2024},
            {"field": "category", "in": ["a", "b"]},
            {"or": [{"field": "source", "eq": "x.md"}, {"not": {"field": "public", "eq": True}}]},
        ]
    }

    # when it is compiled
    compiled = compile_filter(spec, FIELDS)

    # then identifiers are the allow-listed columns and values are literals
    assert compiled is not None
    assert compiled.where == (
        "((m_year >= 2020 AND m_year < 2024) AND m_category IN ('a', 'b') AND "
        "(source = 'x.md' OR (NOT m_public = TRUE)))"
    )
    assert compiled.columns == {"m_year", "m_category", "source", "m_public"}


def test_a_list_is_an_and_and_empty_filters_are_no_filter() -> None:
    # given a top-level list and empty filters
    # when compiled
    compiled = compile_filter([{"field": "year", "eq": 1}, {"field": "doc_id", "ne": "d"}], FIELDS)

    # then the list is an AND, and empty filters compile to nothing
    assert compiled is not None
    assert compiled.where == "(m_year = 1 AND doc_id <> 'd')"
    assert compile_filter(None, FIELDS) is None
    assert compile_filter({}, FIELDS) is None


def test_quotes_are_doubled_and_nothing_else_is_touched() -> None:
    # given a value made of SQL syntax
    value = "x' OR 1=1 -- \\'; DROP TABLE t; /* é 😀"

    # when compiled
    compiled = compile_filter({"field": "category", "eq": value}, FIELDS)

    # then it is a single literal with every quote doubled
    assert compiled is not None
    assert compiled.where == "m_category = 'x'' OR 1=1 -- \\''; DROP TABLE t; /* é 😀'"


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"field": "year", "eq": 1}
    for _ in range(depth - 1):
        node = {"not": node}
    return node


@pytest.mark.parametrize(
    ("spec", "field_in_message"),
    [
        ({"field": "secret", "eq": 1}, "filters.field"),
        ({"field": "m_year", "eq": 1}, "filters.field"),
        ({"field": "year); DROP TABLE x; --", "eq": 1}, "filters.field"),
        ({"field": "year", "eq": "2020"}, "filters.eq (year)"),
        ({"field": "year", "eq": True}, "filters.eq (year)"),
        ({"field": "year", "eq": 1.5}, "filters.eq (year)"),
        ({"field": "year", "eq": 2**70}, "filters.eq (year)"),
        ({"field": "score", "gt": "nan"}, "filters.gt (score)"),
        ({"field": "score", "gt": float("inf")}, "filters.gt (score)"),
        ({"field": "category", "eq": 7}, "filters.eq (category)"),
        ({"field": "category", "eq": None}, "filters.eq (category)"),
        ({"field": "category", "eq": {"$ne": 1}}, "filters.eq (category)"),
        ({"field": "category", "gt": "a"}, "filters.gt"),
        ({"field": "category", "eq": "a\x00b"}, "NUL"),
        ({"field": "category", "eq": "a" * (MAX_STRING_CHARS + 1)}, "longer than"),
        ({"field": "category", "in": []}, "filters.in"),
        ({"field": "category", "in": "a"}, "filters.in"),
        ({"field": "category", "in": ["a", 1]}, "filters.in[1] (category)"),
        ({"field": "category", "in": ["a"] * (MAX_IN_VALUES + 1)}, "more than"),
        ({"field": "category", "like": "%"}, "filters.like"),
        ({"field": "category"}, "names no operator"),
        ({"field": 3, "eq": 1}, "filters.field"),
        ({"and": []}, "filters.and"),
        ({"and": {"field": "year", "eq": 1}}, "filters.and"),
        ({"xor": []}, "filters.xor"),
        ({"and": [1]}, "filters.and[0]"),
        ("year = 1", "filters"),
        (nested(MAX_DEPTH + 1), "nested deeper"),
        ({"or": [{"field": "year", "eq": i} for i in range(MAX_CLAUSES + 1)]}, f"more than {MAX_CLAUSES}"),
    ],
)
def test_invalid_filters_are_refused_naming_the_field(spec: Any, field_in_message: str) -> None:
    # given a filter that is unknown, mistyped, too long, too deep, too big or malformed
    # when it is compiled
    # then a FilterError names where the problem is
    with pytest.raises(FilterError) as raised:
        compile_filter(spec, FIELDS)
    assert field_in_message in str(raised.value)


def test_the_deepest_allowed_nesting_compiles() -> None:
    # given a filter exactly MAX_DEPTH levels deep
    # when compiled
    compiled = compile_filter(nested(MAX_DEPTH), FIELDS)

    # then it is accepted
    assert compiled is not None
    assert compiled.where.count("NOT") == MAX_DEPTH - 1


def test_a_declared_field_the_table_lacks_is_reported() -> None:
    # given a table created before 'year' was declared
    # when a filter names it
    # then the error names the field and says what to do
    with pytest.raises(FilterError, match=r"year.*re-index"):
        compile_filter({"field": "year", "eq": 1}, FIELDS, available_columns={"source", "doc_id"})


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("int", 2020, 2020),
        ("int", "2020", 2020),
        ("int", 3.0, 3),
        ("int", 3.5, None),
        ("int", True, None),
        ("int", "abc", None),
        ("float", "1.5", 1.5),
        ("float", "inf", None),
        ("bool", "true", True),
        ("bool", 1, None),
        ("string", 5, "5"),
        ("string", None, None),
    ],
)
def test_sidecar_values_are_coerced_to_the_declared_type_or_null(kind: str, raw: Any, expected: Any) -> None:
    # given a sidecar value and the declared type of its field
    # when it is promoted to the typed column
    # then it is converted when it fits and null when it does not
    assert coerce_value(kind, raw) == expected


# --- hostile values against a real table ------------------------------------------------------

HOSTILE = [
    "plain",
    "it's",
    "' OR '1'='1",
    "x' OR 1=1 --",
    "a'); DELETE FROM t; --",
    "back\\slash",
    "back\\'slash",
    "\\",
    "'",
    "''",
    "%",
    "_",
    "line\nbreak",
    "tab\tand\rcr",
    "ünïcødé ✓ 😀",
    "\u202eright-to-left",
    "/* comment */",
    '"double"',
    "`tick`",
    "a" * MAX_STRING_CHARS,
]


@pytest.fixture(scope="module")
def hostile_table(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import lancedb

    db = lancedb.connect(str(tmp_path_factory.mktemp("filters")))
    n = len(HOSTILE)
    rows = pa.table(
        {
            "chunk_id": [f"c{i}" for i in range(n)],
            "m_category": HOSTILE,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(n * 2, dtype=np.float32)), 2),
        }
    )
    return db.create_table("hostile", rows)


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:30])
def test_hostile_values_select_exactly_the_rows_equal_to_them(hostile_table: Any, value: str) -> None:
    # given a table whose category column holds every hostile value once
    # when a filter asks for category == value
    compiled = compile_filter({"field": "category", "eq": value}, FIELDS)
    assert compiled is not None
    rows = hostile_table.search().where(compiled.where).select(["chunk_id", "m_category"]).to_list()

    # then exactly the one row with that value comes back: the value never became SQL
    assert [r["m_category"] for r in rows] == [value]


@pytest.mark.parametrize("value", HOSTILE[:8], ids=lambda v: repr(v)[:30])
def test_hostile_values_in_negations_and_sets_are_literals_too(hostile_table: Any, value: str) -> None:
    # given the same table
    # when a filter excludes the value, or lists it with a missing one
    ne = compile_filter({"field": "category", "ne": value}, FIELDS)
    within = compile_filter({"field": "category", "in": [value, "missing"]}, FIELDS)
    assert ne is not None
    assert within is not None
    others = hostile_table.search().where(ne.where).select(["m_category"]).limit(None).to_list()
    matched = hostile_table.search().where(within.where).select(["m_category"]).to_list()

    # then != keeps every other row and IN finds only the value
    assert sorted(r["m_category"] for r in others) == sorted(v for v in HOSTILE if v != value)
    assert [r["m_category"] for r in matched] == [value]
