"""`sam build` of the zip part (FetchFunction + FetchDepsLayer) runs here, without Docker."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from stratus.local.cfn_yaml import load_template

REPO_ROOT = Path(__file__).resolve().parents[2]
SAM = REPO_ROOT / ".venv-sam" / "bin" / "sam"
PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def _runtime_python(runtime: str) -> str | None:
    """An interpreter that runs and is of the template's runtime (on PATH or pyenv's), else None."""
    version = runtime.removeprefix("python")
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    candidates = [
        shutil.which(f"python{version}"),
        *sorted(glob.glob(str(PYENV_VERSIONS / f"{version}*/bin/python{version}"))),
    ]
    for candidate in filter(None, candidates):
        # a pyenv shim is on PATH even where it names a version that is not selected
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.returncode == 0:
            return candidate
    return None


def test_sam_build_of_the_zip_function_and_layer(tmp_path: Path) -> None:
    # Given the SAM CLI of `make sam-validate` and an interpreter of the fetch function's runtime
    assert SAM.is_file(), "run `make sam-validate` first: it installs aws-sam-cli in .venv-sam"
    runtime = load_template(REPO_ROOT / "template.yaml")["Resources"]["FetchFunction"]["Properties"][
        "Runtime"
    ]
    python = _runtime_python(runtime)
    assert python, f"sam build needs a python{runtime.removeprefix('python')} (the template's runtime)"
    env = {
        **os.environ,
        "SAM": str(SAM),
        "PY": python,
        "BUILD_DIR": str(tmp_path / "build"),
        "SAM_CLI_TELEMETRY": "0",
    }
    # When the build script runs (sam build, then its size and import checks)
    result = subprocess.run(
        ["bash", "scripts/sam_build_zip.sh", "--cache-dir", str(tmp_path / "cache")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Then it succeeds, and its checks ran: size under the limit, handler imports without heavy packages
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Build Succeeded" in result.stdout
    assert "(Lambda limit 250 MB)" in result.stdout
    assert "fetch handler imports in" in result.stdout
    # And the artifacts hold the handler, the stratus package and the tokenizer where Lambda looks
    build = tmp_path / "build"
    assert (build / "FetchFunction" / "app.py").is_file()
    assert (build / "FetchDepsLayer" / "python" / "stratus" / "pipeline" / "fetch.py").is_file()
    assert (build / "FetchDepsLayer" / "model" / "tokenizer.json").is_file()
    built = load_template(build / "template.yaml")["Resources"]
    assert built["FetchFunction"]["Properties"]["Runtime"] == runtime
