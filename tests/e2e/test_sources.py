"""Sources on the local stack: crawl a site on 127.0.0.1, re-sync after changes, interruptions, S3 repair."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stratus import services
from stratus.local.stack import LocalStack
from stratus.models import DocumentStatus, make_doc_id
from fakes.site import Site, page, sitemap, sitemap_index

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTION = "website"
BOILERPLATE = ("NAVTEXT", "FOOTERTEXT", "COOKIETEXT", "HEADERTEXT", "SIDEBARTEXT", "SCRIPTTEXT")


def div_page(title: str, body: str, links: list[str]) -> bytes:
    """A page without <main>: content in a div, the cookie banner and sidebar marked only by class."""
    return page(title, body, links).replace(b"<main>", b'<div class="content">').replace(b"</main>", b"</div>")


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[Site, Site]]:
    site, other = Site().start(), Site().start()
    base = site.url
    index_links = ["/docs/a", "/docs/b/", "/docs/c", "/docs/e", "/docs/a#intro", "/docs/a?utm_source=x",
                   "/docs/private/secret", "/blog/post", f"{other.url}/docs/x", "/docs/logo.png", "/docs/noindex"]  # fmt: skip
    site.pages = {
        "/robots.txt": ("text/plain", f"User-agent: *\nDisallow: /docs/private/\nSitemap: {base}/sitemap_index.xml\n".encode()),
        "/sitemap_index.xml": ("application/xml", sitemap_index([f"{base}/sitemap-pages.xml.gz"])),
        "/sitemap-pages.xml.gz": ("application/gzip", sitemap([f"{base}/docs/orphan", f"{base}/docs/a"], compress=True)),
        "/docs": ("text/html", page("Docs home", "<p>Welcome to the ACME documentation portal.</p>", index_links)),
        "/docs/a": ("text/html", page("Alpha", "<p>Alpha pages explain the aardvark feeding schedule.</p>", ["/docs/"])),
        "/docs/b": ("text/html", div_page("Bravo", "<p>Bravo covers the bobcat enclosure rules.</p>", ["/docs/"])),
        "/docs/c": ("text/html", page("Charlie", "<p>Charlie describes the chinchilla dust baths.</p>", ["/docs/"])),
        "/docs/e": ("text/html", page("Echo", "<p>Echo lists the emu egg incubation steps.</p>", ["/docs/"])),
        "/docs/orphan": ("text/html", div_page("Orphan", "<p>The orphan page documents the ocelot night walk.</p>", [])),
        "/docs/noindex": ("text/html", page("Hidden", "<p>Never index the narwhal.</p>", [],
                                            '<meta name="robots" content="noindex">')),
        "/docs/private/secret": ("text/html", page("Secret", "<p>secret</p>", [])),
    }  # fmt: skip
    other.pages = {"/docs/x": ("text/html", page("Other", "<p>other host</p>", []))}
    yield site, other
    site.stop()
    other.stop()


@pytest.fixture(scope="module")
def stack(model_dir: Path, sites: tuple[Site, Site]) -> Iterator[LocalStack]:
    site, other = sites
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    stack = LocalStack(
        REPO_ROOT,
        visibility_timeout_s=30,
        poll_wait_s=1,
        batch_window_cap_s=0.5,
        extra_environment={
            "STRATUS_URL_ALLOW_HOSTS": f"{site.host},{other.host}",
            "STRATUS_SOURCE_REQUESTS_PER_S": "50",
            "STRATUS_URL_RETRIES": "0",
            "STRATUS_SOURCES_TICK_S": "3600",
        },
    ).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> str:
    return stack.serve_api(port=0)


@pytest.fixture(scope="module")
def headers(stack: LocalStack) -> dict[str, str]:
    from stratus.auth import create_key

    return {"x-api-key": create_key(services.key_table(), "sources admin", ["*"], ["admin"]).key}


@pytest.fixture(scope="module")
def web_source(api: str, headers: dict[str, str], sites: tuple[Site, Site]) -> str:
    site, _ = sites
    response = httpx.post(
        f"{api}/v1/collections/{COLLECTION}/sources",
        json={"kind": "web", "urls": [f"{site.url}/docs/"], "sitemaps": [], "include": [], "exclude": [],
              "max_depth": 5, "max_pages": 1000, "schedule": None},
        headers=headers,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return str(response.json()["source_id"])


def run_sync(api: str, headers: dict[str, str], source_id: str, timeout_s: float = 120) -> dict[str, Any]:
    base = f"{api}/v1/collections/{COLLECTION}/sources/{source_id}/syncs"
    started = httpx.post(base, headers=headers)
    assert started.status_code == 202, started.text
    return wait_sync(api, headers, source_id, started.json()["sync_id"], timeout_s)


def wait_sync(api: str, headers: dict[str, str], source_id: str, sync_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = httpx.get(f"{api}/v1/collections/{COLLECTION}/sources/{source_id}/syncs/{sync_id}", headers=headers)
        assert view.status_code == 200, view.text
        if view.json()["state"] != "RUNNING":
            return dict(view.json())
        time.sleep(0.3)
    raise AssertionError(f"sync {sync_id} still RUNNING after {timeout_s}s")


def settled(urls: list[str], timeout_s: float = 120) -> dict[str, Any]:
    """Records of the URL documents once none is QUEUED/FETCHED/EMBEDDED."""
    ids = {url: make_doc_id(COLLECTION, url) for url in urls}
    deadline = time.monotonic() + timeout_s
    while True:
        records = services.document_table().get_many(COLLECTION, list(ids.values()))
        busy = [r for r in records.values() if r.status not in (DocumentStatus.INDEXED, DocumentStatus.DELETED,
                                                                  DocumentStatus.FAILED)]  # fmt: skip
        if not busy or time.monotonic() > deadline:
            return {url: records.get(doc_id) for url, doc_id in ids.items()}
        time.sleep(0.3)


def all_chunks() -> list[dict[str, Any]]:
    table = services.chunk_store().open(COLLECTION)
    assert table is not None
    return list(table.search().limit(None).to_list())


def search(api: str, headers: dict[str, str], query: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{api}/v1/collections/{COLLECTION}/search", json={"query": query, "top_k": 10},
                          headers=headers)  # fmt: skip
    assert response.status_code == 200, response.text
    return list(response.json()["hits"])


def test_first_sync_crawls_the_site_within_scope_and_robots(
    api: str, headers: dict[str, str], web_source: str, sites: tuple[Site, Site]
) -> None:
    site, other = sites
    # when the source is synced
    sync = run_sync(api, headers, web_source)

    # then it succeeded with exact counts: 6 pages fetched and added (one only in a gzip sitemap), and
    # robots (1), scope (blog, other host, footer's /legal: 3), type (png: 1), noindex (1) skipped
    assert sync["state"] == "SUCCEEDED", sync
    assert sync["counts"] == {"discovered": 12, "added": 6, "updated": 0, "unchanged": 0, "deleted": 0,
                              "failed": 0, "skipped": 6}, sync  # fmt: skip
    assert sync["skipped_by"] == {"robots": 1, "scope": 3, "type": 1, "noindex": 1}
    # and robots-disallowed and out-of-scope pages were never requested, nor was the other host
    paths = site.paths()
    assert "/robots.txt" in paths and "/sitemap-pages.xml.gz" in paths
    assert "/docs/private/secret" not in paths and "/blog/post" not in paths and "/legal" not in paths
    assert "/docs/logo.png" not in paths
    assert other.paths() == []
    # and every page was requested once (fragments, tracking parameters, trailing slashes collapse)
    assert paths.count("/docs/a") == 1 and paths.count("/docs/b") == 1
    assert all("Stratus" in hit.headers.get("User-Agent", "") for hit in site.log)
    # and the sitemap-only page is searchable, its hit naming the canonical URL and the source
    base = site.url
    urls = [f"{base}/docs", *(f"{base}/docs/{p}" for p in ("a", "b", "c", "e", "orphan"))]
    records = settled(urls)
    assert all(r is not None and r.status == DocumentStatus.INDEXED for r in records.values()), records
    top = search(api, headers, "ocelot night walk")[0]
    assert top["source"] == f"{base}/docs/orphan"
    assert top["metadata"]["source_id"] == web_source
    # and no navigation, header, footer, cookie banner, sidebar or script text reached any chunk
    chunks = all_chunks()
    assert chunks
    for chunk in chunks:
        assert not any(word in chunk["text"] for word in BOILERPLATE), chunk["text"]
