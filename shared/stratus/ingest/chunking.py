"""Token-aware, structure-first chunking of parsed documents.

Each section (one heading path, or one PDF page) is chunked on its own, so a chunk never crosses
a heading change or a page. Small neighbouring sections are not merged: a chunk's ``section``
stays exact, and editing one section never moves the chunk boundaries of another, which keeps
chunk ids (and so reusable embeddings) stable.

Within a section the text is cut into pieces that fit the budget, preferring the coarsest
boundary that works: whole paragraphs (blank lines), else sentences, else words. Pieces are
packed greedily. Each section is tokenized once; sizes come from the tokenizer's character
offsets, so no candidate is ever re-tokenized. Boundaries are always between words: only a
single word longer than the budget yields a chunk over ``chunk_tokens``.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from typing import TYPE_CHECKING

from stratus.errors import PermanentError
from stratus.models import Chunk, ParsedDocument, Section, make_chunk_id
from stratus.stores.collections import CHUNKING_MODES

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

SECTION_SEPARATOR = " > "
# Sections longer than this are chunked in blocks cut at paragraph breaks, so that one huge
# text file does not hold millions of token offsets in memory at once.
_BLOCK_CHARS = 100_000
_BATCH_BLOCKS = 16
# Characters of scripts written without spaces: each is its own "word" for boundary purposes.
_CJK = (
    "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
)
_WORD_RE = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_PARAGRAPH_RE = re.compile(r"\n[^\S\n]*\n\s*")
# A sentence ends at . ! ? … (with closing quotes/brackets) before whitespace; after "." the
# next word must not start lower case ("e.g. this" stays whole), CJK full stops need no space.
_SENTENCE_RE = re.compile(
    r"(?:[.…][\"'”’)\]]*\s+(?![a-z])|[!?][\"'”’)\]]*\s+|[。！？][」』）”’]*\s*)"
    r"|\n[^\S\n]*(?=(?:[-*+•]|\d{1,3}[.)])\s)"
)

_PARAGRAPH, _SENTENCE, _WORD = 2, 1, 0

_copies: dict[int, tuple[Tokenizer, Tokenizer]] = {}


def _plain_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer without truncation or padding; a cached copy when the caller's has them."""
    if tokenizer.truncation is None and tokenizer.padding is None:
        return tokenizer
    cached = _copies.get(id(tokenizer))
    # The cache holds the original too, so its id cannot be reused by another object.
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    from tokenizers import Tokenizer as TokenizerClass

    copy = TokenizerClass.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    if len(_copies) >= 8:
        _copies.pop(next(iter(_copies)))
    _copies[id(tokenizer)] = (tokenizer, copy)
    return copy


def _blocks(text: str) -> Iterator[tuple[int, str]]:
    """Yield (offset, block) pieces of at most _BLOCK_CHARS, cut at paragraph breaks when possible."""
    start = 0
    while len(text) - start > _BLOCK_CHARS:
        limit = start + _BLOCK_CHARS
        cut = text.rfind("\n\n", start, limit)
        if cut <= start:
            cut = max(text.rfind(" ", start, limit), text.rfind("\n", start, limit))
        if cut <= start:
            cut = limit
        yield start, text[start:cut]
        start = cut
    yield start, text[start:]


class _Section:
    """One tokenized block of section text, with word spans, boundary levels and token prefix sums."""

    def __init__(self, text: str, encoding: Encoding) -> None:
        self.text = text
        spans = [m.span() for m in _WORD_RE.finditer(text)]
        self.starts = [s for s, _ in spans]
        self.ends = [e for _, e in spans]
        # A token belongs to the word its end offset falls in; tokens never cross whitespace.
        token_ends = sorted(end for _, end in encoding.offsets)
        self.prefix = [0] + [bisect_right(token_ends, e) for e in self.ends]
        self.level = [_WORD] * len(spans)
        for match in _SENTENCE_RE.finditer(text):
            self._mark(match.end(), _SENTENCE)
        for match in _PARAGRAPH_RE.finditer(text):
            self._mark(match.end(), _PARAGRAPH)
        if self.level:
            self.level[0] = _PARAGRAPH

    def _mark(self, position: int, level: int) -> None:
        i = bisect_left(self.starts, position)
        if i < len(self.starts) and self.starts[i] == position:
            self.level[i] = max(self.level[i], level)

    def tokens(self, first: int, last: int) -> int:
        """Tokens of words first..last inclusive."""
        return self.prefix[last + 1] - self.prefix[first]

    def pieces(self, budget: int) -> list[tuple[int, int]]:
        """Word ranges that each fit the budget (or are a single word), coarsest boundaries first."""
        pieces: list[tuple[int, int]] = []
        n = len(self.starts)
        para_starts = [i for i in range(n) if self.level[i] >= _PARAGRAPH] + [n]
        for a, b in pairwise(para_starts):
            if self.tokens(a, b - 1) <= budget:
                pieces.append((a, b - 1))
                continue
            sent_starts = [i for i in range(a, b) if self.level[i] >= _SENTENCE] + [b]
            for c, d in pairwise(sent_starts):
                if self.tokens(c, d - 1) <= budget:
                    pieces.append((c, d - 1))
                else:
                    pieces.extend((w, w) for w in range(c, d))
        return pieces

    def overlap_start(self, start: int, end: int, nxt: int, nxt_end: int, budget: int, overlap: int) -> int:
        """First word of the next chunk: the tail of start..end worth at most `overlap` tokens."""
        # Smallest s in (start, nxt] with tokens(s..end) <= overlap and tokens(s..nxt_end) <= budget;
        # both shrink as s grows, so binary search. s == nxt means no overlap.
        lo, hi = start + 1, nxt
        while lo < hi:
            mid = (lo + hi) // 2
            if self.tokens(mid, end) <= overlap and self.tokens(mid, nxt_end) <= budget:
                hi = mid
            else:
                lo = mid + 1
        # Prefer starting at a sentence when that still keeps at least half the overlap.
        for s in range(lo, nxt):
            if self.level[s] >= _SENTENCE:
                if 2 * self.tokens(s, end) >= overlap:
                    return s
                break
        return lo

    def chunk(self, budget: int, overlap: int) -> list[tuple[str, int]]:
        """(text, token_count) of each chunk of this block."""
        if not self.starts:
            return []
        spans: list[tuple[int, int]] = []
        start = end = -1
        for a, b in self.pieces(budget):
            if start < 0:
                start, end = a, b
            elif self.tokens(start, b) <= budget:
                end = b
            else:
                spans.append((start, end))
                start, end = self.overlap_start(start, end, a, b, budget, overlap), b
        spans.append((start, end))
        return [(self.text[self.starts[s] : self.ends[e]], self.tokens(s, e)) for s, e in spans]


def _row_blocks(section: Section) -> list[tuple[Section, str]]:
    """One block per row of a tabular section, each carrying its own row number."""
    lines = [line for line in section.text.split("\n\n") if line.strip()]
    numbers = section.row_numbers
    if section.sheet is None or not numbers or len(numbers) != len(lines):
        return [(section, block) for _, block in _blocks(section.text) if block.strip()]
    return [
        (section.model_copy(update={"row_start": n, "row_end": n, "row_numbers": None}), line)
        for n, line in zip(numbers, lines, strict=True)
    ]


def chunk_document(
    doc_id: str,
    parsed: ParsedDocument,
    tokenizer: Tokenizer,
    chunk_tokens: int,
    overlap_tokens: int,
    max_chunks: int | None = None,
    mode: str = "token",
) -> list[Chunk]:
    """Split a parsed document into chunks with stable ids; PermanentError past `max_chunks`.

    ``token``: greedy chunks of ``chunk_tokens`` with overlap. ``heading``: one chunk per section,
    split (without overlap) only where it is longer than ``chunk_tokens``. ``rows``: one chunk per
    row of tabular sections (other sections as ``heading``).
    """
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be at least 1")
    if mode not in CHUNKING_MODES:
        raise ValueError(f"unknown chunking mode {mode!r}")
    # More overlap than half a chunk would make chunks crawl forward a few words at a time.
    overlap = max(0, min(overlap_tokens, chunk_tokens // 2)) if mode == "token" else 0
    tok = _plain_tokenizer(tokenizer)

    if mode == "rows":
        blocks = [pair for section in parsed.sections for pair in _row_blocks(section)]
    else:
        blocks = [
            (section, block)
            for section in parsed.sections
            for _, block in _blocks(section.text)
            if block.strip()
        ]
    chunks: list[Chunk] = []
    seen: Counter[str] = Counter()
    # Batches of blocks go through encode_batch, which tokenizes on all cores.
    for first in range(0, len(blocks), _BATCH_BLOCKS):
        batch = blocks[first : first + _BATCH_BLOCKS]
        encodings = tok.encode_batch([block for _, block in batch], add_special_tokens=False)
        for (section, block), encoding in zip(batch, encodings, strict=True):
            label = SECTION_SEPARATOR.join(section.heading_path)
            for text, count in _Section(block, encoding).chunk(chunk_tokens, overlap):
                if max_chunks is not None and len(chunks) >= max_chunks:
                    raise PermanentError(
                        f"document has more than {max_chunks} chunks (STRATUS_MAX_CHUNKS_PER_DOCUMENT); "
                        "split it or raise the limit"
                    )
                chunks.append(
                    Chunk(
                        chunk_id=make_chunk_id(doc_id, text, seen[text]),
                        position=len(chunks),
                        text=text,
                        section=label,
                        page=section.page,
                        sheet=section.sheet,
                        row_start=section.row_start,
                        row_end=section.row_end,
                        token_count=count,
                    )
                )
                seen[text] += 1
    return chunks
