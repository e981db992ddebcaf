"""More like this: the documents of a collection nearest to one of its documents, itself excluded.

The document is its own query on both sides of hybrid search: its vectors' centroid (the mean of
its unit chunk vectors) for the vector side, and its most frequent content words (title words
counted twice) as an OR query for the keyword side. Chunk candidates are fused as a search fuses
them, then each other document scores by its best chunk, which is the hit shown for it.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

from stratus.observability import logger
from stratus.retrieval.search import (
    CollectionNotFoundError,
    FusionConfig,
    SearchHit,
    elapsed_ms,
    fuse,
    hit_from_row,
)
from stratus.retrieval.stopwords import STOPWORDS

if TYPE_CHECKING:
    from stratus.stores.vectors import ChunkStore

# The chunks of a document that make its query: a long document is represented by its beginning.
MAX_SOURCE_CHUNKS = 64
# Content words of the keyword query, and the characters of text they are counted in.
MAX_QUERY_TERMS = 32
MAX_TERM_CHARS = 200_000
MAX_TOP_K = 50
_WORD = re.compile(r"[^\W_]{3,40}")


class DocumentNotFoundError(LookupError):
    """The collection holds no indexed chunks of the document."""


class SimilarResponse(BaseModel):
    """The documents most like one document: each as its best-matching chunk, best first."""

    doc_id: str
    hits: list[SearchHit] = Field(description="One hit per similar document: its best-matching chunk.")
    degraded: list[str] = Field(default_factory=list, description="Retrievers that failed.")
    timings_ms: dict[str, float] = Field(default_factory=dict)


def query_terms(title: str, texts: Iterable[str], limit: int = MAX_QUERY_TERMS) -> list[str]:
    """A document's most frequent content words (title words count twice), first seen first on ties."""
    counts: Counter[str] = Counter()
    budget = MAX_TERM_CHARS
    for text, weight in [(title, 2), *((t, 1) for t in texts)]:
        if budget <= 0:
            break
        for word in _WORD.findall(text[:budget].lower()):
            if word not in STOPWORDS and not word.isdigit():
                counts[word] += weight
        budget -= len(text)
    return [word for word, _ in counts.most_common(limit)]


def similar_documents(
    store: ChunkStore, collection: str, doc_id: str, top_k: int, fusion: FusionConfig
) -> SimilarResponse:
    """The `top_k` documents most like `doc_id` in its collection, never itself.

    Raises CollectionNotFoundError and DocumentNotFoundError.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    top_k = max(1, min(top_k, MAX_TOP_K))
    rows = store.reader(collection)
    if rows is None:
        raise CollectionNotFoundError(collection)
    own = rows.document(doc_id, MAX_SOURCE_CHUNKS)
    if own is None:
        raise DocumentNotFoundError(doc_id)
    timings["document"] = elapsed_ms(started)
    # Candidates: enough chunks for top_k other documents after the document's own chunks drop out.
    depth = max(fusion.candidates, top_k * 4) + len(own.chunk_ids)
    degraded: list[str] = []
    vector: list[tuple[str, float]] = []
    keyword: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    try:
        norms = np.linalg.norm(own.vectors, axis=1, keepdims=True)
        centroid = (own.vectors / np.where(norms == 0, 1.0, norms)).mean(axis=0)
        ids, scores = rows.nearest(centroid / (np.linalg.norm(centroid) or 1.0), depth)
        vector = list(zip(ids, scores, strict=True))
    except Exception:
        logger.exception("similar: vector search failed", extra={"collection": collection})
        degraded.append("vector")
    timings["vector"] = elapsed_ms(t0)
    t0 = time.perf_counter()
    terms = query_terms(own.title, own.texts)
    if terms:
        try:
            ids, scores = rows.keyword(" ".join(terms), depth)
            keyword = list(zip(ids, scores, strict=True))
        except Exception:
            logger.exception("similar: keyword search failed", extra={"collection": collection})
            degraded.append("keyword")
    timings["keyword"] = elapsed_ms(t0)
    scored = fuse(vector, keyword, fusion)
    own_chunks = set(own.chunk_ids)
    candidates = [(cid, score) for cid, score in scored if cid not in own_chunks]
    rows.load([cid for cid, _ in candidates])
    best: dict[str, tuple[str, float]] = {}  # doc id -> its best chunk, in fused order
    for cid, score in candidates:
        if not rows.has(cid):
            continue  # deleted since it was retrieved
        other = rows.row(cid)["doc_id"]
        if other != doc_id and other not in best:
            best[other] = (cid, score)
            if len(best) == top_k:
                break
    hits = [hit_from_row(rows.row(cid), score, None, None) for cid, score in best.values()]
    timings["total"] = elapsed_ms(started)
    return SimilarResponse(doc_id=doc_id, hits=hits, degraded=degraded, timings_ms=timings)
