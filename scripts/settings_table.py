"""Rewrite the configuration table in README.md from the Settings model: python scripts/settings_table.py."""

from pathlib import Path

from stratus.settings_doc import render_into

readme = Path(__file__).resolve().parent.parent / "README.md"
readme.write_text(render_into(readme.read_text()))
print(f"updated {readme}")
