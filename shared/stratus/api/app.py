"""The HTTP API: FastAPI routes over the library (served by uvicorn locally, Mangum on Lambda)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from stratus import __version__
from stratus.api import (
    routes_chat,
    routes_console,
    routes_documents,
    routes_health,
    routes_keys,
    routes_search,
    routes_sources,
)
from stratus.api.limits import BodyLimitMiddleware
from stratus.observability import log_context, logger
from stratus.settings import Settings, get_settings
from stratus.stores.vectors import StoreUnavailableError

# A client's X-Request-ID is kept when it is a plain token; anything else (log or header injection,
# a megabyte of text) is replaced by a fresh id.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


# Union members in a validation error's location ("dict[str,any]", "str"): they name types, not fields.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none"})


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """The dotted field path of a validation error's location, union member names left out."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS))]
    return ".".join(parts) or "body"


def gateway_prefix(event: Any) -> str:
    """The path prefix API Gateway strips before the function sees the path: `/<stage>` or a base path.

    `requestContext.path` is the path the client asked for, `path` the one after the stage (or a custom
    domain's base path mapping) was taken off; "" when they do not differ or the event is not a REST event.
    """
    if not isinstance(event, dict):
        return ""
    path = event.get("path")
    full = (event.get("requestContext") or {}).get("path")
    if not isinstance(path, str) or not isinstance(full, str) or not full.endswith(path) or full == path:
        return ""
    prefix = full[: len(full) - len(path)].rstrip("/")
    return prefix if prefix.startswith("/") else ""


class GatewayRootPath:
    """Sets the ASGI root_path from the API Gateway event Mangum passes, so /docs loads /<stage>/openapi.json.

    The path gets the prefix too, as the ASGI spec wants (path includes root_path): routing strips it again.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        prefix = gateway_prefix(scope.get("aws.event")) if scope.get("type") == "http" else ""
        if prefix:
            scope = {**scope, "root_path": prefix, "path": prefix + scope["path"]}
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the FastAPI application."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Stratus",
        version=__version__,
        description="Serverless retrieval-augmented generation: ingest, search and chat.",
    )
    # Added before `correlate`, so it runs inside it: a 413 or 422 from here carries the request id.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.api_max_body_bytes,
        max_depth=settings.api_max_json_depth,
        timeout_s=settings.api_body_timeout_s,
    )

    @app.middleware("http")
    async def correlate(request: Request, call_next: Any) -> Response:
        given = request.headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.fullmatch(given) else str(uuid.uuid4())
        started = time.perf_counter()
        with log_context(request_id=request_id):
            response: Response = await call_next(request)
        response.headers["x-request-id"] = request_id
        response.headers["server-timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": _field_path(e.get("loc", ())[1:]), "message": e.get("msg", "")} for e in error.errors()
        ]
        first = problems[0] if problems else {"field": "body", "message": "invalid request"}
        return JSONResponse(
            status_code=422,
            content={"detail": f"{first['field']}: {first['message']}", "errors": problems},
        )

    @app.exception_handler(StoreUnavailableError)
    async def store_unavailable(request: Request, error: StoreUnavailableError) -> JSONResponse:
        # S3 refused or unreachable is not an empty collection: a retryable 503, details in the log only.
        logger.error("vector store unavailable", extra={"error": str(error)[:2000]})
        return JSONResponse(
            status_code=503,
            content={"detail": "the vector store is unavailable; retry"},
            headers={"Retry-After": "1"},
        )

    app.include_router(routes_health.router)
    app.include_router(routes_search.router)
    app.include_router(routes_documents.router)
    app.include_router(routes_chat.router)
    app.include_router(routes_keys.router)
    app.include_router(routes_sources.router)
    app.include_router(routes_console.router)
    app.include_router(routes_console.ui_router)
    from stratus.console.metrics import recorder

    recorder(settings.console_metrics_samples)  # the Operations screen counts from the first request
    # Outermost: the stage prefix is in place before any middleware or route sees the request.
    app.add_middleware(GatewayRootPath)
    return app


app = create_app()
