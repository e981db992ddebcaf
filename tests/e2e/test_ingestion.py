"""Ingestion end to end: every source and format, the documents API, duplicates, DLQ redrive."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.env import restore_environment
from fakes.pdf import make_pdf

from stratus import services
from stratus.models import DocumentStatus, StageMessage, make_doc_id
from stratus.pipeline.common import staging_key
from stratus.stores.documents import DocumentRecord
from stratus_tools.dlq import main as dlq_main
from stratus_tools.local.stack import LocalStack
from stratus_tools.uploads import collect_uploads, upload_files, wait_for_documents

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTION = "mixed"
# What the test web server answers: path -> (status, content type, body); tests change it.
PAGES: dict[str, tuple[int, str, bytes]] = {
    "/okapi.html": (
        200,
        "text/html; charset=utf-8",
        b"<html><head><title>Okapi</title></head><body><h1>Okapi</h1>"
        b"<p>The okapi is a forest giraffe with zebra-striped legs.</p></body></html>",
    ),
    "/tardigrade.txt": (200, "text/plain", b"Tardigrades survive the vacuum of outer space."),
    "/flaky.txt": (503, "text/plain", b"try later"),
}


class _Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, content_type, body = PAGES.get(self.path, (404, "text/plain", b"not found"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    """A web server on 127.0.0.1 serving PAGES."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def stack(model_dir: Path, web: str) -> Iterator[LocalStack]:
    """The whole local stack, with the SSRF guard letting through the test web server only.

    The allow-list (and no in-process URL retries, so a 503 dead-letters quickly) is set for
    this module alone; the environment is restored afterwards.
    """
    overrides = {
        "STRATUS_URL_ALLOW_HOSTS": web.removeprefix("http://"),
        "STRATUS_URL_RETRIES": "0",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
    }
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    local = LocalStack(REPO_ROOT, visibility_timeout_s=2, poll_wait_s=1, batch_window_cap_s=0.5)
    try:
        local.start(run_functions=True)
        local.serve_api(port=0)
        yield local
    finally:
        local.stop()
        restore_environment(saved)
        services.reset()


def wait(doc_ids: list[str], since: float, collection: str = COLLECTION) -> dict[str, DocumentRecord]:
    records = wait_for_documents(services.document_table(), collection, doc_ids, 60, since=since)
    return {r.doc_id: r for r in records}


def search(
    stack: LocalStack, headers: dict[str, str], query: str, top_k: int = 5, collection: str = COLLECTION
) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{stack.api_url}/v1/collections/{collection}/search",
        json={"query": query, "top_k": top_k},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["hits"]
    return hits


def top_source(
    stack: LocalStack, headers: dict[str, str], query: str, expected: str, collection: str = COLLECTION
) -> str:
    """The top hit's source, asked again for a few seconds while it is not `expected`.

    The API may serve a table version up to STRATUS_READ_CONSISTENCY_S old, so a document that
    just became INDEXED can take that long to show.
    """
    deadline = time.monotonic() + 10
    while True:
        hits = search(stack, headers, query, collection=collection)
        source = str(hits[0]["source"]) if hits else ""
        if source == expected or time.monotonic() > deadline:
            return source
        time.sleep(0.3)


def drained(stack: LocalStack, *queues: str, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(stack.queue_depth(q) == 0 for q in queues):
            return True
        time.sleep(0.3)
    return False


def test_a_mixed_folder_with_a_url_manifest_and_a_sidecar_becomes_searchable(
    stack: LocalStack, web: str, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    # given a folder of Markdown (with a metadata sidecar), HTML, PDF, text and a URL manifest
    folder = tmp_path / "mixed"
    (folder / "guides").mkdir(parents=True)
    (folder / "guides" / "kiwi.md").write_text(
        "# Kiwi\n\n## Habits\n\nThe kiwi is a flightless nocturnal bird."
    )
    (folder / "guides" / "kiwi.md.metadata.json").write_text(
        json.dumps({"metadataAttributes": {"team": "birds", "year": 2024, "reviewed": True}})
    )
    (folder / "axolotl.html").write_text(
        "<html><body><h1>Axolotl</h1><p>The axolotl regrows lost limbs.</p></body></html>"
    )
    (folder / "pangolin.pdf").write_bytes(make_pdf(["Pangolins are covered in keratin scales."]))
    (folder / "quokka.txt").write_text("Quokkas smile for tourists on Rottnest Island.")
    (folder / "web.urls").write_text(f"# animals on the web\n{web}/okapi.html\n{web}/tardigrade.txt\n")
    since = time.time()

    # when it is uploaded into the inbox
    uploads = collect_uploads([folder])
    file_ids = upload_files(stack.client("s3"), stack.plan.bucket, "inbox/", COLLECTION, uploads)
    url_ids = [make_doc_id(COLLECTION, f"{web}/okapi.html"), make_doc_id(COLLECTION, f"{web}/tardigrade.txt")]
    records = wait(file_ids + url_ids, since)

    # then every document (four files, two URLs) is indexed
    assert len(file_ids) == 4
    assert {r.status for r in records.values()} == {DocumentStatus.INDEXED}, [
        (r.source, r.status, r.error) for r in records.values()
    ]

    # and each is the top hit for its own question, the sidecar's attributes in the hit's metadata
    expected = {
        "which bird cannot fly?": "guides/kiwi.md",
        "which animal regrows limbs?": "axolotl.html",
        "what covers a pangolin?": "pangolin.pdf",
        "who smiles for tourists?": "quokka.txt",
        "forest giraffe with striped legs": f"{web}/okapi.html",
        "survive the vacuum of space": f"{web}/tardigrade.txt",
    }
    for query, source in expected.items():
        assert top_source(stack, api_headers, query, source) == source, query
    kiwi = search(stack, api_headers, "flightless nocturnal bird")[0]
    assert kiwi["metadata"] == {"team": "birds", "year": 2024, "reviewed": True}
    assert kiwi["section"] == "Kiwi > Habits"


def test_the_same_embed_and_index_message_twice_leaves_no_duplicate(
    stack: LocalStack, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    # given an indexed document
    path = tmp_path / "twice.md"
    path.write_text("# Twice\n\n" + "The narwhal's tusk is a long spiral tooth. " * 40)
    since = time.time()
    (doc_id,) = upload_files(
        stack.client("s3"), stack.plan.bucket, "inbox/", COLLECTION, collect_uploads([path])
    )
    (record,) = wait([doc_id], since).values()
    assert record.status == DocumentStatus.INDEXED
    assert record.chunk_count > 1

    # when its embed message and its index message are each delivered twice more
    sqs = stack.client("sqs")
    base = StageMessage(
        collection=COLLECTION, doc_id=doc_id, source="twice.md", content_sha256=record.content_sha256
    )
    embed = base.model_copy(
        update={"key": staging_key("staging/", COLLECTION, doc_id, record.content_sha256, "chunks.json.gz")}
    )
    index = base.model_copy(
        update={
            "key": staging_key("staging/", COLLECTION, doc_id, record.content_sha256, "embeddings.parquet")
        }
    )
    for copy, (message, queue) in enumerate(
        ((embed, "EmbedQueue"), (embed, "EmbedQueue"), (index, "IndexQueue"), (index, "IndexQueue"))
    ):
        url = stack.queue_urls[queue]
        # The FIFO index queue: the collection's group, and distinct deduplication ids so that both
        # copies are delivered (as after SQS's 5-minute deduplication window)
        fifo = (
            {"MessageGroupId": message.collection, "MessageDeduplicationId": f"copy-{copy}-{time.time()}"}
            if url.endswith(".fifo")
            else {}
        )
        sqs.send_message(QueueUrl=url, MessageBody=message.model_dump_json(), **fifo)
    assert drained(stack, "EmbedQueue", "IndexQueue")
    time.sleep(1.0)  # the last index batch's delete and status write
    assert drained(stack, "EmbedQueue", "IndexQueue")

    # then the table holds each chunk once, and the document is INDEXED and untouched: the copies were
    # acknowledged without a second embedding or a second write
    table = services.chunk_store().open(COLLECTION)
    assert table is not None
    table.checkout_latest()
    rows = table.search().where(f"doc_id = '{doc_id}'").select(["chunk_id"]).limit(None).to_list()
    assert len(rows) == record.chunk_count
    assert len({r["chunk_id"] for r in rows}) == record.chunk_count
    after = services.document_table().get(COLLECTION, doc_id)
    assert after is not None
    assert after.status == DocumentStatus.INDEXED
    assert after == record


def test_documents_api_text_urls_upload_and_delete(
    stack: LocalStack, web: str, api_headers: dict[str, str]
) -> None:
    api = f"{stack.api_url}/v1/collections/api"
    since = time.time()
    # given inline text with metadata and a URL, submitted through the API
    submitted = httpx.post(
        f"{api}/documents",
        json={
            "documents": [
                {
                    "source": "notes/ibis.md",
                    "text": "# Ibis\n\nThe ibis probes mud with a curved bill.",
                    "metadata": {"habitat": "wetland"},
                }
            ],
            "urls": [f"{web}/okapi.html"],
        },
        headers=api_headers,
    )
    assert submitted.status_code == 202, submitted.text
    accepted = {a["source"]: a for a in submitted.json()["accepted"]}
    # and a PDF uploaded with a presigned PUT
    pdf = make_pdf(["The dugong grazes on seagrass meadows."])
    ticket = httpx.post(
        f"{api}/uploads",
        json={"source": "big/dugong.pdf", "content_type": "application/pdf", "size": len(pdf)},
        headers=api_headers,
    ).json()
    assert httpx.put(ticket["upload_url"], content=pdf, headers=ticket["headers"]).status_code == 200

    # when the pipeline has run, every status URL reports INDEXED and search finds each
    doc_ids = [a["doc_id"] for a in accepted.values()] + [ticket["doc_id"]]
    records = wait(doc_ids, since, collection="api")
    assert {r.status for r in records.values()} == {DocumentStatus.INDEXED}
    status = httpx.get(
        f"{stack.api_url}{accepted['notes/ibis.md']['status_url']}", headers=api_headers
    ).json()
    assert status["status"] == "INDEXED"
    top_source(stack, api_headers, "bird probing mud with a curved bill", "notes/ibis.md", "api")
    ibis = search(stack, api_headers, "bird probing mud with a curved bill", collection="api")[0]
    assert (ibis["source"], ibis["metadata"]) == ("notes/ibis.md", {"habitat": "wetland"})
    assert (
        top_source(stack, api_headers, "what does the dugong eat?", "big/dugong.pdf", "api")
        == "big/dugong.pdf"
    )
    okapi_url = f"{web}/okapi.html"
    assert top_source(stack, api_headers, "forest giraffe", okapi_url, "api") == okapi_url

    # when the inline document and the URL document are deleted through the API
    for source in ("notes/ibis.md", okapi_url):
        response = httpx.delete(f"{api}/documents/{accepted[source]['doc_id']}", headers=api_headers)
        assert response.status_code == 202, response.text
    deadline = time.monotonic() + 30
    remaining: set[str] = {"notes/ibis.md", okapi_url}
    while remaining and time.monotonic() < deadline:
        sources = {
            h["source"] for h in search(stack, api_headers, "ibis mud bill okapi forest giraffe", 10, "api")
        }
        remaining &= sources
        time.sleep(0.3)

    # then neither is found any more, both report DELETED, and the upload is still there
    assert not remaining
    for source in ("notes/ibis.md", okapi_url):
        record = services.document_table().get("api", accepted[source]["doc_id"])
        assert record is not None
        assert record.status == DocumentStatus.DELETED
    assert search(stack, api_headers, "dugong seagrass", collection="api")[0]["source"] == "big/dugong.pdf"


def test_a_dead_lettered_fetch_is_redriven_after_the_fix(
    stack: LocalStack, web: str, capsys: pytest.CaptureFixture[str], api_headers: dict[str, str]
) -> None:
    # given a manifest whose URL answers 503 every time, until its message is dead-lettered
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.plan.bucket, Key=f"inbox/{COLLECTION}/flaky.urls", Body=f"{web}/flaky.txt\n")
    max_receives = stack.plan.queues["FetchQueue"].max_receive_count or 1
    deadline = time.monotonic() + 4 * max_receives + 20
    while time.monotonic() < deadline and stack.queue_depth("FetchDLQ") == 0:
        time.sleep(0.5)
    assert stack.queue_depth("FetchDLQ") == 1
    # and its document is FAILED on the last receive, with a reason naming the stage and the DLQ
    doc_id = make_doc_id(COLLECTION, f"{web}/flaky.txt")
    failed = services.document_table().get(COLLECTION, doc_id)
    assert failed is not None
    assert failed.status == DocumentStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith(f"fetch: gave up after {max_receives} attempts ({web}/flaky.txt")
    assert "stratus dlq redrive --stage fetch" in failed.error

    # when the site is fixed and the fetch DLQ is redriven
    PAGES["/flaky.txt"] = (200, "text/plain", b"The flaky page now explains the lyrebird's mimicry.")
    since = time.time()
    assert dlq_main(["redrive", "--stage", "fetch", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)

    # then the message went back, the document is indexed and searchable, and the DLQ is empty
    assert report["moved"] == 1
    (record,) = wait([doc_id], since).values()
    assert record.status == DocumentStatus.INDEXED
    assert top_source(stack, api_headers, "lyrebird mimicry", f"{web}/flaky.txt") == f"{web}/flaky.txt"
    assert stack.queue_depth("FetchDLQ") == 0


def test_health_answers_while_a_hostile_markdown_document_is_ingested(
    stack: LocalStack, api_headers: dict[str, str]
) -> None:
    # given a Markdown document whose headings made the old regexes backtrack for minutes
    # ("# a" + 60,000 spaces + "b", and a heading of 30,000 backticks), submitted through the API
    hostile = "# a" + " " * 60_000 + "b\n\n## " + "`" * 30_000 + "\n\nThe body of a hostile page.\n"
    since = time.time()
    submitted = httpx.post(
        f"{stack.api_url}/v1/collections/hostile/documents",
        json={"documents": [{"source": "redos.md", "text": hostile}]},
        headers=api_headers,
        timeout=30,
    )
    assert submitted.status_code == 202, submitted.text
    doc_id = submitted.json()["accepted"][0]["doc_id"]

    # when /health/live is asked every 0.1 s while the pipeline (in this process) ingests it
    worst = 0.0
    record = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = time.perf_counter()
        live = httpx.get(f"{stack.api_url}/health/live", timeout=30)
        worst = max(worst, time.perf_counter() - started)
        assert live.status_code == 200
        record = services.document_table().get("hostile", doc_id)
        if record is not None and record.status == DocumentStatus.INDEXED and record.updated_at >= since:
            break
        time.sleep(0.1)

    # then the document is indexed and the health check never took as long as a second
    print(f"\nhostile markdown: slowest /health/live {worst * 1000:.0f} ms while ingesting")
    assert record is not None
    assert record.status == DocumentStatus.INDEXED, (record.status, record.error)
    assert worst < 1.0, f"/health/live took {worst:.2f}s"
