"""Tenant isolation in the vector store: one table per collection (injective names), the collection in
every row and every query, and the migration of tables of the first layout (`stratus migrate-tables`)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from fakes.chunks import single_chunk_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.errors import PermanentError
from stratus.models import ChunkBatch
from stratus.retrieval.search import FusionConfig, SearchRequest, search
from stratus.stores.schema import chunk_rows, chunk_schema
from stratus.stores.vectors import (
    LEGACY_PREFIX,
    ChunkStore,
    StoreUnavailableError,
    collection_for_table,
    generation_for_table,
    table_name_for,
)
from stratus_tools.migration import candidate_collections, migrate_legacy_tables

DIM = 32
NAMES = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True)


class Words:
    """Hashed bag of words, L2-normalised: similar texts get similar vectors."""

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                out[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIM] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


ENCODER = Words()


def opened(store: ChunkStore, name: str, raw: bool = False) -> Any:
    """A table that must exist: a collection's, or (raw) one by its LanceDB name."""
    table = store.open_table(name) if raw else store.open(name)
    assert table is not None
    return table


def rows_of(batches: list[ChunkBatch]) -> pa.Table:
    tables = [chunk_rows(b, ENCODER.embed_documents([c.text for c in b.chunks]), {}) for b in batches]
    return pa.concat_tables(tables)


def index(store: ChunkStore, collection: str, docs: list[tuple[str, str]]) -> None:
    batches = [single_chunk_batch(collection, source, source, text) for source, text in docs]
    store.write(collection, rows_of(batches), {}, [], DIM)


def sources(store: ChunkStore, collection: str, query: str, **body: Any) -> set[str]:
    request = SearchRequest(query=query, top_k=20, **body)
    response = search(store, ENCODER, collection, request, FusionConfig(candidates=20))
    return {hit.source for hit in response.hits}


MODES: list[dict[str, Any]] = [
    {"mode": "hybrid"},
    {"mode": "vector"},
    {"mode": "keyword"},
    {"mode": "hybrid", "mmr": {"lambda": 0.5}},
    {"mode": "vector", "filters": {"field": "doc_id", "ne": "x"}},
]


# --- the mapping --------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(NAMES, NAMES)
def test_distinct_collections_never_share_a_table(a: str, b: str) -> None:
    # given two valid collection names (generated, '-' and '_' included)
    # when each is mapped to its table
    # then distinct names give distinct tables, and each table maps back to exactly its collection
    assert (table_name_for(a) == table_name_for(b)) == (a == b)
    assert collection_for_table(table_name_for(a)) == a
    assert not table_name_for(a).startswith(LEGACY_PREFIX)


@settings(max_examples=200, deadline=None)
@given(NAMES)
def test_dash_underscore_and_case_variants_stay_apart_or_are_refused(name: str) -> None:
    # given a valid name and its '-'/'_' swapped and upper-cased spellings
    swapped = name.translate(str.maketrans("-_", "_-"))
    # then a different spelling is a different table, and an upper-case spelling is not a collection
    assert (table_name_for(swapped) == table_name_for(name)) == (swapped == name)
    if name.upper() != name:
        with pytest.raises(PermanentError):
            table_name_for(name.upper())


GENERATIONS = st.integers(min_value=0, max_value=999_999_999)


@settings(max_examples=500, deadline=None)
@given(NAMES, GENERATIONS, NAMES, GENERATIONS)
def test_generations_of_distinct_collections_never_share_a_table(a: str, g: int, b: str, h: int) -> None:
    # given two (collection, generation) pairs, as `stratus reindex` makes them
    # when each is mapped to its table
    # then distinct pairs give distinct tables, each mapping back to exactly its pair
    assert (table_name_for(a, g) == table_name_for(b, h)) == ((a, g) == (b, h))
    assert collection_for_table(table_name_for(a, g)) == a
    assert generation_for_table(table_name_for(a, g)) == g
    assert table_name_for(a, 0) == table_name_for(a)
    assert not table_name_for(a, g).startswith(LEGACY_PREFIX)


@pytest.mark.parametrize("name", ["chunks-a.g0", "chunks-a.g01", "chunks-a.gx", "chunks-.g1", "chunks-A.g1"])
def test_names_no_generation_makes_are_no_collection_s_table(name: str) -> None:
    # given a name the mapping never produces; then it maps to no collection
    assert collection_for_table(name) is None
    assert generation_for_table(name) is None


def test_a_generation_table_serves_only_once_the_collection_points_at_it(tmp_path: Path) -> None:
    # given a store whose collections' serving generations come from a mutable mapping
    serving = {"gen": 0}
    store = ChunkStore(str(tmp_path / "db"), generations=lambda c: serving.get(c, 0))
    index(store, "gen", [("old.md", "the harbour timetable")])
    rebuilt = single_chunk_batch("gen", "new.md", "new.md", "the harbour timetable, rebuilt")
    store.write("gen", rows_of([rebuilt]), {}, [], DIM, generation=1)
    # when searched before and after the switch, then each answer comes from the serving table only
    assert sources(store, "gen", "harbour timetable") == {"old.md"}
    serving["gen"] = 1
    assert sources(store, "gen", "harbour timetable") == {"new.md"}
    # and the collection is listed once, with both tables present until the old one is dropped
    assert store.collections() == ["gen"]
    assert store.drop_table(table_name_for("gen", 0))
    assert store.table_names() == [table_name_for("gen", 1)]


def test_lancedb_accepts_every_table_name_the_mapping_makes(tmp_path: Path) -> None:
    # given names at the edges of the pattern
    names = ["a", "a-b", "a_b", "a--b", "a__b", "0-_-_", "z" * 63, "a-" * 31 + "b"]
    store = ChunkStore(str(tmp_path / "db"))
    # when each gets a table, and a generation table beside it
    for name in names:
        index(store, name, [(f"{name}.md", f"text of {name}")])
        batch = single_chunk_batch(name, "g.md", "g.md", "g")
        store.write(name, rows_of([batch]), {}, [], DIM, generation=999_999_999)
    # then the database lists each collection back, exactly
    assert store.collections() == sorted(names)


def test_a_dash_collection_and_an_underscore_collection_do_not_see_each_other(tmp_path: Path) -> None:
    # given iso-a and iso_a, each with a private document about the same subject
    for memory in (0, 1000):
        store = ChunkStore(str(tmp_path / f"db{memory}"), memory_max_rows=memory)
        index(store, "iso-a", [("dash.md", "the secret budget of project falcon")])
        index(store, "iso_a", [("underscore.md", "the secret budget of project falcon, private")])
        # when each collection is searched in every mode
        for body in MODES:
            # then each sees its own document only
            assert sources(store, "iso-a", "secret budget falcon", **body) == {"dash.md"}, body
            assert sources(store, "iso_a", "secret budget falcon", **body) == {"underscore.md"}, body
        # and embedding reuse reads only the collection's own vectors
        doc = single_chunk_batch("iso_a", "underscore.md", "", "").doc_id
        assert store.vectors_for_documents("iso-a", [doc]) == {}
        assert set(store.vectors_for_documents("iso_a", [doc])) == {doc}


def test_rows_of_another_collection_in_a_table_are_never_returned(tmp_path: Path) -> None:
    # given a collection's table into which rows of another collection were written (the second wall)
    for memory in (0, 1000):
        store = ChunkStore(str(tmp_path / f"db{memory}"), memory_max_rows=memory)
        index(store, "tenant", [("mine.md", "quarterly revenue report")])
        foreign = single_chunk_batch("other", "theirs.md", "theirs.md", "quarterly revenue report secret")
        rows = store.conform(opened(store, "tenant"), rows_of([foreign]), "other")
        opened(store, "tenant").add(rows)
        store.committed("tenant")
        # when the collection is searched in every mode
        for body in MODES:
            # then only its own rows answer
            assert sources(store, "tenant", "quarterly revenue report secret", **body) == {"mine.md"}, body


def test_a_write_cannot_label_rows_with_another_collection(tmp_path: Path) -> None:
    # given rows that claim to belong to collection b
    store = ChunkStore(str(tmp_path / "db"))
    rows = rows_of([single_chunk_batch("a", "a.md", "a", "alpha")])
    rows = rows.append_column("collection", pa.array(["b"] * rows.num_rows))
    # when they are written to collection a
    store.write("a", rows, {}, [], DIM)
    # then every row of a's table is a's
    assert set(opened(store, "a").to_arrow().column("collection").to_pylist()) == {"a"}


# --- "no table" versus "store unreachable" --------------------------------------------------------------


def test_a_missing_table_is_none_but_an_unreachable_store_is_an_error(tmp_path: Path) -> None:
    # given a local database without the table, and an S3 database nobody answers for
    assert ChunkStore(str(tmp_path / "db")).open("absent") is None
    unreachable = ChunkStore(
        "s3://bucket/lancedb",
        {
            "aws_endpoint": "http://127.0.0.1:9",
            "allow_http": "true",
            "region": "us-east-1",
            "aws_access_key_id": "x",
            "aws_secret_access_key": "y",
            "connect_timeout": "200ms",
            "timeout": "500ms",
        },
    )
    # when the table is opened there, then it is a StoreUnavailableError (a 503), not "no table"
    with pytest.raises(StoreUnavailableError):
        unreachable.open("docs")


def test_a_refused_open_is_an_error_not_an_empty_collection(tmp_path: Path) -> None:
    # given a database whose open_table fails with LanceDB's ValueError for an S3 permission problem
    store = ChunkStore(str(tmp_path / "db"))

    class Refusing:
        def open_table(self, name: str) -> Any:
            raise ValueError("Generic S3 error: Client error with status 403 Forbidden: AccessDenied")

    store._db = Refusing()
    # when the collection is opened, then the fault surfaces
    with pytest.raises(StoreUnavailableError, match="403"):
        opened(store, "docs")


# --- migration of the first layout ----------------------------------------------------------------------


def legacy_table(store: ChunkStore, stem: str, batches: list[ChunkBatch]) -> None:
    """A table as the first layout wrote it: chunks_<stem>, the chunk schema, no collection column."""
    rows = rows_of(batches)
    assert rows.schema.equals(chunk_schema(DIM, {}))
    store.db.create_table(LEGACY_PREFIX + stem, data=rows)


def test_candidate_spellings_of_a_first_layout_table() -> None:
    assert candidate_collections("a_b") == ["a-b", "a_b"]
    assert candidate_collections("a_b_c", ["zzz"]) == ["a-b-c", "a-b_c", "a_b-c", "a_b_c"]
    assert "x_" * 10 + "y" in candidate_collections("x_" * 10 + "y")


def test_migration_splits_a_shared_table_keeps_vectors_and_is_idempotent(tmp_path: Path) -> None:
    # given one first-layout table shared by a-b and a_b, plus a row no collection explains
    store = ChunkStore(str(tmp_path / "db"), memory_max_rows=1000)
    dash = [single_chunk_batch("a-b", f"d{i}.md", "d", f"dash document {i} about herons") for i in range(3)]
    under = [single_chunk_batch("a_b", "u.md", "u", "underscore document about herons")]
    orphan = single_chunk_batch("a-b", "o.md", "o", "orphan about herons")
    orphan.doc_id = "f" * 32
    legacy_table(store, "a_b", [*dash, *under, orphan])
    before = opened(store, "chunks_a_b", raw=True).to_arrow()
    vectors_before = dict(
        zip(before.column("chunk_id").to_pylist(), before.column("vector").to_pylist(), strict=True)
    )

    # when migrated
    reports = migrate_legacy_tables(store)

    # then each collection's rows are in its own table, vectors unchanged, searchable in every mode
    (report,) = reports
    assert report.moved == {"a-b": 3, "a_b": 1}
    assert report.unresolved == 1
    assert not report.dropped
    for collection, batches in (("a-b", dash), ("a_b", under)):
        table = opened(store, collection).to_arrow()
        assert set(table.column("collection").to_pylist()) == {collection}
        for chunk_id, vector in zip(
            table.column("chunk_id").to_pylist(), table.column("vector").to_pylist(), strict=True
        ):
            assert vector == vectors_before[chunk_id]
        expected = {b.source for b in batches}
        for body in MODES:
            assert sources(store, collection, "herons document", **body) == expected, body
    # and the unexplained row stays in the old table, reported
    assert opened(store, "chunks_a_b", raw=True).count_rows() == 1

    # when run again, then nothing changes
    again = migrate_legacy_tables(store)
    assert [r.moved for r in again] == [{}]
    assert again[0].unresolved == 1
    assert opened(store, "a-b").count_rows() == 3
    assert opened(store, "a_b").count_rows() == 1


def test_migration_drops_an_emptied_table_and_keeps_newer_rows(tmp_path: Path) -> None:
    # given a first-layout table, and one of its documents already re-indexed under the new layout
    store = ChunkStore(str(tmp_path / "db"))
    old = single_chunk_batch("docs", "a.md", "a", "old text of a")
    other = single_chunk_batch("docs", "b.md", "b", "text of b")
    legacy_table(store, "docs", [old, other])
    index(store, "docs", [("a.md", "new text of a")])

    # when migrated
    (report,) = migrate_legacy_tables(store)

    # then the newer version is kept, the other document moved, and the old table dropped
    assert report.moved == {"docs": 1}
    assert report.kept_newer == 1
    assert report.dropped
    texts = sorted(opened(store, "docs").to_arrow().column("text").to_pylist())
    assert texts == ["new text of a", "text of b"]
    assert store.legacy_tables() == []
    assert migrate_legacy_tables(store) == []
