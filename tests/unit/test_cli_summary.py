"""The summary `stratus ingest` and `stratus status` print: every document of a small ingest, the
documents that did not index of a large one, and totals."""

from __future__ import annotations

from stratus.models import DocumentStatus
from stratus.stores.documents import DocumentRecord
from stratus_tools.cli import summary_rows, summary_totals


def record(source: str, status: DocumentStatus, chunks: int = 2, reused: int = 0) -> DocumentRecord:
    return DocumentRecord(
        collection="c",
        doc_id=source,
        source=source,
        status=status,
        chunk_count=chunks,
        chunks_embedded=chunks - reused,
        chunks_reused=reused,
    )


def test_a_small_ingest_lists_every_document_by_source() -> None:
    # given three documents, one failed
    records = [
        record("b.md", DocumentStatus.INDEXED),
        record("c.md", DocumentStatus.FAILED, 0),
        record("a.md", DocumentStatus.INDEXED),
    ]

    # when the summary is made with room for them all
    rows, left_out = summary_rows(records, max_rows=3)

    # then all are listed, by source, none left out
    assert [r.source for r in rows] == ["a.md", "b.md", "c.md"]
    assert left_out == 0


def test_a_large_ingest_lists_failed_then_pending_documents_and_counts_the_rest() -> None:
    # given 50 indexed documents, two failed and one still embedding
    records = [record(f"{i:02d}.md", DocumentStatus.INDEXED) for i in range(50)]
    records += [
        record("x.md", DocumentStatus.EMBEDDED),
        record("y.md", DocumentStatus.FAILED, 0),
        record("z.md", DocumentStatus.FAILED, 0),
    ]

    # when the summary has room for two rows, and then for ten
    two, left_two = summary_rows(records, max_rows=2)
    ten, left_ten = summary_rows(records, max_rows=10)

    # then the failed come first, the indexed are never listed, and the rest is counted
    assert [r.source for r in two] == ["y.md", "z.md"]
    assert left_two == 51
    assert [r.source for r in ten] == ["y.md", "z.md", "x.md"]
    assert left_ten == 50


def test_totals_count_statuses_chunks_encoded_and_reused() -> None:
    # given two indexed documents (one reusing a chunk) and a failed one
    records = [
        record("a.md", DocumentStatus.INDEXED, 3),
        record("b.md", DocumentStatus.INDEXED, 2, reused=1),
        record("c.md", DocumentStatus.FAILED, 0),
    ]

    # when totalled, then by status and by chunk
    assert summary_totals(records) == "3 document(s): 1 FAILED, 2 INDEXED; 5 chunks (4 encoded, 1 reused)"
    assert summary_totals([]) == "0 document(s): none; 0 chunks (0 encoded, 0 reused)"
