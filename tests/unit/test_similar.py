"""More like this (issue 16): a document's nearest documents, by its own vectors and terms, never itself."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pyarrow as pa
import pytest

from stratus.embedding.encoder import OnnxEncoder
from stratus.models import Chunk, ChunkBatch, make_chunk_id, make_doc_id
from stratus.retrieval.search import CollectionNotFoundError, FusionConfig
from stratus.retrieval.similar import DocumentNotFoundError, query_terms, similar_documents
from stratus.stores.schema import chunk_rows, embed_text
from stratus.stores.vectors import ChunkStore

COLLECTION = "notes"
DOCS = {
    "tides.md": (
        "Tides",
        [
            "The moon's gravity pulls the oceans and raises the tides twice a day.",
            "Spring tides come when the sun and the moon line up; neap tides when they are at right angles.",
        ],
    ),
    "moon.md": (
        "The Moon",
        [
            "The moon orbits the earth every 27 days and its gravity drives the ocean tides.",
            "Its phases run from new moon to full moon and back.",
        ],
    ),
    "bread.md": ("Bread", ["Knead the dough, let it rise for an hour, then bake it at 220 degrees."]),
    "pasta.md": ("Pasta", ["Boil the pasta in salted water and bake it with cheese for twenty minutes."]),
    "orbits.md": ("Orbits", ["Planets follow elliptical orbits around the sun, as Kepler found."]),
}


def batch(source: str, title: str, texts: list[str]) -> ChunkBatch:
    doc_id = make_doc_id(COLLECTION, source)
    chunks = [
        Chunk(chunk_id=make_chunk_id(doc_id, t, 0), position=i, text=t, token_count=len(t.split()))
        for i, t in enumerate(texts)
    ]
    digest = hashlib.sha256("".join(texts).encode()).hexdigest()
    return ChunkBatch(
        collection=COLLECTION, doc_id=doc_id, source=source, title=title, content_sha256=digest, chunks=chunks
    )


@pytest.fixture(scope="module")
def store(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ChunkStore:
    """Five notes, two about the moon and the tides, in a local-folder chunk table, with real vectors."""
    encoder = OnnxEncoder.from_dir(model_dir)
    store = ChunkStore(str(tmp_path_factory.mktemp("similar")))
    tables = []
    for source, (title, texts) in DOCS.items():
        b = batch(source, title, texts)
        vectors = encoder.embed_documents([embed_text(b.title, c.section, c.text) for c in b.chunks])
        tables.append(chunk_rows(b, vectors))
    store.write(COLLECTION, pa.concat_tables(tables), {}, [], 384)
    return store


def test_the_nearest_documents_are_on_the_same_subject_and_never_the_document_itself(
    store: ChunkStore,
) -> None:
    # given the note about tides (two chunks)
    tides = make_doc_id(COLLECTION, "tides.md")

    # when the documents most like it are asked for
    response = similar_documents(store, COLLECTION, tides, 3, FusionConfig())

    # then the moon note comes first, one hit per document, and the tides note is not among them
    sources = [hit.source for hit in response.hits]
    assert sources[0] == "moon.md"
    assert len(sources) == len(set(sources)) == 3
    assert "tides.md" not in sources
    assert response.doc_id == tides
    assert response.degraded == []
    assert all(a.score >= b.score for a, b in zip(response.hits, response.hits[1:], strict=False))


def test_top_k_bounds_the_answer_even_when_the_collection_holds_more(store: ChunkStore) -> None:
    # given a collection of five documents
    bread = make_doc_id(COLLECTION, "bread.md")

    # when one and then every other document are asked for
    one = similar_documents(store, COLLECTION, bread, 1, FusionConfig())
    every = similar_documents(store, COLLECTION, bread, 50, FusionConfig())

    # then the nearest is the other recipe, and at most the four other documents come back
    assert [h.source for h in one.hits] == ["pasta.md"]
    assert sorted(h.source for h in every.hits) == ["moon.md", "orbits.md", "pasta.md", "tides.md"]


def test_an_unknown_document_or_collection_is_named(store: ChunkStore) -> None:
    # when an absent document and an absent collection are asked for, then each error says which
    with pytest.raises(DocumentNotFoundError):
        similar_documents(store, COLLECTION, "f" * 32, 3, FusionConfig())
    with pytest.raises(CollectionNotFoundError):
        similar_documents(store, "nowhere", make_doc_id("nowhere", "a.md"), 3, FusionConfig())


def test_the_keyword_query_is_the_documents_frequent_content_words() -> None:
    # given a title and texts with stop words, numbers and a repeated word
    terms = query_terms("Ocean tides", ["The tides of the ocean rise; 2024 tides", "tides and the moon"])

    # then the most frequent content words come first (title words count twice), no stop words or numbers
    assert terms[:3] == ["tides", "ocean", "rise"]
    assert "the" not in terms
    assert "2024" not in terms
    assert "moon" in terms


def test_the_keyword_query_of_a_huge_document_reads_a_bounded_prefix() -> None:
    # given a document of 20 MB of one word after a few others
    texts = [f"word{i}x " for i in range(10)] + ["abc " * 5_000_000]

    # when its query terms are taken
    started = time.process_time()
    terms = query_terms("Title words", texts, limit=5)
    elapsed = time.process_time() - started

    # then they are read from a bounded prefix: far faster than a scan of 20 MB (seconds here)
    assert terms[0] == "abc"
    assert elapsed < 0.5
