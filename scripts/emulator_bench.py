"""CPU per request of the AWS emulator: moto's own server against `stratus_tools.local.emulator`.

Starts each emulator in a child process on 127.0.0.1, makes the same calls (S3 PUT/GET/HEAD,
DynamoDB PutItem/UpdateItem/GetItem, SQS send and receive+delete on a queue that fills up), and
prints, per operation, the wall time and the CPU of the client (this process) and of the emulator
(the child), in milliseconds per call.

Example: .venv/bin/python scripts/emulator_bench.py --calls 300 --json bench-out/emulator.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SERVERS = {
    "moto": [sys.executable, "-c", "import sys; from moto.server import main; main(['-p', sys.argv[1]])"],
    "stratus": [sys.executable, "-m", "stratus_tools.local.emulator"],
}


def child_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a child process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(server: str) -> tuple[subprocess.Popen[bytes], str]:
    """The emulator in a child process, and its URL once it answers."""
    import httpx

    from stratus_tools.local.stack import free_port

    port = free_port()
    process = subprocess.Popen(
        [*SERVERS[server], str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/moto-api/data.json", timeout=2).raise_for_status()
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{server} did not answer on {url}")


def operations(url: str) -> dict[str, Callable[[int], Any]]:
    """The calls to time, each taking the call's number; their resources created."""
    import boto3

    options: dict[str, Any] = {
        "endpoint_url": url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    s3: Any = boto3.client("s3", **options)
    ddb: Any = boto3.client("dynamodb", **options)
    sqs: Any = boto3.client("sqs", **options)
    s3.create_bucket(Bucket="emulator-bench")
    ddb.create_table(
        TableName="documents",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    queue = sqs.create_queue(QueueName="stage")["QueueUrl"]

    def receive_and_delete(_: int) -> None:
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1).get("Messages", []):
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    return {
        "s3 put_object": lambda i: s3.put_object(Bucket="emulator-bench", Key=f"k/{i}", Body=b"x" * 2000),
        "s3 get_object": lambda i: s3.get_object(Bucket="emulator-bench", Key=f"k/{i}")["Body"].read(),
        "s3 head_object": lambda i: s3.head_object(Bucket="emulator-bench", Key=f"k/{i}"),
        "dynamodb put_item": lambda i: ddb.put_item(
            TableName="documents", Item={"pk": {"S": str(i)}, "v": {"N": "1"}}
        ),
        "dynamodb update_item": lambda i: ddb.update_item(
            TableName="documents",
            Key={"pk": {"S": str(i)}},
            UpdateExpression="SET v = :v, s = :s",
            ConditionExpression="attribute_exists(pk) AND v < :v",
            ExpressionAttributeValues={":v": {"N": "2"}, ":s": {"S": "x"}},
        ),
        "dynamodb get_item": lambda i: ddb.get_item(
            TableName="documents", Key={"pk": {"S": str(i)}}, ConsistentRead=True
        ),
        "sqs send_message": lambda i: sqs.send_message(QueueUrl=queue, MessageBody="x" * 300),
        "sqs receive+delete": receive_and_delete,
    }


def measure(server: str, calls: int) -> dict[str, dict[str, float]]:
    """Milliseconds per call of each operation on one emulator."""
    process, url = start(server)
    try:
        result = {}
        for name, call in operations(url).items():
            started, cpu, child = time.perf_counter(), time.process_time(), child_cpu_s(process.pid)
            for i in range(calls):
                call(i)
            result[name] = {
                "wall_ms": round((time.perf_counter() - started) / calls * 1000, 2),
                "client_cpu_ms": round((time.process_time() - cpu) / calls * 1000, 2),
                "emulator_cpu_ms": round((child_cpu_s(process.pid) - child) / calls * 1000, 2),
            }
        return result
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """Measure both emulators and print a table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per operation")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = parser.parse_args(argv)
    results = {server: measure(server, args.calls) for server in SERVERS}
    print(f"{'operation':22} " + " ".join(f"{s + ' cpu ms':>14} {s + ' wall':>12}" for s in SERVERS))
    for name in results["moto"]:
        row = " ".join(
            f"{results[s][name]['emulator_cpu_ms']:>14} {results[s][name]['wall_ms']:>12}" for s in SERVERS
        )
        print(f"{name:22} {row}")
    if args.json:
        args.json.write_text(json.dumps({"calls": args.calls, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
