"""scripts/image_report.py: sizes per installed distribution, from their RECORD files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_report", REPO_ROOT / "scripts" / "image_report.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["image_report"] = module
    spec.loader.exec_module(module)
    return module


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_sizes_are_summed_per_distribution(report: ModuleType, tmp_path: Path) -> None:
    # Given a --target folder with two distributions, a file no RECORD claims, and a model folder
    site, model = tmp_path / "site", tmp_path / "model"
    write(site / "big/__init__.py", 3 * 1024 * 1024)
    write(site / "big/core.so", 1024 * 1024)
    write(site / "small.py", 1024 * 1024)
    write(site / "stray.txt", 1024 * 1024)
    write(model / "model.onnx", 2 * 1024 * 1024)
    (site / "big-1.0.dist-info").mkdir()
    (site / "big-1.0.dist-info/RECORD").write_text(
        "big/__init__.py,sha256=x,1\nbig/core.so,,\nbig/missing.py,,\n"
    )
    (site / "small-2.0.dist-info").mkdir()
    (site / "small-2.0.dist-info/RECORD").write_text("small.py,,\n")
    # When the folder is summarised
    summary = report.summarise(site, model)
    # Then each distribution has its files' size, unclaimed files (RECORDs included) land in (other)
    packages = summary["packages_mb"]
    assert packages["big"] == 4.0
    assert packages["small"] == 1.0
    assert 1.0 <= packages["(other)"] < 1.01
    assert next(iter(packages)) == "big"
    # And the totals add the model folder
    assert summary["model_mb"] == 2.0
    assert summary["total_mb"] == pytest.approx(summary["packages_total_mb"] + 2.0)
