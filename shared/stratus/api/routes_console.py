"""The console's routes: the web UI at /ui, who a key is, collection stats, feedback, operations, DLQs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from stratus.api.deps import (
    AUTH_RESPONSES,
    AdminKey,
    AnyKey,
    Chunks,
    CollectionName,
    Documents,
    Feedback,
    ReadKey,
    error_response,
    settings_dep,
)
from stratus.console import STATIC_DIR
from stratus.console.feedback import FeedbackRequest
from stratus.settings import Settings

router = APIRouter(tags=["console"], responses=AUTH_RESPONSES)
ui_router = APIRouter(include_in_schema=False)

# What the page may load and call: its own files and API, and the streaming Function URL when set.
# Document text is never HTML (textContent only), and this stops inline script even if it were.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'{stream}; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


def _ui_headers(settings: Settings) -> dict[str, str]:
    # The page PUTs uploads to presigned S3 URLs (the emulator locally) and may stream chat elsewhere.
    origins = [
        settings.aws_endpoint_url.rstrip("/") if settings.aws_endpoint_url else "https://*.amazonaws.com"
    ]
    if settings.console_stream_url:
        origins.append(settings.console_stream_url.rstrip("/"))
    stream = "".join(f" {origin}" for origin in origins)
    return {
        "Content-Security-Policy": _CSP.format(stream=stream),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


@ui_router.get("/ui")
def ui_redirect() -> RedirectResponse:
    """/ui -> /ui/ (relative, so an API Gateway stage prefix is kept)."""
    return RedirectResponse("ui/", status_code=307)


SOURCES_ROUTE = "/v1/collections/{collection}/sources"


@ui_router.get("/ui/config.json")
def ui_config(request: Request, settings: Annotated[Settings, Depends(settings_dep)]) -> JSONResponse:
    """What the page needs before sign-in: where chat streams from, and which optional routes exist."""
    from stratus import __version__

    stream = settings.console_stream_url.rstrip("/") if settings.console_stream_url else None
    # The Sources screen shows only when this API has the sources routes (issue 14 item 7).
    # (from the OpenAPI document, built once and cached by FastAPI: included routers nest their routes)
    try:
        features = {"sources": SOURCES_ROUTE in request.app.openapi().get("paths", {})}
    except Exception:  # an app whose OpenAPI document cannot be built still serves the console
        features = {"sources": False}
    return JSONResponse(
        {"stream_url": stream, "version": __version__, "features": features}, headers=_ui_headers(settings)
    )


@ui_router.get("/ui/{name:path}")
def ui_file(name: str, settings: Annotated[Settings, Depends(settings_dep)]) -> Response:
    """A static file of the console (index.html for /ui/); only files that ship in the package."""
    target = (STATIC_DIR / (name or "index.html")).resolve()
    if not target.is_relative_to(STATIC_DIR) or not target.is_file() or target.suffix not in _STATIC_TYPES:
        raise HTTPException(404, "not found")
    return FileResponse(target, media_type=_STATIC_TYPES[target.suffix], headers=_ui_headers(settings))


# --- API used by the console (and anyone) ----------------------------------------------------------


class WhoAmI(BaseModel):
    """The calling key: what the console adapts its screens to."""

    key_id: str
    name: str
    roles: list[str]
    collections: list[str]


@router.get("/v1/whoami", response_model=WhoAmI)
def whoami(principal: AnyKey) -> WhoAmI:
    """The calling key's id, name, roles and collections (never the key)."""
    return WhoAmI(
        key_id=principal.key_id,
        name=principal.name,
        roles=sorted(r.value for r in principal.roles),
        collections=list(principal.collections),
    )


class CollectionStats(BaseModel):
    """Counts and last activity of one collection."""

    collection: str
    chunks: int
    documents: int
    by_status: dict[str, int]
    last_activity: float | None


@router.get(
    "/v1/collections/{collection}/stats",
    response_model=CollectionStats,
    responses={404: error_response("unknown collection")},
)
def collection_stats(
    collection: CollectionName, principal: ReadKey, store: Chunks, documents: Documents
) -> CollectionStats:
    """Chunk and document counts and the time of the latest document change."""
    from stratus.console.operations import documents_by_status

    table = store.open(collection)
    by_status = documents_by_status(documents, [collection])[collection]
    if table is None and not by_status:
        raise HTTPException(404, f"collection {collection!r} does not exist")
    records, _ = documents.list(collection, 1000, None)
    last = max((r.updated_at for r in records if r.updated_at), default=None)
    return CollectionStats(
        collection=collection,
        chunks=int(table.count_rows()) if table is not None else 0,
        documents=sum(by_status.values()),
        by_status=by_status,
        last_activity=last,
    )


class FeedbackStored(BaseModel):
    """A stored feedback item."""

    feedback_id: str
    created_at: float


@router.post(
    "/v1/collections/{collection}/feedback",
    status_code=201,
    response_model=FeedbackStored,
    responses={422: error_response("invalid feedback; detail names the field")},
)
def post_feedback(
    collection: CollectionName, body: FeedbackRequest, principal: ReadKey, feedback: Feedback
) -> FeedbackStored:
    """Rate an answer or a hit (thumbs up/down, optional comment); `stratus feedback export` reads these."""
    from stratus.console.feedback import submit

    try:
        record = submit(feedback, collection, principal.key_id, body)
    except ValueError as error:
        raise HTTPException(422, str(error)) from error
    return FeedbackStored(feedback_id=record.feedback_id, created_at=record.created_at)


@router.get("/v1/collections/{collection}/feedback")
def list_feedback(
    collection: CollectionName,
    principal: AdminKey,
    feedback: Feedback,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, list[dict[str, Any]]]:
    """The newest feedback of a collection (admin keys)."""
    if not principal.covers(collection):
        raise HTTPException(403, f"key {principal.key_id} may not use collection {collection!r}")
    return {"feedback": [r.to_public() for r in feedback.latest(collection, limit)]}


def _queue_urls(settings: Settings) -> dict[str, str | None]:
    return {
        "fetch": settings.fetch_queue_url,
        "embed": settings.embed_queue_url,
        "index": settings.index_queue_url,
    }


@router.get("/v1/operations")
def operations(
    principal: AdminKey,
    settings: Annotated[Settings, Depends(settings_dep)],
    store: Chunks,
    documents: Documents,
) -> dict[str, Any]:
    """Queue and DLQ depths, documents per status, request counts and p50/p95 latencies (admin keys)."""
    from stratus.console import operations as ops
    from stratus.console.metrics import recorder
    from stratus.stores import aws

    collections = [c for c in store.collections() if principal.covers(c)]
    return ops.snapshot(
        recorder(settings.console_metrics_samples),
        aws.client("sqs"),
        _queue_urls(settings),
        documents,
        collections,
    )


Stage = Literal["fetch", "embed", "index"]


def _require_all(principal: Any) -> None:
    if "*" not in principal.collections:
        raise HTTPException(
            403, f"key {principal.key_id}: dead-letter queues need an admin key on every collection"
        )


@router.get("/v1/dlq")
def list_dlq(principal: AdminKey, settings: Annotated[Settings, Depends(settings_dep)]) -> dict[str, Any]:
    """Each stage's dead-letter queue depth (admin keys on every collection)."""
    from stratus.console.operations import queue_figures
    from stratus.stores import aws

    _require_all(principal)
    return {"queues": queue_figures(aws.client("sqs"), _queue_urls(settings))}


@router.post("/v1/dlq/{stage}/redrive")
def redrive_dlq(
    stage: Stage,
    principal: AdminKey,
    settings: Annotated[Settings, Depends(settings_dep)],
    max_messages: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> dict[str, Any]:
    """Move a stage's dead letters back to its queue (admin keys on every collection)."""
    from stratus.stores import aws
    from stratus.stores.dead_letters import dead_letter_queue_url, redrive

    _require_all(principal)
    url = _queue_urls(settings)[stage]
    if not url:
        raise HTTPException(404, f"the {stage} queue is not configured")
    sqs = aws.client("sqs")
    moved, failed = redrive(sqs, dead_letter_queue_url(sqs, url), url, max_messages)
    return {"stage": stage, "moved": moved, "failed": failed}


CHUNK_FIELDS = ("chunk_id", "doc_id", "source", "title", "section", "page", "position", "text")


@router.get(
    "/v1/collections/{collection}/chunks/{chunk_id}",
    responses={404: error_response("no such chunk in the collection")},
)
def get_chunk(
    collection: CollectionName,
    chunk_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_:#.-]{1,200}$")],
    principal: ReadKey,
    store: Chunks,
) -> dict[str, Any]:
    """One chunk's text and place (what a citation opens): source, title, section, page, position."""
    found = store.chunk(collection, chunk_id, CHUNK_FIELDS)
    if found is None:
        raise HTTPException(404, f"chunk {chunk_id!r} not found in {collection!r}")
    return {k: found.get(k) for k in CHUNK_FIELDS}
