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
