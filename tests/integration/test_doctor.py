"""`stratus doctor` against the emulator: the stack's outputs stubbed with the local stack's resources.

moto has no CloudFormation stack for the local resources and no IAM policy simulator, so the test hands
the doctor the outputs and the function names, creates the functions and their roles in moto's Lambda
and IAM, and the permission check falls back to evaluating the roles' own policies. The probe goes
through the real local pipeline (pollers running) and the API served on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import httpx
import pytest

from stratus_tools.doctor import Clients, StackTargets, evaluate, required_permissions, run
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

ASSUME = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


def _outputs(stack: LocalStack) -> dict[str, str]:
    return {
        "ApiUrl": stack.api_url,
        "BucketName": stack.plan.bucket,
        "DocumentsTableName": stack.table_names["DocumentsTable"],
        "ApiKeysTableName": stack.table_names["ApiKeysTable"],
        **{f"{q}Url": stack.queue_urls[q] for q in stack.queue_urls},
    }


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return {}\n")
    return buffer.getvalue()


def _grants(pairs: list[tuple[str, str]], drop: str | None = None) -> dict[str, Any]:
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": [action], "Resource": [resource]}
        for action, resource in pairs
        if action != drop
    ]
    if drop == "s3:ListBucket":
        # The defect of issue 20 finding 1: listing only under a prefix (GET of a missing key gets 403)
        bucket = next(r for a, r in pairs if a == drop)
        statements.append(
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [bucket],
                "Condition": {"StringLike": {"s3:prefix": ["inbox/*"]}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


@pytest.fixture(scope="module")
def deployed(running_stack: LocalStack) -> dict[str, Any]:
    """The local stack as a deployed one: functions with roles in moto, one of each kind of defect."""
    if not running_stack.api_url:
        running_stack.serve_api(port=0)
    outputs = _outputs(running_stack)
    targets = StackTargets.from_outputs(outputs, "us-east-1")
    iam, lam, sqs = running_stack.client("iam"), running_stack.client("lambda"), running_stack.client("sqs")
    functions = {}
    for logical_id in (
        "FetchFunction",
        "EmbedFunction",
        "IndexFunction",
        "ApiFunction",
        "MaintenanceFunction",
    ):
        role = iam.create_role(RoleName=f"doctor-{logical_id}", AssumeRolePolicyDocument=ASSUME)["Role"]
        drop = "s3:ListBucket" if logical_id == "FetchFunction" else None
        drop = "dynamodb:BatchGetItem" if logical_id == "EmbedFunction" else drop
        iam.put_role_policy(
            RoleName=role["RoleName"],
            PolicyName="stage",
            PolicyDocument=json.dumps(_grants(required_permissions(logical_id, targets), drop)),
        )
        name = f"doctor-{logical_id}"
        lam.create_function(
            FunctionName=name,
            Runtime="python3.11" if logical_id == "FetchFunction" else "python3.12",
            Role=role["Arn"],
            Handler="app.handler",
            Code={"ZipFile": _zip()},
            Timeout=900 if logical_id == "EmbedFunction" else 60,
            MemorySize=1024,
        )
        functions[logical_id] = name
    lam.put_function_concurrency(FunctionName=functions["IndexFunction"], ReservedConcurrentExecutions=1)
    # An SQS event source on a queue that hides messages for less than 6x the function's timeout
    # (its own queue: moto would invoke the function for messages of a mapped pipeline queue).
    short = sqs.create_queue(QueueName="doctor-short", Attributes={"VisibilityTimeout": "120"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=short, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=functions["EmbedFunction"], BatchSize=10)
    clients = Clients(
        running_stack.client("cloudformation"),
        lam,
        iam,
        sqs,
        running_stack.client("s3"),
        running_stack.client("dynamodb"),
    )
    return {"outputs": outputs, "functions": functions, "clients": clients}


def test_doctor_names_each_defect_in_words_and_passes_the_rest(
    deployed: dict[str, Any], api_headers: dict[str, str]
) -> None:
    # Given the stack with a deprecated runtime and a prefix-only ListBucket on fetch, a missing
    # BatchGetItem and a short queue visibility on embed, and reserved concurrency on index
    # When the doctor checks it, probe included
    doctor = run(
        "local",
        deployed["clients"],
        "us-east-1",
        api_key=api_headers["x-api-key"],
        timeout_s=120,
        http=httpx,
        functions=deployed["functions"],
        outputs=deployed["outputs"],
    )
    found = {f.check: f for f in doctor.findings}
    print("\n" + "\n".join(f.line() for f in doctor.findings))
    # Then each defect is a failed check that says what is wrong and why it matters
    fetch_config = found["FetchFunction configuration"]
    assert not fetch_config.ok
    assert "runtime python3.11 is deprecated" in fetch_config.detail
    fetch_grants = found["FetchFunction permissions"]
    assert not fetch_grants.ok
    assert "s3:ListBucket" in fetch_grants.detail
    assert "403, not 404" in fetch_grants.detail
    embed_grants = found["EmbedFunction permissions"]
    assert not embed_grants.ok
    assert "dynamodb:BatchGetItem" in embed_grants.detail
    assert "6x the function's 900 s timeout" in found["EmbedFunction configuration"].detail
    assert "reserved concurrency 1" in found["IndexFunction configuration"].detail
    # And what is right passes: the other functions, the pipeline and the search through the API
    for check in (
        "IndexFunction permissions",
        "ApiFunction configuration",
        "ApiFunction permissions",
        "MaintenanceFunction configuration",
        "MaintenanceFunction permissions",
        "pipeline",
        "search",
    ):
        assert found[check].ok, found[check].line()
    assert len(doctor.failed) == 5


def test_doctor_reports_a_stack_that_does_not_exist(running_stack: LocalStack) -> None:
    # Given no such stack in CloudFormation / When the doctor looks it up
    clients = Clients(
        *(running_stack.client(s) for s in ("cloudformation", "lambda", "iam", "sqs", "s3", "dynamodb"))
    )
    doctor = run("no-such-stack", clients, "us-east-1", end_to_end=False)
    # Then it says so, and checks nothing else
    (finding,) = doctor.findings
    assert (finding.check, finding.ok) == ("stack outputs", False)
    assert "no-such-stack" in finding.detail


def test_only_unconditional_grants_count_and_a_deny_wins() -> None:
    bucket = "arn:aws:s3:::b"
    conditional = {
        "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket, "Condition": {}}]
    }
    plain = {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b*"}]}
    deny = {"Statement": [{"Effect": "Deny", "Action": "s3:ListBucket", "Resource": "*"}]}
    assert evaluate([conditional], "s3:ListBucket", bucket) == "implicitDeny"
    assert evaluate([plain], "S3:ListBucket", bucket) == "allowed"
    assert evaluate([plain, deny], "s3:ListBucket", bucket) == "denied"
