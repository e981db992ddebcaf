"""Per-collection settings (chunking), kept as one reserved item of the documents table."""

from __future__ import annotations

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

    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._ddb = dynamodb_client
        self.table_name = table_name

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
