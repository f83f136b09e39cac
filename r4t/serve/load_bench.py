"""`r4t bench serve`: the served app under load on loopback, next to the same work done in one process.

For each layout of the app (`composed`: ingress, encoder, denoiser and index deployments; `fused`: one deployment
does all of it), 1 and 2 replicas of the deployment that samples, and concurrency 1, 8, 32 (closed loop: each client
sends its next request when the previous one returns), a bounded number of requests (and at most `max_seconds` per
setting) go to POST /v1/fanout with held-out queries. The load generator is a process of its own pinned to one
core, so its CPU is not counted as the server's.
Reported: p50/p99 latency, requests/s, and the server's CPU per request (every process Ray started here, by role).
Access logs are off (a log line per request is CPU the app need not spend; see AppArgs.access_log).
The in-process baseline is the same work on a batch of the concurrency's size in one process (encode the queries,
sample, ground; median of repeats), so p99 / in-process says what HTTP, handles and micro-batching add.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
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


def _client_process(conn, core: int, url: str, queries: list[str], concurrency: int, requests: int,
                    max_seconds: float) -> None:
    """The load generator on its own core: ready once imported, sends when told, answers with its results."""
    import httpx  # noqa: F401  (imported before 'ready', so its start-up is not in the measured window)

    os.sched_setaffinity(0, {core})
    conn.send("ready")
    conn.recv()
    conn.send(asyncio.run(_closed_loop(url, queries, concurrency, requests, max_seconds)))


def role(title: str) -> str:
    """Which part of the server a process title is: a deployment's name, Serve's proxy or controller, or Ray."""
    from r4t.serve.local import replica_name

    if name := replica_name(title):
        return name
    for marker, label in (("ProxyActor", "HTTP proxy"), ("ServeController", "Serve controller")):
        if marker in title:
            return label
    return "Ray (GCS, raylet, dashboard, workers)"


def server_cpu(exclude: set[int]) -> dict[int, tuple[str, float]]:
    """pid → (role, CPU seconds so far) for every process Ray started under this one, but `exclude`."""
    from r4t.serve.local import cpu_seconds, descendants, process_title

    out = {}
    for pid in descendants(os.getpid()) - exclude:
        cpu, title = cpu_seconds(pid), process_title(pid)
        if cpu is not None and title:
            out[pid] = (role(title), cpu)
    return out


def measure_load(url: str, queries: list[str], concurrency: int, requests: int, max_seconds: float) -> dict:
    """One closed-loop run from a pinned client process: latency, throughput, and server CPU per request by role."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    core = max(os.sched_getaffinity(0))
    proc = ctx.Process(target=_client_process, args=(child, core, url, queries, concurrency, requests, max_seconds))
    proc.start()
    try:
        assert parent.recv() == "ready"
        before = server_cpu({proc.pid})
        parent.send("go")
        res = parent.recv()
        after = server_cpu({proc.pid})
    finally:
        proc.join(timeout=30)
    by_role: dict[str, float] = {}
    for pid, (name, cpu) in after.items():
        by_role[name] = by_role.get(name, 0.0) + cpu - before.get(pid, (name, 0.0))[1]
    n = max(res["requests"], 1)
    return {**res, "cpu_ms": 1e3 * sum(by_role.values()) / n,
            "cpu_ms_by_role": {k: 1e3 * v / n for k, v in sorted(by_role.items(), key=lambda kv: -kv[1])}}


def in_process_pipeline(art, sampler: dict, texts: list[str], batches: list[int],
                        repeats: int = 5) -> dict[int, float]:
    """Encode a batch of queries, sample, ground: the served work without serving → batch size → median seconds of
    `repeats`."""
    from r4t.catalog import load_catalog
    from r4t.config import SamplerConfig
    from r4t.embed import TextEncoder
    from r4t.retrieve.load import diffusion_fanout

    method = diffusion_fanout(art.model_dir, SamplerConfig(**sampler), load_catalog(art.root), None)
    encoder = TextEncoder()
    out = {}
    for batch in batches:
        part = [texts[i % len(texts)] for i in range(batch)]

        def work(part=part):
            method.retrieve(part, encoder.encode(part), 10, 1)

        work()  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            work()
            times.append(time.perf_counter() - t)
        out[batch] = float(np.median(times))
    return out


def bench_serve(run_dir: str, dataset: str, layouts: list[str], replicas: list[int], concurrencies: list[int],
                requests: int, max_seconds: float, sampler: dict) -> list[dict]:
    from ray import serve

    from r4t.data.dataset import Dataset
    from r4t.serve.artifacts import resolve_artifacts
    from r4t.serve.local import APP, loopback_serve, run_app

    art = resolve_artifacts(run_dir, dataset)
    ds = Dataset.load(art.data_dir)
    queries = ds.queries_for("oar", "test").column("text").to_pylist() or ds.items.column("text").to_pylist()[:64]
    baseline = in_process_pipeline(art, sampler, queries, concurrencies)
    rows = []
    with loopback_serve(access_log=False) as base:
        url = f"{base}/v1/fanout"
        for layout, n in ((layout, n) for layout in layouts for n in replicas):
            run_app({"run_dir": run_dir, "dataset": dataset, "sampler": sampler, "layout": layout,
                     "denoiser_replicas": n, "access_log": False})
            measure_load(url, queries, 4, 32, max_seconds)  # warm-up: lazy init, first batches
            for c in concurrencies:
                res = measure_load(url, queries, c, requests, max_seconds)
                rows.append({"layout": layout, "replicas": n, "concurrency": c, **res, "pipeline_s": baseline[c],
                             "p99_ratio": res["p99_s"] / baseline[c]})
                print(f"{layout}, {n} sampling replica(s), concurrency {c}: {res['requests']} requests, "
                      f"p50 {res['p50_s'] * 1e3:.1f} ms, "
                      f"p99 {res['p99_s'] * 1e3:.1f} ms, {res['rps']:.1f} req/s, server CPU "
                      f"{res['cpu_ms']:.1f} ms/request; in-process at batch {c} {baseline[c] * 1e3:.1f} ms "
                      f"(p99 / in-process {res['p99_s'] / baseline[c]:.1f}x)", flush=True)
            serve.delete(APP)
    return rows


def format_rows(rows: list[dict]) -> str:
    header = ("| layout | sampling replicas | concurrency | requests | p50 | p99 | req/s | server CPU / request | "
              "in-process encode + sample + ground, same batch | p99 / in-process |")
    lines = [header, "|---" * 10 + "|"]
    for r in rows:
        lines.append(f"| {r['layout']} | {r['replicas']} | {r['concurrency']} | {r['requests']} | "
                     f"{r['p50_s'] * 1e3:.1f} ms | "
                     f"{r['p99_s'] * 1e3:.1f} ms | {r['rps']:.1f} | {r['cpu_ms']:.1f} ms | "
                     f"{r['pipeline_s'] * 1e3:.1f} ms | {r['p99_ratio']:.1f}x |")
    lines += ["", "Server CPU per request by process (ms):", "",
              "| layout | sampling replicas | concurrency | "
              + " | ".join(roles := sorted({k for r in rows for k in r['cpu_ms_by_role']})) + " |",
              "|---" * (len(roles) + 3) + "|"]
    for r in rows:
        lines.append(f"| {r['layout']} | {r['replicas']} | {r['concurrency']} | "
                     + " | ".join(f"{r['cpu_ms_by_role'].get(k, 0.0):.2f}" for k in roles) + " |")
    return "\n".join(lines)
