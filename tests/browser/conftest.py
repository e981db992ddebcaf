"""The console in a real headless Chromium (Debian's package) driven by Playwright, against the local
stack: the emulator, every queue consumer, the API on a free port, and a slow fake LLM provider."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fakes.slow_llm import SlowLLM

from stratus_tools.local.stack import LocalStack

CHROMIUM = "/usr/bin/chromium"
# The answer cites chunk 1 of the prompt; the pieces arrive 40 ms apart.
ANSWER = "Tides happen because the moon pulls the oceans of the earth twice each day [1]."
# Nothing may reach the network: no QUIC, no background fetches, no component or sync updates.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COLLECTION = "console"


@dataclass
class Console:
    """The running stack with its API URL, keys and the fake provider."""

    stack: LocalStack
    url: str
    admin_key: str = field(repr=False)
    read_key: str = field(repr=False)
    llm: SlowLLM
    figures: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def slow_llm() -> Iterator[SlowLLM]:
    """The streaming fake provider, configured as the cloud provider before the stack starts."""
    with SlowLLM(ANSWER, delay_s=0.04) as llm:
        saved = {k: os.environ.get(k) for k in ("STRATUS_OPENAI_BASE_URL", "STRATUS_OPENAI_API_KEY")}
        os.environ["STRATUS_OPENAI_BASE_URL"] = llm.base_url
        os.environ["STRATUS_OPENAI_API_KEY"] = "fake-provider-key"
        try:
            yield llm
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture(scope="module")
def console(slow_llm: SlowLLM, running_stack: LocalStack) -> Console:
    """The local stack (every consumer running) with the API on a free port, an admin and a read-only key."""
    from stratus import services
    from stratus.access.auth import create_key

    url = running_stack.serve_api("127.0.0.1", 0)
    admin = create_key(services.key_table(), "console admin", ["*"], ["admin"]).key
    reader = create_key(services.key_table(), "console reader", [COLLECTION], ["read"]).key
    return Console(running_stack, url, admin, reader, slow_llm)


@pytest.fixture(scope="module")
def browser_context() -> Iterator[Any]:
    """One headless Chromium with a fresh profile (user-data-dir); each test opens its own tab."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="stratus-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1100, "height": 760},
        )
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    """A new tab (its own session storage) that records console errors and uncaught exceptions."""
    tab = browser_context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.errors = errors
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def api_without_sources(console: Console) -> Iterator[str]:
    """The same app with no sources routes in its OpenAPI document, on its own port (same stack, keys)."""
    import uvicorn

    from stratus.api.app import create_app
    from stratus_tools.local.stack import free_port

    app = create_app()
    # As an API from before issue 14: its OpenAPI document (what the console reads) has no sources paths.
    schema = app.openapi()
    schema["paths"] = {path: ops for path, ops in schema["paths"].items() if "/sources" not in path}
    app.openapi_schema = schema
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
