"""Putting back the environment variables a test changed."""

from __future__ import annotations

import os
from collections.abc import Mapping


def restore_environment(saved: Mapping[str, str | None]) -> None:
    """Set each variable back to its saved value; None means it was not set."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
