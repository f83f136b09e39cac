"""The baseline table: no fan-out vs a category-diverse heuristic, on a split of a prepared catalog.

OAR queries give the set metrics (ground, Vendi, align, composite, category share) of the K returned items;
WSCR queries give Recall@5K / Hit@5K of the 5K items each method retrieves (no fan-out: the 5K nearest; the
heuristic: its diverse selection with at most m per category). Neither baseline generates anything but the
query itself, so both get the groundedness of the query embedding.
"""

from __future__ import annotations

import numpy as np

from r4t.catalog import PreparedCatalog
from r4t.config import BaselineEvalConfig, RewardConfig
from r4t.embed import TextEncoder
from r4t.eval.stats import mean_ci
from r4t.retrieve.baselines import category_diverse, no_fanout
from r4t.rewards.set_metrics import returned_set_metrics
from r4t.rewards.terms import groundedness

METHODS = ("no fan-out", "category-diverse")
# (column title, task whose queries it is averaged over, metric key)
COLUMNS = (("Recall@5K", "wscr", "recall"), ("Hit@5K", "wscr", "hit"), ("Vendi", "oar", "div_raw"),
           ("ground", "oar", "ground"), ("align", "oar", "align"), ("composite", "oar", "composite"),
           ("cat. share", "oar", "category_share"))


def _method_sets(method: str, cat: PreparedCatalog, q: np.ndarray, n: int, per_category: int,
                 cfg: BaselineEvalConfig) -> np.ndarray:
    if method == "no fan-out":
        return no_fanout(cat.index, q, n)
    return category_diverse(cat.index, q, cat.category_codes, n, per_category, cfg.candidates)


def evaluate_baselines(cat: PreparedCatalog, encoder: TextEncoder, cfg: BaselineEvalConfig,
                       reward: RewardConfig) -> dict:
    """→ {"queries": {task: n}, "methods": {method: {metric: {"mean", "lo", "hi"}}}}."""
    K, m = cfg.k, reward.wscr_m
    codes = cat.category_codes
    queries = {}
    for task in ("oar", "wscr"):
        table = cat.queries(task, cfg.split)
        if cfg.max_queries:
            table = table.slice(0, cfg.max_queries)
        queries[task] = table
    emb = {task: encoder.encode(t.column("text").to_pylist()) for task, t in queries.items()}
    row_of = {item_id: r for r, item_id in enumerate(cat.index.item_ids)}
    refs = cat.dataset.reference_sets()
    reference = [{row_of[i] for i in refs[s]} for s in queries["wscr"].column("set_id").to_pylist()]
    results = {}
    for method in METHODS:
        per_task = {}
        for task, q in emb.items():
            if len(q) == 0:
                continue
            ground = groundedness(q[:, None], cat.item_emb[cat.index.search(q, 1)[1]])
            rows = _method_sets(method, cat, q, K, 1, cfg)
            retrieved = list(_method_sets(method, cat, q, m * K, m, cfg)) if task == "wscr" else None
            per_task[task] = returned_set_metrics(q, rows, cat.item_emb, codes, ground, reward, retrieved,
                                                  reference if task == "wscr" else None)
        results[method] = {title: dict(zip(("mean", "lo", "hi"), mean_ci(per_task[task][key])))
                           for title, task, key in COLUMNS if task in per_task}
    return {"split": cfg.split, "k": K, "queries": {t: len(q) for t, q in emb.items()}, "methods": results}


def format_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per (dataset, method), mean [95% CI] per column."""
    titles = [c[0] for c in COLUMNS]
    lines = ["| dataset | method | " + " | ".join(titles) + " |", "|---|---|" + "---|" * len(titles)]
    for name, res in results.items():
        for method, metrics in res["methods"].items():
            cells = []
            for title in titles:
                v = metrics.get(title)
                cells.append("-" if v is None or not np.isfinite(v["mean"])
                             else f"{v['mean']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}]")
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
