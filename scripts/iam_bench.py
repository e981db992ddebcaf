"""What enforcing IAM costs the local stack's emulator: CPU per call with it off and on.

`.venv/bin/python scripts/iam_bench.py --calls 300` starts an idle local stack (emulator in this
process) twice, without and with IAM, makes the same S3, DynamoDB and SQS calls as FetchFunction's
role (or unsigned-for-IAM with it off), and prints CPU ms per call (client and emulator together),
then how moto's IAM check splits (building the request, the signature, the policy check).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def _calls(stack: Any, function: str | None) -> dict[str, Callable[[int], Any]]:
    s3, ddb, sqs = (stack.client(s, function) for s in ("s3", "dynamodb", "sqs"))
    table, queue = stack.table_names["DocumentsTable"], stack.queue_urls["EmbedQueue"]
    return {
        "S3 PutObject": lambda i: s3.put_object(
            Bucket=stack.plan.bucket, Key=f"staging/b/{i}", Body=b"x" * 100
        ),
        "DynamoDB GetItem": lambda i: ddb.get_item(
            TableName=table, Key={"collection": {"S": "c"}, "doc_id": {"S": str(i)}}
        ),
        "SQS SendMessage": lambda i: sqs.send_message(QueueUrl=queue, MessageBody="x"),
    }


def cpu_per_call(enforce: bool, calls: int) -> dict[str, float]:
    """CPU ms per call of each kind, with IAM enforced or not."""
    from stratus_tools.local.stack import LocalStack

    stack = LocalStack(REPO_ROOT, enforce_iam=enforce).start(run_functions=False)
    try:
        results = {}
        for name, call in _calls(stack, "FetchFunction" if enforce else None).items():
            call(-1)  # (warm: first-call costs are not what is measured)
            started = time.process_time()
            for i in range(calls):
                call(i)
            results[name] = (time.process_time() - started) / calls * 1000
        return results
    finally:
        stack.stop()


def iam_split(calls: int) -> dict[str, float]:
    """CPU ms per SQS SendMessage spent in each part of moto's IAM check (enforced)."""
    from moto.iam import access_control

    from stratus_tools.local.stack import LocalStack

    stack = LocalStack(REPO_ROOT).start(run_functions=False)
    spent = {"request": 0.0, "signature": 0.0, "policies": 0.0}
    parts = {"request": "__init__", "signature": "check_signature", "policies": "check_action_permitted"}
    originals = {part: getattr(access_control.IAMRequestBase, method) for part, method in parts.items()}

    def timed(part: str) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return originals[part](*args, **kwargs)
            finally:
                spent[part] += time.process_time() - started

        return run

    try:
        send = _calls(stack, "FetchFunction")["SQS SendMessage"]
        send(-1)
        for part, method in parts.items():
            setattr(access_control.IAMRequestBase, method, timed(part))
        for i in range(calls):
            send(i)
    finally:
        for part, method in parts.items():
            setattr(access_control.IAMRequestBase, method, originals[part])
        stack.stop()
    return {part: seconds / calls * 1000 for part, seconds in spent.items()}


def main() -> None:
    """Print CPU per call with IAM off and on, and the IAM check's split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    off, on = cpu_per_call(False, args.calls), cpu_per_call(True, args.calls)
    for name in off:
        print(f"{name}: {off[name]:.2f} -> {on[name]:.2f} CPU ms per call (IAM off -> on)")
    split = iam_split(args.calls)
    print("IAM check per SQS SendMessage: " + ", ".join(f"{k} {v:.3f} ms" for k, v in split.items()))


if __name__ == "__main__":
    main()
