"""The CLI against a deployed stack: outputs read from CloudFormation (the emulator's), then used."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from fakes.chunks import single_chunk_batch
from fakes.env import restore_environment

from stratus import services
from stratus.access.auth import create_key
from stratus.settings import get_settings
from stratus.stores.schema import chunk_rows
from stratus_tools.cli import main
from stratus_tools.local.stack import LocalStack
from stratus_tools.remote import OUTPUT_SETTINGS, StackNotFoundError, StackOutputs, stack_environment

pytestmark = pytest.mark.integration

COLLECTION = "remote"
# What the CLI may change in this process's environment, restored after each test.
TOUCHED = [*OUTPUT_SETTINGS.values(), "STRATUS_STACK", "STRATUS_API_KEY", "STRATUS_CHAT_ROUTER_MODE"]


def stratus_template(outputs: dict[str, Any]) -> str:
    """A small stack with one queue (CloudFormation needs a resource) and the given outputs."""
    return json.dumps(
        {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {"Probe": {"Type": "AWS::SQS::Queue"}},
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
    )


@pytest.fixture
def environment() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in TOUCHED}
    yield
    restore_environment(saved)
    get_settings.cache_clear()
    services.reset()


@pytest.fixture(scope="module")
def deployed(idle_stack: LocalStack) -> Iterator[str]:
    """A stack in the emulator whose outputs name the local stack's resources and its served API."""
    env = idle_stack.environment
    saved = os.environ.get("STRATUS_CHAT_ROUTER_MODE")
    os.environ["STRATUS_CHAT_ROUTER_MODE"] = "local-only"  # no LLM configured: the extractive answerer
    get_settings.cache_clear()
    services.reset()
    api_url = idle_stack.serve_api(port=0)
    outputs = {
        "ApiUrl": api_url,
        "BucketName": env["STRATUS_BUCKET"],
        "DocumentsTableName": env["STRATUS_DOCUMENTS_TABLE"],
        "ApiKeysTableName": get_settings().api_keys_table,
        "FeedbackTableName": env["STRATUS_FEEDBACK_TABLE"],
        "ConversationsTableName": env["STRATUS_CONVERSATIONS_TABLE"],
        "AuditTableName": get_settings().audit_table,
        "ApiUsagePlanId": "plan-1",
        "FetchQueueUrl": env["STRATUS_FETCH_QUEUE_URL"],
        "EmbedQueueUrl": env["STRATUS_EMBED_QUEUE_URL"],
        "IndexQueueUrl": env["STRATUS_INDEX_QUEUE_URL"],
    }
    cloudformation = idle_stack.client("cloudformation")
    cloudformation.create_stack(StackName="stratus-prod", TemplateBody=stratus_template(outputs))
    cloudformation.create_stack(StackName="not-stratus", TemplateBody=stratus_template({"Other": "x"}))
    yield "stratus-prod"
    if saved is None:
        os.environ.pop("STRATUS_CHAT_ROUTER_MODE", None)
    else:
        os.environ["STRATUS_CHAT_ROUTER_MODE"] = saved
    get_settings.cache_clear()
    services.reset()


def test_outputs_become_the_settings_of_the_cli(idle_stack: LocalStack, deployed: str) -> None:
    # Given the deployed stack / When its outputs are read
    outputs = StackOutputs(idle_stack.client("cloudformation")).get(deployed)
    # Then every resource output maps to its setting
    environment = stack_environment(outputs)
    assert environment["STRATUS_BUCKET"] == idle_stack.environment["STRATUS_BUCKET"]
    assert environment["STRATUS_DOCUMENTS_TABLE"] == idle_stack.environment["STRATUS_DOCUMENTS_TABLE"]
    assert environment["STRATUS_INDEX_QUEUE_URL"] == idle_stack.environment["STRATUS_INDEX_QUEUE_URL"]
    assert set(environment) == set(OUTPUT_SETTINGS.values())
    assert outputs["ApiUrl"].startswith("http://127.0.0.1:")


def test_a_missing_or_foreign_stack_is_refused(idle_stack: LocalStack, deployed: str) -> None:
    # Given a CloudFormation client
    stacks = StackOutputs(idle_stack.client("cloudformation"))
    # When a stack that does not exist, or one without Stratus outputs, is read / Then it is refused
    with pytest.raises(StackNotFoundError, match="does-not-exist"):
        stacks.get("does-not-exist")
    with pytest.raises(StackNotFoundError, match="ApiUrl, BucketName, DocumentsTableName"):
        stacks.get("not-stratus")


def test_status_and_ask_work_against_the_stack(
    idle_stack: LocalStack, deployed: str, environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from stratus.embedding.encoder import get_encoder

    # Given an indexed collection behind the stack, and a read key for it in STRATUS_API_KEY
    text = "The moon pulls the oceans and causes the tides twice a day."
    batch = single_chunk_batch(COLLECTION, "tides.md", "Tides", text, section="Causes")
    rows = chunk_rows(batch, get_encoder().embed_documents([f"Tides\n{text}"]))
    services.chunk_store().write(COLLECTION, pa.concat_tables([rows]), {}, [], 384)
    os.environ["STRATUS_API_KEY"] = create_key(services.key_table(), "cli", [COLLECTION], ["read"]).key
    get_settings.cache_clear()
    # When the CLI asks a question naming only the stack
    code = main(["ask", "What causes the tides?", "-c", COLLECTION, "--stack", deployed])
    # Then it prints the answer and its numbered citation
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "[1] tides.md > Causes" in printed
    assert "answered by extractive" in printed
    # When status names an unknown stack / Then it exits with a message, touching nothing
    with pytest.raises(SystemExit) as exited:
        main(["status", "-c", COLLECTION, "--stack", "does-not-exist"])
    assert exited.value.code == 2
    # When status reads the stack from STRATUS_STACK / Then it lists the documents table of the stack
    os.environ["STRATUS_STACK"] = deployed
    get_settings.cache_clear()
    assert main(["status", "-c", COLLECTION]) == 0
    assert "Documents" in capsys.readouterr().out


def test_ingest_into_a_deployed_stack_stays_streamed_unless_bulk_is_asked(
    idle_stack: LocalStack,
    deployed: str,
    environment: None,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a folder larger than the bulk threshold
    saved = {"STRATUS_BULK_MIN_DOCUMENTS": os.environ.get("STRATUS_BULK_MIN_DOCUMENTS")}
    os.environ["STRATUS_BULK_MIN_DOCUMENTS"] = "2"
    get_settings.cache_clear()
    for name in ("one.md", "two.md", "three.md"):
        (tmp_path / name).write_text(f"# {name}\n\nSome text about {name}.")
    try:
        # When it is ingested into the deployed stack without --bulk (no function consumes here)
        main(["ingest", str(tmp_path), "-c", "remote-files", "--stack", deployed, "--timeout", "1"])
    finally:
        restore_environment(saved)
    # Then the files were uploaded for the stack's functions, not bulk-ingested on this machine
    printed = capsys.readouterr().out
    assert "uploaded 3 file(s)" in printed
    assert "bulk ingestion" not in printed
    keys = idle_stack.client("s3").list_objects_v2(
        Bucket=idle_stack.environment["STRATUS_BUCKET"], Prefix="inbox/remote-files/"
    )
    assert sorted(o["Key"] for o in keys.get("Contents", [])) == [
        "inbox/remote-files/one.md",
        "inbox/remote-files/three.md",
        "inbox/remote-files/two.md",
    ]
