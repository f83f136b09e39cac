"""The served request path's three stages, each on a whole micro-batch of requests: encode the queries, sample the
denoiser's rows, ground them in the catalog (one index search per batch), and `retrieve_batch`, which runs a batch
through them. The composed app hosts each stage in a deployment of its own (`StageHost`) and the ingress calls them
in turn; the fused app runs all three in one deployment (`FusedHost`), one call per batch. One implementation
either way, and the same objects `r4t.retrieve` uses underneath (DiffusionFanout, grounded_result, NoFanout), so the
API returns what `r4t retrieve` does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from ray import serve

from r4t.catalog import PreparedCatalog, load_catalog
from r4t.config import RewardConfig, SamplerConfig
from r4t.diffusion.checkpoint import WEIGHTS
from r4t.embed import TextEncoder
from r4t.index import MANIFEST_FILE as INDEX_MANIFEST
from r4t.retrieve.load import diffusion_fanout
from r4t.retrieve.methods import NoFanout, grounded_result
from r4t.rewards.set_metrics import set_quality
from r4t.serve.artifacts import ServedArtifacts
from r4t.serve.messages import AppArgs, FanoutRequest
from r4t.storage import fetch

Settings = tuple  # one request's sampler settings: (steps | None, guidance | None, seed | None)


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class Encode:
    """Query texts → unit embeddings [B, d], the batch in one forward pass."""

    def __init__(self, model: str, device: str):
        self.encoder = TextEncoder(model, device)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts)

    def check_health(self) -> None:
        if self.encoder.dim <= 0:
            raise RuntimeError("encoder lost its model")


class Sample:
    """Query embeddings → the denoiser's rows [L, d] per query. Requests sharing (steps, guidance) are sampled as
    one batch; a seeded request alone, so that its seed pins its sample."""

    def __init__(self, model_dir: Path, sampler: dict | None, device: str, cat: PreparedCatalog):
        self.weights = fetch(model_dir) / WEIGHTS  # a URI run_dir: onto this replica's node first
        self.loaded = _stamp(self.weights)
        self.fanout = diffusion_fanout(model_dir, SamplerConfig(**{**(sampler or {}), "device": device}), cat, None)

    def _generate(self, query_emb: np.ndarray, steps: int | None, guidance: float | None,
                  seed: int | None) -> np.ndarray:
        own = self.fanout.sampler
        settings = replace(own, steps=steps or own.steps,
                           guidance=own.guidance if guidance is None else float(guidance))
        return self.fanout.generate(query_emb, settings, seed)

    def __call__(self, query_emb: np.ndarray, settings: list[Settings]) -> list[np.ndarray]:
        out: list = [None] * len(settings)
        groups: dict[tuple, list[int]] = {}
        for i, (steps, guidance, seed) in enumerate(settings):
            if seed is not None:  # alone: its seed fixes its noise
                out[i] = self._generate(query_emb[i:i + 1], steps, guidance, seed)[0]
            else:
                groups.setdefault((steps, guidance), []).append(i)
        for (steps, guidance), members in groups.items():
            for i, rows in zip(members, self._generate(query_emb[members], steps, guidance, None)):
                out[i] = rows
        return out

    def check_health(self) -> None:
        if _stamp(self.weights) != self.loaded:
            raise RuntimeError(f"{self.weights} changed on disk since this replica loaded it")


class Ground:
    """Generated rows (None: no fan-out, the query's nearest items) → K items with distinct texts per request, with
    scores and the set's metrics. Requests with the same K and kind share one index search."""

    def __init__(self, cat: PreparedCatalog, root: Path):
        self.cat, self.manifest_path = cat, root / "index" / INDEX_MANIFEST
        self.loaded = _stamp(self.manifest_path)
        self.ids, self.texts = cat.index.item_ids, cat.texts
        self.categories = cat.dataset.items.column("category").to_pylist()
        self.nearest = NoFanout(cat.index, cat.item_emb)

    def __call__(self, rows: list[np.ndarray | None], query_emb: np.ndarray, ks: list[int]) -> list[dict]:
        out: list = [None] * len(ks)
        groups: dict[tuple, list[int]] = {}
        for i, (r, k) in enumerate(zip(rows, ks)):
            groups.setdefault((k, r is None), []).append(i)
        for (k, nearest), members in groups.items():
            q = query_emb[members]
            res = (self.nearest.retrieve([""] * len(members), q, k, 1) if nearest else
                   grounded_result(self.cat.index, self.cat.item_emb, np.stack([rows[i] for i in members]), k, 1))
            quality = set_quality(q, res.items, self.cat.item_emb, res.ground, RewardConfig(k=max(k, 2)))
            for j, i in enumerate(members):
                out[i] = {"items": [{"id": self.ids[r], "text": self.texts[r], "category": self.categories[r],
                                     "score": s} for r, s in zip(res.items[j].tolist(), res.scores[j].tolist())],
                          "metrics": {"vendi": float(quality["div_raw"][j]), "align": float(quality["align"][j]),
                                      "ground": float(quality["ground"][j])}}
        return out

    def check_health(self) -> None:
        if _stamp(self.manifest_path) != self.loaded:
            raise RuntimeError(f"{self.manifest_path} changed on disk since this replica loaded it")


STAGES = ("QueryEncoder", "Denoiser", "CatalogIndex")  # in the order a batch goes through them; deployment names
StageCall = Callable[..., Awaitable]  # (stage name, *its arguments) → what the stage returns


async def retrieve_batch(reqs: list[FanoutRequest], stage: StageCall) -> list[tuple[dict, dict]]:
    """A micro-batch of requests through the three stages → per request (its set, the batch's stage times)."""
    t0 = time.perf_counter()
    q = await stage("QueryEncoder", [r.query for r in reqs])
    t1 = time.perf_counter()
    rows: list = [None] * len(reqs)  # None: no fan-out, the query's own nearest items
    sampled = [i for i, r in enumerate(reqs) if r.method == "R4T-Diffusion"]
    if sampled:
        settings = [(reqs[i].steps, reqs[i].guidance, reqs[i].seed) for i in sampled]
        for i, r in zip(sampled, await stage("Denoiser", q[sampled], settings)):
            rows[i] = r
    t2 = time.perf_counter()
    sets = await stage("CatalogIndex", rows, q, [r.k for r in reqs])
    t3 = time.perf_counter()
    timing = {"encode": 1e3 * (t1 - t0), "generate": 1e3 * (t2 - t1), "ground": 1e3 * (t3 - t2), "batch": len(reqs)}
    return [(s, timing) for s in sets]


def build_stages(art: ServedArtifacts, args: AppArgs, names=STAGES) -> dict[str, object]:
    """The named stages over the served artifacts, sharing one catalog in memory; torch's threads set first."""
    torch.set_num_threads(args.threads)
    cat = load_catalog(art.root, args.nprobe, args.ef_search) if {"Denoiser", "CatalogIndex"} & set(names) else None
    build = {"QueryEncoder": lambda: Encode(args.encoder, "cpu"),
             "Denoiser": lambda: Sample(art.model_dir, args.sampler, args.device, cat),
             "CatalogIndex": lambda: Ground(cat, art.root)}
    return {name: build[name]() for name in names}


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=4)
class StageHost:
    """One stage of the composed app in a deployment of its own (named after it: QueryEncoder, Denoiser,
    CatalogIndex); a request is a micro-batch; its replica's health is the stage's."""

    def __init__(self, name: str, art: ServedArtifacts, args: AppArgs):
        self.stage = build_stages(art, args, (name,))[name]

    def __call__(self, *batch):
        return self.stage(*batch)

    def check_health(self) -> None:
        self.stage.check_health()


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=4)
class FusedHost:
    """The fused app's one worker deployment (named Retrieval): every stage in its process, a micro-batch per
    request, no hop between stages. Kept apart from the ingress so that model code never holds the GIL that the
    ingress's HTTP handling needs."""

    def __init__(self, art: ServedArtifacts, args: AppArgs):
        self.stages = build_stages(art, args)

    async def _local(self, name: str, *batch):
        return self.stages[name](*batch)

    async def __call__(self, reqs: list[FanoutRequest]) -> list[tuple[dict, dict]]:
        return await retrieve_batch(reqs, self._local)

    def check_health(self) -> None:
        for stage in self.stages.values():
            stage.check_health()
