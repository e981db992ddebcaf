"""Server-side conversations: chat's conversation_id replaces resending the history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from stratus.chat.models import ChatMessage, ChatRequest
from stratus.stores.conversations import ConversationTable

if TYPE_CHECKING:
    from stratus.settings import Settings


class ConversationNotFoundError(LookupError):
    """No such conversation for this key and collection (or it expired)."""


def with_history(
    table: ConversationTable, request: ChatRequest, collection: str, key_id: str
) -> tuple[ChatRequest, list[dict[str, str]]]:
    """The request with the conversation's stored turns before its own messages, and those turns.

    A conversation id never seen (or expired) starts a new conversation; one owned by another key or
    collection is refused as not found (ids are not secrets, the key is).
    """
    assert request.conversation_id is not None
    stored = table.get(request.conversation_id)
    if stored is None:
        return request, []
    if stored.key_id != key_id or stored.collection != collection:
        raise ConversationNotFoundError(request.conversation_id)
    earlier = [ChatMessage(role=m["role"], content=m["content"]) for m in stored.messages]
    messages = (earlier + list(request.messages))[-100:]
    return request.model_copy(update={"messages": messages}), stored.messages


def remember(
    table: ConversationTable,
    request: ChatRequest,
    collection: str,
    key_id: str,
    answer: str,
    ttl_s: int,
    max_messages: int,
) -> None:
    """Store the conversation after an answer: every message of the request, then the answer."""
    assert request.conversation_id is not None
    messages: list[dict[str, Any]] = [
        {"role": m.role, "content": m.content} for m in request.messages if m.role in ("user", "assistant")
    ]
    messages.append({"role": "assistant", "content": answer})
    table.save(request.conversation_id, collection, key_id, messages[-max_messages:], ttl_s)


def remembering(
    events: Iterator[tuple[str, dict[str, Any]]],
    request: ChatRequest,
    collection: str,
    key_id: str,
    settings: Settings,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Pass chat events through; on `done`, store the conversation and name it in the event."""
    from stratus import services

    for name, data in events:
        if name == "done":
            remember(
                services.conversation_table(),
                request,
                collection,
                key_id,
                str(data.get("answer", "")),
                settings.conversation_ttl_s,
                settings.conversation_max_messages,
            )
            data = {**data, "conversation_id": request.conversation_id}
        yield name, data
