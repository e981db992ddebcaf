"""Does streamed ingestion stay linear? docs/min of the first and the last 1,000 documents of a corpus.

Uploads every SciFact abstract at once to a fresh local stack (emulator in a child process, the
functions' queue consumers in this one), waits until each is INDEXED, and rates the first and the
last 1,000 documents by their INDEXED times.

Example: .venv/bin/python scripts/linear_ingest.py > bench-out/linear.json
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    """Run the measurement; print one JSON line."""
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from stratus import services
    from stratus.embedding.encoder import get_encoder
    from stratus.settings import REPO_ROOT, get_settings
    from stratus_tools.benchmarks.ingest import DEFAULT_CORPUS, write_corpus
    from stratus_tools.local.stack import LocalStack
    from stratus_tools.uploads import collect_uploads, upload_files, wait_for_documents

    with contextlib.redirect_stdout(sys.stderr):
        stack = LocalStack(REPO_ROOT, bucket="linear", poll_wait_s=1, emulator="process").start()
        try:
            get_encoder().embed_documents(["warm up"])
            services.chunk_tokenizer()
            with tempfile.TemporaryDirectory() as folder:
                total = write_corpus(DEFAULT_CORPUS, Path(folder), None)
                uploads = collect_uploads([Path(folder)])
                since = time.time()
                ids = upload_files(stack.client("s3"), stack.plan.bucket, "inbox/", "linear", uploads)
                records = wait_for_documents(
                    services.document_table(), "linear", ids, 3000, since=since, poll_s=2.0
                )
        finally:
            stack.stop()
    done = sorted(r.updated_at for r in records if r.status.value == "INDEXED")
    window = min(1000, len(done) - 1)
    first = window / (done[window - 1] - since) * 60
    last = window / (done[-1] - done[-1 - window]) * 60
    print(
        json.dumps(
            {
                "documents": total,
                "indexed": len(done),
                "whole_docs_per_min": round(len(done) / (done[-1] - since) * 60, 1),
                "first_1000_docs_per_min": round(first, 1),
                "last_1000_docs_per_min": round(last, 1),
                "last_over_first": round(last / first, 3),
                "index_compact_every": get_settings().index_compact_every,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
