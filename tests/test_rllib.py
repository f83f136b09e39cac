"""The LLM-free teacher: the latent fan-out environment, RLlib PPO on it, the export, synthesis and retrieval.

Real things throughout: the packaged MiniLM, the tiny catalog's faiss index, RLlib's PPO with an EnvRunner actor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from conftest import TINY_K, TINY_QUERIES
from r4t.config import EvalConfig, RewardConfig, RLlibConfig, SynthConfig, load_config
from r4t.errors import ConfigError, DataError
from r4t.rewards.scorer import RewardScorer
from r4t.rl.latent import ActorMLP, LatentAction, LatentPolicy, actor_state_from_rllib, make_basis
from r4t.rl.latent_env import LatentFanoutEnv, LatentFanoutVectorEnv, LatentProblem

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = 8
# Sized for the tiny catalog: ~1 s an iteration on 2 cores. The policy starts at (about) the zero action, i.e. the
# fixed row offsets; 8 iterations lift it measurably above that and above uniformly random actions.
TINY_RLLIB = [f"reward.k={TINY_K}", "action.rank=4", "action.scale=1.0", "action.offset=1.0",
              f"rl.iterations={ITERATIONS}",
              "rl.train_batch_size=400", "rl.minibatch_size=100", "rl.num_epochs=8", "rl.lr=1e-3", "rl.hidden=[64]",
              "rl.checkpoint_every=4", "env_runners.envs_per_runner=4", "eval.split=train"]


def rllib_config(run_dir: Path, source: Path, *extra: str) -> RLlibConfig:
    return load_config(RLlibConfig, REPO / "jobs" / "rllib.yaml", [
        f"run_dir={run_dir}", f"datasets=[{{name: tiny, format: r4t, path: '{source}'}}]", *TINY_RLLIB, *extra])


def tiny_problem(tiny_catalog, encoder, basis: str = "pca", scale: float = 1.0, references=None) -> LatentProblem:
    scorer = RewardScorer(encoder, tiny_catalog.index, tiny_catalog.emb, RewardConfig(k=TINY_K))
    B = make_basis(basis, 4, tiny_catalog.emb)
    latent = LatentAction(TINY_K, B, scale, np.zeros((TINY_K, len(B)), np.float32))
    return LatentProblem(encoder.encode(TINY_QUERIES), references, scorer, latent)


# ------------------------------------------------------------------------------------------------ environment

def test_env_passes_the_gymnasium_checker(tiny_catalog, encoder) -> None:
    env = LatentFanoutEnv(problem=tiny_problem(tiny_catalog, encoder))
    check_env(env, skip_render_check=True)
    assert env.action_space == gym.spaces.Box(-1, 1, (TINY_K * 4,), np.float32)
    obs, info = env.reset(seed=0, options={"query": 2})
    np.testing.assert_allclose(obs, encoder.encode([TINY_QUERIES[2]])[0], atol=1e-6)
    _, _, terminated, truncated, _ = env.step(env.action_space.sample())
    assert terminated and not truncated  # one query per episode


@pytest.mark.parametrize("task", ["oar", "wscr"])
def test_reward_equals_the_scorer_of_the_lm_path_for_a_hand_built_action(task, tiny_catalog, encoder) -> None:
    """Build the action whose rows are exactly the embeddings of three sub-query texts: the env's reward must be
    what the RewardScorer gives the LM path for those texts as a completion (composite, or WSCR coverage)."""
    q_text, subs = TINY_QUERIES[0], ["white lace sundress", "straw bucket bag", "wide brim straw sun hat"]
    refs = [["i0", "i14", "i24", "i30"]] * len(TINY_QUERIES) if task == "wscr" else None
    q, t = encoder.encode([q_text])[0], encoder.encode(subs)
    d = len(q)
    scale = float(np.abs(t - q).max() * np.sqrt(d) * 1.01)  # identity basis: row = normalize(q + scale a / sqrt(d))
    env = LatentFanoutEnv(problem=tiny_problem(tiny_catalog, encoder, "identity", scale, refs))
    action = ((t - q) * np.sqrt(d) / scale).reshape(-1).astype(np.float32)
    assert np.abs(action).max() <= 1
    env.reset(seed=0, options={"query": 0})
    _, reward, _, _, info = env.step(action)
    expected = env.problem.scorer.score([q_text], ["\n".join(subs)], refs[:1] if refs else None)
    assert not expected["malformed"][0]
    assert reward == pytest.approx(float(expected["reward"][0]), abs=1e-5)
    for term in ("composite", "ground", "align"):
        assert info[term] == pytest.approx(float(expected[term][0]), abs=1e-5)
    if task == "wscr":
        assert info["recall"] == pytest.approx(float(expected["recall"][0])) and 0 < reward <= 1

    # The zero action puts every row on the query: no fan-out, perfect alignment, one distinct item.
    env.reset(options={"query": 0})
    _, _, _, _, info = env.step(np.zeros_like(action))
    assert info["align"] == pytest.approx(1.0, abs=1e-5) and info["div_raw"] == pytest.approx(1.0, abs=1e-4)


def test_vector_env_scores_in_one_batch_what_single_envs_score(tiny_catalog, encoder) -> None:
    """N episodes stepped together (next-step autoreset, as RLlib drives it) get the single env's rewards."""
    problem = tiny_problem(tiny_catalog, encoder)
    venv, env = LatentFanoutVectorEnv(num_envs=5, problem=problem), LatentFanoutEnv(problem=problem)
    obs, _ = venv.reset(seed=3)
    actions = venv.action_space.sample()
    _, rewards, terminated, truncated, _ = venv.step(actions)
    assert terminated.all() and not truncated.any()
    for i in range(5):
        query = int(np.flatnonzero((problem.query_emb == obs[i]).all(axis=1))[0])
        env.reset(options={"query": query})
        assert env.step(actions[i])[1] == pytest.approx(rewards[i], abs=1e-9)
    obs2, rewards2, terminated2, _, _ = venv.step(actions)  # the autoreset step: new queries, no reward
    assert not terminated2.any() and (rewards2 == 0).all() and venv.observation_space.contains(obs2)
    assert venv.step(actions)[2].all()


def test_exported_actor_matches_rllibs_default_ppo_module() -> None:
    """The safetensors inference path rebuilds RLlib's actor exactly (so retrieval needs no RLlib and no pickle)."""
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    obs_space, act_space = gym.spaces.Box(-1, 1, (12,), np.float32), gym.spaces.Box(-1, 1, (6,), np.float32)
    module = DefaultPPOTorchRLModule(observation_space=obs_space, action_space=act_space, model_config=vars(
        DefaultModelConfig(fcnet_hiddens=[16, 8], fcnet_activation="tanh", vf_share_layers=False)))
    actor = ActorMLP(12, [16, 8], 6, "tanh")
    actor.load_state_dict(actor_state_from_rllib(module.state_dict(), 2))
    obs = torch.randn(5, 12)
    with torch.no_grad():
        logits = module.forward_inference({"obs": obs})["action_dist_inputs"]
        mean, log_std = actor(obs)
    torch.testing.assert_close(torch.cat([mean, log_std], -1), logits)


# ------------------------------------------------------------------------------------------------ RLlib training

@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory, tiny_rl_source) -> tuple[RLlibConfig, dict]:
    from r4t.jobs import rllib as job

    cfg = rllib_config(tmp_path_factory.mktemp("rllib"), tiny_rl_source)
    return cfg, job.run(cfg, progress=False)["results"]["tiny"]


def test_rllib_training_beats_the_random_policy(trained, tiny_catalog, encoder) -> None:
    """The trained (deterministic) policy against uniformly random actions and against the zero action (where the
    untrained policy's mean sits), on the same queries and the same RewardScorer, measured here; and the logged
    episode return must rise."""
    cfg, result = trained
    policy = LatentPolicy.load(result["policy"])
    problem = tiny_problem(tiny_catalog, encoder)
    problem = LatentProblem(problem.query_emb, None, problem.scorer, policy.latent)
    queries = np.arange(len(TINY_QUERIES))
    trained_reward = problem.score(queries, policy.actions(problem.query_emb))["reward"].mean()
    rng = np.random.default_rng(0)
    many = np.repeat(queries, 64)
    random_reward = problem.score(many, rng.uniform(-1, 1, (len(many), policy.latent.dim)))["reward"].mean()
    zero_reward = problem.score(queries, np.zeros((len(queries), policy.latent.dim)))["reward"].mean()
    assert trained_reward > random_reward + 0.01 and trained_reward > zero_reward + 0.01
    log = [json.loads(line) for line in (Path(result["policy"]).parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, ITERATIONS + 1))
    assert np.mean([r["episode_return_mean"] for r in log[-2:]]) > log[0]["episode_return_mean"]
    assert all(r["env_steps"] > 0 and r["env_steps_per_s"] > 0 for r in log)
    # the job's own evaluation agrees: policy above random actions above the zero action
    ev = result["eval"]["results"]
    assert ev["RLlib policy"]["reward"]["mean"] > ev["random actions"]["reward"]["mean"]


def test_killed_run_resumes_from_its_last_checkpoint(trained, tmp_path) -> None:
    from r4t.jobs import rllib as job

    cfg, result = trained
    run = Path(result["policy"]).parent
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter-000004", f"iter-{ITERATIONS:06d}"]
    # the copy of a run killed while saving its last checkpoint, before the export
    shutil.copytree(Path(cfg.run_dir), tmp_path / "copy")
    copy = tmp_path / "copy" / "tiny" / "rllib"
    (copy / "checkpoints" / f"iter-{ITERATIONS:06d}" / "state.json").unlink()
    shutil.rmtree(copy / "policy")
    source = Path(cfg.datasets[0].path)
    out = job.run(rllib_config(tmp_path / "copy", source, "evaluate=false"), progress=False)["results"]
    assert out["tiny"]["resumed_from"] == 4 and out["tiny"]["iterations"] == ITERATIONS
    steps = [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, ITERATIONS + 1))  # the lines past the checkpoint were rewritten, not repeated
    assert LatentPolicy.load(copy / "policy").manifest["final"]
    # another action parameterization cannot resume this run
    with pytest.raises(ConfigError, match="action="):
        job.run(rllib_config(tmp_path / "copy", Path(cfg.datasets[0].path), "action.scale=0.5"), progress=False)


def test_wscr_task_trains_on_reference_coverage(ray_local, tmp_path, tiny_source) -> None:
    """rl.task=wscr: the EnvRunner's episodes carry the training sets' references; eval scores held-out coverage."""
    from r4t.jobs import rllib as job

    cfg = rllib_config(tmp_path, tiny_source, "rl.task=wscr", "rl.iterations=1", "rl.train_batch_size=100",
                       "rl.minibatch_size=50", "eval.split=test")
    result = job.run(cfg, progress=False)["results"]["tiny"]
    run = Path(result["policy"]).parent
    problem = json.loads((run / "problem" / "problem.json").read_text())
    assert [len(r) for r in problem["references"]] == [4, 4]  # the two training sets, what the env rewards
    log = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= log["episode_return_mean"] <= 1
    ev = result["eval"]
    assert ev["task"] == "wscr" and ev["queries"] == 2
    for terms in ev["results"].values():
        assert 0 <= terms["recall"]["mean"] <= 1 and terms["reward"]["mean"] == terms["recall"]["mean"]


@pytest.mark.parametrize("override, key", [("action.basis=random", "action.basis"),
                                           ("rl.algorithm=sac", "rl.algorithm"),
                                           ("rl.minibatch_size=5000", "rl.minibatch_size"),
                                           ("env_runners.envs_per_runner=0", "env_runners.envs_per_runner"),
                                           ("rl.task=judge", "rl.task"), ("action.scale=0", "action.scale")])
def test_bad_rllib_config_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(RLlibConfig, REPO / "jobs" / "rllib.yaml", [override])


# ------------------------------------------------------------------------------------------------ downstream

def test_synthesis_from_the_rllib_teacher_writes_the_same_target_format(trained, tiny_catalog) -> None:
    from r4t.jobs import synth as job
    from r4t.synth.targets import read_manifest, read_targets, target_arrays

    cfg, _ = trained
    scfg = load_config(SynthConfig, REPO / "jobs" / "synth.yaml", [
        f"run_dir={cfg.run_dir}", f"datasets=[{{name: tiny, format: r4t, path: '{cfg.datasets[0].path}'}}]",
        "name=synth_rllib", "synth.teacher=rllib", f"reward.k={TINY_K}", "synth.samples=4", "synth.rows=3",
        "synth.splits=[train]", "synth.queries_per_shard=3", "workers.count=1"])
    out = Path(job.run(scfg, progress=False)["tiny"]["out"])
    manifest = read_manifest(out)
    assert manifest["identity"]["backend"] == "latent" and manifest["splits"]["train"]["rows"] == 4 * 8
    table = read_targets(out, "train")
    x, valid = target_arrays(table)
    assert x.shape[1:] == (3, tiny_catalog.emb.shape[1]) and valid.all()
    row_of = {i: r for r, i in enumerate(tiny_catalog.ids)}
    for target, items in zip(x, table.column("item_ids").to_pylist()):
        assert len(set(items)) == 3
        np.testing.assert_allclose(target, tiny_catalog.emb[[row_of[i] for i in items]], atol=1e-6)
    assert table.column("subqueries").to_pylist() == [[]] * table.num_rows
    assert len({tuple(i) for i in table.column("item_ids").to_pylist()}) > 8  # samples differ within a query


def test_rllib_policy_is_a_retrieval_method(trained, encoder, tmp_path) -> None:
    from r4t.retrieve import Retriever

    cfg, result = trained
    overrides = [f"run_dir={cfg.run_dir}", f"datasets=[{{name: tiny, format: r4t, path: '{cfg.datasets[0].path}'}}]",
                 f"reward.k={TINY_K}", "eval.k=4"]
    ecfg = load_config(EvalConfig, REPO / "jobs" / "eval.yaml", overrides)
    retriever = Retriever.from_config(ecfg, "tiny", "RLlib policy", encoder)
    sets = retriever.retrieve(TINY_QUERIES[:3])
    rows = LatentPolicy.load(result["policy"]).rows(encoder.encode(TINY_QUERIES[:3]))
    for s, r in zip(sets, rows):
        assert s.method == "RLlib policy" and len(set(s.item_ids)) == 4
        np.testing.assert_allclose(s.generated, r, atol=1e-6)
    missing = load_config(EvalConfig, REPO / "jobs" / "eval.yaml", [*overrides, "methods.rllib_run=nope"])
    with pytest.raises(DataError, match="python -m r4t.jobs.rllib"):
        Retriever.from_config(missing, "tiny", "RLlib policy", encoder)
    with pytest.raises(DataError, match="python -m r4t.jobs.diffusion name=diffusion_rllib"):
        Retriever.from_config(ecfg, "tiny", "R4T-Diffusion@diffusion_rllib", encoder)
    with pytest.raises(ConfigError, match="methods.names"):
        load_config(EvalConfig, REPO / "jobs" / "eval.yaml", ["methods.names=[R4T-Diffusion@]"])
