"""Per-step RL metrics: one JSON line per step in <out>/metrics.jsonl, and gauges on the Ray dashboard."""

from __future__ import annotations

import numpy as np

from r4t.metrics import DashboardGauges

TERMS = ("reward", "composite", "ground", "div", "div_raw", "align", "recall", "hit")
DASHBOARD_KEYS = ("reward_mean", "composite_mean", "ground_mean", "div_mean", "align_mean", "recall_mean",
                  "malformed_frac", "kl_reverse", "kl_forward", "entropy", "gen_tokens_per_s",
                  "scored_fanouts_per_s", "step_seconds")
GAUGES = DashboardGauges("r4t_rl", DASHBOARD_KEYS, ("dataset", "run"), "RL per step")


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
