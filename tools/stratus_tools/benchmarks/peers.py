"""`stratus bench peers`: Stratus ingestion (bulk and streamed) beside a LlamaIndex script, same documents.

One run, one machine, the same files: one `<_id>.md` per SciFact abstract (`# title`, then the text).

- LlamaIndex, in its own interpreter (`--python`, a virtual environment with llama-index-core,
  llama-index-embeddings-huggingface, llama-index-vector-stores-lancedb and torch; never a
  dependency of Stratus): `IngestionPipeline([SentenceSplitter(chunk_size=200),
  HuggingFaceEmbedding(all-MiniLM-L6-v2)], vector_store=LanceDBVectorStore(local folder))`, the
  script a LlamaIndex user writes. Timed around `pipeline.run` and as the whole script.
- Stratus bulk: `stratus ingest FOLDER -c C --bulk` as a separate process against the local stack
  (emulator in a child process, the functions' queue consumers in this one): the whole command,
  interpreter start and model load included, until every document is INDEXED and its file is in
  the inbox.
- Stratus streamed: the same files put into the inbox, each through fetch, embed and index as
  functions (the encoder warmed first), until every document is INDEXED.

docs/min and chunks/s of each, side by side, and the ratios to LlamaIndex.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stratus.settings import REPO_ROOT
from stratus_tools.benchmarks.embed import DEFAULT_ST_MODEL
from stratus_tools.benchmarks.ingest import DEFAULT_CORPUS, write_corpus

# Runs in the LlamaIndex interpreter; prints one JSON line.
_LLAMAINDEX_SCRIPT = r"""
import json, sys, time
started = time.perf_counter()
docs_dir, model_dir, store_dir = sys.argv[1], sys.argv[2], sys.argv[3]
from pathlib import Path
from importlib.metadata import version
import torch
from llama_index.core import Document
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.vector_stores.lancedb import LanceDBVectorStore
files = sorted(Path(docs_dir).glob("*.md"))
documents = [Document(text=f.read_text(encoding="utf-8")) for f in files]
embed = HuggingFaceEmbedding(model_name=model_dir, device="cpu")
store = LanceDBVectorStore(uri=store_dir, table_name="scifact")
loaded = time.perf_counter()
splitter = SentenceSplitter(chunk_size=200, chunk_overlap=20)
pipeline = IngestionPipeline(transformations=[splitter, embed], vector_store=store)
nodes = pipeline.run(documents=documents)
done = time.perf_counter()
print(json.dumps({
    "documents": len(documents), "chunks": len(nodes), "rows_in_store": store.table.count_rows(),
    "load_s": loaded - started, "ingest_s": done - loaded, "script_s": done - started,
    "versions": {p: version(p) for p in (
        "llama-index-core", "llama-index-embeddings-huggingface", "llama-index-vector-stores-lancedb",
        "sentence-transformers", "lancedb")}
        | {"torch": torch.__version__, "torch_threads": torch.get_num_threads()},
}), flush=True)
"""


def log(message: str) -> None:
    """Progress on stderr (stdout is the result)."""
    print(message, file=sys.stderr, flush=True)


def run_llamaindex(python: str, docs_dir: Path, model_dir: Path, timeout_s: float) -> dict[str, Any]:
    """The LlamaIndex script over `docs_dir` in interpreter `python`; its JSON line plus the process wall."""
    with tempfile.TemporaryDirectory(prefix="llamaindex-") as store:
        started = time.perf_counter()
        done = subprocess.run(  # noqa: S603 - the interpreter the user named
            [python, "-c", _LLAMAINDEX_SCRIPT, str(docs_dir), str(model_dir), store],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the LlamaIndex script failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = round(wall, 2)
    return result


def _settled(collection: str, doc_ids: list[str]) -> list[Any]:
    from stratus import services

    records = services.document_table().get_many(collection, doc_ids)
    return [records[d] for d in doc_ids if d in records]


def _summary(name: str, records: list[Any], seconds: float, documents: int) -> dict[str, Any]:
    indexed = [r for r in records if r.status.value == "INDEXED"]
    chunks = sum(r.chunk_count for r in indexed)
    return {
        "system": name,
        "documents": documents,
        "indexed": len(indexed),
        "failed": sum(r.status.value == "FAILED" for r in records),
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "documents_per_min": round(documents / seconds * 60, 1) if seconds else 0.0,
        "chunks_per_s": round(chunks / seconds, 1) if seconds else 0.0,
    }


def run_streamed(stack: Any, docs_dir: Path, collection: str, timeout_s: float) -> dict[str, Any]:
    """Every file through the functions (fetch, embed, index); until each document is settled."""
    from stratus import services
    from stratus.embedding.encoder import get_encoder
    from stratus_tools.uploads import collect_uploads, upload_files, wait_for_documents

    get_encoder().embed_documents(["warm up"])
    services.chunk_tokenizer()
    uploads = collect_uploads([docs_dir])
    started = time.perf_counter()
    since = time.time()
    doc_ids = upload_files(stack.client("s3"), stack.plan.bucket, "inbox/", collection, uploads)
    records = wait_for_documents(
        services.document_table(), collection, doc_ids, timeout_s, since=since, poll_s=1.0
    )
    return _summary("stratus streamed", records, time.perf_counter() - started, len(uploads))


def run_bulk(stack: Any, docs_dir: Path, collection: str, timeout_s: float) -> dict[str, Any]:
    """`stratus ingest DIR -c C --bulk` in its own process, pointed at the stack; the whole command timed."""
    from stratus.models import make_doc_id

    stratus = str(Path(sys.executable).parent / "stratus")
    command = [stratus, "ingest", str(docs_dir), "-c", collection, "--bulk"]
    environment = {**os.environ, **stack.environment, "POWERTOOLS_LOG_LEVEL": "WARNING", "COLUMNS": "200"}
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - this interpreter's own command
        [*command, "--timeout", str(timeout_s)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s + 60,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"stratus ingest --bulk failed ({done.returncode}): {done.stderr[-2000:]}")
    names = sorted(p.name for p in docs_dir.glob("*.md"))
    records = _settled(collection, [make_doc_id(collection, name) for name in names])
    result = _summary("stratus bulk", records, seconds, len(names))
    result["output"] = [line for line in done.stdout.splitlines() if "searchable after" in line]
    # The files' S3 events (each finds its document unchanged) run after the command: not counted
    # above, but waited for, so that they do not slow what runs next.
    started = time.perf_counter()
    queues = sorted({source.queue for source in stack.plan.event_sources})
    while any(stack.queue_depth(queue) for queue in queues):
        time.sleep(0.5)
    result["inbox_events_after_s"] = round(time.perf_counter() - started, 2)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole comparison; the result dictionary."""
    from stratus.settings import get_settings
    from stratus_tools.local.stack import LocalStack

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    if (REPO_ROOT / ".stratus" / "local.json").exists():
        raise SystemExit("a `stratus up` is running (.stratus/local.json): stop it first")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stratus-peers-") as folder:
        docs_dir = Path(folder) / "scifact"
        docs_dir.mkdir()
        total = write_corpus(Path(args.corpus), docs_dir, args.limit)
        log(f"{total} documents in {docs_dir}")
        llamaindex = None
        if args.python:
            log("LlamaIndex script…")
            llamaindex = run_llamaindex(args.python, docs_dir, Path(args.st_model), args.timeout)
            seconds = float(llamaindex["ingest_s"])
            results.append(
                {
                    "system": "llamaindex script",
                    "documents": llamaindex["documents"],
                    "indexed": llamaindex["documents"],
                    "failed": 0,
                    "rows_in_store": llamaindex["rows_in_store"],
                    "chunks": llamaindex["chunks"],
                    "seconds": round(seconds, 2),
                    "documents_per_min": round(llamaindex["documents"] / seconds * 60, 1),
                    "chunks_per_s": round(llamaindex["chunks"] / seconds, 1),
                    "script_s": round(float(llamaindex["script_s"]), 2),
                    "versions": llamaindex["versions"],
                }
            )
            log(f"  {results[-1]['documents_per_min']} docs/min")
        stack = LocalStack(
            REPO_ROOT,
            bucket="stratus-bench",
            poll_wait_s=1,
            emulator=args.emulator or get_settings().local_emulator,
        )
        stack.start()
        try:
            for mode in args.modes.split(","):
                log(f"Stratus {mode}…")
                if mode == "bulk":
                    results.append(run_bulk(stack, docs_dir, "bulk", args.timeout))
                elif mode == "streamed":
                    results.append(run_streamed(stack, docs_dir, "streamed", args.timeout))
                else:
                    raise SystemExit(f"unknown mode {mode!r} (bulk, streamed)")
                log(f"  {results[-1]['documents_per_min']} docs/min")
        finally:
            stack.stop()
    baseline = next((r for r in results if r["system"] == "llamaindex script"), None)
    for r in results:
        if baseline and r is not baseline:
            # Conservative: Stratus bulk is the whole command; LlamaIndex's is pipeline.run alone.
            r["vs_llamaindex"] = round(r["documents_per_min"] / baseline["documents_per_min"], 2)
    return {
        "corpus": str(args.corpus),
        "documents": total,
        "results": results,
        "machine": {"cpus": os.cpu_count()},
        "bulk_batch_documents": get_settings().bulk_batch_documents,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratus bench peers", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="BEIR corpus.jsonl (default: SciFact)")
    parser.add_argument("--limit", type=int, default=1000, help="the first N abstracts (0: all)")
    parser.add_argument("--python", help="interpreter with LlamaIndex (the baseline; left out without it)")
    parser.add_argument("--st-model", default=str(DEFAULT_ST_MODEL), help="MiniLM folder LlamaIndex loads")
    parser.add_argument("--modes", default="bulk,streamed", help="Stratus paths to run, in order")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--emulator", choices=("process", "thread"), default=None)
    parser.add_argument("--json", type=Path, help="also write the result here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `stratus bench peers`."""
    args = _parser().parse_args(argv)
    args.limit = args.limit or None
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    print(f"{result['documents']} SciFact abstracts, one run on {result['machine']['cpus']} CPUs")
    header = ("system", "docs/min", "chunks/s", "chunks", "seconds", "vs LlamaIndex")
    print(f"{header[0]:<20} {header[1]:>9} {header[2]:>9} {header[3]:>7} {header[4]:>8} {header[5]:>14}")
    for r in result["results"]:
        ratio = f"{r['vs_llamaindex']:.2f}x" if "vs_llamaindex" in r else ""
        print(
            f"{r['system']:<20} {r['documents_per_min']:>9} {r['chunks_per_s']:>9} {r['chunks']:>7} "
            f"{r['seconds']:>8} {ratio:>14}"
        )
    return 0
