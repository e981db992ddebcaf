"""Crawl benchmark on the local stack: a generated site of N pages on 127.0.0.1, a first sync and an
unchanged re-sync. Reports pages/min, requests/s the site saw against the configured politeness,
requests made and documents re-encoded by the re-sync, and (--memory) each stage's peak Python heap.

    .venv/bin/python scripts/crawl_bench.py --pages 2000 --rate 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

WORDS = [
    "river",
    "stone",
    "cloud",
    "lantern",
    "harbor",
    "meadow",
    "copper",
    "violet",
    "signal",
    "orbit",
    "canyon",
    "ember",
    "willow",
    "glacier",
    "beacon",
    "prism",
    "falcon",
    "tundra",
    "quartz",
    "delta",
    "harbor",
    "mosaic",
    "pillar",
    "summit",
]


def build_site(pages: int) -> Any:
    from fakes.site import Site, page, sitemap

    rng = random.Random(1)
    site = Site().start()
    for i in range(pages):
        links = ["/p/"] + [f"/p/{j}" for j in range(i + 1, min(pages, i + 6))]
        text = "".join(
            f"<p>Page {i} paragraph {k}: " + " ".join(rng.choice(WORDS) for _ in range(60)) + ".</p>"
            for k in range(4)
        )
        site.pages[f"/p/{i}"] = ("text/html", page(f"Page {i}", text, links))
    site.pages["/p"] = (
        "text/html",
        page("Index", "<p>The generated site.</p>", [f"/p/{j}" for j in range(50)]),
    )
    site.pages["/robots.txt"] = (
        "text/plain",
        f"User-agent: *\nAllow: /\nSitemap: {site.url}/sitemap.xml\n".encode(),
    )
    site.pages["/sitemap.xml"] = ("application/xml", sitemap([f"{site.url}/p/{i}" for i in range(pages)]))
    return site


def rates(site: Any, since: float) -> dict[str, float]:
    """Requests the site saw after `since`: total, mean and peak per 1-second window."""
    times = [hit.at for hit in site.log if hit.at >= since]
    if not times:
        return {"requests": 0, "mean_per_s": 0.0, "peak_per_s": 0}
    per_second = Counter(int(t) for t in times)
    span = max(times) - min(times) or 1.0
    return {
        "requests": len(times),
        "mean_per_s": round(len(times) / span, 2),
        "peak_per_s": max(per_second.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=20.0, help="STRATUS_SOURCE_REQUESTS_PER_S")
    parser.add_argument("--memory", action="store_true", help="serialise stages, trace each one's peak heap")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--emulator", choices=["thread", "process"], default="process")
    args = parser.parse_args()

    import httpx

    from stratus import services
    from stratus.access.auth import create_key
    from stratus.models import DocumentStatus
    from stratus.observability import MetricName, capture_metrics
    from stratus_tools.local.stack import LocalStack

    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    site = build_site(args.pages)
    stack = LocalStack(
        REPO,
        visibility_timeout_s=120,
        poll_wait_s=1,
        batch_window_cap_s=0.5,
        emulator=args.emulator,
        extra_environment={
            "STRATUS_URL_ALLOW_HOSTS": site.host,
            "STRATUS_SOURCE_REQUESTS_PER_S": str(args.rate),
            "STRATUS_SOURCES_TICK_S": "3600",
            "STRATUS_LOG_LEVEL": "WARNING",
        },
    )
    stack.start(run_functions=False)
    peaks: dict[str, int] = {}
    if args.memory:
        tracemalloc.start()
        lock = threading.Lock()
    stack.start_functions()
    for poller in stack.pollers:
        if args.memory:
            inner, name = poller.handler, poller.function.logical_id

            def measured(event: Any, context: Any, inner: Any = inner, name: str = name) -> Any:
                with lock:
                    tracemalloc.reset_peak()
                    try:
                        return inner(event, context)
                    finally:
                        peaks[name] = max(peaks.get(name, 0), tracemalloc.get_traced_memory()[1])

            poller.handler = measured
    api = stack.serve_api(port=0)
    headers = {"x-api-key": create_key(services.key_table(), "bench", ["*"], ["admin"]).key}
    base = f"{api}/v1/collections/crawl/sources"
    source_id = httpx.post(
        base,
        json={"kind": "web", "urls": [f"{site.url}/p/"], "max_pages": args.pages + 100, "max_depth": 100},
        headers=headers,
    ).json()["source_id"]
    results: dict[str, Any] = {"pages": args.pages, "configured_requests_per_s": args.rate}

    def sync(label: str) -> None:
        started = time.time()
        with capture_metrics() as captured:
            sync_id = httpx.post(f"{base}/{source_id}/syncs", headers=headers).json()["sync_id"]
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                view = httpx.get(f"{base}/{source_id}/syncs/{sync_id}", headers=headers).json()
                if view["state"] != "RUNNING":
                    break
                time.sleep(1)
            synced = time.time()
            # then until the pipeline has indexed what the sync fetched
            while time.monotonic() < deadline:
                busy = [
                    r
                    for r in services.document_table().list("crawl", 1000)[0]
                    if r.status in (DocumentStatus.QUEUED, DocumentStatus.FETCHED, DocumentStatus.EMBEDDED)
                ]
                if not busy and stack.queue_depth("EmbedQueue") == 0 and stack.queue_depth("IndexQueue") == 0:
                    break
                time.sleep(1)
            indexed = time.time()
        totals: Counter[str] = Counter()
        for name, value, _unit in captured:
            totals[str(name)] += int(value)
        seen = rates(site, started)
        results[label] = {
            "state": view["state"],
            "counts": view["counts"],
            "sync_s": round(synced - started, 1),
            "to_indexed_s": round(indexed - started, 1),
            "pages_per_min": round(
                60
                * (sum(view["counts"][k] for k in ("added", "updated", "unchanged")))
                / max(0.1, synced - started),
                1,
            ),
            "site_requests": seen["requests"],
            "site_mean_requests_per_s": seen["mean_per_s"],
            "site_peak_requests_in_1s": seen["peak_per_s"],
            "pages_304": int(totals[MetricName.PAGES_NOT_MODIFIED.value]),
            "documents_fetched_for_encoding": int(totals[MetricName.DOCUMENTS_FETCHED.value]),
            "chunks_embedded": int(totals[MetricName.CHUNKS_EMBEDDED.value]),
        }
        print(label, json.dumps(results[label]), flush=True)

    try:
        sync("first_sync")
        sync("unchanged_resync")
        if args.memory:
            results["peak_python_heap_mb_per_stage"] = {
                k: round(v / 2**20, 1) for k, v in sorted(peaks.items())
            }
        results["process_max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    finally:
        stack.stop()
        site.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
