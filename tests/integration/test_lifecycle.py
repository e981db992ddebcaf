"""The document state machine's guards, transition by transition, against the emulated documents table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stratus import services
from stratus.lifecycle import TRANSITIONS, DocumentLifecycle
from stratus.models import DocumentStatus, StageMessage
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
S = DocumentStatus


def lifecycle() -> DocumentLifecycle:
    return DocumentLifecycle(services.document_table())


def status(collection: str, doc_id: str) -> DocumentStatus | None:
    record = services.document_table().get(collection, doc_id)
    return None if record is None else record.status


def message(collection: str, doc_id: str, sha: str = "sha") -> StageMessage:
    return StageMessage(collection=collection, doc_id=doc_id, content_sha256=sha, source="a.md")


def test_a_document_walks_the_happy_path_and_never_back(idle_stack: LocalStack) -> None:
    # given a submitted document
    states = lifecycle()
    assert states.queued("walk", "d", "a.md")
    assert status("walk", "d") == S.QUEUED

    # when fetch, embed and index record it in turn
    assert states.fetched("walk", "d", "0002", source="a.md", content_sha256="sha", chunk_count=2)
    assert states.embedded("walk", "d", "sha")
    assert states.indexed("walk", "d", "sha", chunk_count=2)

    # then it is INDEXED, and no late embed, stage failure or give-up moves it back
    assert status("walk", "d") == S.INDEXED
    assert not states.embedded("walk", "d", "sha")
    assert not states.stage_failed("walk", "d", "sha", "late")
    assert not states.given_up(message("walk", "d"), "embed", "late")
    assert status("walk", "d") == S.INDEXED


def test_version_writes_lose_to_newer_versions_and_stage_writes_to_other_content(
    idle_stack: LocalStack,
) -> None:
    # given a document fetched at version 0005 with content "new"
    states = lifecycle()
    assert states.fetched("ver", "d", "0005", source="a.md", content_sha256="new")

    # when an older version's outcome, a QUEUED record and a stage write for other content arrive
    older = states.fetch_failed("ver", "d", "0004", source="a.md", error="old")
    queued = states.queued("ver", "d", "a.md")
    other = states.embedded("ver", "d", "old")

    # then each is refused and the record stays as fetched
    assert (older, queued, other) == (False, False, False)
    assert status("ver", "d") == S.FETCHED


def test_a_deleted_document_takes_no_stage_write_and_a_fetch_give_up_spares_a_version_past_fetch(
    idle_stack: LocalStack,
) -> None:
    # given a document deleted at version 0007, and another fetched at 0003
    states = lifecycle()
    assert states.fetched("del", "gone", "0006", source="a.md", content_sha256="sha")
    assert states.deleted("del", "gone", "0007", source="a.md")
    assert states.fetched("del", "kept", "0003", source="b.md", content_sha256="sha")

    # when stage writes reach the deleted one and fetch gives up on the other's same version
    embedded = states.embedded("del", "gone", "sha")
    given_up = states.fetch_given_up("del", "kept", "0003", "b.md", "fetch: gave up")

    # then neither moves: DELETED is final for its version, and fetch's give-up spares FETCHED
    assert (embedded, given_up) == (False, False)
    assert (status("del", "gone"), status("del", "kept")) == (S.DELETED, S.FETCHED)


def test_a_give_up_is_resumed_only_by_the_stage_that_gave_up(idle_stack: LocalStack) -> None:
    # given a document embed gave up on
    states = lifecycle()
    assert states.fetched("resume", "d", "0002", source="a.md", content_sha256="sha")
    assert states.given_up(message("resume", "d"), "embed", "embed: gave up after 5 attempts")
    record = services.document_table().get("resume", "d")
    assert record is not None
    assert (record.status, record.dead_letter_stage) == (S.FAILED, "embed")

    # when index's message and then embed's redriven message ask for work
    by_index = states.work_for(message("resume", "d"), "index", S.EMBEDDED, record)
    by_embed = states.work_for(message("resume", "d"), "embed", S.FETCHED, record)

    # then index is told to acknowledge, and embed resumes the document to FETCHED
    assert by_index is None
    assert by_embed is not None
    assert status("resume", "d") == S.FETCHED


def test_a_manifest_is_indexed_with_urls_and_failed_without(idle_stack: LocalStack) -> None:
    # given two manifests read at version 0002, one naming URLs
    states = lifecycle()

    # when their records are written
    states.manifest_read("man", "with", "0002", True, source="a.urls", chunk_count=0)
    states.manifest_read("man", "without", "0002", False, source="b.urls", chunk_count=0)

    # then one is INDEXED and the other FAILED
    assert (status("man", "with"), status("man", "without")) == (S.INDEXED, S.FAILED)


def test_only_the_state_machine_writes_a_documents_status() -> None:
    # given every module of the runtime and the tooling
    sources = [*(ROOT / "shared/stratus").rglob("*.py"), *(ROOT / "tools/stratus_tools").rglob("*.py")]
    write = re.compile(r"\.(record_version|advance|resume)\(")

    # when their calls of the documents table's status writes are collected
    writers = sorted(
        str(path.relative_to(ROOT))
        for path in sources
        if write.search(path.read_text()) and path.name not in {"lifecycle.py", "documents.py"}
    )

    # then only stratus.lifecycle makes them, and every transition it names is in its table
    assert writers == []
    text = (ROOT / "shared/stratus/lifecycle.py").read_text()
    named = set(re.findall(r'self\._(?:version|stage)\(\s*"([a-z_]+)"', text))
    assert named == set(TRANSITIONS)
