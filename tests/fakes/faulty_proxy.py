"""A fault-injecting HTTP reverse proxy on 127.0.0.1 in front of the AWS emulator.

Every request is forwarded to the upstream (bodies streamed through); a request that matches a
`Fault` (method, path pattern) is failed instead: answered with an S3-style 5xx error, or stalled
(the connection is held without an answer, then closed) so the client's read timeout fires. A
fault hits the first `first` matching requests, or a `fraction` of them (seeded, reproducible).
"""

from __future__ import annotations

import http.client
import random
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

FaultKind = Literal["error", "stall"]
HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}
CHUNK = 64 * 1024
ERROR_CODES = {403: b"AccessDenied", 404: b"NoSuchKey", 500: b"InternalError", 503: b"SlowDown"}


@dataclass
class Fault:
    """Which requests fail, and how."""

    method: str
    path: str  # a regular expression searched in the request path (e.g. r"^/bucket/staging/")
    kind: FaultKind = "error"
    status: int = 503
    after: int = 0  # let this many matches through first, then:
    first: int | None = None  # fail the first N matches ...
    fraction: float = 0.0  # ... or this share of them
    stall_s: float = 5.0
    matched: int = 0
    injected: int = 0

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        """Whether the request is one this fault is about."""
        return method == self.method and self._pattern.search(path) is not None


@dataclass
class ProxyLog:
    """What went through the proxy."""

    forwarded: int = 0
    injected: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, method, path)
    writes: list[str] = field(default_factory=list)  # paths of every PUT and DELETE


class FaultyProxy:
    """`with FaultyProxy(upstream) as proxy: proxy.url`; `proxy.inject(Fault(...))`, `proxy.clear()`."""

    def __init__(self, upstream: str, seed: int = 7) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.faults: list[Fault] = []
        self.log = ProxyLog()
        self.release = threading.Event()  # ends every stall at once (clear() and teardown)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True, name="faulty-proxy"
        )

    @property
    def url(self) -> str:
        """The proxy's base URL (what clients use as their endpoint)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def inject(self, *faults: Fault) -> FaultyProxy:
        """Add faults (they apply to requests that start from now on)."""
        with self._lock:
            self.release.clear()
            self.faults.extend(faults)
        return self

    def clear(self) -> None:
        """Remove every fault and end stalls in progress."""
        with self._lock:
            self.faults.clear()
            self.release.set()

    def _decide(self, method: str, path: str) -> Fault | None:
        with self._lock:
            if method in {"PUT", "DELETE"}:
                self.log.writes.append(path)
            for fault in self.faults:
                if not fault.matches(method, path):
                    continue
                fault.matched += 1
                if fault.matched <= fault.after:
                    hit = False
                elif fault.first is not None:
                    hit = fault.injected < fault.first
                else:
                    hit = self._random.random() < fault.fraction
                if hit:
                    fault.injected += 1
                    self.log.injected.append((fault.kind, method, path))
                    return fault
                return None
            self.log.forwarded += 1
            return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _read_body(self) -> bytes | None:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _serve(self) -> None:
                body = self._read_body()
                fault = proxy._decide(self.command, self.path.split("?", 1)[0])
                if fault is not None and fault.kind == "stall":
                    proxy.release.wait(fault.stall_s)
                    self.close_connection = True
                    return
                if fault is not None:
                    payload = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>'
                        + ERROR_CODES.get(fault.status, b"InternalError")
                        + b"</Code><Message>injected fault</Message></Error>"
                    )
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                self._forward(body)

            def _forward(self, body: bytes | None) -> None:
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                    headers.pop("Expect", None)
                    if body is not None:
                        headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    self.send_response_only(response.status, response.reason)
                    length = response.getheader("Content-Length")
                    data = None
                    if length is None and self.command != "HEAD":
                        data = response.read()
                        length = str(len(data))
                    for name, value in response.getheaders():
                        if name.lower() not in HOP_HEADERS and name.lower() != "content-length":
                            self.send_header(name, value)
                    if length is not None:
                        self.send_header("Content-Length", length)
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    if data is not None:
                        self.wfile.write(data)
                        return
                    while chunk := response.read(CHUNK):
                        self.wfile.write(chunk)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

        return Handler

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
