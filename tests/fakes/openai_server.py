"""A scriptable fake OpenAI-compatible server (chat completions, streaming, models) on 127.0.0.1.

Each request to /v1/chat/completions takes the next scripted `Step` (or the default): an answer
(its `usage` replaceable by anything, its text computed from the request by `respond`, padded to
`size` bytes), an HTTP error with headers (429 + Retry-After, 500, 401 echoing the key, a
context-length 400), an error or a dropped connection after the first streamed token, a hang before
or after the first token, or a trickle (the answer one byte, or one streamed piece, per `trickle_s`).
Requests are recorded with the time the server saw the client close the connection (while hanging
or trickling); `open_connections` counts connections the server still holds.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

StepKind = Literal[
    "answer", "status", "error_after_first", "drop_after_first", "hang", "hang_after_first", "trickle"
]
COMPUTED = object()  # Step.usage default: counts computed from the request


@dataclass
class Step:
    """What the fake does with one chat completion request."""

    kind: StepKind = "answer"
    text: str = "The answer is in the documents [1]."
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 30.0
    echo_key: bool = False  # put the caller's bearer key into the error body (as some providers do)
    usage: Any = COMPUTED  # the answer's `usage` field as sent (any JSON value; None leaves it out)
    respond: Callable[[dict[str, Any]], str] | None = None  # the answer's text from the request body
    size: int = 0  # pad the answer's text to this many bytes
    trickle_s: float = 0.0  # trickle: seconds between bytes (non-streaming) or pieces (streaming)


def answer(text: str) -> Step:
    return Step("answer", text=text)


def status(
    http_status: int, message: str = "error", headers: dict[str, str] | None = None, **kw: Any
) -> Step:
    return Step(
        "status", status=http_status, body={"error": {"message": message, **kw}}, headers=headers or {}
    )


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    started_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None  # when the server saw the client close (hang and trickle steps)
    finished_at: float | None = None  # when the server was done with the request


class FakeOpenAI:
    """The fake server; `with FakeOpenAI() as fake: fake.base_url` (ends in /v1)."""

    def __init__(self, model: str = "fake-model") -> None:
        self.model = model
        self.steps: deque[Step] = deque()
        self.default = Step()
        self.requests: list[Recorded] = []
        self.healthy = True
        self.release = threading.Event()  # ends every hang (teardown)
        self.open_connections = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True, name="fake-openai"
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, *steps: Step) -> FakeOpenAI:
        with self._lock:
            self.steps.extend(steps)
        return self

    def completions(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def _next(self) -> Step:
        with self._lock:
            return self.steps.popleft() if self.steps else self.default

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def setup(self) -> None:
                with fake._lock:
                    fake.open_connections += 1
                super().setup()

            def finish(self) -> None:
                with contextlib.suppress(OSError):
                    super().finish()
                with fake._lock:
                    fake.open_connections -= 1

            def _client_closed(self) -> bool:
                readable, _, _ = select.select([self.connection], [], [], 0)
                if not readable:
                    return False
                try:
                    return self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _hang(self, seconds: float, recorded: Recorded) -> None:
                """Wait `seconds` (or the teardown), noting when the client closes the connection."""
                ends = time.monotonic() + seconds
                while time.monotonic() < ends and not fake.release.is_set():
                    if self._client_closed():
                        recorded.closed_at = time.monotonic()
                        return
                    time.sleep(0.01)

            def _write(self, data: bytes, recorded: Recorded) -> bool:
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                except OSError:
                    recorded.closed_at = recorded.closed_at or time.monotonic()
                    return False
                return True

            def _send_json(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.requests.append(Recorded(self.path, dict(self.headers), None))
                if self.path.endswith("/models") and fake.healthy:
                    self._send_json(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
                else:
                    self._send_json(503, {"error": {"message": "unavailable"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                recorded = Recorded(self.path, dict(self.headers), body)
                fake.requests.append(recorded)
                try:
                    self._answer(fake._next(), body, recorded)
                except OSError:  # the client went away while we answered
                    recorded.closed_at = recorded.closed_at or time.monotonic()
                finally:
                    recorded.finished_at = time.monotonic()

            def _answer(self, step: Step, body: dict[str, Any], recorded: Recorded) -> None:
                if step.kind == "hang":
                    self._hang(step.hang_s, recorded)
                    return
                if step.kind == "status":
                    payload = step.body
                    if step.echo_key:
                        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                        payload = {
                            "error": {
                                "message": f"Incorrect API key provided: {key}",
                                "code": "invalid_api_key",
                            }
                        }
                    self._send_json(step.status, payload, step.headers)
                    return
                text = step.respond(body) if step.respond is not None else step.text
                if step.size > len(text):
                    text += " " + "x" * (step.size - len(text) - 1)
                if not body.get("stream"):
                    payload = completion(fake.model, text, body)
                    if step.usage is None:
                        payload.pop("usage")
                    elif step.usage is not COMPUTED:
                        payload["usage"] = step.usage
                    if step.kind != "trickle":
                        self._send_json(200, payload)
                        return
                    data = json.dumps(payload).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for i in range(len(data)):
                        if not self._write(data[i : i + 1], recorded):
                            return
                        time.sleep(step.trickle_s)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                pieces = split_words(text) if step.size == 0 else chunked(text, 1024)
                self._event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
                for i, piece in enumerate(pieces):
                    if not self._event(
                        {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]},
                        recorded,
                    ):
                        return
                    if step.kind == "trickle":
                        time.sleep(step.trickle_s)
                    if i == 0 and step.kind == "hang_after_first":
                        self._hang(step.hang_s, recorded)
                        return
                    if i == 0 and step.kind == "error_after_first":
                        time.sleep(0.05)
                        self._event({"error": {"message": "internal server error", "code": 500}})
                        return
                    if i == 0 and step.kind == "drop_after_first":
                        self.wfile.flush()
                        self.close_connection = True
                        return
                last: dict[str, Any] = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                if step.usage is not COMPUTED and step.usage is not None:
                    last["usage"] = step.usage
                if self._event(last, recorded):
                    self._write(b"data: [DONE]\n\n", recorded)

            def _event(self, payload: dict[str, Any], recorded: Recorded | None = None) -> bool:
                payload = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "model": fake.model,
                    **payload,
                }
                data = f"data: {json.dumps(payload)}\n\n".encode()
                if recorded is None:
                    self.wfile.write(data)
                    self.wfile.flush()
                    return True
                return self._write(data, recorded)

        return Handler


def chunked(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def split_words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def completion(model: str, text: str, request: dict[str, Any]) -> dict[str, Any]:
    prompt_chars = sum(len(str(m.get("content", ""))) for m in request.get("messages", []))
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_chars // 4,
            "completion_tokens": len(text.split()),
            "total_tokens": 0,
        },
    }
