"""Rewrite the configuration table in README.md from the Settings model (--check: only report drift)."""

import argparse
import sys
from pathlib import Path

from stratus_tools.settings_doc import render_into

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--check", action="store_true", help="exit 1 if the table is out of date; write nothing")
args = parser.parse_args()
readme = Path(__file__).resolve().parent.parent / "README.md"
current = readme.read_text()
rendered = render_into(current)
if args.check:
    sys.exit(0 if rendered == current else f"{readme}: the configuration table is out of date")
readme.write_text(rendered)
print(f"updated {readme}")
