"""Document routes: status now; uploads and deletes build on them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from stratus.api.deps import CollectionName, DocumentId

router = APIRouter(tags=["documents"])


class DocumentsPage(BaseModel):
    """One page of a collection's documents."""

    documents: list[dict[str, Any]]
    next_cursor: str | None = None


@router.get("/v1/collections/{collection}/documents", response_model=DocumentsPage)
def list_documents(
    collection: CollectionName,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> DocumentsPage:
    """Status of a collection's documents, one page at a time."""
    from stratus import services

    try:
        records, next_cursor = services.document_table().list(collection, limit, cursor)
    except ValueError as error:
        raise HTTPException(400, "cursor: not a cursor this API returned") from error
    return DocumentsPage(documents=[r.to_public() for r in records], next_cursor=next_cursor)


@router.get("/v1/collections/{collection}/documents/{doc_id}")
def get_document(collection: CollectionName, doc_id: DocumentId) -> dict[str, Any]:
    """Status, chunk count, error and timings of one document."""
    from stratus import services

    record = services.document_table().get(collection, doc_id)
    if record is None:
        raise HTTPException(404, f"document {doc_id} not found in {collection!r}")
    return record.to_public()
