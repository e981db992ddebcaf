"""Maintenance on the emulated bucket: compaction, version pruning, and the ANN index threshold."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from stratus import services
from stratus.models import Chunk, ChunkBatch
from stratus.settings import get_settings
from stratus.stores.schema import chunk_rows
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

COLLECTION = "maint"
DIMENSION = 16


@pytest.fixture
def small_threshold(idle_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """STRATUS_VECTOR_INDEX_MIN_ROWS at its smallest allowed value, for this test only."""
    monkeypatch.setenv("STRATUS_VECTOR_INDEX_MIN_ROWS", "256")
    monkeypatch.setenv("STRATUS_KEEP_VERSIONS_S", "0")
    get_settings.cache_clear()
    yield get_settings().vector_index_min_rows
    monkeypatch.undo()
    get_settings.cache_clear()


def write_document(doc: int, chunks: int, rng: np.random.Generator) -> None:
    """One document of `chunks` random unit vectors, written the way the index stage writes."""
    doc_id = f"{doc:032x}"
    batch = ChunkBatch(
        collection=COLLECTION,
        doc_id=doc_id,
        source=f"doc{doc}.md",
        content_sha256=f"{doc:064x}",
        chunks=[
            Chunk(chunk_id=f"{doc:016x}{i:016x}", position=i, text=f"document {doc} chunk {i}", token_count=4)
            for i in range(chunks)
        ],
    )
    vectors = rng.normal(size=(chunks, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = chunk_rows(batch, vectors)
    services.chunk_store().write(
        COLLECTION, rows, {doc_id: rows.column("chunk_id").to_pylist()}, [], DIMENSION
    )


def maintain(stack: LocalStack) -> dict[str, object]:
    report = stack.handler("MaintenanceFunction")({}, stack.context("MaintenanceFunction"))
    (mine,) = [r for r in report["collections"] if r["collection"] == COLLECTION]
    assert "error" not in mine, mine
    return dict(mine)


def test_maintenance_builds_the_vector_index_only_past_the_threshold(
    idle_stack: LocalStack, small_threshold: int
) -> None:
    rng = np.random.default_rng(7)
    # given a collection below the threshold, written in several commits
    for doc in range(4):
        write_document(doc, 50, rng)
    table = services.chunk_store().open(COLLECTION)
    assert table is not None
    versions_before = len(table.list_versions())

    # when maintenance runs
    below = maintain(idle_stack)

    # then it compacts and prunes old versions, but builds no vector index yet
    assert below["rows"] == 200
    assert below["vector_index_built"] is False
    table.checkout_latest()
    assert len(table.list_versions()) < versions_before
    assert not any(i.index_type.upper().startswith("IVF") for i in table.list_indices())

    # when the collection grows past the threshold and maintenance runs again
    for doc in range(4, 7):
        write_document(doc, 50, rng)
    above = maintain(idle_stack)

    # then the vector index is built once, and a later run leaves it alone
    assert above["rows"] == 350 > small_threshold
    assert above["vector_index_built"] is True
    table.checkout_latest()
    assert any(i.index_type.upper().startswith("IVF") for i in table.list_indices())
    assert maintain(idle_stack)["vector_index_built"] is False

    # and vector search still answers through the (lossy, PQ-compressed) index
    probe = np.asarray(table.search().limit(1).to_list()[0]["vector"])
    hits = services.chunk_store().vector_search(COLLECTION, probe, 3)
    assert len(hits) == 3
