#!/usr/bin/env python3
"""Would markdown-it-py read Markdown structure better than our linear scanner? Measure, don't guess.

Builds a Markdown parser that takes its headings from markdown-it-py's CommonMark block tokens (the
body lines kept as they are, headings cleaned as ours are), then reports:

1. on a BEIR corpus (each abstract as `# title` + text), docs/ and every .md under the given folders:
   how many documents get a different title, heading path or section text than ours (any difference
   changes chunk ids, and so the vectors a re-index could reuse);
2. on the parser budget harness's hostile inputs: CPU seconds of each parser (median of 3).

    .venv/bin/python scripts/markdown_it_compare.py ../shared/eval/scifact/corpus.jsonl docs tests ../shared

markdown-it-py is a dev dependency only; the runtime does not ship it (issue 13's decision).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratus.models import ParsedDocument

REPO_ROOT = Path(__file__).resolve().parents[1]


def markdown_it_parser() -> Callable[[bytes, str], ParsedDocument]:
    """parse(data, filename) -> ParsedDocument, with headings from markdown-it-py's block tokens."""
    from markdown_it import MarkdownIt

    from stratus.ingest import parsing
    from stratus.models import ParsedDocument

    md = MarkdownIt("commonmark")
    md.disable(["inline", "text_join"], ignoreInvalid=True)  # block structure only

    def parse(data: bytes, filename: str) -> ParsedDocument:
        text = parsing.decode_text(data).replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
        front_title = ""
        match = parsing._FRONT_MATTER_RE.match(text)
        if match:
            front_title = parsing._front_matter_title(match.group(1) or "")
            text = text[match.end() :]
        tokens = md.parse(text)
        headings = {
            token.map[0]: (int(token.tag[1]), token.map[1], tokens[i + 1].content)
            for i, token in enumerate(tokens)
            if token.type == "heading_open" and token.level == 0 and token.map
        }
        lines, builder, title, i = text.split("\n"), parsing.SectionBuilder(), "", 0
        while i < len(lines):
            if i in headings:
                level, end, raw = headings[i]
                heading = parsing._clean_heading(raw)
                if level == 1 and not title and heading:
                    title = heading
                builder.heading(level, heading)
                i = end
                continue
            builder.add(lines[i])
            i += 1
        return ParsedDocument(
            title=title or front_title or parsing.file_stem(filename), sections=builder.finish()
        )

    return parse


def structure(parsed: ParsedDocument) -> tuple[str, list[tuple[Any, str]]]:
    """What chunk ids depend on: the title, and each section's heading path and text."""
    return parsed.title, [(tuple(s.heading_path), s.text) for s in parsed.sections]


def main(argv: list[str] | None = None) -> int:
    """Print the structure differences and the hostile-input timings."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", type=Path, help="a BEIR corpus.jsonl")
    parser.add_argument("folders", type=Path, nargs="*", help="folders whose .md files are compared too")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from unit.test_parser_budgets import GENERIC

    from stratus.ingest.parsing import _parse_markdown

    ours, theirs = _parse_markdown, markdown_it_parser()
    files: list[tuple[str, bytes]] = []
    with args.corpus.open() as lines:
        for line in lines:
            record = json.loads(line)
            files.append((f"{record['_id']}.md", f"# {record['title']}\n\n{record['text']}".encode()))
    for folder in args.folders:
        files += [(str(p), p.read_bytes()) for p in sorted(folder.glob("**/*.md"))]
    differ = [name for name, data in files if structure(ours(data, name)) != structure(theirs(data, name))]
    print(f"{len(files)} documents; {len(differ)} with another title, heading path or text: {differ[:10]}")

    hostile = dict(GENERIC)
    hostile["open front matter of 60,000 'title:' lines"] = b"---\n" + b"title: x\n" * 60_000
    print(f"{'hostile input':45s} {'MB':>5s} {'ours s':>8s} {'markdown-it s':>14s}")
    for name, data in hostile.items():
        medians = []
        for parse in (ours, theirs):
            times = []
            for _ in range(3):
                started = time.process_time()
                parse(data, "a.md")
                times.append(time.process_time() - started)
            medians.append(statistics.median(times))
        print(f"{name:45s} {len(data) / 2**20:5.2f} {medians[0]:8.3f} {medians[1]:14.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
