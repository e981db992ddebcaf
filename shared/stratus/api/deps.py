"""Shared FastAPI dependencies and path parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from stratus.settings import Settings, get_settings

CollectionName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Collection name.")]
DocumentId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="Document id.")]


def settings_dep() -> Settings:
    """Settings as a FastAPI dependency."""
    return get_settings()
