"""The DynamoDB API keys table: one item per key (by sha256 of the key) plus rate-limit bucket items."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from stratus.stores.aws import call_dynamodb

# Bucket items share the table with keys; their key_hash can never collide with a hex digest.
BUCKET_PREFIX = "bucket#"


@dataclass
class KeyRecord:
    """What the table holds about one API key (its hash, never the key)."""

    key_hash: str
    key_id: str
    name: str
    collections: list[str]
    roles: list[str]
    created_at: float
    revoked_at: float | None = None
    rate_limit_per_s: float | None = None
    rate_limit_burst: int | None = None
    gateway_key_id: str | None = None

    def to_public(self) -> dict[str, Any]:
        """What `list` shows: every field but the hash (never the key, which is not stored)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "key_hash"}


def _to_item(record: KeyRecord) -> dict[str, Any]:
    item: dict[str, Any] = {
        "key_hash": {"S": record.key_hash},
        "key_id": {"S": record.key_id},
        "name": {"S": record.name},
        "collections": {"L": [{"S": c} for c in record.collections]},
        "roles": {"L": [{"S": r} for r in record.roles]},
        "created_at": {"N": repr(record.created_at)},
    }
    if record.revoked_at is not None:
        item["revoked_at"] = {"N": repr(record.revoked_at)}
    if record.rate_limit_per_s is not None:
        item["rate_limit_per_s"] = {"N": repr(float(record.rate_limit_per_s))}
    if record.rate_limit_burst is not None:
        item["rate_limit_burst"] = {"N": str(record.rate_limit_burst)}
    if record.gateway_key_id is not None:
        item["gateway_key_id"] = {"S": record.gateway_key_id}
    return item


def _from_item(item: dict[str, Any]) -> KeyRecord:
    def number(name: str) -> float | None:
        return float(item[name]["N"]) if name in item else None

    burst = number("rate_limit_burst")
    return KeyRecord(
        key_hash=item["key_hash"]["S"],
        key_id=item["key_id"]["S"],
        name=item.get("name", {}).get("S", ""),
        collections=[c["S"] for c in item.get("collections", {}).get("L", [])],
        roles=[r["S"] for r in item.get("roles", {}).get("L", [])],
        created_at=number("created_at") or 0.0,
        revoked_at=number("revoked_at"),
        rate_limit_per_s=number("rate_limit_per_s"),
        rate_limit_burst=int(burst) if burst is not None else None,
        gateway_key_id=item.get("gateway_key_id", {}).get("S"),
    )


@dataclass(frozen=True)
class BucketState:
    """A token bucket as stored: tokens left at `updated_at`."""

    tokens: float
    updated_at: float


class KeyTable:
    """API keys by hash, and per-key token buckets updated with conditional writes."""

    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._ddb = dynamodb_client
        self.table_name = table_name

    def put(self, record: KeyRecord) -> None:
        """Store a new key; refuses to overwrite an existing one."""
        self._call(
            "put_item",
            TableName=self.table_name,
            Item=_to_item(record),
            ConditionExpression="attribute_not_exists(key_hash)",
        )

    def get(self, key_hash: str) -> KeyRecord | None:
        """The key whose sha256 is `key_hash`, or None."""
        response = self._call(
            "get_item", TableName=self.table_name, Key={"key_hash": {"S": key_hash}}, ConsistentRead=True
        )
        item = response.get("Item")
        return _from_item(item) if item and "key_id" in item else None

    def list(self) -> list[KeyRecord]:
        """Every key, revoked ones included (a scan: the table holds keys and one bucket per key)."""
        records: list[KeyRecord] = []
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": "attribute_exists(key_id) AND NOT begins_with(key_hash, :bucket)",
            "ExpressionAttributeValues": {":bucket": {"S": BUCKET_PREFIX}},
        }
        while True:
            response = self._call("scan", **params)
            records.extend(_from_item(item) for item in response.get("Items", []))
            if not response.get("LastEvaluatedKey"):
                return sorted(records, key=lambda r: r.created_at)
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def find(self, key_id: str) -> KeyRecord | None:
        """The key with this key_id, or None."""
        return next((r for r in self.list() if r.key_id == key_id), None)

    def revoke(self, key_hash: str, at: float) -> bool:
        """Mark a key revoked (kept for the record); False when it was already revoked or is unknown."""
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key={"key_hash": {"S": key_hash}},
                UpdateExpression="SET revoked_at = :at",
                ConditionExpression="attribute_exists(key_id) AND attribute_not_exists(revoked_at)",
                ExpressionAttributeValues={":at": {"N": repr(at)}},
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def set_gateway_key_id(self, key_hash: str, gateway_key_id: str) -> None:
        """Remember the API Gateway key that mirrors this key."""
        self._call(
            "update_item",
            TableName=self.table_name,
            Key={"key_hash": {"S": key_hash}},
            UpdateExpression="SET gateway_key_id = :g",
            ExpressionAttributeValues={":g": {"S": gateway_key_id}},
        )

    # -- token buckets ---------------------------------------------------------------------

    def bucket(self, bucket_id: str) -> BucketState | None:
        """The stored state of a token bucket, or None before its first request."""
        response = self._call(
            "get_item",
            TableName=self.table_name,
            Key={"key_hash": {"S": BUCKET_PREFIX + bucket_id}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return None
        return BucketState(float(item["tokens"]["N"]), float(item["updated_at"]["N"]))

    def replace_bucket(self, bucket_id: str, expected: BucketState | None, new: BucketState) -> bool:
        """Write `new` only if the bucket still is `expected` (compare-and-set); False if another won."""
        if expected is None:
            condition = "attribute_not_exists(key_hash)"
            values: dict[str, Any] = {}
        else:
            condition = "updated_at = :seen_at AND tokens = :seen_tokens"
            values = {
                ":seen_at": {"N": repr(expected.updated_at)},
                ":seen_tokens": {"N": repr(expected.tokens)},
            }
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item={
                    "key_hash": {"S": BUCKET_PREFIX + bucket_id},
                    "tokens": {"N": repr(new.tokens)},
                    "updated_at": {"N": repr(new.updated_at)},
                },
                ConditionExpression=condition,
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return call_dynamodb(self._ddb, operation, **params)
