"""RLlib PPO (new API stack) on the latent fan-out environment: the driver loop, checkpoints, metrics, export.

    trainer = LatentTrainer(cfg, problem_dir, out)
    policy_dir = trainer.train()

EnvRunners are Ray actors that build the environment from `problem_dir`; the learner runs in the driver
(num_learners=0). Every `checkpoint_every` iterations `algo.save_to_path` writes
<out>/checkpoints/iter-NNNNNN/algorithm/ and then state.json (the checkpoint counts only once it exists); a
rerun restores the last one and continues. RLlib checkpoints hold pickles: only this training run reads them
back. What retrieval and synthesis read is the export, <out>/policy/ (safetensors + JSON, r4t.rl.latent).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from r4t.config import RLlibConfig
from r4t.io import read_json, write_json
from r4t.metrics import DashboardGauges, MetricsLog
from r4t.rl.latent import LatentAction, actor_state_from_rllib, export_policy
from r4t.rl.latent_env import make_latent_env
from r4t.storage import publish, remove

STATE_FILE = "state.json"
ENV_ID = "r4t_latent_fanout"
_ITER_DIR = re.compile(r"^iter-(\d{6})$")
GAUGES = DashboardGauges("r4t_rllib", ("episode_return_mean", "env_steps_per_s", "iteration", "learner_seconds"),
                         ("dataset", "run"), "RLlib latent fan-out policy")


def ppo_config(cfg: RLlibConfig, problem_dir: Path):
    """The PPOConfig: new API stack, EnvRunner actors, a local learner, RLlib's default MLP module."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env

    register_env(ENV_ID, make_latent_env)  # in Ray's registry: EnvRunner actors build the env by this name

    rl, runners = cfg.rl, cfg.env_runners
    return (PPOConfig()
            .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
            .environment(ENV_ID, env_config={"problem": str(Path(problem_dir).resolve())})
            .env_runners(num_env_runners=runners.count, num_cpus_per_env_runner=runners.cpus,
                         num_envs_per_env_runner=runners.envs_per_runner, sample_timeout_s=runners.sample_timeout_s,
                         gym_env_vectorize_mode="vector_entry_point" if runners.batched else "sync")
            .learners(num_learners=0)
            .training(train_batch_size_per_learner=rl.train_batch_size, minibatch_size=rl.minibatch_size,
                      num_epochs=rl.num_epochs, lr=rl.lr, entropy_coeff=rl.entropy_coeff, clip_param=rl.clip_param,
                      vf_loss_coeff=rl.vf_loss_coeff, gamma=1.0, lambda_=1.0)  # one-step episodes
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(rl.hidden), fcnet_activation=rl.activation,
                                                       vf_share_layers=False, head_fcnet_hiddens=[]))
            .debugging(seed=cfg.seed))


def latest_iteration(out: Path) -> Path | None:
    """The complete checkpoint with the highest iteration, or None."""
    found = [(int(m.group(1)), p) for p in (out / "checkpoints").glob("iter-*")
             if (m := _ITER_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


class LatentTrainer:
    def __init__(self, cfg: RLlibConfig, problem_dir: Path, out: Path, latent: LatentAction, manifest: dict,
                 tags: dict[str, str]):
        self.cfg, self.out, self.latent, self.manifest, self.tags = cfg, out, latent, manifest, tags
        self.algo = ppo_config(cfg, problem_dir).build_algo()
        self.iteration, self.env_steps, self.seconds = 0, 0, 0.0
        last = latest_iteration(out) if cfg.resume else None
        if last is not None:
            self.algo.restore_from_path(str((last / "algorithm").resolve()))
            state = read_json(last / STATE_FILE)
            self.iteration, self.env_steps, self.seconds = state["iteration"], state["env_steps"], state["seconds"]
        self.resumed_from = self.iteration
        self.log = MetricsLog(out / "metrics.jsonl", self.iteration, GAUGES)

    def _record(self, result: dict, seconds: float) -> dict:
        runners = result.get("env_runners", {})
        steps = int(runners.get("num_env_steps_sampled", 0))
        self.env_steps += steps
        self.seconds += seconds
        learner = result.get("learners", {}).get("default_policy", {})
        return {"step": self.iteration, "episode_return_mean": runners.get("episode_return_mean"),
                "episode_return_min": runners.get("episode_return_min"),
                "episode_return_max": runners.get("episode_return_max"),
                "env_steps": steps, "env_steps_total": self.env_steps, "seconds": seconds,
                "wall_s_total": self.seconds, "env_steps_per_s": steps / seconds if seconds else None,
                "learner_seconds": result.get("timers", {}).get("learner_update_timer"),
                **{k: learner.get(k) for k in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss")}}

    def save(self) -> Path:
        folder = self.out / "checkpoints" / f"iter-{self.iteration:06d}"
        shutil.rmtree(folder, ignore_errors=True)
        self.algo.save_to_path(str((folder / "algorithm").resolve()))
        write_json(folder / STATE_FILE, {"iteration": self.iteration, "env_steps": self.env_steps,
                                         "seconds": self.seconds})
        publish(folder)  # a URI run_dir: a killed driver resumes from here on any node
        publish(self.log.path)
        done = sorted(p for p in (self.out / "checkpoints").glob("iter-*") if (p / STATE_FILE).is_file())
        for old in done[: -self.cfg.rl.keep_checkpoints]:
            remove(old)
        return folder

    def train(self, progress: bool = True) -> Path:
        """Iterate to rl.iterations (from a resumed checkpoint), export the policy → <out>/policy."""
        rl = self.cfg.rl
        while self.iteration < rl.iterations:
            start = time.perf_counter()
            result = self.algo.train()
            self.iteration += 1
            record = self._record(result, time.perf_counter() - start)
            self.log.write(record, self.tags)
            if progress:
                print(f"[rllib {self.tags['dataset']}] iter {self.iteration}/{rl.iterations} "
                      f"return {record['episode_return_mean']:.4f} ({record['env_steps_per_s']:.0f} env steps/s)",
                      flush=True)
            if self.iteration % rl.checkpoint_every == 0 or self.iteration == rl.iterations:
                self.save()
        return self.export()

    def export(self) -> Path:
        module = self.algo.get_module()
        state = {k: v for k, v in module.state_dict().items()}
        spec = {"obs_dim": self.latent.basis.shape[1], "hidden": list(self.cfg.rl.hidden),
                "activation": self.cfg.rl.activation}
        manifest = {**self.manifest, "iteration": self.iteration, "env_steps": self.env_steps,
                    "wall_s": self.seconds, "final": self.iteration >= self.cfg.rl.iterations}
        return export_policy(self.out / "policy", actor_state_from_rllib(state, len(self.cfg.rl.hidden)),
                             self.latent, spec, manifest)

    def shutdown(self) -> None:
        self.algo.stop()
