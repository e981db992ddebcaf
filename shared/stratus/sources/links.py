"""What a crawl reads from an HTML page besides its text: links, <link rel=canonical>, robots meta."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from stratus.ingest.html import MAX_HTML_TAGS

MAX_LINKS = 5000


@dataclass
class PageLinks:
    """Absolute link targets (not yet normalised), the canonical URL and the robots meta flags."""

    links: list[str] = field(default_factory=list)
    canonical: str | None = None
    noindex: bool = False
    nofollow: bool = False


def read_links(html: bytes, base_url: str) -> PageLinks:
    """Links, canonical and robots meta of a page (bounded like the HTML parser: tags counted first)."""
    from bs4 import BeautifulSoup, SoupStrainer, Tag

    result = PageLinks()
    if html.count(b"<") > MAX_HTML_TAGS:
        return result
    wanted = SoupStrainer(["a", "area", "link", "meta", "base"])
    soup = BeautifulSoup(html, "html.parser", parse_only=wanted)
    base = base_url
    found = soup.find("base", href=True)
    if isinstance(found, Tag):
        base = urljoin(base_url, str(found["href"]))
    for tag in soup.find_all(["meta"]):
        if str(tag.get("name", "")).lower() in ("robots", "stratus"):
            content = str(tag.get("content", "")).lower()
            result.noindex |= "noindex" in content or "none" in content
            result.nofollow |= "nofollow" in content or "none" in content
    for tag in soup.find_all("link", href=True):
        rel: Any = tag.get("rel") or []
        rels = [r.lower() for r in (rel if isinstance(rel, list) else [rel])]
        if "canonical" in rels and result.canonical is None:
            result.canonical = urljoin(base, str(tag["href"]).strip())
    for tag in soup.find_all(["a", "area"], href=True):
        if len(result.links) >= MAX_LINKS:
            break
        rel = tag.get("rel") or []
        if "nofollow" in [r.lower() for r in (rel if isinstance(rel, list) else [rel])]:
            continue
        href = str(tag["href"]).strip()
        if not href or href.startswith(("#", "mailto:", "javascript:", "tel:", "data:")):
            continue
        result.links.append(urljoin(base, href))
    return result


# X-Robots-Tag directives that carry a value after a colon; any other "word:" starts a user-agent group.
_VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})


def header_robots(value: str, token: str) -> tuple[bool, bool]:
    """(noindex, nofollow) of X-Robots-Tag headers (one per line) for the crawler named `token`.

    "noindex, nofollow" applies to every crawler; "otherbot: noindex" only to otherbot (a user-agent
    prefix applies to the directives after it in the same header, up to the next prefix).
    """
    noindex = nofollow = False
    for header in value.lower().splitlines():
        agent: str | None = None
        for part in header.split(","):
            head, colon, rest = part.partition(":")
            directive = part.strip()
            if colon and head.strip() not in _VALUED_DIRECTIVES:
                agent, directive = head.strip(), rest.strip()
            if agent is not None and agent != token.lower():
                continue
            noindex |= directive in ("noindex", "none")
            nofollow |= directive in ("nofollow", "none")
    return noindex, nofollow
