"""The AWS emulator: moto's application on loopback, with its per-request overheads made constant.

moto answers S3, SQS and DynamoDB exactly as it does out of the box; two of its internals cost
time that grows with nothing the caller does, and are replaced here by equivalents:

- it routes every request by listing its own package folder (about 200 `isdir` calls): the
  listing is taken once;
- its clock builds `datetime` objects and subtracts the epoch, and SQS reads it for every message
  of a queue on every call (visible? delayed? the queue's attributes on each send): `time.time()`
  gives the same seconds.

With IAM enforced (`INITIAL_NO_AUTH_ACTION_COUNT` set to 0 through `/moto-api/reset-auth`), two
more changes make moto's decisions those of AWS where it is cheap to: DynamoDB requests are
authorised against their table's ARN (moto passes "*", which no table-scoped grant matches), and
an allow moto gives is checked again by `stratus_tools.local.iam.evaluate` with the request's condition
keys (moto treats every `s3:prefix` condition as met). Every authorised request is recorded
(principal, action, resource, allowed) for the calls-vs-grants report: boto3's and LanceDB's alike,
since both reach the emulator. `GET /_stratus/iam/calls` returns the record (and clears it).

`python -m stratus_tools.local.emulator PORT` serves it with waitress (a fixed pool of threads that
keeps connections alive, where moto's own server opens a thread and a connection per request)
and exits when its parent process is gone, even one killed without a chance to stop it.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlparse

HOST = "127.0.0.1"
# Long polls hold a thread each for up to their wait: room for every poller, the API and uploads.
SERVER_THREADS = 32


def _unix_time(original: Any, dt: Any = None) -> float:
    return time.time() if dt is None else float(original(dt))


def _unix_time_millis(original: Any, dt: Any = None) -> float:
    return time.time() * 1000.0 if dt is None else float(original(dt))


# (access key id, action, resource, condition context as JSON, allowed) -> count
CALLS: Counter[tuple[str, str, str, str, bool]] = Counter()
_CALLS_LOCK = threading.Lock()
# access key id -> the role's expanded policies (set by the local stack; read by `authorise`).
ROLES: dict[str, Any] = {}
CALLS_PATH = "/_stratus/iam/calls"
JSON_SERVICES = frozenset({"dynamodb", "sqs"})
# REST services whose signatures moto recomputes over its own parsed form of the path, never matching
# botocore's (API Gateway's resource paths, Lambda's /2015-03-31/functions/...): the key must exist
# and the caller's policies must allow the call, but the signature is not checked.
SIGNATURE_UNCHECKED = frozenset({"apigateway", "lambda"})
SQS_BATCH_ACTIONS = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}


def take_calls() -> list[list[Any]]:
    """The requests recorded since the last take: [access key, action, resource, context, allowed, count]."""
    with _CALLS_LOCK:
        taken = [[*key, count] for key, count in CALLS.items()]
        CALLS.clear()
    return taken


def _condition_context(request: Any) -> dict[str, str]:
    query = parse_qs(urlparse(request._path).query)
    context = {}
    for parameter, key in (
        ("prefix", "s3:prefix"),
        ("delimiter", "s3:delimiter"),
        ("max-keys", "s3:max-keys"),
    ):
        if parameter in query:
            context[key] = query[parameter][0]
    return context


def _deleted_keys(request: Any) -> list[str]:
    """The keys a DeleteObjects (POST ?delete) names: AWS authorises s3:DeleteObject on each."""
    import html
    import re

    body = request._body.decode() if isinstance(request._body, bytes) else str(request._body or "")
    return [html.unescape(key) for key in re.findall(r"<Key>([^<]*)</Key>", body)]


def _named_queue_arn(request: Any) -> str | None:
    """The ARN of the queue a GetQueueUrl names (moto checks it against `*`, AWS against the queue)."""
    body = request._body.decode() if isinstance(request._body, bytes) else str(request._body or "")
    try:
        params = json.loads(body) if body.lstrip().startswith("{") else {}
    except ValueError:
        params = {}
    if not params:
        params = {k: v[0] for k, v in parse_qs(body).items()}
    name = params.get("QueueName")
    if not isinstance(name, str) or not name:
        return None
    account = params.get("QueueOwnerAWSAccountId") or request.account_id
    return f"arn:aws:sqs:{request._region}:{account}:{name}"


# A DynamoDB transaction is authorised as its parts: IAM has no TransactWriteItems action, each Put,
# Update, Delete and ConditionCheck needs its own action on its own table (moto asks for the whole).
TRANSACTION_PARTS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}


def _transaction_parts(request: Any) -> list[tuple[str, str]]:
    """(action, table ARN) of each item of a TransactWriteItems or TransactGetItems request."""
    body = request._body.decode() if isinstance(request._body, bytes) else str(request._body or "")
    try:
        items = json.loads(body).get("TransactItems", [])
    except (ValueError, AttributeError):
        return []
    parts = []
    for item in items if isinstance(items, list) else []:
        for kind, part in item.items() if isinstance(item, dict) else []:
            named = isinstance(part, dict) and isinstance(part.get("TableName"), str)
            if kind in TRANSACTION_PARTS and named:
                table = f"arn:aws:dynamodb:{request._region}:{request.account_id}:table/{part['TableName']}"
                parts.append((TRANSACTION_PARTS[kind], table))
    return parts


def _authorise(request: Any, original: Any, resource: str) -> None:
    if request._action == "sqs:GetQueueUrl" and resource == "*":
        resource = _named_queue_arn(request) or resource
    if request._action in ("dynamodb:TransactWriteItems", "dynamodb:TransactGetItems"):
        parts = _transaction_parts(request)
        if parts:
            for action, table in parts:
                request._action = action
                _authorise_one(request, original, table)
            return
    if request._action == "s3:DeleteObject" and "/" not in resource.removeprefix("arn:aws:s3:::"):
        # moto checks a multi-object delete against the bucket, which no key-scoped grant matches.
        keys = _deleted_keys(request)
        if keys:
            for key in keys:
                _authorise_one(request, original, f"{resource}/{key}")
            return
    _authorise_one(request, original, resource)


def _authorise_one(request: Any, original: Any, resource: str) -> None:
    from stratus_tools.local.iam import evaluate

    access_key = request._access_key
    key_id = getattr(access_key, "_access_key_id", "")
    # SQS authorises its batch calls by the single action (IAM has no sqs:DeleteMessageBatch); moto
    # asks for the batch name, which AWS's managed policies (AWSLambdaSQSQueueExecutionRole) lack.
    request._action = SQS_BATCH_ACTIONS.get(request._action, request._action)
    if request._service == "apigateway":
        # API Gateway's IAM actions are its HTTP verbs on resource paths; moto names operations.
        request._action = f"apigateway:{request._method}"
        resource = f"arn:aws:apigateway:{request._region}::{urlparse(request._path).path}"
    context = _condition_context(request) if request._action == "s3:ListBucket" else {}
    allowed = False
    try:
        _deny_in_the_services_protocol(request, original, resource)
        role = ROLES.get(key_id)
        if role is not None and not evaluate(role, request._action, resource, context).allowed:
            if request._service in JSON_SERVICES:
                message = f"User: {access_key.arn} is not authorized to perform: {request._action}"
                raise _json_access_denied(request._service, message)
            request._raise_access_denied()
        if (
            role is not None
            and request._action == "s3:GetObject"
            and _missing_without_list(request, role, resource)
        ):
            request._raise_access_denied()
        allowed = True
    finally:
        with _CALLS_LOCK:
            CALLS[(key_id, request._action, resource, json.dumps(context, sort_keys=True), allowed)] += 1


def _json_access_denied(service: str, message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    if service == "dynamodb":
        error = JsonRESTError("com.amazonaws.dynamodb.v20120810#AccessDeniedException", message)
    else:
        error = JsonRESTError("AccessDenied", message)
        error.code = 403
    return error


def _deny_in_the_services_protocol(request: Any, original: Any, resource: str) -> None:
    """moto's check; its denial as the service's JSON error where the service speaks JSON.

    moto answers every denial in IAM's XML, which a JSON-protocol client (DynamoDB, SQS) cannot
    parse: the code the caller would see on AWS (AccessDeniedException, AccessDenied) is lost.
    """
    from moto.core.exceptions import AccessDeniedError

    try:
        original(request, resource)
    except AccessDeniedError as error:
        if request._service in JSON_SERVICES:
            raise _json_access_denied(request._service, error.message) from error
        raise


def _missing_without_list(request: Any, role: Any, resource: str) -> bool:
    """S3 answers a GET or HEAD of a missing key with 403, not 404, unless s3:ListBucket is granted."""
    from moto.s3.models import s3_backends

    from stratus_tools.local.iam import evaluate

    bucket, _, key = resource.removeprefix("arn:aws:s3:::").partition("/")
    try:
        if s3_backends[request.account_id]["aws"].get_object(bucket, key) is not None:
            return False
    except Exception:  # noqa: S110 - a missing bucket is as missing as a missing key
        pass
    # The implicit list has no s3:prefix: a prefix-conditioned ListBucket does not count.
    return not evaluate(role, "s3:ListBucket", f"arn:aws:s3:::{bucket}").allowed


def _check_signature(request: Any, original: Any) -> None:
    # moto cannot check a presigned URL's signature, nor those of SIGNATURE_UNCHECKED: for those the
    # key must exist (it was looked up) and the caller's policies must allow the call.
    if request._service not in SIGNATURE_UNCHECKED and not getattr(request, "_stratus_presigned", False):
        original(request)


def _init_request(request: Any, original: Any, *args: Any, **kwargs: Any) -> None:
    """moto's request, with a presigned URL's query credentials read as the header form it expects."""
    headers: Any = kwargs["headers"] if "headers" in kwargs else args[5]
    if "Authorization" not in headers:
        path: str = kwargs["path"] if "path" in kwargs else args[2]
        query = parse_qs(urlparse(path).query)
        if "X-Amz-Credential" in query:
            headers = dict(headers)
            headers["Authorization"] = (
                f"AWS4-HMAC-SHA256 Credential={query['X-Amz-Credential'][0]}, "
                f"SignedHeaders={query.get('X-Amz-SignedHeaders', [''])[0]}, "
                f"Signature={query.get('X-Amz-Signature', [''])[0]}"
            )
            if "X-Amz-Security-Token" in query:
                headers["X-Amz-Security-Token"] = query["X-Amz-Security-Token"][0]
            if "headers" in kwargs:
                kwargs["headers"] = headers
            else:
                args = (*args[:5], headers, *args[6:])
            request._stratus_presigned = True
    original(request, *args, **kwargs)


def _dynamodb_resource(handler: Any) -> str:
    """The ARN of the table (or index) a DynamoDB request names; moto would authorise '*'."""
    body = handler.body if isinstance(handler.body, dict) else {}
    table = body.get("TableName")
    if table is None and isinstance(body.get("RequestItems"), dict) and body["RequestItems"]:
        table = next(iter(body["RequestItems"]))
    if table is None:
        return "*"
    arn = f"arn:aws:dynamodb:{handler.region}:{handler.current_account}:table/{table}"
    return f"{arn}/index/{body['IndexName']}" if body.get("IndexName") else arn


def tune_moto() -> None:
    """Replace moto's folder listing and clock by constant-time equivalents (idempotent)."""
    from moto import backends
    from moto.core import utils
    from moto.dynamodb.responses import DynamoHandler
    from moto.iam.access_control import IAMRequestBase
    from moto.sqs import models as sqs_models

    if getattr(backends, "_stratus_tuned", False):
        return
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    unix_time = functools.partial(_unix_time, utils.unix_time)
    unix_time_millis = functools.partial(_unix_time_millis, utils.unix_time_millis)
    for module in (utils, sqs_models):
        module.unix_time = unix_time  # type: ignore[attr-defined]
        module.unix_time_millis = unix_time_millis  # type: ignore[attr-defined]
    DynamoHandler._determine_resource = _dynamodb_resource  # type: ignore[attr-defined]
    IAMRequestBase.__init__ = functools.partialmethod(  # type: ignore[method-assign,assignment]
        _init_request, IAMRequestBase.__init__
    )
    IAMRequestBase.check_signature = functools.partialmethod(  # type: ignore[method-assign,assignment]
        _check_signature, IAMRequestBase.check_signature
    )
    IAMRequestBase.check_action_permitted = functools.partialmethod(  # type: ignore[method-assign,assignment]
        _authorise, IAMRequestBase.check_action_permitted
    )
    _serialise_dynamodb_writes()
    backends._stratus_tuned = True  # type: ignore[attr-defined]


def _serialise_dynamodb_writes() -> None:
    """moto's TransactWriteItems deep-copies the tables it touches: a concurrent write to one of them
    ("dictionary changed size during iteration") fails it. DynamoDB itself has no such race; serialise
    the emulator's writes (sources' syncs write transactions from the API and the pollers at once)."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()

    def serialised(method: Any) -> Any:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return wrapper

    for name in ("transact_write_items", "put_item", "update_item", "delete_item", "batch_write_item"):
        setattr(DynamoDBBackend, name, serialised(getattr(DynamoDBBackend, name)))


def make_app() -> Any:
    """moto's WSGI application (every service, routed by the request), tuned."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    tune_moto()
    moto_app = DomainDispatcherApplication(create_backend_app)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == CALLS_PATH:
            if environ.get("REQUEST_METHOD") == "POST":
                from stratus_tools.local.iam import FunctionRole

                length = int(environ.get("CONTENT_LENGTH") or 0)
                roles = json.loads(environ["wsgi.input"].read(length) or b"{}")
                ROLES.clear()
                ROLES.update({k: FunctionRole(**v) for k, v in roles.items()})
                body = b"{}"
            else:
                body = json.dumps(take_calls()).encode()
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        return moto_app(environ, start_response)

    return app


def serve(port: int, host: str = HOST) -> None:
    """Serve the emulator until the process ends."""
    import waitress

    waitress.serve(make_app(), host=host, port=port, threads=SERVER_THREADS, _quiet=True)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the emulator's child process: `python -m stratus_tools.local.emulator PORT`."""
    args = sys.argv[1:] if argv is None else argv
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    serve(int(args[0]))


if __name__ == "__main__":
    main()
