"""The router against fake OpenAI-compatible servers over real HTTP on 127.0.0.1.

Two fakes play the local server (Ollama/vLLM) and the cloud provider; retrieval is a fixed list of
hits, so each test is about routing: fallbacks, no fallback after the first token, circuit breaking,
timeouts, budgets and citations.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAI, Step, answer, status

from stratus.chat.errors import FailureKind, NoProviderError, ProviderError
from stratus.chat.models import ChatRequest, ChatResponse
from stratus.chat.service import ChatService, Prepared
from stratus.chat.tokens import TokenCounter
from stratus.retrieval.search import SearchHit, SearchResponse
from stratus.settings import Settings

pytestmark = pytest.mark.integration

COUNTER = TokenCounter("chars/4", lambda text: max(1, len(text) // 4))
TEXTS = [
    "The moon pulls the oceans and causes the tides twice a day.",
    "Spring tides happen at new and full moon, when the sun and moon align.",
    "Neap tides are weaker and happen at the quarter moons.",
    "Bread is baked from flour, water, yeast and salt.",
    "A volcano erupts molten lava and ash.",
]
HITS = [
    SearchHit(
        chunk_id=f"chunk-{i}", doc_id=f"doc-{i}", source=f"doc{i}.md", title=f"Doc {i}", text=t, score=1 / i
    )
    for i, t in enumerate(TEXTS, start=1)
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def local() -> Iterator[FakeOpenAI]:
    with FakeOpenAI("llama-local") as fake:
        yield fake


@pytest.fixture
def cloud() -> Iterator[FakeOpenAI]:
    with FakeOpenAI("gpt-cloud") as fake:
        yield fake


class Retriever:
    def __init__(self, hits: list[SearchHit]) -> None:
        self.hits = hits
        self.queries: list[str] = []

    def __call__(self, collection: str, query: str, top_k: int, filters: Any) -> SearchResponse:
        self.queries.append(query)
        return SearchResponse(hits=self.hits[:top_k], mode="hybrid")


def make_service(
    local: FakeOpenAI | None,
    cloud: FakeOpenAI | None,
    hits: list[SearchHit] = HITS,
    clock: Any = time.monotonic,
    **overrides: Any,
) -> tuple[ChatService, Retriever]:
    values: dict[str, Any] = {
        "chat_connect_timeout_s": 1.0,
        "chat_timeout_s": 2.0,
        "chat_breaker_failures": 2,
        "chat_breaker_cooldown_s": 30.0,
        "chat_local_health_ttl_s": 60.0,
        "chat_cloud_providers": "openai",
        "local_llm_base_url": local.base_url if local else None,
        "local_llm_model": "llama-local",
        "openai_base_url": cloud.base_url if cloud else "http://127.0.0.1:9/v1",
        "openai_api_key": "sk-test-cloud-key-0123456789" if cloud else None,
        "openai_model": "gpt-cloud",
    }
    values.update(overrides)
    settings = Settings(**values)
    retriever = Retriever(hits)
    from stratus.chat.service import build_providers

    providers = build_providers(settings, COUNTER)
    return ChatService(settings, retriever, COUNTER, providers, clock), retriever


def ask(question: str, **fields: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": question}], **fields)


def events(service: ChatService, request: ChatRequest) -> list[tuple[str, dict[str, Any]]]:
    prepared: Prepared = service.prepare(request, "tides")
    return list(service.events(prepared))


def prompt_chunks(system: str) -> list[tuple[str, str]]:
    """The chunk numbers and sources the fake saw in the system prompt."""
    return re.findall(r"^\[(\d+)\] Doc \d+ \((doc\d+\.md)\)", system, flags=re.MULTILINE)


def test_429_falls_back_to_the_next_provider(local: FakeOpenAI, cloud: FakeOpenAI) -> None:
    # given a local server answering 429 with Retry-After: 7 and a healthy cloud provider
    local.script(status(429, "rate limited", {"Retry-After": "7"}))
    cloud.script(answer("Twice a day [1]."))
    service, _ = make_service(local, cloud)

    # when a question is asked
    response = service.answer(ask("How often are there tides?"), "tides")

    # then the cloud answered, and the response says the local server failed with 429
    assert response.provider == "openai"
    assert response.answer == "Twice a day [1]."
    assert [(f.provider, f.outcome, f.status) for f in response.fallbacks] == [("local", "failed", 429)]
    assert "rate_limited" in response.fallbacks[0].reason
    # and the local circuit is open for the Retry-After
    assert service.router.breakers["local"].state == "open"
    assert 5 < service.router.breakers["local"].retry_in() <= 7
    assert len(local.completions()) == 1
    assert len(cloud.completions()) == 1


def test_500_after_the_first_streamed_token_is_an_error_event_without_fallback(
    local: FakeOpenAI, cloud: FakeOpenAI
) -> None:
    # given a local server that fails after its first streamed token
    local.script(Step("error_after_first", text="The moon pulls the tides [1]."))
    service, _ = make_service(local, cloud)

    # when the answer is streamed
    stream = events(service, ask("What causes tides?", stream=True))
    names = [name for name, _ in stream]

    # then the first token arrived, then an error event, and nothing else was tried
    assert names[0] == "retrieval"
    assert names[1] == "delta"
    assert stream[1][1]["text"] == "The"
    assert names[-1] == "error"
    assert "done" not in names
    error = stream[-1][1]
    assert error["partial"] is True
    assert error["provider"] == "local"
    assert error["error"]["kind"] == "server_error"
    assert cloud.completions() == []


def test_dropped_connection_after_the_first_token_is_an_error_event(
    local: FakeOpenAI, cloud: FakeOpenAI
) -> None:
    local.script(Step("drop_after_first", text="The moon pulls the tides [1]."))
    service, _ = make_service(local, cloud)

    names = [name for name, _ in events(service, ask("What causes tides?", stream=True))]

    assert names == ["retrieval", "delta", "error"]
    assert cloud.completions() == []


def test_error_before_the_first_token_still_falls_back_when_streaming(
    local: FakeOpenAI, cloud: FakeOpenAI
) -> None:
    # given a local server answering 503 to the streaming request
    local.script(status(503, "overloaded"))
    cloud.script(answer("Twice a day [1]."))
    service, _ = make_service(local, cloud)

    # when streamed
    stream = events(service, ask("How often are tides?", stream=True))

    # then the cloud's answer streams and done names it and the fallback
    done = stream[-1][1]
    assert stream[-1][0] == "done"
    assert "".join(d["text"] for n, d in stream if n == "delta") == "Twice a day [1]."
    assert done["provider"] == "openai"
    assert done["fallbacks"][0]["provider"] == "local"
    assert [c["chunk_id"] for c in done["citations"]] == ["chunk-1"]


def test_circuit_opens_after_n_failures_and_half_opens_after_the_cooldown(
    local: FakeOpenAI, cloud: FakeOpenAI
) -> None:
    # given a local server that keeps failing with 500 and a breaker of 2 failures, 30 s cooldown
    local.default = status(500, "boom")
    clock = FakeClock()
    service, _ = make_service(local, cloud, clock=clock)

    # when two requests fail over to the cloud
    for _ in range(2):
        assert service.answer(ask("tides?"), "tides").provider == "openai"
    assert len(local.completions()) == 2

    # then the third skips the local server without calling it
    third = service.answer(ask("tides?"), "tides")
    assert third.provider == "openai"
    assert third.fallbacks[0].outcome == "skipped"
    assert third.fallbacks[0].reason.startswith("circuit open")
    assert len(local.completions()) == 2

    # and after the cooldown one probe goes through; the local server has recovered and answers
    clock.now += 30
    local.default = answer("Local answer [1].")
    assert service.router.breakers["local"].state == "half-open"
    fourth = service.answer(ask("tides?"), "tides")
    assert fourth.provider == "local"
    assert len(local.completions()) == 3
    assert service.router.breakers["local"].state == "closed"


def test_a_hanging_provider_times_out_and_falls_back(local: FakeOpenAI, cloud: FakeOpenAI) -> None:
    # given a local server that accepts the request and never answers, and a 0.5 s read timeout
    local.script(Step("hang", hang_s=30))
    cloud.script(answer("Twice a day [1]."))
    service, _ = make_service(local, cloud, chat_timeout_s=0.5)

    # when asked
    started = time.perf_counter()
    response = service.answer(ask("How often are tides?"), "tides")
    elapsed = time.perf_counter() - started

    # then the timeout moved the request to the cloud quickly
    assert response.provider == "openai"
    assert response.fallbacks[0].reason.startswith("timeout")
    assert elapsed < 3


@pytest.mark.parametrize(
    ("step", "kind"),
    [
        (status(401, "invalid api key"), FailureKind.AUTH),
        (status(403, "forbidden"), FailureKind.AUTH),
        (status(422, "bad temperature"), FailureKind.VALIDATION),
        (
            status(400, "This model's maximum context length is 4096 tokens", code="context_length_exceeded"),
            FailureKind.CONTEXT_LENGTH,
        ),
    ],
)
def test_auth_validation_and_context_errors_never_fall_back(
    local: FakeOpenAI, cloud: FakeOpenAI, step: Step, kind: FailureKind
) -> None:
    # given a local server failing with a non-retryable error
    local.script(step)
    service, _ = make_service(local, cloud)

    # when asked, the error surfaces and the cloud is never called
    with pytest.raises(ProviderError) as raised:
        service.answer(ask("tides?"), "tides")
    assert raised.value.kind is kind
    assert cloud.completions() == []
    # and the breaker counts no failure (the provider is up)
    assert service.router.breakers["local"].state == "closed"


def test_unhealthy_local_server_is_skipped_and_the_check_is_cached(
    local: FakeOpenAI, cloud: FakeOpenAI
) -> None:
    # given a local server whose health check fails
    local.healthy = False
    cloud.default = answer("Cloud [1].")
    service, _ = make_service(local, cloud)

    # when two questions are asked
    first = service.answer(ask("tides?"), "tides")
    second = service.answer(ask("tides?"), "tides")

    # then both went to the cloud, the local server got no completion and one health check only
    assert first.provider == second.provider == "openai"
    assert first.fallbacks[0].reason == "health check failed"
    assert local.completions() == []
    assert len([r for r in local.requests if r.path.endswith("/models")]) == 1


def test_prompt_over_the_local_window_goes_to_the_cloud(local: FakeOpenAI, cloud: FakeOpenAI) -> None:
    # given a local model with a 300-token window, 200 reserved answer tokens and at least 3 chunks
    cloud.script(answer("Tides [1]."))
    service, _ = make_service(
        local, cloud, local_llm_context_tokens=300, chat_answer_tokens=200, chat_min_chunks=3
    )

    # when asked
    response = service.answer(ask("tides?"), "tides")

    # then the local server was skipped for its window and the cloud answered with every chunk
    assert response.provider == "openai"
    assert response.fallbacks[0].outcome == "skipped"
    assert "context window 300" in response.fallbacks[0].reason
    assert local.completions() == []
    assert response.usage.context_chunks == 5


def test_budget_trimming_keeps_the_best_chunks(cloud: FakeOpenAI) -> None:
    # given a cloud model whose window holds only part of the five retrieved chunks
    cloud.script(answer("Tides [1]."))
    service, _ = make_service(None, cloud, openai_context_tokens=330, chat_answer_tokens=120)

    # when asked
    response = service.answer(ask("What causes tides?"), "tides")

    # then the prompt the provider received holds the best-ranked chunks, numbered from 1, and not the rest
    system = cloud.completions()[0].body["messages"][0]["content"]
    seen = prompt_chunks(system)
    kept = response.usage.context_chunks
    assert 1 <= kept < 5
    assert seen == [(str(i), f"doc{i}.md") for i in range(1, kept + 1)]
    assert response.usage.dropped_chunks == 5 - kept
    assert TEXTS[0] in system
    assert TEXTS[4] not in system


def test_every_citation_points_at_a_chunk_in_the_prompt(cloud: FakeOpenAI) -> None:
    # given a window that keeps two chunks and a model citing [1], [2], [4] and [9]
    cloud.script(answer("The moon [1]. Spring tides [2]. Bread [4]. Lava [9]."))
    service, _ = make_service(None, cloud, openai_context_tokens=330, chat_answer_tokens=120, chat_top_k=5)

    # when asked
    response = service.answer(ask("What causes tides?"), "tides")

    # then every citation is a chunk of the prompt, and unmapped markers left the answer
    system = cloud.completions()[0].body["messages"][0]["content"]
    in_prompt = {f"chunk-{n}" for n, _ in prompt_chunks(system)}
    assert 1 <= len(in_prompt) < 4
    assert response.citations
    assert {c.chunk_id for c in response.citations} <= in_prompt
    for c in response.citations:
        assert f"[{c.n}]" in response.answer
    for n in range(1, 10):
        if f"chunk-{n}" not in in_prompt:
            assert f"[{n}]" not in response.answer


def test_follow_up_is_rewritten_by_one_llm_call(cloud: FakeOpenAI) -> None:
    # given a conversation whose last question leans on the first
    cloud.script(answer("spring tides timing moon phases"), answer("At new and full moon [2]."))
    service, retriever = make_service(None, cloud)
    request = ChatRequest(
        messages=[
            {"role": "user", "content": "What are spring tides?"},
            {"role": "assistant", "content": "Strong tides [2]."},
            {"role": "user", "content": "When do they happen?"},
        ]
    )

    # when answered
    response = service.answer(request, "tides")

    # then the search used the rewritten query, from a small rewrite call
    assert response.query_rewrite == "llm"
    assert retriever.queries == ["spring tides timing moon phases"]
    rewrite, final = cloud.completions()
    assert rewrite.body["max_tokens"] == 64
    assert "When do they happen?" in rewrite.body["messages"][0]["content"]
    # and the answer prompt carries the earlier turns before the question
    assert [m["role"] for m in final.body["messages"]] == ["system", "user", "assistant", "user"]


def test_without_an_llm_a_follow_up_gets_keywords_and_an_extractive_answer() -> None:
    service, retriever = make_service(None, None)
    request = ChatRequest(
        messages=[
            {"role": "user", "content": "What causes the tides?"},
            {"role": "assistant", "content": "The moon [1]."},
            {"role": "user", "content": "how often do they happen?"},
        ]
    )

    response = service.answer(request, "tides")

    assert response.provider == "extractive"
    assert response.query_rewrite == "keywords"
    assert "tides" in retriever.queries[0]
    assert response.answer.startswith("Extractive answer")
    assert response.citations


def test_nothing_retrieved_says_so_without_calling_a_provider(cloud: FakeOpenAI) -> None:
    service, _ = make_service(None, cloud, hits=[])

    response = service.answer(ask("What is the refund policy?"), "tides")

    assert response.refused
    assert "could not find anything" in response.answer
    assert response.citations == []
    assert cloud.completions() == []


def test_all_providers_failing_retryably_raises_with_retry_after(
    local: FakeOpenAI, cloud: FakeOpenAI
) -> None:
    local.script(status(429, "slow", {"Retry-After": "4"}))
    cloud.script(status(500, "down"))
    service, _ = make_service(local, cloud, chat_extractive_fallback=False)

    with pytest.raises(NoProviderError) as raised:
        service.answer(ask("tides?"), "tides")

    assert raised.value.retry_after_s == 4
    assert "local failed" in str(raised.value)
    assert "openai failed" in str(raised.value)


def test_extractive_is_the_final_offline_fallback(local: FakeOpenAI, cloud: FakeOpenAI) -> None:
    local.script(status(502, "bad gateway"))
    cloud.script(status(503, "down"))
    service, _ = make_service(local, cloud)

    response: ChatResponse = service.answer(ask("What causes the tides?"), "tides")

    assert response.provider == "extractive"
    assert [f.provider for f in response.fallbacks] == ["local", "openai"]
    assert "[1]" in response.answer


def test_secret_key_never_reaches_logs_or_errors(cloud: FakeOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    # given a cloud provider that echoes the caller's key in its 401 body
    key = "sk-proj-SUPERSECRET-0123456789abcdef"
    cloud.script(Step("status", status=401, echo_key=True))
    service, _ = make_service(None, cloud, openai_api_key=key)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger(), logging.getLogger("stratus"), logging.getLogger("httpx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        # when the call fails
        with pytest.raises(ProviderError) as raised:
            service.answer(ask("tides?"), "tides")
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)

    # then the provider did receive the key, but neither the error nor any log line carries it
    assert cloud.completions()[0].headers["Authorization"] == f"Bearer {key}"
    assert "Incorrect API key provided" in str(raised.value)
    text = str(raised.value) + raised.value.reason()
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    assert records
    for fragment in (key, "SUPERSECRET", "0123456789abcdef"):
        assert fragment not in text
        assert fragment not in logged
