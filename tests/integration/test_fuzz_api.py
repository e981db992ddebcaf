"""schemathesis against the local API's OpenAPI document over real HTTP: no 5xx, every answer as declared."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import schemathesis
from fakes.chunks import single_chunk_batch
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from stratus import services
from stratus.api.app import create_app
from stratus.stores.schema import chunk_rows
from stratus_tools.benchmarks import create_admin_key
from stratus_tools.local.stack import LocalStack, free_port

pytestmark = pytest.mark.integration

COLLECTION = "fuzz"
# Generated requests per operation (valid and invalid bodies, headers, paths, queries); a longer hunt:
# FUZZ_EXAMPLES=500 .venv/bin/pytest tests/integration/test_fuzz_api.py
EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "50"))


@pytest.fixture(scope="module")
def served(idle_stack: LocalStack, model_dir: Any) -> tuple[str, dict[str, str]]:
    """The API on a free port with one indexed document, and the headers of an unthrottled admin key."""
    from stratus.embedding.encoder import get_encoder

    text = "The moon pulls the oceans and causes the tides."
    batch = single_chunk_batch(COLLECTION, "tides.md", "Tides", text)
    vectors = get_encoder().embed_documents([batch.chunks[0].text])
    services.chunk_store().write(COLLECTION, chunk_rows(batch, vectors), {}, [], vectors.shape[1])
    url = idle_stack.serve_api("127.0.0.1", free_port())
    return url, {"x-api-key": create_admin_key("fuzz")}


# The document the API serves (a test below checks they are the same); loaded at collection so that each
# operation is its own test. (schemathesis' lazy fixture loader does not support pytest 9 yet.)
schema = schemathesis.openapi.from_dict(create_app().openapi())


def test_the_fuzzed_document_is_the_one_the_api_serves(served: tuple[str, dict[str, str]]) -> None:
    # given the running API / when its OpenAPI document is fetched / then it is the one fuzzed below
    url, _ = served
    assert httpx.get(f"{url}/openapi.json", timeout=10).json() == schema.raw_schema


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
    derandomize=True,
)
def test_no_server_error_and_every_response_matches_its_schema(
    case: schemathesis.Case, served: tuple[str, dict[str, str]]
) -> None:
    # given a generated request carrying a valid admin key (the generator may still drop or mangle headers)
    url, headers = served
    # when it is sent to the running API, then no 5xx and the status, content type and body are as declared
    case.call_and_validate(
        base_url=url,
        headers=headers,
        timeout=30,
        checks=[
            schemathesis.checks.not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
