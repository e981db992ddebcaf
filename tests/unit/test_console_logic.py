"""The console's logic without the network: feedback to qrels, the metric recorder, closing streams."""

from __future__ import annotations

from collections.abc import Iterator

from stratus.api.routes_chat import _sse_events
from stratus.console.feedback import qrels_from, query_id
from stratus.console.metrics import MetricRecorder, percentile
from stratus.observability import MetricName
from stratus.stores.feedback import FeedbackRecord


def record(feedback_id: str, query: str, rating: int, docs: list[str]) -> FeedbackRecord:
    return FeedbackRecord("c", feedback_id, "answer", rating, query, doc_ids=docs)


def test_qrels_take_each_documents_latest_rating_for_a_query() -> None:
    # given a thumbs up then a thumbs down on the same document, and the same question spelled twice
    records = [
        record("001", "Why tides?", 1, ["d1", "d2"]),
        record("002", "why  TIDES?", -1, ["d2"]),
        record("003", "What is bread?", -1, ["d3"]),
    ]
    # when qrels are made
    queries, qrels = qrels_from(records)
    # then one query per question, d1 relevant, d2 not (its latest rating), d3 a negative judgement
    assert len(queries) == 2
    assert qrels[query_id("Why tides?")] == {"d1": 1, "d2": 0}
    assert qrels[query_id("What is bread?")] == {"d3": 0}


def test_recorder_keeps_a_bounded_window_and_reports_p50_p95() -> None:
    recorder = MetricRecorder(samples=100, clock=lambda: 0.0)
    for value in range(1, 201):
        recorder.record(MetricName.SEARCH_LATENCY_MS, float(value), "Milliseconds")
    latency = recorder.latency(MetricName.SEARCH_LATENCY_MS)
    # the window holds the last 100 values (101..200); the total counts all of them
    assert latency == {"p50": 150.0, "p95": 195.0, "samples": 100}
    assert recorder.total(MetricName.SEARCH_LATENCY_MS) == sum(range(1, 201))
    assert recorder.snapshot()["totals"] == {"SearchLatencyMs": float(sum(range(1, 201)))}


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 95) == 0.0
    assert percentile([7.0], 50) == 7.0


def test_closing_the_event_stream_closes_the_chat_events() -> None:
    closed: list[bool] = []

    def events() -> Iterator[tuple[str, dict[str, str]]]:
        try:
            for i in range(100):
                yield "delta", {"text": str(i)}
        finally:
            closed.append(True)

    stream = _sse_events(events())
    assert next(stream) == 'event: delta\ndata: {"text":"0"}\n\n'
    stream.close()
    assert closed == [True]
