"""The providers' Server-Sent Events are read by httpx-sse over our bounded body (issue 13)."""

from __future__ import annotations

import time

from stratus.chat.providers import _sse_data


def test_events_are_split_on_every_line_ending_even_across_chunks() -> None:
    # given a stream with a comment, a two-line event, CRLF and lone-CR endings cut mid-ending
    chunks = [
        b": keep-alive\r",
        b'\ndata: {"a":',
        b" 1}\r\n\r",
        b"\ndata: one\rdata: two\r\r",
        b"data: [DONE]\n\n",
    ]

    # when its events are read
    events = list(_sse_data(iter(chunks)))

    # then each event's data lines are joined, the comment is skipped
    assert events == ['{"a": 1}', "one\ntwo", "[DONE]"]


def test_events_without_data_and_an_unfinished_last_event_are_dropped() -> None:
    # given events that carry only an id or event name, then an event the stream never finishes
    chunks = [b"id: 7\n\n", b"event: ping\n\n", b"data: kept\n\n", b"\n\n\n", b"data: cut off"]

    # when its events are read, then only the finished event with data is yielded
    assert list(_sse_data(iter(chunks))) == ["kept"]


def test_a_stream_trickled_one_byte_at_a_time_is_read_in_linear_time() -> None:
    # given the same stream of 10,000 events and one 1 MB line, sent whole and one byte per chunk
    events = b"".join(b'data: {"choices":[{"delta":{"content":"w "}}]}\n\n' for _ in range(10_000))
    stream = events + b"data: " + b"x" * 1_000_000 + b"\n\n"

    # when both are read
    whole = list(_sse_data(iter([stream])))
    started = time.process_time()
    trickled = list(_sse_data(stream[i : i + 1] for i in range(len(stream))))
    trickled_s = time.process_time() - started

    # then they give the same events, and the ~1.5 MB byte by byte take seconds, not the minutes a
    # decoder that re-joins its unfinished line per byte would take on the long line
    assert trickled == whole
    assert len(whole) == 10_001
    assert trickled_s < 30
