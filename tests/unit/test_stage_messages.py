"""Stage outputs travel inline when small, through S3 when not; SQS batches stay within their limits."""

from __future__ import annotations

import base64

import pytest

from stratus.errors import PermanentError
from stratus.models import StageMessage
from stratus.pipeline.common import inline_payload, read_stage_output
from stratus.stores.queues import BATCH_MAX_BYTES, BATCH_MAX_ENTRIES, send_batches


class Blobs:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.reads: list[str] = []

    def get_bytes(self, key: str) -> bytes | None:
        self.reads.append(key)
        return self.objects.get(key)


def message(**fields: str | None) -> StageMessage:
    return StageMessage(collection="c", doc_id="d", source="s.md", **fields)


def test_an_output_up_to_the_limit_travels_inline_and_a_larger_one_does_not() -> None:
    # given an output of exactly the limit and one a byte over
    data = bytes(range(256)) * 4

    # when each is offered for the message
    inline = inline_payload(data, len(data))
    too_large = inline_payload(data, len(data) - 1)

    # then the first is carried as base64 of the same bytes, the second must go to S3
    assert inline is not None
    assert base64.b64decode(inline) == data
    assert too_large is None
    assert inline_payload(b"x", 0) is None


def test_an_inline_output_is_read_from_the_message_without_touching_s3() -> None:
    # given a message carrying its output and a store that also holds an object under its key
    blobs = Blobs({"staging/k": b"from s3"})
    carried = message(key="staging/k", payload=inline_payload(b"from the message", 1024))

    # when the next stage reads it
    data = read_stage_output(blobs, carried)  # type: ignore[arg-type]

    # then the message's bytes win and S3 was not read
    assert data == b"from the message"
    assert blobs.reads == []


def test_a_pointer_is_read_from_s3_and_a_missing_object_is_none() -> None:
    # given messages pointing at a staged object and at one that is gone
    blobs = Blobs({"staging/k": b"staged"})

    # when the next stage reads them, then the object's bytes, and None for the missing one
    assert read_stage_output(blobs, message(key="staging/k")) == b"staged"  # type: ignore[arg-type]
    assert read_stage_output(blobs, message(key="staging/gone")) is None  # type: ignore[arg-type]


def test_a_payload_that_is_not_base64_is_a_permanent_error() -> None:
    # given a message whose payload was mangled
    mangled = message(payload="not base64!")

    # when it is read, then it fails for good (retrying cannot repair it)
    with pytest.raises(PermanentError, match="not base64"):
        read_stage_output(Blobs({}), mangled)  # type: ignore[arg-type]


def entry(i: int, body_bytes: int, request_id: str | None = None) -> dict[str, object]:
    attributes = {"request_id": {"DataType": "String", "StringValue": request_id}} if request_id else {}
    return {"Id": str(i), "MessageBody": "x" * body_bytes, "MessageAttributes": attributes}


def test_small_messages_go_ten_to_a_batch() -> None:
    # given 23 small entries
    entries = [entry(i, 100, "req-1") for i in range(23)]

    # when they are grouped for SendMessageBatch
    groups = list(send_batches(entries))

    # then 10 + 10 + 3, in order
    assert [len(g) for g in groups] == [10, 10, 3]
    assert [e["Id"] for g in groups for e in g] == [str(i) for i in range(23)]


def test_large_messages_are_grouped_under_the_batch_byte_limit() -> None:
    # given ten entries of 60 KiB each (600 KiB in all, over the 256 KiB a batch may carry)
    entries = [entry(i, 60 * 1024, "req-1") for i in range(10)]

    # when they are grouped
    groups = list(send_batches(entries))

    # then every group fits, none is empty, and nothing is lost or reordered
    assert len(groups) > 1
    for group in groups:
        size = sum(
            len(str(e["MessageBody"])) + len("request_id") + len("String") + len("req-1") for e in group
        )
        assert 0 < len(group) <= BATCH_MAX_ENTRIES
        assert size <= BATCH_MAX_BYTES
    assert [e["Id"] for g in groups for e in g] == [str(i) for i in range(10)]
