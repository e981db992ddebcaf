"""The console's API over HTTP (uvicorn on 127.0.0.1, the emulator's tables, a real LanceDB folder and
encoder): feedback, server-side conversations, a client that hangs up mid-answer, the /ui files."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from fakes.chunks import single_chunk_batch
from fakes.env import restore_environment
from fakes.slow_llm import SlowLLM

from stratus import services
from stratus.access.auth import create_key
from stratus.stores.schema import chunk_rows
from stratus_tools.local.stack import LocalStack, free_port

pytestmark = pytest.mark.integration

COLLECTION = "console"
DOCS = [
    ("tides.md", "Tides", "The moon pulls the oceans and causes the tides twice a day."),
    ("bread.md", "Bread", "Bake bread from flour, water, yeast and salt in a hot oven."),
]
# 200 words at 20 ms each: about 4 s when nobody hangs up.
LONG_ANSWER = " ".join(["The moon pulls the oceans [1]."] + ["word"] * 199)


def rows() -> pa.Table:
    from stratus.embedding.encoder import get_encoder

    tables = []
    for source, title, text in DOCS:
        batch = single_chunk_batch(COLLECTION, source, title, text)
        tables.append(chunk_rows(batch, get_encoder().embed_documents([f"{title}\n{text}"])))
    return pa.concat_tables(tables)


@pytest.fixture(scope="module")
def llm() -> Iterator[SlowLLM]:
    with SlowLLM(LONG_ANSWER, delay_s=0.02) as server:
        yield server


@pytest.fixture(scope="module")
def api(
    model_dir: Path, llm: SlowLLM, idle_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The API over a local LanceDB folder with two documents; the emulator holds the tables."""
    import uvicorn

    from stratus.api.app import create_app

    environment = {
        "STRATUS_LANCEDB_URI": str(tmp_path_factory.mktemp("lancedb")),
        "STRATUS_MODEL_DIR": str(model_dir),
        "STRATUS_OPENAI_BASE_URL": llm.base_url,
        "STRATUS_OPENAI_API_KEY": "fake-provider-key",
        "STRATUS_CHAT_TOP_K": "2",
        "TIKTOKEN_CACHE_DIR": str(tmp_path_factory.mktemp("tiktoken")),
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    services.reset()
    services.chunk_store().write(COLLECTION, rows(), {}, [], 384)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    restore_environment(saved)
    services.reset()


def key(roles: list[str], collections: list[str] | None = None) -> dict[str, str]:
    return {"x-api-key": create_key(services.key_table(), "t", collections or [COLLECTION], roles).key}


def chat(api: str, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{api}/v1/collections/{COLLECTION}/chat", json=body, headers=headers, timeout=60)


def ask(text: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "provider": "extractive", **fields}


# --- feedback ----------------------------------------------------------------------------------------


def test_feedback_is_stored_and_listed_for_admins(api: str) -> None:
    # given a read key and an admin key of the collection
    reader, admin = key(["read"]), key(["admin"])
    # when the reader rates an answer
    body = {
        "target": "answer",
        "rating": 1,
        "query": "why tides?",
        "chunk_ids": ["c1"],
        "doc_ids": ["d1"],
        "comment": "spot on",
    }
    created = httpx.post(f"{api}/v1/collections/{COLLECTION}/feedback", json=body, headers=reader, timeout=30)
    # then it is stored (201) and an admin sees it, with who sent it
    assert created.status_code == 201, created.text
    listed = httpx.get(f"{api}/v1/collections/{COLLECTION}/feedback", headers=admin, timeout=30).json()[
        "feedback"
    ]
    mine = [f for f in listed if f["feedback_id"] == created.json()["feedback_id"]]
    assert mine
    assert mine[0]["comment"] == "spot on"
    assert mine[0]["doc_ids"] == ["d1"]
    # and the reader may not list feedback
    assert (
        httpx.get(f"{api}/v1/collections/{COLLECTION}/feedback", headers=reader, timeout=30).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rating": 5}, "rating"),
        ({"target": "page"}, "target"),
        ({"query": ""}, "query"),
        ({"chunk_ids": ["x"] * 51}, "chunk_ids"),
        ({"comment": "x" * 2001}, "comment"),
    ],
)
def test_invalid_feedback_is_422_naming_the_field(api: str, change: dict[str, Any], field: str) -> None:
    body = {"target": "hit", "rating": -1, "query": "q", **change}
    response = httpx.post(
        f"{api}/v1/collections/{COLLECTION}/feedback", json=body, headers=key(["read"]), timeout=30
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith(field)


def test_feedback_of_another_collection_is_403(api: str) -> None:
    response = httpx.post(
        f"{api}/v1/collections/other/feedback",
        json={"target": "hit", "rating": 1, "query": "q"},
        headers=key(["read"]),
        timeout=30,
    )
    assert response.status_code == 403


# --- conversations -----------------------------------------------------------------------------------


def test_a_conversation_id_keeps_the_turns_server_side(api: str) -> None:
    # given a conversation started with an id
    headers = key(["read"])
    first = chat(api, headers, ask("How do tides happen?", conversation_id="conv-tides-0001"))
    assert first.status_code == 200, first.text
    assert first.json()["conversation_id"] == "conv-tides-0001"
    # when a follow-up is sent alone, with the same id
    follow = chat(api, headers, ask("and how often?", conversation_id="conv-tides-0001"))
    # then the server used the stored turns: the follow-up's query has the first question's keywords
    assert follow.status_code == 200, follow.text
    assert follow.json()["query_rewrite"] == "keywords"
    assert "tides" in follow.json()["query"]
    stored = services.conversation_table().get("conv-tides-0001")
    assert stored is not None
    assert [m["role"] for m in stored.messages] == ["user", "assistant", "user", "assistant"]
    assert stored.expires_at > time.time() + 3600


def test_history_sent_by_the_client_still_works_without_an_id(api: str) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "How do tides happen?"},
            {"role": "assistant", "content": "The moon pulls the oceans."},
            {"role": "user", "content": "and how often?"},
        ],
        "provider": "extractive",
    }
    response = chat(api, key(["read"]), body)
    assert response.status_code == 200
    assert response.json()["query_rewrite"] == "keywords"
    assert "conversation_id" not in response.json()


def test_another_keys_conversation_is_not_found(api: str) -> None:
    chat(api, key(["read"]), ask("How do tides happen?", conversation_id="conv-private-01"))
    response = chat(api, key(["read"]), ask("and how often?", conversation_id="conv-private-01"))
    assert response.status_code == 404
    assert response.json()["code"] == "conversation_not_found"


def test_a_streamed_answer_is_added_to_the_conversation(api: str) -> None:
    headers = key(["read"])
    body = ask("How do tides happen?", conversation_id="conv-stream-001", stream=True)
    with httpx.stream(
        "POST", f"{api}/v1/collections/{COLLECTION}/chat", json=body, headers=headers, timeout=60
    ) as r:
        text = r.read().decode()
    done = [
        json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and '"answer"' in line
    ]
    assert done
    assert done[-1]["conversation_id"] == "conv-stream-001"
    stored = services.conversation_table().get("conv-stream-001")
    assert stored is not None
    assert stored.messages[-1]["content"] == done[-1]["answer"]


def test_an_expired_conversation_starts_afresh() -> None:
    from stratus.stores.conversations import ConversationTable

    now = [1000.0]
    table = ConversationTable(
        services.conversation_table()._ddb, services.conversation_table().table_name, clock=lambda: now[0]
    )
    table.save("conv-expiring-1", COLLECTION, "k", [{"role": "user", "content": "hi"}], ttl_s=60)
    assert table.get("conv-expiring-1") is not None
    now[0] += 61
    assert table.get("conv-expiring-1") is None


# --- a client that hangs up --------------------------------------------------------------------------


def test_a_client_that_disconnects_mid_answer_cancels_the_provider_request(api: str, llm: SlowLLM) -> None:
    # given a streamed answer of 200 words from the slow provider (about 4 s)
    headers = key(["read"])
    before = len(llm.served)
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": "How do tides happen?"}],
            "stream": True,
            "provider": "openai",
        }
    ).encode()
    host, port = api.removeprefix("http://").split(":")
    # when the client reads the first delta and closes its socket
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        request = (
            f"POST /v1/collections/{COLLECTION}/chat HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\n"
            f"x-api-key: {headers['x-api-key']}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        sock.sendall(request)
        received = b""
        while b"event: delta" not in received:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
    # then the provider's stream is closed early: it stops writing well before its 200 words
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (len(llm.served) > before and llm.served[-1].disconnected):
        time.sleep(0.05)
    served = llm.served[-1]
    assert served.disconnected, served
    assert served.words_sent < served.words_total / 2, served


# --- the /ui files -----------------------------------------------------------------------------------


def test_ui_serves_the_page_with_a_strict_content_security_policy(api: str) -> None:
    redirect = httpx.get(f"{api}/ui", timeout=30)
    assert redirect.status_code == 307
    page = httpx.get(f"{api}/ui/", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert httpx.get(f"{api}/ui/app.js", timeout=30).headers["content-type"].startswith("text/javascript")
    config = httpx.get(f"{api}/ui/config.json", timeout=30).json()
    assert config["features"] == {"sources": True}  # this API serves the sources routes (issue 14)


@pytest.mark.parametrize(
    "path", ["/ui/../settings.py", "/ui/%2e%2e/settings.py", "/ui/..%2fsettings.py", "/ui/x.py"]
)
def test_ui_serves_nothing_outside_its_static_files(api: str, path: str) -> None:
    response = httpx.get(f"{api}{path}", timeout=30)
    assert response.status_code == 404
    assert "get_settings" not in response.text


# --- who, stats, operations, dead letters ------------------------------------------------------------


def test_whoami_names_the_keys_roles_and_collections(api: str) -> None:
    me = httpx.get(f"{api}/v1/whoami", headers=key(["write"]), timeout=30).json()
    assert (me["roles"], me["collections"]) == (["write"], [COLLECTION])
    assert "key" not in me


def test_stats_count_the_collections_chunks(api: str) -> None:
    stats = httpx.get(f"{api}/v1/collections/{COLLECTION}/stats", headers=key(["read"]), timeout=30).json()
    assert stats["chunks"] == len(DOCS)
    assert (
        httpx.get(f"{api}/v1/collections/nothing/stats", headers=key(["read"], ["*"]), timeout=30).status_code
        == 404
    )


def test_a_chunk_opens_with_its_text_and_unknown_ids_are_404(api: str) -> None:
    headers = key(["read"])
    found = httpx.post(
        f"{api}/v1/collections/{COLLECTION}/search", json={"query": "tides moon"}, headers=headers, timeout=30
    ).json()["hits"][0]
    chunk = httpx.get(
        f"{api}/v1/collections/{COLLECTION}/chunks/{found['chunk_id']}", headers=headers, timeout=30
    )
    assert chunk.json()["text"] == found["text"]
    assert (
        httpx.get(f"{api}/v1/collections/{COLLECTION}/chunks/nope", headers=headers, timeout=30).status_code
        == 404
    )
    quote = httpx.get(f"{api}/v1/collections/{COLLECTION}/chunks/a'b", headers=headers, timeout=30)
    assert quote.status_code == 422


def test_operations_report_queues_and_latency_under_the_dashboards_names(api: str) -> None:
    admin = key(["admin"], ["*"])
    httpx.post(
        f"{api}/v1/collections/{COLLECTION}/search", json={"query": "bread"}, headers=admin, timeout=30
    )
    ops = httpx.get(f"{api}/v1/operations", headers=admin, timeout=30).json()
    assert [q["stage"] for q in ops["queues"]] == ["fetch", "embed", "index"]
    assert all(q["dlq_depth"] is not None for q in ops["queues"])
    assert ops["metrics"]["latency_ms"]["SearchLatencyMs"]["samples"] >= 1
    assert ops["metrics"]["totals"]["SearchRequests"] >= 1
    assert httpx.get(f"{api}/v1/operations", headers=key(["read"]), timeout=30).status_code == 403


def test_dead_letters_are_listed_and_redriven_by_an_admin_of_every_collection(
    api: str, idle_stack: LocalStack
) -> None:
    from stratus.stores.dead_letters import dead_letter_queue_url

    sqs = idle_stack.client("sqs")
    fetch_url = idle_stack.queue_urls["FetchQueue"]
    dlq_url = dead_letter_queue_url(sqs, fetch_url)
    sqs.send_message(QueueUrl=dlq_url, MessageBody='{"Records": []}')
    admin = key(["admin"], ["*"])
    listed = httpx.get(f"{api}/v1/dlq", headers=admin, timeout=30).json()["queues"]
    assert next(q for q in listed if q["stage"] == "fetch")["dlq_depth"] >= 1
    # a collection's admin may not touch the shared queues
    assert httpx.post(f"{api}/v1/dlq/fetch/redrive", headers=key(["admin"]), timeout=30).status_code == 403
    moved = httpx.post(f"{api}/v1/dlq/fetch/redrive", headers=admin, timeout=60).json()
    assert moved["moved"] >= 1
    assert moved["failed"] == 0
    sqs.purge_queue(QueueUrl=fetch_url)
