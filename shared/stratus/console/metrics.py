"""An in-process recorder of the emitted metrics: the local equivalent of the dashboard's widgets."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from functools import cache
from typing import Any

from stratus.observability import MetricName, add_metric_sink


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


class MetricRecorder:
    """The latest values of each metric, with when they were emitted; bounded per metric."""

    def __init__(self, samples: int, clock: Any = time.time) -> None:
        self._lock = threading.Lock()
        self._values: dict[MetricName, deque[tuple[float, float]]] = {}
        self._totals: dict[MetricName, float] = {}
        self._samples = samples
        self._clock = clock
        self.started_at = clock()

    def record(self, name: MetricName, value: float, unit: str = "Count") -> None:
        """Keep one emitted value (the sink `add_metric_sink` calls)."""
        with self._lock:
            values = self._values.get(name)
            if values is None:
                values = self._values[name] = deque(maxlen=self._samples)
            values.append((self._clock(), float(value)))
            self._totals[name] = self._totals.get(name, 0.0) + float(value)

    def total(self, name: MetricName) -> float:
        """Sum of every value since the process started."""
        with self._lock:
            return self._totals.get(name, 0.0)

    def latency(self, name: MetricName) -> dict[str, float]:
        """p50, p95 and the sample count of the values kept."""
        with self._lock:
            values = [v for _, v in self._values.get(name, ())]
        return {"p50": percentile(values, 50), "p95": percentile(values, 95), "samples": len(values)}

    def snapshot(self) -> dict[str, Any]:
        """Totals of every metric and p50/p95 of the latency metrics, under the metric names."""
        with self._lock:
            names = sorted(self._totals)
        totals = {name.value: self.total(name) for name in names}
        latencies = {
            name.value: self.latency(name)
            for name in (
                MetricName.SEARCH_LATENCY_MS,
                MetricName.CHAT_LATENCY_MS,
                MetricName.INGEST_LATENCY_MS,
            )
        }
        return {"since": self.started_at, "totals": totals, "latency_ms": latencies}


@cache
def recorder(samples: int = 2000) -> MetricRecorder:
    """The process-wide recorder, registered as a metric sink on first use."""
    made = MetricRecorder(samples)
    add_metric_sink(made.record)
    return made
