"""Source routes: web sites and S3 prefixes kept in sync with a collection, and their sync jobs."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query
from pydantic import Field

from stratus.api.deps import AUTH_RESPONSES, READ_ACCESS, WRITE_ACCESS, CollectionName, error_response
from stratus.sources.models import (
    COUNT_NAMES,
    SKIP_CLASSES,
    S3SourceRequest,
    SyncView,
    WebSourceRequest,
)

router = APIRouter(tags=["sources"], responses=AUTH_RESPONSES)

SourceId = Annotated[str, Path(pattern=r"^src_[0-9a-f]{16}$", description="Source id.")]
SyncId = Annotated[str, Path(pattern=r"^[0-9]{13}-[0-9a-f]{8}$", description="Sync id.")]
SourceRequest = Annotated[WebSourceRequest | S3SourceRequest, Field(discriminator="kind")]


def _store() -> Any:
    from stratus.settings import get_settings
    from stratus.sources.store import SourceStore
    from stratus.stores import aws

    return SourceStore(aws.client("dynamodb"), get_settings().sources_table)


def sync_view(item: dict[str, Any]) -> SyncView:
    """A stored sync as the API shows it (FINALIZING is still RUNNING to a client)."""
    state = item["state"] if item["state"] in ("SUCCEEDED", "FAILED") else "RUNNING"
    return SyncView(
        sync_id=item["sk"],
        state=state,
        started_at=float(item["started_at"]),
        finished_at=float(item["finished_at"]) if item.get("finished_at") is not None else None,
        counts={name: int(item.get(f"c_{name}", 0)) for name in COUNT_NAMES},
        skipped_by={name: int(item[f"k_{name}"]) for name in SKIP_CLASSES if item.get(f"k_{name}")},
        failures=[{"url": f.get("url", ""), "reason": f.get("reason", "")} for f in item.get("failures", [])],
        error=item.get("error"),
    )


def _check_urls(body: WebSourceRequest) -> None:
    from stratus.ingest.urlguard import BlockedURLError, check_url_syntax
    from stratus.settings import get_settings
    from stratus.sources.urls import normalise_url

    if not body.urls and not body.sitemaps:
        raise HTTPException(422, "urls: give at least one start URL or sitemap")
    allow = frozenset(get_settings().url_allow_hosts)
    for field_name, urls in (("urls", body.urls), ("sitemaps", body.sitemaps)):
        for url in urls:
            try:
                check_url_syntax(url, allow)
                normalise_url(url)
            except (BlockedURLError, ValueError) as error:
                raise HTTPException(422, f"{field_name}: {error}") from error


@router.post(
    "/v1/collections/{collection}/sources",
    status_code=201,
    summary="Add a web or S3 source",
    dependencies=[WRITE_ACCESS],
)
def create_source(collection: CollectionName, body: Annotated[SourceRequest, Body()]) -> dict[str, Any]:
    """Store a source; with a schedule its first sync is due at the schedule's next time."""
    from stratus.sources.schedule import next_run

    if isinstance(body, WebSourceRequest):
        _check_urls(body)
    source_id = f"src_{uuid.uuid4().hex[:16]}"
    spec = body.model_dump()
    next_due = next_run(body.schedule, time.time()) if body.schedule else None
    _store().put_source(collection, source_id, spec, next_due)
    return {"source_id": source_id, "collection": collection, **spec}


@router.get("/v1/collections/{collection}/sources", dependencies=[READ_ACCESS])
def list_sources(collection: CollectionName) -> dict[str, Any]:
    """Every source of the collection."""
    return {"sources": _store().list_sources(collection)}


@router.get(
    "/v1/collections/{collection}/sources/{source_id}",
    dependencies=[READ_ACCESS],
    responses={404: error_response("no such source")},
)
def get_source(collection: CollectionName, source_id: SourceId) -> dict[str, Any]:
    """One source, its lock (active_sync) and its last sync."""
    source = _store().get_source(collection, source_id)
    if source is None:
        raise HTTPException(404, f"source {source_id} not found in {collection!r}")
    return dict(source)


@router.delete(
    "/v1/collections/{collection}/sources/{source_id}",
    dependencies=[WRITE_ACCESS],
    responses={404: error_response("no such source"), 409: error_response("a sync of the source is running")},
)
def delete_source(collection: CollectionName, source_id: SourceId) -> dict[str, Any]:
    """Remove a source and every document it brought (their chunks leave the index)."""
    from stratus.pipeline.fetch_function import build_engine

    store = _store()
    source = store.get_source(collection, source_id)
    if source is None:
        raise HTTPException(404, f"source {source_id} not found in {collection!r}")
    if source.get("active_sync"):
        raise HTTPException(409, f"sync {source['active_sync']} of the source is running")
    if not store.delete_source(collection, source_id):
        raise HTTPException(409, "a sync of the source started meanwhile")
    deleted = build_engine().delete_documents(source)
    return {"source_id": source_id, "deleted": True, "documents_deleted": deleted}


@router.post(
    "/v1/collections/{collection}/sources/{source_id}/syncs",
    status_code=202,
    dependencies=[WRITE_ACCESS],
    responses={404: error_response("no such source"), 409: error_response("a sync of the source is running")},
)
def start_sync(collection: CollectionName, source_id: SourceId) -> dict[str, str]:
    """Start a sync; one per source at a time."""
    from stratus.pipeline.fetch_function import build_engine
    from stratus.sources.sync import SourceNotFound, SyncBusy

    try:
        return {"sync_id": build_engine().start(collection, source_id)}
    except SourceNotFound as error:
        raise HTTPException(404, f"source {source_id} not found in {collection!r}") from error
    except SyncBusy as error:
        raise HTTPException(409, f"sync {error} of the source is running") from error


@router.get(
    "/v1/collections/{collection}/sources/{source_id}/syncs",
    dependencies=[READ_ACCESS],
    responses={404: error_response("no such source")},
)
def list_syncs(
    collection: CollectionName, source_id: SourceId, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> dict[str, Any]:
    """The source's recent syncs, newest first."""
    store = _store()
    if store.get_source(collection, source_id) is None:
        raise HTTPException(404, f"source {source_id} not found in {collection!r}")
    return {"syncs": [sync_view(item).model_dump() for item in store.list_syncs(source_id, limit)]}


@router.get(
    "/v1/collections/{collection}/sources/{source_id}/syncs/{sync_id}",
    response_model=SyncView,
    dependencies=[READ_ACCESS],
    responses={404: error_response("no such sync")},
)
def get_sync(collection: CollectionName, source_id: SourceId, sync_id: SyncId) -> SyncView:
    """State, the seven counts, skips by class and the failures (URL and reason) of one sync."""
    item = _store().get_sync(source_id, sync_id)
    if item is None or item.get("collection") != collection:
        raise HTTPException(404, f"sync {sync_id} not found")
    return sync_view(item)
