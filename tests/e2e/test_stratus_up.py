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

import httpx
import pytest

from stratus.access.auth import generate_key, hash_key
from stratus_tools.local.stack import free_port

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


def run_cli(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """A `stratus` command as a user's shell on a fresh machine runs it: no AWS credentials anywhere."""
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [str(STRATUS), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.timeout(600)
def test_stratus_up_serves_the_sample_docs_and_stops_on_ctrl_c(model_dir: Path, tmp_path: Path) -> None:
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
        # and the curl carries the local admin key that the state file holds for the CLI
        state = json.loads((ROOT / ".stratus" / "local.json").read_text())
        key_in_curl = f"-H 'x-api-key: {state['api_key']}'" in curl_line
        assert key_in_curl
        # and the console's sign-in link is printed, and its page is served
        console_line = next(line.strip() for line in lines if line.strip().startswith("Console: "))
        assert console_line == f"Console: http://127.0.0.1:{port}/ui/#key={state['api_key']}"
        assert httpx.get(f"http://127.0.0.1:{port}/ui/", timeout=30).status_code == 200
        url = f"http://127.0.0.1:{port}/v1/collections/docs/search"
        assert httpx.post(url, json={"query": "tests"}, timeout=30).status_code == 401

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

        # and, from a shell with no AWS credentials, `stratus ingest` indexes a folder into a new
        # collection and `stratus status` reports it
        folder = tmp_path / "notes"
        folder.mkdir()
        (folder / "otters.md").write_text("# Otters\n\nSea otters hold hands while they sleep.\n")
        (folder / "moles.md").write_text("# Moles\n\nStar-nosed moles eat faster than any mammal.\n")
        ingested = run_cli(["ingest", str(folder), "--collection", "notes"], tmp_path / "home")
        assert ingested.returncode == 0, ingested.stdout + ingested.stderr
        assert "2 document(s): 2 INDEXED" in ingested.stdout
        status = run_cli(["status", "--collection", "notes"], tmp_path / "home")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "otters.md" in status.stdout
        assert "2 document(s): 2 INDEXED" in status.stdout
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


@pytest.mark.timeout(300)
def test_stratus_up_registers_the_key_of_stratus_api_key(model_dir: Path) -> None:
    # given STRATUS_API_KEY set to a key of the fixed format
    port = free_port()
    key = generate_key()
    env = {
        **os.environ,
        "STRATUS_API_PORT": str(port),
        "STRATUS_API_KEY": key,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    process = subprocess.Popen(
        [str(STRATUS), "up", "--no-ingest"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # when it is ready
        lines = read_until(process, "Press Ctrl-C to stop", timeout_s=240)

        # then that key (not a new one) is the admin key it printed, stored and accepts
        state = json.loads((ROOT / ".stratus" / "local.json").read_text())
        registered = hash_key(state["api_key"]) == hash_key(key)
        assert registered
        printed = sum(key in line for line in lines)
        assert printed >= 2  # the "api key" line and the curl
        api = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{api}/v1/keys", headers={"x-api-key": key}, timeout=30).status_code == 200
        assert httpx.get(f"{api}/v1/keys", timeout=30).status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0
