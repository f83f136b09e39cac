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
from r4t.diffusion.denoiser import EDMDenoiser, context_tensors
from r4t.diffusion.samplers import generate_sets
from r4t.embed import TextEncoder
from r4t.errors import DataError
from r4t.grounding import GroundedSets, distinct_positions, ground_sets, item_groups, search_distinct
from r4t.index import ItemIndex
from r4t.policy.backend import SamplingSettings
from r4t.policy.context import PromptContext, fanout_prompts, resolve
from r4t.policy.engines import make_backend
from r4t.rewards.parse import usable_subqueries
from r4t.rewards.set_metrics import set_quality
from r4t.rewards.terms import groundedness


@dataclass
class FanoutResult:
    items: np.ndarray  # [B, K] catalog rows, distinct texts per set (r4t.grounding); most confident first
    #                    (MMR, category-diverse: in the order picked)
    scores: np.ndarray  # [B, K] cosine of each item to the generated row (or the query) that claimed it
    ground: np.ndarray  # [B] groundedness of what the method generated
    generated: list[np.ndarray]  # per set [n, d]: the sub-query or denoiser-row embeddings (the query if none)
    retrieved: list[np.ndarray]  # per set: the items it retrieves for WSCR (each generated row's top m, by id)
    subqueries: list[list[str]] | None = None  # LM methods: the sub-queries used

    def take(self, rows: np.ndarray) -> "FanoutResult":
        """The sets at positions `rows`."""
        return FanoutResult(self.items[rows], self.scores[rows], self.ground[rows],
                            [self.generated[i] for i in rows], [self.retrieved[i] for i in rows],
                            None if self.subqueries is None else [self.subqueries[i] for i in rows])


class FanoutMethod(Protocol):
    name: str

    def retrieve(self, queries: list[str], query_emb: np.ndarray, k: int, m: int) -> FanoutResult:
        """K items per query; `m`: items each generated row retrieves for WSCR coverage."""


class GeneratingMethod:
    """A method that generates something for each query before the catalog is searched (the LM methods'
    sub-query texts, the denoiser's or the RLlib policy's rows): `retrieve` is `ground(fan_out(...))`, so the
    fan-out can be timed apart from the grounding (r4t.eval.compare.fanout_latency). Subclasses define
    `fan_out(queries, query_emb)` (no catalog search) and `ground(generated, query_emb, k, m)` → FanoutResult."""

    def retrieve(self, queries: list[str], query_emb: np.ndarray, k: int, m: int) -> FanoutResult:
        return self.ground(self.fan_out(queries, query_emb), query_emb, k, m)


class RowGeneratingMethod(GeneratingMethod):
    """Generates rows in the encoder's space [B, n, d], grounded by the shared rule; needs `index`, `item_emb`."""

    def ground(self, rows: np.ndarray, query_emb: np.ndarray, k: int, m: int) -> FanoutResult:
        return grounded_result(self.index, self.item_emb, rows, k, m)


def wscr_retrievals(neighbours: np.ndarray, m: int, budget: int) -> np.ndarray:
    """One set's rows' nearest lists [n, >= m] → the distinct items of their top m, rank by rank across rows (every
    row's nearest first), at most `budget`: K·m for every method, however many rows it generated."""
    ranked = neighbours[:, :m].T.ravel()
    _, first = np.unique(ranked, return_index=True)
    return ranked[np.sort(first)][:budget]


def grounded_result(index: ItemIndex, item_emb: np.ndarray, rows: np.ndarray, k: int, m: int) -> FanoutResult:
    """Generated rows [B, n, d] → K distinct items per set (the shared grounding rule), scored; groundedness on
    the rows as generated."""
    g: GroundedSets = ground_sets(index, rows, k, m)
    ground = groundedness(rows, item_emb[g.neighbours[:, :, 0]])
    return FanoutResult(g.items, g.scores, ground, list(rows), [wscr_retrievals(nb, m, k * m) for nb in g.neighbours])


def _query_result(index: ItemIndex, item_emb: np.ndarray, query_emb: np.ndarray, items: np.ndarray,
                  retrieved: np.ndarray) -> FanoutResult:
    """For methods that generate nothing but the query: scores are cos(query, item), ground is the query's."""
    scores = np.einsum("bkd,bd->bk", item_emb[items], query_emb).astype(np.float32)
    nearest = item_emb[index.search(query_emb, 1)[1]]
    return FanoutResult(items, scores, groundedness(query_emb[:, None], nearest), list(query_emb[:, None]),
                        list(retrieved))


class NoFanout:
    """The K items nearest to the query, one per text (the query grounded as the only generated row); for WSCR
    its m*K nearest by id (the same retrieval budget as a fan-out)."""

    name = "no fan-out"

    def __init__(self, index: ItemIndex, item_emb: np.ndarray):
        self.index, self.item_emb = index, item_emb

    def retrieve(self, queries, query_emb, k, m) -> FanoutResult:
        g = ground_sets(self.index, query_emb[:, None], k, m * k)
        return _query_result(self.index, self.item_emb, query_emb, g.items, g.neighbours[:, 0, :m * k])


class CategoryDiverse:
    """A diversity heuristic: greedy by similarity over the query's `candidates` nearest items (more when they hold
    fewer than K distinct texts), at most one item per text and per category (fashion: coarse group; music:
    primary artist); for WSCR, m*K items (distinct ids) with at most m per category. When the candidates run
    out of categories the set is filled with the next most similar items."""

    name = "category-diverse"

    def __init__(self, index: ItemIndex, item_emb: np.ndarray, category_codes: np.ndarray, candidates: int = 256):
        self.index, self.item_emb, self.codes, self.candidates = index, item_emb, category_codes, candidates

    def select(self, query_emb: np.ndarray, n: int, per_category: int, groups: np.ndarray) -> np.ndarray:
        """[B, d] → rows [B, n], at most one per group (groups [N]: item_groups(index) for texts, or row ids)."""
        n = min(n, len(self.index.item_ids))
        rows = search_distinct(self.index, query_emb, n, max(self.candidates, n), groups)[1]
        out = np.empty((len(rows), n), dtype=np.int64)
        for b, cand in enumerate(rows):
            cand = cand[distinct_positions(cand, groups)]
            counts: dict[int, int] = {}
            picked = []
            for r in cand:
                c = int(self.codes[r])
                if counts.get(c, 0) < per_category:
                    counts[c] = counts.get(c, 0) + 1
                    picked.append(r)
                    if len(picked) == n:
                        break
            if len(picked) < n:
                chosen = set(picked)
                picked += [r for r in cand if r not in chosen][: n - len(picked)]
            if len(picked) < n:
                raise DataError(f"category-diverse: the index returned only {len(picked)} candidates for a set of "
                                f"{n}; raise index.nprobe / index.ef_search or the candidate count")
            out[b] = picked
        return out

    def retrieve(self, queries, query_emb, k, m) -> FanoutResult:
        items = self.select(query_emb, k, 1, item_groups(self.index))
        retrieved = self.select(query_emb, m * k, m, np.arange(len(self.index.item_ids)))
        return _query_result(self.index, self.item_emb, query_emb, items, retrieved)


class LMFanout(GeneratingMethod):
    """A fan-out LM (the warm start, or R4T-FOLM): `samples` fan-outs per query, each one's usable lines embedded
    and grounded; with samples > 1 the set with the best composite is kept (best-of-N, the paper's baseline).
    A fan-out with no usable line falls back to the query itself."""

    def __init__(self, name: str, policy_path: str, encoder: TextEncoder, index: ItemIndex, item_emb: np.ndarray,
                 template: str, k: int, max_new_tokens: int, temperature: float = 1.0, seed: int = 0,
                 batch_size: int = 128, samples: int = 1, reward: RewardConfig | None = None,
                 backend: str = "transformers", device: str = "cpu", context: PromptContext | None = None):
        """context: the catalog items listed in the prompt (policy.context_items), as the policy was trained."""
        self.name, self.encoder, self.index, self.item_emb = name, encoder, index, item_emb
        self.backend = make_backend(backend, policy_path, device)
        self.template, self.k, self.batch_size, self.samples = template, k, batch_size, samples
        self.context = context
        self.reward = reward or RewardConfig(k=k)
        self.sampling = SamplingSettings(n=samples, temperature=temperature, max_new_tokens=max_new_tokens,
                                         seed=seed, logprobs=False)

    def generate(self, queries: list[str], query_emb: np.ndarray) -> list[list[str]]:
        """→ [len(queries) * samples] sub-query lists, the samples of each query together."""
        out = []
        for start in range(0, len(queries), self.batch_size):
            part = queries[start:start + self.batch_size]
            prompts, listed = fanout_prompts(part, query_emb[start:start + self.batch_size], self.template, self.k,
                                             self.context)
            rollouts = self.backend.generate(prompts, self.sampling)
            out += [usable_subqueries(resolve(r.text, listed[r.prompt_index]), self.k) or [part[r.prompt_index]]
                    for r in rollouts]
        return out

    def fan_out(self, queries: list[str], query_emb: np.ndarray) -> list[list[str]]:
        return self.generate(queries, query_emb)

    def ground_each(self, subqueries: list[list[str]], k: int, m: int) -> FanoutResult:
        """Each fan-out's sub-queries, embedded and grounded → one result row per fan-out."""
        emb = self.encoder.encode([s for subs in subqueries for s in subs])
        offsets = np.cumsum([0] + [len(s) for s in subqueries])
        by_count: dict[int, list[int]] = {}
        for b, subs in enumerate(subqueries):  # one batched grounding per fan-out size
            by_count.setdefault(len(subs), []).append(b)
        B = len(subqueries)
        out = FanoutResult(np.empty((B, k), np.int64), np.empty((B, k), np.float32), np.empty(B), [None] * B,
                           [None] * B, subqueries)
        for n, sets in by_count.items():
            part = grounded_result(self.index, self.item_emb, np.stack([emb[offsets[b]:offsets[b] + n] for b in sets]),
                                   k, m)
            out.items[sets], out.scores[sets], out.ground[sets] = part.items, part.scores, part.ground
            for j, b in enumerate(sets):
                out.generated[b], out.retrieved[b] = part.generated[j], part.retrieved[j]
        return out

    def ground(self, subqueries: list[list[str]], query_emb: np.ndarray, k: int, m: int) -> FanoutResult:
        """The fan-outs of `generate` grounded; of each query's `samples` the set with the best composite."""
        every = self.ground_each(subqueries, k, m)
        N = self.samples
        if N == 1:
            return every
        owner = np.repeat(np.arange(len(query_emb)), N)
        score = set_quality(query_emb[owner], every.items, self.item_emb, every.ground, self.reward)["composite"]
        return every.take(np.arange(len(query_emb)) * N + score.reshape(len(query_emb), N).argmax(axis=1))


class MMR:
    """Maximal marginal relevance (Carbonell and Goldstein, 1998), the classical diversifier: from the query's
    `candidates` nearest items (the nearest of each text; more candidates when they hold fewer than K texts),
    greedily add argmax_i lam * cos(q, i) - (1 - lam) * max_{j in S} cos(i, j). For WSCR the same over distinct
    ids, m*K items."""

    name = "MMR"

    def __init__(self, index: ItemIndex, item_emb: np.ndarray, lam: float = 0.5, candidates: int = 100):
        self.index, self.item_emb, self.lam, self.candidates = index, item_emb, lam, candidates

    def select(self, query_emb: np.ndarray, n: int, groups: np.ndarray) -> np.ndarray:
        """[B, d] → rows [B, n] (n clipped to the catalog size), at most one per group (groups [N]:
        item_groups(index) for texts, or row ids)."""
        n = min(n, len(self.index.item_ids))
        sims, rows = search_distinct(self.index, query_emb, n, max(self.candidates, n), groups)
        out = np.empty((len(rows), n), np.int64)
        for b in range(len(rows)):
            keep = distinct_positions(rows[b], groups)
            cand, rel = rows[b][keep], sims[b][keep].astype(np.float64)
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
        items = self.select(query_emb, k, item_groups(self.index))
        retrieved = self.select(query_emb, m * k, np.arange(len(self.index.item_ids)))  # the budget of a fan-out
        return _query_result(self.index, self.item_emb, query_emb, items, retrieved)


class DiffusionFanout(RowGeneratingMethod):
    """R4T-Diffusion: the denoiser samples L rows for the query (and its context items, for a denoiser
    conditioned on them) in one sampling pass; the rows are grounded."""

    name = "R4T-Diffusion"

    def __init__(self, model: EDMDenoiser, sampler: SamplerConfig, index: ItemIndex, item_emb: np.ndarray,
                 seed: int | None = 0, context: PromptContext | None = None):
        """context: the catalog items the denoiser was conditioned on in training (catalog_context with its
        config's context_items and context_per_category). seed: every call's noise (None: fresh noise)."""
        C = model.cfg.context_items
        if C != (context.size if context is not None else 0):
            raise DataError(f"R4T-Diffusion: the denoiser is conditioned on {C} context items, the retriever "
                            f"gives it {context.size if context is not None else 0}")
        self.model, self.sampler, self.index, self.item_emb, self.seed = model, sampler, index, item_emb, seed
        self.context = context

    def generate(self, query_emb: np.ndarray, sampler: SamplerConfig | None = None,
                 seed: int | None = None) -> np.ndarray:
        """query_emb [B, d] → rows [B, L, d] as sampled; `sampler` and `seed` override the method's for this call."""
        seed = self.seed if seed is None else seed
        g = None if seed is None else torch.Generator(device=next(self.model.parameters()).device).manual_seed(seed)
        items, valid = context_tensors(None if self.context is None else self.context.padded_rows(query_emb),
                                       self.item_emb)
        return generate_sets(self.model, torch.from_numpy(query_emb), sampler or self.sampler, generator=g,
                             items=items, items_valid=valid).cpu().numpy()

    def fan_out(self, queries: list[str], query_emb: np.ndarray) -> np.ndarray:
        return self.generate(query_emb)


class RLlibPolicyFanout(RowGeneratingMethod):
    """RLlib policy: the LLM-free teacher (r4t.synth.teacher, r4t.rl.latent). Its deterministic action gives k rows
    in embedding space per query (one MLP forward, no text); the rows are grounded."""

    name = "RLlib policy"

    def __init__(self, policy, index: ItemIndex, item_emb: np.ndarray):
        self.policy, self.index, self.item_emb = policy, index, item_emb

    def fan_out(self, queries: list[str], query_emb: np.ndarray) -> np.ndarray:
        return self.policy.rows(query_emb)
