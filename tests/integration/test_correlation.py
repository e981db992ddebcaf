"""One request id from the API through fetch, embed and index; readiness names what is down."""

from __future__ import annotations

import json
import logging
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stratus import services
from stratus.models import REQUEST_ID_METADATA, make_doc_id
from stratus.observability import logger
from stratus_tools.local.stack import LocalStack
from stratus_tools.uploads import wait_for_documents

pytestmark = pytest.mark.integration

COLLECTION = "corr"


class JsonLines(logging.Handler):
    """Every record of Stratus' logger as the JSON the Powertools logger writes, formatted in its thread."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[dict[str, Any]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(logger.registered_formatter.format(record)))


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    std = logging.getLogger(logger.name)
    level = std.level
    capture = JsonLines()
    std.addHandler(capture)
    std.setLevel(logging.INFO)
    try:
        yield capture.lines
    finally:
        std.setLevel(level)
        std.removeHandler(capture)


@pytest.fixture(scope="module")
def api(running_stack: LocalStack) -> str:
    return running_stack.serve_api(port=0)


def test_one_request_id_follows_each_document_through_every_stage(
    api: str, api_headers: dict[str, str], log_lines: list[dict[str, Any]]
) -> None:
    # given two documents submitted in two requests, each with its own request id
    ids = {"a.md": f"req-a-{uuid.uuid4().hex[:8]}", "b.md": f"req-b-{uuid.uuid4().hex[:8]}"}
    started = time.time()
    for source, request_id in ids.items():
        body = {"documents": [{"source": source, "text": f"# {source}\n\nTides and {source} bread."}]}
        response = httpx.post(
            f"{api}/v1/collections/{COLLECTION}/documents",
            json=body,
            headers={**api_headers, "x-request-id": request_id},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        assert response.headers["x-request-id"] == request_id

    # when the pipeline indexes both
    doc_ids = {source: make_doc_id(COLLECTION, source) for source in ids}
    records = wait_for_documents(
        services.document_table(), COLLECTION, list(doc_ids.values()), 120, since=started
    )
    assert [r.status.value for r in records] == ["INDEXED", "INDEXED"]

    # then each inbox object names the request that wrote it
    for source, request_id in ids.items():
        info = services.blob_store().head(f"inbox/{COLLECTION}/{source}")
        assert info is not None
        assert info.metadata[REQUEST_ID_METADATA] == request_id

    # and each document's fetch, embed and index lines carry its request id and doc id
    for source, request_id in ids.items():
        mine = [line for line in log_lines if line.get("request_id") == request_id]
        stages = {line["message"] for line in mine if line.get("doc_id") == doc_ids[source]}
        assert {"document fetched", "document embedded", "document indexed"} <= stages, mine
        # and no line of this request names the other document (keys are cleared between records)
        assert {line.get("doc_id") for line in mine} <= {doc_ids[source], None}


def test_ready_is_200_with_every_dependency_named_and_fast(running_stack: LocalStack, api: str) -> None:
    # given the running stack
    # when readiness and liveness are each asked 50 times
    timings: dict[str, list[float]] = {"live": [], "ready": []}
    with httpx.Client(base_url=api, timeout=10) as client:
        first = client.get("/health/ready")
        for _ in range(50):
            for name in timings:
                started = time.perf_counter()
                response = client.get(f"/health/{name}")
                timings[name].append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text

    # then every dependency is checked by name and reported ok
    assert first.status_code == 200, first.text
    assert first.json()["checks"] == {
        "store": "ok",
        "model": "ok",
        "fetch_queue": "ok",
        "embed_queue": "ok",
        "index_queue": "ok",
    }
    # and both answer quickly (the median; readiness is cached between checks)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(f"health latency median of 50 (ms): {medians}")
    assert medians["live"] < 50
    assert medians["ready"] < 50


def test_ready_is_503_naming_each_failing_dependency(
    running_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from stratus.api.app import create_app

    # given a missing model, an embed queue that does not exist and a store path that is a file
    not_a_folder = tmp_path / "lancedb"
    not_a_folder.write_text("")
    queue_url = running_stack.queue_urls["EmbedQueue"]
    monkeypatch.setenv("STRATUS_MODEL_DIR", str(tmp_path / "no-model"))
    monkeypatch.setenv("STRATUS_EMBED_QUEUE_URL", queue_url.rsplit("/", 1)[0] + "/no-such-queue")
    monkeypatch.setenv("STRATUS_LANCEDB_URI", str(not_a_folder))
    services.reset()
    try:
        # when readiness is asked
        with TestClient(create_app()) as client:
            response = client.get("/health/ready")
    finally:
        monkeypatch.undo()
        services.reset()

    # then 503 names exactly the three failing dependencies, the others ok
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert response.json()["status"] == "degraded"
    assert {name for name, state in checks.items() if state != "ok"} == {"model", "embed_queue", "store"}
    assert checks["fetch_queue"] == checks["index_queue"] == "ok"
    assert checks["store"].startswith("error: ")
