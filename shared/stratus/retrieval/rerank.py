"""Optional cross-encoder reranking with onnxruntime (e.g. ms-marco-MiniLM-L-6-v2 exported to ONNX).

A model folder holds ``model.onnx`` (inputs ``input_ids``, ``attention_mask`` and optionally
``token_type_ids``; first output one logit per pair, shape ``[batch]`` or ``[batch, 1]``; with
two or more columns the last is the relevance logit) and ``tokenizer.json``.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import numpy as np


class CrossEncoder:
    """Scores (query, passage) pairs with an ONNX cross-encoder."""

    def __init__(self, folder: str | Path, max_tokens: int = 256, intra_op_threads: int = 0) -> None:
        folder = Path(folder)
        self.model_path = folder / "model.onnx"
        self.tokenizer_path = folder / "tokenizer.json"
        for path in (self.model_path, self.tokenizer_path):
            if not path.is_file():
                raise FileNotFoundError(f"reranker folder {folder} lacks {path.name}")
        self.max_tokens = max_tokens
        self._threads = intra_op_threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: list[str] = []
        self._lock = threading.Lock()

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        tokenizer.enable_truncation(max_length=self.max_tokens, strategy="only_second")
        tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in session.get_inputs()]
        self._tokenizer = tokenizer
        self._session = session

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """One relevance logit per passage (higher is more relevant)."""
        if not passages:
            return np.empty(0, dtype=np.float32)
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._load()
        encodings = self._tokenizer.encode_batch([(query, p) for p in passages])
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(passages), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            types[row, :n] = encoding.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        unknown = [name for name in self._inputs if name not in feeds]
        if unknown:
            raise ValueError(f"{self.model_path}: unsupported inputs {unknown}")
        out = np.asarray(self._session.run(None, {n: feeds[n] for n in self._inputs})[0], dtype=np.float32)
        if out.ndim == 2:
            out = out[:, -1]
        return out.reshape(len(passages))


@functools.cache
def get_reranker() -> CrossEncoder | None:
    """The configured cross-encoder (STRATUS_RERANK_MODEL_DIR), or None when reranking is off."""
    from stratus.settings import get_settings

    settings = get_settings()
    if settings.rerank_model_dir is None:
        return None
    return CrossEncoder(
        settings.rerank_model_dir,
        max_tokens=settings.rerank_max_tokens,
        intra_op_threads=settings.onnx_intra_op_threads,
    )
