"""Benchmarks run by `stratus bench <name>`."""

from collections.abc import Sequence

from stratus_tools.evaluation import percentile


def summarise(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and mean of a list of milliseconds."""
    return {
        "n": len(latencies_ms),
        "p50_ms": round(percentile(latencies_ms, 50), 2),
        "p95_ms": round(percentile(latencies_ms, 95), 2),
        "p99_ms": round(percentile(latencies_ms, 99), 2),
        "mean_ms": round(sum(latencies_ms) / max(len(latencies_ms), 1), 2),
    }


def create_admin_key(name: str = "bench-load") -> str:
    """A new admin key on every collection with no rate limit, stored in the keys table of the stack."""
    from stratus import services
    from stratus.access.auth import create_key

    return create_key(services.key_table(), name, ["*"], ["admin"], rate_limit_per_s=0).key
