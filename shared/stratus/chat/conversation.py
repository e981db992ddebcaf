"""Conversation handling: the server is stateless, the client sends earlier turns.

A follow-up ("and how long does it keep them?") is turned into a standalone search query: with a
language model, by one small LLM call (`prompts/rewrite_query.txt`); without one, by adding content
keywords of the previous user turn when the question looks like a follow-up.
"""

from __future__ import annotations

import re

from stratus.chat.extractive import STOPWORDS
from stratus.chat.models import ChatMessage

_ANAPHORA = frozenset(
    [
        "it",
        "its",
        "it's",
        "this",
        "that",
        "these",
        "those",
        "they",
        "them",
        "their",
        "there",
        "he",
        "she",
        "his",
        "her",
        "such",
        "same",
        "one",
        "ones",
        "former",
        "latter",
    ]
)
_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_QUERY_CHARS = 2000


def split_conversation(messages: list[ChatMessage], max_history: int) -> tuple[str, list[tuple[str, str]]]:
    """The question (last user message) and up to `max_history` earlier user/assistant turns."""
    question = messages[-1].content.strip()
    turns: list[tuple[str, str]] = [
        (m.role, m.content) for m in messages[:-1] if m.role in ("user", "assistant") and m.content.strip()
    ]
    return question, turns[-max_history:] if max_history else []


def previous_user_turn(history: list[tuple[str, str]]) -> str | None:
    """The last user message before the question."""
    for role, content in reversed(history):
        if role == "user":
            return content
    return None


def looks_like_follow_up(question: str) -> bool:
    """A question that leans on earlier turns: a pronoun, or hardly any content words of its own."""
    words = [w.lower() for w in _WORD.findall(question)]
    content = [w for w in words if w not in STOPWORDS and w not in _ANAPHORA]
    return any(w in _ANAPHORA for w in words) or len(content) <= 2


def keywords(text: str, limit: int = 6) -> list[str]:
    """Distinct content words of a text, longest first (ties: order of appearance)."""
    seen: dict[str, int] = {}
    for i, word in enumerate(_WORD.findall(text)):
        w = word.strip(".-").lower()
        if len(w) > 2 and w not in STOPWORDS and w not in _ANAPHORA and w not in seen:
            seen[w] = i
    return sorted(seen, key=lambda w: (-len(w), seen[w]))[:limit]


def keyword_query(question: str, history: list[tuple[str, str]], enabled: bool) -> tuple[str, bool]:
    """The search query without an LLM, and whether keywords of the previous turn were added."""
    previous = previous_user_turn(history)
    if not enabled or previous is None or not looks_like_follow_up(question):
        return question[:MAX_QUERY_CHARS], False
    own = {w.lower() for w in _WORD.findall(question)}
    extra = [w for w in keywords(previous) if w not in own]
    if not extra:
        return question[:MAX_QUERY_CHARS], False
    return f"{question} {' '.join(extra)}"[:MAX_QUERY_CHARS], True


def clean_rewrite(text: str, fallback: str) -> str:
    """The LLM's rewritten query: first line, quotes and labels stripped; `fallback` when empty."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(standalone )?(search )?query\s*:\s*", "", line, flags=re.IGNORECASE)
    line = line.strip().strip("\"'`").strip()
    return line[:MAX_QUERY_CHARS] if line else fallback[:MAX_QUERY_CHARS]
