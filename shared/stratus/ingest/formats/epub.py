"""EPUB e-books: the spine's chapters in reading order, each read as XHTML.

Read with the standard library's zipfile and defusedxml (container and package documents)
rather than ebooklib, which parses with lxml defaults; chapters go through Stratus's HTML parser.
"""

from __future__ import annotations

import posixpath

from stratus.errors import PermanentError
from stratus.ingest.formats.safety import FormatLimits, open_zip, read_member, refuse_xml_entities
from stratus.models import ParsedDocument, Section

_OPF = "{http://www.idpf.org/2007/opf}"
_DC = "{http://purl.org/dc/elements/1.1/}"
_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"


def _xml(data: bytes, what: str):  # type: ignore[no-untyped-def]
    from xml.etree.ElementTree import ParseError

    import defusedxml.ElementTree as safe_et
    from defusedxml import DefusedXmlException

    try:
        return safe_et.fromstring(data)
    except (ParseError, DefusedXmlException) as exc:
        raise PermanentError(f"EPUB: {what} is not valid XML: {exc}") from exc


def parse_epub(data: bytes, filename: str, limits: FormatLimits) -> ParsedDocument:
    """One section per chapter (more when a chapter has headings), titled by the book."""
    from stratus.ingest.html import parse_html

    what = "EPUB e-book"
    archive = open_zip(data, what, limits)
    with archive:
        refuse_xml_entities(archive, what, allow_doctype=True)
        container = _xml(read_member(archive, "META-INF/container.xml", what), "META-INF/container.xml")
        rootfile = container.find(f".//{_CONTAINER}rootfile")
        opf_path = rootfile.get("full-path", "") if rootfile is not None else ""
        if not opf_path:
            raise PermanentError("EPUB: META-INF/container.xml names no package document")
        package = _xml(read_member(archive, opf_path, what), opf_path)
        base = posixpath.dirname(opf_path)
        title_node = package.find(f".//{_DC}title")
        title = " ".join((title_node.text or "").split()) if title_node is not None else ""
        manifest = {
            item.get("id"): item.get("href", "")
            for item in package.iter(f"{_OPF}item")
            if "html" in (item.get("media-type") or "")
        }
        sections: list[Section] = []
        for number, ref in enumerate(package.iter(f"{_OPF}itemref"), start=1):
            href = manifest.get(ref.get("idref"))
            if not href:
                continue
            path = posixpath.normpath(posixpath.join(base, href.split("#", 1)[0]))
            chapter = parse_html(read_member(archive, path, what), path)
            chapter_title = chapter.title if chapter.title and chapter.title != title else f"Chapter {number}"
            for section in chapter.sections:
                path_ = section.heading_path or [chapter_title]
                sections.append(Section(heading_path=path_, text=section.text))
    return ParsedDocument(title=title, sections=sections)
