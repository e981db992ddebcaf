"""Sync machinery on the emulator: the frontier drains exactly once under concurrency; conditional GETs;
the SSRF guard on robots.txt and sitemap redirect hops."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fakes.site import Site

from stratus.ingest.web import FetchOptions, FetchResult, open_fetcher
from stratus.sources.store import SourceStore
from stratus.sources.sync import SyncConfig, SyncEngine, new_sync_id
from stratus_tools.local.stack import LocalStack


@pytest.fixture
def store(idle_stack: LocalStack) -> SourceStore:
    from stratus.settings import get_settings
    from stratus.stores import aws

    return SourceStore(aws.client("dynamodb"), get_settings().sources_table)


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site().start()
    yield site
    site.stop()


def test_frontier_drains_exactly_once_under_concurrency(store: SourceStore) -> None:
    # given a sync whose units each discover overlapping children, run by 8 workers with duplicate deliveries
    store.put_source("drain", "src_0000000000000001", {"kind": "web"}, None)
    sync_id = new_sync_id()
    assert store.start_sync("drain", "src_0000000000000001", sync_id, "web")
    assert not store.start_sync("drain", "src_0000000000000001", new_sync_id(), "web")  # one at a time
    rng = random.Random(7)
    children = {f"u#p{i}": [f"u#p{rng.randrange(120)}" for _ in range(3)] for i in range(120)}
    work: list[str] = ["start"]
    lock = threading.Lock()
    claims: list[bool] = []
    premature: list[str] = []

    def run(key: str) -> None:
        for child in children["u#p0"] if key == "start" else children[key]:
            if store.enqueue("src_0000000000000001", sync_id, child, key, 1, None) == "queued":
                with lock:
                    work.append(child)
                    if rng.random() < 0.2:
                        work.append(child)  # (SQS delivers some messages twice)
        if store.finish_unit("src_0000000000000001", sync_id, key, {"c_added": 1}, None):
            sync = store.get_sync("src_0000000000000001", sync_id)
            assert sync is not None
            if int(sync["pending"]) == 0:
                won = store.claim_finish("src_0000000000000001", sync_id)
                claims.append(won)
                queued = [
                    k for k, v in store.get_seen(sync_id, list(children)).items() if v["state"] == "queued"
                ]
                if won and queued:
                    premature.extend(queued)

    # when the workers drain the frontier
    with ThreadPoolExecutor(8) as pool:
        while True:
            with lock:
                batch, work[:] = list(work), []
            if not batch:
                break
            list(pool.map(run, batch))

    # then exactly one worker finished the sync, after every unit was done, and counts are exact
    assert claims.count(True) == 1
    assert premature == []
    sync = store.get_sync("src_0000000000000001", sync_id)
    assert sync is not None
    assert sync["state"] == "FINALIZING"
    assert int(sync["pending"]) == 0
    unique = len(store.get_seen(sync_id, list(children)))
    assert int(sync["c_discovered"]) == unique
    assert int(sync["c_added"]) == unique + 1  # (the start unit too; duplicates counted once)


def test_conditional_get_answers_304_without_a_body(site: Site) -> None:
    site.pages["/p"] = ("text/html", b"<p>hello</p>")
    options = FetchOptions(allow_hosts=frozenset({site.host}), retries=0)

    async def fetch(headers: dict[str, str] | None) -> FetchResult:
        async with open_fetcher(options) as fetcher:
            result: FetchResult = await fetcher.fetch(f"{site.url}/p", headers)
            return result

    # given a first fetch that returned the page and its ETag
    first = asyncio.run(fetch(None))
    assert first.ok
    assert first.status == 200
    assert first.body == b"<p>hello</p>"
    assert first.etag
    # when it is fetched again with If-None-Match
    second = asyncio.run(fetch({"If-None-Match": first.etag}))
    # then the answer is a 304 with no body to parse
    assert second.ok
    assert second.status == 304
    assert second.body is None
    assert site.log[-1].headers.get("If-None-Match") == first.etag


def _engine(store: SourceStore, site: Site, sent: list[str]) -> SyncEngine:
    options = FetchOptions(allow_hosts=frozenset({site.host}), retries=0)
    config = SyncConfig("b", "inbox/", 100.0, 900.0, "Stratus/0.1")
    none: Any = None
    return SyncEngine(store, none, none, sent.extend, none, options, config)


def test_guard_refuses_internal_redirects_of_robots_and_sitemaps(store: SourceStore, site: Site) -> None:
    # given a site whose robots.txt and sitemap redirect to the cloud metadata address
    site.pages.clear()
    redirect = {
        "/robots.txt": "http://169.254.169.254/latest/meta-data/",
        "/sm.xml": "http://10.0.0.1/sm.xml",
    }
    original = site.answer

    def answer(path: str, headers: dict[str, str]) -> tuple[int, str, bytes, dict[str, str]]:
        if path in redirect:
            return 302, "text/plain", b"", {"Location": redirect[path]}
        return original(path, headers)

    site.answer = answer
    engine = _engine(store, site, [])
    sync_id = new_sync_id()
    # when robots.txt is read and the sitemap fetched
    policy = engine._policy(sync_id, site.url)
    result = engine._fetch(sync_id, f"{site.url}/sm.xml", {}, engine._options)
    # then both hops were refused by the guard: everything is disallowed, the sitemap failed with the reason
    assert not policy.allows(f"{site.url}/docs/a")
    assert not result.ok
    assert result.permanent
    assert "10.0.0.1" in (result.error or "")
    assert site.paths() == ["/robots.txt", "/sm.xml"]


def test_a_due_schedule_starts_one_sync_however_many_ticks_overlap(store: SourceStore, site: Site) -> None:
    import time

    # given a source whose rate(1 hour) schedule came due a minute ago
    now = time.time()
    store.put_source("sched", "src_00000000000000aa", {"kind": "web", "schedule": "rate(1 hour)"}, now - 60)
    sent: list[str] = []
    engines = [_engine(store, site, sent) for _ in range(4)]
    # when four ticks run at once
    with ThreadPoolExecutor(4) as pool:
        started = [s for batch in pool.map(lambda e: e.run_due(now), engines) for s in batch]
    # then exactly one sync started, its first unit was queued, and the schedule moved on by an hour
    assert len(started) == 1
    assert len(sent) == 1
    source = store.get_source("sched", "src_00000000000000aa")
    assert source is not None
    assert source["active_sync"] == started[0]
    assert source["next_due"] == pytest.approx(now + 3600)
    # and a tick before the next due time starts nothing
    assert _engine(store, site, sent).run_due(now + 60) == []
