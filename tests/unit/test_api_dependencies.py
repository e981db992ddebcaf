"""Routes take their stores as FastAPI dependencies: a test swaps one without touching the environment."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratus.access.auth import Principal, Role, UnauthenticatedError
from stratus.api.app import create_app
from stratus.api.deps import (
    document_table_dep,
    key_verifier_dep,
    principal_dep,
    rate_limiter_dep,
    searcher_dep,
)
from stratus.models import DocumentStatus
from stratus.retrieval.search import (
    CollectionNotFoundError,
    FusionConfig,
    RerankUnavailableError,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from stratus.retrieval.searcher import Searcher
from stratus.stores.documents import DocumentRecord

DOC_ID = "0" * 31 + "1"


class OneDocument:
    """A documents table that holds one record (what the route reads of the real one)."""

    def __init__(self, record: DocumentRecord) -> None:
        self.record = record
        self.asked: list[tuple[str, str]] = []

    def get(self, collection: str, doc_id: str) -> DocumentRecord | None:
        self.asked.append((collection, doc_id))
        return self.record if (collection, doc_id) == (self.record.collection, self.record.doc_id) else None


def reader(collection: str) -> Principal:
    return Principal(key_id="k" * 12, name="reader", collections=(collection,), roles=frozenset({Role.READ}))


def test_a_route_reads_the_documents_table_it_is_given() -> None:
    # given the app with its documents table and its key check overridden
    app = create_app()
    table = OneDocument(
        DocumentRecord(collection="docs", doc_id=DOC_ID, source="a.md", status=DocumentStatus.INDEXED)
    )
    overrides: dict[Any, Any] = {document_table_dep: lambda: table, principal_dep: lambda: reader("docs")}
    app.dependency_overrides.update(overrides)
    client = TestClient(app)

    # when the document and an absent one are asked for
    found = client.get(f"/v1/collections/docs/documents/{DOC_ID}")
    absent = client.get(f"/v1/collections/docs/documents/{'f' * 32}")

    # then the route answered from the given table: the record, then a 404
    assert found.status_code == 200
    assert (found.json()["source"], found.json()["status"]) == ("a.md", "INDEXED")
    assert absent.status_code == 404
    assert table.asked == [("docs", DOC_ID), ("docs", "f" * 32)]


def test_the_key_check_still_runs_before_the_store_is_read() -> None:
    # given a key that may read another collection only
    app = create_app()
    table = OneDocument(DocumentRecord(collection="docs", doc_id=DOC_ID))
    app.dependency_overrides.update(
        {document_table_dep: lambda: table, principal_dep: lambda: reader("other")}
    )

    # when it asks for a document of "docs"
    response = TestClient(app).get(f"/v1/collections/docs/documents/{DOC_ID}")

    # then it is refused and the table was never read
    assert response.status_code == 403
    assert table.asked == []


class AnsweringSearcher:
    """A searcher that answers every query with one hit (what the route reads of the real one)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def search(self, collection: str, request: SearchRequest) -> SearchResponse:
        self.asked.append((collection, request.query))
        hit = SearchHit(chunk_id="c1", doc_id=DOC_ID, source="a.md", text="aspirin", score=1.0)
        return SearchResponse(hits=[hit], mode="hybrid")


def test_the_search_route_asks_the_searcher_it_is_given() -> None:
    # given the app with its searcher and its key check overridden
    app = create_app()
    searcher = AnsweringSearcher()
    app.dependency_overrides.update({searcher_dep: lambda: searcher, principal_dep: lambda: reader("docs")})

    # when a query is searched, and a query of only punctuation
    found = TestClient(app).post("/v1/collections/docs/search", json={"query": "aspirin dose"})
    refused = TestClient(app).post("/v1/collections/docs/search", json={"query": "?!"})

    # then the route answered from the given searcher, which never saw the refused query
    assert found.status_code == 200
    assert [h["chunk_id"] for h in found.json()["hits"]] == ["c1"]
    assert refused.status_code == 422
    assert searcher.asked == [("docs", "aspirin dose")]


class NoCollections:
    """A chunk store without collections."""

    def reader(self, collection: str, with_vectors: bool = False) -> None:
        return None


def test_the_searcher_loads_the_reranker_only_for_a_rerank_request() -> None:
    # given a searcher whose reranker is not configured, counting the times it is asked for
    asked: list[int] = []

    def no_reranker() -> None:
        asked.append(1)
        return

    searcher = Searcher(NoCollections(), encoder=None, fusion=FusionConfig(), reranker=no_reranker)  # type: ignore[arg-type]

    # when a plain search and a rerank search are made
    with pytest.raises(CollectionNotFoundError):
        searcher.search("docs", SearchRequest(query="aspirin"))
    with pytest.raises(RerankUnavailableError):
        searcher.search("docs", SearchRequest(query="aspirin", rerank=True))

    # then only the rerank request asked for the cross-encoder
    assert asked == [1]


class OneKey:
    """A key verifier that knows one key."""

    def __init__(self, key: str, principal: Principal) -> None:
        self.key, self.principal = key, principal

    def verify(self, key: str | None) -> Principal:
        if key != self.key:
            raise UnauthenticatedError("invalid API key")
        return self.principal


class Allowance:
    """A rate limiter that lets `allowed` requests through, then asks for a 2.5 s wait."""

    def __init__(self, allowed: int) -> None:
        self.left = allowed

    def check(self, key_id: str, per_s: float | None = None, burst: int | None = None) -> float:
        self.left -= 1
        return 0.0 if self.left >= 0 else 2.5


def test_the_key_check_uses_the_verifier_and_rate_limiter_it_is_given() -> None:
    # given the app with a verifier that knows one key and a limiter that allows one request
    app = create_app()
    table = OneDocument(DocumentRecord(collection="docs", doc_id=DOC_ID, source="a.md"))
    overrides: dict[Any, Any] = {
        document_table_dep: lambda: table,
        key_verifier_dep: lambda: OneKey("the-key", reader("docs")),
    }
    limiter = Allowance(1)  # one object for the whole test: a dependency is called per request
    overrides[rate_limiter_dep] = lambda: limiter
    app.dependency_overrides.update(overrides)
    client = TestClient(app)
    url = f"/v1/collections/docs/documents/{DOC_ID}"

    # when an unknown key, the known key, and the known key again ask
    unknown = client.get(url, headers={"x-api-key": "another-key"})
    first = client.get(url, headers={"x-api-key": "the-key"})
    second = client.get(url, headers={"Authorization": "Bearer the-key"})

    # then the unknown key is a 401, the first request is answered, the second waits its turn
    assert unknown.status_code == 401
    assert first.status_code == 200
    assert (second.status_code, second.headers["Retry-After"]) == (429, "3")
    assert table.asked == [("docs", DOC_ID)]
