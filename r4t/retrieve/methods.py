"""Fan-out methods behind one interface: query texts and embeddings in, K grounded catalog items per query out,
with what the method generated on the way (sub-query or denoiser-row embeddings), so every method is grounded
and scored the same way and differences come from the method alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from r4t.config import RewardConfig, SamplerConfig
from r4t.diffusion.denoiser import EDMDenoiser
from r4t.diffusion.samplers import generate_sets
from r4t.embed import TextEncoder
from r4t.errors import DataError
from r4t.grounding import ground_sets
from r4t.index import ItemIndex
from r4t.policy.backend import SamplingSettings
from r4t.policy.hf_backend import TransformersBackend
from r4t.policy.prompt import build_prompt
from r4t.rewards.parse import usable_subqueries
from r4t.rewards.set_metrics import set_quality
from r4t.rewards.terms import groundedness


@dataclass
class FanoutResult:
    items: np.ndarray  # [B, K] catalog rows, distinct per set
    ground: np.ndarray  # [B] groundedness of what the method generated
    neighbours: list[np.ndarray]  # per set [n, >= m]: each generated row's nearest items (WSCR: union of top-m)
    subqueries: list[list[str]] | None = None  # LM methods: the sub-queries used


class FanoutMethod(Protocol):
    name: str

    def retrieve(self, queries: list[str], query_emb: np.ndarray, k: int, m: int) -> FanoutResult:
        """K items per query; `m`: depth of each generated row's list kept for WSCR."""


def _ground_rows(index: ItemIndex, item_emb: np.ndarray, rows: np.ndarray, k: int, m: int):
    """rows [B, n, d] → (items [B, K], groundedness [B], neighbours [B, n, depth])."""
    g = ground_sets(index, rows, k, m)
    return g.items, groundedness(rows, item_emb[g.neighbours[:, :, 0]]), g.neighbours


class NoFanout:
    """The K items nearest to the query; for WSCR its m*K nearest (the same retrieval budget as a fan-out)."""

    name = "no fan-out"

    def __init__(self, index: ItemIndex, item_emb: np.ndarray):
        self.index, self.item_emb = index, item_emb

    def retrieve(self, queries, query_emb, k, m) -> FanoutResult:
        _, rows = self.index.search(query_emb, m * k)
        ground = groundedness(query_emb[:, None], self.item_emb[rows[:, :1]])
        return FanoutResult(rows[:, :k], ground, [r[None] for r in rows])


class LMFanout:
    """A fan-out LM (the warm start, or R4T-FOLM): `samples` fan-outs per query, each one's usable lines embedded
    and grounded; with samples > 1 the set with the best composite is kept (best-of-N, the paper's baseline).
    A fan-out with no usable line falls back to the query itself."""

    def __init__(self, name: str, policy_path: str, encoder: TextEncoder, index: ItemIndex, item_emb: np.ndarray,
                 template: str, k: int, max_new_tokens: int, temperature: float = 1.0, seed: int = 0,
                 batch_size: int = 64, samples: int = 1, reward: RewardConfig | None = None):
        self.name, self.encoder, self.index, self.item_emb = name, encoder, index, item_emb
        self.backend = TransformersBackend(policy_path)
        self.template, self.k, self.batch_size, self.samples = template, k, batch_size, samples
        self.reward = reward or RewardConfig(k=k)
        self.sampling = SamplingSettings(n=samples, temperature=temperature, max_new_tokens=max_new_tokens,
                                         seed=seed, logprobs=False)

    def generate(self, queries: list[str]) -> list[list[str]]:
        """→ [len(queries) * samples] sub-query lists, the samples of each query together."""
        out = []
        for start in range(0, len(queries), self.batch_size):
            part = queries[start:start + self.batch_size]
            rollouts = self.backend.generate([build_prompt(q, self.template, self.k) for q in part], self.sampling)
            out += [usable_subqueries(r.text, self.k) or [part[r.prompt_index]] for r in rollouts]
        return out

    def _ground(self, subqueries: list[list[str]], k: int, m: int):
        """Each fan-out's sub-queries → (items [n, K], groundedness [n], neighbours per fan-out)."""
        emb = self.encoder.encode([s for subs in subqueries for s in subs])
        offsets = np.cumsum([0] + [len(s) for s in subqueries])
        items = np.empty((len(subqueries), k), np.int64)
        ground = np.empty(len(subqueries))
        neighbours: list[np.ndarray] = [None] * len(subqueries)
        by_count: dict[int, list[int]] = {}
        for b, subs in enumerate(subqueries):  # one batched grounding per fan-out size
            by_count.setdefault(len(subs), []).append(b)
        for n, sets in by_count.items():
            rows = np.stack([emb[offsets[b]:offsets[b] + n] for b in sets])
            it, gr, nb = _ground_rows(self.index, self.item_emb, rows, k, m)
            items[sets], ground[sets] = it, gr
            for j, b in enumerate(sets):
                neighbours[b] = nb[j]
        return items, ground, neighbours

    def retrieve(self, queries, query_emb, k, m) -> FanoutResult:
        subqueries = self.generate(queries)
        items, ground, neighbours = self._ground(subqueries, k, m)
        N = self.samples
        if N == 1:
            best = np.arange(len(queries))
        else:
            owner = np.repeat(np.arange(len(queries)), N)
            score = set_quality(query_emb[owner], items, self.item_emb, ground, self.reward)["composite"]
            best = np.arange(len(queries)) * N + score.reshape(len(queries), N).argmax(axis=1)
        return FanoutResult(items[best], ground[best], [neighbours[i] for i in best], [subqueries[i] for i in best])


class MMR:
    """Maximal marginal relevance (Carbonell and Goldstein, 1998), the classical diversifier: from the query's
    `candidates` nearest items, greedily add argmax_i lam * cos(q, i) - (1 - lam) * max_{j in S} cos(i, j)."""

    name = "MMR"

    def __init__(self, index: ItemIndex, item_emb: np.ndarray, lam: float = 0.5, candidates: int = 100):
        self.index, self.item_emb, self.lam, self.candidates = index, item_emb, lam, candidates

    def select(self, query_emb: np.ndarray, n: int) -> np.ndarray:
        """[B, d] → rows [B, n]."""
        sims, rows = self.index.search(query_emb, max(self.candidates, n))
        out = np.empty((len(rows), n), np.int64)
        for b in range(len(rows)):
            cand, rel = rows[b][rows[b] >= 0], sims[b][rows[b] >= 0].astype(np.float64)
            if len(cand) < n:
                raise DataError(f"MMR: {len(cand)} candidates for a set of {n}; raise the candidate count or the "
                                "index search depth (nprobe / ef_search)")
            emb = self.item_emb[cand].astype(np.float64)
            redundancy = np.full(len(cand), -np.inf)
            free = np.ones(len(cand), bool)
            for j in range(n):
                score = self.lam * rel - (1 - self.lam) * np.where(np.isfinite(redundancy), redundancy, 0.0)
                pick = int(np.argmax(np.where(free, score, -np.inf)))
                out[b, j], free[pick] = cand[pick], False
                redundancy = np.maximum(redundancy, emb @ emb[pick])
        return out

    def retrieve(self, queries, query_emb, k, m) -> FanoutResult:
        rows = self.select(query_emb, m * k)  # WSCR: the same retrieval budget as a fan-out
        ground = groundedness(query_emb[:, None], self.item_emb[self.index.search(query_emb, 1)[1]])
        return FanoutResult(rows[:, :k], ground, [r[None] for r in rows])


class DiffusionFanout:
    """R4T-Diffusion: the denoiser samples L rows for the query in one sampling pass; the rows are grounded."""

    name = "R4T-Diffusion"

    def __init__(self, model: EDMDenoiser, sampler: SamplerConfig, index: ItemIndex, item_emb: np.ndarray,
                 seed: int = 0):
        self.model, self.sampler, self.index, self.item_emb, self.seed = model, sampler, index, item_emb, seed

    def generate(self, query_emb: np.ndarray) -> np.ndarray:
        g = torch.Generator(device=next(self.model.parameters()).device).manual_seed(self.seed)
        return generate_sets(self.model, torch.from_numpy(query_emb), self.sampler, generator=g).cpu().numpy()

    def retrieve(self, queries, query_emb, k, m) -> FanoutResult:
        items, ground, nb = _ground_rows(self.index, self.item_emb, self.generate(query_emb), k, m)
        return FanoutResult(items, ground, list(nb))
