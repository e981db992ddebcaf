"""Health routes."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from stratus import __version__
from stratus.settings import get_settings

router = APIRouter(tags=["health"])


class HealthReport(BaseModel):
    """Health of the process and what it depends on."""

    status: str
    version: str = __version__
    checks: dict[str, str] = Field(default_factory=dict)


@router.get("/health/live", response_model=HealthReport)
def live() -> HealthReport:
    """The process is up."""
    return HealthReport(status="ok")


@router.get("/health/ready", response_model=HealthReport)
def ready(response: Response) -> HealthReport:
    """The store is reachable and the model is present."""
    from stratus import services

    checks: dict[str, str] = {}
    try:
        services.chunk_store().collections()
        checks["store"] = "ok"
    except Exception as error:
        checks["store"] = f"error: {type(error).__name__}"
    checks["model"] = "ok" if (get_settings().model_dir / "manifest.json").exists() else "missing"
    healthy = all(v == "ok" for v in checks.values())
    response.status_code = 200 if healthy else 503
    return HealthReport(status="ok" if healthy else "degraded", checks=checks)
