"""Limits every format parser shares, and safe opening of zip containers (Office files, EPUB).

A zip's central directory states each member's uncompressed size, and :mod:`zipfile` never
returns more bytes than that (a member that inflates further fails its CRC check), so checking
the directory before reading bounds what any library can decompress from the archive.
"""

from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass

from stratus.errors import PermanentError


@dataclass(frozen=True)
class FormatLimits:
    """Resource caps of the Office, spreadsheet, e-mail, e-book and image parsers."""

    zip_max_members: int = 5_000
    zip_max_unzipped_bytes: int = 256 * 1024 * 1024
    zip_max_ratio: float = 200.0
    max_rows: int = 50_000
    max_columns: int = 256
    max_cell_chars: int = 4_000
    max_image_pixels: int = 40_000_000
    ocr_enabled: bool = True
    ocr_max_pages: int = 20
    ocr_max_seconds: float = 120.0
    eml_max_attachments: int = 20


def current_limits() -> FormatLimits:
    """The limits from the settings object (STRATUS_FORMAT_* and STRATUS_OCR_*)."""
    from stratus.settings import get_settings

    s = get_settings()
    return FormatLimits(
        zip_max_members=s.format_zip_max_members,
        zip_max_unzipped_bytes=s.format_zip_max_unzipped_bytes,
        zip_max_ratio=s.format_zip_max_ratio,
        max_rows=s.format_max_rows,
        max_image_pixels=s.format_max_image_pixels,
        ocr_enabled=s.ocr_enabled,
        ocr_max_pages=s.ocr_max_pages,
        ocr_max_seconds=s.ocr_max_seconds,
    )


def open_zip(data: bytes, what: str, limits: FormatLimits) -> zipfile.ZipFile:
    """Open a zip container after checking its member count, total size and compression ratio."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise PermanentError(f"{what} is not a readable zip archive (corrupt or truncated): {exc}") from exc
    if len(members) > limits.zip_max_members:
        raise PermanentError(
            f"{what} has {len(members)} archive members; at most {limits.zip_max_members} allowed"
        )
    total = sum(m.file_size for m in members)
    if total > limits.zip_max_unzipped_bytes:
        raise PermanentError(
            f"{what} would unpack to {total} bytes; "
            f"at most {limits.zip_max_unzipped_bytes} allowed (zip bomb?)"
        )
    packed = sum(m.compress_size for m in members)
    if total > 1024 * 1024 and total > limits.zip_max_ratio * max(packed, 1):
        raise PermanentError(
            f"{what} unpacks {total / max(packed, 1):.0f} times its compressed size; "
            f"at most {limits.zip_max_ratio:.0f} allowed (zip bomb?)"
        )
    return archive


def refuse_xml_entities(archive: zipfile.ZipFile, what: str, *, allow_doctype: bool = False) -> None:
    """Refuse XML members that declare entities or (unless allowed) a DTD: billion laughs, XXE."""
    for info in archive.infolist():
        name = info.filename.lower()
        if not name.endswith((".xml", ".rels", ".opf", ".xhtml", ".html", ".htm", ".ncx")):
            continue
        try:
            with archive.open(info) as member:
                # A DTD must come before the root element, so the head of the member is enough.
                head = member.read(8192).lower()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise PermanentError(f"{what}: archive member {info.filename} is corrupt: {exc}") from exc
        if b"<!entity" in head or (not allow_doctype and b"<!doctype" in head):
            raise PermanentError(
                f"{what}: {info.filename} declares XML entities or a DTD; refused (entity expansion attack?)"
            )


def read_member(archive: zipfile.ZipFile, name: str, what: str) -> bytes:
    """One member's bytes (bounded by the checked directory); PermanentError when missing or corrupt."""
    try:
        return archive.read(name)
    except KeyError as exc:
        raise PermanentError(f"{what}: archive member {name} is missing") from exc
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise PermanentError(f"{what}: archive member {name} is corrupt: {exc}") from exc


class Deadline:
    """A time budget checked between units of work (OCR pages)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def expired(self) -> bool:
        """Whether the budget is spent."""
        return time.monotonic() >= self.end
