"""Held-out evaluation of fan-out policies: the reward and each term on OAR queries, WSCR Recall/Hit@5K on
reference sets, and the metric no policy trains on (distinct coarse categories or artists among the top-1
items), each as a mean with a 95% bootstrap interval over queries."""

from __future__ import annotations

import numpy as np

from r4t.catalog import PreparedCatalog
from r4t.config import PolicyConfig, PolicyEvalConfig, RewardConfig
from r4t.policy.backend import SamplingSettings
from r4t.policy.context import fanout_prompts, prompt_context, resolve
from r4t.policy.engines import make_backend
from r4t.rewards.scorer import RewardScorer
from r4t.rewards.set_metrics import category_share
from r4t.stats import mean_ci

OAR_METRICS = ("reward", "composite_all", "composite", "ground", "div", "div_raw", "align", "malformed",
               "category_share")
WSCR_METRICS = ("recall", "hit")


def _queries(cat: PreparedCatalog, task: str, cfg: PolicyEvalConfig) -> tuple[list[str], list[str | None]]:
    table = cat.queries(task, cfg.split)
    if cfg.max_queries:
        table = table.slice(0, cfg.max_queries)
    return table.column("text").to_pylist(), table.column("set_id").to_pylist()


def sample_fanouts(policy_path: str, prompts: list[str], cfg: PolicyEvalConfig, policy: PolicyConfig,
                   seed: int) -> list[list[str]]:
    """[Q] prompts → [Q] lists of cfg.samples completion texts, on the engine the policy is configured with."""
    backend = make_backend(policy.backend, policy_path, policy.device)
    settings = SamplingSettings(n=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p,
                                max_new_tokens=policy.max_new_tokens, seed=seed)
    out: list[list[str]] = [[] for _ in prompts]
    for start in range(0, len(prompts), 16):
        for r in backend.generate(prompts[start:start + 16], settings):
            out[start + r.prompt_index].append(r.text)
    return out


def _per_query(values: np.ndarray, n_queries: int, samples: int) -> np.ndarray:
    """Mean over a query's samples that have the metric; NaN for a query where none has it."""
    v = values.reshape(n_queries, samples)
    count = np.isfinite(v).sum(axis=1)
    return np.where(count > 0, np.nansum(v, axis=1) / np.maximum(count, 1), np.nan)


def evaluate_policy(policy_path: str, cat: PreparedCatalog, scorer: RewardScorer, cfg: PolicyEvalConfig,
                    reward: RewardConfig, policy: PolicyConfig, seed: int) -> dict:
    """→ {"oar": {metric: {mean, lo, hi}}, "wscr": {...}, "examples": [{query, fanout}], "queries": {...}}."""
    result: dict = {"queries": {}}
    refs = cat.dataset.reference_sets()
    for task in ("oar", "wscr"):
        queries, set_ids = _queries(cat, task, cfg)
        result["queries"][task] = len(queries)
        if not queries:
            continue
        prompts, listed = fanout_prompts(queries, scorer.encoder.encode(queries), policy.template, reward.k,
                                         prompt_context(cat, policy))
        fanouts = [[resolve(c, lines) for c in f] for f, lines in
                   zip(sample_fanouts(policy_path, prompts, cfg, policy, seed), listed)]
        flat_q = [q for q, f in zip(queries, fanouts) for _ in f]
        flat_f = [c for f in fanouts for c in f]
        if task == "oar":
            s = scorer.score(flat_q, flat_f)
            ok = ~s["malformed"]
            share = np.full(len(flat_f), np.nan)
            if ok.any():
                share[ok] = category_share(s["top1"][ok], cat.category_codes)
            # composite_all: the quality of what the user gets; a fan-out that does not parse retrieves nothing (0).
            s = {**s, "malformed": s["malformed"].astype(float), "category_share": share,
                 "composite_all": np.where(s["malformed"], 0.0, s["composite"])}
            result["oar"] = {m: dict(zip(("mean", "lo", "hi"), mean_ci(_per_query(np.asarray(s[m], float),
                             len(queries), cfg.samples)))) for m in OAR_METRICS}
            result["examples"] = [{"query": q, "fanout": f[0]} for q, f in zip(queries[:5], fanouts[:5])]
        else:
            s = scorer.score(flat_q, flat_f, [refs[i] for i, f in zip(set_ids, fanouts) for _ in f])
            # A fan-out that does not parse retrieves nothing: it counts as recall 0, not as a missing value.
            s = {m: np.where(s["malformed"], 0.0, np.asarray(s[m], float)) for m in WSCR_METRICS}
            result["wscr"] = {m: dict(zip(("mean", "lo", "hi"), mean_ci(_per_query(s[m], len(queries),
                              cfg.samples)))) for m in WSCR_METRICS}
    return result
