"""Resource budgets of every registered parser under adversarial input (issue 19).

Every parser registered with `stratus.ingest.parsing.register_parser` is fed every generic
hostile input below (a parser added later is covered by registering it), plus the inputs of its
own format. The bounds, stated in the test names:

- time (CPU time of the parsing thread): at most 5 s per MB of input, 10 s per MB for HTML and
  PDF (BeautifulSoup alone builds its tree at ~4 s per MB of tags on this shared machine; pypdf
  costs ~1.5 ms a page), and 1.5 s for any input under 300 KB; the quadratic scans these tests
  caught measured 40+ s per MB here, so the bound separates linear from not;
- memory: tracemalloc's peak growth at most 40 times the input, plus 16 MB; for HTML 150 times
  (BeautifulSoup's tree costs ~500 bytes a tag; the parser refuses more than MAX_HTML_TAGS tags,
  which bounds it at ~110 MB whatever the input).

Run with `-s` to see the measured worst case per parser (seconds per MB, peak MB).
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable

import pytest
from fakes.pdf import make_pdf

from stratus.errors import PermanentError
from stratus.ingest.parsing import PARSERS, parse_metadata_sidecar
from stratus.ingest.web import parse_url_manifest

MB = 1024 * 1024
SECONDS_PER_MB = 5.0
MIN_SECONDS = 1.5
SECONDS_PER_MB_BY_FORMAT = {"html": 10.0, "pdf": 10.0}
MEMORY_MULTIPLE = 40
MEMORY_MULTIPLE_BY_FORMAT = {"html": 150}
MEMORY_SLACK = 16 * MB

GENERIC: dict[str, bytes] = {
    "1 MB of spaces": b" " * MB,
    "1 MB of '#'": b"#" * MB,
    "1 MB of '['": b"[" * MB,
    "1 MB of '*'": b"*" * MB,
    "1 MB of backticks": b"`" * MB,
    "heading of 1 MB spaces then a letter": b"# a" + b" " * MB + b"b",
    "heading of 1 MB '['": b"# " + b"[" * MB,
    "heading of 1 MB '*a'": b"# " + b"*a" * (MB // 2),
    "heading of 1 MB backticks": b"# a " + b"`" * MB,
    "heading of 1 MB '](' pairs": b"# " + b"](" * (MB // 2),
    "1 MB single line of words": b"word " * (MB // 5),
    "10,000 headings": b"".join(b"#" * (1 + i % 6) + b" heading %d\n\ntext\n" % i for i in range(10_000)),
    "10,000 setext headings": b"".join(b"Heading %d\n---\n\n" % i for i in range(10_000)),
    "front matter of 1 MB spaces": b"---\ntitle: a" + b" " * MB + b"b\n---\nbody",
    "100,000 fence lines": b"```\n" * 100_000,
}
SPECIFIC: dict[str, dict[str, bytes]] = {
    "html": {
        "10,000 nested divs": b"<html><body>"
        + b"<div>" * 10_000
        + b"deep"
        + b"</div>" * 10_000
        + b"</body></html>",
        "10,000 nested articles": b"<html><body>" + b"<article>" * 10_000 + b"x" + b"</article>" * 10_000,
        "10,000 nested hidden spans": b"<body><p>x</p>"
        + b"<span hidden>" * 10_000
        + b"y"
        + b"</span>" * 10_000,
        "10,000 unclosed tags": b"<body>" + b"<b><i>" * 10_000 + b"text",
        "10,000 headings": b"<body>" + b"".join(b"<h2>h%d</h2><p>t</p>" % i for i in range(10_000)),
        "1 MB attribute": b'<body><p title="' + b"a" * MB + b'">x</p></body>',
        "1 MB of tags (refused: over MAX_HTML_TAGS)": b"<body>" + b"<b>x</b>" * (MB // 8),
        "199,000 tags": b"<body>" + b"<b>x</b>" * 99_500,
    },
    "pdf": {
        "3,000 empty pages": make_pdf([""] * 3_000),
        "2,000 pages of one line": make_pdf([f"line {i}" for i in range(2_000)]),
    },
}
# Parsers outside the registry that read untrusted bytes as well.
OTHER: dict[str, Callable[[bytes], object]] = {
    "metadata sidecar": parse_metadata_sidecar,
    "url manifest": lambda data: parse_url_manifest(data.decode("utf-8", "replace"), max_urls=1000),
}
OTHER_INPUTS: dict[str, bytes] = {
    "60 KB nested lists": b'{"metadataAttributes": {"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}",
    "60 KB of '{'": b"{" * 60_000,
    "100,000 refused lines": b"http://10.0.0.1/\n" * 100_000,
    "1 MB line": b"http://example.com/" + b"a" * MB,
}

MEASURED: dict[str, list[tuple[str, float, float]]] = {}


def cases() -> list[tuple[str, str, bytes]]:
    found: list[tuple[str, str, bytes]] = []
    for fmt in sorted(PARSERS):
        for name, data in {**GENERIC, **SPECIFIC.get(fmt, {})}.items():
            found.append((fmt, name, data))
    return found


def run(function: Callable[[], object]) -> None:
    with contextlib.suppress(PermanentError):  # (refusing with a reason is within budget)
        function()


def measure(
    label: str,
    name: str,
    data: bytes,
    function: Callable[[], object],
    multiple: int = MEMORY_MULTIPLE,
    seconds_per_mb: float = SECONDS_PER_MB,
) -> None:
    # CPU time of this thread: wall time on a machine shared by several test runs measures the load.
    # The objects the rest of the test session left on the heap are frozen first: otherwise each of
    # the cyclic collector's full passes, triggered by the parser's allocations, walks them all, and
    # the parser is billed for the session's heap (4-5x on a full run), which no function has.
    gc.collect()
    gc.freeze()
    try:
        started = time.thread_time()
        run(function)
        elapsed = time.thread_time() - started
    finally:
        gc.unfreeze()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run(function)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    MEASURED.setdefault(label, []).append((name, elapsed / max(len(data) / MB, 1e-9), peak / MB))
    time_bound = max(MIN_SECONDS, seconds_per_mb * len(data) / MB)
    assert elapsed <= time_bound, f"{label} on {name}: {elapsed:.2f}s > {time_bound:.2f}s"
    memory_bound = multiple * len(data) + MEMORY_SLACK
    assert peak <= memory_bound, f"{label} on {name}: peak {peak / MB:.1f} MB > {memory_bound / MB:.1f} MB"


@pytest.mark.parametrize(("fmt", "name", "data"), cases(), ids=[f"{f}:{n}" for f, n, _ in cases()])
def test_every_registered_parser_stays_within_5s_per_mb_10_for_html_pdf_and_40x_input_150x_for_html_plus_16mb(
    fmt: str, name: str, data: bytes
) -> None:
    # given a registered parser and an adversarial input
    parser = PARSERS[fmt]  # type: ignore[index]
    # when it parses the input, then time and peak memory growth stay within the stated bounds
    multiple = MEMORY_MULTIPLE_BY_FORMAT.get(fmt, MEMORY_MULTIPLE)
    per_mb = SECONDS_PER_MB_BY_FORMAT.get(fmt, SECONDS_PER_MB)
    measure(fmt, name, data, lambda: parser(data, f"hostile.{fmt}"), multiple, per_mb)


@pytest.mark.parametrize(("label", "name"), [(k, n) for k in OTHER for n in OTHER_INPUTS])
def test_sidecar_and_manifest_readers_stay_within_5s_per_mb_and_40x_input_plus_16mb_memory(
    label: str, name: str
) -> None:
    # given a reader of untrusted bytes outside the registry, and an adversarial input
    data = OTHER_INPUTS[name]
    # then it refuses or reads it within the same bounds
    measure(label, name, data, lambda: OTHER[label](data))


def test_zz_report_the_worst_case_per_parser() -> None:
    # (prints the measured worst case of each parser; run with -s)
    assert MEASURED, "run the whole module"
    for label, rows in sorted(MEASURED.items()):
        slowest = max(rows, key=lambda r: r[1])
        largest = max(rows, key=lambda r: r[2])
        sys.stdout.write(
            f"\nparser budget {label}: worst {slowest[1]:.3f} s/MB ({slowest[0]}), "
            f"peak {largest[2]:.1f} MB ({largest[0]})\n"
        )
