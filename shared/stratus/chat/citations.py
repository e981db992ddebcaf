"""Citation markers: keep the answer's [n] that map to a chunk of the prompt, drop the rest.

Works on a stream: text after a '[' is held back until the bracket closes (or clearly is no marker),
so the streamed deltas and the final answer are the same cleaned text.

Document text must not be able to cite: `neutralise` rewrites every marker-shaped `[n]` in retrieved
text to `(n)` before it enters a prompt or a quote, so the only markers an answer can carry are the
ones its provider wrote, and each of those must name a passage of the prompt.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from stratus.chat.models import Citation

if TYPE_CHECKING:
    from stratus.chat.prompts import ContextChunk

_NUMBERS = r"\s*(\d{1,9}(?:\s*[,;]\s*\d{1,9})*)\s*"
_MARKER = re.compile(rf"^\[{_NUMBERS}\]$")
_ANY_MARKER = re.compile(rf"\[{_NUMBERS}\]")
_PARTIAL = re.compile(r"^\[[\d,;\s]*$")
_MAX_MARKER = 64
_PASSAGE_END = re.compile(r"\[\s*/\s*(\d{1,9})\s*\]")


def neutralise(text: str) -> str:
    """Retrieved text that can neither cite nor end a passage: `[2]` becomes `(2)`, `[/2]` becomes `(/2)`."""
    text = _ANY_MARKER.sub(lambda m: f"({m.group(1)})", text)
    return _PASSAGE_END.sub(lambda m: f"(/{m.group(1)})", text)


class CitationFilter:
    """Feed text in pieces; get back text with unmapped markers removed; `cited` lists n in order."""

    def __init__(self, valid: set[int]) -> None:
        self.valid = valid
        self.cited: list[int] = []
        self._held = ""

    def feed(self, text: str) -> str:
        """The part of the text so far that can be emitted."""
        out: list[str] = []
        buffer = self._held + text
        self._held = ""
        i = 0
        while i < len(buffer):
            start = buffer.find("[", i)
            if start < 0:
                out.append(buffer[i:])
                break
            out.append(buffer[i:start])
            end = buffer.find("]", start)
            candidate = buffer[start : end + 1] if end >= 0 else buffer[start:]
            if end < 0:
                if _PARTIAL.match(candidate) and len(candidate) < _MAX_MARKER:
                    self._held = candidate  # maybe the start of a marker: wait for more
                    break
                out.append("[")
                i = start + 1
                continue
            match = _MARKER.match(candidate)
            if match is None:
                out.append("[")
                i = start + 1
                continue
            numbers = [int(x) for x in re.split(r"[,;]", match.group(1))]
            kept = [n for n in numbers if n in self.valid]
            for n in kept:
                if n not in self.cited:
                    self.cited.append(n)
            if kept:
                out.append("".join(f"[{n}]" for n in kept))
            elif out and out[-1].endswith(" "):
                out[-1] = out[-1][:-1]  # no space left dangling where a marker was dropped
            i = end + 1
        return "".join(out)

    def flush(self) -> str:
        """Whatever is still held back (an unfinished bracket is plain text)."""
        held, self._held = self._held, ""
        return held


def clean_answer(text: str, chunks: list[ContextChunk]) -> tuple[str, list[Citation]]:
    """The answer with unmapped markers dropped, and the citations it makes (order of first use)."""
    marker_filter = CitationFilter({c.n for c in chunks})
    cleaned = marker_filter.feed(text) + marker_filter.flush()
    return cleaned, citations_for(marker_filter.cited, chunks)


# What a citation repeats of its hit: every Citation field but its number (a test holds them equal).
CITED_FIELDS: set[str] = set(Citation.model_fields) - {"n"}


def citations_for(cited: list[int], chunks: list[ContextChunk]) -> list[Citation]:
    """Citation records of the cited chunk numbers."""
    by_n = {c.n: c for c in chunks}
    return [Citation(n=n, **by_n[n].hit.model_dump(include=CITED_FIELDS)) for n in cited if n in by_n]
