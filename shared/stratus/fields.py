"""Metadata filter fields: the declarations (STRATUS_FILTER_FIELDS), their chunk-table columns, coercion.

The settings parse declarations with these; the chunk store writes the typed ``m_<name>`` columns and
the embed stage fills them from sidecar metadata; the filter language (stratus.retrieval.filters)
compiles against them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Literal

FieldType = Literal["string", "int", "float", "bool"]
FIELD_TYPES: tuple[str, ...] = ("string", "int", "float", "bool")
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
BUILTIN_FIELDS: dict[str, tuple[str, str]] = {
    "source": ("source", "string"),
    "doc_id": ("doc_id", "string"),
}
COLUMN_PREFIX = "m_"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


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
