"""The index writer compacts a table and prunes its old versions every few writes (linear ingestion)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.chunks import single_chunk_batch

from stratus.stores.schema import chunk_rows
from stratus.stores.vectors import ChunkStore


def write_one(store: ChunkStore, i: int) -> None:
    batch = single_chunk_batch("c", f"d{i}.md", "T", f"document number {i} about otters")
    rows = chunk_rows(batch, np.full((1, 8), 0.1 + i, dtype=np.float32), {})
    store.write("c", rows, {batch.doc_id: [batch.chunks[0].chunk_id]}, [], 8)


def test_every_nth_write_compacts_and_prunes_the_versions_outside_the_window(tmp_path: Path) -> None:
    # given a store whose writer compacts every 4 writes and keeps no old version
    store = ChunkStore(str(tmp_path / "db"), compact_every=4, compact_keep_s=0)

    # when it writes three times, then a fourth
    for i in range(3):
        write_one(store, i)
    table = store.open("c")
    assert table is not None
    before = len(table.list_versions())
    write_one(store, 3)

    # then the fourth write left fewer versions than the first three had made, every row still there
    table.checkout_latest()
    assert before > 4
    assert len(table.list_versions()) < before
    assert table.count_rows() == 4
    assert sorted(table.search().select(["source"]).limit(None).to_arrow().column("source").to_pylist()) == [
        "d0.md",
        "d1.md",
        "d2.md",
        "d3.md",
    ]


def test_without_compaction_versions_accumulate(tmp_path: Path) -> None:
    # given a store that leaves compaction to the maintenance function
    store = ChunkStore(str(tmp_path / "db"), compact_every=0)
    # when it writes four times
    for i in range(4):
        write_one(store, i)
    # then every write's versions are kept
    table = store.open("c")
    assert table is not None
    assert len(table.list_versions()) >= 8


def test_a_failed_compaction_does_not_fail_the_write_it_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # given a store that compacts after every write, on a table whose optimize() fails
    store = ChunkStore(str(tmp_path / "db"), compact_every=1, compact_keep_s=0)
    write_one(store, 0)
    table = store.open("c")
    assert table is not None

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(table, "optimize", broken)

    # when it writes again
    write_one(store, 1)

    # then the write is committed and the failure is logged
    table.checkout_latest()
    assert table.count_rows() == 2
    assert "compaction after writes failed" in caplog.text
