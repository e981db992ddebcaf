"""Rows of a sheet or CSV file as self-describing text: each row names its columns.

Rows are grouped into sections of about ``ROW_GROUP_CHARS`` characters, each carrying its sheet
and first/last row number, so a chunk cites the rows it came from. Every row repeats the header
names ("Region: North; Sales: 12"), so any group read alone still says what its values are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from stratus.errors import PermanentError
from stratus.models import Section

ROW_GROUP_CHARS = 600


def _cell(value: Any, limit: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RowSections:
    """Builds the sections of one table from its header and numbered rows."""

    def __init__(self, sheet: str, *, max_rows: int, max_columns: int, max_cell_chars: int) -> None:
        self.sheet = sheet
        self.max_rows = max_rows
        self.max_columns = max_columns
        self.max_cell_chars = max_cell_chars
        self.header: list[str] | None = None
        self.sections: list[Section] = []
        self.rows = 0
        self._lines: list[str] = []
        self._numbers: list[int] = []
        self._first = 0
        self._last = 0
        self._chars = 0

    def add(self, number: int, values: Sequence[Any]) -> None:
        """Add spreadsheet row `number` (1-based); the first non-empty row is the header."""
        cells = [_cell(v, self.max_cell_chars) for v in values[: self.max_columns]]
        if not any(cells):
            return
        if self.header is None:
            self.header = [c or f"Column {i + 1}" for i, c in enumerate(cells)]
            return
        self.rows += 1
        if self.rows > self.max_rows:
            raise PermanentError(
                f"table has more than {self.max_rows} rows (STRATUS_FORMAT_MAX_ROWS); refused"
            )
        names = self.header + [f"Column {i + 1}" for i in range(len(self.header), len(cells))]
        line = "; ".join(f"{names[i]}: {c}" for i, c in enumerate(cells) if c)
        if self._lines and self._chars + len(line) > ROW_GROUP_CHARS:
            self._flush()
        if not self._lines:
            self._first = number
        self._lines.append(line)
        self._numbers.append(number)
        self._last = number
        self._chars += len(line)

    def _flush(self) -> None:
        if self._lines:
            self.sections.append(
                Section(
                    heading_path=[self.sheet],
                    text="\n\n".join(self._lines),
                    sheet=self.sheet,
                    row_start=self._first,
                    row_end=self._last,
                    row_numbers=self._numbers,
                )
            )
        self._lines, self._numbers, self._chars = [], [], 0

    def finish(self) -> list[Section]:
        """The sections; a table of only a header becomes one section of its column names."""
        self._flush()
        if not self.sections and self.header:
            return [Section(heading_path=[self.sheet], text="; ".join(self.header), sheet=self.sheet)]
        return self.sections


def table_sections(
    sheet: str,
    rows: Iterable[tuple[int, Sequence[Any]]],
    *,
    max_rows: int,
    max_columns: int,
    max_cell_chars: int,
) -> tuple[list[Section], int]:
    """Sections of one table and its count of data rows."""
    builder = RowSections(sheet, max_rows=max_rows, max_columns=max_columns, max_cell_chars=max_cell_chars)
    for number, values in rows:
        builder.add(number, values)
    return builder.finish(), builder.rows


def markdown_table(rows: list[list[str]]) -> str:
    """A Markdown table of text cells, the first row as its header."""
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    cleaned = [[" ".join(c.split()).replace("|", "\\|") for c in r] + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(cleaned[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(r) + " |" for r in cleaned[1:]]
    return "\n".join(lines)
