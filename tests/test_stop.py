"""SIGTERM (systemd, Kubernetes, `ray job stop`): an entry point that started Ray shuts down and exits 0 with one
line, never Ray's signal stack dump; `r4t serve` takes its deployments down first. Each test starts a process of
its own (with a Ray of its own) and signals it by its id."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_serve import tiny_artifacts

from r4t.serve.local import free_port

pytestmark = pytest.mark.faults

SNIPPET = """
import sys, time
from r4t.errors import reporting_errors
from r4t.jobs.common import ensure_ray

def work():
    ensure_ray()
    print("ready", flush=True)
    time.sleep(300)

sys.exit(reporting_errors(work, "job"))
"""


def start(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own, never the tests' one
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_line(proc: subprocess.Popen, marker: str, timeout: float) -> bool:
    """Whether the process printed a line with `marker` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([proc.stdout], [], [], left)[0]:
            return False
        line = proc.stdout.readline()
        if marker in line:
            return True
        if not line and proc.poll() is not None:
            return False
    return False


def stop(proc: subprocess.Popen, timeout: float = 90) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running {timeout:.0f} s after SIGTERM")
    return proc.returncode, err


def test_a_job_stopped_by_sigterm_exits_0_with_one_line() -> None:
    proc = start([sys.executable, "-c", SNIPPET])
    try:
        ready = wait_for_line(proc, "ready", 120)
    finally:
        status, err = stop(proc)  # no process outlives the test
    assert ready, err[-2000:]
    assert status == 0, err[-2000:]
    assert "job: stopped by SIGTERM; what was written is kept" in err
    assert "SIGTERM received" not in err and "Traceback" not in err


@pytest.mark.slow
def test_r4t_serve_stopped_by_sigterm_shuts_serve_down_and_exits_0(tmp_path: Path, tiny_source, encoder) -> None:
    run_dir = tiny_artifacts(tmp_path, tiny_source, encoder)
    port = free_port()
    proc = start([str(Path(sys.executable).parent / "r4t"), "serve", "--dataset", "tiny", "--host", "127.0.0.1",
                  "--port", str(port), f"run_dir={run_dir}", "sampler.steps=2"])
    try:
        ready = wait_for_line(proc, "r4t serving tiny", 240)
        healthy = ready and httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
    finally:
        status, err = stop(proc)  # no process outlives the test
    assert ready and healthy, err[-2000:]
    assert status == 0, err[-2000:]
    assert "r4t: stopped by SIGTERM" in err and "SIGTERM received" not in err and "Traceback" not in err
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
