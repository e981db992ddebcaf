"""Hostile and corrupt files of the new formats end in a readable PermanentError within stated bounds.

Bounds (in the test names): each refusal within 2 s and 64 MB of Python heap growth (tracemalloc)
on a shared core; the 50,000-row sheet within 120 s and 256 MB.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable

import pytest
from fakes.formats import make_docx, make_eml, make_epub, make_png, make_pptx, make_xlsx

from stratus.errors import PermanentError
from stratus.ingest.formats.office import parse_xlsx
from stratus.ingest.formats.safety import FormatLimits
from stratus.ingest.parsing import parse_document

MB = 1024 * 1024
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b']><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    b"<w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"
)


def bounded(function: Callable[[], object], seconds: float, heap_mb: float) -> str:
    """Run `function`, expecting a PermanentError within the time and heap bounds; its message.

    Timed on a plain run, then traced (tracemalloc slows allocation) on a second run.
    """
    started = time.perf_counter()
    with pytest.raises(PermanentError) as error:
        function()
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    try:
        with pytest.raises(PermanentError):
            function()
        peak = tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()
    assert elapsed <= seconds, f"took {elapsed:.2f} s > {seconds} s"
    assert peak <= heap_mb, f"peak heap {peak:.1f} MB > {heap_mb} MB"
    return str(error.value)


def replace_member(data: bytes, name: str, content: bytes) -> bytes:
    """The zip with one member's content swapped."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, content if info.filename == name else source.read(info))
    return out.getvalue()


def zip_bomb(base: bytes, inflated_mb: int) -> bytes:
    """The archive plus one member of `inflated_mb` MB of zeros (deflates about 1000:1), written streaming."""
    out = io.BytesIO(base)
    out.seek(0, 2)
    with (
        zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as archive,
        archive.open("word/media/bomb.bin", "w") as member,
    ):
        block = b"\x00" * MB
        for _ in range(inflated_mb):
            member.write(block)
    return out.getvalue()


OFFICE = {
    "docx": (lambda: make_docx("H", "text"), "word/document.xml"),
    "pptx": (lambda: make_pptx([("T", "text", "")]), "ppt/presentation.xml"),
    "xlsx": (lambda: make_xlsx({"S": [["a"], [1]]}), "xl/workbook.xml"),
    "epub": (lambda: make_epub("B", [("C", "t")]), "OEBPS/content.opf"),
}


@pytest.mark.parametrize("fmt", sorted(OFFICE))
def test_zip_bomb_is_refused_from_the_directory_within_2s_and_64mb(fmt: str) -> None:
    # given a valid file of the format carrying a member that inflates 1000:1 to 300 MB
    data = zip_bomb(OFFICE[fmt][0](), 300)
    assert len(data) < 2 * MB
    # when it is parsed, then it is refused before anything is inflated
    reason = bounded(lambda: parse_document(data, f"bomb.{fmt}"), 2, 64)
    assert "zip bomb" in reason


@pytest.mark.parametrize("fmt", sorted(OFFICE))
def test_billion_laughs_is_refused_within_2s_and_64mb(fmt: str) -> None:
    # given a file of the format whose main XML part declares nested entities (10^9 "lol"s)
    factory, member = OFFICE[fmt]
    data = replace_member(factory(), member, LAUGHS)
    # when it is parsed, then the entity declarations are refused, never expanded
    reason = bounded(lambda: parse_document(data, f"laughs.{fmt}"), 2, 64)
    assert "entities" in reason


@pytest.mark.parametrize("fmt", sorted(OFFICE))
def test_corrupt_archive_fails_with_a_readable_reason_within_2s_and_64mb(fmt: str) -> None:
    # given a file of the format cut in half (its zip directory lost)
    whole = OFFICE[fmt][0]()
    data = whole[: len(whole) // 2]
    # when it is parsed, then the reason says the archive is not readable
    reason = bounded(lambda: parse_document(data, f"cut.{fmt}"), 2, 64)
    assert "not a readable zip archive" in reason


def test_archive_of_too_many_members_is_refused_within_2s_and_64mb() -> None:
    # given a Word file padded with 6,000 empty members
    out = io.BytesIO(make_docx("H", "text"))
    out.seek(0, 2)
    with zipfile.ZipFile(out, "a") as archive:
        for i in range(6_000):
            archive.writestr(f"customXml/item{i}.bin", b"")
    data = out.getvalue()
    # then it is refused by member count
    assert "archive members" in bounded(lambda: parse_document(data, "many.docx"), 2, 64)


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming width x height, with one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_20000_by_20000_px_image_is_refused_by_its_header_within_2s_and_64mb() -> None:
    # given a PNG whose header claims 20,000 x 20,000 px (1.2 GB decoded)
    data = png_header(20_000, 20_000)
    # when it is parsed, then it is refused before any pixel is decoded
    reason = bounded(lambda: parse_document(data, "huge.png"), 2, 64)
    assert "400000000 pixels" in reason
    assert "decompression bomb" in reason
    # and an image over Stratus's own cap but under Pillow's (8,000 x 8,000 px) is refused the same way
    assert "8000 x 8000 px" in bounded(lambda: parse_document(png_header(8_000, 8_000), "big.png"), 2, 64)


def test_corrupt_image_fails_with_a_readable_reason_within_2s_and_64mb() -> None:
    # given a PNG cut short / bytes that are not an image at all
    cut = make_png(["words"])[:60]
    # then each fails with a reason rather than an exception escaping the parser
    assert "image" in bounded(lambda: parse_document(cut, "cut.png"), 2, 64)
    assert "image could not be read" in bounded(lambda: parse_document(b"not an image", "fake.png"), 2, 64)


def test_csv_with_a_field_over_the_csv_limit_fails_with_a_readable_reason_within_2s_and_64mb() -> None:
    # given a CSV whose one quoted field is 1 MB long (csv's field limit is 128 KB)
    data = b'a,b\n"' + b"x" * MB + b'",1\n'
    assert "CSV could not be parsed" in bounded(lambda: parse_document(data, "long.csv"), 2, 64)


def test_eml_attachment_failures_do_not_fail_the_message_and_are_named() -> None:
    # given a message whose Word attachment is a zip bomb
    bomb = zip_bomb(make_docx("H", "text"), 300)
    data = make_eml("Bomb inside", "Body text stays.", [("bomb.docx", "application/octet-stream", bomb)])
    # when it is parsed, then the body is indexed and the attachment's refusal is a named section
    doc = parse_document(data, "mail.eml")
    assert any(s.text == "Body text stays." for s in doc.sections)
    assert any("Attachment: bomb.docx not indexed" in s.text and "zip bomb" in s.text for s in doc.sections)


def test_50000_row_sheet_is_streamed_within_120s_and_256mb_and_one_row_more_than_the_cap_is_refused() -> None:
    # given a 50,000-row sheet (written in openpyxl's streaming mode)
    rows: list[list[object]] = [["id", "name", "amount"]]
    rows += [[i, f"name {i}", i * 3] for i in range(50_000)]
    data = make_xlsx({"Big": rows}, write_only=True)
    # when it is parsed with the default cap (50,000 rows), it is read within the bounds
    tracemalloc.start()
    started = time.perf_counter()
    try:
        doc = parse_document(data, "big.xlsx")
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()
    assert doc.sections[-1].row_end == 50_001
    assert elapsed <= 120, elapsed
    assert peak <= 256, peak
    print(f"\n50,000-row sheet ({len(data) / MB:.1f} MB): {elapsed:.1f} s, peak heap {peak:.0f} MB")
    # and with a cap below its size it is refused with the setting named
    with pytest.raises(PermanentError, match="STRATUS_FORMAT_MAX_ROWS"):
        parse_xlsx(data, "big.xlsx", FormatLimits(max_rows=49_999))


def test_csv_of_100000_one_cell_lines_is_refused_by_the_row_cap_within_2s_and_64mb() -> None:
    # given 400 KB of 100,000 short lines (csv.Sniffer over a 64 KB sample took 7.8 s on this)
    data = b"```\n" * 100_000
    # then the dialect is sniffed from a small sample and the row cap refuses it quickly
    assert "STRATUS_FORMAT_MAX_ROWS" in bounded(lambda: parse_document(data, "fences.csv"), 2, 64)


def tiff_of(frames: int) -> bytes:
    """A multi-page TIFF of `frames` small text images."""
    from fakes.formats import text_image

    pages = [text_image([f"page {i}"]) for i in range(frames)]
    out = io.BytesIO()
    pages[0].save(out, "TIFF", save_all=True, append_images=pages[1:])
    return out.getvalue()


def test_ocr_page_cap_refuses_a_tiff_of_more_frames_within_2s_and_64mb() -> None:
    # given a 3-page TIFF and a cap of 2 OCR pages per document
    from stratus.ingest.formats.images import parse_image

    data = tiff_of(3)
    # then it is refused by its frame count before any OCR
    reason = bounded(lambda: parse_image(data, "scan.tiff", FormatLimits(ocr_max_pages=2)), 2, 64)
    assert "STRATUS_OCR_MAX_PAGES" in reason


def test_ocr_time_budget_fails_the_document_at_the_page_past_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # given OCR that takes 0.3 s a page and a budget of 0.2 s per document
    from stratus.ingest.formats import images

    def slow(image: object) -> images.OcrPage:
        time.sleep(0.3)
        return images.OcrPage(text="words", confidence=0.9)

    monkeypatch.setattr(images, "ocr_image", slow)
    # when a 2-page TIFF is read, then the second page is not started and the reason names the setting
    with pytest.raises(PermanentError, match=r"STRATUS_OCR_MAX_SECONDS\) at frame 2"):
        images.parse_image(tiff_of(2), "scan.tiff", FormatLimits(ocr_max_seconds=0.2))
