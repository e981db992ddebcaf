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
    routes_documents,
    routes_health,
    routes_keys,
    routes_search,
    routes_sources,
)
from stratus.api.limits import BodyLimitMiddleware
from stratus.observability import log_context
from stratus.settings import Settings, get_settings

# A client's X-Request-ID is kept when it is a plain token; anything else (log or header injection,
# a megabyte of text) is replaced by a fresh id.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


# Union members in a validation error's location ("dict[str,any]", "str"): they name types, not fields.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none"})


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """The dotted field path of a validation error's location, union member names left out."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS))]
    return ".".join(parts) or "body"


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

    app.include_router(routes_health.router)
    app.include_router(routes_search.router)
    app.include_router(routes_documents.router)
    app.include_router(routes_chat.router)
    app.include_router(routes_keys.router)
    app.include_router(routes_sources.router)
    return app


app = create_app()
