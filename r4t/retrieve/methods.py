"""Fan-out methods behind one interface: query texts and embeddings in, K grounded catalog items per query out,
with what the method generated on the way (sub-query or denoiser-row embeddings), so every method is grounded
and scored the same way and differences come from the method alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from r4t.config import SamplerConfig
from r4t.diffusion.denoiser import EDMDenoiser
from r4t.diffusion.samplers import generate_sets
from r4t.embed import TextEncoder
from r4t.grounding import ground_sets
from r4t.index import ItemIndex
from r4t.policy.backend import SamplingSettings
from r4t.policy.hf_backend import TransformersBackend
from r4t.policy.prompt import build_prompt
from r4t.rewards.parse import usable_subqueries
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
    """A fan-out LM (warm start or R4T-FOLM): one sampled fan-out per query, its usable lines embedded and
    grounded. A fan-out with no usable line falls back to the query itself."""

    def __init__(self, name: str, policy_path: str, encoder: TextEncoder, index: ItemIndex, item_emb: np.ndarray,
                 template: str, k: int, max_new_tokens: int, temperature: float = 1.0, seed: int = 0,
                 batch_size: int = 64):
        self.name, self.encoder, self.index, self.item_emb = name, encoder, index, item_emb
        self.backend = TransformersBackend(policy_path)
        self.template, self.k, self.batch_size = template, k, batch_size
        self.sampling = SamplingSettings(n=1, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                                         logprobs=False)

    def generate(self, queries: list[str]) -> list[list[str]]:
        out = []
        for start in range(0, len(queries), self.batch_size):
            part = queries[start:start + self.batch_size]
            texts = [r.text for r in self.backend.generate([build_prompt(q, self.template, self.k) for q in part],
                                                          self.sampling)]
            out += [usable_subqueries(t, self.k) or [q] for t, q in zip(texts, part)]
        return out

    def retrieve(self, queries, query_emb, k, m) -> FanoutResult:
        subqueries = self.generate(queries)
        flat = [s for subs in subqueries for s in subs]
        emb = self.encoder.encode(flat)
        offsets = np.cumsum([0] + [len(s) for s in subqueries])
        items = np.empty((len(queries), k), np.int64)
        ground = np.empty(len(queries))
        neighbours: list[np.ndarray] = [None] * len(queries)
        by_count: dict[int, list[int]] = {}
        for b, subs in enumerate(subqueries):  # one batched grounding per fan-out size
            by_count.setdefault(len(subs), []).append(b)
        for n, sets in by_count.items():
            rows = np.stack([emb[offsets[b]:offsets[b] + n] for b in sets])
            it, gr, nb = _ground_rows(self.index, self.item_emb, rows, k, m)
            items[sets], ground[sets] = it, gr
            for j, b in enumerate(sets):
                neighbours[b] = nb[j]
        return FanoutResult(items, ground, neighbours, subqueries)


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
