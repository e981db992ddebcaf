"""Hybrid retrieval: query embedding + vector search + native full-text search, fused, then optional
cross-encoder reranking and MMR diversification. The API and `stratus eval` both call `search`."""

from __future__ import annotations

import contextvars
import json
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stratus.observability import MetricName, emit_metric, logger
from stratus.retrieval.filters import CompiledFilter, compile_filter

if TYPE_CHECKING:
    from stratus.settings import Settings
    from stratus.stores.vectors import ChunkStore, CollectionReader

SearchMode = Literal["hybrid", "vector", "keyword"]
FusionMethod = Literal["rrf", "convex"]
MAX_INTERNAL_TOP_K = 1000

# Vector and keyword retrieval of one request run side by side; LanceDB releases the GIL while it works.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="search")


_TERM = re.compile(r"\w+")


def query_problem(text: str) -> str | None:
    """Why `text` cannot be searched (only whitespace, punctuation or stop words), or None when it can.

    The search route and a chat question without earlier turns both refuse such text with 422: nothing
    in it selects a chunk, so any hits would be arbitrary.
    """
    from stratus.retrieval.stopwords import STOPWORDS

    terms = _TERM.findall(text)
    if not terms:
        return "query: no words to search for (only whitespace or punctuation)"
    if all(term.lower() in STOPWORDS for term in terms):
        return "query: only stop words (such as 'the', 'of'); name what to look for"
    return None


class CollectionNotFoundError(LookupError):
    """The collection has no chunk table."""


class RerankUnavailableError(ValueError):
    """The request asked for reranking but no reranker is configured."""


class QueryEncoder(Protocol):
    """What search needs of an encoder."""

    def embed_query(self, text: str) -> np.ndarray: ...


class Reranker(Protocol):
    """What search needs of a cross-encoder: one relevance score per (query, passage)."""

    def score(self, query: str, passages: list[str]) -> np.ndarray: ...


class MmrOptions(BaseModel):
    """Maximal marginal relevance: trade relevance for diversity among the returned hits."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    lambda_: float = Field(
        0.5, alias="lambda", ge=0.0, le=1.0, description="1: pure relevance; 0: pure diversity."
    )


class SearchRequest(BaseModel):
    """A search request."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=2000, description="What to look for.")
    top_k: int = Field(5, ge=1, le=100, description="How many hits to return.")
    mode: SearchMode = Field("hybrid", description="hybrid (default), vector or keyword.")
    filters: dict[str, Any] | list[Any] | None = Field(
        None,
        description='Metadata filter, e.g. {"and": [{"field": "year", "gte": 2020}, '
        '{"field": "category", "in": ["a", "b"]}]} (see docs/search.md).',
    )
    rerank: bool = Field(False, description="Rescore the fused candidates with the cross-encoder.")
    mmr: MmrOptions | None = Field(None, description='Diversify the hits, e.g. {"lambda": 0.5}.')


class SearchHit(BaseModel):
    """One retrieved chunk."""

    chunk_id: str
    doc_id: str
    source: str
    title: str = ""
    section: str = ""
    page: int | None = None
    sheet: str | None = Field(None, description="Spreadsheet sheet (or CSV file) the chunk came from.")
    row_start: int | None = Field(None, description="First spreadsheet/CSV row of the chunk (1-based).")
    row_end: int | None = Field(None, description="Last spreadsheet/CSV row of the chunk.")
    text: str
    score: float
    vector_rank: int | None = None
    keyword_rank: int | None = None
    rerank_score: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    """Hits, how they were found, and where the time went."""

    hits: list[SearchHit]
    mode: SearchMode
    degraded: list[str] = Field(default_factory=list, description="Retrievers that failed or had no index.")
    reranked: bool = False
    timings_ms: dict[str, float] = Field(default_factory=dict)


@dataclass(frozen=True)
class FusionConfig:
    """Fusion parameters (settings: STRATUS_SEARCH_CANDIDATES, STRATUS_RRF_*, STRATUS_SEARCH_FUSION)."""

    candidates: int = 50
    rrf_k: int = 60
    vector_weight: float = 1.0
    keyword_weight: float = 1.0
    method: FusionMethod = "convex"
    rerank_candidates: int = 20
    # Rocchio feedback on the vector side: the query vector moves towards its nearest chunks (0: off).
    vector_feedback: int = 0
    vector_feedback_weight: float = 0.25

    @classmethod
    def from_settings(cls, settings: Settings) -> FusionConfig:
        """Fusion parameters as configured."""
        from stratus.settings import derive

        return derive(
            cls,
            settings,
            names={
                "candidates": "search_candidates",
                "vector_weight": "rrf_vector_weight",
                "keyword_weight": "rrf_keyword_weight",
                "method": "search_fusion",
                "vector_feedback": "search_vector_feedback",
                "vector_feedback_weight": "search_vector_feedback_weight",
            },
        )


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


def convex_fusion(
    scored: dict[str, list[tuple[str, float]]], weights: dict[str, float]
) -> list[tuple[str, float]]:
    """Fuse scored lists: score(id) = sum of weight * min-max-normalised score (0 where absent)."""
    fused: dict[str, float] = {}
    for name, pairs in scored.items():
        if not pairs:
            continue
        values = [s for _, s in pairs]
        low, high = min(values), max(values)
        span = high - low
        weight = weights.get(name, 1.0)
        for item, value in pairs:
            normalised = (value - low) / span if span > 0 else 1.0
            fused[item] = fused.get(item, 0.0) + weight * normalised
    return sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))


def fuse(
    vector: list[tuple[str, float]], keyword: list[tuple[str, float]], fusion: FusionConfig
) -> list[tuple[str, float]]:
    """The two sides' (id, score) candidates fused as configured; one side alone when the other is empty."""
    if not keyword:
        return vector
    if not vector:
        return keyword
    weights = {"vector": fusion.vector_weight, "keyword": fusion.keyword_weight}
    if fusion.method == "convex":
        return convex_fusion({"vector": vector, "keyword": keyword}, weights)
    ranked = {"vector": [c for c, _ in vector], "keyword": [c for c, _ in keyword]}
    return reciprocal_rank_fusion(ranked, weights, fusion.rrf_k)


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, lambda_: float, count: int) -> list[int]:
    """Greedy maximal marginal relevance: indices picking max λ·rel − (1−λ)·max cosine to those picked.

    `relevance` is scaled to [0, 1] first so that λ weighs comparable quantities; `vectors` are unit rows.
    """
    n = len(relevance)
    if n == 0:
        return []
    span = float(relevance.max() - relevance.min())
    rel = (relevance - relevance.min()) / span if span > 0 else np.ones(n)
    similarity = vectors @ vectors.T
    chosen: list[int] = []
    redundancy = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    for _ in range(min(count, n)):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        value = np.where(available, lambda_ * rel - (1 - lambda_) * penalty, -np.inf)
        pick = int(np.argmax(value))
        chosen.append(pick)
        available[pick] = False
        redundancy = np.maximum(redundancy, similarity[pick])
    return chosen


def hit_from_row(
    row: dict[str, Any],
    score: float,
    vector_rank: int | None,
    keyword_rank: int | None,
    rerank_score: float | None = None,
) -> SearchHit:
    """A chunk's row as a hit with its score and ranks."""
    return SearchHit(
        chunk_id=row["chunk_id"],
        doc_id=row["doc_id"],
        source=row.get("source") or "",
        title=row.get("title") or "",
        section=row.get("section") or "",
        page=row.get("page"),
        sheet=row.get("sheet"),
        row_start=row.get("row_start"),
        row_end=row.get("row_end"),
        text=row.get("text") or "",
        score=round(float(score), 6),
        vector_rank=vector_rank,
        keyword_rank=keyword_rank,
        rerank_score=None if rerank_score is None else round(float(rerank_score), 6),
        metadata=json.loads(row.get("metadata_json") or "{}"),
    )


def search(
    store: ChunkStore,
    encoder: QueryEncoder,
    collection: str,
    request: SearchRequest,
    fusion: FusionConfig,
    reranker: Reranker | None = None,
    *,
    top_k: int | None = None,
) -> SearchResponse:
    """Run one search request against a collection.

    `top_k` overrides the request's (bounded by the API at 100) for internal callers such as the
    evaluation tool. Raises CollectionNotFoundError, FilterError (bad filter) and
    RerankUnavailableError (rerank asked, none configured).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    limit = min(top_k or request.top_k, MAX_INTERNAL_TOP_K)
    if request.rerank and reranker is None:
        raise RerankUnavailableError(
            "rerank: no cross-encoder is configured (set STRATUS_RERANK_MODEL_DIR), or send rerank: false"
        )
    feedback = fusion.vector_feedback if request.mode in ("hybrid", "vector") else 0
    rows = store.reader(collection, with_vectors=request.mmr is not None or feedback > 0)
    if rows is None:
        raise CollectionNotFoundError(collection)
    compiled: CompiledFilter | None = None
    if request.filters:
        compiled = compile_filter(request.filters, store.filter_fields, rows.column_names)
    # The reader confines every query to the collection, filters or not: rows of another collection
    # cannot be returned even from a table they should never have reached.
    where = compiled.where if compiled else None
    depth = max(fusion.candidates, limit, fusion.rerank_candidates if request.rerank else 0)
    degraded: list[str] = []
    vector_ids: list[str] = []
    keyword_ids: list[str] = []
    vector_scores: list[float] = []
    keyword_scores: list[float] = []
    query_vector: np.ndarray | None = None

    def keyword() -> tuple[list[str], list[float]]:
        t0 = time.perf_counter()
        try:
            return rows.keyword(request.query, depth, where)
        finally:
            timings["keyword"] = elapsed_ms(t0)

    pending: Future[tuple[list[str], list[float]]] | None = None
    if request.mode in ("hybrid", "keyword"):
        pending = _POOL.submit(contextvars.copy_context().run, keyword) if request.mode == "hybrid" else None
    if request.mode in ("hybrid", "vector") or request.mmr:
        t0 = time.perf_counter()
        try:
            query_vector = encoder.embed_query(request.query)
        except Exception:
            logger.exception("query embedding failed", extra={"collection": collection})
            if request.mode in ("hybrid", "vector"):
                degraded.append("vector")
        timings["embed"] = elapsed_ms(t0)
    if request.mode in ("hybrid", "vector") and query_vector is not None:
        t0 = time.perf_counter()
        try:
            if feedback:
                query_vector = feedback_vector(
                    rows, query_vector, feedback, fusion.vector_feedback_weight, where
                )
            vector_ids, vector_scores = rows.nearest(query_vector, depth, where)
        except Exception:
            logger.exception("vector search failed", extra={"collection": collection})
            degraded.append("vector")
        timings["vector"] = elapsed_ms(t0)
    if request.mode in ("hybrid", "keyword"):
        try:
            keyword_ids, keyword_scores = pending.result() if pending is not None else keyword()
        except Exception:
            logger.exception("keyword search failed", extra={"collection": collection})
            degraded.append("keyword")
    vector_ranks = {cid: rank for rank, cid in enumerate(vector_ids, start=1)}
    keyword_ranks = {cid: rank for rank, cid in enumerate(keyword_ids, start=1)}
    t0 = time.perf_counter()
    by_vector = list(zip(vector_ids, vector_scores, strict=True))
    by_keyword = list(zip(keyword_ids, keyword_scores, strict=True))
    if request.mode == "vector":
        scored = by_vector
    elif request.mode == "keyword":
        scored = by_keyword
    else:
        scored = fuse(by_vector, by_keyword, fusion)
    timings["fuse"] = elapsed_ms(t0)
    needed = max(limit * 4 if request.mmr else limit, fusion.rerank_candidates if request.rerank else 0)
    rows.load([cid for cid, _ in scored[:needed]])
    # A chunk deleted between retrieval and reading is dropped, not an error.
    scored = [pair for pair in scored[:needed] if rows.has(pair[0])]
    rerank_scores: dict[str, float] = {}
    if request.rerank and reranker is not None and scored:
        t0 = time.perf_counter()
        head = [cid for cid, _ in scored[: fusion.rerank_candidates]]
        values = reranker.score(request.query, [_passage(rows.row(cid)) for cid in head])
        rerank_scores = {cid: float(v) for cid, v in zip(head, values, strict=True)}
        reranked = sorted(head, key=lambda cid: -rerank_scores[cid])
        scored = [(cid, rerank_scores[cid]) for cid in reranked] + scored[len(head) :]
        timings["rerank"] = elapsed_ms(t0)
    if request.mmr and scored and query_vector is not None:
        t0 = time.perf_counter()
        pool = scored[: max(limit * 4, limit)]
        vectors = rows.vectors([cid for cid, _ in pool])
        order = mmr_order(np.array([s for _, s in pool]), vectors, request.mmr.lambda_, limit)
        scored = [pool[i] for i in order]
        timings["mmr"] = elapsed_ms(t0)
    hits = [
        hit_from_row(
            rows.row(cid), score, vector_ranks.get(cid), keyword_ranks.get(cid), rerank_scores.get(cid)
        )
        for cid, score in scored[:limit]
    ]
    timings["total"] = elapsed_ms(started)
    emit_metric(MetricName.SEARCH_REQUESTS, 1)
    emit_metric(MetricName.SEARCH_LATENCY_MS, timings["total"], "Milliseconds")
    if degraded:
        emit_metric(MetricName.SEARCH_DEGRADED, 1)
    return SearchResponse(
        hits=hits, mode=request.mode, degraded=degraded, reranked=bool(rerank_scores), timings_ms=timings
    )


def feedback_vector(
    rows: CollectionReader, query: np.ndarray, count: int, weight: float, where: str | None
) -> np.ndarray:
    """Rocchio pseudo-relevance feedback: the query plus `weight` × the mean of its `count` nearest chunks.

    Unit length again, so the similarities it scores stay cosines. Measured on SciFact in docs/search.md.
    """
    ids, _ = rows.nearest(query, count, where)
    if not ids:
        return query
    rows.load(ids)
    moved = query + weight * rows.vectors(ids).mean(axis=0)
    norm = float(np.linalg.norm(moved))
    return (moved / norm).astype(np.float32) if norm > 0 else query


def _passage(row: dict[str, Any]) -> str:
    """What the cross-encoder reads of a chunk: its title and heading path, then the text."""
    context = " > ".join(part for part in (row.get("title") or "", row.get("section") or "") if part)
    return f"{context}\n{row.get('text') or ''}" if context else str(row.get("text") or "")


def elapsed_ms(since: float) -> float:
    """Milliseconds since a time.perf_counter() reading, rounded for a timings field."""
    return round((time.perf_counter() - since) * 1000, 2)
