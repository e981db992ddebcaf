"""The DynamoDB conversations table: a chat's turns kept server-side, expired by a TTL attribute."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from stratus.stores.aws import call_dynamodb


@dataclass
class Conversation:
    """The turns of one conversation, owned by the key that started it."""

    conversation_id: str
    collection: str
    key_id: str
    messages: list[dict[str, str]]
    updated_at: float
    expires_at: int


class ConversationTable:
    """One item per conversation: its messages as JSON, its owner, and `expires_at` (the table's TTL)."""

    def __init__(self, dynamodb_client: Any, table_name: str, clock: Any = time.time) -> None:
        self._ddb = dynamodb_client
        self.table_name = table_name
        self._clock = clock

    def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None when there is none or its TTL has passed (DynamoDB deletes lazily)."""
        response = call_dynamodb(
            self._ddb,
            "get_item",
            TableName=self.table_name,
            Key={"conversation_id": {"S": conversation_id}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if item is None:
            return None
        expires_at = int(item["expires_at"]["N"])
        if expires_at <= self._clock():
            return None
        return Conversation(
            conversation_id=conversation_id,
            collection=item["collection"]["S"],
            key_id=item["key_id"]["S"],
            messages=json.loads(item["messages"]["S"]),
            updated_at=float(item["updated_at"]["N"]),
            expires_at=expires_at,
        )

    def save(
        self,
        conversation_id: str,
        collection: str,
        key_id: str,
        messages: list[dict[str, str]],
        ttl_s: int,
    ) -> Conversation:
        """Write the conversation's messages; the TTL restarts from now."""
        now = self._clock()
        conversation = Conversation(conversation_id, collection, key_id, messages, now, int(now + ttl_s))
        call_dynamodb(
            self._ddb,
            "put_item",
            TableName=self.table_name,
            Item={
                "conversation_id": {"S": conversation_id},
                "collection": {"S": collection},
                "key_id": {"S": key_id},
                "messages": {"S": json.dumps(messages, ensure_ascii=False)},
                "updated_at": {"N": repr(now)},
                "expires_at": {"N": str(conversation.expires_at)},
            },
        )
        return conversation
