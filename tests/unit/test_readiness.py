"""Readiness checks run side by side, bounded, cached only when healthy, and never started twice."""

from __future__ import annotations

import threading
import time

from stratus.api.routes_health import Readiness


def test_a_hung_check_is_named_within_the_timeout_and_not_started_again() -> None:
    # given one quick check and one that hangs until released
    release = threading.Event()
    starts: list[float] = []

    def hangs() -> None:
        starts.append(time.monotonic())
        release.wait(10)

    readiness = Readiness({"quick": lambda: None, "slow": hangs}, timeout_s=0.2, ttl_s=60)

    # when readiness is asked twice while the slow check hangs
    started = time.perf_counter()
    first = readiness.report()
    elapsed = time.perf_counter() - started
    second = readiness.report()

    # then both answers name the slow check, the first came back at the timeout, the check ran once
    assert first == second == {"quick": "ok", "slow": "error: no answer within 0.2s"}
    assert elapsed < 1.0
    assert len(starts) == 1

    # and once it answers, the next report is healthy (the degraded one was not cached)
    release.set()
    time.sleep(0.05)
    assert readiness.report() == {"quick": "ok", "slow": "ok"}


def test_a_healthy_report_is_reused_and_a_failure_names_its_type() -> None:
    # given a check counting its calls, and one that fails
    calls: list[int] = []
    healthy = Readiness({"store": lambda: calls.append(1)}, timeout_s=1, ttl_s=60)

    def broken() -> None:
        raise ConnectionError("http://10.0.0.1 with secret path")

    failing = Readiness({"embed_queue": broken}, timeout_s=1, ttl_s=60)

    # when each is asked twice
    for _ in range(2):
        assert healthy.report() == {"store": "ok"}
        # then the failure is the exception type only (never its message)
        assert failing.report() == {"embed_queue": "error: ConnectionError"}

    # and the healthy result was checked once, then reused
    assert calls == [1]


def test_a_cold_instance_gets_the_cold_timeout_until_each_check_has_passed_once() -> None:
    """Issue 20 finding 5: the 1 s timeout failed the first store open on a cold instance."""

    # given a store check that takes 0.5 s every time (a cold LanceDB open, then a slow S3)
    def slow_store() -> None:
        time.sleep(0.5)

    readiness = Readiness({"store": slow_store}, timeout_s=0.2, ttl_s=0, cold_timeout_s=3)

    # when readiness is asked on the cold instance / then the first open may take the cold timeout
    assert readiness.report() == {"store": "ok"}
    # and once it has passed, a slow answer is over the (warm) timeout again
    assert readiness.report() == {"store": "error: no answer within 0.2s"}


def test_the_default_cold_timeout_outlasts_a_cold_store_open_inside_the_api_limit() -> None:
    from stratus.settings import Settings

    fields = Settings.model_fields
    cold, warm = fields["health_cold_timeout_s"].default, fields["health_timeout_s"].default
    # then the cold instance gets several seconds, well inside API Gateway's 29 s
    assert warm < 5 <= cold < 29
