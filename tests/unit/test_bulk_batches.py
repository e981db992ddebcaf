"""Bulk ingestion's batches: bounded in documents and in bytes, nothing left out, order kept."""

from __future__ import annotations

from stratus.pipeline.bulk import BulkDocument, batched


def documents(sizes: list[int]) -> list[BulkDocument]:
    return [BulkDocument(f"{i}.md", lambda: b"", size) for i, size in enumerate(sizes)]


def test_batches_hold_at_most_the_batch_size_and_every_document_once_in_order() -> None:
    # given seven small documents
    docs = documents([1] * 7)
    # when they are batched three at a time
    batches = list(batched(docs, 3, max_bytes=1000))
    # then the batches are 3, 3 and 1 documents, in order
    assert [[d.source for d in b] for b in batches] == [
        ["0.md", "1.md", "2.md"],
        ["3.md", "4.md", "5.md"],
        ["6.md"],
    ]


def test_a_batch_is_cut_before_its_files_pass_the_byte_bound_and_a_larger_file_goes_alone() -> None:
    # given files of 10, 10, 50, 200 and 5 bytes and a bound of 60 bytes a batch
    docs = documents([10, 10, 50, 200, 5])
    # when they are batched
    batches = list(batched(docs, 100, max_bytes=60))
    # then no batch passes the bound, except a single file larger than it, and none is dropped
    assert [[d.size for d in b] for b in batches] == [[10, 10], [50], [200], [5]]
