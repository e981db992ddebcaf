"""Putting local files into a collection's inbox and waiting until the pipeline has handled them."""

from __future__ import annotations

import mimetypes
import os
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratus.ingest.formats import EXTENSIONS
from stratus.ingest.parsing import MANIFEST_SUFFIX, SIDECAR_SUFFIX
from stratus.models import DocumentStatus, make_doc_id

if TYPE_CHECKING:
    from stratus.pipeline.bulk import BulkDocument
    from stratus.stores.documents import DocumentRecord, DocumentTable

TERMINAL = {DocumentStatus.INDEXED, DocumentStatus.FAILED, DocumentStatus.DELETED}
# What progress reports read of each pending document while waiting.
PROGRESS_FIELDS = ("updated_at", "chunk_count", "error", "attachments")
POLL_S_PER_PENDING = 0.001
SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".urls", *EXTENSIONS}


@dataclass(frozen=True)
class Upload:
    """A file to upload and the source name it gets in the collection."""

    path: Path
    source: str


@dataclass(frozen=True)
class Skipped:
    """A file or folder the upload leaves out, and why (the `stratus ingest` summary shows it)."""

    path: Path
    reason: str


@dataclass
class UploadPlan:
    """What `stratus ingest` uploads, and what it skips with the reason."""

    uploads: list[Upload] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _supported(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(SIDECAR_SUFFIX) or Path(lower).suffix in SUPPORTED_SUFFIXES


def _source_name(source: str) -> str:
    """NFC, with the sidecar and manifest suffixes in the lower case the pipeline reads."""
    source = unicodedata.normalize("NFC", source)
    for suffix in (SIDECAR_SUFFIX, MANIFEST_SUFFIX):
        if source.lower().endswith(suffix):
            return source[: -len(suffix)] + suffix
    return source


def plan_uploads(paths: Iterable[Path], base: Path | None = None) -> UploadPlan:
    """Files under `paths` (folders walked, symlinks not followed out), and what is skipped and why.

    Anything whose real path lies outside the folder given (a symlink to a file or folder
    elsewhere) is skipped, as are hidden files and types the pipeline does not read.
    """
    plan = UploadPlan()
    for path in paths:
        if path.is_dir():
            root = (base or path).absolute()
            walked = path.resolve()
            candidates: list[Path] = []
            for folder, dirs, files in os.walk(path, followlinks=False):
                here = Path(folder)
                for name in sorted(dirs):
                    child = here / name
                    if child.is_symlink():
                        target = child.resolve()
                        where = "outside" if not target.is_relative_to(walked) else "inside"
                        plan.skipped.append(
                            Skipped(child, f"symlink to a folder {where} {path}: not followed")
                        )
                dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink() and not d.startswith("."))
                candidates.extend(here / name for name in sorted(files))
        else:
            root = (base or path.parent).absolute()
            walked = root.resolve()
            candidates = [path]
        for file in candidates:
            if file.name.startswith("."):
                plan.skipped.append(Skipped(file, "hidden file"))
                continue
            real = file.resolve()
            if path.is_dir() and not real.is_relative_to(walked):
                plan.skipped.append(Skipped(file, f"resolves outside {path} (to {real}): not uploaded"))
                continue
            if not real.is_file():
                plan.skipped.append(Skipped(file, "not a regular file"))
                continue
            if not _supported(file.name):
                suffix = file.suffix or "(no extension)"
                supported = ", ".join(sorted(SUPPORTED_SUFFIXES | {SIDECAR_SUFFIX}))
                plan.skipped.append(Skipped(file, f"unsupported type {suffix} (supported: {supported})"))
                continue
            try:
                source = file.absolute().relative_to(root).as_posix()
            except ValueError:
                source = file.name
            plan.uploads.append(Upload(file, _source_name(source)))
    return plan


def collect_uploads(paths: Iterable[Path], base: Path | None = None) -> list[Upload]:
    """Files under `paths` (folders walked recursively), named relative to `base` or their argument."""
    return plan_uploads(paths, base).uploads


def manifest_doc_ids(collection: str, uploads: Sequence[Upload]) -> list[str]:
    """Doc ids of each manifest's own record and of the URLs it lists (as fetch will read them)."""
    from stratus.ingest.web import parse_url_manifest

    ids: list[str] = []
    for upload in uploads:
        if not upload.source.endswith(MANIFEST_SUFFIX):
            continue
        ids.append(make_doc_id(collection, upload.source))
        text = upload.path.read_bytes().decode("utf-8", errors="replace")
        ids.extend(make_doc_id(collection, url) for url in parse_url_manifest(text, max_urls=10**6).urls)
    return list(dict.fromkeys(ids))


def content_type_for(path: Path) -> str:
    """The Content-Type an upload of `path` gets (guessed from its name)."""
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def bulk_documents(uploads: Sequence[Upload]) -> tuple[list[BulkDocument], list[Upload]]:
    """(What bulk ingestion reads, sidecars paired; what is uploaded as usual: manifests, lone sidecars)."""
    from stratus.pipeline.bulk import BulkDocument

    sidecars = {u.source[: -len(SIDECAR_SUFFIX)]: u for u in uploads if u.source.endswith(SIDECAR_SUFFIX)}
    sources = {u.source for u in uploads}
    documents: list[BulkDocument] = []
    streamed: list[Upload] = []
    for upload in uploads:
        if upload.source.endswith(MANIFEST_SUFFIX):
            streamed.append(upload)
        elif upload.source.endswith(SIDECAR_SUFFIX):
            if upload.source[: -len(SIDECAR_SUFFIX)] not in sources:
                streamed.append(upload)  # the sidecar of a document already in the inbox
        else:
            sidecar = sidecars.get(upload.source)
            documents.append(
                BulkDocument(
                    upload.source,
                    upload.path.read_bytes,
                    upload.path.stat().st_size,
                    content_type_for(upload.path),
                    sidecar.path.read_bytes if sidecar is not None else None,
                    sidecar.path.stat().st_size if sidecar is not None else 0,
                )
            )
    return documents, streamed


def upload_files(
    s3_client: Any,
    bucket: str,
    inbox_prefix: str,
    collection: str,
    uploads: Sequence[Upload],
    concurrency: int = 8,
) -> list[str]:
    """Upload files into inbox/<collection>/; return the doc ids the pipeline will report on.

    Metadata sidecars go first, so a document's own S3 event already finds its attributes
    (a sidecar that arrives later makes fetch read its document a second time). Puts run
    `concurrency` at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    def put(upload: Upload) -> None:
        s3_client.put_object(
            Bucket=bucket,
            Key=f"{inbox_prefix}{collection}/{upload.source}",
            Body=upload.path.read_bytes(),
            ContentType=content_type_for(upload.path),
        )

    sidecars = [u for u in uploads if u.source.endswith(SIDECAR_SUFFIX)]
    rest = [u for u in uploads if not u.source.endswith(SIDECAR_SUFFIX)]
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="upload") as pool:
        for wave in (sidecars, rest):
            list(pool.map(put, wave))  # (raises the first failure)
    return [
        make_doc_id(collection, u.source)
        for u in uploads
        if not u.source.endswith((SIDECAR_SUFFIX, MANIFEST_SUFFIX))
    ]


def wait_for_documents(
    documents: DocumentTable,
    collection: str,
    doc_ids: Sequence[str],
    timeout_s: float,
    on_progress: Callable[[list[DocumentRecord]], None] | None = None,
    since: float = 0.0,
    poll_s: float = 0.25,
) -> list[DocumentRecord]:
    """Poll until every document reached INDEXED, FAILED or DELETED after `since` (or the timeout).

    A message's attachments, once it names them, are waited for too and reported after it. Each
    poll reads only the documents still pending, and only the fields progress needs; the full
    records are read once at the end.
    """
    deadline = time.monotonic() + timeout_s
    seen: dict[str, DocumentRecord] = {}
    doc_ids = list(dict.fromkeys(doc_ids))
    pending = list(doc_ids)
    while True:
        seen.update(documents.get_many(collection, pending, PROGRESS_FIELDS))
        settled = [d for d in pending if d in seen and _settled(seen[d], since)]
        pending = [d for d in pending if d not in seen or not _settled(seen[d], since)]
        for doc_id in settled:
            for source in seen[doc_id].attachments:
                attachment = make_doc_id(collection, source)
                if attachment not in doc_ids:
                    doc_ids.append(attachment)
                    pending.append(attachment)
        if on_progress:
            on_progress([seen[d] for d in doc_ids if d in seen])
        if not pending or time.monotonic() > deadline:
            final = documents.get_many(collection, doc_ids)
            return [final[d] for d in doc_ids if d in final]
        # A large upload is polled less often: every poll costs a read per pending document.
        time.sleep(max(poll_s, len(pending) * POLL_S_PER_PENDING))


def _settled(record: DocumentRecord, since: float) -> bool:
    return record.status in TERMINAL and record.updated_at >= since
