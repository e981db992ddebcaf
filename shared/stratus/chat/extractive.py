"""The extractive answerer: no language model, the most relevant sentences of the retrieved chunks.

Sentences are scored by the question's content terms they contain, weighted by inverse document
frequency over the retrieved sentences, with a small preference for better-ranked chunks. The answer
quotes the best sentences verbatim, each followed by its chunk's citation [n], and says it is extractive.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stratus.retrieval.stopwords import STOPWORDS

if TYPE_CHECKING:
    from collections.abc import Callable

    from stratus.chat.prompts import ContextChunk

_WORD = re.compile(r"[A-Za-z0-9_]+")
MIN_RELATIVE_SCORE = 0.3  # sentences scoring below this share of the best one are left out
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[*_])")
_MARKUP = re.compile(r"^\s*(?:#{1,6}\s+|[-*+•]\s+|\d{1,3}[.)]\s+|>\s*)")


def stem(word: str) -> str:
    """A light suffix strip so that 'chunks'/'chunked'/'chunking' meet."""
    w = word.lower()
    for suffix in ("ing", "ed", "s"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix) and not w.endswith("ss"):
            w = w[: -len(suffix)]
            break
    return w[:-1] if len(w) > 4 and w.endswith("e") else w


def content_terms(text: str) -> list[str]:
    """Stemmed content words of a text, stopwords removed, in order."""
    return [stem(w) for w in _WORD.findall(text) if w.lower() not in STOPWORDS and len(w) > 1]


def _blocks(text: str) -> list[str]:
    """Paragraphs, list items, headings and table rows; hard-wrapped lines of a paragraph joined."""
    blocks: list[str] = []
    current: list[str] = []
    in_code = False

    def close() -> None:
        if current:
            blocks.append(" ".join(current))
            current.clear()

    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("```"):
            close()
            in_code = not in_code
            continue
        if in_code:
            continue
        if not stripped:
            close()
            continue
        starts_block = bool(_MARKUP.match(raw)) or stripped.count("|") >= 2
        if starts_block:
            close()
        current.append(_MARKUP.sub("", raw).strip() if starts_block else stripped)
        if stripped.count("|") >= 2 or stripped.startswith("#"):
            close()
    close()
    return blocks


def split_sentences(text: str) -> list[str]:
    """Sentences of a chunk: blocks (paragraphs, list items, headings, table rows), then sentence ends."""
    out: list[str] = []
    for block in _blocks(text):
        if block.count("|") >= 2:  # a table row: its cells read as one sentence
            cells = [c.strip() for c in block.strip().strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            block = " — ".join(c for c in cells if c)
        for sentence in _SENTENCE_END.split(block):
            sentence = " ".join(sentence.split())
            if len(sentence) >= 12:
                out.append(sentence if len(sentence) <= 500 else sentence[:497] + "…")
    return out


@dataclass(frozen=True)
class Scored:
    """A candidate sentence."""

    score: float
    n: int
    order: int
    text: str


def rank_sentences(question: str, chunks: list[ContextChunk]) -> list[Scored]:
    """Every sentence with at least one question term, best first."""
    query = set(content_terms(question))
    if not query:
        return []
    sentences: list[tuple[int, int, str, set[str]]] = []
    for chunk in chunks:
        for i, sentence in enumerate(split_sentences(chunk.text)):
            sentences.append((chunk.n, i, sentence, set(content_terms(sentence))))
    if not sentences:
        return []
    df: dict[str, int] = {}
    for *_, terms in sentences:
        for term in terms & query:
            df[term] = df.get(term, 0) + 1
    total = len(sentences)
    scored = []
    for order, (n, i, sentence, terms) in enumerate(sentences):
        matched = terms & query
        if not matched:
            continue
        weight = sum(math.log(1 + total / df[t]) for t in matched)
        coverage = len(matched) / len(query)
        rank_prior = 1.0 / (1.0 + 0.15 * (n - 1))
        length_penalty = 1.0 / (1.0 + max(len(terms) - 25, 0) / 25)
        position = 1.0 / (1.0 + 0.02 * i)
        scored.append(
            Scored(weight * (0.5 + coverage) * rank_prior * length_penalty * position, n, order, sentence)
        )
    scored.sort(key=lambda s: (-s.score, s.order))
    return scored


def extractive_answer(
    question: str,
    chunks: list[ContextChunk],
    max_sentences: int,
    max_tokens: int,
    count: Callable[[str], int],
    intro: str,
) -> str | None:
    """The stitched answer with [n] citations, or None when no sentence shares a term with the question."""
    ranked = rank_sentences(question, chunks)
    picked: list[Scored] = []
    seen: set[str] = set()
    used = count(intro)
    floor = ranked[0].score * MIN_RELATIVE_SCORE if ranked else 0.0
    for candidate in ranked:
        if candidate.score < floor:
            break
        key = " ".join(content_terms(candidate.text))
        if key in seen:  # neighbouring chunks overlap: the same sentence twice
            continue
        cost = count(candidate.text) + 3
        if picked and used + cost > max_tokens:
            break
        picked.append(candidate)
        seen.add(key)
        used += cost
        if len(picked) >= max_sentences:
            break
    if not picked:
        return None
    body = " ".join(f"{s.text.rstrip()} [{s.n}]" for s in picked)
    return f"{intro}\n\n{body}"
