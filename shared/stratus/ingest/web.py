"""Fetch web pages for ingestion: SSRF-guarded, bounded, retried only on transient faults."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from stratus.errors import PermanentError, TransientError
from stratus.ingest.formats import CONTENT_TYPES as FORMAT_TYPES
from stratus.ingest.urlguard import (
    BlockedURLError,
    GuardedNetworkBackend,
    GuardedTransport,
    ParsedURL,
    Resolver,
    check_url_syntax,
    normalise_allow_hosts,
)
from stratus.retry_after import parse_retry_after

if TYPE_CHECKING:
    from stratus.settings import Settings

DEFAULT_USER_AGENT = "Stratus/0.1 (+https://github.com/stratus-rag)"
# Every media type a parser reads (HTML, text, Markdown, PDF and the formats of stratus.ingest.formats).
DEFAULT_CONTENT_TYPES = frozenset(
    {"text/html", "text/plain", "text/markdown", "application/pdf", "application/xhtml+xml", *FORMAT_TYPES}
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# 408 and 429 are the client errors that mean "later"; every other 4xx is final.
RETRYABLE_STATUSES = frozenset({408, 429})
BACKOFF_MAX_S = 30.0
# Encodings this client decodes itself, bounded while decoding; anything else (stacked encodings
# included) is refused before a byte of it is decompressed.
ACCEPT_ENCODING = "gzip, deflate"
_IDENTITY = {"", "identity"}
_GZIP = {"gzip", "x-gzip"}
_DECODE_STEP = 64 * 1024


@dataclass(frozen=True)
class FetchOptions:
    """Knobs of one fetch batch; build from settings with `from_settings`."""

    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 20.0
    connect_timeout_s: float = 5.0
    max_connections: int = 16
    per_host_concurrency: int = 4
    retries: int = 3
    backoff_base_s: float = 0.5
    retry_after_max_s: float = 10.0
    user_agent: str = DEFAULT_USER_AGENT
    allowed_content_types: frozenset[str] = DEFAULT_CONTENT_TYPES
    max_redirects: int = 5
    allow_hosts: frozenset[str] = field(default_factory=frozenset)
    max_bytes_in_flight: int = 128 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchOptions:
        """Options from the STRATUS_URL_* settings."""
        from stratus.settings import derive

        def content_types(value: list[str]) -> frozenset[str]:
            return frozenset(t.lower() for t in value) or DEFAULT_CONTENT_TYPES

        return derive(
            cls,
            settings,
            prefix="url_",
            convert={"allowed_content_types": content_types, "allow_hosts": frozenset},
        )

    @property
    def slots(self) -> int:
        """Fetches that may hold a body at once: bytes in flight over the largest body, at least 1."""
        return max(1, self.max_bytes_in_flight // self.max_bytes)


@dataclass(frozen=True)
class FetchResult:
    """Outcome of fetching one URL; `permanent` tells a failure not to retry (meaningless when ok)."""

    url: str
    final_url: str
    ok: bool
    status: int | None
    content_type: str | None  # the full header, parameters (charset) included
    body: bytes | None
    error: str | None
    permanent: bool
    out_of_time: bool = False  # the invocation's time budget ran out before this URL was done
    # Conditional GET (sources): the validators the server sent; status 304 is ok with no body.
    etag: str | None = None
    last_modified: str | None = None
    robots_tag: str = ""  # X-Robots-Tag headers, one per line (sources honour noindex / nofollow)


@dataclass(frozen=True)
class UrlManifest:
    """URLs of a *.urls manifest, the first refused lines' messages, and per-line counts.

    Unpacks as ``urls, errors``.
    """

    urls: list[str]
    errors: list[str]
    refused_by: dict[str, int] = field(default_factory=dict)  # lines refused by the guard, by class
    duplicates: int = 0
    over_limit: int = 0

    def __iter__(self) -> Iterator[list[str]]:
        return iter((self.urls, self.errors))


def refusal_class(message: str) -> str:
    """A short class of a URL guard refusal, for per-class counts."""
    text = message.lower()
    for needle, kind in (
        ("scheme", "scheme"),
        ("credentials", "credentials"),
        ("internal host", "internal host"),
        ("longer than", "too long"),
        ("whitespace", "characters"),
        ("port", "port"),
        ("not allow-listed", "not allow-listed"),
    ):
        if needle in text:
            return kind
    if " is " in text:
        return "address"
    return "malformed"


MAX_MANIFEST_ERRORS = 20


def parse_url_manifest(
    text: str, *, max_urls: int | None = None, allow_hosts: frozenset[str] = frozenset()
) -> UrlManifest:
    """Read a *.urls manifest: one URL per line, '#' comments and blanks skipped, duplicates dropped."""
    if max_urls is None:
        from stratus.settings import get_settings

        max_urls = get_settings().url_max_per_manifest
    urls: list[str] = []
    seen: set[str] = set()
    errors: list[str] = []
    refused: dict[str, int] = {}
    duplicates = dropped = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            url = check_url_syntax(line, allow_hosts).url
        except BlockedURLError as exc:
            kind = refusal_class(str(exc))
            refused[kind] = refused.get(kind, 0) + 1
            if len(errors) < MAX_MANIFEST_ERRORS:
                errors.append(f"line {number}: {exc}")
            continue
        if url in seen:
            duplicates += 1
            continue
        if len(urls) >= max_urls:
            dropped += 1
            continue
        seen.add(url)
        urls.append(url)
    if dropped:
        errors.append(f"more than {max_urls} URLs: {dropped} ignored")
    return UrlManifest(urls, errors, refused, duplicates, dropped)


class _Failure(Exception):
    """One attempt failed; carries what the FetchResult needs."""

    def __init__(
        self, message: str, *, permanent: bool, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Response:
    status: int
    content_type: str | None
    body: bytes | None
    location: str | None
    etag: str | None = None
    last_modified: str | None = None
    robots_tag: str = ""


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class _Fetcher:
    def __init__(self, client: httpx.AsyncClient, backend: GuardedNetworkBackend, options: FetchOptions):
        self._client = client
        self._backend = backend
        self._options = options
        self._allow_hosts = normalise_allow_hosts(options.allow_hosts)
        self._host_slots: dict[str, asyncio.Semaphore] = {}

    def _slot(self, host: str) -> asyncio.Semaphore:
        if host not in self._host_slots:
            self._host_slots[host] = asyncio.Semaphore(self._options.per_host_concurrency)
        return self._host_slots[host]

    async def fetch(self, url: str, headers: dict[str, str] | None = None) -> FetchResult:
        """One URL, every redirect hop through the guard; `headers` (conditional GET) go on each hop."""
        current = url
        status: int | None = None
        try:
            for _hop in range(self._options.max_redirects + 1):
                target = check_url_syntax(current, self._allow_hosts)
                response = await self._with_retries(target, headers)
                status = response.status
                if response.location is None:
                    return FetchResult(
                        url,
                        target.url,
                        True,
                        response.status,
                        response.content_type,
                        response.body,
                        None,
                        False,
                        etag=response.etag,
                        last_modified=response.last_modified,
                        robots_tag=response.robots_tag,
                    )
                try:
                    current = str(httpx.URL(target.url).join(response.location))
                except httpx.InvalidURL as exc:
                    raise _Failure(f"bad redirect Location: {exc}", permanent=True, status=status) from exc
            raise _Failure(
                f"more than {self._options.max_redirects} redirects", permanent=True, status=status
            )
        except _Failure as exc:
            return FetchResult(url, current, False, exc.status, None, None, str(exc), exc.permanent)
        except PermanentError as exc:
            return FetchResult(url, current, False, status, None, None, str(exc), True)
        except (TransientError, httpx.HTTPError) as exc:
            return FetchResult(url, current, False, status, None, None, str(exc), False)

    async def _with_retries(self, target: ParsedURL, headers: dict[str, str] | None = None) -> _Response:
        options = self._options
        attempt = 0
        while True:
            try:
                # Resolve and validate before any request; the transport connects to exactly these addresses.
                await self._resolve(target)
                async with self._slot(target.host):
                    return await self._attempt(target.url, headers)
            except _Failure as exc:
                if exc.permanent or attempt >= options.retries:
                    raise
                if exc.retry_after is not None:
                    if exc.retry_after > options.retry_after_max_s:
                        # Waiting that long would pin a Lambda; let the queue redeliver later instead.
                        raise _Failure(
                            f"{exc} (Retry-After {exc.retry_after:.0f}s exceeds "
                            f"{options.retry_after_max_s:.0f}s)",
                            permanent=False,
                            status=exc.status,
                        ) from exc
                    delay = exc.retry_after
                else:
                    ceiling = min(BACKOFF_MAX_S, options.backoff_base_s * 2**attempt)
                    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
                attempt += 1
                await asyncio.sleep(delay)

    async def _resolve(self, target: ParsedURL) -> None:
        try:
            await self._backend.resolve(target.host, target.port)
        except TransientError as exc:
            raise _Failure(str(exc), permanent=False) from exc

    async def _attempt(self, url: str, headers: dict[str, str] | None = None) -> _Response:
        options = self._options
        try:
            async with asyncio.timeout(options.timeout_s):
                async with self._client.stream("GET", url, headers=headers) as response:
                    return await self._read(response, conditional=bool(headers))
        except TimeoutError as exc:
            raise _Failure(f"timed out after {options.timeout_s:g}s", permanent=False) from exc
        except httpx.TimeoutException as exc:
            raise _Failure(f"timed out: {type(exc).__name__}", permanent=False) from exc
        except TransientError as exc:
            raise _Failure(str(exc), permanent=False) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.DecodingError) as exc:
            raise _Failure(f"cannot fetch: {type(exc).__name__}: {exc}", permanent=True) from exc
        except httpx.TransportError as exc:
            raise _Failure(f"network error: {type(exc).__name__}: {exc}", permanent=False) from exc

    async def _read(self, response: httpx.Response, conditional: bool = False) -> _Response:
        options = self._options
        status = response.status_code
        content_type = response.headers.get("content-type")
        etag, last_modified = response.headers.get("etag"), response.headers.get("last-modified")
        robots_tag = "\n".join(response.headers.get_list("x-robots-tag"))[:2048]
        if status == 304 and conditional:
            return _Response(status, content_type, None, None, etag, last_modified, robots_tag)
        if status in REDIRECT_STATUSES:
            location = response.headers.get("location")
            if not location:
                raise _Failure(f"HTTP {status} without a Location header", permanent=True, status=status)
            return _Response(status, content_type, None, location)
        if status in RETRYABLE_STATUSES or status >= 500:
            retry_after = (
                parse_retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
            )
            raise _Failure(f"HTTP {status}", permanent=False, status=status, retry_after=retry_after)
        if not 200 <= status < 300:
            raise _Failure(f"HTTP {status}", permanent=True, status=status)
        if _media_type(content_type) not in options.allowed_content_types:
            raise _Failure(
                f"unsupported content type {_media_type(content_type) or 'none'!r}",
                permanent=True,
                status=status,
            )
        too_large = f"larger than {options.max_bytes} bytes"
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > options.max_bytes:
            raise _Failure(too_large, permanent=True, status=status)
        decoder = _decoder(response.headers.get_list("content-encoding", split_commas=True), status)
        chunks: list[bytes] = []
        size = 0
        # Raw bytes, decoded here: httpx's own decoders inflate a whole network chunk at once,
        # and a 1 KB body can inflate to gigabytes before any size check sees it.
        async for raw in response.aiter_raw():
            for chunk in decoder.feed(raw, options.max_bytes - size):
                size += len(chunk)
                if size > options.max_bytes:
                    raise _Failure(too_large, permanent=True, status=status)
                chunks.append(chunk)
        chunks.extend(decoder.finish())
        return _Response(status, content_type, b"".join(chunks), None, etag, last_modified, robots_tag)


class _Decoder:
    """Undoes at most one Content-Encoding, never producing more than it is asked for per step."""

    def __init__(self, encoding: str, status: int) -> None:
        self._encoding = encoding
        self._status = status
        self._zlib: Any = None
        if encoding in _GZIP:
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header
        self._first = True

    def feed(self, data: bytes, room: int) -> Iterator[bytes]:
        """Decoded pieces of `data`, stopping once more than `room` bytes came out."""
        if self._zlib is None:
            yield data
            return
        produced = 0
        pending = data
        while produced <= room and not self._zlib.eof:
            try:
                out = self._zlib.decompress(pending, max(1, min(_DECODE_STEP, room - produced + 1)))
            except zlib.error as exc:
                if self._encoding == "deflate" and self._first:
                    # Some servers send raw deflate without the zlib header.
                    self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._first = False
                    continue
                raise _Failure(
                    f"cannot decode {self._encoding} body: {exc}", permanent=True, status=self._status
                ) from exc
            self._first = False
            pending = self._zlib.unconsumed_tail
            produced += len(out)
            if out:
                yield out
            elif not pending:
                break

    def finish(self) -> list[bytes]:
        """Whatever the decoder still holds (a few bytes at most; the body was bounded while fed)."""
        if self._zlib is None:
            return []
        return [self._zlib.flush(_DECODE_STEP)] if not self._zlib.eof else []


def _decoder(encodings: list[str], status: int) -> _Decoder:
    coded = [e.strip().lower() for e in encodings if e.strip().lower() not in _IDENTITY]
    if len(coded) > 1:
        raise _Failure(
            f"stacked Content-Encoding {', '.join(coded)!r} refused (at most one of gzip, deflate)",
            permanent=True,
            status=status,
        )
    if coded and coded[0] not in _GZIP | {"deflate"}:
        raise _Failure(
            f"unsupported Content-Encoding {coded[0]!r} (gzip, deflate or none)",
            permanent=True,
            status=status,
        )
    return _Decoder(coded[0] if coded else "", status)


def _client(options: FetchOptions, backend: GuardedNetworkBackend) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=options.max_connections, max_keepalive_connections=options.max_connections
    )
    transport = GuardedTransport(backend=backend, limits=limits)
    timeout = httpx.Timeout(options.timeout_s, connect=options.connect_timeout_s, pool=options.timeout_s)
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": options.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
    )


def _out_of_time(url: str, budget_s: float) -> FetchResult:
    return FetchResult(
        url, url, False, None, None, None,
        f"not fetched within the invocation's time budget ({budget_s:.0f}s)", True, out_of_time=True,
    )  # fmt: skip


async def _fetch_before(fetcher: _Fetcher, url: str, deadline: float | None, budget_s: float) -> FetchResult:
    """One URL, abandoned at `deadline` (time.monotonic()) with an out-of-time result."""
    if deadline is None:
        return await fetcher.fetch(url)
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            return await fetcher.fetch(url)
    except TimeoutError:
        return _out_of_time(url, budget_s)


async def fetch_urls(
    urls: Sequence[str],
    *,
    options: FetchOptions | None = None,
    resolver: Resolver | None = None,
    deadline: float | None = None,
) -> list[FetchResult]:
    """Fetch every URL concurrently through one guarded client; results in input order, never raises.

    Every body is held until all are done: for many URLs use `iter_fetch_urls`, which bounds that.
    """
    if isinstance(urls, str):
        raise TypeError("fetch_urls takes a sequence of URLs, not one string")
    if options is None:
        from stratus.settings import get_settings

        options = FetchOptions.from_settings(get_settings())
    backend = GuardedNetworkBackend(
        allow_hosts=options.allow_hosts, resolver=resolver, resolve_timeout_s=options.connect_timeout_s
    )
    budget_s = 0.0 if deadline is None else deadline - time.monotonic()
    async with _client(options, backend) as client:
        fetcher = _Fetcher(client, backend, options)
        return list(await asyncio.gather(*(_fetch_before(fetcher, url, deadline, budget_s) for url in urls)))


def fetch_urls_sync(
    urls: Sequence[str],
    *,
    options: FetchOptions | None = None,
    resolver: Resolver | None = None,
    deadline: float | None = None,
) -> list[FetchResult]:
    """`fetch_urls` for synchronous callers (Lambda handlers); not from inside a running event loop."""
    return asyncio.run(fetch_urls(urls, options=options, resolver=resolver, deadline=deadline))


@contextlib.asynccontextmanager
async def open_fetcher(options: FetchOptions, resolver: Resolver | None = None) -> AsyncIterator[Any]:
    """One guarded client for a caller that fetches URLs one by one (`await fetcher.fetch(url, headers)`)."""
    backend = GuardedNetworkBackend(
        allow_hosts=options.allow_hosts, resolver=resolver, resolve_timeout_s=options.connect_timeout_s
    )
    async with _client(options, backend) as client:
        yield _Fetcher(client, backend, options)


_DONE = object()


def iter_fetch_urls(
    urls: Sequence[str],
    *,
    options: FetchOptions | None = None,
    resolver: Resolver | None = None,
    deadline: float | None = None,
) -> Iterator[FetchResult]:
    """Fetch URLs concurrently and yield each result as it completes, with bytes in flight bounded.

    At most `options.slots` fetches hold a body at once (`max_bytes_in_flight` over `max_bytes`); a
    slot is freed when the caller asks for the next result, so a body is dropped before another
    is downloaded in its place. URLs still unfinished at `deadline` (time.monotonic()) come back
    out of time. The fetches run on an event loop in a worker thread; closing the iterator stops them.
    """
    if isinstance(urls, str):
        raise TypeError("iter_fetch_urls takes a sequence of URLs, not one string")
    if options is None:
        from stratus.settings import get_settings

        options = FetchOptions.from_settings(get_settings())
    chosen = options
    results: queue.Queue[Any] = queue.Queue()
    loop = asyncio.new_event_loop()
    state: dict[str, Any] = {}
    budget_s = 0.0 if deadline is None else deadline - time.monotonic()

    async def produce() -> None:
        backend = GuardedNetworkBackend(
            allow_hosts=chosen.allow_hosts, resolver=resolver, resolve_timeout_s=chosen.connect_timeout_s
        )
        slots = asyncio.Semaphore(chosen.slots)
        state["slots"] = slots

        async def one(fetcher: _Fetcher, url: str) -> None:
            await slots.acquire()
            results.put(await _fetch_before(fetcher, url, deadline, budget_s))

        try:
            async with _client(chosen, backend) as client:
                fetcher = _Fetcher(client, backend, chosen)
                await asyncio.gather(*(one(fetcher, url) for url in urls))
        finally:
            results.put(_DONE)

    def run() -> None:
        asyncio.set_event_loop(loop)
        task = loop.create_task(produce())
        state["task"] = task
        try:
            loop.run_until_complete(task)
        except BaseException as error:  # cancelled by close(), or a bug: the consumer gets it
            if not isinstance(error, asyncio.CancelledError):
                results.put(error)
            results.put(_DONE)
        finally:
            loop.close()

    worker = threading.Thread(target=run, name="url-fetch", daemon=True)
    worker.start()
    try:
        while True:
            item = results.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
            # The caller is done with the previous body: let one more download start.
            with contextlib.suppress(RuntimeError):  # (the loop closed: everything was fetched)
                loop.call_soon_threadsafe(state["slots"].release)
    finally:
        task = state.get("task")
        if task is not None:
            with contextlib.suppress(RuntimeError):  # (the loop closed meanwhile)
                loop.call_soon_threadsafe(task.cancel)
        worker.join()


__all__ = [
    "FetchOptions",
    "FetchResult",
    "UrlManifest",
    "fetch_urls",
    "fetch_urls_sync",
    "iter_fetch_urls",
    "open_fetcher",
    "parse_url_manifest",
]
