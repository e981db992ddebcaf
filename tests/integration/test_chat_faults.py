"""Chat under provider faults (issue 21): the service and router against fake OpenAI-compatible
servers over real HTTP on 127.0.0.1 — malformed answers, odd Retry-After values, trickles, huge
answers, streams closed early — and the breaker's probe slot after each of them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAI, Step, answer, status

from stratus.chat.errors import NoProviderError
from stratus.chat.models import ChatRequest
from stratus.chat.service import ChatService, build_providers
from stratus.chat.tokens import TokenCounter
from stratus.retrieval.search import SearchHit, SearchResponse
from stratus.settings import Settings

pytestmark = pytest.mark.integration

COUNTER = TokenCounter("chars/4", lambda text: max(1, len(text) // 4))
HITS = [
    SearchHit(
        chunk_id="chunk-1",
        doc_id="doc-1",
        source="tides.md",
        title="Tides",
        text="The moon causes the tides twice a day.",
        score=1.0,
    ),
    SearchHit(
        chunk_id="chunk-2",
        doc_id="doc-2",
        source="bread.md",
        title="Bread",
        text="Bread is baked from flour and water.",
        score=0.5,
    ),
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


def retrieve(collection: str, query: str, top_k: int, filters: Any) -> SearchResponse:
    return SearchResponse(hits=HITS[:top_k], mode="hybrid")


def make_service(
    local: FakeOpenAI | None, cloud: FakeOpenAI | None, clock: Any = time.monotonic, **overrides: Any
) -> ChatService:
    values: dict[str, Any] = {
        "chat_connect_timeout_s": 1.0,
        "chat_timeout_s": 2.0,
        "chat_breaker_failures": 2,
        "chat_breaker_cooldown_s": 30.0,
        "chat_breaker_max_cooldown_s": 60.0,
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
    return ChatService(settings, retrieve, COUNTER, build_providers(settings, COUNTER), clock)


def ask(question: str, **fields: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": question}], **fields)


def open_the_local_circuit(service: ChatService, local: FakeOpenAI, clock: FakeClock) -> None:
    """Two 500s open the local circuit; after the cooldown it is half-open."""
    local.script(status(500, "boom"), status(500, "boom"))
    for _ in range(2):
        assert service.answer(ask("tides?"), "tides").provider == "openai"
    assert service.router.breakers["local"].state == "open"
    clock.now += 30
    assert service.router.breakers["local"].state == "half-open"


def wait_until(predicate: Any, seconds: float) -> bool:
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


@pytest.mark.parametrize("usage", [{"prompt_tokens": "many", "completion_tokens": 3}, [1]])
def test_malformed_usage_falls_back_to_the_next_provider(
    local: FakeOpenAI, cloud: FakeOpenAI, usage: Any
) -> None:
    # given a local server answering 200 with a malformed usage, and a healthy cloud
    local.script(Step("answer", text="Local [1].", usage=usage))
    cloud.script(answer("Cloud [1]."))
    service = make_service(local, cloud)

    # when asked
    response = service.answer(ask("What causes the tides?"), "tides")

    # then the answer came from the cloud, the local failure is named, and nothing is in flight
    assert response.provider == "openai"
    assert response.fallbacks[0].provider == "local"
    assert "malformed usage" in response.fallbacks[0].reason
    assert service.counters()["calls_in_flight"] == 0


def test_malformed_usage_in_a_stream_is_an_error_event_not_an_exception(
    local: FakeOpenAI, cloud: FakeOpenAI
) -> None:
    # given a local server streaming tokens, then a last chunk with a malformed usage
    local.script(Step("answer", text="The moon [1].", usage={"prompt_tokens": "many"}))
    service = make_service(local, cloud)

    # when streamed
    events = list(service.events(service.prepare(ask("What causes the tides?", stream=True), "tides")))

    # then the stream ends with a partial error event (after the first token nothing falls back)
    assert events[-1][0] == "error"
    assert events[-1][1]["partial"] is True
    assert "malformed usage" in events[-1][1]["error"]["message"]


def test_malformed_answer_while_half_open_releases_the_probe(local: FakeOpenAI, cloud: FakeOpenAI) -> None:
    # given a half-open local circuit
    clock = FakeClock()
    cloud.default = answer("Cloud [1].")
    service = make_service(local, cloud, clock=clock)
    open_the_local_circuit(service, local, clock)

    # when the probe gets a malformed usage
    local.script(Step("answer", text="Local [1].", usage={"prompt_tokens": "many"}))
    assert service.answer(ask("tides?"), "tides").provider == "openai"

    # then the probe failed (the circuit opened again) and holds no slot
    breaker = service.router.breakers["local"]
    assert breaker.state == "open"
    assert service.counters()["probes_in_flight"] == 0
    # and once the provider is healthy the next cooldown ends in a probe that closes it
    clock.now += 30
    local.default = answer("Local answer [1].")
    assert service.answer(ask("tides?"), "tides").provider == "local"
    assert breaker.state == "closed"


def test_stream_closed_after_the_first_token_releases_the_probe_and_the_connection(
    local: FakeOpenAI, cloud: FakeOpenAI
) -> None:
    # given a half-open local circuit, and a local server that sends one token then hangs
    clock = FakeClock()
    cloud.default = answer("Cloud [1].")
    service = make_service(local, cloud, clock=clock)
    open_the_local_circuit(service, local, clock)
    local.script(Step("hang_after_first", text="The moon pulls [1].", hang_s=20))

    # when the stream is closed right after its first delta (the client hung up)
    events = service.events(service.prepare(ask("What causes the tides?", stream=True), "tides"))
    assert next(events)[0] == "retrieval"
    assert next(events)[0] == "delta"
    assert service.counters()["probes_in_flight"] == 1
    events.close()
    closed = time.monotonic()

    # then the probe's slot is free for the next caller and the provider saw the connection closed
    assert service.counters()["probes_in_flight"] == 0
    assert service.router.breakers["local"].allow()
    request = local.completions()[-1]
    assert wait_until(lambda: request.closed_at is not None, 1.0)
    assert request.closed_at is not None
    assert request.closed_at - closed < 1.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [("inf", None), ("nan", None), ("1e400", None), ("999999", 60.0), ("-5", None), ("soon", None)],
)
def test_retry_after_is_finite_and_clamped_to_the_max_cooldown(
    local: FakeOpenAI, header: str, expected: float | None
) -> None:
    # given the only provider answering 429 with an odd Retry-After, the max cooldown 60 s
    local.script(status(429, "slow down", {"Retry-After": header}))
    service = make_service(local, None, chat_extractive_fallback=False)

    # when asked
    with pytest.raises(NoProviderError) as raised:
        service.answer(ask("tides?", provider="local"), "tides")

    # then the retry hint is a finite number no longer than the circuit stays open (or absent)
    assert raised.value.retry_after_s == expected
    assert service.router.breakers["local"].retry_in() <= 60


def test_a_trickled_answer_ends_at_the_request_deadline(local: FakeOpenAI, cloud: FakeOpenAI) -> None:
    # given a local server trickling its JSON answer one byte per 50 ms (no read ever times out)
    local.script(Step("trickle", text="The moon causes the tides [1].", trickle_s=0.05))
    service = make_service(local, cloud, chat_timeout_s=2.0, chat_deadline_s=1.5)

    # when asked
    started = time.perf_counter()
    response = service.answer(ask("What causes the tides?"), "tides")
    elapsed = time.perf_counter() - started

    # then the request ended near its deadline: local cut off, the cloud not started, extractive answered
    assert elapsed < 2.5
    assert response.provider == "extractive"
    assert [(f.provider, f.outcome) for f in response.fallbacks] == [
        ("local", "failed"),
        ("openai", "skipped"),
    ]
    assert "deadline" in response.fallbacks[0].reason
    assert "deadline" in response.fallbacks[1].reason
    # and a deadline is not the provider's fault: its circuit counted nothing
    assert service.router.breakers["local"].state == "closed"
    assert wait_until(lambda: local.completions()[-1].closed_at is not None, 1.0)


def test_a_trickled_stream_ends_at_the_request_deadline(local: FakeOpenAI, cloud: FakeOpenAI) -> None:
    # given a local server streaming one word per 300 ms
    local.script(Step("trickle", text=" ".join(["word"] * 40), trickle_s=0.3))
    service = make_service(local, cloud, chat_timeout_s=2.0, chat_deadline_s=1.5)

    # when streamed
    started = time.perf_counter()
    events = list(service.events(service.prepare(ask("What causes the tides?", stream=True), "tides")))
    elapsed = time.perf_counter() - started

    # then the stream ends with a partial timeout error at the deadline
    assert elapsed < 2.5
    assert events[-1][0] == "error"
    assert events[-1][1]["partial"] is True
    assert events[-1][1]["error"]["kind"] == "timeout"
    assert service.counters() == {
        "calls_in_flight": 0,
        "probes_in_flight": 0,
        "open_provider_responses": 0,
        "streams": 0,
    }


def test_the_deadline_covers_the_follow_up_rewrite(local: FakeOpenAI, cloud: FakeOpenAI) -> None:
    # given a follow-up whose rewrite call trickles, and a one-and-a-half-second deadline
    local.script(Step("trickle", text="spring tides moon", trickle_s=0.05))
    cloud.default = answer("Cloud [1].")
    service = make_service(local, cloud, chat_deadline_s=1.5)
    request = ChatRequest(
        messages=[
            {"role": "user", "content": "What causes the tides?"},
            {"role": "assistant", "content": "The moon [1]."},
            {"role": "user", "content": "How often do they happen?"},
        ]
    )

    # when answered
    started = time.perf_counter()
    response = service.answer(request, "tides")
    elapsed = time.perf_counter() - started

    # then the rewrite used up the deadline: the answer is extractive, no cloud call was started
    assert elapsed < 2.5
    assert response.provider == "extractive"
    assert cloud.completions() == []


def test_the_deadline_comes_from_the_lambda_invocation_when_it_is_shorter() -> None:
    # given Mangum's scope with a Lambda context that has 3 s left, and a 26 s settings bound
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 3000

    from stratus.chat.deadline import Deadline

    # when the request's deadline is derived
    deadline = Deadline.for_request(26.0, 1.5, {"aws.context": Context()})
    local_deadline = Deadline.for_request(26.0, 1.5, {})

    # then it keeps the margin back from the invocation; locally it is the settings' bound
    assert 1.3 < deadline.remaining() <= 1.5
    assert 25.5 < local_deadline.remaining() <= 26.0


def test_an_answer_larger_than_its_byte_budget_is_refused(local: FakeOpenAI, cloud: FakeOpenAI) -> None:
    # given a local server answering 3 MB to a request for 64 tokens
    local.script(Step("answer", text="Huge [1].", size=3_000_000))
    cloud.script(answer("Cloud [1]."))
    service = make_service(local, cloud)

    # when asked
    response = service.answer(ask("What causes the tides?", max_tokens=64), "tides")

    # then reading stopped at the budget and the cloud answered
    assert response.provider == "openai"
    assert "larger than" in response.fallbacks[0].reason
    assert service.counters()["open_provider_responses"] == 0


def test_a_streamed_answer_larger_than_its_byte_budget_ends_the_stream(local: FakeOpenAI) -> None:
    # given a local server streaming 3 MB in 1 KB pieces to a request for 64 tokens
    local.script(Step("answer", text="Huge [1].", size=3_000_000))
    service = make_service(local, None)

    # when streamed
    events = list(
        service.events(service.prepare(ask("What causes the tides?", stream=True, max_tokens=64), "tides"))
    )

    # then far less than the answer was passed on, and the stream ends with an error
    streamed = sum(len(data["text"]) for name, data in events if name == "delta")
    assert streamed < 200_000
    assert events[-1][0] == "error"
    assert "larger than" in events[-1][1]["error"]["message"]


def test_our_own_connection_pool_running_out_is_no_verdict_on_the_provider(local: FakeOpenAI) -> None:
    from stratus.chat.deadline import Deadline
    from stratus.chat.prompts import LLMRequest
    from stratus.chat.providers import OpenAICompatibleProvider
    from stratus.chat.router import RouteOutcome, Router

    # given a provider allowed one connection, held by a stream that hangs after its first token,
    # and a circuit that opens on the first failure
    local.script(Step("hang_after_first", text="The moon [1].", hang_s=20))
    settings = Settings(
        chat_router_mode="local-only",
        chat_extractive_fallback=False,
        chat_breaker_failures=1,
        local_llm_base_url=local.base_url,
    )
    provider = OpenAICompatibleProvider(
        "local", "local", local.base_url, "llama-local", 8000, lambda: None, 1.0, 0.5, max_connections=1
    )
    router = Router(settings, [provider])

    def build(_: Any) -> LLMRequest:
        return LLMRequest(system="", messages=[("user", "q")], question="q", max_tokens=16)

    held = router.run(build, RouteOutcome(), stream=True, deadline=Deadline(30.0))
    assert next(held).text == "The"

    # when a second request finds no free connection
    outcome = RouteOutcome()
    with pytest.raises(NoProviderError):
        list(router.run(build, outcome, stream=False, deadline=Deadline(30.0)))

    # then it failed over, saying why, but the provider's circuit stays closed for everyone
    assert "no free connection" in outcome.fallbacks[0].reason
    assert router.breakers["local"].state == "closed"
    held.close()
    assert router.counters()["calls_in_flight"] == 0
