"""What `stratus ingest DIR` uploads and what it skips, with the reason (issue 19 item 9, issue 21)."""

from __future__ import annotations

import io
import unicodedata
from pathlib import Path

from rich.console import Console

from stratus_tools.cli import _print_skipped
from stratus_tools.uploads import manifest_doc_ids, plan_uploads


def test_symlinks_out_of_the_folder_are_skipped_with_a_reason(tmp_path: Path) -> None:
    # given a folder with a document, and symlinks to a file and to a folder outside it
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nnot for upload")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.md").write_text("# Guide\n\nfine")
    (folder / "leak.md").symlink_to(outside / "secret.md")
    (folder / "leakdir").symlink_to(outside, target_is_directory=True)
    # when the upload is planned
    plan = plan_uploads([folder])
    # then only the document inside is uploaded, and both symlinks are reported as skipped
    assert [u.source for u in plan.uploads] == ["guide.md"]
    reasons = {item.path.name: item.reason for item in plan.skipped}
    assert "resolves outside" in reasons["leak.md"]
    assert "symlink to a folder outside" in reasons["leakdir"]


def test_unsupported_and_hidden_files_are_reported_not_dropped(tmp_path: Path) -> None:
    # given a folder with a document, a sidecar, an OpenDocument file, a plain JSON file and a dotfile
    (tmp_path / "a.md").write_text("# A")
    (tmp_path / "a.md.metadata.json").write_text('{"metadataAttributes": {}}')
    (tmp_path / "report.odt").write_bytes(b"PK\x03\x04")
    (tmp_path / "package.json").write_text("{}")
    (tmp_path / ".env").write_text("X=1")
    # when planned
    plan = plan_uploads([tmp_path])
    # then the document and its sidecar go, and each of the others is skipped with its reason
    assert sorted(u.source for u in plan.uploads) == ["a.md", "a.md.metadata.json"]
    reasons = {item.path.name: item.reason for item in plan.skipped}
    assert reasons["report.odt"].startswith("unsupported type .odt")
    assert reasons["package.json"].startswith("unsupported type .json")
    assert reasons[".env"] == "hidden file"
    # and the summary prints every one of them
    out = io.StringIO()
    _print_skipped(Console(file=out, width=200), plan.skipped)
    printed = out.getvalue()
    assert "skipped 3 file(s)" in printed
    for name in ("report.odt", "package.json", ".env"):
        assert name in printed


def test_names_are_nfc_and_special_suffixes_lower_case(tmp_path: Path) -> None:
    # given a file named in NFD, an upper-case sidecar and an upper-case manifest
    nfd = unicodedata.normalize("NFD", "café.md")
    (tmp_path / nfd).write_text("# Café")
    (tmp_path / "a.md").write_text("# A")
    (tmp_path / "a.md.METADATA.JSON").write_text('{"metadataAttributes": {}}')
    (tmp_path / "LIST.URLS").write_text("https://example.com/a\nhttp://10.0.0.1/\n")
    # when planned
    sources = sorted(u.source for u in plan_uploads([tmp_path]).uploads)
    # then the names are those the pipeline reads
    assert sources == sorted(
        [unicodedata.normalize("NFC", "café.md"), "a.md", "a.md.metadata.json", "LIST.urls"]
    )


def test_a_manifest_contributes_its_own_record_and_its_urls_to_the_wait(tmp_path: Path) -> None:
    from stratus.models import make_doc_id

    (tmp_path / "web.urls").write_text("https://example.com/a\nftp://x/\nhttps://example.com/a\n")
    uploads = plan_uploads([tmp_path]).uploads
    assert manifest_doc_ids("c", uploads) == [
        make_doc_id("c", "web.urls"),
        make_doc_id("c", "https://example.com/a"),
    ]


def test_the_wait_follows_a_message_to_its_attachments_and_reports_them_after_it() -> None:
    # given a document table where a message settled naming two attachments, one settled and one still queued
    from typing import Any, cast

    from stratus.models import DocumentStatus, make_doc_id
    from stratus.stores.documents import DocumentRecord, DocumentTable
    from stratus_tools.uploads import wait_for_documents

    sources = ["m.eml.attachments/1-a.pdf", "m.eml.attachments/2-b.csv"]
    records = {
        make_doc_id("c", "m.eml"): DocumentRecord(
            "c",
            make_doc_id("c", "m.eml"),
            "m.eml",
            DocumentStatus.INDEXED,
            updated_at=2.0,
            attachments=sources,
        ),
        make_doc_id("c", sources[0]): DocumentRecord(
            "c", make_doc_id("c", sources[0]), sources[0], DocumentStatus.INDEXED, updated_at=2.0
        ),
        make_doc_id("c", sources[1]): DocumentRecord(
            "c", make_doc_id("c", sources[1]), sources[1], DocumentStatus.QUEUED, updated_at=2.0
        ),
    }
    asked: list[list[str]] = []

    class Table:
        def get_many(
            self, collection: str, doc_ids: Any, attributes: Any = None
        ) -> dict[str, DocumentRecord]:
            asked.append(list(doc_ids))
            return {d: records[d] for d in doc_ids if d in records}

    # when the CLI waits for the message alone (the second attachment settling on the third poll)
    def progress(seen: list[DocumentRecord]) -> None:
        if len(asked) >= 3:
            records[make_doc_id("c", sources[1])].status = DocumentStatus.FAILED

    found = wait_for_documents(
        cast(DocumentTable, Table()), "c", [make_doc_id("c", "m.eml")], 5, progress, since=1.0, poll_s=0.01
    )
    # then it waited for both attachments too and reports all three, the message first
    assert [r.source for r in found] == ["m.eml", *sources]
    assert [r.status for r in found] == [
        DocumentStatus.INDEXED,
        DocumentStatus.INDEXED,
        DocumentStatus.FAILED,
    ]
    assert asked[1] == [make_doc_id("c", s) for s in sources]


def test_bulk_ingestion_reads_documents_with_their_sidecars_and_leaves_manifests_to_the_pipeline(
    tmp_path: Path,
) -> None:
    from stratus_tools.uploads import bulk_documents

    # given documents (one with a sidecar), a URL manifest and a sidecar whose document is not here
    (tmp_path / "a.md").write_text("# A\n\nalpha")
    (tmp_path / "a.md.metadata.json").write_text('{"metadataAttributes": {"team": "x"}}')
    (tmp_path / "b.html").write_text("<p>beta</p>")
    (tmp_path / "web.urls").write_text("https://example.com/\n")
    (tmp_path / "gone.pdf.metadata.json").write_text('{"metadataAttributes": {}}')

    # when the upload is split between bulk ingestion and the streamed path
    documents, streamed = bulk_documents(plan_uploads([tmp_path]).uploads)

    # then bulk reads each document, its bytes, size and type, with its own sidecar
    by_source = {d.source: d for d in documents}
    assert sorted(by_source) == ["a.md", "b.html"]
    assert by_source["a.md"].read() == b"# A\n\nalpha"
    assert by_source["a.md"].size == len(b"# A\n\nalpha")
    assert by_source["b.html"].content_type == "text/html"
    sidecar = by_source["a.md"].sidecar
    assert sidecar is not None
    assert b'"team"' in sidecar()
    assert by_source["b.html"].sidecar is None
    # and the manifest and the lone sidecar are uploaded for the functions, as without --bulk
    assert sorted(u.source for u in streamed) == ["gone.pdf.metadata.json", "web.urls"]
