"""Teachers behind one interface: every registered kind finds its own run or folder and refuses another kind's,
old runs without teacher.json still resolve, and SynthWorker runs any Generation without knowing its kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import TINY_K, TINY_QUERIES
from r4t.config import METHODS, PolicyConfig, RewardConfig, SynthConfig, SynthSettings, to_dict
from r4t.errors import ConfigError, DataError, ManifestMismatch
from r4t.io import sha256_file, write_json
from r4t.policy.model import INFO_FILE
from r4t.policy.prompt import PLAIN_TEMPLATE
from r4t.retrieve.load import TEACHER_FANOUTS, teacher_fanout
from r4t.rewards.scorer import RewardScorer
from r4t.rl.latent import ActorMLP, LatentAction, export_policy
from r4t.synth.targets import shard_path
from r4t.synth.teacher import TEACHER_FILE, TEACHERS, resolve_teacher, run_kind, teacher_at
from r4t.synth.worker import Generation, Shard, SynthWorker

DIM, RANK = 8, 2
FINGERPRINT = {"catalog_hash": "c0ffee", "dim": DIM, "encoder": "tiny-encoder"}


def lm_run(run: Path) -> Path:
    """What `python -m r4t.jobs.rl` leaves: its config and a final checkpoint (a Hugging Face policy folder)."""
    last = run / "checkpoints" / "step-000004"
    last.mkdir(parents=True)
    write_json(last / "config.json", {"model_type": "qwen3"})
    (last / "model.safetensors").write_bytes(b"the LM's weights")
    write_json(last / INFO_FILE, {"step": 4, "final": True})
    write_json(run / "config.json", {"policy": to_dict(PolicyConfig())})
    return last


def rllib_run(run: Path, fingerprint: dict = FINGERPRINT) -> Path:
    """What `python -m r4t.jobs.rllib` leaves: its config (no LM policy, though named config.json), an RLlib
    checkpoint and the exported policy (untrained), for a catalog with this fingerprint."""
    write_json(run / "config.json", {"action": {"rank": RANK}})
    (run / "checkpoints" / "iter-000002").mkdir(parents=True)
    dim = fingerprint["dim"]
    latent = LatentAction(TINY_K, np.eye(RANK, dim, dtype=np.float32), 1.0, np.zeros((TINY_K, RANK), np.float32))
    actor = ActorMLP(dim, [4], TINY_K * RANK, "tanh")
    return export_policy(run / "policy", actor.state_dict(), latent,
                         {"obs_dim": dim, "hidden": [4], "activation": "tanh"}, {**fingerprint, "final": True})


RUNS = {"lm": lm_run, "rllib": rllib_run}  # one for every registered kind


def test_the_registry_is_complete_on_every_side():
    assert set(RUNS) == set(TEACHERS) == set(TEACHER_FANOUTS)
    assert all(t.kind == kind and t.method in METHODS for kind, t in TEACHERS.items())


@pytest.mark.parametrize("marked", [True, False], ids=["teacher.json", "older run"])
@pytest.mark.parametrize("kind", sorted(TEACHERS))
def test_every_teacher_resolves_its_own_run_and_refuses_another_kind(tmp_path, kind, marked):
    run = tmp_path / "tiny" / "run"
    policy = RUNS[kind](run)
    if marked:
        TEACHERS[kind].mark(run)
    assert run_kind(run) == kind
    teacher = resolve_teacher("run", tmp_path / "tiny")
    assert type(teacher) is TEACHERS[kind] and teacher.path == policy and teacher.run == run
    assert type(teacher_at(policy)) is TEACHERS[kind]  # a policy folder on its own, as identity.teacher names it
    assert teacher_at(run) is None  # a run folder is no policy, though it holds a config.json
    for other in TEACHERS.values():
        if other is not TEACHERS[kind]:
            assert not other.holds(policy)
            with pytest.raises(DataError, match=rf"synth.teacher='run': the {other.label} run {run} has not finished .*"
                                                rf"python -m {other.job} name=run"):
                other.from_run(run, "synth.teacher='run'")


def test_the_marker_names_the_kind_before_anything_is_written(tmp_path):
    """An RLlib run killed before its first checkpoint is still known for what it is."""
    run = tmp_path / "rllib"
    TEACHERS["rllib"].mark(run)
    with pytest.raises(DataError, match=r"synth.teacher='rllib': .* `python -m r4t.jobs.rllib name=rllib`"):
        resolve_teacher("rllib", tmp_path)
    write_json(run / TEACHER_FILE, {"kind": "latent"})
    with pytest.raises(DataError, match=rf"{TEACHER_FILE}: kind='latent' is no teacher"):
        resolve_teacher("rllib", tmp_path)
    with pytest.raises(ConfigError, match=r"synth.teacher='nowhere': neither a run under .*r4t.jobs.rl.*"
                                          r"r4t.jobs.rllib.* nor a policy folder"):
        resolve_teacher("nowhere", tmp_path)


def test_identity_and_checks_of_each_kind(tmp_path):
    cfg = SynthConfig(reward=RewardConfig(k=TINY_K))
    lm = resolve_teacher(str(lm_run(tmp_path / "rl")), tmp_path / "elsewhere")
    rllib_run(tmp_path / "rllib")
    rllib = resolve_teacher("rllib", tmp_path)
    assert lm.run is None and lm.identity(cfg.policy) == {  # a folder given as is
        "teacher": str(lm.path), "policy_hash": sha256_file(lm.path / "model.safetensors"), "backend": "transformers"}
    assert rllib.identity(cfg.policy)["backend"] == "latent"  # the name written synthesis folders carry
    cat = SimpleNamespace(fingerprint=FINGERPRINT)
    rllib.check(cfg, cat)
    with pytest.raises(ConfigError, match="reward.k=4"):
        rllib.check(SynthConfig(reward=RewardConfig(k=4)), cat)
    with pytest.raises(ManifestMismatch, match="field .catalog_hash."):
        rllib.check(cfg, SimpleNamespace(fingerprint={**FINGERPRINT, "catalog_hash": "another"}))
    trained = resolve_teacher("rl", tmp_path)
    trained.check(cfg, cat)
    with pytest.raises(ConfigError, match="policy.max_new_tokens=7: the teacher .* was trained with"):
        trained.check(SynthConfig(policy=PolicyConfig(max_new_tokens=7)), cat)


@dataclass(frozen=True)
class QueryRows(Generation):
    """A teacher SynthWorker was never told about: each fan-out is k copies of the query."""

    def load(self):
        return self.policy_path

    def scored(self, policy, shard, query_emb, references, scorer, settings) -> dict:
        assert policy == self.policy_path  # loaded once, handed back
        q = np.repeat(query_emb, settings.samples, axis=0)
        rows = np.repeat(q[:, None], TINY_K, axis=1)
        return {**scorer.score_embeddings(q, rows, references), "malformed": np.zeros(len(q), bool),
                "subquery_emb": rows, "subqueries": [["x"]] * len(q)}


def test_synth_worker_runs_any_generation(tmp_path, tiny_catalog, encoder):
    settings = SynthSettings(samples=2, rows=3, splits=["train"])
    path = shard_path(tmp_path, "train", 0)
    shard = Shard("train", 0, ["q0", "q1"], TINY_QUERIES[:2], ["", ""], [[], []], [None, None], 7, str(path))
    worker = SynthWorker(QueryRows("stub"), lambda: RewardScorer(encoder, tiny_catalog.index, tiny_catalog.emb,
                                                                 RewardConfig(k=TINY_K)),
                         settings, {"policy_hash": "h"})
    assert worker.run(shard)["rows"] == 4
    table = pq.read_table(path)
    assert table.column("query_id").to_pylist() == ["q0", "q0", "q1", "q1"]
    assert set(table.column("policy_hash").to_pylist()) == {"h"}


def test_each_teacher_is_its_retrieval_method(tmp_path, tiny_catalog, encoder, tiny_policy):
    fingerprint = {**FINGERPRINT, "dim": tiny_catalog.emb.shape[1]}
    cat = SimpleNamespace(fingerprint=fingerprint, index=tiny_catalog.index, item_emb=tiny_catalog.emb)
    policy = PolicyConfig(template=PLAIN_TEMPLATE, context_items=0)
    for teacher in (teacher_at(tiny_policy), teacher_at(rllib_run(tmp_path / "rllib", fingerprint))):
        method = teacher_fanout(teacher, cat, encoder, policy, RewardConfig(k=TINY_K), 1.0, 0)
        assert method.name == teacher.method
        result = method.retrieve(TINY_QUERIES[:2], encoder.encode(TINY_QUERIES[:2]), 3, 1)
        assert result.items.shape == (2, 3)
