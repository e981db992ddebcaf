"""The `stratus` command: run the local stack, ingest, search, ask, report status, benchmark."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stratus_tools.display import line, plain, text

STATE_FILE = Path(".stratus") / "local.json"
SAMPLE_QUERY = "How do I run the tests?"
# Beyond this many documents the summary lists only those not INDEXED, and totals the rest.
SUMMARY_MAX_ROWS = 40
STACK_HELP = "work against this deployed CloudFormation stack (default STRATUS_STACK)"


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _repo_root() -> Path:
    from stratus.settings import REPO_ROOT

    here = Path.cwd()
    for candidate in (here, *here.parents):
        if (candidate / "template.yaml").exists() and (candidate / "functions").is_dir():
            return candidate
    return REPO_ROOT


def _use_local_stack_if_running() -> dict[str, Any] | None:
    """Point this process at the stack `stratus up` started, if its state file is there."""
    path = _repo_root() / STATE_FILE
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    from stratus_tools.local.stack import REAL_ACCOUNT_VARIABLES, emulator_credentials

    # The emulator's account, whatever AWS credentials the shell has (or lacks: a fresh machine).
    for name in REAL_ACCOUNT_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update({**emulator_credentials(), **state["environment"]})
    from stratus import services

    services.reset()
    return state


def _use_target(args: argparse.Namespace) -> dict[str, Any] | None:
    """Point this process at the deployed stack (--stack or STRATUS_STACK), else at `stratus up`'s."""
    from stratus.settings import get_settings

    name = getattr(args, "stack", None) or get_settings().stack
    if not name:
        return _use_local_stack_if_running()
    from stratus import services
    from stratus.stores import aws
    from stratus_tools.remote import StackNotFoundError, StackOutputs, stack_environment

    try:
        outputs = StackOutputs(aws.client("cloudformation")).get(name)
    except StackNotFoundError as error:
        _console().print(text(error, "red"))
        raise SystemExit(2) from error
    os.environ.update({**stack_environment(outputs), "STRATUS_STACK": name})
    get_settings.cache_clear()
    services.reset()
    return {"api_url": outputs["ApiUrl"], "stack": name}


def _progress_printer(console: Any, total: int) -> Any:
    last: dict[str, Any] = {"line": ""}

    def show(records: list[Any]) -> None:
        counts: dict[str, int] = {}
        for record in records:
            counts[record.status.value] = counts.get(record.status.value, 0) + 1
        chunks = sum(r.chunk_count for r in records if r.status.value == "INDEXED")
        line = (
            f"  {counts.get('INDEXED', 0)}/{total} indexed, {counts.get('FAILED', 0)} failed, "
            f"{chunks} chunks  ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})"
        )
        if line != last["line"]:
            console.print(line)
            last["line"] = line

    return show


def summary_rows(records: list[Any], max_rows: int = SUMMARY_MAX_ROWS) -> tuple[list[Any], int]:
    """The documents the summary table lists, and how many it leaves out.

    A small ingest lists every document by source; a large one lists the documents that did not end
    INDEXED (FAILED first), at most `max_rows`: the totals line accounts for the rest.
    """
    ordered = sorted(records, key=lambda r: r.source)
    if len(ordered) <= max_rows:
        return ordered, 0
    rank = {"FAILED": 0, "INDEXED": 2}
    pending = sorted(
        (r for r in ordered if r.status.value != "INDEXED"), key=lambda r: rank.get(r.status.value, 1)
    )
    return pending[:max_rows], len(ordered) - min(len(pending), max_rows)


def summary_totals(records: list[Any]) -> str:
    """One line: documents by status, chunks, and how many were encoded or reused."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    chunks = sum(r.chunk_count for r in records)
    encoded = sum(r.chunks_embedded for r in records)
    reused = sum(r.chunks_reused for r in records)
    return (
        f"{len(records)} document(s): {statuses or 'none'}; {chunks} chunks "
        f"({encoded} encoded, {reused} reused)"
    )


def _summary_table(console: Any, records: list[Any], collection: str, list_all: bool = False) -> None:
    from rich.table import Table

    rows, left_out = summary_rows(records, len(records) if list_all else SUMMARY_MAX_ROWS)
    if rows or not left_out:
        table = Table(title="Documents" if not left_out else "Documents not indexed")
        for column in ("source", "status", "chunks", "embedded", "reused", "error"):
            table.add_column(column)
        for r in rows:
            # Sources and reasons are the uploader's text: no terminal sequences, no Rich markup.
            table.add_row(
                text(r.source),
                r.status.value,
                str(r.chunk_count),
                str(r.chunks_embedded),
                str(r.chunks_reused),
                text(r.error or r.detail or ""),
            )
        console.print(table)
    if left_out:
        every = f"`stratus status -c {collection} --all`"
        console.print(line(f"({left_out} of {len(records)} not listed; ", every, " lists every one)"))
    console.print(summary_totals(records))


def _print_skipped(console: Any, skipped: list[Any]) -> None:
    """Every file `stratus ingest` leaves out, with why: nothing is dropped silently."""
    from rich.markup import escape

    if not skipped:
        return
    console.print(f"[yellow]skipped {len(skipped)} file(s) or folder(s):[/]")
    for item in skipped[:SUMMARY_MAX_ROWS]:
        console.print(f"  [yellow]skipped[/] {escape(str(item.path))}: {escape(item.reason)}")
    if len(skipped) > SUMMARY_MAX_ROWS:
        console.print(f"  … and {len(skipped) - SUMMARY_MAX_ROWS} more")


def _ingest(
    collection: str,
    paths: list[Path],
    base: Path | None,
    timeout_s: float,
    console: Any,
    mode: str = "streamed",
) -> list[Any]:
    """Ingest the files under `paths`; `mode`: streamed, bulk, or auto (bulk from a number of documents)."""
    from stratus import services
    from stratus.settings import get_settings
    from stratus.stores import aws
    from stratus_tools.uploads import (
        bulk_documents,
        manifest_doc_ids,
        plan_uploads,
        upload_files,
        wait_for_documents,
    )

    settings = get_settings()
    plan = plan_uploads(paths, base)
    _print_skipped(console, plan.skipped)
    uploads = plan.uploads
    if not uploads:
        console.print(f"[yellow]nothing to ingest under {', '.join(map(str, paths))}[/]")
        return []
    started = time.time()
    documents, streamed = bulk_documents(uploads)
    doc_ids: list[str] = []
    if mode == "bulk" or (mode == "auto" and len(documents) >= settings.bulk_min_documents):
        doc_ids = _bulk_ingest(collection, documents, timeout_s, console)
        uploads = streamed  # (manifests and lone sidecars: the streamed path's)
    if uploads:
        doc_ids += upload_files(aws.client("s3"), settings.bucket, settings.inbox_prefix, collection, uploads)
        console.print(
            f"uploaded {len(uploads)} file(s) to s3://{settings.bucket}/{settings.inbox_prefix}{collection}/"
        )
    # A manifest's own record (its per-line counts and refusals) and its URLs are reported too.
    doc_ids = list(dict.fromkeys(doc_ids + manifest_doc_ids(collection, uploads)))
    return wait_for_documents(
        services.document_table(),
        collection,
        doc_ids,
        timeout_s,
        _progress_printer(console, len(doc_ids)),
        since=started,
    )


def _bulk_ingest(collection: str, documents: list[Any], timeout_s: float, console: Any) -> list[str]:
    """Bulk ingestion of `documents` (stratus.pipeline.bulk); the doc ids it reports on."""
    import uuid

    from stratus.observability import keep_metrics_in_process
    from stratus.pipeline.bulk import build_bulk_ingest
    from stratus.settings import get_settings

    keep_metrics_in_process()
    size = get_settings().bulk_batch_documents
    console.print(f"bulk ingestion of {len(documents)} document(s), {size} to a batch")

    def show(report: Any) -> None:
        console.print(
            f"  {len(report.doc_ids)}/{len(documents)} read, {report.batches} batch(es) sent to index, "
            f"{report.encoded} chunks encoded, {report.reused} reused"
        )

    report = build_bulk_ingest().run(
        collection, documents, f"bulk-{uuid.uuid4().hex[:12]}", timeout_s, on_batch=show
    )
    spent = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in report.timings_s.items())
    console.print(
        f"  searchable after {report.searchable_s}s; {report.uploaded} file(s) put into the inbox, "
        f"done in {report.seconds}s ({spent})"
        + (f"; {len(report.unsettled)} not settled in time" if report.unsettled else "")
    )
    return list(report.doc_ids)


def cmd_up(args: argparse.Namespace) -> int:
    """Start the local stack, ingest the sample docs, serve the API until Ctrl-C."""
    from stratus.settings import get_settings
    from stratus_tools.local.stack import LocalStack

    console = _console()
    root = _repo_root()
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING" if not args.verbose else "INFO")
    settings = get_settings()
    started = time.perf_counter()
    console.print("[bold]Stratus local stack[/] — AWS emulator on 127.0.0.1, functions in-process")
    stack = LocalStack(
        root,
        bucket=settings.bucket,
        visibility_timeout_s=settings.local_visibility_timeout_s,
        poll_wait_s=settings.local_poll_wait_s,
        lancedb_uri=args.lancedb or settings.lancedb_uri,
        emulator=settings.local_emulator,
        pipeline_nice=settings.local_pipeline_nice,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stack.start()
    console.print(f"  emulator  {stack.endpoint_url}  (S3 bucket {settings.bucket}, SQS, DynamoDB)")
    console.print(
        f"  resources {len(stack.queue_urls)} queues, {len(stack.table_names)} tables, "
        f"{len(stack.pollers)} queue consumers — read from template.yaml"
    )
    state_path = Path(args.state_file) if args.state_file else root / STATE_FILE
    try:
        api_url = stack.serve_api(
            args.host or settings.api_host, args.port if args.port is not None else settings.api_port
        )
        console.print(f"  api       {api_url}  (OpenAPI at {api_url}/docs)")
        api_key = _local_admin_key(settings)
        console.print(
            f"  api key   {api_key}  (admin, every collection; also in {args.state_file or STATE_FILE})"
        )
        state_path.parent.mkdir(exist_ok=True)
        state_path.write_text(
            json.dumps({"api_url": api_url, "api_key": api_key, "environment": stack.environment}, indent=2)
        )
        state_path.chmod(0o600)
        if not args.no_ingest:
            sample = [p for p in (root / "README.md", root / "docs") if p.exists()]
            console.print(
                f"ingesting the sample collection [bold]{args.collection}[/] from README.md and docs/"
            )
            records = _ingest(args.collection, sample, root, args.timeout, console)
            _summary_table(console, records, args.collection)
            failed = [r for r in records if r.status.value != "INDEXED"]
            if failed:
                console.print(f"[red]{len(failed)} document(s) did not index[/]")
        import httpx

        httpx.post(
            f"{api_url}/v1/collections/{args.collection}/search",
            json={"query": "warm up"},
            headers={"x-api-key": api_key},
            timeout=60,
        )
        body = json.dumps({"query": SAMPLE_QUERY, "top_k": 3})
        console.print(f"\n[bold green]Stratus is ready[/] in {time.perf_counter() - started:.1f}s. Try:\n")
        print(
            f"  curl -s -X POST {api_url}/v1/collections/{args.collection}/search "
            f"-H 'x-api-key: {api_key}' -H 'Content-Type: application/json' -d '{body}'\n",
            flush=True,
        )
        # The key travels in the fragment, which the browser never sends to a server.
        print(f"  Console: {api_url}/ui/#key={api_key}\n", flush=True)
        console.print("Press Ctrl-C to stop.")
        if args.exit_when_ready:
            return 0
        while not stop.wait(0.5):
            pass
        console.print("stopping…")
        return 0
    finally:
        stack.stop()
        state_path.unlink(missing_ok=True)
        console.print("stopped.")


def _local_admin_key(settings: Any) -> str:
    """The local stack's admin key: STRATUS_API_KEY registered when set, else a new one."""
    from stratus import services
    from stratus.access.auth import ALL_COLLECTIONS, Role, create_key

    given = settings.api_key.get_secret_value() if settings.api_key is not None else None
    created = create_key(
        services.key_table(), "stratus up (local admin)", [ALL_COLLECTIONS], [Role.ADMIN.value], key=given
    )
    return created.key


def cmd_ingest(args: argparse.Namespace) -> int:
    """Upload files into a collection and wait until each is indexed or failed."""
    console = _console()
    target = _use_target(args)
    if target is None and not os.environ.get("STRATUS_BUCKET"):
        console.print(
            "[red]no local stack is running (run `make up`), and neither --stack, STRATUS_STACK "
            "nor STRATUS_BUCKET is set[/]"
        )
        return 2
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    # A deployed stack's functions do the work unless --bulk asks this machine to (docs/ingestion.md).
    mode = "streamed" if args.mode == "auto" and target is not None and "stack" in target else args.mode
    records = _ingest(args.collection, [Path(p) for p in args.paths], None, args.timeout, console, mode)
    _summary_table(console, records, args.collection)
    return 0 if records and all(r.status.value == "INDEXED" for r in records) else 1


def _api_url(args: argparse.Namespace) -> str:
    if args.api_url:
        return str(args.api_url)
    state = _use_target(args)
    if state:
        return str(state["api_url"])
    from stratus.settings import get_settings

    settings = get_settings()
    return f"http://{settings.api_host}:{settings.api_port}"


def _api_headers() -> dict[str, str]:
    """Headers of the CLI's API calls: the key from STRATUS_API_KEY, else the one `stratus up` printed."""
    from stratus.settings import get_settings

    settings = get_settings()
    if settings.api_key is not None:
        return {"x-api-key": settings.api_key.get_secret_value()}
    if settings.stack:
        return {}
    state = _use_local_stack_if_running()
    if state and state.get("api_key"):
        return {"x-api-key": str(state["api_key"])}
    return {}


def _print_hits(response: Any, as_json: bool, snippet: Callable[[dict[str, Any]], str]) -> int:
    """Print an API answer of hits (numbered, with score and `snippet`), its JSON, or its error."""
    console = _console()
    if response.status_code != 200:
        console.print(line((str(response.status_code), "red"), " ", response.text))
        return 1
    if as_json:
        print(json.dumps(response.json(), indent=2))
        return 0
    for i, hit in enumerate(response.json()["hits"], start=1):
        where = " > ".join(x for x in (hit["source"], hit["section"]) if x)
        console.print(line((f"{i}.", "bold"), " ", where, "  ", (f"score {hit['score']:.4f}", "dim")))
        console.print(line("   ", snippet(hit)))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Search a collection through the API and print the hits."""
    import httpx

    response = httpx.post(
        f"{_api_url(args)}/v1/collections/{args.collection}/search",
        json={"query": args.query, "top_k": args.top_k, "mode": args.mode},
        headers=_api_headers(),
        timeout=60,
    )
    return _print_hits(response, args.json, lambda hit: hit["text"][:300])


def cmd_similar(args: argparse.Namespace) -> int:
    """Print the documents most like one document (by doc id, or by its source path)."""
    import httpx

    from stratus.models import make_doc_id

    doc_id = (
        args.document
        if re.fullmatch(r"[0-9a-f]{32}", args.document)
        else make_doc_id(args.collection, args.document)
    )
    response = httpx.get(
        f"{_api_url(args)}/v1/collections/{args.collection}/documents/{doc_id}/similar",
        params={"top_k": args.top_k},
        headers=_api_headers(),
        timeout=60,
    )
    return _print_hits(response, args.json, lambda hit: hit["title"] or hit["text"][:200])


def cmd_ask(args: argparse.Namespace) -> int:
    """Ask a collection a question through the chat API; print the answer and its citations."""
    import httpx

    console = _console()
    body: dict[str, Any] = {"messages": [{"role": "user", "content": args.question}]}
    if args.provider:
        body["provider"] = args.provider
    response = httpx.post(
        f"{_api_url(args)}/v1/collections/{args.collection}/chat",
        json=body,
        headers=_api_headers(),
        timeout=args.timeout,
    )
    if response.status_code != 200:
        console.print(line((str(response.status_code), "red"), " ", response.text))
        return 1
    result = response.json()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(plain(result["answer"]))
    if result["citations"]:
        print()
    for citation in result["citations"]:
        where = " > ".join(x for x in (citation["source"], citation.get("section", "")) if x)
        page = f", page {citation['page']}" if citation.get("page") else ""
        print(plain(f"[{citation['n']}] {where}{page}"))
    console.print(text(f"answered by {result['provider']} {result.get('model', '')}", "dim"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the status of a collection's documents."""
    from stratus import services

    _use_target(args)
    records, cursor = services.document_table().list(args.collection, limit=1000)
    while cursor:
        more, cursor = services.document_table().list(args.collection, limit=1000, cursor=cursor)
        records.extend(more)
    _summary_table(_console(), records, args.collection, list_all=args.all)
    return 0


def cmd_collection(args: argparse.Namespace) -> int:
    """Show a collection's chunking settings, or change them (--chunking, --chunk-tokens, --overlap)."""
    from stratus import services
    from stratus.stores.collections import CollectionSettings

    _use_target(args)
    store = services.collection_settings()
    current = store.get(args.collection)
    if args.chunking or args.chunk_tokens is not None or args.overlap is not None:
        try:
            current = CollectionSettings(
                chunking=args.chunking or current.chunking,
                chunk_tokens=args.chunk_tokens if args.chunk_tokens is not None else current.chunk_tokens,
                chunk_overlap_tokens=args.overlap
                if args.overlap is not None
                else current.chunk_overlap_tokens,
            )
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        store.put(args.collection, current)
    print(json.dumps({"collection": args.collection, **current.to_public()}, indent=2))
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Rebuild a collection from its inbox into a new table with its settings; switch over atomically."""
    from stratus import services
    from stratus.stores.collections import CollectionSettings
    from stratus_tools.reindex import build_reindexer

    _use_target(args)
    if args.chunking:
        store = services.collection_settings()
        current = store.get(args.collection)
        store.put(
            args.collection,
            CollectionSettings(args.chunking, current.chunk_tokens, current.chunk_overlap_tokens),
        )

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = build_reindexer().reindex(args.collection, log=log, force=args.force)
    if args.json:
        print(json.dumps(report.to_public(), indent=2))
    else:
        console = _console()
        console.print(
            text(
                f"{report.collection}: {report.documents} document(s), {report.chunks} chunk(s) by "
                f"{report.chunking} into generation {report.new_generation} in {report.seconds}s; "
                + ("switched" if report.switched else "NOT switched (the old table still serves)")
                + ("; old table dropped" if report.dropped_old else "")
            )
        )
        for source, reason in report.skipped:
            console.print(text(f"  not rebuilt: {source}: {reason}"))
    return 0 if report.switched else 1


def cmd_migrate_tables(args: argparse.Namespace) -> int:
    """Move chunk tables of the first layout into one table per collection (idempotent)."""
    from stratus import services
    from stratus_tools.migration import migrate_legacy_tables

    _use_target(args)
    reports = migrate_legacy_tables(services.chunk_store(), args.collection or [], dry_run=args.dry_run)
    left = sum(r.unresolved for r in reports)
    if args.json:
        print(json.dumps([r.to_public() for r in reports], indent=2))
        return 1 if left else 0
    console = _console()
    if not reports:
        console.print("no tables of the first layout: nothing to migrate")
    verb = "would move" if args.dry_run else "moved"
    for r in reports:
        moved = ", ".join(f"{n} to {c}" for c, n in sorted(r.moved.items())) or "none"
        # Table and collection names come from the store's listing: printed as text, never as markup.
        console.print(
            text(
                f"{r.table}: {r.rows} rows; {verb} {moved}; {r.kept_newer} kept newer; "
                f"{r.unresolved} unresolved; {'dropped' if r.dropped else 'kept'}"
            )
        )
    if left:
        console.print(
            f"[yellow]{left} row(s) belong to no candidate collection and stay in the old table: "
            "name their collection with --collection and run again[/]"
        )
    return 1 if left else 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Print recent audit entries (administrative actions), newest first."""
    from stratus import services
    from stratus.access.audit import key_actor

    _use_target(args)
    actor = key_actor(args.key) if args.key else args.actor
    entries = services.audit_table().recent(args.days, args.limit, action=args.action, actor=actor)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"Audit log, last {args.days} day(s)")
    for column in ("time", "actor", "action", "target", "outcome", "detail"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            *(text(e.get(name) or "") for name in ("time", "actor", "action", "target", "outcome", "detail"))
        )
    console = _console()
    console.print(table)
    console.print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run a benchmark: its module in stratus_tools.benchmarks parses the rest of the arguments."""
    import importlib

    module = importlib.import_module(f"stratus_tools.benchmarks.{args.what}")
    result: int = module.main(args.rest)
    return result


def cmd_eval(args: argparse.Namespace) -> int:
    """Retrieval quality on a BEIR-layout folder (stratus_tools.evaluation parses the arguments)."""
    from stratus_tools.evaluation import main as evaluate

    return evaluate(args.rest)


def cmd_dlq(args: argparse.Namespace) -> int:
    """Dead-letter queue tools (stratus_tools.dlq parses the arguments)."""
    from stratus_tools.dlq import main as dlq

    _use_local_stack_if_running()
    return dlq(args.rest)


def cmd_doctor(args: argparse.Namespace) -> int:
    """The deploy check (stratus_tools.doctor parses the arguments)."""
    from stratus_tools.doctor import main as doctor

    return doctor(args.rest)


def cmd_keys(args: argparse.Namespace) -> int:
    """API keys in the keys table (stratus_tools.keys parses the arguments)."""
    from stratus_tools.keys import main as keys

    _use_target(args)  # STRATUS_STACK: the deployed stack's tables and usage plan; else `stratus up`'s
    return keys(args.rest)


def cmd_feedback(args: argparse.Namespace) -> int:
    """Feedback tools (stratus.console.feedback parses the arguments)."""
    from stratus.console.feedback import main as feedback

    _use_target(args)  # STRATUS_STACK: the deployed stack's tables; else `stratus up`'s
    return feedback(args.rest)


def cmd_worker(args: argparse.Namespace) -> int:
    """Consume a stage queue outside Lambda until SIGINT/SIGTERM."""
    from stratus.embedding.encoder import get_encoder
    from stratus.pipeline.worker import embed_worker, run_until_stopped

    console = _console()
    _use_local_stack_if_running()
    worker = embed_worker(wait_s=args.wait, batch_size=args.batch_size)
    console.print(f"embed worker on providers {get_encoder().providers}; Ctrl-C to stop")
    stats = run_until_stopped(worker, args.max_batches)
    console.print(f"stopped: {stats.batches} batches, {stats.succeeded} succeeded, {stats.failed} failed")
    return 0


def cmd_sources(args: argparse.Namespace) -> int:
    """Sources and syncs through the API (stratus_tools.sources_cli parses the arguments)."""
    from stratus_tools.sources_cli import main as sources

    return sources(args.rest, _api_url, _api_headers())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `stratus` command."""
    parser = argparse.ArgumentParser(prog="stratus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the local stack with the sample collection")
    up.add_argument("--host", default=None, help="API address (default STRATUS_API_HOST)")
    up.add_argument("--port", type=int, default=None, help="API port (default STRATUS_API_PORT, 8000)")
    up.add_argument("--collection", default="docs", help="name of the sample collection")
    up.add_argument("--no-ingest", action="store_true", help="start empty")
    up.add_argument("--lancedb", default=None, help="keep LanceDB in this local folder instead of the bucket")
    up.add_argument("--timeout", type=float, default=600, help="seconds to wait for the sample ingest")
    up.add_argument("--exit-when-ready", action="store_true", help="stop as soon as the stack is ready")
    up.add_argument("--verbose", action="store_true", help="show the functions' logs")
    up.add_argument(
        "--state-file", default=None, help=f"write the state here instead of {STATE_FILE} (benchmarks)"
    )
    up.set_defaults(func=cmd_up)

    ingest = sub.add_parser("ingest", help="upload files into a collection and wait for them")
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--collection", "-c", required=True)
    ingest.add_argument("--timeout", type=float, default=3600)
    ingest.add_argument("--stack", default=None, help=STACK_HELP)
    mode = ingest.add_mutually_exclusive_group()
    mode.add_argument(
        "--bulk",
        dest="mode",
        action="store_const",
        const="bulk",
        help="parse, chunk and encode here in large batches, index in large commits "
        "(default from STRATUS_BULK_MIN_DOCUMENTS documents)",
    )
    mode.add_argument(
        "--streamed",
        dest="mode",
        action="store_const",
        const="streamed",
        help="upload every file and let the pipeline's functions ingest each one",
    )
    ingest.set_defaults(func=cmd_ingest, mode="auto")

    search = sub.add_parser("search", help="search a collection")
    search.add_argument("query")
    search.add_argument("--collection", "-c", default="docs")
    search.add_argument("--top-k", "-k", type=int, default=5)
    search.add_argument("--mode", choices=["hybrid", "vector", "keyword"], default="hybrid")
    search.add_argument("--api-url", default=None)
    search.add_argument("--json", action="store_true")
    search.add_argument("--stack", default=None, help=STACK_HELP)
    search.set_defaults(func=cmd_search)

    similar = sub.add_parser("similar", help="documents most like one document (more like this)")
    similar.add_argument("document", help="the document's id, or its path in the collection (notes/a.md)")
    similar.add_argument("--collection", "-c", default="docs")
    similar.add_argument("--top-k", "-k", type=int, default=5)
    similar.add_argument("--api-url", default=None)
    similar.add_argument("--json", action="store_true")
    similar.add_argument("--stack", default=None, help=STACK_HELP)
    similar.set_defaults(func=cmd_similar)

    ask = sub.add_parser("ask", help="ask a collection a question (chat with citations)")
    ask.add_argument("question")
    ask.add_argument("--collection", "-c", default="docs")
    ask.add_argument("--provider", choices=["extractive", "local", "openai", "bedrock"], default=None)
    ask.add_argument("--timeout", type=float, default=120, help="seconds to wait for the answer")
    ask.add_argument("--api-url", default=None)
    ask.add_argument("--json", action="store_true")
    ask.add_argument("--stack", default=None, help=STACK_HELP)
    ask.set_defaults(func=cmd_ask)

    status = sub.add_parser("status", help="status of a collection's documents")
    status.add_argument("--collection", "-c", default="docs")
    status.add_argument(
        "--all",
        action="store_true",
        help=f"list every document (else those not INDEXED beyond {SUMMARY_MAX_ROWS})",
    )
    status.add_argument("--stack", default=None, help=STACK_HELP)
    status.set_defaults(func=cmd_status)

    collection = sub.add_parser(
        "collection", help="show or set a collection's chunking (token, heading, rows)"
    )
    collection.add_argument("collection")
    collection.add_argument("--chunking", choices=["token", "heading", "rows"], default=None)
    collection.add_argument("--chunk-tokens", type=int, default=None, help="chunk budget in encoder tokens")
    collection.add_argument("--overlap", type=int, default=None, help="token chunking's overlap")
    collection.add_argument("--stack", default=None, help=STACK_HELP)
    collection.set_defaults(func=cmd_collection)

    reindex = sub.add_parser(
        "reindex", help="rebuild a collection into a new table with its settings; switch atomically"
    )
    reindex.add_argument("collection")
    reindex.add_argument("--chunking", choices=["token", "heading", "rows"], default=None)
    reindex.add_argument(
        "--force", action="store_true", help="switch even if some indexed documents cannot be rebuilt"
    )
    reindex.add_argument("--json", action="store_true")
    reindex.add_argument("--stack", default=None, help=STACK_HELP)
    reindex.set_defaults(func=cmd_reindex)

    migrate = sub.add_parser(
        "migrate-tables", help="move chunk tables of the first layout to one table per collection"
    )
    migrate.add_argument(
        "--collection", "-c", action="append", help="also try this collection name for old rows (repeat)"
    )
    migrate.add_argument("--dry-run", action="store_true", help="report what would move; write nothing")
    migrate.add_argument("--json", action="store_true")
    migrate.add_argument("--stack", default=None, help=STACK_HELP)
    migrate.set_defaults(func=cmd_migrate_tables)

    audit = sub.add_parser("audit", help="recent administrative actions (keys, deletes, DLQ redrives)")
    audit.add_argument(
        "--action", default=None, help="key.create, key.revoke, document.delete, dlq.redrive, or key"
    )
    audit.add_argument("--key", default=None, help="only actions made with this key_id")
    audit.add_argument("--actor", default=None, help="only this actor (key:<key_id>, cli:<user>)")
    audit.add_argument("--days", type=int, default=7, help="how many UTC days back (default 7)")
    audit.add_argument("--limit", type=int, default=100, help="entries at most (default 100)")
    audit.add_argument("--json", action="store_true")
    audit.add_argument("--stack", default=None, help=STACK_HELP)
    audit.set_defaults(func=cmd_audit)

    worker = sub.add_parser("worker", help="consume a stage queue outside Lambda (the GPU embed worker)")
    worker.add_argument("stage", choices=["embed"])
    worker.add_argument("--wait", type=int, default=20, help="SQS long-poll seconds")
    worker.add_argument("--batch-size", type=int, default=10)
    worker.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    worker.set_defaults(func=cmd_worker)

    bench = sub.add_parser("bench", help="benchmarks: embed, query, ingest (each takes --help)")
    bench.add_argument("what", choices=["embed", "query", "ingest", "chat", "load", "peers"])
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark")
    bench.set_defaults(func=cmd_bench)

    evaluate = sub.add_parser("eval", help="retrieval quality on a BEIR-layout dataset (takes --help)")
    evaluate.add_argument("rest", nargs=argparse.REMAINDER, help="DATASET_DIR and options")
    evaluate.set_defaults(func=cmd_eval)

    dlq = sub.add_parser("dlq", help="inspect or redrive dead-letter queues (takes --help)")
    dlq.add_argument("rest", nargs=argparse.REMAINDER, help="redrive|list and options")
    dlq.set_defaults(func=cmd_dlq)

    doctor = sub.add_parser("doctor", help="check a deployed stack: configuration, grants, a probe (--help)")
    doctor.add_argument("rest", nargs=argparse.REMAINDER, help="--stack NAME and options")
    doctor.set_defaults(func=cmd_doctor)

    keys = sub.add_parser("keys", help="create, list or revoke API keys (takes --help)")
    keys.add_argument("rest", nargs=argparse.REMAINDER, help="create|list|revoke and options")
    keys.set_defaults(func=cmd_keys)

    sources = sub.add_parser(
        "sources", help="web and S3 sources kept in sync: add, list, sync (takes --help)"
    )
    sources.add_argument("rest", nargs=argparse.REMAINDER, help="add|list|sync and options")
    sources.set_defaults(func=cmd_sources)
    feedback = sub.add_parser("feedback", help="export feedback as a BEIR folder (takes --help)")
    feedback.add_argument("rest", nargs=argparse.REMAINDER, help="export COLLECTION --out DIR")
    feedback.set_defaults(func=cmd_feedback)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `stratus` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] in {"eval", "dlq", "bench", "keys", "doctor", "feedback", "sources"}:
        # These hand everything after their name (and the benchmark's) to their own parser, --help too.
        head = 2 if argv[0] == "bench" else 1
        args = parser.parse_args(argv[:head])
        args.rest = argv[head:]
    else:
        args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
