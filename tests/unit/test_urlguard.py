"""SSRF guard: hostile URLs refused with a reason, public ones accepted; no real DNS, no network."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Sequence

import httpcore
import pytest

from stratus.errors import PermanentError
from stratus.ingest.urlguard import (
    BlockedURLError,
    GuardedNetworkBackend,
    check_url,
    check_url_syntax,
    normalise_allow_hosts,
)
from stratus.ingest.web import FetchOptions, parse_url_manifest
from stratus.settings import Settings

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

FAKE_DNS: dict[str, list[str]] = {
    "example.com": [PUBLIC_V4],
    "www.example.org": [PUBLIC_V4, PUBLIC_V6],
    "xn--mnchen-3ya.example": [PUBLIC_V4],
    "evil.example": ["169.254.169.254"],
    "internal.example": ["10.0.0.5"],
    "mixed.example": [PUBLIC_V4, "127.0.0.1"],
    "v6loop.example": ["::1"],
    "mapped.example": ["::ffff:10.0.0.1"],
    "ula.example": ["fd00::1234"],
    "cgnat.example": ["100.64.12.34"],
    "rebind.example": ["127.0.0.1"],
    "xn--nicode-evil-shb.example": ["192.168.0.1"],
    "nothing.example": [],
}


def fake_resolver(host: str, port: int) -> list[str]:
    """Answers from FAKE_DNS; any other name is a test bug, never a real lookup."""
    if host not in FAKE_DNS:
        raise AssertionError(f"unexpected DNS lookup of {host}")
    return FAKE_DNS[host]


# (url, a fragment the refusal reason must contain)
HOSTILE: list[tuple[str, str]] = [
    # schemes
    ("file:///etc/passwd", "scheme 'file'"),
    ("ftp://example.com/pub", "scheme 'ftp'"),
    ("gopher://example.com:70/_GET", "scheme 'gopher'"),
    ("data:text/html,<script>alert(1)</script>", "scheme 'data'"),
    ("javascript:alert(1)", "scheme 'javascript'"),
    ("dict://127.0.0.1:11211/stat", "scheme 'dict'"),
    ("//example.com/", "not an absolute URL"),
    # credentials and parser confusion
    ("http://user:pass@example.com/", "credentials"),
    ("http://user@example.com/", "credentials"),
    ("http://@example.com/", "credentials"),
    ("http://example.com\\@127.0.0.1/", "backslash"),
    ("http://example.com@127.0.0.1/", "credentials"),
    # malformed hosts
    ("http:///etc/passwd", "no host"),
    ("http://:80/", "no host"),
    ("http://exa mple.com/", "whitespace"),
    ("http://ex%61mple.com/", "percent-encoded"),
    ("http://example.com:0/", "port 0"),
    ("http://1.2.3.4.5/", "malformed IPv4"),
    ("http://foo.0x7f/", "malformed numeric host"),
    ("http://１２７.０.０.１/", "malformed URL"),
    ("http://ⓛocalhost/", "malformed URL"),
    # loopback, by address and by name
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://127.255.255.254:8080/", "loopback"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://localhost/", "internal host"),
    ("http://localhost./", "internal host"),
    ("http://app.localhost/", "internal host"),
    # numeric tricks, normalised the way the C resolver reads them
    ("http://2130706433/", "127.0.0.1 is a loopback"),
    ("http://0177.0.0.1/", "127.0.0.1 is a loopback"),
    ("http://0x7f.1/", "127.0.0.1 is a loopback"),
    ("http://127.1/", "127.0.0.1 is a loopback"),
    ("http://0x7f000001/", "127.0.0.1 is a loopback"),
    ("http://127.0.0.1./", "127.0.0.1 is a loopback"),
    ("http://0/", "0.0.0.0 is an unspecified"),
    ("http://012.0.0.5/", "10.0.0.5 is a private"),
    # private and shared
    ("http://10.0.0.5/", "10.0.0.5 is a private address"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "shared (CGNAT)"),
    # link-local and cloud metadata
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
    ("http://169.254.170.2/v2/credentials", "cloud metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "internal host"),
    # multicast, reserved, broadcast, unspecified
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://0.0.0.0:8080/", "unspecified"),
    ("http://[::]/", "unspecified"),
    # IPv6 ranges and IPv4 embedded in IPv6
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fd12:3456::1]/", "unique-local"),
    ("http://[fec0::1]/", "site-local"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
    ("http://[::ffff:7f00:1]/", "IPv4-mapped"),
    ("http://[::ffff:169.254.169.254]/", "IPv4-mapped"),
    ("http://[::127.0.0.1]/", "IPv4-compatible"),
    ("http://[64:ff9b::a00:1]/", "NAT64 address embedding 10.0.0.1"),
    ("http://[64:ff9b::7f00:1]/", "NAT64 address embedding 127.0.0.1"),
    ("http://[2002:7f00:1::]/", "6to4 address embedding 127.0.0.1"),
    ("http://[2002:a9fe:a9fe::]/", "6to4 address embedding 169.254.169.254"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    # names whose DNS answers are internal (resolver injected)
    ("http://evil.example/", "evil.example resolves to 169.254.169.254"),
    ("https://evil.example:8443/x", "cloud metadata"),
    ("http://internal.example/", "resolves to 10.0.0.5, which is a private address"),
    ("http://mixed.example/", "resolves to 127.0.0.1"),
    ("http://v6loop.example/", "resolves to ::1"),
    ("http://mapped.example/", "IPv4-mapped"),
    ("http://ula.example/", "unique-local"),
    ("http://cgnat.example/", "CGNAT"),
    ("http://rebind.example./", "resolves to 127.0.0.1"),
    ("http://ünicode-evil.example/", "resolves to 192.168.0.1"),
    ("http://nothing.example/", "resolved to no address"),
]

PUBLIC: list[str] = [
    "http://example.com/",
    "https://example.com:8443/path?q=1#frag",
    "HTTP://EXAMPLE.COM./",
    "http://www.example.org/",
    "http://münchen.example/",
    f"http://{PUBLIC_V4}/",
    f"http://[{PUBLIC_V6}]/",
    "http://[64:ff9b::5db8:d822]/",
    "http://[2002:5db8:d822::]/",
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE, ids=[u for u, _ in HOSTILE])
def test_hostile_url_is_refused_with_a_reason(url: str, reason: str) -> None:
    # given a hostile URL and DNS answers that never leave the process
    # when it is checked
    with pytest.raises(BlockedURLError) as caught:
        check_url(url, resolver=fake_resolver)
    # then it is refused, permanently, saying why
    assert isinstance(caught.value, PermanentError)
    assert str(caught.value).startswith("refused:")
    assert reason in str(caught.value)


def test_the_hostile_table_is_large_enough() -> None:
    assert len(HOSTILE) >= 30


@pytest.mark.parametrize("url", PUBLIC)
def test_public_url_is_accepted(url: str) -> None:
    # given a URL of a public host
    # when it is checked
    checked = check_url(url, resolver=fake_resolver)
    # then every address it resolves to is returned for pinning
    assert checked.addresses
    assert checked.url.startswith(("http://", "https://"))


def test_idna_host_is_checked_in_its_ascii_form() -> None:
    # given an internationalised host name
    # when it is checked
    checked = check_url("http://münchen.example/", resolver=fake_resolver)
    # then the punycode name is what was resolved and what will be requested
    assert checked.host == "xn--mnchen-3ya.example"
    assert "xn--mnchen-3ya.example" in checked.url


def test_numeric_host_needs_no_dns() -> None:
    # given a resolver that fails any lookup
    def no_dns(host: str, port: int) -> list[str]:
        raise AssertionError("resolved a literal")

    # when a literal public address in decimal form is checked
    checked = check_url("http://1572395042/", resolver=no_dns)
    # then it is normalised to dotted form without DNS
    assert checked.addresses == (PUBLIC_V4,)


def test_allow_list_is_empty_by_default() -> None:
    # given the settings of a deployment with no overrides
    settings = Settings()
    # then nothing is exempt from the guard
    assert settings.url_allow_hosts == frozenset()
    assert FetchOptions.from_settings(settings).allow_hosts == frozenset()


def test_allow_list_exempts_exact_host_and_port_only() -> None:
    # given an allow-list naming one loopback host:port
    allow = frozenset({"127.0.0.1:8080"})
    # when that host:port and a neighbour are checked
    checked = check_url("http://127.0.0.1:8080/x", allow_hosts=allow, resolver=fake_resolver)
    # then only the exact entry passes
    assert checked.addresses == ("127.0.0.1",)
    with pytest.raises(BlockedURLError, match="loopback"):
        check_url("http://127.0.0.1:8081/x", allow_hosts=allow, resolver=fake_resolver)
    with pytest.raises(BlockedURLError, match="loopback"):
        check_url("http://2130706433:8080/x", allow_hosts=frozenset({"localhost:8080"}))


def test_allow_list_entries_are_normalised() -> None:
    # given entries in mixed spellings
    entries = ["  LocalHost.  ", "[::1]:9000", "::1", "127.0.0.1:80", ""]
    # when normalised
    allow = normalise_allow_hosts(entries)
    # then they compare with normalised hosts
    assert allow == frozenset({"localhost", "[::1]:9000", "[::1]", "127.0.0.1:80"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:8080, localhost", frozenset({"127.0.0.1:8080", "localhost"})),
        ('["127.0.0.1", "[::1]:80"]', frozenset({"127.0.0.1", "[::1]:80"})),
        ("", frozenset()),
    ],
)
def test_allow_list_env_accepts_comma_list_and_json(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: frozenset[str]
) -> None:
    # given STRATUS_URL_ALLOW_HOSTS as a comma list or JSON array
    monkeypatch.setenv("STRATUS_URL_ALLOW_HOSTS", raw)
    # when settings are read
    settings = Settings()
    # then the set of entries is parsed
    assert settings.url_allow_hosts == expected


def test_syntax_check_alone_does_no_dns() -> None:
    # given a name that would need DNS
    # when only the syntax is checked
    parsed = check_url_syntax("http://Example.COM./a?b=1")
    # then the host is normalised and nothing was resolved
    assert parsed.host == "example.com"
    assert parsed.ip is None
    assert parsed.port == 80


# --- the connecting backend: what is checked is what is connected to --------------------------


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """An inner backend that records connection attempts instead of making them."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.attempts: list[tuple[str, int]] = []
        self.refuse = refuse

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.attempts.append((host, port))
        if host in self.refuse:
            raise httpcore.ConnectError(f"connection to {host} refused")
        return httpcore.AsyncNetworkStream()


def rebinding_resolver(
    answers: Sequence[list[str]],
) -> tuple[typing.Callable[[str, int], list[str]], list[str]]:
    """A resolver giving answers[0] first, then answers[1], ...; and the log of names it was asked."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    return resolve, asked


def test_backend_connects_to_the_checked_address_when_dns_rebinds() -> None:
    # given DNS that answers a public address first and loopback afterwards
    resolver, asked = rebinding_resolver([[PUBLIC_V4], ["127.0.0.1"]])
    inner = RecordingBackend()
    backend = GuardedNetworkBackend(resolver=resolver, inner=inner)

    # when the host is checked and then connected to twice
    async def scenario() -> None:
        assert await backend.resolve("rebind.example", 80) == (PUBLIC_V4,)
        await backend.connect_tcp("rebind.example", 80)
        await backend.connect_tcp("rebind.example", 80)

    asyncio.run(scenario())
    # then DNS was asked once and every connection went to the address that was checked
    assert asked == ["rebind.example"]
    assert inner.attempts == [(PUBLIC_V4, 80), (PUBLIC_V4, 80)]


def test_backend_refuses_a_rebound_answer_without_connecting() -> None:
    # given an earlier check (elsewhere) saw a public answer, and DNS now answers loopback
    resolver, _asked = rebinding_resolver([[PUBLIC_V4], ["127.0.0.1"]])
    check_url("http://rebind.example/", resolver=resolver)
    inner = RecordingBackend()
    backend = GuardedNetworkBackend(resolver=resolver, inner=inner)
    # when the backend connects
    with pytest.raises(BlockedURLError, match=r"resolves to 127\.0\.0\.1"):
        asyncio.run(backend.connect_tcp("rebind.example", 80))
    # then no connection was even attempted
    assert inner.attempts == []


def test_backend_refuses_literal_and_named_internal_hosts_without_connecting() -> None:
    # given a backend whose resolver must not be used
    inner = RecordingBackend()
    backend = GuardedNetworkBackend(resolver=fake_resolver, inner=inner)
    # when it is asked to connect to internal hosts in several spellings
    for host in ["127.0.0.1", "2130706433", "::ffff:127.0.0.1", "localhost", "169.254.169.254"]:
        with pytest.raises(BlockedURLError):
            asyncio.run(backend.connect_tcp(host, 80))
    with pytest.raises(BlockedURLError, match="unix sockets"):
        asyncio.run(backend.connect_unix_socket("/var/run/docker.sock"))
    # then nothing was connected to
    assert inner.attempts == []


def test_backend_falls_back_to_the_next_validated_address() -> None:
    # given a host with two public addresses, the first of which refuses connections
    inner = RecordingBackend(refuse=frozenset({PUBLIC_V4}))
    backend = GuardedNetworkBackend(resolver=fake_resolver, inner=inner)
    # when connecting
    asyncio.run(backend.connect_tcp("www.example.org", 443))
    # then the second validated address is used
    assert inner.attempts == [(PUBLIC_V4, 443), (PUBLIC_V6, 443)]


# --- manifests -------------------------------------------------------------------------------


def test_manifest_skips_comments_blanks_and_duplicates_and_reports_bad_lines() -> None:
    # given a manifest with comments, blanks, duplicates and refused lines
    text = "\n".join(
        [
            "# docs to ingest",
            "",
            "  https://example.com/a  ",
            "https://example.com/b",
            "https://example.com/a",
            "file:///etc/passwd",
            "http://169.254.169.254/latest/meta-data/",
            "not a url",
            "\thttps://example.com/c",
        ]
    )
    # when parsed
    urls, errors = parse_url_manifest(text, max_urls=100)
    # then URLs keep their order once each, and each refused line is reported with its number
    assert urls == ["https://example.com/a", "https://example.com/b", "https://example.com/c"]
    assert len(errors) == 3
    assert errors[0].startswith("line 6: refused: scheme 'file'")
    assert errors[1].startswith("line 7: refused: 169.254.169.254")
    assert errors[2].startswith("line 8: refused:")


def test_manifest_caps_the_number_of_urls() -> None:
    # given more URLs than the cap
    text = "\n".join(f"https://example.com/{i}" for i in range(7))
    # when parsed with a cap of 5
    urls, errors = parse_url_manifest(text, max_urls=5)
    # then the first 5 are kept and the overflow is reported
    assert urls == [f"https://example.com/{i}" for i in range(5)]
    assert errors == ["more than 5 URLs: 2 ignored"]


def test_fetch_options_follow_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # given URL settings in the environment
    monkeypatch.setenv("STRATUS_URL_MAX_BYTES", "1024")
    monkeypatch.setenv("STRATUS_URL_ALLOWED_CONTENT_TYPES", "text/html, Text/Plain")
    # when options are derived
    options = FetchOptions.from_settings(Settings())
    # then they carry the values
    assert options.max_bytes == 1024
    assert options.allowed_content_types == frozenset({"text/html", "text/plain"})
    assert options.max_redirects == 5
    assert "Stratus" in options.user_agent
