"""docs/development.md's package map names every module of the runtime and the tooling."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "Runtime: `shared/stratus/`": ROOT / "shared" / "stratus",
    "Tooling: `tools/stratus_tools/`": ROOT / "tools" / "stratus_tools",
}


def mapped_modules(section: str) -> set[str]:
    """Module paths (and globs) a section names; after `folder/x.py`, a `y.py` on its row is folder/y.py."""
    names: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        folder = ""
        for token in re.findall(r"`([^`]+)`", row):
            path = PurePosixPath(token)
            if token.endswith("/"):
                folder = token
            elif "/" in token and token.endswith(".py"):
                folder = f"{path.parent}/"
                names.add(token)
            elif token.endswith(".py"):
                names.add(folder + token)
    return names


def test_the_package_map_lists_every_module_of_both_packages() -> None:
    # given the development guide's package map
    text = (ROOT / "docs" / "development.md").read_text()

    for heading, package in PACKAGES.items():
        section = text.split(f"### {heading}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        names = mapped_modules(section)
        # when every module of the package is looked up in its section
        modules = sorted(
            p.relative_to(package).as_posix() for p in package.rglob("*.py") if p.name != "__init__.py"
        )
        missing = [m for m in modules if not any(fnmatch.fnmatch(m, name) for name in names)]

        # then none is missing, and the map names no module that does not exist
        assert missing == [], f"{heading}: add these to docs/development.md: {missing}"
        stale = [n for n in names if not any(fnmatch.fnmatch(m, n) for m in modules)]
        assert stale == [], f"{heading}: the map names modules that do not exist: {stale}"
