#!/usr/bin/env python3
"""Cold start of each Lambda handler: Python init time, measured in fresh processes.

For each functions/<name>/app.py it starts a new interpreter N times (against the local emulator,
which this script starts) and measures what a cold Lambda pays before its first event is handled:
importing the handler module, then first use of what the handler needs (settings, boto3 clients,
the ONNX session, the LanceDB connection and table). Reports the median of N per handler and
phase; `--importtime NAME` also lists the slowest imports of one handler (python -X importtime).

    .venv/bin/python scripts/cold_start.py [--runs 5] [--json bench-out/cold-start.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
HANDLERS = ["fetch", "embed", "index", "api", "maintenance"]
TARGETS_S = {"api": 1.5, "embed": 1.0}

# Runs in the child: import the handler, then touch what its first event would initialise.
CHILD = r"""
import importlib, json, sys, time
name = sys.argv[1]
started = time.perf_counter()
if len(sys.argv) > 2 and sys.argv[2] == "baseline" and name in {"index", "api", "maintenance"}:
    # What `import lancedb` cost before stratus.stores.lance, for the handlers whose first use opens
    # LanceDB (fetch never imports it; embed only when it reuses the vectors of a changed document).
    import lance_namespace_urllib3_client
importlib.import_module(f"functions.{name}.app")
imported = time.perf_counter()
from stratus import services
from stratus.settings import get_settings
settings = get_settings()
if name == "fetch":
    services.blob_store(); services.document_table(); services.queue("embed"); services.chunk_tokenizer()
elif name == "embed":
    from stratus.embedding.encoder import get_encoder
    services.blob_store(); services.document_table(); services.queue("index")
    get_encoder().embed_documents(["warm up"])
elif name == "index":
    services.blob_store(); services.document_table(); services.chunk_store().open("coldstart")
elif name == "api":
    from stratus.embedding.encoder import get_encoder
    services.document_table(); services.key_verifier(); services.chunk_store().search_table("coldstart")
    get_encoder().embed_query("warm up")
elif name == "maintenance":
    services.chunk_store().collections()
done = time.perf_counter()
print(json.dumps({"import_s": imported - started, "first_use_s": done - imported, "init_s": done - started}))
"""


def write_sample_table() -> None:
    """A one-chunk collection `coldstart` in the emulated bucket, for the handlers to open."""
    from stratus import services
    from stratus.embedding.encoder import get_encoder
    from stratus.models import Chunk, ChunkBatch, make_chunk_id, make_doc_id
    from stratus.stores.schema import chunk_rows

    text = "Cold starts are measured against this chunk."
    doc_id = make_doc_id("coldstart", "sample.md")
    chunk = Chunk(chunk_id=make_chunk_id(doc_id, text, 0), position=0, text=text, token_count=8)
    batch = ChunkBatch(
        collection="coldstart", doc_id=doc_id, source="sample.md", content_sha256="0" * 64, chunks=[chunk]
    )
    rows = chunk_rows(batch, get_encoder().embed_documents([text]))
    services.chunk_store().write("coldstart", rows, {}, [], rows.schema.field("vector").type.list_size)


def measure(name: str, runs: int, environment: dict[str, str], baseline: bool = False) -> dict[str, Any]:
    """Median import, first-use and total init seconds of `runs` fresh processes of one handler."""
    samples: list[dict[str, float]] = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-c", CHILD, name, "baseline" if baseline else "cut"],
            cwd=REPO_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"{name}: the child failed\n{result.stderr[-3000:]}")
        samples.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return {
        phase: round(statistics.median(s[phase] for s in samples), 3)
        for phase in ("import_s", "first_use_s", "init_s")
    } | {"runs": runs}


def slowest_imports(name: str, environment: dict[str, str], top: int = 25) -> list[tuple[float, str]]:
    """(cumulative seconds, module) of the slowest imports of one handler module."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import functions.{name}.app"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, module = line.removeprefix("import time:").split("|")
            rows.append((int(cumulative) / 1e6, module.rstrip()))
    return sorted(rows, reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    """Measure every handler (or the ones named) and print a table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("handlers", nargs="*", default=HANDLERS, help=f"some of {', '.join(HANDLERS)}")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="measure without the cuts: load LanceDB's REST namespace client eagerly, as lancedb does alone",
    )
    parser.add_argument("--importtime", metavar="NAME", help="also list the slowest imports of this handler")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO_ROOT / "shared"))
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    from stratus_tools.local.stack import LocalStack

    stack = LocalStack(REPO_ROOT).start(run_functions=False)
    try:
        write_sample_table()
        environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        results = {name: measure(name, args.runs, environment, args.baseline) for name in args.handlers}
        imports = slowest_imports(args.importtime, environment) if args.importtime else []
    finally:
        stack.stop()
    print(f"{'handler':<12} {'import s':>9} {'first use s':>12} {'init s':>8}  target")
    for name, r in results.items():
        target = f"<= {TARGETS_S[name]} s" if name in TARGETS_S else ""
        print(f"{name:<12} {r['import_s']:>9.3f} {r['first_use_s']:>12.3f} {r['init_s']:>8.3f}  {target}")
    for seconds, module in imports:
        print(f"  {seconds:7.3f} s  {module}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": {"cpus": os.cpu_count()}, "handlers": results, "slowest_imports": imports}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
