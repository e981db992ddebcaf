"""The fetch stage under hostile input (issue 19): per-record time budgets, manifest outcomes,
nesting, name case and Unicode forms — handlers invoked in-process against the emulator."""

from __future__ import annotations

import json
import os
import threading
import time
import unicodedata
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from fakes.env import restore_environment

from stratus import services
from stratus.models import DocumentStatus, make_doc_id
from stratus.pipeline.worker import sqs_event
from stratus.settings import get_settings
from stratus_tools.local.stack import LambdaContext, LocalStack

pytestmark = pytest.mark.integration

GOOD_PAGE = b"<html><body><h1>Okapi</h1><p>The okapi is a forest giraffe.</p></body></html>"


class _Site(BaseHTTPRequestHandler):
    """/tarpit trickles one byte every 0.2 s for ever; /page answers at once."""

    stop = threading.Event()
    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path.startswith("/tarpit"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            try:
                while not self.stop.wait(0.2):
                    self.wfile.write(b"x")
                    self.wfile.flush()
            except OSError:
                return  # (the client gave up: what it should do)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(GOOD_PAGE)))
        self.end_headers()
        self.wfile.write(GOOD_PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Site.stop.set()
    server.shutdown()


@pytest.fixture
def settings_for(site: str) -> Iterator[dict[str, str]]:
    """The site allow-listed, no in-process URL retries; tests may add overrides before use."""
    overrides = {
        "STRATUS_URL_ALLOW_HOSTS": site.removeprefix("http://"),
        "STRATUS_URL_RETRIES": "0",
    }
    saved = {name: os.environ.get(name) for name in [*overrides, "STRATUS_MAX_CHUNKS_PER_DOCUMENT"]}
    os.environ.update(overrides)
    get_settings.cache_clear()
    yield overrides
    restore_environment(saved)
    get_settings.cache_clear()


def notification(key: str, sequencer: str) -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {"object": {"key": key, "sequencer": sequencer}},
                }
            ]
        }
    )


def fetch_event(keys: list[str], sequencer: str = "0A") -> dict[str, Any]:
    messages = [
        {"MessageId": f"m-{i}", "ReceiptHandle": f"r-{i}", "Body": notification(key, sequencer)}
        for i, key in enumerate(keys)
    ]
    return sqs_event(messages)


def put(stack: LocalStack, key: str, body: bytes) -> None:
    stack.client("s3").put_object(Bucket=stack.plan.bucket, Key=key, Body=body)


def drain_bodies(stack: LocalStack, queue: str) -> list[str]:
    sqs = stack.client("sqs")
    bodies: list[str] = []
    while True:
        response = sqs.receive_message(QueueUrl=stack.queue_urls[queue], MaxNumberOfMessages=10)
        messages = response.get("Messages", [])
        if not messages:
            return bodies
        for m in messages:
            sqs.delete_message(QueueUrl=stack.queue_urls[queue], ReceiptHandle=m["ReceiptHandle"])
            bodies.append(m["Body"])


def embed_and_index(stack: LocalStack) -> None:
    """Run the embed and index handlers over whatever fetch handed on."""
    for stage, queue, nxt in (
        ("EmbedFunction", "EmbedQueue", "IndexQueue"),
        ("IndexFunction", "IndexQueue", None),
    ):
        bodies = drain_bodies(stack, queue)
        for start in range(0, len(bodies), 10):
            event = sqs_event(
                [
                    {"MessageId": f"{queue}-{i}", "ReceiptHandle": "r", "Body": b}
                    for i, b in enumerate(bodies[start : start + 10])
                ]
            )
            assert stack.handler(stage)(event, stack.context(stage)) == {"batchItemFailures": []}
        del nxt


def record(collection: str, source: str) -> Any:
    return services.document_table().get(collection, make_doc_id(collection, source))


@pytest.mark.usefixtures("settings_for")
def test_one_tarpit_url_among_nine_documents_fails_alone_within_the_function_timeout(
    idle_stack: LocalStack, site: str
) -> None:
    # given a batch of 10 records: 9 Markdown documents and, in the middle, a manifest whose one
    # URL trickles a byte every 0.2 s for ever (its per-attempt timeout is 20 s)
    collection = "tarpit"
    keys = []
    for i in range(9):
        key = f"inbox/{collection}/doc{i}.md"
        put(idle_stack, key, f"# Doc {i}\n\nThe animal number {i} sleeps in the forest.\n".encode())
        keys.append(key)
    put(idle_stack, f"inbox/{collection}/slow.urls", f"{site}/tarpit\n".encode())
    keys.insert(4, f"inbox/{collection}/slow.urls")
    drain_bodies(idle_stack, "FetchQueue")
    # and a fetch invocation with 30 s before its timeout (10 s of it reserved)
    timeout_s = 30
    context = LambdaContext("FetchFunction", 1024, timeout_s)

    # when the fetch handler runs the batch
    started = time.monotonic()
    response = idle_stack.handler("FetchFunction")(fetch_event(keys), context)
    elapsed = time.monotonic() - started
    embed_and_index(idle_stack)

    # then it finished well within the timeout, nothing is redelivered, the 9 documents are
    # INDEXED and the tarpit URL is FAILED with the budget as its reason (not stuck QUEUED)
    print(f"\ntarpit batch: fetch handler {elapsed:.1f}s of a {timeout_s}s timeout; response {response}")
    assert elapsed < timeout_s - 5
    assert response == {"batchItemFailures": []}
    statuses = {f"doc{i}.md": record(collection, f"doc{i}.md").status for i in range(9)}
    assert set(statuses.values()) == {DocumentStatus.INDEXED}, statuses
    tarpit = record(collection, f"{site}/tarpit")
    assert tarpit.status == DocumentStatus.FAILED
    assert "time budget" in (tarpit.error or "")


def test_records_not_started_when_time_is_short_are_reported_for_redelivery(idle_stack: LocalStack) -> None:
    # given a batch of three documents and an invocation with 10.5 s left, all but 0.5 s reserved
    keys = []
    for i in range(3):
        key = f"inbox/short/doc{i}.md"
        put(idle_stack, key, b"# Short\n\nbody\n")
        keys.append(key)
    context = LambdaContext("FetchFunction", 1024, 10)
    context.started += 0.0
    # when the handler runs with less than a second per record left
    saved = os.environ.get("STRATUS_FETCH_TIME_RESERVE_S")
    os.environ["STRATUS_FETCH_TIME_RESERVE_S"] = "9.5"
    get_settings.cache_clear()
    try:
        response = idle_stack.handler("FetchFunction")(fetch_event(keys), context)
    finally:
        restore_environment({"STRATUS_FETCH_TIME_RESERVE_S": saved})
        get_settings.cache_clear()
    # then no record was started: all three come back for redelivery, none is FAILED or FETCHED
    assert response == {"batchItemFailures": [{"itemIdentifier": f"m-{i}"} for i in range(3)]}
    assert all(record("short", f"doc{i}.md") is None for i in range(3))


@pytest.mark.usefixtures("settings_for")
def test_manifest_outcome_is_recorded_with_counts_and_first_refusals(
    idle_stack: LocalStack, site: str
) -> None:
    # given a manifest of 2 good URLs, a duplicate, and 31 URLs the guard refuses
    lines = [f"{site}/page?a=1", f"{site}/page?a=2", f"{site}/page?a=1"]
    lines += [f"http://10.0.0.{i}/admin" for i in range(20)]
    lines += [f"ftp://example.com/{i}" for i in range(9)]
    lines += ["http://169.254.169.254/latest/meta-data/", "not a url"]
    put(idle_stack, "inbox/outcome/list.urls", "\n".join(lines).encode())
    # when fetch handles it
    response = idle_stack.handler("FetchFunction")(
        fetch_event(["inbox/outcome/list.urls"]), idle_stack.context("FetchFunction")
    )
    # then the manifest has a record of its own that counts every line and names the first refusals
    assert response == {"batchItemFailures": []}
    manifest = record("outcome", "list.urls")
    assert manifest is not None
    assert manifest.status == DocumentStatus.INDEXED
    detail = manifest.detail or ""
    assert "2 URL(s) accepted" in detail
    assert "31 refused" in detail
    assert "1 duplicate(s)" in detail
    assert "scheme: 9" in detail
    assert "line 4: refused" in detail
    assert record("outcome", f"{site}/page?a=1").status == DocumentStatus.FETCHED


@pytest.mark.usefixtures("settings_for")
def test_manifest_of_only_refused_urls_is_failed_with_the_reasons(idle_stack: LocalStack) -> None:
    put(idle_stack, "inbox/outcome/bad.urls", b"http://10.0.0.1/\nfile:///etc/passwd\n")
    idle_stack.handler("FetchFunction")(
        fetch_event(["inbox/outcome/bad.urls"]), idle_stack.context("FetchFunction")
    )
    manifest = record("outcome", "bad.urls")
    assert manifest.status == DocumentStatus.FAILED
    assert "0 URL(s) accepted, 2 refused" in (manifest.error or "")


def test_a_deeply_nested_sidecar_fails_its_document_and_not_the_batch(idle_stack: LocalStack) -> None:
    # given two documents in one batch, one with a 60 KB sidecar of nested lists
    put(idle_stack, "inbox/nest/a.md", b"# A\n\nalpha\n")
    nested = b'{"metadataAttributes": {"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}"
    put(idle_stack, "inbox/nest/a.md.metadata.json", nested)
    put(idle_stack, "inbox/nest/b.md", b"# B\n\nbeta\n")
    # when fetch handles both
    response = idle_stack.handler("FetchFunction")(
        fetch_event(["inbox/nest/a.md", "inbox/nest/b.md"]), idle_stack.context("FetchFunction")
    )
    # then only the nested one is FAILED, with the reason, and nothing is redelivered
    assert response == {"batchItemFailures": []}
    assert record("nest", "a.md").status == DocumentStatus.FAILED
    assert "nests too deeply" in (record("nest", "a.md").error or "")
    assert record("nest", "b.md").status == DocumentStatus.FETCHED


@pytest.mark.usefixtures("settings_for")
def test_upper_case_suffixes_are_manifests_and_sidecars(idle_stack: LocalStack, site: str) -> None:
    # given an upper-case .URLS manifest and a document with an upper-case .METADATA.JSON sidecar
    put(idle_stack, "inbox/case/LIST.URLS", f"{site}/page?case=1\n".encode())
    put(idle_stack, "inbox/case/a.md", b"# A\n\nalpha\n")
    put(idle_stack, "inbox/case/a.md.METADATA.JSON", b'{"metadataAttributes": {"team": "blue"}}')
    # when fetch handles the manifest and the sidecar's event
    response = idle_stack.handler("FetchFunction")(
        fetch_event(["inbox/case/LIST.URLS", "inbox/case/a.md.METADATA.JSON"]),
        idle_stack.context("FetchFunction"),
    )
    # then the manifest's URL was fetched (not the manifest indexed as text), and the sidecar applied
    assert response == {"batchItemFailures": []}
    assert record("case", f"{site}/page?case=1").status == DocumentStatus.FETCHED
    assert record("case", "LIST.URLS").title == "URL manifest"
    (body,) = [b for b in drain_bodies(idle_stack, "EmbedQueue") if '"a.md"' in b]
    from stratus.models import StageMessage
    from stratus.pipeline.common import load_chunk_batch, read_stage_output

    message = StageMessage.model_validate_json(body)
    data = read_stage_output(services.blob_store(), message)
    assert data is not None
    assert load_chunk_batch(data).metadata == {"team": "blue"}


def test_nfc_and_nfd_names_are_one_document(idle_stack: LocalStack) -> None:
    # given café.md uploaded once with an NFC name and once with an NFD name
    nfc = unicodedata.normalize("NFC", "café.md")
    nfd = unicodedata.normalize("NFD", "café.md")
    assert nfc != nfd
    put(idle_stack, f"inbox/unicode/{nfc}", b"# Cafe\n\nfirst\n")
    put(idle_stack, f"inbox/unicode/{nfd}", b"# Cafe\n\nsecond\n")
    # when fetch handles both (the NFD one later)
    idle_stack.handler("FetchFunction")(
        fetch_event([f"inbox/unicode/{nfc}"], "0A"), idle_stack.context("FetchFunction")
    )
    idle_stack.handler("FetchFunction")(
        fetch_event([f"inbox/unicode/{nfd}"], "0B"), idle_stack.context("FetchFunction")
    )
    # then there is one document, named in NFC, holding the later content
    records, _ = services.document_table().list("unicode", 10, None)
    assert [r.source for r in records] == [nfc]


@pytest.mark.usefixtures("settings_for")
def test_a_document_over_the_chunk_cap_is_failed_with_the_setting_named(idle_stack: LocalStack) -> None:
    os.environ["STRATUS_MAX_CHUNKS_PER_DOCUMENT"] = "3"
    get_settings.cache_clear()
    body = "\n\n".join(f"Paragraph {i} " + "word " * 300 for i in range(10)).encode()
    put(idle_stack, "inbox/caps/long.txt", body)
    idle_stack.handler("FetchFunction")(
        fetch_event(["inbox/caps/long.txt"]), idle_stack.context("FetchFunction")
    )
    failed = record("caps", "long.txt")
    assert failed.status == DocumentStatus.FAILED
    assert "STRATUS_MAX_CHUNKS_PER_DOCUMENT" in (failed.error or "")


@pytest.mark.usefixtures("settings_for")
def test_a_manifest_sent_again_does_not_fetch_recent_urls_again(idle_stack: LocalStack, site: str) -> None:
    # given a manifest whose URL fetch has just fetched
    put(idle_stack, "inbox/replay/list.urls", f"{site}/page?replay=1\n".encode())
    event = fetch_event(["inbox/replay/list.urls"], "0A")
    idle_stack.handler("FetchFunction")(event, idle_stack.context("FetchFunction"))
    assert _Site.hits["/page?replay=1"] == 1
    # when the same manifest arrives again (a replayed upload: a newer S3 event)
    again = fetch_event(["inbox/replay/list.urls"], "0B")
    idle_stack.handler("FetchFunction")(again, idle_stack.context("FetchFunction"))
    # then the URL is not requested again, and the manifest's record says so
    assert _Site.hits["/page?replay=1"] == 1
    assert "fetched recently, skipped 1" in (record("replay", "list.urls").detail or "")
