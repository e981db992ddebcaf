"""The web console: static files served at /ui; the logic of feedback, conversations and operations."""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
