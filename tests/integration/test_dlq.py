"""`stratus dlq list|redrive` against the emulator's queues (DLQs found through RedrivePolicy)."""

from __future__ import annotations

import json

import pytest

from stratus_tools.dlq import main
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration


def receive_all(stack: LocalStack, queue: str) -> list[dict[str, object]]:
    sqs = stack.client("sqs")
    found: list[dict[str, object]] = []
    for _ in range(3):
        response = sqs.receive_message(
            QueueUrl=stack.queue_urls[queue],
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
        )
        for m in response.get("Messages", []):
            found.append(m)
            sqs.delete_message(QueueUrl=stack.queue_urls[queue], ReceiptHandle=m["ReceiptHandle"])
    return found


def test_list_counts_and_samples_then_redrive_moves_bodies_and_attributes_back(
    idle_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # given three dead-lettered embed messages, one with a message attribute, and nothing elsewhere
    sqs = idle_stack.client("sqs")
    dlq = idle_stack.queue_urls["EmbedDLQ"]
    for stage in ("FetchQueue", "EmbedQueue", "IndexQueue", "FetchDLQ", "IndexDLQ"):
        receive_all(idle_stack, stage)
    sqs.send_message(
        QueueUrl=dlq,
        MessageBody='{"doc": 0}',
        MessageAttributes={"request_id": {"DataType": "String", "StringValue": "req-0"}},
    )
    for i in (1, 2):
        sqs.send_message(QueueUrl=dlq, MessageBody=f'{{"doc": {i}}}')

    # when the DLQs are listed
    assert main(["list", "--json", "--samples", "5"]) == 0
    listed = {r["stage"]: r for r in json.loads(capsys.readouterr().out)}

    # then each stage's DLQ is reported with its count, and embed's with sample bodies
    assert {stage: r["messages"] for stage, r in listed.items()} == {"fetch": 0, "embed": 3, "index": 0}
    assert set(listed["embed"]["samples"]) <= {'{"doc": 0}', '{"doc": 1}', '{"doc": 2}'}
    assert listed["embed"]["samples"]

    # when two are redriven with --max, then the rest
    assert main(["redrive", "--stage", "embed", "--max", "2", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["redrive", "--stage", "embed", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)

    # then 2 and then 1 moved, the DLQ is empty, and the embed queue holds the same bodies and attributes
    assert (first[0]["moved"], second[0]["moved"]) == (2, 1)
    assert receive_all(idle_stack, "EmbedDLQ") == []
    moved = {m["Body"]: m for m in receive_all(idle_stack, "EmbedQueue")}
    assert set(moved) == {'{"doc": 0}', '{"doc": 1}', '{"doc": 2}'}
    attributes = moved['{"doc": 0}']["MessageAttributes"]
    assert isinstance(attributes, dict)
    assert attributes["request_id"]["StringValue"] == "req-0"


def test_redrive_of_an_empty_dlq_moves_nothing(
    idle_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    receive_all(idle_stack, "IndexDLQ")
    assert main(["redrive", "--stage", "index", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert (report["messages"], report["moved"], report["failed"]) == (0, 0, 0)
