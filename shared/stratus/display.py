"""Text from users and documents made safe to print on a terminal (the CLI's output).

Key names, sources, titles and errors are attacker-chosen: an ESC sequence could move the cursor or
rewrite earlier lines, a bidi override (U+202E) could reverse what a reader sees, and ``[red]`` or
``[link=...]`` or ``:smile:`` would be Rich markup or an emoji code. `plain` neutralises the characters;
`text` and `line` make Rich Text of them, which Rich prints as it is (strings would be parsed as markup).
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

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


def text(value: object, style: str = "") -> Text:
    """`plain(value)` as Rich Text: printed as it is, never read as markup (``[red]``) or emoji (``:x:``)."""
    from rich.text import Text

    return Text(plain(value), style=style)


def line(*parts: object) -> Text:
    """One printable line of parts: (text, style) pairs are ours, anything else is untrusted and plain()."""
    from rich.text import Text

    assembled = Text()
    for part in parts:
        if isinstance(part, tuple):
            assembled.append(str(part[0]), style=str(part[1]))
        else:
            assembled.append(plain(part))
    return assembled
