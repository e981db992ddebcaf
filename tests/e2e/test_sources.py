"""Sources on the local stack: crawl a site on 127.0.0.1, re-sync after changes, interruptions, S3 repair."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.env import restore_environment
from fakes.site import Site, page, sitemap, sitemap_index

from stratus import services
from stratus.models import DocumentStatus, make_doc_id
from stratus.settings import get_settings
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTION = "website"
BOILERPLATE = ("NAVTEXT", "FOOTERTEXT", "COOKIETEXT", "HEADERTEXT", "SIDEBARTEXT", "SCRIPTTEXT")


def div_page(title: str, body: str, links: list[str]) -> bytes:
    """A page without <main>: content in a div, the cookie banner and sidebar marked only by class."""
    return (
        page(title, body, links).replace(b"<main>", b'<div class="content">').replace(b"</main>", b"</div>")
    )


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[Site, Site]]:
    site, other = Site().start(), Site().start()
    base = site.url
    index_links = [
        "/docs/a",
        "/docs/b/",
        "/docs/c",
        "/docs/e",
        "/docs/a#intro",
        "/docs/a?utm_source=x",
        "/docs/private/secret",
        "/blog/post",
        f"{other.url}/docs/x",
        "/docs/logo.png",
        "/docs/noindex",
    ]
    site.pages = {
        "/robots.txt": (
            "text/plain",
            f"User-agent: *\nDisallow: /docs/private/\nSitemap: {base}/sitemap_index.xml\n".encode(),
        ),
        "/sitemap_index.xml": ("application/xml", sitemap_index([f"{base}/sitemap-pages.xml.gz"])),
        "/sitemap-pages.xml.gz": (
            "application/gzip",
            sitemap([f"{base}/docs/orphan", f"{base}/docs/a"], compress=True),
        ),
        "/docs": (
            "text/html",
            page("Docs home", "<p>Welcome to the ACME documentation portal.</p>", index_links),
        ),
        "/docs/a": (
            "text/html",
            page("Alpha", "<p>Alpha pages explain the aardvark feeding schedule.</p>", ["/docs/"]),
        ),
        "/docs/b": (
            "text/html",
            div_page("Bravo", "<p>Bravo covers the bobcat enclosure rules.</p>", ["/docs/"]),
        ),
        "/docs/c": (
            "text/html",
            page("Charlie", "<p>Charlie describes the chinchilla dust baths.</p>", ["/docs/"]),
        ),
        "/docs/e": ("text/html", page("Echo", "<p>Echo lists the emu egg incubation steps.</p>", ["/docs/"])),
        "/docs/orphan": (
            "text/html",
            div_page("Orphan", "<p>The orphan page documents the ocelot night walk.</p>", []),
        ),
        "/docs/noindex": (
            "text/html",
            page("Hidden", "<p>Never index the narwhal.</p>", [], '<meta name="robots" content="noindex">'),
        ),
        "/docs/private/secret": ("text/html", page("Secret", "<p>secret</p>", [])),
    }
    other.pages = {"/docs/x": ("text/html", page("Other", "<p>other host</p>", []))}
    yield site, other
    site.stop()
    other.stop()


SOURCES_ENVIRONMENT = (
    "STRATUS_URL_ALLOW_HOSTS",
    "STRATUS_SOURCE_REQUESTS_PER_S",
    "STRATUS_URL_RETRIES",
    "STRATUS_SOURCES_TICK_S",
)


@pytest.fixture(scope="module")
def stack(model_dir: Path, sites: tuple[Site, Site]) -> Iterator[LocalStack]:
    site, other = sites
    saved = {name: os.environ.get(name) for name in ("POWERTOOLS_METRICS_DISABLED", *SOURCES_ENVIRONMENT)}
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
    restore_environment(
        saved
    )  # the stack exports its environment: later tests must not inherit the allow list
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> str:
    return stack.serve_api(port=0)


@pytest.fixture(scope="module")
def headers(stack: LocalStack) -> dict[str, str]:
    from stratus.access.auth import create_key

    return {"x-api-key": create_key(services.key_table(), "sources admin", ["*"], ["admin"]).key}


@pytest.fixture(scope="module")
def web_source(api: str, headers: dict[str, str], sites: tuple[Site, Site]) -> str:
    site, _ = sites
    response = httpx.post(
        f"{api}/v1/collections/{COLLECTION}/sources",
        json={
            "kind": "web",
            "urls": [f"{site.url}/docs/"],
            "sitemaps": [],
            "include": [],
            "exclude": [],
            "max_depth": 5,
            "max_pages": 1000,
            "schedule": None,
        },
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["source_id"])


def run_sync(api: str, headers: dict[str, str], source_id: str, timeout_s: float = 120) -> dict[str, Any]:
    base = f"{api}/v1/collections/{COLLECTION}/sources/{source_id}/syncs"
    started = httpx.post(base, headers=headers)
    assert started.status_code == 202, started.text
    return wait_sync(api, headers, source_id, started.json()["sync_id"], timeout_s)


def wait_sync(
    api: str, headers: dict[str, str], source_id: str, sync_id: str, timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = httpx.get(
            f"{api}/v1/collections/{COLLECTION}/sources/{source_id}/syncs/{sync_id}", headers=headers
        )
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
        busy = [
            r
            for r in records.values()
            if r.status not in (DocumentStatus.INDEXED, DocumentStatus.DELETED, DocumentStatus.FAILED)
        ]
        if (not busy and len(records) == len(ids)) or time.monotonic() > deadline:
            return {url: records.get(doc_id) for url, doc_id in ids.items()}
        time.sleep(0.3)


def all_chunks() -> list[dict[str, Any]]:
    table = services.chunk_store().open(COLLECTION)
    assert table is not None
    return list(table.search().limit(None).to_list())


def search(api: str, headers: dict[str, str], query: str) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{api}/v1/collections/{COLLECTION}/search", json={"query": query, "top_k": 10}, headers=headers
    )
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
    assert sync["counts"] == {
        "discovered": 12,
        "added": 6,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "failed": 0,
        "skipped": 6,
    }, sync
    assert sync["skipped_by"] == {"robots": 1, "scope": 3, "type": 1, "noindex": 1}
    # and robots-disallowed and out-of-scope pages were never requested, nor was the other host
    paths = site.paths()
    assert "/robots.txt" in paths
    assert "/sitemap-pages.xml.gz" in paths
    assert "/docs/private/secret" not in paths
    assert "/blog/post" not in paths
    assert "/legal" not in paths
    assert "/docs/logo.png" not in paths
    assert other.paths() == []
    # and every page was requested once (fragments, tracking parameters, trailing slashes collapse)
    assert paths.count("/docs/a") == 1
    assert paths.count("/docs/b") == 1
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


def test_second_sync_after_an_edit_a_removal_and_an_addition(
    api: str, headers: dict[str, str], web_source: str, sites: tuple[Site, Site]
) -> None:
    site, _ = sites
    base = site.url
    before = settled([f"{base}/docs/e", f"{base}/docs/orphan"])
    # given the site changed: a edited, b now 404 (still linked), c no longer linked anywhere, d added
    site.pages["/docs/a"] = (
        "text/html",
        page("Alpha", "<p>Alpha now explains the axolotl gill care.</p>", ["/docs/"]),
    )
    del site.pages["/docs/b"]
    index_links = [
        "/docs/a",
        "/docs/b",
        "/docs/d",
        "/docs/e",
        "/docs/private/secret",
        "/blog/post",
        "http://other.invalid/docs/x",
        "/docs/logo.png",
        "/docs/noindex",
    ]
    site.pages["/docs"] = (
        "text/html",
        page("Docs home", "<p>Welcome to the ACME documentation portal.</p>", index_links),
    )
    site.pages["/docs/d"] = (
        "text/html",
        page("Delta", "<p>Delta introduces the dingo training plan.</p>", ["/docs/"]),
    )
    site.log.clear()

    # when the source is synced again
    sync = run_sync(api, headers, web_source)

    # then the counts are exact: d added; the index and a updated; e and the orphan unchanged (304);
    # b deleted (404) and c deleted (a complete sync no longer reaches it)
    assert sync["state"] == "SUCCEEDED", sync
    assert sync["counts"] == {
        "discovered": 12,
        "added": 1,
        "updated": 2,
        "unchanged": 2,
        "deleted": 2,
        "failed": 0,
        "skipped": 6,
    }, sync
    # and each unchanged page cost one conditional request answered 304, and nothing was re-encoded
    unchanged = [hit for hit in site.log if hit.path in ("/docs/e", "/docs/orphan")]
    assert [hit.status for hit in unchanged] == [304, 304]
    assert all(hit.headers.get("If-None-Match") for hit in unchanged)
    records = settled([f"{base}/docs/{p}" for p in ("a", "b", "c", "d", "e", "orphan")])
    for name in ("e", "orphan"):
        record, old = records[f"{base}/docs/{name}"], before[f"{base}/docs/{name}"]
        assert record is not None
        assert old is not None
        assert (record.version, record.updated_at, record.chunks_embedded) == (
            old.version,
            old.updated_at,
            old.chunks_embedded,
        )
    assert records[f"{base}/docs/a"].status == DocumentStatus.INDEXED
    assert records[f"{base}/docs/b"].status == DocumentStatus.DELETED
    assert records[f"{base}/docs/c"].status == DocumentStatus.DELETED
    # and the removed pages are gone from search, the new and edited ones found
    time.sleep(1.5)
    sources = {hit["source"] for hit in search(api, headers, "bobcat enclosure chinchilla dust baths")}
    assert f"{base}/docs/b" not in sources
    assert f"{base}/docs/c" not in sources
    assert search(api, headers, "dingo training plan")[0]["source"] == f"{base}/docs/d"
    assert search(api, headers, "axolotl gill care")[0]["source"] == f"{base}/docs/a"
    assert not any("aardvark" in chunk["text"] for chunk in all_chunks())


def test_interrupted_sync_deletes_nothing(
    api: str, headers: dict[str, str], web_source: str, sites: tuple[Site, Site], stack: LocalStack
) -> None:
    from stratus.pipeline.fetch_function import build_engine

    site, _ = sites
    base = site.url
    # given the index no longer links e (a complete sync would delete it), and the site hangs on a
    index_links = ["/docs/a", "/docs/d"]
    site.pages["/docs"] = (
        "text/html",
        page("Docs home", "<p>Welcome to the ACME documentation portal.</p>", index_links),
    )
    site.hang.add("/docs/a")
    site.release.clear()
    started = httpx.post(f"{api}/v1/collections/{COLLECTION}/sources/{web_source}/syncs", headers=headers)
    assert started.status_code == 202
    sync_id = started.json()["sync_id"]
    deadline = time.monotonic() + 60
    while "/docs/a" not in [h.path for h in site.log] and time.monotonic() < deadline:
        if not any(h.path == "/docs/a" for h in list(site.log)):
            time.sleep(0.2)
        if len(site.log) > 0 and time.monotonic() > deadline:
            break
    # a second sync of the same source is refused while this one runs
    assert (
        httpx.post(
            f"{api}/v1/collections/{COLLECTION}/sources/{web_source}/syncs", headers=headers
        ).status_code
        == 409
    )

    # when the sync makes no progress for longer than the stale limit
    ended = build_engine().watchdog(now=time.time() + 10_000)
    site.release.set()
    site.hang.clear()

    # then it is FAILED with the reason, and every document it did not prove gone is still there
    assert sync_id in ended
    view = wait_sync(api, headers, web_source, sync_id, 10)
    assert view["state"] == "FAILED"
    assert "interrupted" in (view["error"] or "")
    time.sleep(3)  # (the hung unit finishes meanwhile: it must not finalize the failed sync)
    records = settled([f"{base}/docs/e", f"{base}/docs/orphan", f"{base}/docs/d"])
    assert all(r is not None and r.status == DocumentStatus.INDEXED for r in records.values()), records
    assert wait_sync(api, headers, web_source, sync_id, 5)["state"] == "FAILED"
    # and the source is free for the next sync
    source = httpx.get(f"{api}/v1/collections/{COLLECTION}/sources/{web_source}", headers=headers).json()
    assert source["active_sync"] is None


def test_s3_source_sync_repairs_dropped_notifications(
    api: str, headers: dict[str, str], stack: LocalStack
) -> None:
    s3 = stack.client("s3")
    bucket = stack.plan.bucket
    key_kept, key_gone = f"inbox/{COLLECTION}/handbook/kept.md", f"inbox/{COLLECTION}/handbook/gone.md"
    # given two indexed handbook pages
    s3.put_object(Bucket=bucket, Key=key_kept, Body=b"# Kept\n\nThe kestrel nest box stays.")
    s3.put_object(Bucket=bucket, Key=key_gone, Body=b"# Gone\n\nThe gannet colony moved away.")
    settled(["handbook/kept.md", "handbook/gone.md"])
    # and, with notifications dropped, one object deleted and a new one written
    config = s3.get_bucket_notification_configuration(Bucket=bucket)
    config.pop("ResponseMetadata", None)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    s3.delete_object(Bucket=bucket, Key=key_gone)
    s3.put_object(
        Bucket=bucket,
        Key=f"inbox/{COLLECTION}/handbook/dropped.md",
        Body=b"# Dropped\n\nThe dormouse hibernation log.",
    )
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    documents = services.document_table()
    assert documents.get(COLLECTION, make_doc_id(COLLECTION, "handbook/dropped.md")) is None

    # when an S3 source of the prefix is synced
    created = httpx.post(
        f"{api}/v1/collections/{COLLECTION}/sources",
        json={"kind": "s3", "prefix": "handbook/"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    sync = run_sync(api, headers, created.json()["source_id"])

    # then the never-indexed object is queued and indexed, the document of the deleted object deleted
    assert sync["state"] == "SUCCEEDED", sync
    assert sync["counts"] == {
        "discovered": 2,
        "added": 1,
        "updated": 0,
        "unchanged": 1,
        "deleted": 1,
        "failed": 0,
        "skipped": 0,
    }, sync
    records = settled(["handbook/dropped.md", "handbook/gone.md", "handbook/kept.md"])
    assert records["handbook/dropped.md"].status == DocumentStatus.INDEXED
    assert records["handbook/gone.md"].status == DocumentStatus.DELETED
    assert records["handbook/kept.md"].status == DocumentStatus.INDEXED
    time.sleep(1.5)
    assert search(api, headers, "dormouse hibernation")[0]["source"] == "handbook/dropped.md"
    assert not any("gannet" in chunk["text"] for chunk in all_chunks())


def test_cli_adds_lists_and_syncs_with_the_exit_status_of_the_sync(
    api: str, headers: dict[str, str], sites: tuple[Site, Site], capsys: pytest.CaptureFixture[str]
) -> None:
    from stratus.settings import get_settings
    from stratus_tools.cli import main

    site, _ = sites
    os.environ["STRATUS_API_KEY"] = headers["x-api-key"]
    get_settings.cache_clear()
    try:
        # given a source added with the CLI whose only start URL is missing
        cli = ["sources", "--api-url", api]
        assert main([*cli, "add", "web", f"{site.url}/missing/", "-c", COLLECTION, "--max-pages", "10"]) == 0
        source_id = capsys.readouterr().out.strip().splitlines()[-1]
        assert main([*cli, "list", "-c", COLLECTION]) == 0
        assert source_id in capsys.readouterr().out
        # when it is synced, then the sync FAILED (nothing could be fetched) and the exit status says so
        assert main([*cli, "sync", source_id, "-c", COLLECTION, "--timeout", "60"]) == 1
        out = capsys.readouterr().out
        assert "FAILED" in out
        assert "HTTP 404" in out
        # and a source that can be fetched syncs with exit status 0 and its counts table
        assert main([*cli, "add", "web", f"{site.url}/docs/e", "-c", COLLECTION]) == 0
        second = capsys.readouterr().out.strip().splitlines()[-1]
        assert main([*cli, "sync", second, "-c", COLLECTION, "--timeout", "60"]) == 0
        out = capsys.readouterr().out
        assert "SUCCEEDED" in out
        assert "discovered" in out
    finally:
        os.environ.pop("STRATUS_API_KEY", None)
        get_settings.cache_clear()


def test_unchanged_resync_without_a_sitemap_still_reaches_every_page(
    api: str, headers: dict[str, str], sites: tuple[Site, Site]
) -> None:
    # given a site without a sitemap whose pages are reachable only through links, synced once
    _, other = sites
    other.pages = {
        "/w": ("text/html", page("Wiki", "<p>The wiki start page about walruses.</p>", ["/w/x"])),
        "/w/x": ("text/html", page("X", "<p>Xerus burrows are deep.</p>", ["/w/y"])),
        "/w/y": ("text/html", page("Y", "<p>Yaks graze at altitude.</p>", ["/w"])),
    }
    created = httpx.post(
        f"{api}/v1/collections/{COLLECTION}/sources",
        json={"kind": "web", "urls": [f"{other.url}/w/"]},
        headers=headers,
    )
    source_id = created.json()["source_id"]
    first = run_sync(api, headers, source_id)
    assert first["counts"]["added"] == 3
    other.log.clear()

    # when it is synced again with nothing changed (every page answers 304, no body to read links from)
    second = run_sync(api, headers, source_id)

    # then the links stored with each page were followed: all three unchanged, none deleted
    # (the footer's /legal link is out of scope, skipped as in the first sync)
    assert second["state"] == "SUCCEEDED"
    assert second["counts"] == {
        "discovered": 4,
        "added": 0,
        "updated": 0,
        "unchanged": 3,
        "deleted": 0,
        "failed": 0,
        "skipped": 1,
    }
    assert sorted(h.status for h in other.log if h.path.startswith("/w")) == [304, 304, 304]
    records = settled([f"{other.url}/w", f"{other.url}/w/x", f"{other.url}/w/y"])
    assert all(r is not None and r.status == DocumentStatus.INDEXED for r in records.values())


def docx_bytes(sentence: str) -> bytes:
    """A small Word file with one heading and `sentence`."""
    import io

    from docx import Document

    document = Document()
    document.add_heading("Field guide", level=1)
    document.add_paragraph(sentence)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_redirects_header_noindex_linked_office_files_and_a_failing_page(
    api: str, headers: dict[str, str], sites: tuple[Site, Site]
) -> None:
    # given a site section with a redirect to another in-scope page, a page marked noindex by its
    # X-Robots-Tag header, a linked Word file, a page whose last segment has a dot, a stylesheet link,
    # and a page whose only child is linked from nowhere else
    _, other = sites
    docx_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    hub_links = [
        "/h/old",
        "/h/new",
        "/h/tagged",
        "/h/guide.docx",
        "/h/release/v2.0",
        "/h/flaky",
        "/h/site.css",
    ]
    other.pages.update(
        {
            "/h": ("text/html", page("Hub", "<p>The hub lists the heron field notes.</p>", hub_links)),
            "/h/new": ("text/html", page("New", "<p>The new page covers the newt pond survey.</p>", [])),
            "/h/tagged": ("text/html", page("Tagged", "<p>The tagged page names the tapir.</p>", [])),
            "/h/guide.docx": (docx_type, docx_bytes("The guide explains the gecko terrarium humidity.")),
            "/h/release/v2.0": (
                "text/html",
                page("Release", "<p>Version two adds the vole tunnel map.</p>", []),
            ),
            "/h/flaky": ("text/html", page("Flaky", "<p>Flaky mentions the finch feeder.</p>", ["/h/child"])),
            "/h/child": ("text/html", page("Child", "<p>The child page tracks the chamois herd.</p>", [])),
            "/h/site.css": ("text/css", b"body { color: black }"),
        }
    )
    other.redirects["/h/old"] = "/h/new"
    other.headers["/h/tagged"] = {"X-Robots-Tag": "otherbot: nofollow\nnoindex"}
    created = httpx.post(
        f"{api}/v1/collections/{COLLECTION}/sources",
        json={"kind": "web", "urls": [f"{other.url}/h/"]},
        headers=headers,
    )
    source_id = created.json()["source_id"]
    other.log.clear()

    # when it is synced
    first = run_sync(api, headers, source_id)

    # then the redirect is crawled once, as its target; the header's noindex and the stylesheet are
    # skipped; the Word file and the dotted page are documents; exact counts
    assert first["state"] == "SUCCEEDED", first
    assert first["counts"] == {
        "discovered": 10,
        "added": 6,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "failed": 0,
        "skipped": 4,
    }, first
    assert first["skipped_by"] == {"redirect": 1, "noindex": 1, "type": 1, "scope": 1}
    paths = other.paths()
    assert "/h/site.css" not in paths
    assert paths.count("/h/release/v2.0") == 1
    base = other.url
    live = [f"{base}/h", f"{base}/h/new", f"{base}/h/guide.docx", f"{base}/h/release/v2.0", f"{base}/h/flaky"]
    records = settled([*live, f"{base}/h/child", f"{base}/h/old", f"{base}/h/tagged"])
    assert records[f"{base}/h/old"] is None
    assert records[f"{base}/h/tagged"] is None
    assert search(api, headers, "gecko terrarium humidity")[0]["source"] == f"{base}/h/guide.docx"
    assert search(api, headers, "vole tunnel map")[0]["source"] == f"{base}/h/release/v2.0"
    assert search(api, headers, "newt pond survey")[0]["source"] == f"{base}/h/new"

    # when the page that alone links to the child fails (503) during the next sync
    other.failing["/h/flaky"] = 503
    other.log.clear()
    second = run_sync(api, headers, source_id)

    # then the failure is reported with its reason, and neither it nor the child it links is deleted:
    # a page that failed is not proven gone, and the links it had last time still count as reached
    assert second["state"] == "SUCCEEDED", second
    assert second["counts"] == {
        "discovered": 10,
        "added": 0,
        "updated": 0,
        "unchanged": 5,
        "deleted": 0,
        "failed": 1,
        "skipped": 4,
    }, second
    assert [f["url"] for f in second["failures"]] == [f"{base}/h/flaky"]
    assert "503" in second["failures"][0]["reason"]
    after = settled([f"{base}/h/flaky", f"{base}/h/child"])
    assert all(r is not None and r.status == DocumentStatus.INDEXED for r in after.values()), after
    assert search(api, headers, "chamois herd")[0]["source"] == f"{base}/h/child"
