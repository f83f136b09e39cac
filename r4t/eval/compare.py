"""Held-out comparison of fan-out methods on equal terms: each returns K grounded items per query, and the
returned sets are scored the same way, in two views:
- the judge's view (r4t.eval.judge): an encoder no stage trains or rewards with scores only the returned items;
- the reward's view: the OAR terms and composite under the training encoder, raw Vendi, category share.
Query sets: the split's OAR intents ("oar"), the titles of its human-curated sets ("wscr": Recall@5K / Hit@5K
over the union of each generated row's top-m items, the same m·K budget for every method), and for the built-in
datasets the hand-written out-of-template intents ("handwritten", r4t.data.handwritten), which no stage trains
or selects models on. Means carry 95% bootstrap intervals. Latency is the fan-out alone (generation + grounding,
sub-query encoding included), median of repeats after a warm-up.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from r4t.catalog import PreparedCatalog
from r4t.config import BaselineEvalConfig, RetrievalEvalConfig, RewardConfig
from r4t.data.handwritten import handwritten_queries
from r4t.embed import TextEncoder
from r4t.eval.judge import JUDGE_METRICS, Judge
from r4t.eval.production_music import library_share
from r4t.retrieve.methods import FanoutMethod, GeneratingMethod
from r4t.rewards.set_metrics import returned_set_metrics
from r4t.stats import mean_ci

OAR_METRICS = ("composite", "ground", "div", "div_raw", "align", "category_share")
WSCR_METRICS = ("recall", "hit", "div_raw")
TEACHER = "R4T-FOLM"  # the policy R4T-Diffusion distils (its synthesized targets)
JUDGED_TASKS = ("oar", "handwritten")  # intents without a reference set: the judge scores what came back
LATENCY_PAIR = ("R4T-FOLM", "R4T-Diffusion")  # the paper's comparison: timed at eval.pair_latency_batches too
MAX_REPEATS = 20  # fan-out latency: the most runs a fast method repeats for eval.latency_seconds


def eval_queries(cat: PreparedCatalog, cfg: RetrievalEvalConfig | BaselineEvalConfig, encoder: TextEncoder,
                 handwritten: bool = False) -> dict:
    """task → (texts, embeddings, reference rows or None); with `handwritten` (a built-in dataset), also its
    hand-written intents."""
    refs, row_of = cat.dataset.reference_sets(), {i: r for r, i in enumerate(cat.index.item_ids)}
    out = {}
    for task in ("oar", "wscr"):
        table = cat.queries(task, cfg.split)
        if cfg.max_queries:
            table = table.slice(0, cfg.max_queries)
        texts = table.column("text").to_pylist()
        if not texts:
            continue
        reference = ([{row_of[i] for i in refs[s]} for s in table.column("set_id").to_pylist()]
                     if task == "wscr" else None)
        out[task] = (texts, encoder.encode(texts), reference)
    texts = handwritten_queries(cat.name) if handwritten else []
    if texts:
        out["handwritten"] = (texts, encoder.encode(texts), None)
    return out


def evaluate_method(method: FanoutMethod, cat: PreparedCatalog, queries: dict,
                    cfg: RetrievalEvalConfig | BaselineEvalConfig,
                    reward: RewardConfig, examples: int = 3, judge: Judge | None = None,
                    library: np.ndarray | None = None) -> dict:
    """→ {task: {metric: {mean, lo, hi}}, "examples": {task: [{query, items, subqueries}]}} for the tasks of
    `queries`; on the judged tasks, the judge's metrics when a judge is given and the share of production-music
    tracks when `library` ([N] bool per catalog row, r4t.eval.production_music) is; "items": {task: [B, K] rows}."""
    result: dict = {"examples": {}, "items": {}}
    item_texts = cat.texts
    for task, (texts, emb, reference) in queries.items():
        res = method.retrieve(texts, emb, cfg.k, reward.wscr_m)
        retrieved = res.retrieved if task == "wscr" else None
        metrics = returned_set_metrics(emb, res.items, cat.item_emb, cat.category_codes, res.ground, reward,
                                       retrieved, reference)
        names = WSCR_METRICS if task == "wscr" else OAR_METRICS
        if judge is not None and task in JUDGED_TASKS:
            metrics.update(judge.score(texts, res.items))
            names = (*names, *JUDGE_METRICS)
        if library is not None and task in JUDGED_TASKS:
            metrics["library_share"] = library_share(res.items, library)
            names = (*names, "library_share")
        result[task] = {m: dict(zip(("mean", "lo", "hi"), mean_ci(metrics[m]))) for m in names}
        result["items"][task] = res.items
        if task in JUDGED_TASKS:
            result["examples"][task] = [
                {"query": texts[i], "items": [item_texts[r] for r in res.items[i]],
                 **({"subqueries": res.subqueries[i]} if res.subqueries else {})} for i in range(min(examples,
                                                                                               len(texts)))]
    return result


def fanout_latency(method: FanoutMethod, texts: list[str], emb: np.ndarray, batch: int, k: int, m: int,
                   repeats: int, seconds: float = 0.0) -> tuple[float, float | None]:
    """Median seconds to retrieve K items for one batch of `batch` queries (cycling through the given ones), after
    a warm-up, and for a method that generates (GeneratingMethod) the median of its fan-out alone, timed in the
    same runs (None for the others). `repeats` runs, and more (up to MAX_REPEATS) while they add up to less than
    `seconds`, so that a fast method's median is not one run's noise while a slow one still runs `repeats` times."""
    idx = np.arange(batch) % len(texts)
    q_texts, q_emb = [texts[i] for i in idx], emb[idx]
    method.retrieve(q_texts[: min(batch, 8)], q_emb[: min(batch, 8)], k, m)  # warm-up: lazy init, caches
    generating = isinstance(method, GeneratingMethod)
    totals, fan_outs = [], []
    while len(totals) < repeats or (sum(totals) < seconds and len(totals) < MAX_REPEATS):
        start = time.perf_counter()
        if generating:
            generated = method.fan_out(q_texts, q_emb)
            fan_outs.append(time.perf_counter() - start)
            method.ground(generated, q_emb, k, m)
        else:
            method.retrieve(q_texts, q_emb, k, m)
        totals.append(time.perf_counter() - start)
    return float(np.median(totals)), float(np.median(fan_outs)) if generating else None


def compare_methods(methods: list[FanoutMethod], cat: PreparedCatalog, queries: dict,
                    cfg: RetrievalEvalConfig | BaselineEvalConfig, reward: RewardConfig,
                    latency_batches: list[int] = (), latency_repeats: int = 1, progress: bool = True,
                    judge: Judge | None = None, library: np.ndarray | None = None,
                    latency_seconds: float = 0.0, pair_latency_batches: list[int] = ()) -> dict:
    """Every method on the same queries: quality, then latency per batch size on the first task's queries
    (`fanout_latency`): at `latency_batches` for every method, at `pair_latency_batches` for R4T-FOLM and
    R4T-Diffusion only. → {"queries": {task: n}, "methods": {name: {"oar", "wscr", "examples", "latency_s",
    "fanout_s"}}}: retrieval in all and, for the methods that generate, the fan-out alone, per batch size."""
    texts, emb, _ = next(iter(queries.values()))
    per_method = {}
    batches = {m.name: [*latency_batches, *(pair_latency_batches if m.name in LATENCY_PAIR else ())]
               for m in methods}
    with tqdm(total=sum(1 + len(b) for b in batches.values()), desc=f"eval {cat.name}", unit="step",
              disable=not progress) as bar:
        for method in methods:
            bar.set_postfix_str(f"{method.name}: quality")
            res = evaluate_method(method, cat, queries, cfg, reward, judge=judge, library=library)
            bar.update()
            res["latency_s"], res["fanout_s"] = {}, {}
            for b in batches[method.name]:
                bar.set_postfix_str(f"{method.name}: latency at batch {b}")
                total, fan_out = fanout_latency(method, texts, emb, b, cfg.k, reward.wscr_m, latency_repeats,
                                                latency_seconds)
                res["latency_s"][str(b)] = total
                if fan_out is not None:
                    res["fanout_s"][str(b)] = fan_out
                bar.update()
            per_method[method.name] = res
    teacher_overlap(per_method)
    return {"queries": {t: len(q[0]) for t, q in queries.items()}, "methods": per_method}


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, |A ∩ B| / |A ∪ B| of two [B, K] arrays of item rows."""
    return np.array([len(set(x) & set(y)) / max(len(set(x) | set(y)), 1) for x, y in zip(a.tolist(), b.tolist())])


def teacher_overlap(per_method: dict, teacher: str = TEACHER) -> None:
    """Teacher fidelity: on the judged tasks, each method's `teacher_jaccard` (item overlap of its set with the
    teacher's for the same query). Drops the per-method item arrays."""
    items = {name: res.pop("items") for name, res in per_method.items()}
    if teacher not in items:
        return
    for name, res in per_method.items():
        for task in JUDGED_TASKS:
            if name != teacher and task in items[name] and task in items[teacher]:
                res[task]["teacher_jaccard"] = dict(zip(("mean", "lo", "hi"),
                                                        mean_ci(jaccard(items[name][task], items[teacher][task]))))
