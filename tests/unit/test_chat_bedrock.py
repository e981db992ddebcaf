"""The Bedrock provider against botocore's Stubber: the exact Converse / ConverseStream requests."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from stratus.chat.errors import FailureKind, ProviderError
from stratus.chat.prompts import LLMRequest
from stratus.chat.providers import BedrockProvider, Delta, TokenUsage, parse_converse_stream

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


def client() -> Any:
    return boto3.client(
        "bedrock-runtime", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


def request() -> LLMRequest:
    return LLMRequest(
        system="Answer from the passages.\n\n[1] Tides\nThe moon pulls the oceans.",
        # history starting with an assistant turn and two user turns in a row: Converse needs alternation
        messages=[
            ("assistant", "Hello!"),
            ("user", "Tell me about tides."),
            ("assistant", "They follow the moon [1]."),
            ("user", "Why"),
            ("user", "twice a day?"),
        ],
        question="twice a day?",
        max_tokens=300,
        temperature=0.1,
    )


EXPECTED = {
    "modelId": MODEL,
    "system": [{"text": "Answer from the passages.\n\n[1] Tides\nThe moon pulls the oceans."}],
    "messages": [
        {"role": "user", "content": [{"text": "Tell me about tides."}]},
        {"role": "assistant", "content": [{"text": "They follow the moon [1]."}]},
        {"role": "user", "content": [{"text": "Why\n\ntwice a day?"}]},
    ],
    "inferenceConfig": {"maxTokens": 300, "temperature": 0.1},
}


def test_converse_request_is_exact_and_the_answer_and_usage_are_read() -> None:
    # given a stubbed bedrock-runtime client expecting exactly this Converse call
    bedrock = client()
    stub = Stubber(bedrock)
    stub.add_response(
        "converse",
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "Twice a day [1]."}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 57, "outputTokens": 6, "totalTokens": 63},
            "metrics": {"latencyMs": 120},
        },
        EXPECTED,
    )

    # when the provider generates
    with stub:
        delta = BedrockProvider(MODEL, 200000, lambda: bedrock).generate(request())

    # then the text and Bedrock's own usage come back
    assert delta == Delta("Twice a day [1].", usage=TokenUsage(57, 6))
    stub.assert_no_pending_responses()


def test_converse_stream_request_is_exact() -> None:
    # given a stub expecting exactly this ConverseStream call (Stubber cannot build an event stream:
    # its response is an empty stream; parsing is tested on handcrafted events below)
    bedrock = client()
    stub = Stubber(bedrock)
    stub.add_response("converse_stream", {"stream": {}}, EXPECTED)

    # when the provider streams
    with stub:
        deltas = list(BedrockProvider(MODEL, 200000, lambda: bedrock).stream(request()))

    # then the call matched the expected parameters
    assert deltas == []
    stub.assert_no_pending_responses()


def test_converse_stream_events_are_parsed_into_deltas_and_usage() -> None:
    # given ConverseStream events as boto3 yields them
    events: list[dict[str, Any]] = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "Twice "}, "contentBlockIndex": 0}},
        {"contentBlockDelta": {"delta": {"text": "a day [1]."}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {"metadata": {"usage": {"inputTokens": 50, "outputTokens": 5, "totalTokens": 55}, "metrics": {}}},
    ]

    # then the text arrives in pieces and the usage at the end
    assert list(parse_converse_stream("bedrock", events)) == [
        Delta("Twice "),
        Delta("a day [1]."),
        Delta("", usage=TokenUsage(50, 5)),
    ]


def test_an_error_event_mid_stream_raises_after_the_first_delta() -> None:
    events: list[dict[str, Any]] = [
        {"contentBlockDelta": {"delta": {"text": "Twice "}, "contentBlockIndex": 0}},
        {"modelStreamErrorException": {"message": "model failed", "originalStatusCode": 500}},
    ]
    stream = parse_converse_stream("bedrock", events)
    assert next(stream) == Delta("Twice ")
    with pytest.raises(ProviderError) as raised:
        next(stream)
    assert raised.value.kind is FailureKind.SERVER
    assert raised.value.retryable


@pytest.mark.parametrize(
    ("code", "status", "message", "kind"),
    [
        ("ThrottlingException", 429, "Too many requests", FailureKind.RATE_LIMITED),
        ("ServiceUnavailableException", 503, "busy", FailureKind.SERVER),
        ("ModelTimeoutException", 408, "slow", FailureKind.TIMEOUT),
        ("AccessDeniedException", 403, "no access to model", FailureKind.AUTH),
        ("ValidationException", 400, "Input is too long for requested model.", FailureKind.CONTEXT_LENGTH),
        ("ValidationException", 400, "temperature must be <= 1", FailureKind.VALIDATION),
    ],
)
def test_client_errors_are_classified(code: str, status: int, message: str, kind: FailureKind) -> None:
    # given Converse failing with a service error
    bedrock = client()
    stub = Stubber(bedrock)
    stub.add_client_error(
        "converse", service_error_code=code, service_message=message, http_status_code=status
    )

    # when the provider generates
    with stub, pytest.raises(ProviderError) as raised:
        BedrockProvider(MODEL, 200000, lambda: bedrock).generate(request())

    # then the failure kind decides fallback
    assert raised.value.kind is kind
    assert raised.value.status == status
