#!/usr/bin/env python3
"""A fingerprint of the chunk ids and texts Stratus cuts from a corpus and docs/: compare two checkouts.

Parses and chunks every abstract of a BEIR corpus (as `# title` + text, one Markdown document each)
and every docs/*.md file, with the settings' bounds and chunk sizes, in token and heading mode, and
prints per mode the number of chunks and a hash of every (chunk_id, text). A refactor that keeps
vectors reusable keeps the hashes: run it before and after (for example in a `git worktree`).

    .venv/bin/python scripts/chunk_fingerprint.py ../shared/eval/scifact/corpus.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def documents(corpus: Path, docs: Path) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every corpus abstract and docs/*.md file, in a fixed order."""
    found = []
    with corpus.open() as lines:
        for line in lines:
            record = json.loads(line)
            found.append((f"{record['_id']}.md", f"# {record['title']}\n\n{record['text']}".encode()))
    found += [(str(p.relative_to(docs.parent)), p.read_bytes()) for p in sorted(docs.glob("*.md"))]
    return found


def main(argv: list[str] | None = None) -> int:
    """Print `mode documents chunks hash` for token and heading chunking."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", type=Path, help="a BEIR corpus.jsonl")
    parser.add_argument("--docs", type=Path, default=REPO_ROOT / "docs", help="a folder of Markdown files")
    args = parser.parse_args(argv)

    from stratus import services
    from stratus.ingest.chunking import chunk_document
    from stratus.ingest.parsing import bound_document, parse_document
    from stratus.models import make_doc_id
    from stratus.settings import get_settings

    settings = get_settings()
    tokenizer = services.chunk_tokenizer()
    files = documents(args.corpus, args.docs)
    for mode, size in (("token", settings.chunk_tokens), ("heading", settings.heading_chunk_tokens)):
        digest, count = hashlib.sha256(), 0
        for name, data in files:
            parsed = bound_document(
                parse_document(data, name),
                max_title_chars=settings.max_title_chars,
                max_section_chars=settings.max_section_chars,
            )
            doc_id = make_doc_id("fingerprint", name)
            for chunk in chunk_document(
                doc_id, parsed, tokenizer, size, settings.chunk_overlap_tokens, mode=mode
            ):
                digest.update(f"{chunk.chunk_id}|{chunk.text}\n".encode())
                count += 1
        print(f"{mode:8} {len(files)} documents {count} chunks {digest.hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
