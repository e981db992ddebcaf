"""Embed stage: encode a staged chunk batch (reusing vectors of unchanged chunks), hand over to index."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from stratus.errors import PermanentError, TransientError
from stratus.lifecycle import DocumentLifecycle
from stratus.models import ChunkBatch, DocumentStatus, StageMessage
from stratus.observability import MetricName, emit_metric, logger
from stratus.pipeline.common import (
    inline_payload,
    load_chunk_batch,
    read_stage_output,
    staging_key,
    stopwatch,
)
from stratus.pipeline.sqs import (
    BatchFailures,
    in_log_context,
    map_concurrently,
)
from stratus.stores.schema import chunk_rows, embed_text

if TYPE_CHECKING:
    import pyarrow as pa

    from stratus.pipeline.sqs import LastReceive
    from stratus.stores.blobs import BlobStore
    from stratus.stores.documents import DocumentRecord, DocumentTable
    from stratus.stores.queues import MessageQueue
    from stratus.stores.vectors import ChunkStore


class DocumentEncoder(Protocol):
    """What the embed stage needs of an encoder."""

    @property
    def dimension(self) -> int: ...

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class _Pending:
    """One document version of an SQS batch on its way through the embed stage."""

    message_ids: list[str]
    message: StageMessage
    batch: ChunkBatch
    timings: dict[str, float]
    vectors: np.ndarray | None = None
    missing: list[int] = field(default_factory=list)


@dataclass
class EmbedBatchReport(BatchFailures):
    """What one call of `EmbedStage.handle_batch` did (the worker and benchmarks read it)."""

    documents: int = 0
    chunks_encoded: int = 0
    chunks_reused: int = 0
    encode_ms: float = 0.0


@dataclass(frozen=True)
class EncodedBatches:
    """What `EmbedStage.encode` returns: each batch's vectors and how many of them were encoded."""

    vectors: list[np.ndarray]
    encoded: list[int]
    report: EmbedBatchReport


@dataclass
class _Loaded:
    """What the batch's messages turned out to need: encoding, or only the pointer sent again."""

    pending: list[_Pending] = field(default_factory=list)
    # (message ids, pointer): already EMBEDDED with staged vectors; the index message may be missing.
    resend: list[tuple[list[str], StageMessage]] = field(default_factory=list)


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
        inline_max_bytes: int = 0,
    ) -> None:
        self._blobs = blobs
        self._lifecycle = DocumentLifecycle(documents)
        self._chunks = chunks
        self._index_queue = index_queue
        self._encoder = encoder
        self._staging_prefix = staging_prefix
        self._inline_max_bytes = inline_max_bytes

    def handle(self, message: StageMessage) -> None:
        """Embed one document version (a batch of one); raise when it should be retried."""
        report = self.handle_batch([("single", message)])
        if report.failed:
            raise TransientError(f"embedding {message.doc_id} failed; it will be retried")

    def give_up(self, last: LastReceive) -> bool:
        """A message failed on its last receive: its document is FAILED, resumable by a redrive."""
        return self._lifecycle.last_attempt_failed("embed", last.message, last.attempts, last.error)

    def handle_batch(self, messages: Sequence[tuple[str, StageMessage]]) -> EmbedBatchReport:
        """Embed a whole SQS batch at once: one stored-vector lookup per collection, one encoder call.

        Returns the ids of the messages to retry. A document whose staged file is missing or
        unreadable is FAILED and acknowledged alone; a transient fault of one document retries
        only its message; an encoder failure retries every message of the batch.
        """
        report = EmbedBatchReport()
        loaded = self._load(messages, report)
        forwarded = list(loaded.resend)
        if loaded.pending:
            forwarded.extend(self._encode_and_stage(loaded.pending, report))
        if forwarded:
            try:
                self._index_queue.send([message for _, message in forwarded])
            except Exception as error:
                logger.exception("could not hand over to index; the batch will be retried")
                report.fail([mid for ids, _ in forwarded for mid in ids], f"sending to index: {error}")
                return report
        emit_metric(MetricName.CHUNKS_EMBEDDED, report.chunks_encoded)
        emit_metric(MetricName.CHUNKS_REUSED, report.chunks_reused)
        return report

    def encode(
        self,
        batches: Sequence[ChunkBatch],
        new_documents: Sequence[bool],
        timings: Sequence[dict[str, float]],
    ) -> EncodedBatches:
        """Vectors for every chunk of each batch in one encoder call, stored ones of unchanged chunks reused.

        Bulk ingestion's embed step. `new_documents[i]`: batch i has no indexed version (no lookup);
        each `timings[i]` gets its share of the encode time. Raises TransientError if the encoder fails.
        """
        pending = [
            _Pending(
                [],
                StageMessage(collection=b.collection, doc_id=b.doc_id, source=b.source, new_document=new),
                b,
                timing,
            )
            for b, new, timing in zip(batches, new_documents, timings, strict=True)
        ]
        report = EmbedBatchReport()
        if not self._encode(pending, report):
            raise TransientError(next(iter(report.errors.values()), "the encoder failed"))
        vectors = [item.vectors for item in pending if item.vectors is not None]
        return EncodedBatches(vectors, [len(item.missing) for item in pending], report)

    def _encode(self, pending: list[_Pending], report: EmbedBatchReport) -> bool:
        """Fill each item's vectors: stored ones reused, the rest encoded in one call (False: it failed)."""
        encoder = self._encoder()
        self._reuse_stored_vectors(pending, encoder.dimension, report)
        texts: list[str] = []
        for item in pending:
            texts.extend(
                embed_text(item.batch.title, item.batch.chunks[i].section, item.batch.chunks[i].text)
                for i in item.missing
            )
        started = time.perf_counter()
        try:
            encoded = encoder.embed_documents(texts) if texts else np.empty((0, encoder.dimension))
        except Exception as error:
            logger.exception("encoder failed; the whole batch will be retried")
            report.fail(
                [mid for item in pending for mid in item.message_ids] or ["encoder"], f"encoder: {error}"
            )
            return False
        report.encode_ms = (time.perf_counter() - started) * 1000
        report.chunks_encoded = len(texts)
        offset = 0
        for item in pending:
            assert item.vectors is not None
            count = len(item.missing)
            if count:
                item.vectors[item.missing] = encoded[offset : offset + count]
            offset += count
            # The batch's encode time, shared out by each document's number of encoded chunks.
            share = report.encode_ms * count / len(texts) if texts else 0.0
            item.timings["embed"] = round(item.timings.get("embed", 0.0) + share, 2)
        return True

    def _encode_and_stage(
        self, pending: list[_Pending], report: EmbedBatchReport
    ) -> list[tuple[list[str], StageMessage]]:
        """Encode what the stored vectors do not cover, stage each document; the pointers to send."""
        if not self._encode(pending, report):
            return []
        forwarded: list[tuple[list[str], StageMessage]] = []
        staged = map_concurrently(lambda item: in_log_context(item.message, self._stage, item), pending)
        for item, outcome in zip(pending, staged, strict=True):
            try:
                message = outcome.result()
            except Exception as error:
                logger.exception("could not stage vectors", extra={"doc_id": item.batch.doc_id})
                report.fail(item.message_ids, f"staging vectors: {error}")
                continue
            if message is not None:
                forwarded.append((item.message_ids, message))
                report.documents += 1
        return forwarded

    def _load(self, messages: Sequence[tuple[str, StageMessage]], report: EmbedBatchReport) -> _Loaded:
        """The current, readable document versions of the batch (duplicates merged)."""
        unique: dict[tuple[str, str, str], tuple[str, StageMessage]] = {}
        duplicates: dict[tuple[str, str, str], list[str]] = {}
        for message_id, message in messages:
            version = (message.collection, message.doc_id, message.content_sha256)
            if version in unique:
                duplicates.setdefault(version, []).append(message_id)
            else:
                unique[version] = (message_id, message)
        loaded = _Loaded()
        try:
            records = self._lifecycle.records_for(message for _, message in unique.values())
        except Exception as error:
            logger.exception("could not read the batch's document records")
            report.fail([mid for mid, _ in messages], f"reading document records: {error}")
            return loaded
        # Per-document reads of staged chunks overlap: they are round trips, not CPU.
        loads = map_concurrently(
            lambda pair: in_log_context(
                pair[1], self._load_one, *pair, records.get((pair[1].collection, pair[1].doc_id))
            ),
            list(unique.values()),
        )
        for (version, (message_id, message)), outcome in zip(unique.items(), loads, strict=True):
            ids = [message_id, *duplicates.get(version, [])]
            try:
                item = outcome.result()
            except PermanentError as error:
                logger.warning("document failed", extra={"doc_id": message.doc_id, "reason": str(error)})
                self._fail(message, str(error))
                continue
            except Exception as error:
                logger.exception("could not load staged chunks", extra={"doc_id": message.doc_id})
                report.fail(ids, str(error))
                continue
            if isinstance(item, _Pending):
                item.message_ids = ids
                loaded.pending.append(item)
            elif item is not None:
                loaded.resend.append((ids, item))
            # (None: stale, duplicate or failed for good; acknowledged, its duplicates with it)
        return loaded

    def _load_one(
        self, message_id: str, message: StageMessage, record: DocumentRecord | None
    ) -> _Pending | StageMessage | None:
        """The document to encode, the pointer to send again (already EMBEDDED), or None to acknowledge."""
        current = self._lifecycle.work_for(message, "embed", DocumentStatus.FETCHED, record)
        if current is None:
            return None
        if current.status == DocumentStatus.EMBEDDED:
            # An earlier attempt staged the vectors, but may have died before sending the pointer.
            key = self._embeddings_key(message.collection, message.doc_id, message.content_sha256)
            if self._blobs.head(key) is not None:
                logger.info(
                    "duplicate embed message for an embedded document: pointer sent again, nothing encoded",
                    extra={"doc_id": message.doc_id},
                )
                return message.model_copy(update={"key": key, "payload": None})
        data = read_stage_output(self._blobs, message)
        if data is None:
            raise PermanentError(f"staged chunks {message.key} are missing")
        try:
            batch = load_chunk_batch(data)
        except (OSError, EOFError, ValueError) as error:
            raise PermanentError(f"staged chunks {message.key} are unreadable: {error}") from error
        return _Pending([message_id], message, batch, dict(current.timings_ms))

    def _embeddings_key(self, collection: str, doc_id: str, content_sha256: str) -> str:
        return staging_key(self._staging_prefix, collection, doc_id, content_sha256, "embeddings.parquet")

    def _reuse_stored_vectors(
        self, pending: list[_Pending], dimension: int, report: EmbedBatchReport
    ) -> None:
        """Stored vectors of unchanged chunks: one lookup per collection, none for new documents."""
        lookups: dict[str, list[str]] = {}
        for item in pending:
            if not item.message.new_document:
                lookups.setdefault(item.batch.collection, []).append(item.batch.doc_id)
        stored: dict[str, dict[str, dict[str, np.ndarray]]] = {
            collection: self._chunks.vectors_for_documents(collection, doc_ids)
            for collection, doc_ids in lookups.items()
        }
        for item in pending:
            known = stored.get(item.batch.collection, {}).get(item.batch.doc_id, {})
            item.vectors = np.zeros((len(item.batch.chunks), dimension), dtype=np.float32)
            for i, chunk in enumerate(item.batch.chunks):
                vector = known.get(chunk.chunk_id)
                if vector is not None and vector.shape[0] == dimension:
                    item.vectors[i] = vector
                else:
                    item.missing.append(i)
            report.chunks_reused += len(item.batch.chunks) - len(item.missing)

    def _stage(self, item: _Pending) -> StageMessage | None:
        """Write one document's embeddings, mark it EMBEDDED; the pointer to send to index."""
        batch, timings = item.batch, item.timings
        assert item.vectors is not None
        staged = to_parquet(chunk_rows(batch, item.vectors))
        payload = inline_payload(staged, self._inline_max_bytes)
        key = ""
        if payload is None:
            key = self._embeddings_key(batch.collection, batch.doc_id, batch.content_sha256)
            with stopwatch(timings, "stage_vectors"):
                self._blobs.put_bytes(key, staged, "application/vnd.apache.parquet")
        reused = len(batch.chunks) - len(item.missing)
        if not self._lifecycle.embedded(
            batch.collection,
            batch.doc_id,
            batch.content_sha256,
            chunks_embedded=len(item.missing),
            chunks_reused=reused,
            timings_ms=timings,
        ):
            logger.info("document changed while embedding; result dropped", extra={"doc_id": batch.doc_id})
            return None
        logger.info("document embedded", extra={"chunks_encoded": len(item.missing), "chunks_reused": reused})
        return item.message.model_copy(update={"key": key, "payload": payload})

    def _fail(self, message: StageMessage, reason: str) -> None:
        self._lifecycle.stage_failed(message.collection, message.doc_id, message.content_sha256, reason)
        emit_metric(MetricName.DOCUMENTS_FAILED, 1)


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
        inline_max_bytes=get_settings().stage_inline_max_bytes,
    )


def run_embed_batch(event: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Handle one SQS batch of embed messages at once; the response names the messages to retry."""
    from stratus.pipeline.sqs import run_stage_batch
    from stratus.settings import get_settings

    embed = build_embed_stage()
    count, report, response = run_stage_batch(
        event, embed.handle_batch, get_settings().embed_max_receive_count, embed.give_up
    )
    logger.info(
        "embed batch",
        extra={
            "messages": count,
            "documents": report.documents,
            "chunks_encoded": report.chunks_encoded,
            "chunks_reused": report.chunks_reused,
            "encode_ms": round(report.encode_ms, 1),
        },
    )
    return response
