"""A scriptable fake OpenAI-compatible server (chat completions, streaming, models) on 127.0.0.1.

Each request to /v1/chat/completions takes the next scripted `Step` (or the default): an answer,
an HTTP error with headers (429 + Retry-After, 500, 401 echoing the key, a context-length 400),
an error or a dropped connection after the first streamed token, or a hang. Requests are recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

StepKind = Literal["answer", "status", "error_after_first", "drop_after_first", "hang"]


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


class FakeOpenAI:
    """The fake server; `with FakeOpenAI() as fake: fake.base_url` (ends in /v1)."""

    def __init__(self, model: str = "fake-model") -> None:
        self.model = model
        self.steps: deque[Step] = deque()
        self.default = Step()
        self.requests: list[Recorded] = []
        self.healthy = True
        self.release = threading.Event()  # ends every hang (teardown)
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
                fake.requests.append(Recorded(self.path, dict(self.headers), body))
                step = fake._next()
                if step.kind == "hang":
                    fake.release.wait(step.hang_s)
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
                if not body.get("stream"):
                    self._send_json(200, completion(fake.model, step.text, body))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                pieces = split_words(step.text)
                self._event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
                for i, piece in enumerate(pieces):
                    self._event(
                        {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    )
                    if i == 0 and step.kind == "error_after_first":
                        time.sleep(0.05)
                        self._event({"error": {"message": "internal server error", "code": 500}})
                        return
                    if i == 0 and step.kind == "drop_after_first":
                        self.wfile.flush()
                        self.close_connection = True
                        return
                self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, payload: dict[str, Any]) -> None:
                payload = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "model": fake.model,
                    **payload,
                }
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

        return Handler


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
