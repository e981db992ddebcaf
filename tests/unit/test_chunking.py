"""Token-aware chunking: size bounds, overlap, boundaries, pages, positions and stable ids."""

from __future__ import annotations

import itertools
import random
import re
import string
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

import stratus.ingest.chunking as chunking
from stratus.ingest.chunking import chunk_document
from stratus.models import Chunk, ParsedDocument, Section, make_chunk_id

COMMON = [
    "the", "a", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as", "was", "by",
    "this", "are", "be", "at", "from", "or", "an", "which", "we", "cells", "protein", "gene", "study",
    "results", "data", "model", "patients", "treatment", "effect", "increased", "levels",
]  # fmt: skip
# Words outside the vocabulary: WordPiece spells them with several sub-word tokens.
RARE = ["mitochondrial", "phosphorylation", "immunohistochemistry", "xylophone", "quantitative", "zebrafish"]


def build_tokenizer() -> Tokenizer:
    """A small BERT-style WordPiece tokenizer, shipped with truncation and padding like the real one."""
    vocab: dict[str, int] = {}
    for token in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *COMMON]:
        vocab.setdefault(token, len(vocab))
    for char in string.ascii_lowercase + string.digits:
        vocab.setdefault(char, len(vocab))
        vocab.setdefault("##" + char, len(vocab))
    for char in string.punctuation:
        vocab.setdefault(char, len(vocab))
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=200))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tokenizer.enable_truncation(max_length=16)
    tokenizer.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return build_tokenizer()


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    return len(plain.encode(text, add_special_tokens=False).ids)


def sentence(rng: random.Random, words: int) -> str:
    body = " ".join(rng.choice(COMMON + RARE) for _ in range(words))
    return body[0].upper() + body[1:] + rng.choice([".", ".", "!", "?"])


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng, rng.randint(4, 18)) for _ in range(sentences))


def document(seed: int, paragraphs: int = 6, sentences: int = 5) -> str:
    rng = random.Random(seed)
    return "\n\n".join(paragraph(rng, rng.randint(1, sentences)) for _ in range(paragraphs))


def assert_whole_words(chunk: Chunk, source: str) -> None:
    start = source.find(chunk.text)
    assert start >= 0, "chunk text must be a verbatim slice of its section"
    end = start + len(chunk.text)
    assert start == 0 or source[start - 1].isspace(), f"starts mid-word: {source[start - 5 : start + 5]!r}"
    assert end == len(source) or source[end].isspace(), f"ends mid-word: {source[end - 5 : end + 5]!r}"
    assert chunk.text == chunk.text.strip()


# --- Size, boundaries and coverage ---------------------------------------------------------


@pytest.mark.parametrize(("budget", "overlap"), [(24, 6), (40, 8), (64, 0), (200, 32)])
def test_chunks_respect_token_budget_and_count_tokens_exactly(
    tokenizer: Tokenizer, budget: int, overlap: int
) -> None:
    # Given a long section of paragraphs and sentences with multi-token words
    text = document(seed=budget, paragraphs=12)
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked
    chunks = chunk_document("doc", parsed, tokenizer, budget, overlap)
    # Then every chunk fits the budget and its token_count is the tokenizer's own count
    assert len(chunks) > 1
    for chunk in chunks:
        assert 0 < chunk.token_count <= budget
        assert chunk.token_count == count_tokens(tokenizer, chunk.text)


def test_no_chunk_boundary_cuts_a_word(tokenizer: Tokenizer) -> None:
    # Given a section without paragraph breaks, so sentences and words decide the cuts
    text = " ".join(document(seed=7, paragraphs=8).split())
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked with a small budget
    chunks = chunk_document("doc", parsed, tokenizer, 20, 5)
    # Then every chunk starts and ends at whitespace (or the text's ends)
    for chunk in chunks:
        assert_whole_words(chunk, text)


def test_without_overlap_chunks_partition_the_words(tokenizer: Tokenizer) -> None:
    # Given a section of several paragraphs
    text = document(seed=11, paragraphs=10)
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked without overlap
    chunks = chunk_document("doc", parsed, tokenizer, 30, 0)
    # Then the chunks, in order, hold every word exactly once
    assert [w for c in chunks for w in c.text.split()] == text.split()


def test_overlap_repeats_the_tail_of_the_previous_chunk(tokenizer: Tokenizer) -> None:
    # Given one long paragraph of sentences (so consecutive chunks share a paragraph)
    text = " ".join(sentence(random.Random(i), 10) for i in range(40))
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked with overlap
    chunks = chunk_document("doc", parsed, tokenizer, 40, 10)
    # Then each chunk starts with whole words that ended the previous chunk, worth <= overlap tokens
    # (none when the previous chunk's last word alone is bigger than the overlap)
    assert len(chunks) > 3
    spans: list[tuple[int, int]] = []
    for chunk in chunks:
        start = text.find(chunk.text, spans[-1][0] + 1 if spans else 0)
        assert start >= 0
        spans.append((start, start + len(chunk.text)))
        assert_whole_words(chunk, text)
    overlaps = []
    for (prev_start, prev_end), (start, end) in itertools.pairwise(spans):
        assert prev_start < start <= prev_end + 1, "chunks move forward without gaps"
        assert end > prev_end
        shared = text[start:prev_end]
        if count_tokens(tokenizer, text[prev_start:prev_end].split()[-1]) > 10:
            assert not shared, "a word bigger than the overlap is never repeated"
            continue
        assert shared, "consecutive chunks must overlap"
        overlaps.append(count_tokens(tokenizer, shared))
    assert max(overlaps) <= 10
    assert sum(overlaps) / len(overlaps) >= 4, "overlap should be close to the requested size"


def test_overlap_prefers_sentence_starts(tokenizer: Tokenizer) -> None:
    # Given short sentences, so a whole sentence fits in the overlap
    text = " ".join(f"The cells {i} is data." for i in range(60))  # 6 tokens each
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked
    chunks = chunk_document("doc", parsed, tokenizer, 30, 12)
    # Then each chunk starts at a sentence start, repeating whole sentences that ended the previous one
    assert len(chunks) > 3
    assert all(c.text.startswith("The cells ") for c in chunks)
    for previous, current in itertools.pairwise(chunks):
        sentences = [x if x.endswith(".") else x + "." for x in current.text.split(". ")]
        assert any(previous.text.endswith(" ".join(sentences[:k])) for k in range(1, len(sentences)))
    assert all(c.text.endswith(".") for c in chunks)


def test_paragraphs_that_fit_are_not_split(tokenizer: Tokenizer) -> None:
    # Given two paragraphs that each fit the budget but not together
    first = "the study of cells and the effect of treatment on patients was increased " * 2
    second = "data from the model was in the results and the protein levels were increased " * 2
    text = first.strip() + "\n\n" + second.strip()
    budget = max(count_tokens(tokenizer, first), count_tokens(tokenizer, second)) + 2
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked without overlap
    chunks = chunk_document("doc", parsed, tokenizer, budget, 0)
    # Then each paragraph is exactly one chunk
    assert [c.text for c in chunks] == [first.strip(), second.strip()]


def test_small_paragraphs_are_packed_together(tokenizer: Tokenizer) -> None:
    # Given many tiny paragraphs
    text = "\n\n".join(f"Point {i}." for i in range(10))
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When they are chunked with a roomy budget
    chunks = chunk_document("doc", parsed, tokenizer, 200, 32)
    # Then they share one chunk, paragraph breaks kept
    assert len(chunks) == 1
    assert chunks[0].text == text


def test_giant_sentence_is_split_between_words(tokenizer: Tokenizer) -> None:
    # Given a single sentence far over the budget, without punctuation
    words = [random.Random(i).choice(COMMON + RARE) for i in range(300)]
    text = " ".join(words)
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked
    chunks = chunk_document("doc", parsed, tokenizer, 25, 5)
    # Then it is cut at word boundaries within the budget
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.token_count <= 25
        assert_whole_words(chunk, text)


def test_a_single_word_over_budget_is_its_own_chunk(tokenizer: Tokenizer) -> None:
    # Given a word that alone exceeds the budget, between normal text
    giant = "x" + "yz" * 40  # one letter token per character
    text = f"the cells of the study {giant} and the data of the model"
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked
    chunks = chunk_document("doc", parsed, tokenizer, 20, 4)
    # Then the giant word stands alone and is never cut; the rest fits the budget
    assert [c.text for c in chunks] == ["the cells of the study", giant, "and the data of the model"]
    assert chunks[1].token_count == count_tokens(tokenizer, giant) > 20
    assert all(c.token_count <= 20 for c in chunks if c.text != giant)


def test_text_without_spaces_is_split_per_character_for_cjk(tokenizer: Tokenizer) -> None:
    # Given Chinese text, which has no spaces between words
    text = "研究结果表明细胞蛋白质水平增加。" * 20
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked
    chunks = chunk_document("doc", parsed, tokenizer, 30, 0)
    # Then chunks fit the budget, start at sentence ends, and lose no character
    assert len(chunks) > 5
    assert "".join(c.text for c in chunks) == text
    assert all(c.token_count <= 30 for c in chunks)
    assert all(c.text.startswith("研") for c in chunks)


# --- Structure: sections, pages, positions ---------------------------------------------------


def test_sections_are_never_merged_and_carry_their_heading_path(tokenizer: Tokenizer) -> None:
    # Given three small sections under different headings
    parsed = ParsedDocument(
        title="Guide",
        sections=[
            Section(heading_path=[], text="Preamble."),
            Section(heading_path=["Guide", "Install"], text="Run the installer."),
            Section(heading_path=["Guide", "Usage"], text=document(seed=3, paragraphs=6)),
        ],
    )
    # When the document is chunked
    chunks = chunk_document("doc", parsed, tokenizer, 30, 6)
    # Then each chunk belongs to exactly one section, labelled with its path
    assert chunks[0].text == "Preamble."
    assert chunks[0].section == ""
    assert chunks[1].text == "Run the installer."
    assert chunks[1].section == "Guide > Install"
    assert all(c.section == "Guide > Usage" for c in chunks[2:])
    assert len(chunks) > 3
    # and positions run 0..n-1
    assert [c.position for c in chunks] == list(range(len(chunks)))


def test_pages_are_preserved_and_never_spanned(tokenizer: Tokenizer) -> None:
    # Given a paged document with a page break in the middle of a long text
    pages = [document(seed=20 + p, paragraphs=3) for p in range(3)]
    parsed = ParsedDocument(sections=[Section(text=t, page=p + 1) for p, t in enumerate(pages)])
    # When it is chunked
    chunks = chunk_document("doc", parsed, tokenizer, 40, 8)
    # Then each chunk names its page and its text lies within that page
    assert {c.page for c in chunks} == {1, 2, 3}
    for chunk in chunks:
        assert chunk.page is not None
        assert chunk.text in pages[chunk.page - 1]
    assert [c.page for c in chunks] == sorted(c.page for c in chunks if c.page is not None)
    assert [c.position for c in chunks] == list(range(len(chunks)))


def test_empty_sections_yield_no_chunks(tokenizer: Tokenizer) -> None:
    # Given a document whose only section is whitespace
    parsed = ParsedDocument(sections=[Section(text=" \n\n "), Section(text="Real text.")])
    # When it is chunked
    chunks = chunk_document("doc", parsed, tokenizer, 50, 10)
    # Then whitespace makes no chunk and positions stay contiguous
    assert [(c.position, c.text) for c in chunks] == [(0, "Real text.")]


# --- Stable ids ------------------------------------------------------------------------------


def test_ids_of_untouched_chunks_survive_an_edit_elsewhere(tokenizer: Tokenizer) -> None:
    # Given a document with three sections, chunked once
    intro, body, outro = (document(seed=s, paragraphs=4) for s in (30, 31, 32))
    before = ParsedDocument(
        sections=[
            Section(heading_path=["A"], text=intro),
            Section(heading_path=["B"], text=body),
            Section(heading_path=["C"], text=outro),
        ]
    )
    old = chunk_document("doc", before, tokenizer, 40, 8)
    # When one paragraph in the middle section changes (and grows)
    paragraphs = body.split("\n\n")
    paragraphs[2] = paragraphs[2] + " An extra sentence about zebrafish was added here."
    after = before.model_copy(
        update={
            "sections": [
                before.sections[0],
                Section(heading_path=["B"], text="\n\n".join(paragraphs)),
                before.sections[2],
            ]
        }
    )
    new = chunk_document("doc", after, tokenizer, 40, 8)
    # Then chunks of the other sections, and those before the edit, keep their ids
    old_ids = {c.chunk_id for c in old}
    for section in ("A", "C"):
        assert [c.chunk_id for c in old if c.section == section] == [
            c.chunk_id for c in new if c.section == section
        ]
    unchanged_prefix = "\n\n".join(paragraphs[:2])
    for chunk in new:
        if chunk.section == "B" and unchanged_prefix.startswith(chunk.text):
            assert chunk.chunk_id in old_ids
    # and only the edited region got new ids
    changed = [c for c in new if c.chunk_id not in old_ids]
    assert changed
    assert all(c.section == "B" for c in changed)
    # and positions of the new version are contiguous
    assert [c.position for c in new] == list(range(len(new)))


def test_identical_texts_get_distinct_stable_ids(tokenizer: Tokenizer) -> None:
    # Given a document repeating the same boilerplate section text
    parsed = ParsedDocument(
        sections=[
            Section(heading_path=["One"], text="Repeated text."),
            Section(heading_path=["Two"], text="Repeated text."),
        ]
    )
    # When it is chunked twice
    first = chunk_document("doc", parsed, tokenizer, 50, 10)
    second = chunk_document("doc", parsed, tokenizer, 50, 10)
    # Then the copies have distinct ids, counted by occurrence, and ids are deterministic
    assert first[0].chunk_id == make_chunk_id("doc", "Repeated text.", 0)
    assert first[1].chunk_id == make_chunk_id("doc", "Repeated text.", 1)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in second]
    # and another document with the same text gets other ids
    assert chunk_document("other", parsed, tokenizer, 50, 10)[0].chunk_id != first[0].chunk_id


# --- Tokenizer handling, parameters and long inputs --------------------------------------------


def test_callers_tokenizer_keeps_its_truncation_and_is_not_truncating_chunks(tokenizer: Tokenizer) -> None:
    # Given a tokenizer that truncates at 16 tokens and pads (like the shipped tokenizer.json)
    text = document(seed=40, paragraphs=3)
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When a document is chunked with a budget above the truncation length
    chunks = chunk_document("doc", parsed, tokenizer, 60, 0)
    # Then chunks are measured untruncated and the caller's tokenizer still truncates and pads
    assert max(c.token_count for c in chunks) > 16
    assert tokenizer.truncation is not None
    assert tokenizer.truncation["max_length"] == 16
    assert tokenizer.padding is not None
    assert len(tokenizer.encode("the cells " * 20).ids) == 16


def test_overlap_larger_than_chunk_is_clamped(tokenizer: Tokenizer) -> None:
    # Given an overlap as large as the chunk size
    text = document(seed=41, paragraphs=5)
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked
    chunks = chunk_document("doc", parsed, tokenizer, 20, 100)
    # Then chunking still moves forward (overlap at most half a chunk) within the budget
    assert all(c.token_count <= 20 for c in chunks)
    assert len(chunks) < 4 * sum(c.token_count for c in chunk_document("doc", parsed, tokenizer, 20, 0)) / 20


def test_invalid_chunk_size_is_refused(tokenizer: Tokenizer) -> None:
    # Given a chunk size of zero
    # When chunking
    # Then it is refused
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunk_document("doc", ParsedDocument(sections=[Section(text="x")]), tokenizer, 0, 0)


def test_huge_sections_are_chunked_in_blocks(tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a section longer than the block size
    monkeypatch.setattr(chunking, "_BLOCK_CHARS", 500)
    text = document(seed=42, paragraphs=20)
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked without overlap
    chunks = chunk_document("doc", parsed, tokenizer, 40, 0)
    # Then no word is lost or cut and every chunk fits
    assert [w for c in chunks for w in c.text.split()] == text.split()
    assert all(c.token_count <= 40 for c in chunks)
    assert all(len(c.text) <= 500 for c in chunks)


def test_chunking_thousands_of_abstracts_is_fast(tokenizer: Tokenizer) -> None:
    # Given 2,000 abstract-sized documents
    docs = [
        ParsedDocument(sections=[Section(text=document(seed=i, paragraphs=2, sentences=6))])
        for i in range(2000)
    ]
    # When they are all chunked
    started = time.perf_counter()
    total = sum(len(chunk_document(f"d{i}", d, tokenizer, 200, 32)) for i, d in enumerate(docs))
    elapsed = time.perf_counter() - started
    # Then it takes seconds, not minutes
    assert total >= 2000
    assert elapsed < 15, f"chunking 2,000 abstracts took {elapsed:.1f}s"


def test_chunk_text_is_raw_section_text(tokenizer: Tokenizer) -> None:
    # Given a section with Markdown inside
    text = "Some *emphasis* and `code`.\n\n- item one\n- item two"
    parsed = ParsedDocument(title="T", sections=[Section(heading_path=["H"], text=text)])
    # When it is chunked
    [chunk] = chunk_document("doc", parsed, tokenizer, 200, 32)
    # Then the text is the section's own text, without title or heading prefixed
    assert chunk.text == text
    assert not re.match(r"^(T|H)\b", chunk.text)


def test_real_encoder_tokenizer_counts_match(model_dir: Path) -> None:
    # Given the shipped all-MiniLM-L6-v2 tokenizer (truncation and padding at 128) and text with
    # accents, symbols, numbers and long words
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    rng = random.Random(5)
    vocabulary = [*COMMON, *RARE, "café", "naïve", "Zürich", "10⁻³", "µm", "“quoted”", "—", "x-ray", "(IL-6)"]
    text = "\n\n".join(
        " ".join(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(5, 30))) + "." for _ in range(8))
        for _ in range(10)
    )
    parsed = ParsedDocument(sections=[Section(text=text)])
    # When it is chunked with the default sizes
    chunks = chunk_document("doc", parsed, tokenizer, 200, 32)
    # Then counts are the tokenizer's own, within budget, words whole, and the tokenizer untouched
    assert len(chunks) > 2
    for chunk in chunks:
        assert chunk.token_count == count_tokens(tokenizer, chunk.text) <= 200
        assert_whole_words(chunk, text)
    assert tokenizer.truncation is not None
    assert tokenizer.truncation["max_length"] == 128


def test_a_document_over_the_chunk_cap_is_a_permanent_error_naming_the_setting(tokenizer: Tokenizer) -> None:
    # given a document that makes many chunks
    from stratus.errors import PermanentError

    parsed = ParsedDocument(title="t", sections=[Section(text=document(7, paragraphs=40))])
    assert len(chunk_document("d", parsed, tokenizer, 32, 0)) > 10
    # when chunked with a cap of 10 chunks, then it is refused with the setting's name
    with pytest.raises(PermanentError, match="STRATUS_MAX_CHUNKS_PER_DOCUMENT"):
        chunk_document("d", parsed, tokenizer, 32, 0, max_chunks=10)
