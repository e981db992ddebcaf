"""template.yaml, the sample events and the packaging files agree with the pipeline's contract."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint_all, lint_file

from stratus.models import StageMessage, make_doc_id
from stratus.observability import MetricName
from stratus_tools.local.cfn_yaml import load_template

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
EVENTS_DIR = REPO_ROOT / "events"

SAMPLE_SOURCE = "inbox/docs/getting-started.md"
FUNCTIONS = [
    "FetchFunction",
    "EmbedFunction",
    "IndexFunction",
    "ApiFunction",
    "StreamFunction",
    "MaintenanceFunction",
]
# main queue -> its consuming function
CONSUMERS = {"FetchQueue": "FetchFunction", "EmbedQueue": "EmbedFunction", "IndexQueue": "IndexFunction"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """The parsed template, intrinsic functions in long form."""
    return load_template(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    """The template's Resources section."""
    return template["Resources"]


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in resources.items() if res["Type"] == kind}


def _getatt_target(value: Any) -> str:
    """Logical id of a {'Fn::GetAtt': [id, attr]} value."""
    assert isinstance(value, dict), value
    assert "Fn::GetAtt" in value, value
    return str(value["Fn::GetAtt"][0])


def _sqs_event_sources(resources: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(function, queue, properties) of every SQS event source: SAM events and explicit mappings."""
    found = []
    for name, res in _of_type(resources, "AWS::Serverless::Function").items():
        for event in res["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                found.append((name, _getatt_target(event["Properties"]["Queue"]), event["Properties"]))
    for res in _of_type(resources, "AWS::Lambda::EventSourceMapping").values():
        props = res["Properties"]
        found.append((props["FunctionName"]["Ref"], _getatt_target(props["EventSourceArn"]), props))
    return found


def _load_event(name: str) -> dict[str, Any]:
    data = json.loads((EVENTS_DIR / f"{name}.json").read_text())
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------- lint


def test_cfn_lint_reports_nothing() -> None:
    # Given the template / When cfn-lint (SAM transform included) checks it
    matches = lint_file(TEMPLATE_PATH)
    # Then there is no error and no warning
    assert [str(m) for m in matches] == []


def test_cfn_lint_is_live_on_a_broken_copy() -> None:
    # Given the template with an invalid queue visibility timeout
    text = TEMPLATE_PATH.read_text().replace("VisibilityTimeout: 1800", "VisibilityTimeout: 99999", 1)
    assert "99999" in text
    # When cfn-lint checks it / Then the error is found (the clean result above is not vacuous)
    assert any("VisibilityTimeout" in str(m) or "99999" in str(m) for m in lint_all(text))


# --------------------------------------------------------------------------- queues


def test_every_main_queue_redrives_to_its_dlq_and_outlasts_its_consumer(resources: dict[str, Any]) -> None:
    # Given the main queues and their consumers
    for queue, function in CONSUMERS.items():
        props = resources[queue]["Properties"]
        timeout = resources[function]["Properties"]["Timeout"]
        # Then visibility is a literal >= 6x the consumer timeout
        assert isinstance(props["VisibilityTimeout"], int)
        assert props["VisibilityTimeout"] >= 6 * timeout, queue
        # And the redrive policy names the stage's DLQ with a literal receive count
        redrive = props["RedrivePolicy"]
        dlq = _getatt_target(redrive["deadLetterTargetArn"])
        assert dlq == queue.replace("Queue", "DLQ")
        assert isinstance(redrive["maxReceiveCount"], int)
        assert redrive["maxReceiveCount"] >= 5
        # And the DLQ keeps messages 14 days; both are encrypted
        assert resources[dlq]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
        assert props["SqsManagedSseEnabled"] is True
        assert resources[dlq]["Properties"]["SqsManagedSseEnabled"] is True
    # And the throttled single-writer index queue allows more receives than the others
    assert resources["IndexQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] > 5


def test_every_stage_knows_its_queues_max_receive_count(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    # Given the function globals (what the functions and the local stack export) and the settings
    from stratus.settings import Settings

    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    defaults = Settings.model_fields
    for queue in CONSUMERS:
        stage = queue.removesuffix("Queue").lower()
        receives = resources[queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
        # Then the stage's setting equals its queue's maxReceiveCount, in the template and by default
        assert variables[f"STRATUS_{stage.upper()}_MAX_RECEIVE_COUNT"] == str(receives), queue
        assert defaults[f"{stage}_max_receive_count"].default == receives, queue


def test_every_sqs_event_source_reports_partial_batch_failures(resources: dict[str, Any]) -> None:
    # Given every SQS event source of the template
    sources = _sqs_event_sources(resources)
    # Then each main queue has exactly its consumer, and each reports batch item failures
    assert sorted((fn, q) for fn, q, _ in sources) == sorted((fn, q) for q, fn in CONSUMERS.items())
    for _, _, props in sources:
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert isinstance(props["BatchSize"], int)


def test_index_has_one_writer_per_collection_without_reserved_concurrency(resources: dict[str, Any]) -> None:
    # Given the index function, its queue and its dead-letter queue
    props = resources["IndexFunction"]["Properties"]
    event = next(iter(props["Events"].values()))["Properties"]
    queue = resources["IndexQueue"]["Properties"]
    dlq = resources["IndexDLQ"]["Properties"]
    # Then no function reserves concurrency (an account with the default quota of 10 rejects the stack)
    for name in FUNCTIONS:
        assert "ReservedConcurrentExecutions" not in resources[name]["Properties"], name
    # And the index queue is FIFO (one message group per collection: one writer per table), with a
    # FIFO dead-letter queue, deduplication ids from the senders and high-throughput mode
    assert queue["FifoQueue"] is True
    assert dlq["FifoQueue"] is True
    assert queue["ContentBasedDeduplication"] is False
    assert (queue["DeduplicationScope"], queue["FifoThroughputLimit"]) == (
        "messageGroup",
        "perMessageGroupId",
    )
    # And its event source fits FIFO's limits (10 records, no batching window) and caps concurrency
    # at the poller (MaximumConcurrency), so nothing is throttled and no receive is burnt
    assert event["BatchSize"] <= 10
    assert "MaximumBatchingWindowInSeconds" not in event
    assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "IndexMaxConcurrency"}


def test_embed_event_source_exists_only_for_the_lambda_consumer(template: dict[str, Any]) -> None:
    # Given the embed consumer parameter and the embed queue's event source
    resources = template["Resources"]
    mapping = resources["EmbedQueueEventSource"]
    # Then the mapping is conditional on EmbedConsumer == lambda, and the function has no own SQS event
    assert mapping["Condition"] == "UseEmbedLambda"
    assert template["Conditions"]["UseEmbedLambda"] == {"Fn::Equals": [{"Ref": "EmbedConsumer"}, "lambda"]}
    assert template["Parameters"]["EmbedConsumer"]["AllowedValues"] == ["lambda", "gpu-worker"]
    assert template["Parameters"]["EmbedConsumer"]["Default"] == "lambda"
    assert "Events" not in resources["EmbedFunction"]["Properties"]
    # And the queue URL is an output for the external GPU worker
    assert template["Outputs"]["EmbedQueueUrl"]["Value"] == {"Ref": "EmbedQueue"}


# --------------------------------------------------------------------------- storage


def test_bucket_notifies_fetch_of_inbox_creates_and_deletes(resources: dict[str, Any]) -> None:
    # Given the document bucket
    bucket = resources["DocumentBucket"]
    configs = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    # Then creates and deletes under inbox/ go to the fetch queue
    assert sorted(c["Event"] for c in configs) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    for config in configs:
        assert _getatt_target(config["Queue"]) == "FetchQueue"
        assert config["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "inbox/"}]
    # And the bucket waits for a queue policy that lets only this bucket (and account) send
    assert bucket["DependsOn"] == "FetchQueuePolicy"
    statement = resources["FetchQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert set(statement["Condition"]["ArnLike"]) == {"aws:SourceArn"}
    assert set(statement["Condition"]["StringEquals"]) == {"aws:SourceAccount"}
    # And the name in that condition is the bucket's explicit name (no circular dependency; the name's
    # form is test_bucket_name_is_valid_for_any_stack_name's)
    name, variables = bucket["Properties"]["BucketName"]["Fn::Sub"]
    arn, arn_variables = statement["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    assert arn.endswith(f":s3:::{name}")
    assert arn_variables == variables


def test_bucket_is_private_encrypted_and_expires_staging(resources: dict[str, Any]) -> None:
    # Given the document bucket's properties
    props = resources["DocumentBucket"]["Properties"]
    # Then public access is blocked, objects are encrypted, staging/ expires, uploads are aborted
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    rules = props["LifecycleConfiguration"]["Rules"]
    assert any(r.get("Prefix") == "staging/" and r.get("ExpirationInDays") for r in rules)
    assert any("AbortIncompleteMultipartUpload" in r for r in rules)


def test_documents_table_keys(resources: dict[str, Any]) -> None:
    # Given the documents table
    props = resources["DocumentsTable"]["Properties"]
    # Then it is on-demand, keyed (collection, doc_id), with point-in-time recovery
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [
        {"AttributeName": "collection", "KeyType": "HASH"},
        {"AttributeName": "doc_id", "KeyType": "RANGE"},
    ]
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


# --------------------------------------------------------------------------- functions


def test_globals_give_every_function_the_shared_environment(template: dict[str, Any]) -> None:
    # Given the function globals
    function_globals = template["Globals"]["Function"]
    variables = function_globals["Environment"]["Variables"]
    # Then every stage finds the same resources and observability settings
    assert variables["STRATUS_BUCKET"] == {"Ref": "DocumentBucket"}
    assert variables["STRATUS_DOCUMENTS_TABLE"] == {"Ref": "DocumentsTable"}
    for stage in ("FETCH", "EMBED", "INDEX"):
        assert variables[f"STRATUS_{stage}_QUEUE_URL"] == {"Ref": f"{stage.title()}Queue"}
    assert variables["POWERTOOLS_SERVICE_NAME"] == "stratus"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Stratus"
    assert "STRATUS_LOG_LEVEL" in variables
    assert function_globals["Tracing"] == "Active"
    assert function_globals["Architectures"] == ["x86_64"]


def test_functions_have_their_sizes_and_entry_points(resources: dict[str, Any]) -> None:
    # Given the five functions
    expected = {
        "FetchFunction": (300, 3008),
        "EmbedFunction": (300, 3008),
        "IndexFunction": (300, 2048),
        "ApiFunction": (29, 2048),
        "StreamFunction": (120, 2048),
        "MaintenanceFunction": (900, 2048),
    }
    assert sorted(_of_type(resources, "AWS::Serverless::Function")) == sorted(FUNCTIONS)
    for name, (timeout, memory) in expected.items():
        res = resources[name]
        props = res["Properties"]
        assert (props["Timeout"], props["MemorySize"]) == (timeout, memory), name
        # Then each is an image whose command is a dotted path to functions/<stage>/app.py
        assert props["PackageType"] == "Image"
        (command,) = props["ImageConfig"]["Command"]
        module, _, attr = command.rpartition(".")
        assert attr == "handler"
        assert module == f"functions.{name.removesuffix('Function').lower()}.app", name
        handler_file = REPO_ROOT / (module.replace(".", "/") + ".py")
        dockerfile = REPO_ROOT / res["Metadata"]["DockerContext"] / res["Metadata"]["Dockerfile"]
        assert dockerfile.is_file(), dockerfile
        # And a build target it names exists in its Dockerfile
        target = res["Metadata"].get("DockerBuildTarget")
        if target:
            assert re.search(rf"^FROM \S+ AS {target}$", dockerfile.read_text(), re.MULTILINE), target
        assert handler_file.is_file(), handler_file
        assert re.search(r"^def handler\(", handler_file.read_text(), re.MULTILINE), handler_file


def test_every_function_has_a_log_group_with_retention(resources: dict[str, Any]) -> None:
    # Given the log groups and each function's logging configuration
    for name in FUNCTIONS:
        props = resources[name]["Properties"]
        # Then each function logs to its own group, by reference: the group is created before the
        # function (a group named after the function came after it and raced its first invocation)
        group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
        group = resources[group_id]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert name not in json.dumps(group), "the group must not depend on its function"
        # And it expires by the parameter
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def _s3_grants(props: dict[str, Any], name: str = "") -> set[tuple[str, str]]:
    """(action, key prefix) pairs of a function's object-level S3 statements."""
    grants = set()
    for policy in props["Policies"]:
        for statement in policy.get("Statement", []):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if not any(action.startswith("s3:") for action in actions):
                continue
            assert all(action.startswith("s3:") for action in actions), statement
            resource = statement["Resource"]
            if "Fn::Sub" not in resource:
                # Bucket-level: only listing (unconditional: test_object_readers_may_list_the_bucket)
                assert actions == ["s3:ListBucket"], statement
                continue
            # One prefix, or (fetch) the attachments beside inbox messages: inbox/*.attachments/*
            match = re.fullmatch(
                r"\$\{DocumentBucket\.Arn\}/([a-z]+/(?:\*\.attachments/)?)\*", resource["Fn::Sub"]
            )
            assert match, f"object access must be scoped to one prefix: {resource}"
            grants |= {(action, match.group(1)) for action in actions}
    return grants


def _queues_sent_to(props: dict[str, Any]) -> set[str]:
    return {
        _getatt_target(policy["SQSSendMessagePolicy"]["QueueName"])
        for policy in props["Policies"]
        if "SQSSendMessagePolicy" in policy
    }


def test_policies_are_least_privilege(resources: dict[str, Any]) -> None:
    # Given each function's policies
    lancedb_rw = {
        (a, "lancedb/")
        for a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")
    }
    expected_s3 = {
        # fetch writes (and deletes) an e-mail's attachments beside it, nothing else of the inbox
        "FetchFunction": {
            ("s3:GetObject", "inbox/"),
            ("s3:PutObject", "staging/"),
            ("s3:PutObject", "inbox/*.attachments/"),
            ("s3:DeleteObject", "inbox/*.attachments/"),
        },
        # embed reads the store (never writes it) to reuse vectors of unchanged chunks
        "EmbedFunction": {
            ("s3:GetObject", "staging/"),
            ("s3:PutObject", "staging/"),
            ("s3:GetObject", "lancedb/"),
        },
        "IndexFunction": {("s3:GetObject", "staging/"), *lancedb_rw},
        "ApiFunction": {
            ("s3:GetObject", "lancedb/"),
            ("s3:PutObject", "inbox/"),
            ("s3:DeleteObject", "inbox/"),
        },
        # chat behind the streaming Function URL only reads the store
        "StreamFunction": {("s3:GetObject", "lancedb/")},
        "MaintenanceFunction": lancedb_rw,
    }
    expected_sends = {
        # Sources: a sync's frontier (URL, sitemap and listing units) is messages on FetchQueue.
        "FetchFunction": {"EmbedQueue", "IndexQueue", "FetchQueue"},
        "EmbedFunction": {"IndexQueue"},
        # DELETE /v1/collections/{c}/documents/{id} of a URL document has no inbox object whose S3
        # event could reach fetch, so the API sends the delete StageMessage to index itself.
        # POST .../sources/{id}/syncs sends a sync's first unit to FetchQueue, and the console's DLQ
        # redrive sends dead letters back to their stage's queue.
        "ApiFunction": {"IndexQueue", "FetchQueue", "EmbedQueue"},
    }
    for name in FUNCTIONS:
        props = resources[name]["Properties"]
        # Then S3 object access is exactly the stage's prefixes, and sends go to the next queues only
        assert _s3_grants(props, name) == expected_s3[name], name
        assert _queues_sent_to(props) == expected_sends.get(name, set()), name
    # And the embed function may poll its queue itself (its mapping is not a SAM event)
    embed_policies = resources["EmbedFunction"]["Properties"]["Policies"]
    assert any("SQSPollerPolicy" in p for p in embed_policies)


def test_only_the_api_function_uses_the_api_keys_table_with_the_actions_it_needs(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    # Given every function's DynamoDB statements on the API keys table
    grants: dict[str, set[str]] = {}
    for name in FUNCTIONS:
        for policy in resources[name]["Properties"]["Policies"]:
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                if statement.get("Resource") == {"Fn::GetAtt": ["ApiKeysTable", "Arn"]}:
                    grants.setdefault(name, set()).update(statement["Action"])
        assert not any(
            isinstance(policy, dict) and "ApiKeysTable" in json.dumps(policy) and "Statement" not in policy
            for policy in resources[name]["Properties"]["Policies"]
        ), name
    # Then only the API reads keys, writes them (admin routes) and updates buckets; nothing deletes
    # (the streaming function verifies keys and spends their rate buckets, nothing more)
    assert grants == {
        "ApiFunction": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Scan"},
        "StreamFunction": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    }
    # And the table name reaches every process (the local stack reads only the globals)
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["STRATUS_API_KEYS_TABLE"] == {"Ref": "ApiKeysTable"}
    api_variables = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert api_variables["STRATUS_RATE_LIMIT_BACKEND"] == "dynamodb"
    assert template["Outputs"]["ApiUsagePlanId"]["Value"] == {"Ref": "StratusApiUsagePlan"}


def test_only_the_api_function_manages_gateway_keys_with_the_calls_it_needs(
    resources: dict[str, Any],
) -> None:
    # Given every function's API Gateway statements, as (action, resource) pairs
    grants: dict[str, set[tuple[str, str]]] = {}
    for name in FUNCTIONS:
        for policy in resources[name]["Properties"]["Policies"]:
            if not isinstance(policy, dict) or "Statement" not in policy:
                assert "apigateway" not in json.dumps(policy), name
                continue
            for statement in policy["Statement"]:
                actions = (
                    statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                )
                if not any(action.startswith("apigateway:") for action in actions):
                    continue
                assert all(action.startswith("apigateway:") for action in actions), statement
                assert statement["Effect"] == "Allow"
                targets = (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                )
                grants.setdefault(name, set()).update((a, t["Fn::Sub"]) for a in actions for t in targets)

    # Then only the API may list usage plans, create a key and disable keys: no DELETE, no wildcard
    # action, nothing outside the region's usage plans and keys
    arn = "arn:${AWS::Partition}:apigateway:${AWS::Region}::"
    assert grants == {
        "ApiFunction": {
            ("apigateway:GET", f"{arn}/usageplans"),
            ("apigateway:POST", f"{arn}/apikeys"),
            ("apigateway:PATCH", f"{arn}/apikeys/*"),
        }
    }
    # And it may attach keys to this stack's usage plan only (issue 20 finding 12: usageplans/* was any
    # API's plan in the region), through a policy of its own on the function's role
    (attach,) = list(_of_type(resources, "AWS::IAM::Policy").values())
    assert attach["Properties"]["Roles"] == [{"Ref": "ApiFunctionRole"}]
    (statement,) = attach["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Action"], statement["Resource"]) == (
        ["apigateway:POST"],
        {"Fn::Sub": f"{arn}/usageplans/${{StratusApiUsagePlan}}/keys"},
    )
    # And the API function does not name the usage plan (that would be a circular dependency): it finds it
    api = resources["ApiFunction"]
    assert "StratusApiUsagePlan" not in json.dumps(api)
    assert "STRATUS_API_USAGE_PLAN_ID" not in api["Properties"]["Environment"]["Variables"]


def test_fetch_image_is_the_runtime_image_plus_ocr(resources: dict[str, Any]) -> None:
    # Given the fetch function and the Dockerfile target it is built from
    fetch = resources["FetchFunction"]
    assert fetch["Metadata"]["DockerBuildTarget"] == "fetch"
    dockerfile = (REPO_ROOT / "functions/embed/Dockerfile").read_text()
    stage = dockerfile.split("FROM runtime AS fetch", 1)[1].split("\nFROM ", 1)[0]
    # Then that target starts from the runtime image (every parser, the tokenizer in /opt/model) and adds
    # the OCR lock without dependency resolution (rapidocr declares the GUI opencv, which needs libGL)
    assert "COPY requirements/ocr.lock" in stage
    assert re.search(r"pip install [^\n]*--no-deps -r /tmp/ocr.lock", stage), stage
    ocr = (REPO_ROOT / "requirements/ocr.lock").read_text()
    assert "opencv-python-headless==" in ocr
    assert "\nopencv-python==" not in ocr
    assert "STRATUS_MODEL_DIR=/opt/model" in dockerfile
    # And the fetch image's tag differs from the shared runtime image's, so one does not overwrite the other
    tags = {
        name: res["Metadata"]["DockerTag"]
        for name, res in resources.items()
        if "DockerTag" in res.get("Metadata", {})
    }
    assert list(tags.values()).count(tags["FetchFunction"]) == 1
    # And OCR's per-document budget fits inside the function's timeout
    from stratus.settings import Settings

    assert Settings.model_fields["ocr_max_seconds"].default < fetch["Properties"]["Timeout"]


def test_dockerfiles_copy_only_what_exists() -> None:
    # Given the Dockerfiles of the images (build context: the repository root)
    dockerfiles = [REPO_ROOT / "functions/embed/Dockerfile", REPO_ROOT / "functions/embed/Dockerfile.gpu"]
    for dockerfile in dockerfiles:
        text = dockerfile.read_text()
        # Then every COPY from the context names a path that exists
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE):
            for src in line.split()[:-1]:
                assert (REPO_ROOT / src).exists(), f"{dockerfile.name}: {src}"
        assert "requirements/runtime.lock" in text
    # And the Lambda image bakes the model and tiktoken encodings where settings look
    cpu = dockerfiles[0].read_text()
    assert "ENV STRATUS_MODEL_DIR=/opt/model" in cpu
    assert "TIKTOKEN_CACHE_DIR=/opt/tiktoken" in cpu
    assert 'ENTRYPOINT ["python", "-m", "stratus.pipeline.worker", "embed"]' in dockerfiles[1].read_text()


# --------------------------------------------------------------------------- API


def test_api_requires_keys_with_a_throttled_usage_plan(resources: dict[str, Any]) -> None:
    # Given the REST API
    props = resources["StratusApi"]["Properties"]
    auth = props["Auth"]
    # Then every method needs an API key, and the plan throttles and caps by parameters
    assert auth["ApiKeyRequired"] is True
    plan = auth["UsagePlan"]
    assert plan["CreateUsagePlan"] == "PER_API"
    assert plan["Throttle"] == {
        "RateLimit": {"Ref": "ApiThrottleRateLimit"},
        "BurstLimit": {"Ref": "ApiThrottleBurstLimit"},
    }
    assert plan["Quota"]["Limit"] == {"Ref": "ApiQuotaLimit"}
    assert plan["Quota"]["Period"] in {"DAY", "WEEK", "MONTH"}
    # And it is traced, access-logged and emits method metrics
    assert props["TracingEnabled"] is True
    assert _getatt_target(props["AccessLogSetting"]["DestinationArn"]) == "ApiAccessLogGroup"
    assert all(s["MetricsEnabled"] for s in props["MethodSettings"])
    # And the API function serves every path through it
    events = resources["ApiFunction"]["Properties"]["Events"].values()
    routes = {(e["Properties"]["Path"], e["Properties"]["Method"]) for e in events}
    assert ("/{proxy+}", "ANY") in routes
    assert all(e["Properties"]["RestApiId"] == {"Ref": "StratusApi"} for e in events)


def test_maintenance_runs_hourly(resources: dict[str, Any]) -> None:
    # Given the maintenance function's events / Then one is an hourly schedule
    events = resources["MaintenanceFunction"]["Properties"]["Events"].values()
    assert [e["Properties"]["Schedule"] for e in events if e["Type"] == "Schedule"] == ["rate(1 hour)"]


# --------------------------------------------------------------------------- dashboard and alarms


def _dashboard_metrics(resources: dict[str, Any]) -> list[list[Any]]:
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    parsed = json.loads(re.sub(r"\$\{[^}]+\}", "resolved", body))
    return [metric for widget in parsed["widgets"] for metric in widget["properties"]["metrics"]]


def test_dashboard_shows_exactly_the_metrics_the_code_emits(resources: dict[str, Any]) -> None:
    # Given the dashboard's metrics (the body is valid JSON once substituted)
    metrics = _dashboard_metrics(resources)
    custom = [m for m in metrics if m[0] == "Stratus"]
    # Then the custom metrics are exactly MetricName, with the Powertools service dimension
    assert {m[1] for m in custom} == {name.value for name in MetricName}
    assert all(m[2:4] == ["service", "stratus"] for m in custom)
    # And the queues, DLQs, functions and API have their AWS metrics
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for queue in CONSUMERS:
        assert f"${{{queue}.QueueName}}" in body
        assert f"${{{queue.replace('Queue', 'DLQ')}.QueueName}}" in body
    for name in FUNCTIONS:
        assert f'"FunctionName", "${{{name}}}"' in body
    aws_metrics = {(m[0], m[1]) for m in metrics if m[0] != "Stratus"}
    assert {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Duration"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/ApiGateway", "5XXError"),
        ("AWS/ApiGateway", "Latency"),
    } <= aws_metrics


def test_every_dashboard_widget_is_described_in_the_operations_guide(resources: dict[str, Any]) -> None:
    # Given the dashboard's widgets and docs/operations.md
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "resolved", body))["widgets"]
    guide = (REPO_ROOT / "docs" / "operations.md").read_text()
    rows = {line.split("|")[1].strip() for line in guide.splitlines() if line.startswith("| ")}
    # Then each widget has its row, and each alarm is named in the guide
    assert {w["properties"]["title"] for w in widgets} <= rows
    for name in _of_type(resources, "AWS::CloudWatch::Alarm"):
        assert name in guide or name.endswith("ErrorsAlarm"), name


def test_alarms_cover_dlqs_queue_age_api_and_functions(template: dict[str, Any]) -> None:
    # Given the alarms
    alarms = _of_type(template["Resources"], "AWS::CloudWatch::Alarm").values()

    def watched(metric: str) -> list[Any]:
        return [
            a["Properties"]["Dimensions"][0]["Value"]
            for a in alarms
            if a["Properties"].get("MetricName") == metric
        ]

    # Then every DLQ alarms on any visible message, and every main queue on its oldest message
    dlq_alarms = [
        a for a in alarms if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
    ]
    assert sorted(_getatt_target(a["Properties"]["Dimensions"][0]["Value"]) for a in dlq_alarms) == sorted(
        q.replace("Queue", "DLQ") for q in CONSUMERS
    )
    assert all(
        a["Properties"]["Threshold"] == 0 and a["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
        for a in dlq_alarms
    )
    assert sorted(_getatt_target(v) for v in watched("ApproximateAgeOfOldestMessage")) == sorted(CONSUMERS)
    # And every function alarms on errors
    assert sorted(v["Ref"] for v in watched("Errors")) == sorted(FUNCTIONS)
    # And they notify the topic only when one is given
    assert template["Conditions"]["HasAlarmTopic"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]
    }
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == {
            "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
        }


def test_api_5xx_alarm_is_a_rate_of_errors_over_requests(resources: dict[str, Any]) -> None:
    # Given the API 5xx alarm
    props = resources["Api5xxRateAlarm"]["Properties"]
    queries = {q["Id"]: q for q in props["Metrics"]}
    # Then it divides the API's 5XXError sum by its Count sum, on the API's stage
    for query_id, metric in (("errors", "5XXError"), ("requests", "Count")):
        stat = queries[query_id]["MetricStat"]
        assert (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"]) == ("AWS/ApiGateway", metric)
        assert stat["Stat"] == "Sum"
        dimensions = {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]}
        assert dimensions == {
            "ApiName": {"Fn::Sub": "${AWS::StackName}-api"},
            "Stage": {"Ref": "ApiStageName"},
        }
        assert queries[query_id]["ReturnData"] is False
    (returned,) = [q for q in props["Metrics"] if q["ReturnData"]]
    assert "100 * errors / requests" in returned["Expression"]
    # And it fires above a percentage, not on a count of errors
    assert props["ComparisonOperator"] == "GreaterThanThreshold"
    assert 0 < props["Threshold"] <= 10
    assert "MetricName" not in props


def test_latency_and_circuit_alarms(resources: dict[str, Any]) -> None:
    # Given the alarms on single metrics
    alarms = {
        (a["Properties"].get("Namespace"), a["Properties"].get("MetricName")): a["Properties"]
        for a in _of_type(resources, "AWS::CloudWatch::Alarm").values()
    }
    # Then API Gateway latency and search latency alarm on their p95
    assert alarms[("AWS/ApiGateway", "Latency")]["ExtendedStatistic"] == "p95"
    search = alarms[("Stratus", MetricName.SEARCH_LATENCY_MS.value)]
    assert search["ExtendedStatistic"] == "p95"
    assert search["Threshold"] < alarms[("AWS/ApiGateway", "Latency")]["Threshold"]
    # And any opened provider circuit alarms, on the Powertools service dimension of the custom metrics
    circuit = alarms[("Stratus", MetricName.CIRCUIT_OPEN.value)]
    assert (circuit["Statistic"], circuit["Threshold"], circuit["ComparisonOperator"]) == (
        "Sum",
        0,
        "GreaterThanThreshold",
    )
    for props in (search, circuit):
        assert props["Dimensions"] == [{"Name": "service", "Value": "stratus"}]


def test_parameters_and_outputs(template: dict[str, Any]) -> None:
    # Given the parameters and outputs / Then the contract's names are there with their defaults
    params = template["Parameters"]
    assert params["AlarmTopicArn"]["Default"] == ""
    assert params["LogRetentionDays"]["Default"] == 30
    assert {"ApiThrottleRateLimit", "ApiThrottleBurstLimit", "ApiQuotaLimit"} <= set(params)
    assert {
        "ApiUrl",
        "ApiKeyId",
        "BucketName",
        "DocumentsTableName",
        "FetchQueueUrl",
        "EmbedQueueUrl",
        "IndexQueueUrl",
    } <= set(template["Outputs"])


# --------------------------------------------------------------------------- sample events


def test_there_is_one_event_per_function() -> None:
    # Given the events folder / Then it holds exactly one sample per function
    assert sorted(p.stem for p in EVENTS_DIR.glob("*.json")) == sorted(
        name.removesuffix("Function").lower() for name in FUNCTIONS
    )


def _single_sqs_record(event: dict[str, Any], queue: str) -> dict[str, Any]:
    (record,) = event["Records"]
    assert record["eventSource"] == "aws:sqs"
    assert re.fullmatch(rf"arn:aws:sqs:us-east-1:\d{{12}}:[\w-]*{queue}[\w-]*", record["eventSourceARN"])
    assert record["messageId"]
    assert record["receiptHandle"]
    assert isinstance(record["body"], str)
    return record


def test_fetch_event_is_an_s3_put_notification_through_sqs() -> None:
    # Given the fetch sample / When its SQS body is parsed as an S3 notification
    record = _single_sqs_record(_load_event("fetch"), "FetchQueue")
    (s3_record,) = json.loads(record["body"])["Records"]
    # Then it announces a Put of the sample document in the local bucket
    assert s3_record["eventSource"] == "aws:s3"
    assert s3_record["eventName"] == "ObjectCreated:Put"
    assert s3_record["awsRegion"] == "us-east-1"
    assert s3_record["s3"]["bucket"]["name"] == "stratus-local"
    assert s3_record["s3"]["object"]["key"] == SAMPLE_SOURCE


@pytest.mark.parametrize(
    ("name", "queue", "artifact"),
    [
        ("embed", "EmbedQueue", "chunks.json.gz"),
        ("index", "IndexQueue", "embeddings.parquet"),
    ],
)
def test_stage_events_carry_stage_messages(name: str, queue: str, artifact: str) -> None:
    # Given a stage sample / When its body is parsed as a StageMessage
    record = _single_sqs_record(_load_event(name), queue)
    message = StageMessage.model_validate_json(record["body"])
    # Then it points at the sample document's staged output of the previous stage
    assert message.action == "upsert"
    assert message.collection == "docs"
    # the source is the document's path inside its collection, not its inbox key
    assert message.source == SAMPLE_SOURCE.removeprefix("inbox/docs/")
    assert message.doc_id == make_doc_id("docs", message.source)
    assert re.fullmatch(r"[0-9a-f]{64}", message.content_sha256)
    assert message.key == f"staging/docs/{message.doc_id}/{message.content_sha256}/{artifact}"


def test_stage_events_share_one_document_version() -> None:
    # Given the embed and index samples / Then they describe the same document version
    embed, index = (
        StageMessage.model_validate_json(_load_event(n)["Records"][0]["body"]) for n in ("embed", "index")
    )
    assert (embed.doc_id, embed.content_sha256) == (index.doc_id, index.content_sha256)


def test_api_event_is_a_rest_proxy_search_request() -> None:
    # Given the API sample
    event = _load_event("api")
    # Then it has the REST (v1 payload) shape Mangum recognises: resource + requestContext
    assert event["resource"] == "/{proxy+}"
    assert event["requestContext"]["stage"] == "v1"
    assert (event["httpMethod"], event["path"]) == ("POST", "/v1/collections/docs/search")
    assert event["headers"]["x-api-key"]
    assert event["headers"]["Content-Type"] == "application/json"
    assert event["isBase64Encoded"] is False
    assert json.loads(event["body"]) == {"query": "how do I run the tests", "top_k": 5}


def test_maintenance_event_is_a_scheduled_event() -> None:
    # Given the maintenance sample / Then it is an EventBridge scheduled event
    event = _load_event("maintenance")
    assert (event["source"], event["detail-type"]) == ("aws.events", "Scheduled Event")
    assert event["resources"][0].startswith("arn:aws:events:us-east-1:")


def test_llm_grants_exist_only_when_a_provider_is_configured(resources: dict[str, Any]) -> None:
    # Given the API function's policies
    policies = resources["ApiFunction"]["Properties"]["Policies"]
    conditional = {p["Fn::If"][0]: p["Fn::If"][1] for p in policies if "Fn::If" in p}

    # Then SSM and Bedrock actions appear only inside the matching conditional policy
    unconditional_actions = {
        action
        for p in policies
        if "Fn::If" not in p
        for statement in p.get("Statement", [])
        for action in statement["Action"]
    }
    assert not {a for a in unconditional_actions if a.startswith(("ssm:", "bedrock:", "secretsmanager:"))}
    assert conditional["HasOpenAiKey"]["Statement"][0]["Action"] == ["ssm:GetParameter"]
    assert conditional["HasBedrockModel"]["Statement"][0]["Action"] == [
        "bedrock:InvokeModel",
        "bedrock:InvokeModelWithResponseStream",
    ]
    # And each is scoped to the one configured parameter or model, never a wildcard
    for policy in conditional.values():
        resources_ = policy["Statement"][0]["Resource"]
        for resource in resources_ if isinstance(resources_, list) else [resources_]:
            assert "*" not in resource["Fn::Sub"]


# --------------------------------------------------------------------------- issue 20: deployability


def _statements(policies: list[Any]) -> list[dict[str, Any]]:
    """Every inline statement of a function's policies, conditional ones included."""
    found: list[dict[str, Any]] = []
    for policy in policies:
        if "Fn::If" in policy:
            policy = policy["Fn::If"][1]
        if isinstance(policy, dict):
            found.extend(policy.get("Statement", []))
    return found


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def _resources(statement: dict[str, Any]) -> list[Any]:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


BUCKET_ARN = {"Fn::GetAtt": ["DocumentBucket", "Arn"]}


def test_object_readers_may_list_the_bucket_unconditionally(resources: dict[str, Any]) -> None:
    """Finding 1: without an unconditional s3:ListBucket, S3 answers a missing key with 403, not 404."""
    # Given every function and the GPU worker policy that read objects
    readers = {
        name: resources[name]["Properties"]["Policies"]
        for name in FUNCTIONS
        if any("s3:GetObject" in _actions(s) for s in _statements(resources[name]["Properties"]["Policies"]))
    }
    readers["EmbedWorkerPolicy"] = [resources["EmbedWorkerPolicy"]["Properties"]["PolicyDocument"]]
    assert set(readers) == {*FUNCTIONS, "EmbedWorkerPolicy"}
    for name, policies in readers.items():
        listing = [s for s in _statements(policies) if "s3:ListBucket" in _actions(s)]
        # Then each may list the bucket, with no s3:prefix condition (a GET carries no prefix)
        assert listing, name
        assert any(BUCKET_ARN in _resources(s) and "Condition" not in s for s in listing), name


def _dynamodb_actions(policies: list[Any], table: str) -> set[str]:
    return {
        a
        for s in _statements(policies)
        if {"Fn::GetAtt": [table, "Arn"]} in _resources(s)
        for a in _actions(s)
        if a.startswith("dynamodb:")
    }


def test_documents_table_grants_are_the_calls_the_store_makes(resources: dict[str, Any]) -> None:
    """Finding 12: DynamoDBCrudPolicy granted Scan, DeleteItem and batch writes nobody makes."""
    # Given the calls stores/documents.py makes
    source = (REPO_ROOT / "shared/stratus/stores/documents.py").read_text()
    calls = set(
        re.findall(r'"(get_item|batch_get_item|query|update_item|put_item|scan|delete_item)"', source)
    )
    used = {"dynamodb:" + "".join(p.capitalize() for p in c.split("_")) for c in calls}
    assert used == {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",  # DocumentTable.create: bulk ingestion's first records, in the CLI
    }
    for name in [*FUNCTIONS, "EmbedWorkerPolicy"]:
        res = resources[name]
        policies = res["Properties"].get("Policies") or [res["Properties"]["PolicyDocument"]]
        # Then no function uses the CRUD policy template, and its documents-table actions are used ones
        assert not any("DynamoDBCrudPolicy" in p for p in policies if isinstance(p, dict)), name
        assert _dynamodb_actions(policies, "DocumentsTable") <= used, name
        # and none may put a whole record: no function runs bulk ingestion
        assert "dynamodb:PutItem" not in _dynamodb_actions(policies, "DocumentsTable"), name


def test_gpu_worker_policy_grants_what_the_embed_function_has(resources: dict[str, Any]) -> None:
    """Finding 4: the worker lacked dynamodb:BatchGetItem and read access to lancedb/*."""
    # Given the embed function's inline statements and the worker's managed policy
    embed = _statements(resources["EmbedFunction"]["Properties"]["Policies"])
    worker = resources["EmbedWorkerPolicy"]["Properties"]["PolicyDocument"]["Statement"]

    def pairs(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {
            (a, json.dumps(r, sort_keys=True)) for s in statements for a in _actions(s) for r in _resources(s)
        }

    # Then every (action, resource) the function is granted, the worker is granted too
    assert pairs(embed) <= pairs(worker), pairs(embed) - pairs(worker)
    # And the worker may poll the embed queue and send to the index queue (the SAM templates' part)
    actions = {a for s in worker for a in _actions(s)}
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", "dynamodb:BatchGetItem"} <= actions


def test_api_may_ask_every_queue_readiness_checks(resources: dict[str, Any]) -> None:
    """Finding 5: /health/ready calls sqs:GetQueueAttributes, which the API role lacked (always 503)."""
    statements = _statements(resources["ApiFunction"]["Properties"]["Policies"])
    queues = {
        json.dumps(r) for s in statements if "sqs:GetQueueAttributes" in _actions(s) for r in _resources(s)
    }
    for queue in ("FetchQueue", "EmbedQueue", "IndexQueue"):
        assert json.dumps({"Fn::GetAtt": [queue, "Arn"]}) in queues, queue


def test_bedrock_inference_profiles_reach_their_base_model_in_every_region(resources: dict[str, Any]) -> None:
    """Finding 7: a profile (us.anthropic...) needs the profile ARN and foundation-model/* in each region."""
    policies = resources["ApiFunction"]["Properties"]["Policies"]
    (bedrock,) = [p["Fn::If"][1] for p in policies if "Fn::If" in p and p["Fn::If"][0] == "HasBedrockModel"]
    statements = bedrock["Statement"]
    subs = [r["Fn::Sub"] for s in statements for r in _resources(s)]
    profile = (
        "arn:${AWS::Partition}:bedrock:${AWS::Region}:${AWS::AccountId}:inference-profile/${BedrockModelId}"
    )
    # Then the profile itself is granted
    assert profile in subs
    # And the base model in any region, but only when called through that profile
    (routed,) = [s for s in statements if "Condition" in s]
    assert [r["Fn::Sub"] for r in _resources(routed)] == [
        "arn:${AWS::Partition}:bedrock:*::foundation-model/*"
    ]
    assert routed["Condition"]["StringEquals"]["bedrock:InferenceProfileArn"] == {"Fn::Sub": profile}


def test_secure_string_under_a_customer_key_may_be_decrypted_through_ssm_only(
    resources: dict[str, Any],
) -> None:
    """Finding 12: a SecureString with a customer-managed key needs kms:Decrypt."""
    policies = resources["ApiFunction"]["Properties"]["Policies"]
    (kms,) = [p["Fn::If"][1] for p in policies if "Fn::If" in p and p["Fn::If"][0] == "HasSsmKmsKey"]
    (statement,) = kms["Statement"]
    assert _actions(statement) == ["kms:Decrypt"]
    assert statement["Condition"]["StringEquals"]["kms:ViaService"] == {
        "Fn::Sub": "ssm.${AWS::Region}.${AWS::URLSuffix}"
    }


def test_docs_and_schema_are_served_without_a_key(resources: dict[str, Any]) -> None:
    """Finding 10: a browser opening /docs (or the console's static files) sends no API key."""
    events = resources["ApiFunction"]["Properties"]["Events"].values()
    public = {
        (e["Properties"]["Path"], e["Properties"]["Method"])
        for e in events
        if e["Properties"].get("Auth", {}).get("ApiKeyRequired") is False
    }
    assert {
        ("/docs", "GET"),
        ("/openapi.json", "GET"),
        ("/health/{proxy+}", "GET"),
        ("/ui", "GET"),
        ("/ui/{proxy+}", "GET"),
    } == public


def test_bucket_name_is_valid_for_any_stack_name(resources: dict[str, Any]) -> None:
    """Finding 12: a name from the stack name failed with upper case or over ~30 characters."""
    name, variables = resources["DocumentBucket"]["Properties"]["BucketName"]["Fn::Sub"]
    assert "AWS::StackName" not in json.dumps(name)
    # Given the longest stack id part the name uses (a UUID) and a 12-digit account
    rendered = name.replace("${AWS::AccountId}", "123456789012").replace(
        "${StackUuid}", "2f7f3a40-4e58-11ef-8a3b-0afff2c13f5d"
    )
    # Then the name is a valid S3 bucket name
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", rendered), rendered
    assert variables["StackUuid"] == {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}
    # And the queue policy names the same bucket
    condition = resources["FetchQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Condition"]
    arn, arn_variables = condition["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    assert arn == "arn:${AWS::Partition}:s3:::" + name
    assert arn_variables == variables


def test_api_limits_fit_api_gateway_and_lambda(resources: dict[str, Any]) -> None:
    """Finding 12: LanceDB's 60 s timeout and a 6 MiB body exceed what the API can take."""
    from stratus.settings import Settings

    variables = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    timeout = resources["ApiFunction"]["Properties"]["Timeout"]
    # Then one LanceDB request fits well inside the function's 29 s
    assert float(variables["STRATUS_LANCEDB_TIMEOUT_S"]) * 3 < timeout
    # And a body at the limit, base64-encoded, fits Lambda's 6 MB request payload with room for the envelope
    body = int(variables["STRATUS_API_MAX_BODY_BYTES"])
    assert body * 4 / 3 + 256 * 1024 <= 6 * 1024 * 1024
    assert Settings.model_fields["api_max_body_bytes"].default > body  # the template is what lowers it


def test_browser_uploads_get_cors_only_when_origins_are_given(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """Finding 12: presigned PUTs from a browser need CORS on the bucket."""
    cors = resources["DocumentBucket"]["Properties"]["CorsConfiguration"]["Fn::If"]
    assert cors[0] == "HasUploadCors"
    (rule,) = cors[1]["CorsRules"]
    assert rule["AllowedMethods"] == ["PUT"]
    assert rule["AllowedOrigins"] == {"Fn::Split": [",", {"Ref": "UploadCorsOrigins"}]}
    assert template["Parameters"]["UploadCorsOrigins"]["Default"] == ""


def test_maintenance_may_sweep_the_dead_letter_queues(resources: dict[str, Any]) -> None:
    """Finding 6: a dead-lettered message its stage never saw left its document stuck: swept."""
    statements = _statements(resources["MaintenanceFunction"]["Properties"]["Policies"])
    granted = {(a, json.dumps(r)) for s in statements for a in _actions(s) for r in _resources(s)}
    for dlq in ("EmbedDLQ", "IndexDLQ"):
        assert ("sqs:ReceiveMessage", json.dumps({"Fn::GetAtt": [dlq, "Arn"]})) in granted
        assert ("sqs:DeleteMessage", json.dumps({"Fn::GetAtt": [dlq, "Arn"]})) not in granted
    assert ("dynamodb:UpdateItem", json.dumps({"Fn::GetAtt": ["DocumentsTable", "Arn"]})) in granted


# Lambda's published deprecation dates (docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html).
RUNTIME_DEPRECATION = {"python3.11": "2026-06-30", "python3.12": "2028-10-31", "python3.13": "2029-06-30"}


def test_image_runtime_is_supported_for_at_least_another_year() -> None:
    """Finding 3: python3.11 (Amazon Linux 2) reached its deprecation date on 2026-06-30."""
    import datetime

    # Given the Lambda base image every function is built from
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (REPO_ROOT / "functions/embed" / name).read_text()
        if "public.ecr.aws/lambda/python:" not in text:
            continue
        (version,) = set(re.findall(r"public\.ecr\.aws/lambda/python:(\d+\.\d+)", text))
        # Then its Python is a Lambda runtime supported for more than another year
        deprecated = datetime.date.fromisoformat(RUNTIME_DEPRECATION[f"python{version}"])
        assert deprecated > datetime.date.today() + datetime.timedelta(days=365), (name, version)
