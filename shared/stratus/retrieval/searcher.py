"""Search wired once: what the search route, the similar-documents route and chat's retrieval share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from stratus.retrieval.search import (
    FusionConfig,
    QueryEncoder,
    Reranker,
    SearchRequest,
    SearchResponse,
    search,
)
from stratus.retrieval.similar import SimilarResponse, similar_documents

if TYPE_CHECKING:
    from stratus.stores.vectors import ChunkStore


class Searcher:
    """Search wired once: a chunk store, the query encoder, the fusion parameters and the reranker.

    `reranker` is asked only when a request wants a rerank, so a cross-encoder is never loaded for
    plain searches.
    """

    def __init__(
        self,
        store: ChunkStore,
        encoder: QueryEncoder,
        fusion: FusionConfig,
        reranker: Callable[[], Reranker | None] = lambda: None,
    ) -> None:
        self._store = store
        self._encoder = encoder
        self._fusion = fusion
        self._reranker = reranker

    def search(self, collection: str, request: SearchRequest) -> SearchResponse:
        """`search` over one collection with this wiring (the same errors)."""
        reranker = self._reranker() if request.rerank else None
        return search(self._store, self._encoder, collection, request, self._fusion, reranker)

    def similar(self, collection: str, doc_id: str, top_k: int) -> SimilarResponse:
        """The documents most like one document (`stratus.retrieval.similar`), with this fusion."""
        return similar_documents(self._store, collection, doc_id, top_k, self._fusion)
