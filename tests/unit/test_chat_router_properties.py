"""The router's invariants as properties (docs/chat.md, Router invariants), over any sequence of
provider behaviours, consumer behaviours and clock steps that hypothesis can think of:

1. every admitted call settles its breaker: no probe slot and no call is left in flight, whatever way
   the call ended (success, any exception, a generator closed early, a cancel, a passed deadline);
2. one request can open a circuit only by failing (a retryable failure of that provider);
3. once the provider is healthy, a circuit recovers within its longest cooldown.

The provider here is an in-process script (the router's logic, not HTTP, is under test; the HTTP
paths are in tests/integration/test_chat_faults*.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.chat.breaker import BreakerState
from stratus.chat.deadline import Deadline
from stratus.chat.errors import FailureKind, MidStreamError, NoProviderError, ProviderError, RequestCancelled
from stratus.chat.prompts import LLMRequest
from stratus.chat.providers import Delta, ProviderRole
from stratus.chat.router import RouteOutcome, Router
from stratus.settings import Settings

COOLDOWN_S = 5.0
MAX_COOLDOWN_S = 20.0
FAILING = {"500", "429", "timeout", "bug", "fail_after_first", "bug_after_first"}
RETRY_AFTER = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, math.nan, 0.0, -1.0, 1e9, 3.0]),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A provider whose next call does what `behaviour` says."""

    name = "openai"
    model = "scripted"
    role: ProviderRole = "cloud"
    context_tokens = 100_000

    def __init__(self) -> None:
        self.behaviour = "success"
        self.retry_after: float | None = None

    def _fail(self) -> None:
        b = self.behaviour
        if b == "500":
            raise ProviderError(self.name, FailureKind.SERVER, "boom", status=500)
        if b == "429":
            raise ProviderError(self.name, FailureKind.RATE_LIMITED, "slow", 429, self.retry_after)
        if b == "timeout":
            raise ProviderError(self.name, FailureKind.TIMEOUT, "read timeout")
        if b == "auth":
            raise ProviderError(self.name, FailureKind.AUTH, "bad key", status=401)
        if b == "bug":
            raise TypeError("int() argument must be a string")

    def generate(self, request: LLMRequest, deadline: Deadline | None = None) -> Delta:
        self._fail()
        return Delta("The answer [1].")

    def stream(self, request: LLMRequest, deadline: Deadline | None = None) -> Iterator[Delta]:
        self._fail()
        yield Delta("The")
        if deadline is not None and deadline.cancelled:  # the real provider's socket was shut
            raise ProviderError(self.name, FailureKind.CONNECTION, "request cancelled")
        if self.behaviour == "fail_after_first":
            raise ProviderError(self.name, FailureKind.SERVER, "boom mid-stream")
        if self.behaviour == "bug_after_first":
            raise ValueError("malformed chunk")
        yield Delta(" answer [1].")


def make_router() -> tuple[Router, Scripted, Clock]:
    settings = Settings(
        chat_router_mode="cloud-only",
        chat_cloud_providers="openai",
        chat_extractive_fallback=False,
        chat_breaker_failures=2,
        chat_breaker_cooldown_s=COOLDOWN_S,
        chat_breaker_max_cooldown_s=MAX_COOLDOWN_S,
    )
    provider = Scripted()
    clock = Clock()
    return Router(settings, [provider], clock), provider, clock


def build(_: Any) -> LLMRequest:
    return LLMRequest(system="", messages=[("user", "q")], question="q", max_tokens=16)


def one_request(router: Router, stream: bool, consumer: str) -> None:
    """One request as a client would make it; every way it can end is allowed here."""
    deadline = Deadline(0.0) if consumer == "expired" else Deadline(30.0)
    routed = router.run(build, RouteOutcome(), stream=stream, deadline=deadline)
    try:
        if consumer == "close_before_first":
            routed.close()
            return
        for _ in routed:
            if consumer == "close_after_first":
                routed.close()
                return
            if consumer == "cancel_after_first":
                deadline.cancel()
    except (ProviderError, MidStreamError, NoProviderError, RequestCancelled):
        pass


STEP = st.tuples(
    st.sampled_from(
        ["success", "500", "429", "timeout", "auth", "bug", "fail_after_first", "bug_after_first"]
    ),
    RETRY_AFTER,
    st.booleans(),
    st.sampled_from(["consume", "close_before_first", "close_after_first", "cancel_after_first", "expired"]),
    st.floats(min_value=0, max_value=30),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(STEP, max_size=25))
def test_every_call_settles_and_only_a_failure_opens_a_circuit(steps: list[tuple[Any, ...]]) -> None:
    router, provider, clock = make_router()
    breaker = router.breakers["openai"]
    for behaviour, retry_after, stream, consumer, advance in steps:
        # given any provider behaviour, any consumer and any time step
        provider.behaviour, provider.retry_after = behaviour, retry_after
        clock.now += advance
        before = breaker.state

        # when one request runs
        one_request(router, stream, consumer)

        # then nothing is in flight (1)
        assert router.counters()["probes_in_flight"] == 0
        assert router.counters()["calls_in_flight"] == 0
        # and a request that did not fail on the provider did not open its circuit (2)
        called = consumer not in ("expired", "close_before_first")
        mid_stream = behaviour in ("fail_after_first", "bug_after_first")
        failed = called and behaviour in FAILING and (stream or not mid_stream)
        if before is not BreakerState.OPEN and not failed:
            assert breaker.state is not BreakerState.OPEN, (behaviour, stream, consumer, before)
        # and an open circuit never waits longer than the longest cooldown
        assert breaker.retry_in() <= MAX_COOLDOWN_S + 1e-6  # (float rounding of the clock)


@settings(max_examples=200, deadline=None)
@given(st.lists(STEP, max_size=25), st.booleans())
def test_a_circuit_recovers_within_its_cooldown_once_the_provider_is_healthy(
    steps: list[tuple[Any, ...]], stream: bool
) -> None:
    router, provider, clock = make_router()
    for behaviour, retry_after, step_stream, consumer, advance in steps:
        provider.behaviour, provider.retry_after = behaviour, retry_after
        clock.now += advance
        one_request(router, step_stream, consumer)

    # given the provider healthy again, and the longest cooldown passed
    provider.behaviour = "success"
    clock.now += max(COOLDOWN_S, MAX_COOLDOWN_S)

    # when one request comes
    outcome = RouteOutcome()
    text = "".join(d.text for d in router.run(build, outcome, stream=stream, deadline=Deadline(30.0)))

    # then the provider answered it and its circuit is closed
    assert outcome.provider is provider
    assert text
    assert router.breakers["openai"].state is BreakerState.CLOSED


def test_a_probe_that_never_reports_loses_its_slot_after_its_lease() -> None:
    # given a half-open circuit whose probe was admitted and never reported (a lost thread)
    router, _, clock = make_router()
    breaker = router.breakers["openai"]
    breaker.record_failure()
    breaker.record_failure()
    clock.now += COOLDOWN_S
    assert breaker.admit() is not None
    assert breaker.admit() is None

    # when the lease (the longest a call can take) has passed
    clock.now += breaker.probe_lease_s

    # then another caller may probe
    assert breaker.admit() is not None
