"""Search over HTTP against an S3-backed store on the emulator: contract, filters, rerank, replica."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from fakes.chunks import single_chunk_batch

from stratus import services
from stratus.stores import aws
from stratus.stores.replica import TableReplica
from stratus.stores.schema import chunk_rows
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTION = "library"
FIELDS = '{"year": "int", "category": "string"}'
DOCS = [
    (
        "tides.md",
        "Tides",
        "The moon pulls the oceans and causes the tides twice a day.",
        {"year": 2021, "category": "sea"},
    ),
    (
        "bread.md",
        "Bread",
        "Bake bread from flour, water, yeast and salt in a hot oven.",
        {"year": 2019, "category": "food"},
    ),
    ("lava.md", "Volcanoes", "A volcano erupts molten lava and ash.", {"year": 2023, "category": "earth"}),
    (
        "quote.md",
        "It's quoted",
        "O'Brien's notes on the sea and the tides.",
        {"year": 2022, "category": "it's"},
    ),
]


def build_length_reranker(folder: Path) -> Path:
    """A toy cross-encoder: the logit is the number of passage tokens (longest passage first)."""
    import onnx
    from onnx import TensorProto, helper
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "[CLS]": 1, "[SEP]": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    nodes = [
        helper.make_node("Cast", ["token_type_ids"], ["segment"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["segment", "mask"], ["passage"]),
        helper.make_node("ReduceSum", ["passage", "axis"], ["logits"], keepdims=1),
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "t"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    graph = helper.make_graph(
        nodes,
        "length",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 1])],
        initializer=[helper.make_tensor("axis", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    return folder


def rows_for(docs: list[Any]) -> pa.Table:
    from stratus.embedding.encoder import get_encoder

    tables = []
    for source, title, text, metadata in docs:
        batch = single_chunk_batch(COLLECTION, source, title, text, metadata)
        vectors = get_encoder().embed_documents([f"{title}\n{text}"])
        tables.append(chunk_rows(batch, vectors))
    return pa.concat_tables(tables)


@pytest.fixture(scope="module")
def stack(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    replica_root = tmp_path_factory.mktemp("replica")
    environment = {
        "STRATUS_FILTER_FIELDS": FIELDS,
        "STRATUS_READ_CONSISTENCY_S": "0.3",
        "STRATUS_SEARCH_REPLICA_DIR": str(replica_root),
        "STRATUS_RERANK_MODEL_DIR": str(build_length_reranker(tmp_path_factory.mktemp("reranker"))),
        "STRATUS_MODEL_DIR": str(model_dir),
    }
    stack = LocalStack(REPO_ROOT, visibility_timeout_s=2, poll_wait_s=1, extra_environment=environment)
    stack.start(run_functions=False)
    services.chunk_store().write(COLLECTION, rows_for(DOCS), {}, [], 384)
    stack.serve_api(port=0)
    yield stack
    stack.stop()
    for name in environment:
        os.environ.pop(name, None)
    services.reset()


def post(
    stack: LocalStack,
    headers: dict[str, str],
    body: dict[str, Any],
    collection: str = COLLECTION,
    url: str | None = None,
) -> httpx.Response:
    return httpx.post(
        f"{url or stack.api_url}/v1/collections/{collection}/search", json=body, headers=headers, timeout=30
    )


def test_hybrid_search_answers_with_hits_ranks_and_timings(
    stack: LocalStack, api_headers: dict[str, str]
) -> None:
    # given the indexed collection on S3
    # when a hybrid search is posted
    response = post(stack, api_headers, {"query": "what causes the tides", "top_k": 2})

    # then the tides document leads with both ranks, metadata and timings
    assert response.status_code == 200, response.text
    body = response.json()
    top = body["hits"][0]
    assert top["source"] == "tides.md"
    assert top["vector_rank"] == 1
    assert top["keyword_rank"] is not None
    assert top["metadata"] == {"year": 2021, "category": "sea"}
    assert body["degraded"] == []
    assert body["timings_ms"]["total"] > 0


def test_unknown_collection_is_404(stack: LocalStack, api_headers: dict[str, str]) -> None:
    # given no collection 'nowhere'
    # when searched
    response = post(stack, api_headers, {"query": "x"}, collection="nowhere")

    # then 404 names it
    assert response.status_code == 404
    assert "nowhere" in response.json()["detail"]


def test_filters_restrict_hits(stack: LocalStack, api_headers: dict[str, str]) -> None:
    # given documents of several years
    flt = {"or": [{"field": "year", "lt": 2020}, {"field": "category", "in": ["earth"]}]}

    # when a search is filtered
    response = post(stack, api_headers, {"query": "tides bread lava", "top_k": 10, "filters": flt})

    # then only matching documents come back
    assert response.status_code == 200, response.text
    assert sorted(h["source"] for h in response.json()["hits"]) == ["bread.md", "lava.md"]


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"field": "author", "eq": "x"}, "unknown filter field 'author'"),
        ({"field": "year", "eq": "2020 OR 1=1"}, "filters.eq (year)"),
        ({"field": "category", "eq": "a\u0000"}, "NUL"),
        ({"field": "category", "eq": "x" * 5000}, "longer than"),
        ({"not": {"not": {"not": {"not": {"field": "year", "eq": 1}}}}}, "nested deeper"),
        ({"field": "year", "gte": 1, "drop": 2}, "filters.drop"),
        ({"$where": "1=1"}, "unknown operator"),
    ],
)
def test_bad_filters_are_422_naming_the_field(
    stack: LocalStack, filters: Any, field: str, api_headers: dict[str, str]
) -> None:
    # given a hostile or malformed filter
    # when it is posted
    response = post(stack, api_headers, {"query": "tides", "filters": filters})

    # then the API answers 422 (never 500) and names the problem
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


@pytest.mark.parametrize("value", ["it's", "it''s", "' OR '1'='1", "it's' OR category <> '", "sea' --"])
def test_hostile_strings_match_exactly_what_equality_would(
    stack: LocalStack, value: str, api_headers: dict[str, str]
) -> None:
    # given one document whose category is "it's"
    # when the category filter is given SQL-looking strings
    response = post(
        stack, api_headers, {"query": "sea tides", "top_k": 10, "filters": {"field": "category", "eq": value}}
    )

    # then the filter returns exactly the documents whose category equals the string
    assert response.status_code == 200, response.text
    expected = [d[0] for d in DOCS if d[3]["category"] == value]
    assert [h["source"] for h in response.json()["hits"]] == expected


def test_invalid_bodies_are_422(stack: LocalStack, api_headers: dict[str, str]) -> None:
    # given bodies outside the contract
    # then each is a 422 naming the field
    for body, field in (
        ({"query": "x", "top_k": 101}, "top_k"),
        ({"query": "x", "mode": "fuzzy"}, "mode"),
        ({"query": "x", "mmr": {"lambda": 2}}, "mmr.lambda"),
        ({"query": "x", "filters": "year = 1"}, "filters"),
    ):
        response = post(stack, api_headers, body)
        assert response.status_code == 422, body
        assert response.json()["detail"].startswith(field), response.json()


def test_rerank_uses_the_configured_cross_encoder(stack: LocalStack, api_headers: dict[str, str]) -> None:
    # given a toy cross-encoder that prefers the longest passage
    # when a search asks for rerank
    response = post(stack, api_headers, {"query": "sea", "top_k": 4, "rerank": True, "mode": "vector"})

    # then the hits come in the cross-encoder's order, with its scores
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reranked"] is True
    scores = [h["rerank_score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)
    from tokenizers.pre_tokenizers import Whitespace

    lengths = {src: len(Whitespace().pre_tokenize_str(f"{title}\n{text}")) for src, title, text, _ in DOCS}
    assert [h["source"] for h in body["hits"]] == sorted(lengths, key=lambda src: -lengths[src])
    # (segment 1 is the passage's words and its closing [SEP])
    assert scores[0] == lengths[body["hits"][0]["source"]] + 1


def test_rerank_without_a_model_is_400(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, api_headers: dict[str, str]
) -> None:
    # given no cross-encoder configured
    from stratus.retrieval import rerank

    monkeypatch.setattr(rerank, "get_reranker", lambda: None)

    # when rerank is asked for
    response = post(stack, api_headers, {"query": "tides", "rerank": True})

    # then 400 says how to configure it
    assert response.status_code == 400
    assert "STRATUS_RERANK_MODEL_DIR" in response.json()["detail"]


def test_the_api_sees_new_commits_within_the_consistency_window(
    stack: LocalStack, api_headers: dict[str, str]
) -> None:
    # given the API has served the collection (its replica is warm)
    assert post(stack, api_headers, {"query": "glaciers"}).status_code == 200

    # when the writer commits a new document
    committed = time.monotonic()
    services.chunk_store().write(
        COLLECTION,
        rows_for([("ice.md", "Glaciers", "Glaciers are rivers of ice.", {"year": 2024})]),
        {},
        [],
        384,
    )

    # then searches find it within the read-consistency interval plus one replica sync
    while True:
        hits = post(stack, api_headers, {"query": "glaciers rivers of ice", "top_k": 1}).json()["hits"]
        if hits and hits[0]["source"] == "ice.md":
            break
        assert time.monotonic() - committed < 5, "new commit not visible"
        time.sleep(0.05)


def test_a_collection_whose_documents_were_all_deleted_searches_and_chats_to_no_hits(
    stack: LocalStack, api_headers: dict[str, str]
) -> None:
    # given a collection on S3 with one document, searched once (its replica and in-memory copy are warm)
    from stratus.embedding.encoder import get_encoder

    store = services.chunk_store()
    batch = single_chunk_batch("emptied", "gone.md", "Gone", "The lighthouse keeper logs the tides.")
    store.write(
        "emptied", chunk_rows(batch, get_encoder().embed_documents([batch.chunks[0].text])), {}, [], 384
    )
    warm = post(stack, api_headers, {"query": "lighthouse keeper"}, collection="emptied")
    assert warm.status_code == 200, warm.text
    assert [h["source"] for h in warm.json()["hits"]] == ["gone.md"]

    # when that document is deleted (the table stays, with zero rows) and the API's reads see the commit
    store.write("emptied", None, {}, [batch.doc_id], 384)
    assert table_of(store.open("emptied")).count_rows() == 0
    time.sleep(0.4)  # past STRATUS_READ_CONSISTENCY_S

    # then every search mode answers 200 with no hits, nothing degraded
    for mode in ("hybrid", "vector", "keyword"):
        body = {"query": "lighthouse keeper tides", "top_k": 5, "mode": mode}
        response = post(stack, api_headers, body, collection="emptied")
        assert response.status_code == 200, (mode, response.text)
        assert response.json()["hits"] == [], mode
        assert response.json()["degraded"] == [], mode
    # and chat answers 200 with the no-context answer and no citations
    chat = httpx.post(
        f"{stack.api_url}/v1/collections/emptied/chat",
        json={"messages": [{"role": "user", "content": "What does the lighthouse keeper log?"}]},
        headers=api_headers,
        timeout=30,
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["refused"] is True
    assert chat.json()["citations"] == []


# --- the replica itself ----------------------------------------------------------------------------


def table_of(found: Any | None) -> Any:
    assert found is not None
    return found


def replica_for(stack: LocalStack, root: Path) -> TableReplica:
    uri = services.chunk_store().uri
    return TableReplica(stack.client("s3"), uri, root, interval_s=0.0)


def test_the_replica_copies_only_new_files_and_serves_whole_versions(
    stack: LocalStack, tmp_path: Path
) -> None:
    # given a fresh replica of the table
    store = services.chunk_store()
    name = store.table_name(COLLECTION)
    replica = replica_for(stack, tmp_path)
    first = replica.refresh(name)
    copied = replica.stats(name)["files_copied"]
    assert first == table_of(store.open(COLLECTION)).version

    # when one more document is committed and the replica syncs again
    store.write(COLLECTION, rows_for([("new.md", "New", "A brand new note.", {})]), {}, [], 384)
    second = replica.refresh(name)

    # then it serves the new version, copied a handful of files (not the table again), and reads locally
    stats = replica.stats(name)
    assert second == table_of(store.open(COLLECTION)).version
    assert 0 < stats["files_copied"] - copied < copied
    local = table_of(replica.table(name))
    assert local.count_rows() == table_of(store.open(COLLECTION)).count_rows()
    assert str(tmp_path) in local.uri


def test_an_interrupted_sync_keeps_serving_the_previous_version(
    stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a synced replica
    store = services.chunk_store()
    name = store.table_name(COLLECTION)
    replica = replica_for(stack, tmp_path)
    before = replica.refresh(name)
    rows_before = table_of(replica.table(name)).count_rows()

    # when a new commit's sync fails half-way through copying data files
    store.write(COLLECTION, rows_for([("half.md", "Half", "Half copied.", {})]), {}, [], 384)
    original = TableReplica._download

    def flaky(self: TableReplica, key: str, path: Path) -> None:
        if "/data/" in key:
            raise OSError("connection reset")
        original(self, key, path)

    monkeypatch.setattr(TableReplica, "_download", flaky)
    with pytest.raises(OSError, match="connection reset"):
        replica.refresh(name)

    # then the replica still serves the previous, complete version, and so does the folder on disk
    import lancedb

    assert replica.stats(name)["version"] == before
    assert table_of(replica.table(name)).count_rows() == rows_before
    on_disk: Any = lancedb.connect(str(tmp_path)).open_table(name)
    assert (on_disk.version, on_disk.count_rows()) == (before, rows_before)
    monkeypatch.setattr(TableReplica, "_download", original)

    # and when the network is back, the next sync completes
    assert replica.refresh(name) == table_of(store.open(COLLECTION)).version
    assert table_of(replica.table(name)).count_rows() == rows_before + 1
    assert not list(tmp_path.rglob("*.replica-tmp"))


def test_under_steady_reads_the_replica_syncs_in_the_background(
    stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a synced replica with a 1 s consistency interval, whose copies are slow (a large commit)
    interval = 1.0
    store = services.chunk_store()
    name = store.table_name(COLLECTION)
    replica = TableReplica(stack.client("s3"), store.uri, tmp_path, interval_s=interval)
    before = replica.refresh(name)
    original = TableReplica._download

    def slow(self: TableReplica, key: str, path: Path) -> None:
        time.sleep(0.1)
        original(self, key, path)

    monkeypatch.setattr(TableReplica, "_download", slow)

    # when another process commits and a read comes half an interval after the last check
    store.write(COLLECTION, rows_for([("aside.md", "Aside", "Copied aside.", {})]), {}, [], 384)
    time.sleep(interval / 2)
    started = time.perf_counter()
    during = table_of(replica.table(name))
    waited = time.perf_counter() - started

    # then that read is served at once from the version it had, while a sync runs in the background
    assert during.version == before
    assert waited < 0.1, waited
    # and reads see the new version before the interval has passed again, without waiting for it
    latest = table_of(store.open(COLLECTION)).version
    deadline = time.monotonic() + interval
    while replica.stats(name)["version"] != latest:
        assert time.monotonic() < deadline, "the background sync did not land within the interval"
        time.sleep(0.02)
    started = time.perf_counter()
    assert table_of(replica.table(name)).version == latest
    assert time.perf_counter() - started < 0.1


def test_dash_and_underscore_collections_stay_apart_through_the_replica_and_snapshot(
    stack: LocalStack, api_headers: dict[str, str]
) -> None:
    # given iso-a and iso_a on S3, each with a private document on the same subject (issue 19, High 1)
    from stratus.embedding.encoder import get_encoder

    store = services.chunk_store()
    for collection, source in (("iso-a", "dash.md"), ("iso_a", "underscore.md")):
        text = f"The private salary table of {collection}."
        batch = single_chunk_batch(collection, source, "Salaries", text)
        store.write(collection, chunk_rows(batch, get_encoder().embed_documents([text])), {}, [], 384)
    assert store.replica is not None
    assert store.memory_max_rows > 0

    # when each is searched over HTTP (the API reads the local replica and its in-memory copy)
    for collection, source in (("iso-a", "dash.md"), ("iso_a", "underscore.md")):
        for mode in ("hybrid", "vector", "keyword"):
            body = {"query": "private salary table", "top_k": 10, "mode": mode}
            response = post(stack, api_headers, body, collection=collection)
            # then each sees its own document only
            assert response.status_code == 200, response.text
            assert {h["source"] for h in response.json()["hits"]} == {source}, (collection, mode)
    # and both are listed as collections, each by its own name
    listed = httpx.get(f"{stack.api_url}/v1/collections", headers=api_headers, timeout=30).json()
    assert {"iso-a", "iso_a"} <= set(listed["collections"])


def test_an_unreachable_store_is_a_503_not_an_empty_collection(
    stack: LocalStack, api_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an API whose S3 reads fail (issue 20, finding 11: the replica's S3 client points at a dead
    # port, as when IAM or the network refuses), for a collection whose table it has not read yet
    import boto3
    from botocore.config import Config

    with aws.use_credentials(stack.credentials["ApiFunction"]):  # the API's own store (its role's)
        store = services.chunk_store()
    assert store.replica is not None
    dead = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(connect_timeout=0.5, retries={"max_attempts": 1}),
    )
    monkeypatch.setattr(store.replica, "_s3", dead)

    # when it is searched
    response = post(stack, api_headers, {"query": "tides"}, collection="never-read")

    # then the answer is a retryable 503, not a 404 or an empty list of hits
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert "unavailable" in response.json()["detail"]


@pytest.fixture
def cli_key(api_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI holds an admin API key (STRATUS_API_KEY) for this test, its settings read afresh."""
    from stratus.settings import get_settings

    monkeypatch.setenv("STRATUS_API_KEY", api_headers["x-api-key"])
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_stratus_search_prints_hostile_sources_and_text_inert(
    stack: LocalStack, cli_key: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a chunk whose source, section and text carry terminal escapes, a bidi override and Rich markup
    from stratus.embedding.encoder import get_encoder
    from stratus_tools.cli import main

    source = "evil\x1b[2J\u202egpj.md"
    text = "Hostile [bold]lighthouse[/bold] keeper \x1b]8;;http://x\x07 notes [/red]"
    batch = single_chunk_batch("hostile", source, "T", text, section="[link=http://x]S[/link]")
    rows = chunk_rows(batch, get_encoder().embed_documents([text]))
    services.chunk_store().write("hostile", rows, {}, [], 384)

    # when `stratus search` prints the hits
    code = main(["search", "lighthouse keeper", "-c", "hostile", "--api-url", stack.api_url])

    # then it prints them (no MarkupError), escapes visible, markup as text, no raw control character
    out = capsys.readouterr().out
    assert code == 0, out
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "\x07" not in out
    assert "evil\\x1b[2J\\u202egpj.md" in out
    assert "[bold]lighthouse[/bold]" in out
    assert "[link=http://x]S[/link]" in out


def test_search_and_chat_answer_through_the_stream_function_with_its_grants_only(
    stack: LocalStack, api_headers: dict[str, str]
) -> None:
    # given the app served as StreamFunction's role (its Function URL: no API Gateway request fee)
    url = stack.serve_api(port=0, function="StreamFunction")
    principal = stack.credentials["StreamFunction"].principal
    stack.collect_calls()
    before = len(stack.calls)

    # when a client searches in every mode and chats there with its API key
    for mode in ("hybrid", "vector", "keyword"):
        response = post(stack, api_headers, {"query": "moon tides", "mode": mode, "top_k": 3}, url=url)
        # then each answers with hits, as through the REST API
        assert response.status_code == 200, (mode, response.text)
        assert response.json()["hits"], mode
    chat = httpx.post(
        f"{url}/v1/collections/{COLLECTION}/chat",
        json={"messages": [{"role": "user", "content": "What causes the tides?"}]},
        headers=api_headers,
        timeout=30,
    )
    assert chat.status_code == 200, chat.text
    # and a request without a key is refused by the app itself (nothing in front of a Function URL)
    anonymous = post(stack, {}, {"query": "x"}, url=url)
    assert anonymous.status_code == 401
    # and the role was denied nothing (the emulator enforces the template's policies)
    calls = [c for c in stack.collect_calls()[before:] if c[0] == principal]
    assert calls, "the requests ran as StreamFunction's role"
    assert [c for c in calls if not c[4]] == []


def test_similar_documents_over_the_api_answer_other_documents_and_check_the_key(
    stack: LocalStack, api_headers: dict[str, str]
) -> None:
    # given the indexed collection, and a key that may read another collection only
    from stratus import services
    from stratus.access.auth import create_key
    from stratus.models import make_doc_id

    other = {"x-api-key": create_key(services.key_table(), "elsewhere", ["elsewhere"], ["read"]).key}
    tides = make_doc_id(COLLECTION, "tides.md")
    url = f"{stack.api_url}/v1/collections/{COLLECTION}/documents"

    # when the notes like the tides note are asked for, an unknown one, a bad top_k, and by the other key
    found = httpx.get(f"{url}/{tides}/similar", params={"top_k": 2}, headers=api_headers, timeout=30)
    unknown = httpx.get(f"{url}/{'f' * 32}/similar", headers=api_headers, timeout=30)
    too_many = httpx.get(f"{url}/{tides}/similar", params={"top_k": 51}, headers=api_headers, timeout=30)
    refused = httpx.get(f"{url}/{tides}/similar", headers=other, timeout=30)

    # then two other documents come back (never itself), the unknown is a 404, the bound a 422,
    # and the key that may not read the collection a 403
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["doc_id"] == tides
    assert len(body["hits"]) == 2
    assert tides not in {h["doc_id"] for h in body["hits"]}
    assert unknown.status_code == 404
    assert "no indexed chunks" in unknown.json()["detail"]
    assert too_many.status_code == 422
    assert refused.status_code == 403


def test_stratus_similar_takes_a_path_or_an_id_and_prints_the_other_documents(
    stack: LocalStack, cli_key: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # given the CLI holding an API key
    from stratus.models import make_doc_id
    from stratus_tools.cli import main

    # when the notes like tides.md are asked for by path (as JSON), then by id (as text)
    by_path = main(["similar", "tides.md", "-c", COLLECTION, "-k", "3", "--api-url", stack.api_url, "--json"])
    as_json = json.loads(capsys.readouterr().out)
    by_id = main(
        ["similar", make_doc_id(COLLECTION, "tides.md"), "-c", COLLECTION, "--api-url", stack.api_url]
    )
    as_text = capsys.readouterr().out
    unknown = main(["similar", "nowhere.md", "-c", COLLECTION, "--api-url", stack.api_url])
    refused = capsys.readouterr().out

    # then both name three other documents, and an unknown path exits 1 with the API's 404
    assert (by_path, by_id) == (0, 0)
    sources = [h["source"] for h in as_json["hits"]]
    assert len(sources) == 3
    assert "tides.md" not in sources
    assert all(source in as_text for source in sources)
    assert unknown == 1
    assert "404" in refused
