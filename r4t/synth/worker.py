"""SynthWorker: one Ray actor holding the frozen policy and a RewardScorer; turns a shard of queries into
target rows and writes the shard. The policy is a fan-out LM (`Generation`: completions, parsed and encoded) or a
latent policy trained with RLlib (`LatentGeneration`: k rows in embedding space per sample, no text); both are
scored by the same RewardScorer and written in the same format (a latent sample's `subqueries` is empty).

Targets (the paper): OAR rows are the embeddings of the items the fan-out retrieves, grounded to L distinct
items with the same rule every method uses at inference; WSCR rows are the embeddings of the sub-queries
(k of them, zero-padded to L). A fan-out that does not parse gives no target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from r4t.config import SynthSettings
from r4t.grounding import ground_sets
from r4t.policy.backend import SamplingSettings
from r4t.policy.context import resolve
from r4t.policy.engines import make_backend
from r4t.storage import fetch, publish
from r4t.synth.targets import write_shard


@dataclass(frozen=True)
class Shard:
    split: str
    index: int
    query_ids: list[str]
    queries: list[str]
    prompts: list[str]  # the policy's prompt per query (an LM teacher's; unused by a latent one)
    listed: list[list[str]]  # the catalog items each prompt lists, which its completions may reference
    references: list[list[str] | None]  # reference item ids per query (WSCR), else None
    seed: int  # sampling seed: a pure function of (run seed, split, shard index), so a rerun repeats it
    path: str


@dataclass(frozen=True)
class Generation:
    backend: str
    policy_path: str
    policy_hash: str
    device: str
    max_new_tokens: int
    k: int

    def build(self):
        return make_backend(self.backend, str(fetch(self.policy_path)), self.device)


@dataclass(frozen=True)
class LatentGeneration:
    """A latent fan-out policy exported by `python -m r4t.jobs.rllib` (<run>/policy/)."""

    policy_path: str
    policy_hash: str
    k: int

    def build(self):
        from r4t.rl.latent import LatentPolicy
        return LatentPolicy.load(fetch(self.policy_path))  # the driver checked it against the catalog and reward.k


class SynthWorker:
    def __init__(self, generation: Generation | LatentGeneration, scorer_factory, settings: SynthSettings,
                 identity: dict, torch_threads: int = 1):
        torch.set_num_threads(torch_threads)
        self.gen, self.settings, self.identity = generation, settings, identity
        self.backend = generation.build()
        self.scorer = scorer_factory()

    def _sample(self, shard: Shard) -> list[str]:
        """settings.samples completions per query, grouped by query."""
        s, out = self.settings, []
        for j, start in enumerate(range(0, len(shard.queries), s.prompts_per_call)):
            prompts, listed = (shard.prompts[start:start + s.prompts_per_call],
                               shard.listed[start:start + s.prompts_per_call])
            sampling = SamplingSettings(n=s.samples, temperature=s.temperature, top_p=s.top_p,
                                        max_new_tokens=self.gen.max_new_tokens, seed=shard.seed * 1000 + j,
                                        logprobs=False)
            out += [resolve(r.text, listed[r.prompt_index]) for r in self.backend.generate(prompts, sampling)]
        return out

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

    def _sample_latent(self, q_emb: np.ndarray, seed: int, refs: list | None) -> dict:
        """settings.samples draws of the latent policy's Gaussian per query (grouped by query), scored."""
        q = np.repeat(q_emb, self.settings.samples, axis=0)
        rows = self.backend.rows(q, sample=True, temperature=self.settings.temperature, seed=seed)
        scored = self.scorer.score_embeddings(q, rows, refs)
        return {**scored, "malformed": np.zeros(len(q), bool), "subquery_emb": rows, "subqueries": [[]] * len(q)}

    def run(self, shard: Shard) -> dict:
        """Generate, score, build and write one shard. → its statistics."""
        start, S = time.perf_counter(), self.settings.samples
        queries = [q for q in shard.queries for _ in range(S)]
        refs = [r for r in shard.references for _ in range(S)] if self.settings.task == "wscr" else None
        q_emb = self.scorer.encoder.encode(shard.queries)
        if isinstance(self.gen, LatentGeneration):
            scored = self._sample_latent(q_emb, shard.seed, refs)
        else:
            scored = self.scorer.score(queries, self._sample(shard), refs, embeddings=True)
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
            "policy_hash": [self.gen.policy_hash] * len(keep)}
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
