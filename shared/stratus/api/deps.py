"""Shared FastAPI dependencies and path parameters: settings, stores, API keys, roles and rate limits.

Routes declare the stores they use (`Documents`, `Chunks`, ...) instead of reaching for them, so a
test can swap one with `app.dependency_overrides[<its function>]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from stratus import services
from stratus.access.audit import AuditLog
from stratus.access.auth import (
    ForbiddenError,
    KeyVerifier,
    Principal,
    Role,
    UnauthenticatedError,
    authorize,
)
from stratus.access.ratelimit import RateLimiter
from stratus.errors import TransientError
from stratus.models import COLLECTION_PATTERN
from stratus.observability import MetricName, emit_metric
from stratus.retrieval.searcher import Searcher
from stratus.settings import Settings, get_settings
from stratus.stores.collections import CollectionSettingsStore
from stratus.stores.conversations import ConversationTable
from stratus.stores.documents import DocumentTable
from stratus.stores.feedback import FeedbackTable
from stratus.stores.gateway import GatewayKeys
from stratus.stores.keys import KeyTable
from stratus.stores.vectors import ChunkStore

CollectionName = Annotated[str, Path(pattern=COLLECTION_PATTERN.pattern, description="Collection name.")]
DocumentId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="Document id.")]

# Either scheme carries the same key: x-api-key for API Gateway and curl, Bearer for OpenAI clients.
api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, description="A Stratus API key (strk_...).")
bearer_token = HTTPBearer(
    auto_error=False, description="The same API key as a bearer token (what OpenAI clients send)."
)


class FieldProblem(BaseModel):
    """One invalid field of a request."""

    field: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error answer of the native API: `detail` says what is wrong and names the field."""

    detail: str
    errors: list[FieldProblem] | None = None


def error_response(description: str) -> dict[str, Any]:
    """An OpenAPI `responses` entry for an error answer with the shared error body."""
    return {"description": description, "model": ErrorBody}


# Declared on every router with protected routes, so the OpenAPI document lists these answers too.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: error_response("the body is not valid UTF-8 JSON"),
    401: error_response("no API key, or an unknown or revoked one (WWW-Authenticate)"),
    403: error_response("the key may not use this collection, or lacks the role"),
    408: error_response("the request body did not arrive within the time limit (slow client)"),
    413: error_response("the request body is over the size limit"),
    422: error_response("invalid request; detail names the field"),
    429: error_response("the key's rate limit is spent (Retry-After: seconds)"),
    503: error_response("the key store is busy, or a dependency is unavailable (Retry-After)"),
}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="stratus", ApiKey realm="stratus" header="x-api-key"'}


def settings_dep() -> Settings:
    """Settings as a FastAPI dependency."""
    return get_settings()


def document_table_dep() -> DocumentTable:
    """The documents table (the status of every document)."""
    return services.document_table()


def chunk_store_dep() -> ChunkStore:
    """The chunk store (every collection's chunk table)."""
    return services.chunk_store()


def searcher_dep() -> Searcher:
    """Search over the chunk store with the encoder, fusion parameters and reranker."""
    return services.searcher()


def collection_settings_dep() -> CollectionSettingsStore:
    """Per-collection settings (chunking)."""
    return services.collection_settings()


def audit_log_dep() -> AuditLog:
    """The audit log of administrative actions."""
    return services.audit_log()


def key_table_dep() -> KeyTable:
    """The API keys table."""
    return services.key_table()


def conversation_table_dep() -> ConversationTable:
    """The server-side chat conversations table."""
    return services.conversation_table()


def feedback_table_dep() -> FeedbackTable:
    """The feedback table (ratings of answers and hits)."""
    return services.feedback_table()


def key_verifier_dep() -> KeyVerifier:
    """What turns a presented key into a principal (with its cache of verified keys)."""
    return services.key_verifier()


def rate_limiter_dep() -> RateLimiter:
    """The per-key rate limiter."""
    return services.rate_limiter()


def api_stage(request: Request) -> tuple[str, str] | None:
    """The API Gateway (apiId, stage) serving the request, from Mangum's Lambda event; None locally."""
    event = request.scope.get("aws.event") or {}
    context = event.get("requestContext") or {}
    api_id, stage = context.get("apiId"), context.get("stage")
    return (api_id, stage) if api_id and stage else None


@dataclass(frozen=True)
class Gateway:
    """API Gateway's copies of the keys, as seen from the request: none when not on AWS."""

    stage: tuple[str, str] | None
    usage_plan_id: str | None

    def mirror(self) -> GatewayKeys | None:
        """Where a new key is mirrored (its usage plan resolved), or None; raises GatewayMirrorError."""
        return services.gateway_keys(self.stage)

    def disabler(self) -> GatewayKeys | None:
        """What disables a revoked key's gateway copy (no usage plan needed), or None off AWS."""
        if self.stage is None and self.usage_plan_id is None:
            return None
        return services.gateway_disabler()


def gateway_dep(request: Request, settings: Annotated[Settings, Depends(settings_dep)]) -> Gateway:
    """API Gateway's key copies for the stage serving the request."""
    return Gateway(api_stage(request), settings.api_usage_plan_id)


Documents = Annotated[DocumentTable, Depends(document_table_dep)]
Chunks = Annotated[ChunkStore, Depends(chunk_store_dep)]
Search = Annotated[Searcher, Depends(searcher_dep)]
CollectionSettingsDep = Annotated[CollectionSettingsStore, Depends(collection_settings_dep)]
Feedback = Annotated[FeedbackTable, Depends(feedback_table_dep)]
Audit = Annotated[AuditLog, Depends(audit_log_dep)]
Keys = Annotated[KeyTable, Depends(key_table_dep)]
Conversations = Annotated[ConversationTable, Depends(conversation_table_dep)]
Verifier = Annotated[KeyVerifier, Depends(key_verifier_dep)]
Limiter = Annotated[RateLimiter, Depends(rate_limiter_dep)]
GatewayDep = Annotated[Gateway, Depends(gateway_dep)]


def principal_dep(
    api_key: Annotated[str | None, Security(api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_token)],
    verifier: Verifier,
    limiter: Limiter,
) -> Principal:
    """The verified key of the request, after its rate limit; 401, 429 or 503 otherwise."""
    key = api_key or (bearer.credentials if bearer is not None else None)
    try:
        principal = verifier.verify(key)
        wait = limiter.check(principal.key_id, principal.rate_limit_per_s, principal.rate_limit_burst)
    except UnauthenticatedError as error:
        emit_metric(MetricName.AUTH_FAILURES, 1)
        raise HTTPException(401, str(error), headers=CHALLENGE) from error
    except TransientError as error:
        raise HTTPException(503, "the key store is busy; retry", headers={"Retry-After": "1"}) from error
    if wait > 0:
        emit_metric(MetricName.RATE_LIMITED, 1)
        raise HTTPException(
            429,
            f"rate limit of key {principal.key_id} exceeded",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return principal


def require(role: Role) -> Callable[..., Principal]:
    """A dependency that lets through keys holding `role` on the path's collection (if it names one)."""

    def dependency(request: Request, principal: Annotated[Principal, Depends(principal_dep)]) -> Principal:
        try:
            authorize(principal, request.path_params.get("collection"), role)
        except ForbiddenError as error:
            emit_metric(MetricName.AUTH_FAILURES, 1)
            raise HTTPException(403, str(error)) from error
        return principal

    dependency.__name__ = f"require_{role.value}"
    return dependency


_require_read, _require_write, _require_admin = require(Role.READ), require(Role.WRITE), require(Role.ADMIN)
# For a route's `dependencies=[...]` when the route does not need the principal itself.
READ_ACCESS, WRITE_ACCESS = Depends(_require_read), Depends(_require_write)
ReadKey = Annotated[Principal, Depends(_require_read)]
WriteKey = Annotated[Principal, Depends(_require_write)]
AdminKey = Annotated[Principal, Depends(_require_admin)]
AnyKey = Annotated[Principal, Depends(principal_dep)]
