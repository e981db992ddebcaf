"""The audit log against the emulator: key create/revoke (routes and CLI), document delete, DLQ redrive,
refusals included; one structured log line per entry; `stratus audit` lists and filters them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratus import services
from stratus.access.audit import SCHEMA_VERSION, cli_actor, key_actor
from stratus.access.auth import create_key
from stratus.api.app import create_app
from stratus.models import make_doc_id
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

COLLECTION = "audited"
FIELDS = {
    "schema",
    "id",
    "at",
    "time",
    "actor",
    "action",
    "target",
    "collection",
    "outcome",
    "detail",
    "request_id",
}


@pytest.fixture
def admin(idle_stack: LocalStack) -> Any:
    return create_key(services.key_table(), "auditor", [COLLECTION], ["admin"], rate_limit_per_s=5)


@pytest.fixture
def client(idle_stack: LocalStack) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


def audit_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    from stratus_tools.cli import main

    capsys.readouterr()
    assert main(["audit", "--json", *args]) == 0
    entries: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return entries


def audit_log_lines(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    """The entries of the structured "audit" log lines (Powertools puts `extra` keys on the record)."""
    return [r.__dict__["audit"] for r in records if r.getMessage() == "audit" and "audit" in r.__dict__]


def test_admin_actions_are_audited_with_who_what_when_and_outcome(
    client: TestClient, admin: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"x-api-key": admin.key}
    actor = key_actor(admin.record.key_id)
    # given an admin key of one collection that creates a key, is refused a faster one, and revokes the first
    made = client.post(
        "/v1/keys", json={"name": "child", "collections": [COLLECTION], "roles": ["read"]}, headers=headers
    )
    assert made.status_code == 201
    child_id = made.json()["key_id"]
    refused = client.post(
        "/v1/keys",
        json={"name": "fast", "collections": [COLLECTION], "roles": ["read"], "rate_limit_per_s": 0},
        headers=headers,
    )
    assert refused.status_code == 403
    assert client.delete(f"/v1/keys/{child_id}", headers=headers).status_code == 200
    # and submits a document and deletes it, and deletes one that does not exist
    body = {"documents": [{"source": "gone.md", "text": "# Gone\\n\\nSoon deleted."}]}
    submitted = client.post(f"/v1/collections/{COLLECTION}/documents", json=body, headers=headers)
    assert submitted.status_code == 202, submitted.text
    doc_id = make_doc_id(COLLECTION, "gone.md")
    assert (
        client.delete(f"/v1/collections/{COLLECTION}/documents/{doc_id}", headers=headers).status_code == 202
    )
    assert (
        client.delete(f"/v1/collections/{COLLECTION}/documents/{'0' * 32}", headers=headers).status_code
        == 404
    )
    logged = audit_log_lines(caplog.records)

    # when `stratus audit` lists what this key did
    entries = audit_json(capsys, "--key", admin.record.key_id)

    # then every action is there, newest first, with who, what, when and outcome in the stable schema
    seen = [(e["action"], e["target"], e["outcome"]) for e in reversed(entries)]
    assert seen == [
        ("key.create", child_id, "success"),
        ("key.create", "(new key)", "refused"),
        ("key.revoke", child_id, "success"),
        ("document.delete", f"{COLLECTION}/{doc_id}", "success"),
        ("document.delete", f"{COLLECTION}/{'0' * 32}", "refused"),
    ]
    for entry in entries:
        assert set(entry) == FIELDS
        assert entry["schema"] == SCHEMA_VERSION
        assert entry["actor"] == actor
        assert entry["collection"] == COLLECTION
        assert entry["time"].endswith("Z")
    assert "rate_limit_per_s" in entries[3]["detail"]  # the refusal says why
    assert admin.key not in json.dumps(entries)  # never a key's value
    # and each entry was also one structured log line with the same content
    assert sorted(e["id"] for e in logged) == sorted(e["id"] for e in entries)
    # and the filters select by action (a prefix selects a family)
    assert {e["action"] for e in audit_json(capsys, "--key", admin.record.key_id, "--action", "key")} == {
        "key.create",
        "key.revoke",
    }
    revokes = audit_json(capsys, "--key", admin.record.key_id, "--action", "key.revoke")
    assert [e["target"] for e in revokes] == [child_id]


def test_cli_key_changes_and_dlq_redrives_are_audited(
    idle_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    from stratus_tools.dlq import main as dlq
    from stratus_tools.keys import main as keys

    # given a key made and revoked with `stratus keys`, and a DLQ redrive
    assert keys(["create", "--name", "cli-audit", "-c", COLLECTION, "--json"]) == 0
    key_id = json.loads(capsys.readouterr().out)["key_id"]
    assert keys(["revoke", key_id]) == 0
    assert dlq(["redrive", "--stage", "fetch", "--json"]) == 0

    # when the audit log of the CLI's actor is read
    entries = audit_json(capsys, "--actor", cli_actor(), "--limit", "1000")

    # then the three actions are there, by the CLI's actor
    found = {(e["action"], e["target"], e["outcome"]) for e in entries}
    assert {("key.create", key_id, "success"), ("key.revoke", key_id, "success")} <= found
    assert any(
        e["action"] == "dlq.redrive" and e["target"] == "fetch" and e["outcome"] == "success" for e in entries
    )


def test_an_audit_table_that_refuses_the_write_still_leaves_the_log_line(
    idle_stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    from stratus.access.audit import AuditLog
    from stratus.stores.audit import AuditTable

    # given an audit table that does not exist (a missing grant or a misnamed table)
    missing = AuditTable(services.audit_table()._ddb, "no-such-audit-table", 30)

    # when an action is recorded
    entry = AuditLog(missing).record("key:000000000000", "key.revoke", "000000000000", "success")

    # then the action is not failed, and the entry is in the log twice: the audit line and the error line
    lines = [r for r in caplog.records if r.__dict__.get("audit", {}).get("id") == entry["id"]]
    assert [r.getMessage() for r in lines] == ["audit", "audit entry not stored"]
    assert lines[1].levelno == logging.ERROR
