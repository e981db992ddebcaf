"""IAM on the local stack: the template's function roles, expanded offline, and what moto does not check.

`function_roles` runs the SAM translator (the package `sam deploy` uses, pinned in
requirements/nodeps.lock) over template.yaml, so policy templates (S3CrudPolicy, SQSPollerPolicy,
DynamoDBCrudPolicy, ...) become the statements CloudFormation would create, and resolves their
intrinsics to the local stack's names. The stack creates one IAM role per function in the emulator
and runs that function with an assumed-role session of it.

moto authorises each request against the caller's identity policies, but it treats a `Condition`
it has no value for as satisfied (every `s3:prefix` condition passes), applies no resource
policies, no permission boundaries or SCPs, and checks one resource per request (the first table of
a BatchGetItem). `evaluate` is the small evaluator over the expanded JSON that covers conditions;
the emulator runs it after moto's check (see `stratus_tools.local.emulator.authorise`) and the
calls-vs-grants report uses it for every recorded call.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

PARTITION = "aws"
# Condition keys the emulator can supply for a request; conditions on other keys are not evaluated
# locally (the report lists them) rather than failing calls AWS would allow.
KNOWN_CONDITION_KEYS = frozenset({"s3:prefix", "s3:delimiter", "s3:max-keys"})
# Stands for a value the local stack cannot resolve: it matches no request.
UNRESOLVED = "<unresolved>"


@dataclass
class FunctionRole:
    """One function's role: its inline policy documents (resolved) and managed policy ARNs."""

    function: str
    role: str
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    managed_policy_arns: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)

    def statements(self) -> list[tuple[str, dict[str, Any]]]:
        """Every statement, named `<policy>#<index>`."""
        named: list[tuple[str, dict[str, Any]]] = []
        for policy_name, document in self.policies.items():
            statements = document.get("Statement", [])
            for index, statement in enumerate(statements if isinstance(statements, list) else [statements]):
                named.append((f"{policy_name}#{index}", statement))
        return named

    def without(self, action: str) -> FunctionRole:
        """A copy with `action` removed from every statement (tests remove grants this way)."""
        trimmed = copy.deepcopy(self)
        for document in trimmed.policies.values():
            kept = []
            for statement in _as_list(document.get("Statement", [])):
                if "Action" in statement:
                    actions = _as_list(statement["Action"])
                    statement["Action"] = [a for a in actions if a.lower() != action.lower()]
                    if not statement["Action"]:
                        continue
                kept.append(statement)
            document["Statement"] = kept
        trimmed.policies = {name: d for name, d in trimmed.policies.items() if d["Statement"]}
        return trimmed


@cache
def _translate_cached(template_text: str) -> str:
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
    from samtranslator.utils.py27hash_fix import (
        to_py27_compatible_template,
        undo_mark_unicode_str_in_template,
    )

    from stratus_tools.local.cfn_yaml import loads_template

    template = loads_template(template_text)
    # The translator wants where the code lives; policies do not depend on it.
    for resource in template.get("Resources", {}).values():
        props = resource.setdefault("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function":
            if props.get("PackageType") == "Image":
                props["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/stratus:local"
            else:
                props["CodeUri"] = "s3://stratus-local-code/function.zip"
        elif resource.get("Type") == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = "s3://stratus-local-code/layer.zip"
    parameters: dict[str, Any] = {}
    to_py27_compatible_template(template, parameters)
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name="us-east-1"))
    translated = translator.translate(template, parameter_values=parameters, get_managed_policy_map=dict)
    return json.dumps(undo_mark_unicode_str_in_template(translated))


def translate(template_path: Path) -> dict[str, Any]:
    """The CloudFormation template SAM makes of `template_path` (offline; cached by content)."""
    result: dict[str, Any] = json.loads(_translate_cached(template_path.read_text()))
    return result


@dataclass
class LocalNames:
    """What !Ref and !GetAtt resolve to on the local stack."""

    refs: dict[str, str]
    attributes: dict[tuple[str, str], str]
    conditions: dict[str, bool]


class _NoValue:
    pass


NO_VALUE = _NoValue()


def resolve(value: Any, names: LocalNames, unresolved: list[str]) -> Any:
    """`value` with intrinsic functions resolved to local names (what cannot be resolved: UNRESOLVED)."""
    if isinstance(value, list):
        items = [resolve(v, names, unresolved) for v in value]
        return [v for v in items if v is not NO_VALUE]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((name, arg),) = value.items()
        if name == "Ref":
            if arg == "AWS::NoValue":
                return NO_VALUE
            return _lookup(names.refs.get(arg), f"!Ref {arg}", unresolved)
        if name == "Fn::GetAtt":
            target, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return _lookup(
                names.attributes.get((target, attribute)), f"!GetAtt {target}.{attribute}", unresolved
            )
        if name == "Fn::If":
            condition, when_true, when_false = arg
            chosen = when_true if names.conditions.get(condition, False) else when_false
            return resolve(chosen, names, unresolved)
        if name == "Fn::Join":
            separator, parts = arg
            return separator.join(str(p) for p in resolve(parts, names, unresolved))
        if name == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            local = {k: resolve(v, names, unresolved) for k, v in variables.items()}
            return _substitute(text, names, local, unresolved)
    resolved = {k: resolve(v, names, unresolved) for k, v in value.items()}
    return {k: v for k, v in resolved.items() if v is not NO_VALUE}


def _lookup(found: str | None, expression: str, unresolved: list[str]) -> str:
    if found is None:
        unresolved.append(expression)
        return UNRESOLVED
    return found


def _substitute(text: str, names: LocalNames, local: dict[str, Any], unresolved: list[str]) -> str:
    def one(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression in local:
            return str(local[expression])
        ref, _, attribute = expression.partition(".")
        if attribute:
            return _lookup(names.attributes.get((ref, attribute)), f"${{{expression}}}", unresolved)
        return _lookup(names.refs.get(ref), f"${{{expression}}}", unresolved)

    return re.sub(r"\$\{([^}!]+)\}", one, text)


def function_roles(template_path: Path, names: LocalNames) -> dict[str, FunctionRole]:
    """Each active function's role, by the function's logical id, with its policies resolved."""
    resources: dict[str, Any] = translate(template_path)["Resources"]
    roles: dict[str, FunctionRole] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        if "Condition" in resource and not names.conditions.get(resource["Condition"], False):
            continue
        role_ref = resource["Properties"].get("Role", {})
        role_id = role_ref.get("Fn::GetAtt", [None])[0] if isinstance(role_ref, dict) else None
        if role_id is None or role_id not in resources:
            continue
        props = resources[role_id]["Properties"]
        role = FunctionRole(function=logical_id, role=role_id)
        for policy in resolve(props.get("Policies", []), names, role.unresolved):
            role.policies[policy["PolicyName"]] = policy["PolicyDocument"]
        role.managed_policy_arns = [str(a) for a in resolve(props.get("ManagedPolicyArns", []), names, [])]
        for policy_id, policy in resources.items():
            # A policy of its own attached to the role (e.g. one that must name a resource created
            # after the function): on AWS it is part of the role's permissions like an inline one.
            attached = policy["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in policy["Properties"].get(
                "Roles", []
            )
            if attached:
                document = resolve(policy["Properties"]["PolicyDocument"], names, role.unresolved)
                role.policies[str(policy["Properties"].get("PolicyName", policy_id))] = document
        roles[logical_id] = role
    return roles


# -- the evaluator -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Whether a request is allowed, the statements that allowed it, and what was not evaluated."""

    allowed: bool
    statements: tuple[str, ...] = ()
    denied_by: str | None = None
    not_evaluated: tuple[str, ...] = ()


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@cache
def _pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(f"^{body}$", re.IGNORECASE if ignore_case else 0)


def matches(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's wildcard match (`*` any run, `?` one character)."""
    return _pattern(pattern, ignore_case).match(value) is not None


def _string_test(operator: str) -> Any:
    tests = {
        "StringEquals": lambda e, v: e == v,
        "StringNotEquals": lambda e, v: e != v,
        "StringEqualsIgnoreCase": lambda e, v: e.lower() == v.lower(),
        "StringNotEqualsIgnoreCase": lambda e, v: e.lower() != v.lower(),
        "StringLike": lambda e, v: matches(e, v),
        "StringNotLike": lambda e, v: not matches(e, v),
        "ArnEquals": lambda e, v: e == v,
        "ArnLike": lambda e, v: matches(e, v),
        "ArnNotEquals": lambda e, v: e != v,
        "ArnNotLike": lambda e, v: not matches(e, v),
        "Bool": lambda e, v: e.lower() == v.lower(),
    }
    return tests.get(operator)


def _conditions_hold(conditions: dict[str, Any], context: dict[str, str]) -> tuple[bool, list[str]]:
    """Whether every condition holds for `context`, and the keys left unevaluated (assumed to hold)."""
    skipped: list[str] = []
    for raw_operator, tests in conditions.items():
        operator = raw_operator.split(":")[-1]
        if_exists = operator.endswith("IfExists")
        operator = operator.removesuffix("IfExists")
        for key, expected in tests.items():
            if key not in KNOWN_CONDITION_KEYS:
                skipped.append(f"{raw_operator} {key}")
                continue
            expected_values = [str(e) for e in _as_list(expected)]
            if operator == "Null":
                if (key not in context) != (expected_values[0].lower() == "true"):
                    return False, skipped
                continue
            if key not in context:
                if if_exists:
                    continue
                return False, skipped
            test = _string_test(operator)
            if test is None:
                skipped.append(f"{raw_operator} {key}")
                continue
            negated = "Not" in operator
            results = [test(e, context[key]) for e in expected_values]
            if not (all(results) if negated else any(results)):
                return False, skipped
    return True, skipped


def _statement_applies(statement: dict[str, Any], action: str, resource: str) -> bool:
    if "NotAction" in statement:
        if any(matches(a, action, True) for a in _as_list(statement["NotAction"])):
            return False
    elif not any(matches(a, action, True) for a in _as_list(statement.get("Action", []))):
        return False
    if "NotResource" in statement:
        return not any(matches(r, resource) for r in _as_list(statement["NotResource"]))
    return any(matches(r, resource) for r in _as_list(statement.get("Resource", [])))


def evaluate(
    role: FunctionRole, action: str, resource: str, context: dict[str, str] | None = None
) -> Decision:
    """AWS's identity-policy logic for one request: an explicit deny wins, else any allow, else denied."""
    context = context or {}
    allowed: list[str] = []
    skipped: list[str] = []
    for name, statement in role.statements():
        if not _statement_applies(statement, action, resource):
            continue
        holds, not_evaluated = _conditions_hold(statement.get("Condition", {}), context)
        skipped.extend(not_evaluated)
        if not holds:
            continue
        if statement.get("Effect") == "Deny":
            return Decision(False, (), name, tuple(skipped))
        allowed.append(name)
    return Decision(bool(allowed), tuple(allowed), None, tuple(skipped))


def grants(role: FunctionRole) -> list[tuple[str, str, str]]:
    """Every (statement, action, resource) an Allow statement names: the units of 'never used'."""
    listed: list[tuple[str, str, str]] = []
    for name, statement in role.statements():
        if statement.get("Effect") != "Allow":
            continue
        for action in _as_list(statement.get("Action", [])):
            for resource in _as_list(statement.get("Resource", ["*"])):
                listed.append((name, str(action), str(resource)))
    return listed


def role_document(role: FunctionRole) -> dict[str, Any]:
    """The role as JSON (what the report and `stratus up --iam-report` show)."""
    return {
        "role": role.role,
        "policies": role.policies,
        "managed_policy_arns": role.managed_policy_arns,
        "unresolved": role.unresolved,
    }


@cache
def _managed_policies() -> dict[str, Any]:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    policies: dict[str, Any] = json.loads(aws_managed_policies_data)
    return policies


def managed_policy_document(arn: str) -> dict[str, Any] | None:
    """The document of an AWS managed policy (moto ships their text), or None if unknown."""
    found = _managed_policies().get(arn.rsplit("/", 1)[-1])
    if found is None:
        return None
    document: dict[str, Any] = found["Document"]
    return document


# -- the calls-vs-grants report ------------------------------------------------------------------

Call = tuple[str, str, str, str, bool, int]  # principal, action, resource, context JSON, allowed, count


def _shape(resource: str) -> str:
    """A resource with per-document parts folded, so the report lists kinds of calls, not keys."""
    if resource.startswith("arn:aws:s3:::") and "/" in resource:
        bucket, _, key = resource.removeprefix("arn:aws:s3:::").partition("/")
        parts = key.split("/")
        return f"arn:aws:s3:::{bucket}/{parts[0]}/*" if len(parts) > 1 else resource
    return resource


def call_report(log: list[tuple[dict[str, FunctionRole], list[Call]]]) -> dict[str, Any]:
    """Per function: the calls it made, the grants they used, the grants no call used, calls denied."""
    functions: dict[str, dict[str, Any]] = {}
    roles: dict[str, FunctionRole] = {}
    for stack_roles, calls in log:
        roles.update(stack_roles)
        for principal, action, resource, context_json, allowed, count in calls:
            entry = functions.setdefault(principal, {"calls": {}, "used": set(), "denied": {}})
            shape = f"{action} {_shape(resource)}"
            entry["calls"][shape] = entry["calls"].get(shape, 0) + count
            role = stack_roles.get(principal)
            if not allowed:
                entry["denied"][shape] = entry["denied"].get(shape, 0) + count
                continue
            if role is None:
                continue
            context = json.loads(context_json)
            statements = dict(role.statements())
            for name, grant_action, grant_resource in grants(role):
                if not (matches(grant_action, action, True) and matches(grant_resource, resource)):
                    continue
                if _conditions_hold(statements[name].get("Condition", {}), context)[0]:
                    entry["used"].add((name, grant_action, grant_resource))
    report: dict[str, Any] = {}
    for function in sorted(set(functions) | set(roles)):
        entry = functions.get(function, {"calls": {}, "used": set(), "denied": {}})
        role = roles.get(function)
        listed = grants(role) if role is not None else []
        report[function] = {
            "calls": dict(sorted(entry["calls"].items())),
            "denied": dict(sorted(entry["denied"].items())),
            "grants_used": [" ".join(g) for g in listed if g in entry["used"]],
            "grants_never_used": [" ".join(g) for g in listed if g not in entry["used"]],
            "managed_policy_arns": role.managed_policy_arns if role is not None else [],
            "unresolved": role.unresolved if role is not None else [],
        }
    return report


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: one section per function."""
    lines = ["# Calls vs grants (local stack, IAM enforced)", ""]
    for function, entry in report.items():
        lines += [f"## {function}", "", "Calls made (action, resource, count):", ""]
        lines += [f"- `{call}` x{count}" for call, count in entry["calls"].items()] or ["- (none)"]
        if entry["denied"]:
            lines += ["", "Denied:", ""] + [f"- `{call}` x{count}" for call, count in entry["denied"].items()]
        if entry["grants_used"] or entry["grants_never_used"]:
            lines += ["", "Grants used:", ""] + [f"- `{g}`" for g in entry["grants_used"]]
            lines += ["", "Grants never used:", ""] + [f"- `{g}`" for g in entry["grants_never_used"]]
        lines.append("")
    return "\n".join(lines)
