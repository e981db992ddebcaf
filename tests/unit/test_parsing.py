"""Document parsing (Markdown, text, HTML, PDF) and metadata sidecars."""

from __future__ import annotations

import contextlib
import io
import json
import time
from typing import Any

import pytest
from fakes.pdf import make_pdf

from stratus.errors import PermanentError
from stratus.ingest.parsing import (
    MAX_METADATA_KEYS,
    detect_format,
    document_key_for_sidecar,
    is_metadata_sidecar,
    parse_document,
    parse_metadata_sidecar,
    sidecar_key_for,
)
from stratus.ingest.text import decode_text


def encrypt_pdf(data: bytes, user_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def sidecar(attributes: Any) -> bytes:
    return json.dumps({"metadataAttributes": attributes}).encode()


# --- Markdown ------------------------------------------------------------------------------


def test_markdown_headings_build_heading_paths_and_title() -> None:
    # Given a Markdown file with nested headings and text before the first heading
    data = (
        b"Preamble text.\n\n# Guide\n\nIntro.\n\n## Install\n\nRun it.\n\n"
        b"### Linux\n\nUse apt.\n\n## Usage\n\nCall it.\n"
    )
    # When it is parsed
    doc = parse_document(data, "docs/guide.md")
    # Then each heading opens a section with the full path, and the first H1 is the title
    assert doc.title == "Guide"
    assert [(s.heading_path, s.text) for s in doc.sections] == [
        ([], "Preamble text."),
        (["Guide"], "Intro."),
        (["Guide", "Install"], "Run it."),
        (["Guide", "Install", "Linux"], "Use apt."),
        (["Guide", "Usage"], "Call it."),
    ]
    assert all(s.page is None for s in doc.sections)


def test_markdown_front_matter_dropped_and_code_fences_are_not_headings() -> None:
    # Given front matter and a fenced block holding lines that look like headings
    data = (
        b"---\ntitle: From Front Matter\ntags: [a, b]\n---\n"
        b"Text before.\n\n```bash\n# a shell comment\n## another\n```\n\n~~~\n# tilde fence\n~~~\n\nAfter.\n"
    )
    # When it is parsed
    doc = parse_document(data, "notes.markdown")
    # Then the front matter is gone, the fenced lines stay as text, and no heading was made
    assert len(doc.sections) == 1
    text = doc.sections[0].text
    assert "tags:" not in text
    assert "From Front Matter" not in text
    assert "# a shell comment" in text
    assert "# tilde fence" in text
    assert doc.sections[0].heading_path == []
    # and without an H1 the title falls back to the front matter title
    assert doc.title == "From Front Matter"


def test_markdown_without_h1_uses_filename_stem_and_cleans_heading_markup() -> None:
    # Given Markdown with only an H2 that carries emphasis and a link, and a setext heading
    data = b"## The **bold** [link](http://x.y) part\n\nBody.\n\nSetext Two\n----------\n\nMore.\n"
    # When it is parsed
    doc = parse_document(data, "folder/my-notes.md")
    # Then the title is the filename stem and heading markup is reduced to its text
    assert doc.title == "my-notes"
    assert doc.sections[0].heading_path == ["The bold link part"]
    assert doc.sections[1].heading_path == ["Setext Two"]
    assert doc.sections[1].text == "More."


def test_markdown_of_only_headings_keeps_their_text() -> None:
    # Given a Markdown file made only of headings
    # When it is parsed
    doc = parse_document(b"# One\n## Two\n", "h.md")
    # Then the headings themselves become the document text
    assert doc.sections[0].text == "One\nTwo"


# --- Plain text and decoding -------------------------------------------------------------


def test_plain_text_is_one_section_with_normalised_whitespace() -> None:
    # Given a text file with a BOM, CRLF line ends, runs of spaces, NULs and decomposed accents
    data = "\ufeffFirst  line\twith   gaps\r\nsecond\x00 line\r\n\r\n\r\n\r\nCafe\u0301 para.  \r\n".encode()
    # When it is parsed
    doc = parse_document(data, "plain.txt")
    # Then it is one section, title from the file name, text NFC and tidy, paragraphs kept
    assert doc.title == "plain"
    assert len(doc.sections) == 1
    assert doc.sections[0].text == "First line with gaps\nsecond line\n\nCafé para."


def test_decoding_falls_back_to_cp1252_then_latin1() -> None:
    # Given bytes that are not UTF-8
    cp1252 = "“smart” café".encode("cp1252")
    latin1_only = b"caf\xe9 \x81"  # 0x81 is undefined in cp1252
    # When they are decoded
    # Then cp1252 is tried before latin-1
    assert decode_text(cp1252) == "“smart” café"
    assert decode_text(latin1_only) == "café \x81"
    assert decode_text("x".encode("utf-16")) == "x"


@pytest.mark.parametrize(
    ("filename", "content_type", "data"),
    [
        ("notes.rst", "text/x-rst", b"Some reStructuredText body."),
        ("README", None, b"A file without extension, valid UTF-8."),
        ("data.log", "application/octet-stream", "Binary-typed but text: ünïcode".encode()),
    ],
)
def test_unknown_text_is_parsed_as_plain_text(filename: str, content_type: str | None, data: bytes) -> None:
    # Given a file of unknown extension whose bytes are valid UTF-8 text
    # When it is parsed
    doc = parse_document(data, filename, content_type)
    # Then it is treated as plain text
    assert doc.sections[0].text == data.decode()


# --- HTML --------------------------------------------------------------------------------

PAGE = b"""<!DOCTYPE html>
<html><head><title> The   Page Title </title><style>.x { color: red }</style>
<script>var secret = "script text";</script></head>
<body>
<header><div>Site banner</div></header>
<nav><ul><li>Home</li><li>About</li></ul></nav>
<aside>Related links</aside>
<main>
  <h1>Main Heading</h1>
  <p>First   paragraph
     spans lines &amp; has <b>bold</b> text.</p>
  <noscript>Enable JavaScript</noscript>
  <form><label>Search</label><input name="q"></form>
  <h2>Details</h2>
  <ul><li>item one</li><li>item two</li></ul>
  <table><tr><td>cell a</td><td>cell b</td></tr></table>
  <div hidden>hidden text</div>
  <svg><text>svg text</text></svg>
  <template><p>template text</p></template>
  <h3>Deeper</h3>
  <p>Line<br>break</p>
  <h2>Other</h2>
  <p>Last words.</p>
</main>
<footer>Copyright footer</footer>
</body></html>"""


def test_html_main_text_with_heading_paths_and_boilerplate_dropped() -> None:
    # Given an HTML page with navigation, scripts, footer and a <main> element
    # When it is parsed
    doc = parse_document(PAGE, "page.html")
    # Then the title comes from <title> and sections follow the headings inside <main>
    assert doc.title == "The Page Title"
    assert [s.heading_path for s in doc.sections] == [
        ["Main Heading"],
        ["Main Heading", "Details"],
        ["Main Heading", "Details", "Deeper"],
        ["Main Heading", "Other"],
    ]
    assert doc.sections[0].text == "First paragraph spans lines & has bold text."
    assert doc.sections[1].text == "item one\n\nitem two\n\ncell a cell b"
    assert doc.sections[2].text == "Line\nbreak"
    # and no boilerplate survived anywhere
    everything = " ".join(s.text for s in doc.sections)
    for boilerplate in (
        "Site banner", "Home", "Related", "secret", "color", "Enable JavaScript", "Search",
        "hidden text", "svg text", "template text", "Copyright",
    ):  # fmt: skip
        assert boilerplate not in everything


def test_html_without_main_uses_body_and_h1_title() -> None:
    # Given HTML without <title> or <main>, detected through its content type only
    data = b"<html><body><nav>menu</nav><h1>Body Title</h1><p>Body text.</p><footer>f</footer></body></html>"
    # When it is parsed
    doc = parse_document(data, "download", "text/html; charset=utf-8")
    # Then the body is used and the first h1 is the title
    assert doc.title == "Body Title"
    assert [(s.heading_path, s.text) for s in doc.sections] == [(["Body Title"], "Body text.")]


def test_html_articles_are_preferred_over_body() -> None:
    # Given a page with two articles and chatter around them
    data = (
        b"<html><body><div>Chatter outside.</div><article><p>Article one.</p></article>"
        b"<article><p>Article two.</p></article></body></html>"
    )
    # When it is parsed
    doc = parse_document(data, "list.htm")
    # Then only the articles' text is kept
    assert doc.sections[0].text == "Article one.\n\nArticle two."
    assert doc.title == "list"


def test_html_is_sniffed_and_non_utf8_html_decodes() -> None:
    # Given HTML bytes without a known extension or content type, in a legacy encoding
    data = '<!doctype html><html><head><meta charset="windows-1252"></head><body><p>café</p></body></html>'
    # When it is parsed
    doc = parse_document(data.encode("cp1252"), "blob.bin")
    # Then it is recognised as HTML and decoded
    assert doc.sections[0].text == "café"


# --- PDF ---------------------------------------------------------------------------------


def test_pdf_has_one_section_per_page_with_page_numbers() -> None:
    # Given a three-page PDF with a metadata title
    data = make_pdf(["Page one text.\nSecond line.", "Page two text.", "Page three (final)."], "Report 2024")
    # When it is parsed
    doc = parse_document(data, "report.pdf")
    # Then each page is a section carrying its 1-based page number and no heading path
    assert doc.title == "Report 2024"
    assert [s.page for s in doc.sections] == [1, 2, 3]
    assert doc.sections[0].text == "Page one text.\nSecond line."
    assert doc.sections[2].text == "Page three (final)."
    assert all(s.heading_path == [] for s in doc.sections)


def test_pdf_detected_by_content_type_and_by_sniffing_and_title_falls_back() -> None:
    # Given a PDF without a metadata title, named without .pdf
    data = make_pdf(["Only page."])
    # When it is parsed with a content type, and with nothing but its bytes
    by_type = parse_document(data, "scan", "application/pdf")
    sniffed = parse_document(data, "upload.bin")
    # Then both are read as PDF and the title is the file name stem
    assert by_type.sections[0].page == 1
    assert sniffed.sections[0].page == 1
    assert by_type.title == "scan"
    assert sniffed.title == "upload"


def test_pdf_blank_pages_are_skipped_but_numbering_kept() -> None:
    # Given a PDF whose middle page has no text
    data = make_pdf(["First.", "", "Third."])
    # When it is parsed
    doc = parse_document(data, "gaps.pdf")
    # Then the blank page yields no section and the others keep their real numbers
    assert [(s.page, s.text) for s in doc.sections] == [(1, "First."), (3, "Third.")]


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.4\nthis is not really a pdf",
        make_pdf(["Some text here."])[:150],
        b"%PDF-",
    ],
    ids=["garbage", "truncated", "header-only"],
)
def test_corrupt_pdf_is_a_permanent_error(data: bytes) -> None:
    # Given bytes that claim to be a PDF but are broken
    # When they are parsed
    # Then a PermanentError explains it
    with pytest.raises(PermanentError, match="PDF could not be parsed"):
        parse_document(data, "broken.pdf")


def test_encrypted_pdf_without_password_is_a_permanent_error() -> None:
    # Given a PDF encrypted with a user password
    data = encrypt_pdf(make_pdf(["Secret text."]), user_password="secret")
    # When it is parsed
    # Then it fails permanently, saying it is encrypted
    with pytest.raises(PermanentError, match="encrypted"):
        parse_document(data, "locked.pdf")


def test_pdf_encrypted_with_empty_user_password_is_read() -> None:
    # Given a PDF that only restricts permissions (empty user password)
    data = encrypt_pdf(make_pdf(["Readable text."]), user_password="")
    # When it is parsed
    doc = parse_document(data, "restricted.pdf")
    # Then its text is extracted
    assert doc.sections[0].text == "Readable text."


# --- Failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content_type", "data", "named"),
    [
        ("setup.exe", None, b"MZ\x90\x00\x03", "'.exe'"),
        # (.png and .docx are read since issue 15: GIF and OpenDocument stand in for "unsupported")
        ("photo.gif", "image/gif", b"GIF89a\x00\x00", "'.gif'"),
        ("archive.zip", None, b"PK\x03\x04\x14\x00", "'.zip'"),
        ("photo", "image/gif", b"GIF89a\x00\x00", "content type 'image/gif'"),
        ("blob", None, b"PK\x03\x04\x14\x00\x00\x00", "ZIP archive"),
        ("report.odt", "text/plain", b"PK\x03\x04\x14\x00", "'.odt', looks like a ZIP archive"),
        ("picture.gif", "text/plain", b"plain words only", "'.gif'"),
        ("blob", "application/octet-stream", b"\x00\x01\x02\xff", "content type 'application/octet-stream'"),
        ("blob", None, b"\x00\x01\x02\xff", "file without extension"),
    ],
)
def test_unsupported_types_are_permanent_errors_naming_the_type(
    filename: str, content_type: str | None, data: bytes, named: str
) -> None:
    # Given a file of a type that carries no text we can read
    # When it is parsed
    # Then a PermanentError names what was refused
    with pytest.raises(PermanentError, match="unsupported file type") as error:
        parse_document(data, filename, content_type)
    assert named in str(error.value)


@pytest.mark.parametrize(
    ("filename", "data"),
    [
        ("empty.txt", b""),
        ("blank.md", b"   \n\n\t\n"),
        ("front-only.md", b"---\ntitle: x\n---\n"),
        ("scripts.html", b"<html><head><script>x()</script></head><body><nav>menu</nav></body></html>"),
        ("nul.txt", b"\x00\x00\x00"),
        ("blank.pdf", make_pdf([""])),
    ],
)
def test_documents_without_text_are_permanent_errors(filename: str, data: bytes) -> None:
    # Given a document with nothing to index
    # When it is parsed
    # Then it fails permanently with a readable reason
    with pytest.raises(PermanentError, match="document has no extractable text"):
        parse_document(data, filename)


def test_extension_wins_over_content_type_and_sniffing() -> None:
    # Given a .txt file whose bytes look like HTML and whose content type says PDF
    # When its format is detected
    # Then the extension decides
    assert detect_format(b"<html><body>x</body></html>", "page.txt", "application/pdf") == "text"
    assert detect_format(b"# x", "x.MD", None) == "markdown"


# --- Metadata sidecars -------------------------------------------------------------------


def test_sidecar_simple_form() -> None:
    # Given a sidecar with plain JSON values
    data = sidecar({"author": "Ada", "year": 1843, "score": 0.5, "public": True})
    # When it is parsed
    # Then the values are kept with their JSON types
    assert parse_metadata_sidecar(data) == {"author": "Ada", "year": 1843, "score": 0.5, "public": True}


def test_sidecar_typed_form_and_mixed() -> None:
    # Given a Bedrock typed sidecar (with includeForEmbedding) mixed with a simple value
    data = sidecar(
        {
            "genre": {"value": {"type": "STRING", "stringValue": "novel"}, "includeForEmbedding": True},
            "pages": {"value": {"type": "NUMBER", "numberValue": 320}, "includeForEmbedding": False},
            "draft": {"value": {"type": "BOOLEAN", "booleanValue": False}},
            "plain": "x",
        }
    )
    # When it is parsed
    # Then typed values are unwrapped to scalars
    assert parse_metadata_sidecar(data) == {"genre": "novel", "pages": 320, "draft": False, "plain": "x"}


def test_sidecar_with_bom_and_no_attributes() -> None:
    # Given a UTF-8 sidecar with a BOM and an empty attribute object
    # When it is parsed
    # Then it yields no metadata
    assert parse_metadata_sidecar(b'\xef\xbb\xbf{"metadataAttributes": {}}') == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[1, 2]", "metadataAttributes"),
        (b'{"other": {}}', "metadataAttributes"),
        (b'{"metadataAttributes": []}', "must be an object"),
        (sidecar({"1st": "x"}), "invalid attribute name '1st'"),
        (sidecar({"has-dash": "x"}), "invalid attribute name 'has-dash'"),
        (sidecar({"a" * 65: "x"}), "invalid attribute name"),
        (sidecar({"": "x"}), "invalid attribute name"),
        (sidecar({"text": "x"}), "'text' is reserved"),
        (sidecar({"Vector": "x"}), "'Vector' is reserved"),
        (sidecar({"Author": "x", "author": "y"}), "differ only in case"),
        (b'{"metadataAttributes": {"a": 1, "a": 2}}', "duplicate key 'a'"),
        (sidecar({"tags": ["a", "b"]}), "'tags' is a list"),
        (
            sidecar({"tags": {"value": {"type": "STRING_LIST", "stringListValue": ["a"]}}}),
            "'tags' is a STRING_LIST",
        ),
        (sidecar({"n": None}), "'n' is null"),
        (sidecar({"o": {"nested": 1}}), "'o' needs a 'value' object"),
        (sidecar({"t": {"value": {"type": "DATE", "stringValue": "x"}}}), "'t' has unknown type"),
        (sidecar({"t": {"value": {"type": "NUMBER", "stringValue": "1"}}}), "needs 'numberValue'"),
        (sidecar({"t": {"value": {"type": "NUMBER", "numberValue": True}}}), "is not a number"),
        (sidecar({"t": {"value": {"type": "BOOLEAN", "booleanValue": "yes"}}}), "is not a boolean"),
        (b'{"metadataAttributes": {"x": NaN}}', "'x': number must be finite"),
        (sidecar({"big": 2**70}), "out of 64-bit range"),
        (sidecar({"long": "x" * 5000}), "longer than"),
    ],
)
def test_bad_sidecars_are_permanent_errors_naming_the_problem(data: bytes, message: str) -> None:
    # Given a malformed sidecar
    # When it is parsed
    # Then the PermanentError says what is wrong
    with pytest.raises(PermanentError, match="metadata sidecar") as error:
        parse_metadata_sidecar(data)
    assert message in str(error.value)


def test_sidecar_key_count_limit() -> None:
    # Given sidecars with exactly the maximum and one more attribute
    at_limit = sidecar({f"k{i}": i for i in range(MAX_METADATA_KEYS)})
    over = sidecar({f"k{i}": i for i in range(MAX_METADATA_KEYS + 1)})
    # When they are parsed
    # Then the limit is accepted and one more is refused
    assert len(parse_metadata_sidecar(at_limit)) == MAX_METADATA_KEYS
    with pytest.raises(PermanentError, match=f"at most {MAX_METADATA_KEYS}"):
        parse_metadata_sidecar(over)


def test_sidecar_key_helpers() -> None:
    # Given document and sidecar keys
    # When the helpers are asked
    # Then sidecars are recognised and mapped both ways
    assert sidecar_key_for("inbox/c/report.pdf") == "inbox/c/report.pdf.metadata.json"
    assert is_metadata_sidecar("inbox/c/report.pdf.metadata.json")
    assert is_metadata_sidecar("inbox/c/REPORT.PDF.METADATA.JSON")
    assert not is_metadata_sidecar("inbox/c/report.pdf")
    assert not is_metadata_sidecar("inbox/c/.metadata.json")
    assert not is_metadata_sidecar("inbox/c/metadata.json")
    assert document_key_for_sidecar("inbox/c/report.pdf.metadata.json") == "inbox/c/report.pdf"
    with pytest.raises(ValueError, match="not a metadata sidecar"):
        document_key_for_sidecar("inbox/c/report.pdf")


# --- hostile input (issue 19): linear scans, caps, nesting, exact names ----------------------

# Each took seconds to minutes with the regexes it replaced (measured on the starting code:
# "# a" + 20,000 spaces + "a" 8.0 s, 20,000 backticks in a heading 92 s, 20,000 '[' 2.7 s).
HOSTILE_MARKDOWN = {
    "hash then 60,000 spaces then a letter": b"#" + b" " * 60_000 + b"x",
    "heading word, 60,000 spaces, word": b"# a" + b" " * 60_000 + b"b",
    "heading of 60,000 '['": b"# " + b"[" * 60_000,
    "heading of 60,000 '](' pairs": b"# " + b"](" * 60_000,
    "heading of 60,000 backticks": b"# a " + b"`" * 60_000,
    "heading of 30,000 '*a'": b"# " + b"*a" * 30_000,
    "heading of 60,000 '_ '": b"# " + b"_ " * 60_000,
    "front matter title of 60,000 spaces": b"---\ntitle: a" + b" " * 60_000 + b"b\n---\nbody",
    "open front matter of 60,000 'title:' lines": b"---\n" + b"title:  \n" * 60_000,
}


@pytest.mark.parametrize("data", list(HOSTILE_MARKDOWN.values()), ids=list(HOSTILE_MARKDOWN))
def test_hostile_markdown_parses_in_under_half_a_second(data: bytes) -> None:
    # given a Markdown line shaped to make a backtracking regex quadratic
    # when it is parsed
    started = time.perf_counter()
    with contextlib.suppress(PermanentError):  # (no text is a fine answer; taking minutes is not)
        parse_document(data, "hostile.md")
    elapsed = time.perf_counter() - started
    # then it takes well under a second (linear scans)
    assert elapsed < 0.5, f"{elapsed:.2f}s"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# Title", "Title"),
        ("## Closing hashes ##", "Closing hashes"),
        ("# C#", "C#"),
        ("#   spaced   #   ", "spaced"),
        ("### [Link](http://x) and ![img](i.png)", "Link and img"),
        ("# **Bold** and *em* and `code` and ~~gone~~", "Bold and em and code and gone"),
        ("# *x* x **x**", "x x x"),
        ("# snake_case_name", "snakecasename"),
    ],
)
def test_heading_markup_is_cleaned_by_the_linear_scans(line: str, expected: str) -> None:
    # given a document with one heading and a body
    doc = parse_document(f"{line}\n\nbody text\n".encode(), "a.md")
    # then the heading path holds the cleaned heading
    assert doc.sections[0].heading_path == [expected]


def test_front_matter_title_with_quotes_is_read() -> None:
    doc = parse_document(b'---\ntitle: "Quoted title"\n---\n\nbody\n', "a.md")
    assert doc.title == "Quoted title"


def test_deeply_nested_sidecar_is_a_permanent_error_not_a_recursion_error() -> None:
    # given a 60 KB sidecar of nested lists
    data = b'{"metadataAttributes": {"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}"
    assert len(data) < 64 * 1024
    # when it is read, then it is refused with a reason
    with pytest.raises(PermanentError, match="nests too deeply"):
        parse_metadata_sidecar(data)


@pytest.mark.parametrize("name", ["team\n", "chunk_id\n", "a\n"])
def test_metadata_names_with_a_trailing_newline_are_refused(name: str) -> None:
    # given a name that `re.match` with `$` accepted (the newline before the end)
    data = json.dumps({"metadataAttributes": {name: "x"}}).encode()
    # then the sidecar is refused naming the attribute
    with pytest.raises(PermanentError, match="invalid attribute name"):
        parse_metadata_sidecar(data)


def test_bound_document_caps_title_and_heading_path_and_keeps_the_text() -> None:
    # given a document whose heading is 50 KB long
    from stratus.ingest.parsing import bound_document

    heading = "word " * 10_000
    doc = parse_document(f"# {heading}\n\n## Sub\n\nbody text\n".encode(), "a.md")
    # when bounded to 300 title and 500 section characters
    bounded = bound_document(doc, max_title_chars=300, max_section_chars=500)
    # then title and each section label fit, and the long heading's text is still in the body
    assert len(bounded.title) <= 300
    for section in bounded.sections:
        assert len(" > ".join(section.heading_path)) <= 500
    assert heading.strip() in bounded.sections[0].text


def test_every_detectable_format_has_a_registered_parser() -> None:
    # given every format detection can return
    from stratus.ingest import parsing

    formats = set(parsing._EXTENSIONS.values()) | set(parsing._CONTENT_TYPES.values()) | {"text"}
    # then each has exactly one registered parser
    assert formats <= set(parsing.PARSERS)
    with pytest.raises(ValueError, match="already registered"):
        parsing.register_parser("markdown")(lambda data, name: parsing.ParsedDocument(title="", sections=[]))
