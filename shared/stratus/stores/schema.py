"""The chunk table's schema, in one place: its columns, their Arrow types, and the rows of a document.

A collection's LanceDB table holds one row per chunk: the chunk and where it came from (source,
title, section, page, sheet and rows), its text and the text the encoder and the full-text index see
(`embed_text`), the document's metadata (JSON, and a typed ``m_<name>`` column per declared filter
field), and the vector. Nothing imports pyarrow or numpy until a schema or rows are built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from stratus.models import ChunkBatch

FTS_COLUMN = "fts_text"
COLLECTION_COLUMN = "collection"
SCALAR_COLUMNS = [
    "chunk_id",
    "doc_id",
    COLLECTION_COLUMN,
    "source",
    "title",
    "section",
    "page",
    "sheet",
    "row_start",
    "row_end",
    "position",
    "token_count",
    "text",
    "content_sha256",
    "metadata_json",
]

# What a search hit shows of a chunk (the scalar columns less its bookkeeping).
HIT_COLUMNS = [c for c in SCALAR_COLUMNS if c not in ("position", "token_count", "content_sha256")]


# Columns added after tables were first created (issue 15): a table made before lacks them, so reads
# select only the columns a table has and its hits show None there; the index stage adds them.
LATER_COLUMNS = ("sheet", "row_start", "row_end")


def present(table: Any, columns: Sequence[str]) -> list[str]:
    """`columns` less the later-added ones that this table (or Arrow schema) does not have."""
    schema = getattr(table, "schema", table)
    names = set(schema.names)
    return [c for c in columns if c in names or c not in LATER_COLUMNS]


def metadata_field(name: str, kind: str) -> pa.Field:
    """The typed column of a declared filter field (``m_<name>``)."""
    import pyarrow as pa

    from stratus.fields import column_for

    types = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    return pa.field(column_for(name), types[kind])


def chunk_schema(dimension: int, filter_fields: Mapping[str, str] | None = None) -> pa.Schema:
    """The Arrow schema of a collection's chunk table; declared filter fields become m_<name> columns."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("source", pa.string()),
            pa.field("title", pa.string()),
            pa.field("section", pa.string()),
            pa.field("page", pa.int32()),
            pa.field("sheet", pa.string()),
            pa.field("row_start", pa.int32()),
            pa.field("row_end", pa.int32()),
            pa.field("position", pa.int32()),
            pa.field("token_count", pa.int32()),
            pa.field("text", pa.string()),
            pa.field(FTS_COLUMN, pa.string()),
            pa.field("content_sha256", pa.string()),
            pa.field("metadata_json", pa.string()),
            *(metadata_field(name, kind) for name, kind in sorted((filter_fields or {}).items())),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
        ]
    )


def table_schema(dimension: int, filter_fields: Mapping[str, str] | None = None) -> pa.Schema:
    """The schema of a collection's LanceDB table: the chunk schema plus the collection of each row."""
    import pyarrow as pa

    schema = chunk_schema(dimension, filter_fields)
    return schema.insert(2, pa.field(COLLECTION_COLUMN, pa.string(), nullable=False))


def embed_text(title: str, section: str, text: str) -> str:
    """What the encoder and the full-text index see: the chunk with its title and heading path."""
    context = " > ".join(part for part in (title, section) if part)
    return f"{context}\n{text}" if context else text


def chunk_rows(
    batch: ChunkBatch, vectors: np.ndarray, filter_fields: dict[str, str] | None = None
) -> pa.Table:
    """The chunk table rows of one document version, vectors included.

    Declared filter fields (`filter_fields`, default STRATUS_FILTER_FIELDS) are promoted from the
    document's metadata to typed m_<name> columns; a value that does not fit the type is null.
    """
    import numpy as np
    import pyarrow as pa

    from stratus.fields import coerce_value, column_for

    if filter_fields is None:
        from stratus.settings import get_settings

        filter_fields = get_settings().filter_fields
    n = len(batch.chunks)
    metadata_json = json.dumps(batch.metadata, sort_keys=True)
    columns: dict[str, list[object]] = {
        "chunk_id": [c.chunk_id for c in batch.chunks],
        "doc_id": [batch.doc_id] * n,
        "source": [batch.source] * n,
        "title": [batch.title] * n,
        "section": [c.section for c in batch.chunks],
        "page": [c.page for c in batch.chunks],
        "sheet": [c.sheet for c in batch.chunks],
        "row_start": [c.row_start for c in batch.chunks],
        "row_end": [c.row_end for c in batch.chunks],
        "position": [c.position for c in batch.chunks],
        "token_count": [c.token_count for c in batch.chunks],
        "text": [c.text for c in batch.chunks],
        "fts_text": [embed_text(batch.title, c.section, c.text) for c in batch.chunks],
        "content_sha256": [batch.content_sha256] * n,
        "metadata_json": [metadata_json] * n,
    }
    for name, kind in filter_fields.items():
        columns[column_for(name)] = [coerce_value(kind, batch.metadata.get(name))] * n
    dimension = vectors.shape[1]
    schema = chunk_schema(dimension, filter_fields)
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema if f.name != "vector"]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, dimension))
    return pa.Table.from_arrays(arrays, schema=schema)


# Names a sidecar attribute may not take: the table's first columns (an attribute would shadow them
# in hits) and the columns LanceDB adds to results. The location columns added later (LATER_COLUMNS)
# are not reserved, so that sidecars written before them are still accepted.
RESERVED_METADATA_KEYS = frozenset(
    {*(c for c in SCALAR_COLUMNS if c not in LATER_COLUMNS), FTS_COLUMN, "vector", "metadata"}
    | {"_distance", "_score", "_relevance_score", "_rowid"}
)
