"""The DynamoDB audit table: one item per administrative action, by UTC day, newest first, with a TTL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from stratus.stores.aws import call_dynamodb

# Partition key `day` (YYYY-MM-DD, UTC) and sort key `entry` (ISO time, then the entry id): a day's
# entries read in time order with one Query; `expires_at` (epoch seconds) is the table's TTL attribute.
DAY_FORMAT = "%Y-%m-%d"


def day_of(at: float) -> str:
    """The UTC day (partition) of a time."""
    return datetime.fromtimestamp(at, UTC).strftime(DAY_FORMAT)


class AuditTable:
    """Audit entries: written once, read back newest first, expired by DynamoDB after the retention."""

    def __init__(self, dynamodb_client: Any, table_name: str, retention_days: int) -> None:
        self._ddb = dynamodb_client
        self.table_name = table_name
        self.retention_days = retention_days

    def put(self, entry: dict[str, Any]) -> None:
        """Store one entry (a dict of the audit schema: id, at, time, actor, action, ...)."""
        at = float(entry["at"])
        item = {
            "day": {"S": day_of(at)},
            "entry": {"S": f"{entry['time']}#{entry['id']}"},
            "action": {"S": str(entry["action"])},
            "actor": {"S": str(entry["actor"])},
            "outcome": {"S": str(entry["outcome"])},
            "body": {"S": json.dumps(entry, sort_keys=True)},
            "expires_at": {"N": str(int(at + self.retention_days * 86400))},
        }
        self._call(
            "put_item",
            TableName=self.table_name,
            Item=item,
            ConditionExpression="attribute_not_exists(#e)",
            ExpressionAttributeNames={"#e": "entry"},
        )

    def recent(
        self,
        days: int,
        limit: int,
        action: str | None = None,
        actor: str | None = None,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `limit` entries of the last `days` UTC days, newest first, optionally one action or actor."""
        found: list[dict[str, Any]] = []
        for item in self._items(days, action, actor, now):
            found.append(json.loads(item["body"]["S"]))
            if len(found) >= limit:
                break
        return found

    def _items(
        self, days: int, action: str | None, actor: str | None, now: float | None
    ) -> Iterator[dict[str, Any]]:
        today = datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)
        filters, names, values = [], {}, {}
        if action:
            # "key" matches key.create and key.revoke; a full name matches only itself.
            filters.append("(#a = :a OR begins_with(#a, :prefix))")
            names["#a"] = "action"
            values[":a"] = {"S": action}
            values[":prefix"] = {"S": action.rstrip(".") + "."}
        if actor:
            filters.append("#k = :k")
            names["#k"] = "actor"
            values[":k"] = {"S": actor}
        for back in range(max(days, 1)):
            params: dict[str, Any] = {
                "TableName": self.table_name,
                "KeyConditionExpression": "#d = :d",
                "ExpressionAttributeNames": {"#d": "day", **names},
                "ExpressionAttributeValues": {
                    ":d": {"S": (today - timedelta(days=back)).strftime(DAY_FORMAT)},
                    **values,
                },
                "ScanIndexForward": False,
            }
            if filters:
                params["FilterExpression"] = " AND ".join(filters)
            while True:
                response = self._call("query", **params)
                yield from response.get("Items", [])
                if not response.get("LastEvaluatedKey"):
                    break
                params["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return call_dynamodb(self._ddb, operation, **params)
