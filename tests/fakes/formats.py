"""Builders of real Office, spreadsheet, e-mail, e-book and image files for the format tests.

Each file is made with the library that writes the format (python-docx, python-pptx, openpyxl,
the standard library's csv/email/zipfile, Pillow), so no binary blob is committed.
"""

from __future__ import annotations

import csv
import io
import zipfile
from email.message import EmailMessage

from PIL import Image, ImageDraw, ImageFont


def make_docx(
    heading: str, sentence: str, *, deleted: str = "", comment: str = "", table: list[list[str]] | None = None
) -> bytes:
    """A Word file: a title, a heading over the sentence, an optional table, tracked deletion and comment."""
    import docx
    from docx.oxml.ns import qn
    from docx.oxml.parser import OxmlElement

    document = docx.Document()
    document.core_properties.title = "Generated Word file"
    document.add_heading("Overview", level=1)
    document.add_paragraph("An introduction that is not the sentence.")
    document.add_heading(heading, level=2)
    paragraph = document.add_paragraph(sentence)
    if deleted:
        # <w:del><w:r><w:delText>...</w:delText></w:r></w:del>: a tracked deletion.
        removal = OxmlElement("w:del")
        removal.set(qn("w:id"), "1")
        removal.set(qn("w:author"), "editor")
        run = OxmlElement("w:r")
        text = OxmlElement("w:delText")
        text.text = deleted
        run.append(text)
        removal.append(run)
        paragraph._p.append(removal)
    if comment:
        document.add_comment(paragraph.runs, text=comment, author="reviewer")
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_pptx(slides: list[tuple[str, str, str]]) -> bytes:
    """A deck of (title, body, speaker notes) slides."""
    import pptx

    deck = pptx.Presentation()
    for title, body, notes in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def make_xlsx(sheets: dict[str, list[list[object]]], *, write_only: bool = False) -> bytes:
    """A workbook of named sheets, each a list of rows (the first the header)."""
    import openpyxl

    workbook = openpyxl.Workbook(write_only=write_only)
    if not write_only:
        workbook.remove(workbook.active)
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def make_csv(rows: list[list[object]], *, delimiter: str = ",", encoding: str = "utf-8") -> bytes:
    """CSV text of rows with the given delimiter and encoding."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue().encode(encoding)


def make_epub(title: str, chapters: list[tuple[str, str]]) -> bytes:
    """A minimal valid EPUB 3 of (chapter title, paragraph) chapters."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        archive.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
            '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        items = "".join(
            f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>'
            for i in range(len(chapters))
        )
        spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
        archive.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
            'unique-identifier="id">'
            f'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title>'
            '<dc:identifier id="id">urn:test</dc:identifier></metadata>'
            f"<manifest>{items}</manifest><spine>{spine}</spine></package>",
        )
        for i, (heading, text) in enumerate(chapters):
            archive.writestr(
                f"OEBPS/c{i}.xhtml",
                '<?xml version="1.0"?><!DOCTYPE html><html xmlns="http://www.w3.org/1999/xhtml">'
                f"<head><title>{heading}</title></head><body><h1>{heading}</h1><p>{text}</p></body></html>",
            )
    return out.getvalue()


def make_eml(subject: str, body: str, attachments: list[tuple[str, str, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    """An RFC 5322 message with a text body and (filename, mime type, bytes) attachments."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "Ada Lovelace <ada@example.com>"
    message["To"] = "team@example.com"
    message["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"
    message.set_content(body)
    for name, mime, data in attachments:
        maintype, subtype = mime.split("/", 1)
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(message)


def text_image(lines: list[str], *, size: int = 40) -> Image.Image:
    """White image with black text lines in Pillow's bundled default font (FreeType, scalable)."""
    font = ImageFont.load_default(size=size)
    width = max(int(font.getlength(line)) for line in lines) + 80
    image = Image.new("RGB", (width, 60 + len(lines) * int(size * 1.6)), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((40, 30 + i * int(size * 1.6)), line, fill="black", font=font)
    return image


def make_png(lines: list[str]) -> bytes:
    """A PNG of text lines."""
    out = io.BytesIO()
    text_image(lines).save(out, "PNG")
    return out.getvalue()


def make_scanned_pdf(pages: list[list[str]]) -> bytes:
    """A PDF whose pages are only images of text (no text layer), as a scanner writes them."""
    images = [text_image(lines) for lines in pages]
    out = io.BytesIO()
    images[0].save(out, "PDF", save_all=True, append_images=images[1:], resolution=100)
    return out.getvalue()
