"""SSRF guard: refuse URLs that reach private, loopback, link-local or metadata addresses.

Two layers share one policy:

* `check_url` / `check_url_syntax` vet a URL (scheme, credentials, host shape, addresses) so a
  caller gets a clear reason before anything touches the network;
* `GuardedNetworkBackend` (used through `GuardedTransport`) is the httpcore network backend of the
  fetcher's client: every TCP connection resolves the host once, validates ALL answers and connects
  to a validated IP, while the Host header and TLS SNI keep the name. A DNS answer that changes
  between check and connect (rebinding) therefore never reaches an unchecked address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import httpcore
import httpx

from stratus.errors import PermanentError, TransientError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""Maps (host, port) to the IP addresses it resolves to; blocking, so run off the event loop."""

ALLOWED_SCHEMES = frozenset({"http", "https"})
MAX_URL_LENGTH = 4096

# Names refused without asking DNS: they only ever mean "this machine" or "this private network".
_BLOCKED_NAMES = frozenset({"localhost", "metadata.google.internal", "metadata"})
_BLOCKED_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa")
# Public addresses that are nonetheless cloud-internal services.
_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack instance metadata
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata / credentials
        ipaddress.ip_address("168.63.129.16"),  # Azure wireserver
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud metadata
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    }
)
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")

_SCHEME_AUTHORITY = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(//([^/?#]*))?")
_NAME_HOST = re.compile(r"^[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?)*$")
# WHATWG "ends in a number": such a host is an IPv4 address in some notation or invalid.
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


class BlockedURLError(PermanentError):
    """A URL the fetcher must not request; the message says why."""


@dataclass(frozen=True)
class ParsedURL:
    """A syntactically acceptable http(s) URL with its normalised host."""

    url: str
    scheme: str
    host: str
    port: int
    ip: IPAddress | None


@dataclass(frozen=True)
class CheckedURL:
    """A URL whose every resolved address passed the guard."""

    url: str
    host: str
    port: int
    addresses: tuple[str, ...]


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with getaddrinfo; every distinct address, in the order the system gives."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
            raise TransientError(f"cannot resolve {host} now: {exc}") from exc
        raise BlockedURLError(f"refused: cannot resolve {host}: {exc}") from exc
    except UnicodeError as exc:
        raise BlockedURLError(f"refused: cannot resolve {host}: {exc}") from exc
    out: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]
        if address not in out:
            out.append(address)
    return out


def _shown_host(host: str) -> str:
    """A host as allow-list entries spell it: lower case, no trailing dot, canonical IPs, [v6]."""
    bare = host.strip().lower().strip("[]").rstrip(".")
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return bare
    return f"[{ip}]" if ip.version == 6 else str(ip)


def normalise_allow_hosts(entries: Iterable[str]) -> frozenset[str]:
    """Canonicalise allow-list entries (host, host:port, [v6], [v6]:port, bare v6); drop blanks."""
    out: set[str] = set()
    for entry in entries:
        value = entry.strip().lower()
        if not value:
            continue
        if value.startswith("["):
            host, _, rest = value[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif value.count(":") == 1:
            host, _, port = value.partition(":")
        else:
            host, port = value, ""
        out.add(_shown_host(host) + (f":{port}" if port else ""))
    return frozenset(out)


def is_allow_listed(host: str, port: int, allow_hosts: frozenset[str]) -> bool:
    """Whether host (a name or an IP) or host:port is an exact allow-list entry."""
    if not allow_hosts:
        return False
    shown = _shown_host(host)
    return shown in allow_hosts or f"{shown}:{port}" in allow_hosts


def _blocked_v4(ip: ipaddress.IPv4Address) -> str | None:
    if ip in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip in _CGNAT:
        return "a shared (CGNAT) address"
    if ip.is_multicast:
        return "a multicast address"
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def _blocked_v6(ip: ipaddress.IPv6Address) -> str | None:
    if ip in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.ipv4_mapped is not None:
        return f"an IPv4-mapped address (of {ip.ipv4_mapped})"
    if ip.teredo is not None:
        return "a Teredo tunnel address"
    if ip in _NAT64_WELL_KNOWN:
        # DNS64 networks (IPv6-only subnets) reach every public IPv4 site this way: judge the embedded one.
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        reason = _blocked_v4(embedded)
        return f"a NAT64 address embedding {embedded}, {reason}" if reason else None
    if ip.sixtofour is not None:
        reason = _blocked_v4(ip.sixtofour)
        return f"a 6to4 address embedding {ip.sixtofour}, {reason}" if reason else None
    if ip in _NAT64_LOCAL:
        return "a local-use NAT64 address"
    if ip in _IPV4_COMPATIBLE:
        return "an IPv4-compatible address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_site_local:
        return "a site-local address"
    if ip in _UNIQUE_LOCAL:
        return "a unique-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why the guard refuses this address, or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _blocked_v4(ip)
    return _blocked_v6(ip)


def check_address(address: str | IPAddress) -> IPAddress:
    """Parse an address and raise BlockedURLError unless it is public."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    except ValueError as exc:
        raise BlockedURLError(f"refused: {address!r} is not an IP address") from exc
    reason = blocked_reason(ip)
    if reason:
        raise BlockedURLError(f"refused: {ip} is {reason}")
    return ip


def parse_host(raw_host: str) -> tuple[str, IPAddress | None]:
    """Normalise a URL host: lower case, no trailing dot, IPv4 in any inet_aton notation made canonical."""
    host = raw_host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise BlockedURLError("refused: the URL has no host")
    if ":" in host:
        if "%" in host:
            raise BlockedURLError(f"refused: IPv6 zone identifiers are not allowed ({raw_host})")
        try:
            ip6 = ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise BlockedURLError(f"refused: malformed IPv6 host {raw_host!r}") from exc
        return str(ip6), ip6
    if host.endswith("."):
        host = host[:-1]
    if not host or host.endswith("."):
        raise BlockedURLError(f"refused: malformed host {raw_host!r}")
    if _NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]):
        # Decimal (2130706433), octal (0177.0.0.1), hex (0x7f.1) and short (127.1) forms all mean an IPv4
        # address to the C resolver, so read them the same way rather than letting DNS decide.
        if not all(_NUMERIC_LABEL.match(label) for label in host.split(".")):
            raise BlockedURLError(f"refused: malformed numeric host {raw_host!r}")
        try:
            ip4 = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError as exc:
            raise BlockedURLError(f"refused: malformed IPv4 host {raw_host!r}") from exc
        return str(ip4), ip4
    if not _NAME_HOST.match(host) or len(host) > 253:
        raise BlockedURLError(f"refused: malformed host {raw_host!r}")
    return host, None


def _refuse_numeric_authority(authority: str) -> None:
    # httpx rejects some IPv4 spellings (octal) that the C resolver accepts: name the address they mean.
    host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
    try:
        _host, ip = parse_host(host)
    except BlockedURLError:
        return
    if ip is not None:
        check_address(ip)


def parse_url(url: str) -> ParsedURL:
    """Parse strictly: http(s) only, no credentials, a well-formed host; no DNS."""
    if not isinstance(url, str) or not url:
        raise BlockedURLError("refused: empty URL")
    if len(url) > MAX_URL_LENGTH:
        raise BlockedURLError(f"refused: URL longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in url):
        raise BlockedURLError("refused: URL contains whitespace, control characters or backslashes")
    match = _SCHEME_AUTHORITY.match(url)
    if not match:
        raise BlockedURLError(f"refused: not an absolute URL: {url[:200]!r}")
    scheme = match.group(1).lower()
    if scheme not in ALLOWED_SCHEMES:
        raise BlockedURLError(f"refused: scheme {scheme!r} is not http or https")
    authority = match.group(3)
    if authority is None:
        raise BlockedURLError(f"refused: URL has no host: {url[:200]!r}")
    if "@" in authority:
        raise BlockedURLError("refused: credentials in URLs are not allowed")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        _refuse_numeric_authority(authority)
        raise BlockedURLError(f"refused: malformed URL ({exc})") from exc
    raw_host = parsed.raw_host.decode("ascii")
    if "%" in raw_host:
        raise BlockedURLError(f"refused: percent-encoded or zoned host {raw_host!r}")
    host, ip = parse_host(raw_host)
    port = parsed.port if parsed.port is not None else (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        raise BlockedURLError(f"refused: port {port} is out of range")
    return ParsedURL(url=str(parsed), scheme=scheme, host=host, port=port, ip=ip)


def _check_name(host: str) -> None:
    if host in _BLOCKED_NAMES or host.endswith(_BLOCKED_SUFFIXES):
        raise BlockedURLError(f"refused: {host} names an internal host")


def check_url_syntax(url: str, allow_hosts: frozenset[str] = frozenset()) -> ParsedURL:
    """Everything `check_url` checks that needs no DNS: scheme, credentials, host, literal addresses."""
    parsed = parse_url(url)
    allow = normalise_allow_hosts(allow_hosts)
    if is_allow_listed(parsed.host, parsed.port, allow):
        return parsed
    if parsed.ip is not None:
        check_address(parsed.ip)
    else:
        _check_name(parsed.host)
    return parsed


def validate_addresses(
    host: str, port: int, addresses: Sequence[str], allow_hosts: frozenset[str]
) -> tuple[str, ...]:
    """Require every resolved address to be public or allow-listed; return them canonicalised."""
    if not addresses:
        raise BlockedURLError(f"refused: {host} resolved to no address")
    out: list[str] = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError as exc:
            raise BlockedURLError(f"refused: {host} resolved to a non-address {address!r}") from exc
        if not is_allow_listed(str(ip), port, allow_hosts):
            reason = blocked_reason(ip)
            if reason:
                shown = str(ip) if str(ip) == host else f"{host} resolves to {ip}, which"
                raise BlockedURLError(f"refused: {shown} is {reason}")
        if str(ip) not in out:
            out.append(str(ip))
    return tuple(out)


def check_url(
    url: str, allow_hosts: frozenset[str] = frozenset(), resolver: Resolver | None = None
) -> CheckedURL:
    """Vet a URL fully, DNS included (all answers must be public); raise BlockedURLError with the reason."""
    allow = normalise_allow_hosts(allow_hosts)
    parsed = check_url_syntax(url, allow)
    if is_allow_listed(parsed.host, parsed.port, allow):
        addresses = (
            (str(parsed.ip),) if parsed.ip else tuple((resolver or system_resolver)(parsed.host, parsed.port))
        )
        return CheckedURL(parsed.url, parsed.host, parsed.port, addresses)
    if parsed.ip is not None:
        return CheckedURL(parsed.url, parsed.host, parsed.port, (str(parsed.ip),))
    answers = (resolver or system_resolver)(parsed.host, parsed.port)
    return CheckedURL(
        parsed.url, parsed.host, parsed.port, validate_addresses(parsed.host, parsed.port, answers, allow)
    )


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore backend that connects only to validated addresses, resolving each host:port once."""

    def __init__(
        self,
        *,
        allow_hosts: frozenset[str] = frozenset(),
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
        resolve_timeout_s: float = 5.0,
    ) -> None:
        self.allow_hosts = normalise_allow_hosts(allow_hosts)
        self._resolver = resolver or system_resolver
        self._inner = inner or httpcore.AnyIOBackend()
        self._resolve_timeout_s = resolve_timeout_s
        # Pins live as long as the backend (one fetch batch): the address checked is the address used.
        self._pins: dict[tuple[str, int], tuple[str, ...]] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}

    async def resolve(self, raw_host: str, port: int) -> tuple[str, ...]:
        """The validated addresses of host:port, resolved at most once per backend."""
        host, ip = parse_host(raw_host)
        key = (host, port)
        if key in self._pins:
            return self._pins[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._pins:
                return self._pins[key]
            if is_allow_listed(host, port, self.allow_hosts):
                answers: Sequence[str] = [str(ip)] if ip else await self._lookup(host, port)
                pinned = tuple(str(ipaddress.ip_address(a.split("%", 1)[0])) for a in answers)
            elif ip is not None:
                pinned = (str(check_address(ip)),)
            else:
                _check_name(host)
                pinned = validate_addresses(host, port, await self._lookup(host, port), self.allow_hosts)
            self._pins[key] = pinned
            return pinned

    async def _lookup(self, host: str, port: int) -> Sequence[str]:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._resolver, host, port), timeout=self._resolve_timeout_s
            )
        except TimeoutError as exc:
            raise TransientError(f"resolving {host} timed out") from exc

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to the first validated address of host that accepts; never to an unchecked one."""
        addresses = await self.resolve(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Unix sockets are local by definition: always refused."""
        raise BlockedURLError("refused: unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        """Delegate to the wrapped backend."""
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx transport whose connections go through a GuardedNetworkBackend; never via a proxy."""

    def __init__(
        self,
        *,
        backend: GuardedNetworkBackend | None = None,
        allow_hosts: frozenset[str] = frozenset(),
        resolver: Resolver | None = None,
        limits: httpx.Limits | None = None,
        verify: bool = True,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=16, max_keepalive_connections=16)
        super().__init__(verify=verify, trust_env=False, limits=limits, proxy=None)
        self.backend = backend or GuardedNetworkBackend(allow_hosts=allow_hosts, resolver=resolver)
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        # httpx builds its pool without a network_backend hook; rebuild it with ours (same settings).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=self.backend,
        )
