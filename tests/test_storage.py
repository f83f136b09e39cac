"""A run directory that is a URI: the node-local mirror, fetch/publish, and the shared-storage check."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from r4t.errors import ConfigError
from r4t.jobs.common import check_shared_run_dir, synced_stage
from r4t.storage import fetch, publish, remote_of, remove, run_root, storage_uri


@pytest.fixture()
def mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("R4T_MIRROR", str(tmp_path / "mirror"))
    remote = tmp_path / "bucket" / "runs" / "exp1"
    return f"file://{remote}", remote


def _age(path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_a_uri_maps_to_a_mirror_that_names_it_back(tmp_path, monkeypatch):
    monkeypatch.setenv("R4T_MIRROR", str(tmp_path / "m"))
    root = run_root("s3://bucket/runs/exp1/")
    assert root == (tmp_path / "m" / "s3" / "bucket" / "runs" / "exp1").resolve()
    assert remote_of(root / "polyvore" / "index") == "s3://bucket/runs/exp1/polyvore/index"
    assert run_root("runs/demo") == run_root("runs/demo")  # a local path is itself
    assert str(run_root("runs/demo")) == "runs/demo" and remote_of("runs/demo") is None
    assert storage_uri(root / "x") == "s3://bucket/runs/exp1/x"


@pytest.mark.parametrize("bad", ["s3://", "s3://bucket/runs?region=x", "gs://bucket/../etc"])
def test_a_malformed_uri_is_refused_naming_it(bad):
    with pytest.raises(ConfigError, match="run_dir="):
        run_root(bad)


def test_publish_then_fetch_on_an_empty_mirror_gives_the_same_files(mirror):
    uri, remote = mirror
    root = run_root(uri)
    (root / "ds" / "index").mkdir(parents=True)
    (root / "ds" / "index" / "items.faiss").write_bytes(b"\x01" * 1000)
    (root / "ds" / "index" / "manifest.json").write_text('{"count": 1}')
    (root / "ds" / "index" / ".items.faiss.abc.tmp").write_bytes(b"half")  # a writer's temporary: never copied
    publish(root / "ds")
    assert sorted(p.name for p in (remote / "ds" / "index").iterdir()) == ["items.faiss", "manifest.json"]
    shutil.rmtree(root)  # another node: nothing local yet
    fetch(root / "ds")
    assert (root / "ds" / "index" / "items.faiss").read_bytes() == b"\x01" * 1000
    assert (root / "ds" / "index" / "manifest.json").read_text() == '{"count": 1}'
    assert not list((root / "ds").rglob("*.tmp"))


def test_remove_deletes_both_sides(mirror):
    uri, remote = mirror
    folder = run_root(uri) / "ds" / "diffusion" / "train"
    folder.mkdir(parents=True)
    (folder / "ckpt").write_text("x")
    publish(folder)
    assert (remote / "ds" / "diffusion" / "train" / "ckpt").is_file()
    remove(folder)
    assert not folder.exists() and not (remote / "ds" / "diffusion" / "train").exists()


def test_the_newer_side_wins_in_both_directions(mirror):
    uri, remote = mirror
    local = run_root(uri) / "ds" / "metrics.jsonl"
    local.parent.mkdir(parents=True)
    local.write_text("step 1\n")
    publish(local)
    # Another node appends to the remote copy later: a stale local copy must not overwrite it ...
    _age(local, 60)
    (remote / "ds" / "metrics.jsonl").write_text("step 1\nstep 2\n")
    publish(local)
    assert (remote / "ds" / "metrics.jsonl").read_text() == "step 1\nstep 2\n"
    # ... and fetch brings it here.
    fetch(local)
    assert local.read_text() == "step 1\nstep 2\n"
    # A local change made after that is published.
    time.sleep(1.1)
    local.write_text("step 1\nstep 2\nstep 3\n")
    publish(local)
    assert (remote / "ds" / "metrics.jsonl").read_text().count("step") == 3


def test_publish_copies_data_before_the_manifest_that_describes_it(mirror):
    uri, remote = mirror
    root = run_root(uri) / "ds" / "synth"
    (root / "targets").mkdir(parents=True)
    (root / "manifest.json").write_text("{}")  # written first here, yet uploaded last
    for name in ("a.parquet", "b.parquet"):
        (root / "targets" / name).write_bytes(b"p" * 100_000)
    publish(root)
    written = {p.name: p.stat().st_mtime_ns for p in (remote / "ds" / "synth").rglob("*") if p.is_file()}
    assert written["manifest.json"] >= max(written["a.parquet"], written["b.parquet"])


def test_a_failed_stage_still_publishes_what_it_finished(mirror):
    uri, remote = mirror

    class Cfg:
        run_dir = uri
        datasets = [type("Spec", (), {"name": "ds"})()]

    @synced_stage
    def stage(cfg):
        ckpt = run_root(cfg.run_dir) / "ds" / "rl" / "checkpoints" / "step-000010" / "model.safetensors"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"w")
        raise RuntimeError("killed at step 11")

    with pytest.raises(RuntimeError, match="step 11"):
        stage(Cfg())
    assert (remote / "ds" / "rl" / "checkpoints" / "step-000010" / "model.safetensors").read_bytes() == b"w"

    shutil.rmtree(run_root(uri))  # the rerun on a fresh node finds the checkpoint in its mirror

    @synced_stage
    def rerun(cfg):
        return (run_root(cfg.run_dir) / "ds" / "rl" / "checkpoints" / "step-000010" / "model.safetensors").read_bytes()

    assert rerun(Cfg()) == b"w"


def test_a_local_run_dir_that_a_node_cannot_see_is_refused_before_any_work(tmp_path):
    seen = {}

    def probe(marker, token):  # node 1 reads the token, node 2 has its own disk
        seen["read"] = open(marker).read() == token
        return {"10.0.0.1 (aaaa)": True, "10.0.0.2 (bbbb)": False}

    with pytest.raises(ConfigError, match=r"10\.0\.0\.2.*shared storage"):
        check_shared_run_dir(str(tmp_path / "run"), probe)
    assert seen["read"] and not list((tmp_path / "run").iterdir())  # the probe file is gone again
    check_shared_run_dir(str(tmp_path / "run"), lambda m, t: {"a": True, "b": True})
    check_shared_run_dir("s3://bucket/run", lambda m, t: pytest.fail("a URI needs no probe"))
