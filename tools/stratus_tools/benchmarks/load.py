"""`stratus bench load`: open-loop HTTP load on loopback — search and extractive chat, then ingestion.

Requests arrive at a fixed rate for a fixed time whatever the answers take (open loop), with at most
`--concurrency` in flight: an arrival that finds the bound reached counts as an error (overload), not
as a delayed request. Latency runs from the scheduled arrival, so a slow server cannot hide queueing.
Every connection error, timeout and non-2xx answer is an error. The rate steps up (x `--factor`) until
a step has an error or a p95 above `--p95-bound-ms`, then `--refine` steps bisect between the last
rate held and the first that was not. With `--ingest-corpus` (a BEIR corpus.jsonl, e.g. SciFact) the
corpus is then POSTed through the documents API while queries run in `--window-s` windows, stepping
the rate down (/ `--factor`) after every window with an error or a p95 above the bound: the rate held
during ingestion is the last one whose windows held until the corpus was indexed; the idle p95 at that
rate is measured after.

Without `--api-url` it runs the local stack as on AWS, in processes apart from the driver: `stratus up`
(the emulator in its own child, the pipeline's queue pollers; README.md and docs/ ingested into `docs`)
and the API in a uvicorn process of its own, pointed at that emulator through the state file
`stratus up --state-file` writes. `--single-process` runs everything in the driver's process instead.
Every request's headers come from `request_headers`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratus.settings import REPO_ROOT
from stratus_tools.benchmarks import create_admin_key, summarise

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
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except (httpx.HTTPError, OSError) as failure:
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


def _held(summary: dict[str, Any], p95_bound_ms: float) -> bool:
    """No error, and a p95 within the bound."""
    return bool(summary["all"]["errors"] == 0 and summary["all"]["p95_ms"] <= p95_bound_ms)


async def _step(
    client: httpx.AsyncClient, make_call: Callable[[int], Call], rate: float, args: Any
) -> dict[str, Any]:
    outcomes = await open_loop(client, make_call, rate, args.step_s, args.concurrency)
    summary = report(outcomes)
    ok = _held(summary, args.p95_bound_ms)
    _log(
        f"  {rate:7.2f}/s: {summary['all']['requests']} requests, {summary['all']['errors']} errors, "
        f"p50 {summary['all']['p50_ms']} ms, p95 {summary['all']['p95_ms']} ms, "
        + ("held" if ok else "NOT held")
    )
    await asyncio.sleep(args.pause_s)
    return {"rate": rate, "held": ok, **summary}


async def find_capacity(
    client: httpx.AsyncClient, make_call: Callable[[int], Call], args: Any
) -> dict[str, Any]:
    """The highest rate held against the API (`search_capacity` over measured steps)."""

    async def measure(rate: float) -> dict[str, Any]:
        return await _step(client, make_call, rate, args)

    return await search_capacity(measure, args.start_rate, args.factor, args.max_rate, args.refine)


async def search_capacity(
    measure: Callable[[float], Awaitable[dict[str, Any]]],
    start: float,
    factor: float,
    max_rate: float,
    refine: int,
) -> dict[str, Any]:
    """Step the rate up until a step is not held, then bisect `refine` times; the highest rate held."""
    steps: list[dict[str, Any]] = []
    held: dict[str, Any] | None = None
    failed: float | None = None
    for rate in step_rates(start, factor, max_rate):
        steps.append(await measure(rate))
        if not steps[-1]["held"]:
            failed = rate
            break
        held = steps[-1]
    for _ in range(refine):
        if held is None or failed is None:
            break
        rate = round((held["rate"] * failed) ** 0.5, 2)  # geometric midpoint
        if not held["rate"] < rate < failed:
            break
        steps.append(await measure(rate))
        if steps[-1]["held"]:
            held = steps[-1]
        else:
            failed = rate
    return {"steps": steps, "held": held}


def step_down(rate: float, factor: float, floor: float) -> float:
    """The next, lower rate to try after a window that did not hold (never below `floor`)."""
    return max(round(rate / factor, 2), floor)


async def hold_rate_while(
    running: asyncio.Future[Any],
    client: httpx.AsyncClient,
    make_call: Callable[[int], Call],
    rate: float,
    args: Any,
) -> dict[str, Any]:
    """Query in windows until `running` is done, stepping the rate down after every window not held.

    The rate held is the last one whose windows all held from its first window to the end; its
    report covers those windows. Every window (held or not) is in `windows`, errors included.
    """
    stop = asyncio.Event()
    running.add_done_callback(lambda _: stop.set())
    windows: list[dict[str, Any]] = []
    segment: list[Outcome] = []
    segment_started = 0.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not stop.is_set():
        window_started = loop.time() - started
        outcomes = await open_loop(client, make_call, rate, args.window_s, args.concurrency, stop)
        if not outcomes:
            break
        summary = report(outcomes)
        ok = _held(summary, args.p95_bound_ms)
        windows.append(
            {"start_s": round(window_started, 1), "rate": rate, "held": ok, **_brief(summary["all"])}
        )
        _log(
            f"  ingesting, {rate:7.2f}/s: {summary['all']['requests']} requests, "
            f"{summary['all']['errors']} errors, p95 {summary['all']['p95_ms']} ms, "
            + ("held" if ok else "NOT held")
        )
        if ok:
            if not segment:
                segment_started = window_started
            segment.extend(outcomes)
        else:
            segment = []
            rate = step_down(rate, args.factor, args.min_rate)
    held = None
    if segment:
        seconds = round(loop.time() - started - segment_started, 1)
        held = {"rate": windows[-1]["rate"], "seconds": seconds, **report(segment)}
    return {
        "windows": windows,
        "errors": sum(w["errors"] for w in windows),
        "requests": sum(w["requests"] for w in windows),
        "held": held,
    }


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in ("requests", "errors", "error_samples", "p50_ms", "p95_ms")}


async def ingest_while_querying(
    client: httpx.AsyncClient,
    ingest_client: httpx.AsyncClient,
    make_call: Callable[[int], Call],
    rate: float,
    args: Any,
) -> dict[str, Any]:
    """POST the corpus while querying at the highest rate held meanwhile; then idle at that rate."""
    documents = read_corpus(Path(args.ingest_corpus), args.ingest_limit)
    started = time.perf_counter()
    ingesting = asyncio.ensure_future(
        post_documents(ingest_client, args.ingest_collection, documents, args.ingest_timeout)
    )
    queries = await hold_rate_while(ingesting, client, make_call, rate, args)
    ingest = await ingesting
    ingest["seconds"] = round(time.perf_counter() - started, 1)
    ingest["documents_per_min"] = round(ingest["indexed"] / max(ingest["seconds"], 1e-9) * 60, 1)
    idle = None
    if queries["held"] is not None:
        _log(f"  idle at {queries['held']['rate']}/s for {args.idle_s} s")
        await asyncio.sleep(args.pause_s)
        outcomes = await open_loop(client, make_call, queries["held"]["rate"], args.idle_s, args.concurrency)
        idle = report(outcomes)
    return {"start_rate": rate, "during_ingestion": queries, "idle": idle, "ingest": ingest}


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
    poll_s: float = 2.0,
) -> dict[str, Any]:
    """POST the documents (`batch` per request), then poll the documents API until all are done.

    A POST that fails (connection error, timeout, non-202) is retried twice; every failure counts.
    """
    import httpx

    accepted: set[str] = set()
    post_errors = poll_errors = 0
    started = time.monotonic()
    for start in range(0, len(documents), batch):
        for attempt in range(3):
            try:
                response = await client.post(
                    f"/v1/collections/{collection}/documents",
                    json={"documents": documents[start : start + batch]},
                )
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 202:
                accepted.update(a["doc_id"] for a in response.json()["accepted"])
                break
            post_errors += 1
            await asyncio.sleep(attempt + 1)
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, str] = {}
    progress: list[tuple[float, int]] = []  # (seconds since the first POST, documents done)
    while time.monotonic() < deadline:
        try:
            statuses = await _statuses(client, collection, accepted)
        except (httpx.HTTPError, KeyError, ValueError):
            poll_errors += 1
        else:
            done = sum(s in {"INDEXED", "FAILED"} for s in statuses.values())
            progress.append((round(time.monotonic() - started, 1), done))
            if len(statuses) == len(accepted) and done == len(accepted):
                break
        await asyncio.sleep(poll_s)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return {
        "documents": len(documents),
        "accepted": len(accepted),
        "post_errors": post_errors,
        "poll_errors": poll_errors,
        "indexed": counts.get("INDEXED", 0),
        "statuses": counts,
        "progress": progress,
        **edge_rates(progress, 1000),
    }


def edge_rates(progress: list[tuple[float, int]], span: int) -> dict[str, float | None]:
    """Documents/min over the first and the last `span` documents done, from (seconds, done) polls."""

    def minutes_to(count: float) -> float | None:
        # the first poll at or past `count` documents (polls are seconds apart: a bound, not a stamp)
        return next((s / 60 for s, done in progress if done >= count), None)

    total = progress[-1][1] if progress else 0
    if total < 2 * span:
        return {"first_per_min": None, "last_per_min": None}
    first, start_last, end = minutes_to(span), minutes_to(total - span), minutes_to(total)
    if not (first and start_last is not None and end) or end <= start_last:
        return {"first_per_min": None, "last_per_min": None}
    return {"first_per_min": round(span / first, 1), "last_per_min": round(span / (end - start_last), 1)}


async def _statuses(client: httpx.AsyncClient, collection: str, accepted: set[str]) -> dict[str, str]:
    statuses: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/v1/collections/{collection}/documents", params=params)
        response.raise_for_status()
        page = response.json()
        statuses.update({d["doc_id"]: d["status"] for d in page["documents"] if d["doc_id"] in accepted})
        cursor = page.get("next_cursor")
        if not cursor:
            return statuses


async def drive(api: str, headers: dict[str, str], args: Any) -> dict[str, Any]:
    """The capacity search and (optionally) the ingestion run against one API."""
    import httpx

    from stratus_tools.benchmarks.chat import QUESTIONS

    make_call = query_calls(args.collection, QUESTIONS, args.chat_share)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with (
        httpx.AsyncClient(
            base_url=api, headers=headers, timeout=args.request_timeout, limits=limits
        ) as client,
        # Ingestion has a client (a connection pool) of its own: queries cannot starve its POSTs.
        httpx.AsyncClient(base_url=api, headers=headers, timeout=args.request_timeout) as ingest_client,
    ):
        for i in range(len(QUESTIONS)):  # warm-up: the encoder, the table snapshot, the query cache
            call = make_call(i)
            (await client.request(call.method, call.path, json=call.body)).raise_for_status()
        result: dict[str, Any] = {"capacity": await find_capacity(client, make_call, args)}
        if args.ingest_corpus:
            held = result["capacity"]["held"]
            rate = args.ingest_rate or (held["rate"] if held else args.start_rate)
            result["ingestion"] = await ingest_while_querying(client, ingest_client, make_call, rate, args)
    return result


def api_environment(state: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """The environment of a process that talks to the stack of a `stratus up` state file."""
    from stratus_tools.local.stack import REAL_ACCOUNT_VARIABLES, emulator_credentials

    environment = {k: v for k, v in base.items() if k not in REAL_ACCOUNT_VARIABLES}
    environment.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    environment.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    environment.update({**emulator_credentials(), **state["environment"]})
    return environment


def api_command(port: int, workers: int = 1) -> list[str]:
    """uvicorn serving the API application on 127.0.0.1:`port`."""
    return [
        sys.executable, "-m", "uvicorn", "stratus.api.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--no-access-log", "--lifespan", "off",
        # Longer than the driver's connections sit idle: a close racing a reuse is a ReadError otherwise.
        "--timeout-keep-alive", "75",
    ]  # fmt: skip


def wait_for_line(log: Path, marker: str, process: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The text of `log` once it holds `marker`; fails if `process` exits or time runs out first."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        if marker in text:
            return text
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode} before {marker!r}:\n{text[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{marker!r} not seen within {timeout_s} s:\n{text[-3000:]}")
        time.sleep(0.5)


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Return once `url` answers 2xx; fails if `process` exits or time runs out first."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with status {process.returncode}")
        try:
            if httpx.get(url, timeout=5).is_success:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout_s} s")
        time.sleep(0.2)


def _end(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit (main thread only), so that `finally` blocks stop the children."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def local_processes(root: Path, collection: str, workdir: Path, api_workers: int = 1) -> Iterator[str]:
    """`stratus up` (emulator, pollers, `collection` from README.md and docs/) and the API in a process
    of its own; yields the API's URL with this process pointed at the stack (for `create_admin_key`)."""
    from stratus import services
    from stratus.settings import get_settings
    from stratus_tools.local.stack import free_port

    state_file, stack_log, api_log = workdir / "local.json", workdir / "stack.log", workdir / "api.log"
    command = [sys.executable, "-m", "stratus_tools.cli", "up", "--port", "0"]
    command += ["--state-file", str(state_file)]
    with stack_log.open("wb") as out:
        stack = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [*command, "--collection", collection],
            cwd=root,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    api: subprocess.Popen[bytes] | None = None
    try:
        text = wait_for_line(stack_log, "Press Ctrl-C to stop", stack, timeout_s=900)
        if "did not index" in text:
            raise RuntimeError(f"the sample collection did not index:\n{text[-3000:]}")
        state = json.loads(state_file.read_text())
        environment = api_environment(state, os.environ)
        port = free_port()
        with api_log.open("wb") as out:
            api = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
                api_command(port, api_workers),
                cwd=root,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health/live", api, timeout_s=120)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(name, None)
        os.environ.update(api_environment(state, {}))  # this process talks to the emulator too (the key)
        get_settings.cache_clear()
        services.reset()
        yield url
    finally:
        if api is not None:
            _end(api, signal.SIGTERM)
        _end(stack, signal.SIGINT)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Against --api-url, or a local stack started here (separate processes unless --single-process)."""
    from stratus.settings import get_settings

    configured = get_settings().api_key
    key = args.api_key or (configured.get_secret_value() if configured is not None else None)
    settings = {k: v for k, v in vars(args).items() if k not in {"api_key", "json", "png"}}
    if args.api_url:
        return {"settings": settings, **asyncio.run(drive(args.api_url, request_headers(key), args))}
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    root = Path(args.root)
    layout = "single process" if args.single_process else "driver | API | stratus up (pollers) | emulator"
    with contextlib.ExitStack() as stack:
        # `kill` as well as Ctrl-C stops `stratus up` and the API started here.
        stack.enter_context(exit_on_sigterm())
        if args.single_process:
            api = _single_process(stack, root, args.collection)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stratus-bench-load-")))
            api = stack.enter_context(local_processes(root, args.collection, workdir, args.api_workers))
        # A key of this stack without a rate limit (STRATUS_API_KEY's would be limited, or unknown here).
        key = args.api_key or create_admin_key()
        load_before = os.getloadavg()
        result = asyncio.run(drive(api, request_headers(key), args))
        return {
            "settings": settings,
            "layout": layout,
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            **result,
        }
    raise AssertionError("unreachable")  # pragma: no cover - mypy: ExitStack may swallow exceptions


def _single_process(stack: contextlib.ExitStack, root: Path, collection: str) -> str:
    """A LocalStack in this process with README.md and docs/ ingested; the API's URL."""
    from stratus import services
    from stratus_tools.local.stack import LocalStack
    from stratus_tools.uploads import collect_uploads, upload_files, wait_for_documents

    local = LocalStack(root, bucket="stratus-bench-load", poll_wait_s=1, batch_window_cap_s=0.5)
    local.start(run_functions=True)
    stack.callback(local.stop)
    uploads = collect_uploads([p for p in (root / "README.md", root / "docs") if p.exists()], root)
    since = time.time()
    doc_ids = upload_files(local.client("s3"), local.plan.bucket, "inbox/", collection, uploads)
    wait_for_documents(services.document_table(), collection, doc_ids, 600, since=since)
    return local.serve_api(port=0)


def plot(result: dict[str, Any], path: Path) -> None:
    """p50 and p95 per endpoint against the offered rate; with ingestion, each window's p95 and rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(result["capacity"]["steps"], key=lambda s: s["rate"])
    windows = result.get("ingestion", {}).get("during_ingestion", {}).get("windows", [])
    fig, axes = plt.subplots(1, 2 if windows else 1, figsize=(12 if windows else 7, 4), squeeze=False)
    ax = axes[0][0]
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
    ax.set_yscale("log")
    ax.set_title("capacity (idle stack)")
    ax.legend()
    if windows:
        ax = axes[0][1]
        ax.plot([w["start_s"] for w in windows], [w["p95_ms"] for w in windows], marker="o", label="p95")
        ax.plot([w["start_s"] for w in windows], [w["p50_ms"] for w in windows], ls="--", label="p50")
        for w in windows:
            failure = "" if w["held"] else f" ✗{w['errors']} errors" if w["errors"] else " ✗p95"
            ax.annotate(f"{w['rate']}/s{failure}", (w["start_s"], w["p95_ms"]), fontsize=7)
        ax.set_xlabel("seconds since ingestion started")
        ax.set_ylabel("query latency (ms)")
        ax.set_yscale("log")
        ax.set_title("queries during ingestion (rate per window)")
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
    parser.add_argument(
        "--single-process", action="store_true", help="run the stack and the API in the driver's process"
    )
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn worker processes of the API")
    parser.add_argument("--collection", default="docs", help="collection the queries ask")
    parser.add_argument("--chat-share", type=float, default=0.5, help="share of queries that are chat")
    parser.add_argument("--start-rate", type=float, default=2.0, help="first step's requests/s")
    parser.add_argument("--factor", type=float, default=1.5, help="rate multiplier between steps")
    parser.add_argument("--max-rate", type=float, default=500.0, help="highest rate tried")
    parser.add_argument("--refine", type=int, default=2, help="bisection steps after the first failure")
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
    parser.add_argument(
        "--ingest-rate",
        type=float,
        default=None,
        help="first query rate during ingestion (default: the held)",
    )
    parser.add_argument(
        "--window-s", type=float, default=15.0, help="seconds per query window while ingesting"
    )
    parser.add_argument("--min-rate", type=float, default=0.5, help="lowest query rate while ingesting")
    parser.add_argument("--idle-s", type=float, default=20.0, help="seconds of idle queries at the rate held")
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
    print(f"{result.get('layout', 'remote API')}, {os.cpu_count()} CPUs")
    if held is None:
        print(f"no rate held (first step: {result['capacity']['steps'][0]['all']})")
    else:
        print(f"highest rate held: {held['rate']}/s with 0 errors")
        _print_endpoints(held)
    if "ingestion" in result:
        ingestion = result["ingestion"]
        ingest, during = ingestion["ingest"], ingestion["during_ingestion"]
        print(
            f"ingested {ingest['indexed']}/{ingest['documents']} documents in {ingest['seconds']} s "
            f"({ingest['documents_per_min']}/min; {ingest['post_errors']} POST errors, "
            f"statuses {ingest['statuses']}); {during['errors']} query errors in "
            f"{len(during['windows'])} windows"
        )
        if ingest.get("first_per_min"):
            print(
                f"  first 1,000 documents {ingest['first_per_min']}/min, "
                f"last 1,000 {ingest['last_per_min']}/min"
            )
        if during["held"] is None:
            print(f"  no query rate held during ingestion (down to {args.min_rate}/s)")
        else:
            print(f"  held during ingestion: {during['held']['rate']}/s for {during['held']['seconds']} s")
            _print_endpoints(during["held"])
            print("  idle at that rate:")
            _print_endpoints(ingestion["idle"])
    return 0


def _print_endpoints(summary: dict[str, Any]) -> None:
    for endpoint in (*ENDPOINTS, "all"):
        if endpoint in summary:
            e = summary[endpoint]
            print(
                f"  {endpoint:6} {e['requests']} requests, {e['errors']} errors, "
                f"p50 {e['p50_ms']} ms, p95 {e['p95_ms']} ms"
            )
