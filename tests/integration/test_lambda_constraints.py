"""Each handler serves its first event under Lambda's constraints (issue 20, Build 3).

Every handler runs in its own process, as Lambda runs it: the code root is a read-only copy of
functions/ and the stratus package, the process is an unprivileged user (nobody) when the tests run as
root, HOME=/nonexistent, the environment is the template's (globals and the function's own, resolved
to the emulator), and /tmp is the only writable place. After each handler the test lists what the
process wrote (files of its user under /tmp, /var/tmp and /dev/shm) and its peak memory, and checks
both against the template: everything under /tmp, at most TMP_BUDGET_MB, peak RSS under MemorySize.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stratus import services
from stratus.models import Chunk, ChunkBatch, DocumentStatus, StageMessage, normalise_version
from stratus.pipeline.common import dump_chunk_batch
from stratus.settings import get_settings
from stratus_tools.local.cfn_yaml import load_template
from stratus_tools.local.stack import LocalStack, emulator_credentials

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
NOBODY = 65534
# What one first invocation may leave in /tmp (the default EphemeralStorage is 512 MB).
TMP_BUDGET_MB = 64
WRITABLE_ELSEWHERE = ("/var/tmp", "/dev/shm")
GUIDE = (
    b"# Getting started\n\n## Running the tests\n\nRun make test: it sets up the virtual environment, "
    b"builds the model and runs pytest.\n\n## Deploying\n\nsam build and sam deploy put Stratus on AWS.\n"
)
RUNNER = """
import importlib, json, resource, site, sys, time, uuid
site.addsitedir(sys.argv[6])  # the dependencies (the image's site-packages, the zip's layer)
event = json.load(open(sys.argv[2]))
class Context:
    function_name = sys.argv[3]
    memory_limit_in_mb = int(sys.argv[4])
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + sys.argv[3]
    aws_request_id = str(uuid.uuid4())
    function_version = "$LATEST"
    log_group_name = "/aws/lambda/" + sys.argv[3]
    log_stream_name = "constraints"
    _deadline = time.monotonic() + int(sys.argv[5])
    def get_remaining_time_in_millis(self):
        return int(max(0.0, self._deadline - time.monotonic()) * 1000)
handler = importlib.import_module(sys.argv[1]).handler
result = handler(event, Context())
# VmHWM is this program's own peak: ru_maxrss also counts the pages of the (forked) test process
# that started it, which Linux carries across exec.
peak_kb = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print("PEAK_RSS_KB " + (peak_kb[0] if peak_kb else str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))
print("RESULT " + json.dumps(result))
"""


def _site_packages() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"]


def _interpreter(as_root: bool) -> str:
    """This Python, or the same version outside /root when the handler runs as nobody (barred from /root)."""
    here = os.path.realpath(sys.executable)
    if not as_root or not here.startswith("/root/"):
        return here
    found = shutil.which(
        f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/local/bin:/usr/bin"
    )
    if found is None:
        # No silent skip: without it the constraint is unchecked, so the run fails and says what to install.
        pytest.fail(
            f"no python{sys.version_info.major}.{sys.version_info.minor} in /usr/local/bin or /usr/bin that "
            "an unprivileged user may run (install the system package of that version)"
        )
    return found


def _function_environment(template: dict[str, Any], logical_id: str, model_dir: Path) -> dict[str, str]:
    """The function's own Environment variables that are literals (conditional ones are left unset)."""
    variables = template["Resources"][logical_id]["Properties"].get("Environment", {}).get("Variables", {})
    env = {k: v for k, v in variables.items() if isinstance(v, str)}
    if template["Resources"][logical_id]["Properties"].get("PackageType") == "Image":
        # The image's own ENV (functions/embed/Dockerfile): the model baked into /opt/model, no bytecode
        env.update(STRATUS_MODEL_DIR="/opt/model", PYTHONDONTWRITEBYTECODE="1")
    if env.get("STRATUS_MODEL_DIR") == "/opt/model":
        env["STRATUS_MODEL_DIR"] = str(model_dir)  # the layer's (or the image's) /opt/model, here
    return env


@pytest.fixture(scope="module")
def code_root() -> Iterator[Path]:
    """A read-only copy of the code Lambda would load: functions/ and the stratus package."""
    root = Path(tempfile.mkdtemp(prefix="stratus-code-", dir="/tmp"))
    shutil.copytree(ROOT / "functions", root / "functions", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "shared" / "stratus", root / "python" / "stratus", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    yield root
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    shutil.rmtree(root, ignore_errors=True)


def _written_by(uid: int, since: float) -> dict[str, int]:
    """Files owned by `uid` and changed after `since` in the world-writable places: path -> bytes."""
    found: dict[str, int] = {}
    for top in ("/tmp", *WRITABLE_ELSEWHERE):
        for dirpath, _, names in os.walk(top):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                if info.st_uid == uid and info.st_mtime >= since:
                    found[path] = info.st_size
    return found


def _invoke(
    stack: LocalStack, code: Path, logical_id: str, event: dict[str, Any], tmp: Path
) -> tuple[dict[str, Any], dict[str, int], float]:
    """Run a handler in its own constrained process: (its result, files written, peak RSS in MB)."""
    template = load_template(ROOT / "template.yaml")
    function = stack.plan.functions[logical_id]
    event_file = Path(tempfile.mkstemp(prefix="event-", suffix=".json", dir="/tmp")[1])
    event_file.write_text(json.dumps(event))
    event_file.chmod(0o644)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{code}:{code / 'python'}",
        "AWS_LAMBDA_FUNCTION_NAME": logical_id,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
        "LAMBDA_TASK_ROOT": str(code),
        **emulator_credentials(),
        **stack.environment,
        **_function_environment(template, logical_id, Path(str(get_settings().model_dir))),
    }
    as_root = os.geteuid() == 0
    interpreter = _interpreter(as_root)
    # The function's own /tmp: Lambda gives each environment an empty one; on this shared host a
    # private folder under /tmp stands for it (TMPDIR, and the replica's default /tmp/stratus-replica).
    private_tmp = Path(tempfile.mkdtemp(prefix="stratus-lambda-tmp-", dir="/tmp"))
    if as_root:
        os.chown(private_tmp, NOBODY, NOBODY)
    env["TMPDIR"] = str(private_tmp)
    env["STRATUS_SEARCH_REPLICA_DIR"] = str(private_tmp / "stratus-replica")
    uid = NOBODY if as_root else os.geteuid()

    def drop_privileges() -> None:
        if as_root:
            os.setgid(NOBODY)
            os.setuid(NOBODY)

    started = time.time() - 1
    process = subprocess.Popen(
        [
            interpreter,
            "-c",
            RUNNER,
            function.handler.removesuffix(".handler"),
            str(event_file),
            logical_id,
            str(function.memory_mb),
            str(function.timeout_s),
            _site_packages(),
        ],
        cwd=code,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=drop_privileges,
    )
    try:
        out, err = process.communicate(timeout=function.timeout_s + 60)
    finally:
        event_file.unlink(missing_ok=True)
    text = out.decode(errors="replace")
    assert process.returncode == 0, f"{logical_id} failed:\n{err.decode(errors='replace')[-4000:]}"
    (line,) = [x for x in text.splitlines() if x.startswith("RESULT ")]
    (peak,) = [x for x in text.splitlines() if x.startswith("PEAK_RSS_KB ")]
    peak_mb = int(peak.removeprefix("PEAK_RSS_KB ")) / 1024
    written = _written_by(uid, started) if as_root else {}
    shutil.rmtree(private_tmp, ignore_errors=True)
    _LAST_STDERR[logical_id] = err.decode(errors="replace")[-4000:]
    return json.loads(line.removeprefix("RESULT ")), written, peak_mb


_LAST_STDERR: dict[str, str] = {}


def _check(logical_id: str, stack: LocalStack, written: dict[str, int], peak_mb: float) -> None:
    outside = [p for p in written if not p.startswith("/tmp/")]
    total_mb = sum(written.values()) / 2**20
    memory = stack.plan.functions[logical_id].memory_mb
    print(
        f"\n{logical_id}: wrote {len(written)} file(s), {total_mb:.2f} MB in /tmp; peak RSS {peak_mb:.0f} MB"
    )
    for path in sorted(written)[:10]:
        print(f"  {path} ({written[path]} bytes)")
    assert outside == [], f"{logical_id} wrote outside /tmp: {outside}"
    assert total_mb <= TMP_BUDGET_MB, f"{logical_id} left {total_mb:.1f} MB in /tmp"
    assert 0 < peak_mb < memory, f"{logical_id} peaked at {peak_mb:.0f} MB of its {memory} MB"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


@pytest.fixture
def claim_checks(monkeypatch: pytest.MonkeyPatch, idle_stack: LocalStack) -> Iterator[None]:
    """Stage outputs through S3, as the events/ samples point at staged objects."""
    monkeypatch.setitem(idle_stack.environment, "STRATUS_STAGE_INLINE_MAX_BYTES", "0")
    monkeypatch.setenv("STRATUS_STAGE_INLINE_MAX_BYTES", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("claim_checks")
def test_every_handler_serves_its_first_event_read_only_without_home_writing_only_tmp(
    idle_stack: LocalStack, code_root: Path, api_headers: dict[str, str], tmp_path: Path
) -> None:
    # Given the object the sample fetch event names
    fetch_event = _load("fetch")
    key = json.loads(fetch_event["Records"][0]["body"])["Records"][0]["s3"]["object"]["key"]
    idle_stack.client("s3").put_object(Bucket=idle_stack.plan.bucket, Key=key, Body=GUIDE)
    # When the fetch handler serves it in its constrained process / Then it succeeds within the limits
    result, written, peak = _invoke(idle_stack, code_root, "FetchFunction", fetch_event, tmp_path)
    assert result == {"batchItemFailures": []}
    _check("FetchFunction", idle_stack, written, peak)

    # Given the staged chunks and the record the sample embed event points at
    message = StageMessage.model_validate_json(_load("embed")["Records"][0]["body"])
    batch = ChunkBatch(
        collection=message.collection,
        doc_id=message.doc_id,
        source=message.source,
        title="Getting started",
        content_sha256=message.content_sha256,
        chunks=[
            Chunk(chunk_id=f"{i:032x}", position=i, text=text, token_count=8)
            for i, text in enumerate(["Run make test to run the suite.", "sam deploy puts Stratus on AWS."])
        ],
    )
    services.blob_store().put_bytes(message.key, dump_chunk_batch(batch))
    assert services.document_table().record_version(
        message.collection,
        message.doc_id,
        normalise_version("F" * 24),
        DocumentStatus.FETCHED,
        source=message.source,
        content_sha256=message.content_sha256,
        chunk_count=2,
    )
    # When embed, then index serve their sample events / Then both succeed within the limits
    for logical_id, name in (("EmbedFunction", "embed"), ("IndexFunction", "index")):
        result, written, peak = _invoke(idle_stack, code_root, logical_id, _load(name), tmp_path)
        assert result == {"batchItemFailures": []}, logical_id
        _check(logical_id, idle_stack, written, peak)
    record = services.document_table().get(message.collection, message.doc_id)
    assert record is not None
    assert record.status == DocumentStatus.INDEXED

    # When the API serves the sample search event (with a real key) / Then it answers from the index
    api_event = _load("api")
    api_event["headers"].update(api_headers)
    api_event["multiValueHeaders"].update({k: [v] for k, v in api_headers.items()})
    result, written, peak = _invoke(idle_stack, code_root, "ApiFunction", api_event, tmp_path)
    assert result["statusCode"] == 200, _LAST_STDERR["ApiFunction"]
    assert json.loads(result["body"])["hits"]
    _check("ApiFunction", idle_stack, written, peak)

    # When maintenance serves its scheduled event / Then it maintains the collection
    result, written, peak = _invoke(
        idle_stack, code_root, "MaintenanceFunction", _load("maintenance"), tmp_path
    )
    assert any(r["collection"] == message.collection for r in result["collections"])
    _check("MaintenanceFunction", idle_stack, written, peak)


def test_the_code_root_is_really_read_only_to_the_handlers(code_root: Path) -> None:
    # Given the copy / Then the unprivileged user (or this one, when not root) cannot write into it
    probe = "import pathlib, sys; pathlib.Path(sys.argv[1], 'probe').write_text('x')"

    def drop() -> None:
        if os.geteuid() == 0:
            os.setgid(NOBODY)
            os.setuid(NOBODY)

    result = subprocess.run(
        [_interpreter(os.geteuid() == 0), "-c", probe, str(code_root / "functions")],
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        capture_output=True,
        preexec_fn=drop,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert b"PermissionError" in result.stderr
