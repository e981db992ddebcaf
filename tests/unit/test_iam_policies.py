"""The template's function roles expanded offline (SAM's translator); the evaluator for what moto skips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stratus_tools.local.iam import FunctionRole, LocalNames, evaluate, function_roles, matches
from stratus_tools.local.plan import read_plan

REPO_ROOT = Path(__file__).resolve().parents[2]
BUCKET_ARN = "arn:aws:s3:::stratus-local"
QUEUES = ("FetchQueue", "EmbedQueue", "IndexQueue", "FetchDLQ", "EmbedDLQ", "IndexDLQ")


def local_names() -> LocalNames:
    """The names a local stack would give the template's resources."""
    refs = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
    refs.update({"AWS::StackName": "stratus", "DocumentBucket": "stratus-local"})
    tables = read_plan(REPO_ROOT / "template.yaml", "stratus-local").tables  # every table the stack makes
    refs.update({table: f"stratus-{table}" for table in tables})
    refs["StratusApiUsagePlan"] = "*"
    attributes = {("DocumentBucket", "Arn"): BUCKET_ARN}
    for queue in QUEUES:
        attributes[(queue, "Arn")] = f"arn:aws:sqs:us-east-1:123456789012:stratus-{queue}"
        attributes[(queue, "QueueName")] = f"stratus-{queue}"
    for table in tables:
        attributes[(table, "Arn")] = f"arn:aws:dynamodb:us-east-1:123456789012:table/stratus-{table}"
    return LocalNames(refs, attributes, {})


@pytest.fixture(scope="module")
def roles() -> dict[str, FunctionRole]:
    return function_roles(REPO_ROOT / "template.yaml", local_names())


def role_of(*statements: dict[str, Any]) -> FunctionRole:
    return FunctionRole("F", "FRole", {"p": {"Statement": list(statements)}})


def test_every_function_gets_its_role_with_policy_templates_expanded(roles: dict[str, FunctionRole]) -> None:
    # given template.yaml expanded by SAM's translator and resolved to local names
    fetch = roles["FetchFunction"]

    # then each function has a role; SQSSendMessagePolicy and DynamoDBCrudPolicy became statements
    assert {"FetchFunction", "EmbedFunction", "IndexFunction", "ApiFunction"} <= set(roles)
    queue = "arn:aws:sqs:us-east-1:123456789012:stratus-EmbedQueue"
    assert evaluate(fetch, "sqs:SendMessage", queue).allowed
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/stratus-DocumentsTable"
    assert evaluate(fetch, "dynamodb:UpdateItem", table).allowed
    # and a grant the function was not given is not there: fetch cannot write the LanceDB store
    assert not evaluate(fetch, "s3:PutObject", f"{BUCKET_ARN}/lancedb/chunks.lance/x").allowed
    assert "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole" in fetch.managed_policy_arns
    assert all(not role.unresolved for role in roles.values()), {f: r.unresolved for f, r in roles.items()}


def test_moto_takes_an_unmet_s3_prefix_condition_as_met_and_the_evaluator_does_not() -> None:
    # given a ListBucket grant limited to the lancedb/ prefix (what the template's roles carry)
    from moto.iam.access_control import IAMPolicy, PermissionResult

    statement = {
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": BUCKET_ARN,
        "Condition": {"StringLike": {"s3:prefix": ["lancedb", "lancedb/*"]}},
    }
    role = role_of(statement)

    # when moto and the evaluator decide a listing of inbox/ and one without a prefix
    moto = IAMPolicy(json.dumps({"Version": "2012-10-17", "Statement": [statement]}))

    # then moto permits both (it has no value for s3:prefix and skips the condition); AWS, and the
    # evaluator, allow only the listing under lancedb/
    assert moto.is_action_permitted("s3:ListBucket", BUCKET_ARN) == PermissionResult.PERMITTED
    assert evaluate(role, "s3:ListBucket", BUCKET_ARN, {"s3:prefix": "lancedb/chunks.lance/"}).allowed
    assert not evaluate(role, "s3:ListBucket", BUCKET_ARN, {"s3:prefix": "inbox/"}).allowed
    assert not evaluate(role, "s3:ListBucket", BUCKET_ARN, {}).allowed


def test_an_explicit_deny_wins_over_an_allow() -> None:
    role = role_of(
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": f"{BUCKET_ARN}/inbox/*"},
    )
    decision = evaluate(role, "s3:DeleteObject", f"{BUCKET_ARN}/inbox/a.md")
    assert not decision.allowed
    assert decision.denied_by == "p#1"
    assert evaluate(role, "s3:DeleteObject", f"{BUCKET_ARN}/staging/a").allowed


def test_not_action_not_resource_and_if_exists() -> None:
    role = role_of(
        {"Effect": "Allow", "NotAction": "s3:Delete*", "NotResource": f"{BUCKET_ARN}/lancedb/*"},
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": BUCKET_ARN,
            "Condition": {"StringLikeIfExists": {"s3:prefix": "inbox/*"}},
        },
    )
    assert evaluate(role, "s3:GetObject", f"{BUCKET_ARN}/inbox/a").allowed
    assert not evaluate(role, "s3:GetObject", f"{BUCKET_ARN}/lancedb/a").allowed
    assert not evaluate(role, "s3:DeleteObject", f"{BUCKET_ARN}/inbox/a").allowed
    assert evaluate(role, "s3:ListBucket", BUCKET_ARN, {}).allowed


def test_conditions_on_keys_the_emulator_cannot_supply_are_reported_not_evaluated() -> None:
    role = role_of(
        {
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": "Stratus"}},
        }
    )
    decision = evaluate(role, "cloudwatch:PutMetricData", "*")
    assert decision.allowed
    assert decision.not_evaluated == ("StringEquals cloudwatch:namespace",)


def test_without_removes_one_action_from_every_statement(roles: dict[str, FunctionRole]) -> None:
    fetch = roles["FetchFunction"]
    key = f"{BUCKET_ARN}/inbox/docs/a.md"
    assert evaluate(fetch, "s3:GetObject", key).allowed
    assert not evaluate(fetch.without("s3:GetObject"), "s3:GetObject", key).allowed
    assert evaluate(fetch, "s3:GetObject", key).allowed  # (a copy: the original keeps its grant)


def test_wildcards_match_as_iam_does() -> None:
    assert matches("sqs:SendMessage*", "sqs:sendmessagebatch", ignore_case=True)
    assert matches("arn:aws:s3:::b/inbox/*", "arn:aws:s3:::b/inbox/a/b.md")
    assert not matches("arn:aws:s3:::b/inbox/*", "arn:aws:s3:::b/inboxes")
    assert matches("arn:aws:s3:::b/?.md", "arn:aws:s3:::b/a.md")
    assert not matches("arn:aws:s3:::b/[ab].md", "arn:aws:s3:::b/a.md")
