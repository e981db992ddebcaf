"""Sources building blocks: URL normalisation, scope, robots.txt, hostile sitemaps, links, schedules."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import pytest

from stratus.errors import PermanentError
from stratus.ingest.parsing import parse_document
from stratus.sources.links import header_robots, read_links
from stratus.sources.models import WebSourceRequest
from stratus.sources.robots import RobotsPolicy, product_token
from stratus.sources.schedule import next_run
from stratus.sources.sitemaps import parse_sitemap
from stratus.sources.urls import ASSET_EXTENSIONS, Scope, extension, normalise_url


@pytest.mark.parametrize(
    "variant",
    [
        "http://Example.COM:80/docs/a",
        "http://example.com/docs/a/",
        "http://example.com/docs/a#section",
        "http://example.com/docs/a?utm_source=news&utm_medium=mail",
        "http://example.com/docs/a?gclid=123",
        "HTTP://example.com./docs/a",
    ],
)
def test_variants_of_one_page_normalise_to_one_url(variant: str) -> None:
    # given a variant of the same page / then it normalises to the one canonical URL
    assert normalise_url(variant) == "http://example.com/docs/a"


def test_normalisation_keeps_real_parameters_sorted() -> None:
    assert normalise_url("https://e.com:443/p?b=2&a=1&utm_campaign=x") == "https://e.com/p?a=1&b=2"
    assert normalise_url("https://e.com:8443/") == "https://e.com:8443/"


def test_scope_is_scheme_host_and_path_prefix_with_include_and_exclude() -> None:
    # given a source started at /docs/ with an exclusion
    scope = Scope.build(["http://e.com/docs/"], [], [], ["*/docs/old/*"])
    # then pages under /docs are in scope, others (other host, port, scheme, prefix) are not
    assert scope.allows("http://e.com/docs")
    assert scope.allows("http://e.com/docs/guide/intro")
    assert not scope.allows("http://e.com/docsxyz")
    assert not scope.allows("http://e.com/blog/post")
    assert not scope.allows("http://e.com:8080/docs/a")
    assert not scope.allows("https://e.com/docs/a")
    assert not scope.allows("http://other.com/docs/a")
    assert not scope.allows("http://e.com/docs/old/page")
    only = Scope.build(["http://e.com/"], [], ["*/api/*"], [])
    assert only.allows("http://e.com/api/x")
    assert not only.allows("http://e.com/guide/x")


def test_robots_rules_crawl_delay_and_sitemaps() -> None:
    text = "User-agent: *\nDisallow: /private/\nCrawl-delay: 2\nSitemap: http://e.com/sm.xml\n"
    policy = RobotsPolicy(text, user_agent=product_token("Stratus/0.1 (+https://x)"))
    assert product_token("Stratus/0.1 (+https://x)") == "Stratus"
    assert policy.allows("http://e.com/docs/a")
    assert not policy.allows("http://e.com/private/x")
    assert policy.crawl_delay() == 2.0
    assert policy.sitemaps() == ["http://e.com/sm.xml"]
    # an unreachable robots.txt disallows everything; a missing one (4xx) allows everything
    assert not RobotsPolicy(None, allow_all=False).allows("http://e.com/")
    assert RobotsPolicy(None, allow_all=True).allows("http://e.com/")


def test_sitemap_urlset_index_and_gzip() -> None:
    urlset = b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
    urlset += b"<url><loc> http://e.com/a </loc></url></urlset>"
    assert parse_sitemap(urlset, 10_000).urls == ["http://e.com/a"]
    assert parse_sitemap(gzip.compress(urlset), 10_000).urls == ["http://e.com/a"]
    index = b"<sitemapindex><sitemap><loc>http://e.com/s1.xml.gz</loc></sitemap></sitemapindex>"
    assert parse_sitemap(index, 10_000).sitemaps == ["http://e.com/s1.xml.gz"]


def test_gzip_sitemap_bomb_is_refused_at_the_decoded_limit() -> None:
    # given 10 MB of zeros compressed to ~10 KB
    bomb = gzip.compress(b"<urlset>" + b" " * 10_000_000 + b"</urlset>")
    assert len(bomb) < 50_000
    # then decoding stops at the limit instead of inflating it all
    with pytest.raises(PermanentError, match="inflates past"):
        parse_sitemap(bomb, 1_000_000)


def test_sitemap_entity_expansion_is_refused() -> None:
    # given a billion-laughs sitemap
    laughs = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
    laughs += b"<urlset><url><loc>&b;</loc></url></urlset>"
    # then it is refused before any entity is expanded
    with pytest.raises(PermanentError, match="refused"):
        parse_sitemap(laughs, 1_000_000)


def test_links_canonical_and_robots_meta() -> None:
    html = b"""<html><head><base href="/docs/"><link rel="canonical" href="http://e.com/docs/a">
    <meta name="robots" content="noindex, follow"></head><body>
    <a href="b">b</a><a href="#top">top</a><a href="mailto:x@e.com">m</a><a rel="nofollow" href="/x">x</a>
    <a href="http://other.com/y">y</a></body></html>"""
    found = read_links(html, "http://e.com/start")
    assert found.links == ["http://e.com/docs/b", "http://other.com/y"]
    assert found.canonical == "http://e.com/docs/a"
    assert found.noindex
    assert not found.nofollow


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ("noindex", (True, False)),
        ("NoIndex, NoFollow", (True, True)),
        ("none", (True, True)),
        ("stratus: noindex", (True, False)),
        ("otherbot: noindex, nofollow", (False, False)),
        ("otherbot: noindex\nnofollow", (False, True)),
        ("unavailable_after: 25 Jun 2010 15:00:00 PST, noarchive", (False, False)),
        ("otherbot: noarchive, stratus: nofollow", (False, True)),
        ("", (False, False)),
    ],
)
def test_x_robots_tag_header_applies_to_all_crawlers_or_to_ours(
    headers: str, expected: tuple[bool, bool]
) -> None:
    # given X-Robots-Tag headers (one per line), some scoped to a user agent
    # when read for the crawler whose product token is "Stratus"
    # then only the directives for every crawler or for Stratus count
    assert header_robots(headers, "Stratus") == expected


@pytest.mark.parametrize(
    ("url", "fetched"),
    [
        ("http://e.com/docs/guide.docx", True),
        ("http://e.com/docs/sales.xlsx", True),
        ("http://e.com/docs/export.csv", True),
        ("http://e.com/docs/release/v2.0", True),
        ("http://e.com/docs/page.cfm", True),
        ("http://e.com/docs/report.pdf", True),
        ("http://e.com/docs/logo.png", False),
        ("http://e.com/docs/app.js", False),
        ("http://e.com/docs/feed.xml", False),
        ("http://e.com/docs/bundle.zip", False),
    ],
)
def test_crawl_requests_every_link_but_assets(url: str, fetched: bool) -> None:
    # given a link's last path segment; then only known asset types are left unrequested
    assert (extension(url) not in ASSET_EXTENSIONS) is fetched


def test_cookie_banner_and_div_sidebar_never_reach_the_text() -> None:
    # given a page without semantic tags: banner and sidebar marked only by id/class
    html = b"""<html><body><div id="cookie-banner">We use cookies COOKIETEXT</div>
    <div class="sidebar">SIDEBARTEXT</div><div class="breadcrumbs">Home / Docs</div>
    <div class="content"><h1>Guide</h1><p>The real content of the page.</p></div></body></html>"""
    # when it is parsed
    text = "\n".join(s.text for s in parse_document(html, "guide.html", "text/html").sections)
    # then only the content is left
    assert "real content" in text
    assert "COOKIETEXT" not in text
    assert "SIDEBARTEXT" not in text
    assert "Home / Docs" not in text


def test_schedules_rate_and_cron() -> None:
    start = datetime(2026, 12, 1, 10, 30, tzinfo=UTC).timestamp()
    assert next_run("rate(5 minutes)", start) == start + 300
    assert next_run("rate(1 day)", start) == start + 86400
    nightly = next_run("cron(0 3 * * ? *)", start)
    assert datetime.fromtimestamp(nightly, UTC) == datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    monday = next_run("cron(15 9 ? * MON *)", start)  # 2026-12-01 is a Tuesday
    assert datetime.fromtimestamp(monday, UTC) == datetime(2026, 12, 7, 9, 15, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["daily", "rate(5 fortnights)", "cron(0 3 * *)", "cron(99 3 * * ? *)"])
def test_bad_schedules_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"rate|cron"):
        WebSourceRequest(kind="web", urls=["http://e.com/"], schedule=bad)
