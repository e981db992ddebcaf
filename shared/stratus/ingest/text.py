"""Text as every parser leaves it: decoded, normalised, cut into sections under heading paths.

The format parsers (stratus.ingest.parsing and stratus.ingest.formats) all use these, so a heading
path or a paragraph break means the same whatever format the text came from.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

from stratus.models import Section

# C0/C1 control characters except tab and newline, plus the BOM and other invisible format marks.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u200b\u00ad]")
_HSPACE_RE = re.compile(r"[^\S\n]+")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")


def decode_text(data: bytes) -> str:
    """Decode bytes as UTF-8 (BOM-aware, UTF-16 BOMs too), falling back to cp1252 then latin-1."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def normalize_text(text: str, *, keep_indent: bool = False) -> str:
    """NFC, drop control characters, unify line breaks, collapse spaces, keep paragraph breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = unicodedata.normalize("NFC", _CONTROL_RE.sub("", text.replace("\f", "\n\n")))
    lines = []
    for line in text.split("\n"):
        if keep_indent:
            body = line.lstrip(" \t")
            indent = line[: len(line) - len(body)].expandtabs(4)
            lines.append(indent + _HSPACE_RE.sub(" ", body).rstrip() if body.strip() else "")
        else:
            lines.append(_HSPACE_RE.sub(" ", line).strip())
    return _MANY_NEWLINES_RE.sub("\n\n", "\n".join(lines)).strip("\n")


def file_stem(filename: str) -> str:
    """The file name without folders or extension (a sidecar's .metadata.json too): a fallback title."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    if name.lower().endswith(".metadata.json"):
        name = name[: -len(".metadata.json")]
    return PurePosixPath(name).stem or name


class SectionBuilder:
    """Collects lines under a heading path; a heading change closes the current section."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.stack: list[tuple[int, str]] = []
        self.lines: list[str] = []
        self.headings: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.flush()
        if not text:
            return
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))
        self.headings.append(text)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        text = normalize_text("\n".join(self.lines), keep_indent=True)
        self.lines = []
        if text:
            self.sections.append(Section(heading_path=[t for _, t in self.stack], text=text))

    def finish(self) -> list[Section]:
        self.flush()
        if not self.sections and self.headings:
            # A document made only of headings still has text worth indexing.
            return [Section(text="\n".join(self.headings))]
        return self.sections
