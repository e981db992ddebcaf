"""Document routes: status, inline text and URL submissions, presigned uploads, deletes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from stratus.api.deps import (
    AUTH_RESPONSES,
    READ_ACCESS,
    WRITE_ACCESS,
    Audit,
    CollectionName,
    CollectionSettingsDep,
    DocumentId,
    Documents,
    WriteKey,
    error_response,
)
from stratus.ingest.submission import (
    DeleteResponse,
    FieldError,
    SubmitRequest,
    SubmitResponse,
    UploadRequest,
    UploadTicket,
)

router = APIRouter(tags=["documents"], responses=AUTH_RESPONSES)


class DocumentsPage(BaseModel):
    """One page of a collection's documents."""

    documents: list[dict[str, Any]]
    next_cursor: str | None = None


@router.get(
    "/v1/collections/{collection}/documents",
    response_model=DocumentsPage,
    dependencies=[READ_ACCESS],
    responses={400: error_response("cursor: not a cursor this API returned")},
)
def list_documents(
    collection: CollectionName,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    *,
    documents: Documents,
) -> DocumentsPage:
    """Status of a collection's documents, one page at a time."""
    try:
        records, next_cursor = documents.list(collection, limit, cursor)
    except ValueError as error:
        raise HTTPException(400, "cursor: not a cursor this API returned") from error
    return DocumentsPage(documents=[r.to_public() for r in records], next_cursor=next_cursor)


@router.get(
    "/v1/collections/{collection}/documents/{doc_id}",
    dependencies=[READ_ACCESS],
    responses={404: error_response("no such document in the collection")},
)
def get_document(collection: CollectionName, doc_id: DocumentId, documents: Documents) -> dict[str, Any]:
    """Status, chunk count, error and timings of one document."""
    record = documents.get(collection, doc_id)
    if record is None:
        raise HTTPException(404, f"document {doc_id} not found in {collection!r}")
    return record.to_public()


def _field_error(error: FieldError) -> JSONResponse:
    """The same 422 shape as request validation errors: detail names the field."""
    return JSONResponse(
        status_code=422,
        content={"detail": str(error), "errors": [{"field": error.field, "message": error.message}]},
    )


@router.post(
    "/v1/collections/{collection}/documents",
    status_code=202,
    response_model=SubmitResponse,
    summary="Add documents as inline text or URLs",
    dependencies=[WRITE_ACCESS],
)
def submit_documents(collection: CollectionName, body: SubmitRequest) -> SubmitResponse | JSONResponse:
    """Write inline texts (with metadata sidecars) and a URL manifest into the collection's inbox."""
    from stratus.ingest.submission import documents_api
    from stratus.observability import current_request_id

    try:
        return documents_api().submit(collection, body, request_id=current_request_id())
    except FieldError as error:
        return _field_error(error)


@router.post(
    "/v1/collections/{collection}/uploads",
    response_model=UploadTicket,
    summary="Presigned PUT URL for a large file",
    dependencies=[WRITE_ACCESS],
)
def create_upload(collection: CollectionName, body: UploadRequest) -> UploadTicket | JSONResponse:
    """A presigned PUT to the inbox key of `source`; PUT the bytes with the returned headers."""
    from stratus.ingest.submission import documents_api

    try:
        return documents_api().presign_upload(collection, body)
    except FieldError as error:
        return _field_error(error)


@router.delete(
    "/v1/collections/{collection}/documents/{doc_id}",
    status_code=202,
    response_model=DeleteResponse,
    summary="Remove a document and every chunk of it",
    responses={
        404: error_response("no such document in the collection"),
        409: error_response("the document cannot be deleted in its current state"),
    },
)
def delete_document(
    collection: CollectionName, doc_id: DocumentId, principal: WriteKey, audit: Audit
) -> DeleteResponse:
    """Delete the inbox object (the S3 event removes the chunks) or, for a URL, mark it DELETED."""
    from stratus.access.audit import key_actor
    from stratus.ingest.submission import documents_api

    actor, target = key_actor(principal.key_id), f"{collection}/{doc_id}"
    with audit.audited(actor, "document.delete", target, collection) as note:
        try:
            result = documents_api().delete(collection, doc_id)
        except FieldError as error:
            raise HTTPException(409, str(error)) from error
        if result is None:
            raise HTTPException(404, f"document {doc_id} not found in {collection!r}")
        note.detail = f"source {result.source!r}"
        return result


class CollectionSettingsBody(BaseModel):
    """A collection's chunking: token (the default), heading (one chunk per section) or rows."""

    chunking: Literal["token", "heading", "rows"] = "token"
    chunk_tokens: Annotated[int | None, Field(ge=16, le=512)] = None
    chunk_overlap_tokens: Annotated[int | None, Field(ge=0, le=256)] = None


@router.get(
    "/v1/collections/{collection}/settings",
    response_model=CollectionSettingsBody,
    dependencies=[READ_ACCESS],
)
def get_collection_settings(
    collection: CollectionName, store: CollectionSettingsDep
) -> CollectionSettingsBody:
    """The collection's chunking settings (defaults when none were set)."""
    return CollectionSettingsBody(**store.get(collection).to_public())


@router.put(
    "/v1/collections/{collection}/settings",
    response_model=CollectionSettingsBody,
    dependencies=[WRITE_ACCESS],
)
def put_collection_settings(
    collection: CollectionName, body: CollectionSettingsBody, store: CollectionSettingsDep
) -> CollectionSettingsBody:
    """Set the collection's chunking; documents ingested from now on use it."""
    from stratus.stores.collections import CollectionSettings

    settings = CollectionSettings(**body.model_dump())
    store.put(collection, settings)
    return CollectionSettingsBody(**settings.to_public())
