"""Throughput benchmarks (`r4t bench ...`): measured numbers plus the machine and command that produced them."""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Callable

import numpy as np

from r4t.config import PrepareConfig


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return (f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} cores, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, Python {platform.python_version()}")


def rate(fn: Callable[[], int], min_seconds: float) -> float:
    """Units per second of `fn` (which returns the units it processed), after one warm-up call."""
    fn()
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or done == 0:
        done += fn()
    return done / elapsed


def bench_foundation(cfg: PrepareConfig, dataset: str, min_seconds: float) -> dict:
    from r4t.catalog import prepare_catalog
    from r4t.embed import TextEncoder
    from r4t.index import ItemIndex
    from r4t.rewards.scorer import RewardScorer

    spec = next(s for s in cfg.datasets if s.name == dataset)
    encoder = TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)
    cat = prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress=False)
    rng = np.random.default_rng(cfg.seed)
    texts = cat.texts
    sample = [texts[i] for i in rng.choice(len(texts), 1024, replace=False)]
    queries = cat.queries("oar", "train").column("text").to_pylist()
    q_emb = encoder.encode(queries[:1024])
    ivf = ItemIndex.build(cat.item_emb, cat.index.item_ids, "IVF256,Flat", nprobe=16)
    k = cfg.reward.k
    fanouts = ["\n".join(texts[i] for i in rng.choice(len(texts), k, replace=False)) for _ in range(64)]
    scorer = RewardScorer(encoder, cat.index, cat.item_emb, cfg.reward)

    results = {
        f"encoder sentences/s (batch {cfg.embed.batch_size})": rate(lambda: len(encoder.encode(sample)), min_seconds),
        f"index queries/s, {cfg.index.factory}, batch {len(q_emb)}, k={k}":
            rate(lambda: len(cat.index.search(q_emb, k)[1]), min_seconds),
        f"index queries/s, {cfg.index.factory}, batch 1, k={k}":
            rate(lambda: sum(len(cat.index.search(q_emb[i:i + 1], k)[1]) for i in range(64)), min_seconds),
        f"index queries/s, IVF256,Flat nprobe=16, batch {len(q_emb)}, k={k}":
            rate(lambda: len(ivf.search(q_emb, k)[1]), min_seconds),
        f"RewardScorer fan-outs/s (k={k}, batch 64, encoding included)":
            rate(lambda: len(scorer.score(queries[:64], fanouts)["reward"]), min_seconds),
    }
    print(f"# r4t bench foundation — {dataset} catalog ({len(texts)} items, dim {cat.index.dim})")
    print(f"machine: {machine()}")
    print(f"command: r4t {' '.join(sys.argv[1:])}")
    print("| measurement | rate |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:,.0f} |")
    return results
