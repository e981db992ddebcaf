"""The load driver's logic against a fake HTTP server in the client (httpx.MockTransport): arrivals,
the concurrency bound, honest error counts, per-endpoint reports, the rate search up (capacity) and
down (during ingestion), the corpus POSTs, the API process's command and environment, and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from stratus_tools.benchmarks.load import (
    Call,
    api_command,
    api_environment,
    exit_on_sigterm,
    hold_rate_while,
    open_loop,
    post_documents,
    query_calls,
    report,
    request_headers,
    search_capacity,
    step_down,
    step_rates,
)
from stratus_tools.local.stack import EMULATOR_KEY


def client(delay_s: float = 0.0, status: int = 200) -> httpx.AsyncClient:
    async def answer(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(delay_s)
        return httpx.Response(status, json={"ok": True, "key": request.headers.get("x-api-key")})

    return httpx.AsyncClient(
        transport=httpx.MockTransport(answer), base_url="http://api", headers=request_headers("strk_k")
    )


def search(i: int) -> Call:
    return Call("search", "POST", "/v1/collections/docs/search", {"query": f"q{i}"})


def test_open_loop_sends_the_rate_for_the_duration() -> None:
    # given a fast server and 20 requests/s for 0.5 s
    async def run() -> list:
        async with client() as http:
            started = asyncio.get_running_loop().time()
            outcomes = await open_loop(http, search, rate=20, duration_s=0.5, concurrency=4)
            return [outcomes, asyncio.get_running_loop().time() - started]

    outcomes, elapsed = asyncio.run(run())

    # then ten requests arrived 50 ms apart, all answered
    assert len(outcomes) == 10
    assert [round(o.scheduled_s, 2) for o in outcomes] == [round(i * 0.05, 2) for i in range(10)]
    assert all(o.ok for o in outcomes)
    assert 0.45 <= elapsed < 1.5
    assert report(outcomes)["search"]["errors"] == 0


def test_arrivals_beyond_the_concurrency_bound_are_overload_errors() -> None:
    # given a server taking 0.3 s and room for one request in flight, at 20 requests/s
    async def run() -> list:
        async with client(delay_s=0.3) as http:
            return await open_loop(http, search, rate=20, duration_s=0.5, concurrency=1)

    outcomes = asyncio.run(run())

    # then arrivals that found the bound reached are errors, not queued, and latency counts from arrival
    summary = report(outcomes)["all"]
    overloaded = [o for o in outcomes if o.error == "overload: concurrency bound"]
    assert summary["requests"] == 10
    assert len(overloaded) == summary["errors"]
    assert 6 <= summary["errors"] <= 9
    assert summary["p50_ms"] >= 300


def test_http_errors_count_per_endpoint() -> None:
    # given a server answering 503, and a mix of searches and chats
    make = query_calls("docs", ["a question"], chat_share=0.5)

    async def run() -> list:
        async with client(status=503) as http:
            return await open_loop(http, make, rate=40, duration_s=0.2, concurrency=8)

    summary = report(asyncio.run(run()))

    # then every request is an error of its own endpoint, and half of them were chats
    assert summary["search"]["errors"] == summary["search"]["requests"] == 4
    assert summary["chat"]["errors"] == summary["chat"]["requests"] == 4
    assert summary["chat"]["error_samples"] == ["HTTP 503"]


def test_rate_steps_and_headers() -> None:
    assert list(step_rates(2, 2, 20)) == [2, 4, 8, 16]
    assert request_headers(None) == {}
    assert request_headers("strk_abc") == {"x-api-key": "strk_abc"}
    chat = query_calls("docs", ["q"], chat_share=1.0)(0)
    assert chat.endpoint == "chat"
    assert chat.body == {"messages": [{"role": "user", "content": "q"}], "provider": "extractive"}


def test_connection_errors_timeouts_and_non_2xx_are_errors() -> None:
    # given a server that refuses, times out, or redirects, in turn
    failures: list[Exception | None] = [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), None] * 2
    answers = iter(failures)

    async def answer(request: httpx.Request) -> httpx.Response:
        failure = next(answers)
        if failure is not None:
            raise failure
        return httpx.Response(302)

    async def run() -> list:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://api") as http:
            return await open_loop(http, search, rate=60, duration_s=0.1, concurrency=8)

    summary = report(asyncio.run(run()))["all"]

    # then every request is an error, of each kind
    assert summary["requests"] == summary["errors"] == 6
    assert [s.split(":")[0] for s in summary["error_samples"]] == ["ConnectError", "HTTP 302", "ReadTimeout"]


def test_capacity_steps_up_then_bisects_to_the_highest_rate_held() -> None:
    # given a system that holds up to 25 requests/s
    async def measure(rate: float) -> dict[str, Any]:
        return {"rate": rate, "held": rate <= 25}

    # when the rate steps up from 10 (x2) with two bisection steps
    result = asyncio.run(search_capacity(measure, start=10, factor=2, max_rate=500, refine=2))

    # then 40 failed, the midpoint 28.28 failed, 23.78 held and is the answer
    assert [s["rate"] for s in result["steps"]] == [10, 20, 40, 28.28, 23.78]
    assert result["held"] == {"rate": 23.78, "held": True}


def test_the_rate_steps_down_to_a_floor() -> None:
    assert step_down(10, 2, floor=1) == 5
    assert step_down(3, 2, floor=2) == 2


def test_queries_step_down_while_ingesting_until_a_rate_holds_to_the_end() -> None:
    # given a server whose first three answers are 503, and an ingestion taking 1 s
    answered = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal answered
        answered += 1
        return httpx.Response(503 if answered <= 3 else 200)

    args = SimpleNamespace(window_s=0.25, concurrency=8, p95_bound_ms=1000, factor=2, min_rate=1)

    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://api") as http:
            ingesting = asyncio.ensure_future(asyncio.sleep(1.0))
            return await hold_rate_while(ingesting, http, search, 20, args)

    result = asyncio.run(run())

    # then the first window (20/s) failed with those errors, and 10/s held from then to the end
    first, *rest = result["windows"]
    assert (first["rate"], first["held"], first["errors"]) == (20, False, 3)
    assert rest
    assert all(w["rate"] == 10 and w["held"] for w in rest)
    assert result["errors"] == 3
    assert result["held"]["rate"] == 10
    assert result["held"]["all"]["errors"] == 0
    assert result["held"]["all"]["requests"] == sum(w["requests"] for w in rest)
    assert 0.5 <= result["held"]["seconds"] <= 1.5


def test_corpus_posts_are_retried_and_counted() -> None:
    # given a documents API whose first POST fails with 503
    posts = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.method == "POST":
            posts += 1
            if posts == 1:
                return httpx.Response(503)
            return httpx.Response(202, json={"accepted": [{"doc_id": "d1"}, {"doc_id": "d2"}]})
        documents = [{"doc_id": "d1", "status": "INDEXED"}, {"doc_id": "d2", "status": "FAILED"}]
        return httpx.Response(200, json={"documents": documents})

    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://api") as http:
            documents = [{"source": "a.md", "text": "a"}, {"source": "b.md", "text": "b"}]
            return await post_documents(http, "scifact", documents, timeout_s=5, poll_s=0)

    result = asyncio.run(run())

    # then the POST was retried, its failure counted, and the statuses read back
    assert (result["post_errors"], result["accepted"], result["indexed"]) == (1, 2, 1)
    assert result["statuses"] == {"INDEXED": 1, "FAILED": 1}


def test_the_api_process_talks_to_the_emulator_of_the_state_file() -> None:
    # given a state file's environment and a user's AWS profile
    state = {"environment": {"STRATUS_AWS_ENDPOINT_URL": "http://127.0.0.1:5555", "STRATUS_BUCKET": "b"}}
    base = {"AWS_PROFILE": "prod", "AWS_ACCESS_KEY_ID": "AKIA-real", "PATH": "/bin"}

    environment = api_environment(state, base)
    command = api_command(8123)

    # then it has the emulator's credentials and endpoint, not the user's, and uvicorn builds the app
    assert environment["AWS_ACCESS_KEY_ID"] == EMULATOR_KEY
    assert "AWS_PROFILE" not in environment
    assert environment["STRATUS_AWS_ENDPOINT_URL"] == "http://127.0.0.1:5555"
    assert environment["PATH"] == "/bin"
    assert command[command.index("--port") + 1] == "8123"
    assert "stratus.api.app:create_app" in command
    assert "--factory" in command


def test_sigterm_becomes_system_exit_only_inside_the_block() -> None:
    # given the handler SIGTERM had before
    before = signal.getsignal(signal.SIGTERM)

    # when SIGTERM arrives inside the block (`kill` of `stratus bench load`)
    def killed() -> None:
        with exit_on_sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted at once by the handler

    with pytest.raises(SystemExit) as stopped:
        killed()

    # then it is a SystemExit with the shell's status for a signal, and the old handler is back
    assert stopped.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_edge_rates_are_the_first_and_the_last_thousand_documents_per_minute() -> None:
    from stratus_tools.benchmarks.load import edge_rates

    # given polls of documents done: 1,000 by 60 s; 2,000 by 120 s; all 3,000 by 300 s
    progress = [(30.0, 500), (60.0, 1000), (120.0, 2000), (200.0, 2500), (300.0, 3000)]
    # when the edge rates are taken / then the first is 1,000 in 1 min, the last 1,000 in 3 min
    assert edge_rates(progress, 1000) == {"first_per_min": 1000.0, "last_per_min": 333.3}
    # and a run shorter than two spans has none
    assert edge_rates(progress[:2], 1000) == {"first_per_min": None, "last_per_min": None}
