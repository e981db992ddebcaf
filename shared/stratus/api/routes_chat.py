"""Chat routes: POST /v1/collections/{collection}/chat (JSON or Server-Sent Events) and the
OpenAI-compatible POST /v1/chat/completions."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from stratus.access.auth import ForbiddenError, Principal, Role, authorize
from stratus.api.deps import (
    AUTH_RESPONSES,
    AnyKey,
    CollectionName,
    Conversations,
    ErrorBody,
    ReadKey,
    error_response,
    settings_dep,
)
from stratus.chat.errors import FailureKind, NoProviderError, ProviderError
from stratus.chat.models import ChatMessage, ChatRequest, ChatResponse, OpenAIChatRequest
from stratus.chat.router import ProviderNotAllowedError
from stratus.models import COLLECTION_PATTERN
from stratus.settings import Settings

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from stratus.chat.deadline import Deadline
    from stratus.chat.service import ChatService

router = APIRouter(tags=["chat"], responses=AUTH_RESPONSES)

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
    from stratus.retrieval.filters import FilterError
    from stratus.retrieval.search import CollectionNotFoundError

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
        if error.retry_after_s is not None and math.isfinite(error.retry_after_s):
            failure.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
        return failure
    raise error


class _Pump:
    """A sync event generator stepped from worker threads; `close` waits for a step in progress."""

    def __init__(self, events: Iterator[str]) -> None:
        self._events = events
        self._lock = threading.Lock()
        self._closed = False

    def step(self) -> str | None:
        with self._lock:
            if self._closed:
                return None
            return next(self._events, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            close = getattr(self._events, "close", None)
            if callable(close):
                close()


class ChatStream(Response):
    """Server-Sent Events from a sync event generator that stops when the client goes away.

    Starlette's StreamingResponse notices a disconnect but leaves a sync generator to the garbage
    collector, with its provider connection open and its breaker probe held. Here a disconnect
    cancels the request's deadline (which shuts the provider socket at once, even mid-read), then the
    generator is closed (its `finally` blocks release the probe) and `on_close` runs, on every exit.
    """

    media_type = "text/event-stream"

    def __init__(self, events: Iterator[str], deadline: Deadline, on_close: Callable[[], None]) -> None:
        self.events = events
        self.deadline = deadline
        self.on_close = on_close
        self.status_code = 200
        self.background = None
        self.init_headers(SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = _Pump(self.events)
        try:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    self.deadline.cancel("the client went away")
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
                while (item := await anyio.to_thread.run_sync(pump.step, abandon_on_cancel=True)) is not None:
                    await send({"type": "http.response.body", "body": item.encode(), "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client went away while we wrote
        finally:
            self.deadline.cancel("the stream ended")
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pump.close)
            self.on_close()


def _stream(
    service: ChatService,
    principal: Principal,
    deadline: Deadline,
    events: Iterator[str],
    openai_shape: bool = False,
) -> Response:
    """The SSE response, or 429 when the key already holds its share of concurrent streams."""
    if not service.streams.acquire(principal.key_id):
        _close(events)
        message = f"key {principal.key_id} already has {service.streams.per_key} chat streams open"
        headers = {"Retry-After": "1"}
        if openai_shape:
            return _openai_error(429, message, "too_many_streams", headers)
        return JSONResponse({"detail": message, "code": "too_many_streams"}, status_code=429, headers=headers)
    return ChatStream(events, deadline, lambda: service.streams.release(principal.key_id))


def _close(events: Iterator[Any]) -> None:
    close = getattr(events, "close", None)
    if callable(close):
        close()


def _sse_events(events: Iterator[tuple[str, dict[str, Any]]]) -> Generator[str, None, None]:
    """Stratus' chat events as SSE text; closing this closes `events`."""
    try:
        for name, data in events:
            yield _sse(name, data)
    finally:
        _close(events)


def _sse(name: str | None, data: Any) -> str:
    head = f"event: {name}\n" if name else ""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"{head}data: {payload}\n\n"


# --- native chat ---------------------------------------------------------------------------------


@router.post(
    "/v1/collections/{collection}/chat",
    response_model=ChatResponse,
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
        429: error_response("the key's rate limit, or its concurrent chat streams, exceeded (Retry-After)"),
        502: error_response("the provider refused the request (credentials, validation)"),
        503: error_response("no provider could answer (Retry-After when known)"),
    },
)
def chat(
    collection: CollectionName,
    body: ChatRequest,
    settings: Annotated[Settings, Depends(settings_dep)],
    principal: ReadKey,
    request: Request,
    history: Conversations,
) -> Response:
    """Answer the conversation's last question from the collection, with numbered citations."""
    from stratus.chat.service import get_chat_service
    from stratus.console import conversations

    service = get_chat_service()
    deadline = service.deadline(request.scope)
    try:
        if body.conversation_id is not None:
            body, _ = conversations.with_history(history, body, collection, principal.key_id)
        prepared = service.prepare(body, collection, deadline)
        if body.stream:
            named: Iterator[tuple[str, dict[str, Any]]] = service.events(prepared)
            if body.conversation_id is not None:
                named = conversations.remembering(named, body, collection, principal.key_id, settings)
            return _stream(service, principal, deadline, _sse_events(named))
        answer = service.respond(prepared).model_dump()
        if body.conversation_id is not None:
            conversations.remember(
                history,
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
        429: {
            "description": "the key's rate limit (detail), or its concurrent chat streams (OpenAI error "
            "shape), exceeded; Retry-After",
            "model": OpenAIError | ErrorBody,
        },
        404: openai_error_response("unknown collection (model stratus/<collection>)"),
        502: openai_error_response("the provider refused the request (credentials, validation)"),
        503: openai_error_response("no provider could answer (Retry-After when known)"),
    },
)
def chat_completions(
    body: OpenAIChatRequest,
    principal: AnyKey,
    settings: Annotated[Settings, Depends(settings_dep)],
    http_request: Request,
) -> Response:
    """OpenAI-compatible chat over a collection: model `stratus/<collection>` (or the default collection)."""
    from stratus.chat.service import get_chat_service

    collection = collection_of(body.model, settings)
    if not COLLECTION_PATTERN.fullmatch(collection):
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
    deadline = service.deadline(http_request.scope)
    try:
        prepared = service.prepare(request, collection, deadline)
        if body.stream:
            chunks = _openai_chunks(service.events(prepared), completion_id, created, body.model)
            return _stream(service, principal, deadline, chunks, openai_shape=True)
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

    try:
        yield from _openai_chunks_of(events, chunk)
    finally:
        _close(events)


def _openai_chunks_of(
    events: Iterator[tuple[str, dict[str, Any]]], chunk: Callable[..., str]
) -> Iterator[str]:
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
