"""One chat request end to end: conversation → search query → retrieval → routed, budgeted answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from stratus.chat import conversation
from stratus.chat.citations import CitationFilter, citations_for, clean_answer
from stratus.chat.deadline import Deadline
from stratus.chat.errors import MidStreamError, NoProviderError, ProviderError, RequestCancelled
from stratus.chat.models import ChatRequest, ChatResponse, ChatUsage, Fallback
from stratus.chat.prompts import LLMRequest, build_answer_request, build_rewrite_request, render
from stratus.chat.router import RouteOutcome, Router
from stratus.observability import MetricName, emit_metric, logger

if TYPE_CHECKING:
    from stratus.chat.providers import Provider
    from stratus.chat.tokens import TokenCounter
    from stratus.retrieval.search import SearchHit, SearchResponse
    from stratus.settings import Settings

# (collection, query, top_k, filters) -> hits; the one place that calls stratus.retrieval.search.
Retriever = Callable[[str, str, int, Any], "SearchResponse"]


def search_adapter() -> Retriever:
    """The retriever over this principal's `services.searcher()` (the search route's wiring)."""

    def retrieve(collection: str, query: str, top_k: int, filters: Any) -> SearchResponse:
        from stratus import services
        from stratus.retrieval.search import SearchRequest

        request = SearchRequest(query=query[: conversation.MAX_QUERY_CHARS], top_k=top_k, filters=filters)
        return services.searcher().search(collection, request)

    return retrieve


def build_providers(settings: Settings, counter: TokenCounter) -> list[Provider]:
    """The configured providers: extractive always; local, openai and bedrock when their settings are set."""
    from stratus.chat.providers import (
        BedrockProvider,
        ExtractiveProvider,
        OpenAICompatibleProvider,
        bedrock_client,
    )
    from stratus.chat.secrets import read_secret

    providers: list[Provider] = [
        ExtractiveProvider(counter, settings.chat_extractive_sentences, settings.chat_max_context_tokens)
    ]
    if settings.local_llm_base_url:
        local_key = settings.local_llm_api_key
        providers.append(
            OpenAICompatibleProvider(
                "local",
                "local",
                settings.local_llm_base_url,
                settings.local_llm_model,
                settings.local_llm_context_tokens,
                lambda: local_key.get_secret_value() if local_key else None,
                settings.chat_connect_timeout_s,
                settings.chat_timeout_s,
            )
        )
    if settings.openai_api_key or settings.openai_api_key_parameter:
        key, parameter = settings.openai_api_key, settings.openai_api_key_parameter

        def openai_key() -> str | None:
            if key is not None:
                return key.get_secret_value()
            assert parameter is not None
            return read_secret(parameter, settings, settings.chat_secret_cache_s)

        providers.append(
            OpenAICompatibleProvider(
                "openai",
                "cloud",
                settings.openai_base_url,
                settings.openai_model,
                settings.openai_context_tokens,
                openai_key,
                settings.chat_connect_timeout_s,
                settings.chat_timeout_s,
            )
        )
    if settings.bedrock_model_id:
        lock = threading.Lock()
        holder: list[Any] = []

        def client() -> Any:
            with lock:
                if not holder:
                    holder.append(
                        bedrock_client(
                            settings.bedrock_region or settings.region,
                            settings.chat_connect_timeout_s,
                            settings.chat_timeout_s,
                        )
                    )
                return holder[0]

        providers.append(BedrockProvider(settings.bedrock_model_id, settings.bedrock_context_tokens, client))
    return providers


class StreamSlots:
    """Concurrent streamed answers per API key, capped (thread-safe)."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def acquire(self, key_id: str) -> bool:
        """Take a slot for `key_id`; False when the key already holds `per_key` streams."""
        with self._lock:
            held = self._held.get(key_id, 0)
            if held >= self.per_key:
                return False
            self._held[key_id] = held + 1
            return True

    def release(self, key_id: str) -> None:
        """Give a slot back."""
        with self._lock:
            held = self._held.get(key_id, 0) - 1
            if held > 0:
                self._held[key_id] = held
            else:
                self._held.pop(key_id, None)

    def total(self) -> int:
        """Slots held now, all keys."""
        with self._lock:
            return sum(self._held.values())


@dataclass
class Prepared:
    """A request after query rewriting and retrieval, before generation."""

    request: ChatRequest
    collection: str
    question: str
    history: list[tuple[str, str]]
    query: str
    query_rewrite: str
    hits: list[SearchHit]
    degraded: list[str]
    started: float
    deadline: Deadline
    timings: dict[str, float] = field(default_factory=dict)
    fallbacks: list[Fallback] = field(default_factory=list)
    skip: dict[str, str] = field(default_factory=dict)

    @property
    def refuse(self) -> bool:
        """Nothing was retrieved (the caller checks the setting)."""
        return not self.hits


class ChatService:
    """Chat over a retriever and a router; built once per process (see `get_chat_service`)."""

    def __init__(
        self,
        settings: Settings,
        retrieve: Retriever,
        counter: TokenCounter,
        providers: list[Provider] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.retrieve = retrieve
        self.counter = counter
        self.router = Router(
            settings, providers if providers is not None else build_providers(settings, counter), clock
        )
        self.streams = StreamSlots(settings.chat_streams_per_key)

    # -- before generation -----------------------------------------------------------------

    def deadline(self, scope: Mapping[str, Any] | None = None) -> Deadline:
        """A new request's deadline: the settings' bound, or the Lambda invocation's remaining time."""
        return Deadline.for_request(
            self.settings.chat_deadline_s, self.settings.chat_deadline_margin_s, scope
        )

    def counters(self) -> dict[str, int]:
        """In-flight provider calls, probes, provider responses and streams (all 0 when idle)."""
        return {**self.router.counters(), "streams": self.streams.total()}

    def prepare(self, request: ChatRequest, collection: str, deadline: Deadline | None = None) -> Prepared:
        """Rewrite a follow-up, retrieve; `deadline` (default: the settings' bound) covers the whole request.

        Raises CollectionNotFoundError, FilterError and ProviderNotAllowedError before any generation.
        """
        started = time.perf_counter()
        deadline = deadline if deadline is not None else self.deadline()
        self.router.chain(request.provider)  # a provider the mode does not allow fails before any work
        question, history = conversation.split_conversation(
            request.messages, self.settings.chat_history_messages
        )
        prepared = Prepared(
            request, collection, question, history, question, "none", [], [], started, deadline
        )
        if conversation.previous_user_turn(history) is not None:
            t0 = time.perf_counter()
            self._rewrite(prepared)
            prepared.timings["rewrite_ms"] = _ms(t0)
        t0 = time.perf_counter()
        found = self.retrieve(
            collection, prepared.query, request.top_k or self.settings.chat_top_k, request.filters
        )
        prepared.timings["retrieve_ms"] = _ms(t0)
        prepared.hits = list(found.hits)
        prepared.degraded = list(found.degraded)
        return prepared

    def _rewrite(self, prepared: Prepared) -> None:
        only = prepared.request.provider
        use_llm = self.settings.chat_rewrite_followups and only != "extractive" and self.router.has_llm()
        if use_llm:
            outcome = RouteOutcome()
            rewrite = build_rewrite_request(
                prepared.question, prepared.history, self.settings.chat_history_messages
            )
            try:
                text = "".join(
                    d.text
                    for d in self.router.run(
                        lambda _: rewrite,
                        outcome,
                        stream=False,
                        only=only,
                        llm_only=True,
                        deadline=prepared.deadline,
                    )
                )
                prepared.query = conversation.clean_rewrite(text, prepared.question)
                prepared.query_rewrite = "llm"
            except (ProviderError, NoProviderError, RequestCancelled) as error:
                logger.warning(
                    "query rewrite failed; using keywords", extra={"error_type": type(error).__name__}
                )
            for f in outcome.fallbacks:
                if f.outcome == "failed":
                    prepared.skip[f.provider] = f"failed in this request's query rewrite ({f.reason})"
                    prepared.fallbacks.append(f.model_copy(update={"reason": f"query rewrite: {f.reason}"}))
            if prepared.query_rewrite == "llm":
                return
        query, added = conversation.keyword_query(
            prepared.question, prepared.history, self.settings.chat_followup_keywords
        )
        prepared.query = query
        prepared.query_rewrite = "keywords" if added else "none"

    def _build(self, prepared: Prepared, provider: Provider) -> LLMRequest:
        window = min(provider.context_tokens, self.settings.chat_max_context_tokens)
        return build_answer_request(
            prepared.question,
            prepared.history,
            prepared.hits,
            self.counter,
            window,
            prepared.request.max_tokens or self.settings.chat_answer_tokens,
            self.settings.chat_min_chunks,
            self.settings.chat_temperature
            if prepared.request.temperature is None
            else prepared.request.temperature,
            prepared.collection,
        )

    # -- generation --------------------------------------------------------------------------

    def answer(self, request: ChatRequest, collection: str) -> ChatResponse:
        """The whole answer (non-streaming)."""
        return self.respond(self.prepare(request, collection))

    def respond(self, prepared: Prepared) -> ChatResponse:
        """Generate the answer of a prepared request. Raises ProviderError or NoProviderError."""
        if prepared.refuse and self.settings.chat_refuse_without_context:
            return self._refusal(prepared)
        outcome = RouteOutcome(fallbacks=list(prepared.fallbacks))
        t0 = time.perf_counter()
        try:
            text = "".join(
                d.text
                for d in self.router.run(
                    partial(self._build, prepared),
                    outcome,
                    stream=False,
                    only=prepared.request.provider,
                    skip=prepared.skip,
                    deadline=prepared.deadline,
                )
            )
        except (ProviderError, NoProviderError):
            emit_metric(MetricName.CHAT_ERRORS, 1)
            raise
        prepared.timings["generate_ms"] = _ms(t0)
        assert outcome.request is not None
        assert outcome.provider is not None
        answer, citations = clean_answer(text, outcome.request.chunks)
        return self._finish(prepared, outcome, answer, citations)

    def events(self, prepared: Prepared) -> Generator[tuple[str, dict[str, Any]], None, None]:
        """Server-sent events: retrieval, delta…, citations, done — or error (no fallback after a token)."""
        yield "retrieval", self._retrieval_event(prepared)
        if prepared.refuse and self.settings.chat_refuse_without_context:
            response = self._refusal(prepared)
            yield "delta", {"text": response.answer}
            yield "citations", {"citations": []}
            yield "done", response.model_dump()
            return
        outcome = RouteOutcome(fallbacks=list(prepared.fallbacks))
        t0 = time.perf_counter()
        marker_filter: CitationFilter | None = None
        parts: list[str] = []
        routed = self.router.run(
            partial(self._build, prepared),
            outcome,
            stream=True,
            only=prepared.request.provider,
            skip=prepared.skip,
            deadline=prepared.deadline,
        )
        try:
            for delta in routed:
                if marker_filter is None:
                    assert outcome.request is not None
                    marker_filter = CitationFilter({c.n for c in outcome.request.chunks})
                    prepared.timings["first_token_ms"] = _ms(prepared.started)
                text = marker_filter.feed(delta.text)
                if text:
                    parts.append(text)
                    yield "delta", {"text": text}
            if marker_filter is not None:
                tail = marker_filter.flush()
                if tail:
                    parts.append(tail)
                    yield "delta", {"text": tail}
        except RequestCancelled:
            return  # nobody is listening
        except MidStreamError as error:
            emit_metric(MetricName.CHAT_ERRORS, 1)
            yield "error", _error_event(error.error, outcome, partial_answer=True)
            return
        except (ProviderError, NoProviderError) as error:
            emit_metric(MetricName.CHAT_ERRORS, 1)
            yield "error", _error_event(error, outcome, partial_answer=False)
            return
        finally:
            routed.close()  # closed here, not by the garbage collector: the probe and connection go now
        prepared.timings["generate_ms"] = _ms(t0)
        assert outcome.request is not None
        chunks = outcome.request.chunks
        citations = citations_for(marker_filter.cited if marker_filter else [], chunks)
        yield "citations", {"citations": [c.model_dump() for c in citations]}
        yield "done", self._finish(prepared, outcome, "".join(parts), citations).model_dump()

    # -- helpers --------------------------------------------------------------------------------

    def _retrieval_event(self, prepared: Prepared) -> dict[str, Any]:
        return {
            "query": prepared.query,
            "query_rewrite": prepared.query_rewrite,
            "hits": [
                {
                    "chunk_id": h.chunk_id,
                    "doc_id": h.doc_id,
                    "source": h.source,
                    "title": h.title,
                    "section": h.section,
                    "page": h.page,
                    "sheet": h.sheet,
                    "row_start": h.row_start,
                    "row_end": h.row_end,
                    "score": h.score,
                }
                for h in prepared.hits
            ],
            "degraded": prepared.degraded,
            "timings": dict(prepared.timings),
        }

    def _refusal(self, prepared: Prepared) -> ChatResponse:
        emit_metric(MetricName.CHAT_REFUSALS, 1)
        outcome = RouteOutcome(fallbacks=list(prepared.fallbacks), refused=True)
        return self._finish(prepared, outcome, render("no_context", collection=prepared.collection), [])

    def _finish(
        self, prepared: Prepared, outcome: RouteOutcome, answer: str, citations: list[Any]
    ) -> ChatResponse:
        request = outcome.request
        if outcome.usage is not None:
            usage = ChatUsage(
                prompt_tokens=outcome.usage.prompt_tokens,
                completion_tokens=outcome.usage.completion_tokens,
                estimated=False,
            )
        else:
            usage = ChatUsage(
                prompt_tokens=request.prompt_tokens if request else 0,
                completion_tokens=self.counter.count(answer),
                estimated=True,
            )
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        usage.token_estimator = self.counter.name
        if request is not None:
            usage.context_chunks = len(request.chunks)
            usage.dropped_chunks = request.dropped_chunks
            usage.truncated_chunks = request.truncated_chunks
        prepared.timings["total_ms"] = _ms(prepared.started)
        provider = outcome.provider
        emit_metric(MetricName.CHAT_REQUESTS, 1)
        emit_metric(MetricName.CHAT_LATENCY_MS, prepared.timings["total_ms"], "Milliseconds")
        emit_metric(MetricName.TOKENS_IN, usage.prompt_tokens)
        emit_metric(MetricName.TOKENS_OUT, usage.completion_tokens)
        logger.info(
            "chat answered",
            extra={
                "provider": provider.name if provider else "none",
                "fallbacks": [f"{f.provider}:{f.outcome}" for f in outcome.fallbacks],
                "context_chunks": usage.context_chunks,
                "latency_ms": prepared.timings["total_ms"],
            },
        )
        return ChatResponse(
            answer=answer,
            citations=citations,
            provider=provider.name if provider else "none",
            model=provider.model if provider else "",
            fallbacks=outcome.fallbacks,
            usage=usage,
            timings=dict(prepared.timings),
            query=prepared.query,
            query_rewrite=prepared.query_rewrite,
            refused=outcome.refused,
            degraded=prepared.degraded,
        )


def _error_event(
    error: ProviderError | NoProviderError, outcome: RouteOutcome, partial_answer: bool
) -> dict[str, Any]:
    if isinstance(error, ProviderError):
        detail: dict[str, Any] = {
            "kind": error.kind.value,
            "message": error.reason(),
            "provider": error.provider,
        }
    else:
        detail = {"kind": "no_provider", "message": str(error), "provider": None}
    return {
        "error": detail,
        "partial": partial_answer,
        "provider": outcome.provider.name if outcome.provider else None,
        "fallbacks": [f.model_dump() for f in outcome.fallbacks],
    }


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)


_service_lock = threading.Lock()
_service: tuple[Settings, ChatService] | None = None


def get_chat_service() -> ChatService:
    """The process-wide chat service, rebuilt when the settings object changes (services.reset)."""
    global _service
    from stratus.chat.tokens import get_counter
    from stratus.settings import get_settings

    settings = get_settings()
    with _service_lock:
        if _service is None or _service[0] is not settings:
            counter = get_counter(settings.chat_tiktoken_encoding)
            _service = (settings, ChatService(settings, search_adapter(), counter))
        return _service[1]
