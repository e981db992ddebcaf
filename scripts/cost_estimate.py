#!/usr/bin/env python3
"""Estimate the AWS cost of Stratus per 1,000 queries (search, chat) and per GB ingested.

Reads the JSON that `stratus bench query --json F`, `stratus bench chat --json F` and
`stratus bench ingest --json F` write, and applies the us-east-1 list prices in PRICES below
(free tiers ignored, LLM tokens not included). Every request count that a benchmark does not
measure is an explicit option with a stated default; the output lists each line item.

    python scripts/cost_estimate.py --query bench-out/query.json --ingest bench-out/ingest.json \
        [--chat bench-out/chat.json] [--entry rest|function-url|http] [--json bench-out/cost.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Public us-east-1 list prices, written down from memory on 2026-11-21: CHECK THEM against
# https://aws.amazon.com/{lambda,api-gateway,s3,sqs,dynamodb,cloudwatch}/pricing/ before relying on them.
PRICES_DATE = "2026-11-21"


@dataclass(frozen=True)
class Prices:
    """Unit prices in USD."""

    lambda_request: float = 0.20 / 1e6
    lambda_gb_second: float = 0.0000166667  # x86_64
    api_gateway_request: float = 3.50 / 1e6  # REST API, first 333 million a month
    http_api_request: float = 1.00 / 1e6  # HTTP API, first 300 million a month (not in template.yaml)
    function_url_request: float = 0.0  # a Lambda Function URL adds nothing to the invocation's price
    s3_put: float = 0.005 / 1000  # PUT, COPY, POST, LIST
    s3_get: float = 0.0004 / 1000
    s3_gb_month: float = 0.023
    sqs_request: float = 0.40 / 1e6  # standard queue, per 64 KB chunk of a request
    dynamodb_write: float = 0.625 / 1e6  # on-demand write request unit (1 KB)
    dynamodb_read: float = 0.125 / 1e6  # on-demand read request unit (4 KB, strongly consistent)
    logs_gb: float = 0.50  # CloudWatch Logs ingestion (the metrics ride in logs as EMF)


PRICES = Prices()
# Memory of the functions in template.yaml (MB).
MEMORY_MB = {"fetch": 3008, "embed": 3008, "index": 2048, "api": 2048, "stream": 2048}
# Where queries enter: the REST API (ApiFunction behind API Gateway) or StreamFunction's Function URL.
ENTRIES = {
    "rest": ("api_gateway_request", "api"),
    "http": ("http_api_request", "api"),
    "function-url": ("function_url_request", "stream"),
}


@dataclass(frozen=True)
class QueryAssumptions:
    """Per-query request counts the query benchmark does not measure."""

    s3_gets: float = 0.0  # objects read per query (the replica serves from /tmp; downloads follow commits)
    # The replica's freshness check is a LIST of _versions/ (billed at the PUT price), made on time,
    # not per query: about every read_consistency_s / 4 per table while queries come (stores/replica.py).
    freshness_lists_per_s: float = 2.0
    queries_per_s: float = 10.0  # the sustained query rate that spreads those LISTs
    dynamodb_reads: float = 1.0  # API key lookup (an upper bound: verified keys are cached for seconds)
    dynamodb_writes: float = 0.0  # 1-2 with STRATUS_RATE_LIMIT_BACKEND=dynamodb
    log_bytes: float = 1500.0  # request log line and EMF metrics
    overhead_ms: float = 5.0  # Mangum, FastAPI and auth around the measured search


@dataclass(frozen=True)
class IngestAssumptions:
    """Per-document request counts the ingest benchmark does not measure."""

    # The inbox upload; a small document's chunks and vectors travel in the SQS messages (they are
    # staged in S3, one PUT and one GET each, only above STRATUS_STAGE_INLINE_MAX_BYTES).
    s3_puts: float = 1.0
    s3_gets: float = 2.0  # fetch reads the inbox object and probes for its metadata sidecar
    lancedb_puts_per_batch: float = 12.0  # data, manifest, index files of one merge_insert
    documents_per_index_batch: float = 100.0  # IndexQueue BatchSize
    sqs_requests: float = 9.0  # fetch, embed, index: send + receive + delete each
    dynamodb_writes: float = 4.0  # status updates: received, fetched, embedded, indexed
    dynamodb_reads: float = 3.0
    index_ms: float = 50.0  # index time per document (batch time / batch documents)
    log_bytes: float = 3000.0


def lambda_cost(duration_ms: float, memory_mb: int, prices: Prices = PRICES) -> float:
    """One invocation's cost: the request plus GB-seconds (billed per millisecond)."""
    return (
        prices.lambda_request + (max(1.0, duration_ms) / 1000) * (memory_mb / 1024) * prices.lambda_gb_second
    )


def query_cost_per_1000(
    latency_ms: float,
    assumptions: QueryAssumptions = QueryAssumptions(),
    prices: Prices = PRICES,
    entry: str = "rest",
) -> dict[str, float]:
    """Line items (USD) of 1,000 API queries whose server-side time is `latency_ms`, entering by `entry`."""
    n = 1000
    price, function = ENTRIES[entry]
    items = {
        "api_gateway": n * getattr(prices, price),
        "lambda": n * lambda_cost(latency_ms + assumptions.overhead_ms, MEMORY_MB[function], prices),
        "s3": n
        * (
            assumptions.s3_gets * prices.s3_get
            + min(1.0, assumptions.freshness_lists_per_s / assumptions.queries_per_s) * prices.s3_put
        ),
        "dynamodb": n
        * (
            assumptions.dynamodb_reads * prices.dynamodb_read
            + assumptions.dynamodb_writes * prices.dynamodb_write
        ),
        "logs": n * assumptions.log_bytes / 1e9 * prices.logs_gb,
    }
    items["total"] = sum(items.values())
    return items


def ingest_cost_per_gb(
    mean_document_bytes: float,
    chunks_per_document: float,
    fetch_ms: float,
    embed_ms: float,
    assumptions: IngestAssumptions = IngestAssumptions(),
    prices: Prices = PRICES,
) -> dict[str, float]:
    """Line items (USD) of ingesting 1 GB of documents of `mean_document_bytes` each."""
    documents = 1e9 / mean_document_bytes
    lancedb_puts = assumptions.lancedb_puts_per_batch / assumptions.documents_per_index_batch
    # Three invocations per document at most; SQS batching makes it fewer, so this is an upper bound.
    lambda_per_document = (
        lambda_cost(fetch_ms, MEMORY_MB["fetch"], prices)
        + lambda_cost(embed_ms, MEMORY_MB["embed"], prices)
        + lambda_cost(assumptions.index_ms, MEMORY_MB["index"], prices)
    )
    items = {
        "documents": documents,
        "lambda": documents * lambda_per_document,
        "s3_requests": documents
        * ((assumptions.s3_puts + lancedb_puts) * prices.s3_put + assumptions.s3_gets * prices.s3_get),
        "sqs": documents * assumptions.sqs_requests * prices.sqs_request,
        "dynamodb": documents
        * (
            assumptions.dynamodb_writes * prices.dynamodb_write
            + assumptions.dynamodb_reads * prices.dynamodb_read
        ),
        "logs": documents * assumptions.log_bytes / 1e9 * prices.logs_gb,
        # 384 float32 + text + metadata per chunk, stored a month in LanceDB on S3 (plus the 1 GB itself)
        "s3_storage_month": (1.0 + documents * chunks_per_document * 2500 / 1e9) * prices.s3_gb_month,
    }
    items["total"] = sum(v for k, v in items.items() if k != "documents")
    return items


def query_latency_ms(report: dict[str, Any], store: str, mode: str) -> float:
    """Mean server-side latency of one store and mode of a `stratus bench query` report."""
    stores = report.get("stores") or {}
    if store not in stores or mode not in stores[store]:
        raise SystemExit(f"the query report has no stores.{store}.{mode} (has: {', '.join(stores)})")
    return float(stores[store][mode]["mean_ms"])


def ingest_profile(report: dict[str, Any], mean_document_bytes: float | None) -> dict[str, float]:
    """Per-document bytes, chunks, fetch and embed milliseconds of a `stratus bench ingest` report."""
    documents = int(report["indexed"]) or 1
    timings = report.get("stage_timings", {})

    def total_ms(*names: str) -> float:
        return sum(float(timings.get(name, {}).get("total_s", 0.0)) * 1000 for name in names)

    if mean_document_bytes is None:
        corpus = Path(str(report.get("corpus", "")))
        if not corpus.is_file():
            raise SystemExit("give --mean-document-bytes: the report's corpus file is not here to measure")
        mean_document_bytes = corpus.stat().st_size / max(1, int(report["documents"]))
    return {
        "mean_document_bytes": mean_document_bytes,
        "chunks_per_document": float(report["chunks"]) / documents,
        "fetch_ms": total_ms("parse", "chunk", "stage") / documents,
        "embed_ms": total_ms("embed", "stage_vectors") / documents,
    }


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write) the estimate."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--query", type=Path, help="JSON of `stratus bench query --json F`")
    parser.add_argument("--store", default="s3-replica", help="store of the query report (as deployed)")
    parser.add_argument("--mode", default="hybrid", choices=["hybrid", "vector", "keyword"])
    parser.add_argument("--chat", type=Path, help="JSON of `stratus bench chat --json F`")
    parser.add_argument("--ingest", type=Path, help="JSON of `stratus bench ingest --json F`")
    parser.add_argument("--mean-document-bytes", type=float, help="default: corpus size / documents")
    parser.add_argument(
        "--entry",
        default="rest",
        choices=sorted(ENTRIES),
        help="where queries enter: rest (API Gateway REST, ApiFunction), function-url (StreamFunction's "
        "Function URL), http (API Gateway HTTP API: a price for comparison, not in template.yaml)",
    )
    parser.add_argument("--json", type=Path, help="also write the estimate here")
    args = parser.parse_args(argv)
    if not (args.query or args.chat or args.ingest):
        parser.error("give at least one of --query, --chat, --ingest")
    estimate: dict[str, Any] = {
        "prices_date": PRICES_DATE,
        "region": "us-east-1",
        "prices": asdict(PRICES),
        "entry": args.entry,
    }
    if args.query:
        latency = query_latency_ms(json.loads(args.query.read_text()), args.store, args.mode)
        estimate["search_per_1000"] = query_cost_per_1000(latency, entry=args.entry)
        estimate["search_latency_ms"] = latency
    if args.chat:
        chat = json.loads(args.chat.read_text())
        latency = float(chat["latency"]["mean_ms"])
        estimate["chat_per_1000_without_llm"] = query_cost_per_1000(latency, entry=args.entry)
        estimate["chat_latency_ms"] = latency
    if args.ingest:
        profile = ingest_profile(json.loads(args.ingest.read_text()), args.mean_document_bytes)
        estimate["ingest_profile"] = profile
        estimate["ingest_per_gb"] = ingest_cost_per_gb(
            profile["mean_document_bytes"],
            profile["chunks_per_document"],
            profile["fetch_ms"],
            profile["embed_ms"],
        )
    for name, value in estimate.items():
        if isinstance(value, dict) and "total" in value:
            print(f"{name}: ${value['total']:.4f}")
            for item, cost in value.items():
                if item not in ("total", "documents"):
                    print(f"  {item:<18} ${cost:.4f}")
    print(f"(us-east-1 list prices as of {PRICES_DATE}, from memory: check them; free tiers ignored)")
    if args.json:
        args.json.write_text(json.dumps(estimate, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
