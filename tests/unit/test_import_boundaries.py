"""Packaging facts the template relies on: the fetch zip has no heavy packages; imports stay cheap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["numpy", "pyarrow", "lancedb", "onnxruntime", "tiktoken", "huggingface_hub"]


def imported_after(module: str) -> set[str]:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_fetch_handler_imports_nothing_the_fetch_layer_lacks() -> None:
    # given the fetch function, which ships as a zip with a small layer
    # when its handler module is imported
    modules = imported_after("functions.fetch.app")

    # then no heavy package was imported
    assert not {m.split(".")[0] for m in modules} & set(HEAVY)


@pytest.mark.parametrize("module", ["functions.embed.app", "functions.index.app", "functions.api.app"])
def test_image_handlers_load_heavy_packages_lazily(module: str) -> None:
    # given a handler of an image function
    # when its module is imported (the cold start's import phase)
    modules = imported_after(module)

    # then lancedb and onnxruntime wait for first use
    assert not {m.split(".")[0] for m in modules} & {"lancedb", "onnxruntime", "tiktoken"}
