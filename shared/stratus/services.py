"""Process-wide stores and models built from settings: created on first use, reused while warm.

Stores that hold AWS clients are cached per principal (`aws.current_credentials()`): on Lambda
there is one (the role's, from the environment); the local stack runs each function's pollers and
the API with that function's role session, so each sees only what its role grants.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from stratus.settings import get_settings
from stratus.stores import aws

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class _Cached(Protocol[_T_co]):
    def __call__(self, *args: Any) -> _T_co: ...

    def cache_clear(self) -> None: ...


def per_principal(function: Callable[..., _T]) -> _Cached[_T]:
    """`functools.cache`, keyed also by the current AWS principal (cache_clear kept)."""
    cached = cache(lambda _principal, *args: function(*args))

    @functools.wraps(function)
    def wrapper(*args: Any) -> _T:
        return cached(aws.current_credentials(), *args)

    wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from stratus.access.audit import AuditLog
    from stratus.access.auth import KeyVerifier
    from stratus.access.ratelimit import RateLimiter
    from stratus.retrieval.searcher import Searcher
    from stratus.stores.audit import AuditTable
    from stratus.stores.blobs import BlobStore
    from stratus.stores.collections import CollectionSettingsStore
    from stratus.stores.conversations import ConversationTable
    from stratus.stores.documents import DocumentTable
    from stratus.stores.feedback import FeedbackTable
    from stratus.stores.gateway import GatewayKeys, UsagePlans
    from stratus.stores.keys import KeyTable
    from stratus.stores.queues import MessageQueue
    from stratus.stores.vectors import ChunkStore


@per_principal
def blob_store() -> BlobStore:
    """The bucket of inbox, staging and LanceDB objects."""
    from stratus.stores.blobs import BlobStore

    return BlobStore(aws.client("s3"), get_settings().bucket)


def collection_settings() -> CollectionSettingsStore:
    """Per-collection settings, kept in the documents table."""
    from stratus.stores.collections import CollectionSettingsStore

    settings = get_settings()
    return CollectionSettingsStore(
        aws.client("dynamodb"), settings.documents_table, settings.collection_generation_ttl_s
    )


@per_principal
def document_table() -> DocumentTable:
    """The DynamoDB documents table."""
    from stratus.stores.documents import DocumentTable

    return DocumentTable(aws.client("dynamodb"), get_settings().documents_table)


@per_principal
def key_table() -> KeyTable:
    """The DynamoDB API keys table (keys by hash, and rate-limit buckets)."""
    from stratus.stores.keys import KeyTable

    return KeyTable(aws.client("dynamodb"), get_settings().api_keys_table)


@per_principal
def feedback_table() -> FeedbackTable:
    """The DynamoDB feedback table (ratings of answers and hits)."""
    from stratus.stores.feedback import FeedbackTable

    return FeedbackTable(aws.client("dynamodb"), get_settings().feedback_table)


@per_principal
def conversation_table() -> ConversationTable:
    """The DynamoDB table of server-side chat conversations."""
    from stratus.stores.conversations import ConversationTable

    return ConversationTable(aws.client("dynamodb"), get_settings().conversations_table)


@per_principal
def audit_table() -> AuditTable:
    """The DynamoDB audit table of administrative actions."""
    from stratus.stores.audit import AuditTable

    settings = get_settings()
    return AuditTable(aws.client("dynamodb"), settings.audit_table, settings.audit_retention_days)


def audit_log() -> AuditLog:
    """The audit log of administrative actions, writing to the audit table."""
    from stratus.access.audit import AuditLog

    return AuditLog(audit_table())


@per_principal
def key_verifier() -> KeyVerifier:
    """The process-wide key verifier and its short cache of verified keys."""
    from stratus.access.auth import KeyVerifier

    return KeyVerifier(key_table(), get_settings().api_key_cache_s)


@per_principal
def usage_plans() -> UsagePlans:
    """API Gateway usage plans by API stage (the key routes mirror keys into the stage's plan)."""
    from stratus.stores.gateway import UsagePlans

    return UsagePlans(aws.client("apigateway"))


def gateway_keys(api_stage: tuple[str, str] | None = None) -> GatewayKeys | None:
    """Where keys are mirrored: STRATUS_API_USAGE_PLAN_ID's plan, else the one usage plan of `api_stage`
    (the API Gateway (apiId, stage) serving the request), else None (not behind API Gateway: no mirror).
    """
    from stratus.access.auth import GatewayMirrorError
    from stratus.observability import logger
    from stratus.settings import get_settings
    from stratus.stores import aws
    from stratus.stores.gateway import GatewayKeys

    plan = get_settings().api_usage_plan_id
    if plan is None and api_stage is not None:
        api_id, stage = api_stage
        try:
            plans = usage_plans().of_stage(api_id, stage)
        except Exception as error:
            raise GatewayMirrorError(
                f"could not list the API Gateway usage plans of API {api_id} stage {stage}: {error}"
            ) from error
        if len(plans) > 1:
            # A gateway key may not be on two plans of the same stage: which one is a deployer's choice.
            raise GatewayMirrorError(
                f"usage plans {', '.join(plans)} all cover API {api_id} stage {stage}; set "
                "STRATUS_API_USAGE_PLAN_ID to the one keys belong to"
            )
        if not plans:
            logger.warning("no usage plan covers the API stage; keys are not mirrored", extra={"api": api_id})
            return None
        plan = plans[0]
    if plan is None:
        return None
    return GatewayKeys(aws.client("apigateway"), plan)


def gateway_disabler() -> GatewayKeys:
    """API Gateway's keys, to disable a revoked key's copy (no usage plan needed)."""
    from stratus.stores.gateway import GatewayKeys

    return GatewayKeys(aws.client("apigateway"))


@per_principal
def rate_limiter() -> RateLimiter:
    """Per-key token buckets in the backend the settings name."""
    from stratus.access.ratelimit import DynamoBuckets, Limit, MemoryBuckets, RateLimiter

    settings = get_settings()
    buckets = DynamoBuckets(key_table()) if settings.rate_limit_backend == "dynamodb" else MemoryBuckets()
    return RateLimiter(buckets, Limit(settings.rate_limit_per_s, settings.rate_limit_burst))


@per_principal
def queue(stage: str) -> MessageQueue:
    """The SQS queue read by `stage` (fetch, embed or index)."""
    from stratus.stores.queues import MessageQueue

    url = getattr(get_settings(), f"{stage}_queue_url")
    if not url:
        raise RuntimeError(f"STRATUS_{stage.upper()}_QUEUE_URL is not set")
    return MessageQueue(aws.client("sqs"), url)


@per_principal
def chunk_store() -> ChunkStore:
    """The LanceDB chunk tables; reads see other writers' commits within read_consistency_s."""
    from stratus.stores.vectors import ChunkStore, handle_interval_s, storage_options_for

    settings = get_settings()
    uri = settings.resolved_lancedb_uri
    replica = None
    if uri.startswith("s3://") and settings.search_replica_dir is not None:
        import hashlib

        from stratus.stores.replica import TableReplica

        # One folder per store (bucket, prefix and endpoint): replicas of different stores never mix.
        key = hashlib.sha256(f"{settings.aws_endpoint_url}|{uri}".encode()).hexdigest()[:16]
        root = settings.search_replica_dir / key
        replica = TableReplica(
            aws.client("s3"),
            uri,
            root,
            handle_interval_s(settings.read_consistency_s, settings.search_memory_max_rows),
            max_bytes=settings.search_replica_max_bytes,
        )
    storage_options = storage_options_for(
        uri,
        settings.region,
        settings.aws_endpoint_url,
        connect_timeout_s=settings.aws_connect_timeout_s,
        timeout_s=settings.lancedb_timeout_s,
    )
    credentials = aws.current_credentials()
    if credentials is not None and uri.startswith("s3://"):
        # LanceDB's object store signs its own requests: hand it the same principal's keys.
        storage_options["aws_access_key_id"] = credentials.access_key_id
        storage_options["aws_secret_access_key"] = credentials.secret_access_key
        if credentials.session_token:
            storage_options["aws_session_token"] = credentials.session_token
    return ChunkStore(
        uri,
        storage_options,
        read_consistency_s=settings.read_consistency_s,
        filter_fields=settings.filter_fields,
        replica=replica,
        memory_max_rows=settings.search_memory_max_rows,
        generations=collection_settings().generation,
        compact_every=settings.index_compact_every,
        # Never within the readers' window: a version they may still read keeps its files.
        compact_keep_s=max(settings.index_compact_keep_s, 10 * settings.read_consistency_s),
    )


def searcher() -> Searcher:
    """Search over this principal's chunk store with the process-wide encoder and reranker."""
    from stratus.embedding.encoder import get_encoder
    from stratus.retrieval.rerank import get_reranker
    from stratus.retrieval.search import FusionConfig
    from stratus.retrieval.searcher import Searcher

    return Searcher(chunk_store(), get_encoder(), FusionConfig.from_settings(get_settings()), get_reranker)


@cache
def chunk_tokenizer() -> Tokenizer:
    """The encoder's tokenizer alone (no ONNX session): what the fetch stage chunks with."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(get_settings().model_dir / "tokenizer.json"))


def reset() -> None:
    """Forget every cached client, store and model (tests and the local stack use this)."""
    for cached in (
        blob_store,
        document_table,
        key_table,
        feedback_table,
        conversation_table,
        audit_table,
        key_verifier,
        usage_plans,
        rate_limiter,
        queue,
        chunk_store,
        chunk_tokenizer,
    ):
        cached.cache_clear()
    aws.clear_clients()
    get_settings.cache_clear()
    from stratus.retrieval.rerank import get_reranker

    get_reranker.cache_clear()
    try:
        from stratus.embedding.encoder import get_encoder
    except ImportError:
        return
    get_encoder.cache_clear()
