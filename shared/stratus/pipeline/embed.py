"""Embed stage: encode a staged chunk batch (reusing vectors of unchanged chunks), hand over to index."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from stratus.errors import PermanentError
from stratus.models import ChunkBatch, DocumentStatus, StageMessage
from stratus.observability import MetricName, logger, metrics
from stratus.pipeline.common import embed_text, load_chunk_batch, staging_key, stopwatch

if TYPE_CHECKING:
    import pyarrow as pa

    from stratus.stores.blobs import BlobStore
    from stratus.stores.documents import DocumentTable
    from stratus.stores.queues import MessageQueue
    from stratus.stores.vectors import ChunkStore


class DocumentEncoder(Protocol):
    """What the embed stage needs of an encoder."""

    @property
    def dimension(self) -> int: ...

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...


def chunk_rows(batch: ChunkBatch, vectors: np.ndarray) -> pa.Table:
    """The chunk table rows of one document version, vectors included."""
    import pyarrow as pa

    from stratus.stores.vectors import chunk_schema

    metadata_json = json.dumps(batch.metadata, sort_keys=True)
    columns = {
        "chunk_id": [c.chunk_id for c in batch.chunks],
        "doc_id": [batch.doc_id] * len(batch.chunks),
        "source": [batch.source] * len(batch.chunks),
        "title": [batch.title] * len(batch.chunks),
        "section": [c.section for c in batch.chunks],
        "page": [c.page for c in batch.chunks],
        "position": [c.position for c in batch.chunks],
        "token_count": [c.token_count for c in batch.chunks],
        "text": [c.text for c in batch.chunks],
        "fts_text": [embed_text(batch.title, c.section, c.text) for c in batch.chunks],
        "content_sha256": [batch.content_sha256] * len(batch.chunks),
        "metadata_json": [metadata_json] * len(batch.chunks),
    }
    dimension = vectors.shape[1]
    schema = chunk_schema(dimension)
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema if f.name != "vector"]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, dimension))
    return pa.Table.from_arrays(arrays, schema=schema)


class EmbedStage:
    """Encodes chunk batches and stages them as Parquet for the index stage."""

    def __init__(
        self,
        blobs: BlobStore,
        documents: DocumentTable,
        chunks: ChunkStore,
        index_queue: MessageQueue,
        encoder: Callable[[], DocumentEncoder],
        staging_prefix: str,
    ) -> None:
        self._blobs = blobs
        self._documents = documents
        self._chunks = chunks
        self._index_queue = index_queue
        self._encoder = encoder
        self._staging_prefix = staging_prefix

    def handle(self, message: StageMessage) -> None:
        """Embed the document version the message points at, unless it is no longer current."""
        current = self._documents.get(message.collection, message.doc_id)
        if current is None or current.content_sha256 != message.content_sha256:
            logger.info("stale embed message ignored", extra={"doc_id": message.doc_id})
            return
        timings = dict(current.timings_ms)
        data = self._blobs.get_bytes(message.key)
        if data is None:
            raise PermanentError(f"staged chunks {message.key} are missing")
        batch = load_chunk_batch(data)
        with stopwatch(timings, "embed"):
            vectors, reused = self.vectors_for(batch)
        key = staging_key(
            self._staging_prefix, batch.collection, batch.doc_id, batch.content_sha256, "embeddings.parquet"
        )
        with stopwatch(timings, "stage_vectors"):
            self._blobs.put_bytes(
                key, to_parquet(chunk_rows(batch, vectors)), "application/vnd.apache.parquet"
            )
        embedded = len(batch.chunks) - reused
        if not self._documents.advance(
            batch.collection,
            batch.doc_id,
            batch.content_sha256,
            DocumentStatus.EMBEDDED,
            chunks_embedded=embedded,
            chunks_reused=reused,
            timings_ms=timings,
        ):
            logger.info("document changed while embedding; result dropped", extra={"doc_id": batch.doc_id})
            return
        self._index_queue.send([message.model_copy(update={"key": key})])
        metrics.add_metric(name=MetricName.CHUNKS_EMBEDDED, unit="Count", value=embedded)
        metrics.add_metric(name=MetricName.CHUNKS_REUSED, unit="Count", value=reused)

    def vectors_for(self, batch: ChunkBatch) -> tuple[np.ndarray, int]:
        """Vectors of every chunk in order, and how many were reused from the index."""
        stored = self._chunks.vectors_for(batch.collection, batch.doc_id)
        encoder = self._encoder()
        vectors = np.zeros((len(batch.chunks), encoder.dimension), dtype=np.float32)
        missing = []
        for i, chunk in enumerate(batch.chunks):
            vector = stored.get(chunk.chunk_id)
            if vector is not None and vector.shape[0] == encoder.dimension:
                vectors[i] = vector
            else:
                missing.append(i)
        if missing:
            texts = [embed_text(batch.title, batch.chunks[i].section, batch.chunks[i].text) for i in missing]
            vectors[missing] = encoder.embed_documents(texts)
        return vectors, len(batch.chunks) - len(missing)


def to_parquet(table: pa.Table) -> bytes:
    """Serialise an Arrow table as Parquet bytes."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def build_embed_stage() -> EmbedStage:
    """The embed stage wired to the process-wide stores and encoder."""
    from stratus import services
    from stratus.embedding.encoder import get_encoder
    from stratus.settings import get_settings

    return EmbedStage(
        blobs=services.blob_store(),
        documents=services.document_table(),
        chunks=services.chunk_store(),
        index_queue=services.queue("index"),
        encoder=get_encoder,
        staging_prefix=get_settings().staging_prefix,
    )


def run_embed_message(body: str) -> None:
    """Handle one embed-queue message; raise to have it retried."""
    message = StageMessage.model_validate_json(body)
    logger.append_keys(request_id=message.request_id, doc_id=message.doc_id)
    try:
        build_embed_stage().handle(message)
    except PermanentError as error:
        _documents_fail(message, str(error))


def _documents_fail(message: StageMessage, reason: str) -> None:
    from stratus import services

    services.document_table().advance(
        message.collection, message.doc_id, message.content_sha256, DocumentStatus.FAILED, error=reason
    )
    metrics.add_metric(name=MetricName.DOCUMENTS_FAILED, unit="Count", value=1)
