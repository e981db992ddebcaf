"""Hybrid search over a local-folder LanceDB table: fusion, filters, degradation, MMR, schema evolution."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.chunks import single_chunk_batch

from stratus.models import ChunkBatch, make_doc_id
from stratus.retrieval.filters import FilterError
from stratus.retrieval.search import (
    CollectionNotFoundError,
    FusionConfig,
    RerankUnavailableError,
    SearchRequest,
    convex_fusion,
    mmr_order,
    reciprocal_rank_fusion,
    search,
)
from stratus.stores.schema import chunk_rows
from stratus.stores.vectors import ChunkStore, TableSnapshot

DIM = 64
FIELDS = {"year": "int", "category": "string"}
COLLECTION = "papers"


class BagOfWords:
    """A deterministic stand-in encoder: hashed word counts, L2-normalised."""

    dimension = DIM

    def __init__(self) -> None:
        self.calls = 0

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                out[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIM] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed_query(self, text: str) -> np.ndarray:
        self.calls += 1
        return self.embed_documents([text])[0]


DOCS = [
    (
        "cats.md",
        "Cats",
        "Cats sleep most of the day and purr when content.",
        {"year": 2021, "category": "pets"},
    ),
    ("dogs.md", "Dogs", "Dogs bark at the postman and love long walks.", {"year": 2019, "category": "pets"}),
    (
        "rust.md",
        "Rust",
        "Rust programs are compiled and memory safe without a garbage collector.",
        {"year": 2023, "category": "code"},
    ),
    (
        "python.md",
        "Python",
        "Python is interpreted; the garbage collector frees memory.",
        {"year": "2020", "category": "code"},
    ),
    ("kittens.md", "Kittens", "Kittens are young cats that sleep even more than cats.", {"category": "pets"}),
]


def batch_for(source: str, title: str, text: str, metadata: dict[str, Any]) -> ChunkBatch:
    return single_chunk_batch(COLLECTION, source, title, text, metadata)


def index(store: ChunkStore, encoder: BagOfWords, docs: list[Any], fields: dict[str, str]) -> None:
    import pyarrow as pa

    tables = []
    for doc in docs:
        batch = batch_for(*doc)
        vectors = encoder.embed_documents([f"{batch.title}\n{c.text}" for c in batch.chunks])
        tables.append(chunk_rows(batch, vectors, fields))
    rows = pa.concat_tables(tables)
    store.write(COLLECTION, rows, {}, [], DIM)


@pytest.fixture
def encoder() -> BagOfWords:
    return BagOfWords()


@pytest.fixture(params=[0, 1000], ids=["lancedb", "in-memory"])
def store(tmp_path: Path, encoder: BagOfWords, request: pytest.FixtureRequest) -> ChunkStore:
    store = ChunkStore(str(tmp_path / "db"), filter_fields=FIELDS, memory_max_rows=request.param)
    index(store, encoder, DOCS, FIELDS)
    return store


def run(store: ChunkStore, encoder: BagOfWords, **body: Any) -> Any:
    return search(store, encoder, COLLECTION, SearchRequest(**body), FusionConfig(candidates=10))


# --- fusion arithmetic -------------------------------------------------------------------------


def test_rrf_adds_weighted_reciprocal_ranks() -> None:
    # given two rankings that share one id
    # when fused with k=60 and weights 1 and 2
    fused = dict(reciprocal_rank_fusion({"v": ["a", "b"], "k": ["b", "c"]}, {"v": 1.0, "k": 2.0}, 60))

    # then each id scores the sum of weight / (k + rank)
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 2 / 61)
    assert fused["c"] == pytest.approx(2 / 62)


def test_convex_fusion_adds_weighted_min_max_normalised_scores() -> None:
    # given scored lists on different scales
    scored = {"v": [("a", 0.9), ("b", 0.5), ("c", 0.1)], "k": [("b", 20.0), ("d", 10.0)]}

    # when fused with weights 1 and 0.5
    fused = dict(convex_fusion(scored, {"v": 1.0, "k": 0.5}))

    # then each side is scaled to [0, 1] before weighting, and an absent id gets 0 from that side
    assert fused == pytest.approx({"a": 1.0, "b": 0.5 + 0.5, "c": 0.0, "d": 0.0})


def test_mmr_skips_a_near_duplicate_when_diversity_matters() -> None:
    # given three candidates where the second duplicates the first
    vectors = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    relevance = np.array([1.0, 0.9, 0.5])

    # when ordered by MMR with lambda 0.5, and with lambda 1 (pure relevance)
    # then the duplicate drops behind the different one only when diversity counts
    assert mmr_order(relevance, vectors, 0.5, 3) == [0, 2, 1]
    assert mmr_order(relevance, vectors, 1.0, 3) == [0, 1, 2]


# --- search ------------------------------------------------------------------------------------


def test_hybrid_finds_by_words_and_meaning_and_reports_both_ranks(
    store: ChunkStore, encoder: BagOfWords
) -> None:
    # given the indexed collection
    # when a hybrid search names words of one document
    response = run(store, encoder, query="garbage collector memory", top_k=3)

    # then both code documents lead, each hit carries its ranks, metadata and timings
    assert {h.source for h in response.hits[:2]} == {"rust.md", "python.md"}
    top = response.hits[0]
    assert top.vector_rank is not None
    assert top.keyword_rank is not None
    assert top.metadata["category"] == "code"
    assert response.degraded == []
    assert {"embed", "vector", "keyword", "fuse", "total"} <= set(response.timings_ms)


def test_modes_use_one_retriever_each(store: ChunkStore, encoder: BagOfWords) -> None:
    # given the indexed collection
    # when searching by keyword only, then by vector only
    keyword = run(store, encoder, query="postman", mode="keyword")
    vector = run(store, encoder, query="postman", mode="vector")

    # then keyword hits have only keyword ranks (and no query embedding), vector hits only vector ranks
    assert keyword.hits[0].source == "dogs.md"
    assert all(h.vector_rank is None for h in keyword.hits)
    assert "embed" not in keyword.timings_ms
    assert all(h.keyword_rank is None for h in vector.hits)
    assert len(vector.hits) == 5


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_filters_apply_to_every_retriever(store: ChunkStore, encoder: BagOfWords, mode: str) -> None:
    # given documents of several years and categories
    flt = {"and": [{"field": "category", "eq": "pets"}, {"field": "year", "gte": 2020}]}

    # when a search about cats is filtered to pets from 2020 on
    response = run(store, encoder, query="cats sleep", mode=mode, top_k=10, filters=flt)

    # then only the 2021 pets document matches (kittens has no year, dogs is 2019)
    assert [h.source for h in response.hits] == ["cats.md"]


def test_metadata_values_are_promoted_with_their_declared_types(
    store: ChunkStore, encoder: BagOfWords
) -> None:
    # given python.md whose sidecar year was the string "2020"
    # when filtering on the integer year
    response = run(
        store, encoder, query="memory", mode="vector", top_k=10, filters={"field": "year", "eq": 2020}
    )

    # then the string was promoted to the int column
    assert [h.source for h in response.hits] == ["python.md"]


def test_built_in_fields_filter_too(store: ChunkStore, encoder: BagOfWords) -> None:
    # given the collection
    # when filtering by source with IN
    flt = {"field": "source", "in": ["dogs.md", "rust.md"]}
    response = run(store, encoder, query="memory walks", top_k=10, filters=flt)

    # then only those two sources come back
    assert sorted(h.source for h in response.hits) == ["dogs.md", "rust.md"]


def test_unknown_filter_fields_are_refused(store: ChunkStore, encoder: BagOfWords) -> None:
    # given a field nobody declared
    # when a search filters on it
    # then a FilterError names it
    with pytest.raises(FilterError, match="unknown filter field 'author'"):
        run(store, encoder, query="cats", filters={"field": "author", "eq": "me"})


def test_a_failing_retriever_degrades_to_the_other(
    store: ChunkStore, encoder: BagOfWords, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a keyword retriever that fails
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no FTS index")

    monkeypatch.setattr(store, "keyword_query", broken)

    # when a hybrid search runs
    response = run(store, encoder, query="postman bark")

    # then the vector side answers and the response says keyword was lost
    assert response.degraded == ["keyword"]
    assert response.hits[0].source == "dogs.md"
    assert response.hits[0].keyword_rank is None


def test_missing_collection_and_unconfigured_rerank_are_errors(
    store: ChunkStore, encoder: BagOfWords
) -> None:
    # given no table for 'nothing' and no reranker
    # when searched / asked to rerank
    # then each is its own error
    with pytest.raises(CollectionNotFoundError):
        search(store, encoder, "nothing", SearchRequest(query="x"), FusionConfig())
    with pytest.raises(RerankUnavailableError, match="STRATUS_RERANK_MODEL_DIR"):
        run(store, encoder, query="cats", rerank=True)


def test_mmr_diversifies_near_duplicates(tmp_path: Path, encoder: BagOfWords) -> None:
    # given two identical cat documents and a different one about cats
    docs: list[Any] = [
        ("a.md", "", "cats sleep all day long", {}),
        ("b.md", "", "cats sleep all day long", {}),
        ("c.md", "", "cats chase mice at night", {}),
    ]
    store = ChunkStore(str(tmp_path / "db"))
    index(store, encoder, docs, {})

    # when searching with and without strong diversification
    plain = run(store, encoder, query="cats sleep", mode="vector", top_k=2)
    diverse = run(store, encoder, query="cats sleep", mode="vector", top_k=2, mmr={"lambda": 0.3})

    # then MMR swaps the duplicate for the different document
    assert sorted(h.source for h in plain.hits) == ["a.md", "b.md"]
    assert sorted(h.source for h in diverse.hits)[1] == "c.md"
    assert "mmr" in diverse.timings_ms


def test_a_field_declared_after_the_table_was_created(tmp_path: Path, encoder: BagOfWords) -> None:
    # given a table written before any field was declared
    old = ChunkStore(str(tmp_path / "db"))
    index(old, encoder, DOCS[:2], {})
    declared = ChunkStore(str(tmp_path / "db"), filter_fields=FIELDS)

    # when a search filters on the newly declared field
    # then it is refused naming the field, not a 500
    with pytest.raises(FilterError, match="'year' is declared but"):
        run(declared, encoder, query="cats", filters={"field": "year", "eq": 2021})

    # when a new document is written with the field declared
    index(declared, encoder, DOCS[2:3], FIELDS)

    # then the columns exist and the old rows were back-filled from their metadata
    response = run(
        declared, encoder, query="cats", mode="vector", top_k=10, filters={"field": "year", "lt": 2022}
    )
    assert sorted(h.source for h in response.hits) == ["cats.md", "dogs.md"]


def test_maintenance_promotes_declared_fields(tmp_path: Path, encoder: BagOfWords) -> None:
    # given a table written before 'category' was declared
    index(ChunkStore(str(tmp_path / "db")), encoder, DOCS, {})
    declared = ChunkStore(str(tmp_path / "db"), filter_fields=FIELDS)

    # when maintenance runs with the field declared
    added = declared.promote_declared_fields(COLLECTION)

    # then the columns were added and filters on them work
    assert added == ["m_category", "m_year"]
    response = run(
        declared, encoder, query="x", mode="vector", top_k=10, filters={"field": "category", "eq": "code"}
    )
    assert sorted(h.source for h in response.hits) == ["python.md", "rust.md"]


def test_the_in_memory_snapshot_ranks_like_lancedb(tmp_path: Path, encoder: BagOfWords) -> None:
    # given the same table read through LanceDB and through the in-memory snapshot
    plain = ChunkStore(str(tmp_path / "db"), filter_fields=FIELDS)
    index(plain, encoder, DOCS, FIELDS)
    memory = ChunkStore(str(tmp_path / "db"), filter_fields=FIELDS, memory_max_rows=1000)

    # when every mode runs on both
    for mode in ("vector", "keyword", "hybrid"):
        a = run(plain, encoder, query="cats sleep garbage", mode=mode, top_k=5)
        b = run(memory, encoder, query="cats sleep garbage", mode=mode, top_k=5)

        # then hits, order and scores agree
        assert [(h.chunk_id, h.text) for h in a.hits] == [(h.chunk_id, h.text) for h in b.hits], mode
        assert [h.score for h in a.hits] == pytest.approx([h.score for h in b.hits], abs=1e-4), mode
    table = memory.search_table(COLLECTION)
    assert memory.snapshot(table) is not None


def test_the_snapshot_follows_new_commits_and_skips_big_tables(tmp_path: Path, encoder: BagOfWords) -> None:
    # given a snapshot-backed store that has answered once
    store = ChunkStore(str(tmp_path / "db"), memory_max_rows=1000, read_consistency_s=0)
    index(store, encoder, DOCS[:2], {})
    assert run(store, encoder, query="garbage collector", mode="vector").hits[0].source != "rust.md"
    before = store.snapshot(store.search_table(COLLECTION))

    # when another document is committed
    index(store, encoder, DOCS[2:3], {})

    # then the next search sees it from a new snapshot
    assert run(store, encoder, query="garbage collector", mode="vector").hits[0].source == "rust.md"
    after = store.snapshot(store.search_table(COLLECTION))
    assert before is not None
    assert after is not None
    assert after.version > before.version
    assert len(after) == 3

    # and a store whose limit is below the table size keeps querying LanceDB
    small = ChunkStore(str(tmp_path / "db"), memory_max_rows=2)
    assert small.snapshot(small.search_table(COLLECTION)) is None
    assert run(small, encoder, query="garbage collector", mode="vector").hits[0].source == "rust.md"


def warm_reader(
    tmp_path: Path, encoder: BagOfWords, consistency: float
) -> tuple[ChunkStore, ChunkStore, TableSnapshot]:
    """A writer that indexed two documents, and a reader (another process's store) with a warm copy."""
    writer = ChunkStore(str(tmp_path / "db"))
    index(writer, encoder, DOCS[:2], {})
    reader = ChunkStore(str(tmp_path / "db"), memory_max_rows=1000, read_consistency_s=consistency)
    before = reader.snapshot(reader.search_table(COLLECTION))
    assert before is not None
    return writer, reader, before


def test_another_writers_commit_is_copied_aside_while_queries_keep_the_previous_copy(
    tmp_path: Path, encoder: BagOfWords, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a reader under steady queries whose in-memory copy is warm, and a writer elsewhere
    consistency = 1.0
    writer, reader, before = warm_reader(tmp_path, encoder, consistency)
    # and a copy that takes a while to build (as a large table's does)
    building = threading.Event()
    build = reader._build_snapshot_locked

    def build_slowly(*args: Any) -> Any:
        building.set()
        time.sleep(0.4)
        return build(*args)

    monkeypatch.setattr(reader, "_build_snapshot_locked", build_slowly)

    # when the writer commits while the reader keeps querying
    index(writer, encoder, DOCS[2:3], {})
    committed = time.monotonic()
    slowest = 0.0
    while not building.is_set():
        assert time.monotonic() - committed < consistency, "the new version was never noticed"
        started = time.perf_counter()
        served = reader.snapshot(reader.search_table(COLLECTION))
        slowest = max(slowest, time.perf_counter() - started)
        # then every query, the one that noticed the new version too, is answered from the old copy
        assert served is before
        time.sleep(0.02)
    assert slowest < 0.2, slowest
    # and the new copy, built aside, replaces it within the consistency window of the commit
    while (served := reader.snapshot(reader.search_table(COLLECTION))) is before:
        assert time.monotonic() - committed < consistency + 0.2, "the copy built aside never landed"
        time.sleep(0.02)
    assert served is not None
    assert served.version > before.version
    assert len(served) == 3


def test_a_stale_copy_is_served_no_longer_than_the_consistency_window(
    tmp_path: Path, encoder: BagOfWords, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a reader under steady queries whose copies built aside never finish
    consistency = 0.4
    writer, reader, before = warm_reader(tmp_path, encoder, consistency)
    abandoned: list[int] = []

    def abandon(key: str, table: Any, version: int, asked_at: float) -> None:
        abandoned.append(version)
        reader._snapshot_build_lock.release()

    monkeypatch.setattr(reader, "_build_snapshot_aside", abandon)

    # when the writer commits and the reader keeps querying
    index(writer, encoder, DOCS[2:3], {})
    committed = time.monotonic()
    while (served := reader.snapshot(reader.search_table(COLLECTION))) is before:
        assert time.monotonic() - committed < consistency + 0.3, "the stale copy outlived the window"
        time.sleep(0.02)

    # then the old copy was kept while a build was tried aside, and then a query built the new one itself
    assert abandoned
    assert served is not None
    assert served.version > before.version


def test_a_sparse_query_finds_the_copy_already_refreshed_in_the_background(
    tmp_path: Path, encoder: BagOfWords, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a reader that was queried once (its watcher runs), whose copies take 0.3 s to build
    consistency = 0.4
    writer, reader, _ = warm_reader(tmp_path, encoder, consistency)
    assert len(run(reader, encoder, query="garbage collector", mode="vector", top_k=10).hits) == 2
    build = reader._build_snapshot_locked
    builders: list[str] = []

    def build_slowly(*args: Any) -> Any:
        builders.append(threading.current_thread().name)
        time.sleep(0.3)
        return build(*args)

    monkeypatch.setattr(reader, "_build_snapshot_locked", build_slowly)

    # when another writer commits and no query comes for three windows
    index(writer, encoder, DOCS[2:3], {})
    time.sleep(3 * consistency)
    started = time.perf_counter()
    hits = run(reader, encoder, query="garbage collector", mode="vector", top_k=10).hits
    waited = time.perf_counter() - started

    # then the next query finds the commit without waiting for a build: the watcher made the copy
    assert len(hits) == 3
    assert waited < 0.25, waited
    assert builders
    assert threading.current_thread().name not in builders


def test_a_table_whose_rows_are_all_deleted_searches_to_no_hits(
    store: ChunkStore, encoder: BagOfWords
) -> None:
    # given a collection whose every document was deleted (the table remains, with zero rows)
    doc_ids = [make_doc_id(COLLECTION, source) for source, *_ in DOCS]
    store.write(COLLECTION, None, {}, doc_ids, DIM)
    table = store.search_table(COLLECTION)
    assert table is not None
    assert table.count_rows() == 0

    # when it is searched in every mode, and through the store's own retrievers
    responses = {
        mode: run(store, encoder, query="cats sleep", mode=mode) for mode in ("hybrid", "vector", "keyword")
    }

    # then every answer is empty, not an error, and no retriever is reported degraded
    for mode, response in responses.items():
        assert response.hits == [], mode
        assert response.degraded == [], mode
    assert run(store, encoder, query="cats sleep", mmr={"lambda": 0.5}, rerank=False).hits == []
    assert store.keyword_search(COLLECTION, "cats", 5) == []
    assert store.vector_search(COLLECTION, encoder.embed_query("cats"), 5) == []
    # and the in-memory copy of an empty table is an empty snapshot, searched to nothing
    snapshot = store.snapshot(table)
    if store.memory_max_rows:
        assert snapshot is not None
        assert len(snapshot) == 0
        assert snapshot.nearest(encoder.embed_query("cats"), 5, COLLECTION) == ([], [])
    else:
        assert snapshot is None


def test_another_writers_commit_is_searched_once_the_consistency_window_has_passed(
    tmp_path: Path, encoder: BagOfWords
) -> None:
    # given a snapshot-backed store with a 0.2 s read-consistency window, warmed on two documents
    import time

    store = ChunkStore(str(tmp_path / "db"), memory_max_rows=1000, read_consistency_s=0.2)
    index(store, encoder, DOCS[:2], {})
    assert len(run(store, encoder, query="garbage collector", mode="vector", top_k=10).hits) == 2

    # when another writer (another process, another handle) commits a third document
    index(ChunkStore(str(tmp_path / "db")), encoder, DOCS[2:3], {})
    time.sleep(0.25)

    # then a search started after the window finds it, by vector and by keyword
    hits = run(store, encoder, query="garbage collector", mode="vector", top_k=10).hits
    assert hits[0].source == "rust.md"
    assert len(hits) == 3
    assert run(store, encoder, query="compiled", mode="keyword").hits[0].source == "rust.md"


def test_a_failing_encoder_degrades_hybrid_to_keyword(store: ChunkStore) -> None:
    # given an encoder that cannot embed
    class Broken(BagOfWords):
        def embed_query(self, text: str) -> np.ndarray:
            raise RuntimeError("onnxruntime session lost")

    # when a hybrid search runs
    response = run(store, Broken(), query="postman")

    # then the keyword side answers and the response says the vector side was lost
    assert response.degraded == ["vector"]
    assert response.hits[0].source == "dogs.md"


def test_replica_reads_both_manifest_namings() -> None:
    # given Lance's two manifest naming schemes
    from stratus.stores.replica import manifest_version

    # then V1 names are the version, V2 names are u64::MAX - version, and other files are ignored
    assert manifest_version("7.manifest") == 7
    assert manifest_version("18446744073709551608.manifest") == 7
    assert manifest_version("latest_version_hint.json") is None
    assert manifest_version("x.manifest") is None


def test_vector_feedback_moves_the_query_towards_its_nearest_chunks_and_keeps_it_unit(
    store: ChunkStore, encoder: BagOfWords
) -> None:
    from stratus.retrieval.search import feedback_vector

    # given a query whose nearest chunk is the cats document
    reader = store.reader(COLLECTION, with_vectors=True)
    assert reader is not None
    query = encoder.embed_query("cats purr")
    (nearest,), _ = reader.nearest(query, 1)
    reader.load([nearest])
    cats = reader.vectors([nearest])[0]

    # when the query is moved by feedback from its one nearest chunk, with weight 1
    moved = feedback_vector(reader, query, 1, 1.0, None)

    # then it is the normalised sum of the query and that chunk: closer to it, unit length
    expected = (query + cats) / np.linalg.norm(query + cats)
    assert np.allclose(moved, expected, atol=1e-6)
    assert float(moved @ cats) > float(query @ cats)
    assert np.isclose(float(np.linalg.norm(moved)), 1.0)
    # and with weight 0 it is the query itself
    assert np.allclose(feedback_vector(reader, query, 3, 0.0, None), query, atol=1e-6)


def test_vector_feedback_is_used_in_hybrid_and_vector_searches_when_configured(
    store: ChunkStore, encoder: BagOfWords
) -> None:
    # given the same vector search without and with feedback from the three nearest chunks
    request = SearchRequest(query="sleepy cats", mode="vector", top_k=5)
    plain = search(store, encoder, COLLECTION, request, FusionConfig(candidates=10))
    moved = search(
        store,
        encoder,
        COLLECTION,
        request,
        FusionConfig(candidates=10, vector_feedback=3, vector_feedback_weight=2.0),
    )

    # then both rank every chunk they found, but the scores differ: the query vector was moved
    assert {h.source for h in plain.hits} == {h.source for h in moved.hits}
    assert [round(h.score, 4) for h in plain.hits] != [round(h.score, 4) for h in moved.hits]
    # and a keyword search is untouched by it
    keyword = SearchRequest(query="sleepy cats", mode="keyword", top_k=5)
    without = search(store, encoder, COLLECTION, keyword, FusionConfig(candidates=10))
    with_feedback = search(
        store, encoder, COLLECTION, keyword, FusionConfig(candidates=10, vector_feedback=3)
    )
    assert [h.score for h in without.hits] == [h.score for h in with_feedback.hits]
