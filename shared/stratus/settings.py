"""The one typed settings object: every knob is a STRATUS_* environment variable."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
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
    bucket: str = Field("stratus-local", description="S3 bucket holding inbox/, staging/ and lancedb/.")
    inbox_prefix: str = Field("inbox/", description="Key prefix users upload documents under.")
    staging_prefix: str = Field("staging/", description="Key prefix of intermediate stage outputs.")
    lancedb_uri: str | None = Field(
        None,
        description="LanceDB location: a local folder or s3:// URI. Unset: s3://<bucket>/lancedb.",
    )
    documents_table: str = Field("stratus-documents", description="DynamoDB table of document status.")
    fetch_queue_url: str | None = Field(None, description="SQS queue the fetch stage reads.")
    embed_queue_url: str | None = Field(None, description="SQS queue the embed stage reads.")
    index_queue_url: str | None = Field(None, description="SQS queue the index stage reads.")

    # --- Embedding ---------------------------------------------------------------------
    model_dir: Path = Field(
        default_factory=_default_model_dir,
        description="Folder with model.onnx, tokenizer.json and manifest.json.",
    )
    model_variant: Literal["fp32", "int8"] = Field(
        "int8", description="Which ONNX graph of the model folder to run."
    )
    onnx_intra_op_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0: one per core).")
    onnx_providers: str = Field(
        "auto", description="Comma list of onnxruntime providers, or 'auto' (CUDA when present, else CPU)."
    )
    embed_max_tokens: int = Field(256, ge=8, le=512, description="Tokens per text the encoder sees.")
    embed_batch_tokens: int = Field(
        8192, ge=256, description="Token budget of one encoder batch (texts x padded length)."
    )
    query_cache_size: int = Field(1024, ge=0, description="Query embeddings kept in the LRU cache.")

    # --- Chunking ----------------------------------------------------------------------
    chunk_tokens: int = Field(200, ge=16, le=512, description="Target chunk size in encoder tokens.")
    chunk_overlap_tokens: int = Field(32, ge=0, le=256, description="Tokens shared by neighbouring chunks.")
    max_document_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Largest document accepted.")

    # --- Search ------------------------------------------------------------------------
    search_default_top_k: int = Field(5, ge=1, le=100, description="top_k when a request names none.")
    search_candidates: int = Field(50, ge=1, le=1000, description="Candidates per retriever before fusion.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant k.")
    rrf_vector_weight: float = Field(1.0, ge=0, description="Weight of the vector ranking in fusion.")
    rrf_keyword_weight: float = Field(1.0, ge=0, description="Weight of the full-text ranking in fusion.")
    read_consistency_s: float = Field(
        2.0, ge=0, description="Longest time the API may serve a table version older than the latest."
    )

    # --- Maintenance -------------------------------------------------------------------
    vector_index_min_rows: int = Field(
        100_000, ge=256, description="Rows a table needs before maintenance builds an ANN index."
    )
    keep_versions_s: float = Field(3600, ge=0, description="Table versions older than this are pruned.")

    # --- API and local stack -----------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the local API binds.")
    api_port: int = Field(8000, ge=0, le=65535, description="Port of the local API (0: any free port).")
    local_visibility_timeout_s: int | None = Field(
        None, ge=0, description="Local stack only: replaces the template's queue visibility timeouts."
    )
    local_poll_wait_s: int = Field(1, ge=0, le=20, description="Local stack only: SQS long-poll wait.")
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
    url_user_agent: str = Field(
        "Stratus/0.1 (+https://github.com/stratus-rag)", description="User-Agent of URL fetches."
    )
    url_allowed_content_types: Annotated[frozenset[str], NoDecode] = Field(
        frozenset({"text/html", "text/plain", "text/markdown", "application/pdf", "application/xhtml+xml"}),
        description="Media types a fetched URL may have (comma list or JSON array).",
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

    @property
    def resolved_lancedb_uri(self) -> str:
        """Where the LanceDB database lives."""
        return self.lancedb_uri or f"s3://{self.bucket}/lancedb"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, parsed once."""
    return Settings()
