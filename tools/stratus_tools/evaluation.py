"""`stratus eval DATASET_DIR`: retrieval quality on a BEIR-layout folder.

The corpus is indexed through a bulk path that reuses the pipeline's own pieces — chunking
(`chunk_document`), the ONNX encoder, `chunk_rows` and `ChunkStore.write` — on a local-folder
LanceDB (no queues), cached under ``--cache-dir`` keyed by the corpus sha256, the model and the
chunk settings. Every query goes through `stratus.retrieval.search.search`, the function the API calls;
a document's score is its best chunk's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODES = ("keyword", "vector", "hybrid")
INDEX_FORMAT = 3  # bump when the bulk index layout changes (3: chunks-<collection> tables, collection column)
COLLECTION = "eval"

Qrels = dict[str, dict[str, int]]
Run = dict[str, list[tuple[str, float]]]


# --- metrics -----------------------------------------------------------------------------------


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains (graded relevance) and log2 discounts, as trec_eval/BEIR."""
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the first k."""
    wanted = {doc for doc, r in relevant.items() if r > 0}
    return len(wanted & set(ranked[:k])) / len(wanted) if wanted else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the first k (0 if none)."""
    for i, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate_run(qrels: Qrels, run: Run) -> dict[str, float]:
    """Mean nDCG@10, recall@10, recall@100 and MRR@10 over the queries of `qrels` (missing runs score 0)."""
    totals = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for qid, relevant in qrels.items():
        ranked = [doc for doc, _ in run.get(qid, [])]
        totals["ndcg@10"] += ndcg_at(ranked, relevant, 10)
        totals["recall@10"] += recall_at(ranked, relevant, 10)
        totals["recall@100"] += recall_at(ranked, relevant, 100)
        totals["mrr@10"] += mrr_at(ranked, relevant, 10)
    count = max(len(qrels), 1)
    return {name: round(value / count, 4) for name, value in totals.items()}


def halves(qrels: Qrels) -> dict[str, Qrels]:
    """The judged queries split into two halves: odd and even ids (by position for ids not numbers).

    Every gain is checked on both: a lever tuned on one half that does not pay on the other is noise.
    """
    out: dict[str, Qrels] = {"odd": {}, "even": {}}
    for position, (qid, relevant) in enumerate(qrels.items()):
        number = int(qid) if qid.isdigit() else position
        out["odd" if number % 2 else "even"][qid] = relevant
    return out


def docs_from_hits(hits: Iterable[tuple[str, float]], limit: int) -> list[tuple[str, float]]:
    """Chunk hits (best first) to documents: each document scores its best chunk, order kept."""
    best: dict[str, float] = {}
    for doc_id, score in hits:
        if doc_id not in best:
            best[doc_id] = score
            if len(best) == limit:
                break
    return list(best.items())


# --- BEIR folders ------------------------------------------------------------------------------


def read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    """Rows of a JSON Lines file."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def read_qrels(path: Path) -> Qrels:
    """qrels/<split>.tsv: query-id, corpus-id, score (a header line is skipped)."""
    qrels: Qrels = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 3 or (number == 0 and not parts[2].strip().lstrip("-").isdigit()):
            continue
        qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = int(parts[2])
    return qrels


@dataclass
class Dataset:
    """A BEIR-layout folder: corpus, the queries judged in a split, and their qrels."""

    folder: Path
    queries: dict[str, str]
    qrels: Qrels

    @classmethod
    def load(cls, folder: Path, split: str, limit: int | None) -> Dataset:
        """Queries filtered to those with judgements in the split (the first `limit` of them)."""
        qrels_path = folder / "qrels" / f"{split}.tsv"
        for needed in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
            if not needed.is_file():
                raise FileNotFoundError(f"{needed} is missing (expected a BEIR-layout folder)")
        qrels = {q: r for q, r in read_qrels(qrels_path).items() if any(v > 0 for v in r.values())}
        queries = {str(q["_id"]): str(q["text"]) for q in read_jsonl(folder / "queries.jsonl")}
        ids = [q for q in qrels if q in queries]
        if limit is not None:
            ids = ids[:limit]
        return cls(folder, {q: queries[q] for q in ids}, {q: qrels[q] for q in ids})


# --- bulk index --------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def index_key(corpus: Path, model_path: Path, settings: Mapping[str, Any]) -> str:
    """Cache key of a bulk index: corpus bytes, model file and the settings that shape chunks/vectors."""
    stat = model_path.stat()
    identity = {
        "format": INDEX_FORMAT,
        "corpus": file_sha256(corpus),
        "model": [str(model_path.resolve()), stat.st_size, int(stat.st_mtime)],
        **settings,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def build_index(
    corpus_path: Path,
    db_dir: Path,
    encoder: Any,
    tokenizer: Any,
    chunk_tokens: int,
    overlap_tokens: int,
    log: Any = print,
    batch_docs: int = 512,
    chunking: str = "token",
) -> dict[str, Any]:
    """Chunk, encode and write a BEIR corpus into a local-folder chunk table (the bulk path)."""
    import pyarrow as pa

    from stratus.ingest.chunking import chunk_document
    from stratus.models import ChunkBatch, ParsedDocument, Section
    from stratus.stores.schema import chunk_rows, embed_text
    from stratus.stores.vectors import ChunkStore

    store = ChunkStore(str(db_dir))
    started = time.perf_counter()
    docs = chunks = 0
    pending: list[ChunkBatch] = []

    def flush() -> None:
        nonlocal chunks
        if not pending:
            return
        texts = [embed_text(b.title, c.section, c.text) for b in pending for c in b.chunks]
        vectors = encoder.embed_documents(texts)
        tables, offset = [], 0
        for batch in pending:
            n = len(batch.chunks)
            tables.append(chunk_rows(batch, vectors[offset : offset + n], {}))
            offset += n
        store.write(COLLECTION, pa.concat_tables(tables), {}, [], int(vectors.shape[1]))
        chunks += len(texts)
        pending.clear()
        log(f"  indexed {docs} documents, {chunks} chunks ({time.perf_counter() - started:.0f}s)")

    for row in read_jsonl(corpus_path):
        doc_id = str(row["_id"])
        title, text = str(row.get("title") or ""), str(row.get("text") or "")
        if not text.strip() and not title.strip():
            continue
        parsed = ParsedDocument(title=title, sections=[Section(text=text or title)])
        found = chunk_document(doc_id, parsed, tokenizer, chunk_tokens, overlap_tokens, mode=chunking)
        if not found:
            continue
        pending.append(
            ChunkBatch(
                collection=COLLECTION,
                doc_id=doc_id,
                source=doc_id,
                title=title,
                content_sha256=hashlib.sha256(f"{title}\x00{text}".encode()).hexdigest(),
                chunks=found,
            )
        )
        docs += 1
        if len(pending) >= batch_docs:
            flush()
    flush()
    table = store.open(COLLECTION)
    if table is not None:
        table.optimize()
        store.ensure_fts_index(table)
    return {"documents": docs, "chunks": chunks, "seconds": round(time.perf_counter() - started, 1)}


# --- running queries ---------------------------------------------------------------------------


def run_queries(
    store: Any,
    encoder: Any,
    queries: Mapping[str, str],
    mode: str,
    fusion: Any,
    depth_docs: int = 100,
    chunks_per_doc: int = 3,
) -> tuple[Run, list[float]]:
    """Every query through `stratus.retrieval.search.search`; documents ranked by their best chunk."""
    from stratus.observability import metrics
    from stratus.retrieval.search import SearchRequest, search

    run: Run = {}
    latencies: list[float] = []
    for qid, text in queries.items():
        request = SearchRequest(query=text[:2000] or "?", mode=mode)
        started = time.perf_counter()
        response = search(store, encoder, COLLECTION, request, fusion, top_k=depth_docs * chunks_per_doc)
        latencies.append((time.perf_counter() - started) * 1000)
        run[qid] = docs_from_hits(((h.doc_id, h.score) for h in response.hits), depth_docs)
        metrics.clear_metrics()  # an offline tool publishes no search metrics (Powertools prints every 100)
    return run, latencies


def write_trec_run(path: Path, run: Run, tag: str) -> None:
    """A TREC run file: `qid Q0 docid rank score tag`, best first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for qid, docs in run.items():
            for rank, (doc_id, score) in enumerate(docs, start=1):
                out.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options of `stratus eval`."""
    from stratus.settings import get_settings

    s = get_settings()
    parser = argparse.ArgumentParser(
        prog="stratus eval", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument(
        "dataset", type=Path, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv"
    )
    parser.add_argument("--split", default="test", help="qrels split (default test)")
    parser.add_argument("--mode", choices=[*MODES, "all"], default="all")
    parser.add_argument("--json", type=Path, help="write the metrics as JSON here")
    parser.add_argument(
        "--run-file", type=Path, help="TREC run file (with several modes: <stem>.<mode><ext>)"
    )
    parser.add_argument("--limit", type=int, help="only the first N judged queries")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache") / "eval", help="built indexes")
    parser.add_argument("--model-dir", type=Path, default=s.model_dir)
    parser.add_argument("--variant", choices=["fp32", "int8"], default=s.model_variant)
    parser.add_argument("--chunk-tokens", type=int, default=s.chunk_tokens)
    parser.add_argument("--overlap-tokens", type=int, default=s.chunk_overlap_tokens)
    parser.add_argument(
        "--chunking",
        choices=["token", "heading", "rows"],
        default="token",
        help="the collection chunking to evaluate (heading: --chunk-tokens is the split limit)",
    )
    parser.add_argument("--max-tokens", type=int, default=s.embed_max_tokens)
    parser.add_argument("--fusion", choices=["rrf", "convex"], default=s.search_fusion)
    parser.add_argument("--rrf-k", type=int, default=s.rrf_k)
    parser.add_argument("--vector-weight", type=float, default=s.rrf_vector_weight)
    parser.add_argument("--keyword-weight", type=float, default=s.rrf_keyword_weight)
    parser.add_argument("--candidates", type=int, default=s.search_candidates)
    parser.add_argument(
        "--vector-feedback", type=int, default=s.search_vector_feedback, help="Rocchio chunks (0: off)"
    )
    parser.add_argument("--feedback-weight", type=float, default=s.search_vector_feedback_weight)
    parser.add_argument("--depth", type=int, default=100, help="documents ranked per query (default 100)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `stratus eval`; returns the exit status."""
    args = parse_args(argv)
    from stratus.embedding.encoder import OnnxEncoder
    from stratus.retrieval.search import FusionConfig
    from stratus.settings import get_settings
    from stratus.stores.vectors import ChunkStore

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        dataset = Dataset.load(args.dataset, args.split, args.limit)
    except FileNotFoundError as error:
        log(f"stratus eval: {error}")
        return 2
    if not dataset.queries:
        log(f"stratus eval: no judged queries in split {args.split!r}")
        return 2
    encoder = OnnxEncoder.from_dir(args.model_dir, variant=args.variant, max_tokens=args.max_tokens)
    key = index_key(
        args.dataset / "corpus.jsonl",
        encoder.model_path,
        {
            "chunk_tokens": args.chunk_tokens,
            "overlap": args.overlap_tokens,
            "max_tokens": args.max_tokens,
            # Only other chunkings enter the key: indexes built before the option keep theirs.
            **({"chunking": args.chunking} if args.chunking != "token" else {}),
        },
    )
    index_dir = args.cache_dir / key
    marker = index_dir / "index.json"
    if marker.is_file():
        built = json.loads(marker.read_text())
        log(f"reusing index {index_dir} ({built['documents']} documents, {built['chunks']} chunks)")
    else:
        log(f"indexing {args.dataset / 'corpus.jsonl'} into {index_dir}")
        if index_dir.exists():
            import shutil

            shutil.rmtree(index_dir)
        built = build_index(
            args.dataset / "corpus.jsonl",
            index_dir / "lancedb",
            encoder,
            encoder.tokenizer,
            args.chunk_tokens,
            args.overlap_tokens,
            log,
            chunking=args.chunking,
        )
        marker.write_text(json.dumps(built))
    store = ChunkStore(str(index_dir / "lancedb"), memory_max_rows=get_settings().search_memory_max_rows)
    fusion = FusionConfig(
        candidates=args.candidates,
        rrf_k=args.rrf_k,
        vector_weight=args.vector_weight,
        keyword_weight=args.keyword_weight,
        method=args.fusion,
        vector_feedback=args.vector_feedback,
        vector_feedback_weight=args.feedback_weight,
    )
    modes = list(MODES) if args.mode == "all" else [args.mode]
    results: dict[str, Any] = {}
    print(
        f"{'mode':8} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'p50 ms':>7} {'p95 ms':>7}"
        f" {'odd':>7} {'even':>7}"
    )
    split = halves(dataset.qrels)
    for mode in modes:
        run, latencies = run_queries(store, encoder, dataset.queries, mode, fusion, args.depth)
        metrics: dict[str, Any] = dict(evaluate_run(dataset.qrels, run))
        metrics["p50_ms"] = round(percentile(latencies, 50), 2)
        metrics["p95_ms"] = round(percentile(latencies, 95), 2)
        metrics["halves"] = {name: evaluate_run(qrels, run) for name, qrels in split.items()}
        results[mode] = metrics
        odd, even = metrics["halves"]["odd"]["ndcg@10"], metrics["halves"]["even"]["ndcg@10"]
        print(
            f"{mode:8} {metrics['ndcg@10']:8.4f} {metrics['recall@10']:7.4f} {metrics['recall@100']:7.4f} "
            f"{metrics['mrr@10']:7.4f} {metrics['p50_ms']:7.1f} {metrics['p95_ms']:7.1f} "
            f"{odd:7.4f} {even:7.4f}",
            flush=True,
        )
        if args.run_file:
            path = args.run_file
            if len(modes) > 1:
                path = path.with_name(f"{path.stem}.{mode}{path.suffix}")
            write_trec_run(path, run, f"stratus-{mode}")
    if args.json:
        report = {
            "dataset": str(args.dataset),
            "split": args.split,
            "queries": len(dataset.queries),
            "index": {**built, "dir": str(index_dir)},
            "config": {
                k: getattr(args, k)
                for k in (
                    "variant",
                    "chunk_tokens",
                    "chunking",
                    "overlap_tokens",
                    "max_tokens",
                    "fusion",
                    "rrf_k",
                    "vector_weight",
                    "keyword_weight",
                    "candidates",
                    "vector_feedback",
                    "feedback_weight",
                    "depth",
                )
            },
            "modes": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0
