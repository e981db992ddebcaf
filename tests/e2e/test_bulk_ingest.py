"""Bulk ingestion end to end: `stratus ingest --bulk` against the running local stack, beside streaming."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fakes.env import restore_environment

from stratus import services
from stratus.models import DocumentStatus, make_doc_id
from stratus.settings import get_settings
from stratus_tools.local.stack import LocalStack
from stratus_tools.uploads import bulk_documents, collect_uploads, upload_files, wait_for_documents

pytestmark = pytest.mark.e2e

DOCUMENTS = {
    "animals/kiwi.md": "# Kiwi\n\n## Habits\n\nThe kiwi is a flightless nocturnal bird of New Zealand.",
    "animals/axolotl.md": "# Axolotl\n\nThe axolotl is a salamander that regrows lost limbs.",
    "animals/pangolin.txt": "Pangolins are covered in overlapping keratin scales.",
    "animals/quokka.html": "<html><body><h1>Quokka</h1><p>Quokkas smile for tourists.</p></body></html>",
    "animals/narwhal.md": "# Narwhal\n\n" + "The narwhal's tusk is a long spiral tooth. " * 60,
}
SIDECAR = {"metadataAttributes": {"team": "birds", "year": 2024}}


@pytest.fixture(scope="module")
def stack(running_stack: LocalStack) -> LocalStack:
    running_stack.serve_api(port=0)
    return running_stack


@pytest.fixture
def small_documents_limit() -> Iterator[None]:
    """Documents over 4 KiB are refused (the narwhal is not)."""
    saved = {"STRATUS_MAX_DOCUMENT_BYTES": os.environ.get("STRATUS_MAX_DOCUMENT_BYTES")}
    os.environ["STRATUS_MAX_DOCUMENT_BYTES"] = "4096"
    get_settings.cache_clear()
    yield
    restore_environment(saved)
    get_settings.cache_clear()


def write_folder(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def search(stack: LocalStack, headers: dict[str, str], collection: str, body: dict[str, Any]) -> list[Any]:
    response = httpx.post(
        f"{stack.api_url}/v1/collections/{collection}/search",
        json=body,
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    hits: list[Any] = response.json()["hits"]
    return hits


def records_of(collection: str, sources: list[str]) -> dict[str, Any]:
    ids = {make_doc_id(collection, s): s for s in sources}
    found = services.document_table().get_many(collection, list(ids))
    return {ids[doc_id]: record for doc_id, record in found.items()}


def wait_for_idle_queues(stack: LocalStack, timeout_s: float = 60) -> None:
    """Until no stage queue has a message left (the inbox events of the bulk run's files)."""
    queues = sorted({source.queue for source in stack.plan.event_sources})
    deadline = time.monotonic() + timeout_s
    while any(stack.queue_depth(q) for q in queues):
        assert time.monotonic() < deadline, "the stage queues did not drain"
        time.sleep(0.25)


def ingest_bulk(folder: Path, collection: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from stratus_tools.cli import main

    code = main(["ingest", str(folder), "-c", collection, "--bulk", "--timeout", "120"])
    return code, capsys.readouterr().out


def test_bulk_ingest_indexes_each_document_reports_each_refusal_and_fills_the_inbox(
    stack: LocalStack,
    tmp_path: Path,
    api_headers: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    small_documents_limit: None,
) -> None:
    # given a folder of documents, a metadata sidecar, an empty file and one over the size limit
    files: dict[str, str | bytes] = {
        **DOCUMENTS,
        "animals/kiwi.md.metadata.json": json.dumps(SIDECAR),
        "animals/empty.md": "",
        "animals/huge.txt": "word " * 2000,
    }
    folder = write_folder(tmp_path / "bulk", files)

    # when it is ingested with --bulk
    code, out = ingest_bulk(folder, "bulk-a", capsys)

    # then the command took the bulk path and says the run failed (two documents did not index)
    assert "bulk ingestion of 7 document(s)" in out
    assert code == 1, out
    records = records_of("bulk-a", [*DOCUMENTS, "animals/empty.md", "animals/huge.txt"])
    # and every readable document is INDEXED, each refusal FAILED with its reason, in the summary too
    assert {s: r.status for s, r in records.items() if s in DOCUMENTS} == dict.fromkeys(
        DOCUMENTS, DocumentStatus.INDEXED
    )
    assert records["animals/empty.md"].status == DocumentStatus.FAILED
    assert records["animals/empty.md"].error == "document has no extractable text"
    assert records["animals/huge.txt"].status == DocumentStatus.FAILED
    assert records["animals/huge.txt"].error == "document is 10000 bytes; the limit is 4096"
    assert "7 document(s): 2 FAILED, 5 INDEXED" in out
    assert records["animals/narwhal.md"].chunk_count > 1
    assert records["animals/kiwi.md"].chunks_embedded == records["animals/kiwi.md"].chunk_count

    # and each document answers its question, with the sidecar's attributes
    questions = {
        "which bird cannot fly?": "animals/kiwi.md",
        "which animal regrows limbs?": "animals/axolotl.md",
        "what covers a pangolin?": "animals/pangolin.txt",
        "who smiles for tourists?": "animals/quokka.html",
    }
    for query, source in questions.items():
        assert search(stack, api_headers, "bulk-a", {"query": query, "top_k": 1})[0]["source"] == source
    top = search(stack, api_headers, "bulk-a", {"query": "which bird cannot fly?", "top_k": 1})[0]
    assert top["metadata"] == SIDECAR["metadataAttributes"]
    assert top["section"] == "Kiwi > Habits"

    # and every file (and the sidecar) is in the inbox, where its event finds it unchanged
    s3 = stack.client("s3")
    for name in files:
        body = s3.get_object(Bucket=stack.plan.bucket, Key=f"inbox/bulk-a/{name}")["Body"].read()
        expected = files[name]
        assert body == (expected if isinstance(expected, bytes) else expected.encode())
    wait_for_idle_queues(stack)
    after = records_of("bulk-a", list(DOCUMENTS))
    assert {r.status for r in after.values()} == {DocumentStatus.INDEXED}
    assert {s: (r.chunk_count, r.content_sha256) for s, r in after.items()} == {
        s: (records[s].chunk_count, records[s].content_sha256) for s in after
    }


def test_a_bulk_rerun_reuses_stored_vectors_and_puts_only_what_changed(
    stack: LocalStack, tmp_path: Path
) -> None:
    from stratus.pipeline.bulk import build_bulk_ingest

    # given a folder ingested in bulk
    folder = write_folder(tmp_path / "rerun", dict(DOCUMENTS))
    documents, _ = bulk_documents(collect_uploads([folder]))
    first = build_bulk_ingest().run("bulk-b", documents, "bulk-test-1", 120)
    assert first.uploaded == len(DOCUMENTS)
    assert first.encoded > 0
    assert first.reused == 0
    wait_for_idle_queues(stack)
    before = records_of("bulk-b", list(DOCUMENTS))

    # when one document gains a paragraph and the folder is ingested in bulk again
    narwhal = folder / "animals" / "narwhal.md"
    narwhal.write_text(narwhal.read_text() + "\n\nNarwhals live in the Arctic all year round.\n")
    documents, _ = bulk_documents(collect_uploads([folder]))
    second = build_bulk_ingest().run("bulk-b", documents, "bulk-test-2", 120)

    # then only the changed document is encoded, its unchanged chunks reused, and only its file put again
    assert second.uploaded == 1
    after = records_of("bulk-b", list(DOCUMENTS))
    changed = after["animals/narwhal.md"]
    assert changed.status == DocumentStatus.INDEXED
    assert changed.content_sha256 != before["animals/narwhal.md"].content_sha256
    assert changed.chunks_reused > 0
    assert changed.chunks_embedded < changed.chunk_count
    assert second.encoded == changed.chunks_embedded
    # and the unchanged documents keep their version of the record
    for source in DOCUMENTS:
        if source != "animals/narwhal.md":
            assert after[source].content_sha256 == before[source].content_sha256
            assert after[source].status == DocumentStatus.INDEXED


def test_bulk_and_streamed_ingestion_make_the_same_chunks(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given the same folder ingested streamed into one collection and in bulk into another
    folder = write_folder(tmp_path / "same", dict(DOCUMENTS))
    since = time.time()
    uploads = collect_uploads([folder])
    ids = upload_files(stack.client("s3"), stack.plan.bucket, "inbox/", "same-streamed", uploads)
    streamed = wait_for_documents(services.document_table(), "same-streamed", ids, 120, since=since)
    assert {r.status for r in streamed} == {DocumentStatus.INDEXED}
    code, out = ingest_bulk(folder, "same-bulk", capsys)
    assert code == 0, out

    # when both chunk tables are read
    def chunks(collection: str) -> dict[tuple[str, str, str], Any]:
        table = services.chunk_store().open(collection)
        assert table is not None
        table.checkout_latest()
        rows = table.search().select(["source", "section", "text", "vector"]).limit(None).to_arrow()
        return {(r["source"], r["section"], r["text"]): np.array(r["vector"]) for r in rows.to_pylist()}

    # then they hold the same chunks (sources, sections, texts), encoded alike: int8 quantizes each
    # encoder call's activations together, so a vector moves a little with the batch it was in
    bulk, streamed_chunks = chunks("same-bulk"), chunks("same-streamed")
    assert sorted(bulk) == sorted(streamed_chunks)
    assert len(bulk) > len(DOCUMENTS)
    similarity = [float(bulk[k] @ streamed_chunks[k]) for k in bulk]
    assert min(similarity) > 0.99, similarity


def test_ingest_takes_the_bulk_path_from_the_configured_number_of_documents(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stratus_tools.cli import main

    saved = {"STRATUS_BULK_MIN_DOCUMENTS": os.environ.get("STRATUS_BULK_MIN_DOCUMENTS")}
    os.environ["STRATUS_BULK_MIN_DOCUMENTS"] = "3"
    get_settings.cache_clear()
    try:
        # given a threshold of 3 documents, a folder of 2 and a folder of 5
        small = write_folder(tmp_path / "two", dict(list(DOCUMENTS.items())[:2]))
        large = write_folder(tmp_path / "five", dict(DOCUMENTS))

        # when each is ingested without --bulk or --streamed
        small_code = main(["ingest", str(small), "-c", "auto-small", "--timeout", "120"])
        small_out = capsys.readouterr().out
        large_code = main(["ingest", str(large), "-c", "auto-large", "--timeout", "120"])
        large_out = capsys.readouterr().out
    finally:
        restore_environment(saved)
        get_settings.cache_clear()

    # then the small one is streamed (uploaded for the functions) and the large one takes the bulk path
    assert small_code == 0, small_out
    assert large_code == 0, large_out
    assert "bulk ingestion" not in small_out
    assert "uploaded 2 file(s)" in small_out
    assert "bulk ingestion of 5 document(s)" in large_out
    assert {r.detail for r in records_of("auto-large", list(DOCUMENTS)).values()} <= {
        "bulk ingestion",
        "unchanged re-upload: nothing re-encoded",
    }


def test_a_sidecar_over_the_limit_fails_its_document_without_being_read(
    stack: LocalStack, tmp_path: Path
) -> None:
    from stratus.ingest.parsing import MAX_SIDECAR_BYTES
    from stratus.pipeline.bulk import build_bulk_ingest

    # given a document whose metadata sidecar is one byte over the limit, and one without a sidecar
    padding = "x" * MAX_SIDECAR_BYTES
    files: dict[str, str | bytes] = {
        "big.md": "# Big\n\nA document with a huge sidecar.",
        "big.md.metadata.json": json.dumps({"metadataAttributes": {"pad": padding}})[: MAX_SIDECAR_BYTES + 1],
        "plain.md": "# Plain\n\nA document on its own.",
    }
    folder = write_folder(tmp_path / "sidecar", files)
    documents, _ = bulk_documents(collect_uploads([folder]))

    # when the folder is ingested in bulk
    build_bulk_ingest().run("bulk-sidecar", documents, "bulk-test-sidecar", 120)

    # then that document is FAILED with the fetch stage's reason, and the other one is indexed
    records = records_of("bulk-sidecar", ["big.md", "plain.md"])
    assert records["big.md"].status == DocumentStatus.FAILED
    assert records["big.md"].error == f"metadata sidecar: larger than {MAX_SIDECAR_BYTES} bytes"
    assert records["plain.md"].status == DocumentStatus.INDEXED
