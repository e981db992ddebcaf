"""An e-mail's attachments become documents of their own, linked to the message (issue 15):
the fetch handler invoked in-process against the emulator, its S3 events followed as SQS would."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

import pytest
from fakes.formats import make_csv, make_docx, make_eml

from stratus import services
from stratus.models import DocumentStatus, make_doc_id
from stratus.pipeline.worker import sqs_event
from stratus.stores.blobs import BlobStore
from stratus.stores.documents import DocumentTable
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

COLLECTION = "mail"


def put(stack: LocalStack, key: str, body: bytes) -> None:
    stack.client("s3").put_object(Bucket=stack.plan.bucket, Key=key, Body=body)


def pump(stack: LocalStack) -> list[str]:
    """Run every stage over what its queue holds until all queues are empty; the fetched keys."""
    sqs = stack.client("sqs")
    fetched: list[str] = []
    busy = True
    while busy:
        busy = False
        for stage, queue in (
            ("FetchFunction", "FetchQueue"),
            ("EmbedFunction", "EmbedQueue"),
            ("IndexFunction", "IndexQueue"),
        ):
            response = sqs.receive_message(QueueUrl=stack.queue_urls[queue], MaxNumberOfMessages=10)
            messages = response.get("Messages", [])
            if not messages:
                continue
            busy = True
            for m in messages:
                sqs.delete_message(QueueUrl=stack.queue_urls[queue], ReceiptHandle=m["ReceiptHandle"])
                if stage == "FetchFunction":
                    body = json.loads(m["Body"])
                    fetched += [unquote_plus(r["s3"]["object"]["key"]) for r in body.get("Records", [])]
            event = sqs_event(
                [
                    {"MessageId": f"{queue}-{i}", "ReceiptHandle": "r", "Body": m["Body"]}
                    for i, m in enumerate(messages)
                ]
            )
            assert stack.handler(stage)(event, stack.context(stage)) == {"batchItemFailures": []}
    return fetched


def record(source: str) -> Any:
    return services.document_table().get(COLLECTION, make_doc_id(COLLECTION, source))


def keys_under(stack: LocalStack, prefix: str) -> list[str]:
    listing = stack.client("s3").list_objects_v2(Bucket=stack.plan.bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_attachments_become_linked_documents_follow_the_message_and_go_with_it(
    idle_stack: LocalStack,
) -> None:
    # given a message with a Word file, a CSV, an unreadable blob and one hostile name, and a sidecar
    message = make_eml(
        "Harbour minutes",
        "Minutes attached.",
        [
            (
                "minutes.docx",
                "application/octet-stream",
                make_docx("Minutes", "The pelican treasurer balanced the books."),
            ),
            ("../../etc/parts.csv", "text/csv", make_csv([["part", "count"], ["anchor", "3"]])),
            ("blob.bin", "application/octet-stream", b"\x00\x01\x02"),
            ("evil.urls", "text/plain", b"http://169.254.169.254/latest/meta-data/\n"),
        ],
    )
    put(
        idle_stack,
        f"inbox/{COLLECTION}/harbour.eml.metadata.json",
        b'{"metadataAttributes": {"team": "port"}}',
    )
    put(idle_stack, f"inbox/{COLLECTION}/harbour.eml", message)

    # when the pipeline runs over the events that follow
    fetched = pump(idle_stack)

    # then each attachment was written beside the message under a safe name and fetched as a document
    prefix = f"inbox/{COLLECTION}/harbour.eml.attachments/"
    names = ["1-minutes.docx", "2-parts.csv", "3-blob.bin", "4-evil.urls.txt"]
    assert {k for k in keys_under(idle_stack, prefix) if not k.endswith(".metadata.json")} == {
        prefix + n for n in names
    }
    assert set(fetched) >= {prefix + n for n in names}
    parent = record("harbour.eml")
    assert parent.status == DocumentStatus.INDEXED, parent
    assert parent.attachments == [f"harbour.eml.attachments/{n}" for n in names]
    assert parent.to_public()["attachments"] == parent.attachments
    minutes = record("harbour.eml.attachments/1-minutes.docx")
    assert minutes.status == DocumentStatus.INDEXED, minutes
    assert record("harbour.eml.attachments/2-parts.csv").status == DocumentStatus.INDEXED
    # an attachment Stratus cannot read is its own FAILED document with the reason, not dropped
    blob = record("harbour.eml.attachments/3-blob.bin")
    assert blob.status == DocumentStatus.FAILED
    assert "unsupported" in (blob.error or "")
    # and a manifest-named attachment is read as text, never as a list of URLs to fetch
    assert record("harbour.eml.attachments/4-evil.urls.txt").status == DocumentStatus.INDEXED

    # and the attachment's indexed chunks are linked to the message and carry its sidecar attributes
    table = services.chunk_store().open(COLLECTION)
    assert table is not None
    rows = table.search().where(f"doc_id = '{minutes.doc_id}'").limit(None).to_list()
    assert rows
    assert "pelican treasurer" in " ".join(r["text"] for r in rows)
    metadata = json.loads(rows[0]["metadata_json"])
    assert metadata["parent_doc_id"] == parent.doc_id
    assert metadata["email_message"] == "harbour.eml"
    assert metadata["attachment_name"] == "minutes.docx"
    assert metadata["team"] == "port"

    # when the message is sent again with only its CSV
    put(
        idle_stack,
        f"inbox/{COLLECTION}/harbour.eml",
        make_eml(
            "Harbour minutes", "Minutes attached.", [("parts.csv", "text/csv", b"part,count\nanchor,4\n")]
        ),
    )
    pump(idle_stack)
    # then the attachments it no longer carries are gone, documents and objects
    assert record("harbour.eml").attachments == ["harbour.eml.attachments/1-parts.csv"]
    assert record("harbour.eml.attachments/1-minutes.docx").status == DocumentStatus.DELETED
    assert record("harbour.eml.attachments/1-parts.csv").status == DocumentStatus.INDEXED
    assert [k for k in keys_under(idle_stack, prefix) if not k.endswith(".metadata.json")] == [
        prefix + "1-parts.csv"
    ]

    # when the message is deleted
    idle_stack.client("s3").delete_object(
        Bucket=idle_stack.plan.bucket, Key=f"inbox/{COLLECTION}/harbour.eml"
    )
    pump(idle_stack)
    # then its attachments go with it
    assert record("harbour.eml").status == DocumentStatus.DELETED
    assert record("harbour.eml.attachments/1-parts.csv").status == DocumentStatus.DELETED
    assert keys_under(idle_stack, prefix) == []


def test_a_message_overtaken_while_it_was_parsed_writes_no_attachments(
    idle_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a message with an attachment, whose newer version (here its deletion) is recorded right
    # after the fetch stage first read the record and while it parses this one
    source = "overtaken.eml"
    doc_id = make_doc_id(COLLECTION, source)
    attachment = ("notes.csv", "text/csv", make_csv([["item", "owner"], ["rope", "Ann"]]))
    put(idle_stack, f"inbox/{COLLECTION}/{source}", make_eml("Late", "Body of the late one.", [attachment]))
    real_get = DocumentTable.get
    reads: list[str] = []

    def first_read_sees_nothing_then_the_newer_version_lands(
        table: DocumentTable, collection: str, wanted: str
    ) -> Any:
        if wanted == doc_id:
            reads.append(wanted)
            if len(reads) == 1:
                table.record_version(
                    collection, wanted, "~newer", DocumentStatus.DELETED, source=source, chunk_count=0
                )
                return None
        return real_get(table, collection, wanted)

    monkeypatch.setattr(DocumentTable, "get", first_read_sees_nothing_then_the_newer_version_lands)
    # when the stages run
    pump(idle_stack)
    # then the stale version wrote no attachment, and the newer record stands
    assert len(reads) >= 2, "the stage re-reads the record before writing attachments"
    assert keys_under(idle_stack, f"inbox/{COLLECTION}/{source}.attachments/") == []
    assert record(source).status == DocumentStatus.DELETED


def test_deleting_documents_lists_no_prefix(idle_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a plain document and a message with an attachment, both indexed
    attachment = ("crew.csv", "text/csv", make_csv([["name", "role"], ["Bo", "cook"]]))
    put(idle_stack, f"inbox/{COLLECTION}/plain.eml", make_eml("Plain", "No attachments here."))
    put(idle_stack, f"inbox/{COLLECTION}/crewed.eml", make_eml("Crew", "Crew list attached.", [attachment]))
    pump(idle_stack)
    assert keys_under(idle_stack, f"inbox/{COLLECTION}/crewed.eml.attachments/") != []

    def no_listing(store: BlobStore, prefix: str) -> Any:
        raise AssertionError(f"listed {prefix}: a record names a message's attachments")

    monkeypatch.setattr(BlobStore, "list_keys", no_listing)
    # when both are deleted from the inbox
    s3 = idle_stack.client("s3")
    for name in ("plain.eml", "crewed.eml"):
        s3.delete_object(Bucket=idle_stack.plan.bucket, Key=f"inbox/{COLLECTION}/{name}")
    pump(idle_stack)
    # then both are DELETED, and the attachment went with its message, found through its record
    assert record("plain.eml").status == DocumentStatus.DELETED
    assert record("crewed.eml").status == DocumentStatus.DELETED
    assert keys_under(idle_stack, f"inbox/{COLLECTION}/crewed.eml.attachments/") == []
    assert record("crewed.eml.attachments/1-crew.csv").status == DocumentStatus.DELETED
