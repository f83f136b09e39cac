"""The RL driver: a thin loop over Ray actors.

    for each step:
        rollout workers generate G samples for each prompt of the step with the learner's latest weights, a chunk
        of prompts per call; as each chunk arrives, a reward worker scores it (while the next chunk is generated);
        group-normalized advantages; the learner updates.

Every remote call has a timeout; a timeout or a dead actor becomes an R4TError naming the actor and the step.
Rollout and reward workers that die are restarted by Ray and their call retried (`workers.restarts`): a call's
result depends only on its arguments (the weights' version and the sampling seed travel with it), so the run ends
as an uninterrupted one would. A dead learner stops the run; a rerun resumes from its last checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from r4t.config import RLConfig, to_dict
from r4t.errors import R4TError
from r4t.metrics import MetricsLog
from r4t.policy.backend import Rollout, SamplingSettings
from r4t.policy.model import read_info
from r4t.rewards.scorer import scorer_factory
from r4t.rl.actors import Learner, RewardWorker, RolloutWorker
from r4t.rl.advantages import get_advantage
from r4t.policy.context import resolve
from r4t.rl.checkpoint import checkpoint_dir, latest_checkpoint
from r4t.rl.losses import get_loss
from r4t.rl.step_stats import GAUGES, reward_stats
from r4t.storage import fetch, publish


@dataclass
class PromptPool:
    queries: list[str]
    prompts: list[str]  # the policy's prompt per query (r4t.policy.context.fanout_prompts)
    listed: list[list[str]]  # the catalog items each prompt lists (empty without a context)
    references: list[list[str] | None]  # a reference set per query for the WSCR task, else None

    def step_indices(self, step: int, count: int, seed: int) -> list[int]:
        """Epoch-wise shuffled order, a pure function of (seed, step): a resumed run sees the same prompts."""
        n, out = len(self.queries), []
        for i in range(step * count, (step + 1) * count):
            epoch = i // n
            out.append(int(np.random.default_rng([seed, epoch]).permutation(n)[i % n]))
        return out


def check_config(cfg: RLConfig) -> None:
    """Names that config validation cannot know (the registries live here): fail before any actor starts."""
    get_loss(cfg.rl.loss)
    get_advantage(cfg.rl.advantage)


def _call(refs, what: str, step: int, timeout: float):
    try:
        return ray.get(refs, timeout=timeout)
    except GetTimeoutError:
        raise R4TError(f"RL step {step}: {what} did not answer within {timeout:.0f} s (rl.timeout_s)") from None
    except RayActorError as e:
        raise R4TError(f"RL step {step}: {what} died: {str(e).splitlines()[0]}") from None
    except RayTaskError as e:
        raise R4TError(f"RL step {step}: {what} failed: {e.cause!r}") from None


class RLTrainer:
    def __init__(self, cfg: RLConfig, spec, pool: PromptPool, init_path: Path, out_dir: Path):
        check_config(cfg)
        out_dir, init_path = Path(out_dir).resolve(), Path(init_path).resolve()  # actors may run elsewhere
        self.cfg, self.spec, self.pool, self.out_dir = cfg, spec, pool, out_dir
        w, s = cfg.workers, cfg.rl
        resume_from = latest_checkpoint(out_dir) if cfg.resume else None
        self.start_step, model_path = 0, str(init_path)
        if resume_from is not None:
            self.start_step, model_path = read_info(resume_from)["step"], str(resume_from)
        self.init_path = str(init_path)
        # The learner keeps max_restarts=0: a restarted one would silently start over from model_path.
        self.learner = ray.remote(Learner).options(num_cpus=w.learner_cpus, num_gpus=w.learner_gpus).remote(
            model_path, s, cfg.policy.device, w.learner_threads, str(resume_from) if resume_from else None,
            str(init_path))
        # Calls are retried for as long as the actor can come back (max_task_retries=-1): a lost node makes an actor
        # unreachable for a while before it is declared dead and restarted, and each failed try would use a retry.
        restartable = {"max_restarts": w.restarts, "max_task_retries": -1}
        self.rollout = [ray.remote(RolloutWorker).options(num_cpus=w.rollout_cpus, num_gpus=w.rollout_gpus,
                                                          **restartable).remote(
            cfg.policy.backend, model_path, cfg.policy.device, w.torch_threads, self.start_step)
            for _ in range(w.rollout)]
        factory = scorer_factory(cfg.run_dir, spec, cfg.embed, cfg.index, cfg.reward, cfg.seed)
        self.reward = [ray.remote(RewardWorker).options(num_cpus=w.reward_cpus, resources=dict(w.reward_resources),
                                                        **restartable).remote(factory, w.torch_threads)
                       for _ in range(w.reward)]
        self.weights = None  # (version, ref) of the learner's weights once it has updated, for the rollout workers
        self.advantage = get_advantage(s.advantage)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.log = MetricsLog(out_dir / "metrics.jsonl", self.start_step, GAUGES)

    def _rollouts_and_scores(self, step: int, idx: list[int]) -> tuple[list[Rollout], dict[str, np.ndarray], dict]:
        """Generate chunk by chunk; score each chunk as soon as it arrives, so scoring overlaps generation."""
        s, cfg, timeout = self.cfg.rl, self.cfg, self.cfg.rl.timeout_s
        chunks = [idx[i:i + s.chunk_prompts] for i in range(0, len(idx), s.chunk_prompts)]
        pending = {}
        for c, chunk in enumerate(chunks):
            worker = c % len(self.rollout)
            settings = SamplingSettings(n=s.group_size, temperature=s.temperature, top_p=s.top_p,
                                        max_new_tokens=cfg.policy.max_new_tokens,
                                        seed=int(np.random.default_rng([cfg.seed, step, c]).integers(2**31)))
            prompts = [self.pool.prompts[i] for i in chunk]
            ref = self.rollout[worker].generate.remote(prompts, settings, self.weights)
            pending[ref] = (c, f"rollout worker {worker}")
        generated, scoring, gen_seconds = {}, {}, 0.0
        deadline = time.monotonic() + timeout
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                names = sorted({pending[r][1] for r in pending})
                raise R4TError(f"RL step {step}: {', '.join(names)} did not answer within {timeout:.0f} s")
            c, name = pending.pop(done[0])
            rollouts, seconds = _call(done[0], name, step, timeout)
            gen_seconds += seconds
            generated[c] = rollouts
            queries = [self.pool.queries[chunks[c][r.prompt_index]] for r in rollouts]
            refs = [self.pool.references[chunks[c][r.prompt_index]] for r in rollouts]
            w = c % len(self.reward)
            texts = [resolve(r.text, self.pool.listed[chunks[c][r.prompt_index]]) for r in rollouts]
            scoring[c] = (self.reward[w].score.remote(queries, texts,
                                                      None if refs[0] is None else refs), f"reward worker {w}")
        rollouts, parts, score_seconds = [], [], 0.0
        for c in range(len(chunks)):
            ref, name = scoring[c]
            out, seconds = _call(ref, name, step, timeout)
            score_seconds += seconds
            rollouts += generated[c]
            parts.append(out)
        scores = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        tokens = sum(len(r.completion_ids) for r in rollouts)
        timing = {"gen_tokens": tokens, "gen_tokens_per_s": tokens / max(gen_seconds, 1e-9),
                  "scored_fanouts_per_s": len(rollouts) / max(score_seconds, 1e-9),
                  "truncated_frac": float(np.mean([r.truncated for r in rollouts]))}
        return rollouts, scores, timing

    def _save(self, step: int, stats: dict, final: bool = False) -> Path:
        folder = checkpoint_dir(self.out_dir, step)
        info = {"step": step, "kind": "rl", "final": final, "parent": self.init_path, "reward": stats,
                "config": to_dict(self.cfg), "dataset": self.spec.name}
        _call(self.learner.save.remote(str(folder), info), "learner", step, self.cfg.rl.timeout_s)
        publish(self.log.path)  # the learner published the checkpoint; the log is the driver's
        return folder

    def train(self, progress: bool = True) -> Path:
        """→ the final checkpoint, on this node (the learner may have written it on another)."""
        s, tags = self.cfg.rl, {"dataset": self.spec.name, "run": self.cfg.name}
        stats: dict = {}
        saved = None
        for step in range(self.start_step, s.steps):
            t0 = time.perf_counter()
            idx = self.pool.step_indices(step, s.prompts_per_step, self.cfg.seed)
            rollouts, scores, timing = self._rollouts_and_scores(step, idx)
            advantages = self.advantage(np.asarray(scores["reward"], float), s.group_size)
            order_seed = int(np.random.default_rng([self.cfg.seed, step]).integers(2**31))  # minibatch order
            learner = _call(self.learner.update.remote(rollouts, advantages, order_seed), "learner", step,
                            s.timeout_s)
            self.weights = (step + 1, self.learner.state_dict.remote())
            stats = {"step": step + 1, **reward_stats(scores), **learner, **timing,
                     "step_seconds": time.perf_counter() - t0}
            self.log.write(stats, tags)
            if progress:
                print(f"[rl {self.spec.name}/{self.cfg.name}] step {step + 1}/{s.steps} "
                      f"reward {stats.get('reward_mean', float('nan')):.3f} "
                      f"malformed {stats['malformed_frac']:.2f} kl {learner['kl_reverse']:.4f} "
                      f"{timing['gen_tokens_per_s']:.0f} tok/s {stats['step_seconds']:.1f} s", flush=True)
            if (step + 1) % s.checkpoint_every == 0 or step + 1 == s.steps:
                saved = self._save(step + 1, stats, final=step + 1 == s.steps)
        return fetch(saved) if saved else latest_checkpoint(self.out_dir)

    def shutdown(self) -> None:
        """Free the actors' CPUs for the next dataset or stage."""
        for actor in [self.learner, *self.rollout, *self.reward]:
            ray.kill(actor)
