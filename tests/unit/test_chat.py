"""Chat building blocks without a network: breaker, budget, citations, extractive, conversation, tokens."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from stratus.chat.breaker import BreakerState, CircuitBreaker
from stratus.chat.budget import fit_chunks
from stratus.chat.citations import CitationFilter, clean_answer
from stratus.chat.conversation import clean_rewrite, keyword_query, looks_like_follow_up
from stratus.chat.errors import FailureKind, classify_status, redact
from stratus.chat.extractive import extractive_answer, split_sentences
from stratus.chat.models import ChatRequest
from stratus.chat.prompts import ContextChunk, build_answer_request, render
from stratus.chat.tokens import FALLBACK_NAME, TokenCounter, cached_encoding_file, get_counter, reset
from stratus.retrieval.search import SearchHit
from stratus.retry_after import parse_retry_after

WORDS = TokenCounter("words", lambda text: len(text.split()))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hit(i: int, text: str) -> SearchHit:
    return SearchHit(
        chunk_id=f"c{i}", doc_id=f"d{i}", source=f"s{i}.md", title=f"T{i}", text=text, score=1 / i
    )


# --- circuit breaker ------------------------------------------------------------------------------


def test_breaker_opens_after_n_failures_and_half_opens_after_the_cooldown() -> None:
    # given a breaker with threshold 3 and a 10 s cooldown
    clock = FakeClock()
    breaker = CircuitBreaker("p", failure_threshold=3, cooldown_s=10, clock=clock)

    # when two calls fail it stays closed; the third opens it
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(10)

    # then after the cooldown exactly one probe is let through (half-open)
    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()

    # and a failed probe opens it again, a successful one closes it
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.allow()


def test_breaker_honours_retry_after_capped() -> None:
    # given a closed breaker
    clock = FakeClock()
    breaker = CircuitBreaker("p", failure_threshold=5, cooldown_s=1, max_cooldown_s=60, clock=clock)

    # when one 429 says Retry-After 20, it opens at once for 20 s
    breaker.record_failure(retry_after_s=20)
    assert breaker.state is BreakerState.OPEN
    clock.now += 19
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()

    # and a Retry-After of an hour is capped at max_cooldown_s
    breaker.record_failure(retry_after_s=3600)
    assert breaker.retry_in() == pytest.approx(60)


def test_breaker_half_open_admits_one_probe_across_threads() -> None:
    # given an open breaker whose cooldown has passed
    clock = FakeClock()
    breaker = CircuitBreaker("p", failure_threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    admitted: list[bool] = []
    barrier = threading.Barrier(16)

    def call() -> None:
        barrier.wait()
        admitted.append(breaker.allow())

    # when 16 threads ask at once
    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # then exactly one is let through
    assert admitted.count(True) == 1


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable"),
    [
        (429, "slow down", FailureKind.RATE_LIMITED, True),
        (500, "boom", FailureKind.SERVER, True),
        (503, "", FailureKind.SERVER, True),
        (408, "", FailureKind.TIMEOUT, True),
        (401, "bad key", FailureKind.AUTH, False),
        (403, "forbidden", FailureKind.AUTH, False),
        (422, "bad field", FailureKind.VALIDATION, False),
        (400, "This model's maximum context length is 8192 tokens", FailureKind.CONTEXT_LENGTH, False),
        (400, "temperature out of range", FailureKind.VALIDATION, False),
    ],
)
def test_status_classification(status: int, body: str, kind: FailureKind, retryable: bool) -> None:
    from stratus.chat.errors import RETRYABLE

    assert classify_status(status, body) is kind
    assert (kind in RETRYABLE) is retryable


def test_retry_after_parses_seconds_and_dates() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("inf") is None
    assert parse_retry_after("600", cap_s=60) == 60
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= (parse_retry_after(future) or 0) <= 31
    # a date without a zone ("-0000") is UTC, whatever the machine's local zone
    zoneless = time.strftime("%a, %d %b %Y %H:%M:%S -0000", time.gmtime(time.time() + 30))
    assert 25 <= (parse_retry_after(zoneless) or 0) <= 31


def test_redact_removes_the_key_and_its_fragments() -> None:
    key = "sk-live-0123456789abcdefSECRET"
    text = f"Incorrect API key provided: {key}; also sk-live-0123****SECRET and Bearer {key}"
    cleaned = redact(text, [key])
    assert key not in cleaned
    assert "SECRET" not in cleaned
    assert "0123456789" not in cleaned


# --- budget and prompts --------------------------------------------------------------------------


def test_fit_keeps_the_best_ranked_and_drops_the_lowest_first() -> None:
    # given five items costing 10 tokens each, best first
    items = ["a", "b", "c", "d", "e"]

    # when 35 tokens are available
    fitted = fit_chunks(items, 35, lambda _: 10, min_items=1)

    # then the three best stay, two are dropped
    assert fitted.kept == ["a", "b", "c"]
    assert fitted.dropped == 2
    assert fitted.fits


def test_fit_truncates_at_the_minimum() -> None:
    # given items too large even at the minimum of 2
    fitted = fit_chunks(["x" * 100, "y" * 100, "z"], 60, len, min_items=2, truncate=lambda s, n: s[:n])

    # then the two best remain, truncated to their share, and the result says it does not fully fit
    assert [s[0] for s in fitted.kept] == ["x", "y"]
    assert sum(len(s) for s in fitted.kept) <= 60
    assert fitted.truncated == 2
    assert not fitted.fits


def test_answer_prompt_respects_the_window_and_numbers_the_kept_chunks() -> None:
    # given six chunks of ~50 words, a 400-token window and 100 reserved answer tokens
    hits = [hit(i, " ".join([f"w{i}"] * 50)) for i in range(1, 7)]

    # when the prompt is built (a word counter)
    request = build_answer_request("what is w1?", [], hits, WORDS, 400, 100, 1, 0.2)

    # then it fits, keeps a prefix of the ranking, and numbers it 1..k in the system prompt
    assert request.fits
    assert request.prompt_tokens + 100 <= 400
    kept = [c.hit.chunk_id for c in request.chunks]
    assert kept == [f"c{i}" for i in range(1, len(kept) + 1)]
    assert 1 <= len(kept) < 6
    assert request.dropped_chunks == 6 - len(kept)
    for c in request.chunks:
        assert f"[{c.n}] T{c.n}" in request.system
    assert f"w{len(kept) + 1}" not in request.system


def test_template_rendering_leaves_braces_in_values_alone() -> None:
    text = render("answer_system", context="code: {context} {x}")
    assert "code: {context} {x}" in text


# --- citations --------------------------------------------------------------------------------------


def chunks(n: int) -> list[ContextChunk]:
    return [ContextChunk(i, hit(i, f"text {i}"), f"text {i}") for i in range(1, n + 1)]


def test_unmapped_markers_are_dropped_and_citations_point_at_prompt_chunks() -> None:
    # given an answer citing [2], [9] (not in the prompt), [1, 7] and [3]
    answer = "Tides follow the moon [2]. Bread needs yeast [9]. Both [1, 7] matter [3]."

    # when cleaned against a prompt of three chunks
    cleaned, citations = clean_answer(answer, chunks(3))

    # then only mapped markers remain, in order of first use
    assert cleaned == "Tides follow the moon [2]. Bread needs yeast. Both [1] matter [3]."
    assert [c.n for c in citations] == [2, 1, 3]
    assert [c.chunk_id for c in citations] == ["c2", "c1", "c3"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_streamed_filtering_matches_whole_text_filtering(size: int) -> None:
    # given an answer split into pieces of any size (markers cut in half)
    answer = "A [1] b [12] c [2,3] d [x] e [ 4 ] f [3][1] g [ end"
    marker_filter = CitationFilter({1, 2, 3})

    # when fed piece by piece
    out = "".join(marker_filter.feed(answer[i : i + size]) for i in range(0, len(answer), size))
    out += marker_filter.flush()

    # then the text is what the whole-text filter gives, markers kept only for 1..3
    assert "[12]" not in out
    assert "[2][3]" in out
    assert "[x]" in out
    assert out.endswith("[ end")
    assert marker_filter.cited == [1, 2, 3]


# --- extractive -------------------------------------------------------------------------------------


def test_extractive_quotes_the_relevant_sentences_with_citations() -> None:
    # given two chunks, only the second about chunking
    context = [
        ContextChunk(1, hit(1, "x"), "Stratus runs on AWS Lambda. The API uses FastAPI."),
        ContextChunk(
            2,
            hit(2, "x"),
            "## Chunking\n\nDocuments are chunked into 200-token pieces. "
            "Neighbouring chunks overlap by 32 tokens.",
        ),
    ]

    # when the extractive answerer is asked
    answer = extractive_answer("How are documents chunked?", context, 3, 200, WORDS.count, "Extractive:")

    # then it says so, quotes the chunking sentence and cites [2] only
    assert answer is not None
    assert answer.startswith("Extractive:")
    assert "Documents are chunked into 200-token pieces. [2]" in answer
    assert "[1]" not in answer


def test_extractive_returns_none_when_nothing_matches() -> None:
    context = [ContextChunk(1, hit(1, "x"), "Cats purr when they are content.")]
    assert extractive_answer("What is the refund policy?", context, 3, 200, WORDS.count, "E") is None


def test_sentences_skip_code_and_read_table_rows() -> None:
    text = "# Title\n\n```\nrm -rf /\n```\n| a | b |\n|---|---|\n| STRATUS_X | the x value |\nDone here now."
    assert split_sentences(text) == ["STRATUS_X — the x value", "Done here now."]


# --- conversation -----------------------------------------------------------------------------------


def test_follow_up_gets_keywords_of_the_previous_turn() -> None:
    history = [("user", "How does the index function deduplicate chunks?"), ("assistant", "By chunk_id.")]

    query, added = keyword_query("and what about its concurrency?", history, enabled=True)
    assert added
    assert query.startswith("and what about its concurrency?")
    assert "deduplicate" in query
    assert "index" in query

    standalone, added = keyword_query("Which Python version does Stratus need to run?", history, enabled=True)
    assert not added
    assert standalone == "Which Python version does Stratus need to run?"
    assert looks_like_follow_up("why?")


def test_rewrite_output_is_cleaned() -> None:
    assert clean_rewrite('Standalone search query: "index function concurrency"\nexplanation', "q") == (
        "index function concurrency"
    )
    assert clean_rewrite("  ", "fallback") == "fallback"


def test_request_must_end_with_a_user_message() -> None:
    with pytest.raises(ValueError, match="last message"):
        ChatRequest.model_validate({"messages": [{"role": "assistant", "content": "hi"}]})


# --- token estimate ---------------------------------------------------------------------------------


def test_offline_token_estimate_falls_back_fast_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    # given an empty tiktoken cache and a corrupt file under the encoding's cache name
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("STRATUS_MODEL_DIR", str(model_dir))
    import hashlib

    name = hashlib.sha1(  # noqa: S324 - tiktoken's cache file name
        b"https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    ).hexdigest()
    (tmp_path / name).write_bytes(b"not the encoding")
    from stratus import services

    services.reset()
    reset()
    try:
        # when a counter is asked for (no network here: a download attempt would hang or fail)
        started = time.perf_counter()
        counter = get_counter("cl100k_base")
        elapsed = time.perf_counter() - started

        # then the encoder's tokenizer counts, at once, and the name says so
        assert cached_encoding_file("cl100k_base") is None
        assert counter.name == FALLBACK_NAME
        assert elapsed < 5
        assert 5 <= counter.count("How are documents chunked and embedded in Stratus?") <= 20
        assert counter.count("word " * 600) >= 600  # no truncation at the tokenizer's 128
    finally:
        reset()
        services.reset()
        os.environ.pop("STRATUS_MODEL_DIR", None)
