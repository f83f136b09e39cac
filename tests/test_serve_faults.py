"""Faults injected into the served app's real processes under loopback load, and the fuzz bench at test size.

A replica's process is SIGKILLed while closed-loop clients keep POSTing /v1/fanout; the promise is that no request
fails: the ingress resends the dead replica's calls, and with one replica they wait for Serve's replacement. Each
kill test prints what it measured (requests failed, time to the first success and to the replacement running).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_serve import tiny_app, tiny_app_args, tiny_artifacts

from r4t.serve.local import APP, replica_processes
from r4t.serve.messages import METHODS

pytestmark = pytest.mark.faults

QUERIES = ["beach vacation outfit", "winter office look", "red boots", "garden party dress"]
CONCURRENCY = 6
OUTAGE_LIMIT_S = 45  # the replacement must be running by then, or the test fails


@pytest.fixture(scope="module")
def app(ray_local, tmp_path_factory, tiny_source, encoder):
    with tiny_app(tiny_artifacts(tmp_path_factory.mktemp("faults"), tiny_source, encoder)) as client:
        yield client


@dataclass
class Sent:
    method: str
    start: float
    end: float
    status: int | None  # None: no HTTP answer
    answer: str


async def _closed_loop(base_url: str, stop: asyncio.Event, out: list[Sent]) -> None:
    """CONCURRENCY clients, each sending its next request when the last returns; methods alternate."""
    async def client(c: httpx.AsyncClient, i: int) -> None:
        n = i
        while not stop.is_set():
            method, n = METHODS[n % len(METHODS)], n + 1
            t = time.monotonic()
            try:
                r = await c.post("/v1/fanout", json={"query": QUERIES[n % len(QUERIES)], "k": 5, "method": method})
                out.append(Sent(method, t, time.monotonic(), r.status_code, r.text[:300]))
            except httpx.HTTPError as e:
                out.append(Sent(method, t, time.monotonic(), None, repr(e)))

    async with httpx.AsyncClient(base_url=base_url, timeout=OUTAGE_LIMIT_S + 30) as c:
        await asyncio.gather(*(client(c, i) for i in range(CONCURRENCY)))


def _kill_when_busy(pid: int, limit_s: float = 20) -> bool:
    """SIGKILL pid as soon as Ray's title shows it running a request (".handle_request..." after the deployment
    name), so that a call is in flight inside it; at limit_s kill it anyway → whether it was busy."""
    deadline = time.monotonic() + limit_s
    busy = False
    while not busy and time.monotonic() < deadline:
        try:
            busy = b".handle_request" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            break
        if not busy:
            time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    return busy


def _running(deployment: str) -> bool:
    from ray import serve

    status = serve.status().applications[APP].deployments[deployment]
    return status.status == "HEALTHY" and status.replica_states == {"RUNNING": 1}


async def _kill_under_load(base_url: str, deployment: str, warm_s: float = 3, after_s: float = 3) -> dict:
    """Load; SIGKILL the deployment's replica process; keep loading until its replacement runs, and after_s more."""
    sent: list[Sent] = []
    stop = asyncio.Event()
    load = asyncio.create_task(_closed_loop(base_url, stop, sent))
    killed = running = busy = None
    try:
        await asyncio.sleep(warm_s)
        [pid] = replica_processes()[deployment]
        busy = await asyncio.to_thread(_kill_when_busy, pid)
        killed = time.monotonic()
        while time.monotonic() < killed + OUTAGE_LIMIT_S and running is None:
            await asyncio.sleep(0.2)
            pids = replica_processes().get(deployment, [])
            if pids and pid not in pids and await asyncio.to_thread(_running, deployment):
                running = time.monotonic()
        await asyncio.sleep(after_s)
    finally:
        stop.set()
        await load
    return {"sent": sent, "killed": killed, "running": running, "pid": pid, "busy": busy}


@pytest.mark.slow
@pytest.mark.parametrize("layout, deployment, needs", [("composed", "Denoiser", {"R4T-Diffusion"}),
                                                       ("composed", "CatalogIndex", set(METHODS)),
                                                       ("fused", "Retrieval", set(METHODS))])
def test_a_replica_killed_under_load_fails_no_request(app, layout, deployment, needs):
    """SIGKILL of the one replica of a deployment mid-load: every request still gets its 200 (the calls to the dead
    replica are resent and wait for the replacement); after the replacement runs, everything is a 200. The module's
    app is composed; the fused case redeploys it fused, and composed again afterwards."""
    from r4t.serve.local import run_app

    if layout != "composed":
        run_app(tiny_app_args(app.run_dir, layout=layout))
    try:
        run = asyncio.run(_kill_under_load(str(app.base_url), deployment))
    finally:
        if layout != "composed":
            run_app(tiny_app_args(app.run_dir))
    sent, killed, running = run["sent"], run["killed"], run["running"]
    assert run["busy"], f"{deployment} was never seen running a request: the kill would test nothing"
    assert running is not None, f"no replacement {deployment} replica running {OUTAGE_LIMIT_S} s after the kill"
    failed = [s for s in sent if s.status != 200]
    needing = [s for s in sent if s.method in needs]
    waited = [s for s in needing if s.start < running and s.end > killed]  # in flight or sent during the outage
    first_ok = min((s.end for s in needing if s.start >= killed and s.status == 200), default=None)
    after = [s for s in sent if s.start >= running]
    statuses = sorted({s.status for s in failed}, key=str)
    print(f"\n{deployment} pid {run['pid']} SIGKILLed mid-request under load (concurrency {CONCURRENCY}): "
          f"{len(sent)} requests, {len(failed)} failed {statuses}; {len(waited)} needed it during the outage, slowest "
          f"{max((s.end - s.start for s in waited), default=0):.2f} s; first success of a request sent after the "
          f"kill {'never' if first_ok is None else f'{first_ok - killed:.2f} s'}; replacement running after "
          f"{running - killed:.2f} s; {len(after)} requests after it")
    assert not failed, [(s.method, s.status, s.answer) for s in failed[:5]]
    assert waited, f"no request needed {deployment} while it was down: the kill tested nothing"
    assert after and all(s.status == 200 for s in after)


def _dies(times: int, error: Exception | None = None):
    """An async call that raises ActorDiedError `times` times (or `error` each time), then answers "ok"."""
    from ray.exceptions import ActorDiedError

    calls = []

    async def call():
        calls.append(time.monotonic())
        if error is not None:
            raise error
        if len(calls) <= times:
            raise ActorDiedError()
        return "ok"

    return call, calls


def test_a_call_to_a_dead_replica_is_resent_within_its_bounds_and_nothing_else_is():
    from ray.exceptions import ActorUnavailableError

    from r4t.serve.retry import ReplicaUnavailable, RetryPolicy, call_with_retries

    policy = RetryPolicy(attempts=3, seconds=5, backoff_s=0.01)
    call, calls = _dies(2)
    assert asyncio.run(call_with_retries("Denoiser", call, policy)) == "ok" and len(calls) == 3
    call, calls = _dies(3)
    with pytest.raises(ReplicaUnavailable, match=r"'Denoiser' unavailable.*3 attempt\(s\).*ActorDiedError"):
        asyncio.run(call_with_retries("Denoiser", call, policy))
    assert len(calls) == 3  # the count bounds it
    call, calls = _dies(0, ActorUnavailableError("unreachable", None))
    with pytest.raises(ReplicaUnavailable, match="CatalogIndex"):
        asyncio.run(call_with_retries("CatalogIndex", call, RetryPolicy(attempts=100, seconds=0.3, backoff_s=0.05)))
    assert 2 <= len(calls) < 10 and calls[-1] - calls[0] < 0.3  # the time bounds it, well before 100 attempts
    for error in (ValueError("k out of range"), TimeoutError("the call's own")):  # not a dead replica: never resent
        call, calls = _dies(0, error)
        with pytest.raises(type(error)):
            asyncio.run(call_with_retries("Denoiser", call, policy))
        assert len(calls) == 1


def test_a_resent_call_waiting_past_the_deadline_is_cut_off():
    """With one replica the resent call waits in Serve's router for the replacement; the deadline ends the wait."""
    from ray.exceptions import ActorDiedError

    from r4t.serve.retry import ReplicaUnavailable, RetryPolicy, call_with_retries

    calls = []

    async def call():
        calls.append(1)
        if len(calls) == 1:
            raise ActorDiedError()
        await asyncio.sleep(60)  # no replacement comes

    t = time.monotonic()
    with pytest.raises(ReplicaUnavailable, match="2 attempt"):
        asyncio.run(call_with_retries("Denoiser", call, RetryPolicy(attempts=3, seconds=0.5, backoff_s=0)))
    assert time.monotonic() - t < 2


def test_exhausted_retries_answer_503_naming_the_deployment():
    import json

    from r4t.serve.app import api
    from r4t.serve.retry import ReplicaUnavailable

    handler = api.exception_handlers[ReplicaUnavailable]
    r = asyncio.run(handler(None, ReplicaUnavailable("Denoiser", 3, 60.2, None)))
    assert r.status_code == 503 and r.headers["retry-after"]
    assert "deployment 'Denoiser' unavailable" in json.loads(r.body)["error"]


def test_fuzz_cases_are_seeded_and_every_mutation_makes_a_sendable_request():
    from r4t.serve.fuzz import MUTATIONS, fuzz_cases

    first = list(fuzz_cases(3, 400))
    assert first == list(fuzz_cases(3, 400)) and first != list(fuzz_cases(4, 400))
    for _, mutation in MUTATIONS:
        case = mutation(random.Random(0))
        assert case.method and case.path.startswith("/") and isinstance(case.content, bytes), mutation.__name__
    kinds = {c.kind for c in first}
    assert {"valid", "not UTF-8", "truncated JSON", "bad batch", "wrong route", "empty body"} <= kinds


def test_the_fuzz_bench_reports_no_5xx_and_flat_replica_memory(app):
    from r4t.serve.fuzz_bench import format_report, run_fuzz

    rep = run_fuzz(str(app.base_url), requests=300, max_seconds=90, seed=0, concurrency=4, sample_s=1)
    print("\n" + format_report(rep))
    assert rep["requests"] == 300 and rep["by_class"].get("2xx") and rep["by_class"].get("4xx")
    assert not rep["failures"], rep["failures"][:3]
    assert {m["deployment"] for m in rep["memory"]} == {"Ingress", "QueryEncoder", "Denoiser", "CatalogIndex"}
    assert all(m["alive"] and m["samples"] >= 3 for m in rep["memory"]) and not rep["replicas_restarted"]
    assert rep["ok"], format_report(rep)
