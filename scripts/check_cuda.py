"""On a GPU host: the encoder runs on CUDA and matches the sentence-transformers reference vectors.

Run where onnxruntime-gpu and an NVIDIA driver are present (e.g. inside the Dockerfile.gpu image):
    python scripts/check_cuda.py [MODEL_DIR]
Exits non-zero when CUDA is missing or the vectors differ: the GPU path is never required by the tests.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from stratus.embedding.encoder import CUDA_PROVIDER, OnnxEncoder

root = Path(__file__).resolve().parent.parent
model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "layers" / "model" / "all-MiniLM-L6-v2"
if CUDA_PROVIDER not in ort.get_available_providers():
    sys.exit(f"no {CUDA_PROVIDER} in this onnxruntime ({ort.get_available_providers()})")
reference = json.loads((root / "tests" / "fixtures" / "reference_vectors.json").read_text())
gpu = OnnxEncoder.from_dir(model_dir, variant="fp32", providers=CUDA_PROVIDER)
started = time.perf_counter()
vectors = gpu.embed_documents(reference["sentences"])
elapsed = time.perf_counter() - started
expected = np.asarray(reference["vectors"], dtype=np.float32)
worst = float((vectors * expected).sum(axis=1).min())
print(f"providers {gpu.providers}; {len(vectors)} sentences in {elapsed:.3f}s; min cosine {worst:.7f}")
sys.exit(0 if gpu.providers[0] == CUDA_PROVIDER and worst >= 0.9999 else 1)
