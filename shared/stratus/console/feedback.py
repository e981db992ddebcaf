"""Feedback on answers and hits, and its export as a BEIR-layout folder that `stratus eval` scores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from stratus.stores.feedback import FeedbackRecord, FeedbackTable

ID = r"^[A-Za-z0-9_:#.-]{1,200}$"


class FeedbackRequest(BaseModel):
    """A rating of an answer (the chunks it cited) or of one search hit."""

    target: Literal["answer", "hit"] = Field(description="What is rated: a chat answer or a search hit.")
    rating: Literal[1, -1] = Field(description="1: thumbs up (relevant), -1: thumbs down.")
    query: str = Field(min_length=1, max_length=2000, description="The question or search query.")
    chunk_ids: list[str] = Field(
        default_factory=list, max_length=50, description="Chunks the answer cited, or the hit's chunk."
    )
    doc_ids: list[str] = Field(
        default_factory=list, max_length=50, description="Documents of those chunks (qrels use them)."
    )
    comment: str = Field("", max_length=2000, description="Optional free text.")
    answer: str = Field("", max_length=20000, description="The answer rated (for answers).")
    conversation_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{8,64}$")


def submit(table: FeedbackTable, collection: str, key_id: str, body: FeedbackRequest) -> FeedbackRecord:
    """Store one feedback item."""
    for value in [*body.chunk_ids, *body.doc_ids]:
        if not value or len(value) > 200:
            raise ValueError("chunk_ids/doc_ids: each id is 1 to 200 characters")
    record = FeedbackRecord(
        collection=collection,
        feedback_id="",
        target=body.target,
        rating=body.rating,
        query=body.query.strip(),
        chunk_ids=list(dict.fromkeys(body.chunk_ids)),
        doc_ids=list(dict.fromkeys(body.doc_ids)),
        comment=body.comment,
        answer=body.answer,
        conversation_id=body.conversation_id,
        key_id=key_id,
    )
    return table.add(record)


def query_id(query: str) -> str:
    """A stable id of a query text (the same question asked twice is one query)."""
    return "q" + hashlib.sha256(" ".join(query.lower().split()).encode()).hexdigest()[:16]


def qrels_from(records: list[FeedbackRecord]) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries and qrels: a document is relevant (1) when its latest rating for the query is up, else 0."""
    queries: dict[str, str] = {}
    latest: dict[tuple[str, str], int] = {}
    for record in sorted(records, key=lambda r: r.feedback_id):
        qid = query_id(record.query)
        queries.setdefault(qid, record.query)
        for doc in record.doc_ids:
            latest[(qid, doc)] = 1 if record.rating > 0 else 0
    qrels: dict[str, dict[str, int]] = {}
    for (qid, doc), score in latest.items():
        qrels.setdefault(qid, {})[doc] = score
    return queries, qrels


def corpus_rows(store: Any, collection: str) -> list[dict[str, str]]:
    """One BEIR corpus row per document of the collection: its chunks' text in order (overlap kept)."""
    table = store.open(collection)
    if table is None:
        return []
    rows = table.search().select(["doc_id", "title", "text", "position"]).limit(None).to_list()
    by_doc: dict[str, list[tuple[int, str]]] = {}
    titles: dict[str, str] = {}
    for row in rows:
        by_doc.setdefault(row["doc_id"], []).append((int(row["position"]), row["text"]))
        titles.setdefault(row["doc_id"], row.get("title") or "")
    return [
        {"_id": doc, "title": titles[doc], "text": "\n".join(t for _, t in sorted(parts))}
        for doc, parts in sorted(by_doc.items())
    ]


def export(
    table: FeedbackTable, store: Any, collection: str, out: Path, split: str = "test"
) -> dict[str, int]:
    """Write corpus.jsonl, queries.jsonl and qrels/<split>.tsv for the collection's feedback."""
    records = list(table.iterate(collection))
    queries, qrels = qrels_from(records)
    corpus = corpus_rows(store, collection)
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for row in corpus:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with (out / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for doc, score in docs.items():
                f.write(f"{qid}\t{doc}\t{score}\n")
    positives = sum(1 for docs in qrels.values() for s in docs.values() if s > 0)
    return {
        "feedback": len(records),
        "queries": len(queries),
        "qrels": sum(len(d) for d in qrels.values()),
        "positive": positives,
        "negative": sum(len(d) for d in qrels.values()) - positives,
        "documents": len(corpus),
    }


def main(argv: list[str] | None = None) -> int:
    """`stratus feedback export COLLECTION --out DIR`: the collection's feedback as a BEIR folder."""
    import argparse

    parser = argparse.ArgumentParser(prog="stratus feedback", description="Feedback of a collection.")
    sub = parser.add_subparsers(dest="command", required=True)
    export_parser = sub.add_parser("export", help="write a BEIR folder (corpus, queries, qrels) to score")
    export_parser.add_argument("collection")
    export_parser.add_argument("--out", type=Path, required=True, help="folder to write")
    export_parser.add_argument("--split", default="test", help="qrels split name (default test)")
    args = parser.parse_args(argv)
    from stratus import services

    counts = export(services.feedback_table(), services.chunk_store(), args.collection, args.out, args.split)
    print(
        f"exported {counts['feedback']} feedback item(s) of {args.collection!r}: "
        f"{counts['queries']} queries, "
        f"{counts['positive']} positive and {counts['negative']} negative qrels, {counts['documents']} "
        f"documents -> {args.out} (score it: stratus eval {args.out} --split {args.split})"
    )
    if not counts["positive"]:
        print("note: no positive feedback yet, so `stratus eval` has no judged query to score")
    return 0
