"""Chunk tables made before the sheet/row columns existed (issue 15) keep answering, and take the
columns on their next write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from stratus.models import Chunk, ChunkBatch
from stratus.stores.schema import COLLECTION_COLUMN, LATER_COLUMNS, chunk_rows, table_schema
from stratus.stores.vectors import ChunkStore

DIM = 4


def rows_for(doc_id: str, text: str, sheet: str | None = None) -> pa.Table:
    batch = ChunkBatch(
        collection="c",
        doc_id=doc_id,
        source=f"{doc_id}.xlsx",
        content_sha256="x",
        chunks=[
            Chunk(
                chunk_id=f"{doc_id}-0",
                position=0,
                text=text,
                token_count=3,
                sheet=sheet,
                row_start=2,
                row_end=5,
            )
        ],
    )
    return chunk_rows(batch, np.ones((1, DIM), dtype=np.float32), filter_fields={})


def test_a_table_without_the_location_columns_is_searched_and_gains_them_on_write(tmp_path: Path) -> None:
    # given a table created with the chunk schema of before (no sheet/row_start/row_end) and one row
    store = ChunkStore(str(tmp_path), memory_max_rows=1000)
    old_schema = pa.schema([f for f in table_schema(DIM) if f.name not in LATER_COLUMNS])
    rows = rows_for("old", "an old chunk")
    rows = rows.append_column(COLLECTION_COLUMN, pa.array(["c"] * rows.num_rows, pa.string()))
    old_rows = rows.select(old_schema.names).cast(old_schema)
    store.db.create_table(store.table_name("c"), data=old_rows, schema=old_schema)
    table = store.open("c")
    # when it is searched (vector search and the in-memory snapshot)
    hits = store.vector_search("c", np.ones(DIM, dtype=np.float32), 5)
    snapshot = store.snapshot(table)
    # then it answers, the location fields absent
    assert [h["chunk_id"] for h in hits] == ["old-0"]
    assert "sheet" not in hits[0]
    assert snapshot is not None
    assert snapshot.row("old-0", "c") is not None
    # when a spreadsheet chunk is written, then the table gains the columns and keeps both rows
    store.write("c", rows_for("new", "a new chunk", sheet="Sales"), {}, [], DIM)
    table = store.open("c")
    assert table is not None
    assert set(LATER_COLUMNS) <= set(table.schema.names)
    found = {h["chunk_id"]: h for h in store.vector_search("c", np.ones(DIM, dtype=np.float32), 5)}
    assert (found["new-0"]["sheet"], found["new-0"]["row_start"], found["new-0"]["row_end"]) == (
        "Sales",
        2,
        5,
    )
    assert found["old-0"]["sheet"] is None
