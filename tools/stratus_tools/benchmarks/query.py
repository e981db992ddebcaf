"""`stratus bench query`: warm search latency per mode and store kind, over HTTP, and against table size.

Three parts (each can be skipped):

1. in-process: the SciFact collection (bulk-indexed by `stratus_tools.evaluation`, cached) searched through
   `stratus.retrieval.search.search` on a local folder, on S3 (the emulator) read directly, and on S3 through
   the local read replica; every query is embedded (no query cache), so figures include the encoder;
2. HTTP: a LocalStack serving the API (S3 + replica, as deployed), with 1, 4 and 16 concurrent
   httpx clients, each in its own process;
3. size: synthetic tables of 10k, 100k and 1M chunks with an ANN index (IVF_PQ) built on the
   vectors, searched in-process (build time reported).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from stratus.observability import metrics
from stratus.stores.vectors import table_name_for
from stratus_tools.benchmarks import summarise
from stratus_tools.evaluation import COLLECTION, Dataset, build_index, index_key

MODES = ("vector", "keyword", "hybrid")


def log(message: str) -> None:
    """Progress to stderr."""
    print(message, file=sys.stderr, flush=True)


def time_queries(run: Callable[[str], Any], queries: Sequence[str], warmup: int) -> list[float]:
    """Milliseconds of each call after `warmup` unmeasured ones."""
    for query in queries[:warmup]:
        run(query)
    out = []
    for query in queries[warmup:]:
        started = time.perf_counter()
        run(query)
        out.append((time.perf_counter() - started) * 1000)
        metrics.clear_metrics()  # a benchmark publishes no search metrics (Powertools prints every 100)
    return out


# --- part 1: store kinds in-process ------------------------------------------------------------


def scifact_index(dataset: Path, cache_dir: Path, encoder: Any, settings: Any) -> Path:
    """The bulk-built local LanceDB folder of the dataset (built once, cached like `stratus eval`)."""
    key = index_key(
        dataset / "corpus.jsonl",
        encoder.model_path,
        {
            "chunk_tokens": settings.chunk_tokens,
            "overlap": settings.chunk_overlap_tokens,
            "max_tokens": settings.embed_max_tokens,
        },
    )
    folder = cache_dir / key
    if not (folder / "index.json").is_file():
        log(f"indexing {dataset} into {folder}")
        built = build_index(
            dataset / "corpus.jsonl",
            folder / "lancedb",
            encoder,
            encoder.tokenizer,
            settings.chunk_tokens,
            settings.chunk_overlap_tokens,
            log,
        )
        (folder / "index.json").write_text(json.dumps(built))
    return folder / "lancedb"


def upload_table(s3: Any, bucket: str, local_db: Path, table: str, target: str) -> int:
    """Copy a local Lance table folder to s3://bucket/lancedb/<target>.lance/ (tables are relocatable)."""
    source = local_db / f"{table}.lance"
    count = 0
    for path in sorted(source.rglob("*")):
        if path.is_file():
            key = f"lancedb/{target}.lance/{path.relative_to(source).as_posix()}"
            s3.upload_file(str(path), bucket, key)
            count += 1
    return count


def bench_stores(
    local_db: Path, stack: Any, collection: str, queries: Sequence[str], warmup: int, settings: Any
) -> dict[str, Any]:
    """In-process latency per store kind and mode (every query embedded: the query cache is off)."""
    from stratus.embedding.encoder import EncoderOptions
    from stratus.retrieval.search import FusionConfig, SearchRequest, search
    from stratus.stores.replica import TableReplica
    from stratus.stores.vectors import ChunkStore, storage_options_for

    encoder = EncoderOptions.from_settings(settings, query_cache_size=0).encoder(settings.model_dir)
    fusion = FusionConfig.from_settings(settings)
    uri = f"s3://{stack.plan.bucket}/lancedb"
    options = storage_options_for(uri, "us-east-1", stack.endpoint_url)
    replica_dir = Path(settings.search_replica_dir or "/tmp/stratus-replica") / "bench"  # noqa: S108
    consistency, memory = settings.read_consistency_s, settings.search_memory_max_rows
    stores = {
        "local-folder": (
            ChunkStore(str(local_db), read_consistency_s=consistency, memory_max_rows=memory),
            COLLECTION,
        ),
        "s3-direct": (
            ChunkStore(uri, options, read_consistency_s=consistency, memory_max_rows=memory),
            collection,
        ),
        "s3-replica": (
            ChunkStore(
                uri,
                options,
                read_consistency_s=consistency,
                replica=TableReplica(stack.client("s3"), uri, replica_dir, consistency),
                memory_max_rows=memory,
            ),
            collection,
        ),
    }
    results: dict[str, Any] = {}
    for kind, (store, name) in stores.items():
        results[kind] = {}
        for mode in MODES:

            def run(query: str, store: Any = store, name: str = name, mode: str = mode) -> Any:
                request = SearchRequest(query=query[:2000], mode=mode, top_k=10)
                return search(store, encoder, name, request, fusion)

            results[kind][mode] = summarise(time_queries(run, queries, warmup))
            log(f"  {kind:13} {mode:8} {results[kind][mode]}")
    # Where the time goes, on the fastest store: the embedding alone.
    results["embed_only"] = summarise(time_queries(encoder.embed_query, queries, warmup))
    return results


# --- part 2: HTTP ------------------------------------------------------------------------------


def _http_client(
    url: str, headers: dict[str, str], queries: list[str], mode: str, warmup: int
) -> tuple[list[float], float]:
    import httpx

    with httpx.Client(timeout=60, headers=headers) as client:

        def run(query: str) -> None:
            response = client.post(url, json={"query": query[:2000], "mode": mode, "top_k": 10})
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

        for query in queries[:warmup]:
            run(query)
        started = time.perf_counter()
        latencies = time_queries(run, queries[warmup:], 0)
        return latencies, time.perf_counter() - started


def bench_http(
    api_url: str, api_key: str, collection: str, queries: Sequence[str], per_client: int
) -> dict[str, Any]:
    """p50/p95/p99 per mode for 1, 4 and 16 concurrent clients (one process each)."""
    url = f"{api_url}/v1/collections/{collection}/search"
    headers = {"x-api-key": api_key}
    results: dict[str, Any] = {}
    for clients in (1, 4, 16):
        results[str(clients)] = {}
        with ProcessPoolExecutor(clients, mp_context=multiprocessing.get_context("spawn")) as pool:
            for mode in MODES:
                slices = [
                    [queries[(c * per_client + i) % len(queries)] for i in range(per_client + 5)]
                    for c in range(clients)
                ]
                parts = list(
                    pool.map(
                        _http_client,
                        [url] * clients,
                        [headers] * clients,
                        slices,
                        [mode] * clients,
                        [5] * clients,
                    )
                )
                latencies = [x for part, _ in parts for x in part]
                summary = summarise(latencies)
                # Clients start their measured phase together after warming up; the slowest one bounds it.
                summary["requests_per_s"] = round(len(latencies) / max(seconds for _, seconds in parts), 1)
                results[str(clients)][mode] = summary
                log(f"  http clients={clients:2} {mode:8} {summary}")
    return results


# --- part 3: size --------------------------------------------------------------------------------


def synthetic_rows(start: int, count: int, dimension: int, seed: int) -> Any:
    """Chunk rows with clustered unit vectors and Zipf-distributed words (fast to make, index-able)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed + start)
    centres = np.random.default_rng(seed).standard_normal((256, dimension)).astype(np.float32)
    vectors = centres[rng.integers(0, 256, count)] + 0.6 * rng.standard_normal((count, dimension)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = rng.zipf(1.3, (count, 24)) % 20000
    texts = [" ".join(f"w{w}" for w in row) for row in words]
    ids = [f"c{start + i}" for i in range(count)]
    flat = pa.array(vectors.reshape(-1))
    return pa.table(
        {
            "chunk_id": ids,
            "doc_id": ids,
            "collection": ["synthetic"] * count,
            "source": ids,
            "title": [""] * count,
            "section": [""] * count,
            "page": pa.nulls(count, pa.int32()),
            "text": texts,
            "fts_text": texts,
            "metadata_json": ["{}"] * count,
            "vector": pa.FixedSizeListArray.from_arrays(flat, dimension),
        }
    )


def bench_sizes(
    sizes: Sequence[int], folder: Path, queries: Sequence[str], warmup: int, settings: Any
) -> dict[str, Any]:
    """Build synthetic tables (vectors + FTS + IVF_PQ when >= 100k rows) and time searches on each."""
    import lancedb
    from lancedb.index import FTS

    from stratus.embedding.encoder import EncoderOptions
    from stratus.retrieval.search import FusionConfig, SearchRequest, search
    from stratus.stores.vectors import ChunkStore

    encoder = EncoderOptions.from_settings(settings, query_cache_size=0).encoder(settings.model_dir)
    dimension = 384
    fusion = FusionConfig.from_settings(settings)
    # Queries in the synthetic vocabulary (3-6 Zipf words), so full-text search has postings to score.
    import numpy as np

    rng = np.random.default_rng(11)
    words = [" ".join(f"w{w % 20000}" for w in rng.zipf(1.3, int(rng.integers(3, 7)))) for _ in queries]
    results: dict[str, Any] = {}
    for size in sizes:
        db_dir = folder / f"synthetic-{size}"
        marker = db_dir / "built.json"
        if marker.is_file():
            built = json.loads(marker.read_text())
        else:
            import shutil

            shutil.rmtree(db_dir, ignore_errors=True)
            db = lancedb.connect(str(db_dir))
            started = time.perf_counter()
            step = 100_000
            table = db.create_table(
                table_name_for("synthetic"), synthetic_rows(0, min(step, size), dimension, 7)
            )
            for start in range(step, size, step):
                table.add(synthetic_rows(start, min(step, size - start), dimension, 7))
            load_s = time.perf_counter() - started
            started = time.perf_counter()
            table.create_index("fts_text", config=FTS(with_position=False))
            fts_s = time.perf_counter() - started
            ann_s = None
            if size >= 100_000:
                started = time.perf_counter()
                partitions = max(16, int(size**0.5))
                table.create_index(
                    metric="cosine",
                    vector_column_name="vector",
                    index_type="IVF_PQ",
                    num_partitions=partitions,
                    num_sub_vectors=48,
                )
                ann_s = round(time.perf_counter() - started, 1)
            built = {
                "rows": size,
                "load_s": round(load_s, 1),
                "fts_index_s": round(fts_s, 1),
                "ivf_pq_index_s": ann_s,
            }
            db_dir.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps(built))
        log(f"  synthetic {size}: {built}")
        store = ChunkStore(str(db_dir), memory_max_rows=settings.search_memory_max_rows)
        results[str(size)] = {"build": built}
        for mode in MODES:

            def run(query: str, store: Any = store, mode: str = mode) -> Any:
                request = SearchRequest(query=query[:2000], mode=mode, top_k=10)
                return search(store, encoder, "synthetic", request, fusion)

            results[str(size)][mode] = summarise(time_queries(run, words, warmup))
            log(f"  synthetic {size:>8} {mode:8} {results[str(size)][mode]}")
    return results


# --- plot and entry point ----------------------------------------------------------------------------


def plot(report: dict[str, Any], path: Path) -> None:
    """One PNG: p50/p95 per store kind and mode; HTTP p95 by concurrency; p95 against table size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("stores", "http", "sizes") if k in report]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6 * max(len(panels), 1), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=False):
        data = report[panel]
        if panel == "stores":
            kinds = [k for k in data if k != "embed_only"]
            width = 0.25
            for i, mode in enumerate(MODES):
                xs = [j + i * width for j in range(len(kinds))]
                ax.bar(xs, [data[k][mode]["p95_ms"] for k in kinds], width, label=f"{mode} p95")
                ax.scatter(xs, [data[k][mode]["p50_ms"] for k in kinds], color="black", s=10, zorder=3)
            ax.set_xticks([j + width for j in range(len(kinds))], kinds)
            ax.set_ylabel("ms (bars p95, dots p50)")
            ax.set_title("in-process, warm, incl. query embedding")
        elif panel == "http":
            clients = list(data)
            for mode in MODES:
                ax.plot(clients, [data[c][mode]["p95_ms"] for c in clients], marker="o", label=f"{mode} p95")
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel("ms")
            ax.set_title("HTTP (S3 + replica)")
        else:
            sizes = [int(s) for s in data]
            for mode in MODES:
                ax.plot(sizes, [data[str(s)][mode]["p95_ms"] for s in sizes], marker="o", label=f"{mode} p95")
            ax.set_xscale("log")
            ax.set_xlabel("chunks (IVF_PQ from 100k)")
            ax.set_ylabel("ms")
            ax.set_title("synthetic tables, in-process")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `stratus bench query`."""
    parser = argparse.ArgumentParser(
        prog="stratus bench query", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument(
        "--dataset", type=Path, default=Path("../shared/eval/scifact"), help="BEIR folder to load"
    )
    parser.add_argument("--split", default="train", help="qrels split whose queries are sent")
    parser.add_argument("--queries", type=int, default=300, help="measured queries per mode and store")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=60, help="HTTP requests per client and mode")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="synthetic table sizes ('' to skip)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: stores, http, sizes")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"), help="built indexes and tables")
    parser.add_argument("--json", type=Path, default=Path("bench-out") / "query.json")
    parser.add_argument("--png", type=Path, default=Path("bench-out") / "query.png")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from stratus.embedding.encoder import OnnxEncoder
    from stratus.settings import get_settings

    settings = get_settings()
    dataset = Dataset.load(args.dataset, args.split, None)
    queries = list(dataset.queries.values())
    needed = args.queries + args.warmup
    queries = (queries * (needed // max(len(queries), 1) + 1))[:needed]
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]},
        "settings": {
            "variant": settings.model_variant,
            "candidates": settings.search_candidates,
            "fusion": settings.search_fusion,
            "read_consistency_s": settings.read_consistency_s,
        },
    }
    if not {"stores", "http"} <= skip:
        from stratus.settings import REPO_ROOT
        from stratus_tools.local.stack import LocalStack

        encoder = OnnxEncoder.from_dir(settings.model_dir, variant=settings.model_variant)
        local_db = scifact_index(args.dataset, args.cache_dir / "eval", encoder, settings)
        replica_dir = args.cache_dir / "bench-replica"
        environment = {"STRATUS_QUERY_CACHE_SIZE": "0", "STRATUS_SEARCH_REPLICA_DIR": str(replica_dir)}
        stack = LocalStack(REPO_ROOT, extra_environment=environment).start(run_functions=False)
        try:
            # Relocated as it is: its rows carry collection "eval", so the stack serves it under that name.
            name = table_name_for(COLLECTION)
            files = upload_table(stack.client("s3"), stack.plan.bucket, local_db, name, name)
            log(f"loaded the collection into the emulator's S3 ({files} files)")
            if "stores" not in skip:
                report["stores"] = bench_stores(local_db, stack, COLLECTION, queries, args.warmup, settings)
            if "http" not in skip:
                from stratus_tools.benchmarks import create_admin_key

                api = stack.serve_api(port=0)
                key = create_admin_key("bench-query")  # no rate limit: the benchmark measures the API
                report["http"] = bench_http(api, key, COLLECTION, queries, args.per_client)
        finally:
            stack.stop()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if sizes and "sizes" not in skip:
        report["sizes"] = bench_sizes(
            sizes, args.cache_dir / "bench-query", queries[:200], args.warmup, settings
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    plot(report, args.png)
    log(f"wrote {args.json} and {args.png}")
    print(json.dumps(report, indent=2))
    return 0
