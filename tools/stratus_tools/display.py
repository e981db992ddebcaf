"""Text from users and documents made safe to print on a terminal (the CLI's output).

Key names, sources, titles and errors are attacker-chosen: an ESC sequence could move the cursor or
rewrite earlier lines, a bidi override (U+202E) could reverse what a reader sees, and ``[red]`` or
``[link=...]`` or ``:smile:`` would be Rich markup or an emoji code. `plain` neutralises the characters;
`text` and `line` make Rich Text of them, which Rich prints as it is (strings would be parsed as markup).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stratus.safe_text import plain, unsafe_characters

__all__ = ["line", "plain", "text", "unsafe_characters"]

if TYPE_CHECKING:
    from rich.text import Text


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
