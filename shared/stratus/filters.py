"""Metadata filters: a small JSON language compiled to LanceDB (DataFusion SQL) where-clauses.

A filter is a JSON object, one of:

- a comparison ``{"field": NAME, OP: VALUE, ...}`` where OP is ``eq``, ``ne``, ``in``, ``nin``,
  ``gt``, ``gte``, ``lt`` or ``lte``; several ops in one object are ANDed (``{"field": "year",
  "gte": 2020, "lt": 2024}``);
- ``{"and": [FILTER, ...]}``, ``{"or": [FILTER, ...]}`` or ``{"not": FILTER}``.

A top-level JSON array is the ``and`` of its elements. NAME is ``source``, ``doc_id`` or a field
declared in ``STRATUS_FILTER_FIELDS``; declared fields live in typed columns ``m_<name>`` of the
chunk table. Identifiers in the SQL come only from that allow-list; values are type-checked
against the declared type and rendered as literals (strings with quotes doubled), so no request
value is ever parsed as SQL.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

FieldType = Literal["string", "int", "float", "bool"]
FIELD_TYPES: tuple[str, ...] = ("string", "int", "float", "bool")
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
BUILTIN_FIELDS: dict[str, tuple[str, str]] = {
    "source": ("source", "string"),
    "doc_id": ("doc_id", "string"),
}
COLUMN_PREFIX = "m_"

MAX_DEPTH = 4
MAX_CLAUSES = 32
MAX_IN_VALUES = 100
MAX_STRING_CHARS = 512
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

COMPARISONS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
SET_OPS = ("in", "nin")
BOOL_OPS = ("and", "or", "not")


class FilterError(ValueError):
    """A filter the language rejects; `field` names where (a JSON path or a field name)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def column_for(name: str) -> str:
    """The chunk-table column of a declared metadata field."""
    return COLUMN_PREFIX + name


def parse_filter_fields(value: object) -> dict[str, FieldType]:
    """Declared fields from a JSON object / comma list (``year:int,category:string``) / mapping."""
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            value = json.loads(text)
        else:
            pairs = {}
            for item in text.split(","):
                if not item.strip():
                    continue
                name, sep, kind = item.partition(":")
                pairs[name.strip()] = kind.strip() if sep else "string"
            value = pairs
    if not isinstance(value, Mapping):
        raise ValueError("filter fields must be a JSON object or a comma list of name:type")
    fields: dict[str, FieldType] = {}
    for name, kind in value.items():
        if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
            raise ValueError(
                f"filter field name {name!r}: use 1-40 of a-z, 0-9 and '_', starting with a letter"
            )
        if name in BUILTIN_FIELDS:
            raise ValueError(f"filter field {name!r} is built in; do not declare it")
        if kind not in FIELD_TYPES:
            raise ValueError(f"filter field {name!r}: type {kind!r} is not one of {list(FIELD_TYPES)}")
        fields[name] = kind
    return fields


def coerce_value(kind: str, raw: object) -> object | None:
    """A sidecar value converted to a declared field's type, or None when it does not fit."""
    if raw is None:
        return None
    try:
        if kind == "string":
            return raw if isinstance(raw, str) else json.dumps(raw) if isinstance(raw, bool) else str(raw)
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "false"):
                return raw.lower() == "true"
            return None
        if kind == "int":
            if isinstance(raw, bool):
                return None
            if isinstance(raw, float):
                return int(raw) if raw.is_integer() and INT64_MIN <= raw <= INT64_MAX else None
            number = int(str(raw).strip()) if isinstance(raw, str) else int(raw)  # type: ignore[call-overload]
            return number if INT64_MIN <= number <= INT64_MAX else None
        if kind == "float":
            if isinstance(raw, bool):
                return None
            number = float(raw)  # type: ignore[arg-type]
            return number if math.isfinite(number) else None
    except (TypeError, ValueError, OverflowError):
        return None
    return None


@dataclass(frozen=True)
class CompiledFilter:
    """A compiled filter: the where-clause and the columns it reads."""

    where: str
    columns: frozenset[str]


class _Compiler:
    def __init__(self, fields: Mapping[str, str], available: set[str] | None) -> None:
        self.fields = fields
        self.available = available
        self.clauses = 0
        self.columns: set[str] = set()

    def compile(self, node: object, path: str, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise FilterError(path, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, list):
            return self._junction("and", node, path, depth)
        if not isinstance(node, dict):
            raise FilterError(path, "a filter is an object (or a list of filters)")
        if "field" in node:
            return self._comparison(node, path)
        if len(node) != 1:
            raise FilterError(path, "use one of 'and', 'or', 'not', or a comparison with 'field'")
        ((op, arg),) = node.items()
        if op == "not":
            return f"(NOT {self.compile(arg, f'{path}.not', depth + 1)})"
        if op in ("and", "or"):
            if not isinstance(arg, list):
                raise FilterError(f"{path}.{op}", "expects a list of filters")
            return self._junction(op, arg, f"{path}.{op}", depth)
        raise FilterError(f"{path}.{str(op)[:40]}", "unknown operator; use and, or, not or a comparison")

    def _junction(self, op: str, items: list[Any], path: str, depth: int) -> str:
        if not items:
            raise FilterError(path, "expects at least one filter")
        parts = [self.compile(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(items)]
        return "(" + f" {op.upper()} ".join(parts) + ")"

    def _comparison(self, node: dict[str, Any], path: str) -> str:
        name = node["field"]
        if not isinstance(name, str):
            raise FilterError(f"{path}.field", "must be a string")
        shown = name[:40]
        if name in BUILTIN_FIELDS:
            column, kind = BUILTIN_FIELDS[name]
        elif name in self.fields:
            column, kind = column_for(name), self.fields[name]
        else:
            allowed = sorted([*BUILTIN_FIELDS, *self.fields])
            raise FilterError(
                f"{path}.field", f"unknown filter field {shown!r}; filterable fields: {allowed}"
            )
        if self.available is not None and column not in self.available:
            raise FilterError(
                name,
                f"field {name!r} is declared but this collection's table has no column {column!r} yet "
                "(documents indexed before it was declared): re-index them or run maintenance",
            )
        ops = [k for k in node if k != "field"]
        if not ops:
            raise FilterError(
                path, f"comparison on {name!r} names no operator (eq, ne, in, nin, gt, gte, lt, lte)"
            )
        parts = []
        for op in ops:
            self.clauses += 1
            if self.clauses > MAX_CLAUSES:
                raise FilterError(path, f"more than {MAX_CLAUSES} comparisons")
            value = node[op]
            where = f"{path}.{op}" if op in COMPARISONS or op in SET_OPS else f"{path}.{str(op)[:40]}"
            if op in COMPARISONS:
                if kind in ("string", "bool") and op not in ("eq", "ne"):
                    # Ranges on strings are well defined in SQL but rarely meant; keep the language small.
                    raise FilterError(
                        where, f"{op!r} is not supported on {kind} field {name!r}; use eq, ne, in"
                    )
                parts.append(f"{column} {COMPARISONS[op]} {literal(kind, value, f'{where} ({name})')}")
            elif op in SET_OPS:
                if not isinstance(value, list) or not value:
                    raise FilterError(where, "expects a non-empty list of values")
                if len(value) > MAX_IN_VALUES:
                    raise FilterError(where, f"more than {MAX_IN_VALUES} values")
                rendered = ", ".join(literal(kind, v, f"{where}[{i}] ({name})") for i, v in enumerate(value))
                parts.append(f"{column} {'IN' if op == 'in' else 'NOT IN'} ({rendered})")
            else:
                raise FilterError(where, "unknown operator; use eq, ne, in, nin, gt, gte, lt, lte")
        self.columns.add(column)
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def literal(kind: str, value: object, where: str) -> str:
    """A SQL literal of a declared type, or a FilterError naming `where`."""
    if kind == "string":
        if not isinstance(value, str):
            raise FilterError(where, f"expects a string, got {type(value).__name__}")
        if len(value) > MAX_STRING_CHARS:
            raise FilterError(where, f"string longer than {MAX_STRING_CHARS} characters")
        if "\x00" in value:
            raise FilterError(where, "string contains a NUL character")
        return "'" + value.replace("'", "''") + "'"
    if kind == "bool":
        if not isinstance(value, bool):
            raise FilterError(where, f"expects true or false, got {type(value).__name__}")
        return "TRUE" if value else "FALSE"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise FilterError(where, f"expects an integer, got {type(value).__name__}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise FilterError(where, "integer out of the 64-bit range")
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FilterError(where, f"expects a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise FilterError(where, "expects a finite number")
    return repr(number)


def compile_filter(
    spec: object,
    fields: Mapping[str, str],
    available_columns: set[str] | None = None,
) -> CompiledFilter | None:
    """Compile a filter (None or empty: no filter) against the declared fields.

    `available_columns`, when given, are the table's columns: a declared field whose column the table
    lacks is reported as a FilterError rather than failing inside LanceDB.
    """
    if spec is None or spec == {} or spec == []:
        return None
    compiler = _Compiler(fields, available_columns)
    where = compiler.compile(spec, "filters", 1)
    return CompiledFilter(where=where, columns=frozenset(compiler.columns))
