"""A real two-node Ray cluster on this machine: `ray start --head` plus a worker node with a resource of its own,
the tiny pipeline submitted with `r4t submit` (that is, `ray job submit`) into a URI run directory, followed
through the job API to the end; then the artifacts, the nodes the job's actors ran on, and the shared-storage check
of a local run directory. Where the machine allows mount namespaces, the worker node sees its own empty disk under
the run's mirror, as a second machine would, so every file it reads must come through the URI. The cluster this
test starts is stopped in every case (its `ray start --block` processes take their children down with them)."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import TINY_DEMO, find_process

from r4t.data.dataset import Dataset
from r4t.io import read_json
from r4t.serve.local import descendants, free_port
from r4t.synth.targets import read_targets

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 900

# The pipeline at test size (as test_cli's demo test), with the reward scorers on the worker node's resource.
TINY_PIPELINE = [*TINY_DEMO, "rl_workers.reward_resources={scoring: 1}"]


def _ports() -> list[int]:
    """Distinct free ports above Ray's worker port range (10002-19999)."""
    ports: set[int] = set()
    while len(ports) < 5:
        port = free_port()
        if port > 20000:
            ports.add(port)
    return sorted(ports)


def _private_mounts_work() -> bool:
    """Whether this machine lets a process see its own tmpfs over a path (a mount namespace; needs root)."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                          capture_output=True).returncode == 0 if shutil.which("unshare") else False


class TwoNodeCluster:
    """A head and a worker node. Where the machine allows it, the worker node runs in a mount namespace with empty
    tmpfs over `private` folders: like a second machine, it sees none of the head's files there."""

    def __init__(self, tmp: Path, private: list[Path]):
        gcs, dashboard, head_agent, worker_agent, client = _ports()
        self.address = f"http://127.0.0.1:{dashboard}"
        self.token = secrets.token_hex(32)
        # Token authentication for the dashboard, the job API and the GCS (RAY_AUTH_MODE, Ray >= 2.52).
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.ray_tmp = tempfile.mkdtemp(prefix="r4t-ray-", dir="/tmp")  # Unix socket paths allow 107 bytes
        self.procs: list[subprocess.Popen] = []
        self.ports = (gcs, dashboard, head_agent, worker_agent, client)
        self.private = private if _private_mounts_work() else []

    def start(self) -> None:
        gcs, dashboard, head_agent, worker_agent, client = self.ports
        common = ["--block", "--node-ip-address=127.0.0.1", "--object-store-memory=400000000"]
        self._start("head", [*common, "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
                             "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                             f"--dashboard-agent-listen-port={head_agent}", f"--ray-client-server-port={client}",
                             f"--temp-dir={self.ray_tmp}", "--num-cpus=2", '--resources={"head_node": 1}'])
        self._wait(lambda: self._get("/api/version"), "the head's dashboard")
        self._start("worker", [*common, f"--address=127.0.0.1:{gcs}", f"--dashboard-agent-listen-port={worker_agent}",
                               "--num-cpus=2", '--resources={"scoring": 4}'], self.private)
        self._wait(lambda: len(self.nodes()) == 2, "the worker node")
        self._wait(lambda: self._get("/api/jobs/").status_code == 200, "the job API")

    def _start(self, name: str, args: list[str], private: list[Path] = ()) -> None:
        cmd = [str(BIN / "ray"), "start", *args]
        if private:  # unshare execs the shell, which execs ray start: the process to stop stays this one
            for folder in private:
                folder.mkdir(parents=True, exist_ok=True)
            mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(str(p))}" for p in private)
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{mounts} && exec {shlex.join(cmd)}"]
        log = open(self.logs / f"{name}.log", "w")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))

    def _wait(self, ready, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                pytest.fail(f"a ray start process exited while waiting for {what}: {self.log_tail()}")
            try:
                if ready():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        pytest.fail(f"{what} did not come up within {timeout:.0f} s: {self.log_tail()}")

    def _get(self, path: str) -> httpx.Response:
        return httpx.get(self.address + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)

    def nodes(self) -> dict[str, dict]:
        rows = self._get("/api/v0/nodes?detail=true").json()["data"]["result"]["result"]
        return {n["node_id"]: n["resources_total"] for n in rows if n["state"] == "ALIVE"}

    def actors(self, job_id: str) -> list[dict]:
        query = f"/api/v0/actors?detail=true&limit=1000&filter_keys=job_id&filter_predicates=%3D&filter_values={job_id}"
        return self._get(query).json()["data"]["result"]["result"]

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.logs.glob("*.log")))

    def kill_worker_node(self) -> None:
        """The worker node dies at once, as a preempted machine: SIGKILL to its `ray start` and every process under
        it (raylet, agents, workers)."""
        root = self.procs[1].pid
        for pid in [root, *descendants(root)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs[1].wait(timeout=30)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


@pytest.fixture()
def cluster(tmp_path: Path):
    c = TwoNodeCluster(tmp_path, [tmp_path / "mirror", tmp_path / "local_run"])
    try:
        c.start()
        yield c
    finally:
        c.stop()


def runtime_env(tmp_path: Path) -> dict:
    """jobs/runtime_env.yaml with this checkout as the working directory and the test's own mirror folder."""
    env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    env["working_dir"] = str(REPO)
    env["env_vars"]["R4T_MIRROR"] = str(tmp_path / "mirror")
    return env


def submit_pipeline(cluster: TwoNodeCluster, remote: Path, source: Path, tmp_path: Path, *extra: str):
    """`r4t submit pipeline` of the tiny pipeline into the URI run directory `remote`, not waiting.
    → (a job client, the submission id)."""
    from ray.job_submission import JobSubmissionClient

    (tmp_path / "runtime_env.yaml").write_text(yaml.safe_dump(runtime_env(tmp_path)))
    submission_id = f"r4t-ci-{secrets.token_hex(3)}"
    submit = subprocess.run(
        [str(BIN / "r4t"), "submit", "pipeline", "--config", "jobs/demo.yaml", "--address", cluster.address,
         "--runtime-env", str(tmp_path / "runtime_env.yaml"), "--submission-id", submission_id, "--no-wait",
         f"run_dir=file://{remote}", f"datasets=[{{name: tiny, format: r4t, path: '{source}'}}]",
         *TINY_PIPELINE, *extra], cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    assert "ray job submit" in submit.stdout and "-m r4t.jobs.pipeline" in submit.stdout
    return JobSubmissionClient(cluster.address, headers={"Authorization": f"Bearer {cluster.token}"}), submission_id


def test_pipeline_submitted_to_a_two_node_cluster(cluster: TwoNodeCluster, tiny_rl_source: Path,
                                                  tmp_path: Path) -> None:
    from ray.job_submission import JobStatus

    remote = tmp_path / "bucket" / "run"
    client, submission_id = submit_pipeline(cluster, remote, tiny_rl_source, tmp_path)
    status = _finish(client, submission_id, JOB_TIMEOUT_S)
    info, logs = client.get_job_info(submission_id), client.get_job_logs(submission_id)
    print(f"job {submission_id} (job id {info.job_id}): {status}; worker node on its own disk: "
          f"{bool(cluster.private)}; entrypoint: {info.entrypoint}")
    assert status == JobStatus.SUCCEEDED, logs[-6000:]
    assert "Held-out results" in logs and "| tiny | R4T-Diffusion |" in logs
    print(next(line for line in logs.splitlines() if line.startswith("Finished in ")))

    # The artifacts are on the remote side of the URI run directory, complete (a manifest is written last).
    for rel in ("tiny/data/dataset.json", "tiny/index/manifest.json", "tiny/synth/manifest.json",
                "tiny/diffusion/model/manifest.json", "tiny/diffusion/train", "baselines.json",
                "report/metrics.json", "report/report.md"):
        assert (remote / rel).exists(), rel
    final = sorted((remote / "tiny" / "rl" / "checkpoints").iterdir())[-1]
    assert read_json(final / "r4t.json")["final"]
    assert read_json(remote / "report" / "metrics.json")["results"]["tiny"]["queries"] == {"oar": 8}

    # Work ran on both nodes: the driver and the learner on the head, the reward scorers on the worker node,
    # the only node with the `scoring` resource.
    nodes = cluster.nodes()
    worker = next(n for n, res in nodes.items() if "scoring" in res)
    actors = cluster.actors(info.job_id)
    placed: dict[str, set[str]] = {}
    for a in actors:  # an actor that never started (e.g. a spare synthesis worker) has no node
        if a.get("node_id"):
            placed.setdefault(a["class_name"], set()).add(a["node_id"])
    print("actors by node: " + ", ".join(f"{cls} -> {sorted(n[:8] for n in ns)}" for cls, ns in sorted(placed.items())))
    assert placed["RewardWorker"] == {worker}
    assert info.driver_node_id != worker
    assert set().union(*placed.values()) == set(nodes)

    # The shared-storage check of a local run_dir, one pinned task per node: a folder both nodes see passes; one
    # the worker node cannot see (its own empty tmpfs there, as on a second machine) stops the stage, naming it.
    def probe(run_dir: Path) -> tuple[JobStatus, str]:
        code = f"from r4t.jobs.common import ensure_ray; ensure_ray({str(run_dir)!r}); print('shared: ok')"
        job = client.submit_job(entrypoint=f"python -c {shlex.quote(code)}",
                                runtime_env={"env_vars": runtime_env(tmp_path)["env_vars"]})
        return _finish(client, job, 180), client.get_job_logs(job)

    status, logs = probe(tmp_path / "shared_run")
    assert status == JobStatus.SUCCEEDED and "shared: ok" in logs, logs[-3000:]
    if not cluster.private:
        print("note: no mount namespaces here; the worker node shares the head's disk, so the mirror and the "
              "blind-node probe are not exercised")
        return
    status, logs = probe(tmp_path / "local_run")
    assert status == JobStatus.FAILED and "shared storage" in logs and "cannot see" in logs, logs[-3000:]


def _finish(client, submission_id: str, timeout: float):
    """Wait for a job to end (stopping it on timeout). → its final status."""
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    while (status := client.get_job_status(submission_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                                    JobStatus.STOPPED}:
        if time.monotonic() > deadline:
            client.stop_job(submission_id)
            pytest.fail(f"job {submission_id} still {status} after {timeout:.0f} s:\n"
                        f"{client.get_job_logs(submission_id)[-4000:]}")
        time.sleep(2)
    return status


@pytest.mark.faults
@pytest.mark.slow
def test_the_worker_node_killed_during_synthesis_the_job_completes_with_every_target_once(
        cluster: TwoNodeCluster, tiny_rl_source: Path, tmp_path: Path) -> None:
    """The pipeline on the two-node cluster; as soon as a synthesis worker on the worker node runs a shard, that
    node dies (SIGKILL to all its processes). Ray restarts the lost worker on the head, which reruns its shard: the
    job succeeds, and every (query, sample) target is in the table exactly once."""
    from ray.job_submission import JobStatus

    remote = tmp_path / "bucket" / "run"
    client, submission_id = submit_pipeline(cluster, remote, tiny_rl_source, tmp_path)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while find_process("ray::SynthWorker.run", cluster.procs[1].pid) is None:
        if client.get_job_status(submission_id).is_terminal() or time.monotonic() > deadline:
            pytest.fail("no synthesis worker ran a shard on the worker node:\n"
                        + client.get_job_logs(submission_id)[-4000:])
        time.sleep(0.05)
    cluster.kill_worker_node()
    killed_at = time.monotonic()
    status = _finish(client, submission_id, JOB_TIMEOUT_S)
    logs = client.get_job_logs(submission_id)
    print(f"worker node killed during synthesis; the job ended {status} {time.monotonic() - killed_at:.0f} s later")
    assert status == JobStatus.SUCCEEDED, logs[-6000:]
    assert len(cluster.nodes()) == 1
    table = read_targets(remote / "tiny" / "synth", "train")
    keys = sorted(zip(table.column("query_id").to_pylist(), table.column("sample").to_pylist()))
    queries = Dataset.load(tiny_rl_source).queries_for("oar", "train").column("query_id").to_pylist()
    samples = read_json(remote / "tiny" / "synth" / "identity.json")["samples"]
    print(f"{len(keys)} targets of {len(queries)} queries, none twice")
    assert len(keys) == len(set(keys)), "a target was written twice"
    assert {q for q, _ in keys} == set(queries) and all(0 <= s < samples for _, s in keys)  # malformed ones dropped
