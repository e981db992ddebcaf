"""Putting local files into a collection's inbox and waiting until the pipeline has handled them."""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratus.ingest.formats import EXTENSIONS
from stratus.models import DocumentStatus, make_doc_id

if TYPE_CHECKING:
    from stratus.stores.documents import DocumentRecord, DocumentTable

TERMINAL = {DocumentStatus.INDEXED, DocumentStatus.FAILED, DocumentStatus.DELETED}
# What progress reports read of each pending document while waiting.
PROGRESS_FIELDS = ("updated_at", "chunk_count", "error")
POLL_S_PER_PENDING = 0.001
SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".urls", ".json", *EXTENSIONS}


@dataclass(frozen=True)
class Upload:
    """A file to upload and the source name it gets in the collection."""

    path: Path
    source: str


def collect_uploads(paths: Iterable[Path], base: Path | None = None) -> list[Upload]:
    """Files under `paths` (folders walked recursively), named relative to `base` or their argument."""
    uploads: list[Upload] = []
    for path in paths:
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
            )
            root = base or path
        else:
            files, root = [path], base or path.parent
        for file in files:
            if file.name.startswith("."):
                continue
            try:
                source = file.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                source = file.name
            uploads.append(Upload(file, source))
    return uploads


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
        content_type = mimetypes.guess_type(upload.path.name)[0] or "application/octet-stream"
        s3_client.put_object(
            Bucket=bucket,
            Key=f"{inbox_prefix}{collection}/{upload.source}",
            Body=upload.path.read_bytes(),
            ContentType=content_type,
        )

    sidecars = [u for u in uploads if u.source.endswith(".metadata.json")]
    rest = [u for u in uploads if not u.source.endswith(".metadata.json")]
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="upload") as pool:
        for wave in (sidecars, rest):
            list(pool.map(put, wave))  # (raises the first failure)
    return [
        make_doc_id(collection, u.source)
        for u in uploads
        if not u.source.endswith((".metadata.json", ".urls"))
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

    Each poll reads only the documents still pending, and only the fields progress needs; the
    full records are read once at the end.
    """
    deadline = time.monotonic() + timeout_s
    seen: dict[str, DocumentRecord] = {}
    pending = list(dict.fromkeys(doc_ids))
    while True:
        seen.update(documents.get_many(collection, pending, PROGRESS_FIELDS))
        pending = [d for d in pending if d not in seen or not _settled(seen[d], since)]
        if on_progress:
            on_progress([seen[d] for d in doc_ids if d in seen])
        if not pending or time.monotonic() > deadline:
            final = documents.get_many(collection, doc_ids)
            return [final[d] for d in doc_ids if d in final]
        # A large upload is polled less often: every poll costs a read per pending document.
        time.sleep(max(poll_s, len(pending) * POLL_S_PER_PENDING))


def _settled(record: DocumentRecord, since: float) -> bool:
    return record.status in TERMINAL and record.updated_at >= since
