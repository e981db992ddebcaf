"""`stratus reindex`: rebuild a collection from its inbox into a new chunk table, then switch atomically.

Searches read the generation the collection settings name (stores/collections.py); the rebuild
writes generation N+1 beside it, the switch is one conditional UpdateItem, and the old table is
dropped only after every reader's cached generation has expired (STRATUS_REINDEX_DROP_AFTER_S).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stratus.errors import PermanentError
from stratus.models import ChunkBatch, DocumentStatus

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from stratus.pipeline.fetch import FetchConfig
    from stratus.stores.blobs import BlobStore
    from stratus.stores.collections import CollectionSettingsStore
    from stratus.stores.documents import DocumentRecord, DocumentTable
    from stratus.stores.vectors import ChunkStore

# Documents encoded per batch: bounds the rows held in memory during a rebuild.
_BATCH_DOCS = 64


@dataclass
class ReindexReport:
    """What a reindex did: documents rebuilt, those it could not rebuild (with why), the switch."""

    collection: str
    chunking: str
    old_generation: int
    new_generation: int
    documents: int = 0
    chunks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    switched: bool = False
    caught_up: int = 0
    dropped_old: bool = False
    seconds: float = 0.0

    def to_public(self) -> dict[str, Any]:
        """The report as `stratus reindex --json` prints it."""
        return {
            "collection": self.collection,
            "chunking": self.chunking,
            "old_generation": self.old_generation,
            "new_generation": self.new_generation,
            "documents": self.documents,
            "chunks": self.chunks,
            "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
            "switched": self.switched,
            "caught_up": self.caught_up,
            "dropped_old": self.dropped_old,
            "seconds": self.seconds,
        }


class Reindexer:
    """Rebuilds one collection's chunk table from its inbox with the collection's current settings."""

    def __init__(
        self,
        blobs: BlobStore,
        documents: DocumentTable,
        chunks: ChunkStore,
        settings: CollectionSettingsStore,
        tokenizer: Callable[[], Tokenizer],
        encoder: Callable[[], Any],
        config: FetchConfig,
        drop_after_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._blobs = blobs
        self._documents = documents
        self._chunks = chunks
        self._settings = settings
        self._tokenizer = tokenizer
        self._encoder = encoder
        self._config = config
        self._drop_after_s = drop_after_s
        self._sleep = sleep

    def _records(self, collection: str) -> list[DocumentRecord]:
        records, cursor = self._documents.list(collection, limit=1000)
        while cursor:
            more, cursor = self._documents.list(collection, limit=1000, cursor=cursor)
            records.extend(more)
        return records

    def _batch(self, collection: str, record: DocumentRecord) -> ChunkBatch:
        """The document rebuilt from its inbox object and sidecar; PermanentError when it cannot be."""
        from stratus.ingest.chunking import chunk_document
        from stratus.ingest.parsing import (
            MAX_SIDECAR_BYTES,
            bound_document,
            parse_document,
            parse_metadata_sidecar,
            sidecar_key_for,
        )

        config = self._config
        if "://" in record.source:
            raise PermanentError("a web page: it has no inbox object (submit its URL again)")
        key = f"{config.inbox_prefix}{collection}/{record.source}"
        found = self._blobs.get_object(key, config.max_document_bytes)
        if found is None:
            raise PermanentError(f"inbox object {key} is gone")
        info, data = found
        if data is None:
            raise PermanentError(f"document is {info.size} bytes; the limit is {config.max_document_bytes}")
        metadata: dict[str, Any] = {}
        sidecar = self._blobs.get_object(sidecar_key_for(key), MAX_SIDECAR_BYTES)
        if sidecar is not None and sidecar[1] is not None:
            metadata = dict(parse_metadata_sidecar(sidecar[1]))
        chunking = self._settings.get(collection)
        digest = hashlib.sha256(data)
        digest.update(json.dumps(metadata, sort_keys=True).encode())
        if not chunking.is_default:
            digest.update(json.dumps(chunking.to_public(), sort_keys=True).encode())
        parsed = bound_document(
            # Attachments are documents of their own in the inbox: reindexed as such, not folded in.
            parse_document(data, key.rsplit("/", 1)[-1], info.content_type, keep_attachments=True),
            max_title_chars=config.max_title_chars,
            max_section_chars=config.max_section_chars,
        )
        budget = chunking.chunk_tokens or (
            config.chunk_tokens if chunking.chunking == "token" else config.heading_chunk_tokens
        )
        overlap = (
            config.chunk_overlap_tokens
            if chunking.chunk_overlap_tokens is None
            else chunking.chunk_overlap_tokens
        )
        found_chunks = chunk_document(
            record.doc_id,
            parsed,
            self._tokenizer(),
            budget,
            overlap,
            max_chunks=config.max_chunks_per_document,
            mode=chunking.chunking,
        )
        if not found_chunks:
            raise PermanentError("document has no extractable text")
        return ChunkBatch(
            collection=collection,
            doc_id=record.doc_id,
            source=record.source,
            title=parsed.title,
            content_sha256=digest.hexdigest(),
            metadata={**parsed.metadata, **metadata},
            chunks=found_chunks,
        )

    def _write(
        self, collection: str, generation: int, batches: list[ChunkBatch], replace: bool = False
    ) -> int:
        import pyarrow as pa

        from stratus.stores.schema import chunk_rows, embed_text

        texts = [embed_text(b.title, c.section, c.text) for b in batches for c in b.chunks]
        vectors = self._encoder().embed_documents(texts)
        tables, offset = [], 0
        for batch in batches:
            n = len(batch.chunks)
            tables.append(chunk_rows(batch, vectors[offset : offset + n], self._chunks.filter_fields))
            offset += n
        # replace: chunks of these documents not in the batch (an older version's) are deleted.
        kept = {b.doc_id: [c.chunk_id for c in b.chunks] for b in batches} if replace else {}
        self._chunks.write(
            collection, pa.concat_tables(tables), kept, [], int(vectors.shape[1]), generation=generation
        )
        return len(texts)

    def _catch_up(self, collection: str, generation: int, since: float) -> int:
        """Rebuild (or delete) in `generation` the documents changed since `since`; how many."""
        changed = [r for r in self._records(collection) if r.updated_at >= since]
        deleted = [r.doc_id for r in changed if r.status == DocumentStatus.DELETED]
        batches = []
        for record in changed:
            if record.status != DocumentStatus.INDEXED:
                continue
            try:
                batches.append(self._batch(collection, record))
            except PermanentError:
                deleted.append(record.doc_id)
        if deleted:
            self._chunks.write(collection, None, {}, deleted, 0, generation=generation)
        for start in range(0, len(batches), _BATCH_DOCS):
            self._write(collection, generation, batches[start : start + _BATCH_DOCS], replace=True)
        return len(batches) + len(deleted)

    def reindex(
        self, collection: str, log: Callable[[str], None] = lambda _: None, force: bool = False
    ) -> ReindexReport:
        """Rebuild into generation N+1, switch the collection to it, drop generation N after the grace.

        An INDEXED document that cannot be rebuilt (a web page, an inbox object gone) would vanish
        from the collection: then nothing is switched, unless `force`.
        """
        from stratus.stores.vectors import table_name_for

        started = time.perf_counter()
        since = time.time()
        # A fresh read: the cached generation may be a few seconds old.
        old = self._settings.generation(collection, fresh=True)
        new = old + 1
        report = ReindexReport(collection, self._settings.get(collection).chunking, old, new)
        # A table left by a reindex that died half-way is rebuilt from scratch.
        self._chunks.drop_table(table_name_for(collection, new))
        pending: list[ChunkBatch] = []
        lost = 0
        for record in self._records(collection):
            if record.status != DocumentStatus.INDEXED:
                report.skipped.append((record.source, f"status {record.status.value}, not INDEXED"))
                continue
            try:
                pending.append(self._batch(collection, record))
            except PermanentError as error:
                report.skipped.append((record.source, str(error)))
                lost += 1
                continue
            report.documents += 1
            if len(pending) >= _BATCH_DOCS:
                report.chunks += self._write(collection, new, pending)
                pending.clear()
                log(f"  rebuilt {report.documents} documents, {report.chunks} chunks")
        if pending:
            report.chunks += self._write(collection, new, pending)
        if report.documents == 0 or (lost and not force):
            # Nothing to serve from, or documents would be lost: the old table stays.
            self._chunks.drop_table(table_name_for(collection, new))
            report.seconds = round(time.perf_counter() - started, 2)
            return report
        table = self._chunks.open(collection, new)
        if table is not None:
            table.optimize()
            self._chunks.ensure_fts_index(table)
        report.switched = self._settings.switch_generation(collection, old, new)
        if not report.switched:
            # Another reindex switched first: ours is not served; drop it.
            self._chunks.drop_table(table_name_for(collection, new))
        else:
            log(f"  switched {collection} to generation {new}; old table dropped in {self._drop_after_s}s")
            self._sleep(self._drop_after_s)
            # The pipeline wrote changes made during the rebuild into the old table: replay them
            # into the new one, now that every writer has moved to it.
            report.caught_up = self._catch_up(collection, new, since)
            report.dropped_old = self._chunks.drop_table(table_name_for(collection, old))
        report.seconds = round(time.perf_counter() - started, 2)
        return report


def build_reindexer() -> Reindexer:
    """The reindexer wired to the process-wide stores and settings."""
    from stratus import services
    from stratus.embedding.encoder import get_encoder
    from stratus.pipeline.fetch import FetchConfig
    from stratus.settings import get_settings

    settings = get_settings()
    return Reindexer(
        blobs=services.blob_store(),
        documents=services.document_table(),
        chunks=services.chunk_store(),
        settings=services.collection_settings(),
        tokenizer=services.chunk_tokenizer,
        encoder=get_encoder,
        config=FetchConfig.from_settings(settings),
        drop_after_s=max(settings.reindex_drop_after_s, settings.collection_generation_ttl_s),
    )
