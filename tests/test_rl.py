"""The RL stage through real Ray actors on a tiny fixed problem: a tiny bootstrapped policy, the tiny catalog,
the real MiniLM reward. Covers the loop, weight pushes, checkpoints and exact resume, timeouts, the job entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import TINY_K, TINY_QUERIES, TINY_RL_OVERRIDES
from r4t.catalog import prepare_catalog
from r4t.config import DatasetSpec, PolicyConfig, RewardConfig, RLConfig, RLSettings, load_config
from r4t.errors import ConfigError, R4TError
from r4t.jobs.rl import prompt_pool
from r4t.policy.backend import SamplingSettings
from r4t.policy.hf_backend import TransformersBackend
from r4t.policy.prompt import build_prompt
from r4t.rewards.scorer import RewardScorer
from r4t.rl.checkpoint import latest_checkpoint
from r4t.rl.trainer import PromptPool, RLTrainer, check_config

REPO = Path(__file__).resolve().parents[1]
STEPS = 10


def tiny_config(run_dir: Path, source: Path, steps: int, **rl) -> RLConfig:
    settings = {"steps": steps, "prompts_per_step": 8, "group_size": 8, "chunk_prompts": 4, "lr": 3e-4,
                "aggregation": "sequence", "checkpoint_every": 4, **rl}
    return RLConfig(run_dir=str(run_dir), datasets=[DatasetSpec("tiny", "r4t", str(source))],
                    reward=RewardConfig(k=TINY_K), policy=PolicyConfig(max_new_tokens=48), rl=RLSettings(**settings))


def train(cfg: RLConfig, policy: Path, encoder) -> Path:
    spec = cfg.datasets[0]
    cat = prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress=False)
    trainer = RLTrainer(cfg, spec, prompt_pool(cat, "oar"), policy, Path(cfg.run_dir) / spec.name / cfg.name)
    try:
        return trainer.train(progress=False)
    finally:
        trainer.shutdown()


def mean_reward(policy: Path, tiny_catalog, encoder) -> float:
    """Reward of 8 queries x 16 samples with fixed seeds: a steadier measure than one training step's batch."""
    backend = TransformersBackend(str(policy))
    rollouts = backend.generate([build_prompt(q, k=TINY_K) for q in TINY_QUERIES],
                                SamplingSettings(n=16, max_new_tokens=48, seed=123))
    scorer = RewardScorer(encoder, tiny_catalog.index, tiny_catalog.emb, RewardConfig(k=TINY_K))
    return float(np.mean(scorer.score([TINY_QUERIES[r.prompt_index] for r in rollouts],
                                      [r.text for r in rollouts])["reward"]))


def test_prompt_pool_visits_every_query_once_per_epoch() -> None:
    pool = PromptPool([f"q{i}" for i in range(10)], [None] * 10)
    epoch = pool.step_indices(0, 5, seed=3) + pool.step_indices(1, 5, seed=3)
    assert sorted(epoch) == list(range(10))
    assert pool.step_indices(1, 5, seed=3) == pool.step_indices(1, 5, seed=3)
    assert pool.step_indices(0, 5, seed=3) != pool.step_indices(0, 5, seed=4)


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory, tiny_rl_source, tiny_policy, encoder) -> tuple[RLConfig, Path]:
    cfg = tiny_config(tmp_path_factory.mktemp("rl"), tiny_rl_source, steps=STEPS)
    return cfg, train(cfg, tiny_policy, encoder)


def test_rl_changes_weights_and_raises_reward(trained, tiny_policy, tiny_catalog, encoder) -> None:
    cfg, final = trained
    before, after = load_file(str(tiny_policy / "model.safetensors")), load_file(str(final / "model.safetensors"))
    assert any(not np.allclose(before[k].numpy(), after[k].numpy()) for k in before)
    assert mean_reward(final, tiny_catalog, encoder) > mean_reward(tiny_policy, tiny_catalog, encoder) + 0.05


def test_metrics_log_has_every_step_and_term(trained) -> None:
    cfg, final = trained
    lines = [json.loads(x) for x in (final.parents[1] / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, STEPS + 1))
    for key in ("reward_mean", "reward_std", "malformed_frac", "kl_reverse", "kl_forward", "entropy",
                "gen_tokens_per_s", "scored_fanouts_per_s", "loss", "grad_norm"):
        assert all(np.isfinite(x[key]) for x in lines), key
    info = json.loads((final / "r4t.json").read_text())
    assert info["step"] == STEPS and info["final"] and info["parent"]


def test_resume_continues_exactly(trained, tmp_path: Path, tiny_rl_source, tiny_policy, encoder) -> None:
    """Keep only the step-4 checkpoint of the trained run (as if killed at step 5) and rerun: same final weights
    and optimizer state as the uninterrupted run, and one metrics line per step."""
    cfg, final = trained
    run_dir = tmp_path / "run"
    shutil.copytree(cfg.run_dir, run_dir)
    out = run_dir / "tiny" / cfg.name
    for folder in (out / "checkpoints").iterdir():
        if folder.name != "step-000004":
            shutil.rmtree(folder)
    shutil.copytree(out / "checkpoints" / "step-000004", out / "checkpoints" / "step-000008.tmp")  # a killed save
    assert latest_checkpoint(out).name == "step-000004"
    resumed = train(tiny_config(run_dir, tiny_rl_source, steps=STEPS), tiny_policy, encoder)
    assert resumed.name == final.name
    for file in ("model.safetensors", "optimizer.safetensors"):
        a, b = load_file(str(final / file)), load_file(str(resumed / file))
        assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), file
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == \
        list(range(1, STEPS + 1))


def test_timeout_names_the_actor_and_step(ray_local, tmp_path: Path, tiny_rl_source, tiny_policy, encoder) -> None:
    cfg = tiny_config(tmp_path, tiny_rl_source, steps=1, timeout_s=0.01)
    with pytest.raises(R4TError, match=r"RL step 0: rollout worker 0 did not answer within"):
        train(cfg, tiny_policy, encoder)


@pytest.mark.parametrize("override, key", [("rl.group_size=1", "rl.group_size"), ("rl.loss=ppo", "rl.loss"),
                                           ("rl.updates_per_batch=3", "rl.updates_per_batch"),
                                           ("policy.backend=tgi", "policy.backend")])
def test_bad_rl_config_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg = load_config(RLConfig, REPO / "jobs" / "rl.yaml", [override])
        check_config(cfg)


def test_job_entry_point_bootstraps_trains_and_evaluates(ray_local, tmp_path: Path, tiny_source: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    from r4t.jobs.rl import main

    argv = ["--config", str(REPO / "jobs" / "rl.yaml"), f"run_dir={tmp_path}",
            f"datasets=[{{name: tiny, format: r4t, path: '{tiny_source}'}}]", *TINY_RL_OVERRIDES]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| tiny | warm start |" in out and "| tiny | RL (rl) |" in out
    run = tmp_path / "tiny"
    assert (run / "policy" / "warm_start" / "model.safetensors").is_file()
    assert latest_checkpoint(run / "rl").name == "step-000002"
    ev = json.loads((run / "rl" / "eval.json").read_text())
    assert set(ev["results"]) == {"warm start", "RL (rl)"}
    for res in ev["results"].values():
        assert res["queries"] == {"oar": 3, "wscr": 2}
        assert 0 <= res["oar"]["malformed"]["mean"] <= 1 and 0 <= res["wscr"]["recall"]["mean"] <= 1
    # Rerun: the warm start and the finished run are reused, nothing retrains.
    stamp = (run / "policy" / "warm_start" / "model.safetensors").stat().st_mtime_ns
    assert main(argv) == 0
    assert (run / "policy" / "warm_start" / "model.safetensors").stat().st_mtime_ns == stamp
    assert latest_checkpoint(run / "rl").name == "step-000002"


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_rollout_workers_sample_with_the_pushed_weights(backend: str, ray_local, tmp_path: Path, tiny_rl_source,
                                                        tiny_policy, encoder) -> None:
    """After each update the learner's weights go to the rollout actors: at every later step the learner's own
    log-probs of the sampled tokens equal the sampler's (ratio 1, KL 0). Stale weights in the sampler would show
    up here as a ratio away from 1."""
    cfg = tiny_config(tmp_path, tiny_rl_source, steps=3, lr=3e-3)
    cfg.policy.backend = backend
    train(cfg, tiny_policy, encoder)
    lines = [json.loads(x) for x in (tmp_path / "tiny" / cfg.name / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert line["ratio_mean"] == pytest.approx(1.0, abs=1e-3), line
        assert abs(line["kl_forward"]) < 1e-3 and abs(line["kl_reverse"]) < 1e-3, line
    assert lines[0]["entropy"] != lines[-1]["entropy"]  # the policy did change between steps


def test_a_catalog_without_training_queries_is_named():
    from r4t.data.schema import QUERIES_SCHEMA
    from r4t.errors import DataError
    from r4t.jobs.rl import prompt_pool

    class Cat:  # a catalog given as items only
        name = "mine"

        @staticmethod
        def queries(task, split):
            return QUERIES_SCHEMA.empty_table()

    with pytest.raises(DataError, match="mine: no OAR training queries.*sets.parquet"):
        prompt_pool(Cat, "oar")
