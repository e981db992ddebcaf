"""`stratus bench load`: open-loop HTTP load on loopback — search and extractive chat, then ingestion.

Requests arrive at a fixed rate for a fixed time whatever the answers take (open loop), with at most
`--concurrency` in flight: an arrival that finds the bound reached counts as an error (overload), not
as a delayed request. Latency runs from the scheduled arrival, so a slow server cannot hide queueing.
The rate steps up (x `--factor`) until a step has an error or a p95 above `--p95-bound-ms`; the
highest rate held is the last step with neither. With `--ingest-corpus` (a BEIR corpus.jsonl, e.g.
SciFact) queries then run at a fixed rate while the corpus is POSTed through the documents API, and
the query p95 during ingestion is reported next to the idle p95.

Without `--api-url` it starts a LocalStack, ingests README.md and docs/ into `docs` and serves the API
on 127.0.0.1 (as `stratus bench chat` does). Every request's headers come from `request_headers`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratus.benchmarks import summarise
from stratus.settings import REPO_ROOT

if TYPE_CHECKING:
    import httpx

DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "eval" / "scifact" / "corpus.jsonl"
ENDPOINTS = ("search", "chat")


@dataclass(frozen=True)
class Call:
    """One request the driver sends: the endpoint's name (for the report), method, path and body."""

    endpoint: str
    method: str
    path: str
    body: dict[str, Any] | None = None


@dataclass
class Outcome:
    """What happened to one scheduled request."""

    endpoint: str
    scheduled_s: float  # arrival time, seconds from the start of the run
    latency_ms: float
    status: int | None
    error: str | None = None
    call: Call | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return self.error is None and self.status is not None and 200 <= self.status < 300


def request_headers(api_key: str | None = None) -> dict[str, str]:
    """Headers of every request the driver sends (the API key, when there is one)."""
    return {"x-api-key": api_key} if api_key else {}


def create_admin_key(name: str = "bench-load") -> str:
    """A new admin key on every collection with no rate limit, stored in the keys table of the stack."""
    from stratus import services
    from stratus.auth import create_key

    return create_key(services.key_table(), name, ["*"], ["admin"], rate_limit_per_s=0).key


def query_calls(collection: str, questions: Sequence[str], chat_share: float) -> Callable[[int], Call]:
    """The i-th query: a hybrid search, or (a `chat_share` of them) an extractive chat answer."""

    def make(i: int) -> Call:
        question = questions[i % len(questions)]
        if chat_share > 0 and (i * chat_share) % 1 + chat_share >= 1:
            body = {"messages": [{"role": "user", "content": question}], "provider": "extractive"}
            return Call("chat", "POST", f"/v1/collections/{collection}/chat", body)
        return Call("search", "POST", f"/v1/collections/{collection}/search", {"query": question, "top_k": 5})

    return make


async def open_loop(
    client: httpx.AsyncClient,
    make_call: Callable[[int], Call],
    rate: float,
    duration_s: float,
    concurrency: int,
    stop: asyncio.Event | None = None,
) -> list[Outcome]:
    """Send `rate` requests a second for `duration_s` (or until `stop`), at most `concurrency` at once."""
    import httpx

    loop = asyncio.get_running_loop()
    started = loop.time()
    in_flight = 0
    outcomes: list[Outcome] = []
    tasks: set[asyncio.Task[None]] = set()

    async def send(call: Call, scheduled: float) -> None:
        nonlocal in_flight
        status: int | None = None
        error: str | None = None
        try:
            response = await client.request(call.method, call.path, json=call.body)
            status = response.status_code
            if status >= 400:
                error = f"HTTP {status}"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"[:200]
        finally:
            in_flight -= 1
        latency = (loop.time() - scheduled) * 1000
        outcomes.append(Outcome(call.endpoint, scheduled - started, latency, status, error, call))

    i = 0
    while stop is None or not stop.is_set():
        if i / rate >= duration_s:
            break
        scheduled = started + i / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        call = make_call(i)
        i += 1
        if in_flight >= concurrency:
            outcomes.append(
                Outcome(call.endpoint, scheduled - started, 0.0, None, "overload: concurrency bound", call)
            )
            continue
        in_flight += 1
        task = asyncio.create_task(send(call, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return outcomes


def report(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Requests, errors and latency percentiles (successful requests) per endpoint and overall."""
    result: dict[str, Any] = {}
    names = sorted({o.endpoint for o in outcomes})
    for name in [*names, "all"]:
        mine = [o for o in outcomes if name in ("all", o.endpoint)]
        errors = [o for o in mine if not o.ok]
        result[name] = {
            "requests": len(mine),
            "errors": len(errors),
            "error_samples": sorted({str(o.error) for o in errors})[:3],
            **summarise([o.latency_ms for o in mine if o.ok]),
        }
    return result


def step_rates(start: float, factor: float, max_rate: float) -> Iterator[float]:
    """start, start x factor, ... up to max_rate."""
    rate = start
    while rate <= max_rate + 1e-9:
        yield round(rate, 2)
        rate *= factor


async def find_capacity(
    client: httpx.AsyncClient, make_call: Callable[[int], Call], args: Any
) -> dict[str, Any]:
    """Step the rate up until a step errs or its p95 passes the bound; the highest rate held."""
    steps: list[dict[str, Any]] = []
    held: dict[str, Any] | None = None
    for rate in step_rates(args.start_rate, args.factor, args.max_rate):
        outcomes = await open_loop(client, make_call, rate, args.step_s, args.concurrency)
        summary = report(outcomes)
        ok = summary["all"]["errors"] == 0 and summary["all"]["p95_ms"] <= args.p95_bound_ms
        steps.append({"rate": rate, "held": ok, **summary})
        _log(
            f"  {rate:7.2f}/s: {summary['all']['requests']} requests, {summary['all']['errors']} errors, "
            f"p50 {summary['all']['p50_ms']} ms, p95 {summary['all']['p95_ms']} ms, "
            + ("held" if ok else "NOT held")
        )
        if not ok:
            break
        held = steps[-1]
        await asyncio.sleep(args.pause_s)
    return {"steps": steps, "held": held}


async def ingest_while_querying(
    client: httpx.AsyncClient, make_call: Callable[[int], Call], args: Any
) -> dict[str, Any]:
    """Queries at a fixed rate: idle first, then while the corpus is POSTed; p95 of both phases."""
    idle = await open_loop(client, make_call, args.ingest_rate, args.idle_s, args.concurrency)
    documents = read_corpus(Path(args.ingest_corpus), args.ingest_limit)
    stop = asyncio.Event()
    queries = asyncio.create_task(open_loop(client, make_call, args.ingest_rate, 1e9, args.concurrency, stop))
    started = time.perf_counter()
    try:
        ingest = await post_documents(client, args.ingest_collection, documents, args.ingest_timeout)
    finally:
        stop.set()
    during = await queries
    ingest["seconds"] = round(time.perf_counter() - started, 1)
    ingest["documents_per_min"] = round(ingest["indexed"] / max(ingest["seconds"], 1e-9) * 60, 1)
    return {
        "rate": args.ingest_rate,
        "idle": report(idle),
        "during_ingestion": report(during),
        "ingest": ingest,
    }


def read_corpus(path: Path, limit: int | None) -> list[dict[str, str]]:
    """Inline documents (`<_id>.md`, the title as H1) of a BEIR corpus.jsonl, read where it lies."""
    documents: list[dict[str, str]] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if limit is not None and len(documents) >= limit:
                break
            if line.strip():
                record = json.loads(line)
                title = " ".join(str(record.get("title", "")).split())
                body = str(record.get("text", "")).strip()
                text = f"# {title}\n\n{body}\n" if title else f"{body}\n"
                source = str(record["_id"]).replace("/", "_") + ".md"
                documents.append({"source": source, "text": text})
    return documents


async def post_documents(
    client: httpx.AsyncClient,
    collection: str,
    documents: list[dict[str, str]],
    timeout_s: float,
    batch: int = 50,
) -> dict[str, Any]:
    """POST the documents (`batch` per request), then poll the documents API until all are done."""
    accepted: set[str] = set()
    post_errors = 0
    for start in range(0, len(documents), batch):
        response = await client.post(
            f"/v1/collections/{collection}/documents", json={"documents": documents[start : start + batch]}
        )
        if response.status_code != 202:
            post_errors += 1
            continue
        accepted.update(a["doc_id"] for a in response.json()["accepted"])
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(f"/v1/collections/{collection}/documents", params=params)).json()
            statuses.update({d["doc_id"]: d["status"] for d in page["documents"] if d["doc_id"] in accepted})
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if len(statuses) == len(accepted) and all(s in {"INDEXED", "FAILED"} for s in statuses.values()):
            break
        await asyncio.sleep(1.0)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return {
        "documents": len(documents),
        "accepted": len(accepted),
        "post_errors": post_errors,
        "indexed": counts.get("INDEXED", 0),
        "statuses": counts,
    }


async def drive(api: str, headers: dict[str, str], args: Any) -> dict[str, Any]:
    """The capacity search and (optionally) the ingestion run against one API."""
    import httpx

    from stratus.benchmarks.chat import QUESTIONS

    make_call = query_calls(args.collection, QUESTIONS, args.chat_share)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(
        base_url=api, headers=headers, timeout=args.request_timeout, limits=limits
    ) as client:
        for i in range(len(QUESTIONS)):  # warm-up: the encoder, the table snapshot, the query cache
            call = make_call(i)
            (await client.request(call.method, call.path, json=call.body)).raise_for_status()
        result: dict[str, Any] = {"capacity": await find_capacity(client, make_call, args)}
        if args.ingest_corpus:
            if args.ingest_rate is None:
                held = result["capacity"]["held"]
                args.ingest_rate = round(held["rate"] / 2, 2) if held else args.start_rate
            result["ingestion"] = await ingest_while_querying(client, make_call, args)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Against --api-url, or a LocalStack started here with README.md and docs/ ingested."""
    from stratus.settings import get_settings

    configured = get_settings().api_key
    key = args.api_key or (configured.get_secret_value() if configured is not None else None)
    settings = {k: v for k, v in vars(args).items() if k not in {"api_key", "json", "png"}}
    if args.api_url:
        return {"settings": settings, **asyncio.run(drive(args.api_url, request_headers(key), args))}
    from stratus import services
    from stratus.local.stack import LocalStack
    from stratus.uploads import collect_uploads, upload_files, wait_for_documents

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    root = Path(args.root)
    stack = LocalStack(root, bucket="stratus-bench-load", poll_wait_s=1, batch_window_cap_s=0.5)
    stack.start(run_functions=True)
    try:
        uploads = collect_uploads([p for p in (root / "README.md", root / "docs") if p.exists()], root)
        since = time.time()
        doc_ids = upload_files(stack.client("s3"), stack.plan.bucket, "inbox/", args.collection, uploads)
        wait_for_documents(services.document_table(), args.collection, doc_ids, 600, since=since)
        api = stack.serve_api(port=0)
        key = key or create_admin_key()
        return {
            "settings": settings,
            "cpus": os.cpu_count(),
            **asyncio.run(drive(api, request_headers(key), args)),
        }
    finally:
        stack.stop()


def plot(result: dict[str, Any], path: Path) -> None:
    """p50 and p95 per endpoint against the offered rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["capacity"]["steps"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for endpoint in ENDPOINTS:
        points = [(s["rate"], s[endpoint]) for s in steps if endpoint in s]
        if points:
            ax.plot(
                [r for r, _ in points], [e["p95_ms"] for _, e in points], marker="o", label=f"{endpoint} p95"
            )
            ax.plot(
                [r for r, _ in points], [e["p50_ms"] for _, e in points], ls="--", label=f"{endpoint} p50"
            )
    ax.set_xlabel("offered rate (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("stratus bench load")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratus bench load", description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", default=None, help="load this API instead of starting a local stack")
    parser.add_argument("--api-key", default=None, help="x-api-key to send (default STRATUS_API_KEY)")
    parser.add_argument("--root", default=str(REPO_ROOT), help="folder holding README.md and docs/")
    parser.add_argument("--collection", default="docs", help="collection the queries ask")
    parser.add_argument("--chat-share", type=float, default=0.5, help="share of queries that are chat")
    parser.add_argument("--start-rate", type=float, default=2.0, help="first step's requests/s")
    parser.add_argument("--factor", type=float, default=1.5, help="rate multiplier between steps")
    parser.add_argument("--max-rate", type=float, default=500.0, help="highest rate tried")
    parser.add_argument("--step-s", type=float, default=15.0, help="seconds per step")
    parser.add_argument("--pause-s", type=float, default=1.0, help="idle seconds between steps")
    parser.add_argument("--p95-bound-ms", type=float, default=1000.0, help="a step above this p95 fails")
    parser.add_argument("--concurrency", type=int, default=64, help="most requests in flight")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument(
        "--ingest-corpus", default=None, help=f"BEIR corpus.jsonl to ingest (e.g. {DEFAULT_CORPUS})"
    )
    parser.add_argument("--ingest-limit", type=int, default=None, help="ingest only the first N documents")
    parser.add_argument("--ingest-collection", default="scifact")
    parser.add_argument("--ingest-rate", type=float, default=None, help="query rate (default: half the held)")
    parser.add_argument("--idle-s", type=float, default=20.0, help="seconds of idle queries before ingesting")
    parser.add_argument("--ingest-timeout", type=float, default=1800.0, help="seconds to wait for the corpus")
    parser.add_argument("--json", default=None, help="write the result to this JSON file")
    parser.add_argument("--png", default=None, help="plot latency against rate into this PNG")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `stratus bench load`."""
    args = _parser().parse_args(argv)
    # Powertools prints buffered EMF metrics to stdout even when disabled: keep stdout for the result.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.png:
        plot(result, Path(args.png))
    held = result["capacity"]["held"]
    if held is None:
        print(f"no rate held (first step: {result['capacity']['steps'][0]['all']})")
    else:
        print(f"highest rate held: {held['rate']}/s with 0 errors ({os.cpu_count()} CPUs)")
        for endpoint in (*ENDPOINTS, "all"):
            if endpoint in held:
                e = held[endpoint]
                print(f"  {endpoint:6} {e['requests']} requests, p50 {e['p50_ms']} ms, p95 {e['p95_ms']} ms")
    if "ingestion" in result:
        ingestion = result["ingestion"]
        print(
            f"queries at {ingestion['rate']}/s: p95 idle {ingestion['idle']['all']['p95_ms']} ms, "
            f"during ingestion {ingestion['during_ingestion']['all']['p95_ms']} ms "
            f"({ingestion['during_ingestion']['all']['errors']} errors); ingested "
            f"{ingestion['ingest']['indexed']}/{ingestion['ingest']['documents']} "
            f"in {ingestion['ingest']['seconds']} s"
        )
    return 0
