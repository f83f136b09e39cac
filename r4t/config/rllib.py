"""The LLM-free teacher (jobs/rllib.yaml): RLlib PPO on a policy acting in embedding space.

`rl` is RLlibSettings (not the LM's RLSettings), `eval` the policy against the zero and random actions
(LatentEvalConfig); its Ray actors are `env_runners`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r4t.config.common import RunConfig, _require

LATENT_BASES = ("pca", "identity")


@dataclass
class LatentActionConfig:
    """How the latent policy's action becomes k rows in embedding space (r4t.rl.latent):
    row_i = normalize(q + scale * (clip(a_i + o_i, -1, 1) @ B) / sqrt(rank)), a_i in [-1, 1]^rank, B [rank, d]
    orthonormal rows, o_i fixed offsets. With offset 0 the zero action puts every row on the query (no fan-out);
    the basis keeps the action small."""

    basis: str = "pca"  # pca: top `rank` principal directions of the item embeddings | identity: rank = d, B = I
    rank: int = 16  # basis directions per row (ignored by identity)
    scale: float = 1.0  # largest residual norm a row can take from the query (at a corner of the action box)
    offset: float = 1.0  # fixed per-row offsets uniform in [-offset, offset] (seeded): start the k rows apart

    def __post_init__(self) -> None:
        _require(self.basis in LATENT_BASES, "action.basis", self.basis, f"must be one of {LATENT_BASES}")
        _require(self.rank >= 1, "action.rank", self.rank, "must be at least 1")
        _require(self.scale > 0, "action.scale", self.scale, "must be positive")
        _require(0 <= self.offset <= 1, "action.offset", self.offset, "must be in [0, 1]")


@dataclass
class RLlibSettings:
    """PPO (RLlib, new API stack) on the latent fan-out environment: one query per episode (a contextual bandit)."""

    task: str = "oar"  # oar: composite reward on OAR training queries | wscr: coverage of the training reference sets
    algorithm: str = "ppo"  # only PPO is wired up
    iterations: int = 40  # algo.train() calls
    train_batch_size: int = 2000  # env steps (= episodes) per iteration
    minibatch_size: int = 250
    num_epochs: int = 6  # SGD passes over each batch
    lr: float = 1e-3
    entropy_coeff: float = 0.0
    clip_param: float = 0.2
    vf_loss_coeff: float = 1.0
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # actor and critic MLPs
    activation: str = "tanh"  # tanh | relu
    checkpoint_every: int = 10  # iterations; the last iteration is always saved
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        _require(self.task in ("oar", "wscr"), "rl.task", self.task, "must be oar or wscr")
        _require(self.algorithm == "ppo", "rl.algorithm", self.algorithm, "only ppo is supported")
        for name in ("iterations", "train_batch_size", "minibatch_size", "num_epochs", "checkpoint_every",
                     "keep_checkpoints"):
            _require(getattr(self, name) >= 1, f"rl.{name}", getattr(self, name), "must be at least 1")
        _require(self.minibatch_size <= self.train_batch_size, "rl.minibatch_size", self.minibatch_size,
                 f"must be <= rl.train_batch_size={self.train_batch_size}")
        _require(self.lr > 0, "rl.lr", self.lr, "must be positive")
        _require(self.entropy_coeff >= 0, "rl.entropy_coeff", self.entropy_coeff, "must be >= 0")
        _require(self.clip_param > 0, "rl.clip_param", self.clip_param, "must be positive")
        _require(bool(self.hidden) and all(h >= 1 for h in self.hidden), "rl.hidden", self.hidden,
                 "must be a non-empty list of positive layer sizes")
        _require(self.activation in ("tanh", "relu"), "rl.activation", self.activation, "must be tanh or relu")


@dataclass
class EnvRunnersConfig:
    """RLlib EnvRunner actors (sampling); the learner runs in the driver process (num_learners=0)."""

    count: int = 1  # EnvRunner actors; 0 samples in the driver
    cpus: float = 1.0  # per EnvRunner
    envs_per_runner: int = 32  # vectorized environments per EnvRunner (one batched policy call for all of them)
    batched: bool = True  # score the runner's envs in one RewardScorer call (LatentFanoutVectorEnv); false: one each
    sample_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        _require(self.count >= 0, "env_runners.count", self.count, "must be >= 0")
        _require(self.cpus >= 0, "env_runners.cpus", self.cpus, "must be >= 0")
        _require(self.envs_per_runner >= 1, "env_runners.envs_per_runner", self.envs_per_runner, "must be >= 1")
        _require(self.sample_timeout_s > 0, "env_runners.sample_timeout_s", self.sample_timeout_s, "must be > 0")


@dataclass
class LatentEvalConfig:
    split: str = "test"  # held-out queries of rl.task: the trained policy vs the zero action vs random actions
    max_queries: int = 0  # 0 = all

    def __post_init__(self) -> None:
        _require(self.split in ("train", "val", "test"), "eval.split", self.split, "must be train, val or test")
        _require(self.max_queries >= 0, "eval.max_queries", self.max_queries, "must be >= 0")


@dataclass
class RLlibConfig(RunConfig):
    """The LLM-free teacher (jobs/rllib.yaml): a fan-out policy acting in embedding space, trained with RLlib."""

    name: str = "rllib"  # output folder <run_dir>/<dataset>/<name>/
    resume: bool = True  # continue from the last checkpoint of this run when there is one
    evaluate: bool = True  # then score the policy, the zero action and random actions on eval.split
    rl: RLlibSettings = field(default_factory=RLlibSettings)
    action: LatentActionConfig = field(default_factory=LatentActionConfig)
    env_runners: EnvRunnersConfig = field(default_factory=EnvRunnersConfig)
    eval: LatentEvalConfig = field(default_factory=LatentEvalConfig)
