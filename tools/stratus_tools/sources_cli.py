"""`stratus sources`: add web or S3 sources, list them, and sync one with a progress bar."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from stratus.sources.models import COUNT_NAMES


def build_parser() -> argparse.ArgumentParser:
    """The parser of `stratus sources ...`."""
    parser = argparse.ArgumentParser(prog="stratus sources", description=__doc__)
    parser.add_argument("--api-url", default=None, help="API base URL (default: the running local stack)")
    parser.add_argument("--stack", default=None, help="a deployed stack's name (STRATUS_STACK)")
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="add a source")
    kinds = add.add_subparsers(dest="kind", required=True)
    web = kinds.add_parser("web", help="a web site: start URLs, sitemaps, scope")
    web.add_argument("urls", nargs="*", metavar="URL", help="start URLs")
    web.add_argument("-c", "--collection", required=True)
    web.add_argument("--sitemap", action="append", default=[], help="a sitemap URL (repeatable)")
    web.add_argument("--include", action="append", default=[], help="URL glob to include (repeatable)")
    web.add_argument("--exclude", action="append", default=[], help="URL glob to exclude (repeatable)")
    web.add_argument("--max-pages", type=int, default=1000)
    web.add_argument("--max-depth", type=int, default=5)
    web.add_argument("--schedule", default=None, help="rate(1 day) or cron(0 3 * * ? *)")
    s3 = kinds.add_parser("s3", help="a prefix of the collection's inbox")
    s3.add_argument("prefix", metavar="PREFIX")
    s3.add_argument("-c", "--collection", required=True)
    s3.add_argument("--schedule", default=None)
    listing = sub.add_parser("list", help="list a collection's sources")
    listing.add_argument("-c", "--collection", required=True)
    sync = sub.add_parser("sync", help="sync a source and wait: progress, then the counts")
    sync.add_argument("source_id", metavar="SOURCE_ID")
    sync.add_argument("-c", "--collection", required=True)
    sync.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the sync")
    return parser


def main(argv: list[str], api_url: Callable[[argparse.Namespace], str], headers: dict[str, str]) -> int:
    """Run `stratus sources` with `argv`; `api_url` resolves the API from the parsed options."""
    import httpx
    from rich.console import Console

    console = Console()
    args = build_parser().parse_args(argv)
    base = f"{api_url(args)}/v1/collections/{args.collection}/sources"
    if args.action == "add":
        body: dict[str, Any]
        if args.kind == "web":
            body = {
                "kind": "web",
                "urls": args.urls,
                "sitemaps": args.sitemap,
                "include": args.include,
                "exclude": args.exclude,
                "max_depth": args.max_depth,
                "max_pages": args.max_pages,
                "schedule": args.schedule,
            }
        else:
            body = {"kind": "s3", "prefix": args.prefix, "schedule": args.schedule}
        response = httpx.post(base, json=body, headers=headers, timeout=30)
        if response.status_code != 201:
            console.print(f"[red]{response.status_code}[/] {response.text}")
            return 1
        print(response.json()["source_id"])
        return 0
    if args.action == "list":
        response = httpx.get(base, headers=headers, timeout=30)
        if response.status_code != 200:
            console.print(f"[red]{response.status_code}[/] {response.text}")
            return 1
        _sources_table(console, response.json()["sources"])
        return 0
    return _sync(console, base, args.source_id, headers, args.timeout)


def _sources_table(console: Any, sources: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table("source_id", "kind", "where", "schedule", "running sync")
    for source in sources:
        where = (
            ", ".join(source.get("urls", []) + source.get("sitemaps", []))
            if source["kind"] == "web"
            else (source.get("prefix", ""))
        )
        table.add_row(
            source["source_id"],
            source["kind"],
            where,
            source.get("schedule") or "",
            source.get("active_sync") or "",
        )
    console.print(table)


def _sync(console: Any, base: str, source_id: str, headers: dict[str, str], timeout_s: float) -> int:
    import httpx
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    started = httpx.post(f"{base}/{source_id}/syncs", headers=headers, timeout=30)
    if started.status_code != 202:
        console.print(f"[red]{started.status_code}[/] {started.text}")
        return 1
    sync_id = started.json()["sync_id"]
    view: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task(f"sync {sync_id}", total=None)
        while time.monotonic() < deadline:
            response = httpx.get(f"{base}/{source_id}/syncs/{sync_id}", headers=headers, timeout=30)
            if response.status_code == 200:
                view = response.json()
                counts = view["counts"]
                done = sum(counts[n] for n in COUNT_NAMES if n != "discovered")
                bar.update(task, description=f"sync {sync_id}: {done}/{counts['discovered']} URLs done")
                if view["state"] != "RUNNING":
                    break
            time.sleep(1.0)
    if not view or view.get("state") == "RUNNING":
        console.print(f"[yellow]sync {sync_id} still running after {timeout_s:.0f}s[/]")
        return 1
    table = Table(*COUNT_NAMES, title=f"sync {sync_id}: {view['state']}")
    table.add_row(*(str(view["counts"][n]) for n in COUNT_NAMES))
    console.print(table)
    if view.get("skipped_by"):
        console.print("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(view["skipped_by"].items())))
    for failure in view.get("failures", [])[:20]:
        console.print(f"[red]failed[/] {failure['url']}: {failure['reason']}")
    if view.get("error"):
        console.print(f"[red]{view['error']}[/]")
    if view["state"] == "FAILED":
        print(json.dumps({"sync_id": sync_id, "state": "FAILED", "error": view.get("error")}))
        return 1
    return 0
