"""The local stack creates what template.yaml declares and respects what the user exported."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from stratus.local.stack import LocalStack

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack_with_user_settings() -> Iterator[LocalStack]:
    saved = {k: os.environ.get(k) for k in ("STRATUS_FILTER_FIELDS", "STRATUS_BUCKET")}
    os.environ["STRATUS_FILTER_FIELDS"] = "year:int"
    os.environ["STRATUS_BUCKET"] = "someone-elses-bucket"
    stack = LocalStack(REPO_ROOT, visibility_timeout_s=2).start(run_functions=False)
    yield stack
    stack.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_parameters_yield_to_exported_values_but_resources_do_not(
    stack_with_user_settings: LocalStack,
) -> None:
    # given STRATUS_FILTER_FIELDS (a template parameter) and STRATUS_BUCKET (a resource) exported
    environment = stack_with_user_settings.environment

    # then the user's parameter value is kept and the resource points at the emulator's bucket
    assert environment["STRATUS_FILTER_FIELDS"] == "year:int"
    assert environment["STRATUS_BUCKET"] == stack_with_user_settings.plan.bucket


def test_every_queue_of_the_template_exists_with_its_redrive_policy(
    stack_with_user_settings: LocalStack,
) -> None:
    # given the plan read from template.yaml
    plan = stack_with_user_settings.plan
    sqs = stack_with_user_settings.client("sqs")

    # then each main queue exists in the emulator and dead-letters into its DLQ after maxReceiveCount
    mains = [q for q in plan.queues.values() if q.dead_letter_queue]
    assert {q.logical_id for q in mains} == {"FetchQueue", "EmbedQueue", "IndexQueue"}
    for queue in mains:
        assert queue.dead_letter_queue is not None
        attributes = sqs.get_queue_attributes(
            QueueUrl=stack_with_user_settings.queue_urls[queue.logical_id], AttributeNames=["RedrivePolicy"]
        )["Attributes"]
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == stack_with_user_settings.queue_arns[queue.dead_letter_queue]
        assert int(redrive["maxReceiveCount"]) == queue.max_receive_count


def test_inbox_uploads_notify_the_fetch_queue(stack_with_user_settings: LocalStack) -> None:
    # given the bucket notifications read from the template
    s3 = stack_with_user_settings.client("s3")
    bucket = stack_with_user_settings.plan.bucket

    # when an object is put under inbox/ and another outside it
    s3.put_object(Bucket=bucket, Key="inbox/c/a.md", Body=b"# A")
    s3.put_object(Bucket=bucket, Key="elsewhere/b.md", Body=b"# B")

    # then exactly the inbox object is announced to the fetch queue
    sqs = stack_with_user_settings.client("sqs")
    response = sqs.receive_message(
        QueueUrl=stack_with_user_settings.queue_urls["FetchQueue"], MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    # (keys arrive URL-encoded, as S3 sends them)
    keys = [
        unquote_plus(record["s3"]["object"]["key"])
        for message in response.get("Messages", [])
        for record in json.loads(message["Body"]).get("Records", [])
    ]
    assert keys == ["inbox/c/a.md"]
