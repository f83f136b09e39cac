"""`r4t bench serve`: the served app under load on loopback, next to the in-process sampler.

For 1 and 2 denoiser replicas and concurrency 1, 8, 32 (closed loop: each client sends its next request when
the previous one returns), a bounded number of requests (and at most `max_seconds` per setting) go to
POST /v1/fanout with held-out queries; it reports p50/p99 latency and requests/s. The in-process baseline is
R4T-Diffusion's `generate` (the condition's nearest-item lookup and the sampler) on a batch of the same size
(median of repeats), so p99 / in-process says what HTTP, the handles, micro-batching and grounding add.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np


async def _closed_loop(url: str, queries: list[str], concurrency: int, requests: int, max_seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    sent = 0
    deadline = time.perf_counter() + max_seconds

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests and time.perf_counter() < deadline:
            q = queries[sent % len(queries)]
            sent += 1
            t = time.perf_counter()
            r = await c.post(url, json={"query": q, "k": 10})
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as c:
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
    wall = time.perf_counter() - start
    lat = np.array(latencies)
    return {"requests": len(lat), "p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99)),
            "rps": len(lat) / wall}


def in_process_method(art, sampler: dict):
    """R4T-Diffusion in this process on the served artifacts, as `r4t.retrieve` (and the Denoiser replica) builds it."""
    from r4t.catalog import load_catalog
    from r4t.config import SamplerConfig
    from r4t.retrieve.load import diffusion_fanout

    return diffusion_fanout(art.model_dir, SamplerConfig(**sampler), load_catalog(art.root), 0)


def _median_seconds(work, repeats: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        work()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def in_process_sampler(method, query_emb: np.ndarray, batch: int, repeats: int = 10) -> float:
    """The denoiser alone (its context lookup included) on a batch of `batch` query embeddings."""
    q = np.resize(query_emb, (batch, query_emb.shape[1]))
    return _median_seconds(lambda: method.generate(q), repeats)


def in_process_pipeline(method, texts: list[str], batch: int, repeats: int = 5) -> float:
    """The same work without serving: encode the batch's queries, sample, ground (one process)."""
    from r4t.embed import TextEncoder

    encoder = TextEncoder()
    part = [texts[i % len(texts)] for i in range(batch)]
    return _median_seconds(lambda: method.retrieve(part, encoder.encode(part), 10, 1), repeats)


def bench_serve(run_dir: str, dataset: str, replicas: list[int], concurrencies: list[int], requests: int,
                max_seconds: float, sampler: dict) -> list[dict]:
    from ray import serve

    from r4t.data.dataset import Dataset
    from r4t.embed import TextEncoder
    from r4t.serve.artifacts import resolve_artifacts
    from r4t.serve.local import APP, loopback_serve, run_app

    art = resolve_artifacts(run_dir, dataset)
    ds = Dataset.load(art.data_dir)
    queries = ds.queries_for("oar", "test").column("text").to_pylist() or ds.items.column("text").to_pylist()[:64]
    query_emb = TextEncoder().encode(queries[:64])
    method = in_process_method(art, sampler)
    baseline = {c: in_process_sampler(method, query_emb, c) for c in concurrencies}
    pipeline = {c: in_process_pipeline(method, queries, c) for c in concurrencies}
    rows = []
    with loopback_serve() as base:
        url = f"{base}/v1/fanout"
        for n in replicas:
            run_app({"run_dir": run_dir, "dataset": dataset, "sampler": sampler, "denoiser_replicas": n})
            asyncio.run(_closed_loop(url, queries, 4, 16, max_seconds))  # warm-up: lazy init, first batches
            for c in concurrencies:
                res = asyncio.run(_closed_loop(url, queries, c, requests, max_seconds))
                rows.append({"replicas": n, "concurrency": c, **res, "in_process_s": baseline[c],
                             "p99_ratio": res["p99_s"] / baseline[c], "pipeline_s": pipeline[c]})
                print(f"replicas {n} concurrency {c}: {res['requests']} requests, p50 {res['p50_s'] * 1e3:.1f} ms, "
                      f"p99 {res['p99_s'] * 1e3:.1f} ms, {res['rps']:.1f} req/s; in-process sampler at batch {c} "
                      f"{baseline[c] * 1e3:.1f} ms (p99 / in-process {res['p99_s'] / baseline[c]:.1f}x)", flush=True)
            serve.delete(APP)
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = ["| denoiser replicas | concurrency | requests | p50 | p99 | req/s | in-process sampler, same batch | "
             "p99 / sampler | in-process encode + sample + ground | p99 / that |", "|---" * 10 + "|"]
    for r in rows:
        lines.append(f"| {r['replicas']} | {r['concurrency']} | {r['requests']} | {r['p50_s'] * 1e3:.1f} ms | "
                     f"{r['p99_s'] * 1e3:.1f} ms | {r['rps']:.1f} | {r['in_process_s'] * 1e3:.1f} ms | "
                     f"{r['p99_ratio']:.1f}x | {r['pipeline_s'] * 1e3:.1f} ms | {r['p99_s'] / r['pipeline_s']:.1f}x |")
    return "\n".join(lines)
