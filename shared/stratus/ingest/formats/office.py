"""Word (.docx), PowerPoint (.pptx) and Excel (.xlsx) files, read with python-docx, python-pptx
and openpyxl after the zip container is checked (safety.open_zip) and its XML is free of DTDs.

python-docx and python-pptx parse with lxml and ``resolve_entities=False``; openpyxl parses
with defusedxml when it is installed (it is pinned with it), and read-only mode streams rows.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any

from stratus.errors import PermanentError
from stratus.ingest.formats.safety import FormatLimits, open_zip, refuse_xml_entities
from stratus.ingest.formats.tabular import RowSections, markdown_table
from stratus.models import ParsedDocument, Section

if TYPE_CHECKING:
    from collections.abc import Iterator

_HEADING_STYLE_RE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MAX_GROUP_DEPTH = 20


def _checked(data: bytes, what: str, limits: FormatLimits) -> io.BytesIO:
    archive = open_zip(data, what, limits)
    with archive:
        refuse_xml_entities(archive, what)
    return io.BytesIO(data)


def _clean(text: str) -> str:
    from stratus.ingest.text import normalize_text

    return normalize_text(text)


# ---------------------------------------------------------------------------------------
# Word
# ---------------------------------------------------------------------------------------


def _paragraph_text(p: Any) -> str:
    """Visible text of a w:p: tracked deletions and moved-away text excluded, insertions kept."""
    parts: list[str] = []
    for node in p.iter(f"{_W}t", f"{_W}tab", f"{_W}br", f"{_W}cr"):
        if any(a.tag in (f"{_W}del", f"{_W}moveFrom") for a in node.iterancestors()):
            continue
        tag = node.tag
        parts.append(node.text or "" if tag == f"{_W}t" else ("\t" if tag == f"{_W}tab" else "\n"))
    return "".join(parts)


def parse_docx(data: bytes, filename: str, limits: FormatLimits) -> ParsedDocument:
    """Headings become the heading path, tables Markdown tables; comments and deletions are left out."""
    stream = _checked(data, "Word document", limits)  # before the library's import: refusals stay cheap
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(stream)
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors on broken parts
        raise PermanentError(f"Word document could not be parsed: {exc}") from exc
    title = _clean(document.core_properties.title or "")
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []

    def flush() -> None:
        text = _clean("\n\n".join(lines))
        lines.clear()
        if text:
            sections.append(Section(heading_path=[h for _, h in stack], text=text))

    for element in document.element.body.iterchildren():
        if element.tag == f"{_W}p":
            text = _paragraph_text(element)
            try:
                paragraph_style = Paragraph(element, document).style
                style = (paragraph_style.name or "") if paragraph_style is not None else ""
            except (KeyError, ValueError, AttributeError):
                style = ""
            match = _HEADING_STYLE_RE.match(style.strip())
            heading = " ".join(text.split())
            if style.lower() == "title" and heading:
                title = title or heading
                continue
            if match and heading:
                flush()
                level = int(match.group(1))
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, heading))
                continue
            if text.strip():
                lines.append(text)
        elif element.tag == f"{_W}tbl":
            table = Table(element, document)
            rows = [[_paragraph_text_of_cell(cell) for cell in row.cells] for row in table.rows]
            if rows:
                lines.append(markdown_table(rows))
    flush()
    return ParsedDocument(title=title, sections=sections)


def _paragraph_text_of_cell(cell: Any) -> str:
    return " ".join(_paragraph_text(p) for p in cell._tc.iter(f"{_W}p")).strip()


# ---------------------------------------------------------------------------------------
# PowerPoint
# ---------------------------------------------------------------------------------------


def _shape_texts(shapes: Any, skip: Any, depth: int = 0) -> Iterator[str]:
    if depth > _MAX_GROUP_DEPTH:
        raise PermanentError("presentation nests shape groups too deeply")
    for shape in shapes:
        if skip is not None and shape.shape_id == skip.shape_id:
            continue
        try:
            kind = shape.shape_type
        except NotImplementedError:  # python-pptx cannot name some graphic frames: read their text anyway
            kind = None
        if kind is not None and int(kind) == 6:  # MSO_SHAPE_TYPE.GROUP
            yield from _shape_texts(shape.shapes, None, depth + 1)
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
            yield markdown_table(rows)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            yield shape.text_frame.text


def parse_pptx(data: bytes, filename: str, limits: FormatLimits) -> ParsedDocument:
    """One section per slide under its title, speaker notes included; the slide number is `page`."""
    stream = _checked(data, "PowerPoint presentation", limits)
    import pptx

    try:
        deck = pptx.Presentation(stream)
        sections: list[Section] = []
        for number, slide in enumerate(deck.slides, start=1):
            title_shape = slide.shapes.title
            slide_title = " ".join((title_shape.text_frame.text if title_shape is not None else "").split())
            body = [t for t in _shape_texts(slide.shapes, title_shape) if t.strip()]
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                notes = slide.notes_slide.notes_text_frame.text
                if notes.strip():
                    body.append("Speaker notes: " + notes)
            text = _clean("\n\n".join(body)) or slide_title
            if text:
                sections.append(
                    Section(heading_path=[slide_title or f"Slide {number}"], text=text, page=number)
                )
        title = _clean(deck.core_properties.title or "")
    except PermanentError:
        raise
    except Exception as exc:  # python-pptx raises KeyError, ValueError, lxml errors on broken parts
        raise PermanentError(f"PowerPoint presentation could not be parsed: {exc}") from exc
    if not title and sections:
        title = sections[0].heading_path[0] if not sections[0].heading_path[0].startswith("Slide ") else ""
    return ParsedDocument(title=title, sections=sections)


# ---------------------------------------------------------------------------------------
# Excel
# ---------------------------------------------------------------------------------------


def parse_xlsx(data: bytes, filename: str, limits: FormatLimits) -> ParsedDocument:
    """Every sheet, rows streamed (read-only mode) and rendered with their header names."""
    stream = _checked(data, "Excel workbook", limits)
    import openpyxl

    sections: list[Section] = []
    rows_left = limits.max_rows
    try:
        workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True)
        try:
            for sheet in workbook.worksheets:
                if not hasattr(sheet, "iter_rows"):
                    continue  # chart sheets have no cells
                # A hostile dimension tag (A1:XFD1048576) must not pad every row to 16,384 cells.
                if hasattr(sheet, "reset_dimensions"):
                    sheet.reset_dimensions()
                builder = RowSections(
                    sheet.title,
                    max_rows=rows_left,
                    max_columns=limits.max_columns,
                    max_cell_chars=limits.max_cell_chars,
                )
                for row in sheet.iter_rows(max_col=limits.max_columns):
                    cells = [c for c in row if getattr(c, "row", None) is not None]
                    if cells:
                        builder.add(cells[0].row, [c.value for c in row])
                sections += builder.finish()
                rows_left -= builder.rows
        finally:
            workbook.close()
    except PermanentError as exc:
        if "rows" in str(exc):
            raise PermanentError(
                f"workbook has more than {limits.max_rows} rows (STRATUS_FORMAT_MAX_ROWS); refused"
            ) from exc
        raise
    except Exception as exc:  # openpyxl raises KeyError, ValueError, XML errors on broken parts
        raise PermanentError(f"Excel workbook could not be parsed: {exc}") from exc
    return ParsedDocument(title="", sections=sections)
