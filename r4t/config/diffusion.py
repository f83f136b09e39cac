"""The diffusion stage (jobs/diffusion.yaml): Ray Train fits the set denoiser; the sampler that retrieves with it.

`workers` is Ray Train's DDP workers (TrainWorkersConfig; `train_workers` in the pipeline files), `eval` the
comparison of returned sets after training (RetrievalEvalConfig, the same schema as `r4t eval`'s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from r4t.config.common import RunConfig, _require
from r4t.config.policy import PolicyConfig

SAMPLERS = ("euler", "heun", "sde")


@dataclass
class SamplerConfig:
    """How the diffusion retriever samples (r4t.diffusion.samplers)."""

    # Defaults measured here (scripts/sampler_sweep.py, validation split, BENCHMARKS.md): one Euler step scores no
    # lower on the judge than 256 (Euler, Heun or SDE) and returns 98% (polyvore) / 87% (playlists) of their items,
    # so one network evaluation is the default; guidance (the paper: 0.1) changed no metric beyond its interval.
    method: str = "euler"
    steps: int = 1
    # Inside what training covers (train.sigma_min/max). The paper's [1e-4, 80] is EDM's range for data of scale
    # 0.5; unit-norm rows of d=384 have sigma_data ~0.05, and sigma = 2 already buries a row (noise norm ~39).
    sigma_min: float = 2e-3
    sigma_max: float = 2.0
    rho: float = 7.0  # EDM's time-discretization exponent
    guidance: float = 0.0  # CFG strength w: D = D_cond + w (D_cond - D_null)
    churn: float = 0.0  # Heun only: EDM S_churn (0 = deterministic)
    churn_min: float = 0.0  # churn applies for sigma in [churn_min, churn_max]
    churn_max: float = 1e9
    s_noise: float = 1.0
    device: str = "cpu"  # where the denoiser runs when retrieving (cpu, cuda, cuda:1, ...)

    def __post_init__(self) -> None:
        _require(self.method in SAMPLERS, "sampler.method", self.method, f"unknown; known: {SAMPLERS}")
        _require(self.steps >= 1, "sampler.steps", self.steps, "must be at least 1")
        _require(0 < self.sigma_min < self.sigma_max, "sampler.sigma_min", self.sigma_min,
                 f"need 0 < sigma_min < sigma_max={self.sigma_max}")
        _require(self.guidance >= 0, "sampler.guidance", self.guidance, "must be >= 0")
        _require(self.churn >= 0, "sampler.churn", self.churn, "must be >= 0")


@dataclass
class ModelSettings:
    """The set denoiser: a preset (small: CPU demo; paper: the paper's 53.9M at d=128), any field overridable."""

    preset: str = "small"
    rows: Optional[int] = None  # L; must equal the targets' L
    hidden: Optional[int] = None
    mlp: Optional[int] = None
    heads: Optional[int] = None
    layers: Optional[int] = None
    # The condition: the query and its C nearest catalog items (r4t.policy.context, the items an LM teacher's
    # prompt lists), at most `context_per_category` per category first; 0 items: the query alone.
    context_items: int = 16
    context_per_category: int = 1
    # Rows carry a learned slot each and the targets are ordered (context items by their place in the list):
    # a row no longer has to agree with nine others on which item it takes (r4t.diffusion.denoiser).
    row_slots: bool = True

    def __post_init__(self) -> None:
        _require(self.context_items >= 0, "model.context_items", self.context_items, "must be >= 0")
        _require(self.context_per_category >= 0, "model.context_per_category", self.context_per_category,
                 "must be >= 0")


@dataclass
class DiffusionTrainSettings:
    steps: int = 3000
    batch_size: int = 256  # global: split over the workers
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    cond_drop: float = 0.1  # condition replaced by the learned null vector (classifier-free guidance)
    p_mean: float = -0.5  # ln(sigma / sigma_data) ~ N(p_mean, p_std^2) in training (EDM's -1.2 at sigma_data 0.5)
    p_std: float = 1.2
    # A share of the noise levels log-uniform over [sigma_min, sigma_max], so that training covers the
    # sampler's range (sampler.sigma_min/max must lie inside; checked when a model is loaded for sampling).
    sigma_uniform: float = 0.5
    sigma_min: float = 2e-3
    sigma_max: float = 2.0
    shuffle_buffer: int = 2048  # rows in each worker's local shuffle buffer
    materialize: bool = True  # hold the targets in the object store (fast epochs); off when they do not fit
    log_every: int = 50
    checkpoint_every: int = 500
    eval_sets: int = 512  # fixed (noise, sigma) draws for the comparable loss logged with each checkpoint

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "eval_sets"):
            _require(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), "must be at least 1")
        _require(self.lr > 0, "train.lr", self.lr, "must be positive")
        _require(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "must be >= 0")
        _require(0 <= self.ema_decay < 1, "train.ema_decay", self.ema_decay, "must be in [0, 1)")
        _require(0 <= self.cond_drop < 1, "train.cond_drop", self.cond_drop, "must be in [0, 1)")
        _require(self.p_std > 0, "train.p_std", self.p_std, "must be positive")
        _require(0 <= self.sigma_uniform <= 1, "train.sigma_uniform", self.sigma_uniform, "must be in [0, 1]")
        _require(0 < self.sigma_min < self.sigma_max, "train.sigma_min", self.sigma_min,
                 f"need 0 < sigma_min < sigma_max={self.sigma_max}")


@dataclass
class TrainWorkersConfig:
    """Ray Train: DDP workers (gloo on CPU, NCCL on GPU)."""

    count: int = 2
    cpus: float = 0.5  # Ray Data needs a CPU left over to read the targets
    use_gpu: bool = False
    torch_threads: int = 1
    restarts: int = 2  # a dead worker: Ray Train restarts the group from the latest checkpoint, this many times

    def __post_init__(self) -> None:
        _require(self.count >= 1, "workers.count", self.count, "must be at least 1")
        _require(self.restarts >= 0, "workers.restarts", self.restarts, "must be non-negative")
        _require(self.cpus > 0, "workers.cpus", self.cpus, "must be positive")
        _require(self.torch_threads >= 1, "workers.torch_threads", self.torch_threads, "must be at least 1")


@dataclass
class RetrievalEvalConfig:
    """Held-out comparison of fan-out methods on returned sets of k items."""

    split: str = "test"
    max_queries: int = 0  # per task; 0 = all
    k: int = 10  # items per returned set
    lm_temperature: float = 1.0  # the LM methods sample one fan-out per query
    latency_batches: list[int] = field(default_factory=lambda: [8, 1024])
    latency_repeats: int = 3
    # ...and a fast method keeps repeating (up to 20 runs) until this many seconds are measured: one run of a
    # 0.04 s fan-out is noise. 0: exactly latency_repeats runs.
    latency_seconds: float = 1.0
    # Batch sizes where only R4T-FOLM and R4T-Diffusion are timed (the paper's latency comparison), beside
    # latency_batches: the LM methods at 1024 take minutes on a CPU, and the other methods sample nothing.
    pair_latency_batches: list[int] = field(default_factory=list)
    judge: bool = True  # the independent judge (r4t.eval.judge; needs the extra r4t[judge]) on OAR intents
    judge_reference: int = 512  # random catalog items each query's relevance percentile is taken among
    handwritten: bool = True  # also the built-in datasets' hand-written out-of-template intents (evaluation only)

    def __post_init__(self) -> None:
        _require(self.split in ("train", "val", "test"), "eval.split", self.split, "must be train, val or test")
        _require(self.judge_reference >= 2, "eval.judge_reference", self.judge_reference, "must be at least 2")
        _require(self.k >= 2, "eval.k", self.k, "must be at least 2")
        _require(self.max_queries >= 0, "eval.max_queries", self.max_queries, "must be >= 0")
        _require(all(b >= 1 for b in self.latency_batches), "eval.latency_batches", self.latency_batches,
                 "must be positive batch sizes")
        _require(all(b >= 1 for b in self.pair_latency_batches), "eval.pair_latency_batches",
                 self.pair_latency_batches, "must be positive batch sizes")
        _require(self.latency_repeats >= 1, "eval.latency_repeats", self.latency_repeats, "must be at least 1")
        _require(self.latency_seconds >= 0, "eval.latency_seconds", self.latency_seconds, "must be >= 0")


@dataclass
class DiffusionConfig(RunConfig):
    """Stage 3 (jobs/diffusion.yaml): Ray Train fits the set denoiser on the synthesized targets, per dataset."""

    name: str = "diffusion"  # output folder <run_dir>/<dataset>/<name>/
    targets: str = "synth"  # a synthesis run under <run_dir>/<dataset>/, or a folder with its manifest
    resume: bool = True
    compare: bool = True  # after training, compare with no fan-out and the teacher (`r4t eval` does every method)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: DiffusionTrainSettings = field(default_factory=DiffusionTrainSettings)
    workers: TrainWorkersConfig = field(default_factory=TrainWorkersConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # how the teacher (R4T-FOLM) generates in eval
    eval: RetrievalEvalConfig = field(default_factory=RetrievalEvalConfig)
