"""The documents API's logic: submit inline text and URLs, presign uploads, delete documents.

Everything the API accepts is written INTO THE INBOX (text files with `.metadata.json` sidecars,
URLs as one `.urls` manifest), so the S3 notification → fetch → embed → index path is the same
as for an upload. Deleting an inbox document deletes its object (the S3 event does the rest);
deleting a URL document records DELETED conditionally and asks the index stage to drop its chunks.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
import time
import unicodedata
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from stratus.errors import PermanentError
from stratus.ingest.formats import EXTENSIONS as FORMAT_EXTENSIONS
from stratus.lifecycle import DocumentLifecycle
from stratus.models import REQUEST_ID_METADATA, DocumentStatus, StageMessage, make_doc_id, normalise_version

if TYPE_CHECKING:
    from stratus.settings import Settings
    from stratus.stores.blobs import BlobStore
    from stratus.stores.documents import DocumentRecord, DocumentTable
    from stratus.stores.queues import MessageQueue

MAX_SOURCE_CHARS = 512
TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm")
UPLOAD_SUFFIXES = (*TEXT_SUFFIXES, ".pdf", ".urls", ".metadata.json", *FORMAT_EXTENSIONS)
SPECIAL_SUFFIXES = (".metadata.json", ".urls")
RESERVED_PREFIX = "_api/"
MANIFEST_PREFIX = "_api/urls/"
URL_SCHEMES = ("http://", "https://")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+(\s*;\s*[\w.+-]+=[\w.+\"-]+)*$")


class FieldError(ValueError):
    """A request value the API refuses: `field` names it (as in `documents.0.source`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InlineDocument(BaseModel):
    """One document given as text in the request body."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        min_length=1,
        max_length=MAX_SOURCE_CHARS,
        description="Path inside the collection, such as notes/a.md (.md, .markdown, .txt, .html, .htm).",
    )
    text: str = Field(min_length=1, description="The document's content.")
    metadata: dict[str, Any] | None = Field(
        None,
        description="Filterable attributes (sidecar rules). Omit to keep the current ones; {} clears them.",
    )


class SubmitRequest(BaseModel):
    """Body of POST /v1/collections/{collection}/documents."""

    model_config = ConfigDict(extra="forbid")

    documents: list[InlineDocument] = Field(default_factory=list)
    urls: list[str] = Field(default_factory=list, description="http(s) URLs to fetch and index.")


class AcceptedDocument(BaseModel):
    """A document the API accepted and where to watch it."""

    doc_id: str
    source: str
    kind: str = Field(description="text or url")
    status_url: str


class SubmitResponse(BaseModel):
    """What POST .../documents answers (202)."""

    collection: str
    accepted: list[AcceptedDocument]
    manifest: str | None = Field(None, description="Inbox path of the URL manifest written, if any.")
    manifest_status_url: str | None = Field(
        None,
        description="Status of the manifest: per-line counts and the first refusals, once fetch read it.",
    )


class UploadRequest(BaseModel):
    """Body of POST /v1/collections/{collection}/uploads."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS, description="Path inside the collection.")
    content_type: str | None = Field(None, max_length=255, description="Media type; guessed when omitted.")
    size: int = Field(ge=1, description="Exact size in bytes of the file to be PUT.")


class UploadTicket(BaseModel):
    """A presigned PUT of one file into the inbox."""

    doc_id: str
    source: str
    upload_url: str
    method: str = "PUT"
    headers: dict[str, str]
    expires_in: int
    expires_at: float
    max_bytes: int
    status_url: str


class DeleteResponse(BaseModel):
    """What DELETE .../documents/{doc_id} answers (202)."""

    doc_id: str
    source: str
    status_url: str
    detail: str


def normalise_source(source: str) -> str:
    """NFC, with a `.metadata.json` or `.urls` suffix in lower case (how the pipeline names them)."""
    source = unicodedata.normalize("NFC", source)
    for suffix in SPECIAL_SUFFIXES:
        if source.lower().endswith(suffix) and not source.endswith(suffix):
            return source[: -len(suffix)] + suffix
    return source


@dataclass(frozen=True)
class DocumentsApi:
    """The documents API over the stores; the routes only translate HTTP."""

    blobs: BlobStore
    documents: DocumentTable
    index_queue: MessageQueue | None
    settings: Settings
    presign: Any = None  # a boto3 S3 client signing with SigV4 (Content-Length is signed)

    # -- paths ---------------------------------------------------------------------------

    def inbox_key(self, collection: str, source: str) -> str:
        """The inbox key of a source path."""
        return f"{self.settings.inbox_prefix}{collection}/{source}"

    def check_source(self, source: str, field: str, suffixes: tuple[str, ...], collection: str) -> str:
        """A safe source path inside the collection (NFC, special suffixes lower-cased), or FieldError.

        `café.md` in NFC and NFD is one name, and `a.md.METADATA.JSON` or `LIST.URLS` name the
        sidecar and the manifest that the pipeline reads under their lower-case suffixes.
        """
        source = normalise_source(source)
        if source != source.strip():
            raise FieldError(field, "must not start or end with whitespace")
        if _CONTROL.search(source) or "\\" in source:
            raise FieldError(field, "must not contain control characters or backslashes")
        if source.startswith("/"):
            raise FieldError(field, "must be a relative path (no leading '/')")
        parts = source.split("/")
        if any(part in {"", ".", ".."} for part in parts):
            raise FieldError(field, "must not contain '..', '.' or empty path segments")
        if source.startswith(RESERVED_PREFIX):
            raise FieldError(field, f"paths under {RESERVED_PREFIX} are reserved")
        if not source.lower().endswith(suffixes):
            raise FieldError(field, f"must end with one of {', '.join(suffixes)}")
        if len(self.inbox_key(collection, source).encode()) > 1024:
            raise FieldError(field, "is too long for an S3 key")
        return source

    def status_path(self, collection: str, doc_id: str) -> str:
        """The API path that reports one document's status."""
        return f"/v1/collections/{collection}/documents/{doc_id}"

    # -- submit ------------------------------------------------------------------------------

    def validate(self, collection: str, request: SubmitRequest) -> tuple[list[dict[str, Any]], list[str]]:
        """Check a submit request; (documents with parsed metadata, normalised URLs) or FieldError."""
        from stratus.ingest.parsing import parse_metadata_sidecar
        from stratus.ingest.urlguard import check_url_syntax

        if not request.documents and not request.urls:
            raise FieldError("body", "give at least one of 'documents' or 'urls'")
        total = len(request.documents) + len(request.urls)
        if total > self.settings.api_max_documents_per_request:
            raise FieldError(
                "body", f"{total} documents and URLs; at most {self.settings.api_max_documents_per_request}"
            )
        documents: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, document in enumerate(request.documents):
            source = self.check_source(document.source, f"documents.{i}.source", TEXT_SUFFIXES, collection)
            if source in seen:
                raise FieldError(f"documents.{i}.source", f"{source!r} appears twice")
            seen.add(source)
            data = document.text.encode()
            if len(data) > self.settings.api_max_text_bytes:
                raise FieldError(
                    f"documents.{i}.text",
                    f"{len(data)} bytes; at most {self.settings.api_max_text_bytes} (use POST .../uploads)",
                )
            if not document.text.strip():
                raise FieldError(f"documents.{i}.text", "is blank")
            sidecar: bytes | None = None
            if document.metadata is not None:
                sidecar = json.dumps({"metadataAttributes": document.metadata}, sort_keys=True).encode()
                try:
                    parse_metadata_sidecar(sidecar)
                except PermanentError as error:
                    message = str(error).removeprefix("metadata sidecar: ")
                    raise FieldError(f"documents.{i}.metadata", message) from error
            documents.append({"source": source, "data": data, "sidecar": sidecar})
        urls: list[str] = []
        allow = frozenset(self.settings.url_allow_hosts)
        for i, raw in enumerate(request.urls):
            try:
                url = check_url_syntax(raw.strip(), allow).url
            except PermanentError as error:
                raise FieldError(f"urls.{i}", str(error)) from error
            if url not in urls:
                urls.append(url)
        return documents, urls

    def submit(
        self, collection: str, request: SubmitRequest, request_id: str | None = None
    ) -> SubmitResponse:
        """Write the request's documents and URLs into the inbox; FieldError when it is invalid.

        The request id goes into each object's metadata: the fetch stage logs and forwards it.
        """
        documents, urls = self.validate(collection, request)
        tags = {REQUEST_ID_METADATA: request_id} if request_id else None
        accepted: list[AcceptedDocument] = []
        for document in documents:
            key = self.inbox_key(collection, document["source"])
            # The sidecar first: the document's own event then reads the new attributes.
            if document["sidecar"] is not None:
                self.blobs.put_bytes(key + ".metadata.json", document["sidecar"], "application/json", tags)
            content_type = mimetypes.guess_type(document["source"])[0] or "text/plain"
            self.blobs.put_bytes(key, document["data"], f"{content_type}; charset=utf-8", tags)
            accepted.append(self._queued(collection, document["source"], "text"))
        manifest: str | None = None
        if urls:
            body = "".join(f"{url}\n" for url in urls).encode()
            manifest = f"{MANIFEST_PREFIX}{hashlib.sha256(body).hexdigest()[:24]}.urls"
            self.blobs.put_bytes(
                self.inbox_key(collection, manifest), body, "text/plain; charset=utf-8", tags
            )
            accepted.extend(self._queued(collection, url, "url") for url in urls)
        manifest_status = (
            self.status_path(collection, make_doc_id(collection, manifest)) if manifest is not None else None
        )
        return SubmitResponse(
            collection=collection, accepted=accepted, manifest=manifest, manifest_status_url=manifest_status
        )

    def _queued(self, collection: str, source: str, kind: str) -> AcceptedDocument:
        """Record QUEUED for a document that has no record yet, so its status URL answers at once."""
        doc_id = make_doc_id(collection, source)
        DocumentLifecycle(self.documents).queued(collection, doc_id, source)
        return AcceptedDocument(
            doc_id=doc_id, source=source, kind=kind, status_url=self.status_path(collection, doc_id)
        )

    # -- presigned uploads ----------------------------------------------------------------

    def presign_upload(self, collection: str, request: UploadRequest) -> UploadTicket:
        """A presigned PUT URL to the inbox key of `request.source`; FieldError when refused."""
        source = self.check_source(request.source, "source", UPLOAD_SUFFIXES, collection)
        limit = min(self.settings.upload_max_bytes, self.settings.max_document_bytes)
        if request.size > limit:
            raise FieldError("size", f"{request.size} bytes; at most {limit}")
        content_type = request.content_type or mimetypes.guess_type(source)[0] or "application/octet-stream"
        if not _MEDIA_TYPE.fullmatch(content_type):
            raise FieldError("content_type", "is not a media type such as text/markdown")
        expires = self.settings.upload_url_expiry_s
        url: str = self.presign.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.blobs.bucket,
                "Key": self.inbox_key(collection, source),
                "ContentType": content_type,
                "ContentLength": request.size,
            },
            ExpiresIn=expires,
        )
        is_document = not source.lower().endswith(SPECIAL_SUFFIXES)
        doc_id = make_doc_id(collection, source)
        if is_document:
            self._queued(collection, source, "upload")
        return UploadTicket(
            doc_id=doc_id,
            source=source,
            upload_url=url,
            headers={"Content-Type": content_type, "Content-Length": str(request.size)},
            expires_in=expires,
            expires_at=time.time() + expires,
            max_bytes=limit,
            status_url=self.status_path(collection, doc_id),
        )

    # -- delete -----------------------------------------------------------------------------

    def delete(self, collection: str, doc_id: str) -> DeleteResponse | None:
        """Remove every chunk of a document; None when the collection has no such document."""
        record = self.documents.get(collection, doc_id)
        if record is None:
            return None
        status_url = self.status_path(collection, doc_id)
        if record.status == DocumentStatus.DELETED:
            return DeleteResponse(
                doc_id=doc_id, source=record.source, status_url=status_url, detail="already deleted"
            )
        if record.source.startswith(URL_SCHEMES):
            return self._delete_url_document(record, status_url)
        key = self.inbox_key(collection, record.source)
        self.blobs.delete(key + ".metadata.json")
        self.blobs.delete(key)
        return DeleteResponse(
            doc_id=doc_id,
            source=record.source,
            status_url=status_url,
            detail="inbox object deleted; its chunks are removed by the pipeline",
        )

    def _delete_url_document(self, record: DocumentRecord, status_url: str) -> DeleteResponse:
        # One step above the version seen: a redelivered event of the same manifest stays stale,
        # and a newer write meanwhile makes this conditional write fail (the newer version wins).
        version = normalise_version(f"{int(record.version or '0', 16) + 1:X}")
        recorded = DocumentLifecycle(self.documents).deleted(record.collection, record.doc_id, version)
        if not recorded:
            raise FieldError("doc_id", "the document changed meanwhile; try again")
        if self.index_queue is None:
            raise RuntimeError("STRATUS_INDEX_QUEUE_URL is not set")
        self.index_queue.send(
            [
                StageMessage(
                    action="delete", collection=record.collection, doc_id=record.doc_id, source=record.source
                )
            ]
        )
        return DeleteResponse(
            doc_id=record.doc_id,
            source=record.source,
            status_url=status_url,
            detail="marked DELETED; the index stage removes its chunks",
        )


@cache
def _presign_client(region: str, endpoint_url: str | None) -> Any:
    """An S3 client that signs presigned URLs with SigV4, so Content-Type and Content-Length are bound."""
    import boto3
    from botocore.config import Config

    # Path-style addressing only for an emulator on loopback; AWS gets its default (virtual hosts).
    s3_options: Any = {"addressing_style": "path"} if endpoint_url else {}
    return boto3.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(signature_version="s3v4", s3=s3_options),
    )


def documents_api() -> DocumentsApi:
    """The documents API wired to the process-wide stores and settings."""
    from stratus import services
    from stratus.settings import get_settings

    settings = get_settings()
    queue = services.queue("index") if settings.index_queue_url else None
    presign = _presign_client(settings.region, settings.aws_endpoint_url)
    return DocumentsApi(services.blob_store(), services.document_table(), queue, settings, presign=presign)
