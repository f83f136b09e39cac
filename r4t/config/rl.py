"""The RL stage (jobs/rl.yaml): Soft-GRPO on the fan-out LM with Ray actors.

`rl` is RLSettings, `workers` the rollout, reward and learner actors (WorkersConfig; `rl_workers` in the pipeline
files), `eval` the held-out comparison of the warm start and the RL policy (PolicyEvalConfig).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r4t.config.common import RunConfig, _check_actors, _require
from r4t.config.policy import PolicyConfig, _check_sampling


@dataclass
class RLSettings:
    task: str = "oar"  # oar: composite reward on OAR queries | wscr: coverage of the training reference sets
    steps: int = 60
    prompts_per_step: int = 8
    group_size: int = 8  # G samples per prompt
    chunk_prompts: int = 4  # prompts per rollout call: scoring one chunk overlaps generating the next
    temperature: float = 1.0
    top_p: float = 1.0
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    advantage: str = "grpo"  # grpo (std-normalized) | grpo_no_std
    loss: str = "soft_grpo"  # soft_grpo | grpo_kl (k3 reverse KL to the frozen initial policy)
    clip_eps: float = 0.2  # <= 0: unclipped ratio
    beta1: float = 0.05  # Soft-GRPO: importance-weighted reverse KL to the sampling policy
    beta2: float = 0.05  # Soft-GRPO: forward KL to the sampling policy (-log pi_theta)
    kl_beta: float = 0.05  # grpo_kl: weight of the k3 KL to the reference
    aggregation: str = "sequence"  # sequence (mean per completion, then over completions) | token
    # Each rollout batch gives minibatches x epochs optimizer steps: `epochs` passes over the batch, each split into
    # `minibatches` minibatches of whole prompt groups in a seeded random order. Only the first step sees
    # rho = pi_theta / pi_old = 1; with one step in all the clip never acts and the beta1 and beta2 gradients
    # cancel (beta1 = beta2), which leaves group-normalized REINFORCE. jobs/*.yaml use 4 x 2 (measured on
    # polyvore: higher reward than 1 x 1 for ~1.6x the learner's time).
    minibatches: int = 1
    epochs: int = 1
    # Dtypes: the learner loads the policy in float32 and scores log pi_theta in float32. log pi_old comes from
    # the sampler: float32 with the transformers backend and with vLLM on CPU, the checkpoint's dtype (bfloat16
    # for Qwen3 / Gemma3) with vLLM on GPU, where rho starts off 1 by bf16 rounding (vLLM in bfloat16 on the tiny
    # policies here: mean |log rho| 4e-3 to 1e-2, up to ~0.1 a token, inside clip_eps; the learner scoring in
    # bfloat16 too barely narrows it, the engines round differently, so the learner stays float32).
    # metrics.jsonl shows it as ratio_first / abs_log_ratio_first (float32 on both sides: < 1e-4).
    checkpoint_every: int = 20
    timeout_s: float = 900.0  # every remote call; a stuck actor becomes an error naming it and the step

    def __post_init__(self) -> None:
        _require(self.task in ("oar", "wscr"), "rl.task", self.task, "must be oar or wscr")
        for name in ("steps", "prompts_per_step", "chunk_prompts", "minibatches", "epochs", "checkpoint_every"):
            _require(getattr(self, name) > 0, f"rl.{name}", getattr(self, name), "must be positive")
        _require(self.group_size >= 2, "rl.group_size", self.group_size, "must be at least 2 (group-normalized)")
        _require(self.prompts_per_step % self.minibatches == 0, "rl.minibatches", self.minibatches,
                 f"must divide prompts_per_step={self.prompts_per_step} (minibatches hold whole prompt groups)")
        _check_sampling(self, "rl")
        _require(self.lr > 0, "rl.lr", self.lr, "must be positive")
        _require(self.aggregation in ("token", "sequence"), "rl.aggregation", self.aggregation,
                 "must be token or sequence")
        for name in ("beta1", "beta2", "kl_beta", "weight_decay"):
            _require(getattr(self, name) >= 0, f"rl.{name}", getattr(self, name), "must be non-negative")


@dataclass
class WorkersConfig:
    """Ray actors of the RL loop. CPUs are Ray's logical resources; torch_threads caps each actor's threads."""

    rollout: int = 1
    reward: int = 1
    rollout_cpus: float = 1.0
    reward_cpus: float = 1.0
    learner_cpus: float = 0.0  # the learner runs while rollout workers wait for it
    rollout_gpus: float = 0.0
    learner_gpus: float = 0.0
    torch_threads: int = 1  # per rollout and reward worker
    learner_threads: int = 2  # the learner computes while the others wait, so it may use every core
    # Custom Ray resources each reward worker needs, e.g. {scoring: 1}: the resource only a CPU worker group
    # advertises, so reward scoring runs there and not beside the GPUs.
    reward_resources: dict[str, float] = field(default_factory=dict)
    # How often Ray restarts a dead rollout or reward worker (its call is retried and gives the same result); then
    # the run stops naming it. The learner is never restarted: its optimizer state lives only in its checkpoints.
    restarts: int = 2

    def __post_init__(self) -> None:
        _check_actors(self, "reward_resources", ("rollout", "reward", "torch_threads", "learner_threads"),
                      ("rollout_cpus", "reward_cpus", "learner_cpus", "rollout_gpus", "learner_gpus", "restarts"))


@dataclass
class PolicyEvalConfig:
    split: str = "test"
    max_queries: int = 0  # 0 = all
    samples: int = 1  # fan-outs per query, each scored
    temperature: float = 1.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        _require(self.split in ("train", "val", "test"), "eval.split", self.split, "must be train, val or test")
        _require(self.samples >= 1, "eval.samples", self.samples, "must be at least 1")
        _require(self.temperature >= 0, "eval.temperature", self.temperature, "must be >= 0 (0 = greedy)")


@dataclass
class RLConfig(RunConfig):
    """Stage 1 (jobs/rl.yaml): bootstrap or load a policy, then Soft-GRPO on Ray actors, per dataset."""

    name: str = "rl"  # output folder under <run_dir>/<dataset>/, so ablations sit side by side
    resume: bool = True  # continue from the last checkpoint of this run when there is one
    evaluate: bool = True  # then score the warm start and the RL policy on held-out queries (eval.md)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rl: RLSettings = field(default_factory=RLSettings)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    eval: PolicyEvalConfig = field(default_factory=PolicyEvalConfig)
