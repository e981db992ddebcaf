"""The inference router: which providers to try, in which order, and when to fall back.

Modes: local-first (the local OpenAI-compatible server, then the cloud providers), cloud-only,
local-only; the extractive answerer ends the chain when configured. A provider is skipped when its
circuit is open, when it is the local server and its (cached) health check fails, or when the prompt
does not fit its context window and a later provider remains. A call that fails with a retryable
error (429, 5xx, timeout, connection) moves on to the next provider; auth, validation and
context-length errors end the request; after the first streamed token nothing falls back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stratus.chat.breaker import CircuitBreaker
from stratus.chat.errors import FailureKind, MidStreamError, NoProviderError, ProviderError, RequestCancelled
from stratus.chat.models import Fallback
from stratus.observability import MetricName, emit_metric, logger

if TYPE_CHECKING:
    from stratus.chat.deadline import Deadline
    from stratus.chat.prompts import LLMRequest
    from stratus.chat.providers import Delta, Provider, TokenUsage
    from stratus.settings import Settings


class ProviderNotAllowedError(ValueError):
    """The request named a provider that is not configured or not allowed by the router mode."""


@dataclass
class RouteOutcome:
    """What happened while routing one call; filled in as the call proceeds."""

    provider: Provider | None = None
    request: LLMRequest | None = None
    fallbacks: list[Fallback] = field(default_factory=list)
    usage: TokenUsage | None = None
    refused: bool = False
    started: bool = False


@dataclass
class _Health:
    ok: bool
    at: float


class Router:
    """Routes calls over the configured providers with per-provider circuit breakers."""

    def __init__(
        self,
        settings: Settings,
        providers: list[Provider],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.mode = settings.chat_router_mode
        self.cloud_order = [n.strip() for n in settings.chat_cloud_providers.split(",") if n.strip()]
        self.providers = {p.name: p for p in providers}
        self._clock = clock
        self.breakers = {
            p.name: CircuitBreaker(
                p.name,
                settings.chat_breaker_failures,
                settings.chat_breaker_cooldown_s,
                settings.chat_breaker_max_cooldown_s,
                clock,
                probe_lease_s=settings.chat_deadline_s + settings.chat_connect_timeout_s,
            )
            for p in providers
        }
        self._health: dict[str, _Health] = {}
        self._health_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._calls = 0

    # -- which providers -------------------------------------------------------------------

    def chain(self, only: str | None = None, llm_only: bool = False) -> list[Provider]:
        """The providers to try, in order."""
        local = [p for p in self.providers.values() if p.role == "local"]
        cloud = [
            self.providers[name]
            for name in self.cloud_order
            if name in self.providers and self.providers[name].role == "cloud"
        ]
        if self.mode == "local-first":
            order = local + cloud
        elif self.mode == "cloud-only":
            order = cloud
        else:
            order = local
        extractive = self.providers.get("extractive")
        if only is not None:
            allowed = {p.name for p in order} | ({"extractive"} if extractive else set())
            if only not in allowed:
                raise ProviderNotAllowedError(
                    f"provider {only!r} is not configured or not allowed in router mode {self.mode}"
                )
            order = [self.providers[only]]
        elif extractive is not None and self.settings.chat_extractive_fallback:
            order = [*order, extractive]
        if llm_only:
            order = [p for p in order if p.role != "offline"]
        return order

    def has_llm(self) -> bool:
        """Whether the chain holds a language model (not only the extractive answerer)."""
        return any(p.role != "offline" for p in self.chain())

    def local_healthy(self, provider: Provider, deadline: Deadline | None = None) -> bool:
        """The local server's health, checked at most once per TTL (concurrent callers wait for one check)."""
        check = getattr(provider, "health", None)
        if check is None:
            return True
        with self._health_lock:
            cached = self._health.get(provider.name)
            now = self._clock()
            if cached is not None and now - cached.at < self.settings.chat_local_health_ttl_s:
                return cached.ok
            timeout = self.settings.chat_local_health_timeout_s
            shortened = deadline is not None and deadline.remaining() < timeout
            if deadline is not None:
                timeout = max(min(timeout, deadline.remaining()), 0.01)
            ok = bool(check(timeout))
            if ok or not shortened:  # a check cut short by one request's deadline says nothing for others
                self._health[provider.name] = _Health(ok, self._clock())
            return ok

    # -- counters ----------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """In-flight work, for tests and health: provider calls, half-open probes, open provider responses."""
        with self._count_lock:
            calls = self._calls
        return {
            "calls_in_flight": calls,
            "probes_in_flight": sum(b.probe_in_flight for b in self.breakers.values()),
            "open_provider_responses": sum(int(getattr(p, "open_calls", 0)) for p in self.providers.values()),
        }

    # -- one routed call ---------------------------------------------------------------------

    def run(
        self,
        build: Callable[[Provider], LLMRequest],
        outcome: RouteOutcome,
        *,
        stream: bool,
        only: str | None = None,
        llm_only: bool = False,
        skip: dict[str, str] | None = None,
        deadline: Deadline | None = None,
    ) -> Generator[Delta, None, None]:
        """The answer's deltas from the first provider that works.

        Raises ProviderError (non-retryable, before any output), MidStreamError (after the first
        streamed delta), NoProviderError (every provider skipped or failed retryably) or
        RequestCancelled. Every call admitted by a breaker ends in exactly one of record_success,
        record_failure or release, whatever way the call or this generator ends.
        """
        chain = self.chain(only, llm_only)
        if not chain:
            raise NoProviderError(f"no provider is configured for router mode {self.mode}")
        skip = skip or {}
        retry_after: list[float] = []
        for index, provider in enumerate(chain):
            if deadline is not None and deadline.cancelled:
                raise RequestCancelled(deadline.reason)
            last = index == len(chain) - 1
            breaker = self.breakers[provider.name]
            if provider.name in skip:
                outcome.fallbacks.append(
                    Fallback(provider=provider.name, outcome="skipped", reason=skip[provider.name])
                )
                continue
            if provider.role != "offline" and deadline is not None and deadline.expired():
                outcome.fallbacks.append(
                    Fallback(
                        provider=provider.name, outcome="skipped", reason="the request's deadline passed"
                    )
                )
                continue
            if provider.role == "local" and not self.local_healthy(provider, deadline):
                outcome.fallbacks.append(
                    Fallback(provider=provider.name, outcome="skipped", reason="health check failed")
                )
                continue
            request = build(provider)
            if not request.fits and not last:
                outcome.fallbacks.append(
                    Fallback(
                        provider=provider.name,
                        outcome="skipped",
                        reason=f"prompt needs {request.prompt_tokens} + {request.max_tokens} answer tokens, "
                        f"context window {request.window}",
                    )
                )
                continue
            admission = breaker.admit()
            if admission is None:
                wait = breaker.retry_in()
                retry_after.append(wait)
                emit_metric(MetricName.CIRCUIT_OPEN, 1)
                outcome.fallbacks.append(
                    Fallback(
                        provider=provider.name,
                        outcome="skipped",
                        reason=f"circuit open (retry in {wait:.0f}s)",
                    )
                )
                continue
            emit_metric(MetricName.PROVIDER_CALLS, 1)
            call = _Call(self, provider, breaker, admission.probe, deadline)
            try:
                first, pieces = call.start(request, stream)
            except ProviderError as error:
                if not error.retryable:
                    raise
                if error.retry_after_s:
                    retry_after.append(min(error.retry_after_s, breaker.max_cooldown_s))
                outcome.fallbacks.append(
                    Fallback(
                        provider=provider.name, outcome="failed", reason=error.reason(), status=error.status
                    )
                )
                emit_metric(MetricName.PROVIDER_FALLBACKS, 1)
                continue
            outcome.provider = provider
            outcome.request = request
            yield from call.deliver(first, pieces, outcome)
            return
        if deadline is not None and deadline.cancelled:
            raise RequestCancelled(deadline.reason)
        raise NoProviderError(
            "no provider could answer: "
            + "; ".join(f"{f.provider} {f.outcome} ({f.reason})" for f in outcome.fallbacks),
            retry_after_s=min(retry_after) if retry_after else None,
        )

    @staticmethod
    def _note(delta: Delta, outcome: RouteOutcome) -> Iterator[Delta]:
        if delta.usage is not None:
            outcome.usage = delta.usage
        if delta.refused:
            outcome.refused = True
        if delta.text:
            yield delta


class _Call:
    """One admitted provider call; settles its breaker exactly once (success, failure or release)."""

    def __init__(
        self,
        router: Router,
        provider: Provider,
        breaker: CircuitBreaker,
        probe: bool,
        deadline: Deadline | None,
    ) -> None:
        self.router = router
        self.provider = provider
        self.breaker = breaker
        self.probe = probe
        self.deadline = deadline
        self.settled = False
        with router._count_lock:
            router._calls += 1

    def _settle(self, verdict: str, error: ProviderError | None = None) -> None:
        if self.settled:
            return
        self.settled = True
        with self.router._count_lock:
            self.router._calls -= 1
        if verdict == "success":
            self.breaker.record_success(probe=self.probe)
        elif verdict == "failure" and error is not None:
            self.breaker.record_failure(
                error.retry_after_s if error.status == 429 else None, probe=self.probe
            )
        else:
            self.breaker.release(probe=self.probe)

    def _judge(self, error: ProviderError) -> None:
        """Failure when the provider failed; no verdict when the request itself ended the call."""
        ours = self.deadline is not None and (self.deadline.cancelled or self.deadline.expired())
        extra = {"provider": self.provider.name, "kind": error.kind.value, "status": error.status}
        if error.retryable and error.blames_provider and not ours:
            emit_metric(MetricName.PROVIDER_FAILURES, 1)
            logger.warning("provider failed", extra=extra)
            self._settle("failure", error)
            return
        if ours or not error.blames_provider:
            logger.info("provider call ended on Stratus' side", extra={**extra, "reason": error.message})
        else:
            emit_metric(MetricName.PROVIDER_FAILURES, 1)
            logger.warning("provider failed", extra=extra)
        self._settle("release")

    def _as_provider_error(self, error: Exception) -> ProviderError:
        # A bug or an unforeseen answer shape in a provider is that provider's failure, never a 500.
        return ProviderError(self.provider.name, FailureKind.SERVER, f"unexpected {type(error).__name__}")

    def start(self, request: LLMRequest, stream: bool) -> tuple[Delta | None, Iterator[Delta]]:
        """Call the provider up to its first delta; raises ProviderError (settled) on failure."""
        pieces: Iterator[Delta] = iter(())
        try:
            if stream:
                pieces = self.provider.stream(request, self.deadline)
                first = next(pieces, None)
            else:
                first = self.provider.generate(request, self.deadline)
        except ProviderError as error:
            _close(pieces)
            self._judge(error)
            raise
        except Exception as error:
            _close(pieces)
            converted = self._as_provider_error(error)
            self._judge(converted)
            raise converted from None
        except BaseException:
            _close(pieces)
            self._settle("release")
            raise
        return first, pieces

    def deliver(self, first: Delta | None, pieces: Iterator[Delta], outcome: RouteOutcome) -> Iterator[Delta]:
        """The deltas; after the first one a failure is a MidStreamError (no fallback)."""
        try:
            if first is not None:
                outcome.started = True
                yield from Router._note(first, outcome)
            for delta in pieces:
                outcome.started = True
                yield from Router._note(delta, outcome)
        except ProviderError as error:
            self._judge(error)
            raise MidStreamError(error) from None
        except Exception as error:
            converted = self._as_provider_error(error)
            self._judge(converted)
            raise MidStreamError(converted) from None
        else:
            self._settle("success")
        finally:
            _close(pieces)
            self._settle("release")  # generator closed, client gone: no verdict on the provider


def _close(pieces: Iterator[Delta]) -> None:
    close = getattr(pieces, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            logger.warning("closing a provider stream failed", exc_info=True)
