#!/usr/bin/env python3
"""What the Lambda image (functions/embed/Dockerfile) contains, and how big each part is, without Docker.

Installs the image's pinned requirements (requirements/runtime.lock, as the Dockerfile does) with
`pip install --target` into a temporary folder for the image's platform (manylinux x86_64 up to
glibc 2.28, CPython 3.12), then reports the size of each installed distribution, their total, and the
model folder the image bakes in. Uses pip's cache, so a second run downloads nothing.

    .venv/bin/python scripts/image_report.py [--fetch] [--json bench-out/image.json] [--keep DIR]

--fetch reports the fetch image instead (the Dockerfile's `fetch` target: requirements/ocr.lock too).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCK = REPO_ROOT / "requirements" / "runtime.lock"
OCR_LOCK = REPO_ROOT / "requirements" / "ocr.lock"  # what the Dockerfile's `fetch` target adds
MODEL_DIR = REPO_ROOT / "layers" / "model" / "all-MiniLM-L6-v2"
PYTHON_VERSION = "3.12"  # the image's base, public.ecr.aws/lambda/python:3.12 (glibc 2.34)


def folder_bytes(path: Path) -> int:
    """Bytes of every regular file under `path` (links not followed)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def distribution_sizes(site: Path) -> dict[str, int]:
    """Installed bytes per distribution, from each *.dist-info/RECORD; unclaimed files under '(other)'."""
    sizes: dict[str, int] = {}
    claimed: set[Path] = set()
    for record in sorted(site.glob("*.dist-info/RECORD")):
        name = record.parent.name.split("-")[0]
        total = 0
        for line in record.read_text().splitlines():
            relative = line.split(",")[0]
            path = (site / relative).resolve()
            if relative and path.is_file() and path not in claimed:
                claimed.add(path)
                total += path.stat().st_size
        sizes[name] = total
    other = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and p.resolve() not in claimed)
    if other:
        sizes["(other)"] = other
    return dict(sorted(sizes.items(), key=lambda item: item[1], reverse=True))


def summarise(site: Path, model_dir: Path) -> dict[str, Any]:
    """Per-package MB, their total, and the model folder's MB."""
    sizes = distribution_sizes(site)
    mb = 1024 * 1024
    packages_mb = {name: round(size / mb, 2) for name, size in sizes.items()}
    model_mb = round(folder_bytes(model_dir) / mb, 2) if model_dir.is_dir() else 0.0
    total_mb = round(sum(sizes.values()) / mb, 2)
    return {
        "packages_mb": packages_mb,
        "packages_total_mb": total_mb,
        "model_mb": model_mb,
        "total_mb": round(total_mb + model_mb, 2),
    }


def install(target: Path, locks: list[Path]) -> None:
    """pip install the locks into `target` for the Lambda platform (wheels only, no dependency resolution)."""
    requirements = [arg for lock in locks for arg in ("-r", str(lock))]
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--no-compile", "--only-binary=:all:",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
            "--implementation", "cp", "--python-version", PYTHON_VERSION,
            "--target", str(target), *requirements,
        ],
        check=True,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Install, measure, print and optionally write the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--keep", type=Path, help="install into this folder and keep it")
    parser.add_argument("--fetch", action="store_true", help="the fetch image: the runtime lock plus OCR")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stratus-image-") as scratch:
        site = args.keep or Path(scratch) / "site"
        install(site, [LOCK, OCR_LOCK] if args.fetch else [LOCK])
        report = summarise(site, MODEL_DIR)
    for name, size in report["packages_mb"].items():
        print(f"{size:9.2f} MB  {name}")
    print(f"{report['packages_total_mb']:9.2f} MB  packages")
    print(f"{report['model_mb']:9.2f} MB  model ({MODEL_DIR.name})")
    print(f"{report['total_mb']:9.2f} MB  total (plus the base image)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
