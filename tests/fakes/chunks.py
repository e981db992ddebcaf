"""Small chunk batches for tests that index hand-written documents without the pipeline."""

from __future__ import annotations

import hashlib
from typing import Any

from stratus.models import Chunk, ChunkBatch, make_chunk_id, make_doc_id


def single_chunk_batch(
    collection: str,
    source: str,
    title: str,
    text: str,
    metadata: dict[str, Any] | None = None,
    section: str = "",
) -> ChunkBatch:
    """A document version of one chunk, with the ids the pipeline would give it."""
    doc_id = make_doc_id(collection, source)
    chunk = Chunk(
        chunk_id=make_chunk_id(doc_id, text, 0),
        position=0,
        text=text,
        token_count=len(text.split()),
        section=section,
    )
    return ChunkBatch(
        collection=collection,
        doc_id=doc_id,
        source=source,
        title=title,
        content_sha256=hashlib.sha256(text.encode()).hexdigest(),
        metadata=metadata or {},
        chunks=[chunk],
    )
