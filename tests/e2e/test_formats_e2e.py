"""Issue 15 end to end: one generated file per new format, ingested through the local stack, is the
top hit for its own unique sentence with the right page/slide/sheet/row; images and a scanned PDF
are found by the text in their pixels; hostile files end FAILED with the reason."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.env import restore_environment
from fakes.formats import (
    make_csv,
    make_docx,
    make_eml,
    make_epub,
    make_png,
    make_pptx,
    make_scanned_pdf,
    make_xlsx,
)

from stratus import services
from stratus.models import DocumentStatus
from stratus_tools.local.stack import LocalStack
from stratus_tools.uploads import collect_uploads, upload_files, wait_for_documents

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_format_hostile import LAUGHS, png_header, replace_member, zip_bomb

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTION = "formats"


@pytest.fixture(scope="module")
def stack(model_dir: Path) -> Iterator[LocalStack]:
    """The whole local stack (functions running in this process)."""
    overrides = {
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
    }
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    local = LocalStack(REPO_ROOT, visibility_timeout_s=30, poll_wait_s=1, batch_window_cap_s=0.5)
    try:
        local.start(run_functions=True)
        local.serve_api(port=0)
        yield local
    finally:
        local.stop()
        restore_environment(saved)
        services.reset()


def top_hit(stack: LocalStack, headers: dict[str, str], query: str, expected: str) -> dict[str, Any]:
    """The top hit, asked again for a few seconds while its source is not `expected`."""
    deadline = time.monotonic() + 10
    while True:
        response = httpx.post(
            f"{stack.api_url}/v1/collections/{COLLECTION}/search",
            json={"query": query, "top_k": 5},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        hits = response.json()["hits"]
        if (hits and hits[0]["source"] == expected) or time.monotonic() > deadline:
            return hits[0] if hits else {}
        time.sleep(0.3)


def test_every_new_format_is_found_by_its_sentence_with_page_sheet_and_row_and_hostile_files_fail(
    stack: LocalStack, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    # given one generated file per format, each with a unique sentence, and hostile files
    folder = tmp_path / "formats"
    folder.mkdir()
    files: dict[str, bytes] = {
        "tides.docx": make_docx("Tide tables", "The walrus keeps a careful ledger of tide pools."),
        "deck.pptx": make_pptx(
            [
                ("Opening", "Welcome everyone", ""),
                ("Herons", "The grey heron audits the lighthouse keys.", ""),
            ]
        ),
        "stock.xlsx": make_xlsx(
            {
                "Summary": [["Item", "Note"], ["total", "nothing here"]],
                "Warehouse": [["Item", "Note"]]
                + [[f"crate {i}", f"ordinary crate number {i}"] for i in range(40)]
                + [["violin", "The amber violin rests in crate forty one."]],
            }
        ),
        "orders.csv": make_csv(
            [["order", "remark"]]
            + [[str(i), f"regular order {i}"] for i in range(30)]
            + [["31", "The velvet umbrella shipped to Reykjavik."]],
            delimiter=";",
        ),
        "book.epub": make_epub(
            "Sea Book", [("Calm", "Nothing happens."), ("Storm", "The otter files weather reports.")]
        ),
        "memo.eml": make_eml(
            "Lighthouse memo",
            "The seagull choir rehearses at dawn on Tuesdays.",
            [
                (
                    "agenda.docx",
                    "application/octet-stream",
                    make_docx("Agenda", "The puffin quartet tunes its banjos."),
                )
            ],
        ),
        "photo.png": make_png(["The badger inspects copper kettles"]),
        "scan.pdf": make_scanned_pdf([["Cover page"], ["The lynx repairs paper lanterns"]]),
        # hostile
        "bomb.docx": zip_bomb(make_docx("H", "bomb text"), 300),
        "laughs.xlsx": replace_member(make_xlsx({"S": [["a"], [1]]}), "xl/workbook.xml", LAUGHS),
        "huge.png": png_header(20_000, 20_000),
        "cut.pptx": make_pptx([("T", "text", "")])[:2000],
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    since = time.time()

    # when the folder is uploaded into the inbox and the pipeline runs
    started = time.perf_counter()
    uploads = collect_uploads([folder])
    ids = upload_files(stack.client("s3"), stack.plan.bucket, "inbox/", COLLECTION, uploads)
    records = {
        r.source.rsplit("/", 1)[-1]: r
        for r in wait_for_documents(services.document_table(), COLLECTION, ids, 300, since=since)
    }
    elapsed = time.perf_counter() - started
    print(
        f"\n{len(files)} files through the local stack in {elapsed:.1f} s "
        f"({len(files) / elapsed * 60:.1f} docs/min)"
    )

    # then every good file is INDEXED and every hostile one FAILED with its reason
    # (and the message's attachment, a document of its own that the wait follows)
    assert len(records) == len(files) + 1, sorted(records)
    reasons = {n: (r.status, r.error) for n, r in records.items()}
    for name in (
        "tides.docx",
        "deck.pptx",
        "stock.xlsx",
        "orders.csv",
        "book.epub",
        "memo.eml",
        "1-agenda.docx",
        "photo.png",
        "scan.pdf",
    ):
        assert records[name].status == DocumentStatus.INDEXED, reasons[name]
    expected_failures = {
        "bomb.docx": "zip bomb",
        "laughs.xlsx": "entities",
        "huge.png": "decompression bomb",
        "cut.pptx": "not a readable zip archive",
    }
    for name, reason in expected_failures.items():
        assert records[name].status == DocumentStatus.FAILED, reasons[name]
        assert reason in (records[name].error or ""), reasons[name]

    # and each sentence's top hit is its file, citing the right slide/page/sheet/rows
    def hit(query: str, name: str) -> dict[str, Any]:
        found = top_hit(stack, api_headers, query, f"{name}")
        assert found.get("source") == name, (query, found.get("source"))
        return found

    assert hit("walrus ledger of tide pools", "tides.docx")["section"] == "Overview > Tide tables"
    assert hit("grey heron audits the lighthouse keys", "deck.pptx")["page"] == 2
    violin = hit("amber violin rests in a crate", "stock.xlsx")
    assert violin["sheet"] == "Warehouse"
    assert violin["row_start"] <= 42 <= violin["row_end"]
    umbrella = hit("velvet umbrella shipped to Reykjavik", "orders.csv")
    assert umbrella["sheet"] == "orders.csv"
    assert umbrella["row_start"] <= 32 <= umbrella["row_end"]
    assert hit("otter files weather reports", "book.epub")["section"] == "Storm"
    memo = hit("seagull choir rehearses at dawn", "memo.eml")
    assert memo["metadata"]["email_subject"] == "Lighthouse memo"
    agenda = hit("puffin quartet tunes its banjos", "memo.eml.attachments/1-agenda.docx")
    assert agenda["metadata"]["email_message"] == "memo.eml"
    assert agenda["metadata"]["parent_doc_id"] == records["memo.eml"].doc_id
    badger = hit("badger inspects copper kettles", "photo.png")
    assert badger["metadata"]["ocr"] is True
    assert hit("lynx repairs paper lanterns", "scan.pdf")["page"] == 2
