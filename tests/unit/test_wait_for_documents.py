"""wait_for_documents polls only what is still pending, and reads full records once."""

from __future__ import annotations

from collections.abc import Sequence

from stratus.models import DocumentStatus
from stratus.stores.documents import DocumentRecord
from stratus_tools.uploads import wait_for_documents


class Documents:
    """A documents table whose records settle one poll after another; it records every read."""

    def __init__(self, settle_order: list[str]) -> None:
        self.settle_order = settle_order
        self.polls = 0
        self.reads: list[tuple[list[str], bool]] = []

    def get_many(
        self, collection: str, doc_ids: Sequence[str], attributes: Sequence[str] | None = None
    ) -> dict[str, DocumentRecord]:
        self.reads.append((list(doc_ids), attributes is None))
        if attributes is not None:
            self.polls += 1
        settled = set(self.settle_order[: self.polls])
        return {
            d: DocumentRecord(
                collection,
                d,
                status=DocumentStatus.INDEXED if d in settled else DocumentStatus.FETCHED,
                updated_at=100.0,
                title="full" if attributes is None else "",
            )
            for d in doc_ids
        }


def test_each_poll_reads_only_pending_documents_and_the_end_reads_all_in_full() -> None:
    # given three documents that settle one per poll
    table = Documents(["a", "b", "c"])

    # when waiting for them
    records = wait_for_documents(table, "c1", ["a", "b", "c"], 10, since=50.0, poll_s=0)  # type: ignore[arg-type]

    # then polls shrink to what is pending, and one full read ends the wait
    assert table.reads == [
        (["a", "b", "c"], False),
        (["b", "c"], False),
        (["c"], False),
        (["a", "b", "c"], True),
    ]
    assert [(r.doc_id, r.title) for r in records] == [("a", "full"), ("b", "full"), ("c", "full")]


def test_records_older_than_since_do_not_count_as_settled() -> None:
    # given documents indexed before the upload started
    table = Documents(["a"])

    # when waiting with `since` after their update and a timeout of zero
    records = wait_for_documents(table, "c1", ["a"], 0, since=200.0, poll_s=0)  # type: ignore[arg-type]

    # then the wait gives up after one poll with the document still pending
    assert table.reads == [(["a"], False), (["a"], True)]
    assert records[0].doc_id == "a"
