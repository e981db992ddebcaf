"""A local read replica of S3-backed LanceDB tables, so warm queries read local disk.

A Lance table is a folder of immutable, uniquely named files (``data/``, ``_indices/``,
``_deletions/``) plus one manifest per version in ``_versions/``; a manifest names every file its
version reads. A sync therefore:

1. lists ``_versions/`` on S3 (one LIST) and stops when the newest manifest is the one it has;
2. lists the other folders and downloads only files it lacks (each to a temporary name, then
   renamed: a reader never sees a partial file);
3. writes the newest manifest last (temporary name, then rename), so a local reader either finds
   the previous version or a version whose every file is already on disk;
4. opens that version as a new table handle and swaps the reference; queries in flight keep the
   handle they started with;
5. deletes local files S3 no longer has (only versions pruned by maintenance reference them).

The API reads through :meth:`TableReplica.table`: the first call syncs; under steady reads a sync
runs in the background once the last check is ``interval_s`` / 2 old (one LIST when nothing
changed), and a read waits for one only when the last check is ``interval_s`` old, so a commit is
served to every read that starts ``interval_s`` after it; a commit made by this process is seen at once.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

VERSIONS = "_versions"
SKIPPED = ("_transactions/", "_versions/")
TMP_SUFFIX = ".replica-tmp"
# Longest a query waits for another thread's sync before it reads the version it has.
MAX_WAIT_S = 2.0


class ReplicaTooLarge(Exception):
    """Copying the table would take the local replicas past their byte budget: read S3 directly."""


def manifest_version(name: str) -> int | None:
    """The table version a manifest file name stands for (V1 ``<v>.manifest``, V2 inverted)."""
    stem = name.removesuffix(".manifest")
    if stem == name or not stem.isdigit():
        return None
    number = int(stem)
    # V2 naming stores u64::MAX - version zero-padded to 20 digits, so that the newest lists first.
    return (2**64 - 1) - number if len(stem) == 20 else number


@dataclass
class _Replica:
    lock: threading.Lock = field(default_factory=threading.Lock)
    table: Any = None
    version: int | None = None
    manifest: str | None = None
    checked_at: float = 0.0
    syncs: int = 0
    files_copied: int = 0
    too_large_until: float = 0.0
    failures: int = 0  # syncs failed in a row


class TableReplica:
    """Keeps local copies of tables under ``s3://bucket/prefix`` in ``root``."""

    def __init__(
        self, s3: Any, uri: str, root: Path, interval_s: float, workers: int = 8, max_bytes: int | None = None
    ) -> None:
        if not uri.startswith("s3://"):
            raise ValueError(f"a replica mirrors an s3:// store, not {uri!r}")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.root = Path(root)
        self.interval_s = interval_s
        self._workers = workers
        # Budget of every local copy together (Lambda's /tmp is EphemeralStorage; a copy made on a first
        # query must also fit the API's 29 s): a table that does not fit is read from S3 directly.
        self.max_bytes = max_bytes
        self._replicas: dict[str, _Replica] = {}
        self._guard = threading.Lock()
        self._db: Any = None

    # --- reading -----------------------------------------------------------------------

    def table(self, name: str, *, aside: bool = True) -> Any | None:
        """The local handle of table `name` (None when S3 has no such table).

        The first call syncs. Once the last check is `interval_s` / 2 old, a read starts a sync in the
        background and keeps the version it has; a read that finds the last check `interval_s` old
        (or a commit by this process, `invalidate`) waits for a sync, so a read started that long
        after a commit sees it, as LanceDB's read_consistency_interval promises. Steady traffic thus
        never waits for a copy; `aside=False` (a caller off the request path) runs that sync itself.
        Raises ReplicaTooLarge when the copy would pass `max_bytes` (asked
        again after `interval_s`).
        """
        replica = self._replica(name)
        if replica.too_large_until > time.monotonic():
            raise ReplicaTooLarge(name)
        if replica.table is None:
            with replica.lock:
                if replica.table is None:
                    self._sync_within_budget(name, replica)
            return replica.table
        age = time.monotonic() - replica.checked_at
        if age >= self.interval_s:
            # A sync in flight finishes first, but a slow one (a loaded S3) never holds a query past
            # MAX_WAIT_S: it then reads the version it has.
            if replica.lock.acquire(timeout=MAX_WAIT_S):
                try:
                    if time.monotonic() - replica.checked_at >= self.interval_s:
                        self._sync_or_keep(name, replica)
                finally:
                    replica.lock.release()
            else:
                _log.info("replica of %s still syncing; serving version %s", name, replica.version)
        elif age >= self.interval_s / 2 and replica.lock.acquire(blocking=False):
            if aside:
                context = contextvars.copy_context()
                threading.Thread(
                    target=context.run, args=(self._sync_aside, name, replica), daemon=True
                ).start()
            else:  # the caller is off the request path already (the store's watcher)
                self._sync_aside(name, replica)
        if replica.too_large_until > time.monotonic():
            raise ReplicaTooLarge(name)
        return replica.table

    def _sync_or_keep(self, name: str, replica: _Replica) -> None:
        """Sync; on any failure but ReplicaTooLarge keep serving the version held."""
        try:
            self._sync_within_budget(name, replica)
            replica.failures = 0
        except ReplicaTooLarge:
            raise
        except Exception:
            replica.checked_at = time.monotonic()  # do not hammer S3; retry after the interval
            replica.failures += 1
            if replica.failures == 1:  # the first of a run of failures, with its cause; then quietly
                _log.exception("replica sync of %s failed; serving version %s", name, replica.version)
            else:
                _log.debug("replica sync of %s failed again (%d in a row)", name, replica.failures)

    def _sync_aside(self, name: str, replica: _Replica) -> None:
        """A background sync by a thread that already holds the replica's lock."""
        try:
            self._sync_or_keep(name, replica)
        except ReplicaTooLarge:
            pass  # recorded in too_large_until: the next read goes to S3
        finally:
            replica.lock.release()

    def invalidate(self, name: str) -> None:
        """Make the next read check S3 (this process just committed to the table)."""
        self._replica(name).checked_at = 0.0

    def refresh(self, name: str) -> int | None:
        """Sync table `name` now; return the version the replica serves."""
        replica = self._replica(name)
        with replica.lock:
            self._sync(name, replica)
        return replica.version

    def stats(self, name: str) -> dict[str, Any]:
        """Version served, syncs done and files copied (for tests and benchmarks)."""
        replica = self._replica(name)
        return {
            "version": replica.version,
            "syncs": replica.syncs,
            "files_copied": replica.files_copied,
            "failures": replica.failures,
        }

    # --- syncing -----------------------------------------------------------------------

    def _sync_within_budget(self, name: str, replica: _Replica) -> None:
        try:
            self._sync(name, replica)
        except ReplicaTooLarge:
            replica.table, replica.version = None, None
            replica.too_large_until = time.monotonic() + self.interval_s
            shutil.rmtree(self.root / f"{name}.lance", ignore_errors=True)
            _log.warning(
                "table %s does not fit the replica budget of %s bytes; reading S3", name, self.max_bytes
            )
            raise

    def _local_bytes(self, except_dir: Path) -> int:
        if not self.root.is_dir():
            return 0
        return sum(
            p.stat().st_size for p in self.root.rglob("*") if p.is_file() and except_dir not in p.parents
        )

    def _replica(self, name: str) -> _Replica:
        with self._guard:
            return self._replicas.setdefault(name, _Replica())

    def _sync(self, name: str, replica: _Replica) -> None:
        table_prefix = f"{self._prefix}{name}.lance/"
        manifests = self._list(table_prefix + VERSIONS + "/")
        replica.checked_at = time.monotonic()
        versions = [
            (v, key) for key, _ in manifests if (v := manifest_version(key.rsplit("/", 1)[-1])) is not None
        ]
        if not versions:
            return
        version, manifest_key = max(versions)
        if version == replica.version and replica.table is not None:
            return
        local_dir = self.root / f"{name}.lance"
        remote = {key: size for key, size in self._list(table_prefix) if not _skipped(key, table_prefix)}
        missing = []
        for key, size in remote.items():
            path = local_dir / key[len(table_prefix) :]
            if not path.is_file() or path.stat().st_size != size:
                missing.append((key, path))
        if (
            self.max_bytes is not None
            and sum(remote.values()) + self._local_bytes(local_dir) > self.max_bytes
        ):
            raise ReplicaTooLarge(name)
        if missing:
            with ThreadPoolExecutor(self._workers) as pool:
                list(pool.map(lambda item: self._download(*item), missing))
        manifest_path = local_dir / manifest_key[len(table_prefix) :]
        self._download(manifest_key, manifest_path)
        table = self._open(name)
        replica.table, replica.version, replica.manifest = table, version, manifest_key
        replica.syncs += 1
        replica.files_copied += len(missing) + 1
        self._collect_garbage(local_dir, table_prefix, remote, manifest_path)
        _log.info("replica %s at version %s (%d files copied)", name, version, len(missing) + 1)

    def _open(self, name: str) -> Any:
        from stratus.stores.lance import skip_rest_namespace_client

        skip_rest_namespace_client()
        import lancedb

        if self._db is None:
            self._db = lancedb.connect(str(self.root))
        table = self._db.open_table(name)
        table.checkout_latest()
        return table

    def _list(self, prefix: str) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
            found.extend((o["Key"], int(o["Size"])) for o in page.get("Contents", []))
        return found

    def _download(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{threading.get_ident()}{TMP_SUFFIX}")
        body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"]
        with open(tmp, "wb") as out:
            shutil.copyfileobj(body, out, 1 << 20)
        os.replace(tmp, path)

    def _collect_garbage(
        self, local_dir: Path, table_prefix: str, remote: dict[str, int], manifest: Path
    ) -> None:
        """Drop local files S3 no longer has, and manifests older than the one served."""
        keep = {local_dir / key[len(table_prefix) :] for key in remote}
        for path in local_dir.rglob("*"):
            if not path.is_file() or path == manifest or path.name.endswith(TMP_SUFFIX):
                continue
            if path.parent.name == VERSIONS or path not in keep:
                path.unlink(missing_ok=True)


def _skipped(key: str, table_prefix: str) -> bool:
    return key[len(table_prefix) :].startswith(SKIPPED)
