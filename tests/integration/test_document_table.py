"""The documents table's batch reads and settled counts, against the emulator."""

from __future__ import annotations

import time

import pytest

from stratus import services
from stratus.models import DocumentStatus
from stratus.stores.documents import DocumentRecord
from stratus_tools.local.stack import LocalStack
from stratus_tools.uploads import wait_for_documents

pytestmark = pytest.mark.integration


def _record(collection: str, doc_id: str, status: DocumentStatus) -> None:
    table = services.document_table()
    table.record_version(collection, doc_id, "0001", DocumentStatus.FETCHED, content_sha256="sha", title="T")
    if status != DocumentStatus.FETCHED:
        table.advance(collection, doc_id, "sha", status, chunk_count=3)


def test_get_many_reads_present_documents_across_pages(idle_stack: LocalStack) -> None:
    # given 120 documents (more than one BatchGetItem call takes) and one absent id, repeated
    for n in range(120):
        _record("many", f"d{n:03d}", DocumentStatus.INDEXED)
    wanted = [f"d{n:03d}" for n in range(120)] + ["absent", "d000"]

    # when they are read in full and with a projection
    full = services.document_table().get_many("many", wanted)
    slim = services.document_table().get_many("many", wanted, ["chunk_count"])

    # then every present document comes back once, the absent one does not
    assert sorted(full) == sorted(set(wanted) - {"absent"})
    assert full["d007"].title == "T"
    assert full["d007"].status == DocumentStatus.INDEXED
    # and the projection keeps the asked fields, leaving the others at their defaults
    assert slim["d007"].status == DocumentStatus.INDEXED
    assert slim["d007"].chunk_count == 3
    assert slim["d007"].title == ""


def test_count_settled_counts_only_matching_status_since_a_time(idle_stack: LocalStack) -> None:
    # given documents indexed, failed and still fetched, and one indexed before `since`
    _record("counted", "old", DocumentStatus.INDEXED)
    time.sleep(0.01)
    since = time.time()
    for doc_id, status in [("a", DocumentStatus.INDEXED), ("b", DocumentStatus.FAILED)]:
        _record("counted", doc_id, status)
    _record("counted", "c", DocumentStatus.FETCHED)
    table = services.document_table()

    # then the count sees only the settled documents updated since then
    assert table.count_settled("counted", {DocumentStatus.INDEXED, DocumentStatus.FAILED}, since) == 2
    assert table.count_settled("counted", {DocumentStatus.INDEXED}, 0) == 2
    assert table.count_settled("other", {DocumentStatus.INDEXED}, 0) == 0


def test_wait_for_documents_returns_full_records_once_all_settle(idle_stack: LocalStack) -> None:
    # given two settled documents and one that settles later
    since = time.time()
    _record("waited", "x", DocumentStatus.INDEXED)
    _record("waited", "y", DocumentStatus.FAILED)
    _record("waited", "z", DocumentStatus.EMBEDDED)
    progress: list[int] = []

    def settle_z(records: list[DocumentRecord]) -> None:
        progress.append(len(records))
        if len(progress) == 2:
            services.document_table().advance("waited", "z", "sha", DocumentStatus.INDEXED, chunk_count=3)

    # when waiting for all three
    records = wait_for_documents(
        services.document_table(), "waited", ["x", "y", "z"], 30, settle_z, since=since, poll_s=0.05
    )

    # then the full records come back in the order asked, after progress was reported
    assert [(r.doc_id, r.status) for r in records] == [
        ("x", DocumentStatus.INDEXED),
        ("y", DocumentStatus.FAILED),
        ("z", DocumentStatus.INDEXED),
    ]
    assert all(r.title == "T" for r in records)
    assert progress[:2] == [3, 3]


def test_advance_never_moves_a_document_out_of_the_statuses_it_may_not_leave(idle_stack: LocalStack) -> None:
    # given an INDEXED document
    table = services.document_table()
    _record("forward", "doc", DocumentStatus.INDEXED)

    # when a late copy tries to move it to EMBEDDED from anything but INDEXED or FAILED
    moved = table.advance(
        "forward",
        "doc",
        "sha",
        DocumentStatus.EMBEDDED,
        not_from={DocumentStatus.INDEXED, DocumentStatus.FAILED},
    )

    # then the conditional write refuses, and without `not_from` the same write is accepted
    assert moved is False
    record = table.get("forward", "doc")
    assert record is not None
    assert record.status == DocumentStatus.INDEXED
    assert table.advance("forward", "doc", "sha", DocumentStatus.EMBEDDED) is True


def test_a_give_up_is_resumed_only_by_its_stage_and_cleared_by_any_other_write(
    idle_stack: LocalStack,
) -> None:
    # given a document FAILED because the embed stage gave up on its message
    table = services.document_table()
    _record("resume", "doc", DocumentStatus.FETCHED)
    assert table.advance(
        "resume", "doc", "sha", DocumentStatus.FAILED, error="embed: gave up", dead_letter_stage="embed"
    )
    failed = table.get("resume", "doc")
    assert failed is not None
    assert (failed.status, failed.dead_letter_stage) == (DocumentStatus.FAILED, "embed")

    # when the index stage, then the embed stage with another content, then the embed stage try to resume it
    by_index = table.resume("resume", "doc", "sha", "index", DocumentStatus.EMBEDDED)
    other_sha = table.resume("resume", "doc", "other", "embed", DocumentStatus.FETCHED)
    by_embed = table.resume("resume", "doc", "sha", "embed", DocumentStatus.FETCHED)

    # then only the embed stage, for its content, resumes it: FETCHED, no error, no give-up left
    assert (by_index, other_sha, by_embed) == (False, False, True)
    record = table.get("resume", "doc")
    assert record is not None
    assert (record.status, record.error, record.dead_letter_stage) == (DocumentStatus.FETCHED, None, None)
    # and a later permanent failure is not resumable
    assert table.advance("resume", "doc", "sha", DocumentStatus.FAILED, error="unreadable")
    assert table.resume("resume", "doc", "sha", "embed", DocumentStatus.FETCHED) is False


def test_record_version_not_from_protects_only_the_same_version(idle_stack: LocalStack) -> None:
    # given a document INDEXED at version 0001
    table = services.document_table()
    _record("versions", "doc", DocumentStatus.INDEXED)
    past_fetch = {DocumentStatus.FETCHED, DocumentStatus.INDEXED, DocumentStatus.FAILED}

    # when a give-up for the same version, then for a newer one, is recorded
    same = table.record_version(
        "versions", "doc", "0001", DocumentStatus.FAILED, not_from=past_fetch, error="x"
    )
    newer = table.record_version(
        "versions", "doc", "0002", DocumentStatus.FAILED, not_from=past_fetch, error="y"
    )

    # then the same version keeps INDEXED, the newer one is FAILED
    assert (same, newer) == (False, True)
    record = table.get("versions", "doc")
    assert record is not None
    assert (record.status, record.version, record.error) == (DocumentStatus.FAILED, "0002", "y")


def test_cleared_fields_are_removed_and_created_at_is_set_once(idle_stack: LocalStack) -> None:
    # given a document that failed with a reason, then was fetched again
    table = services.document_table()
    _record("cleared", "doc", DocumentStatus.FETCHED)
    created = table.get("cleared", "doc")
    assert created is not None
    assert created.created_at > 0
    assert table.advance("cleared", "doc", "sha", DocumentStatus.FAILED, error="unreadable")
    time.sleep(0.01)

    # when later writes move it on (a new version, then the next stages)
    assert table.record_version("cleared", "doc", "0002", DocumentStatus.FETCHED, content_sha256="sha")
    assert table.advance("cleared", "doc", "sha", DocumentStatus.EMBEDDED)
    assert table.advance("cleared", "doc", "sha", DocumentStatus.INDEXED, chunk_count=3)

    # then the error and the give-up stage are gone from the item (removed, not stored as NULL), and
    # created_at is the first write's while updated_at moved
    item = idle_stack.client("dynamodb").get_item(
        TableName=table.table_name, Key={"collection": {"S": "cleared"}, "doc_id": {"S": "doc"}}
    )["Item"]
    assert "error" not in item
    assert "dead_letter_stage" not in item
    record = table.get("cleared", "doc")
    assert record is not None
    assert (record.status, record.error, record.chunk_count) == (DocumentStatus.INDEXED, None, 3)
    assert record.created_at == created.created_at
    assert record.updated_at > created.created_at
