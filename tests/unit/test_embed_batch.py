"""The embed stage over a whole SQS batch: one encoder call, one lookup, failures kept apart."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stratus.models import Chunk, ChunkBatch, DocumentStatus, StageMessage
from stratus.pipeline.common import dump_chunk_batch
from stratus.pipeline.embed import EmbedStage
from stratus.pipeline.sqs import last_receives
from stratus.stores.documents import DocumentRecord

DIMENSION = 4


class Blobs:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def get_bytes(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        self.objects[key] = data

    def head(self, key: str) -> object | None:
        return object() if key in self.objects else None


class Documents:
    def __init__(self) -> None:
        self.records: dict[str, DocumentRecord] = {}
        self.batch_reads = 0

    def get(self, collection: str, doc_id: str) -> DocumentRecord | None:
        return self.records.get(doc_id)

    def get_many(self, collection: str, doc_ids: list[str]) -> dict[str, DocumentRecord]:
        self.batch_reads += 1
        return {d: self.records[d] for d in doc_ids if d in self.records}

    def advance(
        self,
        collection: str,
        doc_id: str,
        sha: str,
        status: DocumentStatus,
        not_from: Collection[DocumentStatus] = (),
        **fields: Any,
    ) -> bool:
        record = self.records.get(doc_id)
        if (
            record is None
            or record.content_sha256 != sha
            or record.status in {DocumentStatus.DELETED, *not_from}
        ):
            return False
        record.status = status
        record.dead_letter_stage = None
        for name, value in fields.items():
            setattr(record, name, value)
        return True

    def resume(self, collection: str, doc_id: str, sha: str, stage: str, status: DocumentStatus) -> bool:
        record = self.records.get(doc_id)
        if record is None or record.content_sha256 != sha or record.status != DocumentStatus.FAILED:
            return False
        if record.dead_letter_stage != stage:
            return False
        record.status, record.error, record.dead_letter_stage = status, None, None
        return True


@dataclass
class Chunks:
    stored: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    lookups: list[list[str]] = field(default_factory=list)

    def vectors_for_documents(self, collection: str, doc_ids: list[str]) -> dict[str, dict[str, np.ndarray]]:
        self.lookups.append(sorted(doc_ids))
        return {d: self.stored[d] for d in doc_ids if d in self.stored}


@dataclass
class Queue:
    sent: list[StageMessage] = field(default_factory=list)

    def send(self, messages: list[StageMessage]) -> None:
        self.sent.extend(messages)


@dataclass
class Encoder:
    calls: list[list[str]] = field(default_factory=list)
    dimension: int = DIMENSION

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.ones((len(texts), DIMENSION), dtype=np.float32)


def stage() -> tuple[EmbedStage, Blobs, Documents, Chunks, Queue, Encoder]:
    blobs, documents, chunks, queue, encoder = Blobs(), Documents(), Chunks(), Queue(), Encoder()
    embed = EmbedStage(blobs, documents, chunks, queue, lambda: encoder, "staging/")  # type: ignore[arg-type]
    return embed, blobs, documents, chunks, queue, encoder


def add_document(
    blobs: Blobs, documents: Documents, n: int, texts: list[str], new: bool = True, staged: bool = True
) -> StageMessage:
    doc_id, sha = f"{n:032x}", f"{n:064x}"
    batch = ChunkBatch(
        collection="c",
        doc_id=doc_id,
        source=f"d{n}.md",
        content_sha256=sha,
        chunks=[
            Chunk(chunk_id=f"{n:016x}{i:016x}", position=i, text=t, token_count=3)
            for i, t in enumerate(texts)
        ],
    )
    key = f"staging/c/{doc_id}/{sha}/chunks.json.gz"
    if staged:
        blobs.put_bytes(key, dump_chunk_batch(batch))
    documents.records[doc_id] = DocumentRecord(
        collection="c", doc_id=doc_id, source=f"d{n}.md", status=DocumentStatus.FETCHED, content_sha256=sha
    )
    return StageMessage(
        collection="c", doc_id=doc_id, source=f"d{n}.md", content_sha256=sha, key=key, new_document=new
    )


def test_a_batch_of_new_documents_is_encoded_in_one_call_without_a_lookup() -> None:
    # given three new documents in one batch
    embed, blobs, documents, chunks, queue, encoder = stage()
    messages = [add_document(blobs, documents, n, [f"doc {n} a", f"doc {n} b"]) for n in range(3)]

    # when the batch is embedded
    report = embed.handle_batch([(f"m{i}", m) for i, m in enumerate(messages)])

    # then one batch read of the records, one encoder call saw all six chunks, no stored vectors
    # were looked up, all three went on
    assert report.failed == []
    assert documents.batch_reads == 1
    assert len(encoder.calls) == 1
    assert len(encoder.calls[0]) == 6
    assert chunks.lookups == []
    assert sorted(m.doc_id for m in queue.sent) == sorted(m.doc_id for m in messages)
    assert all(m.key.endswith("embeddings.parquet") for m in queue.sent)
    assert {r.status for r in documents.records.values()} == {DocumentStatus.EMBEDDED}


def test_known_documents_reuse_stored_vectors_with_one_lookup() -> None:
    # given two re-ingested documents, one chunk of each already stored
    embed, blobs, documents, chunks, _queue, encoder = stage()
    messages = [add_document(blobs, documents, n, ["same", f"new {n}"], new=False) for n in range(2)]
    for n, m in enumerate(messages):
        chunks.stored[m.doc_id] = {f"{n:016x}{0:016x}": np.full(DIMENSION, 0.5, dtype=np.float32)}

    # when the batch is embedded
    embed.handle_batch([(f"m{i}", m) for i, m in enumerate(messages)])

    # then one lookup covered both, and only the two changed chunks were encoded
    assert chunks.lookups == [sorted(m.doc_id for m in messages)]
    assert encoder.calls == [["new 0", "new 1"]]
    assert [(r.chunks_embedded, r.chunks_reused) for r in documents.records.values()] == [(1, 1), (1, 1)]


def test_a_missing_staged_file_fails_its_document_alone_and_duplicates_are_handled_once() -> None:
    # given a good document delivered twice and one whose staged chunks are gone
    embed, blobs, documents, _chunks, queue, encoder = stage()
    good = add_document(blobs, documents, 1, ["fine"])
    gone = add_document(blobs, documents, 2, ["lost"], staged=False)

    # when the batch is embedded
    report = embed.handle_batch([("a", good), ("b", gone), ("c", good)])

    # then nothing is retried, the lost one is FAILED with a reason, the good one embedded once
    assert report.failed == []
    assert documents.records[gone.doc_id].status == DocumentStatus.FAILED
    assert "missing" in (documents.records[gone.doc_id].error or "")
    assert documents.records[good.doc_id].status == DocumentStatus.EMBEDDED
    assert encoder.calls == [["fine"]]
    assert [m.doc_id for m in queue.sent] == [good.doc_id]


def test_an_encoder_failure_retries_the_whole_batch() -> None:
    # given an encoder that raises
    embed, blobs, documents, _chunks, queue, encoder = stage()

    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("onnxruntime failed")

    encoder.embed_documents = broken  # type: ignore[method-assign]
    messages = [add_document(blobs, documents, n, [f"t{n}"]) for n in range(2)]

    # when the batch is embedded, then both messages are reported for retry and nothing was sent
    report = embed.handle_batch([("a", messages[0]), ("b", messages[1])])
    assert sorted(report.failed) == ["a", "b"]
    assert queue.sent == []


def test_stale_messages_are_acknowledged_without_work() -> None:
    # given a message whose document has moved on to another version
    embed, blobs, documents, _chunks, queue, encoder = stage()
    message = add_document(blobs, documents, 1, ["old"])
    documents.records[message.doc_id].content_sha256 = "f" * 64

    # when it is embedded, then nothing is encoded, sent or retried
    report = embed.handle_batch([("a", message)])
    assert (report.failed, encoder.calls, queue.sent) == ([], [], [])


def embeddings_key(message: StageMessage) -> str:
    return f"staging/c/{message.doc_id}/{message.content_sha256}/embeddings.parquet"


def test_a_duplicate_message_for_an_indexed_document_is_acknowledged_without_encoding() -> None:
    # given a document already INDEXED with the message's content
    embed, blobs, documents, _chunks, queue, encoder = stage()
    message = add_document(blobs, documents, 1, ["indexed already"])
    documents.records[message.doc_id].status = DocumentStatus.INDEXED

    # when its embed message arrives again
    report = embed.handle_batch([("copy", message)])

    # then nothing is encoded, sent or retried, and the document stays INDEXED
    assert (report.failed, encoder.calls, queue.sent) == ([], [], [])
    assert documents.records[message.doc_id].status == DocumentStatus.INDEXED


def test_a_document_indexed_while_it_was_encoded_does_not_move_back_to_embedded() -> None:
    # given a document that the index stage marks INDEXED while this copy of its message is encoded
    embed, blobs, documents, _chunks, queue, encoder = stage()
    message = add_document(blobs, documents, 1, ["raced"])
    encode = encoder.embed_documents

    def encode_while_indexed(texts: list[str]) -> np.ndarray:
        documents.records[message.doc_id].status = DocumentStatus.INDEXED
        return encode(texts)

    encoder.embed_documents = encode_while_indexed  # type: ignore[method-assign]

    # when the copy is embedded
    report = embed.handle_batch([("copy", message)])

    # then the conditional write refuses EMBEDDED: the document stays INDEXED and nothing is sent
    assert report.failed == []
    assert documents.records[message.doc_id].status == DocumentStatus.INDEXED
    assert queue.sent == []


def test_an_embedded_document_with_staged_vectors_gets_its_pointer_again_without_encoding() -> None:
    # given a document EMBEDDED by an attempt that staged its vectors and may have died before sending
    embed, blobs, documents, _chunks, queue, encoder = stage()
    message = add_document(blobs, documents, 1, ["staged"])
    documents.records[message.doc_id].status = DocumentStatus.EMBEDDED
    blobs.put_bytes(embeddings_key(message), b"parquet")

    # when its embed message is delivered again
    report = embed.handle_batch([("again", message)])

    # then the pointer to the staged vectors goes to index once more, and nothing is encoded
    assert (report.failed, encoder.calls) == ([], [])
    assert [m.key for m in queue.sent] == [embeddings_key(message)]
    assert documents.records[message.doc_id].status == DocumentStatus.EMBEDDED


def test_an_embedded_document_without_staged_vectors_is_encoded_and_sent_again() -> None:
    # given a document EMBEDDED whose staged vectors are gone
    embed, blobs, documents, _chunks, queue, encoder = stage()
    message = add_document(blobs, documents, 1, ["restage"])
    documents.records[message.doc_id].status = DocumentStatus.EMBEDDED

    # when its embed message is delivered again
    report = embed.handle_batch([("again", message)])

    # then it is encoded and staged again, and the pointer is sent
    assert (report.failed, encoder.calls) == ([], [["restage"]])
    assert embeddings_key(message) in blobs.objects
    assert [m.key for m in queue.sent] == [embeddings_key(message)]


def test_the_last_attempt_of_a_failing_message_fails_its_document_with_the_dlq_in_the_reason() -> None:
    # given three documents whose messages failed transiently: on the 5th, the 2nd and the 5th receive,
    # the last of which is INDEXED already
    embed, blobs, documents, *_ = stage()
    last, early, indexed = (add_document(blobs, documents, n, [f"t{n}"]) for n in range(3))
    documents.records[indexed.doc_id].status = DocumentStatus.INDEXED
    messages = [("last", last), ("early", early), ("indexed", indexed)]

    # when the stage gives up on the messages on their last receive (maxReceiveCount 5)
    last_ones = last_receives(
        messages,
        ["last", "early", "indexed"],
        {"last": "S3 get staging/x: SlowDown"},
        {"last": 5, "early": 2, "indexed": 5},
        5,
    )
    marked = sum(embed.give_up(receive) for receive in last_ones)

    # then SQS's last receives are the two on their 5th, and only the one not INDEXED is FAILED,
    # with a reason naming the stage and the DLQ
    assert [r.message.doc_id for r in last_ones] == [last.doc_id, indexed.doc_id]
    assert marked == 1
    failed = documents.records[last.doc_id]
    assert failed.status == DocumentStatus.FAILED
    assert failed.dead_letter_stage == "embed"
    assert failed.error is not None
    assert failed.error.startswith("embed: gave up after 5 attempts (S3 get staging/x: SlowDown)")
    assert "embed dead-letter queue" in failed.error
    assert "stratus dlq redrive --stage embed" in failed.error
    assert documents.records[early.doc_id].status == DocumentStatus.FETCHED
    assert documents.records[indexed.doc_id].status == DocumentStatus.INDEXED


def test_a_redriven_message_resumes_a_document_embed_gave_up_on() -> None:
    # given a document FAILED because embed gave up on its message
    embed, blobs, documents, _chunks, queue, encoder = stage()
    message = add_document(blobs, documents, 1, ["redriven"])
    record = documents.records[message.doc_id]
    record.status, record.error, record.dead_letter_stage = DocumentStatus.FAILED, "embed: gave up", "embed"

    # when the message comes back from the dead-letter queue
    report = embed.handle_batch([("redriven", message)])

    # then the document is embedded and handed to index, the give-up forgotten
    assert (report.failed, encoder.calls) == ([], [["redriven"]])
    assert (record.status, record.error, record.dead_letter_stage) == (DocumentStatus.EMBEDDED, None, None)
    assert [m.doc_id for m in queue.sent] == [message.doc_id]


def test_a_permanently_failed_document_is_not_resurrected_by_a_late_copy() -> None:
    # given a document FAILED for good (no stage gave up on it: its content cannot be processed)
    embed, blobs, documents, _chunks, queue, encoder = stage()
    message = add_document(blobs, documents, 1, ["broken"])
    record = documents.records[message.doc_id]
    record.status, record.error = DocumentStatus.FAILED, "staged chunks are unreadable"

    # when a late copy of its embed message arrives
    report = embed.handle_batch([("late", message)])

    # then it is acknowledged without work and the document stays FAILED with its reason
    assert (report.failed, encoder.calls, queue.sent) == ([], [], [])
    assert (record.status, record.error) == (DocumentStatus.FAILED, "staged chunks are unreadable")


def test_a_failed_batch_reports_why_each_message_failed() -> None:
    # given an encoder that raises
    embed, blobs, documents, _chunks, _queue, encoder = stage()

    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("onnxruntime failed")

    encoder.embed_documents = broken  # type: ignore[method-assign]
    message = add_document(blobs, documents, 1, ["t"])

    # when the batch is embedded, then the report says why the message is retried
    report = embed.handle_batch([("a", message)])
    assert report.errors == {"a": "encoder: onnxruntime failed"}
