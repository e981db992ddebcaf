"""The document state machine: every status a document's record takes, through named transitions.

    QUEUED ─▶ FETCHED ─▶ EMBEDDED ─▶ INDEXED        (any step may end FAILED; any version DELETED)

Two kinds of write, each one conditional DynamoDB update (stratus.stores.documents):

- a *version* write records what happened to a version of the source object (an upload, a fetch
  outcome, a deletion). It wins unless a newer version is recorded; `not_from` names the states
  that this same version, once in them, may not leave;
- a *stage* write moves the version the record holds (matched by content hash) one stage on, or
  to FAILED. It never touches a DELETED record, and `not_from` names the states it may not leave.

TRANSITIONS is the whole table of guards. The stages, the documents API and the maintenance sweep
call the methods of `DocumentLifecycle`; nothing else writes a document's status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from stratus.models import DocumentStatus, normalise_version
from stratus.observability import MetricName, emit_metric, logger

if TYPE_CHECKING:
    from stratus.models import StageMessage
    from stratus.stores.documents import DocumentRecord, DocumentTable

QUEUED, FETCHED, EMBEDDED, INDEXED, FAILED, DELETED = (
    DocumentStatus.QUEUED,
    DocumentStatus.FETCHED,
    DocumentStatus.EMBEDDED,
    DocumentStatus.INDEXED,
    DocumentStatus.FAILED,
    DocumentStatus.DELETED,
)
# The version a submitted document is recorded QUEUED at: below every S3 sequencer, so any real
# event of its object (a later upload, a fetch outcome) overwrites it.
QUEUED_VERSION = normalise_version("0")
# An unchanged upload is skipped once embed holds it: a FETCHED version is handed over again, because
# fetch may have died (or failed to send) between recording it and sending the embed message, and a
# retry of its event is the only thing that can still send it (a duplicate embed message is harmless).
UNCHANGED_STATES = frozenset({EMBEDDED, INDEXED})


def give_up_reason(stage: str, attempts: int, error: str) -> str:
    """The FAILED reason of a document whose `stage` message goes to the dead-letter queue."""
    error = " ".join(error.split())[:300] or "unknown error"
    return (
        f"{stage}: gave up after {attempts} attempts ({error}); the message is in the {stage} "
        f"dead-letter queue — fix the cause and run `stratus dlq redrive --stage {stage}`"
    )


def _gave_up(doc_id: str, reason: str) -> bool:
    """Say that a document was given up on (a warning and the DocumentsFailed metric)."""
    logger.warning("gave up on the document", extra={"doc_id": doc_id, "reason": reason})
    emit_metric(MetricName.DOCUMENTS_FAILED, 1)
    return True


@dataclass(frozen=True)
class Transition:
    """One named move: to which status, by which kind of write, and which states it may not leave."""

    to: DocumentStatus | None  # None: the record keeps its status (an unchanged re-upload)
    write: Literal["version", "stage"]
    not_from: frozenset[DocumentStatus] = frozenset()


TRANSITIONS: dict[str, Transition] = {
    # version writes (fetch, the documents API)
    "queued": Transition(QUEUED, "version"),
    "fetched": Transition(FETCHED, "version"),
    # Bulk ingestion parses, chunks and encodes in one process: one write takes the version to EMBEDDED.
    "bulk_embedded": Transition(EMBEDDED, "version"),
    "unchanged": Transition(None, "version"),
    "manifest_read": Transition(None, "version"),  # INDEXED with URLs, FAILED without
    "fetch_failed": Transition(FAILED, "version"),
    # A give-up leaves a document alone once this very version got this far (only QUEUED is behind fetch).
    "fetch_given_up": Transition(FAILED, "version", frozenset({FETCHED, EMBEDDED, INDEXED, FAILED, DELETED})),
    "deleted": Transition(DELETED, "version"),
    # stage writes (embed, index, the give-ups of their queues)
    # Never backwards: an INDEXED document stays INDEXED, a FAILED one stays FAILED.
    "embedded": Transition(EMBEDDED, "stage", frozenset({INDEXED, FAILED})),
    "indexed": Transition(INDEXED, "stage"),
    "stage_failed": Transition(FAILED, "stage", frozenset({INDEXED})),
    "given_up": Transition(FAILED, "stage", frozenset({INDEXED, FAILED})),
}


class DocumentLifecycle:
    """Named transitions over the documents table; each returns False when its guard refused it."""

    def __init__(self, documents: DocumentTable) -> None:
        self._documents = documents

    def _version(
        self,
        name: str,
        collection: str,
        doc_id: str,
        version: str,
        to: DocumentStatus | None = None,
        **fields: Any,
    ) -> bool:
        move = TRANSITIONS[name]
        status = move.to or to
        if status is None or move.write != "version":
            raise ValueError(f"{name} is not a version write to a status")
        return self._documents.record_version(
            collection, doc_id, version, status, not_from=move.not_from, **fields
        )

    def _stage(self, name: str, collection: str, doc_id: str, content_sha256: str, **fields: Any) -> bool:
        move = TRANSITIONS[name]
        if move.to is None or move.write != "stage":
            raise ValueError(f"{name} is not a stage write to a status")
        return self._documents.advance(
            collection, doc_id, content_sha256, move.to, not_from=move.not_from, **fields
        )

    # --- version writes ----------------------------------------------------------------------------

    def queued(self, collection: str, doc_id: str, source: str) -> bool:
        """A submitted document, before its object's first event: its status URL answers at once."""
        return self._version("queued", collection, doc_id, QUEUED_VERSION, source=source)

    def fetched(self, collection: str, doc_id: str, version: str, **fields: Any) -> bool:
        """The version was parsed and chunked, its chunks staged for embed."""
        return self._version("fetched", collection, doc_id, version, **fields)

    def bulk_embedded(
        self, collection: str, doc_id: str, version: str, first: bool = False, **fields: Any
    ) -> bool:
        """Bulk ingestion parsed, chunked and encoded the version; its rows are staged for index.

        `first`: the document had no record when the batch was read (its first record is put; if
        one was written meanwhile, the version write decides as for any other).
        """
        status = TRANSITIONS["bulk_embedded"].to
        assert status is not None
        if first and self._documents.create(collection, doc_id, version, status, **fields):
            return True
        return self._version("bulk_embedded", collection, doc_id, version, **fields)

    def unchanged(self, record: DocumentRecord, version: str, detail: str) -> bool:
        """A re-upload with the content `record` already holds: the record keeps its status."""
        return self._version(
            "unchanged", record.collection, record.doc_id, version, to=record.status, detail=detail
        )

    def manifest_read(
        self, collection: str, doc_id: str, version: str, has_urls: bool, **fields: Any
    ) -> bool:
        """A URL manifest's own record: INDEXED when it named URLs (each a document), else FAILED."""
        return self._version(
            "manifest_read", collection, doc_id, version, to=INDEXED if has_urls else FAILED, **fields
        )

    def fetch_failed(self, collection: str, doc_id: str, version: str, **fields: Any) -> bool:
        """The version cannot be read (its `error` says why); a newer version may still succeed."""
        return self._version("fetch_failed", collection, doc_id, version, **fields)

    def fetch_given_up(self, collection: str, doc_id: str, version: str, source: str, reason: str) -> bool:
        """Fetch's last attempt failed (its message goes to the DLQ), unless this version got further."""
        done = self._version(
            "fetch_given_up",
            collection,
            doc_id,
            version,
            source=source,
            error=reason,
            dead_letter_stage="fetch",
        )
        return _gave_up(doc_id, reason) if done else False

    def deleted(self, collection: str, doc_id: str, version: str, **fields: Any) -> bool:
        """The version is a deletion: its chunks are to be removed."""
        return self._version("deleted", collection, doc_id, version, chunk_count=0, **fields)

    # --- stage writes ------------------------------------------------------------------------------

    def embedded(self, collection: str, doc_id: str, content_sha256: str, **fields: Any) -> bool:
        """The version's chunks were encoded and staged for index."""
        return self._stage("embedded", collection, doc_id, content_sha256, **fields)

    def indexed(self, collection: str, doc_id: str, content_sha256: str, chunk_count: int) -> bool:
        """The version's chunks are in the chunk table: searchable."""
        return self._stage("indexed", collection, doc_id, content_sha256, chunk_count=chunk_count)

    def stage_failed(self, collection: str, doc_id: str, content_sha256: str, reason: str) -> bool:
        """A stage cannot go on with the version (staged data missing, unreadable)."""
        return self._stage("stage_failed", collection, doc_id, content_sha256, error=reason)

    def given_up(self, message: StageMessage, stage: str, reason: str) -> bool:
        """`stage`'s message for the version is dead-lettered; a redrive resumes the document."""
        return self._stage(
            "given_up",
            message.collection,
            message.doc_id,
            message.content_sha256,
            error=reason,
            dead_letter_stage=stage,
        )

    def last_attempt_failed(self, stage: str, message: StageMessage, attempts: int, error: str) -> bool:
        """`stage`'s message failed on its last receive: the document is FAILED, naming the DLQ."""
        if message.action == "delete":
            return False  # a deletion's message carries no document state to give up
        reason = give_up_reason(stage, attempts, error)
        marked = [d.doc_id for d in message.documents() if self.given_up(d, stage, reason)]
        for doc_id in marked:
            _gave_up(doc_id, reason)
        return bool(marked)

    def resumed(self, message: StageMessage, stage: str, to: DocumentStatus) -> bool:
        """A redriven message of the stage that gave up takes the document back to `to`."""
        return self._documents.resume(message.collection, message.doc_id, message.content_sha256, stage, to)

    # --- what a stage does with a message ----------------------------------------------------------

    def records_for(self, messages: Iterable[StageMessage]) -> dict[tuple[str, str], DocumentRecord]:
        """The records of the messages' documents by (collection, doc id): one batch read a collection."""
        wanted: dict[str, list[str]] = {}
        for message in messages:
            wanted.setdefault(message.collection, []).append(message.doc_id)
        return {
            (collection, doc_id): record
            for collection, doc_ids in wanted.items()
            for doc_id, record in self._documents.get_many(collection, doc_ids).items()
        }

    def work_for(
        self, message: StageMessage, stage: str, resume_to: DocumentStatus, current: DocumentRecord | None
    ) -> DocumentRecord | None:
        """The document's record if `stage` has work to do for this message; None to acknowledge it.

        `current` is the document's record as read for the batch (None: there is none). Stale versions,
        deleted documents, documents FAILED for good and copies of messages for documents already
        INDEXED are acknowledged. A document this stage gave up on (its message dead-lettered) is
        resumed to `resume_to`: this message is the redriven one, or a late copy of it.
        """
        if current is None or current.content_sha256 != message.content_sha256:
            logger.info(f"stale {stage} message ignored", extra={"doc_id": message.doc_id})
            return None
        if current.status == FAILED and current.dead_letter_stage == stage:
            if not self.resumed(message, stage, resume_to):
                return None
            logger.info(f"redriven {stage} message resumes the document", extra={"doc_id": message.doc_id})
            return current
        if current.status in {DELETED, FAILED}:
            logger.info(
                f"{stage} message for a deleted or failed document ignored", extra={"doc_id": message.doc_id}
            )
            return None
        if current.status == INDEXED:
            # Marked INDEXED only after its chunks were written: a copy has nothing left to do.
            logger.info(
                f"duplicate {stage} message for an indexed document acknowledged; nothing done",
                extra={"doc_id": message.doc_id},
            )
            return None
        return current
