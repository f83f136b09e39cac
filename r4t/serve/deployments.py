"""The Ray Serve deployments behind the ingress: query encoder, denoiser (micro-batched) and index.

Each loads its artifact once per replica and implements `check_health`: a replica whose artifact changed on
disk underneath it (or whose state went bad) reports unhealthy, and Serve replaces it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from ray import serve

from r4t.catalog import category_codes
from r4t.config import RewardConfig, SamplerConfig
from r4t.data.dataset import Dataset
from r4t.diffusion.checkpoint import WEIGHTS, load_model
from r4t.diffusion.denoiser import DenoiserConfig, context_tensors
from r4t.diffusion.samplers import check_sampler_range, generate_sets
from r4t.embed import TextEncoder, load_embeddings
from r4t.grounding import attach_texts, ground_sets
from r4t.index import ItemIndex
from r4t.policy.context import PromptContext
from r4t.rewards.set_metrics import set_quality
from r4t.rewards.terms import groundedness
from r4t.storage import fetch


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@dataclass
class ServedCatalog:
    items: pa.Table
    texts: list[str]
    index: ItemIndex  # with the texts attached (r4t.grounding)
    item_emb: np.ndarray

    @classmethod
    def load(cls, root: Path, nprobe: int, ef_search: int) -> ServedCatalog:
        """<run_dir>/<dataset>/{data,index}, fetched onto this node first for a URI run_dir."""
        for part in ("data", "index"):
            fetch(root / part)
        items = Dataset.load(root / "data").items
        texts = items.column("text").to_pylist()
        index = attach_texts(ItemIndex.load(root / "index", nprobe=nprobe, ef_search=ef_search), texts)
        return cls(items, texts, index, load_embeddings(root / "index")[0])

    def context(self, cfg: DenoiserConfig) -> PromptContext | None:
        """The catalog items a denoiser configured with `cfg` is conditioned on (None: the query alone)."""
        if not cfg.context_items:
            return None
        return PromptContext(self.index, self.texts, cfg.context_items, category_codes(self.items),
                             cfg.context_per_category)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)  # enough to fill a batch
class QueryEncoder:
    def __init__(self, model: str = "minilm", device: str = "cpu", threads: int = 1):
        torch.set_num_threads(threads)
        self.encoder = TextEncoder(model, device)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def encode(self, texts: list[str]) -> list[np.ndarray]:
        return list(self.encoder.encode(texts))

    def check_health(self) -> None:
        if self.encoder.dim <= 0:
            raise RuntimeError("encoder lost its model")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class Denoiser:
    """Samples L unit rows per query. Requests are micro-batched per (steps, guidance); a seeded request is
    sampled alone so that its seed pins its sample. Batch size and wait are live-tunable (user_config)."""

    def __init__(self, model_dir: str, sampler: dict | None = None, device: str = "cpu", threads: int = 1,
                 catalog_root: str | None = None, nprobe: int = 16, ef_search: int = 64):
        """catalog_root: <run_dir>/<dataset>, for a denoiser conditioned on the query's nearest catalog items."""
        torch.set_num_threads(threads)
        self.weights = fetch(model_dir) / WEIGHTS  # a URI run_dir: onto this replica's node first
        self.loaded = _stamp(self.weights)
        self.model, self.manifest = load_model(model_dir, device=device)
        self.sampler = SamplerConfig(**{**(sampler or {}), "device": device})
        check_sampler_range(self.sampler, self.manifest, f"the training of {model_dir}")
        self.context = self.item_emb = None
        if self.model.cfg.context_items:
            if catalog_root is None:
                raise ValueError(f"{model_dir}: the denoiser is conditioned on catalog items; give the catalog root")
            catalog = ServedCatalog.load(Path(catalog_root), nprobe, ef_search)
            self.context, self.item_emb = catalog.context(self.model.cfg), catalog.item_emb

    def reconfigure(self, user_config: dict) -> None:
        self.sample.set_max_batch_size(int(user_config.get("max_batch_size", 32)))
        self.sample.set_batch_wait_timeout_s(float(user_config.get("batch_wait_timeout_s", 0.005)))

    def _generate(self, query_emb: np.ndarray, steps: int | None, guidance: float | None,
                  seed: int | None) -> np.ndarray:
        settings = replace(self.sampler, steps=steps or self.sampler.steps,
                           guidance=self.sampler.guidance if guidance is None else float(guidance))
        g = None if seed is None else torch.Generator().manual_seed(seed)
        items, valid = context_tensors(None if self.context is None else self.context.padded_rows(query_emb),
                                       self.item_emb)
        return generate_sets(self.model, torch.from_numpy(query_emb), settings, generator=g, items=items,
                             items_valid=valid).cpu().numpy()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def sample(self, requests: list[tuple]) -> list[np.ndarray]:
        out: list = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, (emb, steps, guidance, seed) in enumerate(requests):
            if seed is not None:  # alone: its seed fixes its noise
                out[i] = self._generate(emb[None], steps, guidance, seed)[0]
            else:
                groups.setdefault((steps, guidance), []).append(i)
        for (steps, guidance), members in groups.items():
            rows = self._generate(np.stack([requests[i][0] for i in members]), steps, guidance, None)
            for j, i in enumerate(members):
                out[i] = rows[j]
        return out

    def check_health(self) -> None:
        if _stamp(self.weights) != self.loaded:
            raise RuntimeError(f"{self.weights} changed on disk since this replica loaded it")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=16)
class CatalogIndex:
    """Grounds generated rows to K items with distinct texts (r4t.grounding) and scores the returned set."""

    def __init__(self, root: str, nprobe: int = 16, ef_search: int = 64):
        root = Path(root)
        self.manifest_path = root / "index" / "manifest.json"
        catalog = ServedCatalog.load(root, nprobe, ef_search)
        self.loaded = _stamp(self.manifest_path)
        self.texts, self.index, self.item_emb = catalog.texts, catalog.index, catalog.item_emb
        self.categories = catalog.items.column("category").to_pylist()
        self.ids = self.index.item_ids

    def ground(self, rows: np.ndarray, query_emb: np.ndarray, k: int) -> dict:
        """rows [n, d] (the query itself for no fan-out) → items with scores, and the set's metrics."""
        g = ground_sets(self.index, rows[None], k, 1)
        items = g.items[0]
        ground = groundedness(rows[None], self.item_emb[g.neighbours[:, :, 0]])
        q = set_quality(query_emb[None], g.items, self.item_emb, ground, RewardConfig(k=max(k, 2)))
        return {"items": [{"id": self.ids[r], "text": self.texts[r], "category": self.categories[r],
                           "score": float(s)} for r, s in zip(items, g.scores[0])],
                "metrics": {"vendi": float(q["div_raw"][0]), "align": float(q["align"][0]),
                            "ground": float(q["ground"][0])}}

    def check_health(self) -> None:
        if _stamp(self.manifest_path) != self.loaded:
            raise RuntimeError(f"{self.manifest_path} changed on disk since this replica loaded it")
