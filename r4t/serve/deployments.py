"""The Ray Serve deployments behind the ingress: query encoder, denoiser (micro-batched) and index.

Each loads its artifact once per replica and implements `check_health`: a replica whose artifact changed on
disk underneath it (or whose state went bad) reports unhealthy, and Serve replaces it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from ray import serve

from r4t.catalog import load_catalog
from r4t.config import RewardConfig, SamplerConfig
from r4t.diffusion.checkpoint import WEIGHTS
from r4t.embed import TextEncoder
from r4t.retrieve.load import diffusion_fanout
from r4t.retrieve.methods import NoFanout, grounded_result
from r4t.rewards.set_metrics import set_quality
from r4t.storage import fetch


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


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
                 catalog_root: str = "", nprobe: int = 16, ef_search: int = 64):
        """catalog_root: <run_dir>/<dataset>, whose items a denoiser conditioned on catalog items reads."""
        torch.set_num_threads(threads)
        self.weights = fetch(model_dir) / WEIGHTS  # a URI run_dir: onto this replica's node first
        self.loaded = _stamp(self.weights)
        sampler = SamplerConfig(**{**(sampler or {}), "device": device})
        self.fanout = diffusion_fanout(Path(model_dir), sampler, load_catalog(catalog_root, nprobe, ef_search), None)

    def reconfigure(self, user_config: dict) -> None:
        self.sample.set_max_batch_size(int(user_config.get("max_batch_size", 32)))
        self.sample.set_batch_wait_timeout_s(float(user_config.get("batch_wait_timeout_s", 0.005)))

    def _generate(self, query_emb: np.ndarray, steps: int | None, guidance: float | None,
                  seed: int | None) -> np.ndarray:
        own = self.fanout.sampler
        settings = replace(own, steps=steps or own.steps, guidance=own.guidance if guidance is None else float(guidance))
        return self.fanout.generate(query_emb, settings, seed)

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
    """Grounds generated rows to K items with distinct texts, or answers with the query's nearest items (no fan-out),
    exactly as `r4t.retrieve` does, and scores the returned set."""

    def __init__(self, root: str, nprobe: int = 16, ef_search: int = 64):
        self.manifest_path = Path(root) / "index" / "manifest.json"
        self.cat = load_catalog(root, nprobe, ef_search)
        self.loaded = _stamp(self.manifest_path)
        self.texts, self.ids = self.cat.texts, self.cat.index.item_ids
        self.categories = self.cat.dataset.items.column("category").to_pylist()
        self.nearest = NoFanout(self.cat.index, self.cat.item_emb)

    def ground(self, rows: np.ndarray | None, query_emb: np.ndarray, k: int) -> dict:
        """rows [n, d] generated for the query (None: no fan-out) → items with scores, and the set's metrics."""
        res = (self.nearest.retrieve([""], query_emb[None], k, 1) if rows is None else
               grounded_result(self.cat.index, self.cat.item_emb, rows[None], k, 1))
        q = set_quality(query_emb[None], res.items, self.cat.item_emb, res.ground, RewardConfig(k=max(k, 2)))
        return {"items": [{"id": self.ids[r], "text": self.texts[r], "category": self.categories[r],
                           "score": float(s)} for r, s in zip(res.items[0], res.scores[0])],
                "metrics": {"vendi": float(q["div_raw"][0]), "align": float(q["align"][0]),
                            "ground": float(q["ground"][0])}}

    def check_health(self) -> None:
        if _stamp(self.manifest_path) != self.loaded:
            raise RuntimeError(f"{self.manifest_path} changed on disk since this replica loaded it")
