"""Per-step RL metrics: one JSON line per step in <out>/metrics.jsonl, and gauges on the Ray dashboard."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from r4t.metrics import DashboardGauges

TERMS = ("reward", "composite", "ground", "div", "div_raw", "align", "recall", "hit")
DASHBOARD_KEYS = ("reward_mean", "composite_mean", "ground_mean", "div_mean", "align_mean", "recall_mean",
                  "malformed_frac", "kl_reverse", "kl_forward", "entropy", "gen_tokens_per_s",
                  "scored_fanouts_per_s", "step_seconds")


def reward_stats(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean and std of the reward and each term over the fan-outs that have it, and the malformed fraction."""
    out = {}
    for term in TERMS:
        v = np.asarray(scores[term], float)
        v = v[np.isfinite(v)]
        if len(v):
            out[f"{term}_mean"], out[f"{term}_std"] = float(v.mean()), float(v.std())
    out["malformed_frac"] = float(np.mean(scores["malformed"]))
    return out


class MetricsLog:
    def __init__(self, path: Path, resume_step: int):
        """Keeps the lines of steps <= resume_step, the checkpoint's step (the rerun rewrites the later ones)."""
        self.path = path
        kept = []
        if path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
        self._gauges = DashboardGauges("r4t_rl", DASHBOARD_KEYS, ("dataset", "run"), "RL per step")

    def write(self, record: dict, tags: dict[str, str]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self._gauges.set(record, tags)
