"""Token estimates for the prompt budget: tiktoken when its encoding is on disk, else the encoder's tokenizer.

tiktoken downloads an encoding on first use. The images bake the files into TIKTOKEN_CACHE_DIR; here
the file is looked up first (name = sha1 of its URL, content checked against the published sha256),
so an offline machine falls back at once instead of waiting on the network.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratus.observability import logger

FALLBACK_NAME = "tokenizer-fallback"
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# Published sha256 of tiktoken's files (tiktoken_ext/openai_public.py): a corrupt cache file would
# make tiktoken download it again, so it must be detected here.
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "p50k_base": "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    "r50k_base": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
}


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of a text; `name` says which estimator (reported in usage)."""

    name: str
    count_fn: Callable[[str], int]

    def count(self, text: str) -> int:
        """Tokens of `text` (0 for empty)."""
        return self.count_fn(text) if text else 0


def tiktoken_cache_dir() -> Path | None:
    """The folder tiktoken reads its cache from; None when caching is disabled."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            value = os.environ[variable]
            return Path(value) if value else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def cached_encoding_file(name: str) -> Path | None:
    """The cached file of encoding `name` when it is present and intact, else None (no network)."""
    folder = tiktoken_cache_dir()
    expected = _SHA256.get(name)
    if folder is None or expected is None:
        return None
    path = folder / hashlib.sha1(_BLOB.format(name=name).encode()).hexdigest()  # noqa: S324 - tiktoken's key
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return path if hashlib.sha256(data).hexdigest() == expected else None


def _tiktoken_counter(name: str) -> TokenCounter | None:
    if cached_encoding_file(name) is None:
        return None
    try:
        import tiktoken

        encoding = tiktoken.get_encoding(name)
    except Exception:  # an unexpected failure must not break chat: fall back
        logger.warning("tiktoken encoding failed to load", extra={"encoding": name})
        return None
    return TokenCounter(f"tiktoken:{name}", lambda text: len(encoding.encode(text, disallowed_special=())))


def _tokenizer_counter(tokenizer: Any) -> TokenCounter:
    from tokenizers import Tokenizer

    # The shipped tokenizer.json may fix truncation at 128: count on an untruncated copy.
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    return TokenCounter(FALLBACK_NAME, lambda text: len(plain.encode(text, add_special_tokens=False).ids))


def _rough_counter() -> TokenCounter:
    # Last resort when no tokenizer file is readable either: ~4 characters per token.
    return TokenCounter("chars/4", lambda text: max(1, len(text) // 4))


_lock = threading.Lock()
_counters: dict[str, TokenCounter] = {}


def get_counter(encoding: str) -> TokenCounter:
    """The process-wide counter for `encoding` (tiktoken, else the encoder's tokenizer)."""
    with _lock:
        counter = _counters.get(encoding)
        if counter is None:
            counter = _tiktoken_counter(encoding)
            if counter is None:
                try:
                    from stratus import services

                    counter = _tokenizer_counter(services.chunk_tokenizer())
                except Exception:
                    logger.warning("no tokenizer for token estimates; counting characters")
                    counter = _rough_counter()
            _counters[encoding] = counter
        return counter


def reset() -> None:
    """Forget the cached counters (tests)."""
    with _lock:
        _counters.clear()
