"""The retrieval API: query text(s) → a set of K catalog items per query, for any method.

    from r4t.retrieve import Retriever
    retriever = Retriever.from_config(load_config(EvalConfig, "jobs/eval.yaml"), "polyvore", "R4T-Diffusion")
    for s in retriever.retrieve(["bohemian festival outfit", "rainy day office look"]):
        print(s.query, s.item_ids, s.texts, s.scores)

Every method goes through the same grounding, so two methods differ only in what they generate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from r4t.catalog import PreparedCatalog, prepare_catalog
from r4t.config import EvalConfig
from r4t.embed import TextEncoder
from r4t.errors import DataError
from r4t.retrieve.load import build_method
from r4t.retrieve.methods import FanoutMethod


@dataclass
class RetrievedSet:
    query: str
    method: str
    item_ids: list[str]
    texts: list[str]
    categories: list[str]  # coarse group (fashion) or primary artist (music)
    scores: list[float]  # cosine of each item to the generated row (or the query) that claimed it
    generated: np.ndarray  # [n, d] what the method generated: sub-query or denoiser-row embeddings, or the query
    subqueries: list[str] | None = None  # LM methods

    def to_dict(self, embeddings: bool = False) -> dict:
        out = {"query": self.query, "method": self.method, "items": [
            {"id": i, "text": t, "category": c, "score": round(s, 6)}
            for i, t, c, s in zip(self.item_ids, self.texts, self.categories, self.scores)]}
        if self.subqueries is not None:
            out["subqueries"] = self.subqueries
        if embeddings:
            out["generated"] = self.generated.tolist()
        return out


class Retriever:
    """One method over one prepared catalog. `retrieve` is batched: one call fans out every query together."""

    def __init__(self, method: FanoutMethod, cat: PreparedCatalog, encoder: TextEncoder, k: int = 10):
        self.method, self.cat, self.encoder, self.k = method, cat, encoder, k
        self._texts, self._ids = cat.texts, cat.index.item_ids
        self._categories = cat.dataset.items.column("category").to_pylist()

    @classmethod
    def from_config(cls, cfg: EvalConfig, dataset: str, method: str, encoder: TextEncoder | None = None,
                    progress: bool = False) -> "Retriever":
        spec = next((s for s in cfg.datasets if s.name == dataset), None)
        if spec is None:
            raise DataError(f"dataset {dataset!r} is not in the config's datasets {[s.name for s in cfg.datasets]}")
        encoder = encoder or TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)
        cat = prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress)
        return cls(build_method(method, cfg, cat, encoder), cat, encoder, cfg.eval.k)

    def retrieve(self, queries: str | list[str], k: int | None = None) -> list[RetrievedSet]:
        queries = [queries] if isinstance(queries, str) else list(queries)
        bad = [q for q in queries if not isinstance(q, str) or not q.strip()]
        if not queries or bad:
            raise DataError(f"retrieve: queries must be non-empty strings; got {bad[:3] if bad else 'none'}")
        k = k or self.k
        if not 1 <= k <= len(self._ids):
            raise DataError(f"retrieve: k={k} must be in [1, {len(self._ids)}] (the catalog size)")
        # m=1: the WSCR lists (each generated row's top m) are an evaluation measure, not part of the answer
        res = self.method.retrieve(queries, self.encoder.encode(queries), k, 1)
        return [RetrievedSet(q, self.method.name, [self._ids[r] for r in rows], [self._texts[r] for r in rows],
                             [self._categories[r] for r in rows], res.scores[b].tolist(), res.generated[b],
                             None if res.subqueries is None else res.subqueries[b])
                for b, (q, rows) in enumerate(zip(queries, res.items))]
