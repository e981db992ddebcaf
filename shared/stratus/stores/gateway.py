"""API Gateway keys that mirror Stratus keys, so a key also passes the gateway's usage plan on AWS."""

from __future__ import annotations

import threading
from typing import Any


class GatewayKeys:
    """Creates, attaches and disables API Gateway API keys of one usage plan."""

    def __init__(self, apigateway_client: Any, usage_plan_id: str | None = None) -> None:
        self._apigw = apigateway_client
        # None: this instance only disables keys (that needs no plan).
        self.usage_plan_id = usage_plan_id

    def mirror(self, key: str, key_id: str, name: str) -> str:
        """Create an enabled gateway key with the same value, attach it to the plan; return its id."""
        if self.usage_plan_id is None:
            raise ValueError("mirroring a key needs a usage plan")
        created = self._apigw.create_api_key(
            name=f"stratus-{key_id}", description=name[:100], enabled=True, value=key
        )
        gateway_id = str(created["id"])
        try:
            self._apigw.create_usage_plan_key(
                usagePlanId=self.usage_plan_id, keyId=gateway_id, keyType="API_KEY"
            )
        except Exception:
            # An unattached key passes no stage, but leave nothing enabled behind (best effort).
            self._disable_quietly(gateway_id)
            raise
        return gateway_id

    def disable(self, gateway_id: str) -> None:
        """Disable a gateway key (kept, like the revoked Stratus key it mirrors)."""
        self._apigw.update_api_key(
            apiKey=gateway_id, patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}]
        )

    def enabled(self, gateway_id: str) -> bool:
        """Whether a gateway key is enabled."""
        return bool(self._apigw.get_api_key(apiKey=gateway_id)["enabled"])

    def _disable_quietly(self, gateway_id: str) -> None:
        from stratus.observability import logger

        try:
            self.disable(gateway_id)
        except Exception:
            logger.exception("could not disable unattached gateway key", extra={"gateway_key_id": gateway_id})


class UsagePlans:
    """The usage plans that cover an API stage, listed once per process (plans rarely change)."""

    def __init__(self, apigateway_client: Any) -> None:
        self._apigw = apigateway_client
        self._found: dict[tuple[str, str], tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def of_stage(self, api_id: str, stage: str) -> tuple[str, ...]:
        """Ids of the usage plans whose apiStages name (api_id, stage), sorted."""
        with self._lock:
            cached = self._found.get((api_id, stage))
        if cached is not None:
            return cached
        plans = [
            plan["id"]
            for page in self._apigw.get_paginator("get_usage_plans").paginate()
            for plan in page.get("items", [])
            if any(s.get("apiId") == api_id and s.get("stage") == stage for s in plan.get("apiStages", []))
        ]
        found = tuple(sorted(plans))
        # No plan is not remembered: one attached later is found by the next request.
        if found:
            with self._lock:
                self._found[(api_id, stage)] = found
        return found
