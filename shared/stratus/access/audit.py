"""The audit log of administrative actions: who (key id), what, when, outcome.

Each entry is one structured log line (message "audit", key ``audit``: the entry) through the
observability module, and one item in the audit table (`stratus audit` reads it back). The schema is
stable; new fields may be added, none renamed or removed (``schema`` says which version):

| field | meaning |
|---|---|
| schema | 1 |
| id | 32 hex characters, unique |
| at, time | epoch seconds, and the same as ISO 8601 UTC |
| actor | ``key:<key_id>`` for an API key, ``cli:<OS user>`` for the CLI (AWS credentials) |
| action | ``key.create``, ``key.revoke``, ``document.delete``, ``dlq.redrive`` (later ``source.*``) |
| target | what was acted on: a key_id, ``<collection>/<doc_id>``, a stage |
| collection | the collection concerned, when there is one |
| outcome | ``success``, ``refused`` (a 4xx: not allowed, invalid, conflict) or ``failed`` (an error) |
| detail | a short reason or summary (at most 500 characters) |
| request_id | the correlation id of the request or invocation, when there is one |

A failed write to the table never fails the action: the log line is still written, and an error
line ("audit entry not stored") carries the entry, so nothing is lost from the logs.
"""

from __future__ import annotations

import getpass
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from stratus.observability import current_request_id, logger

if TYPE_CHECKING:
    from stratus.stores.audit import AuditTable

SCHEMA_VERSION = 1
Outcome = Literal["success", "refused", "failed"]
ACTIONS = ("key.create", "key.revoke", "document.delete", "dlq.redrive")
_DETAIL_MAX = 500


def key_actor(key_id: str) -> str:
    """The actor of a request made with an API key."""
    return f"key:{key_id}"


def cli_actor() -> str:
    """The actor of a CLI command (AWS credentials, no API key): the OS user running it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def make_entry(
    actor: str,
    action: str,
    target: str,
    outcome: Outcome,
    *,
    collection: str | None = None,
    detail: str = "",
    at: float | None = None,
) -> dict[str, Any]:
    """One entry of the audit schema."""
    when = time.time() if at is None else at
    return {
        "schema": SCHEMA_VERSION,
        "id": uuid.uuid4().hex,
        "at": when,
        "time": datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "actor": actor,
        "action": action,
        "target": target,
        "collection": collection,
        "outcome": outcome,
        "detail": detail[:_DETAIL_MAX],
        "request_id": current_request_id(),
    }


@dataclass
class Audited:
    """What an `audited` block may tell its entry: the target once known, a detail, another outcome."""

    target: str
    collection: str | None = None
    detail: str = ""
    outcome: Outcome | None = None


class AuditLog:
    """Where administrative actions are recorded: one log line each, and an item in the audit table."""

    def __init__(self, table: AuditTable) -> None:
        self._table = table

    def record(
        self,
        actor: str,
        action: str,
        target: str,
        outcome: Outcome,
        *,
        collection: str | None = None,
        detail: str = "",
    ) -> dict[str, Any]:
        """Log and store one audit entry; return it."""
        entry = make_entry(actor, action, target, outcome, collection=collection, detail=detail)
        logger.info("audit", extra={"audit": entry})
        try:
            self._table.put(entry)
        except Exception:
            logger.exception("audit entry not stored", extra={"audit": entry})
        return entry

    @contextmanager
    def audited(
        self, actor: str, action: str, target: str, collection: str | None = None
    ) -> Iterator[Audited]:
        """Record the block's outcome: success, refused (an HTTP 4xx) or failed (any other exception)."""
        from fastapi import HTTPException

        note = Audited(target, collection)
        try:
            yield note
        except HTTPException as error:
            outcome: Outcome = "refused" if error.status_code < 500 else "failed"
            detail = f"{error.status_code}: {error.detail}"
            self.record(actor, action, note.target, outcome, collection=note.collection, detail=detail)
            raise
        except Exception as error:
            detail = f"{type(error).__name__}: {error}"
            self.record(actor, action, note.target, "failed", collection=note.collection, detail=detail)
            raise
        outcome = note.outcome or "success"
        self.record(actor, action, note.target, outcome, collection=note.collection, detail=note.detail)
