"""The HTTP API: FastAPI routes over the library (served by uvicorn locally, Mangum on Lambda)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from stratus import __version__
from stratus.api import routes_chat, routes_documents, routes_health, routes_search
from stratus.observability import logger


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

    app.include_router(routes_health.router)
    app.include_router(routes_search.router)
    app.include_router(routes_documents.router)
    app.include_router(routes_chat.router)
    return app


app = create_app()
