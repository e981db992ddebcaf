"""Typed models shared by the stages, the API and the CLI."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field

from stratus.errors import PermanentError

COLLECTION_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# S3 user metadata (x-amz-meta-request-id) of inbox objects the API writes: the request that wrote them.
REQUEST_ID_METADATA = "request-id"


class DocumentStatus(StrEnum):
    """Where a document is in the pipeline."""

    QUEUED = "QUEUED"
    FETCHED = "FETCHED"
    EMBEDDED = "EMBEDDED"
    INDEXED = "INDEXED"
    FAILED = "FAILED"
    DELETED = "DELETED"


def check_collection_name(collection: str) -> str:
    """Collections name tables and S3 prefixes: lower-case letters, digits, '-' and '_'."""
    if not COLLECTION_PATTERN.fullmatch(collection):
        raise PermanentError(
            f"invalid collection name {collection!r}: use 1-63 of a-z, 0-9, '-' and '_', "
            "starting with a letter or digit"
        )
    return collection


def make_doc_id(collection: str, source: str) -> str:
    """Stable document id from its collection and source (S3 key or URL)."""
    return hashlib.sha256(f"{collection}\x00{source}".encode()).hexdigest()[:32]


def make_chunk_id(doc_id: str, text: str, occurrence: int) -> str:
    """Stable chunk id: the same text at the same occurrence in a document keeps its id."""
    digest = hashlib.sha256(f"{doc_id}\x00{occurrence}\x00{text}".encode()).hexdigest()
    return digest[:32]


def normalise_version(sequencer: str) -> str:
    """S3 sequencers compare as hex numbers; left-pad so DynamoDB's string order agrees."""
    return sequencer.upper().rjust(40, "0")


class Section(BaseModel):
    """A run of text under one heading path (and page, for paged formats)."""

    heading_path: list[str] = Field(default_factory=list)
    text: str
    page: int | None = None
    sheet: str | None = None  # spreadsheets and CSV: the sheet (or file) and rows the text came from
    row_start: int | None = None
    row_end: int | None = None
    # Tabular sections: the spreadsheet row number of each "\n\n"-separated line (rows chunking).
    row_numbers: list[int] | None = None


class Attachment(BaseModel):
    """A file carried inside a document (an e-mail's attachment), to be ingested as its own document."""

    name: str
    content_type: str
    data: bytes


class ParsedDocument(BaseModel):
    """A document reduced to plain text sections."""

    title: str = ""
    sections: list[Section]
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="What the parser learnt (e-mail headers, OCR confidence)."
    )
    attachments: list[Attachment] = Field(
        default_factory=list, exclude=True, description="Files inside it that become documents of their own."
    )


class Chunk(BaseModel):
    """A piece of a document sized for the encoder."""

    chunk_id: str
    position: int
    text: str
    section: str = ""
    page: int | None = None
    sheet: str | None = None
    row_start: int | None = None
    row_end: int | None = None
    token_count: int


class ChunkBatch(BaseModel):
    """Everything the fetch stage learnt about one document version: what embed and index use."""

    collection: str
    doc_id: str
    source: str
    title: str = ""
    content_sha256: str
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict)
    chunks: list[Chunk]


class BatchMember(BaseModel):
    """One document version of a bulk index message (its rows are in the message's Parquet)."""

    doc_id: str
    source: str
    content_sha256: str
    received_at: float | None = None


# Documents one bulk index message may carry: its body stays far below SQS's 256 KiB.
MAX_BATCH_MEMBERS = 500


class StageMessage(BaseModel):
    """What one stage hands the next through SQS: a small output inline, or a pointer (claim check) to S3.

    `upsert_many` is bulk ingestion's hand-over to index: `members` are the document versions whose
    rows one staged Parquet holds, written in one commit by the same single writer per collection.
    """

    action: str = Field("upsert", pattern="^(upsert|delete|upsert_many)$")
    collection: str
    doc_id: str
    source: str
    content_sha256: str = ""
    key: str = Field("", description="S3 key of the stage output this message points at.")
    request_id: str | None = None
    new_document: bool = Field(
        False,
        description="Set by fetch for a document with no earlier record: embed skips the vector lookup.",
    )
    received_at: float | None = Field(
        None, description="Unix time the fetch stage picked this version up (ingest latency starts here)."
    )
    payload: str | None = Field(
        None,
        description="The stage output itself (base64) when it is small enough to travel in the message.",
    )
    members: list[BatchMember] = Field(default_factory=list, max_length=MAX_BATCH_MEMBERS)

    def documents(self) -> list[StageMessage]:
        """The per-document messages this one stands for: its members, or itself."""
        if self.action != "upsert_many":
            return [self]
        common = {"collection": self.collection, "key": self.key, "payload": self.payload}
        return [
            StageMessage(
                **common,
                doc_id=m.doc_id,
                source=m.source,
                content_sha256=m.content_sha256,
                request_id=self.request_id,
                received_at=m.received_at,
            )
            for m in self.members
        ]


@dataclass(frozen=True)
class FetchedContent:
    """A document's bytes and where they came from."""

    source: str
    data: bytes
    filename: str
    content_type: str | None = None
    # Where it lies in the inbox (None for a URL): a message's attachments are written beside it.
    inbox_key: str | None = None
