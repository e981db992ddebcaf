"""`stratus bench chat`: chat latency over HTTP on the local stack, 50 questions about Stratus.

Starts a LocalStack (emulator, pollers running the real handlers), ingests README.md and docs/ into
the collection `docs` as `stratus up` does (`stratus_tools.uploads`), serves the API on 127.0.0.1 and asks
the questions below one at a time through POST /v1/collections/docs/chat (provider: extractive by
default, so no LLM is needed). Reports client-side p50/p95/p99, the server's own retrieve/generate
times, and how many answers cited a source or said that nothing relevant was found.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from stratus.settings import REPO_ROOT
from stratus_tools.benchmarks import summarise

QUESTIONS = [
    "How do I start the local stack?",
    "What does make test run?",
    "Which Python version does Stratus need?",
    "How are documents chunked?",
    "What embedding model does Stratus use?",
    "How is the ONNX model built without a model hub?",
    "Where are the chunks stored?",
    "What happens when a document is uploaded twice unchanged?",
    "What is a claim check message between stages?",
    "Why does the fetch stage write gzip JSON instead of Parquet?",
    "What does the documents table record?",
    "Which statuses can a document have?",
    "What happens to a message after too many receives?",
    "How does the index function avoid concurrent writers?",
    "How does hybrid search fuse vector and keyword results?",
    "What is reciprocal rank fusion?",
    "How do I search a collection from the command line?",
    "How do I ingest a folder of notes?",
    "Which file types can be ingested?",
    "How are URLs in a manifest protected against SSRF?",
    "What is a metadata sidecar file?",
    "What does the API return for an unknown collection?",
    "What does a 422 response contain?",
    "How is the API deployed on AWS?",
    "Which functions are container images?",
    "Why are the embed, index and api functions container images?",
    "What does the maintenance function do?",
    "How long are staging files kept?",
    "Which alarms does the template define?",
    "How are API keys and usage plans configured?",
    "What is the visibility timeout of the fetch queue?",
    "How does the local stack emulate S3, SQS and DynamoDB?",
    "What does the embed stage reuse from unchanged chunks?",
    "How are tiktoken encodings made available offline?",
    "What settings control chunk size and overlap?",
    "How do I change the log level?",
    "What is STRATUS_SEARCH_CANDIDATES?",
    "How can I run only the unit tests?",
    "What does the e2e test suite start?",
    "How do I run the embedding benchmark?",
    "What throughput does the int8 encoder reach?",
    "How is the fetch function packaged?",
    "What does the health ready endpoint check?",
    "How are permanent faults handled?",
    "What happens with one bad record in an SQS batch?",
    "Where does LanceDB live on S3?",
    "How does the chat router fall back between providers?",
    "What does the extractive provider do?",
    "How does streaming work behind API Gateway?",
    "How are citations numbered in chat answers?",
]


def log(message: str) -> None:
    """Progress to stderr."""
    print(message, file=sys.stderr, flush=True)


def ask_all(
    api: str, api_key: str, collection: str, questions: list[str], provider: str | None, top_k: int
) -> dict[str, Any]:
    """Ask every question once (after one warm-up); latencies and answer statistics."""
    import httpx

    url = f"{api}/v1/collections/{collection}/chat"

    def body(question: str) -> dict[str, Any]:
        payload: dict[str, Any] = {"messages": [{"role": "user", "content": question}], "top_k": top_k}
        if provider:
            payload["provider"] = provider
        return payload

    with httpx.Client(timeout=120, headers={"x-api-key": api_key}) as client:
        client.post(url, json=body("warm up: what is Stratus?")).raise_for_status()
        latencies: list[float] = []
        retrieve: list[float] = []
        generate: list[float] = []
        examples: list[dict[str, Any]] = []
        cited = refused = 0
        providers: dict[str, int] = {}
        for question in questions:
            started = time.perf_counter()
            response = client.post(url, json=body(question))
            latencies.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            answer = response.json()
            retrieve.append(float(answer["timings"].get("retrieve_ms", 0.0)))
            generate.append(float(answer["timings"].get("generate_ms", 0.0)))
            cited += bool(answer["citations"])
            refused += bool(answer["refused"])
            providers[answer["provider"]] = providers.get(answer["provider"], 0) + 1
            if len(examples) < 3:
                examples.append(
                    {
                        "question": question,
                        "answer": answer["answer"][:400],
                        "citations": [c["source"] for c in answer["citations"]],
                    }
                )
    return {
        "latency": summarise(latencies),
        "server_retrieve": summarise(retrieve),
        "server_generate": summarise(generate),
        "answers_with_citations": cited,
        "refused": refused,
        "providers": providers,
        "examples": examples,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the stack, ingest, serve, ask; the result dictionary."""
    from stratus import services
    from stratus_tools.local.stack import LocalStack
    from stratus_tools.uploads import collect_uploads, upload_files, wait_for_documents

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    root = Path(args.root)
    stack = LocalStack(root, bucket="stratus-bench-chat", poll_wait_s=1, batch_window_cap_s=0.5)
    stack.start(run_functions=True)
    try:
        started = time.perf_counter()
        sample = [p for p in (root / "README.md", root / "docs") if p.exists()]
        uploads = collect_uploads(sample, root)
        since = time.time()
        doc_ids = upload_files(stack.client("s3"), stack.plan.bucket, "inbox/", args.collection, uploads)
        records = wait_for_documents(
            services.document_table(), args.collection, doc_ids, args.timeout, since=since
        )
        indexed = sum(1 for r in records if r.status.value == "INDEXED")
        ingest_s = time.perf_counter() - started
        log(f"ingested {indexed}/{len(doc_ids)} documents in {ingest_s:.1f}s")
        from stratus_tools.benchmarks import create_admin_key

        api = stack.serve_api(port=0)
        key = create_admin_key("bench-chat")
        questions = (QUESTIONS * (args.questions // len(QUESTIONS) + 1))[: args.questions]
        result = ask_all(api, key, args.collection, questions, args.provider or None, args.top_k)
    finally:
        stack.stop()
    return {
        "collection": args.collection,
        "documents_indexed": indexed,
        "ingest_s": round(ingest_s, 1),
        "questions": len(questions),
        "provider": args.provider or "router default",
        "top_k": args.top_k,
        "cpus": os.cpu_count(),
        **result,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratus bench chat", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO_ROOT), help="folder holding README.md and docs/")
    parser.add_argument("--collection", default="docs")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="how many questions to ask")
    parser.add_argument(
        "--provider", default="extractive", help="provider of every request ('' lets the router decide)"
    )
    parser.add_argument("--top-k", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the ingest")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `stratus bench chat`."""
    args = _parser().parse_args(argv)
    # Powertools prints buffered EMF metrics to stdout even when disabled: keep stdout for the result.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    latency = result["latency"]
    print(
        f"{result['questions']} questions over '{result['collection']}' "
        f"({result['documents_indexed']} documents), "
        f"provider {result['provider']}, top_k {result['top_k']}, {result['cpus']} CPUs\n"
        f"  latency p50 {latency['p50_ms']} ms, p95 {latency['p95_ms']} ms, p99 {latency['p99_ms']} ms, "
        f"mean {latency['mean_ms']} ms\n"
        f"  server: retrieve p50 {result['server_retrieve']['p50_ms']} ms, "
        f"generate p50 {result['server_generate']['p50_ms']} ms\n"
        f"  answers citing a source {result['answers_with_citations']}/{result['questions']}, "
        f"refused {result['refused']}"
    )
    return 0
