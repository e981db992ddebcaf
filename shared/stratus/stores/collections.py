"""Per-collection settings (chunking), kept as one reserved item of the documents table."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from stratus.stores.aws import call_dynamodb

# Document ids are 32 hex characters (models.make_doc_id), so this key never names a document.
# Keeping settings in the documents table needs no new table and no new IAM grant: every stage
# that chunks already reads that table.
SETTINGS_DOC_ID = "~collection-settings"
CHUNKING_MODES = ("token", "heading", "rows")


@dataclass(frozen=True)
class CollectionSettings:
    """How a collection is chunked; None values fall back to the process-wide STRATUS_CHUNK_* settings."""

    chunking: str = "token"
    chunk_tokens: int | None = None
    chunk_overlap_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.chunking not in CHUNKING_MODES:
            raise ValueError(f"chunking must be one of {', '.join(CHUNKING_MODES)}, not {self.chunking!r}")
        if self.chunk_tokens is not None and not 16 <= self.chunk_tokens <= 512:
            raise ValueError("chunk_tokens must be between 16 and 512")
        if self.chunk_overlap_tokens is not None and not 0 <= self.chunk_overlap_tokens <= 256:
            raise ValueError("chunk_overlap_tokens must be between 0 and 256")

    @property
    def is_default(self) -> bool:
        """True when nothing differs from the process-wide defaults (chunk ids stay as before)."""
        return self == CollectionSettings()

    def to_public(self) -> dict[str, Any]:
        """The settings as the API and CLI show them."""
        return {
            "chunking": self.chunking,
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap_tokens": self.chunk_overlap_tokens,
        }


class CollectionSettingsStore:
    """Reads and writes a collection's settings item."""

    def __init__(self, dynamodb_client: Any, table_name: str, generation_ttl_s: float = 1.0) -> None:
        self._ddb = dynamodb_client
        self.table_name = table_name
        self._generation_ttl_s = generation_ttl_s
        self._generations: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def generation(self, collection: str, fresh: bool = False) -> int:
        """The generation whose chunk table serves the collection (0 before any reindex).

        Cached for `generation_ttl_s`: after a switch, readers move within that time, which is why
        `stratus reindex` waits longer than it before dropping the old table.
        """
        now = time.monotonic()
        with self._lock:
            cached = self._generations.get(collection)
        if not fresh and cached is not None and now - cached[0] < self._generation_ttl_s:
            return cached[1]
        response = call_dynamodb(
            self._ddb,
            "get_item",
            TableName=self.table_name,
            Key=self._key(collection),
            ConsistentRead=True,
            ProjectionExpression="#g",
            ExpressionAttributeNames={"#g": "generation"},
        )
        value = int(response.get("Item", {}).get("generation", {}).get("N", "0"))
        with self._lock:
            self._generations[collection] = (now, value)
        return value

    def switch_generation(self, collection: str, old: int, new: int) -> bool:
        """Atomically point the collection at generation `new` if it still serves `old`."""
        condition = "attribute_not_exists(#g) OR #g = :old" if old == 0 else "#g = :old"
        try:
            call_dynamodb(
                self._ddb,
                "update_item",
                TableName=self.table_name,
                Key=self._key(collection),
                UpdateExpression="SET #g = :new",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#g": "generation"},
                ExpressionAttributeValues={":old": {"N": str(old)}, ":new": {"N": str(new)}},
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        with self._lock:
            self._generations[collection] = (time.monotonic(), new)
        return True

    def get(self, collection: str) -> CollectionSettings:
        """The collection's settings; the defaults when none were set."""
        response = call_dynamodb(
            self._ddb, "get_item", TableName=self.table_name, Key=self._key(collection), ConsistentRead=True
        )
        item = response.get("Item")
        if not item:
            return CollectionSettings()

        def number(name: str) -> int | None:
            value = item.get(name, {}).get("N")
            return int(value) if value is not None else None

        return CollectionSettings(
            chunking=item.get("chunking", {}).get("S", "token"),
            chunk_tokens=number("chunk_tokens"),
            chunk_overlap_tokens=number("chunk_overlap_tokens"),
        )

    def put(self, collection: str, settings: CollectionSettings) -> None:
        """Replace the collection's settings (UpdateItem: the API role has no PutItem on the table)."""
        names = {"#m": "chunking"}
        values: dict[str, Any] = {":m": {"S": settings.chunking}}
        sets, removes = ["#m = :m"], []
        for name, value in (
            ("chunk_tokens", settings.chunk_tokens),
            ("chunk_overlap_tokens", settings.chunk_overlap_tokens),
        ):
            alias = f"#{name}"
            names[alias] = name
            if value is None:
                removes.append(alias)
            else:
                values[f":{name}"] = {"N": str(value)}
                sets.append(f"{alias} = :{name}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        call_dynamodb(
            self._ddb,
            "update_item",
            TableName=self.table_name,
            Key=self._key(collection),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    @staticmethod
    def _key(collection: str) -> dict[str, Any]:
        return {"collection": {"S": collection}, "doc_id": {"S": SETTINGS_DOC_ID}}
