"""scripts/cost_estimate.py: the arithmetic of the cost per 1,000 queries and per GB ingested."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cost() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cost_estimate", REPO_ROOT / "scripts" / "cost_estimate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cost_estimate"] = module
    spec.loader.exec_module(module)
    return module


def test_one_lambda_invocation_is_a_request_plus_gb_seconds(cost: ModuleType) -> None:
    # Given unit prices of 1 per request and 10 per GB-second
    prices = cost.Prices(lambda_request=1.0, lambda_gb_second=10.0)
    # When 500 ms run at 2048 MB / Then 1 + 0.5 s x 2 GB x 10
    assert cost.lambda_cost(500, 2048, prices) == pytest.approx(11.0)
    # And a sub-millisecond run bills one millisecond
    assert cost.lambda_cost(0.2, 1024, prices) == pytest.approx(1.0 + 0.001 * 10.0)


def test_1000_queries_add_up_their_line_items(cost: ModuleType) -> None:
    # Given round prices and assumptions
    prices = cost.Prices(
        lambda_request=0.0,
        lambda_gb_second=1.0,
        api_gateway_request=0.01,
        s3_get=0.001,
        dynamodb_read=0.002,
        dynamodb_write=0.1,
        logs_gb=1e6,
    )
    assumptions = cost.QueryAssumptions(
        s3_gets=2,
        freshness_lists_per_s=0,
        dynamodb_reads=1,
        dynamodb_writes=0,
        log_bytes=1000,
        overhead_ms=0,
    )
    # When 1,000 queries of 100 ms run on the 2048 MB API function
    items = cost.query_cost_per_1000(100, assumptions, prices)
    # Then each item is count x unit price, and the total is their sum
    assert items["api_gateway"] == pytest.approx(10.0)
    assert items["lambda"] == pytest.approx(1000 * 0.1 * 2 * 1.0)
    assert items["s3"] == pytest.approx(2.0)
    assert items["dynamodb"] == pytest.approx(2.0)
    assert items["logs"] == pytest.approx(1000 * 1000 / 1e9 * 1e6)
    assert items["total"] == pytest.approx(10 + 200 + 2 + 2 + 1000)


def test_a_gb_of_documents_scales_with_the_document_count(cost: ModuleType) -> None:
    # Given only SQS priced, at 1 per request, and 9 requests per document
    zero = dict.fromkeys(cost.Prices.__dataclass_fields__, 0.0)
    prices = cost.Prices(**{**zero, "sqs_request": 1.0})
    # When 1 GB of 1 MB documents is ingested
    items = cost.ingest_cost_per_gb(1e6, 5, 100, 200, cost.IngestAssumptions(sqs_requests=9), prices)
    # Then 1,000 documents x 9 requests, and nothing else costs anything
    assert items["documents"] == pytest.approx(1000)
    assert items["sqs"] == pytest.approx(9000)
    assert items["total"] == pytest.approx(9000)


def test_the_default_prices_give_plausible_totals(cost: ModuleType) -> None:
    # Given the dated list prices / When 1,000 20 ms searches and 1 GB of 2 KB abstracts are priced
    search = cost.query_cost_per_1000(20)
    ingest = cost.ingest_cost_per_gb(2000, 1.5, 30, 40)
    # Then a search costs well under a cent, dominated by API Gateway ($3.50 per million)
    assert 0.003 < search["total"] < 0.01
    assert search["api_gateway"] == pytest.approx(0.0035)
    # And a GB of small documents costs dollars, not cents or thousands
    assert 1 < ingest["total"] < 100
    assert cost.PRICES_DATE


def test_the_script_reads_benchmark_reports(
    cost: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a query report and an ingest report in the benchmarks' shapes
    latency = {"n": 10, "p50_ms": 9.0, "p95_ms": 15.0, "p99_ms": 20.0, "mean_ms": 10.0}
    query = {"stores": {"s3-replica": {"hybrid": latency}}}
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"x" * 4000)
    ingest = {
        "corpus": str(corpus),
        "documents": 2,
        "indexed": 2,
        "chunks": 6,
        "stage_timings": {
            "parse": {"total_s": 0.1},
            "chunk": {"total_s": 0.1},
            "embed": {"total_s": 0.4},
        },
    }
    (tmp_path / "q.json").write_text(json.dumps(query))
    (tmp_path / "i.json").write_text(json.dumps(ingest))
    # When the script runs on them
    code = cost.main(
        [
            "--query",
            str(tmp_path / "q.json"),
            "--ingest",
            str(tmp_path / "i.json"),
            "--json",
            str(tmp_path / "c.json"),
        ]
    )
    # Then the per-document profile comes from the reports, and the estimate is written and printed
    assert code == 0
    estimate = json.loads((tmp_path / "c.json").read_text())
    assert estimate["ingest_profile"] == {
        "mean_document_bytes": 2000.0,
        "chunks_per_document": 3.0,
        "fetch_ms": pytest.approx(100.0),
        "embed_ms": pytest.approx(200.0),
    }
    assert estimate["search_latency_ms"] == 10.0
    assert estimate["search_per_1000"]["total"] == pytest.approx(cost.query_cost_per_1000(10.0)["total"])
    assert "search_per_1000: $" in capsys.readouterr().out


def test_function_memory_is_the_templates(cost: ModuleType) -> None:
    # Given the functions of template.yaml
    from stratus_tools.local.cfn_yaml import load_template

    resources = load_template(REPO_ROOT / "template.yaml")["Resources"]
    # When the estimate prices each stage's GB-seconds / Then it uses the memory the stack deploys
    for stage, memory in cost.MEMORY_MB.items():
        assert resources[f"{stage.capitalize()}Function"]["Properties"]["MemorySize"] == memory, stage


def test_queries_through_the_function_url_pay_no_api_gateway_fee(cost: ModuleType) -> None:
    # Given the same query latency entering by the REST API and by StreamFunction's Function URL
    rest = cost.query_cost_per_1000(20.0, entry="rest")
    url = cost.query_cost_per_1000(20.0, entry="function-url")
    http = cost.query_cost_per_1000(20.0, entry="http")
    # Then only the entry's request price differs (both functions have 2 GB)
    assert rest["api_gateway"] == pytest.approx(1000 * cost.PRICES.api_gateway_request)
    assert url["api_gateway"] == 0.0
    assert http["api_gateway"] == pytest.approx(1000 * cost.PRICES.http_api_request)
    assert url["lambda"] == pytest.approx(rest["lambda"])
    assert rest["total"] - url["total"] == pytest.approx(rest["api_gateway"])


def test_freshness_lists_are_spread_over_the_queries_and_priced_as_lists(cost: ModuleType) -> None:
    # Given only S3 priced: LIST (the PUT tier) at 1, GET at 0
    zero = dict.fromkeys(cost.Prices.__dataclass_fields__, 0.0)
    prices = cost.Prices(**{**zero, "s3_put": 1.0})
    # When 2 LISTs a second serve 10 queries a second, and then 1 query a second
    busy = cost.QueryAssumptions(freshness_lists_per_s=2, queries_per_s=10)
    sparse = cost.QueryAssumptions(freshness_lists_per_s=2, queries_per_s=1)
    # Then 1,000 busy queries carry 200 LISTs, and a query never carries more than one
    assert cost.query_cost_per_1000(10, busy, prices)["s3"] == pytest.approx(200.0)
    assert cost.query_cost_per_1000(10, sparse, prices)["s3"] == pytest.approx(1000.0)
