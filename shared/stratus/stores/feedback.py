"""The DynamoDB feedback table: one item per rating of an answer or a search hit, by collection."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from stratus.stores.aws import call_dynamodb

Target = Literal["answer", "hit"]


@dataclass
class FeedbackRecord:
    """One thumbs up or down (with an optional comment) on an answer or a hit."""

    collection: str
    feedback_id: str
    target: Target
    rating: int
    query: str
    chunk_ids: list[str] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    comment: str = ""
    answer: str = ""
    conversation_id: str | None = None
    key_id: str = ""
    created_at: float = 0.0

    def to_public(self) -> dict[str, Any]:
        """What the feedback routes answer."""
        return {
            "feedback_id": self.feedback_id,
            "collection": self.collection,
            "target": self.target,
            "rating": self.rating,
            "query": self.query,
            "chunk_ids": self.chunk_ids,
            "doc_ids": self.doc_ids,
            "comment": self.comment,
            "answer": self.answer,
            "conversation_id": self.conversation_id,
            "key_id": self.key_id,
            "created_at": self.created_at,
        }


def new_feedback_id(now: float) -> str:
    """Sortable by time (nanoseconds first), unique by a random tail."""
    return f"{int(now * 1e9):020d}-{uuid.uuid4().hex[:12]}"


def _to_item(record: FeedbackRecord) -> dict[str, Any]:
    item: dict[str, Any] = {
        "collection": {"S": record.collection},
        "feedback_id": {"S": record.feedback_id},
        "target": {"S": record.target},
        "rating": {"N": str(record.rating)},
        "query": {"S": record.query},
        "chunk_ids": {"L": [{"S": c} for c in record.chunk_ids]},
        "doc_ids": {"L": [{"S": d} for d in record.doc_ids]},
        "comment": {"S": record.comment},
        "answer": {"S": record.answer},
        "key_id": {"S": record.key_id},
        "created_at": {"N": repr(record.created_at)},
    }
    if record.conversation_id:
        item["conversation_id"] = {"S": record.conversation_id}
    return item


def _from_item(item: dict[str, Any]) -> FeedbackRecord:
    target: Target = "hit" if item["target"]["S"] == "hit" else "answer"
    return FeedbackRecord(
        collection=item["collection"]["S"],
        feedback_id=item["feedback_id"]["S"],
        target=target,
        rating=int(item["rating"]["N"]),
        query=item.get("query", {}).get("S", ""),
        chunk_ids=[c["S"] for c in item.get("chunk_ids", {}).get("L", [])],
        doc_ids=[d["S"] for d in item.get("doc_ids", {}).get("L", [])],
        comment=item.get("comment", {}).get("S", ""),
        answer=item.get("answer", {}).get("S", ""),
        conversation_id=item.get("conversation_id", {}).get("S"),
        key_id=item.get("key_id", {}).get("S", ""),
        created_at=float(item.get("created_at", {}).get("N", "0")),
    )


class FeedbackTable:
    """Feedback items keyed by (collection, feedback_id)."""

    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._ddb = dynamodb_client
        self.table_name = table_name

    def add(self, record: FeedbackRecord) -> FeedbackRecord:
        """Store one feedback item (its id is new, so the write never overwrites another)."""
        if not record.created_at:
            record.created_at = time.time()
        if not record.feedback_id:
            record.feedback_id = new_feedback_id(record.created_at)
        call_dynamodb(
            self._ddb,
            "put_item",
            TableName=self.table_name,
            Item=_to_item(record),
            ConditionExpression="attribute_not_exists(feedback_id)",
        )
        return record

    def iterate(self, collection: str, page_size: int = 500) -> Iterator[FeedbackRecord]:
        """Every feedback item of a collection, oldest first, one page of the query at a time."""
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#c = :c",
            "ExpressionAttributeNames": {"#c": "collection"},
            "ExpressionAttributeValues": {":c": {"S": collection}},
            "Limit": page_size,
        }
        while True:
            response = call_dynamodb(self._ddb, "query", **params)
            for item in response.get("Items", []):
                yield _from_item(item)
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            params["ExclusiveStartKey"] = last

    def latest(self, collection: str, limit: int) -> list[FeedbackRecord]:
        """The newest `limit` feedback items of a collection, newest first."""
        response = call_dynamodb(
            self._ddb,
            "query",
            TableName=self.table_name,
            KeyConditionExpression="#c = :c",
            ExpressionAttributeNames={"#c": "collection"},
            ExpressionAttributeValues={":c": {"S": collection}},
            ScanIndexForward=False,
            Limit=limit,
        )
        return [_from_item(item) for item in response.get("Items", [])]
