"""What the CLI prints of user and document text: no terminal escapes, bidi overrides or Rich markup
reach the terminal as such (issue 19, Low)."""

from __future__ import annotations

import io
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from stratus.models import DocumentStatus
from stratus.stores.documents import DocumentRecord
from stratus_tools.cli import _summary_table
from stratus_tools.display import line, plain, text

HOSTILE = [
    "evil\x1b[2J\x1b[Hcleared.md",  # clear the screen, cursor home
    "\x1b]8;;http://evil.example\x07link\x1b]8;;\x07.md",  # OSC 8 hyperlink
    "report\u202egpj.exe",  # right-to-left override: shows as "reportexe.jpg"
    "[red]fake[/red] [link=http://evil.example]x[/link].md",  # Rich markup
    "[/bold] unbalanced.md",  # a closing tag that is never opened: Rich raises MarkupError
    "\x9b31m C1 CSI.md",
    ":thumbs_up: :smile: emoji codes.md",
]


def unsafe(shown: str) -> list[str]:
    return [ch for ch in shown if unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} and ch != "\n"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.from_regex(r"[\\\[\]a-z/#@: ]{0,30}", fullmatch=True))
def test_text_prints_exactly_the_plain_text_and_nothing_unsafe(value: str) -> None:
    # given any text (markup-like and emoji-like strings included)
    # when it is printed through Rich as text(), alone and in a line with our own styled parts
    shown = rendered(text(value))
    # then the terminal gets plain(value) verbatim: no control, format or separator character, no
    # markup or emoji code interpreted
    assert shown == plain(value)
    assert rendered(line(("1.", "bold"), " ", value, (" end", "dim"))) == f"1. {plain(value)} end"
    assert not unsafe(shown)


def rendered(printable: object) -> str:
    out = io.StringIO()
    Console(file=out, highlight=False, width=400, force_terminal=True, color_system=None).print(printable)
    return out.getvalue().rstrip("\n")


def test_plain_shows_what_it_neutralises() -> None:
    assert plain("a\x1b[31mb") == "a\\x1b[31mb"
    assert plain("x\u202ey") == "x\\u202ey"
    assert plain("ordinary café 日本") == "ordinary café 日本"


def test_the_status_summary_escapes_sources_and_reasons() -> None:
    # given documents whose sources and failure reasons are hostile
    records = [
        DocumentRecord(collection="c", doc_id=str(i), source=s, status=DocumentStatus.FAILED, error=s)
        for i, s in enumerate(HOSTILE)
    ]
    out = io.StringIO()
    console = Console(file=out, highlight=False, width=400, force_terminal=True, color_system=None)

    # when `stratus status` / `stratus ingest` print their summary table
    _summary_table(console, records, "c")

    # then it prints (no MarkupError), with no raw escape or bidi character, and markup shown as text
    output = out.getvalue()
    assert not unsafe(output)
    assert "[red]fake[/red]" in output
    assert "[/bold] unbalanced.md" in output
    assert ":thumbs_up: :smile:" in output
    assert "\\x1b[2J" in output
    assert "\\u202e" in output
