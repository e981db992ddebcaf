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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stratus.chat.breaker import CircuitBreaker
from stratus.chat.errors import MidStreamError, NoProviderError, ProviderError
from stratus.chat.models import Fallback
from stratus.observability import MetricName, emit_metric, logger

if TYPE_CHECKING:
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
            )
            for p in providers
        }
        self._health: dict[str, _Health] = {}
        self._health_lock = threading.Lock()

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

    def local_healthy(self, provider: Provider) -> bool:
        """The local server's health, checked at most once per TTL (concurrent callers wait for one check)."""
        check = getattr(provider, "health", None)
        if check is None:
            return True
        with self._health_lock:
            cached = self._health.get(provider.name)
            now = self._clock()
            if cached is not None and now - cached.at < self.settings.chat_local_health_ttl_s:
                return cached.ok
            ok = bool(check(self.settings.chat_local_health_timeout_s))
            self._health[provider.name] = _Health(ok, self._clock())
            return ok

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
    ) -> Iterator[Delta]:
        """The answer's deltas from the first provider that works.

        Raises ProviderError (non-retryable, before any output), MidStreamError (after the first
        streamed delta) or NoProviderError (every provider skipped or failed retryably).
        """
        chain = self.chain(only, llm_only)
        if not chain:
            raise NoProviderError(f"no provider is configured for router mode {self.mode}")
        skip = skip or {}
        retry_after: list[float] = []
        for index, provider in enumerate(chain):
            last = index == len(chain) - 1
            breaker = self.breakers[provider.name]
            if provider.name in skip:
                outcome.fallbacks.append(
                    Fallback(provider=provider.name, outcome="skipped", reason=skip[provider.name])
                )
                continue
            if provider.role == "local" and not self.local_healthy(provider):
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
            if not breaker.allow():
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
            try:
                if stream:
                    pieces = provider.stream(request)
                    first = next(pieces, None)
                else:
                    first = provider.generate(request)
                    pieces = iter(())
            except ProviderError as error:
                emit_metric(MetricName.PROVIDER_FAILURES, 1)
                logger.warning(
                    "provider failed",
                    extra={"provider": provider.name, "kind": error.kind.value, "status": error.status},
                )
                if not error.retryable:
                    breaker.release()
                    raise
                breaker.record_failure(error.retry_after_s if error.status == 429 else None)
                if error.retry_after_s:
                    retry_after.append(error.retry_after_s)
                outcome.fallbacks.append(
                    Fallback(
                        provider=provider.name, outcome="failed", reason=error.reason(), status=error.status
                    )
                )
                emit_metric(MetricName.PROVIDER_FALLBACKS, 1)
                continue
            outcome.provider = provider
            outcome.request = request
            yield from self._deliver(provider, breaker, first, pieces, outcome)
            return
        raise NoProviderError(
            "no provider could answer: "
            + "; ".join(f"{f.provider} {f.outcome} ({f.reason})" for f in outcome.fallbacks),
            retry_after_s=min(retry_after) if retry_after else None,
        )

    def _deliver(
        self,
        provider: Provider,
        breaker: CircuitBreaker,
        first: Delta | None,
        pieces: Iterator[Delta],
        outcome: RouteOutcome,
    ) -> Iterator[Delta]:
        if first is not None:
            outcome.started = True
            yield from self._note(first, outcome)
        try:
            for delta in pieces:
                outcome.started = True
                yield from self._note(delta, outcome)
        except ProviderError as error:
            emit_metric(MetricName.PROVIDER_FAILURES, 1)
            if error.retryable:
                breaker.record_failure(error.retry_after_s if error.status == 429 else None)
            else:
                breaker.release()
            logger.warning(
                "provider failed mid-stream", extra={"provider": provider.name, "kind": error.kind.value}
            )
            raise MidStreamError(error) from None
        except GeneratorExit:
            breaker.release()  # the client went away: no verdict on the provider
            raise
        breaker.record_success()

    @staticmethod
    def _note(delta: Delta, outcome: RouteOutcome) -> Iterator[Delta]:
        if delta.usage is not None:
            outcome.usage = delta.usage
        if delta.refused:
            outcome.refused = True
        if delta.text:
            yield delta
