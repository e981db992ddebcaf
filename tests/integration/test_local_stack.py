"""The local stack creates what template.yaml declares and respects what the user exported."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from stratus_tools.local.stack import LocalStack, QueuePoller

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


def test_emulator_in_a_child_process_serves_the_stack_and_stops_with_it() -> None:
    # given a stack whose emulator runs in a child process
    stack = LocalStack(REPO_ROOT, visibility_timeout_s=2, emulator="process").start(run_functions=False)
    child = stack.emulator_pid
    try:
        # then the child serves the template's resources
        assert child is not None
        assert os.path.exists(f"/proc/{child}")
        sqs = stack.client("sqs")
        assert set(stack.queue_urls.values()) <= set(sqs.list_queues()["QueueUrls"])
    finally:
        stack.stop()
    # and stopping the stack ends the child
    assert stack.emulator_pid is None
    assert not os.path.exists(f"/proc/{child}")


def test_poller_fills_a_batch_within_the_window_by_long_polling() -> None:
    # given a stack with a 2 s batching window and a poller for the embed queue (batch size 10)
    stack = LocalStack(REPO_ROOT, visibility_timeout_s=30, batch_window_cap_s=2, emulator="process")
    stack.start(run_functions=False)
    try:
        source = next(s for s in stack.plan.event_sources if s.function == "EmbedFunction")
        batches: list[int] = []
        poller = QueuePoller(
            stack,
            source,
            stack.plan.functions[source.function],
            lambda event, _context: batches.append(len(event["Records"])),
        )
        sqs = stack.client("sqs")
        received: list[int] = []
        real_receive = sqs.receive_message

        def counting_receive(**kwargs: Any) -> dict[str, Any]:
            received.append(kwargs["WaitTimeSeconds"])
            return real_receive(**kwargs)

        # when five messages arrive 0.2 s apart, the first before the poller asks
        sqs.send_message(QueueUrl=stack.queue_urls[source.queue], MessageBody="0")

        def trickle() -> None:
            for n in range(1, 5):
                time.sleep(0.2)
                sqs.send_message(QueueUrl=stack.queue_urls[source.queue], MessageBody=str(n))

        sender = threading.Thread(target=trickle)
        sender.start()
        sqs.receive_message = counting_receive
        messages = poller._receive(sqs)
        sender.join()

        # then one batch holds all five, gathered by long polls (no client-side busy polling)
        assert sorted(m["Body"] for m in messages) == ["0", "1", "2", "3", "4"]
        # (one receive per arrival and the window's rest; 50 ms client polls would have made ~40)
        assert len(received) <= 8
        assert all(wait >= 1 for wait in received)
        poller._deliver(sqs, messages)
        assert batches == [5]
        assert stack.queue_depth(source.queue) == 0
    finally:
        stack.stop()


def test_pollers_run_below_the_api_priority_and_the_threads_they_start_too(
    stack_with_user_settings: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the stack's pollers lowered to nice 7 (`STRATUS_LOCAL_PIPELINE_NICE`), this thread at its own
    stack = stack_with_user_settings
    monkeypatch.setattr(stack, "pipeline_nice", 7)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    source = next(s for s in stack.plan.event_sources if s.function == "EmbedFunction")
    seen: dict[str, int] = {}

    def record_priorities(self: QueuePoller) -> None:
        # (in place of polling: the poller's own thread, and one it starts, as the encoder's pool does)
        seen["poller"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        child = threading.Thread(
            target=lambda: seen.update(child=os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        )
        child.start()
        child.join()

    monkeypatch.setattr(QueuePoller, "_poll", record_priorities)
    poller = QueuePoller(stack, source, stack.plan.functions[source.function], lambda *_: None)

    # when the poller runs
    poller.start()
    poller.join(10)

    # then it and its threads are at nice 7, and the rest of the process keeps its priority
    assert seen["poller"] == seen["child"] >= 7
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
