"""Turn raw document bytes (Markdown, plain text, HTML, PDF) into plain text sections.

The format is chosen by extension, then content type, then by sniffing the bytes; an unknown
type is accepted as plain text only when its bytes are UTF-8 text. Everything that can never
become text raises PermanentError with a readable reason.

Also reads Bedrock Knowledge Bases style ``<file>.metadata.json`` sidecars. Their attributes
become filterable columns, so only scalars are kept: string lists (``STRING_LIST`` or a JSON
list) are refused with a PermanentError naming the key rather than joined into one string,
which would silently break equality filters. ``includeForEmbedding`` is accepted and ignored.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import unicodedata
from array import array
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any, Literal, cast

from stratus.errors import PermanentError
from stratus.ingest import formats
from stratus.ingest.html import parse_html
from stratus.ingest.text import SectionBuilder, decode_text, file_stem, normalize_text
from stratus.models import ParsedDocument, Section
from stratus.stores.schema import RESERVED_METADATA_KEYS

logger = logging.getLogger(__name__)

Format = Literal["markdown", "text", "html", "pdf"] | formats.ExtraFormat

_EXTENSIONS: dict[str, Format] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    **formats.EXTENSIONS,
}
_CONTENT_TYPES: dict[str, Format] = {
    **formats.CONTENT_TYPES,
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
}
SUPPORTED_EXTENSIONS = tuple(_EXTENSIONS)
# Refused by extension alone, whatever the bytes look like.
_BINARY_EXTENSIONS = frozenset(
    {
        ".exe", ".dll", ".so", ".dylib", ".class", ".jar", ".png", ".jpg", ".jpeg", ".gif", ".bmp",
        ".tif", ".tiff", ".webp", ".ico", ".heic", ".zip", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".7z",
        ".rar", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".odt", ".ods", ".odp", ".epub",
        ".mp3", ".mp4", ".wav", ".avi", ".mov", ".mkv", ".flac", ".ogg", ".woff", ".woff2", ".ttf",
        ".otf", ".parquet", ".sqlite",
    }
)  # fmt: skip

# Magic numbers of common binary formats, to name them in the error message.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"PK\x03\x04", "ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "gzip archive"),
    (b"MZ", "Windows executable"),
    (b"\x7fELF", "ELF executable"),
    (b"\xd0\xcf\x11\xe0", "legacy Office document"),
    (b"Rar!", "RAR archive"),
    (b"7z\xbc\xaf", "7-Zip archive"),
    (b"RIFF", "RIFF media file"),
    (b"ID3", "MP3 audio"),
    (b"%!PS", "PostScript document"),
)

# ---------------------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------------------


def _looks_like_text(data: bytes) -> bool:
    sample = data[:8192]
    if b"\x00" in sample and not sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the sample boundary is still text.
        if exc.start < len(sample) - 4:
            return False
    return True


def _sniff(data: bytes) -> Format | None:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%pdf-"):
        return "pdf"
    if head.startswith((b"<!doctype html", b"<html")) or (head.startswith(b"<?xml") and b"<html" in head):
        return "html"
    return None


def _binary_kind(data: bytes) -> str | None:
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


def detect_format(data: bytes, filename: str, content_type: str | None = None) -> Format:
    """Pick the parser: extension first, then content type, then sniffing the bytes."""
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    by_content = formats.sniff(data)
    if by_content is not None:
        return by_content
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    binary = _binary_kind(data)
    if suffix in _BINARY_EXTENSIONS:
        raise PermanentError(_unsupported(f"'{suffix}'", binary))
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime in _CONTENT_TYPES:
        return _CONTENT_TYPES[mime]
    sniffed = _sniff(data)
    if sniffed is not None:
        return sniffed
    # An unknown extension or generic content type is accepted as plain text only when the
    # bytes really are UTF-8 text (S3 often reports binary/octet-stream for anything).
    generic = mime.startswith("text/") or mime in ("", "application/octet-stream", "binary/octet-stream")
    if binary is None and generic and _looks_like_text(data):
        return "text"
    what = f"'{suffix}'" if suffix else (f"content type '{mime}'" if mime else "file without extension")
    raise PermanentError(_unsupported(what, binary))


def _unsupported(what: str, binary: str | None) -> str:
    detail = f", looks like a {binary}" if binary else ""
    return f"unsupported file type {what}{detail} (supported: {', '.join(SUPPORTED_EXTENSIONS)})"


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


Parser = Callable[[bytes, str], ParsedDocument]
# Every parser registers here: parse_document dispatches only to registered parsers, and the
# resource-budget tests (tests/unit/test_parser_budgets.py) feed each one adversarial inputs.
PARSERS: dict[Format, Parser] = {}


def register_parser(fmt: Format) -> Callable[[Parser], Parser]:
    """Register `fmt`'s parser (a decorator); a format has exactly one."""

    def register(parser: Parser) -> Parser:
        if fmt in PARSERS:
            raise ValueError(f"a parser for {fmt!r} is already registered")
        PARSERS[fmt] = parser
        return parser

    return register


register_parser("html")(parse_html)
for _format, _parser in formats.PARSERS.items():  # Office, tables, e-books, e-mail, images
    register_parser(cast("Format", _format))(_parser)


def parse_document(
    data: bytes, filename: str, content_type: str | None = None, *, keep_attachments: bool = False
) -> ParsedDocument:
    """Parse document bytes into a title and text sections; PermanentError when it cannot be used.

    A message's attachments are folded into its sections unless `keep_attachments` hands them back
    as files (the fetch stage makes each a document of its own).
    """
    fmt = detect_format(data, filename, content_type)
    parser = PARSERS.get(fmt)
    if parser is None:
        raise PermanentError(f"no parser is registered for {fmt} documents")
    try:
        parsed = parser(data, filename)
    except RecursionError as error:
        raise PermanentError(f"document nests too deeply to parse ({error})") from error
    if parsed.attachments and not keep_attachments:
        parsed = fold_attachments(parsed)
    sections = [s for s in parsed.sections if s.text.strip()]
    if not sections:
        raise PermanentError("document has no extractable text")
    return ParsedDocument(
        title=parsed.title or file_stem(filename),
        sections=sections,
        metadata=parsed.metadata,
        attachments=parsed.attachments,
    )


# Attached messages are folded this many levels deep; deeper nesting is refused.
MAX_FOLD_DEPTH = 3


def fold_attachments(parsed: ParsedDocument, depth: int = 0) -> ParsedDocument:
    """The message with its attachments parsed into sections under "Attachment: <name>".

    For a message whose attachments cannot become documents of their own (one fetched from a URL,
    or nested too deeply); an attachment that cannot be read is named in a section, never dropped.
    """
    if depth > MAX_FOLD_DEPTH:
        raise PermanentError("e-mail nests attached messages too deeply")
    sections = list(parsed.sections)
    for attachment in parsed.attachments:
        label = f"Attachment: {attachment.name}"
        try:
            inner = parse_document(
                attachment.data, attachment.name, attachment.content_type, keep_attachments=True
            )
            inner = fold_attachments(inner, depth + 1)
        except PermanentError as exc:
            sections.append(Section(heading_path=[label], text=f"{label} not indexed: {exc}"))
            continue
        for section in inner.sections:
            sections.append(section.model_copy(update={"heading_path": [label, *section.heading_path]}))
    return parsed.model_copy(update={"sections": sections, "attachments": []})


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def bound_document(parsed: ParsedDocument, *, max_title_chars: int, max_section_chars: int) -> ParsedDocument:
    """Cap the title and each section's heading path, which every chunk of the document repeats.

    The path is cut so that its `` > ``-joined label fits `max_section_chars`; a heading's text
    past the cap stays in the section's body, so no text is lost to search.
    """
    sections = []
    for section in parsed.sections:
        path: list[str] = []
        overflow: list[str] = []
        used = 0
        for heading in section.heading_path:
            room = max_section_chars - used - (len(SECTION_JOIN) if path else 0)
            if room <= 1:
                overflow.append(heading)
                continue
            capped = _truncate(heading, room)
            if capped != heading:
                overflow.append(heading)
            path.append(capped)
            used += len(capped) + (len(SECTION_JOIN) if len(path) > 1 else 0)
        text = "\n".join(overflow) + "\n\n" + section.text if overflow and section.text else section.text
        sections.append(section.model_copy(update={"heading_path": path, "text": text}))
    return parsed.model_copy(update={"title": _truncate(parsed.title, max_title_chars), "sections": sections})


SECTION_JOIN = " > "


# ---------------------------------------------------------------------------------------
# Plain text
# ---------------------------------------------------------------------------------------


@register_parser("text")
def _parse_text(data: bytes, filename: str) -> ParsedDocument:
    text = normalize_text(decode_text(data), keep_indent=True)
    return ParsedDocument(title=file_stem(filename), sections=[Section(text=text)])


# ---------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------

_FRONT_MATTER_RE = re.compile(
    r"\A(?:---|\+\+\+)[ \t]*\n(.*?\n)?(?:---|\+\+\+|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL
)
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT_RE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
# Headings, links, emphasis and front-matter titles are read by linear scans, not regexes: the
# regexes they replace backtracked quadratically (or worse) over runs of spaces, '[' or backticks.
_HSPACE = " \t"
_EMPHASIS_CHARS = "*_`~"


def _atx_heading(line: str) -> tuple[int, str] | None:
    """(level, raw text) of an ATX heading line such as ``## Title ##``, or None."""
    indent = len(line) - len(line.lstrip(" "))
    if indent > 3:
        return None
    rest = line[indent:]
    level = len(rest) - len(rest.lstrip("#"))
    if not 1 <= level <= 6:
        return None
    rest = rest[level:]
    if rest and rest[0] not in _HSPACE:
        return None
    text = rest.strip(_HSPACE)
    if text.endswith("#"):
        # A closing sequence of '#' counts only after a space: "# C#" keeps its '#'.
        body = text.rstrip("#")
        if body.endswith((" ", "\t")):
            text = body.rstrip(_HSPACE)
    return level, text


def _strip_links(text: str) -> str:
    """Replace ``[label](target)`` and ``![alt](src)`` by their label, in one left-to-right pass."""
    if "[" not in text:
        return text
    out: list[str] = []
    copied = 0
    n = len(text)
    # The next ']' and ')' at or after a position only move forward: each is searched for once.
    close_bracket = close_paren = -2
    i = text.find("[")
    while i != -1:
        if close_bracket != -1 and close_bracket <= i:
            close_bracket = text.find("]", i + 1)
        if close_bracket == -1:
            break
        j = close_bracket
        if j + 1 < n and text[j + 1] == "(":
            if close_paren != -1 and close_paren <= j + 1:
                close_paren = text.find(")", j + 2)
            if close_paren == -1:
                break
            start = i - 1 if i > copied and text[i - 1] == "!" else i
            out.append(text[copied:start])
            out.append(text[i + 1 : j])
            copied = close_paren + 1
            i = text.find("[", copied)
        else:
            i = text.find("[", i + 1)
    out.append(text[copied:])
    return "".join(out)


def _strip_emphasis(text: str) -> str:
    """Drop paired emphasis and code markers (``*a*``, ``**a**``, ``_a_``, `` `a` ``, ``~~a~~``).

    A marker is a run of one character; it pairs with the next run of the same character and
    length that follows a non-space character. Runs are found once and each kind of run keeps a
    cursor that only moves forward, so the pass is linear in the text.
    """
    if not any(c in text for c in _EMPHASIS_CHARS):
        return text
    # Runs as flat arrays: a heading of 500,000 markers must not cost a tuple per marker.
    starts, ends = array("l"), array("l")
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _EMPHASIS_CHARS:
            j = i + 1
            while j < n and text[j] == c:
                j += 1
            starts.append(i)
            ends.append(j)
            i = j
        else:
            i += 1
    # Closers of each kind (char, length): runs that follow a non-space character.
    closers: dict[tuple[str, int], array[int]] = {}
    for index in range(len(starts)):
        start = starts[index]
        if start > 0 and not text[start - 1].isspace():
            closers.setdefault((text[start], ends[index] - start), array("l")).append(index)
    cursors: dict[tuple[str, int], int] = {}
    out: list[str] = []
    copied = 0
    index = 0
    while index < len(starts):
        start, end = starts[index], ends[index]
        kind = (text[start], end - start)
        if (kind[0] == "~" and kind[1] != 2) or end >= n or text[end].isspace():
            index += 1
            continue
        candidates = closers.get(kind)
        if candidates is None:
            index += 1
            continue
        cursor = cursors.get(kind, 0)
        while cursor < len(candidates) and candidates[cursor] <= index:
            cursor += 1
        cursors[kind] = cursor
        if cursor == len(candidates):
            index += 1
            continue
        closer = candidates[cursor]
        out.append(text[copied:start])
        out.append(text[end : starts[closer]])
        copied = ends[closer]
        index = closer + 1
    out.append(text[copied:])
    return "".join(out)


def _front_matter_title(block: str) -> str:
    """The ``title: ...`` (or ``title = ...``) value of a front-matter block, quotes removed."""
    for line in block.split("\n"):
        if line[:5].lower() != "title":
            continue
        rest = line[5:].lstrip()
        if not rest or rest[0] not in ":=":
            continue
        value = rest[1:].strip()
        if value[:1] in ("'", '"'):
            value = value[1:]
        if value[-1:] in ("'", '"'):
            value = value[:-1]
        return value.strip()
    return ""


def _clean_heading(text: str) -> str:
    return normalize_text(_strip_emphasis(_strip_links(text))).replace("\n", " ")


@register_parser("markdown")
def _parse_markdown(data: bytes, filename: str) -> ParsedDocument:
    text = decode_text(data).replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    front_title = ""
    match = _FRONT_MATTER_RE.match(text)
    if match:
        front_title = _front_matter_title(match.group(1) or "")
        text = text[match.end() :]

    builder = SectionBuilder()
    title = ""
    fence: str | None = None
    lines = text.split("\n")
    prev_blank = True
    i = 0
    while i < len(lines):
        line = lines[i]
        if fence is not None:
            builder.add(line)
            stripped = line.strip()
            if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
                fence = None
            i += 1
            continue
        fence_match = _FENCE_RE.match(line)
        if fence_match:
            fence = fence_match.group(1)
            builder.add(line)
            prev_blank = False
            i += 1
            continue
        atx = _atx_heading(line)
        setext = (
            prev_blank
            and line.strip()
            and not line.startswith(("    ", "\t", ">", "- ", "* ", "+ "))
            and i + 1 < len(lines)
            and _SETEXT_RE.match(lines[i + 1])
        )
        if atx or setext:
            if atx:
                level, heading = atx[0], _clean_heading(atx[1])
                i += 1
            else:
                level = 1 if lines[i + 1].strip().startswith("=") else 2
                heading = _clean_heading(line)
                i += 2
            if level == 1 and not title and heading:
                title = heading
            builder.heading(level, heading)
            prev_blank = True
            continue
        builder.add(line)
        prev_blank = not line.strip()
        i += 1
    return ParsedDocument(title=title or front_title or file_stem(filename), sections=builder.finish())


# ---------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------


@register_parser("pdf")
def _parse_pdf(data: bytes, filename: str) -> ParsedDocument:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except Exception as exc:  # pypdf raises many kinds of errors on broken files
        raise PermanentError(f"PDF could not be parsed: {exc}") from exc
    if encrypted:
        try:
            # Many "encrypted" PDFs only restrict permissions and open with the empty user password.
            opened = bool(reader.decrypt(""))
        except Exception as exc:  # DependencyError (no AES backend), unknown algorithm, bad key
            raise PermanentError(f"PDF is encrypted and could not be opened: {exc}") from exc
        if not opened:
            raise PermanentError("PDF is encrypted with a password; no text can be extracted")

    try:
        pages = list(reader.pages)
    except Exception as exc:
        raise PermanentError(f"PDF could not be parsed: {exc}") from exc

    sections: list[Section] = []
    failures: list[str] = []
    untexted: list[tuple[int, Any]] = []
    for number, page in enumerate(pages, start=1):
        try:
            raw = page.extract_text() or ""
        except Exception as exc:  # one broken page should not cost the whole document
            failures.append(f"page {number}: {exc}")
            continue
        text = normalize_text(raw)
        if text:
            sections.append(Section(text=text, page=number))
        else:
            untexted.append((number, page))
    from stratus.ingest.formats.images import ocr_pdf_pages
    from stratus.ingest.formats.safety import current_limits

    scanned, ocr_meta = ocr_pdf_pages(untexted, current_limits())
    sections = sorted(sections + scanned, key=lambda s: s.page or 0)
    if failures:
        logger.warning("PDF %s: %d page(s) could not be read: %s", filename, len(failures), failures[:3])
    if not sections and failures and len(failures) == len(pages):
        raise PermanentError(f"PDF could not be parsed: {failures[0]}")
    if not sections and encrypted:
        raise PermanentError("PDF is encrypted and has no extractable text")

    title = ""
    try:
        meta = reader.metadata
        if meta is not None and meta.title:
            title = normalize_text(str(meta.title)).replace("\n", " ")
    except Exception:  # broken metadata is not worth failing a readable document
        logger.debug("PDF %s: unreadable metadata", filename)
    return ParsedDocument(title=title or file_stem(filename), sections=sections, metadata=ocr_meta)


# ---------------------------------------------------------------------------------------
# Metadata sidecars (Bedrock Knowledge Bases format)
# ---------------------------------------------------------------------------------------

SIDECAR_SUFFIX = ".metadata.json"
# An inbox object named *.urls is a manifest: a list of URLs to fetch, not a document.
MANIFEST_SUFFIX = ".urls"
MAX_METADATA_KEYS = 50
MAX_METADATA_VALUE_CHARS = 2048
MAX_SIDECAR_BYTES = 64 * 1024
# Used with fullmatch: `match` with `$` would accept a trailing newline ("name\n").
METADATA_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

MetadataValue = str | int | float | bool


def is_manifest(key: str) -> bool:
    """Whether an inbox key names a *.urls manifest (any case: .URLS too)."""
    return key.lower().endswith(MANIFEST_SUFFIX)


def is_metadata_sidecar(key: str) -> bool:
    """Whether an S3 key names a ``<file>.metadata.json`` sidecar rather than a document."""
    name = key.rsplit("/", 1)[-1]
    return name.lower().endswith(SIDECAR_SUFFIX) and len(name) > len(SIDECAR_SUFFIX)


def sidecar_key_for(key: str) -> str:
    """The sidecar key that belongs to a document key."""
    return key + SIDECAR_SUFFIX


def document_key_for_sidecar(key: str) -> str:
    """The document key a sidecar key belongs to."""
    if not is_metadata_sidecar(key):
        raise ValueError(f"not a metadata sidecar key: {key}")
    return key[: -len(SIDECAR_SUFFIX)]


def _typed_value(key: str, spec: dict[str, Any]) -> MetadataValue:
    value = spec.get("value")
    if not isinstance(value, dict):
        raise PermanentError(f"metadata sidecar: attribute '{key}' needs a 'value' object")
    kind = str(value.get("type", "")).upper()
    fields = {"STRING": "stringValue", "NUMBER": "numberValue", "BOOLEAN": "booleanValue"}
    if kind == "STRING_LIST":
        raise PermanentError(
            f"metadata sidecar: attribute '{key}' is a STRING_LIST; lists are not supported, use a string"
        )
    if kind not in fields:
        raise PermanentError(
            f"metadata sidecar: attribute '{key}' has unknown type {value.get('type')!r} "
            "(expected STRING, NUMBER or BOOLEAN)"
        )
    field = fields[kind]
    if field not in value:
        raise PermanentError(f"metadata sidecar: attribute '{key}' of type {kind} needs '{field}'")
    raw = value[field]
    ok = {
        "STRING": isinstance(raw, str),
        "NUMBER": isinstance(raw, int | float) and not isinstance(raw, bool),
        "BOOLEAN": isinstance(raw, bool),
    }[kind]
    if not ok:
        raise PermanentError(f"metadata sidecar: attribute '{key}': '{field}' is not a {kind.lower()}")
    return _scalar(key, raw)


def _scalar(key: str, raw: Any) -> MetadataValue:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int):
        if not -(2**63) <= raw < 2**63:
            raise PermanentError(f"metadata sidecar: attribute '{key}': integer out of 64-bit range")
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise PermanentError(f"metadata sidecar: attribute '{key}': number must be finite")
        return raw
    if isinstance(raw, str):
        if len(raw) > MAX_METADATA_VALUE_CHARS:
            raise PermanentError(
                f"metadata sidecar: attribute '{key}': value longer than "
                f"{MAX_METADATA_VALUE_CHARS} characters"
            )
        return unicodedata.normalize("NFC", raw.replace("\x00", ""))
    if isinstance(raw, list):
        raise PermanentError(f"metadata sidecar: attribute '{key}' is a list; lists are not supported")
    if raw is None:
        raise PermanentError(f"metadata sidecar: attribute '{key}' is null")
    raise PermanentError(f"metadata sidecar: attribute '{key}' must be a string, number or boolean")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PermanentError(f"metadata sidecar: duplicate key '{key}'")
        result[key] = value
    return result


def parse_metadata_sidecar(data: bytes) -> dict[str, MetadataValue]:
    """Read a ``.metadata.json`` sidecar into flat, filterable scalar attributes."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise PermanentError(f"metadata sidecar larger than {MAX_SIDECAR_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError as exc:
        raise PermanentError("metadata sidecar nests too deeply") from exc
    except UnicodeDecodeError as exc:
        raise PermanentError(f"metadata sidecar is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise PermanentError(f"metadata sidecar is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or "metadataAttributes" not in doc:
        raise PermanentError("metadata sidecar must be an object with a 'metadataAttributes' object")
    attributes = doc["metadataAttributes"]
    if not isinstance(attributes, dict):
        raise PermanentError("metadata sidecar: 'metadataAttributes' must be an object")
    if len(attributes) > MAX_METADATA_KEYS:
        raise PermanentError(
            f"metadata sidecar has {len(attributes)} attributes; at most {MAX_METADATA_KEYS} are allowed"
        )
    result: dict[str, MetadataValue] = {}
    seen: dict[str, str] = {}
    for key, raw in attributes.items():
        if not METADATA_KEY_RE.fullmatch(key):
            raise PermanentError(
                f"metadata sidecar: invalid attribute name {key!r} (letters, digits and _, "
                "not starting with a digit, at most 64 characters)"
            )
        folded = key.lower()
        if folded in RESERVED_METADATA_KEYS:
            raise PermanentError(f"metadata sidecar: attribute name '{key}' is reserved")
        if folded in seen:
            # Filter SQL folds unquoted identifiers to lower case, so these would collide.
            raise PermanentError(
                f"metadata sidecar: attribute names '{seen[folded]}' and '{key}' differ only in case"
            )
        seen[folded] = key
        result[key] = _typed_value(key, raw) if isinstance(raw, dict) else _scalar(key, raw)
    return result
