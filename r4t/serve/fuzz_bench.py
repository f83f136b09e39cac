"""`r4t bench fuzz`: seeded fuzzed HTTP requests at the served app on loopback; no 5xx, and flat replica memory.

Cases come from r4t.serve.fuzz, sent closed-loop by `concurrency` clients, bounded by a request count and a time
limit. The resident memory of every Serve replica process of the app is sampled before the first request, after
the warm-up (the first tenth of the requests: lazy initialisation, first batches), every `sample_s` seconds, and
at the end; "flat" means the growth from after the warm-up to the end stays under `max_rss_growth`. The run fails
on any 5xx, any request without an HTTP answer, a replica process that went away, or memory that grew too much.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from r4t.serve.fuzz import FuzzCase, fuzz_cases
from r4t.serve.local import replica_processes, rss_bytes

MIB = 2**20


class _Memory:
    """RSS samples of fixed replica processes: pid → [(label, seconds since start, bytes or None)]."""

    def __init__(self, replicas: dict[str, list[int]]):
        self.replicas, self.t0 = replicas, time.monotonic()
        self.samples: dict[int, list[tuple[str, float, int | None]]] = {p: [] for ps in replicas.values() for p in ps}

    def sample(self, label: str) -> None:
        for pid, rows in self.samples.items():
            rows.append((label, time.monotonic() - self.t0, rss_bytes(pid)))

    def line(self) -> str:
        last = {pid: rows[-1][2] for pid, rows in self.samples.items()}
        return ", ".join(f"{name} " + ("gone" if last[pid] is None else f"{last[pid] / MIB:.0f} MiB")
                         for name, pids in sorted(self.replicas.items()) for pid in pids)

    def report(self, max_growth: float) -> list[dict]:
        rows = []
        for name, pids in sorted(self.replicas.items()):
            for pid in pids:
                got = {label: rss for label, _, rss in self.samples[pid]}
                seen = [rss for _, _, rss in self.samples[pid] if rss is not None]
                warm, end = got.get("after warm-up"), got.get("end")
                growth = None if warm is None or end is None else end - warm
                rows.append({"deployment": name, "pid": pid, "before_mib": _mib(got.get("before")),
                             "warm_mib": _mib(warm), "end_mib": _mib(end), "max_mib": _mib(max(seen, default=None)),
                             "growth_mib": _mib(growth), "growth_pct": None if growth is None else 100 * growth / warm,
                             "samples": len(seen), "alive": end is not None,
                             "series_mib": [(round(t, 1), _mib(rss)) for _, t, rss in self.samples[pid]],
                             "flat": growth is not None and growth <= max_growth * warm})
        return rows


def _mib(n: int | None) -> float | None:
    return None if n is None else n / MIB


async def _send(base_url: str, cases: list[FuzzCase], concurrency: int, deadline: float, results: list) -> None:
    import httpx

    todo = iter(cases)

    async def client(c: httpx.AsyncClient) -> None:
        for case in todo:  # one shared iterator: each case is sent once
            if time.monotonic() >= deadline:
                return
            try:
                r = await c.request(case.method, case.path, content=case.content, headers=case.headers)
                results.append((case, r.status_code, r.text[:300]))
            except httpx.HTTPError as e:  # no HTTP answer at all: as much a failure as a 5xx
                results.append((case, None, f"{type(e).__name__}: {e}"))

    async with httpx.AsyncClient(base_url=base_url, timeout=120,
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        await asyncio.gather(*(client(c) for _ in range(concurrency)))


async def _fuzz(base_url: str, cases: list[FuzzCase], concurrency: int, max_seconds: float, memory: _Memory,
                sample_s: float, results: list, progress_s: float | None) -> None:
    async def sampler() -> None:
        shown = time.monotonic()
        while True:
            await asyncio.sleep(sample_s)
            memory.sample("interval")
            if progress_s is not None and time.monotonic() - shown >= progress_s:
                shown = time.monotonic()
                print(f"  {len(results)} of {len(cases)} sent; RSS {memory.line()}", flush=True)

    deadline = time.monotonic() + max_seconds
    ticker = asyncio.create_task(sampler())
    try:
        warm = max(1, len(cases) // 10)
        await _send(base_url, cases[:warm], concurrency, deadline, results)
        memory.sample("after warm-up")
        await _send(base_url, cases[warm:], concurrency, deadline, results)
    finally:
        ticker.cancel()
    memory.sample("end")


def run_fuzz(base_url: str, requests: int, max_seconds: float, seed: int = 0, concurrency: int = 8,
             sample_s: float = 5.0, max_rss_growth: float = 0.10, progress_s: float | None = None) -> dict:
    """Fuzz the app already running at base_url (its replicas descending from this process) → the report."""
    replicas = replica_processes()
    if not replicas:
        raise RuntimeError("no Serve replica process of the app descends from this process: the fuzz bench measures "
                           "replica memory, so it needs the Ray it started itself (unset RAY_ADDRESS)")
    memory = _Memory(replicas)
    memory.sample("before")
    cases = list(fuzz_cases(seed, requests))
    results: list[tuple[FuzzCase, int | None, str]] = []
    start = time.monotonic()
    asyncio.run(_fuzz(base_url, cases, concurrency, max_seconds, memory, sample_s, results, progress_s))
    wall = time.monotonic() - start
    classes = Counter("error" if s is None else f"{s // 100}xx" for _, s, _ in results)
    failures = [{"case": c.describe(), "status": s, "answer": text} for c, s, text in results if s is None or s >= 500]
    mem = memory.report(max_rss_growth)
    now = replica_processes()
    restarted = sorted(name for name, pids in replicas.items() if set(now.get(name, [])) != set(pids))
    return {"requests": len(results), "planned": requests, "seed": seed, "concurrency": concurrency,
            "wall_s": wall, "rps": len(results) / wall if wall else 0.0, "by_class": dict(sorted(classes.items())),
            "by_status": dict(sorted(Counter(s for _, s, _ in results if s is not None).items())),
            "by_kind": _by_kind(results), "failures": failures, "memory": mem, "replicas_restarted": restarted,
            "max_rss_growth_pct": 100 * max_rss_growth,
            "ok": not failures and not restarted and all(m["alive"] and m["flat"] for m in mem)}


def _by_kind(results: list) -> dict[str, dict[str, int]]:
    out: dict[str, Counter] = {}
    for case, status, _ in results:
        out.setdefault(case.kind, Counter())["error" if status is None else str(status)] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def bench_fuzz(run_dir: str, dataset: str, sampler: dict | None, diffusion_run: str, requests: int,
               max_seconds: float, seed: int, concurrency: int, max_rss_growth: float) -> dict:
    """Start the app on the run's artifacts on loopback, fuzz it, take it down."""
    from r4t.serve.local import loopback_serve, run_app

    with loopback_serve() as base_url:
        run_app({"run_dir": run_dir, "dataset": dataset, "diffusion_run": diffusion_run, "sampler": sampler})
        return run_fuzz(base_url, requests, max_seconds, seed, concurrency, max_rss_growth=max_rss_growth,
                        progress_s=30)


def format_report(rep: dict) -> str:
    lines = [(f"{rep['requests']} of {rep['planned']} fuzzed requests (seed {rep['seed']}, concurrency "
              f"{rep['concurrency']}) in {rep['wall_s']:.1f} s ({rep['rps']:.1f} req/s)"),
             "by status class: " + ", ".join(f"{k} {v}" for k, v in rep["by_class"].items()),
             "by status: " + ", ".join(f"{k} {v}" for k, v in rep["by_status"].items()), "",
             "| mutation | answers |", "|---|---|"]
    lines += [f"| {kind} | " + ", ".join(f"{s}: {n}" for s, n in counts.items()) + " |"
              for kind, counts in rep["by_kind"].items()]
    lines += ["", f"replica memory (RSS; flat: growth after warm-up to end <= {rep['max_rss_growth_pct']:.0f}%)",
              "| deployment | pid | before | after warm-up | end | max | growth | flat |", "|---" * 8 + "|"]
    fmt = lambda v: "gone" if v is None else f"{v:.1f} MiB"
    for m in rep["memory"]:
        growth = "n/a" if m["growth_mib"] is None else f"{m['growth_mib']:+.1f} MiB ({m['growth_pct']:+.1f}%)"
        lines.append(f"| {m['deployment']} | {m['pid']} | {fmt(m['before_mib'])} | {fmt(m['warm_mib'])} | "
                     f"{fmt(m['end_mib'])} | {fmt(m['max_mib'])} | {growth} | {'yes' if m['flat'] else 'NO'} |")
    if rep["replicas_restarted"]:
        lines.append("replica processes replaced during the run: " + ", ".join(rep["replicas_restarted"]))
    for f in rep["failures"][:20]:
        lines.append(f"FAILED ({f['status'] or 'no answer'}): {f['case']} -> {f['answer']}")
    if len(rep["failures"]) > 20:
        lines.append(f"... and {len(rep['failures']) - 20} more failures")
    lines.append("PASS: no 5xx, every request answered, replica memory flat" if rep["ok"] else "FAIL")
    return "\n".join(lines)
