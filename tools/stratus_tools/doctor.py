"""`stratus doctor --stack NAME`: after `sam deploy`, check the stack with read-only calls, then end to end.

The checks, in order: the stack's outputs; each function's configuration (state, runtime, reserved
concurrency, its SQS event sources and their queues' visibility timeouts); each function role's
permissions for the calls the code makes (IAM's policy simulator on AWS; where it is not available, an
evaluation of the role's own policies that counts only unconditional grants); then one probe document
through the pipeline (S3 inbox -> INDEXED) and one search for it through the API. Every problem is
printed in words; the exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

FUNCTIONS = ("FetchFunction", "EmbedFunction", "IndexFunction", "ApiFunction", "MaintenanceFunction")
# Zip runtimes and their deprecation dates (docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html).
RUNTIME_DEPRECATION = {"python3.12": "2028-10-31", "python3.13": "2029-06-30", "python3.14": "2030-06-30"}
PROBE_COLLECTION = "stratus-doctor"
PROBE_TEXT = "Stratus doctor probe {token}: the pipeline carried this document from the inbox to the index.\n"


@dataclass
class Finding:
    """One check's outcome, in words."""

    check: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        """The finding as one printed line."""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.check}" + (f": {self.detail}" if self.detail else "")


@dataclass
class StackTargets:
    """ARNs the checks name, derived from the stack outputs."""

    bucket: str
    documents_table: str
    api_keys_table: str
    queues: dict[str, str] = field(default_factory=dict)  # FetchQueue/EmbedQueue/IndexQueue/...DLQ -> ARN

    @classmethod
    def from_outputs(cls, outputs: dict[str, str], region: str) -> StackTargets:
        """The targets of a stack's outputs (queue ARNs from their URLs, table ARNs from the account)."""
        queues = {}
        account = ""
        for key, value in outputs.items():
            if key.endswith(("QueueUrl", "DLQUrl")):
                parts = [p for p in urlsplit(value).path.split("/") if p]
                if len(parts) >= 2:
                    account, name = parts[-2], parts[-1]
                    queues[key.removesuffix("Url")] = f"arn:aws:sqs:{region}:{account}:{name}"

        def table(name: str) -> str:
            return f"arn:aws:dynamodb:{region}:{account}:table/{name}"

        return cls(
            bucket=outputs["BucketName"],
            documents_table=table(outputs["DocumentsTableName"]),
            api_keys_table=table(outputs.get("ApiKeysTableName", "")),
            queues=queues,
        )


def required_permissions(logical_id: str, t: StackTargets) -> list[tuple[str, str]]:
    """(action, resource) pairs the function's code calls, on a sample resource of each kind."""
    bucket = f"arn:aws:s3:::{t.bucket}"
    obj = f"{bucket}/{{}}{PROBE_COLLECTION}/probe"
    q = t.queues
    docs = [
        (a, t.documents_table) for a in ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:UpdateItem")
    ]
    lancedb_rw = [(a, obj.format("lancedb/")) for a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")]
    listing = [("s3:ListBucket", bucket)]
    table: dict[str, list[tuple[str, str]]] = {
        "FetchFunction": [
            ("s3:GetObject", obj.format("inbox/")),
            ("s3:PutObject", obj.format("staging/")),
            *listing,
            ("sqs:SendMessage", q.get("EmbedQueue", "")),
            ("sqs:SendMessage", q.get("IndexQueue", "")),
            *docs,
        ],
        "EmbedFunction": [
            ("s3:GetObject", obj.format("staging/")),
            ("s3:PutObject", obj.format("staging/")),
            ("s3:GetObject", obj.format("lancedb/")),
            *listing,
            ("sqs:ReceiveMessage", q.get("EmbedQueue", "")),
            ("sqs:DeleteMessage", q.get("EmbedQueue", "")),
            ("sqs:SendMessage", q.get("IndexQueue", "")),
            *docs,
        ],
        "IndexFunction": [
            ("s3:GetObject", obj.format("staging/")),
            *lancedb_rw,
            *listing,
            ("sqs:ReceiveMessage", q.get("IndexQueue", "")),
            ("sqs:DeleteMessage", q.get("IndexQueue", "")),
            *docs,
        ],
        "ApiFunction": [
            ("s3:GetObject", obj.format("lancedb/")),
            ("s3:PutObject", obj.format("inbox/")),
            ("s3:DeleteObject", obj.format("inbox/")),
            *listing,
            ("sqs:SendMessage", q.get("IndexQueue", "")),
            *[
                ("sqs:GetQueueAttributes", q.get(name, ""))
                for name in ("FetchQueue", "EmbedQueue", "IndexQueue")
            ],
            *docs,
            ("dynamodb:Query", t.documents_table),
            ("dynamodb:GetItem", t.api_keys_table),
            ("dynamodb:UpdateItem", t.api_keys_table),
        ],
        "MaintenanceFunction": [
            *lancedb_rw,
            *listing,
            ("sqs:ReceiveMessage", q.get("IndexDLQ", "")),
            ("sqs:ReceiveMessage", q.get("EmbedDLQ", "")),
            ("dynamodb:UpdateItem", t.documents_table),
        ],
    }
    return [(action, resource) for action, resource in table[logical_id] if resource]


# --------------------------------------------------------------------------- permission evaluation


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(pattern: str, value: str, case: bool) -> bool:
    """IAM's wildcards (* and ?); actions compare case-insensitively, resources exactly."""
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern)


def evaluate(documents: Iterable[dict[str, Any]], action: str, resource: str) -> str:
    """'allowed', 'denied' (explicit Deny) or 'implicitDeny' from identity policies alone.

    Only unconditional statements count for Allow (a condition the call may not meet, such as an
    s3:prefix on ListBucket, does not make S3 answer 404 for a missing key); a conditional Deny counts.
    """
    allowed = False
    for document in documents:
        for statement in _as_list(document.get("Statement", [])):
            actions = _as_list(statement.get("Action", []))
            resources = _as_list(statement.get("Resource", []))
            if not any(_matches(a, action, case=False) for a in actions):
                continue
            if not any(_matches(r, resource, case=True) for r in resources):
                continue
            if statement.get("Effect") == "Deny":
                return "denied"
            if "Condition" not in statement:
                allowed = True
    return "allowed" if allowed else "implicitDeny"


def role_policy_documents(iam: Any, role_name: str) -> list[dict[str, Any]]:
    """The role's inline and attached managed policy documents."""
    documents: list[dict[str, Any]] = []
    for name in iam.list_role_policies(RoleName=role_name).get("PolicyNames", []):
        document = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        documents.append(json.loads(document) if isinstance(document, str) else document)
    for attached in iam.list_attached_role_policies(RoleName=role_name).get("AttachedPolicies", []):
        policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
        version = iam.get_policy_version(
            PolicyArn=attached["PolicyArn"], VersionId=policy["DefaultVersionId"]
        )
        document = version["PolicyVersion"]["Document"]
        documents.append(json.loads(document) if isinstance(document, str) else document)
    return documents


def check_permissions(iam: Any, role_arn: str, wanted: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(action, resource, decision) of every wanted call that is not allowed."""
    try:
        results = []
        for action, resource in wanted:
            response = iam.simulate_principal_policy(
                PolicySourceArn=role_arn, ActionNames=[action], ResourceArns=[resource]
            )
            results.append((action, resource, response["EvaluationResults"][0]["EvalDecision"]))
    except Exception:
        # No simulator (an emulator) or no iam:SimulatePrincipalPolicy: read the role's own policies.
        documents = role_policy_documents(iam, role_arn.rsplit("/", 1)[-1])
        results = [(a, r, evaluate(documents, a, r)) for a, r in wanted]
    return [(a, r, d) for a, r, d in results if d != "allowed"]


# --------------------------------------------------------------------------- the doctor


@dataclass
class Clients:
    """The AWS clients the doctor uses (read-only calls, plus the probe document's S3 PUT and DELETE)."""

    cloudformation: Any
    lambda_: Any
    iam: Any
    sqs: Any
    s3: Any
    dynamodb: Any


class Doctor:
    """Runs the deploy checks of one stack and collects findings."""

    def __init__(self, clients: Clients, region: str, log: Callable[[Finding], None] | None = None) -> None:
        self.c = clients
        self.region = region
        self.findings: list[Finding] = []
        self._log = log

    def note(self, check: str, ok: bool, detail: str = "") -> Finding:
        """Record (and print) one finding."""
        finding = Finding(check, ok, detail)
        self.findings.append(finding)
        if self._log is not None:
            self._log(finding)
        return finding

    @property
    def failed(self) -> list[Finding]:
        """The findings that failed."""
        return [f for f in self.findings if not f.ok]

    # -- discovery ---------------------------------------------------------------------

    def outputs(self, stack: str) -> dict[str, str] | None:
        """The stack's outputs, or None (and a finding) when it is missing or not a Stratus stack."""
        from stratus_tools.remote import StackNotFoundError, StackOutputs

        try:
            outputs = StackOutputs(self.c.cloudformation).get(stack)
        except StackNotFoundError as error:
            self.note("stack outputs", False, str(error))
            return None
        self.note("stack outputs", True, f"{len(outputs)} outputs, API {outputs['ApiUrl']}")
        return outputs

    def functions(self, stack: str) -> dict[str, str]:
        """Logical id -> function name of the stack's functions."""
        paginator = self.c.cloudformation.get_paginator("list_stack_resources")
        found = {}
        for page in paginator.paginate(StackName=stack):
            for resource in page["StackResourceSummaries"]:
                if resource["ResourceType"] == "AWS::Lambda::Function":
                    found[resource["LogicalResourceId"]] = resource["PhysicalResourceId"]
        return found

    # -- checks ------------------------------------------------------------------------

    def check_function(self, logical_id: str, name: str, targets: StackTargets) -> None:
        """Configuration, event sources and permissions of one function."""
        import datetime

        config = self.c.lambda_.get_function_configuration(FunctionName=name)
        problems = []
        if config.get("State", "Active") != "Active":
            problems.append(f"state {config.get('State')} ({config.get('StateReason', 'no reason given')})")
        if config.get("LastUpdateStatus", "Successful") == "Failed":
            problems.append(f"last update failed ({config.get('LastUpdateStatusReason', '')})")
        runtime = config.get("Runtime")
        if config.get("PackageType", "Zip") == "Zip" and runtime:
            deprecated = RUNTIME_DEPRECATION.get(runtime)
            if deprecated is None or datetime.date.fromisoformat(deprecated) <= datetime.date.today():
                problems.append(
                    f"runtime {runtime} is deprecated or unknown: redeploy with python3.12 or later"
                )
        try:
            reserved = self.c.lambda_.get_function_concurrency(FunctionName=name).get(
                "ReservedConcurrentExecutions"
            )
        except Exception:
            reserved = None
        if reserved is not None:
            problems.append(
                f"reserved concurrency {reserved}: throttled SQS batches burn receives and reach the DLQ"
            )
        for mapping in self.c.lambda_.list_event_source_mappings(FunctionName=name).get(
            "EventSourceMappings", []
        ):
            problems.extend(self._mapping_problems(mapping, int(config.get("Timeout", 3))))
        self.note(
            f"{logical_id} configuration", not problems, "; ".join(problems) or f"{runtime or 'image'} ok"
        )
        role = config.get("Role", "")
        missing = check_permissions(self.c.iam, role, required_permissions(logical_id, targets))
        self.note(
            f"{logical_id} permissions",
            not missing,
            "; ".join(_explain(a, r, d) for a, r, d in missing)
            or f"{role.rsplit('/', 1)[-1]} may make its calls",
        )

    def _mapping_problems(self, mapping: dict[str, Any], timeout_s: int) -> list[str]:
        problems = []
        arn = mapping.get("EventSourceArn", "")
        if mapping.get("State") not in {"Enabled", "Creating", "Updating", "Enabling"}:
            problems.append(f"event source {arn} is {mapping.get('State')}")
        if ":sqs:" in arn:
            account, name = arn.split(":")[4:6]
            url = self.c.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            attributes = self.c.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
            visibility = int(attributes["Attributes"]["VisibilityTimeout"])
            if visibility < 6 * timeout_s:
                problems.append(
                    f"queue {name} hides a message {visibility} s, under 6x the function's {timeout_s} s "
                    "timeout: batches in flight come back while still running"
                )
        return problems

    def probe(self, outputs: dict[str, str], api_key: str | None, timeout_s: float, http: Any) -> None:
        """One document through the pipeline, then a search for it through the API."""
        from stratus.models import DocumentStatus, make_doc_id
        from stratus.stores.documents import DocumentTable

        token = uuid.uuid4().hex[:12]
        source = f"probe-{token}.md"
        key = f"inbox/{PROBE_COLLECTION}/{source}"
        self.c.s3.put_object(
            Bucket=outputs["BucketName"], Key=key, Body=PROBE_TEXT.format(token=token).encode()
        )
        documents = DocumentTable(self.c.dynamodb, outputs["DocumentsTableName"])
        doc_id = make_doc_id(PROBE_COLLECTION, source)
        deadline = time.monotonic() + timeout_s
        record = None
        try:
            while time.monotonic() < deadline:
                record = documents.get(PROBE_COLLECTION, doc_id)
                if record is not None and record.status in {DocumentStatus.INDEXED, DocumentStatus.FAILED}:
                    break
                time.sleep(1)
            if record is None or record.status != DocumentStatus.INDEXED:
                status = (
                    "no record" if record is None else f"{record.status.value} {record.error or ''}".strip()
                )
                self.note(
                    "pipeline",
                    False,
                    f"the probe document {key} is not INDEXED after {timeout_s:.0f} s ({status}): look at "
                    "the fetch, embed and index functions' logs and `stratus dlq list`",
                )
                return
            self.note("pipeline", True, f"{key} INDEXED with {record.chunk_count} chunk(s)")
            if not api_key:
                self.note(
                    "search", False, "no API key given (--api-key or STRATUS_API_KEY): search not checked"
                )
                return
            response = http.post(
                f"{outputs['ApiUrl'].rstrip('/')}/v1/collections/{PROBE_COLLECTION}/search",
                json={"query": f"doctor probe {token}", "top_k": 3},
                headers={"x-api-key": api_key},
                timeout=29,
            )
            if response.status_code != 200:
                self.note("search", False, f"the API answered {response.status_code}: {response.text[:300]}")
                return
            hits = response.json().get("hits", [])
            found = any(hit.get("doc_id") == doc_id for hit in hits)
            self.note(
                "search",
                found,
                "the API found the probe document"
                if found
                else "the API answered, but not with the probe document",
            )
        finally:
            self.c.s3.delete_object(Bucket=outputs["BucketName"], Key=key)


def _explain(action: str, resource: str, decision: str) -> str:
    why = "denied by a Deny statement" if decision == "denied" else "not granted"
    hint = ""
    if action == "s3:ListBucket":
        hint = " (without it S3 answers a missing key with 403, not 404)"
    elif action == "sqs:GetQueueAttributes":
        hint = " (/health/ready answers 503)"
    elif action == "dynamodb:BatchGetItem":
        hint = " (every batch reads its documents' records with it)"
    return f"{action} on {resource} {why}{hint}"


def run(
    stack: str,
    clients: Clients,
    region: str,
    api_key: str | None = None,
    timeout_s: float = 300,
    end_to_end: bool = True,
    http: Any = None,
    log: Callable[[Finding], None] | None = None,
    functions: dict[str, str] | None = None,
    outputs: dict[str, str] | None = None,
) -> Doctor:
    """Every check of one stack; `functions` and `outputs` replace the CloudFormation lookups when given."""
    doctor = Doctor(clients, region, log)
    outputs = outputs if outputs is not None else doctor.outputs(stack)
    if outputs is None:
        return doctor
    targets = StackTargets.from_outputs(outputs, region)
    functions = functions if functions is not None else doctor.functions(stack)
    for logical_id in FUNCTIONS:
        if logical_id not in functions:
            doctor.note(f"{logical_id} configuration", False, "the stack has no such function")
            continue
        try:
            doctor.check_function(logical_id, functions[logical_id], targets)
        except Exception as error:
            doctor.note(
                f"{logical_id} configuration", False, f"could not be read: {type(error).__name__}: {error}"
            )
    if end_to_end:
        import httpx

        doctor.probe(outputs, api_key, timeout_s, http or httpx)
    return doctor


def main(argv: list[str] | None = None) -> int:
    """Entry point of `stratus doctor`."""
    import os

    parser = argparse.ArgumentParser(prog="stratus doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True, help="the CloudFormation stack name given to sam deploy")
    parser.add_argument(
        "--api-key", default=os.environ.get("STRATUS_API_KEY"), help="key for the search check"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds the probe document may take")
    parser.add_argument("--no-probe", action="store_true", help="read-only checks only (no probe document)")
    args = parser.parse_args(argv)
    from stratus.settings import get_settings
    from stratus.stores import aws

    settings = get_settings()
    clients = Clients(*(aws.client(s) for s in ("cloudformation", "lambda", "iam", "sqs", "s3", "dynamodb")))
    doctor = run(
        args.stack,
        clients,
        settings.region,
        api_key=args.api_key,
        timeout_s=args.timeout,
        end_to_end=not args.no_probe,
        log=lambda finding: print(finding.line()),
    )
    print(f"{len(doctor.findings) - len(doctor.failed)} passed, {len(doctor.failed)} failed")
    return 1 if doctor.failed else 0
