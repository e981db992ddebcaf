"""Read template.yaml into the plan of what the local stack creates: one source of truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stratus_tools.local.cfn_yaml import load_template

FUNCTION_TYPES = {"AWS::Serverless::Function", "AWS::Lambda::Function"}


@dataclass(frozen=True)
class QueuePlan:
    """A queue and its redrive policy."""

    logical_id: str
    visibility_timeout_s: int
    dead_letter_queue: str | None = None
    max_receive_count: int | None = None
    fifo: bool = False


@dataclass(frozen=True)
class NotificationPlan:
    """An S3 -> SQS notification of the bucket."""

    event: str
    queue: str
    prefix: str = ""
    suffix: str = ""


@dataclass(frozen=True)
class TablePlan:
    """A DynamoDB table."""

    logical_id: str
    key_schema: list[dict[str, str]]
    attribute_definitions: list[dict[str, str]]


@dataclass(frozen=True)
class EventSourcePlan:
    """An SQS queue delivered to a function."""

    function: str
    queue: str
    batch_size: int
    batching_window_s: int
    report_batch_item_failures: bool


@dataclass(frozen=True)
class FunctionPlan:
    """A function and the dotted path of its handler from the repository root."""

    logical_id: str
    handler: str
    timeout_s: int
    memory_mb: int


@dataclass
class StackPlan:
    """Everything the local stack creates, read from the template."""

    bucket: str
    notifications: list[NotificationPlan] = field(default_factory=list)
    queues: dict[str, QueuePlan] = field(default_factory=dict)
    tables: dict[str, TablePlan] = field(default_factory=dict)
    functions: dict[str, FunctionPlan] = field(default_factory=dict)
    event_sources: list[EventSourcePlan] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    conditions: dict[str, bool] = field(default_factory=dict)


def _evaluate(condition: Any, parameters: dict[str, Any], conditions: dict[str, Any]) -> Any:
    """Evaluate a condition expression (or the Ref of a parameter inside one)."""
    if not isinstance(condition, dict):
        return condition
    ((name, value),) = condition.items()
    if name == "Ref":
        return parameters.get(value)
    if name == "Condition":
        return _evaluate(conditions[value], parameters, conditions)
    args = [_evaluate(v, parameters, conditions) for v in value]
    if name == "Fn::Equals":
        return str(args[0]) == str(args[1])
    if name == "Fn::Not":
        return not args[0]
    if name == "Fn::And":
        return all(args)
    if name == "Fn::Or":
        return any(args)
    raise ValueError(f"unsupported condition function {name}")


def _logical_of(reference: Any) -> str:
    """The logical id a !Ref / !GetAtt points at."""
    if isinstance(reference, dict):
        if "Ref" in reference:
            return str(reference["Ref"])
        if "Fn::GetAtt" in reference:
            return str(reference["Fn::GetAtt"][0])
    raise ValueError(f"expected !Ref or !GetAtt, got {reference!r}")


def read_plan(template_path: Path, bucket: str) -> StackPlan:
    """The local stack's plan for `template_path`, with `bucket` as the bucket's local name."""
    template = load_template(template_path)
    resources: dict[str, Any] = template.get("Resources", {})
    parameters = {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}
    raw_conditions = template.get("Conditions", {})
    conditions = {
        name: bool(_evaluate(expr, parameters, raw_conditions)) for name, expr in raw_conditions.items()
    }
    plan = StackPlan(bucket=bucket, parameters=parameters, conditions=conditions)
    plan.environment = (
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )

    def active(resource: dict[str, Any]) -> bool:
        return "Condition" not in resource or conditions[resource["Condition"]]

    for logical_id, resource in resources.items():
        if not active(resource):
            continue
        kind, props = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::SQS::Queue":
            redrive = props.get("RedrivePolicy") or {}
            plan.queues[logical_id] = QueuePlan(
                logical_id=logical_id,
                visibility_timeout_s=int(props.get("VisibilityTimeout", 30)),
                dead_letter_queue=_logical_of(redrive["deadLetterTargetArn"]) if redrive else None,
                max_receive_count=int(redrive["maxReceiveCount"]) if redrive else None,
                fifo=props.get("FifoQueue") is True,
            )
        elif kind == "AWS::DynamoDB::Table":
            plan.tables[logical_id] = TablePlan(logical_id, props["KeySchema"], props["AttributeDefinitions"])
        elif kind == "AWS::S3::Bucket":
            for config in props.get("NotificationConfiguration", {}).get("QueueConfigurations", []):
                rules = {
                    r["Name"].lower(): r["Value"]
                    for r in config.get("Filter", {}).get("S3Key", {}).get("Rules", [])
                }
                plan.notifications.append(
                    NotificationPlan(
                        config["Event"],
                        _logical_of(config["Queue"]),
                        rules.get("prefix", ""),
                        rules.get("suffix", ""),
                    )
                )
        elif kind in FUNCTION_TYPES:
            plan.functions[logical_id] = _function_plan(logical_id, props, template)
            for event in props.get("Events", {}).values():
                if event.get("Type") == "SQS":
                    plan.event_sources.append(_event_source(logical_id, event["Properties"], "Queue"))
        elif kind == "AWS::Lambda::EventSourceMapping":
            plan.event_sources.append(
                _event_source(_logical_of(props["FunctionName"]), props, "EventSourceArn")
            )
    return plan


def _event_source(function: str, props: dict[str, Any], queue_key: str) -> EventSourcePlan:
    return EventSourcePlan(
        function=function,
        queue=_logical_of(props[queue_key]),
        batch_size=int(props.get("BatchSize", 10)),
        batching_window_s=int(props.get("MaximumBatchingWindowInSeconds", 0)),
        report_batch_item_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
    )


def _function_plan(logical_id: str, props: dict[str, Any], template: dict[str, Any]) -> FunctionPlan:
    globals_ = template.get("Globals", {}).get("Function", {})
    if props.get("PackageType") == "Image":
        handler = str(props["ImageConfig"]["Command"][0])
    else:
        module = str(props["CodeUri"]).strip("/").replace("/", ".")
        handler = f"{module}.{props['Handler']}"
    return FunctionPlan(
        logical_id=logical_id,
        handler=handler,
        timeout_s=int(props.get("Timeout", globals_.get("Timeout", 3))),
        memory_mb=int(props.get("MemorySize", globals_.get("MemorySize", 128))),
    )
