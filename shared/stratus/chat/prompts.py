"""Prompt templates (package data: stratus/prompts/*.txt) and the token-budgeted prompt builder."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from stratus.chat.budget import fit_chunks
from stratus.chat.citations import neutralise

if TYPE_CHECKING:
    from stratus.chat.tokens import TokenCounter
    from stratus.retrieval.search import SearchHit

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators of one chat message


@cache
def template(name: str) -> str:
    """The text of stratus/prompts/<name>.txt."""
    return (resources.files("stratus") / "prompts" / f"{name}.txt").read_text(encoding="utf-8").strip()


def render(name: str, **values: object) -> str:
    """The template with {name} placeholders filled; values are inserted verbatim (braces in them stay)."""

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        return str(values[key]) if key in values else match.group(0)

    return _PLACEHOLDER.sub(substitute, template(name))


@dataclass(frozen=True)
class ContextChunk:
    """A retrieved chunk as numbered in the prompt ([n])."""

    n: int
    hit: SearchHit
    text: str

    def heading(self) -> str:
        """Title > section (source) of the chunk; document metadata, so neutralised like its text."""
        parts = " > ".join(neutralise(p) for p in (self.hit.title, self.hit.section) if p)
        page = f", page {self.hit.page}" if self.hit.page is not None else ""
        if self.hit.sheet is not None and self.hit.row_start is not None:
            rows = (
                f"row {self.hit.row_start}"
                if self.hit.row_start == self.hit.row_end
                else (f"rows {self.hit.row_start}-{self.hit.row_end}")
            )
            page += f", sheet {neutralise(self.hit.sheet)}, {rows}"
        source = neutralise(self.hit.source)
        heading = f"{parts} ({source}{page})" if parts else f"({source}{page})"
        return " ".join(heading.split())  # one line: metadata cannot start a line of its own

    def render(self) -> str:
        """The chunk's block in the prompt."""
        return render("context_chunk", n=self.n, heading=self.heading(), text=self.text)


@dataclass(frozen=True)
class LLMRequest:
    """What a provider receives: a system prompt, the conversation, and the numbered chunks."""

    system: str
    messages: list[tuple[str, str]]  # (role, content), the last is the user's question
    chunks: list[ContextChunk] = field(default_factory=list)
    question: str = ""
    max_tokens: int = 512
    temperature: float = 0.2
    prompt_tokens: int = 0
    dropped_chunks: int = 0
    truncated_chunks: int = 0
    fits: bool = True
    window: int = 0
    collection: str = ""

    def openai_messages(self) -> list[dict[str, str]]:
        """The request as OpenAI chat messages (system first)."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": role, "content": content} for role, content in self.messages]


def build_answer_request(
    question: str,
    history: list[tuple[str, str]],
    hits: list[SearchHit],
    counter: TokenCounter,
    window_tokens: int,
    answer_tokens: int,
    min_chunks: int,
    temperature: float,
    collection: str = "",
) -> LLMRequest:
    """The answer prompt for a provider whose usable context window is `window_tokens`.

    Budget for chunks = window − (system text + history + question + message overheads) − reserved
    answer tokens. History is dropped oldest first while it alone would overflow the window; chunks
    are dropped lowest-ranked first down to `min_chunks`, then truncated.
    """
    base_system = render("answer_system", context="")
    fixed_base = counter.count(base_system) + counter.count(question) + 3 * MESSAGE_OVERHEAD_TOKENS
    history = list(history)
    history_tokens = [counter.count(c) + MESSAGE_OVERHEAD_TOKENS for _, c in history]
    while history and fixed_base + sum(history_tokens) + answer_tokens > window_tokens:
        history.pop(0)
        history_tokens.pop(0)
    budget = window_tokens - fixed_base - sum(history_tokens) - answer_tokens
    numbered = [ContextChunk(i, hit, neutralise(hit.text)) for i, hit in enumerate(hits, start=1)]

    def cost(chunk: ContextChunk) -> int:
        return counter.count(chunk.render()) + 1

    def truncate(chunk: ContextChunk, tokens: int) -> ContextChunk:
        text = chunk.text
        for _ in range(4):  # shrink by the measured ratio until it fits
            over = cost(replace(chunk, text=text))
            if over <= tokens or not text:
                break
            text = text[: max(int(len(text) * tokens / over) - 1, 0)]
        return replace(chunk, text=text + " …" if text != chunk.text else text)

    fitted = fit_chunks(numbered, budget, cost, min_chunks, truncate)
    context = "\n\n".join(c.render() for c in fitted.kept)
    system = render("answer_system", context=context)
    messages = [*history, ("user", question)]
    prompt_tokens = counter.count(system) + sum(counter.count(c) for _, c in messages)
    prompt_tokens += MESSAGE_OVERHEAD_TOKENS * (len(messages) + 1)
    return LLMRequest(
        system=system,
        messages=messages,
        chunks=fitted.kept,
        question=question,
        max_tokens=answer_tokens,
        temperature=temperature,
        prompt_tokens=prompt_tokens,
        dropped_chunks=fitted.dropped,
        truncated_chunks=fitted.truncated,
        fits=fitted.fits and prompt_tokens + answer_tokens <= window_tokens,
        window=window_tokens,
        collection=collection,
    )


def build_rewrite_request(question: str, history: list[tuple[str, str]], max_history: int) -> LLMRequest:
    """The small prompt that turns a follow-up into a standalone search query."""
    recent = history[-max_history:] if max_history else []
    lines = "\n".join(f"{role}: {content[:1000]}" for role, content in recent)
    prompt = render("rewrite_query", history=lines, question=question)
    return LLMRequest(
        system="", messages=[("user", prompt)], question=question, max_tokens=64, temperature=0.0
    )
