"""The load driver's logic against a fake HTTP server in the client (httpx.MockTransport): arrivals,
the concurrency bound, per-endpoint reports, the rate steps and the query mix."""

from __future__ import annotations

import asyncio

import httpx

from stratus.benchmarks.load import Call, open_loop, query_calls, report, request_headers, step_rates


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
