"""Per-collection chunking modes: heading (one chunk per section, split only when too long) and rows."""

from __future__ import annotations

from typing import Any

import pytest
from test_chunking import build_tokenizer, count_tokens
from tokenizers import Tokenizer

from stratus.ingest.chunking import chunk_document
from stratus.ingest.formats.tabular import table_sections
from stratus.models import ParsedDocument, Section
from stratus.stores.collections import CollectionSettings


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return build_tokenizer()


def words(n: int, word: str = "protein") -> str:
    return " ".join([word] * n) + "."


def test_heading_mode_makes_one_chunk_per_section_where_token_mode_splits_it(tokenizer: Tokenizer) -> None:
    # given a document whose first section (about 120 tokens) is longer than a 50-token chunk
    parsed = ParsedDocument(
        title="Guide",
        sections=[
            Section(heading_path=["Guide", "Install"], text=words(60) + "\n\n" + words(60, "gene")),
            Section(heading_path=["Guide", "Use"], text=words(10, "cells")),
        ],
    )

    # when it is chunked by tokens and by headings with a budget the whole section fits
    by_token = chunk_document("d", parsed, tokenizer, 50, 10)
    by_heading = chunk_document("d", parsed, tokenizer, 200, 10, mode="heading")

    # then token chunking splits the long section, heading chunking keeps each section whole
    assert len([c for c in by_token if c.section == "Guide > Install"]) > 1
    assert [(c.section, c.text) for c in by_heading] == [
        ("Guide > Install", parsed.sections[0].text),
        ("Guide > Use", parsed.sections[1].text),
    ]


def test_heading_mode_splits_a_section_too_long_at_paragraphs_without_overlap(tokenizer: Tokenizer) -> None:
    # given a section of three paragraphs, together longer than the budget
    paragraphs = [words(30), words(30, "gene"), words(30, "cells")]
    parsed = ParsedDocument(sections=[Section(heading_path=["A"], text="\n\n".join(paragraphs))])

    # when it is chunked by headings with a budget of about two paragraphs
    chunks = chunk_document("d", parsed, tokenizer, 70, 32, mode="heading")

    # then it is split at a paragraph break, each piece within budget, and no text repeats
    assert [c.text for c in chunks] == ["\n\n".join(paragraphs[:2]), paragraphs[2]]
    assert all(count_tokens(tokenizer, c.text) <= 70 for c in chunks)


def test_rows_mode_makes_one_chunk_per_row_with_its_own_row_number(tokenizer: Tokenizer) -> None:
    # given a sheet with a header, a blank row in the middle, and three data rows
    rows: list[tuple[int, list[Any]]] = [
        (1, ["Region", "Amount"]),
        (2, ["North", 12]),
        (3, ["", ""]),
        (4, ["South", 7]),
        (5, ["East", 3]),
    ]
    sections, _ = table_sections("Sales", rows, max_rows=100, max_columns=10, max_cell_chars=100)
    parsed = ParsedDocument(sections=sections)

    # when it is chunked by rows
    chunks = chunk_document("d", parsed, tokenizer, 200, 32, mode="rows")

    # then each data row is a chunk citing exactly its spreadsheet row (the blank row skipped)
    assert [(c.text, c.sheet, c.row_start, c.row_end) for c in chunks] == [
        ("Region: North; Amount: 12", "Sales", 2, 2),
        ("Region: South; Amount: 7", "Sales", 4, 4),
        ("Region: East; Amount: 3", "Sales", 5, 5),
    ]


def test_rows_mode_chunks_sections_that_are_not_tables_like_heading_mode(tokenizer: Tokenizer) -> None:
    # given a prose section
    parsed = ParsedDocument(sections=[Section(heading_path=["A"], text=words(20) + "\n\n" + words(20))])

    # when chunked by rows, then it is one chunk, as by headings
    assert [c.text for c in chunk_document("d", parsed, tokenizer, 200, 32, mode="rows")] == [
        parsed.sections[0].text
    ]


def test_token_mode_ids_are_those_of_the_default_call(tokenizer: Tokenizer) -> None:
    # given a document; when chunked with mode="token" and without a mode, then the chunks are identical
    parsed = ParsedDocument(sections=[Section(heading_path=["A"], text=words(80) + " " + words(80, "gene"))])
    assert chunk_document("d", parsed, tokenizer, 50, 10, mode="token") == chunk_document(
        "d", parsed, tokenizer, 50, 10
    )


def test_collection_settings_refuse_an_unknown_mode_and_know_their_default() -> None:
    # given the default and a heading setting; then only the first is the default, and a typo is refused
    assert CollectionSettings().is_default
    assert not CollectionSettings(chunking="heading").is_default
    with pytest.raises(ValueError, match="chunking must be one of"):
        CollectionSettings(chunking="sentences")
