"""Search routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from stratus.api.deps import (
    AUTH_RESPONSES,
    READ_ACCESS,
    Chunks,
    CollectionName,
    DocumentId,
    ReadKey,
    Search,
    error_response,
)
from stratus.retrieval.filters import FilterError
from stratus.retrieval.search import (
    CollectionNotFoundError,
    RerankUnavailableError,
    SearchRequest,
    SearchResponse,
    query_problem,
)
from stratus.retrieval.similar import MAX_TOP_K, DocumentNotFoundError, SimilarResponse

router = APIRouter(tags=["search"], responses=AUTH_RESPONSES)


@router.get("/v1/collections")
def list_collections(principal: ReadKey, store: Chunks) -> dict[str, list[str]]:
    """Collections that hold indexed chunks, of those the key may read."""
    return {"collections": [c for c in store.collections() if principal.covers(c)]}


@router.post(
    "/v1/collections/{collection}/search",
    response_model=SearchResponse,
    dependencies=[READ_ACCESS],
    responses={
        400: error_response("rerank asked but no cross-encoder is configured, or the body is not JSON"),
        404: error_response("unknown collection"),
        422: error_response(
            "invalid request or filter, or a query of only whitespace, punctuation or stop words; "
            "detail names the field"
        ),
    },
)
def search_collection(collection: CollectionName, body: SearchRequest, searcher: Search) -> SearchResponse:
    """Hybrid (full-text + vector) search over one collection, with optional filters, rerank and MMR."""
    problem = query_problem(body.query)
    if problem is not None:
        raise HTTPException(422, problem)
    try:
        return searcher.search(collection, body)
    except CollectionNotFoundError as error:
        raise HTTPException(404, f"collection {collection!r} does not exist") from error
    except FilterError as error:
        raise HTTPException(422, str(error)) from error
    except RerankUnavailableError as error:
        raise HTTPException(400, str(error)) from error


@router.get(
    "/v1/collections/{collection}/documents/{doc_id}/similar",
    response_model=SimilarResponse,
    dependencies=[READ_ACCESS],
    responses={404: error_response("unknown collection, or a document with no indexed chunks")},
)
def similar_documents(
    collection: CollectionName,
    doc_id: DocumentId,
    searcher: Search,
    top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K, description="How many similar documents.")] = 10,
) -> SimilarResponse:
    """More like this: the documents nearest to one document, by its vectors and its terms, never itself."""
    try:
        return searcher.similar(collection, doc_id, top_k)
    except CollectionNotFoundError as error:
        raise HTTPException(404, f"collection {collection!r} does not exist") from error
    except DocumentNotFoundError as error:
        raise HTTPException(404, f"document {doc_id} has no indexed chunks in {collection!r}") from error
