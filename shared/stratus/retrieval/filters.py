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

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stratus.fields import BUILTIN_FIELDS, INT64_MAX, INT64_MIN, column_for

MAX_DEPTH = 4
MAX_CLAUSES = 32
MAX_IN_VALUES = 100
MAX_STRING_CHARS = 512

COMPARISONS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
SET_OPS = ("in", "nin")
BOOL_OPS = ("and", "or", "not")


class FilterError(ValueError):
    """A filter the language rejects; `field` names where (a JSON path or a field name)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


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
