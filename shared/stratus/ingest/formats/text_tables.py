"""CSV and TSV files: encoding and dialect detected, rows rendered with their header names."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from stratus.errors import PermanentError
from stratus.ingest.formats.safety import FormatLimits
from stratus.ingest.formats.tabular import table_sections
from stratus.models import ParsedDocument

# csv.Sniffer is superlinear in its sample (a 64 KB sample took seconds): a few KB decide the dialect.
_SNIFF_CHARS = 4096


def _dialect(sample: str, tab: bool) -> type[csv.Dialect] | csv.Dialect:
    if tab:
        return csv.excel_tab
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def parse_csv(data: bytes, filename: str, limits: FormatLimits) -> ParsedDocument:
    """Rows of a CSV/TSV file (UTF-8, UTF-16 with BOM, else cp1252) with their header names."""
    from stratus.ingest.text import decode_text

    text = decode_text(data).replace("\x00", "")
    tab = filename.lower().endswith((".tsv", ".tab"))
    sample = text[:_SNIFF_CHARS]
    cut = sample.rfind("\n")
    dialect = _dialect(sample[:cut] if cut > 0 else sample, tab)
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]

    # Row numbers are record numbers, as a spreadsheet opening the file shows them.
    def rows() -> Iterator[tuple[int, list[str]]]:
        yield from enumerate(reader, start=1)

    try:
        sections, _ = table_sections(
            name,
            rows(),
            max_rows=limits.max_rows,
            max_columns=limits.max_columns,
            max_cell_chars=limits.max_cell_chars,
        )
    except csv.Error as exc:
        raise PermanentError(f"CSV could not be parsed at line {reader.line_num}: {exc}") from exc
    return ParsedDocument(title="", sections=sections)
