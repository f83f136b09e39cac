"""SynthWorker: one Ray actor holding the frozen teacher and a RewardScorer; turns a shard of queries into
target rows and writes the shard. How the teacher samples and scores its fan-outs is its Generation's
(r4t.synth.teacher: the fan-out LM's completions, or the RLlib policy's rows with no text); every teacher's
fan-outs are kept, built into targets and written the same way (a fan-out without text has empty `subqueries`).

Targets (the paper): OAR rows are the embeddings of the items the fan-out retrieves, grounded to L distinct
items with the same rule every method uses at inference; WSCR rows are the embeddings of the sub-queries
(k of them, zero-padded to L). A fan-out that does not parse gives no target.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from r4t.config import SynthSettings
from r4t.grounding import ground_sets
from r4t.rewards.scorer import RewardScorer
from r4t.storage import publish
from r4t.synth.targets import write_shard


@dataclass(frozen=True)
class Shard:
    split: str
    index: int
    query_ids: list[str]
    queries: list[str]
    prompts: list[str]  # the LM teacher's prompt per query (unused by the RLlib teacher)
    listed: list[list[str]]  # the catalog items each prompt lists, which its completions may reference
    references: list[list[str] | None]  # reference item ids per query (WSCR), else None
    seed: int  # sampling seed: a pure function of (run seed, split, shard index), so a rerun repeats it
    path: str


@dataclass(frozen=True)
class Generation(ABC):
    """What a SynthWorker actor is given, one kind per teacher (r4t.synth.teacher): picklable; it loads the policy
    once on the actor, then scores shard after shard."""

    policy_path: str

    @abstractmethod
    def load(self):
        """The policy, loaded on the actor."""

    @abstractmethod
    def scored(self, policy, shard: Shard, query_emb: np.ndarray, references: list | None, scorer: RewardScorer,
               settings: SynthSettings) -> dict:
        """settings.samples fan-outs per query of the shard, grouped by query, scored: RewardScorer.score's terms
        with `malformed`, `subquery_emb` [n, k, d] and `subqueries` (one list per fan-out)."""


class SynthWorker:
    def __init__(self, generation: Generation, scorer_factory, settings: SynthSettings, identity: dict,
                 torch_threads: int = 1):
        torch.set_num_threads(torch_threads)
        self.gen, self.settings, self.identity = generation, settings, identity
        self.policy = generation.load()
        self.scorer = scorer_factory()

    def _targets(self, scored: dict, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """→ (targets [n, L, d], n_valid [n], item ids per target) for the well-formed samples `ok`."""
        L, ids = self.settings.rows, self.scorer.index.item_ids
        s_emb = scored["subquery_emb"][ok]
        if self.settings.task == "oar":
            items = ground_sets(self.scorer.index, s_emb, L).items
            return self.scorer.item_emb[items], np.full(len(ok), L), [[ids[r] for r in row] for row in items]
        k = s_emb.shape[1]
        target = np.zeros((len(ok), L, s_emb.shape[2]), np.float32)
        target[:, :k] = s_emb
        return target, np.full(len(ok), k), [[ids[r] for r in row] for row in scored["top1"][ok]]

    def run(self, shard: Shard) -> dict:
        """Generate, score, build and write one shard. → its statistics."""
        start, S = time.perf_counter(), self.settings.samples
        queries = [q for q in shard.queries for _ in range(S)]
        refs = [r for r in shard.references for _ in range(S)] if self.settings.task == "wscr" else None
        q_emb = self.scorer.encoder.encode(shard.queries)
        scored = self.gen.scored(self.policy, shard, q_emb, refs, self.scorer, self.settings)
        keep = self._keep(scored["reward"], scored["malformed"], len(shard.queries))
        target, n_valid, item_ids = self._targets(scored, keep) if len(keep) else (
            np.zeros((0, self.settings.rows, self.scorer.index.dim), np.float32), np.zeros(0, int), [])
        columns = {
            "query_id": [shard.query_ids[i // S] for i in keep], "query": [queries[i] for i in keep],
            "split": [shard.split] * len(keep), "sample": [i % S for i in keep],
            "query_emb": q_emb[keep // S] if len(keep) else np.zeros((0, q_emb.shape[1]), np.float32),
            "target": target, "n_valid": n_valid, "reward": scored["reward"][keep],
            **{name: scored[name][keep] for name in ("ground", "div", "align", "recall")},
            "subqueries": [scored["subqueries"][i] for i in keep], "item_ids": item_ids,
            "policy_hash": [self.identity["policy_hash"]] * len(keep)}
        write_shard(Path(shard.path), columns, self.settings.rows, self.scorer.index.dim, self.identity)
        publish(shard.path)
        return {"split": shard.split, "shard": shard.index, "rows": len(keep), "samples": len(queries),
                "malformed": int(scored["malformed"].sum()), "reward_sum": float(scored["reward"][keep].sum()),
                "seconds": time.perf_counter() - start}

    def _keep(self, reward: np.ndarray, malformed: np.ndarray, n_queries: int) -> np.ndarray:
        """Indices of the samples kept: well-formed ones, and of those the best `keep_top` per query (ties by
        sample index), in query order."""
        S, top = self.settings.samples, self.settings.keep_top
        kept = []
        for q in range(n_queries):
            idx = [i for i in range(q * S, (q + 1) * S) if not malformed[i]]
            if top:
                idx = sorted(sorted(idx, key=lambda i: -reward[i])[:top])
            kept += idx
        return np.array(kept, dtype=np.int64)
