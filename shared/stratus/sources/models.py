"""Request and response shapes of sources and syncs (the fixed interface of the sources API)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SYNC_STATES = ("RUNNING", "SUCCEEDED", "FAILED")
COUNT_NAMES = ("discovered", "added", "updated", "unchanged", "deleted", "failed", "skipped")
# Why a URL was not fetched or not indexed; the sync reports a count per class.
SKIP_CLASSES = ("robots", "scope", "type", "noindex", "depth", "max_pages", "canonical", "redirect")
MAX_PATTERNS = 50
MAX_URLS = 100
_SCHEDULE = re.compile(
    r"^(rate\(\s*\d{1,6}\s+(minute|minutes|hour|hours|day|days)\s*\)|cron\([^()]{1,200}\))$"
)

Pattern = Annotated[str, Field(min_length=1, max_length=300)]
Url = Annotated[str, Field(min_length=1, max_length=2048)]


class WebSourceRequest(BaseModel):
    """A web site: start URLs and/or sitemaps, the scope, and an optional schedule."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["web"]
    urls: list[Url] = Field(default_factory=list, max_length=MAX_URLS)
    sitemaps: list[Url] = Field(default_factory=list, max_length=MAX_URLS)
    include: list[Pattern] = Field(default_factory=list, max_length=MAX_PATTERNS)
    exclude: list[Pattern] = Field(default_factory=list, max_length=MAX_PATTERNS)
    max_depth: int = Field(5, ge=0, le=100)
    max_pages: int = Field(1000, ge=1, le=1_000_000)
    schedule: str | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return check_schedule(value)


class S3SourceRequest(BaseModel):
    """A prefix of the collection's inbox (inbox/<collection>/<prefix>) reconciled by each sync."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["s3"]
    prefix: str = Field("", max_length=1024)
    schedule: str | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if ".." in value.split("/") or value.startswith("/"):
            raise ValueError("a relative prefix without '..' segments")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return check_schedule(value)


def check_schedule(value: str | None) -> str | None:
    """A rate(...) or cron(...) expression as EventBridge writes them, or None."""
    if value is None:
        return None
    value = value.strip()
    if not _SCHEDULE.fullmatch(value):
        raise ValueError("rate(N minutes|hours|days) or cron(min hour day month weekday year)")
    if value.startswith("cron("):
        from stratus.sources.schedule import parse_cron

        parse_cron(value)
    return value


class SyncView(BaseModel):
    """A sync job as the API returns it."""

    sync_id: str
    state: str
    started_at: float
    finished_at: float | None = None
    counts: dict[str, int]
    skipped_by: dict[str, int] = Field(default_factory=dict)
    failures: list[dict[str, str]] = Field(default_factory=list)
    error: str | None = None


def public_source(item: dict[str, Any]) -> dict[str, Any]:
    """A stored source as the API returns it."""
    return {k: v for k, v in item.items() if k not in {"pk", "sk", "next_due"}}
