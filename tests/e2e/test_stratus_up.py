"""`stratus up` as a user runs it: ready, the printed curl answers from the sample docs, Ctrl-C stops it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stratus.local.stack import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STRATUS = Path(sys.executable).parent / "stratus"


def read_until(process: subprocess.Popen[str], marker: str, timeout_s: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} not seen; output so far:\n" + "\n".join(lines))


@pytest.mark.timeout(600)
def test_stratus_up_serves_the_sample_docs_and_stops_on_ctrl_c(model_dir: Path) -> None:
    # given `stratus up` started on a free port, as `make up` does
    port = free_port()
    env = {**os.environ, "STRATUS_API_PORT": str(port), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    process = subprocess.Popen(
        [str(STRATUS), "up"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        # when it reports ready
        lines = read_until(process, "Press Ctrl-C to stop", timeout_s=480)
        assert any("Stratus is ready" in line for line in lines)
        assert not any("did not index" in line for line in lines), "\n".join(lines)
        curl_line = next(line.strip() for line in lines if line.strip().startswith("curl "))
        assert f"http://127.0.0.1:{port}/v1/collections/docs/search" in curl_line

        # then the printed curl, run as printed, returns hits from the sample docs that answer the query
        command = shlex.split(curl_line)
        if shutil.which("curl") is None:
            pytest.fail("curl is needed to run the printed command")
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        hits = json.loads(result.stdout)["hits"]
        assert hits, result.stdout
        sources = {hit["source"] for hit in hits}
        assert sources <= {"README.md"} | {
            p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")
        }
        assert any("make test" in hit["text"] for hit in hits)
    finally:
        # and Ctrl-C stops it cleanly
        process.send_signal(signal.SIGINT)
        try:
            tail, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, tail
    assert "stopped." in tail
    assert not (ROOT / ".stratus" / "local.json").exists()
