"""Packaging facts the template relies on: the fetch image holds what fetch loads; imports stay cheap."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
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
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["numpy", "pyarrow", "lancedb", "onnxruntime", "tiktoken", "huggingface_hub"]


def imported_after(module: str) -> set[str]:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_fetch_handler_loads_heavy_packages_lazily() -> None:
    # given the fetch function (an image since OCR; its cold start counts on every new container)
    # when its handler module is imported
    modules = imported_after("functions.fetch.app")

    # then no heavy package was imported: each waits for the first document that needs it
    assert not {m.split(".")[0] for m in modules} & set(HEAVY)


# What pypdf imports when present and does without (embedded font metrics); the image has none.
OPTIONAL_EXTRAS = {"fontTools"}


def _lock_names(*locks: str) -> set[str]:
    names: set[str] = set()
    for lock in locks:
        for line in (ROOT / "requirements" / lock).read_text().splitlines():
            if "==" in line and not line.startswith((" ", "#")):
                names.add(canonicalize_name(line.split("==")[0]))
    return names


def test_every_package_the_fetch_stage_loads_for_any_format_is_in_the_fetch_image(tmp_path: Path) -> None:
    # given one file of every format the fetch stage reads, OCR'd ones included (made here, so that
    # the libraries that write them do not count)
    files = {
        "a.docx": make_docx("Heading", "Body text of the file."),
        "a.pptx": make_pptx([("Title", "Body", "Notes")]),
        "a.xlsx": make_xlsx({"Sheet": [["name", "value"], ["a", 1]]}),
        "a.csv": make_csv([["name", "value"], ["a", "1"]]),
        "a.epub": make_epub("Book", [("Chapter", "Text of the chapter.")]),
        "a.eml": make_eml("Subject", "Body of the message."),
        "a.png": make_png(["Pixels become text"]),
        "a.pdf": make_scanned_pdf([["A scanned page"]]),
        "a.html": b"<html><body><h1>Title</h1><p>Text.</p></body></html>",
        "a.md": b"# Title\n\nText.\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    # when a fresh process without pypdf's optional font extra (the image lacks it) imports the fetch
    # handler and parses and chunks each of them
    code = (
        "import json, sys, pathlib\n"
        "at_start = set(sys.modules)\n"
        f"for extra in {sorted(OPTIONAL_EXTRAS)!r}: sys.modules[extra] = None\n"
        "import functions.fetch.app\n"
        "from stratus.ingest.parsing import parse_document\n"
        "from stratus.ingest.chunking import chunk_document\n"
        "from stratus.services import chunk_tokenizer\n"
        f"for path in sorted(pathlib.Path({str(tmp_path)!r}).iterdir()):\n"
        "    doc = parse_document(path.read_bytes(), path.name)\n"
        "    assert chunk_document('d', doc, chunk_tokenizer(), 200, 20), path.name\n"
        "new = [m for m, module in sys.modules.items() if module is not None and m not in at_start]\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in new})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.splitlines()[-1])

    # then every package it loaded comes from a distribution the Dockerfile's fetch target installs
    owners = packages_distributions()
    pinned = _lock_names("runtime.lock", "ocr.lock")
    third_party = {m: {canonicalize_name(d) for d in owners[m]} for m in loaded if m in owners}
    assert {"rapidocr_onnxruntime", "docx", "cv2"} <= set(third_party)  # the probe is not vacuous
    missing = {m: d for m, d in third_party.items() if not d & (pinned | {"stratus"})}
    assert missing == {}


@pytest.mark.parametrize("module", ["functions.embed.app", "functions.index.app", "functions.api.app"])
def test_image_handlers_load_heavy_packages_lazily(module: str) -> None:
    # given a handler of an image function
    # when its module is imported (the cold start's import phase)
    modules = imported_after(module)

    # then lancedb and onnxruntime wait for first use
    assert not {m.split(".")[0] for m in modules} & {"lancedb", "onnxruntime", "tiktoken"}


def test_the_images_install_the_runtime_package_and_never_the_tooling() -> None:
    # given the Lambda and GPU Dockerfiles, their build-context filter and the runtime package's metadata
    dockerfiles = [ROOT / "functions/embed/Dockerfile", ROOT / "functions/embed/Dockerfile.gpu"]
    allowed = [line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    runtime = (ROOT / "shared/pyproject.toml").read_text()

    # then no image copies the tooling, the build context lets none of it in, and the runtime
    # package installs only `stratus`, with no `stratus` command (that is the tooling's)
    for dockerfile in dockerfiles:
        copies = [line for line in dockerfile.read_text().splitlines() if line.startswith("COPY ")]
        assert any("shared/stratus" in line for line in copies)
        assert not [line for line in copies if "tools" in line.split()[1]]
    assert not [path for path in allowed if path.startswith("tools")]
    assert 'include = ["stratus", "stratus.*"]' in runtime
    assert "[project.scripts]" not in runtime
    assert sorted(p.parent.name for p in (ROOT / "shared").glob("*/__init__.py")) == ["stratus"]


def test_importing_every_runtime_module_loads_no_tooling() -> None:
    # given every module of the runtime package and every handler
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import stratus, functions\n"
        "for package in (stratus, functions):\n"
        "    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    # when a fresh process imports them all
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=300
    )
    modules = {m.split(".")[0] for m in json.loads(result.stdout.splitlines()[-1])}

    # then neither the tooling nor what only the tooling needs was loaded (rich is left out of the
    # check: httpx imports its optional command line, and with it rich, wherever rich is installed)
    assert not modules & {"stratus_tools", "moto", "yaml", "waitress", "matplotlib"}
