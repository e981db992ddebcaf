"""Sitemaps and sitemap indexes (XML, gzip) read as hostile input: no entities, bounded bytes and URLs."""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from stratus.errors import PermanentError

MAX_SITEMAP_URLS = 50_000  # the sitemaps.org limit per file
_STEP = 64 * 1024


@dataclass
class Sitemap:
    """Page URLs and nested sitemaps of one sitemap file."""

    urls: list[str] = field(default_factory=list)
    sitemaps: list[str] = field(default_factory=list)
    truncated: int = 0


def gunzip_bounded(data: bytes, max_bytes: int) -> bytes:
    """A .gz body decompressed, refused as soon as it would exceed `max_bytes` (the fetch limit)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out: list[bytes] = []
    size = 0
    pending = data
    while pending and not inflater.eof:
        piece = inflater.decompress(pending, _STEP)
        size += len(piece)
        if size > max_bytes:
            raise PermanentError(f"gzip sitemap inflates past {max_bytes} bytes")
        out.append(piece)
        pending = inflater.unconsumed_tail
    return b"".join(out)


def parse_sitemap(data: bytes, max_bytes: int) -> Sitemap:
    """The <loc>s of a urlset or sitemapindex (gzip sniffed by its magic bytes)."""
    if data[:2] == b"\x1f\x8b":
        data = gunzip_bounded(data, max_bytes)
    result = Sitemap()
    try:
        for _event, element in iterparse(io.BytesIO(data), events=("end",), forbid_dtd=True):
            tag = element.tag.rsplit("}", 1)[-1]
            if tag == "loc":
                continue
            if tag in ("url", "sitemap"):
                loc = next((c.text for c in element if c.tag.rsplit("}", 1)[-1] == "loc"), None)
                target = result.urls if tag == "url" else result.sitemaps
                if loc and loc.strip():
                    if len(result.urls) + len(result.sitemaps) >= MAX_SITEMAP_URLS:
                        result.truncated += 1
                    else:
                        target.append(loc.strip())
                element.clear()
    except DefusedXmlException as error:
        raise PermanentError(f"sitemap refused: {type(error).__name__}") from error
    except SyntaxError as error:  # ParseError
        raise PermanentError(f"sitemap is not well-formed XML: {error}") from error
    return result
