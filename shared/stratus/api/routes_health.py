"""Health routes: /health/live (the process answers) and /health/ready (its dependencies answer)."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from stratus import __version__
from stratus.settings import Settings, get_settings

router = APIRouter(tags=["health"])

# Checks run side by side; a hung check keeps its thread until its own client timeout ends it.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")


class HealthReport(BaseModel):
    """Health of the process and what it depends on."""

    status: str
    version: str = __version__
    checks: dict[str, str] = Field(default_factory=dict)


def _store_reachable() -> None:
    from stratus import services

    services.chunk_store().collections()


def _model_present(settings: Settings) -> None:
    if not (settings.model_dir / "manifest.json").exists():
        raise FileNotFoundError("missing")


def _queue_reachable(url: str) -> None:
    from stratus.stores import aws

    aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])


def dependency_checks(settings: Settings) -> dict[str, Callable[[], None]]:
    """The readiness checks, by the name the report gives them: store, model and each configured queue."""
    checks: dict[str, Callable[[], None]] = {
        "store": _store_reachable,
        "model": lambda: _model_present(settings),
    }
    for stage in ("fetch", "embed", "index"):
        url = getattr(settings, f"{stage}_queue_url")
        if url:
            checks[f"{stage}_queue"] = partial(_queue_reachable, url)
    return checks


class Readiness:
    """Runs the checks concurrently, each bounded by `timeout_s`, and reuses a healthy result for `ttl_s`.

    A check still running from an earlier call is waited on again rather than started twice: a slow
    first store open finishes in the background, and a hung dependency never holds more than one thread.
    Until a check has passed once (a cold instance: the first LanceDB open, the first TLS handshakes) it
    is given `cold_timeout_s` instead.
    """

    def __init__(
        self,
        checks: dict[str, Callable[[], None]],
        timeout_s: float,
        ttl_s: float,
        cold_timeout_s: float | None = None,
    ) -> None:
        self.checks = checks
        self.timeout_s = timeout_s
        self.cold_timeout_s = max(timeout_s, cold_timeout_s or timeout_s)
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, str]] | None = None
        self._running: dict[str, Future[None]] = {}
        self._passed: set[str] = set()

    def report(self) -> dict[str, str]:
        """'ok' or the failure of each check, by name."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.ttl_s:
                return self._cached[1]
            for name, check in self.checks.items():
                if name not in self._running or self._running[name].done():
                    self._running[name] = _POOL.submit(contextvars.copy_context().run, check)
            futures = dict(self._running)
            cold = any(name not in self._passed for name in futures)
            timeout_s = self.cold_timeout_s if cold else self.timeout_s
            wait(futures.values(), timeout=timeout_s)
            results = {name: _outcome(future, timeout_s) for name, future in futures.items()}
            self._passed.update(name for name, result in results.items() if result == "ok")
            # Only a healthy answer is reused: a failing dependency is asked again on the next call.
            healthy = all(v == "ok" for v in results.values())
            self._cached = (time.monotonic(), results) if healthy else None
            return results


def _outcome(future: Future[None], timeout_s: float) -> str:
    if not future.done():
        return f"error: no answer within {timeout_s:g}s"
    error = future.exception()
    # The exception's type only: its message may hold a URL, a key id or a path.
    return "ok" if error is None else f"error: {type(error).__name__}"


def readiness_of(request: Request) -> Readiness:
    """The app's Readiness, created on first use from the settings."""
    readiness: Readiness | None = getattr(request.app.state, "readiness", None)
    if readiness is None:
        settings = get_settings()
        readiness = Readiness(
            dependency_checks(settings),
            settings.health_timeout_s,
            settings.health_cache_s,
            cold_timeout_s=settings.health_cold_timeout_s,
        )
        request.app.state.readiness = readiness
    return readiness


@router.get("/health/live", response_model=HealthReport)
async def live() -> HealthReport:
    """The process is up."""
    return HealthReport(status="ok")


@router.get(
    "/health/ready",
    response_model=HealthReport,
    responses={503: {"description": "a dependency failed; checks names it", "model": HealthReport}},
)
def ready(request: Request, response: Response) -> HealthReport:
    """The store and the queues answer and the model is present (checked concurrently, cached briefly)."""
    checks = readiness_of(request).report()
    healthy = all(v == "ok" for v in checks.values())
    response.status_code = 200 if healthy else 503
    return HealthReport(status="ok" if healthy else "degraded", checks=checks)
