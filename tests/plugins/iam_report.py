"""Writes the calls-vs-grants report of every local stack the session ran (IAM enforced).

Each `LocalStack` records, when it stops, every request the emulator authorised (boto3's and
LanceDB's object-store requests alike) by principal; this plugin turns the session's record into
`.stratus/iam-report.json` and `.stratus/iam-report.md` (per function: calls made, calls denied,
grants used, grants never used) and prints a one-line summary per function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_DIR = Path(__file__).resolve().parents[2] / ".stratus"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Write the report and summarise it (nothing when no stack ran)."""
    from stratus_tools.local.iam import call_report, report_markdown
    from stratus_tools.local.stack import CALL_LOG

    if not CALL_LOG:
        return
    report = call_report(CALL_LOG)
    REPORT_DIR.mkdir(exist_ok=True)
    (REPORT_DIR / "iam-report.json").write_text(json.dumps(report, indent=2))
    (REPORT_DIR / "iam-report.md").write_text(report_markdown(report))
    terminalreporter.write_sep("-", f"calls vs grants: {REPORT_DIR / 'iam-report.md'}")
    for function, entry in report.items():
        terminalreporter.write_line(
            f"{function}: {len(entry['calls'])} kinds of call, {len(entry['denied'])} denied, "
            f"{len(entry['grants_used'])} grants used, {len(entry['grants_never_used'])} never used"
        )
