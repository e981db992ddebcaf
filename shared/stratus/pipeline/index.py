"""Index stage: per SQS batch, one merge_insert and one delete per collection, then mark INDEXED."""

from __future__ import annotations

import io
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stratus.errors import PermanentError
from stratus.lifecycle import DocumentLifecycle
from stratus.models import DocumentStatus, StageMessage
from stratus.observability import MetricName, emit_metric, log_context, logger
from stratus.pipeline.common import read_stage_output
from stratus.pipeline.sqs import (
    BatchFailures,
    in_log_context,
    map_concurrently,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from stratus.pipeline.sqs import LastReceive
    from stratus.stores.blobs import BlobStore
    from stratus.stores.documents import DocumentRecord, DocumentTable
    from stratus.stores.vectors import ChunkStore


@dataclass
class IndexBatchReport(BatchFailures):
    """What one call of `IndexStage.handle_batch` did: the messages to retry, and why."""


@dataclass
class _CollectionWork:
    upserts: list[tuple[StageMessage, pa.Table]] = field(default_factory=list)
    deletes: list[StageMessage] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)


class IndexStage:
    """The single writer of the chunk tables."""

    def __init__(self, blobs: BlobStore, documents: DocumentTable, chunks: ChunkStore) -> None:
        self._blobs = blobs
        self._lifecycle = DocumentLifecycle(documents)
        self._chunks = chunks

    def give_up(self, last: LastReceive) -> bool:
        """A message failed on its last receive: its document is FAILED, resumable by a redrive."""
        return self._lifecycle.last_attempt_failed("index", last.message, last.attempts, last.error)

    def handle_batch(self, messages: Sequence[tuple[str, StageMessage]]) -> IndexBatchReport:
        """Index a batch of (message id, message); the report names the messages to retry."""
        work: dict[str, _CollectionWork] = defaultdict(_CollectionWork)
        report = IndexBatchReport()
        try:
            records = self._lifecycle.records_for(d for _, m in messages for d in m.documents())
        except Exception as error:
            logger.exception("could not read the batch's document records")
            report.fail([mid for mid, _ in messages], f"reading document records: {error}")
            return report
        # A bulk message's rows are read once; its members then go through the same steps as others.
        bulk = self._load_bulk([(mid, m) for mid, m in messages if m.action == "upsert_many"], report)
        documents = [
            (mid, document)
            for mid, m in messages
            if m.action != "upsert_many" or mid in bulk
            for document in m.documents()
        ]
        upserts = [(mid, m) for mid, m in documents if m.action != "delete"]
        # Per-document reads of staged vectors overlap: they are round trips, not CPU.
        loads = map_concurrently(
            lambda pair: in_log_context(
                pair[1],
                self._load_current,
                pair[1],
                records.get((pair[1].collection, pair[1].doc_id)),
                bulk.get(pair[0]),
            ),
            upserts,
        )
        loaded = {(mid, m.doc_id): outcome for (mid, m), outcome in zip(upserts, loads, strict=True)}
        for message_id, message in documents:
            item = work[message.collection]
            if message.action == "delete":
                current = records.get((message.collection, message.doc_id))
                if current is not None and current.status == DocumentStatus.DELETED:
                    item.deletes.append(message)
                    item.message_ids.append(message_id)
                continue
            try:
                rows = loaded[(message_id, message.doc_id)].result()
            except PermanentError as error:
                logger.warning(
                    "index message dropped", extra={"doc_id": message.doc_id, "reason": str(error)}
                )
                continue
            except Exception as error:
                logger.exception("could not load staged vectors", extra={"doc_id": message.doc_id})
                report.fail([message_id], str(error))
                continue
            if rows is not None:
                item.upserts.append((message, rows))
                item.message_ids.append(message_id)
        for collection, item in work.items():
            try:
                self._write(collection, item)
            except Exception as error:
                logger.exception(
                    "index write failed; the batch's messages will be retried",
                    extra={"collection": collection},
                )
                report.fail(item.message_ids, f"writing the chunk table: {error}")
        return report

    def _load_bulk(
        self, messages: Sequence[tuple[str, StageMessage]], report: IndexBatchReport
    ) -> dict[str, dict[str, pa.Table]]:
        """The rows of each bulk message by member doc id; a message that cannot be read is not in it."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        tables: dict[str, dict[str, pa.Table]] = {}
        for message_id, message in messages:
            try:
                data = read_stage_output(self._blobs, message)
                if data is None:
                    reason = f"staged vectors {message.key} are missing"
                    for member in message.documents():
                        self._lifecycle.stage_failed(
                            member.collection, member.doc_id, member.content_sha256, reason
                        )
                    logger.warning("bulk index message dropped", extra={"key": message.key, "reason": reason})
                    continue
                table = pq.read_table(io.BytesIO(data))
            except Exception as error:
                logger.exception("could not load staged vectors", extra={"key": message.key})
                report.fail([message_id], str(error))
                continue
            column = table.column("doc_id")
            tables[message_id] = {
                member.doc_id: table.filter(pc.equal(column, member.doc_id)) for member in message.members
            }
        return tables

    def _load_current(
        self,
        message: StageMessage,
        record: DocumentRecord | None,
        bulk_rows: Mapping[str, pa.Table] | None = None,
    ) -> pa.Table | None:
        import pyarrow.parquet as pq

        if self._lifecycle.work_for(message, "index", DocumentStatus.EMBEDDED, record) is None:
            return None
        if bulk_rows is not None:
            rows = bulk_rows.get(message.doc_id)
            if rows is None or rows.num_rows == 0:
                reason = f"staged vectors {message.key} hold no rows of the document"
                self._lifecycle.stage_failed(
                    message.collection, message.doc_id, message.content_sha256, reason
                )
                raise PermanentError(reason)
            return rows
        data = read_stage_output(self._blobs, message)
        if data is None:
            reason = f"staged vectors {message.key} are missing"
            self._lifecycle.stage_failed(message.collection, message.doc_id, message.content_sha256, reason)
            raise PermanentError(reason)
        return pq.read_table(io.BytesIO(data))

    def _write(self, collection: str, item: _CollectionWork) -> None:
        import pyarrow as pa

        latest: dict[str, tuple[StageMessage, pa.Table]] = {}
        for message, rows in item.upserts:
            latest[message.doc_id] = (message, rows)
        rows = pa.concat_tables([r for _, r in latest.values()]) if latest else None
        deletes = [m.doc_id for m in item.deletes if m.doc_id not in latest]
        if rows is None and self._chunks.open(collection) is None:
            return
        dimension = rows.schema.field("vector").type.list_size if rows is not None else 0
        replace = {doc_id: r.column("chunk_id").to_pylist() for doc_id, (_, r) in latest.items()}
        self._chunks.write(collection, rows, replace, deletes, dimension)

        def mark_indexed(doc_id: str) -> bool:
            message, table = latest[doc_id]
            with log_context(request_id=message.request_id, doc_id=doc_id):
                done = self._lifecycle.indexed(collection, doc_id, message.content_sha256, table.num_rows)
                if done:
                    logger.info("document indexed", extra={"chunks": table.num_rows})
                return done

        indexed_at = time.time()
        for doc_id, outcome in zip(latest, map_concurrently(mark_indexed, list(latest)), strict=True):
            received_at = latest[doc_id][0].received_at
            if outcome.result() and received_at is not None:
                latency_ms = max(0.0, (indexed_at - received_at) * 1000)
                emit_metric(MetricName.INGEST_LATENCY_MS, latency_ms, "Milliseconds")
        emit_metric(MetricName.DOCUMENTS_INDEXED, len(latest))
        emit_metric(MetricName.CHUNKS_INDEXED, rows.num_rows if rows else 0)
        emit_metric(MetricName.DOCUMENTS_DELETED, len(deletes))


def build_index_stage() -> IndexStage:
    """The index stage wired to the process-wide stores."""
    from stratus import services

    return IndexStage(services.blob_store(), services.document_table(), services.chunk_store())


def fifo_failures(event: Mapping[str, Any], response: dict[str, list[dict[str, str]]]) -> list[str]:
    """The records to report failed from a FIFO queue: each failed one and every later one of its group.

    Lambda's rule for FIFO event sources: a message group stops at its first failure, so the group's
    order survives the retry (a delete is never applied before the upsert it follows).
    """
    failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
    stopped: set[str] = set()
    out: list[str] = []
    for record in event.get("Records", []):
        message_id = record.get("messageId", "")
        group = record.get("attributes", {}).get("MessageGroupId")
        if message_id in failed or (group is not None and group in stopped):
            out.append(message_id)
            if group is not None:
                stopped.add(group)
    return out


def run_index_batch(event: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Handle one SQS batch of index messages; the response names the messages to retry."""
    from stratus.pipeline.sqs import batch_response, run_stage_batch
    from stratus.settings import get_settings

    index = build_index_stage()
    _, _, response = run_stage_batch(
        event, index.handle_batch, get_settings().index_max_receive_count, index.give_up
    )
    return batch_response(fifo_failures(event, response))
