"""URL fetching over real HTTP against a fake outside world this test starts on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stratus.ingest.formats import CONTENT_TYPES as FORMAT_TYPES
from stratus.ingest.urlguard import check_url
from stratus.ingest.web import FetchOptions, FetchResult, fetch_urls, fetch_urls_sync
from stratus.settings import Settings

PUBLIC_V4 = "93.184.216.34"
MAX_BYTES = 1000

Route = Callable[["Handler"], None]


class World(ThreadingHTTPServer):
    """A threaded HTTP server standing in for the internet; it counts what reaches it."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), Handler)
        self.host = host
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.connections = 0
        self.hosts: list[str] = []
        self.user_agents: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def requests(self) -> int:
        return sum(self.hits.values())

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def verify_request(self, request: object, client_address: object) -> bool:
        with self.lock:
            self.connections += 1
        return True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up early are expected here."""

    def __enter__(self) -> World:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: World

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        world = self.server
        path = self.path.split("?", 1)[0]
        with world.lock:
            world.hits[path] += 1
            world.hosts.append(self.headers.get("Host", ""))
            world.user_agents.append(self.headers.get("User-Agent", ""))
            world.in_flight += 1
            world.max_in_flight = max(world.max_in_flight, world.in_flight)
        try:
            route = world.routes.get(path)
            if route is None:
                self.reply(404, "text/plain", b"not found")
            else:
                route(self)
        finally:
            with world.lock:
                world.in_flight -= 1

    def reply(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.reply(302, "text/plain", b"", {"Location": location})


def html(handler: Handler) -> None:
    handler.reply(200, "text/html; charset=utf-8", b"<html><body>hello</body></html>")


def png(handler: Handler) -> None:
    handler.reply(200, "image/png", b"\x89PNG\r\n\x1a\n")


def archive(handler: Handler) -> None:
    handler.reply(200, "application/zip", b"PK\x05\x06" + b"\x00" * 18)


def big_declared(handler: Handler) -> None:
    handler.reply(200, "text/plain", b"x" * (MAX_BYTES * 5))


def big_streamed(handler: Handler) -> None:
    # HTTP/1.0 without Content-Length: only counting while streaming can stop it.
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.end_headers()
    for _ in range(50):
        handler.wfile.write(b"y" * 200)


def fails_first(status: int, headers: dict[str, str] | None = None) -> Route:
    def route(handler: Handler) -> None:
        if handler.server.hits[handler.path.split("?", 1)[0]] == 1:
            handler.reply(status, "text/plain", b"later", headers)
        else:
            html(handler)

    return route


def hang(handler: Handler) -> None:
    handler.server.release.wait(5)


def slow(handler: Handler) -> None:
    time.sleep(0.15)
    html(handler)


def to(location: str) -> Route:
    return lambda handler: handler.redirect(location)


@pytest.fixture
def world() -> Iterator[World]:
    with World() as server:
        server.routes.update(
            {
                "/page": html,
                "/image": png,
                "/archive": archive,
                "/big-declared": big_declared,
                "/big-streamed": big_streamed,
                "/flaky": fails_first(503),
                "/throttled": fails_first(429, {"Retry-After": "1"}),
                "/missing": lambda h: h.reply(404, "text/plain", b"gone"),
                "/hang": hang,
                "/slow": slow,
                "/redirect-metadata": to("http://169.254.169.254/latest/meta-data/iam/"),
                "/redirect-private": to("http://10.0.0.1/admin"),
                "/redirect-file": to("file:///etc/passwd"),
                "/redirect-relative": to("/page"),
                "/redirect-loop": to("/redirect-loop"),
            }
        )
        yield server


@pytest.fixture
def other_world() -> Iterator[World]:
    with World() as server:
        server.routes["/page"] = html
        yield server


def options_for(*worlds: World, **overrides: object) -> FetchOptions:
    """Small timeouts and backoff; only the given servers' host:port allow-listed."""
    values: dict[str, object] = {
        "timeout_s": 2.0,
        "connect_timeout_s": 1.0,
        "retries": 2,
        "backoff_base_s": 0.01,
        "max_bytes": MAX_BYTES,
        "allow_hosts": frozenset(f"{w.host}:{w.port}" for w in worlds),
    }
    values.update(overrides)
    return FetchOptions(**values)  # type: ignore[arg-type]


def fetch_one(url: str, options: FetchOptions, **kwargs: object) -> FetchResult:
    [result] = asyncio.run(fetch_urls([url], options=options, **kwargs))  # type: ignore[arg-type]
    return result


def test_allow_listed_server_is_fetched(world: World) -> None:
    # given a server whose host:port is allow-listed
    # when a page is fetched through the synchronous entry point
    [result] = fetch_urls_sync([world.url("/page")], options=options_for(world))
    # then the body comes back with its content type, and the request carried our User-Agent
    assert result.ok, result.error
    assert result.status == 200
    assert result.body == b"<html><body>hello</body></html>"
    assert result.content_type == "text/html; charset=utf-8"
    assert world.user_agents[0].startswith("Stratus/")


def test_server_not_allow_listed_is_refused_without_a_connection(world: World) -> None:
    # given the same server, not allow-listed
    # when its page is fetched
    result = fetch_one(world.url("/page"), options_for())
    # then the fetch fails permanently and the server saw no connection at all
    assert not result.ok
    assert result.permanent
    assert result.error == "refused: 127.0.0.1 is a loopback address"
    assert world.connections == 0


def test_relative_redirect_is_followed(world: World) -> None:
    # given a redirect within the allowed server
    # when fetched
    result = fetch_one(world.url("/redirect-relative"), options_for(world))
    # then the target is fetched and reported as the final URL
    assert result.ok, result.error
    assert result.final_url == world.url("/page")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/redirect-metadata", "refused: 169.254.169.254 is a cloud metadata address"),
        ("/redirect-private", "refused: 10.0.0.1 is a private address"),
        ("/redirect-file", "refused: scheme 'file' is not http or https"),
    ],
)
def test_redirect_to_a_blocked_target_is_refused(world: World, path: str, reason: str) -> None:
    # given an allowed server redirecting to a blocked target
    # when fetched
    result = fetch_one(world.url(path), options_for(world))
    # then the hop is refused permanently, after exactly one request to the allowed server
    assert not result.ok
    assert result.permanent
    assert result.error == reason
    assert world.requests == 1


def test_redirect_to_a_server_not_allow_listed_sends_it_nothing(world: World, other_world: World) -> None:
    # given an allowed server redirecting to another loopback server that is not allow-listed
    world.routes["/redirect-other"] = to(other_world.url("/page"))
    # when fetched
    result = fetch_one(world.url("/redirect-other"), options_for(world))
    # then the hop is refused and the other server never saw a connection
    assert not result.ok
    assert result.permanent
    assert "loopback" in (result.error or "")
    assert other_world.connections == 0


def test_redirect_loop_stops_at_the_limit(world: World) -> None:
    # given a redirect to itself
    # when fetched with at most 3 redirects
    result = fetch_one(world.url("/redirect-loop"), options_for(world, max_redirects=3))
    # then it fails permanently after 4 requests
    assert not result.ok
    assert result.permanent
    assert result.error == "more than 3 redirects"
    assert world.hits["/redirect-loop"] == 4


def test_dns_rebinding_connects_only_to_the_checked_address(world: World) -> None:
    # given a name whose first answer is the allowed server and later answers another loopback server
    decoy = World(host="127.0.0.2", port=world.port)
    decoy.routes["/page"] = html
    answers: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        answers.append(host)
        return ["127.0.0.1"] if len(answers) == 1 else ["127.0.0.2"]

    with decoy:
        # when two pages of that name are fetched, one through a redirect
        world.routes["/hop"] = to(f"http://rebind.test:{world.port}/page")
        urls = [f"http://rebind.test:{world.port}/page", f"http://rebind.test:{world.port}/hop"]
        results = asyncio.run(fetch_urls(urls, options=options_for(world), resolver=rebinding))
    # then DNS was asked once, every request reached the checked address with the name as Host,
    # and the rebound address received nothing
    assert [r.ok for r in results] == [True, True], [r.error for r in results]
    assert answers == ["rebind.test"]
    assert world.hits["/page"] == 2
    assert set(world.hosts) == {f"rebind.test:{world.port}"}
    assert decoy.connections == 0


def test_dns_rebinding_after_an_earlier_check_is_refused(world: World) -> None:
    # given a URL vetted earlier while DNS answered a public address, that now answers loopback
    answers = iter([[PUBLIC_V4], ["127.0.0.1"]])

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    url = f"http://rebind.test:{world.port}/page"
    check_url(url, resolver=rebinding)
    # when the fetch stage fetches it
    result = fetch_one(url, options_for(), resolver=rebinding)
    # then the fetch is refused and the loopback server saw no connection
    assert not result.ok
    assert result.permanent
    assert result.error == "refused: rebind.test resolves to 127.0.0.1, which is a loopback address"
    assert world.connections == 0


@pytest.mark.parametrize("path", ["/big-declared", "/big-streamed"])
def test_body_over_the_size_cap_fails_permanently(world: World, path: str) -> None:
    # given a body five times the cap, with or without Content-Length
    # when fetched
    result = fetch_one(world.url(path), options_for(world))
    # then it fails permanently, not retried
    assert not result.ok
    assert result.permanent
    assert result.error == f"larger than {MAX_BYTES} bytes"
    assert world.hits[path] == 1


def test_unsupported_content_type_fails_permanently(world: World) -> None:
    # given a zip archive (no parser reads one)
    # when fetched
    result = fetch_one(world.url("/archive"), options_for(world))
    # then it is refused by type, without retry
    assert not result.ok
    assert result.permanent
    assert result.error == "unsupported content type 'application/zip'"
    assert world.hits["/archive"] == 1


def test_every_type_a_parser_reads_is_fetched_by_default(world: World) -> None:
    # given the default settings (no STRATUS_URL_ALLOWED_CONTENT_TYPES) and a PNG (read by OCR)
    options = dataclasses.replace(
        options_for(world), allowed_content_types=FetchOptions.from_settings(Settings()).allowed_content_types
    )
    # when fetched
    result = fetch_one(world.url("/image"), options)
    # then it comes back for the parser, and the default names every format's media type
    assert result.ok, result.error
    assert result.content_type == "image/png"
    assert set(FORMAT_TYPES) <= options.allowed_content_types
    assert "application/zip" not in options.allowed_content_types


def test_server_error_is_retried_until_it_succeeds(world: World) -> None:
    # given an endpoint answering 503 once, then 200
    # when fetched
    result = fetch_one(world.url("/flaky"), options_for(world))
    # then the second attempt succeeds
    assert result.ok, result.error
    assert world.hits["/flaky"] == 2


def test_not_found_is_not_retried(world: World) -> None:
    # given an endpoint answering 404
    # when fetched with retries available
    result = fetch_one(world.url("/missing"), options_for(world, retries=3))
    # then it fails permanently after a single request
    assert not result.ok
    assert result.permanent
    assert result.status == 404
    assert world.hits["/missing"] == 1


def test_throttling_honours_retry_after(world: World) -> None:
    # given an endpoint answering 429 with Retry-After: 1, then 200
    started = time.monotonic()
    # when fetched
    result = fetch_one(world.url("/throttled"), options_for(world))
    # then the retry waited the second it was asked to and succeeded
    assert result.ok, result.error
    assert world.hits["/throttled"] == 2
    assert time.monotonic() - started >= 1.0


def test_retry_after_beyond_the_cap_fails_transiently_at_once(world: World) -> None:
    # given an endpoint asking for an hour's pause
    world.routes["/busy"] = fails_first(429, {"Retry-After": "3600"})
    # when fetched
    started = time.monotonic()
    result = fetch_one(world.url("/busy"), options_for(world))
    # then the fetch gives up at once, as a transient failure for the queue to redeliver
    assert not result.ok
    assert not result.permanent
    assert result.status == 429
    assert time.monotonic() - started < 1.0


def test_hanging_endpoint_times_out_transiently(world: World) -> None:
    # given an endpoint that never answers
    started = time.monotonic()
    # when fetched with a half-second budget and no retries
    result = fetch_one(world.url("/hang"), options_for(world, timeout_s=0.5, retries=0))
    # then it fails transiently within about that budget
    assert not result.ok
    assert not result.permanent
    assert "timed out" in (result.error or "")
    assert time.monotonic() - started < 2.0


def test_refused_connection_is_retried_then_fails_transiently() -> None:
    # given an allow-listed port where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = FetchOptions(allow_hosts=frozenset({f"127.0.0.1:{port}"}), retries=2, backoff_base_s=0.01)
    # when fetched
    result = fetch_one(f"http://127.0.0.1:{port}/", options)
    # then it is a transient failure, worth redelivery
    assert not result.ok
    assert not result.permanent
    assert "network error" in (result.error or "")


def test_per_host_concurrency_is_bounded(world: World) -> None:
    # given eight slow pages on one host and room for two at a time per host
    urls = [world.url(f"/slow?i={i}") for i in range(8)]
    options = options_for(world, per_host_concurrency=2, max_connections=16)
    # when fetched together
    results = asyncio.run(fetch_urls(urls, options=options))
    # then all succeed, in input order, and the server never saw more than two at once
    assert all(r.ok for r in results), [r.error for r in results]
    assert [r.url for r in results] == urls
    assert world.max_in_flight == 2


# --- hostile bodies (issue 19): decompression bombs, bytes in flight ---------------------------

BOMB_BYTES = 512 * 1024 * 1024


def gzip_of_zeros(size: int) -> bytes:
    """gzip of `size` zero bytes, built in pieces (the bomb never exists inflated here)."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    piece = bytes(1024 * 1024)
    out = [packer.compress(piece) for _ in range(size // len(piece))]
    out.append(packer.flush())
    return b"".join(out)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    import gzip

    once = gzip_of_zeros(BOMB_BYTES)
    return {"gzip": once, "gzip, gzip": gzip.compress(once, 9)}


def encoded(body: bytes, encoding: str) -> Route:
    def route(handler: Handler) -> None:
        handler.reply(200, "text/plain", body, {"Content-Encoding": encoding})

    return route


def peak_growth_of(function: Callable[[], object]) -> tuple[object, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = function()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("encoding", ["gzip, gzip", "gzip"])
def test_decompression_bomb_is_refused_with_peak_memory_under_8_mib(
    world: World, bombs: dict[str, bytes], encoding: str
) -> None:
    # given a hostile server answering a ~1 KB (stacked) or ~500 KB (single) gzip body that
    # inflates to 512 MiB, and a 1 MiB body limit
    body = bombs[encoding]
    assert len(body) < 600 * 1024
    world.routes["/bomb"] = encoded(body, encoding)
    options = options_for(world, max_bytes=1024 * 1024, retries=0, timeout_s=30.0)
    # when fetched
    result, peak = peak_growth_of(lambda: fetch_one(world.url("/bomb"), options))
    # then it fails permanently, and the process never held more than a few MiB for it
    assert isinstance(result, FetchResult)
    assert not result.ok
    assert result.permanent
    assert "Content-Encoding" in (result.error or "") or "larger than" in (result.error or "")
    print(f"\n{encoding} bomb of {len(body)} bytes: {result.error}; peak growth {peak / 2**20:.2f} MiB")
    assert peak < 8 * 1024 * 1024, f"peak growth {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity"])
def test_encoded_pages_are_decoded(world: World, encoding: str) -> None:
    # given a page served gzip-, deflate- or not encoded
    import gzip
    import zlib

    page = b"<html><body>" + b"hello " * 100 + b"</body></html>"
    body = {"gzip": gzip.compress(page), "deflate": zlib.compress(page), "identity": page}[encoding]
    world.routes["/encoded"] = encoded(body, encoding)
    # when fetched, then the decoded page comes back
    result = fetch_one(world.url("/encoded"), options_for(world, max_bytes=10_000))
    assert result.ok, result.error
    assert result.body == page


def test_unknown_content_encoding_is_refused(world: World) -> None:
    world.routes["/br"] = encoded(b"\x00\x01", "br")
    result = fetch_one(world.url("/br"), options_for(world))
    assert not result.ok
    assert result.permanent
    assert "unsupported Content-Encoding 'br'" in (result.error or "")


def test_manifest_bodies_in_flight_are_bounded_and_handed_on_as_they_complete(world: World) -> None:
    # given 16 pages of 1 MiB each, one of them slow and listed first, and room for 3 bodies at once
    from stratus.ingest.web import iter_fetch_urls

    page = b"z" * (1024 * 1024)

    def big(handler: Handler) -> None:
        if "slow" in handler.path:
            time.sleep(0.5)
        handler.reply(200, "text/plain", page)

    world.routes["/big"] = big
    urls = [world.url("/big?slow=1")] + [world.url(f"/big?i={i}") for i in range(15)]
    options = options_for(world, max_bytes=len(page), max_bytes_in_flight=3 * len(page), timeout_s=10.0)

    def consume() -> list[str]:
        seen = []
        for result in iter_fetch_urls(urls, options=options):
            assert result.ok, result.error
            seen.append(result.url)
            time.sleep(0.02)  # (the caller parses each body)
        return seen

    # when consumed one by one
    seen, peak = peak_growth_of(consume)
    # then every page came, the slow one not first, the server never served more than 3 at once,
    # and peak memory stayed near 3 bodies, not 16
    assert isinstance(seen, list)
    assert sorted(seen) == sorted(urls)
    assert seen[0] != urls[0]
    assert world.max_in_flight <= 3
    print(f"\n16 bodies of 1 MiB, 3 slots: peak growth {peak / 2**20:.2f} MiB")
    assert peak < 8 * len(page), f"peak growth {peak / 2**20:.1f} MiB"
