"""The DynamoDB documents table: one item per (collection, doc_id), written conditionally."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from stratus.errors import TransientError
from stratus.models import DocumentStatus
from stratus.stores.aws import call_dynamodb
from stratus.stores.collections import SETTINGS_DOC_ID

_DOC_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class DocumentRecord:
    """What Stratus knows about one document."""

    collection: str
    doc_id: str
    source: str = ""
    status: DocumentStatus = DocumentStatus.QUEUED
    version: str = ""
    content_sha256: str = ""
    title: str = ""
    chunk_count: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    error: str | None = None
    detail: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The stage that gave up on this FAILED document after transient faults: its message is in that
    # stage's dead-letter queue, and only a (redriven) message of that stage may resume it.
    dead_letter_stage: str | None = None
    # Sources of the documents made from this one's attachments (an e-mail's).
    attachments: list[str] = field(default_factory=list)

    def to_public(self) -> dict[str, Any]:
        """The JSON the API and CLI report."""
        return {
            "collection": self.collection,
            "doc_id": self.doc_id,
            "source": self.source,
            "title": self.title,
            "status": self.status.value,
            "content_sha256": self.content_sha256,
            "chunk_count": self.chunk_count,
            "chunks_embedded": self.chunks_embedded,
            "chunks_reused": self.chunks_reused,
            "error": self.error,
            "detail": self.detail,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "timings_ms": self.timings_ms,
            "attachments": self.attachments,
        }


def _attr(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value) if isinstance(value, float) else str(value)}
    if value is None:
        return {"NULL": True}
    if isinstance(value, dict | list):
        return {"S": json.dumps(value)}
    return {"S": str(value)}


def _not_in(statuses: Collection[DocumentStatus], values: dict[str, Any]) -> str:
    """`NOT (#st IN (...))` over `statuses`, their placeholders added to `values`."""
    names = []
    for i, status in enumerate(sorted(statuses, key=lambda s: s.value)):
        values[f":nf{i}"] = {"S": status.value}
        names.append(f":nf{i}")
    return f"NOT (#st IN ({', '.join(names)}))"


def decode_cursor(cursor: str, collection: str) -> dict[str, Any]:
    """The DynamoDB start key of a list cursor; ValueError unless it is one `list` made for `collection`."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, UnicodeError) as error:
        raise ValueError("not a cursor") from error
    if (
        not isinstance(key, dict)
        or set(key) != {"collection", "doc_id"}
        or key["collection"] != {"S": collection}
        or not isinstance(key["doc_id"], dict)
        or set(key["doc_id"]) != {"S"}
        or not isinstance(key["doc_id"]["S"], str)
        or not _DOC_ID.fullmatch(key["doc_id"]["S"])
    ):
        raise ValueError("not a cursor of this collection")
    return key


def _from_item(item: dict[str, Any]) -> DocumentRecord:
    def s(name: str, default: str = "") -> str:
        return str(item.get(name, {}).get("S", default))

    def n(name: str) -> float:
        return float(item.get(name, {}).get("N", 0))

    error = item.get("error", {}).get("S")
    timings = json.loads(s("timings_ms", "{}") or "{}")
    return DocumentRecord(
        collection=s("collection"),
        doc_id=s("doc_id"),
        source=s("source"),
        status=DocumentStatus(s("status", DocumentStatus.QUEUED.value)),
        version=s("version"),
        content_sha256=s("content_sha256"),
        title=s("title"),
        chunk_count=int(n("chunk_count")),
        chunks_embedded=int(n("chunks_embedded")),
        chunks_reused=int(n("chunks_reused")),
        error=error,
        detail=item.get("detail", {}).get("S"),
        created_at=n("created_at"),
        updated_at=n("updated_at"),
        timings_ms=timings,
        dead_letter_stage=item.get("dead_letter_stage", {}).get("S"),
        attachments=json.loads(s("attachments", "[]") or "[]"),
    )


class DocumentTable:
    """Status of every document, with conditional writes so late messages never win."""

    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._ddb = dynamodb_client
        self.table_name = table_name

    def get(self, collection: str, doc_id: str) -> DocumentRecord | None:
        """The record of one document, or None."""
        response = self._call(
            "get_item",
            TableName=self.table_name,
            Key=self._key(collection, doc_id),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return _from_item(item) if item else None

    def get_many(
        self, collection: str, doc_ids: Sequence[str], attributes: Sequence[str] | None = None
    ) -> dict[str, DocumentRecord]:
        """Records of several documents by doc id (BatchGetItem, 100 keys a call); absent ones are left out.

        `attributes` limits what is read (collection, doc_id and status are always included); the
        others keep their defaults in the records returned.
        """
        params: dict[str, Any] = {"ConsistentRead": True}
        if attributes is not None:
            names = dict.fromkeys(["collection", "doc_id", "status", *attributes])
            aliases = {f"#a{i}": name for i, name in enumerate(names)}
            params["ProjectionExpression"] = ", ".join(aliases)
            params["ExpressionAttributeNames"] = aliases
        unique = list(dict.fromkeys(doc_ids))
        found: dict[str, DocumentRecord] = {}
        for start in range(0, len(unique), 100):
            request = {
                self.table_name: {
                    "Keys": [self._key(collection, d) for d in unique[start : start + 100]],
                    **params,
                }
            }
            for attempt in range(8):
                response = self._call("batch_get_item", RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    record = _from_item(item)
                    found[record.doc_id] = record
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
            if request:
                raise TransientError(f"DynamoDB batch_get_item left {len(request)} table(s) unprocessed")
        return found

    def list(
        self, collection: str, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[DocumentRecord], str | None]:
        """One page of a collection's documents and the cursor of the next page."""
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#c = :c",
            "ExpressionAttributeNames": {"#c": "collection"},
            "ExpressionAttributeValues": {":c": {"S": collection}},
            "Limit": limit,
        }
        if cursor:
            params["ExclusiveStartKey"] = decode_cursor(cursor, collection)
        response = self._call("query", **params)
        # The collection's settings item (stores/collections.py) shares the partition: not a document.
        records = [
            _from_item(item)
            for item in response.get("Items", [])
            if item.get("doc_id", {}).get("S") != SETTINGS_DOC_ID
        ]
        last = response.get("LastEvaluatedKey")
        next_cursor = base64.urlsafe_b64encode(json.dumps(last).encode()).decode() if last else None
        return records, next_cursor

    def count_settled(self, collection: str, statuses: set[DocumentStatus], updated_since: float) -> int:
        """How many documents of a collection are in one of `statuses`, updated at or after `updated_since`.

        A COUNT query: no item is returned, which keeps polling cheap for large collections.
        """
        names = {"#c": "collection", "#st": "status", "#u": "updated_at"}
        values: dict[str, Any] = {":c": {"S": collection}, ":since": _attr(float(updated_since))}
        placeholders = []
        for i, status in enumerate(sorted(statuses, key=lambda s: s.value)):
            values[f":s{i}"] = {"S": status.value}
            placeholders.append(f":s{i}")
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#c = :c",
            "FilterExpression": f"#st IN ({', '.join(placeholders)}) AND #u >= :since",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "Select": "COUNT",
            "ConsistentRead": True,
        }
        total = 0
        while True:
            response = self._call("query", **params)
            total += int(response.get("Count", 0))
            last = response.get("LastEvaluatedKey")
            if not last:
                return total
            params["ExclusiveStartKey"] = last

    def record_version(
        self,
        collection: str,
        doc_id: str,
        version: str,
        status: DocumentStatus,
        not_from: Collection[DocumentStatus] = (),
        **fields: Any,
    ) -> bool:
        """Write a new version's state unless a newer version is already recorded.

        `not_from`: statuses that this same version, once recorded in them, may not leave.
        """
        values: dict[str, Any] = {":v": {"S": version}}
        if not not_from:
            condition = "attribute_not_exists(doc_id) OR version <= :v"
        else:
            same_version = f"version = :v AND {_not_in(not_from, values)}"
            condition = f"attribute_not_exists(doc_id) OR version < :v OR ({same_version})"
        return self._update(
            collection,
            doc_id,
            {"status": status.value, "version": version, **fields},
            condition,
            values,
            may_create=True,
        )

    def create(
        self, collection: str, doc_id: str, version: str, status: DocumentStatus, **fields: Any
    ) -> bool:
        """Write a document's first record (one conditional PutItem); False when it has one already.

        What record_version writes for a document without a record, at a fraction of an UpdateItem's
        cost to the emulator: bulk ingestion writes thousands of first records.
        """
        now = time.time()
        values = {"status": status.value, "version": version, **fields, "created_at": now, "updated_at": now}
        item = {**self._key(collection, doc_id)}
        item.update({name: _attr(value) for name, value in values.items() if value is not None})
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(doc_id)",
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def advance(
        self,
        collection: str,
        doc_id: str,
        content_sha256: str,
        status: DocumentStatus,
        not_from: Collection[DocumentStatus] = (),
        **fields: Any,
    ) -> bool:
        """Move the document to `status` if it holds `content_sha256`, unless DELETED or in `not_from`."""
        values: dict[str, Any] = {":sha": {"S": content_sha256}}
        condition = f"content_sha256 = :sha AND {_not_in({DocumentStatus.DELETED, *not_from}, values)}"
        return self._update(collection, doc_id, {"status": status.value, **fields}, condition, values)

    def resume(
        self, collection: str, doc_id: str, content_sha256: str, stage: str, status: DocumentStatus
    ) -> bool:
        """Take a document that `stage` gave up on (FAILED, message dead-lettered) back to `status`."""
        return self._update(
            collection,
            doc_id,
            {"status": status.value},
            "content_sha256 = :sha AND #st = :failed AND dead_letter_stage = :stage",
            {
                ":sha": {"S": content_sha256},
                ":failed": {"S": DocumentStatus.FAILED.value},
                ":stage": {"S": stage},
            },
        )

    def _update(
        self,
        collection: str,
        doc_id: str,
        fields: dict[str, Any],
        condition: str,
        condition_values: dict[str, Any],
        may_create: bool = False,
    ) -> bool:
        """One conditional UpdateItem: fields set, None fields removed; False when the condition failed.

        `may_create`: the item may not exist yet (it then gets `created_at`); the other writes' conditions
        name attributes of an existing item.
        """
        now = time.time()
        fields = {**fields, "updated_at": now}
        if "error" not in fields and fields.get("status") != DocumentStatus.FAILED.value:
            fields["error"] = None
        # Any other write ends a give-up: only the give-up itself names the stage.
        fields.setdefault("dead_letter_stage", None)
        names: dict[str, str] = {"#st": "status"} if "#st" in condition else {}
        values = dict(condition_values)
        sets: list[str] = []
        removes: list[str] = []
        if may_create:
            values[":now"] = _attr(now)
            sets.append("created_at = if_not_exists(created_at, :now)")
        for i, (name, value) in enumerate(fields.items()):
            names[f"#f{i}"] = name
            if value is None:
                removes.append(f"#f{i}")
                continue
            values[f":f{i}"] = _attr(value)
            sets.append(f"#f{i} = :f{i}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=self._key(collection, doc_id),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return call_dynamodb(self._ddb, operation, **params)

    @staticmethod
    def _key(collection: str, doc_id: str) -> dict[str, Any]:
        return {"collection": {"S": collection}, "doc_id": {"S": doc_id}}
