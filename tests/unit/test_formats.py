"""Office, spreadsheet, CSV, e-book, e-mail and image files parse into cited sections (issue 15)."""

from __future__ import annotations

import io

import pytest
from fakes.formats import (
    make_csv,
    make_docx,
    make_eml,
    make_epub,
    make_png,
    make_pptx,
    make_scanned_pdf,
    make_xlsx,
)

from stratus.chat.prompts import ContextChunk
from stratus.errors import PermanentError
from stratus.ingest.formats import images
from stratus.ingest.formats.images import OcrUnavailable, parse_image
from stratus.ingest.formats.safety import FormatLimits
from stratus.ingest.parsing import detect_format, parse_document
from stratus.retrieval.search import SearchHit


def test_docx_headings_become_the_heading_path_and_tables_markdown_without_comments_or_deletions() -> None:
    # given a Word file with a heading, a table, a tracked deletion and a comment
    data = make_docx(
        "Tide tables",
        "The walrus keeps a ledger of tide pools.",
        deleted="DELETEDWORDS",
        comment="COMMENTWORDS",
        table=[["Port", "High tide"], ["Brest", "06:10"]],
    )
    # when it is parsed
    doc = parse_document(data, "tides.docx")
    # then the sentence sits under its heading path, the table is Markdown,
    # and nothing deleted or commented shows
    assert doc.title == "Generated Word file"
    section = next(s for s in doc.sections if "walrus" in s.text)
    assert section.heading_path == ["Overview", "Tide tables"]
    assert "| Port | High tide |\n| --- | --- |\n| Brest | 06:10 |" in section.text
    everything = " ".join(s.text for s in doc.sections)
    assert "DELETEDWORDS" not in everything
    assert "COMMENTWORDS" not in everything


def test_pptx_has_one_section_per_slide_with_its_title_notes_and_slide_number_as_page() -> None:
    # given a two-slide deck with speaker notes on the second
    data = make_pptx(
        [("Opening", "Welcome words", ""), ("Herons", "The heron audits lighthouse keys.", "Say it slowly")]
    )
    # when it is parsed
    doc = parse_document(data, "deck.pptx")
    # then each slide is a section titled by the slide, numbered as its page, notes included
    assert [(s.heading_path, s.page) for s in doc.sections] == [(["Opening"], 1), (["Herons"], 2)]
    assert "The heron audits lighthouse keys." in doc.sections[1].text
    assert "Speaker notes: Say it slowly" in doc.sections[1].text


def test_xlsx_rows_name_their_headers_and_carry_sheet_and_row_numbers() -> None:
    # given a workbook of two sheets
    data = make_xlsx(
        {"Sales": [["Region", "Amount"], ["North", 12], ["South", 7]], "Staff": [["Name"], ["Ada"]]}
    )
    # when it is parsed
    doc = parse_document(data, "book.xlsx")
    # then every row is self-describing and the section says which sheet and rows it holds
    sales, staff = doc.sections
    assert sales.text == "Region: North; Amount: 12\n\nRegion: South; Amount: 7"
    assert (sales.sheet, sales.row_start, sales.row_end) == ("Sales", 2, 3)
    assert (staff.sheet, staff.row_start, staff.row_end, staff.text) == ("Staff", 2, 2, "Name: Ada")


def test_large_sheets_are_split_into_row_groups_each_repeating_the_header_names() -> None:
    # given a sheet of 300 rows
    rows: list[list[object]] = [["City", "Population"]]
    rows += [[f"City{i}", i * 10] for i in range(300)]
    # when it is parsed
    doc = parse_document(make_xlsx({"Cities": rows}), "cities.xlsx")
    # then it is several sections whose row ranges tile the sheet, every row naming both columns
    assert len(doc.sections) > 5
    assert doc.sections[0].row_start == 2
    assert doc.sections[-1].row_end == 301
    for before, after in zip(doc.sections, doc.sections[1:], strict=False):
        assert after.row_start == (before.row_end or 0) + 1
    assert all(
        line.startswith("City: ") and "Population: " in line
        for s in doc.sections
        for line in s.text.split("\n\n")
    )


@pytest.mark.parametrize(
    ("name", "delimiter", "encoding"),
    [("a.csv", ";", "cp1252"), ("b.csv", ",", "utf-8-sig"), ("c.tsv", "\t", "utf-8")],
)
def test_csv_dialect_and_encoding_are_detected(name: str, delimiter: str, encoding: str) -> None:
    # given a CSV in a given dialect and encoding
    data = make_csv(
        [["name", "city"], ["Zoë", "Paris"], ["Bob", "Rome"]], delimiter=delimiter, encoding=encoding
    )
    # when it is parsed
    doc = parse_document(data, name)
    # then the rows are decoded and named by the header
    assert doc.sections[0].text == "name: Zoë; city: Paris\n\nname: Bob; city: Rome"
    assert (doc.sections[0].sheet, doc.sections[0].row_start, doc.sections[0].row_end) == (name, 2, 3)


def test_epub_chapters_become_sections_in_spine_order() -> None:
    # given an e-book of two chapters
    data = make_epub(
        "A Book", [("Chapter One", "alpha text"), ("Chapter Two", "The otter files weather reports.")]
    )
    # when it is parsed
    doc = parse_document(data, "book.epub")
    # then the book title and both chapters come out in order
    assert doc.title == "A Book"
    assert [(s.heading_path, s.text) for s in doc.sections] == [
        (["Chapter One"], "alpha text"),
        (["Chapter Two"], "The otter files weather reports."),
    ]


def test_eml_headers_are_metadata_and_supported_attachments_are_sections_and_others_are_named() -> None:
    # given a message with a CSV attachment and an unreadable one
    csv_data = make_csv([["part", "count"], ["bolt", "40"]])
    data = make_eml(
        "Quarterly lighthouse",
        "The gull sings at dawn.",
        [("parts.csv", "text/csv", csv_data), ("blob.bin", "application/octet-stream", b"\x00\x01")],
    )
    # when it is parsed
    doc = parse_document(data, "mail.eml")
    # then subject/from/to/date are metadata, the body and the CSV rows are sections, the refusal is named
    assert doc.title == "Quarterly lighthouse"
    assert doc.metadata["email_from"] == "Ada Lovelace <ada@example.com>"
    assert doc.metadata["email_to"] == "team@example.com"
    assert str(doc.metadata["email_date"]).startswith("Tue, 01 Dec 2026")
    assert any(s.text == "The gull sings at dawn." for s in doc.sections)
    attached = next(s for s in doc.sections if s.sheet == "parts.csv")
    assert attached.heading_path[0] == "Attachment: parts.csv"
    assert attached.text == "part: bolt; count: 40"
    assert any("Attachment: blob.bin not indexed: unsupported file type" in s.text for s in doc.sections)


def test_zip_members_tell_office_formats_apart_whatever_the_file_is_called() -> None:
    # given a deck and a workbook with misleading names
    deck = make_pptx([("Slide", "text", "")])
    book = make_xlsx({"S": [["a"], [1]]})
    epub = make_epub("B", [("C", "t")])
    # then the format comes from the archive's members
    assert detect_format(deck, "misnamed.docx") == "pptx"
    assert detect_format(book, "upload.bin", "application/octet-stream") == "xlsx"
    assert detect_format(epub, "book.zip") == "epub"


def test_prompt_heading_names_the_sheet_and_rows_of_a_spreadsheet_chunk() -> None:
    # given a hit from a spreadsheet
    hit = SearchHit(
        chunk_id="c",
        doc_id="d",
        source="s3://b/book.xlsx",
        text="t",
        score=1.0,
        sheet="Sales",
        row_start=2,
        row_end=9,
    )
    # then the chunk's heading in the prompt cites the sheet and rows
    assert ContextChunk(n=1, hit=hit, text="t").heading() == "(s3://b/book.xlsx, sheet Sales, rows 2-9)"


def test_png_text_is_read_by_ocr_and_marked_with_its_confidence() -> None:
    # given a PNG of a drawn sentence
    data = make_png(["The badger inspects copper kettles"])
    # when it is parsed
    doc = parse_document(data, "photo.png")
    # then OCR reads the sentence and the metadata marks it with a confidence
    assert doc.sections[0].text == "The badger inspects copper kettles"
    assert doc.metadata["ocr"] is True
    assert float(doc.metadata["ocr_confidence"]) > 0.8


def test_scanned_pdf_pages_without_a_text_layer_are_read_by_ocr_with_their_page_numbers() -> None:
    # given a two-page PDF made only of page images
    data = make_scanned_pdf([["First page is here"], ["The lynx repairs paper lanterns"]])
    # when it is parsed
    doc = parse_document(data, "scan.pdf")
    # then each page's pixels became its text, numbered
    assert [(s.page, s.text) for s in doc.sections] == [
        (1, "First page is here"),
        (2, "The lynx repairs paper lanterns"),
    ]
    assert doc.metadata["ocr_pages"] == 2


def test_ocr_turned_off_refuses_images_with_the_setting_named() -> None:
    # given OCR turned off
    # then an image is refused with a reason naming the setting
    with pytest.raises(PermanentError, match="STRATUS_OCR_ENABLED"):
        parse_image(make_png(["words"]), "a.png", FormatLimits(ocr_enabled=False))


def test_without_the_ocr_packages_images_fail_with_the_reason_and_pdfs_index_their_text_pages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a deployment without the OCR packages (the zip fetch function)
    def unavailable() -> None:
        raise OcrUnavailable("OCR is not installed in this deployment (rapidocr-onnxruntime)")

    monkeypatch.setattr(images, "_ocr_engine", unavailable)
    # then an image fails with the reason
    with pytest.raises(PermanentError, match="OCR is not installed"):
        parse_document(make_png(["words"]), "a.png")
    # and a PDF with one text page and one scanned page indexes the text, counting the unread page
    from fakes.pdf import make_pdf
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for part in (make_pdf(["A page with a text layer."]), make_scanned_pdf([["scanned words"]])):
        for page in PdfReader(io.BytesIO(part)).pages:
            writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    doc = parse_document(out.getvalue(), "mixed.pdf")
    assert [(s.page, s.text) for s in doc.sections] == [(1, "A page with a text layer.")]
    assert doc.metadata == {"ocr_skipped_pages": 1}


def test_chat_citations_carry_the_sheet_and_rows_of_the_cited_chunk() -> None:
    # given a cited spreadsheet chunk and a cited slide
    from stratus.chat.citations import citations_for

    sheet_hit = SearchHit(
        chunk_id="a", doc_id="d", source="b.xlsx", text="t", score=1.0, sheet="Sales", row_start=2, row_end=9
    )
    slide_hit = SearchHit(chunk_id="b", doc_id="e", source="deck.pptx", text="t", score=0.5, page=3)
    chunks = [ContextChunk(n=1, hit=sheet_hit, text="t"), ContextChunk(n=2, hit=slide_hit, text="t")]
    # when both are cited
    cited = citations_for([1, 2], chunks)
    # then the citations say where inside each file the passage is
    assert (cited[0].sheet, cited[0].row_start, cited[0].row_end, cited[0].page) == ("Sales", 2, 9, None)
    assert (cited[1].sheet, cited[1].page) == (None, 3)


def test_eml_attachments_are_handed_back_as_files_when_asked_and_named_in_the_message() -> None:
    # given a message with a CSV and a nested message attached
    from email import policy
    from email.parser import BytesParser

    outer = BytesParser(policy=policy.default).parsebytes(
        make_eml("Outer", "Outer body.", [("parts.csv", "text/csv", make_csv([["part"], ["bolt"]]))])
    )
    inner = BytesParser(policy=policy.default).parsebytes(make_eml("Inner", "The inner body."))
    outer.add_attachment(inner, filename="fwd")
    data = bytes(outer)
    # when it is parsed keeping its attachments
    doc = parse_document(data, "mail.eml", keep_attachments=True)
    # then the message holds only its own text, names its attachments, and hands them back as files
    assert [(a.name, a.content_type) for a in doc.attachments] == [
        ("parts.csv", "text/csv"),
        ("fwd.eml", "message/rfc822"),
    ]
    assert doc.metadata["email_attachments"] == 2
    assert not any(s.sheet == "parts.csv" for s in doc.sections)
    assert any(s.text == "Attachments: parts.csv, fwd.eml" for s in doc.sections)
    assert parse_document(doc.attachments[1].data, "fwd.eml").title == "Inner"


def test_attachment_file_names_are_safe_and_never_special() -> None:
    # given hostile attachment names, then each becomes one safe path segment that no stage reads as special
    from stratus.pipeline.fetch import attachment_file_name

    assert attachment_file_name(1, "../../etc/passwd") == "1-passwd"
    assert attachment_file_name(2, "C:\\Users\\a\\report.docx") == "2-report.docx"
    assert attachment_file_name(3, "list.URLS") == "3-list.URLS.txt"
    assert attachment_file_name(4, "x.metadata.json") == "4-x.metadata.json.txt"
    assert attachment_file_name(5, "ré\u202esumé\n.pdf") == "5-r__sum__.pdf"
    assert attachment_file_name(6, "...") == "6-attachment"
    assert len(attachment_file_name(7, "a" * 5000 + ".pdf")) <= 102
