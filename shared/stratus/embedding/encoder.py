"""ONNX sentence encoder: tokenizes, batches by a token budget and runs an onnxruntime session."""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from stratus.settings import Settings

# A stdlib child of the Powertools "stratus" logger: records reach its handler without this module
# paying the ~0.3 s import of aws_lambda_powertools on the cold-start path.
_log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
DEFAULT_VARIANT_FILES = {"fp32": ("model.onnx",), "int8": ("model_int8.onnx", "model_quantized.onnx")}


def select_providers(requested: str | Sequence[str], available: Sequence[str]) -> list[str]:
    """onnxruntime providers for a request: 'auto' is CUDA when available (CPU kept as fallback), else CPU."""
    names = [p.strip() for p in requested.split(",")] if isinstance(requested, str) else list(requested)
    names = [p for p in names if p]
    if not names or names == ["auto"]:
        return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]
    missing = [p for p in names if p not in available]
    if missing:
        raise ValueError(f"onnxruntime providers not available: {missing}; available: {list(available)}")
    return names


def length_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest-first so that rows x longest length stays within batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    pos = 0
    while pos < len(order):
        rows = max(1, batch_tokens // max(1, lengths[order[pos]]))
        batches.append(order[pos : pos + rows])
        pos += rows
    return batches


class OnnxEncoder:
    """A sentence encoder over one model folder (model.onnx + tokenizer.json [+ manifest.json])."""

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        dimension: int | None,
        max_tokens: int,
        batch_tokens: int = 8192,
        intra_op_threads: int = 0,
        providers: str | Sequence[str] = "auto",
        query_cache_size: int = 1024,
        output_name: str | None = None,
        allow_spinning: bool = True,
        pooling: str = "mean",
    ) -> None:
        if max_tokens < 2:
            raise ValueError("max_tokens must be at least 2")
        if batch_tokens < 1:
            raise ValueError("batch_tokens must be positive")
        self.model_path = Path(model_path)
        self._tokenizer_path = Path(tokenizer_path)
        self._dimension = dimension
        self._max_tokens = max_tokens
        self._batch_tokens = batch_tokens
        self._intra_op_threads = intra_op_threads
        self._allow_spinning = allow_spinning
        self._requested_providers = providers
        self._output_name = output_name
        self._pooling = pooling
        self._cache_size = query_cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._session: Any = None
        self._input_names: list[str] = []
        self._encoding_tokenizer: Tokenizer | None = None

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        variant: str = "int8",
        max_tokens: int = 256,
        batch_tokens: int = 8192,
        intra_op_threads: int = 0,
        providers: str | Sequence[str] = "auto",
        query_cache_size: int = 1024,
        allow_spinning: bool = True,
    ) -> OnnxEncoder:
        """An encoder for a model folder; without manifest.json, defaults and config.json are used."""
        folder = Path(path)
        manifest: dict[str, Any] = {}
        if (folder / "manifest.json").is_file():
            manifest = json.loads((folder / "manifest.json").read_text())
        config: dict[str, Any] = {}
        if (folder / "config.json").is_file():
            config = json.loads((folder / "config.json").read_text())

        model_path = _variant_path(folder, variant, manifest.get("variants") or {})
        dimension = manifest.get("dimension") or config.get("hidden_size")
        limit = min(
            int(max_tokens),
            int(manifest.get("max_position_embeddings") or config.get("max_position_embeddings") or 512),
        )
        return cls(
            model_path,
            folder / "tokenizer.json",
            dimension=int(dimension) if dimension else None,
            max_tokens=limit,
            batch_tokens=batch_tokens,
            intra_op_threads=intra_op_threads,
            providers=providers,
            query_cache_size=query_cache_size,
            output_name=manifest.get("output"),
            pooling=str(manifest.get("pooling", "mean")),
            allow_spinning=allow_spinning,
        )

    # --- properties --------------------------------------------------------------------

    @property
    def max_tokens(self) -> int:
        """Tokens per text the model sees, special tokens included; longer texts are truncated."""
        return self._max_tokens

    @property
    def dimension(self) -> int:
        """Length of every embedding vector."""
        if self._dimension is None:
            self._dimension = int(self.embed_documents(["dimension probe"]).shape[1])
        return self._dimension

    @property
    def providers(self) -> list[str]:
        """The onnxruntime providers the session actually uses (creates the session)."""
        return list(self._get_session().get_providers())

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer without truncation or padding (for chunking and counting)."""
        tok = _load_tokenizer(self._tokenizer_path)
        tok.no_truncation()
        tok.no_padding()
        return tok

    # --- encoding ----------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Number of tokens of text, special tokens excluded, without truncation."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text, in the order given."""
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a sequence of strings, not one string")
        session = self._get_session()
        if len(texts) == 0:
            return np.empty((0, self.dimension), dtype=np.float32)
        encodings = self._get_encoding_tokenizer().encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        out: np.ndarray | None = None
        for batch in length_batches(lengths, self._batch_tokens):
            width = lengths[batch[0]]
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, index in enumerate(batch):
                n = lengths[index]
                ids[row, :n] = encodings[index].ids
                mask[row, :n] = 1
            vectors = self._run(session, ids, mask)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        assert out is not None
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """The embedding of one query, served from a bounded LRU cache; the array is read-only."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vector = self.embed_documents([text])[0]
        vector.setflags(write=False)
        if self._cache_size > 0:
            with self._lock:
                self._cache[text] = vector
                self._cache.move_to_end(text)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vector

    @property
    def query_cache_len(self) -> int:
        """How many query embeddings the cache holds."""
        return len(self._cache)

    # --- internals ---------------------------------------------------------------------

    def _run(self, session: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds: dict[str, np.ndarray] = {}
        for name in self._input_names:
            if name == "input_ids":
                feeds[name] = ids
            elif name == "attention_mask":
                feeds[name] = mask
            elif name == "token_type_ids":
                feeds[name] = np.zeros_like(ids)
            else:
                raise ValueError(f"{self.model_path.name}: unsupported model input {name!r}")
        out = np.asarray(session.run([self._output_name], feeds)[0], dtype=np.float32)
        if out.ndim == 3:  # token embeddings: pool here
            if self._pooling == "cls":
                out = out[:, 0, :]
            else:
                weights = mask[:, :, None].astype(np.float32)
                out = (out * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)

    def _get_encoding_tokenizer(self) -> Tokenizer:
        if self._encoding_tokenizer is None:
            tok = _load_tokenizer(self._tokenizer_path)
            # Explicit: tokenizer.json files may ship with truncation/padding fixed (MiniLM's at 128).
            tok.enable_truncation(max_length=self._max_tokens)
            tok.no_padding()
            self._encoding_tokenizer = tok
        return self._encoding_tokenizer

    def _get_session(self) -> Any:
        if self._session is not None:
            return self._session
        with self._lock:
            if self._session is None:
                self._get_encoding_tokenizer()
                self._session = self._create_session()
        return self._session

    def _create_session(self) -> Any:
        import onnxruntime as ort

        started = time.perf_counter()
        providers = select_providers(self._requested_providers, ort.get_available_providers())
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self._intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not self._allow_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(self.model_path), opts, providers=providers)
        self._input_names = [i.name for i in session.get_inputs()]
        if self._output_name is None:
            self._output_name = session.get_outputs()[0].name
        _log.info(
            "onnx session ready",
            extra={
                "model": str(self.model_path),
                "providers": session.get_providers(),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return session


def _variant_path(folder: Path, variant: str, variants: dict[str, str]) -> Path:
    if variant in variants:
        return folder / variants[variant]
    if variants:
        raise ValueError(f"{folder}: variant {variant!r} not in manifest variants {sorted(variants)}")
    for name in DEFAULT_VARIANT_FILES.get(variant, ()):
        if (folder / name).is_file():
            return folder / name
    if (folder / "model.onnx").is_file():
        _log.warning("variant %r not found in %s; using model.onnx", variant, folder)
        return folder / "model.onnx"
    raise FileNotFoundError(f"{folder}: no model.onnx")


def _load_tokenizer(path: Path) -> Tokenizer:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


@dataclass(frozen=True)
class EncoderOptions:
    """How the encoder runs: `OnnxEncoder.from_dir`'s options, as the settings name them."""

    variant: str = "int8"
    max_tokens: int = 256
    batch_tokens: int = 8192
    intra_op_threads: int = 0
    providers: str = "auto"
    query_cache_size: int = 1024
    allow_spinning: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> EncoderOptions:
        """The options as configured (STRATUS_MODEL_VARIANT, STRATUS_EMBED_*, STRATUS_ONNX_*, ...)."""
        from stratus.settings import derive

        options = derive(
            cls,
            settings,
            names={
                "variant": "model_variant",
                "max_tokens": "embed_max_tokens",
                "batch_tokens": "embed_batch_tokens",
                "intra_op_threads": "onnx_intra_op_threads",
                "providers": "onnx_providers",
                "allow_spinning": "onnx_allow_spinning",
            },
        )
        return replace(options, **overrides)

    def encoder(self, model_dir: str | Path) -> OnnxEncoder:
        """An encoder for the model folder with these options."""
        return OnnxEncoder.from_dir(model_dir, **asdict(self))


@functools.cache
def get_encoder() -> OnnxEncoder:
    """The process-wide encoder configured by stratus settings (the session opens on first use)."""
    from stratus.settings import get_settings

    settings = get_settings()
    return EncoderOptions.from_settings(settings).encoder(settings.model_dir)
