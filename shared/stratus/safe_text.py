"""Attacker-chosen text made safe to show: controls, bidi overrides and separators become escapes.

Key names, sources, titles and errors come from users and documents: an ESC sequence could move a
terminal's cursor or rewrite earlier lines, a bidi override (U+202E) could reverse what a reader sees.
The runtime refuses such key names (stratus.access.auth); the CLI prints everything through `plain`.
"""

from __future__ import annotations

import unicodedata

# Unicode categories never printed as they are: controls (C0, C1, DEL), format characters (bidi
# embeddings, overrides and isolates, zero-width characters), and line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs"})


def unsafe_characters(text: str) -> list[str]:
    """The characters of `text` that `plain` would neutralise."""
    return [ch for ch in text if unicodedata.category(ch) in _UNSAFE_CATEGORIES]


def plain(text: object) -> str:
    """`text` with every control, format and separator character shown as an escape (\\x1b, \\u202e)."""
    value = str(text)
    if not unsafe_characters(value):
        return value
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch
        for ch in value
    )
