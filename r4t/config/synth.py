"""The synthesis stage (jobs/synth.yaml): a frozen teacher writes the diffusion stage's target sets.

`synth` is SynthSettings, `workers` one pool of SynthWorker actors (ActorsConfig; `synth_workers` in the pipeline
files).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r4t.config.common import RunConfig, _check_actors, _require
from r4t.config.policy import PolicyConfig, _check_sampling


@dataclass
class SynthSettings:
    teacher: str = "rl"  # an RL run under <run_dir>/<dataset>/ (its final checkpoint), an RLlib run, or a folder
    task: str = "oar"  # oar: rows = embeddings of the retrieved items | wscr: rows = sub-query embeddings
    splits: list[str] = field(default_factory=lambda: ["train", "val"])
    samples: int = 16  # fan-outs per query (the paper: 128)
    keep_top: int = 0  # keep the best N well-formed samples per query by reward; 0 = all of them
    rows: int = 10  # L, rows per target set
    queries_per_shard: int = 16  # a shard is the unit of work and of resume
    max_queries: int = 0  # per split; 0 = all
    prompts_per_call: int = 4  # prompts per generate call (x samples sequences)
    temperature: float = 1.0
    top_p: float = 1.0
    timeout_s: float = 1800.0  # per shard

    def __post_init__(self) -> None:
        _require(self.task in ("oar", "wscr"), "synth.task", self.task, "must be oar or wscr")
        _require(bool(self.splits) and all(s in ("train", "val", "test") for s in self.splits), "synth.splits",
                 self.splits, "must be a non-empty list of train, val, test")
        for name in ("samples", "rows", "queries_per_shard", "prompts_per_call"):
            _require(getattr(self, name) >= 1, f"synth.{name}", getattr(self, name), "must be at least 1")
        _require(0 <= self.keep_top <= self.samples, "synth.keep_top", self.keep_top,
                 f"must be in [0, synth.samples={self.samples}]")
        _require(self.max_queries >= 0, "synth.max_queries", self.max_queries, "must be >= 0")
        _check_sampling(self, "synth")


@dataclass
class ActorsConfig:
    """A pool of identical Ray actors (synthesis workers)."""

    count: int = 2
    cpus: float = 1.0
    gpus: float = 0.0
    torch_threads: int = 1
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per actor, e.g. {gpu_group: 1}
    restarts: int = 2  # how often Ray restarts a dead worker and reruns its shard; then the job stops naming it

    def __post_init__(self) -> None:
        _check_actors(self, "resources", ("count", "torch_threads"), ("cpus", "gpus", "restarts"))


@dataclass
class SynthConfig(RunConfig):
    """Stage 2 (jobs/synth.yaml): the frozen policy writes target sets for the diffusion retriever."""

    name: str = "synth"  # output folder <run_dir>/<dataset>/<name>/
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # backend, device, template (init: unused)
    synth: SynthSettings = field(default_factory=SynthSettings)
    workers: ActorsConfig = field(default_factory=ActorsConfig)

    def __post_init__(self) -> None:
        _require(self.synth.task == "oar" or self.synth.rows >= self.reward.k, "synth.rows", self.synth.rows,
                 f"WSCR targets are the k={self.reward.k} sub-query embeddings: rows must be >= reward.k")
