"""The dashboard shows what the code emits: metric names captured while a real scenario runs.

The scenario runs on the local stack (pipeline pollers, the API over HTTP, the maintenance handler)
with fake LLM servers: ingest, re-ingest, a failing document, a delete, searches, chats with a
fallback, an opened circuit, a refusal and an error, refused and rate-limited keys, maintenance, and a
phrase query that degrades search to one retriever.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.env import restore_environment
from fakes.openai_server import FakeOpenAI, answer, status

from stratus import services
from stratus.access.auth import create_key
from stratus.observability import MetricName, capture_metrics
from stratus.settings import get_settings
from stratus.stores import aws
from stratus_tools.local.cfn_yaml import load_template
from stratus_tools.local.stack import LocalStack
from stratus_tools.uploads import Upload, upload_files, wait_for_documents

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTION = "ops"
CHAT_ENVIRONMENT = {
    "STRATUS_CHAT_ROUTER_MODE": "local-first",
    "STRATUS_CHAT_BREAKER_FAILURES": "1",
    "STRATUS_CHAT_BREAKER_COOLDOWN_S": "600",
    "STRATUS_CHAT_TIMEOUT_S": "5",
    "STRATUS_OPENAI_API_KEY": "sk-fake",
    "STRATUS_OPENAI_MODEL": "gpt-fake",
    "STRATUS_LOCAL_LLM_MODEL": "llama-fake",
}


def dashboard_custom_metrics() -> set[str]:
    """Names of the Stratus-namespace metrics on the template's dashboard."""
    body = load_template(REPO_ROOT / "template.yaml")["Resources"]["Dashboard"]["Properties"]
    parsed = json.loads(re.sub(r"\$\{[^}]+\}", "resolved", body["DashboardBody"]["Fn::Sub"]))
    return {
        metric[1]
        for widget in parsed["widgets"]
        for metric in widget["properties"].get("metrics", [])
        if isinstance(metric[0], str) and metric[0] == "Stratus"
    }


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with FakeOpenAI("llama-fake") as local, FakeOpenAI("gpt-fake") as cloud:
        yield local, cloud


@pytest.fixture(scope="module")
def api(running_stack: LocalStack, providers: tuple[FakeOpenAI, FakeOpenAI]) -> Iterator[str]:
    """The API of the running stack, its chat wired to the fake local and cloud servers."""
    local, cloud = providers
    environment = {
        **CHAT_ENVIRONMENT,
        "STRATUS_LOCAL_LLM_BASE_URL": local.base_url,
        "STRATUS_OPENAI_BASE_URL": cloud.base_url,
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    get_settings.cache_clear()
    services.reset()
    yield running_stack.serve_api(port=0)
    restore_environment(saved)
    get_settings.cache_clear()
    services.reset()


def ingest(folder: Path, files: dict[str, bytes]) -> list[Any]:
    """Upload files into the collection and wait for their final status."""
    settings = get_settings()
    started = time.time()
    folder.mkdir(parents=True)
    uploads = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        uploads.append(Upload(path=folder / name, source=name))
    doc_ids = upload_files(aws.client("s3"), settings.bucket, settings.inbox_prefix, COLLECTION, uploads)
    return wait_for_documents(services.document_table(), COLLECTION, doc_ids, 120, since=started)


def post(api: str, path: str, key: str | None, body: dict[str, Any]) -> httpx.Response:
    headers = {"x-api-key": key} if key else {}
    return httpx.post(f"{api}/v1/collections/{COLLECTION}/{path}", json=body, headers=headers, timeout=60)


def ask(api: str, key: str, question: str, **fields: Any) -> httpx.Response:
    return post(api, "chat", key, {"messages": [{"role": "user", "content": question}], **fields})


def sync_a_site(api: str, key: str) -> None:
    """Sources: syncs started, succeeded and failed; pages fetched, answered 304, deleted."""
    from fakes.site import Site, page

    site = Site().start()
    saved = {"STRATUS_URL_ALLOW_HOSTS": os.environ.get("STRATUS_URL_ALLOW_HOSTS")}
    os.environ["STRATUS_URL_ALLOW_HOSTS"] = site.host
    get_settings.cache_clear()
    try:
        site.pages = {
            "/s": ("text/html", page("Start", "<p>Start page.</p>", ["/s/a"])),
            "/s/a": ("text/html", page("A", "<p>Page a.</p>", [])),
        }

        def sync(urls: list[str]) -> str:
            return str(post(api, "sources", key, {"kind": "web", "urls": urls}).json()["source_id"])

        def run(source: str) -> str:
            sync_id = post(api, f"sources/{source}/syncs", key, {}).json()["sync_id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                view = httpx.get(
                    f"{api}/v1/collections/{COLLECTION}/sources/{source}/syncs/{sync_id}",
                    headers={"x-api-key": key},
                ).json()
                if view["state"] != "RUNNING":
                    return str(view["state"])
                time.sleep(0.3)
            raise AssertionError("sync still running")

        source = sync([f"{site.url}/s/"])
        assert run(source) == "SUCCEEDED"
        del site.pages["/s/a"]
        assert run(source) == "SUCCEEDED"
        assert run(sync([f"{site.url}/missing/"])) == "FAILED"
    finally:
        restore_environment(saved)
        get_settings.cache_clear()
        site.stop()


def test_every_dashboard_metric_is_emitted_by_a_real_scenario(
    running_stack: LocalStack, api: str, providers: tuple[FakeOpenAI, FakeOpenAI], tmp_path: Path
) -> None:
    local, cloud = providers
    table = services.key_table()
    admin = create_key(table, "ops-admin", ["*"], ["admin"]).key
    slow = create_key(
        table, "ops-slow", [COLLECTION], ["read"], rate_limit_per_s=0.001, rate_limit_burst=1
    ).key
    tides = b"# Tides\n\nThe moon pulls the oceans and causes the tides twice a day.\n"
    with capture_metrics() as captured:
        # Given a collection ingested through the pipeline: new, unchanged, broken and deleted documents
        first = ingest(
            tmp_path / "first",
            {"tides.md": tides, "bread.md": b"# Bread\n\nBake bread from flour and yeast.\n"},
        )
        assert {r.source: r.status.value for r in first} == {"tides.md": "INDEXED", "bread.md": "INDEXED"}
        again = ingest(tmp_path / "again", {"tides.md": tides, "broken.pdf": b"%PDF-1.7 not really a pdf"})
        assert {r.source: r.status.value for r in again} == {"tides.md": "INDEXED", "broken.pdf": "FAILED"}
        settings = get_settings()
        before_delete = time.time()
        aws.client("s3").delete_object(
            Bucket=settings.bucket, Key=f"{settings.inbox_prefix}{COLLECTION}/bread.md"
        )
        (deleted,) = wait_for_documents(
            services.document_table(),
            COLLECTION,
            [next(r.doc_id for r in first if r.source == "bread.md")],
            120,
            since=before_delete,
        )
        assert deleted.status.value == "DELETED"
        # When it is searched, and chatted with: the local server fails once (fallback to the cloud,
        # its circuit opens), is then skipped (circuit open), and asked alone it cannot answer
        assert post(api, "search", admin, {"query": "tides"}).status_code == 200
        local.script(status(503, "overloaded"))
        cloud.script(answer("The moon causes the tides [1]."), answer("Twice a day [1]."))
        assert ask(api, admin, "What causes the tides?").status_code == 200
        assert ask(api, admin, "How often are tides?").status_code == 200
        ask(api, admin, "What causes the tides?", provider="local")
        refused = ask(api, admin, "Anything?", filters={"field": "source", "in": ["nothing.md"]})
        assert refused.status_code == 200
        # And keys are refused or rate limited, and maintenance runs
        assert post(api, "search", None, {"query": "tides"}).status_code == 401
        assert post(api, "search", slow, {"query": "tides"}).status_code == 200
        assert post(api, "search", slow, {"query": "tides"}).status_code == 429
        # And maintenance runs; once the API sees its fully indexed version (reads are eventually
        # consistent), a quoted phrase degrades search to vectors: the full-text index keeps no positions
        running_stack.handler("MaintenanceFunction")({}, running_stack.context("MaintenanceFunction"))
        deadline = time.monotonic() + 20
        while post(api, "search", admin, {"query": '"the moon pulls"'}).json()["degraded"] != ["keyword"]:
            assert time.monotonic() < deadline, "a phrase query never degraded the search"
            time.sleep(0.5)
        # And a web source syncs twice (the second finds one page unchanged, one gone) and one fails
        sync_a_site(api, admin)
    emitted = {name.value for name, _, _ in captured}
    shown = dashboard_custom_metrics()
    # Then every custom metric on the dashboard was seen being emitted
    assert shown - emitted == set()
    # And everything emitted is on the dashboard, and is a declared MetricName
    assert emitted - shown == set()
    assert emitted <= {name.value for name in MetricName}
