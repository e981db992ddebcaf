"""Answer generators: extractive (offline), any OpenAI-compatible server over httpx, Bedrock Converse.

Every provider turns its failures into `ProviderError` with a `FailureKind` (retryable or not) and a
message from which the API key has been removed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from stratus.chat.errors import FailureKind, ProviderError, classify_status, looks_like_context_length, redact
from stratus.chat.extractive import extractive_answer
from stratus.chat.prompts import render, template

if TYPE_CHECKING:
    import httpx

    from stratus.chat.deadline import Deadline
    from stratus.chat.prompts import LLMRequest
    from stratus.chat.tokens import TokenCounter

ProviderRole = Literal["local", "cloud", "offline"]


@dataclass(frozen=True)
class TokenUsage:
    """Token counts a provider reported."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Delta:
    """A piece of the answer; the last piece of a stream may carry only the provider's usage."""

    text: str
    usage: TokenUsage | None = None
    refused: bool = False


class Provider(Protocol):
    """What the router needs of a provider."""

    name: str
    model: str
    role: ProviderRole
    context_tokens: int

    def generate(self, request: LLMRequest, deadline: Deadline | None = None) -> Delta:
        """The whole answer in one call, within the deadline."""
        ...

    def stream(self, request: LLMRequest, deadline: Deadline | None = None) -> Iterator[Delta]:
        """The answer in pieces, as the provider produces them, within the deadline."""
        ...


# --- extractive ------------------------------------------------------------------------------------


class ExtractiveProvider:
    """No LLM: the most relevant sentences of the prompt's chunks, each cited [n]."""

    role: ProviderRole = "offline"

    def __init__(self, counter: TokenCounter, max_sentences: int, context_tokens: int) -> None:
        self.name = "extractive"
        self.model = "extractive"
        self.counter = counter
        self.max_sentences = max_sentences
        self.context_tokens = context_tokens

    def generate(self, request: LLMRequest, deadline: Deadline | None = None) -> Delta:
        """The stitched answer, or the no-context message when no sentence matches the question."""
        answer = extractive_answer(
            request.question,
            request.chunks,
            self.max_sentences,
            request.max_tokens,
            self.counter.count,
            template("extractive_intro"),
        )
        if answer is None:
            return Delta(render("no_context", collection=request.collection), refused=True)
        return Delta(answer)

    def stream(self, request: LLMRequest, deadline: Deadline | None = None) -> Iterator[Delta]:
        """The same answer, a few words per delta (offline and quick: the deadline does not apply)."""
        whole = self.generate(request)
        words = whole.text.split(" ")
        for i in range(0, len(words), 4):
            piece = " ".join(words[i : i + 4])
            yield Delta(piece if i == 0 else " " + piece, refused=whole.refused)


# --- OpenAI-compatible -----------------------------------------------------------------------------


ANSWER_BASE_BYTES = 64 * 1024
ANSWER_BYTES_PER_TOKEN = 1024  # an SSE chunk per token is ~200-300 bytes of JSON; 4x headroom


def answer_byte_budget(max_tokens: int) -> int:
    """The most bytes read from a provider's answer to a request for `max_tokens` tokens."""
    return ANSWER_BASE_BYTES + ANSWER_BYTES_PER_TOKEN * max(max_tokens, 1)


def parse_usage(provider: str, usage: Any) -> TokenUsage | None:
    """The token counts of an OpenAI `usage` object; ProviderError when it is present but malformed."""
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise ProviderError(provider, FailureKind.SERVER, "malformed usage in the answer")
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name, 0)
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
            raise ProviderError(provider, FailureKind.SERVER, f"malformed usage in the answer ({name})")
        counts.append(value)
    return TokenUsage(counts[0], counts[1])


class OpenAICompatibleProvider:
    """Chat completions of any OpenAI-compatible server (OpenAI, Groq, OpenRouter, vLLM, Ollama /v1).

    Every call reads the answer through `_call`: at most `answer_byte_budget(max_tokens)` bytes,
    within the request's deadline (the socket is shut when it passes or the request is cancelled).
    """

    def __init__(
        self,
        name: str,
        role: ProviderRole,
        base_url: str,
        model: str,
        context_tokens: int,
        api_key: Callable[[], str | None],
        connect_timeout_s: float,
        timeout_s: float,
        max_connections: int = 32,
    ) -> None:
        self.name = name
        self.role = role
        self.base_url = base_url.rstrip("/")
        self.max_connections = max_connections
        self.model = model
        self.context_tokens = context_tokens
        self._api_key = api_key
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._open = 0

    @property
    def open_calls(self) -> int:
        """Provider responses being read now (each holds one pooled connection)."""
        with self._lock:
            return self._open

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                import httpx

                # No keep-alive: each call opens its own connection, whose socket `_Connection` can
                # shut when the client goes away or the deadline passes (a handshake per call is small
                # next to an LLM's answer).
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self._timeout_s, connect=self._connect_timeout_s),
                    limits=httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=0),
                    follow_redirects=False,
                )
            return self._client

    def _key(self) -> str | None:
        try:
            return self._api_key()
        except Exception as error:  # the key store failed: say so without details that could leak
            raise ProviderError(
                self.name, FailureKind.AUTH, f"could not read the API key ({type(error).__name__})"
            ) from None

    def _headers(self, key: str | None) -> dict[str, str]:
        # identity: a compressed answer could expand past the byte budget inside one read
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, request: LLMRequest, stream: bool) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": request.openai_messages(),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": stream,
        }

    def _cut(self, deadline: Deadline | None) -> ProviderError | None:
        """The error of a call that the request itself ended (cancelled, or its deadline passed)."""
        if deadline is not None and deadline.cancelled:
            return ProviderError(
                self.name,
                FailureKind.CONNECTION,
                f"request cancelled ({deadline.reason})",
                blames_provider=False,
            )
        if deadline is not None and deadline.expired():
            return ProviderError(
                self.name, FailureKind.TIMEOUT, "the request's deadline passed", blames_provider=False
            )
        return None

    def _error(self, error: Exception, key: str | None, deadline: Deadline | None) -> ProviderError:
        import httpx

        secrets = [key] if key else []
        cut = self._cut(deadline)
        if cut is not None:
            return cut
        if isinstance(error, httpx.PoolTimeout):  # every connection of ours is busy: not the provider's fault
            return ProviderError(
                self.name, FailureKind.TIMEOUT, "no free connection to the provider", blames_provider=False
            )
        if isinstance(error, httpx.TimeoutException):
            return ProviderError(
                self.name, FailureKind.TIMEOUT, f"{type(error).__name__} after {self._timeout_s}s"
            )
        if isinstance(error, httpx.TransportError):
            return ProviderError(
                self.name, FailureKind.CONNECTION, redact(f"{type(error).__name__}: {error}", secrets)
            )
        return ProviderError(
            self.name, FailureKind.SERVER, redact(f"{type(error).__name__}: {error}", secrets)
        )

    def _status_error(self, response: httpx.Response, body: str, key: str | None) -> ProviderError:
        from stratus.retry_after import parse_retry_after

        message = body
        try:
            data = json.loads(body)
            err = data.get("error", data) if isinstance(data, dict) else data
            if isinstance(err, dict):
                message = str(err.get("message") or err.get("code") or body)
                if str(err.get("code", "")) == "context_length_exceeded":
                    message = f"context_length_exceeded: {message}"
        except ValueError:
            pass
        kind = classify_status(response.status_code, message)
        return ProviderError(
            self.name,
            kind,
            redact(message.strip()[:300] or response.reason_phrase, [key] if key else []),
            status=response.status_code,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        )

    def health(self, timeout_s: float) -> bool:
        """Whether GET <base>/models answers 200 within `timeout_s`."""
        try:
            key = self._api_key()
            response = self._http().get(
                f"{self.base_url}/models", headers=self._headers(key), timeout=timeout_s
            )
        except Exception:
            return False
        return response.status_code == 200

    @contextmanager
    def _call(
        self, request: LLMRequest, stream: bool, key: str | None, deadline: Deadline | None
    ) -> Iterator[Iterator[bytes]]:
        """POST /chat/completions; yields the answer's bytes, bounded by the budget and the deadline."""
        import httpx

        if deadline is not None and deadline.done:
            raise self._error(TimeoutError(), key, deadline)
        remaining = deadline.remaining() if deadline is not None else self._timeout_s
        timeout = httpx.Timeout(
            min(self._timeout_s, remaining), connect=min(self._connect_timeout_s, remaining)
        )
        budget = answer_byte_budget(request.max_tokens)
        connection = _Connection()
        with self._lock:
            self._open += 1
        try:
            with (
                deadline.guard(connection.shut) if deadline is not None else nullcontext(),
                self._http().stream(
                    "POST",
                    f"{self.base_url}/chat/completions",
                    json=self._body(request, stream),
                    headers=self._headers(key),
                    timeout=timeout,
                    extensions={"trace": connection.trace},
                ) as response,
            ):
                if response.status_code != 200:
                    body = b"".join(_bounded(response.iter_raw(), 64 * 1024, None))
                    raise self._status_error(response, body.decode("utf-8", "replace"), key)
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise ProviderError(
                        self.name, FailureKind.SERVER, f"answer sent with content-encoding {encoding}"
                    )
                yield _bounded(response.iter_raw(), budget, self.name)
        except ProviderError:
            raise
        except Exception as error:
            raise self._error(error, key, deadline) from None
        finally:
            with self._lock:
                self._open -= 1

    def generate(self, request: LLMRequest, deadline: Deadline | None = None) -> Delta:
        """POST /chat/completions without streaming."""
        key = self._key()
        with self._call(request, False, key, deadline) as body:
            raw = b"".join(body)
        try:
            data = json.loads(raw)
            text = data["choices"][0]["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            cut = self._cut(deadline)  # a body cut short by the deadline is not malformed
            raise cut or ProviderError(
                self.name, FailureKind.SERVER, "malformed completion response"
            ) from None
        return Delta(str(text), usage=parse_usage(self.name, data.get("usage") or None))

    def stream(self, request: LLMRequest, deadline: Deadline | None = None) -> Iterator[Delta]:
        """POST /chat/completions with stream: true; parses the server's SSE chunks."""
        key = self._key()
        with self._call(request, True, key, deadline) as body:
            done = False
            for data in _sse_data(body):
                if data == "[DONE]":
                    done = True
                    break
                try:
                    delta = self._chunk_delta(data, key)
                except ProviderError as error:  # a chunk cut short by the deadline is not malformed
                    raise self._cut(deadline) or error from None
                if delta is not None:
                    yield delta
            if not done:
                cut = self._cut(deadline)
                raise cut or ProviderError(self.name, FailureKind.CONNECTION, "stream ended before [DONE]")

    def _chunk_delta(self, data: str, key: str | None) -> Delta | None:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ProviderError(self.name, FailureKind.SERVER, "malformed stream chunk") from None
        if not isinstance(chunk, dict):
            return None
        if "error" in chunk:
            err = chunk["error"]
            message = str(err.get("message", err) if isinstance(err, dict) else err)
            kind = FailureKind.CONTEXT_LENGTH if looks_like_context_length(message) else FailureKind.SERVER
            raise ProviderError(self.name, kind, redact(message[:300], [key] if key else []))
        reported = parse_usage(self.name, chunk.get("usage"))
        text = ""
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise ProviderError(self.name, FailureKind.SERVER, "malformed stream chunk (choices)")
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            text += str(content or "")
        if not text and reported is None:
            return None
        return Delta(text, usage=reported)


class _Connection:
    """The socket of one provider call, learnt from httpcore's trace; `shut` may come from any thread.

    Shutting the socket wakes the thread blocked reading it (connecting, waiting for headers, or
    reading a trickle) with an error, and that thread then closes the response. Each call has its own
    connection (no keep-alive, see `_http`), so shutting it never touches another request's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: Any = None
        self._shut = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: keep the network stream of the connection this call opened."""
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._socket = sock
            shut = self._shut
        if shut:
            self._shutdown(sock)

    def shut(self) -> None:
        """Shut the socket now (or as soon as it is connected)."""
        with self._lock:
            self._shut = True
            sock = self._socket
        self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: Any) -> None:
        import socket

        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _bounded(chunks: Iterable[bytes], budget: int, provider: str | None) -> Iterator[bytes]:
    """The chunks while their total stays within `budget`; past it, ProviderError (or a stop, unnamed)."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > budget:
            if provider is None:
                yield chunk[: budget - (total - len(chunk))]
                return
            raise ProviderError(provider, FailureKind.SERVER, f"answer larger than {budget} bytes")
        yield chunk


def _sse_data(body: Iterable[bytes]) -> Iterator[str]:
    """The data of each Server-Sent Event of a byte stream, read by httpx-sse (empty events skipped).

    httpx-sse reads a response: the bounded, deadline-cut body of `_call` is handed to it as the
    content of one, so its line and event decoders never read past our budget.
    """
    import httpx
    from httpx_sse import EventSource

    events = httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=body)
    for event in EventSource(events).iter_sse():
        if event.data:
            yield event.data


# --- Bedrock ---------------------------------------------------------------------------------------

_BEDROCK_RETRYABLE = {
    "ThrottlingException": FailureKind.RATE_LIMITED,
    "ServiceUnavailableException": FailureKind.SERVER,
    "InternalServerException": FailureKind.SERVER,
    "ModelNotReadyException": FailureKind.SERVER,
    "ModelStreamErrorException": FailureKind.SERVER,
    "ModelTimeoutException": FailureKind.TIMEOUT,
    "ModelErrorException": FailureKind.SERVER,
}
_BEDROCK_AUTH = {"AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException"}
_STREAM_ERRORS = {
    "internalServerException": "InternalServerException",
    "modelStreamErrorException": "ModelStreamErrorException",
    "validationException": "ValidationException",
    "throttlingException": "ThrottlingException",
    "serviceUnavailableException": "ServiceUnavailableException",
}


def bedrock_failure(provider: str, code: str, message: str, status: int | None) -> ProviderError:
    """The ProviderError of a Bedrock error code."""
    if code in _BEDROCK_RETRYABLE:
        kind = _BEDROCK_RETRYABLE[code]
    elif code in _BEDROCK_AUTH:
        kind = FailureKind.AUTH
    elif looks_like_context_length(message):
        kind = FailureKind.CONTEXT_LENGTH
    else:
        kind = FailureKind.VALIDATION
    return ProviderError(provider, kind, f"{code}: {redact(message)[:280]}", status=status)


def converse_messages(messages: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Converse messages: start with a user turn, alternate roles (consecutive turns merged)."""
    out: list[dict[str, Any]] = []
    for role, content in messages:
        if role not in ("user", "assistant") or (not out and role != "user") or not content:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"][0]["text"] += "\n\n" + content
        else:
            out.append({"role": role, "content": [{"text": content}]})
    return out


def parse_converse_stream(provider: str, events: Iterable[dict[str, Any]]) -> Iterator[Delta]:
    """Deltas of a ConverseStream event stream (text deltas, then usage from the metadata event)."""
    for event in events:
        for key, code in _STREAM_ERRORS.items():
            if key in event:
                raise bedrock_failure(provider, code, str(event[key].get("message", "")), None)
        if "contentBlockDelta" in event:
            text = event["contentBlockDelta"].get("delta", {}).get("text")
            if text:
                yield Delta(str(text))
        elif "metadata" in event:
            usage = event["metadata"].get("usage") or None
            if isinstance(usage, dict):
                usage = {
                    "prompt_tokens": usage.get("inputTokens", 0),
                    "completion_tokens": usage.get("outputTokens", 0),
                }
            if usage is not None:
                yield Delta("", usage=parse_usage(provider, usage))


class BedrockProvider:
    """Bedrock Converse / ConverseStream through boto3 (client injectable for tests)."""

    role: ProviderRole = "cloud"

    def __init__(self, model_id: str, context_tokens: int, client: Callable[[], Any]) -> None:
        self.name = "bedrock"
        self.model = model_id
        self.context_tokens = context_tokens
        self._client = client

    def _params(self, request: LLMRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "modelId": self.model,
            "messages": converse_messages(request.messages),
            "inferenceConfig": {"maxTokens": request.max_tokens, "temperature": request.temperature},
        }
        if request.system:
            params["system"] = [{"text": request.system}]
        return params

    def _error(self, error: Exception) -> ProviderError:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            ReadTimeoutError,
        )
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )

        if isinstance(error, ClientError):
            info = error.response.get("Error", {})
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return bedrock_failure(self.name, str(info.get("Code", "")), str(info.get("Message", "")), status)
        if isinstance(error, ReadTimeoutError | ConnectTimeoutError):
            return ProviderError(self.name, FailureKind.TIMEOUT, type(error).__name__)
        if isinstance(error, BotoConnectionError):
            return ProviderError(self.name, FailureKind.CONNECTION, type(error).__name__)
        return ProviderError(self.name, FailureKind.SERVER, redact(f"{type(error).__name__}: {error}")[:300])

    def generate(self, request: LLMRequest, deadline: Deadline | None = None) -> Delta:
        """One Converse call (boto3's read timeout bounds it; the deadline is checked before)."""
        if deadline is not None and deadline.done:
            raise ProviderError(self.name, FailureKind.TIMEOUT, "the request's deadline passed")
        try:
            response = self._client().converse(**self._params(request))
        except Exception as error:
            raise self._error(error) from None
        blocks = response.get("output", {}).get("message", {}).get("content", [])
        text = "".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict))
        usage = response.get("usage") or None
        if isinstance(usage, dict):
            usage = {
                "prompt_tokens": usage.get("inputTokens", 0),
                "completion_tokens": usage.get("outputTokens", 0),
            }
        return Delta(text, usage=parse_usage(self.name, usage))

    def stream(self, request: LLMRequest, deadline: Deadline | None = None) -> Iterator[Delta]:
        """One ConverseStream call, parsed by `parse_converse_stream`; closed at the deadline or a cancel."""
        if deadline is not None and deadline.done:
            raise ProviderError(self.name, FailureKind.TIMEOUT, "the request's deadline passed")
        try:
            response = self._client().converse_stream(**self._params(request))
            events = response["stream"]
            close = getattr(events, "close", None)
            with deadline.guard(close) if deadline is not None and callable(close) else nullcontext():
                for delta in parse_converse_stream(self.name, events):
                    if deadline is not None and deadline.done:
                        raise ProviderError(self.name, FailureKind.TIMEOUT, "the request's deadline passed")
                    yield delta
        except ProviderError:
            raise
        except Exception as error:
            raise self._error(error) from None


def bedrock_client(region: str, connect_timeout_s: float, timeout_s: float) -> Any:
    """A bedrock-runtime client that does not retry by itself (the router falls back instead)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=timeout_s,
        retries={"max_attempts": 1, "mode": "standard"},
    )
    return boto3.client("bedrock-runtime", region_name=region, config=config)
