"""Fetch stage: read or download a document, parse, chunk, stage the chunks, hand over to embed."""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, unquote_plus

from stratus.errors import PermanentError, TransientError
from stratus.ingest.parsing import MANIFEST_SUFFIX, is_manifest
from stratus.lifecycle import UNCHANGED_STATES, DocumentLifecycle, give_up_reason
from stratus.models import (
    REQUEST_ID_METADATA,
    Attachment,
    ChunkBatch,
    DocumentStatus,
    FetchedContent,
    StageMessage,
    check_collection_name,
    make_doc_id,
    normalise_version,
)
from stratus.observability import MetricName, emit_metric, log_context, logger
from stratus.pipeline.common import dump_chunk_batch, inline_payload, staging_key, stopwatch

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from stratus.settings import Settings
    from stratus.stores.blobs import BlobStore
    from stratus.stores.collections import CollectionSettings, CollectionSettingsStore
    from stratus.stores.documents import DocumentRecord, DocumentTable
    from stratus.stores.queues import MessageQueue

# A message's attachments are written beside it in the inbox, as documents of their own:
# `<message key>.attachments/<n>-<safe name>`, linked to the message by object metadata.
ATTACHMENTS_SUFFIX = ".attachments/"
# Attachments of attachments become documents down to this depth; deeper ones are folded into their message.
MAX_ATTACHMENT_DEPTH = 3
ATTACHMENT_LINK_METADATA = {
    "parent_doc_id": "stratus-parent-doc-id",
    "email_message": "stratus-email-message",
    "attachment_name": "stratus-attachment-name",
}
# A URL document in one of these states, written within STRATUS_URL_REFETCH_AFTER_S, is not fetched again.
RECENT_STATES = {DocumentStatus.FETCHED, DocumentStatus.EMBEDDED, DocumentStatus.INDEXED}


@dataclass
class PreparedVersion:
    """A document version parsed and chunked by the fetch stage, not yet handed over."""

    batch: ChunkBatch
    version: str
    existing: DocumentRecord | None
    timings: dict[str, float]
    attachments: list[str]
    received_at: float

    @property
    def new_document(self) -> bool:
        """No record, or only the QUEUED one the API writes: nothing of it can be indexed yet."""
        existing = self.existing
        return existing is None or (existing.status == DocumentStatus.QUEUED and not existing.content_sha256)

    def record_fields(self) -> dict[str, Any]:
        """The fields its record takes once handed over."""
        count = len(self.attachments)
        return {
            "source": self.batch.source,
            "title": self.batch.title,
            "content_sha256": self.batch.content_sha256,
            "chunk_count": len(self.batch.chunks),
            "detail": f"{count} attachment(s) ingested as documents of their own" if count else None,
            "attachments": self.attachments,
        }


class UrlsUnavailable(TransientError):
    """Some URLs of a manifest failed transiently (the others were ingested)."""

    def __init__(self, collection: str, failures: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{url}: {error}" for url, error in failures))
        self.collection = collection
        self.failures = failures


@dataclass(frozen=True)
class ObjectEvent:
    """One S3 notification record, reduced to what the fetch stage needs."""

    kind: str  # "created" or "removed"
    key: str
    version: str


@dataclass(frozen=True)
class FetchConfig:
    """Plain values the fetch stage needs from settings."""

    inbox_prefix: str
    staging_prefix: str
    chunk_tokens: int
    chunk_overlap_tokens: int
    max_document_bytes: int
    heading_chunk_tokens: int = 256
    url_allow_hosts: frozenset[str] = frozenset()
    url_max_per_manifest: int = 1000
    inline_max_bytes: int = 0
    max_title_chars: int = 300
    max_section_chars: int = 500
    max_chunks_per_document: int = 20_000
    url_refetch_after_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchConfig:
        """The fetch stage's values from the process-wide settings."""
        from stratus.settings import derive

        return derive(
            cls,
            settings,
            names={"inline_max_bytes": "stage_inline_max_bytes"},
            convert={"url_allow_hosts": frozenset},
        )


def attachment_file_name(index: int, name: str) -> str:
    """`<n>-<name>` with only safe characters, never read as a manifest or a metadata sidecar."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._- ") else "_" for c in base).strip(" .")
    safe = (safe or "attachment")[-100:].lstrip(" .") or "attachment"
    if safe.lower().endswith((MANIFEST_SUFFIX, ".metadata.json")):
        safe += ".txt"
    return f"{index}-{safe}"


def parse_s3_notification(body: str) -> list[ObjectEvent]:
    """The object events in an S3 notification delivered through SQS (test events yield none)."""
    payload = json.loads(body)
    if payload.get("Event") == "s3:TestEvent":
        return []
    events = []
    for record in payload.get("Records", []):
        name = record.get("eventName", "")
        s3 = record.get("s3", {})
        key = unquote_plus(s3.get("object", {}).get("key", ""))
        sequencer = s3.get("object", {}).get("sequencer") or f"{int(time.time() * 1e6):X}"
        kind = "removed" if name.startswith("ObjectRemoved") else "created"
        events.append(ObjectEvent(kind=kind, key=key, version=normalise_version(sequencer)))
    return events


def split_inbox_key(inbox_prefix: str, key: str) -> tuple[str, str]:
    """(collection, source path) of an inbox key such as inbox/docs/guide/intro.md."""
    rest = key.removeprefix(inbox_prefix)
    collection, _, source = rest.partition("/")
    if not source or rest == key:
        raise PermanentError(f"key {key!r} is not under {inbox_prefix}<collection>/")
    # One document per name however it is encoded: café.md in NFC and in NFD are the same source.
    return check_collection_name(collection), unicodedata.normalize("NFC", source)


class FetchStage:
    """Turns inbox objects into staged chunk batches and pointer messages."""

    def __init__(
        self,
        blobs: BlobStore,
        documents: DocumentTable,
        embed_queue: MessageQueue,
        index_queue: MessageQueue,
        tokenizer: Callable[[], Tokenizer],
        config: FetchConfig,
        fetch_urls: Callable[[Sequence[str], float | None], Iterable[Any]] | None = None,
        collection_settings: CollectionSettingsStore | None = None,
    ) -> None:
        self._blobs = blobs
        self._collection_settings = collection_settings
        self._documents = documents
        self._lifecycle = DocumentLifecycle(documents)
        self._embed_queue = embed_queue
        self._index_queue = index_queue
        self._tokenizer = tokenizer
        self._config = config
        self._fetch_urls = fetch_urls
        self._deadline: float | None = None

    def handle_event(
        self, event: ObjectEvent, request_id: str | None = None, deadline: float | None = None
    ) -> None:
        """Process one object event; permanent problems mark the document FAILED and return.

        `deadline` (time.monotonic()) is this record's time budget: URLs not fetched by then, and
        a document not yet parsed by then, end FAILED with the reason instead of timing out the batch.
        """
        from stratus.ingest.parsing import document_key_for_sidecar, is_metadata_sidecar

        self._deadline = deadline
        key = event.key
        if is_metadata_sidecar(key):
            # A sidecar changes the filterable attributes of its document: fetch the document again.
            parent = document_key_for_sidecar(key)
            if self._blobs.head(parent) is None:
                return
            if is_manifest(parent):
                self.handle_event(ObjectEvent("created", parent, event.version), request_id, deadline)
                return
            collection, source = split_inbox_key(self._config.inbox_prefix, parent)
            # This very sidecar, whatever the case of its suffix (.METADATA.JSON too).
            self._ingest_object(collection, source, parent, event.version, request_id, sidecar_key=key)
            return
        collection, source = split_inbox_key(self._config.inbox_prefix, key)
        if event.kind == "removed" and is_manifest(key):
            # A manifest only lists URLs; its documents stay until deleted through the API.
            logger.info("manifest removed; its URL documents are kept", extra={"key": key})
            self.delete_document(collection, source, event.version, request_id, index=False)
            return
        if event.kind == "removed":
            if self.delete_document(collection, source, event.version, request_id):
                self.delete_attachments(collection, source, key)
        elif is_manifest(key):
            self._ingest_manifest(collection, source, key, event.version, request_id)
        else:
            self._ingest_object(collection, source, key, event.version, request_id)

    def delete_document(
        self, collection: str, source: str, version: str, request_id: str | None, index: bool = True
    ) -> bool:
        """Record the deletion and ask the index stage to remove every chunk; False if a newer version won."""
        doc_id = make_doc_id(collection, source)
        if not self._lifecycle.deleted(collection, doc_id, version, source=source):
            logger.info("stale delete ignored", extra={"doc_id": doc_id})
            return False
        if index:
            message = StageMessage(
                action="delete", collection=collection, doc_id=doc_id, source=source, request_id=request_id
            )
            self._index_queue.send([message])
        return True

    def _ingest_object(
        self,
        collection: str,
        source: str,
        key: str,
        version: str,
        request_id: str | None,
        sidecar_key: str | None = None,
    ) -> None:
        from stratus.ingest.parsing import sidecar_key_for

        doc_id = make_doc_id(collection, source)
        try:
            found = self._blobs.get_object(key, self._config.max_document_bytes)
        except PermanentError as error:
            self._fail(collection, doc_id, source, version, str(error))
            return
        if found is None:
            logger.info("object is gone; a later event handles it", extra={"key": key})
            return
        info, data = found
        # An object the API wrote names the request that wrote it: follow that id, not the SQS one.
        request_id = info.metadata.get(REQUEST_ID_METADATA) or request_id
        with log_context(request_id=request_id, doc_id=doc_id):
            if data is None:
                limit = self._config.max_document_bytes
                self._fail(
                    collection,
                    doc_id,
                    source,
                    version,
                    f"document is {info.size} bytes; the limit is {limit}",
                )
                return
            content = FetchedContent(source, data, PurePosixPath(key).name, info.content_type, inbox_key=key)
            try:
                metadata = self._sidecar_metadata(sidecar_key or sidecar_key_for(key))
            except PermanentError as error:
                self._fail(collection, doc_id, source, version, f"metadata sidecar: {error}")
                return
            for name, header in ATTACHMENT_LINK_METADATA.items():
                if ATTACHMENTS_SUFFIX in key and header in info.metadata:
                    metadata[name] = unquote(info.metadata[header])
            self.ingest(collection, content, version, metadata, request_id)

    def _sidecar_metadata(self, sidecar_key: str) -> dict[str, Any]:
        from stratus.ingest.parsing import MAX_SIDECAR_BYTES, parse_metadata_sidecar

        found = self._blobs.get_object(sidecar_key, MAX_SIDECAR_BYTES)
        if found is None:
            return {}
        if found[1] is None:
            raise PermanentError(f"larger than {MAX_SIDECAR_BYTES} bytes")
        return dict(parse_metadata_sidecar(found[1]))

    def _ingest_manifest(
        self, collection: str, source: str, key: str, version: str, request_id: str | None
    ) -> None:
        info = self._blobs.head(key)
        if info is None or self._fetch_urls is None:
            return
        request_id = info.metadata.get(REQUEST_ID_METADATA) or request_id
        found = self._blobs.get_object(key, MAX_MANIFEST_BYTES)
        if found is None:
            return
        manifest_id = make_doc_id(collection, source)
        if found[1] is None:
            self._fail(
                collection, manifest_id, source, version,
                f"URL manifest is {found[0].size} bytes; the limit is {MAX_MANIFEST_BYTES}",
            )  # fmt: skip
            return
        with log_context(request_id=request_id):
            self._ingest_urls(collection, source, version, request_id, found[1])

    def _ingest_urls(
        self, collection: str, source: str, version: str, request_id: str | None, data: bytes
    ) -> None:
        from stratus.ingest.web import parse_url_manifest

        manifest = parse_url_manifest(
            data.decode("utf-8", errors="replace"),
            max_urls=self._config.url_max_per_manifest,
            allow_hosts=self._config.url_allow_hosts,
        )
        # Counts, not a log line per refused URL: a 100k-line manifest must not write 100k lines.
        logger.info(
            "manifest read",
            extra={
                "source": source,
                "accepted": len(manifest.urls),
                "refused": sum(manifest.refused_by.values()),
                "duplicates": manifest.duplicates,
                "over_limit": manifest.over_limit,
            },
        )
        assert self._fetch_urls is not None  # _ingest_manifest returns early without one
        unavailable: list[tuple[str, str]] = []
        outcome: Counter[str] = Counter()
        urls = self._not_fetched_recently(collection, manifest.urls)
        if len(urls) < len(manifest.urls):
            outcome["fetched recently, skipped"] = len(manifest.urls) - len(urls)
        for result in self._fetch_urls(urls, self._deadline):
            doc_id = make_doc_id(collection, result.url)
            if not result.ok:
                if result.out_of_time:
                    outcome["out of time"] += 1
                    self._fail(collection, doc_id, result.url, version, f"fetch: {result.error}")
                elif result.permanent:
                    outcome["failed"] += 1
                    self._fail(collection, doc_id, result.url, version, result.error or "fetch failed")
                else:
                    outcome["retrying"] += 1
                    unavailable.append((result.url, result.error or "fetch failed"))
                continue
            outcome["fetched"] += 1
            filename = PurePosixPath(result.final_url.split("?")[0]).name or "index.html"
            content = FetchedContent(result.url, result.body or b"", filename, result.content_type)
            with log_context(doc_id=doc_id):
                self.ingest(collection, content, version, {}, request_id)
            del content, result  # (the body goes before the next one is taken)
        self._record_manifest(collection, source, version, manifest, outcome)
        if unavailable:
            # The others are ingested; the retry finds them unchanged and fetches these again.
            raise UrlsUnavailable(collection, unavailable)

    def _not_fetched_recently(self, collection: str, urls: list[str]) -> list[str]:
        """The URLs not fetched within STRATUS_URL_REFETCH_AFTER_S: a re-sent manifest is cheap."""
        window = self._config.url_refetch_after_s
        if window <= 0 or not urls:
            return urls
        ids = {url: make_doc_id(collection, url) for url in urls}
        records = self._documents.get_many(collection, list(ids.values()), ("status", "updated_at"))
        cutoff = time.time() - window
        return [
            url
            for url in urls
            if (record := records.get(ids[url])) is None
            or record.status not in RECENT_STATES
            or record.updated_at < cutoff
        ]

    def _record_manifest(
        self, collection: str, source: str, version: str, manifest: Any, outcome: Counter[str]
    ) -> None:
        """The manifest's own record: per-line counts and the first refusals, for the API and CLI."""
        summary = manifest_summary(manifest, outcome)
        manifest_id = make_doc_id(collection, source)
        self._lifecycle.manifest_read(
            collection,
            manifest_id,
            version,
            bool(manifest.urls),
            source=source,
            title="URL manifest",
            chunk_count=0,
            detail=summary if manifest.urls else None,
            error=None if manifest.urls else summary,
        )

    def settings_for(self, collection: str) -> CollectionSettings:
        """The collection's chunking settings (one consistent read: a change applies to the next document)."""
        from stratus.stores.collections import CollectionSettings

        if self._collection_settings is None:
            return CollectionSettings()
        return self._collection_settings.get(collection)

    def ingest(
        self,
        collection: str,
        content: FetchedContent,
        version: str,
        metadata: dict[str, Any],
        request_id: str | None,
    ) -> None:
        """Parse, chunk and stage one document version unless it is unchanged or stale."""
        prepared = self.prepare(collection, content, version, metadata)
        if prepared is not None:
            self._hand_over(prepared, request_id)

    def prepare(
        self,
        collection: str,
        content: FetchedContent,
        version: str,
        metadata: dict[str, Any],
        records: Mapping[str, DocumentRecord] | None = None,
        chunking: CollectionSettings | None = None,
    ) -> PreparedVersion | None:
        """Parse and chunk one document version; None when it is stale, unchanged or FAILED (recorded).

        `records`: the collection's records read beforehand by doc id (bulk ingestion reads a batch
        at once); a document absent from it has none. Without it, the record is read here, as is
        the collection's chunking without `chunking`.
        """
        from stratus.ingest.chunking import chunk_document
        from stratus.ingest.parsing import bound_document, parse_document

        received_at = time.time()

        timings: dict[str, float] = {}
        doc_id = make_doc_id(collection, content.source)
        digest = hashlib.sha256(content.data)
        digest.update(json.dumps(metadata, sort_keys=True).encode())
        chunking = chunking or self.settings_for(collection)
        if not chunking.is_default:
            # Other chunking makes other chunks: a re-upload after a change is not "unchanged".
            digest.update(json.dumps(chunking.to_public(), sort_keys=True).encode())
        sha = digest.hexdigest()
        existing = records.get(doc_id) if records is not None else self._documents.get(collection, doc_id)
        if existing is not None and existing.version > version:
            logger.info("stale event ignored", extra={"doc_id": doc_id})
            return None
        if existing is not None and existing.content_sha256 == sha and existing.status in UNCHANGED_STATES:
            self._lifecycle.unchanged(existing, version, "unchanged re-upload: nothing re-encoded")
            emit_metric(MetricName.DOCUMENTS_UNCHANGED, 1)
            return None
        config = self._config
        try:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise PermanentError("fetch: the invocation's time budget ran out before parsing")
            keep_attachments = (
                content.inbox_key is not None
                and content.inbox_key.count(ATTACHMENTS_SUFFIX) < MAX_ATTACHMENT_DEPTH
            )
            with stopwatch(timings, "parse"):
                parsed = bound_document(
                    parse_document(
                        content.data,
                        content.filename,
                        content.content_type,
                        keep_attachments=keep_attachments,
                    ),
                    max_title_chars=config.max_title_chars,
                    max_section_chars=config.max_section_chars,
                )
            with stopwatch(timings, "chunk"):
                chunks = chunk_document(
                    doc_id,
                    parsed,
                    self._tokenizer(),
                    chunking.chunk_tokens
                    or (config.chunk_tokens if chunking.chunking == "token" else config.heading_chunk_tokens),
                    config.chunk_overlap_tokens
                    if chunking.chunk_overlap_tokens is None
                    else chunking.chunk_overlap_tokens,
                    max_chunks=config.max_chunks_per_document,
                    mode=chunking.chunking,
                )
            if not chunks:
                raise PermanentError("document has no extractable text")
        except RecursionError as error:
            self._fail(
                collection, doc_id, content.source, version, f"document nests too deeply: {error}", sha
            )
            return None
        except PermanentError as error:
            self._fail(collection, doc_id, content.source, version, str(error), sha)
            return None
        attachments: list[str] = []
        previous = existing.attachments if existing is not None else []
        if content.inbox_key is not None and (parsed.attachments or previous):
            # A newer version (or the message's deletion) recorded while this one was parsed owns the
            # attachments now: writing this version's would resurrect or overwrite them.
            latest = self._documents.get(collection, doc_id)
            if latest is not None and latest.version > version:
                logger.info("a newer version was recorded meanwhile", extra={"doc_id": doc_id})
                return None
            # Before the record: a retry after a failed write finds the message unchanged and stops there.
            with stopwatch(timings, "attachments"):
                attachments = self._write_attachments(
                    content.inbox_key, content.source, doc_id, parsed.attachments, metadata, previous
                )
        batch = ChunkBatch(
            collection=collection,
            doc_id=doc_id,
            source=content.source,
            title=parsed.title,
            content_sha256=sha,
            metadata={**parsed.metadata, **metadata},  # parser's (e-mail headers, OCR) under the sidecar's
            chunks=chunks,
        )
        return PreparedVersion(batch, version, existing, timings, attachments, received_at)

    def _hand_over(self, prepared: PreparedVersion, request_id: str | None) -> None:
        """Stage the chunks, record the version FETCHED and send it to embed."""
        batch, timings = prepared.batch, prepared.timings
        collection, doc_id, sha = batch.collection, batch.doc_id, batch.content_sha256
        staged = dump_chunk_batch(batch)
        payload = inline_payload(staged, self._config.inline_max_bytes)
        key = ""
        if payload is None:
            key = staging_key(self._config.staging_prefix, collection, doc_id, sha, "chunks.json.gz")
            with stopwatch(timings, "stage"):
                self._blobs.put_bytes(key, staged, "application/gzip")
        recorded = self._lifecycle.fetched(
            collection,
            doc_id,
            prepared.version,
            **prepared.record_fields(),
            chunks_embedded=0,
            chunks_reused=0,
            timings_ms=timings,
        )
        if not recorded:
            logger.info("a newer version was recorded meanwhile", extra={"doc_id": doc_id})
            return
        self._embed_queue.send(
            [
                StageMessage(
                    collection=collection,
                    doc_id=doc_id,
                    source=batch.source,
                    content_sha256=sha,
                    key=key,
                    payload=payload,
                    request_id=request_id,
                    received_at=prepared.received_at,
                    new_document=prepared.new_document,
                )
            ]
        )
        logger.info("document fetched", extra={"doc_id": doc_id, "chunks": len(batch.chunks)})
        emit_metric(MetricName.DOCUMENTS_FETCHED, 1)
        emit_metric(MetricName.CHUNKS_PRODUCED, len(batch.chunks))

    def _write_attachments(
        self,
        message_key: str,
        message_source: str,
        message_doc_id: str,
        attachments: Sequence[Attachment],
        metadata: dict[str, Any],
        previous: Sequence[str] = (),
    ) -> list[str]:
        """Write each attachment beside its message in the inbox (their own events ingest them).

        Attachments of `previous` (the sources the last version recorded) that the message no longer
        carries are deleted, their documents with them. The
        message's sidecar attributes are copied to each attachment, so filters find both. Returns
        the attachments' sources.
        """
        from stratus.ingest.parsing import sidecar_key_for

        prefix = message_key + ATTACHMENTS_SUFFIX
        written: set[str] = set()
        sources = []
        inherited = {k: v for k, v in metadata.items() if k not in ATTACHMENT_LINK_METADATA}
        sidecar = json.dumps({"metadataAttributes": inherited}).encode() if inherited else None
        link = {
            ATTACHMENT_LINK_METADATA["parent_doc_id"]: message_doc_id,
            ATTACHMENT_LINK_METADATA["email_message"]: quote(message_source, safe=""),
        }
        for index, attachment in enumerate(attachments, start=1):
            key = prefix + attachment_file_name(index, attachment.name)
            if sidecar is not None:
                # First, so the attachment's own event finds it.
                self._blobs.put_bytes(sidecar_key_for(key), sidecar, "application/json")
                written.add(sidecar_key_for(key))
            self._blobs.put_bytes(
                key,
                attachment.data,
                attachment.content_type,
                {**link, ATTACHMENT_LINK_METADATA["attachment_name"]: quote(attachment.name[:200], safe="")},
            )
            written.add(key)
            sources.append(message_source + key[len(message_key) :])
        self._delete_attachment_objects(message_key, message_source, set(previous) - set(sources))
        return sources

    def delete_attachments(self, collection: str, message_source: str, message_key: str) -> None:
        """Delete a deleted message's attachment objects; their removal events delete their documents."""
        record = self._documents.get(collection, make_doc_id(collection, message_source))
        if record is not None and record.attachments:
            self._delete_attachment_objects(message_key, message_source, record.attachments)

    def _delete_attachment_objects(
        self, message_key: str, message_source: str, sources: Iterable[str]
    ) -> None:
        from stratus.ingest.parsing import sidecar_key_for

        for source in sources:
            if not source.startswith(message_source + ATTACHMENTS_SUFFIX):
                continue  # only the message's own attachments: a record never names anything else
            key = message_key + source[len(message_source) :]
            # The object first: the sidecar's removal event then finds no document to re-read.
            self._blobs.delete(key)
            self._blobs.delete(sidecar_key_for(key))

    def give_up(self, event: ObjectEvent, attempts: int, error: Exception) -> None:
        """On the message's last receive: mark the event's documents FAILED, resumable by a redrive."""
        from stratus.ingest.parsing import document_key_for_sidecar, is_metadata_sidecar

        if isinstance(error, UrlsUnavailable):
            targets = [(error.collection, url, f"{url}: {cause}") for url, cause in error.failures]
        else:
            key = document_key_for_sidecar(event.key) if is_metadata_sidecar(event.key) else event.key
            if is_manifest(key):
                return  # (a manifest is no document; its URLs' failures come as UrlsUnavailable)
            collection, source = split_inbox_key(self._config.inbox_prefix, key)
            targets = [(collection, source, str(error) or type(error).__name__)]
        for collection, source, cause in targets:
            doc_id = make_doc_id(collection, source)
            reason = give_up_reason("fetch", attempts, cause)
            self._lifecycle.fetch_given_up(collection, doc_id, event.version, source, reason)

    def record_failure(self, collection: str, source: str, version: str, reason: str) -> None:
        """Record the version of `source` FAILED with `reason`, as the stage does for what it cannot read."""
        self._fail(collection, make_doc_id(collection, source), source, version, reason)

    def _fail(
        self, collection: str, doc_id: str, source: str, version: str, reason: str, sha: str = ""
    ) -> None:
        logger.warning("document failed", extra={"doc_id": doc_id, "reason": reason})
        self._lifecycle.fetch_failed(
            collection,
            doc_id,
            version,
            source=source,
            error=reason,
            content_sha256=sha,
            chunk_count=0,
        )
        emit_metric(MetricName.DOCUMENTS_FAILED, 1)


MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def manifest_summary(manifest: Any, outcome: Counter[str] | None = None) -> str:
    """One line a person reads: per-line counts of a manifest, refusals by class, the first refusals."""
    refused = sum(manifest.refused_by.values())
    parts = [f"{len(manifest.urls)} URL(s) accepted", f"{refused} refused"]
    if refused:
        parts[-1] += " (" + ", ".join(f"{kind}: {n}" for kind, n in sorted(manifest.refused_by.items())) + ")"
    parts.append(f"{manifest.duplicates} duplicate(s)")
    if manifest.over_limit:
        parts.append(f"{manifest.over_limit} over the limit of URLs per manifest")
    text = "manifest: " + ", ".join(parts)
    if outcome:
        text += "; fetch: " + ", ".join(f"{kind} {n}" for kind, n in sorted(outcome.items()))
    if manifest.errors:
        text += "; first refusals: " + "; ".join(manifest.errors)
    return text


def build_fetch_stage() -> FetchStage:
    """The fetch stage wired to the process-wide stores."""
    from stratus import services
    from stratus.settings import get_settings

    settings = get_settings()

    def fetch_urls(urls: Sequence[str], deadline: float | None) -> Iterable[Any]:
        from stratus.ingest.web import FetchOptions, iter_fetch_urls

        return iter_fetch_urls(urls, options=FetchOptions.from_settings(settings), deadline=deadline)

    return FetchStage(
        blobs=services.blob_store(),
        documents=services.document_table(),
        embed_queue=services.queue("embed"),
        index_queue=services.queue("index"),
        tokenizer=services.chunk_tokenizer,
        config=FetchConfig.from_settings(settings),
        fetch_urls=fetch_urls,
        collection_settings=services.collection_settings(),
    )
