"""Slow clients over real sockets: each gets a 408 after the body time limit; nobody else waits for them."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from stratus.api.app import create_app
from stratus.settings import Settings
from stratus_tools.local.stack import free_port

pytestmark = pytest.mark.integration

BODY_TIMEOUT_S = 2.0
SLOW_CLIENTS = 20


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    """The API on uvicorn (as `stratus up` serves it) with a 2 s body time limit."""
    port = free_port()
    app = create_app(Settings(api_body_timeout_s=BODY_TIMEOUT_S))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def open_slow_request(url: str) -> socket.socket:
    """A POST that announces 100 bytes of body and sends only its first one."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"POST /v1/collections/docs/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """Status and JSON body of the one response on the socket (the server closes it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_slow_clients_get_408_and_do_not_hold_up_others(api_url: str) -> None:
    # given 20 clients that send their headers and one byte of a 100-byte body, then stall
    started = time.monotonic()
    slow = [open_slow_request(api_url) for _ in range(SLOW_CLIENTS)]

    # when another client asks while they are all connected
    answered = []
    with httpx.Client(base_url=api_url, timeout=5) as client:
        for _ in range(5):
            sent = time.monotonic()
            assert client.get("/health/live").status_code == 200
            answered.append(time.monotonic() - sent)

    # then it is answered at once (well before the stalled bodies time out)
    assert max(answered) < BODY_TIMEOUT_S / 2, answered
    # and every slow client gets a 408 naming the body and the limit, after the limit and not long after
    for sock in slow:
        status, body = read_response(sock)
        assert status == 408
        assert body["detail"] == f"body: not received within {BODY_TIMEOUT_S:g} s"
        sock.close()
    elapsed = time.monotonic() - started
    assert BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + 5, elapsed
