"""Bulk ingestion: many documents parsed, chunked and encoded in one process, indexed in large commits.

The streamed path hands every document from stage to stage through SQS. For a large folder
(`stratus ingest` at or above STRATUS_BULK_MIN_DOCUMENTS, or `--bulk`) the same library code runs
over batches of STRATUS_BULK_BATCH_DOCUMENTS: `FetchStage.prepare` parses and chunks each document
(stale, unchanged and unreadable ones are recorded as the fetch stage records them),
`EmbedStage.encode` encodes the batch in one call (stored vectors of unchanged chunks reused), one
Parquet holds the batch's rows, each document is recorded EMBEDDED, and one `upsert_many` message
hands the batch to the index stage: still the single writer of each collection's table, which
writes the batch in one commit and marks every member INDEXED.

Once every document has settled (INDEXED or FAILED), each file (and its metadata sidecar) is put into
the inbox, where its S3 event finds it unchanged: the inbox stays the collection's source of truth
(reindex, deletion and later uploads work as for any document). An unchanged file whose inbox object
already holds the same bytes is not put again.
"""

from __future__ import annotations

import contextvars
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stratus.errors import PermanentError
from stratus.lifecycle import QUEUED_VERSION, DocumentLifecycle
from stratus.models import BatchMember, DocumentStatus, FetchedContent, StageMessage, make_doc_id
from stratus.observability import MetricName, emit_metric, logger
from stratus.pipeline.common import staging_key, stopwatch
from stratus.pipeline.sqs import map_concurrently

if TYPE_CHECKING:
    from stratus.pipeline.embed import EmbedStage, EncodedBatches
    from stratus.pipeline.fetch import FetchStage, PreparedVersion
    from stratus.stores.blobs import BlobStore
    from stratus.stores.collections import CollectionSettings
    from stratus.stores.documents import DocumentRecord, DocumentTable
    from stratus.stores.queues import MessageQueue

SETTLED = frozenset({DocumentStatus.INDEXED, DocumentStatus.FAILED, DocumentStatus.DELETED})
# A batch's files together: what it holds as text and chunks while it is encoded stays bounded.
MAX_BATCH_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class BulkDocument:
    """One file to ingest: its source name, how to read it, its type and its sidecar's bytes."""

    source: str
    read: Callable[[], bytes]
    size: int
    content_type: str = "application/octet-stream"
    sidecar: Callable[[], bytes] | None = None
    sidecar_size: int = 0

    @property
    def filename(self) -> str:
        """The last part of the source name (what parsers and the format table read)."""
        return self.source.rsplit("/", 1)[-1]


@dataclass
class BulkReport:
    """What a bulk run did: the doc ids it reports on, batches sent, files put into the inbox."""

    doc_ids: list[str] = field(default_factory=list)
    batches: int = 0
    encoded: int = 0
    reused: int = 0
    uploaded: int = 0
    unsettled: list[str] = field(default_factory=list)
    searchable_s: float = 0.0  # when every document had settled (then the files go into the inbox)
    seconds: float = 0.0
    # Where the time went: parse and chunk, encode, the writer thread, putting files into the inbox.
    timings_s: dict[str, float] = field(default_factory=dict)

    def add_time(self, name: str, since: float) -> None:
        """Add the seconds since `since` (time.perf_counter()) to timings_s[name]."""
        self.timings_s[name] = round(self.timings_s.get(name, 0.0) + time.perf_counter() - since, 3)


@dataclass(frozen=True)
class _Sent:
    """A document of the run, waiting to be put into the inbox once it has settled."""

    document: BulkDocument
    doc_id: str
    had_record: bool


def batched(
    items: Iterable[BulkDocument], size: int, max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[list[BulkDocument]]:
    """`items` in lists of at most `size` documents and `max_bytes` of files (a larger file alone)."""
    batch: list[BulkDocument] = []
    held = 0
    for item in items:
        if batch and held + item.size > max_bytes:
            yield batch
            batch, held = [], 0
        batch.append(item)
        held += item.size
        if len(batch) >= size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


class BulkIngest:
    """Runs the fetch and embed stages' library code over large batches; the index stage writes them."""

    def __init__(
        self,
        fetch: FetchStage,
        embed: EmbedStage,
        blobs: BlobStore,
        documents: DocumentTable,
        index_queue: MessageQueue,
        inbox_prefix: str,
        staging_prefix: str,
        max_document_bytes: int,
        batch_documents: int = 256,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._fetch = fetch
        self._embed = embed
        self._blobs = blobs
        self._documents = documents
        self._lifecycle = DocumentLifecycle(documents)
        self._index_queue = index_queue
        self._inbox_prefix = inbox_prefix
        self._staging_prefix = staging_prefix
        self._max_document_bytes = max_document_bytes
        self._batch_documents = max(1, batch_documents)
        self._sleep = sleep

    def run(
        self,
        collection: str,
        documents: Iterable[BulkDocument],
        request_id: str,
        timeout_s: float = 3600.0,
        on_batch: Callable[[BulkReport], None] = lambda _: None,
    ) -> BulkReport:
        """Ingest `documents` into `collection`; return once each has settled (or at the timeout).

        Each batch's writes (staged Parquet, records, index message) run in a background thread
        while the next batch is parsed and encoded. The files go into the inbox once their
        documents have settled, after the last batch: no S3 event competes with the encoder.
        """
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        report = BulkReport()
        waiting: list[_Sent] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-write") as writer:
            writing: Future[None] | None = None
            for batch in batched(documents, self._batch_documents):
                prepared, encoded = self._prepare_and_encode(collection, batch, report, waiting)
                if writing is not None:
                    writing.result()  # (in order, and at most one batch in memory besides this one)
                    on_batch(report)
                if prepared:
                    writing = writer.submit(
                        contextvars.copy_context().run,
                        self._stage_and_send,
                        collection,
                        prepared,
                        encoded,
                        request_id,
                        report,
                    )
            if writing is not None:
                writing.result()
            on_batch(report)
        report.unsettled = self._wait_settled(collection, [w.doc_id for w in waiting], deadline)
        report.searchable_s = round(time.perf_counter() - started, 2)
        # The unsettled too (out of time): their files go into the inbox all the same; nothing is lost.
        self._put_originals(collection, waiting, report)
        report.seconds = round(time.perf_counter() - started, 2)
        return report

    def _prepare_and_encode(
        self, collection: str, batch: list[BulkDocument], report: BulkReport, sent: list[_Sent]
    ) -> tuple[list[PreparedVersion], EncodedBatches | None]:
        """Parse and chunk one batch (one read of its records), then encode it in one call."""
        ids = [make_doc_id(collection, document.source) for document in batch]
        report.doc_ids.extend(ids)
        started = time.perf_counter()
        records = self._documents.get_many(collection, ids)
        sent.extend(_Sent(d, doc_id, doc_id in records) for d, doc_id in zip(batch, ids, strict=True))
        # One read of the collection's chunking a batch: a change applies from the next batch on.
        chunking = self._fetch.settings_for(collection)
        prepared = [
            item
            for document in batch
            if (item := self._prepare(collection, document, records, chunking)) is not None
        ]
        report.add_time("prepare", started)
        if not prepared:
            return [], None
        started = time.perf_counter()
        encoded = self._embed.encode(
            [item.batch for item in prepared],
            [item.new_document for item in prepared],
            [item.timings for item in prepared],
        )
        report.add_time("encode", started)
        report.encoded += encoded.report.chunks_encoded
        report.reused += encoded.report.chunks_reused
        return prepared, encoded

    def _stage_and_send(
        self,
        collection: str,
        prepared: list[PreparedVersion],
        encoded: EncodedBatches | None,
        request_id: str,
        report: BulkReport,
    ) -> None:
        """Stage the batch's rows, record its documents EMBEDDED, send them to index in one message."""
        assert encoded is not None
        started = time.perf_counter()
        batch_id = hashlib.sha256(
            "\x1f".join(f"{p.batch.doc_id}:{p.batch.content_sha256}" for p in prepared).encode()
        ).hexdigest()[:32]
        vectors, counts = encoded.vectors, encoded.encoded
        key, members = self._stage_and_record(collection, batch_id, prepared, vectors, counts)
        if members:
            self._send(collection, batch_id, key, members, request_id)
            report.batches += 1
        report.add_time("write", started)

    def _prepare(
        self,
        collection: str,
        document: BulkDocument,
        records: dict[str, DocumentRecord],
        chunking: CollectionSettings,
    ) -> PreparedVersion | None:
        """The document parsed and chunked, or None (unchanged, stale or FAILED, as fetch records them)."""
        from stratus.ingest.parsing import MAX_SIDECAR_BYTES, parse_metadata_sidecar

        doc_id = make_doc_id(collection, document.source)
        existing = records.get(doc_id)
        # The version the record holds (or the lowest): any later event of the inbox object wins over it.
        version = existing.version if existing is not None else QUEUED_VERSION
        if document.size > self._max_document_bytes:
            reason = f"document is {document.size} bytes; the limit is {self._max_document_bytes}"
            self._fetch.record_failure(collection, document.source, version, reason)
            return None
        if document.sidecar is not None and document.sidecar_size > MAX_SIDECAR_BYTES:
            # Never read: the same refusal the fetch stage gives a sidecar over the limit.
            reason = f"metadata sidecar: larger than {MAX_SIDECAR_BYTES} bytes"
            self._fetch.record_failure(collection, document.source, version, reason)
            return None
        try:
            metadata = dict(parse_metadata_sidecar(document.sidecar())) if document.sidecar else {}
        except PermanentError as error:
            self._fetch.record_failure(collection, document.source, version, f"metadata sidecar: {error}")
            return None
        content = FetchedContent(
            document.source,
            document.read(),
            document.filename,
            document.content_type,
            inbox_key=self._inbox_key(collection, document.source),
        )
        return self._fetch.prepare(collection, content, version, metadata, records, chunking)

    def _stage_and_record(
        self,
        collection: str,
        batch_id: str,
        prepared: list[PreparedVersion],
        vectors: list[Any],
        encoded: list[int],
    ) -> tuple[str, list[BatchMember]]:
        """One Parquet of the batch's rows in staging, each document recorded EMBEDDED: (key, members)."""
        import pyarrow as pa

        from stratus.pipeline.embed import to_parquet
        from stratus.stores.schema import chunk_rows

        rows = pa.concat_tables(
            [
                chunk_rows(item.batch, item_vectors)
                for item, item_vectors in zip(prepared, vectors, strict=True)
            ]
        )
        key = staging_key(self._staging_prefix, collection, "_bulk", batch_id, "embeddings.parquet")
        timings: dict[str, float] = {}
        with stopwatch(timings, "stage_vectors"):
            self._blobs.put_bytes(key, to_parquet(rows), "application/vnd.apache.parquet")
        share = timings["stage_vectors"] / len(prepared)

        def record(pair: tuple[PreparedVersion, int]) -> bool:
            item, count = pair
            item.timings["stage_vectors"] = round(share, 2)
            fields = item.record_fields()
            fields["detail"] = fields["detail"] or "bulk ingestion"
            return self._lifecycle.bulk_embedded(
                collection,
                item.batch.doc_id,
                item.version,
                first=item.existing is None,
                **fields,
                chunks_embedded=count,
                chunks_reused=len(item.batch.chunks) - count,
                timings_ms=item.timings,
            )

        pairs = list(zip(prepared, encoded, strict=True))
        members = []
        for (item, _), outcome in zip(pairs, map_concurrently(record, pairs), strict=True):
            if outcome.result():
                members.append(
                    BatchMember(
                        doc_id=item.batch.doc_id,
                        source=item.batch.source,
                        content_sha256=item.batch.content_sha256,
                        received_at=item.received_at,
                    )
                )
            else:
                logger.info("a newer version was recorded meanwhile", extra={"doc_id": item.batch.doc_id})
        emit_metric(MetricName.DOCUMENTS_FETCHED, len(members))
        emit_metric(MetricName.CHUNKS_PRODUCED, sum(len(p.batch.chunks) for p in prepared))
        return key, members

    def _send(
        self, collection: str, batch_id: str, key: str, members: list[BatchMember], request_id: str
    ) -> None:
        """One `upsert_many` message to the index queue for the members (their rows at `key`)."""
        self._index_queue.send(
            [
                StageMessage(
                    action="upsert_many",
                    collection=collection,
                    doc_id=f"bulk-{batch_id}",
                    source=f"bulk batch of {len(members)} document(s)",
                    content_sha256=batch_id,
                    key=key,
                    request_id=request_id,
                    members=members,
                )
            ]
        )
        logger.info("bulk batch sent to index", extra={"collection": collection, "documents": len(members)})

    def _wait_settled(self, collection: str, doc_ids: list[str], deadline: float) -> list[str]:
        """Poll until every document is INDEXED, FAILED or DELETED (or the deadline); those that are not."""
        pending = doc_ids
        while pending:
            statuses = self._documents.get_many(collection, pending, ())
            pending = [d for d in pending if (r := statuses.get(d)) is None or r.status not in SETTLED]
            if not pending or time.monotonic() >= deadline:
                break
            self._sleep(0.2)
        return pending

    def _put_originals(self, collection: str, sent: Sequence[_Sent], report: BulkReport) -> None:
        """Each file (its sidecar first) into the inbox, unless the inbox object holds the same bytes."""

        def put(item: _Sent) -> bool:
            key = self._inbox_key(collection, item.document.source)
            data = item.document.read()  # (read again, not kept from parsing: a batch's bytes stay bounded)
            # A document without a record before the run is new: no inbox object of it to compare.
            info = self._blobs.head(key) if item.had_record else None
            if info is not None and info.size == len(data) and info.etag == _etag(data):
                return False
            if item.document.sidecar is not None:
                from stratus.ingest.parsing import sidecar_key_for

                self._blobs.put_bytes(sidecar_key_for(key), item.document.sidecar(), "application/json")
            self._blobs.put_bytes(key, data, item.document.content_type)
            return True

        started = time.perf_counter()
        for outcome in map_concurrently(put, list(sent), workers=16):
            report.uploaded += int(outcome.result())
        report.add_time("inbox", started)

    def _inbox_key(self, collection: str, source: str) -> str:
        return f"{self._inbox_prefix}{collection}/{source}"


def _etag(data: bytes) -> str:
    """The ETag S3 gives an object put in one request: the hex MD5 of its bytes."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def build_bulk_ingest() -> BulkIngest:
    """Bulk ingestion wired to the process-wide stores, encoder and settings."""
    from stratus import services
    from stratus.pipeline.embed import build_embed_stage
    from stratus.pipeline.fetch import build_fetch_stage
    from stratus.settings import get_settings

    settings = get_settings()
    return BulkIngest(
        fetch=build_fetch_stage(),
        embed=build_embed_stage(),
        blobs=services.blob_store(),
        documents=services.document_table(),
        index_queue=services.queue("index"),
        inbox_prefix=settings.inbox_prefix,
        staging_prefix=settings.staging_prefix,
        max_document_bytes=settings.max_document_bytes,
        batch_documents=settings.bulk_batch_documents,
    )
