"""Pieces every stage shares: staging keys, embed text, timing."""

from __future__ import annotations

import base64
import binascii
import gzip
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from stratus.errors import PermanentError
from stratus.models import ChunkBatch, StageMessage

if TYPE_CHECKING:
    from stratus.stores.blobs import BlobStore


def staging_key(prefix: str, collection: str, doc_id: str, content_sha256: str, name: str) -> str:
    """Where a stage writes its output for one document version."""
    return f"{prefix}{collection}/{doc_id}/{content_sha256}/{name}"


def inline_payload(data: bytes, inline_max_bytes: int) -> str | None:
    """`data` as base64 to carry in the next stage's message, or None when it must go to S3."""
    return base64.b64encode(data).decode("ascii") if len(data) <= inline_max_bytes else None


def read_stage_output(blobs: BlobStore, message: StageMessage) -> bytes | None:
    """The stage output the message carries, or that of the object it points at (None: missing)."""
    if message.payload is None:
        return blobs.get_bytes(message.key)
    try:
        return base64.b64decode(message.payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise PermanentError(f"the message's payload is not base64: {error}") from error


def dump_chunk_batch(batch: ChunkBatch) -> bytes:
    """Serialise the fetch stage's output (gzip JSON: no pyarrow in the fetch function)."""
    return gzip.compress(batch.model_dump_json().encode(), compresslevel=5)


def load_chunk_batch(data: bytes) -> ChunkBatch:
    """Read what dump_chunk_batch wrote."""
    return ChunkBatch.model_validate_json(gzip.decompress(data))


@contextmanager
def stopwatch(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's wall time in milliseconds to timings[name]."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(timings.get(name, 0.0) + (time.perf_counter() - started) * 1000, 2)
