"""URL normalisation (one page, one document) and the crawl scope of a web source."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from w3lib.url import canonicalize_url, url_query_cleaner

from stratus.ingest.formats import EXTENSIONS as FORMAT_EXTENSIONS

DEFAULT_PORTS = {"http": 80, "https": 443}
TRACKING_PARAMETERS = frozenset(
    {"gclid", "fbclid", "msclkid", "dclid", "yclid", "mc_cid", "mc_eid", "_ga", "_gl", "igshid", "ref_src"}
)
# Links a crawl never requests: assets and data that are not documents. Any other link is fetched and
# its Content-Type decides (an unreadable type is skipped as "type"), so /release/v2.0 or /page.cfm
# are crawled although their last segment has a dot.
_ASSETS = (
    ".gif .svg .ico .bmp .avif .heic .css .js .mjs .map .json .xml .rss .atom .ics .woff .woff2 .ttf .otf"
    " .eot .mp3 .mp4 .m4a .m4v .mov .avi .webm .ogg .wav .flac .zip .gz .tgz .bz2 .xz .7z .rar .tar .exe"
    " .msi .dmg .pkg .deb .rpm .apk .iso .bin .jar .wasm .doc .xls .ppt .odt .ods .odp .rtf .psd .ai .eps"
)
ASSET_EXTENSIONS = frozenset(
    {*(e for e, f in FORMAT_EXTENSIONS.items() if f == "image"), *_ASSETS.split(" ")}
)


def normalise_url(url: str) -> str:
    """An http(s) URL's canonical form: no fragment, default port, tracking parameter or trailing slash."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if scheme not in DEFAULT_PORTS or not host:
        raise ValueError(f"not an http(s) URL: {url[:200]!r}")
    port = parts.port
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        netloc = f"[{host}]" if port in (None, DEFAULT_PORTS[scheme]) else f"[{host}]:{port}"
    path = parts.path or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    rebuilt = urlunsplit((scheme, netloc, path, parts.query, ""))
    cleaned = url_query_cleaner(rebuilt, _kept_parameters(parts.query), remove=False, keep_fragments=False)
    return canonicalize_url(cleaned, keep_fragments=False)


def _kept_parameters(query: str) -> list[str]:
    names = [pair.partition("=")[0] for pair in query.split("&") if pair]
    return [n for n in names if not (n.lower().startswith("utm_") or n.lower() in TRACKING_PARAMETERS)]


def extension(url: str) -> str:
    """The lower-case extension of the URL's last path segment ('' for none)."""
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    dot = last.rfind(".")
    return last[dot:].lower() if dot > 0 else ""


@dataclass(frozen=True)
class Prefix:
    """Scheme, host (with a non-default port) and path prefix of one start URL."""

    scheme: str
    netloc: str
    path: str

    def covers(self, url: str) -> bool:
        """Whether `url` (normalised) lies under this prefix."""
        parts = urlsplit(url)
        if parts.scheme != self.scheme or parts.netloc != self.netloc:
            return False
        path = parts.path or "/"
        return path == self.path.rstrip("/") or path.startswith(self.path) or self.path == "/"


def prefix_of(url: str) -> Prefix:
    """The scope a start URL opens: its folder (a page's parent, or the path itself as a folder)."""
    parts = urlsplit(normalise_url(url))
    path = parts.path or "/"
    if extension(url):
        path = path.rsplit("/", 1)[0] + "/"
    elif not path.endswith("/"):
        path += "/"
    return Prefix(parts.scheme, parts.netloc, path)


@dataclass(frozen=True)
class Scope:
    """Which URLs a web source crawls: under a start prefix, matching an include, no exclude."""

    prefixes: tuple[Prefix, ...]
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def build(cls, urls: list[str], sitemaps: list[str], include: list[str], exclude: list[str]) -> Scope:
        """The scope of a source: start URLs' folders; a sitemap opens its whole host."""
        prefixes = [prefix_of(u) for u in urls]
        for sitemap in sitemaps:
            parts = urlsplit(normalise_url(sitemap))
            if not urls:
                prefixes.append(Prefix(parts.scheme, parts.netloc, "/"))
        # fnmatch's translation has no nested quantifiers: matching stays linear in the URL.
        return cls(
            tuple(dict.fromkeys(prefixes)),
            tuple(re.compile(fnmatch.translate(p)) for p in include),
            tuple(re.compile(fnmatch.translate(p)) for p in exclude),
        )

    def allows(self, url: str) -> bool:
        """Whether a normalised URL is in scope."""
        if not any(p.covers(url) for p in self.prefixes):
            return False
        if self.include and not any(p.match(url) for p in self.include):
            return False
        return not any(p.match(url) for p in self.exclude)

    def hosts(self) -> list[str]:
        """The scheme://netloc origins of the scope, robots.txt is read from each."""
        return list(dict.fromkeys(f"{p.scheme}://{p.netloc}" for p in self.prefixes))


def origin(url: str) -> str:
    """scheme://netloc of a URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
