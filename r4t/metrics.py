"""Custom metrics on the Ray dashboard: ray.util.metrics gauges (exported to Prometheus), one per key."""

from __future__ import annotations

import math


class DashboardGauges:
    """Gauges named <prefix>_<key>, created on first use inside a Ray process (a no-op outside Ray)."""

    def __init__(self, prefix: str, keys: tuple[str, ...], tag_keys: tuple[str, ...], what: str):
        self.prefix, self.keys, self.tag_keys, self.what = prefix, keys, tag_keys, what
        self._gauges = None

    def set(self, record: dict, tags: dict[str, str]) -> None:
        import ray
        if not ray.is_initialized():
            return
        from ray.util.metrics import Gauge
        if self._gauges is None:
            self._gauges = {k: Gauge(f"{self.prefix}_{k}", description=f"{self.what}: {k}", tag_keys=self.tag_keys)
                            for k in self.keys}
        for key, gauge in self._gauges.items():
            value = record.get(key)
            if value is not None and math.isfinite(value):
                gauge.set(float(value), tags=tags)
