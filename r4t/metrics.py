"""Training metrics: a JSON-lines log that survives resumes, and gauges on the Ray dashboard
(ray.util.metrics, exported to Prometheus)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


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


class MetricsLog:
    """One JSON line per step in `path`, each record also set on `gauges`."""

    def __init__(self, path: Path, resume_step: int, gauges: DashboardGauges):
        """Keeps the lines of steps <= resume_step, the checkpoint's step (the rerun rewrites the later ones)."""
        self.path, self.gauges = path, gauges
        kept = []
        if path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)

    def write(self, record: dict, tags: dict[str, str]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.gauges.set(record, tags)
