"""Request and response shapes of the chat API and of the OpenAI-compatible endpoint."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "user", "assistant"]
ProviderName = Literal["extractive", "local", "openai", "bedrock"]


class ChatMessage(BaseModel):
    """One turn of the conversation; the client sends every earlier turn (the server keeps no state)."""

    model_config = ConfigDict(extra="ignore")

    role: Role
    content: str = Field(..., max_length=20000)


class ChatRequest(BaseModel):
    """A chat request over one collection."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(
        ..., min_length=1, max_length=100, description="The conversation; the last message is the question."
    )
    top_k: int | None = Field(
        None, ge=1, le=50, description="Chunks to retrieve (default STRATUS_CHAT_TOP_K)."
    )
    filters: dict[str, Any] | list[Any] | None = Field(
        None, description="Metadata filter of the retrieval, as in search (see docs/search.md)."
    )
    stream: bool = Field(False, description="Answer with Server-Sent Events.")
    provider: ProviderName | None = Field(
        None, description="Use only this provider (no fallback); default: the router decides."
    )
    max_tokens: int | None = Field(None, ge=1, le=8192, description="Longest answer in tokens.")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    conversation_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{8,64}$",
        description="Keep the conversation server-side (Bedrock's sessionId): its stored turns come before "
        "`messages`, and the answer is added to it. A new id starts a conversation.",
    )

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user" or not messages[-1].content.strip():
            raise ValueError("the last message must be a non-empty user message")
        if not any(m.role == "user" for m in messages[:-1]):
            # A question with no earlier turn to lean on is searched as it is: the search route's check.
            from stratus.retrieval.search import query_problem

            problem = query_problem(messages[-1].content)
            if problem is not None:
                raise ValueError(problem.removeprefix("query: "))
        return messages


class Citation(BaseModel):
    """A source the answer cites as [n]; n is the chunk's number in the prompt."""

    n: int
    chunk_id: str
    doc_id: str
    source: str
    title: str = ""
    section: str = ""
    page: int | None = None
    sheet: str | None = None
    row_start: int | None = None
    row_end: int | None = None


class Fallback(BaseModel):
    """A provider that was skipped or failed before the one that answered."""

    provider: str
    outcome: Literal["skipped", "failed"]
    reason: str
    status: int | None = None


class ChatUsage(BaseModel):
    """Token counts: the provider's own when it reports them, else estimated."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = True
    token_estimator: str = ""
    context_chunks: int = 0
    dropped_chunks: int = 0
    truncated_chunks: int = 0


class ChatResponse(BaseModel):
    """The answer, its citations, who answered and how."""

    answer: str
    citations: list[Citation]
    provider: str
    model: str = ""
    fallbacks: list[Fallback] = Field(default_factory=list)
    usage: ChatUsage
    timings: dict[str, float] = Field(default_factory=dict)
    query: str = Field("", description="The search query used (a follow-up is rewritten).")
    query_rewrite: Literal["none", "llm", "keywords"] = "none"
    refused: bool = Field(
        False, description="True when nothing relevant was retrieved and the answer says so."
    )
    degraded: list[str] = Field(default_factory=list, description="Retrievers that failed.")


# --- OpenAI-compatible /v1/chat/completions ------------------------------------------------------


class OpenAIMessage(BaseModel):
    """An OpenAI chat message; content may be a string or a list of text parts."""

    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (text parts joined)."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type", "text") == "text")


class OpenAIChatRequest(BaseModel):
    """The subset of OpenAI's chat completion request Stratus honours; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        "stratus", description="stratus/<collection>, or anything else: the default collection."
    )
    messages: list[OpenAIMessage] = Field(..., min_length=1, max_length=100)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0, le=2)
