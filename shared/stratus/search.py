"""Hybrid retrieval: query embedding + vector search + native full-text search, fused by RRF."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stratus.observability import MetricName, logger, metrics

if TYPE_CHECKING:
    from stratus.stores.vectors import ChunkStore

SearchMode = Literal["hybrid", "vector", "keyword"]


class CollectionNotFoundError(LookupError):
    """The collection has no chunk table."""


class QueryEncoder(Protocol):
    """What search needs of an encoder."""

    def embed_query(self, text: str) -> np.ndarray: ...


class SearchRequest(BaseModel):
    """A search request."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=2000, description="What to look for.")
    top_k: int = Field(5, ge=1, le=100, description="How many hits to return.")
    mode: SearchMode = Field("hybrid", description="hybrid (default), vector or keyword.")


class SearchHit(BaseModel):
    """One retrieved chunk."""

    chunk_id: str
    doc_id: str
    source: str
    title: str = ""
    section: str = ""
    page: int | None = None
    text: str
    score: float
    vector_rank: int | None = None
    keyword_rank: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    """Hits, how they were found, and where the time went."""

    hits: list[SearchHit]
    mode: SearchMode
    degraded: list[str] = Field(default_factory=list, description="Retrievers that failed or had no index.")
    timings_ms: dict[str, float] = Field(default_factory=dict)


@dataclass(frozen=True)
class FusionConfig:
    """Reciprocal-rank-fusion parameters."""

    candidates: int = 50
    rrf_k: int = 60
    vector_weight: float = 1.0
    keyword_weight: float = 1.0


def reciprocal_rank_fusion(
    rankings: dict[str, list[str]], weights: dict[str, float], k: int
) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score(id) = sum of weight / (k + rank), rank starting at 1."""
    scores: dict[str, float] = {}
    for name, ids in rankings.items():
        weight = weights.get(name, 1.0)
        for rank, item in enumerate(ids, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def _hit(row: dict[str, Any], score: float, vector_rank: int | None, keyword_rank: int | None) -> SearchHit:
    return SearchHit(
        chunk_id=row["chunk_id"],
        doc_id=row["doc_id"],
        source=row.get("source") or "",
        title=row.get("title") or "",
        section=row.get("section") or "",
        page=row.get("page"),
        text=row.get("text") or "",
        score=round(float(score), 6),
        vector_rank=vector_rank,
        keyword_rank=keyword_rank,
        metadata=json.loads(row.get("metadata_json") or "{}"),
    )


def search(
    store: ChunkStore,
    encoder: QueryEncoder,
    collection: str,
    request: SearchRequest,
    fusion: FusionConfig,
) -> SearchResponse:
    """Run one search request against a collection."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if store.open(collection) is None:
        raise CollectionNotFoundError(collection)
    depth = max(fusion.candidates, request.top_k)
    degraded: list[str] = []
    vector_rows: list[dict[str, Any]] = []
    keyword_rows: list[dict[str, Any]] = []
    if request.mode in ("hybrid", "vector"):
        t0 = time.perf_counter()
        vector = encoder.embed_query(request.query)
        timings["embed"] = _ms(t0)
        t0 = time.perf_counter()
        try:
            vector_rows = store.vector_search(collection, vector, depth)
        except Exception:
            logger.exception("vector search failed", extra={"collection": collection})
            degraded.append("vector")
        timings["vector"] = _ms(t0)
    if request.mode in ("hybrid", "keyword"):
        t0 = time.perf_counter()
        try:
            keyword_rows = store.keyword_search(collection, request.query, depth)
        except Exception:
            logger.exception("keyword search failed", extra={"collection": collection})
            degraded.append("keyword")
        timings["keyword"] = _ms(t0)
    rows = {row["chunk_id"]: row for row in (*keyword_rows, *vector_rows)}
    vector_ranks = {row["chunk_id"]: rank for rank, row in enumerate(vector_rows, start=1)}
    keyword_ranks = {row["chunk_id"]: rank for rank, row in enumerate(keyword_rows, start=1)}
    t0 = time.perf_counter()
    if request.mode == "vector":
        scored = [(row["chunk_id"], 1.0 - float(row.get("_distance", 0.0))) for row in vector_rows]
    elif request.mode == "keyword":
        scored = [(row["chunk_id"], float(row.get("_score", 0.0))) for row in keyword_rows]
    else:
        scored = reciprocal_rank_fusion(
            {"vector": list(vector_ranks), "keyword": list(keyword_ranks)},
            {"vector": fusion.vector_weight, "keyword": fusion.keyword_weight},
            fusion.rrf_k,
        )
    hits = [
        _hit(rows[cid], score, vector_ranks.get(cid), keyword_ranks.get(cid))
        for cid, score in scored[: request.top_k]
    ]
    timings["fuse"] = _ms(t0)
    timings["total"] = _ms(started)
    metrics.add_metric(name=MetricName.SEARCH_REQUESTS, unit="Count", value=1)
    metrics.add_metric(name=MetricName.SEARCH_LATENCY_MS, unit="Milliseconds", value=timings["total"])
    if degraded:
        metrics.add_metric(name=MetricName.SEARCH_DEGRADED, unit="Count", value=1)
    return SearchResponse(hits=hits, mode=request.mode, degraded=degraded, timings_ms=timings)


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
