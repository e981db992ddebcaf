"""Fetch web pages for ingestion: SSRF-guarded, bounded, retried only on transient faults."""

from __future__ import annotations

import asyncio
import email.utils
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

import httpx

from stratus.errors import PermanentError, TransientError
from stratus.ingest.urlguard import (
    BlockedURLError,
    GuardedNetworkBackend,
    GuardedTransport,
    ParsedURL,
    Resolver,
    check_url_syntax,
    normalise_allow_hosts,
)

if TYPE_CHECKING:
    from stratus.settings import Settings

DEFAULT_USER_AGENT = "Stratus/0.1 (+https://github.com/stratus-rag)"
DEFAULT_CONTENT_TYPES = frozenset(
    {"text/html", "text/plain", "text/markdown", "application/pdf", "application/xhtml+xml"}
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# 408 and 429 are the client errors that mean "later"; every other 4xx is final.
RETRYABLE_STATUSES = frozenset({408, 429})
BACKOFF_MAX_S = 30.0


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

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchOptions:
        """Options from the STRATUS_URL_* settings."""
        return cls(
            max_bytes=settings.url_max_bytes,
            timeout_s=settings.url_timeout_s,
            connect_timeout_s=settings.url_connect_timeout_s,
            max_connections=settings.url_max_connections,
            per_host_concurrency=settings.url_per_host_concurrency,
            retries=settings.url_retries,
            backoff_base_s=settings.url_backoff_base_s,
            retry_after_max_s=settings.url_retry_after_max_s,
            user_agent=settings.url_user_agent,
            allowed_content_types=frozenset(t.lower() for t in settings.url_allowed_content_types),
            max_redirects=settings.url_max_redirects,
            allow_hosts=frozenset(settings.url_allow_hosts),
        )


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


class UrlManifest(NamedTuple):
    """URLs of a *.urls manifest, and one message per line that was refused."""

    urls: list[str]
    errors: list[str]


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
    dropped = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            url = check_url_syntax(line, allow_hosts).url
        except BlockedURLError as exc:
            errors.append(f"line {number}: {exc}")
            continue
        if url in seen:
            continue
        if len(urls) >= max_urls:
            dropped += 1
            continue
        seen.add(url)
        urls.append(url)
    if dropped:
        errors.append(f"more than {max_urls} URLs: {dropped} ignored")
    return UrlManifest(urls, errors)


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


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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

    async def fetch(self, url: str) -> FetchResult:
        current = url
        status: int | None = None
        try:
            for _hop in range(self._options.max_redirects + 1):
                target = check_url_syntax(current, self._allow_hosts)
                response = await self._with_retries(target)
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

    async def _with_retries(self, target: ParsedURL) -> _Response:
        options = self._options
        attempt = 0
        while True:
            try:
                # Resolve and validate before any request; the transport connects to exactly these addresses.
                await self._resolve(target)
                async with self._slot(target.host):
                    return await self._attempt(target.url)
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

    async def _attempt(self, url: str) -> _Response:
        options = self._options
        try:
            async with asyncio.timeout(options.timeout_s):
                async with self._client.stream("GET", url) as response:
                    return await self._read(response)
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

    async def _read(self, response: httpx.Response) -> _Response:
        options = self._options
        status = response.status_code
        content_type = response.headers.get("content-type")
        if status in REDIRECT_STATUSES:
            location = response.headers.get("location")
            if not location:
                raise _Failure(f"HTTP {status} without a Location header", permanent=True, status=status)
            return _Response(status, content_type, None, location)
        if status in RETRYABLE_STATUSES or status >= 500:
            retry_after = (
                _retry_after_s(response.headers.get("retry-after")) if status in (429, 503) else None
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
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > options.max_bytes:
                raise _Failure(too_large, permanent=True, status=status)
            chunks.append(chunk)
        return _Response(status, content_type, b"".join(chunks), None)


async def fetch_urls(
    urls: Sequence[str], *, options: FetchOptions | None = None, resolver: Resolver | None = None
) -> list[FetchResult]:
    """Fetch every URL concurrently through one guarded client; results in input order, never raises."""
    if isinstance(urls, str):
        raise TypeError("fetch_urls takes a sequence of URLs, not one string")
    if options is None:
        from stratus.settings import get_settings

        options = FetchOptions.from_settings(get_settings())
    backend = GuardedNetworkBackend(
        allow_hosts=options.allow_hosts, resolver=resolver, resolve_timeout_s=options.connect_timeout_s
    )
    limits = httpx.Limits(
        max_connections=options.max_connections, max_keepalive_connections=options.max_connections
    )
    transport = GuardedTransport(backend=backend, limits=limits)
    timeout = httpx.Timeout(options.timeout_s, connect=options.connect_timeout_s, pool=options.timeout_s)
    async with httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": options.user_agent},
    ) as client:
        fetcher = _Fetcher(client, backend, options)
        return list(await asyncio.gather(*(fetcher.fetch(url) for url in urls)))


def fetch_urls_sync(
    urls: Sequence[str], *, options: FetchOptions | None = None, resolver: Resolver | None = None
) -> list[FetchResult]:
    """`fetch_urls` for synchronous callers (Lambda handlers); not from inside a running event loop."""
    return asyncio.run(fetch_urls(urls, options=options, resolver=resolver))


__all__ = [
    "FetchOptions",
    "FetchResult",
    "UrlManifest",
    "fetch_urls",
    "fetch_urls_sync",
    "parse_url_manifest",
]
