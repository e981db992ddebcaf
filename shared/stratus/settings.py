"""The one typed settings object: every knob is a STRATUS_* environment variable."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
# In an editable checkout the package sits at <repo>/shared/stratus; images set paths explicitly.
REPO_ROOT = PACKAGE_DIR.parent.parent


def _default_model_dir() -> Path:
    return REPO_ROOT / "layers" / "model" / "all-MiniLM-L6-v2"


class Settings(BaseSettings):
    """Stratus configuration, read once per process from STRATUS_* variables."""

    model_config = SettingsConfigDict(env_prefix="STRATUS_", extra="ignore", frozen=True)

    # --- AWS and storage -------------------------------------------------------------
    region: str = Field("us-east-1", description="AWS region of every client.")
    aws_endpoint_url: str | None = Field(
        None, description="Endpoint of an AWS emulator (the local stack sets it); unset on AWS."
    )
    aws_read_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Read timeout of the stores' AWS SDK calls; a call that stalls longer is retried.",
    )
    aws_connect_timeout_s: float = Field(
        2.0, gt=0, description="Connect timeout of every AWS SDK call (the stores, SSM, Secrets Manager)."
    )
    aws_max_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="Attempts of one AWS SDK call, the first included (standard retry mode, jittered "
        "backoff); attempts x (connect + read timeout) must fit in the function's Timeout.",
    )
    lancedb_timeout_s: float = Field(
        60.0, gt=0, description="Longest time one LanceDB object-store request to S3 may take."
    )
    bucket: str = Field("stratus-local", description="S3 bucket holding inbox/, staging/ and lancedb/.")
    inbox_prefix: str = Field("inbox/", description="Key prefix users upload documents under.")
    staging_prefix: str = Field("staging/", description="Key prefix of intermediate stage outputs.")
    stage_inline_max_bytes: int = Field(
        48 * 1024,
        ge=0,
        le=180 * 1024,
        description=(
            "A stage output (a document's chunks, its vectors) up to this size travels inside the SQS "
            "message to the next stage; a larger one is written under the staging prefix and the "
            "message points at it. 0: always S3."
        ),
    )
    lancedb_uri: str | None = Field(
        None,
        description="LanceDB location: a local folder or s3:// URI. Unset: s3://<bucket>/lancedb.",
    )
    documents_table: str = Field("stratus-documents", description="DynamoDB table of document status.")
    fetch_queue_url: str | None = Field(None, description="SQS queue the fetch stage reads.")
    embed_queue_url: str | None = Field(None, description="SQS queue the embed stage reads.")
    index_queue_url: str | None = Field(None, description="SQS queue the index stage reads.")
    fetch_max_receive_count: int = Field(
        5,
        ge=1,
        description="The fetch queue's maxReceiveCount: on that receive a failing document is marked FAILED.",
    )
    embed_max_receive_count: int = Field(
        5,
        ge=1,
        description="The embed queue's maxReceiveCount: on that receive a failing document is marked FAILED.",
    )
    index_max_receive_count: int = Field(
        10,
        ge=1,
        description="The index queue's maxReceiveCount: on that receive a failing document is marked FAILED.",
    )
    bulk_min_documents: int = Field(
        200,
        ge=1,
        description="`stratus ingest` of at least this many documents into the local stack takes the bulk "
        "path (parse, chunk and encode in the CLI's process, index in large commits); `--bulk` / "
        "`--streamed` choose explicitly (a deployed stack: streamed unless `--bulk`).",
    )
    bulk_batch_documents: int = Field(
        256,
        ge=1,
        le=500,
        description="Documents per bulk batch: one encoder call, one staged Parquet, one index commit.",
    )

    # --- Embedding ---------------------------------------------------------------------
    model_dir: Path = Field(
        default_factory=_default_model_dir,
        description="Folder with model.onnx, tokenizer.json and manifest.json.",
    )
    model_variant: Literal["fp32", "int8"] = Field(
        "int8", description="Which ONNX graph of the model folder to run."
    )
    onnx_intra_op_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0: one per core).")
    onnx_allow_spinning: bool = Field(
        True,
        description=(
            "Let onnxruntime's intra-op threads spin between operators (lower latency on idle cores; "
            "false when other work shares the CPU, as in the local stack)."
        ),
    )
    onnx_providers: str = Field(
        "auto", description="Comma list of onnxruntime providers, or 'auto' (CUDA when present, else CPU)."
    )
    embed_max_tokens: int = Field(256, ge=8, le=512, description="Tokens per text the encoder sees.")
    embed_batch_tokens: int = Field(
        2048, ge=256, description="Token budget of one encoder batch (texts x padded length)."
    )
    query_cache_size: int = Field(1024, ge=0, description="Query embeddings kept in the LRU cache.")

    # --- Chunking ----------------------------------------------------------------------
    chunk_tokens: int = Field(200, ge=16, le=512, description="Target chunk size in encoder tokens.")
    chunk_overlap_tokens: int = Field(32, ge=0, le=256, description="Tokens shared by neighbouring chunks.")
    collection_generation_ttl_s: float = Field(
        2.0,
        ge=0,
        description="How long a process trusts the chunk-table generation it read for a collection.",
    )
    reindex_drop_after_s: float = Field(
        30.0,
        ge=0,
        description="`stratus reindex` drops the replaced table this long after the switch (> the TTL).",
    )
    heading_chunk_tokens: int = Field(
        256,
        ge=16,
        le=512,
        description="Collections chunked by heading: a section longer than this many tokens is split.",
    )
    max_document_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Largest document accepted.")
    max_title_chars: int = Field(
        300, ge=16, description="A document title longer than this is cut (every chunk repeats it)."
    )
    max_section_chars: int = Field(
        500, ge=16, description="A chunk's heading path longer than this is cut; the rest stays in its text."
    )
    max_chunks_per_document: int = Field(
        20_000, ge=1, description="A document that makes more chunks ends FAILED with the reason."
    )
    fetch_record_budget_s: float = Field(
        60.0, gt=0, description="Longest time one fetch record may take; unfinished URLs end FAILED."
    )
    fetch_time_reserve_s: float = Field(
        10.0,
        ge=0,
        description="Fetch time kept before the function's timeout; records not started then are retried.",
    )

    # --- Formats (Office, spreadsheets, e-mail, e-books, OCR) ----------------------------
    format_zip_max_members: int = Field(
        5000, ge=1, description="Most members of an Office/EPUB zip container; more fails the document."
    )
    format_zip_max_unzipped_bytes: int = Field(
        256 * 1024 * 1024, ge=1, description="Most bytes an Office/EPUB container may unpack to (zip bombs)."
    )
    format_zip_max_ratio: float = Field(
        200.0, ge=1, description="Highest unpacked/packed size ratio of a container over 1 MB (zip bombs)."
    )
    format_max_rows: int = Field(
        50_000, ge=1, description="Most data rows of one spreadsheet or CSV document; more fails it."
    )
    format_max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest image (width x height, from its header) decoded for OCR."
    )
    ocr_enabled: bool = Field(True, description="Read images and PDF pages without a text layer by OCR.")
    ocr_max_pages: int = Field(20, ge=1, description="Most pages (or image frames) one document may OCR.")
    ocr_max_seconds: float = Field(120.0, gt=0, description="OCR time budget of one document.")

    # --- Search ------------------------------------------------------------------------
    search_default_top_k: int = Field(5, ge=1, le=100, description="top_k when a request names none.")
    search_candidates: int = Field(50, ge=1, le=1000, description="Candidates per retriever before fusion.")
    search_vector_feedback: int = Field(
        0,
        ge=0,
        le=50,
        description="Rocchio feedback on the vector side: the query vector moves towards the mean of its "
        "this many nearest chunks before the vector search (0: off; 3 measured best on SciFact).",
    )
    search_vector_feedback_weight: float = Field(
        0.25, ge=0, le=4, description="Weight of that mean added to the query vector (before normalising)."
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant k.")
    rrf_vector_weight: float = Field(
        1.0, ge=0, description="Weight of the vector side in fusion (both methods)."
    )
    rrf_keyword_weight: float = Field(
        1.0, ge=0, description="Weight of the full-text side in fusion (both methods)."
    )
    read_consistency_s: float = Field(
        2.0, ge=0, description="Longest time the API may serve a table version older than the latest."
    )
    search_fusion: Literal["rrf", "convex"] = Field(
        "convex",
        description="How hybrid fuses the two rankings: rrf (weighted reciprocal ranks) or convex "
        "(weighted sum of min-max normalised scores).",
    )
    filter_fields: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Metadata fields that filters may name, with types (JSON object or comma list "
        "name:type; types string, int, float, bool); promoted to m_<name> columns.",
    )
    rerank_model_dir: Path | None = Field(
        None, description="Cross-encoder folder (model.onnx + tokenizer.json) for rerank; unset: rerank off."
    )
    rerank_candidates: int = Field(20, ge=1, le=200, description="Fused hits the cross-encoder rescores.")
    rerank_max_tokens: int = Field(
        256, ge=8, le=512, description="Tokens of query + passage the reranker sees."
    )
    search_memory_max_rows: int = Field(
        100_000,
        ge=0,
        description="Tables up to this many chunks (and no ANN index) are searched from an in-memory copy "
        "of their vectors and hit columns, refreshed when the table version moves; 0: off.",
    )
    search_replica_dir: Path | None = Field(
        Path("/tmp/stratus-replica"),  # noqa: S108 - Lambda's only writable disk; one folder per store
        description="Local read replica of S3-backed tables (copied when the table version moves); "
        "empty: query S3 directly.",
    )
    search_replica_max_bytes: int = Field(
        1024**3,
        ge=0,
        description="Most bytes the local read replica holds, every table together: a table that would "
        "pass it is queried on S3 directly (Lambda's /tmp is bounded, and a first query copies the table).",
    )

    @field_validator("filter_fields", mode="before")
    @classmethod
    def _filter_fields(cls, value: object) -> object:
        from stratus.fields import parse_filter_fields

        return parse_filter_fields(value)

    @field_validator("search_replica_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # --- Maintenance -------------------------------------------------------------------
    vector_index_min_rows: int = Field(
        100_000, ge=256, description="Rows a table needs before maintenance builds an ANN index."
    )
    keep_versions_s: float = Field(3600, ge=0, description="Table versions older than this are pruned.")
    index_compact_every: int = Field(
        50,
        ge=0,
        description="The index writer compacts a chunk table and prunes its old versions every this many "
        "writes (0: only the hourly maintenance): a commit costs more with every version and fragment kept.",
    )
    index_compact_keep_s: float = Field(
        30,
        ge=0,
        description="That pruning keeps the versions younger than this "
        "(at least 10 × STRATUS_READ_CONSISTENCY_S: a version readers may still read keeps its files).",
    )

    # --- API and local stack -----------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the local API binds.")
    api_port: int = Field(8000, ge=0, le=65535, description="Port of the local API (0: any free port).")
    api_key: SecretStr | None = Field(
        None,
        description="API key the CLI sends (x-api-key); `stratus up` registers it as the local admin key "
        "instead of generating one.",
    )
    stack: str | None = Field(
        None,
        description="Deployed CloudFormation stack the CLI works against (`--stack` overrides): its outputs "
        "give the bucket, API URL, tables and queues.",
    )
    api_keys_table: str = Field(
        "stratus-api-keys",
        description="DynamoDB table of API keys (sha256 of each key, never the key) and rate-limit buckets.",
    )
    audit_table: str = Field(
        "stratus-audit",
        description="DynamoDB table of the audit log: key create/revoke, document delete, DLQ redrive "
        "(`stratus audit` reads it).",
    )
    audit_retention_days: int = Field(
        365, ge=1, le=3650, description="Days an audit entry is kept before DynamoDB's TTL removes it."
    )
    api_key_cache_s: float = Field(
        5.0,
        ge=0,
        description="How long a verified key is reused in-process; a revoked key stops working within this.",
    )
    api_usage_plan_id: str | None = Field(
        None,
        description="AWS only: API Gateway usage plan (stack output ApiUsagePlanId); `stratus keys` and the "
        "key routes mirror each key into it as an API Gateway key (unset: routes use their stage's plan).",
    )
    rate_limit_backend: Literal["memory", "dynamodb"] = Field(
        "memory",
        description="Where per-key token buckets live: memory (one process, local) or dynamodb (shared by "
        "every API instance, in the API keys table).",
    )
    rate_limit_per_s: float = Field(
        20.0, ge=0, description="Default requests per second a key may make (bucket refill); 0: unlimited."
    )
    rate_limit_burst: int = Field(
        40, ge=1, description="Default burst of a key: requests it may make at once (bucket size)."
    )
    local_visibility_timeout_s: int | None = Field(
        None, ge=0, description="Local stack only: replaces the template's queue visibility timeouts."
    )
    local_poll_wait_s: int = Field(1, ge=0, le=20, description="Local stack only: SQS long-poll wait.")
    local_pipeline_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Local stack only (`stratus up`): nice value of the pipeline's queue pollers, so "
        "searches keep their CPU while a corpus ingests (on AWS they never share one); 0: same priority.",
    )
    local_emulator: Literal["process", "thread"] = Field(
        "process",
        description=(
            "Local stack only: run the AWS emulator in a child process (its CPU does not hold the "
            "pipeline's GIL) or in a thread of `stratus up`."
        ),
    )
    log_level: str = Field("INFO", description="Log level of the Powertools logger.")

    # --- URL fetching (ingest/web.py, ingest/urlguard.py) -----------------------------
    url_allow_hosts: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(),
        description=(
            "Tests only: exact host or host:port entries exempt from the SSRF guard "
            "(comma list or JSON array). Keep empty in every deployment."
        ),
    )
    url_max_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest body a URL fetch downloads.")
    url_timeout_s: float = Field(20.0, gt=0, description="Total time one fetch attempt may take.")
    url_connect_timeout_s: float = Field(5.0, gt=0, description="Time to resolve and connect to a host.")
    url_max_connections: int = Field(16, ge=1, description="Open connections of one fetch batch, all hosts.")
    url_per_host_concurrency: int = Field(4, ge=1, description="Requests in flight to one host at a time.")
    url_retries: int = Field(3, ge=0, le=10, description="Retries of a transient fetch failure.")
    url_backoff_base_s: float = Field(0.5, ge=0, description="First retry delay; doubles with jitter.")
    url_retry_after_max_s: float = Field(
        10.0, ge=0, description="Longest Retry-After honoured in-process; longer ones fail transiently."
    )
    url_max_redirects: int = Field(5, ge=0, le=20, description="Redirect hops followed, each re-checked.")
    url_max_per_manifest: int = Field(1000, ge=1, description="URLs accepted from one *.urls manifest.")
    url_refetch_after_s: float = Field(
        900.0,
        ge=0,
        description="Seconds within which a re-sent manifest skips a URL already fetched (0: never skip).",
    )
    url_max_bytes_in_flight: int = Field(
        128 * 1024 * 1024,
        ge=1,
        description="Bodies a manifest's fetch holds at once, in bytes (slots of STRATUS_URL_MAX_BYTES).",
    )
    url_user_agent: str = Field(
        "Stratus/0.1 (+https://github.com/stratus-rag)", description="User-Agent of URL fetches."
    )
    url_allowed_content_types: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(),
        description=(
            "Media types a fetched URL may have (comma list or JSON array); empty: every type a parser reads."
        ),
    )

    # --- Sources and syncs (sources/) -------------------------------------------------
    sources_table: str = Field(
        "stratus-sources", description="DynamoDB table of sources, syncs and crawl state."
    )
    source_requests_per_s: float = Field(
        2.0, gt=0, le=1000, description="Politeness: requests per second to one host, all fetchers together."
    )
    source_sync_stale_s: float = Field(
        900.0, gt=0, description="A sync without progress this long is ended FAILED (deleting nothing)."
    )
    sources_tick_s: float = Field(
        60.0, gt=0, description="Local stack: how often due schedules and interrupted syncs are checked."
    )

    # --- Ingestion API (documents_api.py) ----------------------------------------------
    upload_url_expiry_s: int = Field(
        300,
        ge=1,
        le=3600,
        description="Lifetime of a presigned upload URL (POST .../uploads); one key, type, size.",
    )
    upload_max_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="Largest file a presigned upload may declare."
    )
    api_max_documents_per_request: int = Field(
        100, ge=1, description="Inline documents plus URLs one POST .../documents may carry."
    )
    api_max_text_bytes: int = Field(
        1024 * 1024, ge=1, description="Largest inline text of one document (UTF-8 bytes)."
    )
    api_max_body_bytes: int = Field(
        6 * 1024 * 1024,
        ge=1024,
        description="Largest request body the API reads (Content-Length or chunked); larger: 413.",
    )
    api_max_json_depth: int = Field(
        32,
        ge=4,
        le=256,
        description="Deepest nesting of arrays and objects a JSON body may have; deeper: 422.",
    )
    api_body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest time a client may take to send its request body; slower: 408 (slow clients).",
    )
    health_timeout_s: float = Field(
        1.0, gt=0, description="Longest wait for one dependency check of /health/ready."
    )
    health_cold_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest wait for a /health/ready check that has not passed yet on this instance "
        "(a cold start opens the store and its first connections).",
    )
    health_cache_s: float = Field(
        5.0, ge=0, description="How long /health/ready reuses a healthy result (0: check on every call)."
    )

    @field_validator("url_allow_hosts", "url_allowed_content_types", mode="before")
    @classmethod
    def _comma_or_json_set(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return frozenset(json.loads(text))
            return frozenset(item.strip().lower() for item in text.split(",") if item.strip())
        return value

    # --- Chat (stratus/chat: router, providers, budget, prompts) -------------------------
    chat_router_mode: Literal["local-first", "cloud-only", "local-only"] = Field(
        "local-first",
        description="Provider order: local-first (local LLM, then cloud, then extractive), cloud-only, "
        "local-only; the extractive answerer ends every chain when chat_extractive_fallback is on.",
    )
    chat_cloud_providers: str = Field(
        "openai,bedrock", description="Cloud providers in the order tried (comma list of openai, bedrock)."
    )
    chat_extractive_fallback: bool = Field(
        True, description="End every provider chain with the offline extractive answerer."
    )
    chat_default_collection: str = Field(
        "docs", description="Collection of /v1/chat/completions when the model is not stratus/<collection>."
    )
    chat_top_k: int = Field(6, ge=1, le=50, description="Chunks retrieved for a chat question.")
    chat_max_context_tokens: int = Field(
        8000, ge=256, description="Cap on any provider's prompt (context window used, all providers)."
    )
    chat_answer_tokens: int = Field(
        512, ge=16, le=8192, description="Tokens reserved for the answer (default max_tokens)."
    )
    chat_min_chunks: int = Field(
        1, ge=0, description="Budget trimming never drops below this many chunks (truncates instead)."
    )
    chat_history_messages: int = Field(
        6, ge=0, le=50, description="Earlier messages of the conversation kept in the prompt."
    )
    chat_refuse_without_context: bool = Field(
        True, description="Say that nothing relevant was found instead of answering without context."
    )
    chat_rewrite_followups: bool = Field(
        True, description="Rewrite a follow-up into a standalone search query with one LLM call."
    )
    chat_followup_keywords: bool = Field(
        True, description="Without an LLM: add keywords of the previous user turn to a follow-up's query."
    )
    chat_temperature: float = Field(0.2, ge=0, le=2, description="Default sampling temperature.")
    chat_extractive_sentences: int = Field(
        4, ge=1, le=20, description="Sentences the extractive answerer stitches together."
    )
    chat_connect_timeout_s: float = Field(3.0, gt=0, description="Time to connect to an LLM provider.")
    chat_timeout_s: float = Field(
        25.0, gt=0, description="Longest wait for a provider's response or its next streamed chunk."
    )
    chat_deadline_s: float = Field(
        26.0,
        gt=0,
        description="Whole-request bound of a chat answer (rewrite, every provider tried, the stream); on "
        "Lambda the invocation's remaining time less chat_deadline_margin_s when that is shorter.",
    )
    chat_deadline_margin_s: float = Field(
        1.5, ge=0, description="Time kept back from a Lambda invocation's remaining time to send the answer."
    )
    chat_streams_per_key: int = Field(
        4, ge=1, description="Concurrent streamed chat answers one API key may hold (429 beyond)."
    )
    chat_breaker_failures: int = Field(
        3, ge=1, description="Consecutive retryable failures that open a provider's circuit."
    )
    chat_breaker_cooldown_s: float = Field(
        30.0, ge=0, description="Time an open circuit waits before one half-open probe."
    )
    chat_breaker_max_cooldown_s: float = Field(
        300.0, ge=0, description="Longest Retry-After (429) honoured as a circuit cooldown."
    )
    chat_local_health_ttl_s: float = Field(
        15.0, ge=0, description="How long a local LLM health check result is reused."
    )
    chat_local_health_timeout_s: float = Field(
        1.0, gt=0, description="Timeout of the local LLM health check (GET <base>/models)."
    )
    chat_secret_cache_s: int = Field(
        300, ge=0, description="How long API keys read from SSM / Secrets Manager are cached."
    )
    chat_tiktoken_encoding: str = Field(
        "o200k_base",
        description="tiktoken encoding of the token estimate (read from TIKTOKEN_CACHE_DIR; the "
        "encoder's tokenizer when it is not there).",
    )
    local_llm_base_url: str | None = Field(
        None, description="Local OpenAI-compatible server (Ollama: http://127.0.0.1:11434/v1; vLLM)."
    )
    local_llm_model: str = Field("llama3.1:8b", description="Model name of the local server.")
    local_llm_api_key: SecretStr | None = Field(None, description="API key of the local server, if any.")
    local_llm_context_tokens: int = Field(
        4096, ge=256, description="Context window of the local model; longer prompts go to the cloud."
    )
    openai_base_url: str = Field(
        "https://api.openai.com/v1",
        description="Cloud OpenAI-compatible base URL (OpenAI, Groq, OpenRouter, a remote vLLM).",
    )
    openai_api_key: SecretStr | None = Field(
        None, description="API key of the cloud OpenAI-compatible provider (prefer the parameter below)."
    )
    openai_api_key_parameter: str | None = Field(
        None,
        description="SSM parameter name or Secrets Manager secret (arn:...:secret:... or "
        "secretsmanager:<name>) holding the key; enables the openai provider.",
    )
    openai_model: str = Field("gpt-4o-mini", description="Model of the cloud OpenAI-compatible provider.")
    openai_context_tokens: int = Field(
        128000, ge=256, description="Context window of the cloud OpenAI-compatible model."
    )
    bedrock_model_id: str | None = Field(
        None, description="Bedrock model or inference profile id for Converse; enables the bedrock provider."
    )
    bedrock_region: str | None = Field(None, description="Region of Bedrock calls (unset: STRATUS_REGION).")
    bedrock_context_tokens: int = Field(200000, ge=256, description="Context window of the Bedrock model.")

    # --- console, feedback and conversations -------------------------------------------
    feedback_table: str = Field(
        "stratus-feedback", description="DynamoDB table of answer and hit feedback (thumbs, comments)."
    )
    conversations_table: str = Field(
        "stratus-conversations", description="DynamoDB table of server-side chat conversations."
    )
    conversation_ttl_s: int = Field(
        7 * 86400, ge=60, description="A conversation's turns expire this long after its last turn (TTL)."
    )
    conversation_max_messages: int = Field(
        40, ge=2, le=100, description="Latest messages of a conversation kept and sent back as history."
    )
    console_stream_url: str | None = Field(
        None,
        description="Base URL of the streaming Function URL (on AWS); the console sends chat there. "
        "Unset: chat goes to the API's own origin.",
    )
    console_metrics_samples: int = Field(
        2000, ge=10, description="Latest values per metric the Operations screen keeps in-process."
    )

    @property
    def resolved_lancedb_uri(self) -> str:
        """Where the LanceDB database lives."""
        return self.lancedb_uri or f"s3://{self.bucket}/lancedb"


_Config = TypeVar("_Config")


def derive(
    config: type[_Config],
    settings: Settings,
    *,
    prefix: str = "",
    names: Mapping[str, str] | None = None,
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
) -> _Config:
    """A component's config (a dataclass) from the settings: each field takes the setting `prefix + field`.

    `names` maps the fields whose setting is named otherwise; `convert` turns a setting's value into
    the field's. A field without a setting is an AttributeError, never a silent default.
    """
    names, convert = names or {}, convert or {}
    values = {}
    for item in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(settings, names.get(item.name, prefix + item.name))
        values[item.name] = convert[item.name](value) if item.name in convert else value
    return config(**values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, parsed once."""
    return Settings()
