"""The embed stage over a whole SQS batch: one encoder call, one lookup, failures kept apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stratus.models import Chunk, ChunkBatch, DocumentStatus, StageMessage
from stratus.pipeline.common import dump_chunk_batch
from stratus.pipeline.embed import EmbedStage
from stratus.stores.documents import DocumentRecord

DIMENSION = 4


class Blobs:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def get_bytes(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        self.objects[key] = data


class Documents:
    def __init__(self) -> None:
        self.records: dict[str, DocumentRecord] = {}

    def get(self, collection: str, doc_id: str) -> DocumentRecord | None:
        return self.records.get(doc_id)

    def advance(self, collection: str, doc_id: str, sha: str, status: DocumentStatus, **fields: Any) -> bool:
        record = self.records.get(doc_id)
        if record is None or record.content_sha256 != sha or record.status == DocumentStatus.DELETED:
            return False
        record.status = status
        for name, value in fields.items():
            setattr(record, name, value)
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

    # then one encoder call saw all six chunks, no stored vectors were looked up, all three went on
    assert report.failed == []
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
