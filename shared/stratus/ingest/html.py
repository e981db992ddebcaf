"""HTML documents: the readable text of a page, in sections under its headings.

Navigation, scripts, forms, hidden elements and boilerplate that sites mark by id or class (cookie
banners, menus) are dropped; tables keep their cells apart. Bounded: at most MAX_HTML_TAGS tags.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from stratus.errors import PermanentError
from stratus.ingest.text import SectionBuilder, file_stem
from stratus.models import ParsedDocument

if TYPE_CHECKING:
    from bs4 import Tag

_DROP_TAGS = (
    "script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "template",
    "iframe", "object", "embed", "canvas", "button", "select", "dialog", "head",
)  # fmt: skip
_DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "dialog", "menu"}
_HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCK_TAGS = {
    "address", "article", "blockquote", "body", "caption", "dd", "details", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "hr", "html", "li", "main", "ol", "p", "section", "summary",
    "table", "tbody", "tfoot", "thead", "tr", "ul",
}  # fmt: skip
_CELL_TAGS = {"td", "th"}
MAX_HTML_TAGS = 200_000
_WS_RE = re.compile(r"\s+")


def _html_text(tag: Tag) -> str:
    return _WS_RE.sub(" ", tag.get_text(" ")).strip()


def parse_html(data: bytes, filename: str) -> ParsedDocument:
    from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString, ProcessingInstruction
    from bs4 import Tag as BsTag

    # The tree costs about 500 bytes a tag: count them before building it (1 MB of "<b>x</b>"
    # would take 140 MB), so a page of markup alone cannot exhaust the function's memory.
    tags = data.count(b"<")
    if tags > MAX_HTML_TAGS:
        raise PermanentError(f"HTML has {tags} tags; at most {MAX_HTML_TAGS} are parsed")
    # Let bs4 honour a <meta charset>, but decode plain bytes our way first when they are valid UTF-8.
    markup: str | bytes
    try:
        markup = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        markup = data
    soup = BeautifulSoup(markup, "html.parser")

    title = ""
    if soup.title is not None:
        title = _html_text(soup.title)
    if not title:
        h1 = soup.find("h1")
        if isinstance(h1, BsTag):
            title = _html_text(h1)

    # One walk finds the outermost element of each boilerplate or hidden subtree; extracting only
    # those keeps removal linear (nested hidden elements each extracted cost their whole subtree).
    # extract() rather than decompose(): decompose clears the nested tags a later step may still visit.
    doomed: list[BsTag] = []
    stack: list[Any] = [soup]
    while stack:
        node = stack.pop()
        if not isinstance(node, BsTag):
            continue
        if node is not soup and (node.name in _DROP_TAGS or _is_hidden(node) or _is_boilerplate(node)):
            doomed.append(node)
            continue
        stack.extend(node.contents)
    for tag in doomed:
        tag.extract()

    roots: list[BsTag] = []
    main = soup.find("main") or soup.find(True, attrs={"role": "main"})
    if isinstance(main, BsTag):
        roots = [main]
    else:
        articles = [a for a in soup.find_all("article") if a.find_parent("article") is None]
        body = soup.body
        roots = articles or ([body] if isinstance(body, BsTag) else [soup])

    builder = SectionBuilder()
    paragraph: list[str] = []

    def flush_paragraph() -> None:
        text = "".join(paragraph)
        paragraph.clear()
        lines = [_WS_RE.sub(" ", line).strip() for line in text.split("\n")]
        joined = "\n".join(line for line in lines if line)
        if joined:
            builder.add(joined)
            builder.add("")

    def walk(root: BsTag) -> None:
        # Iterative depth-first walk: deeply nested markup must not hit the recursion limit.
        stack: list[Any] = [root]
        while stack:
            node = stack.pop()
            if node is _END_BLOCK:
                flush_paragraph()
                continue
            if node is _CELL_GAP:
                paragraph.append(" ")
                continue
            if isinstance(node, (Comment, Declaration, Doctype, ProcessingInstruction)):
                continue
            if isinstance(node, NavigableString):
                # Source line breaks are plain whitespace in HTML; only <br> breaks a line.
                paragraph.append(_WS_RE.sub(" ", str(node)))
                continue
            if not isinstance(node, BsTag):
                continue
            name = node.name
            if name in _HEADING_TAGS:
                flush_paragraph()
                builder.heading(_HEADING_TAGS[name], _html_text(node))
                continue
            if name == "br":
                paragraph.append("\n")
                continue
            if name == "pre":
                flush_paragraph()
                code = node.get_text()
                builder.add(code.strip("\n"))  # normalize_text keeps its indentation
                builder.add("")
                continue
            children = list(node.children)
            if name in _BLOCK_TAGS:
                flush_paragraph()
                stack.append(_END_BLOCK)
            elif name in _CELL_TAGS:
                stack.append(_CELL_GAP)
            stack.extend(reversed(children))

    for root in roots:
        walk(root)
        flush_paragraph()
    sections = builder.finish()
    return ParsedDocument(title=title or file_stem(filename), sections=sections)


_END_BLOCK = object()
_CELL_GAP = object()


# Sources (web crawls): boilerplate that sites mark only by id or class, not by a semantic tag —
# cookie banners, sidebars, breadcrumbs, menus. Matched on whole words of the id and class names.
_BOILERPLATE_WORDS = frozenset(
    {"cookie", "cookies", "consent", "gdpr", "breadcrumb", "breadcrumbs", "sidebar", "navbar", "navigation",
     "menu", "footer", "skiplink", "share", "social", "newsletter", "popup", "advert", "advertisement"}
)  # fmt: skip
_NAME_WORD_RE = re.compile(r"[a-z]+")
_CONTENT_TAGS = frozenset({"body", "main", "article", "html"})


def _is_boilerplate(tag: Tag) -> bool:
    if tag.name in _CONTENT_TAGS:
        return False
    classes: Any = tag.attrs.get("class") or []
    names = " ".join(
        [str(tag.attrs.get("id", "")), *(classes if isinstance(classes, list) else [str(classes)])]
    )
    return not _BOILERPLATE_WORDS.isdisjoint(_NAME_WORD_RE.findall(names.lower()[:500]))


def _is_hidden(tag: Tag) -> bool:
    return (
        "hidden" in tag.attrs
        or str(tag.attrs.get("aria-hidden", "")).lower() == "true"
        or str(tag.attrs.get("role", "")).lower() in _DROP_ROLES
    )
