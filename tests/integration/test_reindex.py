"""`stratus reindex` on the local stack: token -> heading chunks into a new table, switched atomically
while a query loop runs (0 errors, never an empty answer), the old table dropped after the switch."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.env import restore_environment

from stratus import services
from stratus.models import DocumentStatus
from stratus.stores.collections import CollectionSettings
from stratus.stores.vectors import collection_for_table, table_name_for
from stratus_tools.local.stack import LocalStack
from stratus_tools.reindex import build_reindexer
from stratus_tools.uploads import collect_uploads, upload_files, wait_for_documents

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTION = "reindex-demo"
SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def stack(model_dir: Path) -> Iterator[LocalStack]:
    """The whole local stack, readers trusting a generation for 0.5 s, the old table kept 2 s."""
    overrides = {
        "POWERTOOLS_METRICS_DISABLED": "true",
        "STRATUS_COLLECTION_GENERATION_TTL_S": "0.5",
        "STRATUS_REINDEX_DROP_AFTER_S": "2",
        # The query loop asks as fast as it can: not a test of the rate limiter.
        "STRATUS_RATE_LIMIT_PER_S": "10000",
        "STRATUS_RATE_LIMIT_BURST": "10000",
    }
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    services.reset()
    local = LocalStack(REPO_ROOT, visibility_timeout_s=30, poll_wait_s=1, batch_window_cap_s=0.5)
    try:
        local.start(run_functions=True)
        local.serve_api(port=0)
        yield local
    finally:
        local.stop()
        restore_environment(saved)
        services.reset()


def query_loop(url: str, headers: dict[str, str], stop: threading.Event, log: list[Any]) -> None:
    """Search until told to stop; log each answer's status and the chunk texts of its hits."""
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            try:
                response = http.post(url, json={"query": SENTENCE, "top_k": 10}, headers=headers)
                hits = response.json().get("hits", []) if response.status_code == 200 else []
                log.append((response.status_code, [h["text"] for h in hits], time.monotonic()))
            except (httpx.HTTPError, ValueError) as error:
                log.append((repr(error), [], time.monotonic()))


def test_reindex_from_token_to_heading_chunks_switches_with_no_search_errors(
    stack: LocalStack, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    # given a collection of three documents, each one ~220-token section that token chunking splits
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"note-{i}.md").write_text(f"# Note {i}\n\n## Foxes {i}\n\n" + f"{SENTENCE} " * 22 + "\n")
    since = time.time()
    ids = upload_files(stack.client("s3"), stack.plan.bucket, "inbox/", COLLECTION, collect_uploads([folder]))
    records = wait_for_documents(services.document_table(), COLLECTION, ids, 240, since=since)
    assert {r.status for r in records} == {DocumentStatus.INDEXED}, [r.detail for r in records]
    assert all(r.chunk_count >= 2 for r in records)
    old_table = services.chunk_store().open(COLLECTION)
    assert old_table is not None
    assert old_table.count_rows() >= 6

    # and a query loop running against the API
    url = f"{stack.api_url}/v1/collections/{COLLECTION}/search"
    stop = threading.Event()
    log: list[Any] = []
    loop = threading.Thread(target=query_loop, args=(url, api_headers, stop, log), daemon=True)
    loop.start()
    time.sleep(1.0)

    # when the collection is set to heading chunking and reindexed
    services.collection_settings().put(COLLECTION, CollectionSettings(chunking="heading"))
    switch_started = time.monotonic()
    report = build_reindexer().reindex(COLLECTION)
    time.sleep(1.5)  # past the readers' 0.5 s generation TTL, and the drop
    stop.set()
    loop.join(timeout=30)

    # then it rebuilt every document into generation 1, switched, and dropped generation 0
    assert report.switched, report.to_public()
    assert report.dropped_old
    assert (report.old_generation, report.new_generation, report.documents) == (0, 1, 3)
    assert report.chunks == 3
    assert not report.skipped
    tables = [n for n in services.chunk_store().table_names() if collection_for_table(n) == COLLECTION]
    assert tables == [table_name_for(COLLECTION, 1)]
    # and every search during the reindex answered 200 with hits (no downtime, no error)
    assert len(log) >= 10
    errors = [entry for entry in log if entry[0] != 200 or not entry[1]]
    assert errors == []
    # and the answers moved from token chunks (old table) to whole sections (new table)
    before = [texts for _, texts, at in log if at < switch_started]
    after = log[-1][1]
    assert before
    assert all(len(texts) >= 6 for texts in before)
    assert len(after) == 3
    assert all(text.count(SENTENCE) == 22 for text in after)
    during = [entry for entry in log if entry[2] >= switch_started]
    print(f"\nreindex {report.seconds}s: {len(log)} searches ({len(during)} from the reindex on), 0 errors")


def test_a_document_indexed_during_the_rebuild_is_in_the_new_table_after_the_switch(
    stack: LocalStack, tmp_path: Path
) -> None:
    # given a collection of one document
    collection = "reindex-live"
    first = tmp_path / "first"
    first.mkdir()
    (first / "a.md").write_text("# A\n\nThe lighthouse keeper counts gulls.\n")
    since = time.time()
    s3 = stack.client("s3")
    ids = upload_files(s3, stack.plan.bucket, "inbox/", collection, collect_uploads([first]))
    wait_for_documents(services.document_table(), collection, ids, 240, since=since)

    # when a second document is uploaded and indexed (into the old table) while the rebuild runs
    reindexer = build_reindexer()
    rebuild = reindexer._write
    late = tmp_path / "late"
    late.mkdir()
    (late / "b.md").write_text("# B\n\nThe ferry captain paints the harbour crane.\n")

    def write_then_upload(*args: Any, **kwargs: Any) -> int:
        written = rebuild(*args, **kwargs)
        if not kwargs.get("replace"):
            late_ids = upload_files(s3, stack.plan.bucket, "inbox/", collection, collect_uploads([late]))
            (record,) = wait_for_documents(services.document_table(), collection, late_ids, 240, since=since)
            assert record.status == DocumentStatus.INDEXED
        return written

    reindexer._write = write_then_upload  # type: ignore[method-assign]
    report = reindexer.reindex(collection)

    # then the switch replayed it into the new table, which serves both documents
    assert report.switched, report.to_public()
    assert report.caught_up == 1
    table = services.chunk_store().open(collection, 1)
    assert table is not None
    assert sorted(table.to_arrow().column("source").to_pylist()) == ["a.md", "b.md"]
    assert services.chunk_store().open(collection, 0) is None
