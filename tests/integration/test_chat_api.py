"""The chat API over HTTP (uvicorn on 127.0.0.1): a real LanceDB collection and encoder, a fake
OpenAI-compatible provider; SSE read off the wire, and the official `openai` client round trip."""

from __future__ import annotations

import json
import logging
import os
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
from fakes.openai_server import FakeOpenAI, Step, answer, status

from stratus import services
from stratus.stores.schema import chunk_rows
from stratus_tools.local.stack import LocalStack, free_port

pytestmark = pytest.mark.integration

COLLECTION = "library"
SECRET = "sk-proj-SECRET-api-key-7f3a9c2e1b"
DOCS = [
    ("tides.md", "Tides", "Tides", "The moon pulls the oceans and causes the tides twice a day."),
    ("bread.md", "Bread", "Baking", "Bake bread from flour, water, yeast and salt in a hot oven."),
    ("lava.md", "Volcanoes", "Eruptions", "A volcano erupts molten lava and ash when pressure builds."),
    ("moon.md", "Moon", "Orbit", "The moon orbits the earth every 27 days and shows phases."),
]


def rows() -> pa.Table:
    from stratus.embedding.encoder import get_encoder

    tables = []
    for source, title, section, text in DOCS:
        batch = single_chunk_batch(COLLECTION, source, title, text, section=section)
        tables.append(chunk_rows(batch, get_encoder().embed_documents([f"{title}\n{text}"])))
    return pa.concat_tables(tables)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI("gpt-fake") as server:
        yield server


@pytest.fixture(scope="module")
def api(
    model_dir: Path, fake: FakeOpenAI, idle_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The API over a local LanceDB folder; the emulator (idle_stack) holds the API keys table."""
    import uvicorn

    from stratus.api.app import create_app

    environment = {
        "STRATUS_LANCEDB_URI": str(tmp_path_factory.mktemp("lancedb")),
        "STRATUS_MODEL_DIR": str(model_dir),
        "STRATUS_OPENAI_BASE_URL": fake.base_url,
        "STRATUS_OPENAI_API_KEY": SECRET,
        "STRATUS_OPENAI_MODEL": "gpt-fake",
        "STRATUS_CHAT_TIMEOUT_S": "2",
        "STRATUS_CHAT_BREAKER_FAILURES": "1000",
        "STRATUS_CHAT_DEFAULT_COLLECTION": COLLECTION,
        "STRATUS_CHAT_TOP_K": "3",
        "TIKTOKEN_CACHE_DIR": str(tmp_path_factory.mktemp("tiktoken")),  # empty: the offline fallback
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    services.reset()
    from stratus.chat import tokens

    tokens.reset()
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
    tokens.reset()


def chat(
    api: str, headers: dict[str, str], body: dict[str, Any], collection: str = COLLECTION
) -> httpx.Response:
    return httpx.post(f"{api}/v1/collections/{collection}/chat", json=body, headers=headers, timeout=30)


def question(text: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **fields}


def read_sse(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """A minimal SSE client: fields per line, an event per blank line (event name defaults to message)."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", list[str]()
    for line in response.iter_lines():
        if line == "":
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    return events


def stream_chat(
    api: str, headers: dict[str, str], body: dict[str, Any]
) -> tuple[httpx.Response, list[tuple[str, dict[str, Any]]]]:
    url = f"{api}/v1/collections/{COLLECTION}/chat"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
        return response, read_sse(response)


def test_chat_answers_with_citations_of_prompt_chunks(
    api: str, fake: FakeOpenAI, api_headers: dict[str, str]
) -> None:
    # given a provider that cites [1] and an out-of-range [7]
    fake.script(answer("The moon causes the tides [1], twice a day [7]."))

    # when a question is posted
    response = chat(api, api_headers, question("What causes the tides?"))

    # then the answer keeps [1] only, cites the tides chunk, and reports provider and usage
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"] == "The moon causes the tides [1], twice a day."
    assert [(c["n"], c["source"], c["section"]) for c in body["citations"]] == [(1, "tides.md", "Tides")]
    assert body["provider"] == "openai"
    assert body["fallbacks"] == []
    assert body["usage"]["token_estimator"] == "tokenizer-fallback"
    assert body["usage"]["context_chunks"] == 3
    assert body["timings"]["retrieve_ms"] > 0
    system = fake.completions()[-1].body["messages"][0]["content"]
    assert "[1] Tides > Tides (tides.md)" in system


def test_sse_stream_carries_retrieval_deltas_citations_and_done(
    api: str, fake: FakeOpenAI, api_headers: dict[str, str]
) -> None:
    # given a provider streaming an answer word by word
    fake.script(answer("The moon pulls the oceans [1]."))

    # when the chat is streamed and read as Server-Sent Events off the wire
    response, events = stream_chat(api, api_headers, question("What causes the tides?", stream=True))

    # then the events come in order and the deltas add up to the final answer
    assert response.headers["content-type"].startswith("text/event-stream")
    names = [name for name, _ in events]
    assert names[0] == "retrieval"
    assert set(names[1:-2]) == {"delta"}
    assert len(names[1:-2]) >= 3
    assert names[-2:] == ["citations", "done"]
    done = events[-1][1]
    assert (
        "".join(d["text"] for n, d in events if n == "delta")
        == done["answer"]
        == "The moon pulls the oceans [1]."
    )
    assert events[0][1]["hits"][0]["source"] == "tides.md"
    assert [c["source"] for c in events[-2][1]["citations"]] == ["tides.md"]
    assert done["provider"] == "openai"


def test_sse_failure_after_the_first_token_ends_with_an_error_event(
    api: str, fake: FakeOpenAI, api_headers: dict[str, str]
) -> None:
    # given a provider failing after its first token
    fake.script(Step("error_after_first", text="The moon pulls the oceans [1]."))

    # when streamed
    _, events = stream_chat(api, api_headers, question("What causes the tides?", stream=True))

    # then: retrieval, the first token, an error event; no fallback to the extractive answerer, no done
    assert [name for name, _ in events] == ["retrieval", "delta", "error"]
    assert events[-1][1]["partial"] is True
    assert events[-1][1]["fallbacks"] == []


def test_openai_client_round_trip(api: str, fake: FakeOpenAI, api_headers: dict[str, str]) -> None:
    from openai import OpenAI

    # the official client sends its api_key as Authorization: Bearer, which Stratus accepts
    client = OpenAI(base_url=f"{api}/v1", api_key=api_headers["x-api-key"], max_retries=0)

    # given a provider answering twice
    fake.script(answer("Tides come from the moon [1]."), answer("Tides come from the moon [1]."))

    # when the official client asks, without and with streaming
    completion = client.chat.completions.create(
        model=f"stratus/{COLLECTION}", messages=[{"role": "user", "content": "What causes the tides?"}]
    )
    chunks = list(
        client.chat.completions.create(
            model="stratus", messages=[{"role": "user", "content": "What causes the tides?"}], stream=True
        )
    )

    # then both carry the answer; Stratus' citations ride along as an extra field
    assert completion.choices[0].message.content == "Tides come from the moon [1]."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    extra = completion.model_extra or {}
    assert [c["source"] for c in extra["citations"]] == ["tides.md"]
    assert extra["stratus"]["provider"] == "openai"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == "Tides come from the moon [1]."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert [c["source"] for c in (chunks[-1].model_extra or {})["citations"]] == ["tides.md"]


def test_openai_client_sees_errors_in_its_own_shape(
    api: str, fake: FakeOpenAI, api_headers: dict[str, str]
) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{api}/v1", api_key=api_headers["x-api-key"], max_retries=0)

    # an unknown collection is a 404
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="stratus/nowhere", messages=[{"role": "user", "content": "hi"}])

    # a failure after the first streamed token raises in the client's stream
    fake.script(Step("error_after_first", text="Partial answer [1]."))
    stream = client.chat.completions.create(
        model=f"stratus/{COLLECTION}", messages=[{"role": "user", "content": "tides?"}], stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_provider_auth_failure_is_502_and_the_key_never_leaks(
    api: str, fake: FakeOpenAI, api_headers: dict[str, str]
) -> None:
    # given a provider that rejects the key and echoes it back, and every log record captured
    fake.script(Step("status", status=401, echo_key=True))
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("", "stratus", "httpx", "httpcore", "uvicorn", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        # when a chat is posted (JSON and streaming)
        response = chat(api, api_headers, question("What causes the tides?"))
        fake.script(Step("status", status=401, echo_key=True))
        _, events = stream_chat(api, api_headers, question("What causes the tides?", stream=True))
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)

    # then the client gets a 502 naming the provider, with no fallback, and the key is nowhere
    assert response.status_code == 502
    assert response.json()["kind"] == "auth"
    assert "openai" in response.json()["detail"]
    assert events[-1][0] == "error"
    assert fake.completions()[-1].headers["Authorization"] == f"Bearer {SECRET}"
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    assert records
    for fragment in (SECRET, SECRET[8:20], SECRET[-12:]):
        assert fragment not in response.text
        assert fragment not in json.dumps(events)
        assert fragment not in logged


def test_only_provider_failing_retryably_is_503_with_retry_after(
    api: str, fake: FakeOpenAI, api_headers: dict[str, str]
) -> None:
    fake.script(status(429, "slow down", {"Retry-After": "3"}))

    response = chat(api, api_headers, question("What causes the tides?", provider="openai"))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert "openai failed" in response.json()["detail"]


def test_extractive_provider_answers_offline_from_the_collection(
    api: str, api_headers: dict[str, str]
) -> None:
    response = chat(api, api_headers, question("What causes the tides?", provider="extractive"))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == "extractive"
    assert body["answer"].startswith("Extractive answer (no language model was used)")
    assert "The moon pulls the oceans and causes the tides twice a day. [1]" in body["answer"]
    assert body["citations"][0]["source"] == "tides.md"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        (question("x", top_k=0), "top_k"),
        (question("x", provider="gpt-5"), "provider"),
        (question("x", temperature=3), "temperature"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(
    api: str, body: dict[str, Any], field: str, api_headers: dict[str, str]
) -> None:
    response = chat(api, api_headers, body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(field)


def test_unknown_collection_is_404(api: str, api_headers: dict[str, str]) -> None:
    response = chat(api, api_headers, question("x"), collection="nowhere")
    assert response.status_code == 404
    assert "nowhere" in response.json()["detail"]
