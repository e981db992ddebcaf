"""The local stack: the AWS emulator on loopback, the template's resources, queue pollers, the API."""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratus.stores.aws import Credentials, use_credentials
from stratus_tools.local.plan import EventSourcePlan, FunctionPlan, StackPlan, read_plan

if TYPE_CHECKING:
    from stratus_tools.local.iam import FunctionRole

log = logging.getLogger("stratus.local")

Handler = Callable[[dict[str, Any], Any], Any]
REGION = "us-east-1"
# Keys for the emulator before IAM is enforced (moto accepts any then); not secrets.
EMULATOR_KEY = "testing"
ACCOUNT = "123456789012"
# "thread": moto in this process (simple, shares the GIL); "process": a child process with its own.
EMULATOR_MODES = ("thread", "process")
# The principal that creates the stack's resources (and that the CLI and tests use): allowed all.
ADMIN_USER = "stratus-local-admin"
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
# What the calls-vs-grants report attributes calls made with the admin's keys to.
ADMIN_PRINCIPAL = "(stack setup and tests)"
# Every stack's recorded calls and roles once it stops: what tests/plugins/iam_report.py reports.
CALL_LOG: list[tuple[dict[str, FunctionRole], list[tuple[str, str, str, str, bool, int]]]] = []
# Every access key a stack of this process issued, to its principal: a call that a background thread
# makes after its stack stopped (a replica watcher, say) reaches the next stack's record, and is still
# attributed to its function rather than listed as an unknown key.
ISSUED_PRINCIPALS: dict[str, str] = {}


def emulator_credentials() -> dict[str, str]:
    """The environment that points boto3 at the emulator's account: any key works, none is a secret."""
    return {
        "AWS_ACCESS_KEY_ID": EMULATOR_KEY,
        "AWS_SECRET_ACCESS_KEY": EMULATOR_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# A profile or session token of the user's real account must not mix with the emulator's key.
REAL_ACCOUNT_VARIABLES = ("AWS_PROFILE", "AWS_SESSION_TOKEN")


@dataclass
class LambdaContext:
    """The part of Lambda's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_s: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        """The function's ARN as Lambda would report it."""
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout."""
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def load_handler(repo_root: Path, dotted: str) -> Handler:
    """Import `functions.<stage>.app.handler` from the repository, as the Lambda runtime would."""
    if str(repo_root) not in sys.path:
        sys.path.insert(0, str(repo_root))
    module_name, _, attribute = dotted.rpartition(".")
    handler: Handler = getattr(importlib.import_module(module_name), attribute)
    return handler


def resolve(value: Any, refs: dict[str, str], attributes: dict[tuple[str, str], str]) -> str | None:
    """A template value with !Ref / !GetAtt / !Sub resolved to local names (None if unsupported)."""
    if isinstance(value, str | int | float):
        return str(value)
    if not isinstance(value, dict) or len(value) != 1:
        return None
    ((name, arg),) = value.items()
    if name == "Ref":
        return refs.get(arg)
    if name == "Fn::GetAtt":
        return attributes.get((arg[0], arg[1]))
    if name == "Fn::Sub" and isinstance(arg, str):
        import re

        def substitute(match: re.Match[str]) -> str:
            ref, _, attr = match.group(1).partition(".")
            found = attributes.get((ref, attr)) if attr else refs.get(ref)
            return found if found is not None else match.group(0)

        return re.sub(r"\$\{([^}!]+)\}", substitute, arg)
    return None


class QueuePoller(threading.Thread):
    """Delivers one queue's messages to one handler the way Lambda's SQS event source does."""

    def __init__(
        self,
        stack: LocalStack,
        source: EventSourcePlan,
        function: FunctionPlan,
        handler: Handler,
    ) -> None:
        super().__init__(name=f"poller-{source.function}", daemon=True)
        self.stack = stack
        self.source = source
        self.function = function
        self.handler = handler
        self.queue_url = stack.queue_urls[source.queue]
        self.queue_arn = stack.queue_arns[source.queue]
        self.invocations = 0
        self.errors = 0

    def stopped(self) -> bool:
        """Whether to stop polling: the stack is stopping."""
        return self.stack.stopping.is_set()

    def run(self) -> None:
        """Poll until `stopped()`, as the function's role (Lambda's event source polls with it too)."""
        if self.stack.pipeline_nice > 0:
            # On AWS the stages and the API never share a CPU; here they do. Below the API's priority
            # (this thread only, and the threads it starts: the encoder's), queries keep their CPU.
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.stack.pipeline_nice)
            except (AttributeError, OSError):
                log.info("could not lower the priority of poller %s", self.source.function)
        with use_credentials(self.stack.credentials.get(self.function.logical_id)):
            self._poll()

    def _poll(self) -> None:
        sqs = self.stack.client("sqs", self.function.logical_id)
        while not self.stopped():
            try:
                messages = self._receive(sqs)
                if messages:
                    self._deliver(sqs, messages)
            except Exception:
                if self.stopped():
                    return
                log.exception("poller %s failed; retrying", self.source.function)
                time.sleep(0.5)

    def _receive(self, sqs: Any) -> list[dict[str, Any]]:
        wanted = self.source.batch_size
        window = min(self.source.batching_window_s, self.stack.batch_window_cap_s)
        deadline = time.monotonic() + window
        messages: list[dict[str, Any]] = []
        wait_s = self.stack.poll_wait_s
        while len(messages) < wanted and not self.stopped():
            response = sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, wanted - len(messages)),
                WaitTimeSeconds=wait_s,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = response.get("Messages", [])
            messages.extend(received)
            remaining = deadline - time.monotonic()
            if not messages or remaining <= 0.05:
                break
            # Fill the batch by long polling (SQS waits in whole seconds and answers as soon as a
            # message arrives): short client-side polls cost the emulator a receive each.
            wait_s = min(self.stack.poll_wait_s, math.ceil(remaining))
            if wait_s == 0 and not received:
                time.sleep(0.05)  # (long polling is off: poll gently)
        return messages

    def _deliver(self, sqs: Any, messages: list[dict[str, Any]]) -> None:
        from stratus.pipeline.worker import delete_messages, sqs_event

        event = sqs_event(messages, self.queue_arn)
        context = LambdaContext(self.function.logical_id, self.function.memory_mb, self.function.timeout_s)
        self.invocations += 1
        try:
            response = self.handler(event, context)
        except Exception:
            # A raised error fails the whole batch: every message comes back after its visibility timeout.
            self.errors += 1
            log.exception("%s failed on a batch of %d", self.function.logical_id, len(messages))
            return
        failed: set[str] = set()
        if self.source.report_batch_item_failures and isinstance(response, dict):
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        delete_messages(sqs, self.queue_url, [m for m in messages if m["MessageId"] not in failed])


class LocalStack:
    """Starts moto on 127.0.0.1, creates the template's resources, and runs the functions in-process."""

    def __init__(
        self,
        repo_root: Path,
        bucket: str = "stratus-local",
        visibility_timeout_s: int | None = None,
        poll_wait_s: int = 1,
        batch_window_cap_s: float = 1.0,
        lancedb_uri: str | None = None,
        extra_environment: dict[str, str] | None = None,
        emulator: str = "thread",
        enforce_iam: bool = True,
        pipeline_nice: int = 0,
    ) -> None:
        if emulator not in EMULATOR_MODES:
            raise ValueError(f"emulator must be one of {EMULATOR_MODES}, not {emulator!r}")
        self.repo_root = repo_root
        self.emulator = emulator
        self.plan: StackPlan = read_plan(repo_root / "template.yaml", bucket)
        self.visibility_timeout_s = visibility_timeout_s
        self.poll_wait_s = poll_wait_s
        self.batch_window_cap_s = batch_window_cap_s
        self.pipeline_nice = pipeline_nice
        self.lancedb_uri = lancedb_uri
        self.extra_environment = extra_environment or {}
        self.stopping = threading.Event()
        self.endpoint_url = ""
        self.queue_urls: dict[str, str] = {}
        self.queue_arns: dict[str, str] = {}
        self.table_names: dict[str, str] = {}
        self.environment: dict[str, str] = {}
        self.pollers: list[QueuePoller] = []
        self._server: Any = None
        self._process: subprocess.Popen[bytes] | None = None
        self._api_servers: list[tuple[Any, threading.Thread]] = []
        self.api_url = ""
        # IAM: each function's role (expanded from the template) and its assumed-role session.
        self.enforce_iam = enforce_iam
        self.roles: dict[str, FunctionRole] = {}
        self.credentials: dict[str, Credentials] = {}
        self.admin: Credentials | None = None
        self.calls: list[tuple[str, str, str, str, bool, int]] = []

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, run_functions: bool = True) -> LocalStack:
        """Start the emulator, create resources, export the environment, start the pollers."""
        import httpx

        if self.emulator == "process":
            self.endpoint_url = self._start_emulator_process()
        else:
            from moto.server import ThreadedMotoServer

            from stratus_tools.local.emulator import tune_moto

            tune_moto()
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
            self._server.start()
            host, port = self._server.get_host_and_port()
            self.endpoint_url = f"http://{host}:{port}"
        # moto keeps its state per process, not per server: start from an empty emulator.
        self._set_auth(enforced=False)
        httpx.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()
        if self.enforce_iam:
            self.admin = self._create_admin()
            ISSUED_PRINCIPALS[self.admin.access_key_id] = ADMIN_PRINCIPAL
        self._export_credentials()
        self._create_resources()
        self._export_environment()
        if self.enforce_iam:
            self._create_roles()
            self._set_auth(enforced=True)
        if run_functions:
            self.start_functions()
        return self

    def start_functions(self) -> None:
        """One poller per SQS event source of the template."""
        for source in self.plan.event_sources:
            function = self.plan.functions[source.function]
            poller = QueuePoller(self, source, function, load_handler(self.repo_root, function.handler))
            poller.start()
            self.pollers.append(poller)
        self._start_sources_ticker()

    def _start_sources_ticker(self) -> None:
        """Sources: what the template's SourcesTick schedule does on AWS, every STRATUS_SOURCES_TICK_S."""
        from stratus.settings import get_settings

        interval = get_settings().sources_tick_s

        def tick() -> None:
            from stratus.pipeline.fetch_function import handle_tick

            while not self.stopping.wait(interval):
                try:
                    handle_tick()
                except Exception:
                    log.exception("sources tick failed; trying again next tick")

        threading.Thread(target=tick, name="sources-tick", daemon=True).start()

    def handler(self, logical_id: str) -> Handler:
        """A template function's handler, imported from the repository; it runs as the function's role."""
        handler = load_handler(self.repo_root, self.plan.functions[logical_id].handler)
        credentials = self.credentials.get(logical_id)

        def as_function(event: dict[str, Any], context: Any) -> Any:
            with use_credentials(credentials):
                return handler(event, context)

        return as_function

    def context(self, logical_id: str) -> LambdaContext:
        """A Lambda context for invoking a template function by hand."""
        function = self.plan.functions[logical_id]
        return LambdaContext(logical_id, function.memory_mb, function.timeout_s)

    def serve_api(self, host: str = "127.0.0.1", port: int = 8000, function: str = "ApiFunction") -> str:
        """Serve the API with uvicorn in a thread as `function`'s role; its base URL once it accepts requests.

        The first server's URL is `api_url`; another function that serves the app (StreamFunction,
        behind its Function URL on AWS) can be served beside it on another port.
        """
        import uvicorn

        from stratus.api.app import create_app

        port = port or free_port(host)
        config = uvicorn.Config(create_app(), host=host, port=port, log_level="warning", lifespan="off")
        server, credentials = uvicorn.Server(config), self.credentials.get(function)

        def run_as_the_function() -> None:
            # asyncio and the request threadpool copy this thread's context: every request runs as the role.
            with use_credentials(credentials):
                server.run()

        thread = threading.Thread(target=run_as_the_function, name=f"api-{function}", daemon=True)
        thread.start()
        self._api_servers.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the API did not start on {host}:{port} (is the port in use?)")
            time.sleep(0.05)
        url = f"http://{host}:{port}"
        self.api_url = self.api_url or url
        return url

    def stop(self) -> None:
        """Stop the API, the pollers and the emulator."""
        self.stopping.set()
        for server, thread in self._api_servers:
            server.should_exit = True
            thread.join(timeout=10)
        for poller in self.pollers:
            poller.join(timeout=self.poll_wait_s + 30)
        if self.enforce_iam and self.endpoint_url and (self._server is not None or self._process is not None):
            try:
                self.collect_calls()
                CALL_LOG.append((dict(self.roles), list(self.calls)))
                self._set_auth(enforced=False)
            except Exception:
                log.exception("could not read the emulator's IAM record")
        if self._server is not None:
            self._server.stop()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    @property
    def emulator_pid(self) -> int | None:
        """The emulator's process id when it runs in a child process."""
        return self._process.pid if self._process is not None else None

    def _start_emulator_process(self) -> str:
        """Run moto's server in a child process; its URL once it answers."""
        import httpx

        port = free_port()
        self._process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-m", "stratus_tools.local.emulator", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the emulator exited with status {self._process.returncode}")
            try:
                httpx.get(f"{url}/moto-api/data.json", timeout=2).raise_for_status()
                return url
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the emulator did not answer on {url} within 30 s") from None
                time.sleep(0.1)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- resources ---------------------------------------------------------------------

    def client(self, service: str, function: str | None = None) -> Any:
        """A boto3 client for the emulator: as the admin principal, or as `function`'s role."""
        import boto3

        credentials = self.credentials[function] if function is not None else self.admin
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=credentials.access_key_id if credentials else EMULATOR_KEY,
            aws_secret_access_key=credentials.secret_access_key if credentials else EMULATOR_KEY,
            aws_session_token=credentials.session_token if credentials else None,
        )

    def _export_credentials(self) -> None:
        os.environ.update(emulator_credentials())
        if self.admin is not None:
            # The CLI and the tests in this process call the emulator as the admin principal.
            os.environ["AWS_ACCESS_KEY_ID"] = self.admin.access_key_id
            os.environ["AWS_SECRET_ACCESS_KEY"] = self.admin.secret_access_key
        for name in REAL_ACCOUNT_VARIABLES:
            os.environ.pop(name, None)
        import boto3

        # boto3's default session keeps the keys it first read: let the next client read these.
        boto3.DEFAULT_SESSION = None

    # -- IAM ---------------------------------------------------------------------------

    def _set_auth(self, enforced: bool) -> None:
        """Turn moto's authentication and authorisation on (every later request) or off."""
        import httpx

        value = "0" if enforced else "inf"
        response = httpx.post(f"{self.endpoint_url}/moto-api/reset-auth", content=value, timeout=10)
        response.raise_for_status()

    def _create_admin(self) -> Credentials:
        iam = self.client("iam")
        iam.create_user(UserName=ADMIN_USER)
        iam.put_user_policy(UserName=ADMIN_USER, PolicyName="admin", PolicyDocument=json.dumps(ADMIN_POLICY))
        key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
        return Credentials(key["AccessKeyId"], key["SecretAccessKey"], None, ADMIN_PRINCIPAL)

    def local_names(self) -> Any:
        """What the template's !Ref and !GetAtt resolve to on this stack."""
        from stratus_tools.local.iam import PARTITION, LocalNames

        refs: dict[str, str] = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": "stratus",
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
        }
        refs.update({k: str(v) for k, v in self.plan.parameters.items() if v is not None})
        refs.update({k: v for k, v in self.environment.items() if k in self.plan.parameters})
        refs.update(self.queue_urls)
        refs.update(self.table_names)
        refs["DocumentBucket"] = self.plan.bucket
        # No API Gateway stage runs locally: its usage plan is whichever one a test or the CLI makes.
        refs["StratusApiUsagePlan"] = "*"
        attributes: dict[tuple[str, str], str] = {}
        for logical_id, arn in self.queue_arns.items():
            attributes[(logical_id, "Arn")] = arn
            attributes[(logical_id, "QueueName")] = arn.rsplit(":", 1)[-1]
            attributes[(logical_id, "QueueUrl")] = self.queue_urls[logical_id]
        for logical_id, name in self.table_names.items():
            attributes[(logical_id, "Arn")] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
        attributes[("DocumentBucket", "Arn")] = f"arn:aws:s3:::{self.plan.bucket}"
        return LocalNames(refs, attributes, dict(self.plan.conditions))

    def _create_roles(self) -> None:
        """A role per function with the template's expanded policies, and an assumed-role session of each."""
        from dataclasses import asdict

        from stratus_tools.local.iam import function_roles, managed_policy_document

        assert self.admin is not None
        self.roles = function_roles(self.repo_root / "template.yaml", self.local_names())
        iam, sts = self.client("iam"), self.client("sts")
        admin_arn = f"arn:aws:iam::{ACCOUNT}:user/{ADMIN_USER}"
        # Lambda's service principal cannot call the emulator: the local trust policy names the admin.
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": admin_arn}, "Action": "sts:AssumeRole"}],
        }
        by_key: dict[str, FunctionRole] = {}
        for function, role in self.roles.items():
            for arn in role.managed_policy_arns:
                document = managed_policy_document(arn)
                if document is not None:
                    role.policies[f"managed:{arn.rsplit('/', 1)[-1]}"] = document
            name = f"stratus-{function}"[:64]
            arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
            for policy_name, document in role.policies.items():
                iam.put_role_policy(
                    RoleName=name,
                    PolicyName=policy_name.replace(":", "-"),
                    # (SAM's policy templates carry no Version; moto requires one, AWS defaults it.)
                    PolicyDocument=json.dumps({"Version": "2012-10-17", **document}),
                )
            session = sts.assume_role(RoleArn=arn, RoleSessionName=function)["Credentials"]
            credentials = Credentials(
                session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"], function
            )
            self.credentials[function] = credentials
            ISSUED_PRINCIPALS[credentials.access_key_id] = function
            by_key[credentials.access_key_id] = role
        if self.emulator == "process":
            import httpx

            from stratus_tools.local.emulator import CALLS_PATH

            payload = {key: asdict(role) for key, role in by_key.items()}
            httpx.post(f"{self.endpoint_url}{CALLS_PATH}", json=payload, timeout=10).raise_for_status()
        else:
            from stratus_tools.local import emulator

            emulator.ROLES.clear()
            emulator.ROLES.update(by_key)

    def set_role(self, function: str, role: FunctionRole) -> None:
        """Replace `function`'s role policies in the emulator (tests remove grants this way)."""
        from dataclasses import asdict

        iam = self.client("iam")
        name = f"stratus-{function}"[:64]
        for policy_name in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
        for policy_name, document in role.policies.items():
            iam.put_role_policy(
                RoleName=name,
                PolicyName=policy_name.replace(":", "-"),
                PolicyDocument=json.dumps({"Version": "2012-10-17", **document}),
            )
        self.roles[function] = role
        key = self.credentials[function].access_key_id
        if self.emulator == "process":
            import httpx

            from stratus_tools.local.emulator import CALLS_PATH

            payload = {c.access_key_id: asdict(self.roles[f]) for f, c in self.credentials.items()}
            httpx.post(f"{self.endpoint_url}{CALLS_PATH}", json=payload, timeout=10).raise_for_status()
        else:
            from stratus_tools.local import emulator

            emulator.ROLES[key] = role

    def collect_calls(self) -> list[tuple[str, str, str, str, bool, int]]:
        """Add the requests the emulator authorised since the last collect to `calls`, by principal."""
        if self.emulator == "process":
            import httpx

            from stratus_tools.local.emulator import CALLS_PATH

            taken = httpx.get(f"{self.endpoint_url}{CALLS_PATH}", timeout=10).json()
        else:
            from stratus_tools.local.emulator import take_calls

            taken = take_calls()
        principals = dict(ISSUED_PRINCIPALS)
        principals.update({c.access_key_id: c.principal for c in self.credentials.values()})
        if self.admin is not None:
            principals[self.admin.access_key_id] = ADMIN_PRINCIPAL
        for key, action, resource, context, allowed, count in taken:
            principal = principals.get(key, key or "(anonymous)")
            self.calls.append((principal, action, resource, context, bool(allowed), int(count)))
        return self.calls

    def _create_resources(self) -> None:
        sqs, s3, ddb = self.client("sqs"), self.client("s3"), self.client("dynamodb")
        queues = self.plan.queues
        # Dead-letter queues first: the main queues' redrive policies name them.
        for plan in sorted(queues.values(), key=lambda q: q.dead_letter_queue is not None):
            attributes = {"VisibilityTimeout": str(self.visibility_timeout_s or plan.visibility_timeout_s)}
            if self.visibility_timeout_s is not None:
                attributes["VisibilityTimeout"] = str(self.visibility_timeout_s)
            if plan.dead_letter_queue:
                attributes["RedrivePolicy"] = json.dumps(
                    {
                        "deadLetterTargetArn": self.queue_arns[plan.dead_letter_queue],
                        "maxReceiveCount": str(plan.max_receive_count),
                    }
                )
            name = f"stratus-{plan.logical_id}"
            if plan.fifo:
                # FIFO (issue 20): message groups as on AWS; moto holds a group back while one is in flight.
                name += ".fifo"
                attributes.update({"FifoQueue": "true", "ContentBasedDeduplication": "false"})
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            self.queue_urls[plan.logical_id] = url
            self.queue_arns[plan.logical_id] = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
        for table in self.plan.tables.values():
            name = f"stratus-{table.logical_id}"
            ddb.create_table(
                TableName=name,
                KeySchema=table.key_schema,
                AttributeDefinitions=table.attribute_definitions,
                BillingMode="PAY_PER_REQUEST",
            )
            self.table_names[table.logical_id] = name
        s3.create_bucket(Bucket=self.plan.bucket)
        configurations = []
        for notification in self.plan.notifications:
            rules = [{"Name": "prefix", "Value": notification.prefix}] if notification.prefix else []
            if notification.suffix:
                rules.append({"Name": "suffix", "Value": notification.suffix})
            entry: dict[str, Any] = {
                "QueueArn": self.queue_arns[notification.queue],
                "Events": [notification.event],
            }
            if rules:
                entry["Filter"] = {"Key": {"FilterRules": rules}}
            configurations.append(entry)
        if configurations:
            s3.put_bucket_notification_configuration(
                Bucket=self.plan.bucket, NotificationConfiguration={"QueueConfigurations": configurations}
            )
            self._drain_test_events(sqs)

    def _drain_test_events(self, sqs: Any) -> None:
        """S3 sends an s3:TestEvent when notifications are set; Lambda would ignore it, so do we."""
        for queue in {n.queue for n in self.plan.notifications}:
            response = sqs.receive_message(QueueUrl=self.queue_urls[queue], MaxNumberOfMessages=10)
            for message in response.get("Messages", []):
                if '"s3:TestEvent"' in message["Body"]:
                    sqs.delete_message(
                        QueueUrl=self.queue_urls[queue], ReceiptHandle=message["ReceiptHandle"]
                    )

    def _export_environment(self) -> None:
        """Apply the template's global function environment, resolved to local names."""
        refs: dict[str, str] = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::StackName": "stratus"}
        refs.update({k: str(v) for k, v in self.plan.parameters.items() if v is not None})
        refs.update(self.queue_urls)
        refs.update(self.table_names)
        refs["DocumentBucket"] = self.plan.bucket
        attributes = {(k, "Arn"): v for k, v in self.queue_arns.items()}
        environment: dict[str, str] = {}
        for name, value in self.plan.environment.items():
            is_parameter = isinstance(value, dict) and value.get("Ref") in self.plan.parameters
            if is_parameter and name in os.environ:
                # A template parameter is the user's to choose: what they exported wins locally too.
                environment[name] = os.environ[name]
                continue
            resolved = resolve(value, refs, attributes)
            if resolved is not None:
                environment[name] = resolved
        if "STRATUS_ONNX_ALLOW_SPINNING" not in os.environ:
            # The emulator, the pollers and the encoder share the cores: spinning threads only steal them.
            environment["STRATUS_ONNX_ALLOW_SPINNING"] = "false"
        environment["STRATUS_AWS_ENDPOINT_URL"] = self.endpoint_url
        environment["STRATUS_REGION"] = REGION
        if self.lancedb_uri:
            environment["STRATUS_LANCEDB_URI"] = self.lancedb_uri
        environment.update(self.extra_environment)
        if self.admin is not None:
            # Other processes pointed at this stack (the CLI through .stratus/local.json) act as the admin.
            environment["AWS_ACCESS_KEY_ID"] = self.admin.access_key_id
            environment["AWS_SECRET_ACCESS_KEY"] = self.admin.secret_access_key
        self.environment = environment
        os.environ.update(environment)
        from stratus import services

        services.reset()

    # -- inspection --------------------------------------------------------------------

    def queue_depth(self, logical_id: str) -> int:
        """Visible plus in-flight messages of a queue."""
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_urls[logical_id],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )
