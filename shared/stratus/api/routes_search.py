"""Search routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from stratus.api.deps import CollectionName, settings_dep
from stratus.search import CollectionNotFoundError, FusionConfig, SearchRequest, SearchResponse, search
from stratus.settings import Settings

router = APIRouter(tags=["search"])


@router.get("/v1/collections")
def list_collections() -> dict[str, list[str]]:
    """Collections that hold indexed chunks."""
    from stratus import services

    return {"collections": services.chunk_store().collections()}


@router.post("/v1/collections/{collection}/search", response_model=SearchResponse)
def search_collection(
    collection: CollectionName,
    body: SearchRequest,
    settings: Annotated[Settings, Depends(settings_dep)],
) -> SearchResponse:
    """Hybrid (full-text + vector) search over one collection."""
    from stratus import services
    from stratus.embedding.encoder import get_encoder

    fusion = FusionConfig(
        candidates=settings.search_candidates,
        rrf_k=settings.rrf_k,
        vector_weight=settings.rrf_vector_weight,
        keyword_weight=settings.rrf_keyword_weight,
    )
    try:
        return search(services.chunk_store(), get_encoder(), collection, body, fusion)
    except CollectionNotFoundError as error:
        raise HTTPException(404, f"collection {collection!r} does not exist") from error
