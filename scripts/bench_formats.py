"""Parse time of each new format (issue 15) on generated files: seconds per file, per page or sheet, per MB.

    .venv/bin/python scripts/bench_formats.py [--repeat 3]

Files are built with the libraries that write each format (tests/fakes/formats.py); the first
parse of each format also pays its library's import, reported apart as "first".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.formats import (
    make_csv,
    make_docx,
    make_eml,
    make_epub,
    make_png,
    make_pptx,
    make_scanned_pdf,
    make_xlsx,
)

from stratus.ingest.parsing import parse_document

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


def files() -> dict[str, tuple[bytes, int, str]]:
    """name -> (bytes, units, unit name)."""
    rows: list[list[object]] = [["id", "name", "note"]]
    rows += [[i, f"name {i}", SENTENCE] for i in range(5_000)]
    return {
        "docx": (make_docx("Heading", " ".join([SENTENCE] * 2000), table=[["a", "b"], ["1", "2"]]), 1, "doc"),
        "pptx": (make_pptx([(f"Slide {i}", SENTENCE * 3, SENTENCE) for i in range(50)]), 50, "slide"),
        "xlsx": (make_xlsx({"Data": rows}, write_only=True), 5_000, "row"),
        "csv": (make_csv([[str(c) for c in r] for r in rows]), 5_000, "row"),
        "epub": (make_epub("Book", [(f"Chapter {i}", SENTENCE * 40) for i in range(30)]), 30, "chapter"),
        "eml": (make_eml("Subject", SENTENCE * 200, [("a.csv", "text/csv", make_csv(rows[:200]))]), 1, "msg"),
        "png": (make_png([SENTENCE[:40], SENTENCE[40:]]), 1, "image"),
        "pdf-scan": (make_scanned_pdf([[SENTENCE[:40]], [SENTENCE[40:]]]), 2, "page"),
    }


def main() -> None:
    """Print one line per format."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ext = {"png": ".png", "pdf-scan": ".pdf"}
    print(f"{'format':9} {'size MB':>8} {'first s':>8} {'best s':>8} {'ms/unit':>9} {'s/MB':>7}")
    for fmt, (data, units, unit) in files().items():
        name = "bench" + ext.get(fmt, f".{fmt}")
        started = time.perf_counter()
        parse_document(data, name)
        first = time.perf_counter() - started
        best = first
        for _ in range(args.repeat):
            started = time.perf_counter()
            parse_document(data, name)
            best = min(best, time.perf_counter() - started)
        mb = len(data) / 1024 / 1024
        per_unit = f"{best / units * 1000:7.2f}/{unit}"
        print(f"{fmt:9} {mb:8.2f} {first:8.2f} {best:8.3f} {per_unit} {best / mb:7.2f}")


if __name__ == "__main__":
    main()
