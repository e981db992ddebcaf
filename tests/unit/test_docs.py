"""The README stays true to the code: the two commands first, every setting documented."""

from __future__ import annotations

from pathlib import Path

from stratus.settings import Settings
from stratus_tools.settings_doc import BEGIN, END, render_into

ROOT = Path(__file__).resolve().parents[2]


def test_readme_opens_with_the_two_commands() -> None:
    # given the README
    text = (ROOT / "README.md").read_text()

    # when we look at what comes before the first section
    intro = text.split("\n## ", 1)[0]

    # then both commands are there
    assert "make up" in intro
    assert "make test" in intro


def test_readme_settings_table_matches_the_settings_model() -> None:
    # given the README and the table generated from Settings
    text = (ROOT / "README.md").read_text()
    assert BEGIN in text
    assert END in text

    # then regenerating the table changes nothing (run scripts/settings_table.py if this fails)
    assert render_into(text) == text
    for name in Settings.model_fields:
        assert f"`STRATUS_{name.upper()}`" in text


def test_ci_runs_exactly_the_readme_test_command() -> None:
    # given the CI script
    script = (ROOT / ".ci" / "run").read_text()

    # then it runs make test
    assert "make test" in script
