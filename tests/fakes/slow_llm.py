"""A fake OpenAI-compatible provider that streams its answer slowly, word by word, over 127.0.0.1.

It records how many words it wrote for each request and whether the client went away before the
end (the socket write failed or the connection closed): what a cancelled provider request looks like.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Served:
    """One streamed completion: words written, and whether the client hung up first."""

    words_sent: int = 0
    words_total: int = 0
    disconnected: bool = False
    finished: bool = False


class SlowLLM:
    """`with SlowLLM(text, delay_s) as llm: llm.base_url` (ends in /v1)."""

    def __init__(self, text: str, delay_s: float = 0.05) -> None:
        self.text = text
        self.delay_s = delay_s
        self.served: list[Served] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> SlowLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                data = json.dumps({"object": "list", "data": [{"id": "slow", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                words = llm.text.split(" ")
                if not body.get("stream"):
                    self._json(
                        {"choices": [{"index": 0, "message": {"role": "assistant", "content": llm.text}}]}
                    )
                    return
                served = Served(words_total=len(words))
                llm.served.append(served)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for i, word in enumerate(words):
                        piece = word if i == 0 else " " + word
                        self._event({"choices": [{"index": 0, "delta": {"content": piece}}]})
                        served.words_sent += 1
                        time.sleep(llm.delay_s)
                    self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                    served.finished = True
                except (BrokenPipeError, ConnectionResetError):
                    served.disconnected = True

            def _json(self, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _event(self, payload: dict[str, Any]) -> None:
                payload = {
                    "id": "chatcmpl-slow",
                    "object": "chat.completion.chunk",
                    "model": "slow",
                    **payload,
                }
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

        return Handler
