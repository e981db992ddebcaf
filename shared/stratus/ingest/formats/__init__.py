"""Office documents, spreadsheets, CSV, e-mail, e-books and images (OCR): the formats beyond text.

``PARSERS`` maps each format to its parser and ``EXTENSIONS`` file suffixes to formats;
stratus.ingest.parsing dispatches to them. ``sniff`` names a format from the bytes alone: zip
members tell .docx, .pptx, .xlsx and .epub apart whatever the file is called, and image magic
numbers name images. Every library import is lazy (inside the parser), so importing this is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from stratus.errors import PermanentError
from stratus.models import ParsedDocument

ExtraFormat = Literal["docx", "pptx", "xlsx", "csv", "epub", "eml", "image"]

EXTENSIONS: dict[str, ExtraFormat] = {
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".csv": "csv",
    ".tsv": "csv",
    ".epub": "epub",
    ".eml": "eml",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".tif": "image",
    ".tiff": "image",
    ".webp": "image",
}
CONTENT_TYPES: dict[str, ExtraFormat] = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/csv": "csv",
    "text/tab-separated-values": "csv",
    "application/epub+zip": "epub",
    "message/rfc822": "eml",
    "image/png": "image",
    "image/jpeg": "image",
    "image/tiff": "image",
    "image/webp": "image",
}
_ZIP_MARKERS: tuple[tuple[str, ExtraFormat], ...] = (
    ("word/document.xml", "docx"),
    ("ppt/presentation.xml", "pptx"),
    ("xl/workbook.xml", "xlsx"),
)
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")


def sniff(data: bytes) -> ExtraFormat | None:
    """The format the bytes themselves show (zip members, image magic), or None."""
    if data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "image"
    if not data.startswith(b"PK\x03\x04"):
        return None
    if data[30:58] == b"mimetypeapplication/epub+zip":
        return "epub"
    # Member names are stored in the clear (local headers and the central directory): a byte
    # search finds them without parsing the directory twice (the parser's safety check reads it).
    if b"META-INF/container.xml" in data and b"mimetype" in data:
        return "epub"
    return next((fmt for marker, fmt in _ZIP_MARKERS if marker.encode() in data), None)


def _bind(name: str) -> Callable[[bytes, str], ParsedDocument]:
    def parse(data: bytes, filename: str) -> ParsedDocument:
        from importlib import import_module

        from stratus.ingest.formats.safety import current_limits

        module, function = name.rsplit(".", 1)
        parser = getattr(import_module(f"stratus.ingest.formats.{module}"), function)
        try:
            result: ParsedDocument = parser(data, filename, current_limits())
        except PermanentError:
            raise
        except Exception as exc:  # any library failure on a hostile or corrupt file fails that file only
            raise PermanentError(
                f"{function.removeprefix('parse_')} file could not be parsed: {exc}"
            ) from exc
        return result

    parse.__name__ = f"parse_{name.rsplit('_', 1)[-1]}"
    parse.__doc__ = f"Parse a {name.rsplit('_', 1)[-1]} document with the configured limits."
    return parse


PARSERS: dict[str, Callable[[bytes, str], ParsedDocument]] = {
    "docx": _bind("office.parse_docx"),
    "pptx": _bind("office.parse_pptx"),
    "xlsx": _bind("office.parse_xlsx"),
    "csv": _bind("text_tables.parse_csv"),
    "epub": _bind("epub.parse_epub"),
    "eml": _bind("email_message.parse_eml"),
    "image": _bind("images.parse_image"),
}
