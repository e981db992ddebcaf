"""Components' configs are derived from the one settings object, field by field, never copied by hand."""

from __future__ import annotations

import dataclasses

import pytest

from stratus.embedding.encoder import EncoderOptions
from stratus.ingest.web import FetchOptions
from stratus.pipeline.fetch import FetchConfig
from stratus.retrieval.search import FusionConfig
from stratus.settings import Settings, derive


def test_every_field_of_each_config_takes_its_setting() -> None:
    # given settings that differ from every default the configs know
    settings = Settings(
        inbox_prefix="in/",
        staging_prefix="st/",
        chunk_tokens=111,
        chunk_overlap_tokens=11,
        max_document_bytes=12345,
        heading_chunk_tokens=222,
        url_allow_hosts=["a.example"],
        url_max_per_manifest=7,
        stage_inline_max_bytes=99,
        max_title_chars=33,
        max_section_chars=44,
        max_chunks_per_document=55,
        url_refetch_after_s=66.0,
        url_max_bytes=1_000_000,
        url_timeout_s=3.0,
        url_connect_timeout_s=2.0,
        url_max_connections=5,
        url_per_host_concurrency=2,
        url_retries=1,
        url_backoff_base_s=0.25,
        url_retry_after_max_s=4.0,
        url_user_agent="ua",
        url_allowed_content_types=["TEXT/HTML"],
        url_max_redirects=2,
        url_max_bytes_in_flight=8_000_000,
        search_candidates=70,
        rrf_k=10,
        rrf_vector_weight=0.7,
        rrf_keyword_weight=0.3,
        search_fusion="rrf",
        rerank_candidates=9,
        model_variant="fp32",
        embed_max_tokens=128,
        embed_batch_tokens=4096,
        onnx_intra_op_threads=3,
        onnx_providers="cpu",
        query_cache_size=17,
        onnx_allow_spinning=False,
    )

    # when the fetch stage's, the fetcher's, the fusion's and the encoder's configs are derived
    fetch, options, fusion, encoder = (
        FetchConfig.from_settings(settings),
        FetchOptions.from_settings(settings),
        FusionConfig.from_settings(settings),
        EncoderOptions.from_settings(settings),
    )

    # then each field holds its setting's value (converted where the field's type asks)
    assert fetch == FetchConfig(
        "in/", "st/", 111, 11, 12345, 222, frozenset({"a.example"}), 7, 99, 33, 44, 55, 66.0
    )
    assert options == FetchOptions(
        1_000_000,
        3.0,
        2.0,
        5,
        2,
        1,
        0.25,
        4.0,
        "ua",
        frozenset({"text/html"}),
        2,
        frozenset({"a.example"}),
        8_000_000,
    )
    assert fusion == FusionConfig(70, 10, 0.7, 0.3, "rrf", 9)
    assert encoder == EncoderOptions("fp32", 128, 4096, 3, "cpu", 17, False)


def test_a_caller_overrides_one_encoder_option_and_keeps_the_rest() -> None:
    # given settings with a query cache
    settings = Settings(query_cache_size=64, embed_max_tokens=200)

    # when a benchmark derives the encoder's options without the cache
    options = EncoderOptions.from_settings(settings, query_cache_size=0)

    # then only the cache is overridden
    assert (options.query_cache_size, options.max_tokens) == (0, 200)


def test_a_field_without_a_setting_fails_loudly() -> None:
    # given a config with a field no setting names
    @dataclasses.dataclass(frozen=True)
    class Knobs:
        chunk_tokens: int
        no_such_knob: int = 1

    # when it is derived, then the missing setting is named, not defaulted
    with pytest.raises(AttributeError, match="no_such_knob"):
        derive(Knobs, Settings())
