"""The sources table: sources, sync jobs, the crawl's visited set and per-page validators.

One DynamoDB table, keys pk/sk:
  sources            / <collection>#<source_id>   a source (and its lock: active_sync)
  sync#<source_id>   / <sync_id>                  a sync job: state, counts, pending units
  seen#<sync_id>     / <unit key>                 visited set: one item per URL, sitemap or listing
  page#<source_id>   / <url>                      per page: doc id, ETag, Last-Modified, last sync seen
  pace#<origin>      / next                       the next request slot of a host (politeness)
A unit (one URL, one sitemap, one listing page) is counted in the sync's `pending` before its visited
item is created, and leaves it only after the visited item moved from queued to done (once): `pending`
reaches 0 only when the frontier has drained, whatever runs concurrently; a crash can leave it too high
(the sync then ends FAILED, deleting nothing), never too low.
"""

from __future__ import annotations

import json
import time
from typing import Any

from stratus.sources.models import COUNT_NAMES
from stratus.stores.aws import call_dynamodb

SOURCES_PK = "sources"
MAX_FAILURES_KEPT = 100
MAX_LINKS_BYTES = 300_000  # a DynamoDB item holds 400 KB
SEEN_TTL_S = 14 * 24 * 3600


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, typed in item.items():
        ((kind, value),) = typed.items()
        if kind == "S":
            out[name] = value
        elif kind == "N":
            out[name] = float(value) if "." in value or "e" in value.lower() else int(value)
        elif kind == "BOOL":
            out[name] = value
        elif kind == "NULL":
            out[name] = None
        elif kind == "L":
            out[name] = [_plain({"v": v})["v"] for v in value]
        elif kind == "M":
            out[name] = _plain(value)
    return out


class SourceStore:
    """Sources, syncs, visited sets and page validators in the sources table."""

    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._ddb = dynamodb_client
        self.table_name = table_name

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return call_dynamodb(self._ddb, operation, **params)

    def _conditional(self, operation: str, **params: Any) -> bool:
        try:
            self._call(operation, TableName=self.table_name, **params)
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # -- sources -----------------------------------------------------------------------------

    def put_source(
        self, collection: str, source_id: str, spec: dict[str, Any], next_due: float | None
    ) -> None:
        """Store a new source."""
        item = {
            "pk": _s(SOURCES_PK),
            "sk": _s(f"{collection}#{source_id}"),
            "spec": _s(json.dumps(spec)),
            "created_at": _n(time.time()),
        }
        if next_due is not None:
            item["next_due"] = _n(next_due)
        self._call("put_item", TableName=self.table_name, Item=item)

    def get_source(self, collection: str, source_id: str) -> dict[str, Any] | None:
        """A source: its spec plus active_sync, last_sync and next_due; None if absent."""
        item = self._call(
            "get_item",
            TableName=self.table_name,
            Key={"pk": _s(SOURCES_PK), "sk": _s(f"{collection}#{source_id}")},
            ConsistentRead=True,
        ).get("Item")
        return _source(item) if item else None

    def list_sources(self, collection: str | None = None) -> list[dict[str, Any]]:
        """Every source of a collection (of all collections when None)."""
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk" + (" AND begins_with(sk, :c)" if collection else ""),
            "ExpressionAttributeValues": {
                ":pk": _s(SOURCES_PK),
                **({":c": _s(f"{collection}#")} if collection else {}),
            },
            "ConsistentRead": True,
        }
        found: list[dict[str, Any]] = []
        while True:
            response = self._call("query", **params)
            found.extend(_source(i) for i in response.get("Items", []))
            if not response.get("LastEvaluatedKey"):
                return found
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def delete_source(self, collection: str, source_id: str) -> bool:
        """Remove a source unless a sync holds it."""
        return self._conditional(
            "delete_item",
            Key={"pk": _s(SOURCES_PK), "sk": _s(f"{collection}#{source_id}")},
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(active_sync)",
        )

    def set_next_due(self, collection: str, source_id: str, next_due: float, was: float) -> bool:
        """Move a schedule on, once: only the caller that saw `was` wins."""
        return self._conditional(
            "update_item",
            Key={"pk": _s(SOURCES_PK), "sk": _s(f"{collection}#{source_id}")},
            UpdateExpression="SET next_due = :n",
            ConditionExpression="next_due = :w",
            ExpressionAttributeValues={":n": _n(next_due), ":w": _n(was)},
        )

    # -- syncs -------------------------------------------------------------------------------

    def start_sync(self, collection: str, source_id: str, sync_id: str, kind: str) -> bool:
        """Lock the source and create the sync with its first unit pending; False if a sync runs."""
        now = time.time()
        try:
            self._call(
                "transact_write_items",
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": {"pk": _s(SOURCES_PK), "sk": _s(f"{collection}#{source_id}")},
                            "UpdateExpression": "SET active_sync = :id, last_sync = :id",
                            "ConditionExpression": (
                                "attribute_exists(pk) AND attribute_not_exists(active_sync)"
                            ),
                            "ExpressionAttributeValues": {":id": _s(sync_id)},
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": {
                                "pk": _s(f"sync#{source_id}"),
                                "sk": _s(sync_id),
                                "collection": _s(collection),
                                "source_id": _s(source_id),
                                "kind": _s(kind),
                                "state": _s("RUNNING"),
                                "started_at": _n(now),
                                "progress_at": _n(now),
                                "pending": _n(1),
                                "queued": _n(0),
                                **{f"c_{name}": _n(0) for name in COUNT_NAMES},
                            },
                        }
                    },
                    {"Put": self._seen_put(sync_id, "start", "", 0)},
                ],
            )
        except self._ddb.exceptions.TransactionCanceledException:
            return False
        return True

    def get_sync(self, source_id: str, sync_id: str) -> dict[str, Any] | None:
        """A sync item (consistent read), or None."""
        item = self._call(
            "get_item",
            TableName=self.table_name,
            Key={"pk": _s(f"sync#{source_id}"), "sk": _s(sync_id)},
            ConsistentRead=True,
        ).get("Item")
        return _plain(item) if item else None

    def list_syncs(self, source_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent syncs of a source, newest first."""
        response = self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": _s(f"sync#{source_id}")},
            ScanIndexForward=False,
            Limit=limit,
            ConsistentRead=True,
        )
        return [_plain(i) for i in response.get("Items", [])]

    def _seen_put(
        self, sync_id: str, key: str, parent: str, depth: int, state: str = "queued"
    ) -> dict[str, Any]:
        return {
            "TableName": self.table_name,
            "Item": {
                "pk": _s(f"seen#{sync_id}"),
                "sk": _s(key),
                "state": _s(state),
                "parent": _s(parent),
                "depth": _n(depth),
                "expires_at": _n(int(time.time()) + SEEN_TTL_S),
            },
            "ConditionExpression": "attribute_not_exists(pk)",
        }

    def _put_seen(self, sync_id: str, key: str, parent: str, depth: int, state: str = "queued") -> bool:
        put = self._seen_put(sync_id, key, parent, depth, state)
        return self._conditional("put_item", Item=put["Item"], ConditionExpression=put["ConditionExpression"])

    def get_seen(self, sync_id: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Visited items of a sync by key (absent keys left out)."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 100):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [{"pk": _s(f"seen#{sync_id}"), "sk": _s(k)} for k in unique[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            for attempt in range(8):
                response = self._call("batch_get_item", RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    plain = _plain(item)
                    found[plain["sk"]] = plain
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
        return found

    def mark_seen(self, sync_id: str, keys: list[str]) -> None:
        """Record keys this sync reached (an S3 listing's objects), 25 a BatchWriteItem."""
        expires = _n(int(time.time()) + SEEN_TTL_S)
        for start in range(0, len(keys), 25):
            request: dict[str, Any] = {
                self.table_name: [
                    {
                        "PutRequest": {
                            "Item": {
                                "pk": _s(f"seen#{sync_id}"),
                                "sk": _s(k),
                                "state": _s("done"),
                                "expires_at": expires,
                            }
                        }
                    }
                    for k in keys[start : start + 25]
                ]
            }
            for attempt in range(8):
                response = self._call("batch_write_item", RequestItems=request)
                request = response.get("UnprocessedItems") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))

    def _sync_update(
        self,
        source_id: str,
        sync_id: str,
        adds: dict[str, int],
        condition: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> bool:
        """ADD counters on the sync item (and progress_at), optionally under a condition."""
        names: dict[str, str] = {"#st": "state"} if condition and "#st" in condition else {}
        vals: dict[str, Any] = {":now": _n(time.time()), **(values or {})}
        parts = []
        for i, (name, value) in enumerate(adds.items()):
            names[f"#c{i}"] = name
            vals[f":c{i}"] = _n(value)
            parts.append(f"#c{i} :c{i}")
        params: dict[str, Any] = {
            "Key": {"pk": _s(f"sync#{source_id}"), "sk": _s(sync_id)},
            "UpdateExpression": "ADD " + ", ".join(parts) + " SET progress_at = :now",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": vals,
        }
        if condition:
            params["ConditionExpression"] = condition
        return self._conditional("update_item", **params)

    def enqueue(
        self, source_id: str, sync_id: str, key: str, parent: str, depth: int, max_units: int | None
    ) -> str:
        """Add a unit to the frontier: 'queued' (now pending), 'seen' (already there), 'full' or 'stopped'.

        Order matters (no transaction: single-item writes scale, and moto copies a table per transaction):
        `pending` goes up first, then the visited item is created; a unit is therefore counted before
        anyone can see it, and `pending` can only be too high after a crash (the sync then ends FAILED,
        deleting nothing), never reach 0 early. A unit already seen takes its count back.
        """
        page = key.startswith("u#")
        adds = {"pending": 1, **({"queued": 1, "c_discovered": 1} if page else {})}
        condition = "#st = :running"
        values: dict[str, Any] = {":running": _s("RUNNING")}
        if max_units is not None:
            condition += " AND queued < :max"
            values[":max"] = _n(max_units)
        if not self._sync_update(source_id, sync_id, adds, condition, values):
            sync = self.get_sync(source_id, sync_id)
            return "stopped" if sync is None or sync["state"] != "RUNNING" else "full"
        if not self._put_seen(sync_id, key, parent, depth):
            self._sync_update(source_id, sync_id, {name: -value for name, value in adds.items()})
            return "seen"
        return "queued"

    def skip(self, source_id: str, sync_id: str, key: str, parent: str, why: str) -> bool:
        """Record a URL found but not fetched (once per sync): discovered and skipped, by class."""
        if not self._put_seen(sync_id, key, parent, 0, state=f"skipped:{why}"):
            return False
        self._sync_update(source_id, sync_id, {"c_discovered": 1, "c_skipped": 1, f"k_{why}": 1})
        return True

    def finish_unit(
        self, source_id: str, sync_id: str, key: str, counts: dict[str, int], failure: dict[str, str] | None
    ) -> bool:
        """Mark a unit done and apply its counts, exactly once; False when it was already done.

        The visited item goes queued -> done first (a duplicate delivery stops there), then `pending`
        goes down with the counts: a crash between the two leaves `pending` too high, never too low.
        """
        if not self._conditional(
            "update_item",
            Key={"pk": _s(f"seen#{sync_id}"), "sk": _s(key)},
            UpdateExpression="SET #st = :done",
            ConditionExpression="#st = :queued",
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues={":done": _s("done"), ":queued": _s("queued")},
        ):
            return False
        self._sync_update(source_id, sync_id, {"pending": -1, **counts})
        if failure is not None:
            self._conditional(
                "update_item",
                Key={"pk": _s(f"sync#{source_id}"), "sk": _s(sync_id)},
                UpdateExpression="SET failures = list_append(if_not_exists(failures, :empty), :f)",
                ConditionExpression="attribute_not_exists(failures) OR size(failures) < :max",
                ExpressionAttributeValues={
                    ":empty": {"L": []},
                    ":f": {"L": [{"M": {k: _s(v[:1000]) for k, v in failure.items()}}]},
                    ":max": _n(MAX_FAILURES_KEPT),
                },
            )
        return True

    def claim_finish(self, source_id: str, sync_id: str) -> bool:
        """The one caller that sees the frontier drained takes the sync to FINALIZING."""
        return self._conditional(
            "update_item",
            Key={"pk": _s(f"sync#{source_id}"), "sk": _s(sync_id)},
            UpdateExpression="SET #st = :fin, progress_at = :now",
            ConditionExpression="#st = :running AND pending = :zero",
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues={
                ":fin": _s("FINALIZING"),
                ":running": _s("RUNNING"),
                ":zero": _n(0),
                ":now": _n(time.time()),
            },
        )

    def end_sync(
        self,
        collection: str,
        source_id: str,
        sync_id: str,
        state: str,
        from_states: tuple[str, ...],
        error: str | None = None,
        deleted: int = 0,
    ) -> bool:
        """Set the final state (from one of `from_states`) and release the source's lock."""
        values: dict[str, Any] = {":state": _s(state), ":now": _n(time.time()), ":deleted": _n(deleted)}
        allowed = []
        for i, name in enumerate(from_states):
            values[f":f{i}"] = _s(name)
            allowed.append(f":f{i}")
        expression = "SET #st = :state, finished_at = :now ADD c_deleted :deleted"
        if error:
            values[":error"] = _s(error)
            expression = "SET #st = :state, finished_at = :now, #e = :error ADD c_deleted :deleted"
        ended = self._conditional(
            "update_item",
            Key={"pk": _s(f"sync#{source_id}"), "sk": _s(sync_id)},
            UpdateExpression=expression,
            ConditionExpression=f"#st IN ({', '.join(allowed)})",
            ExpressionAttributeNames={"#st": "state", **({"#e": "error"} if error else {})},
            ExpressionAttributeValues=values,
        )
        self._conditional(
            "update_item",
            Key={"pk": _s(SOURCES_PK), "sk": _s(f"{collection}#{source_id}")},
            UpdateExpression="REMOVE active_sync",
            ConditionExpression="active_sync = :id",
            ExpressionAttributeValues={":id": _s(sync_id)},
        )
        return ended

    # -- pages -------------------------------------------------------------------------------

    def get_page(self, source_id: str, url: str) -> dict[str, Any] | None:
        """A page's validators and last sync, or None."""
        item = self._call(
            "get_item",
            TableName=self.table_name,
            Key={"pk": _s(f"page#{source_id}"), "sk": _s(url)},
            ConsistentRead=True,
        ).get("Item")
        return _plain(item) if item else None

    def put_page(
        self,
        source_id: str,
        url: str,
        sync_id: str,
        etag: str | None,
        last_modified: str | None,
        links: list[str] | None = None,
    ) -> None:
        """Remember that `sync_id` reached the page, its validators and its links.

        The links let a later sync that gets a 304 still follow them (a 304 has no body to read). When
        they do not fit the item, no validators are kept: the next sync fetches the page in full.
        """
        item = {"pk": _s(f"page#{source_id}"), "sk": _s(url), "seen_sync": _s(sync_id)}
        encoded = json.dumps(links or [])
        if len(encoded) > MAX_LINKS_BYTES:
            etag = last_modified = None
        else:
            item["links"] = _s(encoded)
        if etag:
            item["etag"] = _s(etag[:512])
        if last_modified:
            item["last_modified"] = _s(last_modified[:128])
        self._call("put_item", TableName=self.table_name, Item=item)

    def delete_page(self, source_id: str, url: str) -> None:
        """Forget a page (its document was deleted)."""
        self._call(
            "delete_item", TableName=self.table_name, Key={"pk": _s(f"page#{source_id}"), "sk": _s(url)}
        )

    def pages(self, source_id: str) -> list[dict[str, Any]]:
        """Every page of a source (url in 'sk', the last sync that reached it in 'seen_sync')."""
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": _s(f"page#{source_id}")},
            "ConsistentRead": True,
        }
        found: list[dict[str, Any]] = []
        while True:
            response = self._call("query", **params)
            found.extend(_plain(i) for i in response.get("Items", []))
            if not response.get("LastEvaluatedKey"):
                return found
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # -- robots and politeness ---------------------------------------------------------------

    def get_robots(self, sync_id: str, origin: str) -> dict[str, Any] | None:
        """The robots.txt a sync read for an origin, or None."""
        found = self.get_seen(sync_id, [f"robots#{origin}"])
        return found.get(f"robots#{origin}")

    def put_robots(self, sync_id: str, origin: str, text: str | None, allow_all: bool) -> None:
        """Keep an origin's robots.txt for the rest of the sync (first writer wins)."""
        item = {
            "pk": _s(f"seen#{sync_id}"),
            "sk": _s(f"robots#{origin}"),
            "state": _s("robots"),
            "allow_all": {"BOOL": allow_all},
            "expires_at": _n(int(time.time()) + SEEN_TTL_S),
        }
        if text is not None:
            item["text"] = _s(text)
        self._conditional("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")

    def reserve_slot(self, origin: str, interval_s: float) -> float:
        """The time (epoch s) this caller may send its next request to `origin`; slots `interval_s` apart.

        A conditional read-modify-write on one item per host: concurrent fetchers anywhere share it.
        """
        key = {"pk": _s(f"pace#{origin}"), "sk": _s("next")}
        for _attempt in range(50):
            now = time.time()
            item = self._call("get_item", TableName=self.table_name, Key=key, ConsistentRead=True).get("Item")
            previous = float(item["at"]["N"]) if item else None
            slot = max(now, previous if previous is not None else now)
            condition = "attribute_not_exists(pk)" if previous is None else "#at = :prev"
            values: dict[str, Any] = {":at": _n(slot + interval_s), ":ttl": _n(int(now) + 3600)}
            if previous is not None:
                values[":prev"] = item["at"] if item else _n(0)
            if self._conditional(
                "update_item",
                Key=key,
                UpdateExpression="SET #at = :at, expires_at = :ttl",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#at": "at"},
                ExpressionAttributeValues=values,
            ):
                return slot
        return time.time() + interval_s


def _source(item: dict[str, Any]) -> dict[str, Any]:
    plain = _plain(item)
    collection, _, source_id = plain["sk"].partition("#")
    spec = json.loads(plain.pop("spec"))
    return {
        "source_id": source_id,
        "collection": collection,
        **spec,
        "active_sync": plain.get("active_sync"),
        "last_sync": plain.get("last_sync"),
        "next_due": plain.get("next_due"),
        "created_at": plain.get("created_at"),
    }
