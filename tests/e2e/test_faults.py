"""The fault matrix: S3 errors and stalls, SQS redelivery, a killed index writer, an API restart and a
hanging LLM on the local stack. After each: every document INDEXED or FAILED with a reason, none lost,
none duplicated.

The functions reach the emulator through a fault-injecting proxy (tests/fakes/faulty_proxy.py); the
checks read the emulator directly. Each test prints its row of the matrix (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.env import restore_environment
from fakes.faulty_proxy import Fault, FaultyProxy
from fakes.openai_server import FakeOpenAI, Step

from stratus import services
from stratus.models import DocumentStatus, StageMessage, make_doc_id
from stratus.settings import get_settings
from stratus.stores.vectors import ChunkStore, storage_options_for
from stratus_tools.benchmarks import create_admin_key
from stratus_tools.benchmarks.load import Call, Outcome, open_loop, report, request_headers
from stratus_tools.dlq import main as dlq_main
from stratus_tools.local.stack import LocalStack, QueuePoller, free_port
from stratus_tools.uploads import Upload, upload_files, wait_for_documents

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "stratus-local"
MATRIX: list[dict[str, Any]] = []
READ_TIMEOUT_S = 3


@dataclass
class Row:
    """One row of the fault matrix."""

    fault: str
    documents: int
    indexed: int
    failed: int
    lost: int
    duplicated: int
    injected: int


class Poller(QueuePoller):
    """A queue consumer of the local stack that one test can stop (the index writer is swapped)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.halt = threading.Event()

    def stopped(self) -> bool:
        return super().stopped() or self.halt.is_set()


class Faults:
    """The stack, the proxy in front of it, and the stage consumers."""

    def __init__(self, stack: LocalStack, proxy: FaultyProxy) -> None:
        self.stack = stack
        self.proxy = proxy
        self.consumers: dict[str, list[Poller]] = {}

    def consume(self, logical_id: str, copies: int = 1) -> list[Poller]:
        """Start `copies` consumers of the function's queue (running the real handler)."""
        source = next(s for s in self.stack.plan.event_sources if s.function == logical_id)
        function = self.stack.plan.functions[logical_id]
        started = [
            Poller(self.stack, source, function, self.stack.handler(logical_id)) for _ in range(copies)
        ]
        for poller in started:
            poller.start()
        self.consumers.setdefault(logical_id, []).extend(started)
        return started

    def halt(self, logical_id: str) -> None:
        """Stop every consumer of the function's queue (each finishes the batch it holds)."""
        for poller in self.consumers.pop(logical_id, []):
            poller.halt.set()

    def checker_store(self) -> ChunkStore:
        """A fresh LanceDB reader that goes straight to the emulator (no faults, no stale handle)."""
        uri = f"s3://{BUCKET}/lancedb"
        return ChunkStore(
            uri, storage_options_for(uri, "us-east-1", self.stack.endpoint_url), read_consistency_s=0
        )


@pytest.fixture(scope="module")
def faults(idle_stack: LocalStack) -> Iterator[Faults]:
    """The idle stack with its functions talking to the emulator through the faulty proxy."""
    names = ("STRATUS_AWS_ENDPOINT_URL", "STRATUS_AWS_READ_TIMEOUT_S", "STRATUS_STAGE_INLINE_MAX_BYTES")
    saved = {name: os.environ.get(name) for name in names}
    with FaultyProxy(idle_stack.endpoint_url) as proxy:
        os.environ["STRATUS_AWS_ENDPOINT_URL"] = proxy.url
        os.environ["STRATUS_AWS_READ_TIMEOUT_S"] = str(READ_TIMEOUT_S)
        # Every stage output goes through staging/ (claim checks), where the S3 faults are injected;
        # the inline path is the default everywhere else (tests/e2e/test_ingestion.py).
        os.environ["STRATUS_STAGE_INLINE_MAX_BYTES"] = "0"
        services.reset()
        harness = Faults(idle_stack, proxy)
        for logical_id in ("FetchFunction", "EmbedFunction", "IndexFunction"):
            harness.consume(logical_id)
        yield harness
        proxy.clear()
        for logical_id in list(harness.consumers):
            harness.halt(logical_id)
    restore_environment(saved)
    services.reset()
    print("\nfault matrix")
    for row in MATRIX:
        print("  " + ", ".join(f"{k}: {v}" for k, v in row.items()))


@pytest.fixture(autouse=True)
def _no_faults_left(faults: Faults) -> Iterator[None]:
    yield
    faults.proxy.clear()


def documents(prefix: str, count: int, sections: int = 1) -> dict[str, str]:
    """`count` distinct Markdown documents of `sections` sections each."""
    files = {}
    for i in range(count):
        parts = [
            f"## Part {s}\n\n" + f"Document {prefix} {i} section {s} describes the {prefix} topic {i}. " * 20
            for s in range(sections)
        ]
        files[f"{prefix}-{i}.md"] = f"# {prefix} {i}\n\n" + "\n\n".join(parts)
    return files


def upload(
    stack: LocalStack, collection: str, files: dict[str, str], tmp_path: Path
) -> tuple[list[str], float]:
    """Put the files into the collection's inbox (straight to the emulator); their doc ids and the time."""
    uploads = []
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        uploads.append(Upload(path, name))
    started = time.time()
    return upload_files(stack.client("s3"), BUCKET, "inbox/", collection, uploads), started


def check(
    faults: Faults, fault: str, collection: str, doc_ids: list[str], since: float, timeout_s: float = 60
) -> Row:
    """Wait for the documents, then assert: terminal with a reason, none lost, none duplicated."""
    records = wait_for_documents(services.document_table(), collection, doc_ids, timeout_s, since=since)
    by_id = {r.doc_id: r for r in records}
    table = faults.checker_store().open(collection)
    rows = table.search().select(["chunk_id", "doc_id"]).limit(None).to_arrow() if table is not None else None
    chunk_ids = rows.column("chunk_id").to_pylist() if rows is not None else []
    chunk_docs = Counter(rows.column("doc_id").to_pylist()) if rows is not None else Counter()
    not_terminal = [
        d
        for d in doc_ids
        if d not in by_id or by_id[d].status not in {DocumentStatus.INDEXED, DocumentStatus.FAILED}
    ]
    without_reason = [
        d for d in doc_ids if d in by_id and by_id[d].status == DocumentStatus.FAILED and not by_id[d].error
    ]
    lost = [
        d
        for d in doc_ids
        if d not in by_id
        or (by_id[d].status == DocumentStatus.INDEXED and chunk_docs[d] != by_id[d].chunk_count)
        or (by_id[d].status == DocumentStatus.INDEXED and by_id[d].chunk_count == 0)
        or (by_id[d].status == DocumentStatus.FAILED and chunk_docs[d] != 0)
    ]
    duplicated = sum(n - 1 for n in Counter(chunk_ids).values() if n > 1)
    row = Row(
        fault=fault,
        documents=len(doc_ids),
        indexed=sum(1 for r in records if r.status == DocumentStatus.INDEXED),
        failed=sum(1 for r in records if r.status == DocumentStatus.FAILED),
        lost=len(lost),
        duplicated=duplicated,
        injected=len(faults.proxy.log.injected),
    )
    MATRIX.append(row.__dict__)
    print(f"\n{row}")
    assert not_terminal == [], {d: by_id[d].status if d in by_id else None for d in not_terminal}
    assert without_reason == []
    assert lost == [], {d: (by_id[d].status, by_id[d].chunk_count, chunk_docs[d]) for d in lost if d in by_id}
    assert duplicated == 0
    return row


def reset_log(faults: Faults) -> None:
    faults.proxy.log.injected.clear()


# --- S3 faults ------------------------------------------------------------------------------


def test_s3_errors_on_get_and_put_are_retried_until_indexed(faults: Faults, tmp_path: Path) -> None:
    # given S3 answering 503 and 500 to the first GETs of inbox/ and staging/ objects and the first
    # PUTs of staging/ objects, more than the SDK's own retries absorb
    reset_log(faults)
    bucket = f"^/{BUCKET}/"
    faults.proxy.inject(
        Fault("GET", bucket + "inbox/s3err/", status=503, first=7),
        Fault("PUT", bucket + "staging/s3err/", status=500, first=7),
        Fault("GET", bucket + "staging/s3err/", status=503, first=7),
    )

    # when documents are uploaded
    doc_ids, since = upload(faults.stack, "s3err", documents("err", 4), tmp_path)

    # then every fault was hit, and each document is indexed once
    row = check(faults, "S3 5xx on GET inbox/staging + PUT staging", "s3err", doc_ids, since)
    assert row.injected == 21
    assert row.indexed == 4


def test_s3_errors_on_lancedb_objects_are_retried(faults: Faults, tmp_path: Path) -> None:
    # given S3 failing the first writes and reads of the chunk table's own objects (LanceDB's client)
    reset_log(faults)
    faults.proxy.inject(
        Fault("PUT", f"^/{BUCKET}/lancedb/chunks-s3lance", status=503, first=3),
        Fault("GET", f"^/{BUCKET}/lancedb/chunks-s3lance", status=500, first=3),
    )

    # when documents are uploaded
    doc_ids, since = upload(faults.stack, "s3lance", documents("lance", 3), tmp_path)

    # then they are indexed, none lost or twice
    row = check(faults, "S3 5xx on LanceDB GET/PUT", "s3lance", doc_ids, since)
    assert row.injected >= 1
    assert row.indexed == 3


def test_s3_stalls_past_the_read_timeout_are_retried(faults: Faults, tmp_path: Path) -> None:
    # given S3 holding the first GETs and PUTs of inbox/ and staging/ objects past the read timeout
    reset_log(faults)
    bucket = f"^/{BUCKET}/"
    stall = READ_TIMEOUT_S + 3
    faults.proxy.inject(
        Fault("GET", bucket + "inbox/stall/", kind="stall", first=2, stall_s=stall),
        Fault("PUT", bucket + "staging/stall/", kind="stall", first=2, stall_s=stall),
        Fault("GET", bucket + "staging/stall/", kind="stall", first=2, stall_s=stall),
    )

    # when documents are uploaded
    doc_ids, since = upload(faults.stack, "stall", documents("stall", 3), tmp_path)

    # then each stall cost a timeout and a retry, and every document is indexed once
    row = check(faults, "S3 GET/PUT stalled past read timeout", "stall", doc_ids, since, timeout_s=90)
    assert row.injected == 6
    assert row.indexed == 3


def test_permanent_s3_refusal_fails_the_document_with_a_reason(faults: Faults, tmp_path: Path) -> None:
    # given S3 refusing (403) every read of one inbox object
    reset_log(faults)
    faults.proxy.inject(Fault("GET", f"^/{BUCKET}/inbox/denied/denied-1.md", status=403, first=1000))

    # when it is uploaded next to two readable documents
    doc_ids, since = upload(faults.stack, "denied", documents("denied", 3), tmp_path)

    # then it is FAILED with the reason, the others INDEXED, nothing lost or twice
    row = check(faults, "S3 403 on one inbox object", "denied", doc_ids, since)
    assert (row.indexed, row.failed) == (2, 1)
    record = services.document_table().get("denied", make_doc_id("denied", "denied-1.md"))
    assert record is not None
    assert record.error is not None
    assert "AccessDenied" in record.error


# --- SQS redelivery -------------------------------------------------------------------------


@pytest.mark.parametrize("handover", ["staged", "inline"])
def test_every_message_delivered_twice(faults: Faults, tmp_path: Path, handover: str) -> None:
    # given every stage receiving each message twice: the consumer sends a copy back to its queue;
    # stage outputs staged in S3 (the matrix's default) or carried in the messages (the product's)
    with handover_mode(handover):
        delivered_twice(faults, tmp_path, handover)


@contextlib.contextmanager
def handover_mode(handover: str) -> Iterator[None]:
    """Stage outputs staged in S3 (the matrix's setting) or, for "inline", the product's default."""
    saved = {"STRATUS_STAGE_INLINE_MAX_BYTES": os.environ.get("STRATUS_STAGE_INLINE_MAX_BYTES")}
    if handover == "inline":
        os.environ.pop("STRATUS_STAGE_INLINE_MAX_BYTES", None)
    get_settings.cache_clear()
    try:
        yield
    finally:
        restore_environment(saved)
        get_settings.cache_clear()


def delivered_twice(faults: Faults, tmp_path: Path, handover: str) -> None:
    collection = f"twice-{handover}"
    reset_log(faults)
    sqs = faults.stack.client("sqs")
    originals = {}
    copied: list[str] = []
    for poller in [p for ps in faults.consumers.values() for p in ps]:
        originals[poller] = poller.handler

        def twice(
            event: dict[str, Any], context: Any, handler: Any = poller.handler, url: str = poller.queue_url
        ) -> Any:
            for record in event["Records"]:
                if record["attributes"].get("ApproximateReceiveCount") == "1":
                    # A FIFO queue (index) takes the copy in the record's group, as a distinct message
                    fifo = (
                        {
                            "MessageGroupId": record["attributes"]["MessageGroupId"],
                            "MessageDeduplicationId": f"copy-{record['messageId']}",
                        }
                        if url.endswith(".fifo")
                        else {}
                    )
                    sqs.send_message(QueueUrl=url, MessageBody=record["body"], **fifo)
                    copied.append(record["body"])
            return handler(event, context)

        poller.handler = twice
    try:
        # when documents are uploaded (and then uploaded again, unchanged)
        files = documents("twice", 4, sections=3)
        doc_ids, since = upload(faults.stack, collection, files, tmp_path)
        check(faults, f"SQS: every message delivered twice ({handover})", collection, doc_ids, since)
        time.sleep(3)  # the copies of the last stage drain
    finally:
        for poller, handler in originals.items():
            poller.handler = handler

    # then the copies were of the kind asked for: stage messages carrying their outputs, or none did
    carrying = [body for body in copied if '"payload":"' in body]
    assert (len(carrying) > 0) == (handover == "inline")

    # and each document is indexed once (the copies found nothing new to do)
    row = check(
        faults, f"SQS: every message delivered twice ({handover}, drained)", collection, doc_ids, since
    )
    assert row.indexed == 4


def test_a_stage_failing_on_every_attempt_fails_the_document_until_the_dlq_is_redriven(
    faults: Faults, tmp_path: Path
) -> None:
    # given S3 failing (503) every read of one document's staged chunks: embed fails it transiently
    reset_log(faults)
    collection = "giveup"
    files = documents("giveup", 3)
    stuck = make_doc_id(collection, "giveup-1.md")
    faults.proxy.inject(Fault("GET", rf"^/{BUCKET}/staging/{collection}/{stuck}/", status=503, first=10_000))
    sqs = faults.stack.client("sqs")
    dlq_url = faults.stack.queue_urls["EmbedDLQ"]
    dead_before = faults.stack.queue_depth("EmbedDLQ")

    # when the documents are uploaded and the embed queue's receives run out for that one
    doc_ids, since = upload(faults.stack, collection, files, tmp_path)
    max_receives = faults.stack.plan.queues["EmbedQueue"].max_receive_count or 1
    row = check(
        faults,
        "embed fails transiently on every attempt (DLQ)",
        collection,
        doc_ids,
        since,
        40 + 8 * max_receives,
    )

    # then that document is FAILED with a reason naming the stage and the DLQ, the others INDEXED
    assert (row.indexed, row.failed) == (2, 1)
    record = services.document_table().get(collection, stuck)
    assert record is not None
    assert record.status == DocumentStatus.FAILED
    assert record.error is not None
    assert record.error.startswith(
        f"embed: gave up after {max_receives} attempts (S3 get staging/{collection}/"
    )
    assert "embed dead-letter queue" in record.error
    assert "stratus dlq redrive --stage embed" in record.error
    # and its message is in the embed DLQ (SQS moves it on the receive after the last)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and faults.stack.queue_depth("EmbedDLQ") == dead_before:
        time.sleep(0.5)
    assert faults.stack.queue_depth("EmbedDLQ") == dead_before + 1
    peeked = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    assert stuck in [StageMessage.model_validate_json(m["Body"]).doc_id for m in peeked.get("Messages", [])]

    # when the cause is fixed and the embed DLQ is redriven
    faults.proxy.clear()
    reset_log(faults)
    since = time.time()
    assert dlq_main(["redrive", "--stage", "embed"]) == 0

    # then the document ends INDEXED, once, and the DLQ is empty
    row = check(faults, "  ... then `stratus dlq redrive --stage embed`", collection, [stuck], since)
    assert row.indexed == 1
    assert faults.stack.queue_depth("EmbedDLQ") == 0


def test_visibility_expiring_mid_processing(faults: Faults, tmp_path: Path) -> None:
    # given two consumers per fetch and embed queue, and staged reads slower than the 2 s visibility
    reset_log(faults)
    extra = faults.consume("FetchFunction") + faults.consume("EmbedFunction")
    faults.proxy.inject(
        Fault("GET", f"^/{BUCKET}/inbox/slow/", kind="stall", first=3, stall_s=READ_TIMEOUT_S + 1),
        Fault("GET", f"^/{BUCKET}/staging/slow/", kind="stall", first=3, stall_s=READ_TIMEOUT_S + 1),
    )
    try:
        # when documents are uploaded: a message that outlives its visibility goes to the other consumer
        doc_ids, since = upload(faults.stack, "slow", documents("slow", 4, sections=2), tmp_path)
        row = check(faults, "SQS: visibility expires mid-processing", "slow", doc_ids, since, timeout_s=90)
    finally:
        for poller in extra:
            poller.halt.set()
            faults.consumers[poller.function.logical_id].remove(poller)

    # then every document is indexed once
    assert row.indexed == 4


# --- the index writer killed mid-batch --------------------------------------------------------

INDEX_WORKER = (
    "import signal, threading\n"
    "from stratus.pipeline.worker import stage_worker\n"
    "stop = threading.Event()\n"
    "signal.signal(signal.SIGTERM, lambda *_: stop.set())\n"
    "stage_worker('index', wait_s=1).run(stop)\n"
)


def chunk_count(faults: Faults, collection: str, doc_id: str) -> int:
    table = faults.checker_store().open(collection)
    assert table is not None
    return int(table.count_rows(f"doc_id = '{doc_id}'"))


def test_index_writer_killed_between_merge_insert_and_delete(faults: Faults, tmp_path: Path) -> None:
    # given an indexed document of six sections
    collection = "killed"
    (doc_id,), since = upload(faults.stack, collection, documents("killed", 1, sections=6), tmp_path)
    (first,) = wait_for_documents(services.document_table(), collection, [doc_id], 60, since=since)
    assert first.status == DocumentStatus.INDEXED

    # and the index writer running in its own process, whose second table commit (the delete of
    # stale chunks, after the merge_insert's commit) S3 never answers
    reset_log(faults)
    faults.halt("IndexFunction")
    faults.proxy.inject(
        Fault(
            "PUT",
            rf"^/{BUCKET}/lancedb/chunks-{collection}\.lance/_versions/",
            kind="stall",
            after=1,
            first=1,
            stall_s=120,
        )
    )
    writer = subprocess.Popen([sys.executable, "-c", INDEX_WORKER], env=dict(os.environ), cwd=REPO_ROOT)
    try:
        # when the document shrinks to two sections, and the writer is SIGKILLed while it waits
        shorter = documents("killed", 1, sections=2)
        _, since = upload(faults.stack, collection, shorter, tmp_path)
        deadline = time.monotonic() + 60
        while not faults.proxy.log.injected and time.monotonic() < deadline and writer.poll() is None:
            time.sleep(0.1)
        assert faults.proxy.log.injected, faults.proxy.log.writes[-20:]
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
    faults.proxy.clear()

    # then the table holds the merge_insert without the delete: new and stale chunks side by side
    record = services.document_table().get(collection, doc_id)
    assert record is not None
    assert record.status != DocumentStatus.INDEXED or record.updated_at < since
    assert chunk_count(faults, collection, doc_id) > 2

    # and when a fresh writer takes the redelivered message, the document is indexed once
    faults.consume("IndexFunction")
    row = check(faults, "index writer SIGKILLed between merge_insert and delete", collection, [doc_id], since)
    assert row.indexed == 1


# --- the API restarted under load -------------------------------------------------------------


class Api:
    """uvicorn serving the API in a thread, on a fixed port so a restart keeps the address."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import uvicorn

        from stratus.api.app import create_app

        config = uvicorn.Config(
            create_app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="api")
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "the API did not start"
            assert self._thread.is_alive(), "the API did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        assert self._thread is not None
        self._thread.join(timeout=30)


def admin_headers() -> dict[str, str]:
    """Headers with a new unlimited admin key."""
    return request_headers(create_admin_key("faults"))


def test_api_restarted_under_load(faults: Faults, tmp_path: Path) -> None:
    # given the API serving a collection, and a client POSTing documents and searching at 8/s
    collection = "restart"
    reset_log(faults)
    (seed,), since = upload(faults.stack, collection, documents("seed", 1), tmp_path)
    wait_for_documents(services.document_table(), collection, [seed], 60, since=since)
    api = Api(free_port())
    api.start()
    headers = admin_headers()

    def make_call(i: int) -> Call:
        if i % 2:
            return Call(
                "search", "POST", f"/v1/collections/{collection}/search", {"query": f"restart topic {i}"}
            )
        text = f"# Restart {i}\n\nDocument {i} was submitted while the API restarted. " * 3
        body = {"documents": [{"source": f"restart-{i}.md", "text": text}]}
        return Call("documents", "POST", f"/v1/collections/{collection}/documents", body)

    window: dict[str, float] = {}

    def restart(started: float) -> None:
        time.sleep(4)
        window["down"] = time.monotonic() - started
        api.stop()
        time.sleep(1)
        api.start()
        window["up"] = time.monotonic() - started

    async def load() -> list[Outcome]:
        async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as client:
            restarter = threading.Thread(target=restart, args=(time.monotonic(),))
            restarter.start()
            outcomes = await open_loop(client, make_call, rate=8, duration_s=12, concurrency=32)
            restarter.join()
            return outcomes

    # when the API is stopped and started again in the middle
    since = time.time()
    try:
        outcomes = asyncio.run(load())
    finally:
        api.stop()

    # then clients saw connection errors only while it was down, and no 5xx at all
    summary = report(outcomes)
    failed = [o for o in outcomes if not o.ok]
    print(f"\nAPI restart: down {window['down']:.1f}-{window['up']:.1f} s, {summary}")
    assert [o for o in outcomes if o.status is not None and o.status >= 500] == []
    assert all(o.status is None and o.error for o in failed), failed
    assert all(window["down"] - 0.5 <= o.scheduled_s <= window["up"] + 0.5 for o in failed), failed
    # and every accepted document reaches INDEXED, none lost or twice
    accepted = [o.call for o in outcomes if o.status == 202 and o.call is not None]
    doc_ids = [make_doc_id(collection, c.body["documents"][0]["source"]) for c in accepted if c.body]
    assert len(doc_ids) >= 30
    row = check(
        faults,
        f"API restarted under load ({len(failed)} connection errors while down)",
        collection,
        doc_ids,
        since,
        timeout_s=90,
    )
    assert row.indexed == len(doc_ids)


# --- an LLM provider that hangs ---------------------------------------------------------------


def test_hanging_llm_times_out_to_the_extractive_answer_while_ingesting(
    faults: Faults, tmp_path: Path
) -> None:
    # given a local LLM that accepts chat requests and never answers, and a 1 s provider timeout
    # (the router-level case is tests/integration/test_chat_router.py::test_a_hanging_provider...)
    collection = "hang"
    reset_log(faults)
    (seed,), since = upload(faults.stack, collection, documents("hang", 1), tmp_path)
    wait_for_documents(services.document_table(), collection, [seed], 60, since=since)
    overrides = {
        "STRATUS_LOCAL_LLM_BASE_URL": "",
        "STRATUS_CHAT_TIMEOUT_S": "1",
        "STRATUS_CHAT_CLOUD_PROVIDERS": "",
    }
    with FakeOpenAI("llama-hangs") as llm:
        llm.default = Step("hang", hang_s=30)
        overrides["STRATUS_LOCAL_LLM_BASE_URL"] = llm.base_url
        saved = {name: os.environ.get(name) for name in overrides}
        os.environ.update(overrides)
        services.reset()
        api = Api(free_port())
        api.start()
        try:
            headers = admin_headers()
            # when documents are ingested while questions are asked
            doc_ids, since = upload(faults.stack, collection, documents("hang", 4), tmp_path)
            answers = []
            for _ in range(3):
                started = time.perf_counter()
                response = httpx.post(
                    f"{api.url}/v1/collections/{collection}/chat",
                    json={"messages": [{"role": "user", "content": "What does the hang topic describe?"}]},
                    headers=headers,
                    timeout=30,
                )
                answers.append((response, time.perf_counter() - started))
        finally:
            api.stop()
            llm.release.set()
            restore_environment(saved)
            services.reset()

    # then every question was answered extractively after the timeout, within seconds
    for response, elapsed in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["provider"] == "extractive"
        assert body["fallbacks"][0]["reason"].startswith("timeout")
        assert elapsed < 10
    # and the documents ingested meanwhile are all indexed once
    row = check(faults, "LLM provider hangs (chat falls back to extractive)", collection, doc_ids, since)
    assert row.indexed == 4
