"""robots.txt with a maintained parser (protego): allowed paths, crawl-delay and Sitemap lines."""

from __future__ import annotations

from dataclasses import dataclass

from protego import Protego

# RFC 9309: crawlers must parse at least 500 KiB; more than that is not read.
MAX_ROBOTS_BYTES = 512 * 1024


@dataclass
class RobotsPolicy:
    """One host's rules for our user agent; `text=None` with allow_all False means disallow everything."""

    text: str | None
    allow_all: bool = False
    user_agent: str = "Stratus"

    def __post_init__(self) -> None:
        self._parser = Protego.parse(self.text) if self.text else None

    def allows(self, url: str) -> bool:
        """Whether robots.txt lets our user agent fetch `url`."""
        if self._parser is None:
            return self.allow_all
        return bool(self._parser.can_fetch(url, self.user_agent))

    def crawl_delay(self) -> float:
        """Crawl-delay for our user agent in seconds (0 when none)."""
        if self._parser is None:
            return 0.0
        delay = self._parser.crawl_delay(self.user_agent)
        return float(delay) if delay else 0.0

    def sitemaps(self) -> list[str]:
        """The Sitemap: lines."""
        return list(self._parser.sitemaps) if self._parser is not None else []


def product_token(user_agent: str) -> str:
    """The product token robots.txt groups match (RFC 9309): 'Stratus' of 'Stratus/0.1 (+...)'."""
    return user_agent.split("/", 1)[0].split(" ", 1)[0] or "*"
