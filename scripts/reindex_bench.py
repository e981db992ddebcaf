"""Reindex a SciFact subset on the local stack (token -> heading chunks) with a query loop running.

Usage: .venv/bin/python scripts/reindex_bench.py [N documents, default 200]  (SCIFACT=folder)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("SCIFACT", "/work/shared/eval/scifact")) / "corpus.jsonl"


def main() -> None:
    """Ingest N SciFact abstracts, search them in a loop, reindex by heading, print the figures."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    os.environ.update(
        {
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "STRATUS_RATE_LIMIT_PER_S": "10000",
            "STRATUS_RATE_LIMIT_BURST": "10000",
            "STRATUS_REINDEX_DROP_AFTER_S": "5",
        }
    )
    import httpx

    from stratus import services
    from stratus.access.auth import create_key
    from stratus.stores.collections import CollectionSettings
    from stratus_tools.local.stack import LocalStack
    from stratus_tools.reindex import build_reindexer
    from stratus_tools.uploads import collect_uploads, upload_files, wait_for_documents

    folder = Path(tempfile.mkdtemp(prefix="scifact-subset-"))
    queries = []
    with CORPUS.open() as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            row = json.loads(line)
            (folder / f"{row['_id']}.md").write_text(f"# {row['title']}\n\n{row['text']}\n")
            queries.append(row["title"])
    stack = LocalStack(REPO, visibility_timeout_s=60, poll_wait_s=1, batch_window_cap_s=0.5)
    stack.start(run_functions=True)
    stack.serve_api(port=0)
    try:
        key = create_key(services.key_table(), "bench", ["*"], ["admin"]).key
        since, t0 = time.time(), time.perf_counter()
        s3 = stack.client("s3")
        ids = upload_files(s3, stack.plan.bucket, "inbox/", "scifact", collect_uploads([folder]))
        records = wait_for_documents(services.document_table(), "scifact", ids, 900, since=since)
        chunks = sum(r.chunk_count for r in records)
        print(f"ingested {len(records)} docs in {time.perf_counter() - t0:.1f}s, {chunks} chunks")
        stop = threading.Event()
        log: list[tuple[Any, bool, float]] = []

        def loop() -> None:
            with httpx.Client(timeout=30) as http:
                i = 0
                while not stop.is_set():
                    body = {"query": queries[i % len(queries)], "top_k": 5}
                    i += 1
                    t = time.perf_counter()
                    try:
                        r = http.post(
                            f"{stack.api_url}/v1/collections/scifact/search",
                            json=body,
                            headers={"x-api-key": key},
                        )
                        ok = r.status_code == 200 and bool(r.json()["hits"])
                        log.append((r.status_code, ok, time.perf_counter() - t))
                    except Exception as error:  # every failure is counted, none raised
                        log.append((repr(error), False, time.perf_counter() - t))

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        time.sleep(1)
        services.collection_settings().put("scifact", CollectionSettings(chunking="heading"))
        t1 = time.perf_counter()
        report = build_reindexer().reindex("scifact")
        stop.set()
        thread.join()
        latencies = sorted(entry[2] * 1000 for entry in log)
        errors = [entry for entry in log if entry[0] != 200 or not entry[1]]
        print(json.dumps({k: v for k, v in report.to_public().items() if k != "skipped"}))
        print(
            f"reindex wall {time.perf_counter() - t1:.1f}s; searches {len(log)}, errors or empty "
            f"{len(errors)}; p50 {latencies[len(latencies) // 2]:.0f} ms, "
            f"p95 {latencies[int(len(latencies) * 0.95)]:.0f} ms, max {latencies[-1]:.0f} ms"
        )
        names = services.chunk_store().table_names()
        print("tables:", [t for t in names if t.startswith("chunks-scifact")])
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
