"""`stratus bench ingest`: ingest throughput of the SciFact corpus through the local stack.

Writes one Markdown file per abstract (`<_id>.md`, the title as H1), starts the local stack
(the emulator, pollers running the real handlers), uploads the files with `stratus_tools.uploads`,
and waits until every document is INDEXED or FAILED. It reports documents/min and chunks/s of
the whole pipeline, then encodes the exact texts the pipeline embedded (`fts_text` =
`embed_text(title, section, text)` of every indexed chunk) with the same encoder settings
outside the pipeline, and reports the ratio of the two chunk rates (target: >= 0.8).
Per-stage time comes from the documents table's `timings_ms`. `cpu_ratio` compares CPU seconds
instead (the encoder's alone over the pipeline's, emulator included): it depends much less on what
else the machine runs, and bounds the ratio whenever the pipeline is short of CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from stratus.settings import REPO_ROOT

DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "eval" / "scifact" / "corpus.jsonl"
TARGET_RATIO = 0.8


def write_corpus(corpus: Path, out: Path, limit: int | None) -> int:
    """One `<_id>.md` per abstract (title as H1, then the text); the number written."""
    count = 0
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            if limit is not None and count >= limit:
                break
            if not line.strip():
                continue
            record = json.loads(line)
            title = " ".join(str(record.get("title", "")).split())
            body = str(record.get("text", "")).strip()
            name = str(record["_id"]).replace("/", "_")
            (out / f"{name}.md").write_text(
                f"# {title}\n\n{body}\n" if title else f"{body}\n", encoding="utf-8"
            )
            count += 1
    return count


def _wait_all(
    collection: str,
    total: int,
    since: float,
    timeout_s: float,
    poll_s: float,
    queues_idle: Callable[[], bool] = lambda: True,
) -> list[Any]:
    """Wait until every document is settled; then read the records once.

    The settled count is a COUNT query, which moto answers by scanning the whole collection (~0.2 ms
    a document): it is asked only once `queues_idle()` says no stage has a message left, visible or
    in flight, so that waiting does not take the emulator's CPU from the pipeline.
    """
    from stratus import services
    from stratus.models import DocumentStatus

    table = services.document_table()
    terminal = {DocumentStatus.INDEXED, DocumentStatus.FAILED}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() <= deadline:
        if queues_idle() and table.count_settled(collection, terminal, since) >= total:
            break
        time.sleep(poll_s)
    records: list[Any] = []
    cursor: str | None = None
    while True:
        page, cursor = table.list(collection, 1000, cursor)
        records.extend(page)
        if not cursor:
            return records


def _stage_profile(records: list[Any]) -> dict[str, dict[str, float]]:
    """Sum, mean and median of every timings_ms entry over the documents."""
    names = sorted({name for r in records for name in r.timings_ms})
    profile = {}
    for name in names:
        values = [float(r.timings_ms[name]) for r in records if name in r.timings_ms]
        profile[name] = {
            "total_s": round(sum(values) / 1000, 2),
            "mean_ms": round(statistics.fmean(values), 2),
            "median_ms": round(statistics.median(values), 2),
        }
    return profile


def _indexed_texts(collection: str) -> list[str]:
    """The texts the encoder saw: `fts_text` of every indexed chunk (title > section, then text)."""
    from stratus import services

    table = services.chunk_store().open(collection)
    if table is None:
        return []
    table.checkout_latest()
    rows = table.search().select(["fts_text"]).limit(None).to_arrow()
    return [str(t) for t in rows.column("fts_text").to_pylist()]


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process, plus that of child process `pid` if given (Linux)."""
    total = time.process_time()
    if pid is not None:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def raw_encoder_rate(texts: list[str], repeats: int, batch_chunks: int) -> dict[str, Any]:
    """Chunks/s of the process-wide encoder over `texts` outside the pipeline (median of repeats).

    `batch_chunks` splits the texts the way the pipeline's embed batches do (0: one call over all).
    """
    from stratus.embedding.encoder import get_encoder

    encoder = get_encoder()
    encoder.embed_documents(texts[:8])  # session warm
    seconds = []
    cpu = []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        step = batch_chunks or len(texts)
        for start in range(0, len(texts), step):
            encoder.embed_documents(texts[start : start + step])
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    median = statistics.median(seconds)
    return {
        "chunks": len(texts),
        "seconds": [round(s, 2) for s in seconds],
        "median_s": round(median, 2),
        "cpu_s": round(statistics.median(cpu), 2),
        "chunks_per_s": round(len(texts) / median, 1) if median else 0.0,
        "batch_chunks": batch_chunks,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; the result dictionary."""
    from stratus import services
    from stratus.embedding.encoder import get_encoder
    from stratus.models import DocumentStatus
    from stratus.settings import get_settings
    from stratus_tools.local.stack import LocalStack
    from stratus_tools.uploads import collect_uploads, upload_files

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    with tempfile.TemporaryDirectory(prefix="stratus-bench-") as folder:
        docs_dir = Path(folder) / "scifact"
        docs_dir.mkdir()
        total = write_corpus(Path(args.corpus), docs_dir, args.limit)
        uploads = collect_uploads([docs_dir])
        stack = LocalStack(
            REPO_ROOT,
            bucket="stratus-bench",
            poll_wait_s=1,
            batch_window_cap_s=args.window_cap,
            lancedb_uri=args.lancedb,
            emulator=args.emulator or get_settings().local_emulator,
        )
        stack.start(run_functions=False)
        try:
            if args.embed_batch:
                stack.plan.event_sources[:] = [
                    replace(s, batch_size=args.embed_batch) if s.function == "EmbedFunction" else s
                    for s in stack.plan.event_sources
                ]
            # Warm the encoder and tokenizer first: the figure is steady-state throughput.
            warm_started = time.perf_counter()
            get_encoder().embed_documents(["warm up"])
            services.chunk_tokenizer()
            warm_s = time.perf_counter() - warm_started
            stack.start_functions()
            since = time.time()
            started, cpu_started = time.perf_counter(), cpu_seconds(stack.emulator_pid)
            emulator_cpu_started = cpu_seconds(stack.emulator_pid) - time.process_time()
            upload_files(stack.client("s3"), stack.plan.bucket, "inbox/", args.collection, uploads)
            upload_s = time.perf_counter() - started
            stage_queues = sorted({source.queue for source in stack.plan.event_sources})
            records = _wait_all(
                args.collection,
                total,
                since,
                args.timeout,
                args.poll,
                lambda: all(stack.queue_depth(queue) == 0 for queue in stage_queues),
            )
            elapsed = time.perf_counter() - started
            pipeline_cpu_s = cpu_seconds(stack.emulator_pid) - cpu_started
            emulator_cpu_s = cpu_seconds(stack.emulator_pid) - time.process_time() - emulator_cpu_started
            pollers = {
                p.function.logical_id: {"batches": p.invocations, "errors": p.errors} for p in stack.pollers
            }
            indexed = [r for r in records if r.status == DocumentStatus.INDEXED]
            failed = [r for r in records if r.status == DocumentStatus.FAILED]
            chunks = sum(r.chunk_count for r in indexed)
            texts = _indexed_texts(args.collection)
        finally:
            stack.stop()
    # The emulator and pollers are stopped: the encoder has the machine to itself now.
    raw = raw_encoder_rate(texts, args.repeats, 0)
    pipeline_rate = chunks / elapsed if elapsed else 0.0
    profile = _stage_profile(indexed)
    encode_s = profile.get("embed", {}).get("total_s", 0.0)
    return {
        "corpus": str(args.corpus),
        "documents": total,
        "indexed": len(indexed),
        "failed": len(failed),
        "failures": [{"source": r.source, "error": r.error} for r in failed[:5]],
        "chunks": chunks,
        "chunks_in_table": len(texts),
        "elapsed_s": round(elapsed, 2),
        "upload_s": round(upload_s, 2),
        "encoder_warmup_s": round(warm_s, 2),
        "documents_per_min": round(total / elapsed * 60, 1) if elapsed else 0.0,
        "pipeline_chunks_per_s": round(pipeline_rate, 1),
        "encoder_raw": raw,
        "ratio": round(pipeline_rate / raw["chunks_per_s"], 3) if raw["chunks_per_s"] else 0.0,
        "target_ratio": TARGET_RATIO,
        "encode_share_of_wall": round(encode_s / elapsed, 3) if elapsed else 0.0,
        # Load-independent: the CPU the encoder alone spends on these chunks over the pipeline's CPU.
        "pipeline_cpu_s": round(pipeline_cpu_s, 2),
        "cpu_ratio": round(raw["cpu_s"] / pipeline_cpu_s, 3) if pipeline_cpu_s else 0.0,
        # The emulator's own share (a child process only; 0 when it runs in this process).
        "emulator_cpu_s": round(emulator_cpu_s, 2),
        "stage_timings": profile,
        "pollers": pollers,
        "settings": {
            "embed_batch": args.embed_batch or "template",
            "window_cap_s": args.window_cap,
            "emulator": stack.emulator,
            "onnx_allow_spinning": get_settings().onnx_allow_spinning,
            "onnx_intra_op_threads": get_settings().onnx_intra_op_threads,
            "cpus": os.cpu_count(),
        },
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratus bench ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="BEIR corpus.jsonl (default: SciFact)")
    parser.add_argument("--limit", type=int, default=None, help="ingest only the first N abstracts")
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the pipeline")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status polls")
    parser.add_argument("--repeats", type=int, default=3, help="raw encoder runs (median)")
    parser.add_argument(
        "--embed-batch", type=int, default=0, help="local only: embed poller batch size (0: the template's)"
    )
    parser.add_argument(
        "--window-cap", type=float, default=1.0, help="local only: cap of the pollers' batching windows"
    )
    parser.add_argument(
        "--lancedb", default=None, help="a local LanceDB folder instead of the emulated bucket"
    )
    parser.add_argument(
        "--emulator",
        choices=("process", "thread"),
        default=None,
        help="run the AWS emulator in a child process or in a thread (default STRATUS_LOCAL_EMULATOR)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `stratus bench ingest`."""
    args = _parser().parse_args(argv)
    if not Path(args.corpus).exists():
        raise SystemExit(f"corpus not found: {args.corpus}")
    # Powertools prints buffered EMF metrics to stdout even when disabled: keep stdout for the result.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    raw = result["encoder_raw"]
    print(
        f"{result['indexed']}/{result['documents']} documents indexed ({result['failed']} failed), "
        f"{result['chunks']} chunks in {result['elapsed_s']} s\n"
        f"  pipeline: {result['documents_per_min']} documents/min, "
        f"{result['pipeline_chunks_per_s']} chunks/s\n"
        f"  encoder alone on the same {raw['chunks']} chunks: {raw['chunks_per_s']} chunks/s\n"
        f"  ratio {result['ratio']} (target >= {TARGET_RATIO})"
    )
    for name, values in result["stage_timings"].items():
        print(f"  {name:>14}: total {values['total_s']} s, median {values['median_ms']} ms/document")
    return 0
