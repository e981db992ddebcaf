"""The HTTP API: FastAPI routes over the library (served by uvicorn locally, Mangum on Lambda)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from stratus import __version__
from stratus.observability import logger
from stratus.search import (
    CollectionNotFoundError,
    FusionConfig,
    SearchRequest,
    SearchResponse,
    search,
)
from stratus.settings import Settings, get_settings

CollectionName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Collection name.")]


class DocumentsPage(BaseModel):
    """One page of a collection's documents."""

    documents: list[dict[str, Any]]
    next_cursor: str | None = None


class HealthReport(BaseModel):
    """Health of the process and what it depends on."""

    status: str
    version: str = __version__
    checks: dict[str, str] = Field(default_factory=dict)


def settings_dep() -> Settings:
    """Settings as a FastAPI dependency."""
    return get_settings()


def create_app() -> FastAPI:
    """Build the FastAPI application."""
    app = FastAPI(
        title="Stratus",
        version=__version__,
        description="Serverless retrieval-augmented generation: ingest, search and chat.",
    )

    @app.middleware("http")
    async def correlate(request: Request, call_next: Any) -> Response:
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        logger.append_keys(request_id=request_id)
        started = time.perf_counter()
        response: Response = await call_next(request)
        response.headers["x-request-id"] = request_id
        response.headers["server-timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "body", "message": e.get("msg", "")}
            for e in error.errors()
        ]
        first = problems[0] if problems else {"field": "body", "message": "invalid request"}
        return JSONResponse(
            status_code=422,
            content={"detail": f"{first['field']}: {first['message']}", "errors": problems},
        )

    @app.get("/health/live", response_model=HealthReport, tags=["health"])
    def live() -> HealthReport:
        """The process is up."""
        return HealthReport(status="ok")

    @app.get("/health/ready", response_model=HealthReport, tags=["health"])
    def ready(response: Response) -> HealthReport:
        """The store is reachable and the model is loadable."""
        from stratus import services

        checks: dict[str, str] = {}
        try:
            services.chunk_store().collections()
            checks["store"] = "ok"
        except Exception as error:
            checks["store"] = f"error: {type(error).__name__}"
        settings = get_settings()
        checks["model"] = "ok" if (settings.model_dir / "manifest.json").exists() else "missing"
        healthy = all(v == "ok" for v in checks.values())
        response.status_code = 200 if healthy else 503
        return HealthReport(status="ok" if healthy else "degraded", checks=checks)

    @app.get("/v1/collections", tags=["collections"])
    def list_collections() -> dict[str, list[str]]:
        """Collections that hold indexed chunks."""
        from stratus import services

        return {"collections": services.chunk_store().collections()}

    @app.post("/v1/collections/{collection}/search", response_model=SearchResponse, tags=["search"])
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

    @app.get("/v1/collections/{collection}/documents", response_model=DocumentsPage, tags=["documents"])
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

    @app.get("/v1/collections/{collection}/documents/{doc_id}", tags=["documents"])
    def get_document(
        collection: CollectionName, doc_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
    ) -> dict[str, Any]:
        """Status, chunk count, error and timings of one document."""
        from stratus import services

        record = services.document_table().get(collection, doc_id)
        if record is None:
            raise HTTPException(404, f"document {doc_id} not found in {collection!r}")
        return record.to_public()

    return app


app = create_app()
