"""Fails the test session when a test secret shows up in a log record or in a test's captured output.

Every log record of the session (root logger; Stratus' Powertools records formatted as Powertools
writes them, appended keys included) and every test's captured stdout, stderr and log text is
searched for the fake provider keys the suite uses and for anything shaped like a Stratus API key.
At the end the offending lines are printed and the exit status is set to failed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

# The fake provider keys the chat tests hand to Stratus (tests/integration/test_chat_*.py,
# tests/unit/test_chat*.py): none may ever be logged or echoed.
TEST_SECRETS: tuple[str, ...] = (
    "sk-test-cloud-key-0123456789",
    "sk-proj-SUPERSECRET-0123456789abcdef",
    "sk-proj-SECRET-api-key-7f3a9c2e1b",
    "sk-live-0123456789abcdefSECRET",
    "sk-from-ssm",
    "sk-from-secrets-manager",
)
# A Stratus API key: strk_<12 hex key id>_<secret>.
API_KEY_PATTERN = re.compile(r"strk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")
MAX_REPORTED = 20


def find_secrets(
    text: str, secrets: Iterable[str] = TEST_SECRETS, pattern: re.Pattern[str] = API_KEY_PATTERN
) -> list[str]:
    """The registered secrets and API-key-shaped strings that occur in `text`."""
    found = [secret for secret in secrets if secret in text]
    found.extend(match.group(0) for match in pattern.finditer(text))
    return found


def _mask(secret: str) -> str:
    return f"{secret[:6]}…({len(secret)} chars)"


@dataclass
class Leak:
    """Where a secret was seen, and the line it was in (the secret itself masked)."""

    where: str
    line: str


@dataclass
class SecretsScan:
    """Collects leaks from log records and captured text; reports them at session end."""

    secrets: tuple[str, ...] = TEST_SECRETS
    pattern: re.Pattern[str] = API_KEY_PATTERN
    leaks: list[Leak] = field(default_factory=list)

    def scan(self, where: str, text: str) -> None:
        """Record a leak for each line of `text` holding a secret."""
        if not text:
            return
        for line in text.splitlines():
            found = find_secrets(line, self.secrets, self.pattern)
            if found:
                for secret in found:
                    line = line.replace(secret, _mask(secret))
                leak = Leak(where, line[:500])
                if leak not in self.leaks[-MAX_REPORTED:]:
                    self.leaks.append(leak)

    def handler(self) -> logging.Handler:
        """A logging handler that scans every record it sees."""
        return _ScanHandler(self)

    def finish(self, session: Any) -> None:
        """Mark the session failed when anything leaked."""
        if self.leaks and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def summary(self) -> list[str]:
        """The report lines for the terminal."""
        if not self.leaks:
            return []
        lines = [f"{len(self.leaks)} line(s) carried a test secret or a Stratus API key:"]
        lines.extend(f"  [{leak.where}] {leak.line}" for leak in self.leaks[:MAX_REPORTED])
        if len(self.leaks) > MAX_REPORTED:
            lines.append(f"  ... and {len(self.leaks) - MAX_REPORTED} more")
        return lines


class _ScanHandler(logging.Handler):
    def __init__(self, scan: SecretsScan) -> None:
        super().__init__(level=logging.NOTSET)
        self.scan = scan
        self._plain = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def filter(self, record: logging.LogRecord) -> bool:
        # Powertools puts a SuppressFilter for its own service on every root handler: see them all.
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            texts = [self._plain.format(record), repr(record.__dict__.get("args"))]
            texts.extend(repr(v) for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS)
            if record.name == "stratus" or record.name.startswith("stratus."):
                texts.append(_powertools_format(record))
            self.scan.scan(f"log {record.name}", "\n".join(texts))
        except Exception:  # a scanner must never break the code under test
            self.handleError(record)


_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _powertools_format(record: logging.LogRecord) -> str:
    """The record as Stratus' logger writes it (its appended and context keys included)."""
    from stratus.observability import logger

    return str(logger.registered_formatter.format(record))


_SCAN_KEY = pytest.StashKey[SecretsScan]()
_HANDLER_KEY = pytest.StashKey[logging.Handler]()


def pytest_configure(config: pytest.Config) -> None:
    """Start scanning every log record of the session."""
    scan = SecretsScan()
    handler = scan.handler()
    logging.getLogger().addHandler(handler)
    config.stash[_SCAN_KEY] = scan
    config.stash[_HANDLER_KEY] = handler


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop scanning."""
    handler = config.stash.get(_HANDLER_KEY, None)
    if handler is not None:
        logging.getLogger().removeHandler(handler)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Scan what the test printed and logged (the Powertools logger writes JSON lines to stdout)."""
    scan = _scan_of(report)
    if scan is None:
        return
    for name, text in report.sections:
        scan.scan(f"{report.nodeid} {name}", text)


def _scan_of(report: pytest.TestReport) -> SecretsScan | None:
    config = getattr(report, "config", None) or _CURRENT.get("config")
    return None if config is None else config.stash.get(_SCAN_KEY, None)


_CURRENT: dict[str, pytest.Config] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Remember the config for the report hook (reports do not carry it)."""
    _CURRENT["config"] = session.config


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run when anything leaked."""
    scan = session.config.stash.get(_SCAN_KEY, None)
    if scan is not None:
        scan.finish(session)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print the offending lines."""
    scan = config.stash.get(_SCAN_KEY, None)
    lines = scan.summary() if scan is not None else []
    if lines:
        terminalreporter.section("secrets in logs", red=True)
        for line in lines:
            terminalreporter.line(line)
