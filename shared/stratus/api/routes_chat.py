"""Chat routes: POST /v1/collections/{collection}/chat (JSON or Server-Sent Events) and the
OpenAI-compatible POST /v1/chat/completions."""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from stratus import services
from stratus.api.deps import (
    AUTH_RESPONSES,
    READ_ACCESS,
    AnyKey,
    CollectionName,
    ErrorBody,
    ReadKey,
    error_response,
    settings_dep,
)
from stratus.api.streaming import ClosingEventStream, sse_events
from stratus.auth import ForbiddenError, Role, authorize
from stratus.chat.errors import FailureKind, NoProviderError, ProviderError
from stratus.chat.models import ChatMessage, ChatRequest, ChatResponse, OpenAIChatRequest
from stratus.chat.router import ProviderNotAllowedError
from stratus.settings import Settings

router = APIRouter(tags=["chat"], responses=AUTH_RESPONSES)

_COLLECTION = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ChatHTTPError(Exception):
    """A chat failure with its HTTP status, message and extra body fields."""

    def __init__(self, status: int, message: str, code: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra or {}
        self.headers: dict[str, str] = {}


def _http_error(error: Exception, collection: str) -> ChatHTTPError:
    """The HTTP form of a failure before or during generation."""
    from stratus.filters import FilterError
    from stratus.search import CollectionNotFoundError

    if isinstance(error, CollectionNotFoundError):
        return ChatHTTPError(404, f"collection {collection!r} does not exist", "collection_not_found")
    if isinstance(error, FilterError):
        return ChatHTTPError(422, str(error), "invalid_filter")
    if isinstance(error, ProviderNotAllowedError):
        return ChatHTTPError(400, str(error), "provider_not_allowed")
    if isinstance(error, ProviderError):
        extra = {"provider": error.provider, "kind": error.kind.value}
        if error.kind is FailureKind.CONTEXT_LENGTH:
            message = (
                f"the prompt is too long for provider {error.provider}: send fewer or shorter messages "
                f"or a smaller top_k ({error.message})"
            )
            return ChatHTTPError(400, message, "context_length_exceeded", extra)
        if error.kind is FailureKind.AUTH:
            return ChatHTTPError(
                502,
                f"provider {error.provider} rejected Stratus' credentials ({error.reason()})",
                "provider_auth",
                extra,
            )
        return ChatHTTPError(
            502, f"provider {error.provider} refused the request ({error.reason()})", "provider_error", extra
        )
    if isinstance(error, NoProviderError):
        failure = ChatHTTPError(503, str(error), "no_provider_available")
        if error.retry_after_s is not None:
            failure.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
        return failure
    raise error


def _sse(name: str | None, data: Any) -> str:
    head = f"event: {name}\n" if name else ""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"{head}data: {payload}\n\n"


# --- native chat ---------------------------------------------------------------------------------


@router.post(
    "/v1/collections/{collection}/chat",
    response_model=ChatResponse,
    dependencies=[READ_ACCESS],
    responses={
        200: {
            "description": "the answer (JSON), or with stream: true a text/event-stream of retrieval, "
            "delta, citations and done events (error on failure)"
        },
        400: error_response(
            "provider not allowed, the prompt exceeds the provider's context window, or the body is not JSON"
        ),
        404: error_response("unknown collection"),
        422: error_response("invalid request or filter; detail names the field"),
        502: error_response("the provider refused the request (credentials, validation)"),
        503: error_response("no provider could answer (Retry-After when known)"),
    },
)
def chat(
    collection: CollectionName,
    body: ChatRequest,
    settings: Annotated[Settings, Depends(settings_dep)],
    principal: ReadKey,
) -> Response:
    """Answer the conversation's last question from the collection, with numbered citations."""
    from stratus.chat.service import get_chat_service
    from stratus.console import conversations

    service = get_chat_service()
    try:
        if body.conversation_id is not None:
            body, _ = conversations.with_history(
                services.conversation_table(), body, collection, principal.key_id
            )
        prepared = service.prepare(body, collection)
        if body.stream:
            named = service.events(prepared)
            if body.conversation_id is not None:
                named = conversations.remembering(named, body, collection, principal.key_id, settings)
            return ClosingEventStream(sse_events(named, _sse), headers=SSE_HEADERS)
        answer = service.respond(prepared).model_dump()
        if body.conversation_id is not None:
            conversations.remember(
                services.conversation_table(),
                body,
                collection,
                principal.key_id,
                answer["answer"],
                settings.conversation_ttl_s,
                settings.conversation_max_messages,
            )
            answer["conversation_id"] = body.conversation_id
        return JSONResponse(answer)
    except conversations.ConversationNotFoundError:
        return JSONResponse(
            {
                "detail": f"conversation_id: no conversation {body.conversation_id!r} "
                f"of this key in {collection!r}",
                "code": "conversation_not_found",
            },
            status_code=404,
        )
    except Exception as error:
        failure = _http_error(error, collection)
        return JSONResponse(
            {"detail": failure.message, "code": failure.code, **failure.extra},
            status_code=failure.status,
            headers=failure.headers,
        )


# --- OpenAI-compatible ---------------------------------------------------------------------------


class OpenAIErrorDetail(BaseModel):
    """The error object of an OpenAI-style error answer."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """An error answer in the shape OpenAI clients parse."""

    error: OpenAIErrorDetail


def openai_error_response(description: str) -> dict[str, Any]:
    """An OpenAPI `responses` entry for an OpenAI-shaped error answer."""
    return {"description": description, "model": OpenAIError}


def _openai_error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "api_error"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status_code=status,
        headers=headers,
    )


def collection_of(model: str, settings: Settings) -> str:
    """stratus/<collection> names the collection; any other model name means the default collection."""
    if model.startswith("stratus/"):
        return model.removeprefix("stratus/")
    return settings.chat_default_collection


@router.post(
    "/v1/chat/completions",
    responses={
        200: {"description": "an OpenAI chat.completion, or chat.completion.chunk events ending in [DONE]"},
        400: {
            "description": "invalid request (OpenAI error shape), or a body that is not JSON (detail)",
            "model": OpenAIError | ErrorBody,
        },
        403: openai_error_response("the key may not read the model's collection (OpenAI error shape)"),
        404: openai_error_response("unknown collection (model stratus/<collection>)"),
        502: openai_error_response("the provider refused the request (credentials, validation)"),
        503: openai_error_response("no provider could answer (Retry-After when known)"),
    },
)
def chat_completions(
    body: OpenAIChatRequest,
    principal: AnyKey,
    settings: Annotated[Settings, Depends(settings_dep)],
) -> Response:
    """OpenAI-compatible chat over a collection: model `stratus/<collection>` (or the default collection)."""
    from stratus.chat.service import get_chat_service

    collection = collection_of(body.model, settings)
    if not _COLLECTION.match(collection):
        return _openai_error(404, f"model {body.model!r}: invalid collection name", "model_not_found")
    try:
        authorize(principal, collection, Role.READ)
    except ForbiddenError as error:
        return _openai_error(403, str(error), "permission_denied")
    try:
        messages = [
            ChatMessage(role=m.role, content=m.text())
            for m in body.messages
            if m.role in ("user", "assistant") and m.text().strip()
        ]
        request = ChatRequest(
            messages=messages,
            stream=body.stream,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            temperature=body.temperature,
        )
    except ValidationError as error:
        first = error.errors()[0]
        return _openai_error(400, f"messages: {first.get('msg', 'invalid')}", "invalid_messages")
    service = get_chat_service()
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    try:
        prepared = service.prepare(request, collection)
        if body.stream:
            chunks = _openai_chunks(service.events(prepared), completion_id, created, body.model)
            return ClosingEventStream(chunks, headers=SSE_HEADERS)
        answer = service.respond(prepared)
    except Exception as error:
        failure = _http_error(error, collection)
        code = "model_not_found" if failure.status == 404 else failure.code
        return _openai_error(failure.status, failure.message, code, failure.headers)
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.answer},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": answer.usage.prompt_tokens,
                "completion_tokens": answer.usage.completion_tokens,
                "total_tokens": answer.usage.total_tokens,
            },
            "citations": [c.model_dump() for c in answer.citations],
            "stratus": _extension(answer.model_dump()),
        }
    )


def _extension(done: dict[str, Any]) -> dict[str, Any]:
    """Stratus' own fields of an answer, carried beside OpenAI's."""
    keys = ("provider", "model", "fallbacks", "timings", "query", "query_rewrite", "refused", "usage")
    return {k: done[k] for k in keys if k in done}


def _openai_chunks(
    events: Iterator[tuple[str, dict[str, Any]]], completion_id: str, created: int, model: str
) -> Iterator[str]:
    """OpenAI chat.completion.chunk events for Stratus' chat events, then data: [DONE]."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return _sse(None, body)

    yield chunk({"role": "assistant", "content": ""})
    citations: list[Any] = []
    for name, data in events:
        if name == "delta":
            yield chunk({"content": data["text"]})
        elif name == "citations":
            citations = data["citations"]
        elif name == "done":
            usage = data.get("usage", {})
            yield chunk(
                {},
                "stop",
                usage={
                    "prompt_tokens": usage.get("prompt_tokens", 0),
                    "completion_tokens": usage.get("completion_tokens", 0),
                    "total_tokens": usage.get("total_tokens", 0),
                },
                citations=citations,
                stratus=_extension(data),
            )
        elif name == "error":
            detail = data["error"]
            yield _sse(
                None, {"error": {"message": detail["message"], "type": "api_error", "code": detail["kind"]}}
            )
            return
    yield _sse(None, "[DONE]")
