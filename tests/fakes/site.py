"""A web site on 127.0.0.1 for crawl tests: pages in a dict, ETags, an access log, a gate to hang on."""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Hit:
    """One request the site saw."""

    path: str
    status: int
    at: float
    headers: dict[str, str]


@dataclass
class Site:
    """Pages by path: (content type, bytes). Missing paths answer 404; `gone` paths 410; `redirects` 301."""

    pages: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    log: list[Hit] = field(default_factory=list)
    hang: set[str] = field(default_factory=set)  # paths that block until `release` is set
    release: threading.Event = field(default_factory=threading.Event)
    conditional: bool = True
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location (301)
    failing: dict[str, int] = field(default_factory=dict)  # path -> status it answers (e.g. 503)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> extra response headers
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: Any = None

    @property
    def url(self) -> str:
        """Base URL, no trailing slash."""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def host(self) -> str:
        """host:port, for STRATUS_URL_ALLOW_HOSTS."""
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def paths(self) -> list[str]:
        """Every path requested, in order."""
        with self.lock:
            return [hit.path for hit in self.log]

    def start(self) -> Site:
        """Serve in a daemon thread."""
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path
                if path in site.hang:
                    site.release.wait(60)
                status, ctype, body, extra = site.answer(path, dict(self.headers))
                with site.lock:
                    site.log.append(Hit(path, status, time.time(), dict(self.headers)))
                self.send_response(status)
                if ctype:
                    self.send_header("Content-Type", ctype)
                for name, value in extra.items():
                    for line in value.split("\n"):  # one header per line: X-Robots-Tag may repeat
                        self.send_header(name, line)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes, dict[str, str]]:
        """Status, content type, body and extra headers for a GET of `path`."""
        if path in self.gone:
            return 410, "text/plain", b"gone", {}
        if path in self.redirects:
            return 301, "text/plain", b"", {"Location": self.redirects[path]}
        if path in self.failing:
            return self.failing[path], "text/plain", b"unavailable", {}
        found = self.pages.get(path)
        if found is None:
            return 404, "text/plain", b"not found", {}
        ctype, body = found
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        extra = {"ETag": etag} if self.conditional else {}
        extra.update(self.headers.get(path, {}))
        if self.conditional and headers.get("If-None-Match") == etag:
            return 304, "", b"", extra
        return 200, ctype, body, extra


def page(title: str, body: str, links: list[str] = (), extra_head: str = "") -> bytes:  # type: ignore[assignment]
    """A realistic page: header nav, cookie banner, sidebar, main content, footer."""
    nav = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    return f"""<!doctype html><html><head><title>{title}</title>{extra_head}
<script>var tracking = "SCRIPTTEXT";</script><style>.x{{color:red}}</style></head>
<body><header class="site-header"><div class="logo">ACME HEADERTEXT</div>
<nav><ul>{nav}</ul><span>NAVTEXT menu</span></nav></header>
<div id="cookie-banner" class="cookie-consent">COOKIETEXT We use cookies. <button>Accept</button></div>
<aside class="sidebar">SIDEBARTEXT related links</aside>
<main><h1>{title}</h1>{body}</main>
<footer>FOOTERTEXT Copyright ACME. <a href="/legal">Legal</a></footer></body></html>""".encode()


def sitemap(urls: list[str], compress: bool = False) -> bytes:
    """A urlset sitemap (gzipped when asked)."""
    entries = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
    xml = f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>'.encode()
    return gzip.compress(xml) if compress else xml


def sitemap_index(urls: list[str]) -> bytes:
    """A sitemap index."""
    entries = "".join(f"<sitemap><loc>{u}</loc></sitemap>" for u in urls)
    return f'<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</sitemapindex>'.encode()
