"""The sync state machine: start a sync, run its units (URL, sitemap, S3 listing page), finish on drain.

Every unit is one SQS message on the fetch queue and one visited item; see stratus.sources.store for
why `pending` reaches 0 exactly once. Deletions happen only when proven: a page answering 404/410 (or
a noindex), or, when a sync drained completely and was not cut short by max_pages, the pages it no
longer reached. A sync that is interrupted (no progress for STRATUS_SOURCE_SYNC_STALE_S) ends FAILED
and deletes nothing it did not prove gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from stratus.errors import PermanentError, TransientError
from stratus.models import DocumentStatus, FetchedContent, make_doc_id, normalise_version
from stratus.observability import MetricName, emit_metric, logger
from stratus.sources import MESSAGE_TAG
from stratus.sources.robots import MAX_ROBOTS_BYTES, RobotsPolicy, product_token
from stratus.sources.urls import ASSET_EXTENSIONS, Scope, extension, normalise_url, origin

if TYPE_CHECKING:
    from stratus.ingest.web import FetchOptions, FetchResult
    from stratus.pipeline.fetch import FetchStage
    from stratus.sources.store import SourceStore
    from stratus.stores.documents import DocumentRecord, DocumentTable

SITEMAP_TYPES = frozenset(
    {
        "application/xml",
        "text/xml",
        "application/gzip",
        "application/x-gzip",
        "application/octet-stream",
        "text/plain",
    }
)
ROBOTS_TYPES = frozenset({"text/plain", "text/html", "application/octet-stream"})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
SITEMAP_SLICE = 500
MAX_WAIT_FRACTION = 0.8


class SyncBusy(Exception):
    """A sync of this source is already running."""


class SourceNotFound(Exception):
    """No such source."""


@dataclass(frozen=True)
class SyncConfig:
    """Plain values a sync needs from settings."""

    bucket: str
    inbox_prefix: str
    requests_per_s: float
    stale_s: float
    user_agent: str


def new_sync_id() -> str:
    """A sync id that sorts by start time."""
    return f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:8]}"


def time_version() -> str:
    """A document version from the clock (microseconds, hex), ordered like the stage's own fallback."""
    return normalise_version(f"{int(time.time() * 1e6):X}")


def after_version(recorded: str) -> str:
    """A version that sorts after `recorded` and after the clock's."""
    try:
        bumped = normalise_version(f"{int(recorded, 16) + 1:X}")
    except ValueError:
        bumped = ""
    return max(bumped, time_version())


class SyncEngine:
    """Starts syncs and runs their units against the stores, the fetcher and the fetch stage."""

    def __init__(
        self,
        store: SourceStore,
        documents: DocumentTable,
        stage: FetchStage,
        send: Callable[[list[str]], None],
        s3: Any,
        options: FetchOptions,
        config: SyncConfig,
        fetch: Callable[[str, dict[str, str], FetchOptions], FetchResult] | None = None,
    ) -> None:
        self._store = store
        self._documents = documents
        self._stage = stage
        self._send = send
        self._s3 = s3
        self._options = options
        self._config = config
        self._fetch_one = fetch or _fetch_one
        self._token = product_token(config.user_agent)
        self._robots: dict[tuple[str, str], RobotsPolicy] = {}
        self._deadline: float | None = None

    # -- starting --------------------------------------------------------------------------

    def start(self, collection: str, source_id: str) -> str:
        """Start a sync of a source; SyncBusy if one runs, SourceNotFound if there is no source."""
        source = self._store.get_source(collection, source_id)
        if source is None:
            raise SourceNotFound(source_id)
        sync_id = new_sync_id()
        if not self._store.start_sync(collection, source_id, sync_id, source["kind"]):
            raise SyncBusy(source.get("active_sync") or "")
        self._send([self._message(collection, source_id, sync_id, "start", key="start")])
        emit_metric(MetricName.SYNCS_STARTED, 1)
        logger.info("sync started", extra={"source_id": source_id, "sync_id": sync_id})
        return sync_id

    @staticmethod
    def _message(collection: str, source_id: str, sync_id: str, op: str, **fields: Any) -> str:
        return json.dumps(
            {
                MESSAGE_TAG: 1,
                "op": op,
                "collection": collection,
                "source_id": source_id,
                "sync_id": sync_id,
                **fields,
            }
        )

    # -- units -----------------------------------------------------------------------------

    def handle(self, body: str, deadline: float | None = None) -> None:
        """Run one unit; raise (TransientError) to have SQS deliver it again later."""
        message = json.loads(body)
        self._deadline = deadline
        collection, source_id, sync_id = message["collection"], message["source_id"], message["sync_id"]
        sync = self._store.get_sync(source_id, sync_id)
        source = self._store.get_source(collection, source_id)
        if sync is None or sync["state"] != "RUNNING" or source is None:
            return  # (the sync ended, interrupted: the unit's work is not wanted any more)
        key = message["key"]
        counts: dict[str, int] = {}
        failure: dict[str, str] | None = None
        op = message["op"]
        if op == "start":
            self._unit_start(source, sync_id)
        elif op == "page":
            counts, failure = self._unit_page(source, sync_id, message)
        elif op == "sitemap":
            counts, failure = self._unit_sitemap(source, sync_id, message)
        elif op == "s3list":
            counts = self._unit_s3list(source, sync_id, message)
        if not self._store.finish_unit(source_id, sync_id, key, counts, failure):
            return  # (a duplicate delivery: the first one counted)
        after = self._store.get_sync(source_id, sync_id)
        if (
            after is not None
            and int(after.get("pending", 1)) == 0
            and self._store.claim_finish(source_id, sync_id)
        ):
            self.finalize(collection, source_id, sync_id)

    def _unit_start(self, source: dict[str, Any], sync_id: str) -> None:
        collection, source_id = source["collection"], source["source_id"]
        if source["kind"] == "s3":
            self._queue_unit(source, sync_id, "l#", "start", 0, op="s3list", token="")
            return
        scope = self._scope(source)
        sitemaps = list(source.get("sitemaps", []))
        for host in scope.hosts():
            sitemaps.extend(s for s in self._policy(sync_id, host).sitemaps() if origin(s) == host)
        for sitemap in dict.fromkeys(sitemaps):
            try:
                url = normalise_url(sitemap)
            except ValueError:
                continue
            self._queue_unit(source, sync_id, f"m#{url}", "start", 0, op="sitemap", url=url, offset=0)
        self._discover(source, sync_id, list(source.get("urls", [])), "start", 0)
        logger.info("sync frontier seeded", extra={"source_id": source_id, "collection": collection})

    def _queue_unit(
        self, source: dict[str, Any], sync_id: str, key: str, parent: str, depth: int, **fields: Any
    ) -> str:
        outcome = self._store.enqueue(source["source_id"], sync_id, key, parent, depth, None)
        if outcome == "queued":
            self._send(
                [
                    self._message(
                        source["collection"], source["source_id"], sync_id, key=key, depth=depth, **fields
                    )
                ]
            )
        return outcome

    def _scope(self, source: dict[str, Any]) -> Scope:
        return Scope.build(
            source.get("urls", []),
            source.get("sitemaps", []),
            source.get("include", []),
            source.get("exclude", []),
        )

    def _discover(
        self, source: dict[str, Any], sync_id: str, links: list[str], parent: str, depth: int
    ) -> None:
        """Queue the in-scope, robots-allowed pages among `links`; count the others as skipped, once each."""
        scope = self._scope(source)
        verdicts: dict[str, str | None] = {}
        for raw in links:
            try:
                url = normalise_url(raw)
            except ValueError:
                continue
            if url in verdicts:
                continue
            if not scope.allows(url):
                verdicts[url] = "scope"
            elif extension(url) in ASSET_EXTENSIONS:
                verdicts[url] = "type"
            elif depth > int(source.get("max_depth", 5)):
                verdicts[url] = "depth"
            elif not self._policy(sync_id, origin(url)).allows(url):
                verdicts[url] = "robots"
            else:
                verdicts[url] = None
        seen = self._store.get_seen(sync_id, [f"u#{u}" for u in verdicts])
        source_id, collection = source["source_id"], source["collection"]
        resend: list[str] = []
        max_pages = int(source.get("max_pages", 1000))
        for url, why in verdicts.items():
            key = f"u#{url}"
            if key in seen:
                item = seen[key]
                # Our own child, queued by an earlier delivery of this unit that died before it sent.
                if item.get("state") == "queued" and item.get("parent") == parent:
                    resend.append(
                        self._message(collection, source_id, sync_id, "page", key=key, url=url, depth=depth)
                    )
                continue
            if why is not None:
                self._store.skip(source_id, sync_id, key, parent, why)
                continue
            outcome = self._store.enqueue(source_id, sync_id, key, parent, depth, max_pages)
            if outcome == "queued":
                resend.append(
                    self._message(collection, source_id, sync_id, "page", key=key, url=url, depth=depth)
                )
            elif outcome == "full":
                self._store.skip(source_id, sync_id, key, parent, "max_pages")
            elif outcome == "stopped":
                break
        for start in range(0, len(resend), 10):
            self._send(resend[start : start + 10])

    def _unit_page(
        self, source: dict[str, Any], sync_id: str, message: dict[str, Any]
    ) -> tuple[dict[str, int], dict[str, str] | None]:
        collection, source_id = source["collection"], source["source_id"]
        url, depth = message["url"], int(message.get("depth", 0))
        doc_id = make_doc_id(collection, url)
        record = self._documents.get(collection, doc_id)
        page = self._store.get_page(source_id, url)
        headers: dict[str, str] = {}
        if page is not None and record is not None and record.status in _LIVE:
            if page.get("etag"):
                headers["If-None-Match"] = page["etag"]
            if page.get("last_modified"):
                headers["If-Modified-Since"] = page["last_modified"]
        result = self._fetch(sync_id, url, headers, self._options)
        emit_metric(MetricName.PAGES_FETCHED, 1)
        if result.ok and result.status == 304:
            emit_metric(MetricName.PAGES_NOT_MODIFIED, 1)
            self._still_reached(source, sync_id, url, page, result, message["key"], depth)
            return {"c_unchanged": 1}, None
        if not result.ok:
            if result.status in (404, 410):
                if record is not None and record.status != DocumentStatus.DELETED:
                    self._delete(collection, source_id, url, record)
                    return {"c_deleted": 1}, None
                return {"c_failed": 1}, {"url": url, "reason": result.error or f"HTTP {result.status}"}
            if (result.error or "").startswith("unsupported content type"):
                return {"c_skipped": 1, "k_type": 1}, None
            if page is not None:
                # Not proven gone (a 5xx, a timeout, a 403): the page keeps its document, and the links it
                # had last time still count as reached, so the end of the sync deletes none of them.
                self._still_reached(source, sync_id, url, page, None, message["key"], depth)
            return {"c_failed": 1}, {"url": url, "reason": result.error or "fetch failed"}
        final = result.final_url
        with contextlib.suppress(ValueError):
            final = normalise_url(final)
        if final != url:
            if not self._scope(source).allows(final):
                return {"c_skipped": 1, "k_scope": 1}, None
            # One page, one document: a redirect inside the scope is followed as a link to its target
            # (fetched as its own unit, robots and depth checked), and this URL keeps no document.
            self._discover(source, sync_id, [final], message["key"], depth)
            return self._skip("redirect", collection, source_id, url, record), None
        body = result.body or b""
        outlinks: list[str] = []
        media = (result.content_type or "").split(";", 1)[0].strip().lower()
        from stratus.sources.links import header_robots

        header_noindex, header_nofollow = header_robots(result.robots_tag, self._token)
        if header_noindex:
            return self._skip("noindex", collection, source_id, url, record), None
        if media in HTML_TYPES:
            from stratus.sources.links import read_links

            found = read_links(body, result.final_url)
            found.nofollow |= header_nofollow
            outlinks = [] if found.nofollow else found.links
            if not found.nofollow:
                self._discover(source, sync_id, found.links, message["key"], depth + 1)
            if found.canonical:
                try:
                    canonical = normalise_url(found.canonical)
                except ValueError:
                    canonical = url
                if canonical != url and self._scope(source).allows(canonical):
                    self._discover(source, sync_id, [canonical], message["key"], depth)
                    return self._skip("canonical", collection, source_id, url, record), None
            if found.noindex:
                return self._skip("noindex", collection, source_id, url, record), None
        return self._ingest(source, sync_id, url, record, result, media, outlinks)

    def _ingest(
        self,
        source: dict[str, Any],
        sync_id: str,
        url: str,
        before: DocumentRecord | None,
        result: FetchResult,
        media: str,
        links: list[str],
    ) -> tuple[dict[str, int], dict[str, str] | None]:
        collection, source_id = source["collection"], source["source_id"]
        filename = PurePosixPath(url.split("?")[0]).name or "index.html"
        if media in HTML_TYPES and not filename.lower().endswith((".html", ".htm", ".xhtml")):
            filename += ".html"
        content = FetchedContent(url, result.body or b"", filename, result.content_type)
        version = after_version(before.version) if before is not None else time_version()
        self._stage.ingest(collection, content, version, {"source_id": source_id}, None)
        self._store.put_page(source_id, url, sync_id, result.etag, result.last_modified, _normalised(links))
        after = self._documents.get(collection, make_doc_id(collection, url))
        if after is None or after.status == DocumentStatus.FAILED:
            reason = after.error if after is not None and after.error else "not ingested"
            return {"c_failed": 1}, {"url": url, "reason": reason}
        if before is None or before.status == DocumentStatus.DELETED or not before.content_sha256:
            return {"c_added": 1}, None
        if after.content_sha256 == before.content_sha256:
            return {"c_unchanged": 1}, None
        return {"c_updated": 1}, None

    def _unit_sitemap(
        self, source: dict[str, Any], sync_id: str, message: dict[str, Any]
    ) -> tuple[dict[str, int], dict[str, str] | None]:
        from stratus.sources.sitemaps import parse_sitemap

        url, offset = message["url"], int(message.get("offset", 0))
        named = url in [normalise_url(s) for s in source.get("sitemaps", [])]
        # A sitemap the user named is fetched; any other one must be allowed by robots.txt (or in scope).
        outside = not named and not self._scope(source).allows(url)
        if outside and not self._policy(sync_id, origin(url)).allows(url):
            return {}, {"url": url, "reason": "sitemap disallowed by robots.txt"}
        options = dataclasses.replace(self._options, allowed_content_types=SITEMAP_TYPES)
        result = self._fetch(sync_id, url, {}, options)
        if not result.ok:
            return {}, {"url": url, "reason": f"sitemap: {result.error}"}
        try:
            sitemap = parse_sitemap(result.body or b"", self._options.max_bytes)
        except PermanentError as error:
            return {}, {"url": url, "reason": str(error)}
        if offset == 0:
            for nested in sitemap.sitemaps:
                try:
                    nested_url = normalise_url(nested)
                except ValueError:
                    continue
                if origin(nested_url) == origin(url):
                    self._queue_unit(
                        source,
                        sync_id,
                        f"m#{nested_url}",
                        message["key"],
                        0,
                        op="sitemap",
                        url=nested_url,
                        offset=0,
                    )
        urls = sitemap.urls
        position = offset
        while position < len(urls):
            if self._deadline is not None and time.monotonic() > self._deadline - 5:
                # The rest in a unit of its own: no invocation holds a 50,000-URL sitemap to the end.
                self._queue_unit(
                    source,
                    sync_id,
                    f"m#{url}#{position}",
                    message["key"],
                    0,
                    op="sitemap",
                    url=url,
                    offset=position,
                )
                break
            self._discover(source, sync_id, urls[position : position + SITEMAP_SLICE], message["key"], 0)
            position += SITEMAP_SLICE
        return {}, None

    def _unit_s3list(self, source: dict[str, Any], sync_id: str, message: dict[str, Any]) -> dict[str, int]:
        from stratus.ingest.parsing import is_manifest, is_metadata_sidecar

        collection = source["collection"]
        root = f"{self._config.inbox_prefix}{collection}/"
        params: dict[str, Any] = {
            "Bucket": self._config.bucket,
            "Prefix": root + source.get("prefix", ""),
            "MaxKeys": 1000,
        }
        if message.get("token"):
            params["ContinuationToken"] = message["token"]
        listing = self._s3.list_objects_v2(**params)
        objects: dict[str, tuple[str, float]] = {}
        for entry in listing.get("Contents", []):
            key = entry["Key"]
            if is_metadata_sidecar(key) or is_manifest(key) or key.endswith("/"):
                continue
            name = unicodedata.normalize("NFC", key.removeprefix(root))
            objects[name] = (key, entry["LastModified"].timestamp())
        records = self._documents.get_many(collection, [make_doc_id(collection, n) for n in objects])
        counts = {"c_discovered": len(objects), "c_added": 0, "c_updated": 0, "c_unchanged": 0}
        events = []
        for name, (key, modified) in objects.items():
            record = records.get(make_doc_id(collection, name))
            if record is None or record.status == DocumentStatus.DELETED:
                counts["c_added"] += 1
                version = time_version() if record is None else after_version(record.version)
            elif record.updated_at < modified:
                counts["c_updated"] += 1
                version = after_version(record.version)
            else:
                counts["c_unchanged"] += 1
                continue
            events.append(_object_event("ObjectCreated:Put", key, version))
        self._store.mark_seen(sync_id, [f"o#{n}" for n in objects])
        for start in range(0, len(events), 10):
            self._send(events[start : start + 10])
        token = listing.get("NextContinuationToken")
        if token:
            self._queue_unit(source, sync_id, f"l#{token[:900]}", message["key"], 0, op="s3list", token=token)
        return counts

    # -- finishing -------------------------------------------------------------------------

    def finalize(self, collection: str, source_id: str, sync_id: str) -> None:
        """The frontier drained: delete what this complete sync proved gone, then SUCCEEDED (or FAILED)."""
        sync = self._store.get_sync(source_id, sync_id) or {}
        source = self._store.get_source(collection, source_id)
        reached = sum(int(sync.get(f"c_{n}", 0)) for n in ("added", "updated", "unchanged"))
        deleted = 0
        if source is None:
            self._store.end_sync(collection, source_id, sync_id, "FAILED", ("FINALIZING",), "source deleted")
            return
        if reached == 0 and int(sync.get("c_failed", 0)) > 0 and source["kind"] == "web":
            self._store.end_sync(
                collection,
                source_id,
                sync_id,
                "FAILED",
                ("FINALIZING",),
                "no page could be fetched; nothing deleted",
            )
            emit_metric(MetricName.SYNCS_FAILED, 1)
            return
        if source["kind"] == "web" and not int(sync.get("k_max_pages", 0)):
            for page in self._store.pages(source_id):
                if page.get("seen_sync") != sync_id:
                    record = self._documents.get(collection, make_doc_id(collection, page["sk"]))
                    if record is not None and record.status != DocumentStatus.DELETED:
                        self._delete(collection, source_id, page["sk"], record)
                        deleted += 1
                    else:
                        self._store.delete_page(source_id, page["sk"])
        elif source["kind"] == "s3":
            deleted = self._delete_unlisted(collection, source, sync_id)
        self._store.end_sync(collection, source_id, sync_id, "SUCCEEDED", ("FINALIZING",), deleted=deleted)
        emit_metric(MetricName.SYNCS_SUCCEEDED, 1)
        logger.info("sync succeeded", extra={"source_id": source_id, "sync_id": sync_id, "deleted": deleted})

    def _delete_unlisted(self, collection: str, source: dict[str, Any], sync_id: str) -> int:
        prefix = source.get("prefix", "")
        cursor: str | None = None
        deleted = 0
        while True:
            records, cursor = self._documents.list(collection, 500, cursor)
            candidates = [
                r
                for r in records
                if r.source.startswith(prefix)
                and "://" not in r.source
                and r.status != DocumentStatus.DELETED
                and r.title != "URL manifest"
            ]
            seen = self._store.get_seen(sync_id, [f"o#{r.source}" for r in candidates])
            for record in candidates:
                if f"o#{record.source}" not in seen:
                    self._stage.delete_document(
                        collection, record.source, after_version(record.version), None
                    )
                    emit_metric(MetricName.SOURCE_DELETIONS, 1)
                    deleted += 1
            if cursor is None:
                return deleted

    def _delete(self, collection: str, source_id: str, url: str, record: DocumentRecord) -> None:
        self._stage.delete_document(collection, url, after_version(record.version), None)
        self._store.delete_page(source_id, url)
        emit_metric(MetricName.SOURCE_DELETIONS, 1)

    def _skip(
        self, why: str, collection: str, source_id: str, url: str, record: DocumentRecord | None
    ) -> dict[str, int]:
        """Counts of a page skipped as `why`; the document it had, if any, deleted (and counted)."""
        deleted = self._remove_if_live(collection, source_id, url, record)
        return {"c_skipped": 1, f"k_{why}": 1, **({"c_deleted": 1} if deleted else {})}

    def _still_reached(
        self,
        source: dict[str, Any],
        sync_id: str,
        url: str,
        page: dict[str, Any] | None,
        result: FetchResult | None,
        parent: str,
        depth: int,
    ) -> None:
        """Mark a page reached without reading it (a 304, or a failure that proves nothing) and follow
        the links it had last time, as if fetched."""
        page = page or {}
        stored_links = json.loads(page.get("links") or "[]")
        etag = (result.etag if result else None) or page.get("etag")
        last_modified = (result.last_modified if result else None) or page.get("last_modified")
        self._store.put_page(source["source_id"], url, sync_id, etag, last_modified, stored_links)
        self._discover(source, sync_id, stored_links, parent, depth + 1)

    def _remove_if_live(
        self, collection: str, source_id: str, url: str, record: DocumentRecord | None
    ) -> bool:
        if record is not None and record.status != DocumentStatus.DELETED:
            self._delete(collection, source_id, url, record)
            return True
        return False

    def delete_documents(self, source: dict[str, Any]) -> int:
        """Delete every document a (removed) source brought; the number deleted."""
        collection, source_id = source["collection"], source["source_id"]
        deleted = 0
        if source["kind"] == "web":
            for page in self._store.pages(source_id):
                record = self._documents.get(collection, make_doc_id(collection, page["sk"]))
                if record is not None and record.status != DocumentStatus.DELETED:
                    self._delete(collection, source_id, page["sk"], record)
                    deleted += 1
                else:
                    self._store.delete_page(source_id, page["sk"])
            return deleted
        cursor: str | None = None
        prefix = source.get("prefix", "")
        while True:
            records, cursor = self._documents.list(collection, 500, cursor)
            for record in records:
                live = record.status != DocumentStatus.DELETED and "://" not in record.source
                if live and record.source.startswith(prefix) and record.title != "URL manifest":
                    self._stage.delete_document(
                        collection, record.source, after_version(record.version), None
                    )
                    deleted += 1
            if cursor is None:
                return deleted

    def watchdog(self, now: float | None = None) -> list[str]:
        """End syncs without progress for stale_s as FAILED (deleting nothing); finish stuck finalizers."""
        now = time.time() if now is None else now
        ended = []
        for source in self._store.list_sources():
            sync_id = source.get("active_sync")
            if not sync_id:
                continue
            collection, source_id = source["collection"], source["source_id"]
            sync = self._store.get_sync(source_id, sync_id)
            if sync is None:
                self._store.end_sync(collection, source_id, sync_id, "FAILED", ("RUNNING",))
                continue
            if float(sync.get("progress_at", 0)) > now - self._config.stale_s:
                continue
            if sync["state"] == "FINALIZING":
                self.finalize(collection, source_id, sync_id)
                continue
            reason = f"interrupted: no progress for {self._config.stale_s:.0f}s; nothing was deleted"
            if self._store.end_sync(collection, source_id, sync_id, "FAILED", ("RUNNING",), reason):
                emit_metric(MetricName.SYNCS_FAILED, 1)
                ended.append(sync_id)
        return ended

    def run_due(self, now: float | None = None) -> list[str]:
        """Start the syncs whose schedule is due (each once, whoever else ticks)."""
        from stratus.sources.schedule import next_run

        now = time.time() if now is None else now
        started = []
        for source in self._store.list_sources():
            due, schedule = source.get("next_due"), source.get("schedule")
            if due is None or not schedule or float(due) > now:
                continue
            if not self._store.set_next_due(
                source["collection"], source["source_id"], next_run(schedule, now), due
            ):
                continue
            try:
                started.append(self.start(source["collection"], source["source_id"]))
            except SyncBusy:
                logger.info(
                    "scheduled sync skipped: one is running", extra={"source_id": source["source_id"]}
                )
        return started

    # -- fetching --------------------------------------------------------------------------

    def _policy(self, sync_id: str, host: str) -> RobotsPolicy:
        """robots.txt of an origin, read once per sync (through the same guard and politeness)."""
        cached = self._robots.get((sync_id, host))
        if cached is not None:
            return cached
        stored = self._store.get_robots(sync_id, host)
        if stored is None:
            options = dataclasses.replace(
                self._options, allowed_content_types=ROBOTS_TYPES, max_bytes=MAX_ROBOTS_BYTES
            )
            result = self._fetch(sync_id, f"{host}/robots.txt", {}, options, robots=False)
            if result.ok:
                text: str | None = (result.body or b"").decode("utf-8", errors="replace")
                allow_all = not text
            elif result.status is not None and 400 <= result.status < 500:
                text, allow_all = None, True  # (RFC 9309: unavailable robots.txt, crawl anything)
            else:
                text, allow_all = None, False  # (unreachable: assume complete disallow)
            self._store.put_robots(sync_id, host, text, allow_all)
            stored = self._store.get_robots(sync_id, host) or {"text": text, "allow_all": allow_all}
        policy = RobotsPolicy(stored.get("text"), bool(stored.get("allow_all")), self._token)
        self._robots[(sync_id, host)] = policy
        return policy

    def _fetch(
        self, sync_id: str, url: str, headers: dict[str, str], options: FetchOptions, robots: bool = True
    ) -> FetchResult:
        """One request, after waiting for the host's next slot (rate limit and crawl-delay)."""
        host = origin(url)
        interval = 1.0 / self._config.requests_per_s
        if robots:
            interval = max(interval, self._policy(sync_id, host).crawl_delay())
        slot = self._store.reserve_slot(host, interval)
        wait = slot - time.time()
        if self._deadline is not None and wait > (self._deadline - time.monotonic()) * MAX_WAIT_FRACTION:
            raise TransientError(f"politeness: the next slot for {host} is {wait:.0f}s away; later")
        if wait > 0:
            time.sleep(wait)
        return self._fetch_one(url, headers, options)


def _normalised(links: list[str]) -> list[str]:
    """Distinct normalised URLs of `links` (what a page item keeps for its next 304)."""
    found: dict[str, None] = {}
    for link in links:
        with contextlib.suppress(ValueError):
            found[normalise_url(link)] = None
    return list(found)


_LIVE = {DocumentStatus.FETCHED, DocumentStatus.EMBEDDED, DocumentStatus.INDEXED}


def _object_event(name: str, key: str, version: str) -> str:
    """An S3 notification body as S3 would send it, for an object a sync found unindexed or changed."""
    record = {"eventName": name, "s3": {"object": {"key": quote_plus(key), "sequencer": version}}}
    return json.dumps({"Records": [record]})


def _fetch_one(url: str, headers: dict[str, str], options: FetchOptions) -> FetchResult:
    from stratus.ingest.web import open_fetcher

    async def run() -> FetchResult:
        async with open_fetcher(options) as fetcher:
            result: FetchResult = await fetcher.fetch(url, headers or None)
            return result

    return asyncio.run(run())
