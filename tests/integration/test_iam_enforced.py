"""The local stack enforces each function's role, expanded from template.yaml: a missing grant fails here."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from stratus import services
from stratus.models import DocumentStatus
from stratus.settings import get_settings
from stratus_tools.local.iam import FunctionRole, evaluate
from stratus_tools.local.stack import ADMIN_PRINCIPAL, LocalStack

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events"
GUIDE = b"# Getting started\n\nRun make test: it sets up the environment and runs pytest.\n"


@pytest.fixture
def fetch_event(idle_stack: LocalStack, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The sample fetch event for a document of this test's own, its object uploaded, the fetch queue
    drained; fetch's role restored after."""
    event: dict[str, Any] = json.loads((EVENTS / "fetch.json").read_text())
    body = json.loads(event["Records"][0]["body"])
    key = f"inbox/docs/{request.node.name[:60]}.md"
    body["Records"][0]["s3"]["object"]["key"] = key
    event["Records"][0]["body"] = json.dumps(body)
    idle_stack.client("s3").put_object(Bucket=idle_stack.plan.bucket, Key=key, Body=GUIDE)
    sqs = idle_stack.client("sqs")
    while messages := sqs.receive_message(
        QueueUrl=idle_stack.queue_urls["FetchQueue"], MaxNumberOfMessages=10
    ).get("Messages"):
        for m in messages:
            sqs.delete_message(QueueUrl=idle_stack.queue_urls["FetchQueue"], ReceiptHandle=m["ReceiptHandle"])
    original = copy.deepcopy(idle_stack.roles["FetchFunction"])
    yield event
    idle_stack.set_role("FetchFunction", original)


def fetched_record(stack: LocalStack, event: dict[str, Any]) -> Any:
    notification = json.loads(event["Records"][0]["body"])["Records"][0]["s3"]["object"]["key"]
    _, collection, *_ = notification.split("/")
    (item,) = [
        r
        for r in services.document_table().list(collection)[0]  # (as the admin: the test's own reads)
        if r.source.endswith(notification.rsplit("/", 1)[-1])
    ]
    return item


def on_last_delivery(event: dict[str, Any]) -> dict[str, Any]:
    """`event` as SQS delivers it the last time before the DLQ (a denied read is retried until then)."""
    last = copy.deepcopy(event)
    for record in last["Records"]:
        record.setdefault("attributes", {})["ApproximateReceiveCount"] = str(
            get_settings().fetch_max_receive_count
        )
    return last


def with_prefix_conditioned_list_bucket(role: FunctionRole) -> FunctionRole:
    """`role` with its s3:ListBucket grant limited to prefixes, as the template had it before."""
    changed = copy.deepcopy(role)
    for document in changed.policies.values():
        for statement in document.get("Statement", []):
            if "s3:ListBucket" in statement.get("Action", []):
                statement["Condition"] = {"StringLike": {"s3:prefix": ["inbox/*", "staging/*"]}}
    return changed


def test_fetch_without_s3_get_object_fails_with_access_denied(
    idle_stack: LocalStack, fetch_event: dict[str, Any]
) -> None:
    # given fetch's role without the s3:GetObject grant the template gives it
    idle_stack.set_role("FetchFunction", idle_stack.roles["FetchFunction"].without("s3:GetObject"))

    # when the fetch handler gets the notification of an uploaded document
    first = idle_stack.handler("FetchFunction")(fetch_event, idle_stack.context("FetchFunction"))
    # then reading the document was denied, as on AWS: retried (a grant may be fixed meanwhile) ...
    assert first["batchItemFailures"], first
    # ... and on the last delivery the document says why it failed
    idle_stack.handler("FetchFunction")(on_last_delivery(fetch_event), idle_stack.context("FetchFunction"))
    record = fetched_record(idle_stack, fetch_event)
    assert record.status == DocumentStatus.FAILED
    assert "AccessDenied" in (record.error or ""), record.error


def test_a_missing_sidecar_is_access_denied_without_an_unconditional_list_bucket(
    idle_stack: LocalStack, fetch_event: dict[str, Any]
) -> None:
    # given fetch's ListBucket limited by an s3:prefix condition (issue 20, finding 1)
    idle_stack.set_role(
        "FetchFunction", with_prefix_conditioned_list_bucket(idle_stack.roles["FetchFunction"])
    )

    # when fetch reads a document that has no .metadata.json sidecar (until its last delivery)
    first = idle_stack.handler("FetchFunction")(fetch_event, idle_stack.context("FetchFunction"))
    assert first["batchItemFailures"], first
    idle_stack.handler("FetchFunction")(on_last_delivery(fetch_event), idle_stack.context("FetchFunction"))

    # then S3's answer for the missing sidecar is 403, not 404, and the document fails on it
    record = fetched_record(idle_stack, fetch_event)
    assert record.status == DocumentStatus.FAILED
    assert ".md.metadata.json: access denied" in (record.error or ""), record.error  # the sidecar named
    assert "AccessDenied" in (record.error or ""), record.error


def test_fetch_with_the_templates_grants_reads_a_document_without_sidecar(
    idle_stack: LocalStack, fetch_event: dict[str, Any]
) -> None:
    # given fetch's role exactly as template.yaml expands
    # when the fetch handler gets the notification
    response = idle_stack.handler("FetchFunction")(fetch_event, idle_stack.context("FetchFunction"))

    # then the document is fetched (the missing sidecar is a 404)
    assert response == {"batchItemFailures": []}
    assert fetched_record(idle_stack, fetch_event).status == DocumentStatus.FETCHED


def test_a_function_cannot_use_another_functions_grants(idle_stack: LocalStack) -> None:
    # given fetch's role session (it may write staging/, never the LanceDB store)
    s3 = idle_stack.client("s3", "FetchFunction")
    ddb = idle_stack.client("dynamodb", "FetchFunction")

    # when it writes under lancedb/ and reads the API keys table
    # then both are denied
    with pytest.raises(ClientError) as denied:
        s3.put_object(Bucket=idle_stack.plan.bucket, Key="lancedb/docs.lance/x", Body=b"x")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as denied:
        ddb.get_item(TableName=idle_stack.table_names["ApiKeysTable"], Key={"key_hash": {"S": "x"}})
    # (in DynamoDB's JSON error, as AWS answers it: moto alone answers IAM's XML, unparsable here)
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"


def test_get_queue_url_is_authorised_against_the_queue_it_names(idle_stack: LocalStack) -> None:
    # given maintenance's role (granted GetQueueUrl on the embed and index DLQs, nothing else)
    sqs = idle_stack.client("sqs", "MaintenanceFunction")
    admin = idle_stack.client("sqs")
    dlq_name = idle_stack.queue_arns["EmbedDLQ"].rsplit(":", 1)[1]
    admin.create_queue(QueueName="not-a-stratus-queue")

    # when it asks for a granted queue's URL, then it gets it (moto alone checked against "*": denied)
    assert sqs.get_queue_url(QueueName=dlq_name)["QueueUrl"].endswith(dlq_name)
    # when it asks for another queue's URL, then it is denied
    with pytest.raises(ClientError) as denied:
        sqs.get_queue_url(QueueName="not-a-stratus-queue")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_every_call_of_the_pipeline_is_within_its_functions_grants(running_stack: LocalStack) -> None:
    # given the running stack (pollers and handlers as their roles) and a document uploaded
    running_stack.collect_calls()
    running_stack.calls.clear()
    running_stack.client("s3").put_object(
        Bucket=running_stack.plan.bucket, Key="inbox/iam/guide.md", Body=GUIDE + b"\nIAM is enforced.\n"
    )

    # when it goes through fetch, embed and index
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        records, _ = services.document_table().list("iam")
        if records and records[0].status in (DocumentStatus.INDEXED, DocumentStatus.FAILED):
            break
        time.sleep(0.5)
    assert records, "the upload never reached the documents table"
    assert records[0].status == DocumentStatus.INDEXED, records

    # then every call each function made (LanceDB's object-store requests included) was allowed,
    # and each is allowed by that function's expanded policy
    calls = [c for c in running_stack.collect_calls() if c[0] != ADMIN_PRINCIPAL]
    by_function: dict[str, set[str]] = {}
    for principal, action, resource, context, allowed, _ in calls:
        assert allowed, (principal, action, resource)
        assert evaluate(running_stack.roles[principal], action, resource, json.loads(context)).allowed
        by_function.setdefault(principal, set()).add(action)
    assert {"s3:GetObject", "sqs:SendMessage"} <= by_function["FetchFunction"]
    assert "s3:PutObject" in by_function["IndexFunction"]  # (LanceDB's commit, signed with the session)
    assert "sqs:ReceiveMessage" in by_function["EmbedFunction"]


def test_a_multi_object_delete_is_authorised_key_by_key(running_stack: LocalStack) -> None:
    # given objects under lancedb/ and inbox/, and maintenance's role (it may delete lancedb/* only)
    admin = running_stack.client("s3")
    for key in ("lancedb/old.lance/a", "inbox/docs/keep.md"):
        admin.put_object(Bucket=running_stack.plan.bucket, Key=key, Body=b"x")
    s3 = running_stack.client("s3", "MaintenanceFunction")

    # when it deletes a lancedb/ object with DeleteObjects (what LanceDB's cleanup sends)
    s3.delete_objects(Bucket=running_stack.plan.bucket, Delete={"Objects": [{"Key": "lancedb/old.lance/a"}]})

    # then that is allowed (moto alone checks the bucket, which no key-scoped grant matches), and an
    # inbox/ object in the same kind of request is refused, as S3 does, in the answer's Errors
    bucket = running_stack.plan.bucket
    assert "Contents" not in admin.list_objects_v2(Bucket=bucket, Prefix="lancedb/old.lance/")
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "inbox/docs/keep.md"}]})
    assert [(e["Key"], e["Code"]) for e in answer["Errors"]] == [("inbox/docs/keep.md", "AccessDenied")]
    assert admin.get_object(Bucket=bucket, Key="inbox/docs/keep.md")["Body"].read() == b"x"


def test_a_call_with_a_key_of_an_earlier_stack_is_still_attributed_to_its_function(
    running_stack: LocalStack,
) -> None:
    # given the API function's session, which the stack then no longer knows (as when the key is an
    # earlier stack's, used by a background thread that outlived it); the running stack is the
    # module's latest, so its keys are the emulator's current ones
    s3 = running_stack.client("s3", "ApiFunction")
    known = running_stack.credentials.pop("ApiFunction")
    try:
        running_stack.collect_calls()
        before = len(running_stack.calls)

        # when the session lists the bucket
        s3.list_objects_v2(Bucket=running_stack.plan.bucket, Prefix="lancedb/", MaxKeys=1)
        calls = running_stack.collect_calls()[before:]
    finally:
        running_stack.credentials["ApiFunction"] = known

    # then the record names the function, not the bare access key
    assert ("ApiFunction", "s3:ListBucket") in [(c[0], c[1]) for c in calls]
    assert not [c for c in calls if c[0].startswith(("ASIA", "AKIA"))]
