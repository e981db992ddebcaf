"""Search routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from stratus.api.deps import CollectionName, settings_dep
from stratus.filters import FilterError
from stratus.search import (
    CollectionNotFoundError,
    FusionConfig,
    RerankUnavailableError,
    SearchRequest,
    SearchResponse,
    search,
)
from stratus.settings import Settings

router = APIRouter(tags=["search"])


@router.get("/v1/collections")
def list_collections() -> dict[str, list[str]]:
    """Collections that hold indexed chunks."""
    from stratus import services

    return {"collections": services.chunk_store().collections()}


@router.post(
    "/v1/collections/{collection}/search",
    response_model=SearchResponse,
    responses={
        400: {"description": "rerank asked but no cross-encoder is configured"},
        404: {"description": "unknown collection"},
        422: {"description": "invalid request or filter; detail names the field"},
    },
)
def search_collection(
    collection: CollectionName,
    body: SearchRequest,
    settings: Annotated[Settings, Depends(settings_dep)],
) -> SearchResponse:
    """Hybrid (full-text + vector) search over one collection, with optional filters, rerank and MMR."""
    from stratus import services
    from stratus.embedding.encoder import get_encoder
    from stratus.rerank import get_reranker

    try:
        return search(
            services.chunk_store(),
            get_encoder(),
            collection,
            body,
            FusionConfig.from_settings(settings),
            get_reranker() if body.rerank else None,
        )
    except CollectionNotFoundError as error:
        raise HTTPException(404, f"collection {collection!r} does not exist") from error
    except FilterError as error:
        raise HTTPException(422, str(error)) from error
    except RerankUnavailableError as error:
        raise HTTPException(400, str(error)) from error
